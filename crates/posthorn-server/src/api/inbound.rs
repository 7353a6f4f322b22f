//! What the inbound MX received: a tenant's returned mail (bounces,
//! complaints, auto-reply notes), the raw report behind an asynchronous
//! event, and the orphans nobody could be matched to.
//!
//! Orphans belong to no tenant, and their bytes may quote anyone's mail, so
//! only administrators of the operator's tenant (the one `serve` creates on
//! its first start) see them.

use super::{Auth, Segment, invalid_query, page_cursor, page_limit, time};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::extract::{Query, State, rejection::QueryRejection};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use posthorn_core::id::InboundId;
use posthorn_core::inbound::{AttributedBy, OrphanReason};
use posthorn_core::{DeliveryId, EventId, TenantId};
use posthorn_store::{InboundFilter, InboundOutcome, InboundRecord, Scope};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundQuery {
    delivery_id: Option<String>,
    outcome: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

fn inbound_json(m: &InboundRecord) -> Value {
    json!({
        "id": m.id,
        "received_at": time(m.received_at),
        "delivery_id": m.delivery_id,
        "mail_from": m.mail_from,
        "rcpt_to": m.rcpt_to,
        "kind": m.kind.as_str(),
        "outcome": m.outcome.as_str(),
        "orphan_reason": m.orphan_reason.map(OrphanReason::as_str),
        "attribution": m.attribution.map(AttributedBy::as_str),
        "records": m.records,
        "size": m.size,
        "event_ids": m.event_ids,
    })
}

/// `GET /v1/inbound`: the tenant's returned mail, newest first.
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    query: Result<Query<InboundQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    auth.require(Scope::Read)?;
    page(&state, Some(&auth.tenant.id), query).await
}

/// `GET /v1/inbound/orphans`: what could not be attributed.
pub async fn orphans(
    State(state): State<AppState>,
    auth: Auth,
    query: Result<Query<InboundQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    require_operator(&state, &auth).await?;
    page(&state, None, query).await
}

async fn page(
    state: &AppState,
    tenant: Option<&TenantId>,
    query: Result<Query<InboundQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let limit = page_limit(q.limit)?;
    let mut filter = InboundFilter {
        limit,
        ..Default::default()
    };
    if let Some(outcome) = q.outcome {
        filter.outcome = Some(InboundOutcome::parse(&outcome).ok_or_else(|| {
            invalid_query(
                "outcome",
                "outcome is one of recorded, duplicate, note, orphan",
            )
        })?);
    }
    if let Some(id) = q.delivery_id {
        match DeliveryId::parse(&id) {
            Some(id) => filter.delivery_id = Some(id),
            None => return Ok(Json(json!({ "messages": [], "next_cursor": null }))),
        }
    }
    filter.before = page_cursor(q.cursor, InboundId::parse)?;
    let found = state.store.inbound_messages(tenant, &filter).await?;
    let next_cursor = (found.len() as u32 == limit)
        .then(|| found.last().map(|m| m.id.to_string()))
        .flatten();
    Ok(Json(json!({
        "messages": found.iter().map(inbound_json).collect::<Vec<_>>(),
        "next_cursor": next_cursor,
    })))
}

/// `GET /v1/inbound/{id}/raw`: the bytes as received. An orphan's only for
/// the operator's administrators.
pub async fn raw(
    State(state): State<AppState>,
    auth: Auth,
    Segment(id): Segment,
) -> ApiResult<Response> {
    auth.require(Scope::Read)?;
    let id = InboundId::parse(&id).ok_or_else(|| ApiError::not_found("inbound message"))?;
    if let Some(bytes) = state.store.inbound_raw(Some(&auth.tenant.id), &id).await? {
        return Ok(rfc822(bytes));
    }
    if is_operator_admin(&state, &auth).await?
        && let Some(bytes) = state.store.inbound_raw(None, &id).await?
    {
        return Ok(rfc822(bytes));
    }
    Err(ApiError::not_found("inbound message"))
}

/// `GET /v1/events/{id}/raw`: the returned message an asynchronous event
/// was read from.
pub async fn event_raw(
    State(state): State<AppState>,
    auth: Auth,
    Segment(id): Segment,
) -> ApiResult<Response> {
    auth.require(Scope::Read)?;
    let tenant = &auth.tenant.id;
    let id = EventId::parse(&id).ok_or_else(|| ApiError::not_found("event"))?;
    let Some(source) = state.store.event_inbound(tenant, &id).await? else {
        // An event from another provider's webhook: the provider's JSON.
        if let Some(payload) = state.store.provider_payload(tenant, &id).await? {
            return Ok((
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                payload,
            )
                .into_response());
        }
        // Tell "no such event" from "an event without a raw message" (a
        // synchronous bounce's reply is in its details).
        return Err(if state.store.event(tenant, &id).await?.is_some() {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_raw_message",
                "this event was not read from a returned message; its details hold what is known",
            )
        } else {
            ApiError::not_found("event")
        });
    };
    let bytes = state
        .store
        .inbound_raw(Some(tenant), &source)
        .await?
        .ok_or_else(|| ApiError::not_found("event"))?;
    Ok(rfc822(bytes))
}

fn rfc822(bytes: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "message/rfc822"),
            (header::CONTENT_DISPOSITION, "inline"),
        ],
        bytes,
    )
        .into_response()
}

async fn is_operator_admin(state: &AppState, auth: &Auth) -> ApiResult<bool> {
    Ok(auth.key.allows(Scope::Admin)
        && state.store.operator_tenant().await?.as_ref() == Some(&auth.tenant.id))
}

async fn require_operator(state: &AppState, auth: &Auth) -> ApiResult<()> {
    auth.require(Scope::Admin)?;
    if is_operator_admin(state, auth).await? {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "operator_only",
            "orphans are shown only to administrators of the operator's tenant",
        ))
    }
}
