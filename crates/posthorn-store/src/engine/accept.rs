//! Tenants and accepted messages: the sender's domains, idempotency, the
//! message, then per recipient the policy chain, the delivery, its first
//! event and its queue entry.

use super::WriteTx;
use super::events::{apply_event, new_contact};
use crate::records::*;
use crate::{StoreError, StoreResult, StoreRules};
use posthorn_core::contact::ContactStatus;
use posthorn_core::domain::first_refused;
use posthorn_core::event::{Dropped, EventDetails, Queued, Scheduled, SuppressionRef};
use posthorn_core::id::EventId;
use posthorn_core::policy::{self, Admission, RecipientFacts};
use posthorn_core::{Millis, TenantId};
use std::collections::HashSet;

pub(crate) fn create_tenant(tx: &mut dyn WriteTx, name: &str, now: Millis) -> StoreResult<Tenant> {
    if tx.tenant_by_name(name)?.is_some() {
        return Err(StoreError::Conflict(format!("tenant `{name}` exists")));
    }
    let tenant = Tenant {
        id: TenantId::generate(),
        name: name.to_owned(),
        created_at: now,
        campaign_dedupe: None,
        track_opens: None,
        track_clicks: None,
    };
    tx.insert_tenant(&tenant)?;
    Ok(tenant)
}

pub(crate) fn insert_api_key(tx: &mut dyn WriteTx, key: &NewApiKey) -> StoreResult<ApiKeyRecord> {
    tx.insert_api_key(key)?;
    Ok(ApiKeyRecord {
        id: key.id.clone(),
        tenant_id: key.tenant_id.clone(),
        name: key.name.clone(),
        scopes: key.scopes.clone(),
        secret_hash: key.secret_hash.clone(),
        created_at: key.created_at,
        revoked_at: None,
    })
}

/// Accepts a message: the sender's domains, idempotency, the message, then
/// per recipient the policy chain, the delivery, its first event and its
/// queue entry.
pub(crate) fn accept_message(
    tx: &mut dyn WriteTx,
    rules: &StoreRules,
    m: &NewMessage,
) -> StoreResult<AcceptOutcome> {
    if !m.sender_check.domains.is_empty() {
        let domains: Vec<&str> = m.sender_check.domains.iter().map(String::as_str).collect();
        let owners = tx.domain_owners(&super::domains::candidates(&domains))?;
        if let Some((refusal, domain)) = first_refused(
            &m.tenant_id,
            &m.sender_check.domains,
            &owners,
            m.sender_check.require_own_domain,
        ) {
            return Ok(AcceptOutcome::SenderRefused {
                refusal,
                domain: domain.to_owned(),
            });
        }
    }
    if let Some(idem) = &m.idempotency
        && let Some((hash, receipt)) =
            tx.idempotency_record(&m.tenant_id, &idem.key, idem.not_before)?
    {
        if hash != idem.body_hash {
            return Ok(AcceptOutcome::IdempotencyConflict);
        }
        let receipt = serde_json::from_str(&receipt).map_err(|_| StoreError::Corrupt {
            table: "idempotency_keys",
            column: "receipt",
            value: receipt,
        })?;
        return Ok(AcceptOutcome::Replayed(receipt));
    }

    tx.insert_message(m)?;
    let mut receipt = Receipt {
        id: m.id.clone(),
        deliveries: Vec::with_capacity(m.recipients.len()),
    };
    let mut seen = HashSet::new();
    for recipient in &m.recipients {
        let delivery = admit_recipient(tx, rules, m, recipient, &mut seen)?;
        receipt.deliveries.push(ReceiptDelivery {
            id: delivery.id.clone(),
            recipient: delivery.recipient.clone(),
            status: delivery.status().to_owned(),
        });
    }

    if let Some(idem) = &m.idempotency {
        tx.save_idempotency_record(
            &m.tenant_id,
            &idem.key,
            &idem.body_hash,
            &serde_json::to_string(&receipt)?,
            m.accepted_at,
        )?;
    }
    Ok(AcceptOutcome::Accepted(receipt))
}

fn admit_recipient(
    tx: &mut dyn WriteTx,
    rules: &StoreRules,
    m: &NewMessage,
    r: &NewRecipient,
    seen: &mut HashSet<String>,
) -> StoreResult<DeliveryRecord> {
    let now = m.accepted_at;
    let duplicate_in_message = !seen.insert(r.address.clone());
    let suppressions = if r.deliverable_domain {
        tx.suppressions_for(&m.tenant_id, &r.address, now)?
    } else {
        Vec::new()
    };
    let suppression = suppressions
        .iter()
        .find(|s| s.blocks(&r.address, &m.stream, now));
    let duplicate_in_campaign = match (&m.campaign, m.campaign_dedupe && !duplicate_in_message) {
        (Some(campaign), true) => tx.campaign_has_recipient(&m.tenant_id, campaign, &r.address)?,
        _ => false,
    };
    let contact = tx.contact(&m.tenant_id, &r.address)?;
    let admission = policy::admit(&RecipientFacts {
        deliverable_domain: r.deliverable_domain,
        suppression,
        duplicate_in_message,
        duplicate_in_campaign,
        contact: contact.as_ref().map(|c| &c.state),
        stream: &m.stream,
        stream_requires_confirmation: m.stream_requires_confirmation,
        expires_at: m.expires_at,
        send_at: m.send_at,
        now,
    });

    let window_base = m.send_at.map_or(now, |t| t.max(now));
    let mut delivery = DeliveryRecord {
        id: r.delivery_id.clone(),
        tenant_id: m.tenant_id.clone(),
        message_id: m.id.clone(),
        recipient: r.address.clone(),
        recipient_kind: r.kind,
        sender: m.from_address.clone(),
        stream: m.stream.clone(),
        campaign: m.campaign.clone(),
        test: m.test,
        created_at: now,
        window_ends_at: window_base.saturating_add(rules.status_window),
        delivery_status: None,
        delivery_event_id: None,
        delivery_occurred_at: None,
        engagement_status: posthorn_core::EngagementStatus::None,
        engagement_event_id: None,
        engagement_occurred_at: None,
        updated_at: now,
        seen: Default::default(),
    };
    tx.insert_delivery(&delivery)?;
    super::stats::count_new(tx, &delivery)?;

    let details = match &admission {
        Admission::Dropped {
            reason,
            suppression,
        } => EventDetails::Dropped(Dropped {
            reason: *reason,
            suppression: suppression.as_ref().map(|s| SuppressionRef {
                id: s.id.clone(),
                reason: s.reason.as_str().to_owned(),
                stream: s.scope.stream().map(str::to_owned),
                created_at: Some(s.created_at),
            }),
        }),
        Admission::Scheduled { send_at } => {
            EventDetails::Scheduled(Scheduled { send_at: *send_at })
        }
        Admission::Queued => EventDetails::Queued(Queued { size: m.size }),
    };
    let event = NewEvent {
        id: EventId::generate(),
        delivery_id: delivery.id.clone(),
        occurred_at: now,
        recorded_at: now,
        source: m.source,
        details,
        external_id: None,
    };
    apply_event(tx, rules, &mut delivery, &event)?;

    let due_at = match admission {
        Admission::Dropped { .. } => None,
        Admission::Scheduled { send_at } => Some(send_at),
        Admission::Queued => Some(now),
    };
    if let Some(due_at) = due_at {
        tx.enqueue(&m.tenant_id, &delivery.id, due_at, now)?;
        // A test send is tracked like any other but never joins the audience.
        if contact.is_none() && !m.test {
            new_contact(tx, &m.tenant_id, &r.address, ContactStatus::Active, now)?;
        }
    }
    Ok(delivery)
}
