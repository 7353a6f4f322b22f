//! What the inbound MX decided about a received message, in the words the
//! inbound store keeps: what it is ([`InboundKind`]), how it was tied to its
//! delivery ([`AttributedBy`]) or why it could not be ([`OrphanReason`]).
//! The rules that decide live in `posthorn-bounce`; the names live here so
//! that the store, which does not read mail, can read them back typed.

use serde::Serialize;

/// What one record of a returned message says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// Delivery failed for good (`Action: failed`).
    Bounce,
    /// Delivery is delayed, the MTA keeps trying (`Action: delayed`).
    Delay,
    /// Delivery succeeded (`Action: delivered`, `relayed`, `expanded`).
    Delivered,
    /// A feedback (spam complaint) report.
    Complaint,
    /// An automatic reply (out of office and the like).
    Vacation,
}

impl RecordKind {
    pub const ALL: [RecordKind; 5] = [
        RecordKind::Bounce,
        RecordKind::Delay,
        RecordKind::Delivered,
        RecordKind::Complaint,
        RecordKind::Vacation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Bounce => "bounce",
            RecordKind::Delay => "delay",
            RecordKind::Delivered => "delivered",
            RecordKind::Complaint => "complaint",
            RecordKind::Vacation => "vacation",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// How an attributed message was tied to its delivery, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributedBy {
    Verp,
    MessageId,
}

impl AttributedBy {
    pub const ALL: [AttributedBy; 2] = [AttributedBy::Verp, AttributedBy::MessageId];

    pub fn as_str(self) -> &'static str {
        match self {
            AttributedBy::Verp => "verp",
            AttributedBy::MessageId => "message_id",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Why a message was kept as an orphan, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrphanReason {
    /// It names a delivery (by token or Message-ID) that does not exist
    /// (deleted since, or another installation's).
    UnknownDelivery,
    TamperedToken,
    NoReference,
}

impl OrphanReason {
    pub const ALL: [OrphanReason; 3] = [
        OrphanReason::UnknownDelivery,
        OrphanReason::TamperedToken,
        OrphanReason::NoReference,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrphanReason::UnknownDelivery => "unknown_delivery",
            OrphanReason::TamperedToken => "tampered_token",
            OrphanReason::NoReference => "no_reference",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// What a received message is, as stored and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundKind {
    /// What the record about the delivery (or the first record) reports.
    Report(RecordKind),
    /// Mail to a copy's unsubscribe address.
    Unsubscribe,
    /// Nothing the parser recognised.
    NotBounce,
}

impl InboundKind {
    pub fn as_str(self) -> &'static str {
        match self {
            InboundKind::Report(kind) => kind.as_str(),
            InboundKind::Unsubscribe => "unsubscribe",
            InboundKind::NotBounce => "not_bounce",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "unsubscribe" => Some(InboundKind::Unsubscribe),
            "not_bounce" => Some(InboundKind::NotBounce),
            s => RecordKind::parse(s).map(InboundKind::Report),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stored_name_reads_back_as_itself_and_no_other_text_does() {
        let kinds = RecordKind::ALL
            .into_iter()
            .map(InboundKind::Report)
            .chain([InboundKind::Unsubscribe, InboundKind::NotBounce]);
        for kind in kinds {
            assert_eq!(InboundKind::parse(kind.as_str()), Some(kind));
        }
        for reason in OrphanReason::ALL {
            assert_eq!(OrphanReason::parse(reason.as_str()), Some(reason));
        }
        for by in AttributedBy::ALL {
            assert_eq!(AttributedBy::parse(by.as_str()), Some(by));
        }
        assert_eq!(InboundKind::parse("Bounce"), None);
        assert_eq!(OrphanReason::parse("no_token"), None);
        assert_eq!(AttributedBy::parse(""), None);
    }
}
