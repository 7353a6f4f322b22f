//! Postmark's webhooks: one JSON object per request, told apart by
//! `RecordType` (Delivery, Bounce, SpamComplaint, Open, Click,
//! SubscriptionChange). Postmark cannot sign its requests or send an API
//! key; it sends the basic-auth credentials written into the webhook URL
//! (`https://user:password@host/...`), which we compare in constant time.

use crate::{Mapped, MappedEvent, PayloadError, Provider, ProviderBounce, Refusal, recipient};
use base64::Engine;
use posthorn_core::clock::parse_rfc3339;
use posthorn_core::event::{
    Clicked, Complained, Delivered, Engagement, EventDetails, UnsubscribeScope, Unsubscribed,
};
use posthorn_core::status::BounceType;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The SHA-256 of `user:password`, what a source keeps instead of the
/// password.
pub fn credentials_hash(user: &str, password: &str) -> [u8; 32] {
    Sha256::digest(format!("{user}:{password}").as_bytes()).into()
}

/// Checks the `Authorization` header against the source's credentials
/// (their hash): the comparison takes the same time wherever they differ.
pub fn verify(authorization: Option<&str>, expected: &[u8; 32]) -> Result<(), Refusal> {
    let header = authorization.ok_or(Refusal::Missing("basic-auth credentials"))?;
    let (scheme, value) = header
        .trim()
        .split_once(' ')
        .ok_or(Refusal::WrongCredentials)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(Refusal::WrongCredentials);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| Refusal::WrongCredentials)?;
    let given: [u8; 32] = Sha256::digest(&decoded).into();
    if bool::from(given.ct_eq(expected)) {
        Ok(())
    } else {
        Err(Refusal::WrongCredentials)
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Record {
    record_type: String,
    #[serde(rename = "MessageID")]
    message_id: Option<String>,
    /// Bounces and complaints: their id.
    #[serde(rename = "ID")]
    id: Option<serde_json::Value>,
    recipient: Option<String>,
    /// Bounces and complaints name the address `Email`.
    email: Option<String>,
    from: Option<String>,
    #[serde(rename = "Type")]
    kind: Option<String>,
    type_code: Option<i64>,
    details: Option<String>,
    description: Option<String>,
    delivered_at: Option<String>,
    bounced_at: Option<String>,
    received_at: Option<String>,
    changed_at: Option<String>,
    user_agent: Option<String>,
    original_link: Option<String>,
    geo: Option<Geo>,
    suppress_sending: Option<bool>,
    suppression_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Geo {
    #[serde(rename = "IP")]
    ip: Option<String>,
}

fn time(field: &'static str, value: Option<&str>) -> Result<posthorn_core::Millis, PayloadError> {
    let value = value.ok_or_else(|| PayloadError::new(format!("{field} is missing")))?;
    parse_rfc3339(value)
        .ok_or_else(|| PayloadError::new(format!("{field} is not a time: {value:?}")))
}

/// Reads one Postmark webhook body.
pub fn parse(body: &[u8]) -> Result<Vec<Mapped>, PayloadError> {
    let raw: serde_json::Value = serde_json::from_slice(body)?;
    let r: Record = serde_json::from_value(raw.clone())?;
    let message_id = r
        .message_id
        .clone()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| PayloadError::new("MessageID is missing"))?;
    let address = r
        .recipient
        .as_deref()
        .or(r.email.as_deref())
        .and_then(recipient)
        .ok_or_else(|| PayloadError::new("Recipient (or Email) is not an address"))?;
    let event_id = r.id.as_ref().map(|id| match id {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    let ip = r.geo.as_ref().and_then(|g| g.ip.clone());
    let (occurred_at, details) = match r.record_type.as_str() {
        "Delivery" => (
            time("DeliveredAt", r.delivered_at.as_deref())?,
            EventDetails::Delivered(Delivered {
                reply_text: r.details.clone().filter(|d| !d.is_empty()),
                ..Default::default()
            }),
        ),
        "Bounce" => {
            let kind = r.kind.clone().unwrap_or_default();
            // Postmark's bounce types (its "Bounce types" reference):
            // HardBounce and BadEmailAddress are final; SoftBounce,
            // Transient, DnsError, AutoResponder and the like are not.
            let stated = match kind.as_str() {
                "HardBounce" | "BadEmailAddress" | "ManuallyDeactivated" => Some(BounceType::Hard),
                "SoftBounce"
                | "Transient"
                | "DnsError"
                | "SpamNotification"
                | "Blocked"
                | "SMTPApiError"
                | "ChallengeVerification"
                | "AddressChange"
                | "Unknown" => Some(BounceType::Soft),
                _ => None,
            };
            let text = r
                .details
                .clone()
                .filter(|d| !d.is_empty())
                .or(r.description.clone());
            let code = r
                .type_code
                .map(|c| format!("{kind}({c})"))
                .unwrap_or(kind.clone());
            (
                time("BouncedAt", r.bounced_at.as_deref())?,
                ProviderBounce {
                    provider: Provider::Postmark,
                    provider_type: &code,
                    stated,
                    smtp_code: None,
                    enhanced: None,
                    text,
                }
                .details(),
            )
        }
        "SpamComplaint" => (
            time("BouncedAt", r.bounced_at.as_deref())?,
            EventDetails::Complained(Complained {
                feedback_type: Some("abuse".to_owned()),
                reporting_domain: None,
            }),
        ),
        "Open" => (
            time("ReceivedAt", r.received_at.as_deref())?,
            EventDetails::Opened(Engagement {
                ip,
                user_agent: r.user_agent.clone(),
                ..Default::default()
            }),
        ),
        "Click" => (
            time("ReceivedAt", r.received_at.as_deref())?,
            EventDetails::Clicked(Clicked {
                implied_open: None,
                url: r
                    .original_link
                    .clone()
                    .ok_or_else(|| PayloadError::new("OriginalLink is missing"))?,
                link_index: None,
                ip,
                user_agent: r.user_agent.clone(),
                machine: None,
                machine_reason: None,
            }),
        ),
        "SubscriptionChange" => {
            // Only the recipient's own unsubscribe is news: suppressions
            // for bounces and complaints come with their own events, and a
            // reactivation has no kind in Posthorn's model.
            let manual = r.suppression_reason.as_deref() == Some("ManualSuppression");
            if r.suppress_sending != Some(true) || !manual {
                return Ok(vec![Mapped::ignored(
                    "SubscriptionChange",
                    "not a recipient's unsubscribe",
                )]);
            }
            (
                time("ChangedAt", r.changed_at.as_deref())?,
                EventDetails::Unsubscribed(Unsubscribed {
                    scope: UnsubscribeScope::All,
                    method: Some("provider".to_owned()),
                }),
            )
        }
        other => return Ok(vec![Mapped::ignored(other, "no Posthorn kind")]),
    };
    Ok(vec![Mapped::Event(Box::new(MappedEvent {
        message_id,
        recipient: address,
        sender: r.from.as_deref().and_then(recipient),
        event_id,
        occurred_at,
        details,
        raw,
    }))])
}

#[cfg(test)]
mod tests {
    use super::*;
    use posthorn_core::EventKind;

    fn auth(user: &str, pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
    }

    #[test]
    fn credentials_are_checked() {
        let expected = credentials_hash("hook", "s3cret");
        assert_eq!(verify(Some(&auth("hook", "s3cret")), &expected), Ok(()));
        assert_eq!(
            verify(Some(&auth("hook", "wrong")), &expected),
            Err(Refusal::WrongCredentials)
        );
        assert_eq!(
            verify(Some("Bearer x"), &expected),
            Err(Refusal::WrongCredentials)
        );
        assert_eq!(
            verify(None, &expected),
            Err(Refusal::Missing("basic-auth credentials"))
        );
    }

    #[test]
    fn a_hard_bounce_keeps_postmarks_words() {
        let body = serde_json::json!({
            "RecordType": "Bounce", "ID": 4323372036854775807u64, "Type": "HardBounce",
            "TypeCode": 1, "Name": "Hard bounce", "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
            "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
            "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist",
            "Email": "John@Example.com", "From": "sender@example.com",
            "BouncedAt": "2019-11-05T16:33:54.9070259Z", "MessageStream": "outbound"
        });
        let mapped = parse(body.to_string().as_bytes()).unwrap();
        let Mapped::Event(e) = &mapped[0] else {
            panic!("{mapped:?}")
        };
        assert_eq!(e.recipient, "john@example.com");
        assert_eq!(e.event_id.as_deref(), Some("4323372036854775807"));
        let EventDetails::Bounced(b) = &e.details else {
            panic!()
        };
        assert_eq!(b.bounce_type, BounceType::Hard);
        assert_eq!(b.rule.as_deref(), Some("provider.postmark.HardBounce(1)"));
        assert!(b.reply_text.as_deref().unwrap().contains("does not exist"));
        assert_eq!(b.smtp_code, Some(550));
        assert_eq!(b.enhanced_code, posthorn_core::EnhancedCode::parse("5.1.1"));
        assert_eq!(b.reason.as_deref(), Some("userunknown"));
        assert_eq!(
            e.occurred_at,
            parse_rfc3339("2019-11-05T16:33:54.907Z").unwrap()
        );
    }

    #[test]
    fn record_types_map_to_kinds() {
        let base = |t: &str, extra: serde_json::Value| {
            let mut v = serde_json::json!({"RecordType": t, "MessageID": "m1",
                "Recipient": "a@example.com", "DeliveredAt": "2019-11-05T16:33:54Z",
                "ReceivedAt": "2019-11-05T16:34:54Z", "BouncedAt": "2019-11-05T16:35:54Z",
                "Email": "a@example.com", "ChangedAt": "2019-11-05T16:36:54Z"});
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            parse(v.to_string().as_bytes()).unwrap().remove(0)
        };
        assert_eq!(
            crate::kind_of(&base("Delivery", serde_json::json!({}))),
            Some(EventKind::Delivered)
        );
        assert_eq!(
            crate::kind_of(&base("Open", serde_json::json!({}))),
            Some(EventKind::Opened)
        );
        assert_eq!(
            crate::kind_of(&base(
                "Click",
                serde_json::json!({"OriginalLink": "https://x.example/"})
            )),
            Some(EventKind::Clicked)
        );
        assert_eq!(
            crate::kind_of(&base("SpamComplaint", serde_json::json!({}))),
            Some(EventKind::Complained)
        );
        assert_eq!(
            crate::kind_of(&base(
                "SubscriptionChange",
                serde_json::json!({"SuppressSending": true, "SuppressionReason": "ManualSuppression"})
            )),
            Some(EventKind::Unsubscribed)
        );
        assert_eq!(
            crate::kind_of(&base(
                "SubscriptionChange",
                serde_json::json!({"SuppressSending": false, "SuppressionReason": null})
            )),
            None
        );
        assert!(parse(b"{\"RecordType\": \"Delivery\"}").is_err());
        assert!(parse(b"[]").is_err());
    }
}
