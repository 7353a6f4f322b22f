//! Write-behind for a writer's transaction: the rows a write inserts (or a
//! status it sets) without needing an answer are kept here, and written
//! with one multi-row statement per table (arrays bound as parameters,
//! `unnest`ed) when a later statement of the transaction needs them in the
//! database, and at the latest before the commit. A group of writes then
//! costs a few statements per table instead of several per write: on
//! PostgreSQL each statement is a round trip and most of a small write's
//! cost.
//!
//! Every write runs behind first (a group's, or one alone). Anything
//! unexpected at the flush (a key that exists, a constraint) fails the
//! transaction, whose writes then run again one by one without
//! write-behind (see `writer`), where each statement answers at once: the
//! engine's exact semantics are always those of the plain path.

use crate::records::{DeliveryRecord, EventRecord, NewMessage};
use crate::{StoreError, StoreResult};
use ::postgres::Transaction;
use ::postgres::types::{Json, ToSql};
use posthorn_core::contact::ContactState;
use posthorn_core::{DeliveryId, Millis, TenantId};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::reads::Cached;

/// Rows kept until the next flush.
#[derive(Default)]
pub(crate) struct WriteBehind {
    messages: Vec<NewMessage>,
    deliveries: Vec<DeliveryRecord>,
    /// Status columns of deliveries inserted before this flush (a status
    /// set on a delivery still kept here goes into its insert instead).
    statuses: Vec<DeliveryRecord>,
    events: Vec<(TenantId, Arc<EventRecord>)>,
    queue: Vec<QueueRow>,
    /// Queue entries to move after an attempt: `None` removes one, `Some`
    /// makes it due again then (one move per delivery).
    queue_moves: HashMap<DeliveryId, Option<Millis>>,
    contacts: Vec<ContactRow>,
    /// Deliveries with a row or a status kept here.
    touched_deliveries: HashSet<DeliveryId>,
    /// Contacts (tenant, address) kept here.
    touched_contacts: HashSet<(TenantId, String)>,
}

struct QueueRow {
    tenant: TenantId,
    delivery: DeliveryId,
    due_at: Millis,
    now: Millis,
}

struct ContactRow {
    tenant: TenantId,
    address: String,
    state: ContactState,
    now: Millis,
}

impl WriteBehind {
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.deliveries.is_empty()
            && self.statuses.is_empty()
            && self.events.is_empty()
            && self.queue.is_empty()
            && self.queue_moves.is_empty()
            && self.contacts.is_empty()
    }

    /// Whether a statement about `delivery` must see rows kept here.
    pub fn holds_delivery(&self, delivery: &DeliveryId) -> bool {
        self.touched_deliveries.contains(delivery)
    }

    /// Whether a statement about this contact must see rows kept here.
    pub fn holds_contact(&self, tenant: &TenantId, address: &str) -> bool {
        self.touched_contacts
            .contains(&(tenant.clone(), address.to_owned()))
    }

    pub fn message(&mut self, message: &NewMessage) {
        self.messages.push(message.clone());
    }

    pub fn delivery(&mut self, delivery: &DeliveryRecord) {
        self.touched_deliveries.insert(delivery.id.clone());
        self.deliveries.push(delivery.clone());
    }

    /// A delivery's status columns: into its insert when that is kept
    /// here, else an update (the last one kept per delivery wins).
    pub fn status(&mut self, delivery: &DeliveryRecord) {
        if let Some(row) = self.deliveries.iter_mut().find(|d| d.id == delivery.id) {
            *row = delivery.clone();
            return;
        }
        self.touched_deliveries.insert(delivery.id.clone());
        self.statuses.retain(|d| d.id != delivery.id);
        self.statuses.push(delivery.clone());
    }

    pub fn event(&mut self, tenant: &TenantId, event: Arc<EventRecord>) {
        self.events.push((tenant.clone(), event));
    }

    pub fn enqueue(
        &mut self,
        tenant: &TenantId,
        delivery: &DeliveryId,
        due_at: Millis,
        now: Millis,
    ) {
        self.touched_deliveries.insert(delivery.clone());
        self.queue.push(QueueRow {
            tenant: tenant.clone(),
            delivery: delivery.clone(),
            due_at,
            now,
        });
    }

    /// The entry of `delivery` removed from the queue. Final: a later
    /// requeue in the same transaction would have found no entry.
    pub fn dequeue(&mut self, delivery: &DeliveryId) {
        self.queue_moves.insert(delivery.clone(), None);
    }

    /// The entry of `delivery` due again at `at`, with no lease (unless
    /// it was removed before in this transaction).
    pub fn requeue(&mut self, delivery: &DeliveryId, at: Millis) {
        match self.queue_moves.get_mut(delivery) {
            Some(None) => {}
            Some(due) => *due = Some(at),
            None => {
                self.queue_moves.insert(delivery.clone(), Some(at));
            }
        }
    }

    /// A contact inserted unless one exists.
    pub fn contact(&mut self, tenant: &TenantId, address: &str, state: &ContactState, now: Millis) {
        self.touched_contacts
            .insert((tenant.clone(), address.to_owned()));
        self.contacts.push(ContactRow {
            tenant: tenant.clone(),
            address: address.to_owned(),
            state: state.clone(),
            now,
        });
    }

    /// Writes every kept row, parents before children (messages,
    /// deliveries, statuses, event keys, events, queue entries and their
    /// moves, contacts), and forgets them.
    pub fn flush(&mut self, db: &mut Db<'_, '_>) -> StoreResult<()> {
        if self.is_empty() {
            return Ok(());
        }
        insert_messages(db, &std::mem::take(&mut self.messages))?;
        insert_deliveries(db, &std::mem::take(&mut self.deliveries))?;
        update_statuses(db, &std::mem::take(&mut self.statuses))?;
        insert_events(db, &std::mem::take(&mut self.events))?;
        insert_queue(db, &std::mem::take(&mut self.queue))?;
        move_queue_entries(db, &std::mem::take(&mut self.queue_moves))?;
        insert_contacts(db, &std::mem::take(&mut self.contacts))?;
        self.touched_deliveries.clear();
        self.touched_contacts.clear();
        Ok(())
    }
}

/// The group's transaction, with its connection's prepared statements.
type Db<'a, 'c> = Cached<'a, Transaction<'c>>;

/// The status columns of a delivery, as stored: `delivery_status`,
/// `bounce_type`, `delivery_event_id`, `delivery_occurred_at`,
/// `engagement_status`, `engagement_event_id`, `engagement_occurred_at`.
pub(crate) struct StatusColumns<'a> {
    pub delivery_status: Option<&'static str>,
    pub bounce_type: Option<&'static str>,
    pub delivery_event_id: Option<&'a str>,
    pub delivery_occurred_at: Option<Millis>,
    pub engagement_status: Option<&'static str>,
    pub engagement_event_id: Option<&'a str>,
    pub engagement_occurred_at: Option<Millis>,
    pub seen: i64,
}

impl<'a> StatusColumns<'a> {
    pub fn of(d: &'a DeliveryRecord) -> Self {
        Self {
            delivery_status: d.delivery_status.map(|s| s.as_str()),
            bounce_type: d
                .delivery_status
                .and_then(|s| s.bounce_type())
                .map(|b| b.as_str()),
            delivery_event_id: d.delivery_event_id.as_ref().map(|e| e.as_str()),
            delivery_occurred_at: d.delivery_occurred_at,
            // No engagement yet is stored as NULL.
            engagement_status: d
                .engagement_event_id
                .is_some()
                .then(|| d.engagement_status.as_str()),
            engagement_event_id: d.engagement_event_id.as_ref().map(|e| e.as_str()),
            engagement_occurred_at: d.engagement_occurred_at,
            seen: d.seen.bits(),
        }
    }
}

fn insert_messages(db: &mut Db<'_, '_>, rows: &[NewMessage]) -> StoreResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&NewMessage) -> &str| rows.iter().map(f).collect::<Vec<_>>();
    let opt = |f: fn(&NewMessage) -> Option<&str>| rows.iter().map(f).collect::<Vec<_>>();
    let (ids, tenants) = (col(|m| m.id.as_str()), col(|m| m.tenant_id.as_str()));
    let (from_headers, from_addresses) = (col(|m| &m.content.from), col(|m| &m.from_address));
    let reply_tos = opt(|m| m.content.reply_to.as_deref());
    let subjects = col(|m| &m.content.subject);
    let texts = opt(|m| m.content.text.as_deref());
    let htmls = opt(|m| m.content.html.as_deref());
    let headers: Vec<_> = rows.iter().map(|m| Json(&m.content.headers)).collect();
    let tags: Vec<_> = rows.iter().map(|m| Json(&m.content.tags)).collect();
    let metadata: Vec<_> = rows.iter().map(|m| Json(&m.content.metadata)).collect();
    let streams = col(|m| &m.stream);
    let campaigns = opt(|m| m.campaign.as_deref());
    let tests: Vec<bool> = rows.iter().map(|m| m.test).collect();
    let send_ats: Vec<Option<Millis>> = rows.iter().map(|m| m.send_at).collect();
    let expires: Vec<Option<Millis>> = rows.iter().map(|m| m.expires_at).collect();
    let opens: Vec<Option<bool>> = rows.iter().map(|m| m.tracking_opens).collect();
    let clicks: Vec<Option<bool>> = rows.iter().map(|m| m.tracking_clicks).collect();
    let sizes: Vec<i64> = rows.iter().map(|m| m.size as i64).collect();
    let sources = col(|m| m.source.as_str());
    let created: Vec<Millis> = rows.iter().map(|m| m.accepted_at).collect();
    let to: Vec<_> = rows
        .iter()
        .map(|m| (!m.content.to.is_empty()).then_some(Json(&m.content.to)))
        .collect();
    let cc: Vec<_> = rows
        .iter()
        .map(|m| (!m.content.cc.is_empty()).then_some(Json(&m.content.cc)))
        .collect();
    let raw: Vec<Option<&[u8]>> = rows.iter().map(|m| m.content.raw_mime.as_deref()).collect();
    db.execute(
        "INSERT INTO messages (id, tenant_id, from_header, from_address, reply_to, subject, text_body, html_body, \
         headers, tags, metadata, stream, campaign, test, send_at, expires_at, tracking_opens, tracking_clicks, \
         size, source, created_at, to_header, cc_header, raw_mime) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
         $8::text[], $9::jsonb[], $10::jsonb[], $11::jsonb[], $12::text[], $13::text[], $14::boolean[], \
         $15::bigint[], $16::bigint[], $17::boolean[], $18::boolean[], $19::bigint[], $20::text[], $21::bigint[], \
         $22::jsonb[], $23::jsonb[], $24::bytea[])",
        &[
            &ids,
            &tenants,
            &from_headers,
            &from_addresses,
            &reply_tos,
            &subjects,
            &texts,
            &htmls,
            &headers,
            &tags,
            &metadata,
            &streams,
            &campaigns,
            &tests,
            &send_ats,
            &expires,
            &opens,
            &clicks,
            &sizes,
            &sources,
            &created,
            &to,
            &cc,
            &raw,
        ],
    )?;
    Ok(())
}

/// The status columns of `rows`, one array each.
struct StatusArrays<'a> {
    delivery_status: Vec<Option<&'static str>>,
    bounce_type: Vec<Option<&'static str>>,
    delivery_event_id: Vec<Option<&'a str>>,
    delivery_occurred_at: Vec<Option<Millis>>,
    engagement_status: Vec<Option<&'static str>>,
    engagement_event_id: Vec<Option<&'a str>>,
    engagement_occurred_at: Vec<Option<Millis>>,
    seen: Vec<i64>,
}

impl<'a> StatusArrays<'a> {
    /// The eight arrays as parameters, in the columns' order.
    fn params(&self) -> [&(dyn ToSql + Sync); 8] {
        [
            &self.delivery_status,
            &self.bounce_type,
            &self.delivery_event_id,
            &self.delivery_occurred_at,
            &self.engagement_status,
            &self.engagement_event_id,
            &self.engagement_occurred_at,
            &self.seen,
        ]
    }

    fn of(rows: &'a [DeliveryRecord]) -> Self {
        let columns: Vec<StatusColumns<'a>> = rows.iter().map(StatusColumns::of).collect();
        Self {
            delivery_status: columns.iter().map(|c| c.delivery_status).collect(),
            bounce_type: columns.iter().map(|c| c.bounce_type).collect(),
            delivery_event_id: columns.iter().map(|c| c.delivery_event_id).collect(),
            delivery_occurred_at: columns.iter().map(|c| c.delivery_occurred_at).collect(),
            engagement_status: columns.iter().map(|c| c.engagement_status).collect(),
            engagement_event_id: columns.iter().map(|c| c.engagement_event_id).collect(),
            engagement_occurred_at: columns.iter().map(|c| c.engagement_occurred_at).collect(),
            seen: columns.iter().map(|c| c.seen).collect(),
        }
    }
}

fn insert_deliveries(db: &mut Db<'_, '_>, rows: &[DeliveryRecord]) -> StoreResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&DeliveryRecord) -> &str| rows.iter().map(f).collect::<Vec<_>>();
    let s = StatusArrays::of(rows);
    let campaigns: Vec<Option<&str>> = rows.iter().map(|d| d.campaign.as_deref()).collect();
    let tests: Vec<bool> = rows.iter().map(|d| d.test).collect();
    let created: Vec<Millis> = rows.iter().map(|d| d.created_at).collect();
    let window: Vec<Millis> = rows.iter().map(|d| d.window_ends_at).collect();
    let updated: Vec<Millis> = rows.iter().map(|d| d.updated_at).collect();
    let (ids, tenants, messages) = (
        col(|d| d.id.as_str()),
        col(|d| d.tenant_id.as_str()),
        col(|d| d.message_id.as_str()),
    );
    let (recipients, kinds) = (col(|d| &d.recipient), col(|d| d.recipient_kind.as_str()));
    let (senders, streams) = (col(|d| &d.sender), col(|d| &d.stream));
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![
        &ids,
        &tenants,
        &messages,
        &recipients,
        &kinds,
        &senders,
        &streams,
        &campaigns,
        &tests,
        &created,
        &window,
    ];
    params.extend(s.params());
    params.push(&updated);
    db.execute(
        "INSERT INTO deliveries (id, tenant_id, message_id, recipient, recipient_kind, sender, stream, campaign, \
         test, created_at, window_ends_at, delivery_status, bounce_type, delivery_event_id, delivery_occurred_at, \
         engagement_status, engagement_event_id, engagement_occurred_at, seen, updated_at) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
         $8::text[], $9::boolean[], $10::bigint[], $11::bigint[], $12::text[], $13::text[], $14::text[], \
         $15::bigint[], $16::text[], $17::text[], $18::bigint[], $19::bigint[], $20::bigint[])",
        &params,
    )?;
    Ok(())
}

fn update_statuses(db: &mut Db<'_, '_>, rows: &[DeliveryRecord]) -> StoreResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let s = StatusArrays::of(rows);
    let ids: Vec<&str> = rows.iter().map(|d| d.id.as_str()).collect();
    let updated: Vec<Millis> = rows.iter().map(|d| d.updated_at).collect();
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&ids];
    params.extend(s.params());
    params.push(&updated);
    db.execute(
        "UPDATE deliveries SET delivery_status = u.ds, bounce_type = u.bt, delivery_event_id = u.de, \
         delivery_occurred_at = u.dt, engagement_status = u.es, engagement_event_id = u.ee, \
         engagement_occurred_at = u.et, seen = u.sn, updated_at = u.up \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[], \
         $8::bigint[], $9::bigint[], $10::bigint[]) AS u(id, ds, bt, de, dt, es, ee, et, sn, up) \
         WHERE deliveries.id = u.id",
        &params,
    )?;
    Ok(())
}

fn insert_events(db: &mut Db<'_, '_>, rows: &[(TenantId, Arc<EventRecord>)]) -> StoreResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let tenants: Vec<&str> = rows.iter().map(|(t, _)| t.as_str()).collect();
    let ids: Vec<&str> = rows.iter().map(|(_, e)| e.id.as_str()).collect();
    // The ids' keys first: an id that exists (committed, or being
    // committed by another transaction) is not the fresh event the group
    // took it for. The group fails and its writes run alone, where the
    // plain path finds the event that exists.
    let fresh = db.execute(
        "INSERT INTO event_keys (tenant_id, kind, key) SELECT t, 'id', k FROM unnest($1::text[], $2::text[]) AS u(t, k) \
         ON CONFLICT DO NOTHING",
        &[&tenants, &ids],
    )?;
    if fresh != rows.len() as u64 {
        return Err(StoreError::backend(
            "an event id of a group exists already: the group runs again write by write",
        ));
    }
    let col = |f: fn(&EventRecord) -> &str| rows.iter().map(|(_, e)| f(e)).collect::<Vec<_>>();
    let seqs: Vec<i64> = rows.iter().map(|(_, e)| e.seq).collect();
    let occurred: Vec<Millis> = rows.iter().map(|(_, e)| e.occurred_at).collect();
    let recorded: Vec<Millis> = rows.iter().map(|(_, e)| e.recorded_at).collect();
    let details: Vec<serde_json::Value> = rows.iter().map(|(_, e)| e.details.to_json()).collect();
    let anomalies: Vec<Option<&str>> = rows.iter().map(|(_, e)| e.anomaly.as_deref()).collect();
    let outside: Vec<bool> = rows.iter().map(|(_, e)| e.outside_window).collect();
    db.execute(
        "INSERT INTO events (seq, id, tenant_id, delivery_id, message_id, recipient, sender, kind, occurred_at, \
         recorded_at, source, details, external_id, anomaly, outside_window) \
         SELECT s, i, t, d, m, r, f, k, o, rc, src, dt, NULL, a, w \
         FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
         $8::text[], $9::bigint[], $10::bigint[], $11::text[], $12::jsonb[], $13::text[], $14::boolean[]) \
         AS u(s, i, t, d, m, r, f, k, o, rc, src, dt, a, w)",
        &[
            &seqs,
            &ids,
            &tenants,
            &col(|e| e.delivery_id.as_str()),
            &col(|e| e.message_id.as_str()),
            &col(|e| &e.recipient),
            &col(|e| &e.sender),
            &col(|e| e.kind().as_str()),
            &occurred,
            &recorded,
            &col(|e| e.source.as_str()),
            &details,
            &anomalies,
            &outside,
        ],
    )?;
    Ok(())
}

fn insert_queue(db: &mut Db<'_, '_>, rows: &[QueueRow]) -> StoreResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let deliveries: Vec<&str> = rows.iter().map(|r| r.delivery.as_str()).collect();
    let tenants: Vec<&str> = rows.iter().map(|r| r.tenant.as_str()).collect();
    let due: Vec<Millis> = rows.iter().map(|r| r.due_at).collect();
    let created: Vec<Millis> = rows.iter().map(|r| r.now).collect();
    db.execute(
        "INSERT INTO send_queue (delivery_id, tenant_id, due_at, attempts, created_at) \
         SELECT d, t, due, 0, c FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) AS u(d, t, due, c)",
        &[&deliveries, &tenants, &due, &created],
    )?;
    Ok(())
}

fn move_queue_entries(
    db: &mut Db<'_, '_>,
    moves: &HashMap<DeliveryId, Option<Millis>>,
) -> StoreResult<()> {
    let (removed, due_again): (Vec<_>, Vec<_>) = moves.iter().partition(|(_, at)| at.is_none());
    if !removed.is_empty() {
        let ids: Vec<&str> = removed.iter().map(|(d, _)| d.as_str()).collect();
        db.execute(
            "DELETE FROM send_queue q USING unnest($1::text[]) AS gone(id) WHERE q.delivery_id = gone.id",
            &[&ids],
        )?;
    }
    if !due_again.is_empty() {
        let ids: Vec<&str> = due_again.iter().map(|(d, _)| d.as_str()).collect();
        let at: Vec<Millis> = due_again.iter().filter_map(|(_, at)| **at).collect();
        db.execute(
            "UPDATE send_queue q SET due_at = u.at, lease_owner = NULL, lease_until = NULL \
             FROM unnest($1::text[], $2::bigint[]) AS u(id, at) WHERE q.delivery_id = u.id",
            &[&ids, &at],
        )?;
    }
    Ok(())
}

fn insert_contacts(db: &mut Db<'_, '_>, rows: &[ContactRow]) -> StoreResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let tenants: Vec<&str> = rows.iter().map(|r| r.tenant.as_str()).collect();
    let addresses: Vec<&str> = rows.iter().map(|r| r.address.as_str()).collect();
    let statuses: Vec<&str> = rows.iter().map(|r| r.state.status.as_str()).collect();
    let streams: Vec<_> = rows
        .iter()
        .map(|r| Json(&r.state.unsubscribed_streams))
        .collect();
    let failed_deliveries: Vec<i64> = rows
        .iter()
        .map(|r| i64::from(r.state.consecutive_failed_deliveries))
        .collect();
    let failed_attempts: Vec<i64> = rows
        .iter()
        .map(|r| i64::from(r.state.consecutive_failed_attempts))
        .collect();
    let now: Vec<Millis> = rows.iter().map(|r| r.now).collect();
    db.execute(
        "INSERT INTO contacts (tenant_id, address, status, unsubscribed_streams, consecutive_failed_deliveries, \
         consecutive_failed_attempts, created_at, updated_at) \
         SELECT t, a, s, us, fd, fa, n, n FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::bigint[], \
         $6::bigint[], $7::bigint[]) AS u(t, a, s, us, fd, fa, n) \
         ON CONFLICT (tenant_id, address) DO NOTHING",
        &[
            &tenants,
            &addresses,
            &statuses,
            &streams,
            &failed_deliveries,
            &failed_attempts,
            &now,
        ],
    )?;
    Ok(())
}
