//! Provider ingest: sources, single-use tokens, and provider events folded
//! into deliveries (created, source `provider-webhook`, the first time a
//! provider's message and recipient are seen).

use super::prepare;
use super::reads::json;
use super::writer::WriteTx;
use super::{reads, writes};
use crate::ingest::*;
use crate::records::*;
use crate::{StoreError, StoreResult, StoreRules};
use posthorn_core::contact::{ContactState, ContactStatus};
use posthorn_core::id::IngestSourceId;
use posthorn_core::{DeliveryId, EventId, EventSource, MessageId, TenantId};
use rusqlite::{Connection, OptionalExtension, Row, params};

const SOURCE_COLUMNS: &str =
    "id, tenant_id, name, token_hash, verification, created_at, pending_confirmation";

fn source_row(r: &Row<'_>) -> rusqlite::Result<IngestSource> {
    Ok(IngestSource {
        id: IngestSourceId::from_stored(r.get(0)?),
        tenant_id: TenantId::from_stored(r.get(1)?),
        name: r.get(2)?,
        token_hash: r.get(3)?,
        verification: json(r, 4, "ingest_sources", "verification")?,
        created_at: r.get(5)?,
        pending_confirmation: r.get(6)?,
    })
}

pub(crate) fn create_source(c: &Connection, s: &IngestSource) -> StoreResult<IngestSource> {
    prepare(
        c,
        "INSERT INTO ingest_sources (id, tenant_id, name, provider, token_hash, verification, created_at, \
         pending_confirmation) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )?
    .execute(params![
        s.id.as_str(),
        s.tenant_id.as_str(),
        s.name,
        s.provider().as_str(),
        s.token_hash,
        serde_json::to_string(&s.verification)?,
        s.created_at,
        s.pending_confirmation
    ])?;
    Ok(s.clone())
}

pub(crate) fn sources(c: &Connection, tenant: &TenantId) -> StoreResult<Vec<IngestSource>> {
    let sql =
        format!("SELECT {SOURCE_COLUMNS} FROM ingest_sources WHERE tenant_id = $1 ORDER BY id");
    let rows = prepare(c, &sql)?
        .query_map([tenant.as_str()], source_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub(crate) fn source_by_token(
    c: &Connection,
    token_hash: &str,
) -> StoreResult<Option<IngestSource>> {
    let sql = format!("SELECT {SOURCE_COLUMNS} FROM ingest_sources WHERE token_hash = $1");
    Ok(prepare(c, &sql)?
        .query_row([token_hash], source_row)
        .optional()?)
}

pub(crate) fn delete_source(
    c: &Connection,
    tenant: &TenantId,
    id: &IngestSourceId,
) -> StoreResult<bool> {
    let n = prepare(
        c,
        "DELETE FROM ingest_sources WHERE id = $1 AND tenant_id = $2",
    )?
    .execute([id.as_str(), tenant.as_str()])?;
    if n > 0 {
        prepare(c, "DELETE FROM ingest_tokens WHERE source_id = $1")?.execute([id.as_str()])?;
    }
    Ok(n > 0)
}

pub(crate) fn set_pending_confirmation(
    c: &Connection,
    tenant: &TenantId,
    id: &IngestSourceId,
    url: Option<&str>,
) -> StoreResult<bool> {
    let n = prepare(
        c,
        "UPDATE ingest_sources SET pending_confirmation = $1 WHERE id = $2 AND tenant_id = $3",
    )?
    .execute(params![url, id.as_str(), tenant.as_str()])?;
    Ok(n > 0)
}

pub(crate) fn payload(
    c: &Connection,
    tenant: &TenantId,
    event: &EventId,
) -> StoreResult<Option<Vec<u8>>> {
    Ok(prepare(
        c,
        "SELECT payload FROM provider_payloads WHERE tenant_id = $1 AND event_id = $2",
    )?
    .query_row([tenant.as_str(), event.as_str()], |r| r.get(0))
    .optional()?)
}

/// Records a verified request's events, all or nothing: the token first
/// (a replay writes nothing), then per event its delivery (found by the
/// provider's message id and recipient, or created) and the event, unless
/// one of its keys was recorded before.
pub(crate) fn record_batch(
    c: &WriteTx<'_>,
    rules: &StoreRules,
    b: &ProviderBatch,
) -> StoreResult<ProviderOutcome> {
    // The source must still exist (and be the tenant's): a request that
    // raced its deletion records nothing.
    let live: bool = prepare(
        c,
        "SELECT EXISTS (SELECT 1 FROM ingest_sources WHERE id = $1 AND tenant_id = $2)",
    )?
    .query_row([b.source.as_str(), b.tenant.as_str()], |r| r.get(0))?;
    if !live {
        return Err(StoreError::Conflict("the source was removed".into()));
    }
    if let Some((token, expires_at)) = &b.token {
        prepare(c, "DELETE FROM ingest_tokens WHERE expires_at < $1")?.execute([b.now])?;
        let inserted = prepare(
            c,
            "INSERT INTO ingest_tokens (source_id, token, expires_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )?
        .execute(params![b.source.as_str(), token, expires_at])?;
        if inserted == 0 {
            return Ok(ProviderOutcome::ReplayedToken);
        }
    }
    let mut outcomes = Vec::with_capacity(b.events.len());
    for e in &b.events {
        outcomes.push(record_one(c, rules, b, e)?);
    }
    Ok(ProviderOutcome::Recorded(outcomes))
}

fn record_one(
    c: &WriteTx<'_>,
    rules: &StoreRules,
    b: &ProviderBatch,
    e: &ProviderEvent,
) -> StoreResult<ProviderEventOutcome> {
    let tenant = &b.tenant;
    let mut delivery = find_or_create_delivery(c, rules, b, e)?;
    for key in &e.keys {
        let first: Option<String> = prepare(
            c,
            "SELECT event_id FROM provider_event_keys WHERE tenant_id = $1 AND key = $2",
        )?
        .query_row([tenant.as_str(), key.as_str()], |r| r.get(0))
        .optional()?;
        if let Some(first) = first {
            // Remember the other keys too, so the next retry is known by
            // whichever of them it keeps.
            remember_keys(c, tenant, &e.keys, &first)?;
            return Ok(ProviderEventOutcome {
                event_id: EventId::from_stored(first),
                delivery_id: delivery.id.clone(),
                message_id: delivery.message_id.clone(),
                duplicate: true,
            });
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
    let Some(stored) = writes::apply_event(c, rules, &mut delivery, &event)? else {
        // The external id is taken by an event recorded otherwise (an
        // administrator's `POST /v1/events` with the same id): it stands.
        let existing = match &event.external_id {
            Some(x) => reads::event_by_external_id(c, tenant, x)?,
            None => None,
        }
        .ok_or_else(|| StoreError::backend("duplicate provider event vanished"))?;
        return Ok(ProviderEventOutcome {
            event_id: existing.id,
            delivery_id: delivery.id.clone(),
            message_id: delivery.message_id.clone(),
            duplicate: true,
        });
    };
    remember_keys(c, tenant, &e.keys, stored.id.as_str())?;
    prepare(
        c,
        "INSERT INTO provider_payloads (tenant_id, event_id, source_id, payload) VALUES ($1, $2, $3, $4)",
    )?
    .execute(params![tenant.as_str(), stored.id.as_str(), b.source.as_str(), e.raw])?;
    Ok(ProviderEventOutcome {
        event_id: stored.id.clone(),
        delivery_id: delivery.id.clone(),
        message_id: delivery.message_id.clone(),
        duplicate: false,
    })
}

fn remember_keys(
    c: &Connection,
    tenant: &TenantId,
    keys: &[String],
    event_id: &str,
) -> StoreResult<()> {
    for key in keys {
        prepare(
            c,
            "INSERT INTO provider_event_keys (tenant_id, key, event_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )?
        .execute(params![tenant.as_str(), key, event_id])?;
    }
    Ok(())
}

/// The delivery of a provider's message to a recipient: found by the
/// provider's message id and recipient, else made now with its message
/// (source `provider-webhook`, no queue entry: the provider sends it).
/// Another recipient of a known message joins that message.
fn find_or_create_delivery(
    c: &WriteTx<'_>,
    rules: &StoreRules,
    b: &ProviderBatch,
    e: &ProviderEvent,
) -> StoreResult<DeliveryRecord> {
    let tenant = &b.tenant;
    let provider = b.provider.as_str();
    let found: Option<String> = prepare(
        c,
        "SELECT delivery_id FROM provider_deliveries WHERE tenant_id = $1 AND provider = $2 \
         AND provider_message_id = $3 AND recipient = $4",
    )?
    .query_row(
        params![
            tenant.as_str(),
            provider,
            e.provider_message_id,
            e.recipient
        ],
        |r| r.get(0),
    )
    .optional()?;
    if let Some(id) = found {
        return reads::delivery(c, tenant, &DeliveryId::from_stored(id))?
            .ok_or_else(|| StoreError::backend("a provider delivery without its delivery"));
    }
    let message: Option<String> = prepare(
        c,
        "SELECT message_id FROM provider_deliveries WHERE tenant_id = $1 AND provider = $2 \
         AND provider_message_id = $3 LIMIT 1",
    )?
    .query_row(
        params![tenant.as_str(), provider, e.provider_message_id],
        |r| r.get(0),
    )
    .optional()?;
    // The window runs from the earliest time known: an event from before
    // its first report still counts.
    let base = e.occurred_at.min(b.now);
    let sender = e.sender.clone().unwrap_or_default();
    let message_id = match message {
        Some(id) => MessageId::from_stored(id),
        None => {
            let id = MessageId::generate();
            let headers = serde_json::json!({ "X-Provider-Message-Id": e.provider_message_id });
            prepare(
                c,
                "INSERT INTO messages (id, tenant_id, from_header, from_address, subject, headers, tags, metadata, \
                 stream, test, size, source, created_at) \
                 VALUES ($1, $2, $3, $4, '', $5, '[]', $6, $7, 0, 0, $8, $9)",
            )?
            .execute(params![
                id.as_str(),
                tenant.as_str(),
                sender,
                sender,
                headers.to_string(),
                serde_json::json!({ "provider": provider, "provider_message_id": e.provider_message_id })
                    .to_string(),
                b.stream,
                EventSource::ProviderWebhook.as_str(),
                base
            ])?;
            id
        }
    };
    let delivery = DeliveryRecord {
        id: DeliveryId::generate(),
        tenant_id: tenant.clone(),
        message_id: message_id.clone(),
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
    };
    writes::insert_delivery(c, &delivery)?;
    prepare(
        c,
        "INSERT INTO provider_deliveries (tenant_id, provider, provider_message_id, recipient, message_id, delivery_id) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )?
    .execute(params![
        tenant.as_str(),
        provider,
        e.provider_message_id,
        e.recipient,
        message_id.as_str(),
        delivery.id.as_str()
    ])?;
    // Mail sent to an address makes it a contact, as a submission does
    // (see `writes::accept_message`); an existing contact keeps its status.
    writes::save_contact(
        c,
        tenant,
        &e.recipient,
        &ContactState::new(ContactStatus::Active),
        b.now,
        true,
    )?;
    Ok(delivery)
}
