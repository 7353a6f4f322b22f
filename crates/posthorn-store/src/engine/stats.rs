//! The statistics' counts, changed in the transaction that changes a
//! delivery (`posthorn_core::stats` says which figures a delivery counts
//! in; this writes the difference).

use super::WriteTx;
use crate::StoreResult;
use crate::records::*;
use posthorn_core::clock::{DAY, HOUR};
use posthorn_core::stats::{Metric, changes, metrics_of, status_reason};
use posthorn_core::{EventId, Millis, TenantId};

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

/// Writes changes for `d` (see [`rows_for`]).
fn write(
    tx: &mut dyn WriteTx,
    d: &DeliveryRecord,
    diff: &[((Metric, Option<String>), i64)],
) -> StoreResult<()> {
    if diff.is_empty() {
        return Ok(());
    }
    let tags = tx.message_tags(&d.tenant_id, &d.message_id)?;
    let (rows, domains) = rows_for(d, &tags, diff);
    tx.add_stats(&d.tenant_id, &rows, &domains)
}

/// The changes of counts for `d` under each of its dimensions: the count
/// of all deliveries ('' tag) and of each tag of its message, and by its
/// receiving domain.
pub(crate) fn rows_for(
    d: &DeliveryRecord,
    tags: &[String],
    diff: &[((Metric, Option<String>), i64)],
) -> (Vec<StatsChange>, Vec<DomainStatsChange>) {
    let mut tags: Vec<&str> = tags
        .iter()
        .map(String::as_str)
        .filter(|t| !t.is_empty())
        .collect();
    tags.sort_unstable();
    tags.dedup();
    let hour = floor(d.created_at, HOUR);
    let mut rows = Vec::new();
    for ((metric, reason), change) in diff {
        for tag in std::iter::once("").chain(tags.iter().copied()) {
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
    let domains = diff
        .iter()
        .map(|((metric, _), change)| DomainStatsChange {
            day: floor(d.created_at, DAY),
            domain: domain.to_owned(),
            metric: *metric,
            change: *change,
        })
        .collect();
    (rows, domains)
}

/// Changes to counts added up per count (per tenant): what a transaction
/// writes once, however many of its deliveries changed the same count.
#[derive(Default)]
pub(crate) struct Tally {
    rows: std::collections::HashMap<(TenantId, StatsChange), i64>,
    domains: std::collections::HashMap<(TenantId, DomainStatsChange), i64>,
}

impl Tally {
    pub(crate) fn add(
        &mut self,
        tenant: &TenantId,
        changes: &[StatsChange],
        domains: &[DomainStatsChange],
    ) {
        for c in changes {
            let key = StatsChange {
                change: 0,
                ..c.clone()
            };
            *self.rows.entry((tenant.clone(), key)).or_default() += c.change;
        }
        for c in domains {
            let key = DomainStatsChange {
                change: 0,
                ..c.clone()
            };
            *self.domains.entry((tenant.clone(), key)).or_default() += c.change;
        }
    }

    /// The sums that are not zero, by tenant.
    pub(crate) fn into_changes(
        self,
    ) -> std::collections::BTreeMap<TenantId, (Vec<StatsChange>, Vec<DomainStatsChange>)> {
        let mut out: std::collections::BTreeMap<
            TenantId,
            (Vec<StatsChange>, Vec<DomainStatsChange>),
        > = Default::default();
        for ((tenant, row), change) in self.rows.into_iter().filter(|(_, n)| *n != 0) {
            out.entry(tenant)
                .or_default()
                .0
                .push(StatsChange { change, ..row });
        }
        for ((tenant, row), change) in self.domains.into_iter().filter(|(_, n)| *n != 0) {
            out.entry(tenant)
                .or_default()
                .1
                .push(DomainStatsChange { change, ..row });
        }
        out
    }
}

/// Counts made afresh for deliveries stored before the statistics were
/// (the migration that adds them): what each was seen to do, from its
/// events, and the counts it is in, added up per tenant and dimension.
#[derive(Default)]
pub(crate) struct Rebuild {
    tally: Tally,
}

impl Rebuild {
    /// Counts one delivery, given its message's tags and its events (at
    /// least its engagement events and the event that set its status).
    /// Returns what it was seen to do, to store with it.
    pub(crate) fn add(
        &mut self,
        d: &DeliveryRecord,
        tags: &[String],
        events: &[EventRecord],
    ) -> posthorn_core::stats::Seen {
        let seen = events
            .iter()
            .filter(|e| !e.outside_window && e.anomaly.is_none())
            .fold(posthorn_core::stats::Seen::default(), |s, e| {
                s.with(&e.details)
            });
        let reason = events
            .iter()
            .find(|e| Some(&e.id) == d.delivery_event_id.as_ref())
            .and_then(|e| status_reason(&e.details));
        let d = DeliveryRecord { seen, ..d.clone() };
        let (rows, domains) = rows_for(&d, tags, &changes(&[], &counted(&d, reason.as_deref())));
        self.tally.add(&d.tenant_id, &rows, &domains);
        seen
    }

    /// The counts, by tenant, as changes from nothing.
    pub(crate) fn into_changes(
        self,
    ) -> std::collections::BTreeMap<TenantId, (Vec<StatsChange>, Vec<DomainStatsChange>)> {
        self.tally.into_changes()
    }
}
