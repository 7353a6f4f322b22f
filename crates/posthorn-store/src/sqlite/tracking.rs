//! What the tracker reads and writes besides events: the original URLs of
//! tracked links, and the facts a hit is judged on.

use super::rows::{self, prepare};
use crate::StoreResult;
use crate::records::*;
use posthorn_core::{DeliveryId, EventKind, MessageId, TenantId};
use rusqlite::{Connection, OptionalExtension};

pub(crate) fn put_message_links(
    c: &Connection,
    message: &MessageId,
    links: &[String],
) -> StoreResult<()> {
    let mut insert = prepare(
        c,
        "INSERT INTO message_links (message_id, position, url) VALUES ($1, $2, $3) \
         ON CONFLICT (message_id, position) DO NOTHING",
    )?;
    for (position, url) in links.iter().enumerate() {
        insert.execute(rusqlite::params![message.as_str(), position as i64, url])?;
    }
    Ok(())
}

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
    let events = rows::delivery_events(c, &tenant, delivery)?;
    let first = |kind: EventKind| {
        events
            .iter()
            .filter(|e| e.kind == kind)
            .map(|e| e.occurred_at)
            .min()
    };
    let (delivered, sent) = (first(EventKind::Delivered), first(EventKind::Sent));
    let engagement = events
        .into_iter()
        .filter(|e| matches!(e.kind, EventKind::Opened | EventKind::Clicked))
        .collect();
    Ok(Some(TrackingFacts {
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
