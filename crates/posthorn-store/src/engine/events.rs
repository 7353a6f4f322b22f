//! Events: stored once, folded into their delivery's status, and applied to
//! the contact and the suppression list.

use super::WriteTx;
use crate::records::*;
use crate::{StoreError, StoreResult, StoreRules};
use posthorn_core::contact::{self, ContactState, ContactStatus};
use posthorn_core::id::SuppressionId;
use posthorn_core::status::{AxisValue, DeliveryState, FoldInput};
use posthorn_core::suppression::{SuppressionEntry, SuppressionReason, SuppressionScope};
use posthorn_core::{Millis, TenantId};
use std::sync::Arc;

/// Records an event reported for a delivery of `tenant`.
pub(crate) fn record_event(
    tx: &mut dyn WriteTx,
    rules: &StoreRules,
    tenant: &TenantId,
    e: &NewEvent,
) -> StoreResult<RecordOutcome> {
    let Some(mut delivery) = tx.delivery(tenant, &e.delivery_id)? else {
        return Ok(RecordOutcome::UnknownDelivery);
    };
    match apply_event(tx, rules, &mut delivery, e)? {
        Some(event) => Ok(RecordOutcome::Recorded { event, delivery }),
        None => {
            // Same event id or same external id: the first one stands.
            let existing = match &e.external_id {
                Some(external) => tx.event_by_external_id(tenant, external)?,
                None => tx.event_by_id(tenant, &e.id)?,
            };
            let event = existing.ok_or_else(|| StoreError::backend("duplicate event vanished"))?;
            let delivery = if event.delivery_id == delivery.id {
                delivery
            } else {
                tx.delivery(tenant, &event.delivery_id)?.unwrap_or(delivery)
            };
            Ok(RecordOutcome::Duplicate {
                event: Arc::new(event),
                delivery,
            })
        }
    }
}

/// The heart of the store: inserts the event, folds it into the delivery's
/// status columns, and applies its effects on the contact and suppressions.
/// Returns `None`, changing nothing, when an event with the same id or
/// external id exists. `delivery` must have been read (and locked) in this
/// transaction; it is kept up to date.
pub(crate) fn apply_event(
    tx: &mut dyn WriteTx,
    rules: &StoreRules,
    delivery: &mut DeliveryRecord,
    e: &NewEvent,
) -> StoreResult<Option<Arc<EventRecord>>> {
    let mut state = state_of(delivery);
    let fold = state.apply(&FoldInput {
        id: &e.id,
        occurred_at: e.occurred_at,
        details: &e.details,
    });
    let record = EventRecord {
        // Numbered by the backend as it is stored.
        seq: 0,
        id: e.id.clone(),
        delivery_id: delivery.id.clone(),
        message_id: delivery.message_id.clone(),
        recipient: delivery.recipient.clone(),
        sender: delivery.sender.clone(),
        occurred_at: e.occurred_at,
        recorded_at: e.recorded_at,
        source: e.source,
        details: e.details.clone(),
        external_id: e.external_id.clone(),
        anomaly: fold.anomaly.map(|a| match a {
            posthorn_core::status::Anomaly::EventAfterDropped => "event_after_dropped".to_owned(),
        }),
        outside_window: fold.outside_window,
    };
    let tenant = delivery.tenant_id.clone();
    let Some(record) = tx.insert_event(&tenant, record)? else {
        return Ok(None);
    };

    // What the delivery was seen to do, as the status: only by events
    // inside its window, and none after it was dropped.
    let seen = if fold.outside_window || record.anomaly.is_some() {
        delivery.seen
    } else {
        delivery.seen.with(&e.details)
    };
    if state != state_of(delivery) || seen != delivery.seen {
        let before = super::stats::before(delivery);
        set_state(delivery, &state);
        delivery.seen = seen;
        delivery.updated_at = e.recorded_at;
        tx.save_delivery_status(delivery)?;
        super::stats::count_change(tx, before, delivery, &record.id, &e.details)?;
    }

    let signals = contact::signals_for(&e.details, &fold, &delivery.stream);
    if !signals.is_empty() {
        apply_contact_signals(tx, rules, delivery, &record, &signals)?;
    }
    Ok(Some(record))
}

fn apply_contact_signals(
    tx: &mut dyn WriteTx,
    rules: &StoreRules,
    delivery: &DeliveryRecord,
    event: &EventRecord,
    signals: &[contact::ContactSignal],
) -> StoreResult<()> {
    let tenant = &delivery.tenant_id;
    let address = &delivery.recipient;
    let now = event.recorded_at;
    let existing = tx.contact(tenant, address)?;
    let mut state = existing.as_ref().map_or_else(
        || ContactState::new(ContactStatus::Active),
        |r| r.state.clone(),
    );
    for signal in signals {
        let effects = contact::apply_signal(&mut state, signal, rules.contact_limits);
        if let Some((from, to, reason)) = effects.status_change {
            let change = ContactChange {
                from,
                to,
                reason: reason.as_str().to_owned(),
                cause_event_id: Some(event.id.clone()),
                at: now,
            };
            tx.insert_contact_change(tenant, address, &change)?;
        }
        if let Some((scope, reason)) = effects.suppress {
            suppress(tx, rules, tenant, address, scope, reason, event)?;
        }
    }
    match existing {
        None => tx.insert_contact(tenant, address, &state, now)?,
        Some(r) if r.state != state => tx.update_contact(tenant, address, &state, now)?,
        Some(_) => {}
    }
    Ok(())
}

/// Adds a suppression entry, caused by `cause` and made when it was
/// recorded, unless an active one for the same target and scope exists
/// already (the backend checks).
fn suppress(
    tx: &mut dyn WriteTx,
    rules: &StoreRules,
    tenant: &TenantId,
    target: &str,
    scope: SuppressionScope,
    reason: SuppressionReason,
    cause: &EventRecord,
) -> StoreResult<()> {
    let now = cause.recorded_at;
    let entry = SuppressionEntry {
        id: SuppressionId::generate().to_string(),
        target: target.to_owned(),
        scope,
        reason,
        cause_event_id: Some(cause.id.clone()),
        created_at: now,
        expires_at: rules.suppression_expiry.expires_at(reason, now),
    };
    tx.insert_suppression(tenant, &entry)
}

/// Makes `address` a contact with `status`, unless it is one already.
pub(crate) fn new_contact(
    tx: &mut dyn WriteTx,
    tenant: &TenantId,
    address: &str,
    status: ContactStatus,
    now: Millis,
) -> StoreResult<()> {
    tx.insert_contact_unless_exists(tenant, address, &ContactState::new(status), now)
}

/// Creates a contact, or confirms (or un-confirms) an opted-in one. A
/// bounced, complained or unsubscribed contact changes only through its
/// own events.
pub(crate) fn put_contact(
    tx: &mut dyn WriteTx,
    tenant: &TenantId,
    address: &str,
    input: ContactInput,
    now: Millis,
) -> StoreResult<ContactRecord> {
    match tx.contact(tenant, address)? {
        None => new_contact(tx, tenant, address, input.status(), now)?,
        Some(existing) => {
            if matches!(
                existing.state.status,
                ContactStatus::Active | ContactStatus::Unconfirmed
            ) {
                let mut state = existing.state;
                state.status = input.status();
                tx.update_contact(tenant, address, &state, now)?;
            }
        }
    }
    tx.contact(tenant, address)?
        .ok_or_else(|| StoreError::backend("contact vanished"))
}

/// The fold state of a delivery, from its status columns.
fn state_of(d: &DeliveryRecord) -> DeliveryState {
    DeliveryState {
        delivery: d
            .delivery_status
            .zip(d.delivery_event_id.clone())
            .map(|(status, event_id)| AxisValue {
                status,
                event_id,
                occurred_at: d.delivery_occurred_at.unwrap_or(d.created_at),
            }),
        engagement: d.engagement_event_id.clone().map(|event_id| AxisValue {
            status: d.engagement_status,
            event_id,
            occurred_at: d.engagement_occurred_at.unwrap_or(d.created_at),
        }),
        window_ends_at: d.window_ends_at,
    }
}

fn set_state(d: &mut DeliveryRecord, s: &DeliveryState) {
    d.delivery_status = s.delivery.as_ref().map(|v| v.status);
    d.delivery_event_id = s.delivery.as_ref().map(|v| v.event_id.clone());
    d.delivery_occurred_at = s.delivery.as_ref().map(|v| v.occurred_at);
    d.engagement_status = s.engagement_status();
    d.engagement_event_id = s.engagement.as_ref().map(|v| v.event_id.clone());
    d.engagement_occurred_at = s.engagement.as_ref().map(|v| v.occurred_at);
}
