//! What the tracker reads besides events: the original URLs of tracked
//! links, the facts a hit is judged on, and the counted repeats.

use super::reads::{self, Query, decode, get};
use crate::StoreResult;
use crate::records::*;
use ::postgres::Row;
use posthorn_core::{DeliveryId, EventKind, MessageId, TenantId};

pub(crate) fn message_links(c: &mut impl Query, message: &MessageId) -> StoreResult<Vec<String>> {
    c.query(
        "SELECT url FROM message_links WHERE message_id = $1 ORDER BY position",
        &[&message.as_str()],
    )?
    .iter()
    .map(|r| get(r, 0))
    .collect()
}

pub(crate) fn tracking_facts(
    c: &mut impl Query,
    delivery: &DeliveryId,
) -> StoreResult<Option<TrackingFacts>> {
    let Some(found) = c.query_opt(
        "SELECT d.tenant_id, d.message_id, d.recipient, d.stream, m.tracking_opens, t.track_opens \
         FROM deliveries d JOIN messages m ON m.id = d.message_id \
         JOIN tenants t ON t.id = d.tenant_id WHERE d.id = $1",
        &[&delivery.as_str()],
    )?
    else {
        return Ok(None);
    };
    let tenant = TenantId::from_stored(get(&found, 0)?);
    let message = MessageId::from_stored(get(&found, 1)?);
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
        recipient: get(&found, 2)?,
        stream: get(&found, 3)?,
        tracking_opens: get(&found, 4)?,
        tenant_track_opens: get(&found, 5)?,
        tenant_id: tenant,
        delivery_id: delivery.clone(),
        message_id: message,
        delivered_at: delivered.or(sent),
        delivered_known: delivered.is_some(),
        engagement,
    }))
}

const REPEAT_COLUMNS: &str = "r.delivery_id, r.kind, r.link_index, r.machine, r.hits, r.last_at";

fn repeat_row(r: &Row) -> StoreResult<RepeatedHits> {
    let link: i64 = get(r, 2)?;
    Ok(RepeatedHits {
        delivery_id: DeliveryId::from_stored(get(r, 0)?),
        kind: decode(r, 1, "repeated_hits", "kind", |s| s.parse().ok())?,
        // -1 is the open pixel's (see the schema).
        link_index: u32::try_from(link).ok(),
        machine: get(r, 3)?,
        hits: get::<i64>(r, 4)?.max(0) as u64,
        last_at: get(r, 5)?,
    })
}

pub(crate) fn delivery_repeated_hits(
    c: &mut impl Query,
    tenant: &TenantId,
    delivery: &DeliveryId,
) -> StoreResult<Vec<RepeatedHits>> {
    let sql = format!(
        "SELECT {REPEAT_COLUMNS} FROM repeated_hits r JOIN deliveries d ON d.id = r.delivery_id \
         WHERE r.delivery_id = $1 AND d.tenant_id = $2"
    );
    c.query(&sql, &[&delivery.as_str(), &tenant.as_str()])?
        .iter()
        .map(repeat_row)
        .collect()
}

pub(crate) fn message_repeated_hits(
    c: &mut impl Query,
    tenant: &TenantId,
    message: &MessageId,
) -> StoreResult<Vec<RepeatedHits>> {
    let sql = format!(
        "SELECT {REPEAT_COLUMNS} FROM deliveries d JOIN repeated_hits r ON r.delivery_id = d.id \
         WHERE d.message_id = $1 AND d.tenant_id = $2"
    );
    c.query(&sql, &[&message.as_str(), &tenant.as_str()])?
        .iter()
        .map(repeat_row)
        .collect()
}
