//! The write engine: every write Posthorn makes, written once for every
//! backend.
//!
//! A write reads the facts it needs, asks the rule in `posthorn-core`
//! (status fold, contact signals, suppressions, the policy chain, domain
//! ownership) and writes the outcome, all inside one transaction, so a
//! decision and its effects are one atomic step. The orchestration lives
//! here; a backend only provides [`WriteTx`]: small statements (insert
//! this row, read that one, lock it) in its own SQL, and the transaction
//! they run in. SQLite implements it in `sqlite::tx`, PostgreSQL in
//! `postgres`.
//!
//! Concurrency is the backend's duty, stated per method: SQLite has one
//! writer, so a read is already the truth until commit; PostgreSQL runs
//! several transactions at once and must lock the rows a decision reads
//! (`delivery`, `contact`: `FOR UPDATE`) and back the "does it exist yet"
//! checks with unique constraints, retrying a transaction that loses a
//! race (serialization failure, deadlock) from the start. Engine functions
//! therefore act only through the transaction: running one again in a
//! fresh transaction is always safe.

mod accept;
mod domains;
mod events;
mod inbound;
mod ingest;
mod queue;
pub(crate) mod stats;

pub(crate) use accept::{accept_message, create_tenant, insert_api_key};
pub(crate) use domains::{candidates as domain_candidates, claim_sending_domain};
pub(crate) use events::{put_contact, record_event};
pub(crate) use inbound::record_inbound;
pub(crate) use ingest::record_provider_events;
pub(crate) use queue::{claim_due, record_attempts};

use crate::StoreResult;
use crate::ingest::IngestSource;
use crate::records::*;
use posthorn_core::contact::ContactState;
use posthorn_core::domain::DomainOwner;
use posthorn_core::id::{ApiKeyId, IngestSourceId};
use posthorn_core::suppression::SuppressionEntry;
use posthorn_core::{DeliveryId, EventId, MessageId, Millis, NodeId, TenantId};
use std::sync::Arc;

/// The statements of one write transaction, in a backend's SQL.
///
/// Reads answer what the transaction sees (its own writes included);
/// writes take effect at commit, all or nothing. Methods that say "locks"
/// must keep the row from changing under the transaction until it ends, on
/// a backend with concurrent writers.
pub(crate) trait WriteTx {
    // --- tenants and keys ---
    fn tenant(&mut self, id: &TenantId) -> StoreResult<Option<Tenant>>;
    fn tenant_by_name(&mut self, name: &str) -> StoreResult<Option<Tenant>>;
    /// Inserts a tenant; a name taken meanwhile is a `Conflict`.
    fn insert_tenant(&mut self, tenant: &Tenant) -> StoreResult<()>;
    /// Applies the settings the patch names (none when there is no such
    /// tenant).
    fn update_tenant_settings(
        &mut self,
        tenant: &TenantId,
        patch: &TenantSettingsPatch,
    ) -> StoreResult<()>;
    fn insert_api_key(&mut self, key: &NewApiKey) -> StoreResult<()>;
    /// Marks an unrevoked key revoked; false when there is none.
    fn revoke_api_key(&mut self, id: &ApiKeyId, now: Millis) -> StoreResult<bool>;

    // --- sending domains ---
    /// The owner of exactly `domain`, locking the name against a concurrent
    /// claim.
    fn sending_domain(&mut self, domain: &str) -> StoreResult<Option<SendingDomain>>;
    /// Every sending domain of tenants other than `tenant`. On a backend
    /// with concurrent writers, claims must not interleave (the check over
    /// parents and children is not a single row): the backend serialises
    /// them, e.g. with a transaction-scoped lock taken here.
    fn domains_of_other_tenants(&mut self, tenant: &TenantId) -> StoreResult<Vec<String>>;
    fn insert_sending_domain(&mut self, domain: &SendingDomain) -> StoreResult<()>;
    /// False when `tenant` does not own `domain`.
    fn delete_sending_domain(&mut self, tenant: &TenantId, domain: &str) -> StoreResult<bool>;
    /// The owners of those of `domains` that have one.
    fn domain_owners(&mut self, domains: &[String]) -> StoreResult<Vec<DomainOwner>>;

    // --- messages and deliveries ---
    /// The body hash and stored receipt (JSON) of an idempotency key used
    /// at or after `not_before`, locking the key against a concurrent use.
    fn idempotency_record(
        &mut self,
        tenant: &TenantId,
        key: &str,
        not_before: Millis,
    ) -> StoreResult<Option<(String, String)>>;
    /// Keeps (or replaces an expired) idempotency record.
    fn save_idempotency_record(
        &mut self,
        tenant: &TenantId,
        key: &str,
        body_hash: &str,
        receipt: &str,
        now: Millis,
    ) -> StoreResult<()>;
    fn insert_message(&mut self, message: &NewMessage) -> StoreResult<()>;
    /// A message known only from a provider's events (no content).
    fn insert_external_message(&mut self, message: &ExternalMessage) -> StoreResult<()>;
    fn message(&mut self, tenant: &TenantId, id: &MessageId) -> StoreResult<Option<MessageRecord>>;
    fn insert_delivery(&mut self, delivery: &DeliveryRecord) -> StoreResult<()>;
    /// The delivery of `tenant`, locked: its status is about to be folded.
    fn delivery(
        &mut self,
        tenant: &TenantId,
        id: &DeliveryId,
    ) -> StoreResult<Option<DeliveryRecord>>;
    /// Several deliveries of `tenant` (those that exist), locked, in one
    /// go: a batch of attempts is about to fold its outcomes. Locked in the
    /// order of their ids, so two batches never wait for each other in a
    /// circle.
    fn lock_deliveries(
        &mut self,
        tenant: &TenantId,
        ids: &[DeliveryId],
    ) -> StoreResult<Vec<DeliveryRecord>> {
        let mut sorted: Vec<&DeliveryId> = ids.iter().collect();
        sorted.sort();
        sorted.dedup();
        let mut found = Vec::with_capacity(sorted.len());
        for id in sorted {
            found.extend(self.delivery(tenant, id)?);
        }
        Ok(found)
    }
    /// Several deliveries of `tenant` (those that exist), not locked: a
    /// claim's, which its lease keeps every other sender away from.
    fn deliveries_to_send(
        &mut self,
        tenant: &TenantId,
        ids: &[DeliveryId],
    ) -> StoreResult<Vec<DeliveryRecord>> {
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            found.extend(self.delivery(tenant, id)?);
        }
        Ok(found)
    }
    /// Several messages of `tenant` (those that exist).
    fn messages(
        &mut self,
        tenant: &TenantId,
        ids: &[MessageId],
    ) -> StoreResult<Vec<MessageRecord>> {
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            found.extend(self.message(tenant, id)?);
        }
        Ok(found)
    }
    /// A hint, before a group of writes runs: events of these deliveries of
    /// `tenant` are about to be recorded. A backend may lock them now, in
    /// one go, and answer the [`WriteTx::delivery`] reads that follow from
    /// what it read. Changes nothing a transaction can see.
    fn prefetch_deliveries(&mut self, _tenant: &TenantId, _ids: &[DeliveryId]) -> StoreResult<()> {
        Ok(())
    }
    /// Writes the delivery's status columns, what it was seen to do
    /// (`seen`) and `updated_at`.
    fn save_delivery_status(&mut self, delivery: &DeliveryRecord) -> StoreResult<()>;
    /// The tags of a message of `tenant` (none when there is no such).
    fn message_tags(&mut self, tenant: &TenantId, message: &MessageId) -> StoreResult<Vec<String>>;
    /// Adds changes to the statistics' counts.
    fn add_stats(
        &mut self,
        tenant: &TenantId,
        changes: &[StatsChange],
        domains: &[DomainStatsChange],
    ) -> StoreResult<()>;
    /// Whether `recipient` already has a delivery of `campaign` that was not
    /// dropped.
    fn campaign_has_recipient(
        &mut self,
        tenant: &TenantId,
        campaign: &str,
        recipient: &str,
    ) -> StoreResult<bool>;

    // --- events ---
    /// Numbers the event, inserts it, and keeps it to publish once the
    /// transaction commits. `None`, writing nothing, when the tenant has an
    /// event with the same id or external id. The number (`seq`) given here
    /// is final: a reader that has seen it never later finds a committed
    /// event with a lower one.
    fn insert_event(
        &mut self,
        tenant: &TenantId,
        event: EventRecord,
    ) -> StoreResult<Option<Arc<EventRecord>>>;
    fn event_by_id(&mut self, tenant: &TenantId, id: &EventId) -> StoreResult<Option<EventRecord>>;
    fn event_by_external_id(
        &mut self,
        tenant: &TenantId,
        external_id: &str,
    ) -> StoreResult<Option<EventRecord>>;

    // --- contacts and suppressions ---
    /// Locks the contacts of `tenant` among `addresses` that exist, in the
    /// order of their addresses, ahead of the [`WriteTx::contact`] reads
    /// that follow (which a backend may then answer without a round trip).
    /// Changes nothing a transaction can see.
    fn lock_contacts(&mut self, _tenant: &TenantId, _addresses: &[&str]) -> StoreResult<()> {
        Ok(())
    }
    /// A hint, before a group of messages is accepted: these recipients of
    /// `tenant` are about to be admitted. A backend may read their
    /// suppressions and lock their contacts now, in one go, and answer the
    /// reads that follow from what it read. Changes nothing a transaction
    /// can see.
    fn prefetch_recipients(&mut self, _tenant: &TenantId, _addresses: &[&str]) -> StoreResult<()> {
        Ok(())
    }
    /// The contact, locked: its state is about to change.
    fn contact(&mut self, tenant: &TenantId, address: &str) -> StoreResult<Option<ContactRecord>>;
    /// Inserts a contact that [`WriteTx::contact`] did not find. One
    /// inserted meanwhile by a concurrent transaction must fail this one in
    /// a way that runs it again (it then finds and locks that contact).
    fn insert_contact(
        &mut self,
        tenant: &TenantId,
        address: &str,
        state: &ContactState,
        now: Millis,
    ) -> StoreResult<()>;
    /// Inserts a contact unless one exists (then changes nothing).
    fn insert_contact_unless_exists(
        &mut self,
        tenant: &TenantId,
        address: &str,
        state: &ContactState,
        now: Millis,
    ) -> StoreResult<()>;
    fn update_contact(
        &mut self,
        tenant: &TenantId,
        address: &str,
        state: &ContactState,
        now: Millis,
    ) -> StoreResult<()>;
    fn insert_contact_change(
        &mut self,
        tenant: &TenantId,
        address: &str,
        change: &ContactChange,
    ) -> StoreResult<()>;
    /// The suppression entries active at `now` that may concern `address`:
    /// its own and its domain's.
    fn suppressions_for(
        &mut self,
        tenant: &TenantId,
        address: &str,
        now: Millis,
    ) -> StoreResult<Vec<SuppressionEntry>>;
    /// Adds the entry unless an active one for the same target and scope
    /// exists at `entry.created_at` (then changes nothing).
    fn insert_suppression(
        &mut self,
        tenant: &TenantId,
        entry: &SuppressionEntry,
    ) -> StoreResult<()>;

    // --- the send queue ---
    fn enqueue(
        &mut self,
        tenant: &TenantId,
        delivery: &DeliveryId,
        due_at: Millis,
        now: Millis,
    ) -> StoreResult<()>;
    /// Leases to `node` until `until` up to `limit` entries due at `now`,
    /// and not before `from`, whose lease is free or has run out, oldest
    /// due first, and counts their attempt; entries another transaction
    /// holds are skipped, not waited for.
    fn claim_entries(
        &mut self,
        node: &NodeId,
        window: ClaimWindow,
        limit: u32,
        until: Millis,
    ) -> StoreResult<Vec<DueEntry>>;
    /// Forgets every lease `node` holds; how many there were.
    fn release_leases(&mut self, node: &NodeId) -> StoreResult<u64>;
    fn dequeue(&mut self, delivery: &DeliveryId) -> StoreResult<()>;
    /// Makes the entry due again at `at`, with no lease.
    fn requeue(&mut self, delivery: &DeliveryId, at: Millis) -> StoreResult<()>;

    // --- inbound mail ---
    fn insert_inbound(&mut self, record: &InboundRecord, raw: &[u8]) -> StoreResult<()>;
    /// Links an event to the received message it was read from, unless it
    /// is linked already.
    fn link_inbound_event(&mut self, event: &EventId, inbound: &InboundRecord) -> StoreResult<()>;

    // --- tracking ---
    /// Keeps the links by position; positions kept already stay.
    fn insert_message_links(&mut self, message: &MessageId, links: &[String]) -> StoreResult<()>;
    /// Counts a repeated hit; false when `tenant` has no such delivery.
    fn count_repeated_hit(&mut self, tenant: &TenantId, hit: &NewRepeatedHit) -> StoreResult<bool>;

    // --- provider ingest ---
    fn insert_ingest_source(&mut self, source: &IngestSource) -> StoreResult<()>;
    /// Removes the source and its remembered tokens; false when `tenant`
    /// has no such source.
    fn delete_ingest_source(&mut self, tenant: &TenantId, id: &IngestSourceId)
    -> StoreResult<bool>;
    fn set_ingest_pending_confirmation(
        &mut self,
        tenant: &TenantId,
        id: &IngestSourceId,
        url: Option<&str>,
    ) -> StoreResult<bool>;
    /// Whether `tenant` still has the source, locking it against removal.
    fn ingest_source_exists(&mut self, tenant: &TenantId, id: &IngestSourceId)
    -> StoreResult<bool>;
    /// Forgets tokens expired at `now`, then keeps `token`; false when it was
    /// kept before (a replay).
    fn use_ingest_token(
        &mut self,
        source: &IngestSourceId,
        token: &str,
        expires_at: Millis,
        now: Millis,
    ) -> StoreResult<bool>;
    /// The event first recorded under a provider's event key.
    fn provider_event_key(&mut self, tenant: &TenantId, key: &str) -> StoreResult<Option<EventId>>;
    /// Keeps each key for `event`, unless the key is kept already.
    fn remember_provider_keys(
        &mut self,
        tenant: &TenantId,
        keys: &[String],
        event: &EventId,
    ) -> StoreResult<()>;
    /// The delivery made for a provider's message to `recipient`.
    fn provider_delivery(
        &mut self,
        tenant: &TenantId,
        provider_message: &ProviderMessageRef<'_>,
        recipient: &str,
    ) -> StoreResult<Option<DeliveryId>>;
    /// The message made for a provider's message (any recipient).
    fn provider_message(
        &mut self,
        tenant: &TenantId,
        provider_message: &ProviderMessageRef<'_>,
    ) -> StoreResult<Option<MessageId>>;
    fn insert_provider_delivery(
        &mut self,
        provider_message: &ProviderMessageRef<'_>,
        delivery: &DeliveryRecord,
    ) -> StoreResult<()>;
    fn insert_provider_payload(
        &mut self,
        tenant: &TenantId,
        event: &EventId,
        source: &IngestSourceId,
        payload: &[u8],
    ) -> StoreResult<()>;
}

/// Which due times a claim looks at: from `from` (0: all) to `now`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClaimWindow {
    pub from: Millis,
    pub now: Millis,
}

/// A queue entry claimed (see [`WriteTx::claim_entries`]).
#[derive(Debug, Clone)]
pub(crate) struct DueEntry {
    pub delivery: DeliveryId,
    pub tenant: TenantId,
    pub due_at: Millis,
    /// Attempts counted before this claim.
    pub attempts: u32,
}

/// A message known only from a provider's events: no content, headers and
/// metadata naming the provider's message.
#[derive(Debug, Clone)]
pub(crate) struct ExternalMessage {
    pub id: MessageId,
    pub tenant: TenantId,
    pub sender: String,
    pub headers: serde_json::Value,
    pub metadata: serde_json::Value,
    pub stream: String,
    pub created_at: Millis,
}

/// A provider's message: which provider, and its id there.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProviderMessageRef<'a> {
    pub provider: &'a str,
    pub message_id: &'a str,
}
