//! What the tracker reads besides events: the original URLs of
//! tracked links, and the facts a hit is judged on.

use super::prepare;
use super::reads;
use crate::StoreResult;
use crate::records::*;
use posthorn_core::{DeliveryId, EventKind, MessageId, TenantId};
use rusqlite::{Connection, OptionalExtension};

pub(crate) fn message_links(c: &Connection, message: &MessageId) -> StoreResult<Vec<String>> {
    let mut stmt = prepare(
        c,
        "SELECT url FROM message_links WHERE message_id = $1 ORDER BY position",
    )?;
    let urls = stmt.query_map([message.as_str()], |r| r.get(0))?;
    Ok(urls.collect::<Result<_, _>>()?)
}

pub(crate) fn tracking_facts(
    c: &Connection,
    delivery: &DeliveryId,
) -> StoreResult<Option<TrackingFacts>> {
    let Some((tenant, message, recipient, stream, opens, tenant_opens)) = prepare(
        c,
        "SELECT d.tenant_id, d.message_id, d.recipient, d.stream, m.tracking_opens, t.track_opens \
         FROM deliveries d JOIN messages m ON m.id = d.message_id \
         JOIN tenants t ON t.id = d.tenant_id WHERE d.id = $1",
    )?
    .query_row([delivery.as_str()], |r| {
        Ok((
            TenantId::from_stored(r.get(0)?),
            MessageId::from_stored(r.get(1)?),
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, Option<bool>>(4)?,
            r.get::<_, Option<bool>>(5)?,
        ))
    })
    .optional()?
    else {
        return Ok(None);
    };
    // One read of the delivery's events gives both its delivery time and
    // its opens and clicks.
    let events = reads::delivery_events(c, &tenant, delivery)?;
    let first = |kind: EventKind| {
        events
            .iter()
            .filter(|e| e.kind() == kind)
            .map(|e| e.occurred_at)
            .min()
    };
    let (delivered, sent) = (first(EventKind::Delivered), first(EventKind::Sent));
    let engagement = events
        .into_iter()
        .filter(|e| matches!(e.kind(), EventKind::Opened | EventKind::Clicked))
        .collect();
    Ok(Some(TrackingFacts {
        repeats: delivery_repeated_hits(c, &tenant, delivery)?,
        links: message_links(c, &message)?,
        tenant_id: tenant,
        delivery_id: delivery.clone(),
        message_id: message,
        recipient,
        stream,
        tracking_opens: opens,
        tenant_track_opens: tenant_opens,
        delivered_at: delivered.or(sent),
        delivered_known: delivered.is_some(),
        engagement,
    }))
}

const REPEAT_COLUMNS: &str = "r.delivery_id, r.kind, r.link_index, r.machine, r.hits, r.last_at";

fn repeat_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RepeatedHits> {
    let link: i64 = r.get(2)?;
    Ok(RepeatedHits {
        delivery_id: DeliveryId::from_stored(r.get(0)?),
        kind: reads::decode(r, 1, "repeated_hits", "kind", |s| s.parse().ok())?,
        link_index: u32::try_from(link).ok(),
        machine: r.get(3)?,
        hits: r.get::<_, i64>(4)?.max(0) as u64,
        last_at: r.get(5)?,
    })
}

pub(crate) fn delivery_repeated_hits(
    c: &Connection,
    tenant: &TenantId,
    delivery: &DeliveryId,
) -> StoreResult<Vec<RepeatedHits>> {
    let sql = format!(
        "SELECT {REPEAT_COLUMNS} FROM repeated_hits r JOIN deliveries d ON d.id = r.delivery_id \
         WHERE r.delivery_id = $1 AND d.tenant_id = $2"
    );
    let mut stmt = prepare(c, &sql)?;
    let rows = stmt.query_map([delivery.as_str(), tenant.as_str()], repeat_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) fn message_repeated_hits(
    c: &Connection,
    tenant: &TenantId,
    message: &MessageId,
) -> StoreResult<Vec<RepeatedHits>> {
    let sql = format!(
        "SELECT {REPEAT_COLUMNS} FROM deliveries d JOIN repeated_hits r ON r.delivery_id = d.id \
         WHERE d.message_id = $1 AND d.tenant_id = $2"
    );
    let mut stmt = prepare(c, &sql)?;
    let rows = stmt.query_map([message.as_str(), tenant.as_str()], repeat_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}
