//! Mail received by the inbound MX, kept whole with what was read from it
//! and the events recorded from it, and orphans for an administrator: the
//! reads (the writes are the engine's, `engine::record_inbound`).

use super::prepare;
use super::reads::{decode, decode_optional, json};
use crate::StoreResult;
use crate::records::*;
use posthorn_core::id::InboundId;
use posthorn_core::inbound::{AttributedBy, InboundKind, OrphanReason};
use posthorn_core::{DeliveryId, EventId, TenantId};
use rusqlite::{Connection, OptionalExtension, Row, ToSql};

const INBOUND_COLUMNS: &str = "id, received_at, tenant_id, delivery_id, mail_from, rcpt_to, kind, \
     outcome, orphan_reason, attribution, records, size";

pub(crate) fn delivery_owner(
    c: &Connection,
    id: &DeliveryId,
) -> StoreResult<Option<(TenantId, String)>> {
    Ok(prepare(
        c,
        "SELECT tenant_id, recipient FROM deliveries WHERE id = $1",
    )?
    .query_row([id.as_str()], |r| {
        Ok((TenantId::from_stored(r.get::<_, String>(0)?), r.get(1)?))
    })
    .optional()?)
}

pub(crate) fn inbound_messages(
    c: &Connection,
    tenant: Option<&TenantId>,
    filter: &InboundFilter,
) -> StoreResult<Vec<InboundRecord>> {
    let mut conditions = Vec::new();
    let mut values: Vec<Box<dyn ToSql>> = Vec::new();
    match tenant {
        Some(t) => {
            values.push(Box::new(t.as_str().to_owned()));
            conditions.push(format!("tenant_id = ${}", values.len()));
        }
        None => conditions.push("tenant_id IS NULL".to_owned()),
    }
    if let Some(d) = &filter.delivery_id {
        values.push(Box::new(d.as_str().to_owned()));
        conditions.push(format!("delivery_id = ${}", values.len()));
    }
    if let Some(o) = filter.outcome {
        values.push(Box::new(o.as_str()));
        conditions.push(format!("outcome = ${}", values.len()));
    }
    if let Some(before) = &filter.before {
        values.push(Box::new(before.as_str().to_owned()));
        conditions.push(format!("id < ${}", values.len()));
    }
    values.push(Box::new(i64::from(filter.limit)));
    let sql = format!(
        "SELECT {INBOUND_COLUMNS} FROM inbound_messages WHERE {} ORDER BY id DESC LIMIT ${}",
        conditions.join(" AND "),
        values.len()
    );
    let params: Vec<&dyn ToSql> = values.iter().map(|v| v.as_ref()).collect();
    let mut found: Vec<InboundRecord> = prepare(c, &sql)?
        .query_map(params.as_slice(), inbound_row)?
        .collect::<Result<_, _>>()?;
    let mut events = prepare(
        c,
        "SELECT event_id FROM inbound_events WHERE inbound_id = $1 ORDER BY event_id",
    )?;
    for record in &mut found {
        record.event_ids = events
            .query_map([record.id.as_str()], |r| {
                Ok(EventId::from_stored(r.get::<_, String>(0)?))
            })?
            .collect::<Result<_, _>>()?;
    }
    Ok(found)
}

pub(crate) fn inbound_raw(
    c: &Connection,
    tenant: Option<&TenantId>,
    id: &InboundId,
) -> StoreResult<Option<Vec<u8>>> {
    let raw = match tenant {
        Some(t) => prepare(
            c,
            "SELECT raw FROM inbound_messages WHERE id = $1 AND tenant_id = $2",
        )?
        .query_row([id.as_str(), t.as_str()], |r| r.get(0))
        .optional()?,
        None => prepare(
            c,
            "SELECT raw FROM inbound_messages WHERE id = $1 AND tenant_id IS NULL",
        )?
        .query_row([id.as_str()], |r| r.get(0))
        .optional()?,
    };
    Ok(raw)
}

pub(crate) fn event_inbound(
    c: &Connection,
    tenant: &TenantId,
    event: &EventId,
) -> StoreResult<Option<InboundId>> {
    Ok(prepare(
        c,
        "SELECT l.inbound_id FROM inbound_events l JOIN inbound_messages m ON m.id = l.inbound_id \
         WHERE l.event_id = $1 AND m.tenant_id = $2",
    )?
    .query_row([event.as_str(), tenant.as_str()], |r| {
        Ok(InboundId::from_stored(r.get::<_, String>(0)?))
    })
    .optional()?)
}

pub(crate) fn operator_tenant(c: &Connection) -> StoreResult<Option<TenantId>> {
    Ok(prepare(
        c,
        "SELECT id FROM tenants ORDER BY created_at, rowid LIMIT 1",
    )?
    .query_row([], |r| Ok(TenantId::from_stored(r.get::<_, String>(0)?)))
    .optional()?)
}

fn inbound_row(r: &Row<'_>) -> rusqlite::Result<InboundRecord> {
    const TABLE: &str = "inbound_messages";
    Ok(InboundRecord {
        id: InboundId::from_stored(r.get::<_, String>(0)?),
        received_at: r.get(1)?,
        tenant_id: r.get::<_, Option<String>>(2)?.map(TenantId::from_stored),
        delivery_id: r.get::<_, Option<String>>(3)?.map(DeliveryId::from_stored),
        mail_from: r.get(4)?,
        rcpt_to: json(r, 5, TABLE, "rcpt_to")?,
        kind: decode(r, 6, TABLE, "kind", InboundKind::parse)?,
        outcome: decode(r, 7, TABLE, "outcome", InboundOutcome::parse)?,
        orphan_reason: decode_optional(r, 8, TABLE, "orphan_reason", OrphanReason::parse)?,
        attribution: decode_optional(r, 9, TABLE, "attribution", AttributedBy::parse)?,
        records: json(r, 10, TABLE, "records")?,
        size: r.get::<_, i64>(11)? as u64,
        event_ids: Vec::new(),
    })
}
