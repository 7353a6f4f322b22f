//! Mailgun's webhooks: one JSON object per request, `{"signature":
//! {"timestamp", "token", "signature"}, "event-data": {...}}`. The signature
//! is the hex HMAC-SHA256 of `timestamp + token` with the domain's webhook
//! signing key. A token may be accepted once (the store remembers it for as
//! long as its timestamp is inside the window), and a timestamp outside the
//! window is refused, so a captured request cannot be played again.

use crate::{
    Mapped, MappedEvent, PayloadError, Provider, ProviderBounce, Refusal, recipient,
    seconds_to_millis,
};
use posthorn_core::Millis;
use posthorn_core::event::{
    Clicked, Complained, Deferred, Delivered, DropReason, Dropped, Engagement, EventDetails,
    Queued, UnsubscribeScope, Unsubscribed,
};
use posthorn_core::status::BounceType;
use posthorn_core::{EnhancedCode, clock::DAY};
use serde::Deserialize;

/// How far a request's timestamp may be from now, either way.
pub const WINDOW: Millis = 15 * 60 * 1000;

/// The signature block of a request, read before anything else.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Signature {
    pub timestamp: String,
    pub token: String,
    pub signature: String,
}

impl Signature {
    /// The time the token stops mattering: after it, the timestamp is
    /// outside the window and the request is refused anyway.
    pub fn token_expires_at(&self) -> Millis {
        self.timestamp_ms().unwrap_or(0).saturating_add(WINDOW)
    }

    fn timestamp_ms(&self) -> Option<Millis> {
        self.timestamp
            .parse::<i64>()
            .ok()
            .and_then(|s| s.checked_mul(1000))
    }
}

#[derive(Debug, Deserialize)]
struct Envelope {
    signature: Option<Signature>,
    #[serde(rename = "event-data")]
    event_data: Option<serde_json::Value>,
}

/// Reads the signature block and checks it: the HMAC with `signing_key`,
/// then the timestamp against `now`. The token's single use is the
/// caller's to check (it needs memory).
pub fn verify(body: &[u8], signing_key: &[u8], now: Millis) -> Result<Signature, Refusal> {
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|_| Refusal::Missing("a signature block"))?;
    let sig = envelope
        .signature
        .ok_or(Refusal::Missing("a signature block"))?;
    let given = hex::decode(sig.signature.trim()).map_err(|_| Refusal::BadSignature)?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, signing_key);
    let message = format!("{}{}", sig.timestamp, sig.token);
    // ring compares in constant time.
    ring::hmac::verify(&key, message.as_bytes(), &given).map_err(|_| Refusal::BadSignature)?;
    let at = sig.timestamp_ms().ok_or(Refusal::StaleTimestamp)?;
    if (now - at).abs() > WINDOW {
        return Err(Refusal::StaleTimestamp);
    }
    if sig.token.is_empty() || sig.token.len() > 200 {
        return Err(Refusal::BadSignature);
    }
    Ok(sig)
}

/// The signature a request needs: what Mailgun computes (and tests sign
/// with).
pub fn sign(signing_key: &[u8], timestamp: &str, token: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, signing_key);
    hex::encode(ring::hmac::sign(&key, format!("{timestamp}{token}").as_bytes()).as_ref())
}

#[derive(Debug, Deserialize)]
struct EventData {
    event: String,
    id: Option<String>,
    timestamp: f64,
    recipient: Option<String>,
    message: Option<Message>,
    #[serde(rename = "delivery-status")]
    delivery_status: Option<DeliveryStatus>,
    severity: Option<String>,
    reason: Option<String>,
    url: Option<String>,
    ip: Option<String>,
    #[serde(rename = "client-info")]
    client_info: Option<ClientInfo>,
    envelope: Option<MgEnvelope>,
}

#[derive(Debug, Deserialize)]
struct Message {
    headers: Option<Headers>,
    size: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct Headers {
    #[serde(rename = "message-id")]
    message_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct DeliveryStatus {
    code: Option<serde_json::Value>,
    message: Option<String>,
    description: Option<String>,
    #[serde(rename = "enhanced-code")]
    enhanced_code: Option<String>,
    #[serde(rename = "attempt-no")]
    attempt_no: Option<u32>,
    #[serde(rename = "mx-host")]
    mx_host: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ClientInfo {
    #[serde(rename = "user-agent")]
    user_agent: Option<String>,
}

#[derive(Debug, Deserialize)]
struct MgEnvelope {
    sender: Option<String>,
}

/// Reads one Mailgun webhook body (already verified).
pub fn parse(body: &[u8]) -> Result<Vec<Mapped>, PayloadError> {
    let envelope: Envelope = serde_json::from_slice(body)?;
    let raw = envelope
        .event_data
        .ok_or_else(|| PayloadError::new("event-data is missing"))?;
    let e: EventData = serde_json::from_value(raw.clone())?;
    let occurred_at = seconds_to_millis(e.timestamp)
        .ok_or_else(|| PayloadError::new("event-data.timestamp is not a time"))?;
    let message_id = e
        .message
        .as_ref()
        .and_then(|m| m.headers.as_ref())
        .and_then(|h| h.message_id.as_deref())
        .map(|m| {
            m.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
        .filter(|m| !m.is_empty())
        .ok_or_else(|| PayloadError::new("event-data.message.headers.message-id is missing"))?;
    let address = e
        .recipient
        .as_deref()
        .and_then(recipient)
        .ok_or_else(|| PayloadError::new("event-data.recipient is not an address"))?;
    let status = e.delivery_status.as_ref();
    let smtp_code = status
        .and_then(|s| s.code.as_ref())
        .and_then(|c| {
            c.as_u64()
                .or_else(|| c.as_str().and_then(|s| s.parse().ok()))
        })
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (200..600).contains(c));
    let enhanced = status
        .and_then(|s| s.enhanced_code.as_deref())
        .and_then(EnhancedCode::parse);
    // Mailgun puts the remote reply in `message`, its own words in
    // `description`: keep whichever there is, the reply first.
    let reply = status
        .and_then(|s| {
            [s.message.as_deref(), s.description.as_deref()]
                .into_iter()
                .flatten()
                .find(|t| !t.trim().is_empty())
        })
        .map(str::to_owned);
    let mx_host = status.and_then(|s| s.mx_host.clone());
    let attempt = status.and_then(|s| s.attempt_no).unwrap_or(0);
    let user_agent = e.client_info.as_ref().and_then(|c| c.user_agent.clone());
    let details = match e.event.as_str() {
        "accepted" => EventDetails::Queued(Queued {
            size: e.message.as_ref().and_then(|m| m.size).unwrap_or(0),
        }),
        "rejected" => EventDetails::Dropped(Dropped {
            reason: DropReason::ContentRejected,
            suppression: None,
        }),
        "delivered" => EventDetails::Delivered(Delivered {
            mx_host,
            smtp_code,
            enhanced_code: enhanced,
            reply_text: reply,
            attempt,
            ..Default::default()
        }),
        "failed" if e.severity.as_deref() == Some("temporary") => {
            EventDetails::Deferred(Deferred {
                attempt,
                smtp_code,
                enhanced_code: enhanced,
                reply_text: reply,
                mx_host,
                ..Default::default()
            })
        }
        "failed" => {
            // Mailgun drops mail to addresses it has suppressed before:
            // that is a drop, not a new bounce.
            if let Some(r @ ("suppress-bounce" | "suppress-complaint" | "suppress-unsubscribe")) =
                e.reason.as_deref()
            {
                let reason = if r == "suppress-unsubscribe" {
                    DropReason::UnsubscribedStream
                } else {
                    DropReason::Suppressed
                };
                EventDetails::Dropped(Dropped {
                    reason,
                    suppression: None,
                })
            } else {
                // "permanent" is Mailgun's word after its retries; whether
                // the address is bad (hard) is the reply's to say.
                let provider_type = format!(
                    "{}.{}",
                    e.severity.as_deref().unwrap_or("permanent"),
                    e.reason.as_deref().unwrap_or("generic")
                );
                let details = ProviderBounce {
                    provider: Provider::Mailgun,
                    provider_type: &provider_type,
                    stated: None,
                    smtp_code,
                    enhanced,
                    text: reply,
                }
                .details();
                match details {
                    // A permanent failure the reply does not explain is
                    // still final: soft, so no address is suppressed on a
                    // guess.
                    EventDetails::Bounced(mut b) if b.bounce_type == BounceType::Undetermined => {
                        b.bounce_type = BounceType::Soft;
                        EventDetails::Bounced(b)
                    }
                    d => d,
                }
            }
        }
        "opened" => EventDetails::Opened(Engagement {
            ip: e.ip.clone(),
            user_agent,
            ..Default::default()
        }),
        "clicked" => EventDetails::Clicked(Clicked {
            implied_open: None,
            url: e
                .url
                .clone()
                .ok_or_else(|| PayloadError::new("event-data.url is missing"))?,
            link_index: None,
            ip: e.ip.clone(),
            user_agent,
            machine: None,
            machine_reason: None,
        }),
        "unsubscribed" => EventDetails::Unsubscribed(Unsubscribed {
            scope: UnsubscribeScope::All,
            method: Some("provider".to_owned()),
        }),
        "complained" => EventDetails::Complained(Complained {
            feedback_type: Some("abuse".to_owned()),
            reporting_domain: None,
        }),
        other => return Ok(vec![Mapped::ignored(other, "no Posthorn kind")]),
    };
    // Mailgun's event ids are unique only within a day: the day is part
    // of the key.
    let event_id =
        e.id.filter(|id| !id.is_empty())
            .map(|id| format!("{}:{id}", occurred_at.div_euclid(DAY)));
    Ok(vec![Mapped::Event(Box::new(MappedEvent {
        message_id,
        recipient: address,
        sender: e
            .envelope
            .as_ref()
            .and_then(|env| env.sender.as_deref())
            .and_then(recipient),
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

    const KEY: &[u8] = b"key-test-signing";
    const NOW: Millis = 1_529_006_854_000;

    fn body(timestamp: &str, token: &str, signature: &str, event: serde_json::Value) -> Vec<u8> {
        serde_json::json!({
            "signature": {"timestamp": timestamp, "token": token, "signature": signature},
            "event-data": event,
        })
        .to_string()
        .into_bytes()
    }

    fn failed(severity: &str, code: u16, message: &str) -> serde_json::Value {
        serde_json::json!({
            "event": "failed", "id": "G9Bn5sl1TC6nu79C8C0bwg", "timestamp": 1529006854.329574,
            "severity": severity, "reason": "generic", "recipient": "alice@example.com",
            "message": {"headers": {"message-id": "<20130503182626.18666.16540@example.com>"}},
            "delivery-status": {"code": code, "message": message, "attempt-no": 1,
                "description": "", "mx-host": "mx.example.com"}
        })
    }

    #[test]
    fn the_signature_and_window_are_checked() {
        let sig = sign(KEY, "1529006854", "tok");
        let good = body("1529006854", "tok", &sig, failed("permanent", 550, "no"));
        assert_eq!(verify(&good, KEY, NOW).unwrap().token, "tok");
        assert_eq!(verify(&good, b"other key", NOW), Err(Refusal::BadSignature));
        assert_eq!(
            verify(&good, KEY, NOW + WINDOW + 1000),
            Err(Refusal::StaleTimestamp)
        );
        let forged = body("1529006855", "tok", &sig, failed("permanent", 550, "no"));
        assert_eq!(verify(&forged, KEY, NOW), Err(Refusal::BadSignature));
        assert_eq!(
            verify(b"{}", KEY, NOW),
            Err(Refusal::Missing("a signature block"))
        );
    }

    #[test]
    fn failures_map_by_severity_and_reply() {
        let hard = parse(&body(
            "1",
            "t",
            "s",
            failed(
                "permanent",
                550,
                "5.1.1 The email account that you tried to reach does not exist.",
            ),
        ))
        .unwrap();
        let Mapped::Event(e) = &hard[0] else { panic!() };
        assert_eq!(e.message_id, "20130503182626.18666.16540@example.com");
        assert_eq!(e.event_id.as_deref(), Some("17696:G9Bn5sl1TC6nu79C8C0bwg"));
        let EventDetails::Bounced(b) = &e.details else {
            panic!("{:?}", e.details)
        };
        assert_eq!(b.bounce_type, BounceType::Hard);
        assert_eq!(b.smtp_code, Some(550));
        assert_eq!(b.reason.as_deref(), Some("userunknown"));
        let soft = parse(&body(
            "1",
            "t",
            "s",
            failed("temporary", 452, "4.2.2 mailbox full"),
        ))
        .unwrap();
        assert_eq!(crate::kind_of(&soft[0]), Some(EventKind::Deferred));
        let mut suppressed = failed(
            "permanent",
            605,
            "Not delivering to previously bounced address",
        );
        suppressed["reason"] = "suppress-bounce".into();
        let dropped = parse(&body("1", "t", "s", suppressed)).unwrap();
        assert_eq!(crate::kind_of(&dropped[0]), Some(EventKind::Dropped));
    }
}
