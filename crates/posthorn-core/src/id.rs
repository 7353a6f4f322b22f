//! Identifiers: UUIDv7 (time-ordered) carried as text, one type per thing so
//! that a delivery id can never be passed where an event id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// A new, time-ordered id.
            pub fn generate() -> Self {
                Self(uuid::Uuid::now_v7().to_string())
            }
            /// Wraps text read back from storage or a request. Returns `None`
            /// when the text is not a UUID, so a malformed id in a URL is a
            /// plain "not found" and never reaches a query.
            pub fn parse(text: &str) -> Option<Self> {
                uuid::Uuid::parse_str(text).ok().map(|u| Self(u.hyphenated().to_string()))
            }
            /// Wraps text that is known to be an id (read from our own store).
            pub fn from_stored(text: String) -> Self {
                Self(text)
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
            /// When the id was made: a UUIDv7 begins with its time in
            /// milliseconds (48 bits). `None` for text that does not.
            pub fn millis(&self) -> Option<crate::clock::Millis> {
                let hex: String = self.0.chars().filter(|c| *c != '-').take(12).collect();
                i64::from_str_radix(&hex, 16).ok().filter(|_| hex.len() == 12)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
    };
}

id_type!(
    /// A tenant: an isolated account with its own keys, messages and contacts.
    TenantId
);
id_type!(
    /// One submission (API call or SMTP transaction).
    MessageId
);
id_type!(
    /// One message to one recipient: the tracked unit.
    DeliveryId
);
id_type!(
    /// One thing that happened to a delivery.
    EventId
);
id_type!(
    /// An API key (the public part; the secret is never an id).
    ApiKeyId
);
id_type!(
    /// A suppression list entry.
    SuppressionId
);
id_type!(
    /// A message received by the inbound MX (a bounce, complaint, auto-reply
    /// or something unattributable).
    InboundId
);

id_type!(
    /// A provider ingest source: where one provider's event webhooks for
    /// one tenant arrive.
    IngestSourceId
);

/// One node (a `posthorn serve` process) of an installation: what holds a
/// lease on a queued delivery, so that a node's restart frees only its own.
/// 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct NodeId(String);

impl NodeId {
    pub fn parse(text: &str) -> Option<Self> {
        let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
        (!text.is_empty() && text.len() <= 64 && text.bytes().all(allowed))
            .then(|| Self(text.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        NodeId::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{text}` is not a node name (1-64 of A-Z a-z 0-9 . _ -)"
            ))
        })
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_short_plain_names() {
        assert_eq!(
            NodeId::parse("mx-1.eu_west").unwrap().as_str(),
            "mx-1.eu_west"
        );
        assert!(NodeId::parse("").is_none());
        assert!(NodeId::parse(&"n".repeat(65)).is_none());
        assert!(NodeId::parse("node 1").is_none());
        assert!(NodeId::parse("nöde").is_none());
    }

    #[test]
    fn generated_ids_are_time_ordered_text() {
        let a = EventId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = EventId::generate();
        assert!(a < b, "{a} should sort before {b}");
        assert_eq!(a.as_str().len(), 36);
        assert_eq!(EventId::parse(a.as_str()), Some(a));
    }

    #[test]
    fn parse_rejects_non_uuid_and_normalises_case() {
        assert_eq!(DeliveryId::parse("not-an-id"), None);
        assert_eq!(DeliveryId::parse("1' OR '1'='1"), None);
        let upper = "0190F3B2-7C4D-7ABC-8DEF-0123456789AB";
        assert_eq!(
            DeliveryId::parse(upper).unwrap().as_str(),
            "0190f3b2-7c4d-7abc-8def-0123456789ab"
        );
    }
}
