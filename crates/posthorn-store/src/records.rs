//! The values that go into and come out of a [`crate::Store`].

use posthorn_core::address::Mailbox;
use posthorn_core::contact::{ContactState, ContactStatus};
use posthorn_core::domain::SenderDomainRefusal;
use posthorn_core::event::EventDetails;
use posthorn_core::id::{ApiKeyId, InboundId};
use posthorn_core::inbound::{AttributedBy, InboundKind, OrphanReason};
use posthorn_core::status::{DeliveryStatus, EngagementStatus};
use posthorn_core::{DeliveryId, EventId, EventKind, EventSource, MessageId, Millis, TenantId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub created_at: Millis,
    /// `None`: the server default applies.
    pub campaign_dedupe: Option<bool>,
    /// Open tracking by default for this tenant; `None`: the server's.
    pub track_opens: Option<bool>,
    /// Click tracking by default for this tenant; `None`: the server's.
    pub track_clicks: Option<bool>,
}

/// A sending domain and the tenant that owns it (and, through it, its
/// subdomains).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendingDomain {
    /// ASCII (punycode), lower-case, without a trailing dot.
    pub domain: String,
    pub tenant_id: TenantId,
    pub created_at: Millis,
}

/// What claiming a sending domain did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainClaim {
    /// The domain is now the tenant's.
    Added(SendingDomain),
    /// The tenant owned it already; nothing changed.
    AlreadyOwned(SendingDomain),
    /// Another tenant owns this domain, a parent or a child of it
    /// (`owned`); nothing changed.
    Conflict { owned: String },
}

/// A DKIM private key as PostgreSQL keeps it for every node (`dkim_keys`;
/// on SQLite keys are files in the data directory). The store takes the
/// names as given: the server normalises and checks them, and the key.
#[derive(Clone, PartialEq, Eq)]
pub struct DkimKeyRecord {
    /// The signing domain (`d=`): ASCII, lower case.
    pub domain: String,
    /// The selector (`s=`): one DNS label, lower case.
    pub selector: String,
    /// The RSA private key, PKCS#8 (or PKCS#1) PEM.
    pub private_key_pem: String,
    /// When the key was made: the newest key of a domain signs.
    pub created_at: Millis,
}

// Never the key itself.
impl std::fmt::Debug for DkimKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimKeyRecord")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// Changes to a tenant's settings: `None` leaves a setting as it is,
/// `Some(None)` returns it to the server default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantSettingsPatch {
    pub campaign_dedupe: Option<Option<bool>>,
    pub track_opens: Option<Option<bool>>,
    pub track_clicks: Option<Option<bool>>,
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Send,
    Read,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Send => "send",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "send" => Some(Scope::Send),
            "read" => Some(Scope::Read),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

pub struct NewApiKey {
    pub id: ApiKeyId,
    pub tenant_id: TenantId,
    pub name: Option<String>,
    pub scopes: Vec<Scope>,
    /// SHA-256 of the secret, hex. The secret itself is never stored.
    pub secret_hash: String,
    pub created_at: Millis,
}

#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: ApiKeyId,
    pub tenant_id: TenantId,
    pub name: Option<String>,
    pub scopes: Vec<Scope>,
    pub secret_hash: String,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
}

impl ApiKeyRecord {
    /// An admin key may do everything.
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }
}

// The hash is not a secret in the way the key is, but there is no reason for
// it to reach a log either.
impl std::fmt::Debug for ApiKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyRecord")
            .field("id", &self.id)
            .field("tenant_id", &self.tenant_id)
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("secret_hash", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("revoked_at", &self.revoked_at)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecipientKind {
    To,
    Cc,
    Bcc,
}

impl RecipientKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientKind::To => "to",
            RecipientKind::Cc => "cc",
            RecipientKind::Bcc => "bcc",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "to" => Some(RecipientKind::To),
            "cc" => Some(RecipientKind::Cc),
            "bcc" => Some(RecipientKind::Bcc),
            _ => None,
        }
    }
}

/// One recipient of a message being accepted.
#[derive(Debug, Clone)]
pub struct NewRecipient {
    pub delivery_id: DeliveryId,
    /// Normalised address (see `EmailAddress::normalized`).
    pub address: String,
    pub kind: RecipientKind,
    /// Whether the domain can receive mail at all.
    pub deliverable_domain: bool,
}

/// Idempotency of a submission: the client's key and a hash of the body.
#[derive(Debug, Clone)]
pub struct IdempotencyRequest {
    pub key: String,
    pub body_hash: String,
    /// Records older than this are ignored (and replaced).
    pub not_before: Millis,
}

/// A message's content as submitted, the same in every copy: what the
/// submission doors validated, what the store keeps, what a copy is built
/// from. The submission's settings (stream, campaign, times, tracking) and
/// what the store adds (id, size, source, acceptance time) stay beside it in
/// [`NewMessage`] and [`MessageRecord`].
#[derive(Debug, Clone, PartialEq)]
pub struct MessageContent {
    /// The From header as submitted (a mailbox: both doors check it).
    pub from: String,
    /// The Reply-To header as submitted (a mailbox).
    pub reply_to: Option<String>,
    /// The To header's mailboxes as submitted; empty when there were none.
    pub to: Vec<Mailbox>,
    /// The Cc header's mailboxes. Bcc never shows, so it is not here.
    pub cc: Vec<Mailbox>,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    /// Custom headers, a JSON object of name to value.
    pub headers: serde_json::Value,
    pub tags: Vec<String>,
    pub metadata: serde_json::Value,
    /// The MIME message as received over SMTP (sent as it is; the fields
    /// above are then only what the door read from it).
    pub raw_mime: Option<Vec<u8>>,
}

/// A message as validated by a submission door, ready for the policy chain.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: MessageId,
    /// The sender's domains the accepting transaction checks against the
    /// sending domains' owners (empty: no check).
    pub sender_check: SenderCheck,
    pub tenant_id: TenantId,
    /// The envelope sender, normalised (see `EmailAddress::normalized`).
    pub from_address: String,
    pub content: MessageContent,
    pub stream: String,
    pub campaign: Option<String>,
    pub test: bool,
    pub send_at: Option<Millis>,
    pub expires_at: Option<Millis>,
    pub tracking_opens: Option<bool>,
    pub tracking_clicks: Option<bool>,
    pub size: u64,
    pub source: EventSource,
    pub recipients: Vec<NewRecipient>,
    pub idempotency: Option<IdempotencyRequest>,
    /// Settings resolved by the caller from config and tenant.
    pub stream_requires_confirmation: bool,
    pub campaign_dedupe: bool,
    pub accepted_at: Millis,
}

/// The answer to a submission, as returned (and replayed) to the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub id: MessageId,
    pub deliveries: Vec<ReceiptDelivery>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptDelivery {
    pub id: DeliveryId,
    pub recipient: String,
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcceptOutcome {
    Accepted(Receipt),
    /// A sender domain belongs to another tenant (or, when required, not to
    /// this one): nothing written.
    SenderRefused {
        refusal: SenderDomainRefusal,
        domain: String,
    },
    /// The same idempotency key and body were seen within 24 h: the first
    /// answer, nothing new written.
    Replayed(Receipt),
    /// The same idempotency key with a different body.
    IdempotencyConflict,
}

/// Which sender domains a submission must be allowed to send as. Judged in
/// the transaction that accepts the message, so that no claim of a domain
/// can come between the check and the accept (and with no read of its own).
#[derive(Debug, Clone, Default)]
pub struct SenderCheck {
    /// The envelope sender's and the From header's domains.
    pub domains: Vec<String>,
    /// `[policy] require_own_domain`: an unowned domain is refused too.
    pub require_own_domain: bool,
}

/// An event to record: one thing that happened to a delivery, recorded
/// once and never edited.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: EventId,
    pub delivery_id: DeliveryId,
    /// When it happened (as reported by whoever saw it).
    pub occurred_at: Millis,
    /// When we recorded it.
    pub recorded_at: Millis,
    pub source: EventSource,
    pub details: EventDetails,
    /// An id given by an outside system, for de-duplication.
    pub external_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RecordOutcome {
    /// (Shared with the commit stream, which publishes the same record.)
    Recorded {
        event: std::sync::Arc<EventRecord>,
        delivery: DeliveryRecord,
    },
    /// An event with this external id was already recorded.
    Duplicate {
        event: std::sync::Arc<EventRecord>,
        delivery: DeliveryRecord,
    },
    /// No such delivery for this tenant.
    UnknownDelivery,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// Its place in commit order: every later commit's events have higher
    /// numbers (see `Store::events_after`).
    pub seq: i64,
    pub id: EventId,
    pub delivery_id: DeliveryId,
    pub message_id: MessageId,
    pub recipient: String,
    pub sender: String,
    pub occurred_at: Millis,
    pub recorded_at: Millis,
    pub source: EventSource,
    /// What happened, with its kind (see [`EventRecord::kind`]).
    pub details: EventDetails,
    pub external_id: Option<String>,
    /// Set when the event contradicts the status (e.g. after `dropped`).
    pub anomaly: Option<String>,
    /// Recorded after the update window: did not change the status.
    pub outside_window: bool,
}

impl EventRecord {
    /// The kind is the details': one value, so the two cannot disagree.
    pub fn kind(&self) -> EventKind {
        self.details.kind()
    }
}

/// A change of one count of the statistics (`posthorn_core::stats`): the
/// deliveries submitted in `hour` with these dimensions ('' for none) that
/// count in `metric`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatsChange {
    pub hour: Millis,
    pub stream: String,
    pub campaign: String,
    /// A tag of the message, or '' for the count of all deliveries.
    pub tag: String,
    pub reason: String,
    pub metric: posthorn_core::stats::Metric,
    pub change: i64,
}

/// What the statistics are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsGroup {
    /// One group: the whole range.
    All,
    Hour,
    Day,
    Stream,
    Campaign,
    Tag,
    /// The receiving domain (counted by day).
    Domain,
    /// The reason of drops and bounces (other figures are not counted by
    /// reason).
    Reason,
}

/// A question to the statistics: deliveries submitted in `[from, to)`
/// (whole hours; days when by domain), of one stream, campaign, tag or
/// receiving domain when given. By domain (grouped or filtered), the
/// counts are by day and domain only: no stream, campaign or tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsQuery {
    pub from: Millis,
    pub to: Millis,
    pub group_by: StatsGroup,
    pub stream: Option<String>,
    pub campaign: Option<String>,
    pub tag: Option<String>,
    pub domain: Option<String>,
}

/// One count of the statistics: of a group (its key: the hour or day as
/// epoch milliseconds, or the name; '' for `All`), a figure and, for
/// drops and bounces, a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsCount {
    pub group: String,
    pub metric: posthorn_core::stats::Metric,
    pub reason: String,
    pub deliveries: i64,
}

/// A change of one count by receiving domain and day.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainStatsChange {
    pub day: Millis,
    pub domain: String,
    pub metric: posthorn_core::stats::Metric,
    pub change: i64,
}

/// How many deliveries have one stored pair of status axes (see
/// `Store::delivery_status_counts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusCount {
    pub delivery_status: Option<DeliveryStatus>,
    pub engagement_status: EngagementStatus,
    pub deliveries: u64,
}

/// A stored delivery with its folded status.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    pub id: DeliveryId,
    pub tenant_id: TenantId,
    pub message_id: MessageId,
    pub recipient: String,
    pub recipient_kind: RecipientKind,
    pub sender: String,
    pub stream: String,
    pub campaign: Option<String>,
    pub test: bool,
    pub created_at: Millis,
    pub window_ends_at: Millis,
    pub delivery_status: Option<DeliveryStatus>,
    pub delivery_event_id: Option<EventId>,
    pub delivery_occurred_at: Option<Millis>,
    pub engagement_status: EngagementStatus,
    pub engagement_event_id: Option<EventId>,
    pub engagement_occurred_at: Option<Millis>,
    pub updated_at: Millis,
    /// What it has been seen to do (for the statistics).
    pub seen: posthorn_core::stats::Seen,
}

impl DeliveryRecord {
    /// The status string users see.
    pub fn status(&self) -> &'static str {
        posthorn_core::status::shown_status(self.delivery_status, self.engagement_status)
    }
}

/// A stored message.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageRecord {
    pub id: MessageId,
    pub tenant_id: TenantId,
    /// The envelope sender, normalised.
    pub from_address: String,
    pub content: MessageContent,
    pub stream: String,
    pub campaign: Option<String>,
    pub test: bool,
    pub send_at: Option<Millis>,
    pub expires_at: Option<Millis>,
    pub tracking_opens: Option<bool>,
    pub tracking_clicks: Option<bool>,
    pub size: u64,
    pub source: EventSource,
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactRecord {
    pub address: String,
    pub state: ContactState,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// Statuses a contact may be given directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactInput {
    Active,
    Unconfirmed,
}

impl ContactInput {
    pub fn status(self) -> ContactStatus {
        match self {
            ContactInput::Active => ContactStatus::Active,
            ContactInput::Unconfirmed => ContactStatus::Unconfirmed,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactChange {
    pub from: ContactStatus,
    pub to: ContactStatus,
    pub reason: String,
    pub cause_event_id: Option<EventId>,
    pub at: Millis,
}

/// Counters about the store, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Transactions committed by the writer.
    pub batches: u64,
    /// Writes (jobs) committed in them.
    pub writes: u64,
    /// Batches rolled back and run again, a savepoint per write, because one
    /// of their writes failed.
    pub replays: u64,
    /// Events recorded.
    pub events: u64,
}

/// A delivery taken from the send queue for an attempt, with its message.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub delivery: DeliveryRecord,
    pub message: std::sync::Arc<MessageRecord>,
    /// The delivery's tenant as it was at the claim (its tracking
    /// defaults decide the copy), shared by the batch's deliveries.
    pub tenant: std::sync::Arc<Tenant>,
    /// This attempt's number (1 for the first).
    pub attempt: u32,
}

/// What one delivery attempt (or its start) writes: its events and, once
/// it has an outcome, where its queue entry goes.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub tenant: TenantId,
    pub delivery: DeliveryId,
    pub events: Vec<NewEvent>,
    /// `None` while the attempt runs (its `sent`): the entry stays leased.
    pub next: Option<QueueNext>,
}

/// What happens to a queue entry after an attempt: decided by the pure
/// outcome rules, written by the store.
pub use posthorn_core::outcome::QueueNext;

/// What became of a message the inbound MX received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InboundOutcome {
    /// Attributed to a delivery; its events were recorded.
    Recorded,
    /// Attributed, but its events had been recorded before (the same report
    /// received again).
    Duplicate,
    /// Attributed, kept as a note on the delivery without an event (an
    /// auto-reply, a success report).
    Note,
    /// Not attributed to any delivery: kept for an administrator to look at.
    Orphan,
}

impl InboundOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            InboundOutcome::Recorded => "recorded",
            InboundOutcome::Duplicate => "duplicate",
            InboundOutcome::Note => "note",
            InboundOutcome::Orphan => "orphan",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            InboundOutcome::Recorded,
            InboundOutcome::Duplicate,
            InboundOutcome::Note,
            InboundOutcome::Orphan,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

/// A message received by the inbound MX, with what was read from it and what
/// became of it. `tenant_id` and `delivery_id` are set when it was attributed.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundRecord {
    pub id: InboundId,
    pub received_at: Millis,
    pub tenant_id: Option<TenantId>,
    pub delivery_id: Option<DeliveryId>,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub kind: InboundKind,
    pub outcome: InboundOutcome,
    /// Why an orphan could not be attributed.
    pub orphan_reason: Option<OrphanReason>,
    /// How it was attributed.
    pub attribution: Option<AttributedBy>,
    /// The parser's records, as JSON.
    pub records: serde_json::Value,
    pub size: u64,
    /// The events recorded from it.
    pub event_ids: Vec<EventId>,
}

/// A message received by the inbound MX, to keep, with the events to record
/// from it (for `tenant_id`) in the same transaction.
#[derive(Debug, Clone)]
pub struct NewInbound {
    pub record: InboundRecord,
    pub raw: Vec<u8>,
    pub events: Vec<NewEvent>,
}

/// Which inbound messages to list, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InboundFilter {
    pub delivery_id: Option<DeliveryId>,
    pub outcome: Option<InboundOutcome>,
    /// Only messages with an id lower than this (the previous page's last).
    pub before: Option<InboundId>,
    pub limit: u32,
}

/// What the tracker needs to know about a delivery to judge and record a
/// hit, read in one go.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackingFacts {
    pub tenant_id: TenantId,
    pub delivery_id: DeliveryId,
    pub message_id: MessageId,
    pub recipient: String,
    pub stream: String,
    /// The message's own choice of open tracking, and its tenant's default
    /// (the stream's and the server's are configuration).
    pub tracking_opens: Option<bool>,
    pub tenant_track_opens: Option<bool>,
    /// The original URLs of its tracked links, by index.
    pub links: Vec<String>,
    /// The first `delivered` event's time, else the first `sent`'s.
    pub delivered_at: Option<Millis>,
    /// `delivered_at` is a `delivered` event's time (not a `sent`'s, nor
    /// unknown), so a later event will not change it: the tracker may keep
    /// these facts in memory.
    pub delivered_known: bool,
    /// Earlier `opened` and `clicked` events, oldest first.
    pub engagement: Vec<EventRecord>,
    /// Hits counted but not stored as events (repeats of stored ones).
    pub repeats: Vec<RepeatedHits>,
}

/// A tracker hit that repeats stored ones (the same target, client and
/// verdict, past the number stored): counted, not stored as an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRepeatedHit {
    pub delivery_id: DeliveryId,
    /// `Opened` or `Clicked`.
    pub kind: EventKind,
    /// The link of a click.
    pub link_index: Option<u32>,
    pub machine: bool,
    pub at: Millis,
}

/// The counted (not stored) hits of one delivery on one target with one
/// verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepeatedHits {
    pub delivery_id: DeliveryId,
    /// `Opened` or `Clicked`.
    pub kind: EventKind,
    pub link_index: Option<u32>,
    pub machine: bool,
    /// How many were counted.
    pub hits: u64,
    /// The latest of them.
    pub last_at: Millis,
}
