//! The send queue: claims with node-owned leases, and attempts' outcomes.

use super::WriteTx;
use super::events::apply_event;
use crate::records::*;
use crate::{StoreError, StoreResult, StoreRules};
use posthorn_core::{Millis, NodeId};
use std::collections::HashMap;
use std::sync::Arc;

/// Takes due queue entries whose lease is free or has run out, leases them
/// to `node` and counts the attempt; each with its delivery, message and
/// tenant (read once per batch).
pub(crate) fn claim_due(
    tx: &mut dyn WriteTx,
    node: &NodeId,
    now: Millis,
    limit: u32,
    lease_until: Millis,
) -> StoreResult<Vec<ClaimedDelivery>> {
    let due = tx.due_entries(now, limit)?;
    let mut messages: HashMap<String, Arc<MessageRecord>> = HashMap::new();
    let mut tenants: HashMap<String, Arc<Tenant>> = HashMap::new();
    let mut claimed = Vec::with_capacity(due.len());
    for entry in due {
        tx.lease(&entry.delivery, node, lease_until)?;
        let Some(delivery) = tx.delivery(&entry.tenant, &entry.delivery)? else {
            continue;
        };
        let message = match messages.get(delivery.message_id.as_str()) {
            Some(m) => m.clone(),
            None => {
                let Some(m) = tx.message(&entry.tenant, &delivery.message_id)? else {
                    continue;
                };
                let m = Arc::new(m);
                messages.insert(delivery.message_id.to_string(), m.clone());
                m
            }
        };
        let tenant = match tenants.get(entry.tenant.as_str()) {
            Some(t) => t.clone(),
            None => {
                let Some(t) = tx.tenant(&entry.tenant)? else {
                    continue;
                };
                let t = Arc::new(t);
                tenants.insert(entry.tenant.to_string(), t.clone());
                t
            }
        };
        claimed.push(ClaimedDelivery {
            delivery,
            message,
            tenant,
            attempt: entry.attempts + 1,
        });
    }
    Ok(claimed)
}

/// Records attempts in order (a delivery's `sent` before its outcome): each
/// one's events, then its queue entry moved (when it has an outcome).
/// Returns the events stored, not those recorded before.
pub(crate) fn record_attempts(
    tx: &mut dyn WriteTx,
    rules: &StoreRules,
    attempts: &[AttemptRecord],
) -> StoreResult<Vec<Arc<EventRecord>>> {
    let mut stored = Vec::new();
    for attempt in attempts {
        let delivery_id = &attempt.delivery;
        let Some(mut delivery) = tx.delivery(&attempt.tenant, delivery_id)? else {
            return Err(StoreError::backend(format!(
                "no delivery {delivery_id} to record an attempt of"
            )));
        };
        for event in &attempt.events {
            stored.extend(apply_event(tx, rules, &mut delivery, event)?);
        }
        match attempt.next {
            None => {}
            Some(QueueNext::Remove) => tx.dequeue(delivery_id)?,
            Some(QueueNext::RetryAt(at)) => tx.requeue(delivery_id, at)?,
        }
    }
    Ok(stored)
}
