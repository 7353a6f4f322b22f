//! What the tracker reads besides events: the original URLs of tracked
//! links, the facts a hit is judged on, and the counted repeats.

use super::reads::{self, Query, decode, get};
use crate::StoreResult;
use crate::records::*;
use ::postgres::Row;
use posthorn_core::{DeliveryId, EventKind, MessageId, Millis, TenantId};
use std::collections::HashMap;

/// The facts hits on `deliveries` are judged on, those that exist, in four
/// statements however many deliveries: the delivery with its message's
/// and tenant's choices, their events (which give the delivery time and
/// earlier opens and clicks), their counted repeats, and their messages'
/// links. Each key is looked up by its own index (a `LATERAL` subquery
/// per key, fenced by `LIMIT`/`OFFSET` from being merged into a join, see
/// `reads::by_keys_sql`). The events' tenant is checked outside their
/// subquery: inside, on a young database without statistics, the planner
/// took the tenant's index as readily as the delivery's and read every
/// event of the tenant per delivery.
pub(crate) fn tracking_facts_of(
    c: &mut impl Query,
    deliveries: &[DeliveryId],
) -> StoreResult<HashMap<DeliveryId, TrackingFacts>> {
    let mut ids: Vec<&str> = deliveries.iter().map(DeliveryId::as_str).collect();
    ids.sort_unstable();
    ids.dedup();
    let found = c.query(
        "SELECT f.* FROM unnest($1::text[]) AS wanted(key) CROSS JOIN LATERAL \
         (SELECT d.id, d.tenant_id, d.message_id, d.recipient, d.stream, m.tracking_opens, t.track_opens \
          FROM deliveries d JOIN messages m ON m.id = d.message_id JOIN tenants t ON t.id = d.tenant_id \
          WHERE d.id = wanted.key LIMIT 1) AS f",
        &[&ids],
    )?;
    if found.is_empty() {
        return Ok(HashMap::new());
    }
    let mut facts = HashMap::with_capacity(found.len());
    for row in &found {
        let delivery_id = DeliveryId::from_stored(get(row, 0)?);
        facts.insert(
            delivery_id.clone(),
            TrackingFacts {
                tenant_id: TenantId::from_stored(get(row, 1)?),
                message_id: MessageId::from_stored(get(row, 2)?),
                recipient: get(row, 3)?,
                stream: get(row, 4)?,
                tracking_opens: get(row, 5)?,
                tenant_track_opens: get(row, 6)?,
                delivery_id,
                links: Vec::new(),
                delivered_at: None,
                delivered_known: false,
                engagement: Vec::new(),
                repeats: Vec::new(),
            },
        );
    }
    // Events, repeats and links of the deliveries found (each scoped by
    // the tenant the delivery belongs to).
    let (found_ids, tenants): (Vec<&str>, Vec<&str>) = facts
        .values()
        .map(|f| (f.delivery_id.as_str(), f.tenant_id.as_str()))
        .unzip();
    let events = c.query(
        &format!(
            "SELECT e.* FROM unnest($1::text[], $2::text[]) AS wanted(delivery, tenant) CROSS JOIN LATERAL \
             (SELECT {}, tenant_id AS of_tenant FROM events WHERE delivery_id = wanted.delivery OFFSET 0) AS e \
             WHERE e.of_tenant = wanted.tenant",
            reads::EVENT_COLUMNS
        ),
        &[&found_ids, &tenants],
    )?;
    let mut events: Vec<EventRecord> = events
        .iter()
        .map(reads::event_row)
        .collect::<StoreResult<_>>()?;
    events.sort_by(|a, b| a.id.cmp(&b.id));
    let repeats = c.query(
        &format!(
            "SELECT r.* FROM unnest($1::text[]) AS wanted(key) CROSS JOIN LATERAL \
             (SELECT {REPEAT_COLUMNS} FROM repeated_hits r WHERE r.delivery_id = wanted.key OFFSET 0) AS r"
        ),
        &[&found_ids],
    )?;
    let mut messages: Vec<&str> = facts.values().map(|f| f.message_id.as_str()).collect();
    messages.sort_unstable();
    messages.dedup();
    let links = c.query(
        "SELECT l.* FROM unnest($1::text[]) AS wanted(key) CROSS JOIN LATERAL \
         (SELECT message_id, url FROM message_links WHERE message_id = wanted.key ORDER BY position OFFSET 0) AS l",
        &[&messages],
    )?;
    let mut links_of: HashMap<String, Vec<String>> = HashMap::new();
    for row in &links {
        links_of.entry(get(row, 0)?).or_default().push(get(row, 1)?);
    }
    for f in facts.values_mut() {
        f.links = links_of
            .get(f.message_id.as_str())
            .cloned()
            .unwrap_or_default();
    }
    for row in &repeats {
        let repeat = repeat_row(row)?;
        if let Some(f) = facts.get_mut(&repeat.delivery_id) {
            f.repeats.push(repeat);
        }
    }
    let mut first = HashMap::new();
    for event in events {
        let Some(f) = facts.get_mut(&event.delivery_id) else {
            continue;
        };
        match event.kind() {
            EventKind::Opened | EventKind::Clicked => f.engagement.push(event),
            kind @ (EventKind::Delivered | EventKind::Sent) => {
                let at: &mut Millis = first
                    .entry((event.delivery_id.clone(), kind))
                    .or_insert(event.occurred_at);
                *at = (*at).min(event.occurred_at);
            }
            _ => {}
        }
    }
    for f in facts.values_mut() {
        let delivered = first
            .get(&(f.delivery_id.clone(), EventKind::Delivered))
            .copied();
        let sent = first
            .get(&(f.delivery_id.clone(), EventKind::Sent))
            .copied();
        f.delivered_at = delivered.or(sent);
        f.delivered_known = delivered.is_some();
    }
    Ok(facts)
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
