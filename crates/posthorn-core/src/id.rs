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

#[cfg(test)]
mod tests {
    use super::*;

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
