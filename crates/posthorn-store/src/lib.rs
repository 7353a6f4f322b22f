//! Posthorn's storage: the [`Store`] trait every backend implements, its
//! errors, the records it returns and a conformance suite that any backend
//! must pass (`conformance`), apart from the SQLite implementation (the
//! embedded default, `sqlite`), which alone names `rusqlite`, and the
//! PostgreSQL one (`postgres`, for several nodes), which alone names the
//! `postgres` crate; `copy` (moving an embedded store onto PostgreSQL)
//! names both.
//!
//! SQL text lives in the backend and nowhere else. The rules (status fold, contact and
//! suppression rules, the policy chain) come from `posthorn-core`; the
//! write engine (`engine`) gathers the facts inside a transaction, asks the
//! rule, and writes the result in the same transaction, once for every
//! backend, through the backend's statements (`engine::WriteTx`).

pub mod conformance;
pub mod copy;
mod engine;
pub mod feed;
mod ingest;
pub mod postgres;
mod records;
mod search;
pub mod sqlite;

pub use self::postgres::PgStore;
pub use feed::{CommitFeed, CommittedEvents, Origin};
pub use ingest::*;
pub use records::*;
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use posthorn_core::domain::DomainOwner;
use posthorn_core::id::{ApiKeyId, InboundId, IngestSourceId};
use posthorn_core::search::Filters;
use posthorn_core::suppression::SuppressionEntry;
use posthorn_core::{DeliveryId, EventId, MessageId, Millis, NodeId, TenantId};

/// Errors at the storage boundary, by what the caller can do about them
/// (see [`StoreError::is_transient`]). Backends map their own failures onto
/// these kinds; SQLite's mapping is in `sqlite::error`.
///
/// `Clone`: the single writer answers every caller of a failed group
/// commit with the same error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A unique value already exists (tenant name, ...). The message may be
    /// shown to API clients.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A stored value this version cannot read (written by a newer version,
    /// or damaged). Reading fails, naming where it is and what it holds,
    /// rather than guessing: an unreadable contact status read as `active`
    /// would make a bounced address mailable again.
    #[error("{table}.{column} holds {value:?}, which is not a value this version can read")]
    Corrupt {
        table: &'static str,
        column: &'static str,
        value: String,
    },
    /// The store cannot take the request now; nothing was written. The
    /// detail is for operators.
    #[error("{cause}: {detail}")]
    Unavailable { cause: Unavailable, detail: String },
    /// Any other failure of the database. The source is for operators, not
    /// API clients. It is shown in this error's message (callers log the
    /// message alone) and therefore not also returned as `source()`.
    #[error("storage error: {0}")]
    Backend(std::sync::Arc<dyn std::error::Error + Send + Sync>),
}

/// Why the store is [`StoreError::Unavailable`]. Callers answer the two
/// differently (HTTP 503 `shutting_down` or `storage_full`; SMTP 451 or
/// 452 4.3.1), so it is the cause, not only whether to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// The writer has stopped (shutting down). This store will not take
    /// writes again; a client's retry reaches the next run.
    #[error("the store is closed")]
    Closed,
    /// The disk holding the database is full: the write was not made, and
    /// the same write succeeds once space returns (nothing else is wrong),
    /// in this process too.
    #[error("storage full")]
    StorageFull,
    /// The database server cannot be reached, or refuses connections now
    /// (PostgreSQL restarting, a network failure, too many connections):
    /// nothing was written, and the same request succeeds once it is back.
    #[error("the database is unreachable")]
    Unreachable,
}

impl StoreError {
    /// The writer has stopped.
    pub fn closed() -> Self {
        StoreError::Unavailable {
            cause: Unavailable::Closed,
            detail: "the writer has stopped".into(),
        }
    }

    /// The disk is full; `detail` (the backend's words) is for operators.
    pub fn storage_full(detail: impl std::fmt::Display) -> Self {
        StoreError::Unavailable {
            cause: Unavailable::StorageFull,
            detail: detail.to_string(),
        }
    }

    /// A backend failure from an error or a message.
    pub fn backend(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        StoreError::Backend(std::sync::Arc::from(source.into()))
    }

    /// Whether the same request may succeed if made again later, with
    /// nothing changed: true while the store is unavailable (a full disk,
    /// a restart). A conflict or a corrupt value stays as it is; a backend
    /// failure is not known to pass.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }

    /// Whether the disk is full (see [`Unavailable::StorageFull`]): what
    /// callers answer with "storage full" and retry in-process.
    pub fn is_storage_full(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable {
                cause: Unavailable::StorageFull,
                ..
            }
        )
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Everything Posthorn keeps. Every method that touches tenant data takes the
/// tenant: an id of another tenant is simply not found.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // --- tenants and keys ---
    async fn create_tenant(&self, name: &str, now: Millis) -> StoreResult<Tenant>;
    async fn tenant_by_name(&self, name: &str) -> StoreResult<Option<Tenant>>;
    async fn tenant_count(&self) -> StoreResult<u64>;
    async fn tenant(&self, id: &TenantId) -> StoreResult<Option<Tenant>>;
    /// Changes a tenant's settings; the tenant as it is now.
    async fn update_tenant_settings(
        &self,
        tenant: &TenantId,
        patch: TenantSettingsPatch,
    ) -> StoreResult<Option<Tenant>>;
    async fn insert_api_key(&self, key: NewApiKey) -> StoreResult<ApiKeyRecord>;
    /// The key with this public id and its tenant, revoked or not.
    async fn api_key(&self, id: &ApiKeyId) -> StoreResult<Option<(ApiKeyRecord, Tenant)>>;
    /// Keys of one tenant, or of all tenants.
    async fn api_keys(&self, tenant: Option<&TenantId>) -> StoreResult<Vec<ApiKeyRecord>>;
    /// Marks a key revoked; false when there is no such (unrevoked) key.
    async fn revoke_api_key(&self, id: &ApiKeyId, now: Millis) -> StoreResult<bool>;

    // --- sending domains ---
    /// Claims `domain` (normalised: ASCII, lower-case) for `tenant`, unless
    /// it, a parent or a child of it belongs to another tenant.
    async fn claim_sending_domain(
        &self,
        tenant: &TenantId,
        domain: &str,
        now: Millis,
    ) -> StoreResult<DomainClaim>;
    /// One tenant's sending domains, or every tenant's, by domain.
    async fn sending_domains(&self, tenant: Option<&TenantId>) -> StoreResult<Vec<SendingDomain>>;
    /// Gives up a tenant's domain; false when the tenant does not own it.
    async fn release_sending_domain(&self, tenant: &TenantId, domain: &str) -> StoreResult<bool>;
    /// The owners of `domains` and of their parent domains (those that have
    /// one), across tenants: what the sender-domain check and DKIM signing
    /// decide by.
    async fn domain_owners(&self, domains: &[&str]) -> StoreResult<Vec<DomainOwner>>;

    // --- submission ---
    /// Accepts a message: runs the policy chain per recipient and writes the
    /// message, its deliveries, their first events and queue entries (and the
    /// idempotency record) in one transaction.
    async fn accept_message(&self, message: NewMessage) -> StoreResult<AcceptOutcome>;

    // --- events ---
    /// Records one event for a delivery of `tenant`: folds it into the
    /// delivery's status and applies its effects on the contact and the
    /// suppression list, all in one transaction.
    async fn record_event(&self, tenant: &TenantId, event: NewEvent) -> StoreResult<RecordOutcome>;
    /// Events of `tenant` committed after the event numbered `after` (its
    /// `seq`; 0 for the first), in commit order, at most `limit`, matching
    /// `filters` (whose `order` is not used). A reader that goes on from
    /// the last `seq` it got misses none: an event it has not seen yet
    /// never has a lower number. With concurrent writers (PostgreSQL) a
    /// committed event is returned once every transaction that may hold a
    /// lower number has ended, a moment after its commit.
    async fn events_after(
        &self,
        tenant: &TenantId,
        after: i64,
        filters: &Filters,
        limit: u32,
    ) -> StoreResult<Vec<EventRecord>>;
    /// The position of the last event a reader can see now (0 when there
    /// is none): `events_after` from it gives everything committed later.
    async fn commit_position(&self) -> StoreResult<i64>;
    /// Every event, published once right after its commit.
    fn commits(&self) -> &CommitFeed;

    // --- search (the filter grammar, `posthorn_core::search`) ---
    /// A page of the tenant's events matching `filters`, in their order
    /// (`order`), after the event `after` (the previous page's last).
    async fn search_events(
        &self,
        tenant: &TenantId,
        filters: &Filters,
        after: Option<&EventId>,
        limit: u32,
    ) -> StoreResult<Vec<EventRecord>>;
    /// A page of the tenant's deliveries matching `filters` (statuses as
    /// they are now; event filters: having such an event), after the
    /// delivery `after`.
    async fn search_deliveries(
        &self,
        tenant: &TenantId,
        filters: &Filters,
        after: Option<&DeliveryId>,
        limit: u32,
    ) -> StoreResult<Vec<DeliveryRecord>>;
    /// The statistics' counts (kept as deliveries change: no event is
    /// read), by group, figure and reason; counts of zero left out.
    async fn delivery_stats(
        &self,
        tenant: &TenantId,
        query: &StatsQuery,
    ) -> StoreResult<Vec<StatsCount>>;
    /// How many of the tenant's deliveries matching `filters` have each
    /// pair of status axes.
    async fn delivery_status_counts(
        &self,
        tenant: &TenantId,
        filters: &Filters,
    ) -> StoreResult<Vec<StatusCount>>;

    // --- reads ---
    async fn event(&self, tenant: &TenantId, id: &EventId) -> StoreResult<Option<EventRecord>>;
    async fn message(
        &self,
        tenant: &TenantId,
        id: &MessageId,
    ) -> StoreResult<Option<MessageRecord>>;
    async fn deliveries_of_message(
        &self,
        tenant: &TenantId,
        id: &MessageId,
    ) -> StoreResult<Vec<DeliveryRecord>>;
    async fn delivery(
        &self,
        tenant: &TenantId,
        id: &DeliveryId,
    ) -> StoreResult<Option<DeliveryRecord>>;
    /// Every event of a delivery, oldest first (its timeline).
    async fn delivery_events(
        &self,
        tenant: &TenantId,
        id: &DeliveryId,
    ) -> StoreResult<Vec<EventRecord>>;
    /// One page of a delivery's timeline: at most `limit` events, oldest
    /// first, after the event `after` (the previous page's last).
    async fn delivery_events_page(
        &self,
        tenant: &TenantId,
        id: &DeliveryId,
        after: Option<&EventId>,
        limit: u32,
    ) -> StoreResult<Vec<EventRecord>>;
    /// The `opened` and `clicked` events of one delivery, oldest first.
    async fn delivery_engagement_events(
        &self,
        tenant: &TenantId,
        id: &DeliveryId,
    ) -> StoreResult<Vec<EventRecord>>;
    /// The `opened` and `clicked` events of every delivery of a message, in
    /// one read (a message's engagement), in no particular order.
    async fn message_engagement_events(
        &self,
        tenant: &TenantId,
        message: &MessageId,
    ) -> StoreResult<Vec<EventRecord>>;
    async fn contact(&self, tenant: &TenantId, address: &str)
    -> StoreResult<Option<ContactRecord>>;
    /// Creates a contact with a status, or sets the status of an existing one
    /// to `active`/`unconfirmed` (confirming an opt-in). Statuses set by
    /// bounces, complaints and unsubscribes are not overwritten.
    async fn put_contact(
        &self,
        tenant: &TenantId,
        address: &str,
        status: ContactInput,
        now: Millis,
    ) -> StoreResult<ContactRecord>;
    async fn contact_changes(
        &self,
        tenant: &TenantId,
        address: &str,
    ) -> StoreResult<Vec<ContactChange>>;
    /// Active (unexpired, not removed) suppression entries, newest first.
    async fn suppressions(
        &self,
        tenant: &TenantId,
        now: Millis,
    ) -> StoreResult<Vec<SuppressionEntry>>;
    /// Number of entries in the send queue of a tenant.
    async fn queue_len(&self, tenant: &TenantId) -> StoreResult<u64>;

    // --- the send queue (all tenants: the delivery workers' view) ---
    /// Forgets the leases `node` holds (at its start: a previous run of it
    /// that died holds none any more), so those deliveries are attempted
    /// again at once. Other nodes' leases stay until they run out.
    async fn release_leases(&self, node: &NodeId) -> StoreResult<u64>;
    /// Takes up to `limit` entries due at `now` whose lease is free or has
    /// run out (whoever held it), leases them to `node` until
    /// `lease_until` and counts the attempt.
    async fn claim_due(
        &self,
        node: &NodeId,
        now: Millis,
        limit: u32,
        lease_until: Millis,
    ) -> StoreResult<Vec<ClaimedDelivery>>;
    /// Records an attempt's outcome events and moves its queue entry, in one
    /// transaction: a delivery with a verdict leaves the queue together with
    /// the event that says so, so it is never sent again. Returns the
    /// events stored (not those already recorded).
    async fn finish_attempt(
        &self,
        tenant: &TenantId,
        events: Vec<NewEvent>,
        delivery: &DeliveryId,
        next: QueueNext,
    ) -> StoreResult<Vec<std::sync::Arc<EventRecord>>> {
        self.record_attempts(vec![AttemptRecord {
            tenant: tenant.clone(),
            delivery: delivery.clone(),
            events,
            next: Some(next),
        }])
        .await
    }
    /// Records several attempts in one transaction, in order (a delivery's
    /// `sent` before its outcome): all or nothing. Returns the events stored.
    async fn record_attempts(
        &self,
        attempts: Vec<AttemptRecord>,
    ) -> StoreResult<Vec<std::sync::Arc<EventRecord>>>;

    // --- inbound mail (the inbound MX's view: all tenants) ---
    /// The tenant and recipient of a delivery, whichever tenant it belongs
    /// to: the inbound MX learns the delivery from a VERP token or a
    /// Message-ID, before it knows the tenant.
    async fn delivery_owner(&self, id: &DeliveryId) -> StoreResult<Option<(TenantId, String)>>;
    /// Keeps a received message and records its events (for the record's
    /// tenant) in one transaction, so a report is never half applied. Events
    /// already recorded (same external id) are not recorded again; when all
    /// were, the outcome becomes [`InboundOutcome::Duplicate`].
    async fn record_inbound(&self, inbound: NewInbound) -> StoreResult<InboundRecord>;
    /// Received messages of `tenant`, or with `None` the orphans (attributed
    /// to no tenant), newest first.
    async fn inbound_messages(
        &self,
        tenant: Option<&TenantId>,
        filter: &InboundFilter,
    ) -> StoreResult<Vec<InboundRecord>>;
    /// The raw bytes of a received message of `tenant` (`None`: of an orphan).
    async fn inbound_raw(
        &self,
        tenant: Option<&TenantId>,
        id: &InboundId,
    ) -> StoreResult<Option<Vec<u8>>>;
    /// The received message an event of `tenant` was read from.
    async fn event_inbound(
        &self,
        tenant: &TenantId,
        event: &EventId,
    ) -> StoreResult<Option<InboundId>>;
    /// The tenant created first (by `serve`'s first start): the operator's,
    /// whose administrators look after orphans.
    async fn operator_tenant(&self) -> StoreResult<Option<TenantId>>;

    // --- tracking ---
    /// Keeps the original URLs of a message's tracked links (by index);
    /// links already kept stay as they are.
    async fn put_message_links(&self, message: &MessageId, links: Vec<String>) -> StoreResult<()>;
    /// Everything the tracker judges a hit on, whichever tenant the
    /// delivery belongs to (a signed token named it).
    async fn tracking_facts(&self, delivery: &DeliveryId) -> StoreResult<Option<TrackingFacts>>;
    /// Counts a hit that is not stored as an event (it repeats stored
    /// ones): no event, no status change, only the count of its delivery,
    /// target and verdict. False when `tenant` has no such delivery.
    async fn record_repeated_hit(
        &self,
        tenant: &TenantId,
        hit: NewRepeatedHit,
    ) -> StoreResult<bool>;
    /// The counted repeats of one delivery.
    async fn delivery_repeated_hits(
        &self,
        tenant: &TenantId,
        id: &DeliveryId,
    ) -> StoreResult<Vec<RepeatedHits>>;
    /// The counted repeats of every delivery of a message.
    async fn message_repeated_hits(
        &self,
        tenant: &TenantId,
        message: &MessageId,
    ) -> StoreResult<Vec<RepeatedHits>>;

    // --- provider ingest ---
    /// Keeps a new ingest source (its id and token hash are the caller's).
    async fn create_ingest_source(&self, source: IngestSource) -> StoreResult<IngestSource>;
    /// A tenant's ingest sources, oldest first.
    async fn ingest_sources(&self, tenant: &TenantId) -> StoreResult<Vec<IngestSource>>;
    /// The source whose capability token hashes to `token_hash`, whichever
    /// tenant it belongs to (the token names it before the tenant is known).
    async fn ingest_source_by_token(&self, token_hash: &str) -> StoreResult<Option<IngestSource>>;
    /// Removes a tenant's source (and its remembered tokens); false when
    /// the tenant has no such source. Events recorded from it stay.
    async fn delete_ingest_source(
        &self,
        tenant: &TenantId,
        id: &IngestSourceId,
    ) -> StoreResult<bool>;
    /// Notes (or clears, with `None`) a subscription confirmation URL that
    /// was not fetched; false when the tenant has no such source.
    async fn set_ingest_pending_confirmation(
        &self,
        tenant: &TenantId,
        id: &IngestSourceId,
        url: Option<String>,
    ) -> StoreResult<bool>;
    /// Records a verified request's provider events in one transaction
    /// (see [`ProviderBatch`]): a replayed token writes nothing; each event
    /// is recorded once by any of its keys.
    async fn record_provider_events(&self, batch: ProviderBatch) -> StoreResult<ProviderOutcome>;
    /// The provider's payload an event of `tenant` was recorded from.
    async fn provider_payload(
        &self,
        tenant: &TenantId,
        event: &EventId,
    ) -> StoreResult<Option<Vec<u8>>>;

    /// Counters about the store itself, for `/metrics`.
    fn stats(&self) -> StoreStats;
}

/// The rules the store applies when it records events, from configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoreRules {
    /// `[status] window`: how long after queueing events still change status.
    pub status_window: Millis,
    pub contact_limits: posthorn_core::contact::ContactLimits,
    pub suppression_expiry: posthorn_core::suppression::SuppressionExpiry,
}

impl StoreRules {
    pub fn from_config(config: &posthorn_core::config::Config) -> Self {
        Self {
            status_window: config.status.window.0,
            contact_limits: config.status.contact_limits(),
            suppression_expiry: config.suppression.expiry(),
        }
    }
}

impl Default for StoreRules {
    fn default() -> Self {
        Self::from_config(&posthorn_core::config::Config::default())
    }
}
