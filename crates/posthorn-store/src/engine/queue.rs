//! The send queue: claims with node-owned leases, and attempts' outcomes.

use super::WriteTx;
use super::events::apply_event;
use super::{ClaimWindow, DueEntry};
use crate::records::*;
use crate::{StoreError, StoreResult, StoreRules};
use posthorn_core::{DeliveryId, MessageId, Millis, NodeId, TenantId};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// What a claim took: its deliveries, and the oldest due time among them.
pub(crate) struct Claimed {
    pub deliveries: Vec<ClaimedDelivery>,
    pub oldest_due: Option<Millis>,
}

/// Takes due queue entries (in `window`) whose lease is free or has run
/// out, leases them to `node` and counts the attempt; each with its
/// delivery, message and tenant, read a batch at a time (a statement per
/// batch, not per entry).
pub(crate) fn claim_due(
    tx: &mut dyn WriteTx,
    node: &NodeId,
    window: ClaimWindow,
    limit: u32,
    lease_until: Millis,
) -> StoreResult<Claimed> {
    let due = tx.claim_entries(node, window, limit, lease_until)?;
    let oldest_due = due.iter().map(|e| e.due_at).min();
    let mut claimed = Vec::with_capacity(due.len());
    // Read per tenant, so every read stays scoped by its tenant.
    let mut by_tenant: BTreeMap<TenantId, Vec<DueEntry>> = BTreeMap::new();
    for entry in due {
        by_tenant
            .entry(entry.tenant.clone())
            .or_default()
            .push(entry);
    }
    for (tenant_id, entries) in by_tenant {
        let Some(tenant) = tx.tenant(&tenant_id)? else {
            continue;
        };
        let tenant = Arc::new(tenant);
        let ids: Vec<DeliveryId> = entries.iter().map(|e| e.delivery.clone()).collect();
        let mut deliveries: HashMap<DeliveryId, DeliveryRecord> = tx
            .deliveries_to_send(&tenant_id, &ids)?
            .into_iter()
            .map(|d| (d.id.clone(), d))
            .collect();
        let mut message_ids: Vec<MessageId> =
            deliveries.values().map(|d| d.message_id.clone()).collect();
        message_ids.sort();
        message_ids.dedup();
        let messages: HashMap<MessageId, Arc<MessageRecord>> = tx
            .messages(&tenant_id, &message_ids)?
            .into_iter()
            .map(|m| (m.id.clone(), Arc::new(m)))
            .collect();
        for entry in entries {
            let Some(delivery) = deliveries.remove(&entry.delivery) else {
                continue;
            };
            let Some(message) = messages.get(&delivery.message_id) else {
                continue;
            };
            claimed.push(ClaimedDelivery {
                message: message.clone(),
                tenant: tenant.clone(),
                delivery,
                attempt: entry.attempts + 1,
            });
        }
    }
    Ok(Claimed {
        deliveries: claimed,
        oldest_due,
    })
}

/// Records attempts in order (a delivery's `sent` before its outcome): each
/// one's events, then its queue entry moved (when it has an outcome).
/// Returns the events stored, not those recorded before. The batch's
/// deliveries and contacts are locked first, each kind in one go.
pub(crate) fn record_attempts(
    tx: &mut dyn WriteTx,
    rules: &StoreRules,
    attempts: &[AttemptRecord],
) -> StoreResult<Vec<Arc<EventRecord>>> {
    let mut deliveries = lock_batch(tx, attempts)?;
    let mut stored = Vec::new();
    for attempt in attempts {
        let delivery_id = &attempt.delivery;
        let Some(delivery) = deliveries.get_mut(delivery_id) else {
            return Err(StoreError::backend(format!(
                "no delivery {delivery_id} to record an attempt of"
            )));
        };
        for event in &attempt.events {
            stored.extend(apply_event(tx, rules, delivery, event)?);
        }
        match attempt.next {
            None => {}
            Some(QueueNext::Remove) => tx.dequeue(delivery_id)?,
            Some(QueueNext::RetryAt(at)) => tx.requeue(delivery_id, at)?,
        }
    }
    Ok(stored)
}

/// Locks the deliveries of `attempts` and, for those with an outcome (whose
/// events move contacts), their recipients' contacts: deliveries first, as
/// every write does, tenant by tenant.
fn lock_batch(
    tx: &mut dyn WriteTx,
    attempts: &[AttemptRecord],
) -> StoreResult<HashMap<DeliveryId, DeliveryRecord>> {
    let mut by_tenant: BTreeMap<&TenantId, Vec<DeliveryId>> = BTreeMap::new();
    for attempt in attempts {
        by_tenant
            .entry(&attempt.tenant)
            .or_default()
            .push(attempt.delivery.clone());
    }
    let with_outcome: HashSet<&DeliveryId> = attempts
        .iter()
        .filter(|a| a.next.is_some())
        .map(|a| &a.delivery)
        .collect();
    let mut deliveries = HashMap::new();
    for (tenant, ids) in by_tenant {
        let locked = tx.lock_deliveries(tenant, &ids)?;
        let mut addresses: Vec<&str> = locked
            .iter()
            .filter(|d| with_outcome.contains(&d.id))
            .map(|d| d.recipient.as_str())
            .collect();
        addresses.sort_unstable();
        addresses.dedup();
        tx.lock_contacts(tenant, &addresses)?;
        deliveries.extend(locked.into_iter().map(|d| (d.id.clone(), d)));
    }
    Ok(deliveries)
}
