//! The engine's statements ([`engine::WriteTx`]) in SQLite's SQL, run in
//! the writer's batch transaction. SQLite has one writer: what a statement
//! reads stays true until the commit, so "locks" need no SQL here and the
//! "unless it exists" checks are plain reads.

use super::writer::BatchTx;
use super::{domains, prepare, reads};
use crate::engine::{self, ClaimWindow, DueEntry, ExternalMessage, ProviderMessageRef};
use crate::ingest::IngestSource;
use crate::records::*;
use crate::{StoreError, StoreResult};
use posthorn_core::contact::ContactState;
use posthorn_core::domain::DomainOwner;
use posthorn_core::id::{ApiKeyId, IngestSourceId};
use posthorn_core::inbound::{AttributedBy, OrphanReason};
use posthorn_core::suppression::SuppressionEntry;
use posthorn_core::{DeliveryId, EventId, EventSource, MessageId, Millis, NodeId, TenantId};
use rusqlite::{Connection, OptionalExtension, params};
use std::sync::Arc;

/// The writer's batch transaction seen by the engine.
pub(crate) struct SqliteTx<'t, 'c> {
    batch: &'t BatchTx<'c>,
}

impl<'t, 'c> SqliteTx<'t, 'c> {
    pub(crate) fn new(batch: &'t BatchTx<'c>) -> Self {
        Self { batch }
    }

    fn conn(&self) -> &Connection {
        self.batch
    }
}

/// A To or Cc list as stored: a JSON array of `{"name", "address"}`, NULL
/// when empty (see `reads::mailbox_list`).
fn mailbox_list(list: &[posthorn_core::address::Mailbox]) -> StoreResult<Option<String>> {
    Ok(if list.is_empty() {
        None
    } else {
        Some(serde_json::to_string(list)?)
    })
}

/// The open pixel's `link_index` in `repeated_hits` (a key column cannot
/// be NULL).
pub(crate) const PIXEL: i64 = -1;

impl engine::WriteTx for SqliteTx<'_, '_> {
    fn tenant(&mut self, id: &TenantId) -> StoreResult<Option<Tenant>> {
        reads::tenant_by_id(self.conn(), id)
    }

    fn tenant_by_name(&mut self, name: &str) -> StoreResult<Option<Tenant>> {
        reads::tenant_by_name(self.conn(), name)
    }

    fn insert_tenant(&mut self, t: &Tenant) -> StoreResult<()> {
        prepare(
            self.conn(),
            "INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)",
        )?
        .execute(params![t.id.as_str(), t.name, t.created_at])?;
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
                self.conn().execute(
                    &format!("UPDATE tenants SET {column} = $1 WHERE id = $2"),
                    params![value, tenant.as_str()],
                )?;
            }
        }
        Ok(())
    }

    fn insert_api_key(&mut self, key: &NewApiKey) -> StoreResult<()> {
        let scopes: Vec<&str> = key.scopes.iter().map(|s| s.as_str()).collect();
        prepare(
            self.conn(),
            "INSERT INTO api_keys (id, tenant_id, name, scopes, secret_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )?
        .execute(params![
            key.id.as_str(),
            key.tenant_id.as_str(),
            key.name,
            scopes.join(","),
            key.secret_hash,
            key.created_at
        ])?;
        Ok(())
    }

    fn revoke_api_key(&mut self, id: &ApiKeyId, now: Millis) -> StoreResult<bool> {
        let n = prepare(
            self.conn(),
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )?
        .execute(params![now, id.as_str()])?;
        Ok(n > 0)
    }

    fn sending_domain(&mut self, domain: &str) -> StoreResult<Option<SendingDomain>> {
        domains::by_name(self.conn(), domain)
    }

    fn domains_of_other_tenants(&mut self, tenant: &TenantId) -> StoreResult<Vec<String>> {
        let mut stmt = prepare(
            self.conn(),
            "SELECT domain FROM sending_domains WHERE tenant_id <> $1",
        )?;
        let rows = stmt.query_map([tenant.as_str()], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn insert_sending_domain(&mut self, d: &SendingDomain) -> StoreResult<()> {
        prepare(
            self.conn(),
            "INSERT INTO sending_domains (domain, tenant_id, created_at) VALUES ($1, $2, $3)",
        )?
        .execute(params![d.domain, d.tenant_id.as_str(), d.created_at])?;
        Ok(())
    }

    fn delete_sending_domain(&mut self, tenant: &TenantId, domain: &str) -> StoreResult<bool> {
        let n = prepare(
            self.conn(),
            "DELETE FROM sending_domains WHERE domain = $1 AND tenant_id = $2",
        )?
        .execute(params![domain, tenant.as_str()])?;
        Ok(n > 0)
    }

    fn domain_owners(&mut self, candidates: &[String]) -> StoreResult<Vec<DomainOwner>> {
        domains::owners(self.conn(), candidates)
    }

    fn idempotency_record(
        &mut self,
        tenant: &TenantId,
        key: &str,
        not_before: Millis,
    ) -> StoreResult<Option<(String, String)>> {
        Ok(prepare(
            self.conn(),
            "SELECT body_hash, receipt FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 AND created_at >= $3",
        )?
        .query_row(params![tenant.as_str(), key, not_before], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?)
    }

    fn save_idempotency_record(
        &mut self,
        tenant: &TenantId,
        key: &str,
        body_hash: &str,
        receipt: &str,
        now: Millis,
    ) -> StoreResult<()> {
        prepare(
            self.conn(),
            "INSERT INTO idempotency_keys (tenant_id, key, body_hash, receipt, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (tenant_id, key) DO UPDATE SET body_hash = excluded.body_hash, \
             receipt = excluded.receipt, created_at = excluded.created_at",
        )?
        .execute(params![tenant.as_str(), key, body_hash, receipt, now])?;
        Ok(())
    }

    fn insert_message(&mut self, m: &NewMessage) -> StoreResult<()> {
        prepare(
            self.conn(),
            "INSERT INTO messages (id, tenant_id, from_header, from_address, reply_to, subject, text_body, html_body, \
             headers, tags, metadata, stream, campaign, test, send_at, expires_at, tracking_opens, tracking_clicks, \
             size, source, created_at, to_header, cc_header, raw_mime) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24)",
        )?
        .execute(params![
            m.id.as_str(),
            m.tenant_id.as_str(),
            m.content.from,
            m.from_address,
            m.content.reply_to,
            m.content.subject,
            m.content.text,
            m.content.html,
            m.content.headers.to_string(),
            serde_json::to_string(&m.content.tags)?,
            m.content.metadata.to_string(),
            m.stream,
            m.campaign,
            m.test,
            m.send_at,
            m.expires_at,
            m.tracking_opens,
            m.tracking_clicks,
            m.size as i64,
            m.source.as_str(),
            m.accepted_at,
            mailbox_list(&m.content.to)?,
            mailbox_list(&m.content.cc)?,
            m.content.raw_mime
        ])?;
        Ok(())
    }

    fn insert_external_message(&mut self, m: &ExternalMessage) -> StoreResult<()> {
        prepare(
            self.conn(),
            "INSERT INTO messages (id, tenant_id, from_header, from_address, subject, headers, tags, metadata, \
             stream, test, size, source, created_at) \
             VALUES ($1, $2, $3, $4, '', $5, '[]', $6, $7, 0, 0, $8, $9)",
        )?
        .execute(params![
            m.id.as_str(),
            m.tenant.as_str(),
            m.sender,
            m.sender,
            m.headers.to_string(),
            m.metadata.to_string(),
            m.stream,
            EventSource::ProviderWebhook.as_str(),
            m.created_at
        ])?;
        Ok(())
    }

    fn message(&mut self, tenant: &TenantId, id: &MessageId) -> StoreResult<Option<MessageRecord>> {
        reads::message(self.conn(), tenant, id)
    }

    fn insert_delivery(&mut self, d: &DeliveryRecord) -> StoreResult<()> {
        prepare(
            self.conn(),
            "INSERT INTO deliveries (id, tenant_id, message_id, recipient, recipient_kind, sender, stream, campaign, test, \
             created_at, window_ends_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )?
        .execute(params![
            d.id.as_str(),
            d.tenant_id.as_str(),
            d.message_id.as_str(),
            d.recipient,
            d.recipient_kind.as_str(),
            d.sender,
            d.stream,
            d.campaign,
            d.test,
            d.created_at,
            d.window_ends_at,
            d.updated_at
        ])?;
        Ok(())
    }

    fn delivery(
        &mut self,
        tenant: &TenantId,
        id: &DeliveryId,
    ) -> StoreResult<Option<DeliveryRecord>> {
        reads::delivery(self.conn(), tenant, id)
    }

    fn save_delivery_status(&mut self, d: &DeliveryRecord) -> StoreResult<()> {
        prepare(
            self.conn(),
            "UPDATE deliveries SET delivery_status = $1, bounce_type = $2, delivery_event_id = $3, \
             delivery_occurred_at = $4, engagement_status = $5, engagement_event_id = $6, engagement_occurred_at = $7, \
             updated_at = $8, seen = $9 WHERE id = $10",
        )?
        .execute(params![
            d.delivery_status.map(|s| s.as_str()),
            d.delivery_status.and_then(|s| s.bounce_type()).map(|b| b.as_str()),
            d.delivery_event_id.as_ref().map(|e| e.as_str()),
            d.delivery_occurred_at,
            (d.engagement_event_id.is_some()).then(|| d.engagement_status.as_str()),
            d.engagement_event_id.as_ref().map(|e| e.as_str()),
            d.engagement_occurred_at,
            d.updated_at,
            d.seen.bits(),
            d.id.as_str()
        ])?;
        Ok(())
    }

    fn message_tags(&mut self, tenant: &TenantId, message: &MessageId) -> StoreResult<Vec<String>> {
        let tags: Option<String> = prepare(
            self.conn(),
            "SELECT tags FROM messages WHERE id = $1 AND tenant_id = $2",
        )?
        .query_row(params![message.as_str(), tenant.as_str()], |r| r.get(0))
        .optional()?;
        Ok(match tags {
            None => Vec::new(),
            Some(json) => serde_json::from_str(&json).map_err(|_| StoreError::Corrupt {
                table: "messages",
                column: "tags",
                value: json.chars().take(120).collect(),
            })?,
        })
    }

    fn add_stats(
        &mut self,
        tenant: &TenantId,
        changes: &[StatsChange],
        domains: &[DomainStatsChange],
    ) -> StoreResult<()> {
        // Added up and written once, before the batch commits.
        self.batch.note_stats(tenant, changes, domains);
        Ok(())
    }

    fn campaign_has_recipient(
        &mut self,
        tenant: &TenantId,
        campaign: &str,
        recipient: &str,
    ) -> StoreResult<bool> {
        Ok(prepare(
            self.conn(),
            "SELECT EXISTS (SELECT 1 FROM deliveries WHERE tenant_id = $1 AND campaign = $2 AND recipient = $3 \
             AND delivery_status <> 'dropped')",
        )?
        .query_row(params![tenant.as_str(), campaign, recipient], |row| row.get(0))?)
    }

    fn insert_event(
        &mut self,
        tenant: &TenantId,
        mut event: EventRecord,
    ) -> StoreResult<Option<Arc<EventRecord>>> {
        // The writer numbers events in the order it stores them; it alone
        // writes, so that is the commit order too.
        event.seq = self.batch.next_event_seq();
        let inserted = prepare(
            self.conn(),
            "INSERT INTO events (id, tenant_id, delivery_id, message_id, recipient, sender, kind, occurred_at, \
             recorded_at, source, details, external_id, anomaly, outside_window, seq) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            event.id.as_str(),
            tenant.as_str(),
            event.delivery_id.as_str(),
            event.message_id.as_str(),
            event.recipient,
            event.sender,
            event.kind().as_str(),
            event.occurred_at,
            event.recorded_at,
            event.source.as_str(),
            event.details.to_json().to_string(),
            event.external_id,
            event.anomaly,
            event.outside_window,
            event.seq
        ])?;
        if inserted == 0 {
            return Ok(None);
        }
        let event = Arc::new(event);
        self.batch.stored(event.clone());
        Ok(Some(event))
    }

    fn event_by_id(&mut self, tenant: &TenantId, id: &EventId) -> StoreResult<Option<EventRecord>> {
        reads::event_by_id(self.conn(), tenant, id)
    }

    fn event_by_external_id(
        &mut self,
        tenant: &TenantId,
        external_id: &str,
    ) -> StoreResult<Option<EventRecord>> {
        reads::event_by_external_id(self.conn(), tenant, external_id)
    }

    fn contact(&mut self, tenant: &TenantId, address: &str) -> StoreResult<Option<ContactRecord>> {
        reads::contact(self.conn(), tenant, address)
    }

    fn insert_contact(
        &mut self,
        tenant: &TenantId,
        address: &str,
        s: &ContactState,
        now: Millis,
    ) -> StoreResult<()> {
        // One writer: no contact can appear between the engine's read and
        // this insert.
        self.insert_contact_unless_exists(tenant, address, s, now)
    }

    fn insert_contact_unless_exists(
        &mut self,
        tenant: &TenantId,
        address: &str,
        s: &ContactState,
        now: Millis,
    ) -> StoreResult<()> {
        prepare(
            self.conn(),
            "INSERT INTO contacts (tenant_id, address, status, unsubscribed_streams, consecutive_failed_deliveries, \
             consecutive_failed_attempts, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
             ON CONFLICT (tenant_id, address) DO NOTHING",
        )?
        .execute(params![
            tenant.as_str(),
            address,
            s.status.as_str(),
            serde_json::to_string(&s.unsubscribed_streams)?,
            s.consecutive_failed_deliveries,
            s.consecutive_failed_attempts,
            now
        ])?;
        Ok(())
    }

    fn update_contact(
        &mut self,
        tenant: &TenantId,
        address: &str,
        s: &ContactState,
        now: Millis,
    ) -> StoreResult<()> {
        prepare(
            self.conn(),
            "UPDATE contacts SET status = $1, unsubscribed_streams = $2, consecutive_failed_deliveries = $3, \
             consecutive_failed_attempts = $4, updated_at = $5 WHERE tenant_id = $6 AND address = $7",
        )?
        .execute(params![
            s.status.as_str(),
            serde_json::to_string(&s.unsubscribed_streams)?,
            s.consecutive_failed_deliveries,
            s.consecutive_failed_attempts,
            now,
            tenant.as_str(),
            address
        ])?;
        Ok(())
    }

    fn insert_contact_change(
        &mut self,
        tenant: &TenantId,
        address: &str,
        change: &ContactChange,
    ) -> StoreResult<()> {
        prepare(
            self.conn(),
            "INSERT INTO contact_changes (id, tenant_id, address, from_status, to_status, reason, cause_event_id, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )?
        .execute(params![
            EventId::generate().as_str(),
            tenant.as_str(),
            address,
            change.from.as_str(),
            change.to.as_str(),
            change.reason,
            change.cause_event_id.as_ref().map(|e| e.as_str()),
            change.at
        ])?;
        Ok(())
    }

    fn suppressions_for(
        &mut self,
        tenant: &TenantId,
        address: &str,
        now: Millis,
    ) -> StoreResult<Vec<SuppressionEntry>> {
        reads::suppressions_for(self.conn(), tenant, address, now)
    }

    fn insert_suppression(&mut self, tenant: &TenantId, e: &SuppressionEntry) -> StoreResult<()> {
        let stream = e.scope.stream();
        let exists: bool = prepare(
            self.conn(),
            "SELECT EXISTS (SELECT 1 FROM suppressions WHERE tenant_id = $1 AND target = $2 \
             AND COALESCE(stream, '') = COALESCE($3, '') AND removed_at IS NULL \
             AND (expires_at IS NULL OR expires_at > $4))",
        )?
        .query_row(
            params![tenant.as_str(), e.target, stream, e.created_at],
            |r| r.get(0),
        )?;
        if exists {
            return Ok(());
        }
        prepare(
            self.conn(),
            "INSERT INTO suppressions (id, tenant_id, target, stream, reason, cause_event_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )?
        .execute(params![
            e.id,
            tenant.as_str(),
            e.target,
            stream,
            e.reason.as_str(),
            e.cause_event_id.as_ref().map(|id| id.as_str()),
            e.created_at,
            e.expires_at
        ])?;
        Ok(())
    }

    fn enqueue(
        &mut self,
        tenant: &TenantId,
        delivery: &DeliveryId,
        due_at: Millis,
        now: Millis,
    ) -> StoreResult<()> {
        prepare(
            self.conn(),
            "INSERT INTO send_queue (delivery_id, tenant_id, due_at, attempts, created_at) VALUES ($1, $2, $3, 0, $4)",
        )?
        .execute(params![delivery.as_str(), tenant.as_str(), due_at, now])?;
        Ok(())
    }

    fn claim_entries(
        &mut self,
        node: &NodeId,
        window: ClaimWindow,
        limit: u32,
        until: Millis,
    ) -> StoreResult<Vec<DueEntry>> {
        // One writer: what is read here is still due when leased below.
        let due = {
            let mut stmt = prepare(
                self.conn(),
                "SELECT delivery_id, tenant_id, attempts, due_at FROM send_queue \
                 WHERE due_at <= $1 AND due_at >= $2 AND (lease_until IS NULL OR lease_until < $1) \
                 ORDER BY due_at LIMIT $3",
            )?;
            let rows = stmt.query_map(params![window.now, window.from, limit], |r| {
                Ok(DueEntry {
                    delivery: DeliveryId::from_stored(r.get(0)?),
                    tenant: TenantId::from_stored(r.get(1)?),
                    attempts: r.get(2)?,
                    due_at: r.get(3)?,
                })
            })?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        let mut lease = prepare(
            self.conn(),
            "UPDATE send_queue SET lease_owner = $1, lease_until = $2, attempts = attempts + 1 \
             WHERE delivery_id = $3",
        )?;
        for entry in &due {
            lease.execute(params![node.as_str(), until, entry.delivery.as_str()])?;
        }
        Ok(due)
    }

    fn release_leases(&mut self, node: &NodeId) -> StoreResult<u64> {
        Ok(prepare(
            self.conn(),
            "UPDATE send_queue SET lease_until = NULL, lease_owner = NULL WHERE lease_owner = $1",
        )?
        .execute([node.as_str()])? as u64)
    }

    fn dequeue(&mut self, delivery: &DeliveryId) -> StoreResult<()> {
        prepare(self.conn(), "DELETE FROM send_queue WHERE delivery_id = $1")?
            .execute([delivery.as_str()])?;
        Ok(())
    }

    fn requeue(&mut self, delivery: &DeliveryId, at: Millis) -> StoreResult<()> {
        prepare(
            self.conn(),
            "UPDATE send_queue SET due_at = $1, lease_owner = NULL, lease_until = NULL \
             WHERE delivery_id = $2",
        )?
        .execute(params![at, delivery.as_str()])?;
        Ok(())
    }

    fn insert_inbound(&mut self, record: &InboundRecord, raw: &[u8]) -> StoreResult<()> {
        prepare(
            self.conn(),
            "INSERT INTO inbound_messages (id, received_at, tenant_id, delivery_id, mail_from, rcpt_to, \
             kind, outcome, orphan_reason, attribution, records, size, raw) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )?
        .execute(params![
            record.id.as_str(),
            record.received_at,
            record.tenant_id.as_ref().map(|t| t.as_str()),
            record.delivery_id.as_ref().map(|d| d.as_str()),
            record.mail_from,
            serde_json::to_string(&record.rcpt_to)?,
            record.kind.as_str(),
            record.outcome.as_str(),
            record.orphan_reason.map(OrphanReason::as_str),
            record.attribution.map(AttributedBy::as_str),
            serde_json::to_string(&record.records)?,
            record.size as i64,
            raw,
        ])?;
        Ok(())
    }

    fn link_inbound_event(&mut self, event: &EventId, inbound: &InboundRecord) -> StoreResult<()> {
        prepare(
            self.conn(),
            "INSERT INTO inbound_events (event_id, inbound_id) VALUES ($1, $2) ON CONFLICT (event_id) DO NOTHING",
        )?
        .execute([event.as_str(), inbound.id.as_str()])?;
        Ok(())
    }

    fn insert_message_links(&mut self, message: &MessageId, links: &[String]) -> StoreResult<()> {
        let mut insert = prepare(
            self.conn(),
            "INSERT INTO message_links (message_id, position, url) VALUES ($1, $2, $3) \
             ON CONFLICT (message_id, position) DO NOTHING",
        )?;
        for (position, url) in links.iter().enumerate() {
            insert.execute(params![message.as_str(), position as i64, url])?;
        }
        Ok(())
    }

    fn count_repeated_hit(&mut self, tenant: &TenantId, hit: &NewRepeatedHit) -> StoreResult<bool> {
        // The SELECT both checks that the delivery is the tenant's and names
        // the row; `WHERE` keeps SQLite from reading `ON CONFLICT` as a join
        // constraint.
        let changed = prepare(
            self.conn(),
            "INSERT INTO repeated_hits (delivery_id, kind, link_index, machine, hits, last_at) \
             SELECT $1, $2, $3, $4, 1, $5 FROM deliveries WHERE id = $1 AND tenant_id = $6 \
             ON CONFLICT (delivery_id, kind, link_index, machine) DO UPDATE \
             SET hits = hits + 1, last_at = max(last_at, excluded.last_at)",
        )?
        .execute(params![
            hit.delivery_id.as_str(),
            hit.kind.as_str(),
            hit.link_index.map_or(PIXEL, i64::from),
            hit.machine,
            hit.at,
            tenant.as_str(),
        ])?;
        Ok(changed > 0)
    }

    fn insert_ingest_source(&mut self, s: &IngestSource) -> StoreResult<()> {
        prepare(
            self.conn(),
            "INSERT INTO ingest_sources (id, tenant_id, name, provider, token_hash, verification, created_at, \
             pending_confirmation) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )?
        .execute(params![
            s.id.as_str(),
            s.tenant_id.as_str(),
            s.name,
            s.provider().as_str(),
            s.token_hash,
            serde_json::to_string(&s.verification)?,
            s.created_at,
            s.pending_confirmation
        ])?;
        Ok(())
    }

    fn delete_ingest_source(
        &mut self,
        tenant: &TenantId,
        id: &IngestSourceId,
    ) -> StoreResult<bool> {
        let n = prepare(
            self.conn(),
            "DELETE FROM ingest_sources WHERE id = $1 AND tenant_id = $2",
        )?
        .execute([id.as_str(), tenant.as_str()])?;
        if n > 0 {
            prepare(
                self.conn(),
                "DELETE FROM ingest_tokens WHERE source_id = $1",
            )?
            .execute([id.as_str()])?;
        }
        Ok(n > 0)
    }

    fn set_ingest_pending_confirmation(
        &mut self,
        tenant: &TenantId,
        id: &IngestSourceId,
        url: Option<&str>,
    ) -> StoreResult<bool> {
        let n = prepare(
            self.conn(),
            "UPDATE ingest_sources SET pending_confirmation = $1 WHERE id = $2 AND tenant_id = $3",
        )?
        .execute(params![url, id.as_str(), tenant.as_str()])?;
        Ok(n > 0)
    }

    fn ingest_source_exists(
        &mut self,
        tenant: &TenantId,
        id: &IngestSourceId,
    ) -> StoreResult<bool> {
        Ok(prepare(
            self.conn(),
            "SELECT EXISTS (SELECT 1 FROM ingest_sources WHERE id = $1 AND tenant_id = $2)",
        )?
        .query_row([id.as_str(), tenant.as_str()], |r| r.get(0))?)
    }

    fn use_ingest_token(
        &mut self,
        source: &IngestSourceId,
        token: &str,
        expires_at: Millis,
        now: Millis,
    ) -> StoreResult<bool> {
        prepare(
            self.conn(),
            "DELETE FROM ingest_tokens WHERE expires_at < $1",
        )?
        .execute([now])?;
        let inserted = prepare(
            self.conn(),
            "INSERT INTO ingest_tokens (source_id, token, expires_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )?
        .execute(params![source.as_str(), token, expires_at])?;
        Ok(inserted > 0)
    }

    fn provider_event_key(&mut self, tenant: &TenantId, key: &str) -> StoreResult<Option<EventId>> {
        Ok(prepare(
            self.conn(),
            "SELECT event_id FROM provider_event_keys WHERE tenant_id = $1 AND key = $2",
        )?
        .query_row([tenant.as_str(), key], |r| {
            Ok(EventId::from_stored(r.get::<_, String>(0)?))
        })
        .optional()?)
    }

    fn remember_provider_keys(
        &mut self,
        tenant: &TenantId,
        keys: &[String],
        event: &EventId,
    ) -> StoreResult<()> {
        let mut insert = prepare(
            self.conn(),
            "INSERT INTO provider_event_keys (tenant_id, key, event_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )?;
        for key in keys {
            insert.execute(params![tenant.as_str(), key, event.as_str()])?;
        }
        Ok(())
    }

    fn provider_delivery(
        &mut self,
        tenant: &TenantId,
        pm: &ProviderMessageRef<'_>,
        recipient: &str,
    ) -> StoreResult<Option<DeliveryId>> {
        Ok(prepare(
            self.conn(),
            "SELECT delivery_id FROM provider_deliveries WHERE tenant_id = $1 AND provider = $2 \
             AND provider_message_id = $3 AND recipient = $4",
        )?
        .query_row(
            params![tenant.as_str(), pm.provider, pm.message_id, recipient],
            |r| Ok(DeliveryId::from_stored(r.get::<_, String>(0)?)),
        )
        .optional()?)
    }

    fn provider_message(
        &mut self,
        tenant: &TenantId,
        pm: &ProviderMessageRef<'_>,
    ) -> StoreResult<Option<MessageId>> {
        Ok(prepare(
            self.conn(),
            "SELECT message_id FROM provider_deliveries WHERE tenant_id = $1 AND provider = $2 \
             AND provider_message_id = $3 LIMIT 1",
        )?
        .query_row(params![tenant.as_str(), pm.provider, pm.message_id], |r| {
            Ok(MessageId::from_stored(r.get::<_, String>(0)?))
        })
        .optional()?)
    }

    fn insert_provider_delivery(
        &mut self,
        pm: &ProviderMessageRef<'_>,
        d: &DeliveryRecord,
    ) -> StoreResult<()> {
        prepare(
            self.conn(),
            "INSERT INTO provider_deliveries (tenant_id, provider, provider_message_id, recipient, message_id, delivery_id) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )?
        .execute(params![
            d.tenant_id.as_str(),
            pm.provider,
            pm.message_id,
            d.recipient,
            d.message_id.as_str(),
            d.id.as_str()
        ])?;
        Ok(())
    }

    fn insert_provider_payload(
        &mut self,
        tenant: &TenantId,
        event: &EventId,
        source: &IngestSourceId,
        payload: &[u8],
    ) -> StoreResult<()> {
        prepare(
            self.conn(),
            "INSERT INTO provider_payloads (tenant_id, event_id, source_id, payload) VALUES ($1, $2, $3, $4)",
        )?
        .execute(params![tenant.as_str(), event.as_str(), source.as_str(), payload])?;
        Ok(())
    }
}

/// Adds changes to the counts: one writer, so each count is one row,
/// changed in place.
pub(crate) fn add_stats(
    conn: &Connection,
    tenant: &TenantId,
    changes: &[StatsChange],
    domains: &[DomainStatsChange],
) -> StoreResult<()> {
    let mut stmt = prepare(
        conn,
        "INSERT INTO delivery_stats (tenant_id, hour, stream, campaign, tag, reason, metric, deliveries) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (tenant_id, tag, hour, stream, campaign, reason, metric) \
             DO UPDATE SET deliveries = deliveries + excluded.deliveries",
    )?;
    for c in changes {
        stmt.execute(params![
            tenant.as_str(),
            c.hour,
            c.stream,
            c.campaign,
            c.tag,
            c.reason,
            c.metric.as_str(),
            c.change
        ])?;
    }
    let mut stmt = prepare(
        conn,
        "INSERT INTO delivery_stats_domains (tenant_id, day, domain, metric, deliveries) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, day, domain, metric) \
             DO UPDATE SET deliveries = deliveries + excluded.deliveries",
    )?;
    for c in domains {
        stmt.execute(params![
            tenant.as_str(),
            c.day,
            c.domain,
            c.metric.as_str(),
            c.change
        ])?;
    }
    Ok(())
}
