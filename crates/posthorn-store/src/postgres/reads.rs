//! Reads: the SELECT statements and the mapping of their rows to records,
//! over any client ([`Query`]: a pooled connection, or the writer's open
//! transaction, which sees its own writes), with the statements kept
//! prepared where the client has a cache ([`Cached`]). A value this
//! version cannot read fails with [`StoreError::Corrupt`] naming its table
//! and column, never a panic and never a default in its place.
//!
//! Ported from `sqlite::reads` with the same answers; the SQL differs only
//! where PostgreSQL needs it (typed parameters, `seq` bounded by the
//! settled position, no `+column` planner hints).

use super::position::settled_bound_sql;
use crate::records::*;
use crate::{StoreError, StoreResult};
use ::postgres::types::ToSql;
use ::postgres::{GenericClient, Row, Statement};
use posthorn_core::contact::{ContactState, ContactStatus};
use posthorn_core::event::EventDetails;
use posthorn_core::id::ApiKeyId;
use posthorn_core::status::{BounceType, DeliveryStatus, EngagementStatus};
use posthorn_core::suppression::{SuppressionEntry, SuppressionReason, SuppressionScope};
use posthorn_core::{DeliveryId, EventId, MessageId, Millis, TenantId};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A parameter list as the driver takes it.
pub(crate) type Params<'a> = [&'a (dyn ToSql + Sync)];

/// A connection's prepared statements, by their SQL. Preparing takes a
/// round trip of its own (as much as a small query): a statement prepared
/// once serves every later use on the connection.
/// The statements prepared on one connection, by their SQL, prepared
/// afresh once a minute.
///
/// A prepared statement soon runs a generic plan, made once and kept as
/// long as the statement: made while a new database's tables are nearly
/// empty, a batch statement's plan (`UPDATE ... FROM unnest($1)`) is a
/// sequential scan, which it would stay for a node's whole life while the
/// table grows to millions of rows. Preparing again every `PLAN_LIFE`
/// bounds how old a plan gets, for a prepare per statement per minute.
pub(crate) struct Statements {
    prepared: HashMap<String, Statement>,
    since: Instant,
}

impl Statements {
    pub(crate) fn new() -> Self {
        Self {
            prepared: HashMap::new(),
            since: Instant::now(),
        }
    }
}

/// Statements a connection keeps prepared at most; SQL beyond that (a
/// filter combination never seen) is prepared for its one use.
const KEPT_STATEMENTS: usize = 512;

/// How long a prepared statement (and its plan) is kept.
const PLAN_LIFE: Duration = Duration::from_secs(60);

/// What reads run on.
pub(crate) trait Query {
    fn query(&mut self, sql: &str, params: &Params<'_>) -> StoreResult<Vec<Row>>;
    fn query_opt(&mut self, sql: &str, params: &Params<'_>) -> StoreResult<Option<Row>>;
    fn query_one(&mut self, sql: &str, params: &Params<'_>) -> StoreResult<Row>;
}

/// Any client, preparing each statement for its one use.
impl<C: GenericClient> Query for C {
    fn query(&mut self, sql: &str, params: &Params<'_>) -> StoreResult<Vec<Row>> {
        Ok(GenericClient::query(self, sql, params)?)
    }
    fn query_opt(&mut self, sql: &str, params: &Params<'_>) -> StoreResult<Option<Row>> {
        Ok(GenericClient::query_opt(self, sql, params)?)
    }
    fn query_one(&mut self, sql: &str, params: &Params<'_>) -> StoreResult<Row> {
        Ok(GenericClient::query_one(self, sql, params)?)
    }
}

/// A client with the statements prepared on its connection.
pub(crate) struct Cached<'a, C> {
    pub client: &'a mut C,
    pub statements: &'a mut Statements,
}

impl<C: GenericClient> Cached<'_, C> {
    fn prepared(&mut self, sql: &str) -> StoreResult<Statement> {
        let kept = &mut *self.statements;
        if kept.since.elapsed() > PLAN_LIFE {
            // Dropped statements are closed on the server with the next
            // message sent.
            kept.prepared.clear();
            kept.since = Instant::now();
        }
        if let Some(statement) = kept.prepared.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql)?;
        if kept.prepared.len() < KEPT_STATEMENTS {
            kept.prepared.insert(sql.to_owned(), statement.clone());
        }
        Ok(statement)
    }

    /// Runs a statement that returns no rows; how many rows it changed.
    pub(crate) fn execute(&mut self, sql: &str, params: &Params<'_>) -> StoreResult<u64> {
        let statement = self.prepared(sql)?;
        Ok(self.client.execute(&statement, params)?)
    }
}

impl<C: GenericClient> Query for Cached<'_, C> {
    fn query(&mut self, sql: &str, params: &Params<'_>) -> StoreResult<Vec<Row>> {
        let statement = self.prepared(sql)?;
        Ok(self.client.query(&statement, params)?)
    }
    fn query_opt(&mut self, sql: &str, params: &Params<'_>) -> StoreResult<Option<Row>> {
        let statement = self.prepared(sql)?;
        Ok(self.client.query_opt(&statement, params)?)
    }
    fn query_one(&mut self, sql: &str, params: &Params<'_>) -> StoreResult<Row> {
        let statement = self.prepared(sql)?;
        Ok(self.client.query_one(&statement, params)?)
    }
}

/// Column `at` as `T` (the schema's own type; a mismatch is a backend
/// failure, not a stored value).
pub(crate) fn get<'r, T: ::postgres::types::FromSql<'r>>(r: &'r Row, at: usize) -> StoreResult<T> {
    Ok(r.try_get(at)?)
}

/// The text in column `at`, decoded with `parse`, or [`StoreError::Corrupt`].
pub(crate) fn decode<T>(
    r: &Row,
    at: usize,
    table: &'static str,
    column: &'static str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> StoreResult<T> {
    let value: String = get(r, at)?;
    parse(&value).ok_or_else(|| corrupt(table, column, value))
}

/// [`decode`] for a nullable column: NULL is `None`.
pub(crate) fn decode_optional<T>(
    r: &Row,
    at: usize,
    table: &'static str,
    column: &'static str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> StoreResult<Option<T>> {
    let value: Option<String> = get(r, at)?;
    value
        .map(|value| parse(&value).ok_or_else(|| corrupt(table, column, value)))
        .transpose()
}

/// The JSON (jsonb) in column `at` as a `T`, or [`StoreError::Corrupt`]:
/// jsonb is always JSON, but not always the JSON of a `T`.
pub(crate) fn json<T: serde::de::DeserializeOwned>(
    r: &Row,
    at: usize,
    table: &'static str,
    column: &'static str,
) -> StoreResult<T> {
    let value: serde_json::Value = get(r, at)?;
    from_json(value, table, column)
}

/// [`json`] for a value already read.
fn from_json<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    table: &'static str,
    column: &'static str,
) -> StoreResult<T> {
    T::deserialize(&value).map_err(|_| corrupt(table, column, value.to_string()))
}

/// A counter kept as bigint and read as `u32`: a negative or too large
/// value is not one this version wrote.
fn counter(r: &Row, at: usize, table: &'static str, column: &'static str) -> StoreResult<u32> {
    let value: i64 = get(r, at)?;
    u32::try_from(value).map_err(|_| corrupt(table, column, value.to_string()))
}

/// A size kept as bigint and read as `u64`.
fn size(r: &Row, at: usize, table: &'static str) -> StoreResult<u64> {
    let value: i64 = get(r, at)?;
    u64::try_from(value).map_err(|_| corrupt(table, "size", value.to_string()))
}

pub(crate) fn corrupt(table: &'static str, column: &'static str, value: String) -> StoreError {
    StoreError::Corrupt {
        table,
        column,
        value: excerpt(value),
    }
}

/// The start of an unreadable value, enough to find it: a JSON column can
/// hold a whole message's worth of text.
fn excerpt(mut value: String) -> String {
    const MAX: usize = 120;
    if value.len() > MAX {
        let mut end = MAX;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value.truncate(end);
        value.push('…');
    }
    value
}

/// Runs `sql` and maps every row.
fn rows<T>(
    c: &mut impl Query,
    sql: &str,
    params: &Params<'_>,
    map: impl Fn(&Row) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    c.query(sql, params)?.iter().map(map).collect()
}

/// Runs `sql` and maps the row it finds, if any.
fn row<T>(
    c: &mut impl Query,
    sql: &str,
    params: &Params<'_>,
    map: impl Fn(&Row) -> StoreResult<T>,
) -> StoreResult<Option<T>> {
    c.query_opt(sql, params)?.as_ref().map(map).transpose()
}

/// A count as `u64`.
fn count(c: &mut impl Query, sql: &str, params: &Params<'_>) -> StoreResult<u64> {
    let n: i64 = get(&c.query_one(sql, params)?, 0)?;
    Ok(n.max(0) as u64)
}

// --- tenants and keys ---

pub(crate) const TENANT_COLUMNS: &str =
    "id, name, created_at, campaign_dedupe, track_opens, track_clicks";

pub(crate) fn tenant_row(r: &Row, at: usize) -> StoreResult<Tenant> {
    Ok(Tenant {
        id: TenantId::from_stored(get(r, at)?),
        name: get(r, at + 1)?,
        created_at: get(r, at + 2)?,
        campaign_dedupe: get(r, at + 3)?,
        track_opens: get(r, at + 4)?,
        track_clicks: get(r, at + 5)?,
    })
}

pub(crate) fn tenant_by_name(c: &mut impl Query, name: &str) -> StoreResult<Option<Tenant>> {
    let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE name = $1");
    row(c, &sql, &[&name], |r| tenant_row(r, 0))
}

pub(crate) fn tenant_by_id(c: &mut impl Query, id: &TenantId) -> StoreResult<Option<Tenant>> {
    let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1");
    row(c, &sql, &[&id.as_str()], |r| tenant_row(r, 0))
}

pub(crate) fn tenant_count(c: &mut impl Query) -> StoreResult<u64> {
    count(c, "SELECT COUNT(*) FROM tenants", &[])
}

const KEY_COLUMNS: &str =
    "k.id, k.tenant_id, k.name, k.scopes, k.secret_hash, k.created_at, k.revoked_at";

fn api_key_row(r: &Row) -> StoreResult<ApiKeyRecord> {
    let scopes: String = get(r, 3)?;
    Ok(ApiKeyRecord {
        id: ApiKeyId::from_stored(get(r, 0)?),
        tenant_id: TenantId::from_stored(get(r, 1)?),
        name: get(r, 2)?,
        // An unknown scope grants nothing (as on SQLite): dropping it can
        // only take a permission away.
        scopes: scopes.split(',').filter_map(Scope::parse).collect(),
        secret_hash: get(r, 4)?,
        created_at: get(r, 5)?,
        revoked_at: get(r, 6)?,
    })
}

pub(crate) fn api_key_with_tenant(
    c: &mut impl Query,
    id: &ApiKeyId,
) -> StoreResult<Option<(ApiKeyRecord, Tenant)>> {
    let sql = format!(
        "SELECT {KEY_COLUMNS}, t.id, t.name, t.created_at, t.campaign_dedupe, t.track_opens, t.track_clicks
         FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.id = $1"
    );
    row(c, &sql, &[&id.as_str()], |r| {
        Ok((api_key_row(r)?, tenant_row(r, 7)?))
    })
}

pub(crate) fn api_keys(
    c: &mut impl Query,
    tenant: Option<&TenantId>,
) -> StoreResult<Vec<ApiKeyRecord>> {
    match tenant {
        Some(t) => {
            let sql = format!(
                "SELECT {KEY_COLUMNS} FROM api_keys k WHERE k.tenant_id = $1 ORDER BY k.created_at, k.id"
            );
            rows(c, &sql, &[&t.as_str()], api_key_row)
        }
        None => {
            let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys k ORDER BY k.created_at, k.id");
            rows(c, &sql, &[], api_key_row)
        }
    }
}

// --- deliveries and messages ---

pub(crate) const DELIVERY_COLUMNS: &str = "id, tenant_id, message_id, recipient, recipient_kind, sender, stream, campaign, test, \
     created_at, window_ends_at, delivery_status, bounce_type, delivery_event_id, delivery_occurred_at, \
     engagement_status, engagement_event_id, engagement_occurred_at, updated_at, seen";

pub(crate) fn delivery_row(r: &Row) -> StoreResult<DeliveryRecord> {
    const TABLE: &str = "deliveries";
    let bounce_type = decode_optional(r, 12, TABLE, "bounce_type", BounceType::parse)?;
    let delivery_status = decode_optional(r, 11, TABLE, "delivery_status", |s| {
        DeliveryStatus::from_parts(s, bounce_type.map(BounceType::as_str))
    })?;
    let engagement_status =
        decode_optional(r, 15, TABLE, "engagement_status", EngagementStatus::parse)?
            .unwrap_or(EngagementStatus::None);
    Ok(DeliveryRecord {
        id: DeliveryId::from_stored(get(r, 0)?),
        tenant_id: TenantId::from_stored(get(r, 1)?),
        message_id: MessageId::from_stored(get(r, 2)?),
        recipient: get(r, 3)?,
        recipient_kind: decode(r, 4, TABLE, "recipient_kind", RecipientKind::parse)?,
        sender: get(r, 5)?,
        stream: get(r, 6)?,
        campaign: get(r, 7)?,
        test: get(r, 8)?,
        created_at: get(r, 9)?,
        window_ends_at: get(r, 10)?,
        delivery_status,
        delivery_event_id: get::<Option<String>>(r, 13)?.map(EventId::from_stored),
        delivery_occurred_at: get(r, 14)?,
        engagement_status,
        engagement_event_id: get::<Option<String>>(r, 16)?.map(EventId::from_stored),
        engagement_occurred_at: get(r, 17)?,
        updated_at: get(r, 18)?,
        seen: posthorn_core::stats::Seen::from_bits(get(r, 19)?),
    })
}

pub(crate) fn delivery(
    c: &mut impl Query,
    tenant: &TenantId,
    id: &DeliveryId,
) -> StoreResult<Option<DeliveryRecord>> {
    let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1 AND tenant_id = $2");
    row(c, &sql, &[&id.as_str(), &tenant.as_str()], delivery_row)
}

pub(crate) fn deliveries_of_message(
    c: &mut impl Query,
    tenant: &TenantId,
    id: &MessageId,
) -> StoreResult<Vec<DeliveryRecord>> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE message_id = $1 AND tenant_id = $2 ORDER BY id"
    );
    rows(c, &sql, &[&id.as_str(), &tenant.as_str()], delivery_row)
}

const MESSAGE_COLUMNS: &str = "id, tenant_id, from_header, from_address, reply_to, subject, text_body, html_body, \
     headers, tags, metadata, stream, campaign, test, send_at, expires_at, tracking_opens, tracking_clicks, size, \
     source, created_at, to_header, cc_header, raw_mime";

fn message_row(r: &Row) -> StoreResult<MessageRecord> {
    const TABLE: &str = "messages";
    Ok(MessageRecord {
        id: MessageId::from_stored(get(r, 0)?),
        tenant_id: TenantId::from_stored(get(r, 1)?),
        from_address: get(r, 3)?,
        content: MessageContent {
            from: get(r, 2)?,
            reply_to: get(r, 4)?,
            to: mailbox_list(r, 21, "to_header")?,
            cc: mailbox_list(r, 22, "cc_header")?,
            subject: get(r, 5)?,
            text: get(r, 6)?,
            html: get(r, 7)?,
            headers: json(r, 8, TABLE, "headers")?,
            tags: json(r, 9, TABLE, "tags")?,
            metadata: json(r, 10, TABLE, "metadata")?,
            raw_mime: get(r, 23)?,
        },
        stream: get(r, 11)?,
        campaign: get(r, 12)?,
        test: get(r, 13)?,
        send_at: get(r, 14)?,
        expires_at: get(r, 15)?,
        tracking_opens: get(r, 16)?,
        tracking_clicks: get(r, 17)?,
        size: size(r, 18, TABLE)?,
        source: decode(r, 19, TABLE, "source", |s| s.parse().ok())?,
        created_at: get(r, 20)?,
    })
}

/// A stored To or Cc list: NULL when there were none, else an array of
/// `{"name", "address"}`; anything else (an address that is not one
/// included) fails the read.
fn mailbox_list(
    r: &Row,
    at: usize,
    column: &'static str,
) -> StoreResult<Vec<posthorn_core::address::Mailbox>> {
    match get::<Option<serde_json::Value>>(r, at)? {
        None => Ok(Vec::new()),
        Some(value) => from_json(value, "messages", column),
    }
}

pub(crate) fn message(
    c: &mut impl Query,
    tenant: &TenantId,
    id: &MessageId,
) -> StoreResult<Option<MessageRecord>> {
    let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = $1 AND tenant_id = $2");
    row(c, &sql, &[&id.as_str(), &tenant.as_str()], message_row)
}

/// Rows of `table` by key, one lookup per key: `keys` (an array parameter,
/// already in the order rows are to be locked in) joined to a subquery that
/// finds one row by `key_column` (and `scope`, a condition on the row, such
/// as its tenant) with `suffix` (`FOR UPDATE`, or nothing).
///
/// Written so because a plain join, or `key = ANY($1)`, lets the planner
/// pick the tenant's index and a hash join when the tenant looks small: on
/// a young database (no statistics yet) every tenant does, and a batch of
/// 300 deliveries read every delivery of its tenant (10-60 ms per batch at
/// 20,000 deliveries, growing with the table). `LIMIT 1` keeps the subquery
/// from being merged into a join, so each key is a primary-key lookup.
fn by_keys_sql(table: &str, columns: &str, key_column: &str, scope: &str, suffix: &str) -> String {
    format!(
        "SELECT found.* FROM unnest($1::text[]) AS wanted(key) CROSS JOIN LATERAL \
         (SELECT {columns} FROM {table} WHERE {key_column} = wanted.key AND {scope} LIMIT 1 {suffix}) AS found"
    )
}

/// Several messages of `tenant`, those that exist.
pub(crate) fn messages(
    c: &mut impl Query,
    tenant: &TenantId,
    ids: &[MessageId],
) -> StoreResult<Vec<MessageRecord>> {
    let ids: Vec<&str> = ids.iter().map(MessageId::as_str).collect();
    let sql = by_keys_sql("messages", MESSAGE_COLUMNS, "id", "tenant_id = $2", "");
    rows(c, &sql, &[&ids, &tenant.as_str()], message_row)
}

/// Several deliveries of `tenant`, those that exist; `lock` locks them
/// (`FOR UPDATE`) in the order of their ids.
pub(crate) fn deliveries(
    c: &mut impl Query,
    tenant: &TenantId,
    ids: &[DeliveryId],
    lock: bool,
) -> StoreResult<Vec<DeliveryRecord>> {
    let mut ids: Vec<&str> = ids.iter().map(DeliveryId::as_str).collect();
    ids.sort_unstable();
    ids.dedup();
    let suffix = if lock { "FOR UPDATE" } else { "" };
    let sql = by_keys_sql(
        "deliveries",
        DELIVERY_COLUMNS,
        "id",
        "tenant_id = $2",
        suffix,
    );
    rows(c, &sql, &[&ids, &tenant.as_str()], delivery_row)
}

/// The contacts of `tenant` among `addresses` that exist, locked in the
/// order of their addresses.
pub(crate) fn lock_contacts(
    c: &mut impl Query,
    tenant: &TenantId,
    addresses: &[&str],
) -> StoreResult<Vec<ContactRecord>> {
    let mut addresses = addresses.to_vec();
    addresses.sort_unstable();
    addresses.dedup();
    let sql = by_keys_sql(
        "contacts",
        CONTACT_COLUMNS,
        "address",
        "tenant_id = $2",
        "FOR UPDATE",
    );
    rows(c, &sql, &[&addresses, &tenant.as_str()], contact_row)
}

// --- events ---

pub(crate) const EVENT_COLUMNS: &str = "id, delivery_id, message_id, recipient, sender, kind, occurred_at, recorded_at, \
     source, details, external_id, anomaly, outside_window, seq";

pub(crate) fn event_row(r: &Row) -> StoreResult<EventRecord> {
    const TABLE: &str = "events";
    let kind = decode(r, 5, TABLE, "kind", |s| s.parse().ok())?;
    // The details of the row's kind, as `EventDetails::to_json` wrote
    // them: anything else is not an event this version knows.
    let details: serde_json::Value = get(r, 9)?;
    let details = match EventDetails::from_json(kind, details.clone()) {
        Ok(d) => d,
        Err(_) => return Err(corrupt(TABLE, "details", details.to_string())),
    };
    Ok(EventRecord {
        id: EventId::from_stored(get(r, 0)?),
        delivery_id: DeliveryId::from_stored(get(r, 1)?),
        message_id: MessageId::from_stored(get(r, 2)?),
        recipient: get(r, 3)?,
        sender: get(r, 4)?,
        occurred_at: get(r, 6)?,
        recorded_at: get(r, 7)?,
        source: decode(r, 8, TABLE, "source", |s| s.parse().ok())?,
        details,
        external_id: get(r, 10)?,
        anomaly: get(r, 11)?,
        outside_window: get(r, 12)?,
        seq: get(r, 13)?,
    })
}

pub(crate) fn event_by_id(
    c: &mut impl Query,
    tenant: &TenantId,
    id: &EventId,
) -> StoreResult<Option<EventRecord>> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1 AND tenant_id = $2");
    row(c, &sql, &[&id.as_str(), &tenant.as_str()], event_row)
}

pub(crate) fn event_by_external_id(
    c: &mut impl Query,
    tenant: &TenantId,
    external_id: &str,
) -> StoreResult<Option<EventRecord>> {
    let sql =
        format!("SELECT {EVENT_COLUMNS} FROM events WHERE tenant_id = $1 AND external_id = $2");
    row(c, &sql, &[&tenant.as_str(), &external_id], event_row)
}

/// Every tenant's events after position `after`, below the settled bound,
/// in position order: what the commit stream publishes (`tail`).
pub(crate) fn settled_events_after(
    c: &mut impl Query,
    after: i64,
    limit: i64,
) -> StoreResult<Vec<EventRecord>> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE seq > $1 AND seq < {} ORDER BY seq LIMIT $2",
        settled_bound_sql()
    );
    rows(c, &sql, &[&after, &limit], event_row)
}

/// The position of the last settled event (0 when there is none).
pub(crate) fn settled_end(c: &mut impl Query) -> StoreResult<i64> {
    let sql = format!(
        "SELECT COALESCE(MAX(seq), 0)::bigint FROM events WHERE seq < {}",
        settled_bound_sql()
    );
    Ok(c.query_one(&sql, &[])?.try_get(0)?)
}

/// Opens and clicks of a message's deliveries, in no particular order.
pub(crate) fn message_engagement_events(
    c: &mut impl Query,
    tenant: &TenantId,
    message: &MessageId,
) -> StoreResult<Vec<EventRecord>> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE delivery_id IN \
         (SELECT id FROM deliveries WHERE message_id = $1 AND tenant_id = $2) \
         AND kind IN ('opened', 'clicked')"
    );
    rows(c, &sql, &[&message.as_str(), &tenant.as_str()], event_row)
}

/// At most `limit` events of one delivery after `after`, oldest first.
pub(crate) fn delivery_events_page(
    c: &mut impl Query,
    tenant: &TenantId,
    delivery: &DeliveryId,
    after: Option<&EventId>,
    limit: u32,
) -> StoreResult<Vec<EventRecord>> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE delivery_id = $1 AND tenant_id = $2 \
         AND id > $3 ORDER BY id LIMIT $4"
    );
    let after = after.map_or("", |a| a.as_str());
    rows(
        c,
        &sql,
        &[
            &delivery.as_str(),
            &tenant.as_str(),
            &after,
            &i64::from(limit),
        ],
        event_row,
    )
}

/// The opens and clicks of one delivery, oldest first.
pub(crate) fn delivery_engagement_events(
    c: &mut impl Query,
    tenant: &TenantId,
    delivery: &DeliveryId,
) -> StoreResult<Vec<EventRecord>> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE delivery_id = $1 AND tenant_id = $2 \
         AND kind IN ('opened', 'clicked') ORDER BY id"
    );
    rows(c, &sql, &[&delivery.as_str(), &tenant.as_str()], event_row)
}

/// Events of one delivery, oldest first.
pub(crate) fn delivery_events(
    c: &mut impl Query,
    tenant: &TenantId,
    delivery: &DeliveryId,
) -> StoreResult<Vec<EventRecord>> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE delivery_id = $1 AND tenant_id = $2 ORDER BY id"
    );
    rows(c, &sql, &[&delivery.as_str(), &tenant.as_str()], event_row)
}

// --- contacts and suppressions ---

/// The columns [`contact_row`] reads.
pub(crate) const CONTACT_COLUMNS: &str = "address, status, unsubscribed_streams, \
     consecutive_failed_deliveries, consecutive_failed_attempts, created_at, updated_at";

pub(crate) fn contact_row(r: &Row) -> StoreResult<ContactRecord> {
    const TABLE: &str = "contacts";
    Ok(ContactRecord {
        address: get(r, 0)?,
        state: ContactState {
            status: decode(r, 1, TABLE, "status", ContactStatus::parse)?,
            unsubscribed_streams: json(r, 2, TABLE, "unsubscribed_streams")?,
            consecutive_failed_deliveries: counter(r, 3, TABLE, "consecutive_failed_deliveries")?,
            consecutive_failed_attempts: counter(r, 4, TABLE, "consecutive_failed_attempts")?,
        },
        created_at: get(r, 5)?,
        updated_at: get(r, 6)?,
    })
}

pub(crate) fn contact(
    c: &mut impl Query,
    tenant: &TenantId,
    address: &str,
) -> StoreResult<Option<ContactRecord>> {
    let sql =
        format!("SELECT {CONTACT_COLUMNS} FROM contacts WHERE tenant_id = $1 AND address = $2");
    row(c, &sql, &[&tenant.as_str(), &address], contact_row)
}

pub(crate) fn contact_changes(
    c: &mut impl Query,
    tenant: &TenantId,
    address: &str,
) -> StoreResult<Vec<ContactChange>> {
    const TABLE: &str = "contact_changes";
    let sql = "SELECT from_status, to_status, reason, cause_event_id, at FROM contact_changes \
               WHERE tenant_id = $1 AND address = $2 ORDER BY id";
    rows(c, sql, &[&tenant.as_str(), &address], |r| {
        Ok(ContactChange {
            from: decode(r, 0, TABLE, "from_status", ContactStatus::parse)?,
            to: decode(r, 1, TABLE, "to_status", ContactStatus::parse)?,
            reason: get(r, 2)?,
            cause_event_id: get::<Option<String>>(r, 3)?.map(EventId::from_stored),
            at: get(r, 4)?,
        })
    })
}

const SUPPRESSION_COLUMNS: &str =
    "id, target, stream, reason, cause_event_id, created_at, expires_at";

fn suppression_row(r: &Row) -> StoreResult<SuppressionEntry> {
    Ok(SuppressionEntry {
        id: get(r, 0)?,
        target: get(r, 1)?,
        scope: SuppressionScope::from_stream(get(r, 2)?),
        reason: decode(r, 3, "suppressions", "reason", SuppressionReason::parse)?,
        cause_event_id: get::<Option<String>>(r, 4)?.map(EventId::from_stored),
        created_at: get(r, 5)?,
        expires_at: get(r, 6)?,
    })
}

/// Active entries whose target is the address or its domain (any scope).
pub(crate) fn suppressions_for(
    c: &mut impl Query,
    tenant: &TenantId,
    address: &str,
    now: Millis,
) -> StoreResult<Vec<SuppressionEntry>> {
    let [addr, domain] = posthorn_core::suppression::lookup_targets(address);
    let sql = format!(
        "SELECT {SUPPRESSION_COLUMNS} FROM suppressions WHERE tenant_id = $1 AND target IN ($2, $3) \
         AND removed_at IS NULL AND (expires_at IS NULL OR expires_at > $4) ORDER BY id"
    );
    rows(
        c,
        &sql,
        &[&tenant.as_str(), &addr, &domain, &now],
        suppression_row,
    )
}

/// The entries not removed for any of `targets` (addresses and
/// `@domain`s), whatever their expiry.
pub(crate) fn suppressions_of_targets(
    c: &mut impl Query,
    tenant: &TenantId,
    targets: &[String],
) -> StoreResult<Vec<SuppressionEntry>> {
    let sql = format!(
        "SELECT {SUPPRESSION_COLUMNS} FROM suppressions WHERE tenant_id = $1 AND target = ANY($2) \
         AND removed_at IS NULL"
    );
    rows(c, &sql, &[&tenant.as_str(), &targets], suppression_row)
}

/// Active (unexpired, not removed) entries, newest first.
pub(crate) fn suppressions(
    c: &mut impl Query,
    tenant: &TenantId,
    now: Millis,
) -> StoreResult<Vec<SuppressionEntry>> {
    let sql = format!(
        "SELECT {SUPPRESSION_COLUMNS} FROM suppressions WHERE tenant_id = $1 AND removed_at IS NULL \
         AND (expires_at IS NULL OR expires_at > $2) ORDER BY id DESC"
    );
    rows(c, &sql, &[&tenant.as_str(), &now], suppression_row)
}

/// Entries in the send queue of a tenant.
pub(crate) fn queue_len(c: &mut impl Query, tenant: &TenantId) -> StoreResult<u64> {
    count(
        c,
        "SELECT COUNT(*) FROM send_queue WHERE tenant_id = $1",
        &[&tenant.as_str()],
    )
}

/// Runs a statement of `crate::search` and maps its rows.
pub(crate) fn search<T>(
    c: &mut impl Query,
    sql: &crate::search::Sql,
    map: impl Fn(&Row) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    use crate::search::SqlValue;
    let params: Vec<&(dyn ToSql + Sync)> = sql
        .values
        .iter()
        .map(|v| match v {
            SqlValue::Text(t) => t as &(dyn ToSql + Sync),
            SqlValue::Int(i) => i as &(dyn ToSql + Sync),
        })
        .collect();
    rows(c, &sql.text, &params, map)
}

/// A row of `crate::search::stats_counts`.
pub(crate) fn stats_count_row(r: &Row) -> StoreResult<StatsCount> {
    Ok(StatsCount {
        group: get(r, 0)?,
        metric: decode(
            r,
            1,
            "delivery_stats",
            "metric",
            posthorn_core::stats::Metric::parse,
        )?,
        reason: get(r, 2)?,
        deliveries: get(r, 3)?,
    })
}

/// A row of `crate::search::delivery_counts`.
pub(crate) fn status_count_row(r: &Row) -> StoreResult<StatusCount> {
    const TABLE: &str = "deliveries";
    let bounce_type = decode_optional(r, 1, TABLE, "bounce_type", BounceType::parse)?;
    let delivery_status = decode_optional(r, 0, TABLE, "delivery_status", |s| {
        DeliveryStatus::from_parts(s, bounce_type.map(BounceType::as_str))
    })?;
    let engagement_status =
        decode_optional(r, 2, TABLE, "engagement_status", EngagementStatus::parse)?
            .unwrap_or(EngagementStatus::None);
    Ok(StatusCount {
        delivery_status,
        engagement_status,
        deliveries: get::<i64>(r, 3)?.max(0) as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_unreadable_values_are_named_by_their_start() {
        let e = corrupt("events", "details", "é".repeat(100));
        let StoreError::Corrupt { value, .. } = e else {
            unreachable!()
        };
        assert!(value.ends_with('…'));
        assert!(value.len() <= 120 + '…'.len_utf8());
    }
}
