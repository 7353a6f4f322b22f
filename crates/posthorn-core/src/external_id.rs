//! The external ids Posthorn gives the events it records itself, so that
//! the same fact arriving twice counts once (the store refuses a second
//! event with the same external id for a delivery). Each format is written
//! here only: two spellings of one fact would count it twice.

use crate::event::UnsubscribeScope;
use crate::id::DeliveryId;

/// An unsubscribe counts once however it came (link, one-click POST, mail
/// to the `List-Unsubscribe` address): `unsubscribe:DELIVERY:SCOPE`.
pub fn unsubscribe(delivery: &DeliveryId, scope: UnsubscribeScope) -> String {
    format!("unsubscribe:{delivery}:{}", scope.as_str())
}

/// A report received twice (a retransmission after a lost 250) counts
/// once: `inbound:DIGEST:KIND`, DIGEST being the hex of (a prefix of) a
/// digest of the message's bytes.
pub fn inbound(digest: &[u8], kind: &str) -> String {
    format!("inbound:{}:{kind}", hex::encode(digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_stable() {
        let delivery = DeliveryId::parse("0190b7a6-84c1-7c3e-9f6a-2f1d3e4b5a69").unwrap();
        assert_eq!(
            unsubscribe(&delivery, UnsubscribeScope::Stream),
            "unsubscribe:0190b7a6-84c1-7c3e-9f6a-2f1d3e4b5a69:stream"
        );
        assert_eq!(
            unsubscribe(&delivery, UnsubscribeScope::All),
            "unsubscribe:0190b7a6-84c1-7c3e-9f6a-2f1d3e4b5a69:all"
        );
        assert_eq!(inbound(&[0xab, 0x01], "bounced"), "inbound:ab01:bounced");
    }
}
