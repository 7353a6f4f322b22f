//! Mail received by the inbound MX (the reads): kept whole, with what was
//! read from it, the events recorded from it, and orphans for an
//! administrator.

use super::reads::{Query, decode, decode_optional, get, json};
use crate::StoreResult;
use crate::records::*;
use ::postgres::Row;
use ::postgres::types::ToSql;
use posthorn_core::id::InboundId;
use posthorn_core::inbound::{AttributedBy, InboundKind, OrphanReason};
use posthorn_core::{DeliveryId, EventId, TenantId};

const INBOUND_COLUMNS: &str = "id, received_at, tenant_id, delivery_id, mail_from, rcpt_to, kind, \
     outcome, orphan_reason, attribution, records, size";

pub(crate) fn delivery_owner(
    c: &mut impl Query,
    id: &DeliveryId,
) -> StoreResult<Option<(TenantId, String)>> {
    c.query_opt(
        "SELECT tenant_id, recipient FROM deliveries WHERE id = $1",
        &[&id.as_str()],
    )?
    .map(|r| Ok((TenantId::from_stored(get(&r, 0)?), get(&r, 1)?)))
    .transpose()
}

pub(crate) fn inbound_messages(
    c: &mut impl Query,
    tenant: Option<&TenantId>,
    filter: &InboundFilter,
) -> StoreResult<Vec<InboundRecord>> {
    let mut conditions = Vec::new();
    let mut values: Vec<Box<dyn ToSql + Sync>> = Vec::new();
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
        values.push(Box::new(o.as_str().to_owned()));
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
    let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref()).collect();
    let mut found = c
        .query(&sql, &params)?
        .iter()
        .map(inbound_row)
        .collect::<StoreResult<Vec<_>>>()?;
    // The events of the whole page in one query, not one per message.
    let ids: Vec<&str> = found.iter().map(|r| r.id.as_str()).collect();
    let links = c.query(
        "SELECT inbound_id, event_id FROM inbound_events WHERE inbound_id = ANY($1) ORDER BY event_id",
        &[&ids],
    )?;
    for link in &links {
        let inbound: String = get(link, 0)?;
        let event: String = get(link, 1)?;
        if let Some(record) = found.iter_mut().find(|r| r.id.as_str() == inbound) {
            record.event_ids.push(EventId::from_stored(event));
        }
    }
    Ok(found)
}

pub(crate) fn inbound_raw(
    c: &mut impl Query,
    tenant: Option<&TenantId>,
    id: &InboundId,
) -> StoreResult<Option<Vec<u8>>> {
    let found = match tenant {
        Some(t) => c.query_opt(
            "SELECT raw FROM inbound_messages WHERE id = $1 AND tenant_id = $2",
            &[&id.as_str(), &t.as_str()],
        )?,
        None => c.query_opt(
            "SELECT raw FROM inbound_messages WHERE id = $1 AND tenant_id IS NULL",
            &[&id.as_str()],
        )?,
    };
    found.map(|r| get(&r, 0)).transpose()
}

pub(crate) fn event_inbound(
    c: &mut impl Query,
    tenant: &TenantId,
    event: &EventId,
) -> StoreResult<Option<InboundId>> {
    c.query_opt(
        "SELECT l.inbound_id FROM inbound_events l JOIN inbound_messages m ON m.id = l.inbound_id \
         WHERE l.event_id = $1 AND m.tenant_id = $2",
        &[&event.as_str(), &tenant.as_str()],
    )?
    .map(|r| Ok(InboundId::from_stored(get(&r, 0)?)))
    .transpose()
}

/// The tenant created first. SQLite breaks a tie of creation times by
/// insertion order (its rowid); here the id does, which is time-ordered
/// (UUIDv7) too.
pub(crate) fn operator_tenant(c: &mut impl Query) -> StoreResult<Option<TenantId>> {
    c.query_opt(
        "SELECT id FROM tenants ORDER BY created_at, id LIMIT 1",
        &[],
    )?
    .map(|r| Ok(TenantId::from_stored(get(&r, 0)?)))
    .transpose()
}

fn inbound_row(r: &Row) -> StoreResult<InboundRecord> {
    const TABLE: &str = "inbound_messages";
    let size: i64 = get(r, 11)?;
    Ok(InboundRecord {
        id: InboundId::from_stored(get(r, 0)?),
        received_at: get(r, 1)?,
        tenant_id: get::<Option<String>>(r, 2)?.map(TenantId::from_stored),
        delivery_id: get::<Option<String>>(r, 3)?.map(DeliveryId::from_stored),
        mail_from: get(r, 4)?,
        rcpt_to: json(r, 5, TABLE, "rcpt_to")?,
        kind: decode(r, 6, TABLE, "kind", InboundKind::parse)?,
        outcome: decode(r, 7, TABLE, "outcome", InboundOutcome::parse)?,
        orphan_reason: decode_optional(r, 8, TABLE, "orphan_reason", OrphanReason::parse)?,
        attribution: decode_optional(r, 9, TABLE, "attribution", AttributedBy::parse)?,
        records: json(r, 10, TABLE, "records")?,
        size: u64::try_from(size)
            .map_err(|_| super::reads::corrupt(TABLE, "size", size.to_string()))?,
        event_ids: Vec::new(),
    })
}
