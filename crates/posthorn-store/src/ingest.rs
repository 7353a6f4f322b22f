//! The records of provider ingest: sources (where one provider's event
//! webhooks for one tenant arrive, and how they are verified) and the
//! batches of provider events recorded from them.

use posthorn_core::event::EventDetails;
use posthorn_core::id::IngestSourceId;
use posthorn_core::provider::Provider;
use posthorn_core::{DeliveryId, EventId, MessageId, Millis, TenantId};
use serde::{Deserialize, Serialize};

/// How a source's requests are verified, per provider, as each documents
/// it. Kept as JSON in the source's row.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceVerification {
    /// Basic-auth credentials written into the webhook URL: the user and
    /// the hex SHA-256 of `user:password` (the password is shown once).
    Postmark {
        user: String,
        credentials_sha256: String,
    },
    /// The webhook signing key (needed as it is to compute the HMAC).
    Mailgun { signing_key: String },
    /// SendGrid's verification key, base64 DER (a public key).
    Sendgrid { public_key: String },
    /// The SNS topics whose notifications are taken, and optionally the
    /// signing certificate (PEM) to use instead of fetching it.
    Ses {
        topic_arns: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        certificate_pem: Option<String>,
    },
}

impl SourceVerification {
    pub fn provider(&self) -> Provider {
        match self {
            SourceVerification::Postmark { .. } => Provider::Postmark,
            SourceVerification::Mailgun { .. } => Provider::Mailgun,
            SourceVerification::Sendgrid { .. } => Provider::Sendgrid,
            SourceVerification::Ses { .. } => Provider::Ses,
        }
    }
}

// The Mailgun key and the Postmark hash stay out of logs.
impl std::fmt::Debug for SourceVerification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceVerification::Postmark { user, .. } => f
                .debug_struct("Postmark")
                .field("user", user)
                .field("credentials_sha256", &"<redacted>")
                .finish(),
            SourceVerification::Mailgun { .. } => f
                .debug_struct("Mailgun")
                .field("signing_key", &"<redacted>")
                .finish(),
            SourceVerification::Sendgrid { public_key } => f
                .debug_struct("Sendgrid")
                .field("public_key", public_key)
                .finish(),
            SourceVerification::Ses {
                topic_arns,
                certificate_pem,
            } => f
                .debug_struct("Ses")
                .field("topic_arns", topic_arns)
                .field("certificate_pem", &certificate_pem.is_some())
                .finish(),
        }
    }
}

/// A provider ingest source of a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestSource {
    pub id: IngestSourceId,
    pub tenant_id: TenantId,
    pub name: Option<String>,
    /// Hex SHA-256 of the capability token in the source's URL (the token
    /// itself is shown once, at creation).
    pub token_hash: String,
    pub verification: SourceVerification,
    pub created_at: Millis,
    /// SES: the SubscribeURL of a subscription confirmation that was not
    /// fetched (offline mode), for an operator to open.
    pub pending_confirmation: Option<String>,
}

impl IngestSource {
    pub fn provider(&self) -> Provider {
        self.verification.provider()
    }
}

/// One provider event to record, with what finds (or creates) its
/// delivery.
#[derive(Debug, Clone)]
pub struct ProviderEvent {
    /// The provider's message id.
    pub provider_message_id: String,
    /// The recipient, normalised.
    pub recipient: String,
    /// The envelope sender, when the provider said.
    pub sender: Option<String>,
    /// The keys that record it once (the provider's event id, the content
    /// hash); the first is stored as the event's external id.
    pub keys: Vec<String>,
    /// The Posthorn event id to use when it is new.
    pub id: EventId,
    pub occurred_at: Millis,
    pub details: EventDetails,
    /// The provider's payload of this event, kept for `/v1/events/{id}/raw`.
    pub raw: Vec<u8>,
}

/// The events of one verified request, recorded in one transaction.
#[derive(Debug, Clone)]
pub struct ProviderBatch {
    pub tenant: TenantId,
    pub source: IngestSourceId,
    pub provider: Provider,
    /// A single-use token (Mailgun's) and until when it must be remembered:
    /// a token seen before refuses the whole batch, writing nothing.
    pub token: Option<(String, Millis)>,
    pub events: Vec<ProviderEvent>,
    /// The stream of messages first seen here.
    pub stream: String,
    pub now: Millis,
}

/// What recording a batch did.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderOutcome {
    /// The token was used before: nothing written.
    ReplayedToken,
    Recorded(Vec<ProviderEventOutcome>),
}

/// What became of one event of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderEventOutcome {
    pub event_id: EventId,
    pub delivery_id: DeliveryId,
    pub message_id: MessageId,
    /// Recorded before (by one of its keys): `event_id` is the first's.
    pub duplicate: bool,
}
