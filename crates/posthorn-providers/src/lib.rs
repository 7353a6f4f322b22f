//! Other providers' event webhooks as inputs to Posthorn's status model:
//! Postmark, Mailgun, SendGrid and Amazon SES (through SNS).
//!
//! Per provider: (a) the request's verification as the provider documents
//! it, a pure function of the request, the source's keys and the time;
//! (b) the documented payload read into typed values; (c) each event mapped
//! onto Posthorn's [`EventDetails`] with the provider's message id, the
//! recipient, the provider's event id and the time it happened.
//!
//! This crate does no I/O: it neither fetches certificates nor remembers
//! tokens (the server and the store do), so every rule here is testable
//! with values alone.

pub mod mailgun;
pub mod postmark;
pub mod sendgrid;
pub mod ses;
pub mod sns;

use posthorn_core::Millis;
use posthorn_core::event::{BounceOrigin, Bounced, EventDetails};
use posthorn_core::status::BounceType;
use posthorn_core::{EnhancedCode, EventKind};
use sha2::{Digest, Sha256};

pub use posthorn_core::provider::Provider;

/// Why a request was refused before anything in it was believed. The
/// server answers every one with 401 and writes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the request lacks {0}")]
    Missing(&'static str),
    #[error("the credentials are wrong")]
    WrongCredentials,
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the timestamp is outside the accepted window")]
    StaleTimestamp,
    #[error("this token was accepted before")]
    ReplayedToken,
    #[error("the signing certificate URL {0:?} is not an SNS certificate URL")]
    CertificateUrl(String),
    #[error("the subscription URL {0:?} is not an SNS confirmation URL")]
    SubscribeUrl(String),
    #[error("the signing certificate cannot be used: {0}")]
    Certificate(String),
    #[error("signature version {0:?} is not supported")]
    SignatureVersion(String),
    #[error("topic {0:?} is not one of the source's topics")]
    TopicNotAllowed(String),
}

/// A payload that verified but is not what the provider documents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PayloadError(pub String);

impl PayloadError {
    pub fn new(message: impl Into<String>) -> Self {
        PayloadError(message.into())
    }
}

impl From<serde_json::Error> for PayloadError {
    fn from(e: serde_json::Error) -> Self {
        PayloadError(format!("the payload is not the documented JSON: {e}"))
    }
}

/// One provider event, mapped onto Posthorn's model.
#[derive(Debug, Clone, PartialEq)]
pub struct MappedEvent {
    /// The provider's id of the message (Postmark `MessageID`, Mailgun's
    /// Message-Id header, SendGrid's `sg_message_id` up to `.filter`, SES
    /// `mail.messageId`).
    pub message_id: String,
    /// The recipient, lower-cased.
    pub recipient: String,
    /// The envelope sender when the payload gives it.
    pub sender: Option<String>,
    /// The provider's id of this event, made unique for as long as the
    /// provider keeps it unique (Mailgun's: with the day).
    pub event_id: Option<String>,
    pub occurred_at: Millis,
    pub details: EventDetails,
    /// The provider's event as it came (the one object of a batch or
    /// notification it was read from).
    pub raw: serde_json::Value,
}

impl MappedEvent {
    /// The key that records the event once by the provider's event id.
    pub fn id_key(&self, provider: Provider) -> Option<String> {
        self.event_id
            .as_ref()
            .map(|id| format!("{provider}:id:{id}"))
    }

    /// The key that records the event once by its content: the same
    /// message, recipient, kind, time and details (what a retry with a new
    /// event id still has in common with the first delivery).
    pub fn content_key(&self, provider: Provider) -> String {
        let mut h = Sha256::new();
        for part in [
            self.message_id.as_bytes(),
            self.recipient.as_bytes(),
            self.details.kind().as_str().as_bytes(),
            self.occurred_at.to_string().as_bytes(),
            self.details.to_json().to_string().as_bytes(),
        ] {
            // Length-prefixed, so no two splits of the same bytes collide.
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        format!("{provider}:content:{}", hex::encode(h.finalize()))
    }

    /// The external id the event is stored with: the id key when there
    /// is an event id, else the content key.
    pub fn external_id(&self, provider: Provider) -> String {
        self.id_key(provider)
            .unwrap_or_else(|| self.content_key(provider))
    }
}

/// What became of one provider event.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapped {
    Event(Box<MappedEvent>),
    /// A documented event Posthorn has no kind for, or that cannot be
    /// attributed (an SES open of a message with several recipients).
    Ignored {
        what: String,
        why: String,
    },
}

impl Mapped {
    fn ignored(what: impl Into<String>, why: impl Into<String>) -> Self {
        Mapped::Ignored {
            what: what.into(),
            why: why.into(),
        }
    }
}

/// A bounce the provider reported: its own verdict (when it gives one)
/// and its words. The reason comes from Posthorn's reply classifier; the
/// hard/soft verdict is the provider's when it states one (it has seen the
/// retries), else the classifier's.
pub(crate) struct ProviderBounce<'a> {
    pub provider: Provider,
    /// The provider's own type, e.g. `HardBounce`, `Permanent/NoEmail`.
    pub provider_type: &'a str,
    pub stated: Option<BounceType>,
    pub smtp_code: Option<u16>,
    pub enhanced: Option<EnhancedCode>,
    pub text: Option<String>,
}

impl ProviderBounce<'_> {
    pub fn details(self) -> EventDetails {
        let text = self.text.as_deref().unwrap_or("");
        let smtp_code = self.smtp_code.or_else(|| leading_code(text));
        let enhanced = self.enhanced.or_else(|| {
            without_diagnostic_type(text)
                .split_whitespace()
                .take(3)
                .find_map(|w| EnhancedCode::parse(w.trim_matches(|c: char| !c.is_ascii_digit())))
        });
        let class = posthorn_bounce::classify_reply(smtp_code, enhanced, text);
        let bounce_type = match self.stated {
            Some(t) => t,
            None => class.bounce_type,
        };
        EventDetails::Bounced(Bounced {
            bounce_type,
            reason: Some(class.reason.as_str().to_owned()),
            smtp_code,
            enhanced_code: enhanced.or(class.status),
            reply_text: self.text.filter(|t| !t.is_empty()),
            origin: BounceOrigin::Async,
            rule: Some(format!(
                "provider.{}.{}",
                self.provider,
                self.provider_type.replace(char::is_whitespace, "-")
            )),
            mx_host: None,
        })
    }
}

/// A reply's leading three-digit code (`550 5.1.1 ...` -> 550).
/// A diagnostic in DSN form (`smtp; 550 ...`, as SES and Postmark give
/// it) counts from after its type.
pub(crate) fn leading_code(text: &str) -> Option<u16> {
    let word = without_diagnostic_type(text).split([' ', '-']).next()?;
    (word.len() == 3 && word.bytes().all(|b| b.is_ascii_digit()))
        .then(|| word.parse().ok())
        .flatten()
        .filter(|c| (200..600).contains(c))
}

/// The text after a DSN diagnostic type (`smtp;`), else the text.
pub(crate) fn without_diagnostic_type(text: &str) -> &str {
    let t = text.trim_start();
    match t.get(..5) {
        Some(p) if p.eq_ignore_ascii_case("smtp;") => t[5..].trim_start(),
        _ => t,
    }
}

/// An address as the store keeps it: trimmed, lower-cased, without angle
/// brackets; `None` when it is no address at all.
pub(crate) fn recipient(text: &str) -> Option<String> {
    let a = text.trim().trim_start_matches('<').trim_end_matches('>');
    let (local, domain) = a.rsplit_once('@')?;
    if local.is_empty()
        || domain.is_empty()
        || a.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return None;
    }
    Some(a.to_lowercase())
}

/// Seconds (maybe fractional) since the epoch as milliseconds.
pub(crate) fn seconds_to_millis(s: f64) -> Option<Millis> {
    (0.0..1e11)
        .contains(&s)
        .then(|| (s * 1000.0).round() as Millis)
}

/// The kind a mapped event has, for tests and logs.
pub fn kind_of(m: &Mapped) -> Option<EventKind> {
    match m {
        Mapped::Event(e) => Some(e.details.kind()),
        Mapped::Ignored { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_codes_and_recipients() {
        assert_eq!(leading_code("550 5.1.1 no such user"), Some(550));
        assert_eq!(leading_code("550-5.1.1 no"), Some(550));
        assert_eq!(leading_code("smtp;550 5.1.1 no"), Some(550));
        assert_eq!(leading_code("SMTP; 452 4.2.2 full"), Some(452));
        assert_eq!(leading_code("OK"), None);
        assert_eq!(leading_code("999 nope"), None);
        assert_eq!(
            recipient(" <Bob@Example.COM> ").as_deref(),
            Some("bob@example.com")
        );
        assert_eq!(recipient("not an address"), None);
        assert_eq!(recipient("a b@example.com"), None);
    }

    #[test]
    fn the_content_key_changes_with_the_content_only() {
        let event = MappedEvent {
            message_id: "m".into(),
            recipient: "a@example.com".into(),
            sender: None,
            event_id: Some("one".into()),
            occurred_at: 1_000,
            details: EventDetails::Delivered(Default::default()),
            raw: serde_json::json!({}),
        };
        let mut other_id = event.clone();
        other_id.event_id = Some("two".into());
        assert_eq!(
            event.content_key(Provider::Sendgrid),
            other_id.content_key(Provider::Sendgrid)
        );
        assert_ne!(
            event.id_key(Provider::Sendgrid),
            other_id.id_key(Provider::Sendgrid)
        );
        let mut later = event.clone();
        later.occurred_at = 2_000;
        assert_ne!(
            event.content_key(Provider::Sendgrid),
            later.content_key(Provider::Sendgrid)
        );
    }
}
