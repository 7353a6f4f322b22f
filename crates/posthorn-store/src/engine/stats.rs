//! The statistics' counts, changed in the transaction that changes a
//! delivery (`posthorn_core::stats` says which figures a delivery counts
//! in; this writes the difference).

use super::WriteTx;
use crate::StoreResult;
use crate::records::*;
use posthorn_core::clock::{DAY, HOUR};
use posthorn_core::stats::{Metric, changes, metrics_of, status_reason};
use posthorn_core::{EventId, Millis};

/// What a delivery counts in: each figure with its reason (a drop's or a
/// bounce's, on those figures only).
type Counted = Vec<(Metric, Option<String>)>;

fn counted(d: &DeliveryRecord, reason: Option<&str>) -> Counted {
    metrics_of(d.delivery_status, d.engagement_status, d.seen)
        .into_iter()
        .map(|m| {
            (
                m,
                m.has_reason()
                    .then(|| reason.unwrap_or_default().to_owned()),
            )
        })
        .collect()
}

/// A delivery just stored, before its first event: submitted.
pub(crate) fn count_new(tx: &mut dyn WriteTx, d: &DeliveryRecord) -> StoreResult<()> {
    write(tx, d, &changes(&[], &counted(d, None)))
}

/// The state of a delivery before an event, kept to count the change.
pub(crate) struct Before {
    counted: Counted,
    status_event: Option<EventId>,
}

/// Notes what `d` counts in before an event changes it. The reason of its
/// status is only read back (from the event that set it) when the event
/// replaces that status: otherwise it stays, and so do its figures.
pub(crate) fn before(d: &DeliveryRecord) -> Before {
    Before {
        counted: counted(d, None),
        status_event: d.delivery_event_id.clone(),
    }
}

/// Counts the change of `d` from `before`, made by the event with
/// `details` (which may have set its status).
pub(crate) fn count_change(
    tx: &mut dyn WriteTx,
    before: Before,
    d: &DeliveryRecord,
    event: &EventId,
    details: &posthorn_core::event::EventDetails,
) -> StoreResult<()> {
    let replaced = before.status_event != d.delivery_event_id;
    let (old, new) = if replaced {
        let old_reason = match &before.status_event {
            Some(id) if before.counted.iter().any(|(m, _)| m.has_reason()) => tx
                .event_by_id(&d.tenant_id, id)?
                .and_then(|e| status_reason(&e.details)),
            _ => None,
        };
        let new_reason = (d.delivery_event_id.as_ref() == Some(event))
            .then(|| status_reason(details))
            .flatten();
        let old = before
            .counted
            .into_iter()
            .map(|(m, r)| (m, r.map(|_| old_reason.clone().unwrap_or_default())))
            .collect();
        (old, counted(d, new_reason.as_deref()))
    } else {
        (before.counted, counted(d, None))
    };
    write(tx, d, &changes(&old, &new))
}

fn floor(at: Millis, unit: Millis) -> Millis {
    at.div_euclid(unit) * unit
}

/// Writes changes for `d` under each of its dimensions: every count of
/// all deliveries ('' tag) and of each tag of its message, and by its
/// receiving domain.
fn write(
    tx: &mut dyn WriteTx,
    d: &DeliveryRecord,
    diff: &[((Metric, Option<String>), i64)],
) -> StoreResult<()> {
    if diff.is_empty() {
        return Ok(());
    }
    let mut tags = tx.message_tags(&d.tenant_id, &d.message_id)?;
    tags.sort();
    tags.dedup();
    tags.retain(|t| !t.is_empty());
    let hour = floor(d.created_at, HOUR);
    let mut rows = Vec::new();
    for ((metric, reason), change) in diff {
        for tag in std::iter::once("").chain(tags.iter().map(String::as_str)) {
            rows.push(StatsChange {
                hour,
                stream: d.stream.clone(),
                campaign: d.campaign.clone().unwrap_or_default(),
                tag: tag.to_owned(),
                reason: reason.clone().unwrap_or_default(),
                metric: *metric,
                change: *change,
            });
        }
    }
    let domain = d
        .recipient
        .rsplit_once('@')
        .map_or("", |(_, domain)| domain);
    let domains: Vec<DomainStatsChange> = diff
        .iter()
        .map(|((metric, _), change)| DomainStatsChange {
            day: floor(d.created_at, DAY),
            domain: domain.to_owned(),
            metric: *metric,
            change: *change,
        })
        .collect();
    tx.add_stats(&d.tenant_id, &rows, &domains)
}
