//! SendGrid's Event Webhook: a JSON array of events per request (a batch),
//! signed with ECDSA P-256/SHA-256 over the timestamp header followed by the
//! body as sent (headers `X-Twilio-Email-Event-Webhook-Signature`, base64
//! of the DER signature, and `X-Twilio-Email-Event-Webhook-Timestamp`). The
//! verification key is the base64 DER public key SendGrid shows when signing
//! is turned on, given at source creation.
//!
//! SendGrid's `sg_event_id` is reported to change when it retries a batch,
//! so its events are also recorded once by content (see
//! [`crate::MappedEvent::content_key`]).

use crate::{
    Mapped, MappedEvent, PayloadError, Provider, ProviderBounce, Refusal, leading_code, recipient,
    seconds_to_millis,
};
use base64::Engine;
use posthorn_core::EnhancedCode;
use posthorn_core::event::{
    Clicked, Complained, Deferred, Delivered, DropReason, Dropped, Engagement, EventDetails,
    Queued, UnsubscribeScope, Unsubscribed,
};
use posthorn_core::status::BounceType;
use serde::Deserialize;

pub const SIGNATURE_HEADER: &str = "x-twilio-email-event-webhook-signature";
pub const TIMESTAMP_HEADER: &str = "x-twilio-email-event-webhook-timestamp";

/// A SendGrid verification key: an ECDSA P-256 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The uncompressed point (65 bytes), what ring verifies with.
    point: Vec<u8>,
}

/// The DER prefix of a P-256 `SubjectPublicKeyInfo` with an uncompressed
/// point: the key SendGrid shows is this followed by the 65-byte point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

impl PublicKey {
    /// Reads the key as SendGrid shows it: base64 of the DER
    /// SubjectPublicKeyInfo (PEM armour around it is accepted too).
    pub fn parse(text: &str) -> Result<Self, String> {
        let b64: String = text
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .flat_map(|l| l.trim().chars())
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| "the public key is not base64".to_owned())?;
        match der.strip_prefix(&P256_SPKI_PREFIX[..]) {
            Some(point) if point.len() == 65 && point[0] == 0x04 => Ok(PublicKey {
                point: point.to_vec(),
            }),
            _ => Err("the public key is not an ECDSA P-256 public key".to_owned()),
        }
    }

    /// The key as SendGrid shows it.
    pub fn to_base64(&self) -> String {
        let mut der = P256_SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.point);
        base64::engine::general_purpose::STANDARD.encode(der)
    }

    /// A key from an uncompressed point (tests build keys with ring).
    pub fn from_point(point: &[u8]) -> Result<Self, String> {
        let mut der = P256_SPKI_PREFIX.to_vec();
        der.extend_from_slice(point);
        Self::parse(&base64::engine::general_purpose::STANDARD.encode(der))
    }
}

/// Checks the request's signature over `timestamp + body`.
pub fn verify(
    signature: Option<&str>,
    timestamp: Option<&str>,
    body: &[u8],
    key: &PublicKey,
) -> Result<(), Refusal> {
    let signature = signature.ok_or(Refusal::Missing("the SendGrid signature header"))?;
    let timestamp = timestamp.ok_or(Refusal::Missing("the SendGrid timestamp header"))?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(signature.trim())
        .map_err(|_| Refusal::BadSignature)?;
    let mut signed = timestamp.as_bytes().to_vec();
    signed.extend_from_slice(body);
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, &key.point)
        .verify(&signed, &signature)
        .map_err(|_| Refusal::BadSignature)
}

#[derive(Debug, Deserialize)]
struct Event {
    email: Option<String>,
    timestamp: Option<f64>,
    event: Option<String>,
    sg_event_id: Option<String>,
    sg_message_id: Option<String>,
    #[serde(rename = "smtp-id")]
    smtp_id: Option<String>,
    reason: Option<String>,
    status: Option<String>,
    response: Option<String>,
    #[serde(rename = "type")]
    bounce_type: Option<String>,
    bounce_classification: Option<String>,
    attempt: Option<serde_json::Value>,
    url: Option<String>,
    useragent: Option<String>,
    ip: Option<String>,
    sg_machine_open: Option<bool>,
    asm_group_id: Option<serde_json::Value>,
}

/// SendGrid's message id: `sg_message_id` up to `.filter` (or `.recvd`),
/// which is the `X-Message-Id` the send API answered with.
fn message_id(e: &Event) -> Option<String> {
    if let Some(id) = e.sg_message_id.as_deref().filter(|s| !s.is_empty()) {
        let end = [".filter", ".recvd"]
            .iter()
            .filter_map(|m| id.find(m))
            .min()
            .unwrap_or(id.len());
        return Some(id[..end].to_owned());
    }
    // Some events (`processed` on older accounts, `dropped`) carry only the
    // Message-ID header.
    e.smtp_id
        .as_deref()
        .map(|s| {
            s.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
        .filter(|s| !s.is_empty())
}

/// Reads one SendGrid batch (already verified). Events of the batch that
/// are not what SendGrid documents are errors for the whole batch: it was
/// signed whole and is taken or refused whole.
pub fn parse(body: &[u8]) -> Result<Vec<Mapped>, PayloadError> {
    let batch: Vec<serde_json::Value> = serde_json::from_slice(body)?;
    batch
        .into_iter()
        .enumerate()
        .map(|(i, raw)| parse_one(raw).map_err(|e| PayloadError::new(format!("event {i}: {e}"))))
        .collect()
}

fn parse_one(raw: serde_json::Value) -> Result<Mapped, PayloadError> {
    let e: Event = serde_json::from_value(raw.clone())?;
    let kind = e
        .event
        .clone()
        .ok_or_else(|| PayloadError::new("event is missing"))?;
    let occurred_at = e
        .timestamp
        .and_then(seconds_to_millis)
        .ok_or_else(|| PayloadError::new("timestamp is missing or not a time"))?;
    let message_id = message_id(&e).ok_or_else(|| PayloadError::new("sg_message_id is missing"))?;
    let address = e
        .email
        .as_deref()
        .and_then(recipient)
        .ok_or_else(|| PayloadError::new("email is not an address"))?;
    let attempt = e
        .attempt
        .as_ref()
        .and_then(|a| {
            a.as_u64()
                .or_else(|| a.as_str().and_then(|s| s.parse().ok()))
        })
        .and_then(|a| u32::try_from(a).ok())
        .unwrap_or(0);
    let details = match kind.as_str() {
        "processed" => EventDetails::Queued(Queued::default()),
        "dropped" => {
            let reason = e.reason.as_deref().unwrap_or("");
            // SendGrid's documented drop reasons.
            let reason = if reason.contains("Unsubscribed") {
                DropReason::UnsubscribedStream
            } else if reason.contains("Bounced") || reason.contains("Spam Reporting") {
                DropReason::Suppressed
            } else if reason.contains("Invalid") {
                DropReason::InvalidAddress
            } else if reason.contains("Quota") {
                DropReason::QuotaExceeded
            } else {
                DropReason::ContentRejected
            };
            EventDetails::Dropped(Dropped {
                reason,
                suppression: None,
            })
        }
        "delivered" => EventDetails::Delivered(Delivered {
            smtp_code: e.response.as_deref().and_then(leading_code),
            reply_text: e.response.clone(),
            ..Default::default()
        }),
        "deferred" => EventDetails::Deferred(Deferred {
            attempt,
            smtp_code: e.response.as_deref().and_then(leading_code),
            reply_text: e.response.clone(),
            ..Default::default()
        }),
        "bounce" => {
            // `type` is `bounce` (the server refused the address) or
            // `blocked` (it refused this message for now).
            let stated = match e.bounce_type.as_deref() {
                Some("blocked") => Some(BounceType::Soft),
                _ => None,
            };
            let provider_type = format!(
                "{}.{}",
                e.bounce_type.as_deref().unwrap_or("bounce"),
                e.bounce_classification.as_deref().unwrap_or("unclassified")
            );
            let mut details = ProviderBounce {
                provider: Provider::Sendgrid,
                provider_type: &provider_type,
                stated,
                smtp_code: None,
                enhanced: e.status.as_deref().and_then(EnhancedCode::parse),
                text: e.reason.clone(),
            }
            .details();
            if let EventDetails::Bounced(b) = &mut details
                && b.bounce_type == BounceType::Undetermined
            {
                // A `bounce` is final; without words saying the address is
                // bad it is soft, so no address is suppressed on a guess.
                b.bounce_type = BounceType::Soft;
            }
            details
        }
        "open" => EventDetails::Opened(Engagement {
            ip: e.ip.clone(),
            user_agent: e.useragent.clone(),
            machine: e.sg_machine_open,
            machine_reason: e
                .sg_machine_open
                .filter(|m| *m)
                .map(|_| "provider".to_owned()),
        }),
        "click" => EventDetails::Clicked(Clicked {
            implied_open: None,
            url: e
                .url
                .clone()
                .ok_or_else(|| PayloadError::new("url is missing"))?,
            link_index: None,
            ip: e.ip.clone(),
            user_agent: e.useragent.clone(),
            machine: None,
            machine_reason: None,
        }),
        "spamreport" => EventDetails::Complained(Complained {
            feedback_type: Some("abuse".to_owned()),
            reporting_domain: None,
        }),
        // An unsubscribe from one group is from that stream only.
        "unsubscribe" | "group_unsubscribe" => EventDetails::Unsubscribed(Unsubscribed {
            scope: if kind == "group_unsubscribe" || e.asm_group_id.is_some() {
                UnsubscribeScope::Stream
            } else {
                UnsubscribeScope::All
            },
            method: Some("provider".to_owned()),
        }),
        other => return Ok(Mapped::ignored(other, "no Posthorn kind")),
    };
    Ok(Mapped::Event(Box::new(MappedEvent {
        message_id,
        recipient: address,
        sender: None,
        event_id: e.sg_event_id.clone().filter(|s| !s.is_empty()),
        occurred_at,
        details,
        raw,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use posthorn_core::EventKind;
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

    fn key_pair() -> EcdsaKeyPair {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap()
    }

    fn sign(pair: &EcdsaKeyPair, timestamp: &str, body: &[u8]) -> String {
        let mut signed = timestamp.as_bytes().to_vec();
        signed.extend_from_slice(body);
        let sig = pair.sign(&SystemRandom::new(), &signed).unwrap();
        base64::engine::general_purpose::STANDARD.encode(sig.as_ref())
    }

    #[test]
    fn the_signature_covers_timestamp_and_body() {
        let pair = key_pair();
        let key = PublicKey::from_point(pair.public_key().as_ref()).unwrap();
        assert_eq!(PublicKey::parse(&key.to_base64()).unwrap(), key);
        let body = br#"[{"email":"a@example.com"}]"#;
        let sig = sign(&pair, "1600000000", body);
        assert_eq!(verify(Some(&sig), Some("1600000000"), body, &key), Ok(()));
        assert_eq!(
            verify(Some(&sig), Some("1600000001"), body, &key),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            verify(Some(&sig), Some("1600000000"), b"[]", &key),
            Err(Refusal::BadSignature)
        );
        let other = PublicKey::from_point(key_pair().public_key().as_ref()).unwrap();
        assert_eq!(
            verify(Some(&sig), Some("1600000000"), body, &other),
            Err(Refusal::BadSignature)
        );
        assert!(PublicKey::parse("bm90IGEga2V5").is_err());
    }

    #[test]
    fn a_batch_maps_each_event() {
        let body = serde_json::json!([
            {"email": "a@example.com", "timestamp": 1513299569, "event": "processed",
             "sg_event_id": "e1", "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
             "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>"},
            {"email": "a@example.com", "timestamp": 1513299570, "event": "bounce",
             "sg_event_id": "e2", "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
             "reason": "550 5.1.1 The email account that you tried to reach does not exist",
             "status": "5.1.1", "type": "bounce", "bounce_classification": "Invalid Address"},
            {"email": "a@example.com", "timestamp": 1513299571, "event": "group_resubscribe",
             "sg_event_id": "e3", "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0"}
        ]);
        let mapped = parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(mapped.len(), 3);
        assert_eq!(crate::kind_of(&mapped[0]), Some(EventKind::Queued));
        let Mapped::Event(b) = &mapped[1] else {
            panic!()
        };
        assert_eq!(b.message_id, "14c5d75ce93.dfd.64b469");
        assert_eq!(b.details.bounce_type(), Some(BounceType::Hard));
        assert!(matches!(mapped[2], Mapped::Ignored { .. }));
        assert!(parse(br#"[{"event": "delivered"}]"#).is_err());
        assert!(parse(br#"{"event": "delivered"}"#).is_err());
    }
}
