//! Writes: the operations the writer thread runs inside its transaction.
//! Each one reads the facts it needs, asks the rule in `posthorn-core`, and
//! writes the outcome, so a decision and its effects are one atomic step.

use super::prepare;
use super::reads;
use super::writer::WriteTx;
use crate::records::*;
use crate::{StoreError, StoreResult, StoreRules};
use posthorn_core::contact::{self, ContactState, ContactStatus};
use posthorn_core::domain::first_refused;
use posthorn_core::event::{Dropped, EventDetails, Queued, Scheduled, SuppressionRef};
use posthorn_core::id::EventId;
use posthorn_core::policy::{self, Admission, RecipientFacts};
use posthorn_core::status::{AxisValue, DeliveryState, FoldInput};
use posthorn_core::suppression::{SuppressionReason, SuppressionScope};
use posthorn_core::{Millis, TenantId};
use rusqlite::{Connection, params};
use std::sync::Arc;

pub(crate) fn create_tenant(c: &Connection, name: &str, now: Millis) -> StoreResult<Tenant> {
    if reads::tenant_by_name(c, name)?.is_some() {
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
    prepare(
        c,
        "INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)",
    )?
    .execute(params![tenant.id.as_str(), name, now])?;
    Ok(tenant)
}

pub(crate) fn insert_api_key(c: &Connection, key: &NewApiKey) -> StoreResult<ApiKeyRecord> {
    let scopes: Vec<&str> = key.scopes.iter().map(|s| s.as_str()).collect();
    prepare(
        c,
        "INSERT INTO api_keys (id, tenant_id, name, scopes, secret_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )?
    .execute(params![
        key.id.as_str(),
        key.tenant_id.as_str(),
        key.name,
        scopes.join(","),
        key.secret_hash,
        key.created_at
    ])?;
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

/// Accepts a message: the sender's domains, idempotency, the message row,
/// then per recipient the policy chain, the delivery row, its first event
/// and its queue entry.
pub(crate) fn accept_message(
    c: &WriteTx<'_>,
    rules: &StoreRules,
    m: &NewMessage,
) -> StoreResult<AcceptOutcome> {
    let now = m.accepted_at;
    if !m.sender_check.domains.is_empty() {
        let domains: Vec<&str> = m.sender_check.domains.iter().map(String::as_str).collect();
        let owners = super::domains::owners(c, &super::domains::candidates(&domains))?;
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
    if let Some(idem) = &m.idempotency {
        let previous = prepare(
            c,
            "SELECT body_hash, receipt FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 AND created_at >= $3",
        )?
        .query_row(params![m.tenant_id.as_str(), idem.key, idem.not_before], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        });
        match previous {
            Ok((hash, _)) if hash != idem.body_hash => {
                return Ok(AcceptOutcome::IdempotencyConflict);
            }
            Ok((_, receipt)) => {
                let receipt = serde_json::from_str(&receipt).map_err(|_| StoreError::Corrupt {
                    table: "idempotency_keys",
                    column: "receipt",
                    value: receipt,
                })?;
                return Ok(AcceptOutcome::Replayed(receipt));
            }
            Err(rusqlite::Error::QueryReturnedNoRows) => {}
            Err(e) => return Err(e.into()),
        }
    }

    insert_message(c, m)?;
    let mut receipt = Receipt {
        id: m.id.clone(),
        deliveries: Vec::with_capacity(m.recipients.len()),
    };
    let mut seen = std::collections::HashSet::new();
    for recipient in &m.recipients {
        let delivery = admit_recipient(c, rules, m, recipient, &mut seen)?;
        receipt.deliveries.push(ReceiptDelivery {
            id: delivery.id.clone(),
            recipient: delivery.recipient.clone(),
            status: delivery.status().to_owned(),
        });
    }

    if let Some(idem) = &m.idempotency {
        prepare(
            c,
            "INSERT INTO idempotency_keys (tenant_id, key, body_hash, receipt, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (tenant_id, key) DO UPDATE SET body_hash = excluded.body_hash, \
             receipt = excluded.receipt, created_at = excluded.created_at",
        )?
        .execute(params![
            m.tenant_id.as_str(),
            idem.key,
            idem.body_hash,
            serde_json::to_string(&receipt)?,
            now
        ])?;
    }
    Ok(AcceptOutcome::Accepted(receipt))
}

fn insert_message(c: &Connection, m: &NewMessage) -> StoreResult<()> {
    prepare(
        c,
        "INSERT INTO messages (id, tenant_id, from_header, from_address, reply_to, subject, text_body, html_body, \
         headers, tags, metadata, stream, campaign, test, send_at, expires_at, tracking_opens, tracking_clicks, \
         size, source, created_at, to_header, cc_header, raw_mime) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24)",
    )?
    .execute(params![
        m.id.as_str(),
        m.tenant_id.as_str(),
        m.content.from,
        m.from_address,
        m.content.reply_to,
        m.content.subject,
        m.content.text,
        m.content.html,
        m.content.headers.to_string(),
        serde_json::to_string(&m.content.tags)?,
        m.content.metadata.to_string(),
        m.stream,
        m.campaign,
        m.test,
        m.send_at,
        m.expires_at,
        m.tracking_opens,
        m.tracking_clicks,
        m.size as i64,
        m.source.as_str(),
        m.accepted_at,
        mailbox_list(&m.content.to)?,
        mailbox_list(&m.content.cc)?,
        m.content.raw_mime
    ])?;
    Ok(())
}

/// A To or Cc list as stored: a JSON array of `{"name", "address"}`, NULL
/// when empty (see `reads::mailbox_list`).
fn mailbox_list(list: &[posthorn_core::address::Mailbox]) -> StoreResult<Option<String>> {
    Ok(if list.is_empty() {
        None
    } else {
        Some(serde_json::to_string(list)?)
    })
}

fn admit_recipient(
    c: &WriteTx<'_>,
    rules: &StoreRules,
    m: &NewMessage,
    r: &NewRecipient,
    seen: &mut std::collections::HashSet<String>,
) -> StoreResult<DeliveryRecord> {
    let now = m.accepted_at;
    let duplicate_in_message = !seen.insert(r.address.clone());
    let suppressions = if r.deliverable_domain {
        reads::suppressions_for(c, &m.tenant_id, &r.address, now)?
    } else {
        Vec::new()
    };
    let suppression = suppressions
        .iter()
        .find(|s| s.blocks(&r.address, &m.stream, now));
    let duplicate_in_campaign = match (&m.campaign, m.campaign_dedupe && !duplicate_in_message) {
        (Some(campaign), true) => prepare(
            c,
            "SELECT EXISTS (SELECT 1 FROM deliveries WHERE tenant_id = $1 AND campaign = $2 AND recipient = $3 \
             AND delivery_status <> 'dropped')",
        )?
        .query_row(params![m.tenant_id.as_str(), campaign, r.address], |row| row.get::<_, bool>(0))?,
        _ => false,
    };
    let contact = reads::contact(c, &m.tenant_id, &r.address)?;
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
    };
    insert_delivery(c, &delivery)?;

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
    apply_event(c, rules, &mut delivery, &event)?;

    let due_at = match admission {
        Admission::Dropped { .. } => None,
        Admission::Scheduled { send_at } => Some(send_at),
        Admission::Queued => Some(now),
    };
    if let Some(due_at) = due_at {
        prepare(
            c,
            "INSERT INTO send_queue (delivery_id, tenant_id, due_at, attempts, created_at) VALUES ($1, $2, $3, 0, $4)",
        )?
        .execute(params![delivery.id.as_str(), m.tenant_id.as_str(), due_at, now])?;
        // A test send is tracked like any other but never joins the audience.
        if contact.is_none() && !m.test {
            save_contact(
                c,
                &m.tenant_id,
                &r.address,
                &ContactState::new(ContactStatus::Active),
                now,
                true,
            )?;
        }
    }
    Ok(delivery)
}

pub(crate) fn insert_delivery(c: &Connection, d: &DeliveryRecord) -> StoreResult<()> {
    prepare(
        c,
        "INSERT INTO deliveries (id, tenant_id, message_id, recipient, recipient_kind, sender, stream, campaign, test, \
         created_at, window_ends_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )?
    .execute(params![
        d.id.as_str(),
        d.tenant_id.as_str(),
        d.message_id.as_str(),
        d.recipient,
        d.recipient_kind.as_str(),
        d.sender,
        d.stream,
        d.campaign,
        d.test,
        d.created_at,
        d.window_ends_at,
        d.updated_at
    ])?;
    Ok(())
}

/// Records an event reported for a delivery of `tenant`.
pub(crate) fn record_event(
    c: &WriteTx<'_>,
    rules: &StoreRules,
    tenant: &TenantId,
    e: &NewEvent,
) -> StoreResult<RecordOutcome> {
    let Some(mut delivery) = reads::delivery(c, tenant, &e.delivery_id)? else {
        return Ok(RecordOutcome::UnknownDelivery);
    };
    match apply_event(c, rules, &mut delivery, e)? {
        Some(event) => Ok(RecordOutcome::Recorded { event, delivery }),
        None => {
            // Same event id or same external id: the first one stands.
            let existing = match &e.external_id {
                Some(external) => reads::event_by_external_id(c, tenant, external)?,
                None => reads::event_by_id(c, tenant, &e.id)?,
            };
            let event = existing.ok_or_else(|| StoreError::backend("duplicate event vanished"))?;
            let delivery = reads::delivery(c, tenant, &event.delivery_id)?.unwrap_or(delivery);
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
/// external id exists (the unique indexes decide, so the common case costs
/// no extra lookup).
pub(crate) fn apply_event(
    c: &WriteTx<'_>,
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
        seq: c.next_event_seq(),
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
    let inserted = prepare(
        c,
        "INSERT INTO events (id, tenant_id, delivery_id, message_id, recipient, sender, kind, occurred_at, \
         recorded_at, source, details, external_id, anomaly, outside_window, seq) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) ON CONFLICT DO NOTHING",
    )?
    .execute(params![
        record.id.as_str(),
        delivery.tenant_id.as_str(),
        record.delivery_id.as_str(),
        record.message_id.as_str(),
        record.recipient,
        record.sender,
        record.kind().as_str(),
        record.occurred_at,
        record.recorded_at,
        record.source.as_str(),
        record.details.to_json().to_string(),
        record.external_id,
        record.anomaly,
        record.outside_window,
        record.seq
    ])?;
    if inserted == 0 {
        return Ok(None);
    }
    let record = Arc::new(record);
    c.stored(record.clone());

    if state != state_of(delivery) {
        set_state(delivery, &state);
        delivery.updated_at = e.recorded_at;
        save_status(c, delivery)?;
    }

    let signals = contact::signals_for(&e.details, &fold, &delivery.stream);
    if !signals.is_empty() {
        apply_contact_signals(c, rules, delivery, &record, &signals)?;
    }
    Ok(Some(record))
}

fn apply_contact_signals(
    c: &Connection,
    rules: &StoreRules,
    delivery: &DeliveryRecord,
    event: &EventRecord,
    signals: &[contact::ContactSignal],
) -> StoreResult<()> {
    let tenant = &delivery.tenant_id;
    let now = event.recorded_at;
    let existing = reads::contact(c, tenant, &delivery.recipient)?;
    let mut state = existing.as_ref().map_or_else(
        || ContactState::new(ContactStatus::Active),
        |r| r.state.clone(),
    );
    for signal in signals {
        let effects = contact::apply_signal(&mut state, signal, rules.contact_limits);
        if let Some((from, to, reason)) = effects.status_change {
            prepare(
                c,
                "INSERT INTO contact_changes (id, tenant_id, address, from_status, to_status, reason, cause_event_id, at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )?
            .execute(params![
                EventId::generate().as_str(),
                tenant.as_str(),
                delivery.recipient,
                from.as_str(),
                to.as_str(),
                reason.as_str(),
                event.id.as_str(),
                now
            ])?;
        }
        if let Some((scope, reason)) = effects.suppress {
            suppress(
                c,
                rules,
                tenant,
                &delivery.recipient,
                &scope,
                reason,
                Some(&event.id),
                now,
            )?;
        }
    }
    if existing.as_ref().is_none_or(|r| r.state != state) {
        save_contact(
            c,
            tenant,
            &delivery.recipient,
            &state,
            now,
            existing.is_none(),
        )?;
    }
    Ok(())
}

/// Adds a suppression entry unless an active one for the same target and
/// scope exists already.
#[allow(clippy::too_many_arguments)]
fn suppress(
    c: &Connection,
    rules: &StoreRules,
    tenant: &TenantId,
    target: &str,
    scope: &SuppressionScope,
    reason: SuppressionReason,
    cause: Option<&EventId>,
    now: Millis,
) -> StoreResult<()> {
    let stream = scope.stream();
    let exists: bool = prepare(
        c,
        "SELECT EXISTS (SELECT 1 FROM suppressions WHERE tenant_id = $1 AND target = $2 \
         AND COALESCE(stream, '') = COALESCE($3, '') AND removed_at IS NULL \
         AND (expires_at IS NULL OR expires_at > $4))",
    )?
    .query_row(params![tenant.as_str(), target, stream, now], |r| r.get(0))?;
    if exists {
        return Ok(());
    }
    prepare(
        c,
        "INSERT INTO suppressions (id, tenant_id, target, stream, reason, cause_event_id, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )?
    .execute(params![
        reads::new_suppression_id(),
        tenant.as_str(),
        target,
        stream,
        reason.as_str(),
        cause.map(|e| e.as_str()),
        now,
        rules.suppression_expiry.expires_at(reason, now)
    ])?;
    Ok(())
}

pub(crate) fn save_contact(
    c: &Connection,
    tenant: &TenantId,
    address: &str,
    s: &ContactState,
    now: Millis,
    new: bool,
) -> StoreResult<()> {
    let streams = serde_json::to_string(&s.unsubscribed_streams)?;
    if new {
        prepare(
            c,
            "INSERT INTO contacts (tenant_id, address, status, unsubscribed_streams, consecutive_failed_deliveries, \
             consecutive_failed_attempts, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
             ON CONFLICT (tenant_id, address) DO NOTHING",
        )?
        .execute(params![
            tenant.as_str(),
            address,
            s.status.as_str(),
            streams,
            s.consecutive_failed_deliveries,
            s.consecutive_failed_attempts,
            now
        ])?;
    } else {
        prepare(
            c,
            "UPDATE contacts SET status = $1, unsubscribed_streams = $2, consecutive_failed_deliveries = $3, \
             consecutive_failed_attempts = $4, updated_at = $5 WHERE tenant_id = $6 AND address = $7",
        )?
        .execute(params![
            s.status.as_str(),
            streams,
            s.consecutive_failed_deliveries,
            s.consecutive_failed_attempts,
            now,
            tenant.as_str(),
            address
        ])?;
    }
    Ok(())
}

pub(crate) fn put_contact(
    c: &Connection,
    tenant: &TenantId,
    address: &str,
    input: ContactInput,
    now: Millis,
) -> StoreResult<ContactRecord> {
    match reads::contact(c, tenant, address)? {
        None => save_contact(
            c,
            tenant,
            address,
            &ContactState::new(input.status()),
            now,
            true,
        )?,
        Some(existing) => {
            // Only opt-in states may be set directly; a bounced, complained or
            // unsubscribed contact changes through its own events.
            if matches!(
                existing.state.status,
                ContactStatus::Active | ContactStatus::Unconfirmed
            ) {
                let mut state = existing.state;
                state.status = input.status();
                save_contact(c, tenant, address, &state, now, false)?;
            }
        }
    }
    reads::contact(c, tenant, address)?.ok_or_else(|| StoreError::backend("contact vanished"))
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

fn save_status(c: &Connection, d: &DeliveryRecord) -> StoreResult<()> {
    prepare(
        c,
        "UPDATE deliveries SET delivery_status = $1, bounce_type = $2, delivery_event_id = $3, \
         delivery_occurred_at = $4, engagement_status = $5, engagement_event_id = $6, engagement_occurred_at = $7, \
         updated_at = $8 WHERE id = $9",
    )?
    .execute(params![
        d.delivery_status.map(|s| s.as_str()),
        d.delivery_status.and_then(|s| s.bounce_type()).map(|b| b.as_str()),
        d.delivery_event_id.as_ref().map(|e| e.as_str()),
        d.delivery_occurred_at,
        (d.engagement_event_id.is_some()).then(|| d.engagement_status.as_str()),
        d.engagement_event_id.as_ref().map(|e| e.as_str()),
        d.engagement_occurred_at,
        d.updated_at,
        d.id.as_str()
    ])?;
    Ok(())
}

/// Takes due queue entries whose lease is free or has run out, leases them
/// to `node` and counts the attempt.
pub(crate) fn claim_due(
    c: &Connection,
    node: &posthorn_core::NodeId,
    now: Millis,
    limit: u32,
    lease_until: Millis,
) -> StoreResult<Vec<ClaimedDelivery>> {
    let mut stmt = prepare(
        c,
        "SELECT delivery_id, tenant_id, attempts FROM send_queue \
         WHERE due_at <= $1 AND (lease_until IS NULL OR lease_until < $1) ORDER BY due_at LIMIT $2",
    )?;
    let due: Vec<(String, String, u32)> = stmt
        .query_map(params![now, limit], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    drop(stmt);
    let mut messages: std::collections::HashMap<String, std::sync::Arc<MessageRecord>> =
        Default::default();
    let mut tenants: std::collections::HashMap<String, std::sync::Arc<Tenant>> = Default::default();
    let mut claimed = Vec::with_capacity(due.len());
    for (delivery_id, tenant_id, attempts) in due {
        prepare(
            c,
            "UPDATE send_queue SET lease_owner = $1, lease_until = $2, attempts = attempts + 1 \
             WHERE delivery_id = $3",
        )?
        .execute(params![node.as_str(), lease_until, delivery_id])?;
        let tenant = TenantId::from_stored(tenant_id);
        let id = posthorn_core::DeliveryId::from_stored(delivery_id);
        let Some(delivery) = reads::delivery(c, &tenant, &id)? else {
            continue;
        };
        let message = match messages.get(delivery.message_id.as_str()) {
            Some(m) => m.clone(),
            None => {
                let Some(m) = reads::message(c, &tenant, &delivery.message_id)? else {
                    continue;
                };
                let m = std::sync::Arc::new(m);
                messages.insert(delivery.message_id.to_string(), m.clone());
                m
            }
        };
        let tenant = match tenants.get(tenant.as_str()) {
            Some(t) => t.clone(),
            None => {
                let Some(t) = reads::tenant_by_id(c, &tenant)? else {
                    continue;
                };
                let t = std::sync::Arc::new(t);
                tenants.insert(tenant.to_string(), t.clone());
                t
            }
        };
        claimed.push(ClaimedDelivery {
            delivery,
            message,
            tenant,
            attempt: attempts + 1,
        });
    }
    Ok(claimed)
}

/// Records an attempt's events and moves its queue entry (when it has an
/// outcome), in the caller's transaction.
pub(crate) fn record_attempt(
    c: &WriteTx<'_>,
    rules: &StoreRules,
    attempt: &AttemptRecord,
) -> StoreResult<Vec<Arc<EventRecord>>> {
    let delivery_id = &attempt.delivery;
    let Some(mut delivery) = reads::delivery(c, &attempt.tenant, delivery_id)? else {
        return Err(StoreError::backend(format!(
            "no delivery {delivery_id} to record an attempt of"
        )));
    };
    let mut recorded = Vec::with_capacity(attempt.events.len());
    for event in &attempt.events {
        recorded.extend(apply_event(c, rules, &mut delivery, event)?);
    }
    match attempt.next {
        None => {}
        Some(QueueNext::Remove) => {
            prepare(c, "DELETE FROM send_queue WHERE delivery_id = $1")?
                .execute([delivery_id.as_str()])?;
        }
        Some(QueueNext::RetryAt(at)) => {
            prepare(
                c,
                "UPDATE send_queue SET due_at = $1, lease_owner = NULL, lease_until = NULL \
                 WHERE delivery_id = $2",
            )?
            .execute(params![at, delivery_id.as_str()])?;
        }
    }
    Ok(recorded)
}
