//! The engine's statements ([`engine::WriteTx`]) in PostgreSQL's SQL, run
//! in one of the writer's transactions (READ COMMITTED). Several
//! transactions run at once, on this node and others, so what the engine
//! reads to decide is locked (`FOR UPDATE`, or a transaction-scoped
//! advisory lock where the row may not exist yet), and what SQLite checked
//! with a read is backed by a unique index: the loser of a race fails with
//! a unique violation, which the writer answers by running the whole write
//! again (`error::is_retryable`); the second run sees the winner.

use super::behind::{StatusColumns, WriteBehind};
use super::position::{current_xid, event_position};
use super::reads::Query;
use super::{domains, reads};
use crate::StoreResult;
use crate::engine::{self, ClaimWindow, DueEntry, ExternalMessage, ProviderMessageRef};
use crate::ingest::IngestSource;
use crate::records::*;
use ::postgres::types::{Json, ToSql};
use ::postgres::{Row, Transaction};
use posthorn_core::contact::ContactState;
use posthorn_core::domain::DomainOwner;
use posthorn_core::id::{ApiKeyId, IngestSourceId};
use posthorn_core::inbound::{AttributedBy, OrphanReason};
use posthorn_core::suppression::SuppressionEntry;
use posthorn_core::{DeliveryId, EventId, EventSource, MessageId, Millis, NodeId, TenantId};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

pub(crate) use super::reads::Statements;

/// One write transaction of a PostgreSQL writer.
pub(crate) struct PgTx<'t, 'c> {
    tx: &'t mut Transaction<'c>,
    statements: &'t mut Statements,
    /// This transaction's id, read at its first event (positions are
    /// derived from it).
    xid: Option<i64>,
    /// Events stored (and numbered) so far in this transaction.
    numbered: u32,
    /// Rows kept to be written together (see `behind`); `None` on the
    /// plain path, where every statement runs at once.
    behind: Option<WriteBehind>,
    /// Contacts read and locked ahead by [`engine::WriteTx::lock_contacts`]
    /// (`None`: none exists), each given to its first
    /// [`engine::WriteTx::contact`] read; later reads go to the database.
    locked_contacts: HashMap<(TenantId, String), Option<ContactRecord>>,
    /// Deliveries read and locked ahead by
    /// [`engine::WriteTx::prefetch_deliveries`], each given to its first
    /// [`engine::WriteTx::delivery`] read; later reads go to the database.
    locked_deliveries: HashMap<DeliveryId, DeliveryRecord>,
    /// Owners of sender domains read in this transaction, by the domains
    /// asked for: a group of messages from one sender asks once. (Read
    /// committed would let a later read see a claim committed meanwhile;
    /// answering the same is as if those messages had come a moment
    /// earlier.) Forgotten when this transaction changes sending domains.
    domain_owners_read: HashMap<Vec<String>, Vec<DomainOwner>>,
    /// Suppressions read ahead by `prefetch_recipients`, per tenant;
    /// forgotten when this transaction adds one.
    suppressions_read: HashMap<TenantId, SuppressionsRead>,
    /// Tags of the messages this transaction inserted or read (the
    /// statistics count a delivery under each): a message inserted here
    /// is answered from this, so reading the others needs no write kept
    /// behind to be made first.
    message_tags: HashMap<MessageId, Vec<String>>,
    /// Changes to the statistics' counts, added up and written once at the
    /// end ([`PgTx::finish`]).
    stats: crate::engine::stats::Tally,
}

/// A tenant's suppression entries not removed for some targets (addresses
/// and `@domain`s), whatever their expiry: each read filters by its time.
#[derive(Default)]
struct SuppressionsRead {
    targets: HashSet<String>,
    entries: Vec<SuppressionEntry>,
}

impl<'t, 'c> PgTx<'t, 'c> {
    /// A transaction whose every statement runs at once.
    pub(crate) fn new(tx: &'t mut Transaction<'c>, statements: &'t mut Statements) -> Self {
        Self {
            tx,
            statements,
            xid: None,
            numbered: 0,
            behind: None,
            locked_contacts: HashMap::new(),
            locked_deliveries: HashMap::new(),
            domain_owners_read: HashMap::new(),
            suppressions_read: HashMap::new(),
            message_tags: HashMap::new(),
            stats: Default::default(),
        }
    }

    /// A transaction that writes the rows needing no answer behind,
    /// table by table (see `behind`); [`PgTx::sync`] before the commit.
    pub(crate) fn writing_behind(
        tx: &'t mut Transaction<'c>,
        statements: &'t mut Statements,
    ) -> Self {
        Self {
            behind: Some(WriteBehind::default()),
            ..Self::new(tx, statements)
        }
    }

    /// Writes the rows kept behind, so that the next statement sees them.
    pub(crate) fn sync(&mut self) -> StoreResult<()> {
        match &mut self.behind {
            Some(behind) => behind.flush(&mut reads::Cached {
                client: self.tx,
                statements: self.statements,
            }),
            None => Ok(()),
        }
    }

    /// Writes what is kept for the end: the statistics' count changes,
    /// added up, and the rows kept behind. Before the commit.
    pub(crate) fn finish(&mut self) -> StoreResult<()> {
        for (tenant, (changes, domains)) in std::mem::take(&mut self.stats).into_changes() {
            add_stats(
                &mut |sql, params| self.execute_unsynced(sql, params),
                &tenant,
                &changes,
                &domains,
            )?;
        }
        self.sync()
    }

    /// The transaction for a read, with every row kept behind written.
    fn db(&mut self) -> StoreResult<reads::Cached<'_, Transaction<'c>>> {
        self.sync()?;
        Ok(self.unsynced())
    }

    /// The transaction for a read that cannot concern a row kept behind.
    fn unsynced(&mut self) -> reads::Cached<'_, Transaction<'c>> {
        reads::Cached {
            client: self.tx,
            statements: self.statements,
        }
    }

    /// The transaction id, for numbering events (read once).
    fn xid_for_positions(&mut self) -> StoreResult<i64> {
        match self.xid {
            Some(xid) => Ok(xid),
            None => {
                let xid = current_xid(self.tx)?;
                self.xid = Some(xid);
                Ok(xid)
            }
        }
    }

    /// This transaction's id, once it has stored an event.
    pub(crate) fn xid(&self) -> Option<i64> {
        self.xid
    }

    /// How many events this transaction stored.
    pub(crate) fn events_stored(&self) -> u64 {
        u64::from(self.numbered)
    }

    /// Runs a statement after writing the rows kept behind.
    fn execute(&mut self, sql: &str, params: Params<'_>) -> StoreResult<u64> {
        self.sync()?;
        self.execute_unsynced(sql, params)
    }

    fn query_opt(&mut self, sql: &str, params: Params<'_>) -> StoreResult<Option<Row>> {
        self.sync()?;
        self.query_opt_unsynced(sql, params)
    }

    fn query(&mut self, sql: &str, params: Params<'_>) -> StoreResult<Vec<Row>> {
        self.db()?.query(sql, params)
    }

    /// Runs a statement that cannot concern a row kept behind (a table
    /// never written behind, or rows known not to be kept).
    fn execute_unsynced(&mut self, sql: &str, params: Params<'_>) -> StoreResult<u64> {
        self.unsynced().execute(sql, params)
    }

    fn query_opt_unsynced(&mut self, sql: &str, params: Params<'_>) -> StoreResult<Option<Row>> {
        self.unsynced().query_opt(sql, params)
    }

    /// Inserts a contact row, `on_conflict` saying what a row already there
    /// does (nothing said: the insert fails).
    fn insert_contact_row(
        &mut self,
        tenant: &TenantId,
        address: &str,
        s: &ContactState,
        now: Millis,
        on_conflict: &str,
    ) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO contacts (tenant_id, address, status, unsubscribed_streams, consecutive_failed_deliveries, \
             consecutive_failed_attempts, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) {on_conflict}"
        );
        self.execute(
            &sql,
            &[
                &tenant.as_str(),
                &address,
                &s.status.as_str(),
                &Json(&s.unsubscribed_streams),
                &i64::from(s.consecutive_failed_deliveries),
                &i64::from(s.consecutive_failed_attempts),
                &now,
            ],
        )?;
        Ok(())
    }

    /// A contact about to change is read from the database from now on,
    /// not from what `lock_contacts` read ahead.
    fn forget_locked_contact(&mut self, tenant: &TenantId, address: &str) {
        if !self.locked_contacts.is_empty() {
            self.locked_contacts
                .remove(&(tenant.clone(), address.to_owned()));
        }
    }

    /// Serialises this transaction with every other that takes the same
    /// key, until it ends: for checks over rows that may not exist yet.
    fn advisory_lock(&mut self, parts: &[&str]) -> StoreResult<()> {
        let key = parts.join("\u{1f}");
        // A lock concerns no row: nothing kept behind need be written.
        self.execute_unsynced(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&key],
        )?;
        Ok(())
    }
}

fn mailbox_list(
    list: &[posthorn_core::address::Mailbox],
) -> Option<Json<&[posthorn_core::address::Mailbox]>> {
    (!list.is_empty()).then_some(Json(list))
}

/// The open pixel's `link_index` in `repeated_hits`.
const PIXEL: i64 = -1;

impl engine::WriteTx for PgTx<'_, '_> {
    fn tenant(&mut self, id: &TenantId) -> StoreResult<Option<Tenant>> {
        reads::tenant_by_id(&mut self.unsynced(), id)
    }

    fn tenant_by_name(&mut self, name: &str) -> StoreResult<Option<Tenant>> {
        reads::tenant_by_name(&mut self.unsynced(), name)
    }

    fn insert_tenant(&mut self, t: &Tenant) -> StoreResult<()> {
        self.execute(
            "INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)",
            &[&t.id.as_str(), &t.name, &t.created_at],
        )?;
        Ok(())
    }

    fn update_tenant_settings(
        &mut self,
        tenant: &TenantId,
        patch: &TenantSettingsPatch,
    ) -> StoreResult<()> {
        for (column, value) in [
            ("campaign_dedupe", patch.campaign_dedupe),
            ("track_opens", patch.track_opens),
            ("track_clicks", patch.track_clicks),
        ] {
            if let Some(value) = value {
                self.execute(
                    &format!("UPDATE tenants SET {column} = $1 WHERE id = $2"),
                    &[&value, &tenant.as_str()],
                )?;
            }
        }
        Ok(())
    }

    fn insert_api_key(&mut self, key: &NewApiKey) -> StoreResult<()> {
        let scopes: Vec<&str> = key.scopes.iter().map(|s| s.as_str()).collect();
        self.execute(
            "INSERT INTO api_keys (id, tenant_id, name, scopes, secret_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &key.id.as_str(),
                &key.tenant_id.as_str(),
                &key.name,
                &scopes.join(","),
                &key.secret_hash,
                &key.created_at,
            ],
        )?;
        Ok(())
    }

    fn revoke_api_key(&mut self, id: &ApiKeyId, now: Millis) -> StoreResult<bool> {
        let n = self.execute(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
            &[&now, &id.as_str()],
        )?;
        Ok(n > 0)
    }

    fn sending_domain(&mut self, domain: &str) -> StoreResult<Option<SendingDomain>> {
        // Claims check parents and children too: one claim at a time.
        self.advisory_lock(&["sending_domains"])?;
        let row = self.query_opt(
            "SELECT domain, tenant_id, created_at FROM sending_domains WHERE domain = $1",
            &[&domain],
        )?;
        row.map(|r| {
            Ok(SendingDomain {
                domain: reads::get(&r, 0)?,
                tenant_id: TenantId::from_stored(reads::get::<String>(&r, 1)?),
                created_at: reads::get(&r, 2)?,
            })
        })
        .transpose()
    }

    fn domains_of_other_tenants(&mut self, tenant: &TenantId) -> StoreResult<Vec<String>> {
        self.advisory_lock(&["sending_domains"])?;
        self.query(
            "SELECT domain FROM sending_domains WHERE tenant_id <> $1",
            &[&tenant.as_str()],
        )?
        .iter()
        .map(|r| reads::get(r, 0))
        .collect()
    }

    fn insert_sending_domain(&mut self, d: &SendingDomain) -> StoreResult<()> {
        self.domain_owners_read.clear();
        self.execute(
            "INSERT INTO sending_domains (domain, tenant_id, created_at) VALUES ($1, $2, $3)",
            &[&d.domain, &d.tenant_id.as_str(), &d.created_at],
        )?;
        Ok(())
    }

    fn delete_sending_domain(&mut self, tenant: &TenantId, domain: &str) -> StoreResult<bool> {
        self.domain_owners_read.clear();
        let n = self.execute(
            "DELETE FROM sending_domains WHERE domain = $1 AND tenant_id = $2",
            &[&domain, &tenant.as_str()],
        )?;
        Ok(n > 0)
    }

    fn domain_owners(&mut self, candidates: &[String]) -> StoreResult<Vec<DomainOwner>> {
        if let Some(owners) = self.domain_owners_read.get(candidates) {
            return Ok(owners.clone());
        }
        let owners = domains::owners(&mut self.unsynced(), candidates)?;
        self.domain_owners_read
            .insert(candidates.to_vec(), owners.clone());
        Ok(owners)
    }

    fn idempotency_record(
        &mut self,
        tenant: &TenantId,
        key: &str,
        not_before: Millis,
    ) -> StoreResult<Option<(String, String)>> {
        // A key used at once by two nodes: the second waits here for the
        // first's commit, then finds its record.
        self.advisory_lock(&["idempotency", tenant.as_str(), key])?;
        // Never written behind.
        let row = self.query_opt_unsynced(
            "SELECT body_hash, receipt::text FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 AND created_at >= $3",
            &[&tenant.as_str(), &key, &not_before],
        )?;
        row.map(|r| Ok((reads::get(&r, 0)?, reads::get(&r, 1)?)))
            .transpose()
    }

    fn save_idempotency_record(
        &mut self,
        tenant: &TenantId,
        key: &str,
        body_hash: &str,
        receipt: &str,
        now: Millis,
    ) -> StoreResult<()> {
        self.execute(
            "INSERT INTO idempotency_keys (tenant_id, key, body_hash, receipt, created_at) VALUES ($1, $2, $3, $4::text::jsonb, $5) \
             ON CONFLICT (tenant_id, key) DO UPDATE SET body_hash = excluded.body_hash, \
             receipt = excluded.receipt, created_at = excluded.created_at",
            &[&tenant.as_str(), &key, &body_hash, &receipt, &now],
        )?;
        Ok(())
    }

    fn insert_message(&mut self, m: &NewMessage) -> StoreResult<()> {
        self.message_tags
            .insert(m.id.clone(), m.content.tags.clone());
        if let Some(behind) = &mut self.behind {
            behind.message(m);
            return Ok(());
        }
        let size = m.size as i64;
        self.execute(
            "INSERT INTO messages (id, tenant_id, from_header, from_address, reply_to, subject, text_body, html_body, \
             headers, tags, metadata, stream, campaign, test, send_at, expires_at, tracking_opens, tracking_clicks, \
             size, source, created_at, to_header, cc_header, raw_mime) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24)",
            &[
                &m.id.as_str(),
                &m.tenant_id.as_str(),
                &m.content.from,
                &m.from_address,
                &m.content.reply_to,
                &m.content.subject,
                &m.content.text,
                &m.content.html,
                &Json(&m.content.headers),
                &Json(&m.content.tags),
                &Json(&m.content.metadata),
                &m.stream,
                &m.campaign,
                &m.test,
                &m.send_at,
                &m.expires_at,
                &m.tracking_opens,
                &m.tracking_clicks,
                &size,
                &m.source.as_str(),
                &m.accepted_at,
                &mailbox_list(&m.content.to),
                &mailbox_list(&m.content.cc),
                &m.content.raw_mime,
            ],
        )?;
        Ok(())
    }

    fn insert_external_message(&mut self, m: &ExternalMessage) -> StoreResult<()> {
        self.message_tags.insert(m.id.clone(), Vec::new());
        self.execute(
            "INSERT INTO messages (id, tenant_id, from_header, from_address, subject, headers, tags, metadata, \
             stream, test, size, source, created_at) \
             VALUES ($1, $2, $3, $3, '', $4, '[]', $5, $6, false, 0, $7, $8)",
            &[
                &m.id.as_str(),
                &m.tenant.as_str(),
                &m.sender,
                &Json(&m.headers),
                &Json(&m.metadata),
                &m.stream,
                &EventSource::ProviderWebhook.as_str(),
                &m.created_at,
            ],
        )?;
        Ok(())
    }

    fn message(&mut self, tenant: &TenantId, id: &MessageId) -> StoreResult<Option<MessageRecord>> {
        reads::message(&mut self.db()?, tenant, id)
    }

    fn insert_delivery(&mut self, d: &DeliveryRecord) -> StoreResult<()> {
        if let Some(behind) = &mut self.behind {
            behind.delivery(d);
            return Ok(());
        }
        self.execute(
            "INSERT INTO deliveries (id, tenant_id, message_id, recipient, recipient_kind, sender, stream, campaign, test, \
             created_at, window_ends_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            &[
                &d.id.as_str(),
                &d.tenant_id.as_str(),
                &d.message_id.as_str(),
                &d.recipient,
                &d.recipient_kind.as_str(),
                &d.sender,
                &d.stream,
                &d.campaign,
                &d.test,
                &d.created_at,
                &d.window_ends_at,
                &d.updated_at,
            ],
        )?;
        Ok(())
    }

    fn delivery(
        &mut self,
        tenant: &TenantId,
        id: &DeliveryId,
    ) -> StoreResult<Option<DeliveryRecord>> {
        if let Some(locked) = self.locked_deliveries.remove(id) {
            // Read as the statement below would: of this tenant only.
            return Ok((locked.tenant_id == *tenant).then_some(locked));
        }
        // Only rows of this delivery kept behind need writing first.
        if self.behind.as_ref().is_some_and(|b| b.holds_delivery(id)) {
            self.sync()?;
        }
        let sql = format!(
            "SELECT {} FROM deliveries WHERE id = $1 AND tenant_id = $2 FOR UPDATE",
            reads::DELIVERY_COLUMNS
        );
        self.query_opt_unsynced(&sql, &[&id.as_str(), &tenant.as_str()])?
            .map(|r| reads::delivery_row(&r))
            .transpose()
    }

    fn lock_deliveries(
        &mut self,
        tenant: &TenantId,
        ids: &[DeliveryId],
    ) -> StoreResult<Vec<DeliveryRecord>> {
        reads::deliveries(&mut self.db()?, tenant, ids, true)
    }

    fn prefetch_deliveries(&mut self, tenant: &TenantId, ids: &[DeliveryId]) -> StoreResult<()> {
        for delivery in self.lock_deliveries(tenant, ids)? {
            self.locked_deliveries.insert(delivery.id.clone(), delivery);
        }
        Ok(())
    }

    fn deliveries_to_send(
        &mut self,
        tenant: &TenantId,
        ids: &[DeliveryId],
    ) -> StoreResult<Vec<DeliveryRecord>> {
        reads::deliveries(&mut self.db()?, tenant, ids, false)
    }

    fn messages(
        &mut self,
        tenant: &TenantId,
        ids: &[MessageId],
    ) -> StoreResult<Vec<MessageRecord>> {
        reads::messages(&mut self.db()?, tenant, ids)
    }

    fn save_delivery_status(&mut self, d: &DeliveryRecord) -> StoreResult<()> {
        if let Some(behind) = &mut self.behind {
            behind.status(d);
            return Ok(());
        }
        let c = StatusColumns::of(d);
        self.execute(
            "UPDATE deliveries SET delivery_status = $1, bounce_type = $2, delivery_event_id = $3, \
             delivery_occurred_at = $4, engagement_status = $5, engagement_event_id = $6, engagement_occurred_at = $7, \
             updated_at = $8, seen = $9 WHERE id = $10",
            &[
                &c.delivery_status,
                &c.bounce_type,
                &c.delivery_event_id,
                &c.delivery_occurred_at,
                &c.engagement_status,
                &c.engagement_event_id,
                &c.engagement_occurred_at,
                &d.updated_at,
                &c.seen,
                &d.id.as_str(),
            ],
        )?;
        Ok(())
    }

    fn message_tags(&mut self, tenant: &TenantId, message: &MessageId) -> StoreResult<Vec<String>> {
        if let Some(tags) = self.message_tags.get(message) {
            return Ok(tags.clone());
        }
        // Not inserted by this transaction: committed before it, so no
        // write kept behind concerns it.
        let row = self.query_opt_unsynced(
            "SELECT tags FROM messages WHERE id = $1 AND tenant_id = $2",
            &[&message.as_str(), &tenant.as_str()],
        )?;
        let tags: Vec<String> = match row {
            None => Vec::new(),
            Some(row) => reads::json(&row, 0, "messages", "tags")?,
        };
        self.message_tags.insert(message.clone(), tags.clone());
        Ok(tags)
    }

    fn add_stats(
        &mut self,
        tenant: &TenantId,
        changes: &[StatsChange],
        domains: &[DomainStatsChange],
    ) -> StoreResult<()> {
        // Added up and written once, before the commit (`finish`).
        self.stats.add(tenant, changes, domains);
        Ok(())
    }

    fn campaign_has_recipient(
        &mut self,
        tenant: &TenantId,
        campaign: &str,
        recipient: &str,
    ) -> StoreResult<bool> {
        // Two submissions of one campaign to one recipient on two nodes:
        // the second waits here for the first's commit, then sees it.
        self.advisory_lock(&["campaign", tenant.as_str(), campaign, recipient])?;
        let row = self.query_opt(
            "SELECT 1 FROM deliveries WHERE tenant_id = $1 AND campaign = $2 AND recipient = $3 \
             AND delivery_status <> 'dropped' LIMIT 1",
            &[&tenant.as_str(), &campaign, &recipient],
        )?;
        Ok(row.is_some())
    }

    fn insert_event(
        &mut self,
        tenant: &TenantId,
        mut event: EventRecord,
    ) -> StoreResult<Option<Arc<EventRecord>>> {
        // A group takes a new event id for fresh (the flush checks it); an
        // external id is looked up at once.
        if self.behind.is_some() && event.external_id.is_none() {
            event.seq = event_position(self.xid_for_positions()?, self.numbered)?;
            self.numbered += 1;
            let event = Arc::new(event);
            if let Some(behind) = &mut self.behind {
                behind.event(tenant, event.clone());
            }
            return Ok(Some(event));
        }
        // Uniqueness of ids first (a partitioned table cannot hold it): a
        // key already there, committed or being committed by another
        // transaction, means the event exists.
        let mut fresh = self.execute(
            "INSERT INTO event_keys (tenant_id, kind, key) VALUES ($1, 'id', $2) ON CONFLICT DO NOTHING",
            &[&tenant.as_str(), &event.id.as_str()],
        )? > 0;
        if fresh && let Some(external) = &event.external_id {
            fresh = self.execute(
                "INSERT INTO event_keys (tenant_id, kind, key) VALUES ($1, 'external', $2) ON CONFLICT DO NOTHING",
                &[&tenant.as_str(), external],
            )? > 0;
            if !fresh {
                // Its id key must not stay behind: the event is not stored.
                self.execute(
                    "DELETE FROM event_keys WHERE tenant_id = $1 AND kind = 'id' AND key = $2",
                    &[&tenant.as_str(), &event.id.as_str()],
                )?;
            }
        }
        if !fresh {
            return Ok(None);
        }
        event.seq = event_position(self.xid_for_positions()?, self.numbered)?;
        self.numbered += 1;
        self.execute(
            "INSERT INTO events (seq, id, tenant_id, delivery_id, message_id, recipient, sender, kind, occurred_at, \
             recorded_at, source, details, external_id, anomaly, outside_window) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            &[
                &event.seq,
                &event.id.as_str(),
                &tenant.as_str(),
                &event.delivery_id.as_str(),
                &event.message_id.as_str(),
                &event.recipient,
                &event.sender,
                &event.kind().as_str(),
                &event.occurred_at,
                &event.recorded_at,
                &event.source.as_str(),
                &event.details.to_json(),
                &event.external_id,
                &event.anomaly,
                &event.outside_window,
            ],
        )?;
        Ok(Some(Arc::new(event)))
    }

    fn event_by_id(&mut self, tenant: &TenantId, id: &EventId) -> StoreResult<Option<EventRecord>> {
        reads::event_by_id(&mut self.db()?, tenant, id)
    }

    fn event_by_external_id(
        &mut self,
        tenant: &TenantId,
        external_id: &str,
    ) -> StoreResult<Option<EventRecord>> {
        reads::event_by_external_id(&mut self.db()?, tenant, external_id)
    }

    fn lock_contacts(&mut self, tenant: &TenantId, addresses: &[&str]) -> StoreResult<()> {
        let found = reads::lock_contacts(&mut self.db()?, tenant, addresses)?;
        for address in addresses {
            self.locked_contacts
                .insert((tenant.clone(), (*address).to_owned()), None);
        }
        for contact in found {
            self.locked_contacts
                .insert((tenant.clone(), contact.address.clone()), Some(contact));
        }
        Ok(())
    }

    fn contact(&mut self, tenant: &TenantId, address: &str) -> StoreResult<Option<ContactRecord>> {
        if let Some(locked) = self
            .locked_contacts
            .remove(&(tenant.clone(), address.to_owned()))
        {
            return Ok(locked);
        }
        // Read and locked in one statement: every admitted recipient and
        // every contact signal asks for its contact. Only rows of this
        // contact kept behind need writing first.
        if self
            .behind
            .as_ref()
            .is_some_and(|b| b.holds_contact(tenant, address))
        {
            self.sync()?;
        }
        let sql = format!(
            "SELECT {} FROM contacts WHERE tenant_id = $1 AND address = $2 FOR UPDATE",
            reads::CONTACT_COLUMNS
        );
        self.query_opt_unsynced(&sql, &[&tenant.as_str(), &address])?
            .map(|r| reads::contact_row(&r))
            .transpose()
    }

    fn insert_contact(
        &mut self,
        tenant: &TenantId,
        address: &str,
        s: &ContactState,
        now: Millis,
    ) -> StoreResult<()> {
        // No ON CONFLICT: a contact inserted meanwhile is a unique
        // violation, and the write runs again and finds it.
        self.forget_locked_contact(tenant, address);
        self.insert_contact_row(tenant, address, s, now, "")
    }

    fn insert_contact_unless_exists(
        &mut self,
        tenant: &TenantId,
        address: &str,
        s: &ContactState,
        now: Millis,
    ) -> StoreResult<()> {
        self.forget_locked_contact(tenant, address);
        if let Some(behind) = &mut self.behind {
            behind.contact(tenant, address, s, now);
            return Ok(());
        }
        self.insert_contact_row(
            tenant,
            address,
            s,
            now,
            "ON CONFLICT (tenant_id, address) DO NOTHING",
        )
    }

    fn update_contact(
        &mut self,
        tenant: &TenantId,
        address: &str,
        s: &ContactState,
        now: Millis,
    ) -> StoreResult<()> {
        self.forget_locked_contact(tenant, address);
        self.execute(
            "UPDATE contacts SET status = $1, unsubscribed_streams = $2, consecutive_failed_deliveries = $3, \
             consecutive_failed_attempts = $4, updated_at = $5 WHERE tenant_id = $6 AND address = $7",
            &[
                &s.status.as_str(),
                &Json(&s.unsubscribed_streams),
                &i64::from(s.consecutive_failed_deliveries),
                &i64::from(s.consecutive_failed_attempts),
                &now,
                &tenant.as_str(),
                &address,
            ],
        )?;
        Ok(())
    }

    fn insert_contact_change(
        &mut self,
        tenant: &TenantId,
        address: &str,
        change: &ContactChange,
    ) -> StoreResult<()> {
        self.execute(
            "INSERT INTO contact_changes (id, tenant_id, address, from_status, to_status, reason, cause_event_id, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &EventId::generate().as_str(),
                &tenant.as_str(),
                &address,
                &change.from.as_str(),
                &change.to.as_str(),
                &change.reason,
                &change.cause_event_id.as_ref().map(|e| e.as_str()),
                &change.at,
            ],
        )?;
        Ok(())
    }

    fn suppressions_for(
        &mut self,
        tenant: &TenantId,
        address: &str,
        now: Millis,
    ) -> StoreResult<Vec<SuppressionEntry>> {
        let targets = posthorn_core::suppression::lookup_targets(address);
        if let Some(read) = self.suppressions_read.get(tenant)
            && targets.iter().all(|t| read.targets.contains(t))
        {
            // What `reads::suppressions_for` asks the database for.
            let mut found: Vec<SuppressionEntry> = read
                .entries
                .iter()
                .filter(|e| targets.contains(&e.target) && e.is_active(now))
                .cloned()
                .collect();
            found.sort_by(|a, b| a.id.cmp(&b.id));
            return Ok(found);
        }
        reads::suppressions_for(&mut self.unsynced(), tenant, address, now)
    }

    fn prefetch_recipients(&mut self, tenant: &TenantId, addresses: &[&str]) -> StoreResult<()> {
        self.lock_contacts(tenant, addresses)?;
        let mut targets: Vec<String> = addresses
            .iter()
            .flat_map(|a| posthorn_core::suppression::lookup_targets(a))
            .collect();
        targets.sort_unstable();
        targets.dedup();
        let entries = reads::suppressions_of_targets(&mut self.unsynced(), tenant, &targets)?;
        let read = self.suppressions_read.entry(tenant.clone()).or_default();
        read.targets.extend(targets);
        read.entries.extend(entries);
        Ok(())
    }

    fn insert_suppression(&mut self, tenant: &TenantId, e: &SuppressionEntry) -> StoreResult<()> {
        self.suppressions_read.remove(tenant);
        let stream = e.scope.stream();
        // An entry past its expiry no longer counts: marked removed, so
        // the unique index over entries not removed lets the new one in.
        self.execute(
            "UPDATE suppressions SET removed_at = $4 WHERE tenant_id = $1 AND target = $2 \
             AND COALESCE(stream, '') = COALESCE($3, '') AND removed_at IS NULL \
             AND expires_at IS NOT NULL AND expires_at <= $4",
            &[&tenant.as_str(), &e.target, &stream, &e.created_at],
        )?;
        // A concurrent transaction's entry for the same target and scope
        // makes this one wait, then do nothing: one suppression.
        self.execute(
            "INSERT INTO suppressions (id, tenant_id, target, stream, reason, cause_event_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (tenant_id, target, COALESCE(stream, '')) WHERE removed_at IS NULL DO NOTHING",
            &[
                &e.id,
                &tenant.as_str(),
                &e.target,
                &stream,
                &e.reason.as_str(),
                &e.cause_event_id.as_ref().map(|id| id.as_str()),
                &e.created_at,
                &e.expires_at,
            ],
        )?;
        Ok(())
    }

    fn enqueue(
        &mut self,
        tenant: &TenantId,
        delivery: &DeliveryId,
        due_at: Millis,
        now: Millis,
    ) -> StoreResult<()> {
        if let Some(behind) = &mut self.behind {
            behind.enqueue(tenant, delivery, due_at, now);
            return Ok(());
        }
        self.execute(
            "INSERT INTO send_queue (delivery_id, tenant_id, due_at, attempts, created_at) VALUES ($1, $2, $3, 0, $4)",
            &[&delivery.as_str(), &tenant.as_str(), &due_at, &now],
        )?;
        Ok(())
    }

    fn claim_entries(
        &mut self,
        node: &NodeId,
        window: ClaimWindow,
        limit: u32,
        until: Millis,
    ) -> StoreResult<Vec<DueEntry>> {
        // Found, locked and leased in one statement. Entries leased
        // meanwhile by another node are skipped, not waited for.
        self.query(
            "UPDATE send_queue q SET lease_owner = $3, lease_until = $4, attempts = q.attempts + 1 \
             FROM (SELECT delivery_id FROM send_queue \
                   WHERE due_at <= $1 AND due_at >= $5 AND (lease_until IS NULL OR lease_until < $1) \
                   ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED) due \
             WHERE q.delivery_id = due.delivery_id \
             RETURNING q.delivery_id, q.tenant_id, q.attempts - 1, q.due_at",
            &[&window.now, &i64::from(limit), &node.as_str(), &until, &window.from],
        )?
        .iter()
        .map(|r| {
            Ok(DueEntry {
                delivery: DeliveryId::from_stored(reads::get::<String>(r, 0)?),
                tenant: TenantId::from_stored(reads::get::<String>(r, 1)?),
                attempts: u32::try_from(reads::get::<i64>(r, 2)?).unwrap_or(u32::MAX),
                due_at: reads::get(r, 3)?,
            })
        })
        .collect()
    }

    fn release_leases(&mut self, node: &NodeId) -> StoreResult<u64> {
        self.execute(
            "UPDATE send_queue SET lease_until = NULL, lease_owner = NULL WHERE lease_owner = $1",
            &[&node.as_str()],
        )
    }

    fn dequeue(&mut self, delivery: &DeliveryId) -> StoreResult<()> {
        if let Some(behind) = &mut self.behind {
            behind.dequeue(delivery);
            return Ok(());
        }
        self.execute(
            "DELETE FROM send_queue WHERE delivery_id = $1",
            &[&delivery.as_str()],
        )?;
        Ok(())
    }

    fn requeue(&mut self, delivery: &DeliveryId, at: Millis) -> StoreResult<()> {
        if let Some(behind) = &mut self.behind {
            behind.requeue(delivery, at);
            return Ok(());
        }
        self.execute(
            "UPDATE send_queue SET due_at = $1, lease_owner = NULL, lease_until = NULL WHERE delivery_id = $2",
            &[&at, &delivery.as_str()],
        )?;
        Ok(())
    }

    fn insert_inbound(&mut self, record: &InboundRecord, raw: &[u8]) -> StoreResult<()> {
        let size = record.size as i64;
        self.execute(
            "INSERT INTO inbound_messages (id, received_at, tenant_id, delivery_id, mail_from, rcpt_to, \
             kind, outcome, orphan_reason, attribution, records, size, raw) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            &[
                &record.id.as_str(),
                &record.received_at,
                &record.tenant_id.as_ref().map(|t| t.as_str()),
                &record.delivery_id.as_ref().map(|d| d.as_str()),
                &record.mail_from,
                &Json(&record.rcpt_to),
                &record.kind.as_str(),
                &record.outcome.as_str(),
                &record.orphan_reason.map(OrphanReason::as_str),
                &record.attribution.map(AttributedBy::as_str),
                &Json(&record.records),
                &size,
                &raw,
            ],
        )?;
        Ok(())
    }

    fn link_inbound_event(&mut self, event: &EventId, inbound: &InboundRecord) -> StoreResult<()> {
        self.execute(
            "INSERT INTO inbound_events (event_id, inbound_id) VALUES ($1, $2) ON CONFLICT (event_id) DO NOTHING",
            &[&event.as_str(), &inbound.id.as_str()],
        )?;
        Ok(())
    }

    fn insert_message_links(&mut self, message: &MessageId, links: &[String]) -> StoreResult<()> {
        for (position, url) in links.iter().enumerate() {
            self.execute(
                "INSERT INTO message_links (message_id, position, url) VALUES ($1, $2, $3) \
                 ON CONFLICT (message_id, position) DO NOTHING",
                &[&message.as_str(), &(position as i64), url],
            )?;
        }
        Ok(())
    }

    fn count_repeated_hit(&mut self, tenant: &TenantId, hit: &NewRepeatedHit) -> StoreResult<bool> {
        let changed = self.execute(
            "INSERT INTO repeated_hits (delivery_id, kind, link_index, machine, hits, last_at) \
             SELECT $1, $2, $3, $4, 1, $5 FROM deliveries WHERE id = $1 AND tenant_id = $6 \
             ON CONFLICT (delivery_id, kind, link_index, machine) DO UPDATE \
             SET hits = repeated_hits.hits + 1, last_at = GREATEST(repeated_hits.last_at, excluded.last_at)",
            &[
                &hit.delivery_id.as_str(),
                &hit.kind.as_str(),
                &hit.link_index.map_or(PIXEL, i64::from),
                &hit.machine,
                &hit.at,
                &tenant.as_str(),
            ],
        )?;
        Ok(changed > 0)
    }

    fn insert_ingest_source(&mut self, s: &IngestSource) -> StoreResult<()> {
        self.execute(
            "INSERT INTO ingest_sources (id, tenant_id, name, provider, token_hash, verification, created_at, \
             pending_confirmation) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &s.id.as_str(),
                &s.tenant_id.as_str(),
                &s.name,
                &s.provider().as_str(),
                &s.token_hash,
                &Json(&s.verification),
                &s.created_at,
                &s.pending_confirmation,
            ],
        )?;
        Ok(())
    }

    fn delete_ingest_source(
        &mut self,
        tenant: &TenantId,
        id: &IngestSourceId,
    ) -> StoreResult<bool> {
        let n = self.execute(
            "DELETE FROM ingest_sources WHERE id = $1 AND tenant_id = $2",
            &[&id.as_str(), &tenant.as_str()],
        )?;
        if n > 0 {
            self.execute(
                "DELETE FROM ingest_tokens WHERE source_id = $1",
                &[&id.as_str()],
            )?;
        }
        Ok(n > 0)
    }

    fn set_ingest_pending_confirmation(
        &mut self,
        tenant: &TenantId,
        id: &IngestSourceId,
        url: Option<&str>,
    ) -> StoreResult<bool> {
        let n = self.execute(
            "UPDATE ingest_sources SET pending_confirmation = $1 WHERE id = $2 AND tenant_id = $3",
            &[&url, &id.as_str(), &tenant.as_str()],
        )?;
        Ok(n > 0)
    }

    fn ingest_source_exists(
        &mut self,
        tenant: &TenantId,
        id: &IngestSourceId,
    ) -> StoreResult<bool> {
        // FOR SHARE: a concurrent removal waits for this request's commit.
        Ok(self
            .query_opt(
                "SELECT 1 FROM ingest_sources WHERE id = $1 AND tenant_id = $2 FOR SHARE",
                &[&id.as_str(), &tenant.as_str()],
            )?
            .is_some())
    }

    fn use_ingest_token(
        &mut self,
        source: &IngestSourceId,
        token: &str,
        expires_at: Millis,
        now: Millis,
    ) -> StoreResult<bool> {
        self.execute("DELETE FROM ingest_tokens WHERE expires_at < $1", &[&now])?;
        let inserted = self.execute(
            "INSERT INTO ingest_tokens (source_id, token, expires_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&source.as_str(), &token, &expires_at],
        )?;
        Ok(inserted > 0)
    }

    fn provider_event_key(&mut self, tenant: &TenantId, key: &str) -> StoreResult<Option<EventId>> {
        self.advisory_lock(&["provider_event_key", tenant.as_str(), key])?;
        self.query_opt(
            "SELECT event_id FROM provider_event_keys WHERE tenant_id = $1 AND key = $2",
            &[&tenant.as_str(), &key],
        )?
        .map(|r| Ok(EventId::from_stored(reads::get::<String>(&r, 0)?)))
        .transpose()
    }

    fn remember_provider_keys(
        &mut self,
        tenant: &TenantId,
        keys: &[String],
        event: &EventId,
    ) -> StoreResult<()> {
        for key in keys {
            self.execute(
                "INSERT INTO provider_event_keys (tenant_id, key, event_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&tenant.as_str(), key, &event.as_str()],
            )?;
        }
        Ok(())
    }

    fn provider_delivery(
        &mut self,
        tenant: &TenantId,
        pm: &ProviderMessageRef<'_>,
        recipient: &str,
    ) -> StoreResult<Option<DeliveryId>> {
        self.advisory_lock(&[
            "provider_message",
            tenant.as_str(),
            pm.provider,
            pm.message_id,
        ])?;
        self.query_opt(
            "SELECT delivery_id FROM provider_deliveries WHERE tenant_id = $1 AND provider = $2 \
             AND provider_message_id = $3 AND recipient = $4",
            &[&tenant.as_str(), &pm.provider, &pm.message_id, &recipient],
        )?
        .map(|r| Ok(DeliveryId::from_stored(reads::get::<String>(&r, 0)?)))
        .transpose()
    }

    fn provider_message(
        &mut self,
        tenant: &TenantId,
        pm: &ProviderMessageRef<'_>,
    ) -> StoreResult<Option<MessageId>> {
        self.query_opt(
            "SELECT message_id FROM provider_deliveries WHERE tenant_id = $1 AND provider = $2 \
             AND provider_message_id = $3 LIMIT 1",
            &[&tenant.as_str(), &pm.provider, &pm.message_id],
        )?
        .map(|r| Ok(MessageId::from_stored(reads::get::<String>(&r, 0)?)))
        .transpose()
    }

    fn insert_provider_delivery(
        &mut self,
        pm: &ProviderMessageRef<'_>,
        d: &DeliveryRecord,
    ) -> StoreResult<()> {
        self.execute(
            "INSERT INTO provider_deliveries (tenant_id, provider, provider_message_id, recipient, message_id, delivery_id) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &d.tenant_id.as_str(),
                &pm.provider,
                &pm.message_id,
                &d.recipient,
                &d.message_id.as_str(),
                &d.id.as_str(),
            ],
        )?;
        Ok(())
    }

    fn insert_provider_payload(
        &mut self,
        tenant: &TenantId,
        event: &EventId,
        source: &IngestSourceId,
        payload: &[u8],
    ) -> StoreResult<()> {
        self.execute(
            "INSERT INTO provider_payloads (tenant_id, event_id, source_id, payload) VALUES ($1, $2, $3, $4)",
            &[&tenant.as_str(), &event.as_str(), &source.as_str(), &payload],
        )?;
        Ok(())
    }
}

/// Adds changes to the counts as rows of changes: adding to one counter
/// row would lock it until commit, and every writer changes the same few
/// (migration 3). `execute` runs a statement.
pub(crate) fn add_stats(
    execute: &mut dyn FnMut(&str, Params<'_>) -> StoreResult<u64>,
    tenant: &TenantId,
    changes: &[StatsChange],
    domains: &[DomainStatsChange],
) -> StoreResult<()> {
    if !changes.is_empty() {
        let col = |f: fn(&StatsChange) -> &str| changes.iter().map(f).collect::<Vec<&str>>();
        let hours: Vec<i64> = changes.iter().map(|c| c.hour).collect();
        let counts: Vec<i64> = changes.iter().map(|c| c.change).collect();
        execute(
            "INSERT INTO delivery_stats (tenant_id, hour, stream, campaign, tag, reason, metric, deliveries) \
                 SELECT $1, h, s, c, t, r, m, n FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], \
                 $6::text[], $7::text[], $8::bigint[]) AS u(h, s, c, t, r, m, n)",
            &[
                &tenant.as_str(),
                &hours,
                &col(|c| &c.stream),
                &col(|c| &c.campaign),
                &col(|c| &c.tag),
                &col(|c| &c.reason),
                &col(|c| c.metric.as_str()),
                &counts,
            ],
        )?;
    }
    if !domains.is_empty() {
        let days: Vec<i64> = domains.iter().map(|c| c.day).collect();
        let names: Vec<&str> = domains.iter().map(|c| c.domain.as_str()).collect();
        let metrics: Vec<&str> = domains.iter().map(|c| c.metric.as_str()).collect();
        let counts: Vec<i64> = domains.iter().map(|c| c.change).collect();
        execute(
            "INSERT INTO delivery_stats_domains (tenant_id, day, domain, metric, deliveries) \
                 SELECT $1, d, n, m, c FROM unnest($2::bigint[], $3::text[], $4::text[], $5::bigint[]) AS u(d, n, m, c)",
            &[&tenant.as_str(), &days, &names, &metrics, &counts],
        )?;
    }
    Ok(())
}
