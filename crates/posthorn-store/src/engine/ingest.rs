//! Provider ingest: a verified request's events folded into deliveries
//! (made, source `provider-webhook`, the first time a provider's message
//! and recipient are seen), each event recorded once by any of its keys.

use super::events::{apply_event, new_contact};
use super::{ExternalMessage, ProviderMessageRef, WriteTx};
use crate::ingest::*;
use crate::records::*;
use crate::{StoreError, StoreResult, StoreRules};
use posthorn_core::contact::ContactStatus;
use posthorn_core::{DeliveryId, EventSource, MessageId};

/// Records a verified request's events, all or nothing: the token first
/// (a replay writes nothing), then per event its delivery and the event,
/// unless one of its keys was recorded before.
pub(crate) fn record_provider_events(
    tx: &mut dyn WriteTx,
    rules: &StoreRules,
    b: &ProviderBatch,
) -> StoreResult<ProviderOutcome> {
    // The source must still exist (and be the tenant's): a request that
    // raced its deletion records nothing.
    if !tx.ingest_source_exists(&b.tenant, &b.source)? {
        return Err(StoreError::Conflict("the source was removed".into()));
    }
    if let Some((token, expires_at)) = &b.token
        && !tx.use_ingest_token(&b.source, token, *expires_at, b.now)?
    {
        return Ok(ProviderOutcome::ReplayedToken);
    }
    let mut outcomes = Vec::with_capacity(b.events.len());
    for e in &b.events {
        outcomes.push(record_one(tx, rules, b, e)?);
    }
    Ok(ProviderOutcome::Recorded(outcomes))
}

fn record_one(
    tx: &mut dyn WriteTx,
    rules: &StoreRules,
    b: &ProviderBatch,
    e: &ProviderEvent,
) -> StoreResult<ProviderEventOutcome> {
    let tenant = &b.tenant;
    let mut delivery = find_or_create_delivery(tx, rules, b, e)?;
    for key in &e.keys {
        if let Some(first) = tx.provider_event_key(tenant, key)? {
            // Remember the other keys too, so the next retry is known by
            // whichever of them it keeps.
            tx.remember_provider_keys(tenant, &e.keys, &first)?;
            return Ok(outcome(&delivery, first, true));
        }
    }
    let event = NewEvent {
        id: e.id.clone(),
        delivery_id: delivery.id.clone(),
        occurred_at: e.occurred_at,
        recorded_at: b.now,
        source: EventSource::ProviderWebhook,
        details: e.details.clone(),
        external_id: e.keys.first().cloned(),
    };
    let stored = apply_event(tx, rules, &mut delivery, &event)?;
    let Some(stored) = stored else {
        // The external id is taken by an event recorded otherwise (an
        // administrator's `POST /v1/events` with the same id): it stands.
        let existing = match &event.external_id {
            Some(x) => tx.event_by_external_id(tenant, x)?,
            None => None,
        }
        .ok_or_else(|| StoreError::backend("duplicate provider event vanished"))?;
        return Ok(outcome(&delivery, existing.id, true));
    };
    tx.remember_provider_keys(tenant, &e.keys, &stored.id)?;
    tx.insert_provider_payload(tenant, &stored.id, &b.source, &e.raw)?;
    Ok(outcome(&delivery, stored.id.clone(), false))
}

fn outcome(
    delivery: &DeliveryRecord,
    event_id: posthorn_core::EventId,
    duplicate: bool,
) -> ProviderEventOutcome {
    ProviderEventOutcome {
        event_id,
        delivery_id: delivery.id.clone(),
        message_id: delivery.message_id.clone(),
        duplicate,
    }
}

/// The delivery of a provider's message to a recipient: found by the
/// provider's message id and recipient, else made now with its message
/// (source `provider-webhook`, no queue entry: the provider sends it).
/// Another recipient of a known message joins that message.
fn find_or_create_delivery(
    tx: &mut dyn WriteTx,
    rules: &StoreRules,
    b: &ProviderBatch,
    e: &ProviderEvent,
) -> StoreResult<DeliveryRecord> {
    let tenant = &b.tenant;
    let provider_message = ProviderMessageRef {
        provider: b.provider.as_str(),
        message_id: &e.provider_message_id,
    };
    if let Some(id) = tx.provider_delivery(tenant, &provider_message, &e.recipient)? {
        return tx
            .delivery(tenant, &id)?
            .ok_or_else(|| StoreError::backend("a provider delivery without its delivery"));
    }
    // The window runs from the earliest time known: an event from before
    // its first report still counts.
    let base = e.occurred_at.min(b.now);
    let sender = e.sender.clone().unwrap_or_default();
    let message_id = match tx.provider_message(tenant, &provider_message)? {
        Some(id) => id,
        None => {
            let message = ExternalMessage {
                id: MessageId::generate(),
                tenant: tenant.clone(),
                sender: sender.clone(),
                headers: serde_json::json!({ "X-Provider-Message-Id": e.provider_message_id }),
                metadata: serde_json::json!({
                    "provider": provider_message.provider,
                    "provider_message_id": e.provider_message_id,
                }),
                stream: b.stream.clone(),
                created_at: base,
            };
            tx.insert_external_message(&message)?;
            message.id
        }
    };
    let delivery = DeliveryRecord {
        id: DeliveryId::generate(),
        tenant_id: tenant.clone(),
        message_id,
        recipient: e.recipient.clone(),
        recipient_kind: RecipientKind::To,
        sender,
        stream: b.stream.clone(),
        campaign: None,
        test: false,
        created_at: base,
        window_ends_at: base.saturating_add(rules.status_window),
        delivery_status: None,
        delivery_event_id: None,
        delivery_occurred_at: None,
        engagement_status: posthorn_core::EngagementStatus::None,
        engagement_event_id: None,
        engagement_occurred_at: None,
        updated_at: b.now,
        seen: Default::default(),
    };
    tx.insert_delivery(&delivery)?;
    super::stats::count_new(tx, &delivery)?;
    tx.insert_provider_delivery(&provider_message, &delivery)?;
    // Mail sent to an address makes it a contact, as a submission does
    // (see `accept::admit_recipient`); an existing contact keeps its status.
    new_contact(tx, tenant, &e.recipient, ContactStatus::Active, b.now)?;
    Ok(delivery)
}
