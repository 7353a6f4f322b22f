//! Reads: the SELECT statements and the mapping of their rows to records
//! (failing with [`crate::StoreError::Corrupt`] on a value this version
//! cannot read). Used by the read pool and, inside transactions, by the
//! writer.

use super::error::Undecodable;
use super::prepare;
use crate::StoreResult;
use crate::records::*;
use posthorn_core::contact::{ContactState, ContactStatus};
use posthorn_core::event::EventDetails;
use posthorn_core::id::ApiKeyId;
use posthorn_core::status::{DeliveryStatus, EngagementStatus};
use posthorn_core::suppression::{SuppressionEntry, SuppressionReason, SuppressionScope};
use posthorn_core::{DeliveryId, EventId, EventKind, MessageId, Millis, TenantId};
use rusqlite::{Connection, OptionalExtension, Row, ToSql};

/// Decodes the text in column `at` with `parse`, or fails naming the
/// table, column and value (read as [`crate::StoreError::Corrupt`]).
pub(crate) fn decode<T>(
    r: &Row<'_>,
    at: usize,
    table: &'static str,
    column: &'static str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> rusqlite::Result<T> {
    decode_text(r.get(at)?, at, table, column, parse)
}

/// [`decode`] for a nullable column: NULL is `None`.
pub(crate) fn decode_optional<T>(
    r: &Row<'_>,
    at: usize,
    table: &'static str,
    column: &'static str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> rusqlite::Result<Option<T>> {
    r.get::<_, Option<String>>(at)?
        .map(|value| decode_text(value, at, table, column, parse))
        .transpose()
}

/// [`decode`] for a value already read (a nullable column, once not null).
fn decode_text<T>(
    value: String,
    at: usize,
    table: &'static str,
    column: &'static str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> rusqlite::Result<T> {
    parse(&value).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            at,
            rusqlite::types::Type::Text,
            Box::new(Undecodable {
                table,
                column,
                value: excerpt(value),
            }),
        )
    })
}

/// Decodes the JSON in column `at` as a `T`, or fails as [`decode`] does:
/// never a default in place of what cannot be read.
pub(crate) fn json<T: serde::de::DeserializeOwned>(
    r: &Row<'_>,
    at: usize,
    table: &'static str,
    column: &'static str,
) -> rusqlite::Result<T> {
    decode(r, at, table, column, |s| serde_json::from_str(s).ok())
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

pub(crate) const TENANT_COLUMNS: &str =
    "id, name, created_at, campaign_dedupe, track_opens, track_clicks";

pub(crate) fn tenant_row(r: &Row<'_>, at: usize) -> rusqlite::Result<Tenant> {
    Ok(Tenant {
        id: TenantId::from_stored(r.get(at)?),
        name: r.get(at + 1)?,
        created_at: r.get(at + 2)?,
        campaign_dedupe: r.get(at + 3)?,
        track_opens: r.get(at + 4)?,
        track_clicks: r.get(at + 5)?,
    })
}

pub(crate) fn tenant_by_name(c: &Connection, name: &str) -> StoreResult<Option<Tenant>> {
    let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE name = $1");
    Ok(prepare(c, &sql)?
        .query_row([name], |r| tenant_row(r, 0))
        .optional()?)
}

pub(crate) fn tenant_by_id(c: &Connection, id: &TenantId) -> StoreResult<Option<Tenant>> {
    let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1");
    Ok(prepare(c, &sql)?
        .query_row([id.as_str()], |r| tenant_row(r, 0))
        .optional()?)
}

const KEY_COLUMNS: &str =
    "k.id, k.tenant_id, k.name, k.scopes, k.secret_hash, k.created_at, k.revoked_at";

fn api_key_row(r: &Row<'_>) -> rusqlite::Result<ApiKeyRecord> {
    let scopes: String = r.get(3)?;
    Ok(ApiKeyRecord {
        id: ApiKeyId::from_stored(r.get(0)?),
        tenant_id: TenantId::from_stored(r.get(1)?),
        name: r.get(2)?,
        scopes: scopes.split(',').filter_map(Scope::parse).collect(),
        secret_hash: r.get(4)?,
        created_at: r.get(5)?,
        revoked_at: r.get(6)?,
    })
}

pub(crate) fn api_key_with_tenant(
    c: &Connection,
    id: &ApiKeyId,
) -> StoreResult<Option<(ApiKeyRecord, Tenant)>> {
    let sql = format!(
        "SELECT {KEY_COLUMNS}, t.id, t.name, t.created_at, t.campaign_dedupe, t.track_opens, t.track_clicks
         FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.id = $1"
    );
    Ok(prepare(c, &sql)?
        .query_row([id.as_str()], |r| Ok((api_key_row(r)?, tenant_row(r, 7)?)))
        .optional()?)
}

pub(crate) fn api_keys(
    c: &Connection,
    tenant: Option<&TenantId>,
) -> StoreResult<Vec<ApiKeyRecord>> {
    let sql = format!(
        "SELECT {KEY_COLUMNS} FROM api_keys k WHERE ($1 IS NULL OR k.tenant_id = $1) ORDER BY k.created_at, k.id"
    );
    let mut stmt = prepare(c, &sql)?;
    let rows = stmt.query_map([tenant.map(|t| t.as_str())], api_key_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) const DELIVERY_COLUMNS: &str = "id, tenant_id, message_id, recipient, recipient_kind, sender, stream, campaign, test, \
     created_at, window_ends_at, delivery_status, bounce_type, delivery_event_id, delivery_occurred_at, \
     engagement_status, engagement_event_id, engagement_occurred_at, updated_at, seen";

pub(crate) fn delivery_row(r: &Row<'_>) -> rusqlite::Result<DeliveryRecord> {
    let status: Option<String> = r.get(11)?;
    let bounce_type: Option<String> = r.get(12)?;
    let engagement = match r.get::<_, Option<String>>(15)? {
        None => EngagementStatus::None,
        Some(value) => decode_text(
            value,
            15,
            "deliveries",
            "engagement_status",
            EngagementStatus::parse,
        )?,
    };
    Ok(DeliveryRecord {
        id: DeliveryId::from_stored(r.get(0)?),
        tenant_id: TenantId::from_stored(r.get(1)?),
        message_id: MessageId::from_stored(r.get(2)?),
        recipient: r.get(3)?,
        recipient_kind: decode(r, 4, "deliveries", "recipient_kind", RecipientKind::parse)?,
        sender: r.get(5)?,
        stream: r.get(6)?,
        campaign: r.get(7)?,
        test: r.get(8)?,
        created_at: r.get(9)?,
        window_ends_at: r.get(10)?,
        delivery_status: status
            .and_then(|s| DeliveryStatus::from_parts(&s, bounce_type.as_deref())),
        delivery_event_id: r.get::<_, Option<String>>(13)?.map(EventId::from_stored),
        delivery_occurred_at: r.get(14)?,
        engagement_status: engagement,
        engagement_event_id: r.get::<_, Option<String>>(16)?.map(EventId::from_stored),
        engagement_occurred_at: r.get(17)?,
        updated_at: r.get(18)?,
        seen: posthorn_core::stats::Seen::from_bits(r.get(19)?),
    })
}

pub(crate) fn delivery(
    c: &Connection,
    tenant: &TenantId,
    id: &DeliveryId,
) -> StoreResult<Option<DeliveryRecord>> {
    let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1 AND tenant_id = $2");
    Ok(prepare(c, &sql)?
        .query_row([id.as_str(), tenant.as_str()], delivery_row)
        .optional()?)
}

pub(crate) fn deliveries_of_message(
    c: &Connection,
    tenant: &TenantId,
    id: &MessageId,
) -> StoreResult<Vec<DeliveryRecord>> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE message_id = $1 AND tenant_id = $2 ORDER BY id"
    );
    let mut stmt = prepare(c, &sql)?;
    let rows = stmt.query_map([id.as_str(), tenant.as_str()], delivery_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

const MESSAGE_COLUMNS: &str = "id, tenant_id, from_header, from_address, reply_to, subject, text_body, html_body, \
     headers, tags, metadata, stream, campaign, test, send_at, expires_at, tracking_opens, tracking_clicks, size, \
     source, created_at, to_header, cc_header, raw_mime";

fn message_row(r: &Row<'_>) -> rusqlite::Result<MessageRecord> {
    Ok(MessageRecord {
        id: MessageId::from_stored(r.get(0)?),
        tenant_id: TenantId::from_stored(r.get(1)?),
        from_address: r.get(3)?,
        content: MessageContent {
            from: r.get(2)?,
            reply_to: r.get(4)?,
            to: mailbox_list(r, 21, "to_header")?,
            cc: mailbox_list(r, 22, "cc_header")?,
            subject: r.get(5)?,
            text: r.get(6)?,
            html: r.get(7)?,
            headers: json(r, 8, "messages", "headers")?,
            tags: json(r, 9, "messages", "tags")?,
            metadata: json(r, 10, "messages", "metadata")?,
            raw_mime: r.get(23)?,
        },
        stream: r.get(11)?,
        campaign: r.get(12)?,
        test: r.get(13)?,
        send_at: r.get(14)?,
        expires_at: r.get(15)?,
        tracking_opens: r.get(16)?,
        tracking_clicks: r.get(17)?,
        size: r.get::<_, i64>(18)? as u64,
        source: decode(r, 19, "messages", "source", |s| s.parse().ok())?,
        created_at: r.get(20)?,
    })
}

/// A stored To or Cc list: NULL when there were none, else the JSON array of
/// `{"name", "address"}` the server has written since the column was added.
/// Anything else (an address that is not one included) fails the read.
fn mailbox_list(
    r: &Row<'_>,
    at: usize,
    column: &'static str,
) -> rusqlite::Result<Vec<posthorn_core::address::Mailbox>> {
    match r.get::<_, Option<String>>(at)? {
        None => Ok(Vec::new()),
        Some(text) => decode_text(text, at, "messages", column, |t| {
            serde_json::from_str(t).ok()
        }),
    }
}

pub(crate) fn message(
    c: &Connection,
    tenant: &TenantId,
    id: &MessageId,
) -> StoreResult<Option<MessageRecord>> {
    let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = $1 AND tenant_id = $2");
    Ok(prepare(c, &sql)?
        .query_row([id.as_str(), tenant.as_str()], message_row)
        .optional()?)
}

pub(crate) const EVENT_COLUMNS: &str = "id, delivery_id, message_id, recipient, sender, kind, occurred_at, recorded_at, \
     source, details, external_id, anomaly, outside_window, seq";

pub(crate) fn event_row(r: &Row<'_>) -> rusqlite::Result<EventRecord> {
    let kind: EventKind = decode(r, 5, "events", "kind", |s| s.parse().ok())?;
    Ok(EventRecord {
        id: EventId::from_stored(r.get(0)?),
        delivery_id: DeliveryId::from_stored(r.get(1)?),
        message_id: MessageId::from_stored(r.get(2)?),
        recipient: r.get(3)?,
        sender: r.get(4)?,
        occurred_at: r.get(6)?,
        recorded_at: r.get(7)?,
        source: decode(r, 8, "events", "source", |s| s.parse().ok())?,
        // The details of the row's kind, as `EventDetails::to_json` wrote
        // them: anything else is not an event this version knows.
        details: decode(r, 9, "events", "details", |s| {
            EventDetails::from_json(kind, serde_json::from_str(s).ok()?).ok()
        })?,
        external_id: r.get(10)?,
        anomaly: r.get(11)?,
        outside_window: r.get(12)?,
        seq: r.get(13)?,
    })
}

pub(crate) fn event_by_id(
    c: &Connection,
    tenant: &TenantId,
    id: &EventId,
) -> StoreResult<Option<EventRecord>> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1 AND tenant_id = $2");
    Ok(prepare(c, &sql)?
        .query_row([id.as_str(), tenant.as_str()], event_row)
        .optional()?)
}

pub(crate) fn event_by_external_id(
    c: &Connection,
    tenant: &TenantId,
    external_id: &str,
) -> StoreResult<Option<EventRecord>> {
    let sql =
        format!("SELECT {EVENT_COLUMNS} FROM events WHERE tenant_id = $1 AND external_id = $2");
    Ok(prepare(c, &sql)?
        .query_row([tenant.as_str(), external_id], event_row)
        .optional()?)
}

/// `+tenant_id`: the tenant check must not use an index. Left to itself
/// (no statistics) SQLite picks (tenant_id, id) for the ORDER BY and walks
/// every event of the tenant; (delivery_id, id) finds the few of this
/// delivery, already in order.
fn delivery_events_sql() -> String {
    format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE delivery_id = $1 AND +tenant_id = $2 ORDER BY id"
    )
}

/// Opens and clicks of a message's deliveries, each delivery's found by its
/// own index.
pub(crate) fn message_engagement_events(
    c: &Connection,
    tenant: &TenantId,
    message: &MessageId,
) -> StoreResult<Vec<EventRecord>> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE delivery_id IN \
         (SELECT id FROM deliveries WHERE message_id = $1 AND tenant_id = $2) \
         AND kind IN ('opened', 'clicked')"
    );
    let mut stmt = prepare(c, &sql)?;
    let rows = stmt.query_map([message.as_str(), tenant.as_str()], event_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// At most `limit` events of one delivery after `after`, oldest first
/// (its index is `(delivery_id, id)`, so a page starts where the last one
/// ended instead of skipping over it).
pub(crate) fn delivery_events_page(
    c: &Connection,
    tenant: &TenantId,
    delivery: &DeliveryId,
    after: Option<&EventId>,
    limit: u32,
) -> StoreResult<Vec<EventRecord>> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE delivery_id = $1 AND +tenant_id = $2 \
         AND id > $3 ORDER BY id LIMIT $4"
    );
    let mut stmt = prepare(c, &sql)?;
    let rows = stmt.query_map(
        rusqlite::params![
            delivery.as_str(),
            tenant.as_str(),
            after.map_or("", |a| a.as_str()),
            limit
        ],
        event_row,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The opens and clicks of one delivery, oldest first.
pub(crate) fn delivery_engagement_events(
    c: &Connection,
    tenant: &TenantId,
    delivery: &DeliveryId,
) -> StoreResult<Vec<EventRecord>> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE delivery_id = $1 AND +tenant_id = $2 \
         AND kind IN ('opened', 'clicked') ORDER BY id"
    );
    let mut stmt = prepare(c, &sql)?;
    let rows = stmt.query_map([delivery.as_str(), tenant.as_str()], event_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Events of one delivery, oldest first.
pub(crate) fn delivery_events(
    c: &Connection,
    tenant: &TenantId,
    delivery: &DeliveryId,
) -> StoreResult<Vec<EventRecord>> {
    let mut stmt = prepare(c, &delivery_events_sql())?;
    let rows = stmt.query_map([delivery.as_str(), tenant.as_str()], event_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) fn contact(
    c: &Connection,
    tenant: &TenantId,
    address: &str,
) -> StoreResult<Option<ContactRecord>> {
    let sql = "SELECT address, status, unsubscribed_streams, consecutive_failed_deliveries, \
               consecutive_failed_attempts, created_at, updated_at FROM contacts WHERE tenant_id = $1 AND address = $2";
    Ok(prepare(c, sql)?
        .query_row([tenant.as_str(), address], |r| {
            Ok(ContactRecord {
                address: r.get(0)?,
                state: ContactState {
                    status: decode(r, 1, "contacts", "status", ContactStatus::parse)?,
                    unsubscribed_streams: json(r, 2, "contacts", "unsubscribed_streams")?,
                    consecutive_failed_deliveries: r.get(3)?,
                    consecutive_failed_attempts: r.get(4)?,
                },
                created_at: r.get(5)?,
                updated_at: r.get(6)?,
            })
        })
        .optional()?)
}

pub(crate) fn contact_changes(
    c: &Connection,
    tenant: &TenantId,
    address: &str,
) -> StoreResult<Vec<ContactChange>> {
    let sql = "SELECT from_status, to_status, reason, cause_event_id, at FROM contact_changes \
               WHERE tenant_id = $1 AND address = $2 ORDER BY id";
    let mut stmt = prepare(c, sql)?;
    let rows = stmt.query_map([tenant.as_str(), address], |r| {
        Ok(ContactChange {
            from: decode(r, 0, "contact_changes", "from_status", ContactStatus::parse)?,
            to: decode(r, 1, "contact_changes", "to_status", ContactStatus::parse)?,
            reason: r.get(2)?,
            cause_event_id: r.get::<_, Option<String>>(3)?.map(EventId::from_stored),
            at: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

const SUPPRESSION_COLUMNS: &str =
    "id, target, stream, reason, cause_event_id, created_at, expires_at";

fn suppression_row(r: &Row<'_>) -> rusqlite::Result<SuppressionEntry> {
    Ok(SuppressionEntry {
        id: r.get(0)?,
        target: r.get(1)?,
        scope: SuppressionScope::from_stream(r.get(2)?),
        reason: decode(r, 3, "suppressions", "reason", SuppressionReason::parse)?,
        cause_event_id: r.get::<_, Option<String>>(4)?.map(EventId::from_stored),
        created_at: r.get(5)?,
        expires_at: r.get(6)?,
    })
}

/// Active entries whose target is the address or its domain (any scope).
pub(crate) fn suppressions_for(
    c: &Connection,
    tenant: &TenantId,
    address: &str,
    now: Millis,
) -> StoreResult<Vec<SuppressionEntry>> {
    let [addr, domain] = posthorn_core::suppression::lookup_targets(address);
    let sql = format!(
        "SELECT {SUPPRESSION_COLUMNS} FROM suppressions WHERE tenant_id = $1 AND target IN ($2, $3) \
         AND removed_at IS NULL AND (expires_at IS NULL OR expires_at > $4) ORDER BY id"
    );
    let mut stmt = prepare(c, &sql)?;
    let rows = stmt.query_map(
        rusqlite::params![tenant.as_str(), addr, domain, now],
        suppression_row,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) fn suppressions(
    c: &Connection,
    tenant: &TenantId,
    now: Millis,
) -> StoreResult<Vec<SuppressionEntry>> {
    let sql = format!(
        "SELECT {SUPPRESSION_COLUMNS} FROM suppressions WHERE tenant_id = $1 AND removed_at IS NULL \
         AND (expires_at IS NULL OR expires_at > $2) ORDER BY id DESC"
    );
    let mut stmt = prepare(c, &sql)?;
    let rows = stmt.query_map(rusqlite::params![tenant.as_str(), now], suppression_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

impl ToSql for crate::search::SqlValue {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            crate::search::SqlValue::Text(t) => t.to_sql(),
            crate::search::SqlValue::Int(i) => i.to_sql(),
        }
    }
}

/// Runs a statement of `crate::search` and maps its rows.
pub(crate) fn search<T>(
    c: &Connection,
    sql: &crate::search::Sql,
    map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<Vec<T>> {
    let mut stmt = prepare(c, &sql.text)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(sql.values.iter()), map)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A row of `crate::search::stats_counts`.
pub(crate) fn stats_count_row(r: &Row<'_>) -> rusqlite::Result<StatsCount> {
    Ok(StatsCount {
        group: r.get(0)?,
        metric: decode(
            r,
            1,
            "delivery_stats",
            "metric",
            posthorn_core::stats::Metric::parse,
        )?,
        reason: r.get(2)?,
        deliveries: r.get(3)?,
    })
}

/// A row of `crate::search::delivery_counts`.
pub(crate) fn status_count_row(r: &Row<'_>) -> rusqlite::Result<StatusCount> {
    let status: Option<String> = r.get(0)?;
    let bounce_type: Option<String> = r.get(1)?;
    let engagement = decode_optional(
        r,
        2,
        "deliveries",
        "engagement_status",
        EngagementStatus::parse,
    )?;
    Ok(StatusCount {
        delivery_status: status
            .and_then(|s| DeliveryStatus::from_parts(&s, bounce_type.as_deref())),
        engagement_status: engagement.unwrap_or(EngagementStatus::None),
        deliveries: r.get::<_, i64>(3)?.max(0) as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::{Dialect, EventPage};
    use posthorn_core::search::Filters;

    /// The query plan of the hottest read (every tracker hit and delivery
    /// read): the delivery's own index, never a walk over the tenant.
    #[test]
    fn a_delivery_s_events_are_found_by_its_index() {
        let c = Connection::open_in_memory().unwrap();
        super::super::migrate(&c).unwrap();
        let plan: Vec<String> = c
            .prepare(&format!("EXPLAIN QUERY PLAN {}", delivery_events_sql()))
            .unwrap()
            .query_map(["d", "t"], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            plan,
            vec!["SEARCH events USING INDEX events_delivery (delivery_id=?)"]
        );
    }

    /// Events by recipient: the recipient's deliveries by their index, then
    /// each one's events by theirs; never a walk over the tenant's events.
    #[test]
    fn a_recipient_s_events_are_found_through_its_deliveries() {
        let c = Connection::open_in_memory().unwrap();
        super::super::migrate(&c).unwrap();
        let filter = filters("recipient=r@example.com");
        let plan = query_plan(&c, &filter, EventPage::ById(None));
        assert!(
            plan.iter().any(
                |step| step.starts_with("SEARCH e USING INDEX events_delivery (delivery_id=?)")
            ),
            "{plan:?}"
        );
        assert!(
            plan.iter()
                .any(|step| step.starts_with("SEARCH d USING INDEX deliveries_recipient")),
            "{plan:?}"
        );
        assert!(
            !plan.iter().any(|step| step.starts_with("SCAN e")),
            "{plan:?}"
        );
    }

    /// A delivery's listed events: by its index, not a walk over the
    /// tenant's.
    #[test]
    fn a_delivery_s_listed_events_are_found_by_its_index() {
        let c = Connection::open_in_memory().unwrap();
        super::super::migrate(&c).unwrap();
        let id = DeliveryId::generate();
        let plan = query_plan(
            &c,
            &filters(&format!("delivery_id={id}")),
            EventPage::ById(None),
        );
        assert_eq!(
            plan,
            vec!["SEARCH e USING INDEX events_delivery (delivery_id=?)"],
        );
    }

    fn filters(query: &str) -> Filters {
        crate::conformance::search(query, posthorn_core::search::Surface::Events)
    }

    fn query_plan(c: &Connection, filter: &Filters, page: EventPage<'_>) -> Vec<String> {
        let sql = crate::search::events_page(
            Dialect::Sqlite,
            EVENT_COLUMNS,
            &TenantId::from_stored("t".into()),
            filter,
            page,
            10,
        );
        c.prepare(&format!("EXPLAIN QUERY PLAN {}", sql.text))
            .unwrap()
            .query_map(rusqlite::params_from_iter(sql.values.iter()), |r| {
                r.get::<_, String>(3)
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Reading on from a sequence number seeks straight to it in the table,
    /// which is keyed by `seq`: already in order, no sort, no index of its
    /// own to keep up on every insert.
    #[test]
    fn events_after_a_sequence_number_seek_the_table_s_key() {
        let c = Connection::open_in_memory().unwrap();
        super::super::migrate(&c).unwrap();
        let committed = EventPage::Committed {
            after: 42,
            settled_below: None,
        };
        let plan = query_plan(&c, &filters(""), committed);
        assert_eq!(plan, vec!["SEARCH e USING INTEGER PRIMARY KEY (rowid>?)"]);
    }
}
