//! Any JSON made of the providers' own field names (and any bytes) is
//! mapped or refused: never a panic, and every mapped event names an
//! address and a message. The fuzz target `provider_payloads` does the
//! same at length; this runs with the tests.

use posthorn_providers::{Mapped, mailgun, postmark, sendgrid, ses, sns};
use proptest::prelude::*;
use serde_json::{Map, Value};

const NAMES: &[&str] = &[
    // Postmark
    "RecordType",
    "MessageID",
    "ID",
    "Recipient",
    "Email",
    "From",
    "Type",
    "TypeCode",
    "Details",
    "Description",
    "DeliveredAt",
    "BouncedAt",
    "ReceivedAt",
    "ChangedAt",
    "UserAgent",
    "OriginalLink",
    "Geo",
    "IP",
    "SuppressSending",
    "SuppressionReason",
    // Mailgun
    "signature",
    "timestamp",
    "token",
    "event-data",
    "event",
    "id",
    "recipient",
    "message",
    "headers",
    "message-id",
    "delivery-status",
    "code",
    "enhanced-code",
    "severity",
    "reason",
    "url",
    "ip",
    "client-info",
    "user-agent",
    "envelope",
    "sender",
    "attempt-no",
    "mx-host",
    // SendGrid
    "email",
    "sg_event_id",
    "sg_message_id",
    "smtp-id",
    "status",
    "response",
    "type",
    "bounce_classification",
    "attempt",
    "useragent",
    "sg_machine_open",
    "asm_group_id",
    // SES
    "eventType",
    "notificationType",
    "mail",
    "messageId",
    "source",
    "destination",
    "bounce",
    "bounceType",
    "bounceSubType",
    "bouncedRecipients",
    "emailAddress",
    "diagnosticCode",
    "feedbackId",
    "complaint",
    "complainedRecipients",
    "delivery",
    "recipients",
    "smtpResponse",
    "deliveryDelay",
    "delayedRecipients",
    "open",
    "click",
    "link",
    "ipAddress",
    "userAgent",
    "subscription",
    "contactList",
    "reject",
];

const WORDS: &[&str] = &[
    "Bounce",
    "Delivery",
    "Open",
    "Click",
    "SpamComplaint",
    "SubscriptionChange",
    "HardBounce",
    "SoftBounce",
    "ManualSuppression",
    "delivered",
    "failed",
    "permanent",
    "temporary",
    "opened",
    "clicked",
    "complained",
    "unsubscribed",
    "accepted",
    "rejected",
    "suppress-bounce",
    "processed",
    "dropped",
    "deferred",
    "open",
    "click",
    "spamreport",
    "group_unsubscribe",
    "Send",
    "Reject",
    "Complaint",
    "DeliveryDelay",
    "Subscription",
    "Permanent",
    "Transient",
    "a@example.com",
    "A@Example.COM",
    "<b@example.com>",
    "not an address",
    "@",
    "",
    "2019-11-05T16:33:54.9070259Z",
    "2017-08-05T00:41:02.669Z",
    "smtp; 550 5.1.1 unknown",
    "550 5.1.1 no",
    "5.1.1",
    "4.7.650",
    "9.9.9",
    "1529006854",
    "x.filter0001.y",
    "é",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(WORDS).prop_map(|w| Value::String(w.to_owned())),
        ".{0,20}".prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(NAMES), inner), 0..10).prop_map(|fields| {
                Value::Object(
                    fields
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

fn check(mapped: Result<Vec<Mapped>, posthorn_providers::PayloadError>) {
    for m in mapped.into_iter().flatten() {
        if let Mapped::Event(e) = m {
            assert!(e.recipient.contains('@'), "{e:?}");
            assert!(!e.message_id.is_empty(), "{e:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_payload_is_mapped_or_refused(v in value(), bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let text = v.to_string();
        let body = text.as_bytes();
        check(postmark::parse(body));
        check(mailgun::parse(body));
        let _ = mailgun::verify(body, b"key", 1_529_006_854_000);
        check(sendgrid::parse(body));
        check(sendgrid::parse(format!("[{text}]").as_bytes()));
        check(ses::parse(&text, "sns"));
        if let Ok(envelope) = sns::Envelope::parse(body) {
            let _ = envelope.string_to_sign();
        }
        check(postmark::parse(&bytes));
        check(sendgrid::parse(&bytes));
        let _ = sns::SigningKey::from_pem(&bytes);
    }
}
