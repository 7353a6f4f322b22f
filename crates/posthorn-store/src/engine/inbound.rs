//! Mail received by the inbound MX: its events recorded, the message kept
//! whole and linked to them.

use super::WriteTx;
use super::events::record_event;
use crate::records::*;
use crate::{StoreError, StoreResult, StoreRules};

/// Records the events of a received message, then keeps the message and
/// links each event to it. Returns the stored record, its outcome
/// `Duplicate` when every event had been recorded before.
pub(crate) fn record_inbound(
    tx: &mut dyn WriteTx,
    rules: &StoreRules,
    inbound: &NewInbound,
) -> StoreResult<InboundRecord> {
    let mut record = inbound.record.clone();
    if !inbound.events.is_empty() {
        let tenant = record.tenant_id.clone().ok_or_else(|| {
            StoreError::backend("an inbound message with events needs its tenant")
        })?;
        let mut new_events = 0u64;
        for event in &inbound.events {
            match record_event(tx, rules, &tenant, event)? {
                RecordOutcome::Recorded { event, .. } => {
                    new_events += 1;
                    record.event_ids.push(event.id.clone());
                }
                RecordOutcome::Duplicate { event, .. } => record.event_ids.push(event.id.clone()),
                RecordOutcome::UnknownDelivery => {
                    return Err(StoreError::backend(format!(
                        "delivery {} of tenant {tenant} does not exist",
                        event.delivery_id
                    )));
                }
            }
        }
        if new_events == 0 {
            record.outcome = InboundOutcome::Duplicate;
        }
    }
    tx.insert_inbound(&record, &inbound.raw)?;
    // A report received again links to the events the first copy recorded;
    // those keep pointing at the first copy.
    for event in &record.event_ids {
        tx.link_inbound_event(event, &record)?;
    }
    Ok(record)
}
