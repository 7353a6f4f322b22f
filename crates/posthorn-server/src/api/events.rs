//! `POST /v1/events`: record an event that happened elsewhere (an operator,
//! a test, a provider adapter). It goes through the same fold and the same
//! contact and suppression effects as every other event.

use super::read::delivery_status_json;
use super::{Auth, TimeInput, parse_json, read_body};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::event_view::EventView;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use posthorn_core::event::EventDetails;
use posthorn_core::{DeliveryId, EventId, EventKind, EventSource};
use posthorn_store::{NewEvent, RecordOutcome, Scope};
use serde::Deserialize;
use serde_json::{Value, json};

/// Largest event body: events are small.
const MAX_EVENT_BODY: u64 = 64 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventInput {
    delivery_id: String,
    kind: String,
    occurred_at: Option<TimeInput>,
    #[serde(default)]
    details: Value,
    external_id: Option<String>,
    /// `admin` (default) or `provider-webhook`.
    source: Option<String>,
}

pub async fn record(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    auth.require(Scope::Admin)?;
    let bytes = read_body(&headers, body, MAX_EVENT_BODY).await?;
    let input: EventInput = parse_json(&bytes)?;
    let kind: EventKind = input.kind.parse().map_err(|_| {
        ApiError::unprocessable(
            "invalid_kind",
            format!("unknown event kind `{}`", input.kind),
        )
        .with_field("kind")
    })?;
    if !input.details.is_null() && !input.details.is_object() {
        return Err(
            ApiError::unprocessable("invalid_details", "details must be an object")
                .with_field("details"),
        );
    }
    let details = EventDetails::from_json(kind, input.details).map_err(|e| {
        ApiError::unprocessable("invalid_details", e.to_string()).with_field("details")
    })?;
    let source = match input.source.as_deref() {
        None | Some("admin") => EventSource::Admin,
        Some("provider-webhook") => EventSource::ProviderWebhook,
        Some(_) => {
            return Err(ApiError::unprocessable(
                "invalid_source",
                "source is `admin` or `provider-webhook`",
            )
            .with_field("source"));
        }
    };
    if let Some(external) = &input.external_id
        && (external.is_empty() || external.len() > 255 || external.chars().any(char::is_control))
    {
        return Err(ApiError::unprocessable(
            "invalid_external_id",
            "external_id is 1 to 255 characters",
        )
        .with_field("external_id"));
    }
    let now = state.now();
    let occurred_at = input
        .occurred_at
        .map(|t| t.to_millis("occurred_at"))
        .transpose()?
        .unwrap_or(now);
    let not_found = || ApiError::not_found("delivery").with_field("delivery_id");
    let delivery_id = DeliveryId::parse(&input.delivery_id).ok_or_else(not_found)?;

    let event = NewEvent {
        id: EventId::generate(),
        delivery_id: delivery_id.clone(),
        occurred_at,
        recorded_at: now,
        source,
        details,
        external_id: input.external_id,
    };
    // The tracker's memory of the delivery is dropped at the commit (see
    // `app::follow_commits`), so the next hit reads the store.
    let recorded = state.store.record_event(&auth.tenant.id, event).await;
    let (status, event, delivery, duplicate) = match recorded? {
        RecordOutcome::Recorded { event, delivery } => {
            (StatusCode::CREATED, event, delivery, false)
        }
        RecordOutcome::Duplicate { event, delivery } => (StatusCode::OK, event, delivery, true),
        RecordOutcome::UnknownDelivery => return Err(not_found()),
    };
    Ok((
        status,
        Json(json!({
            "event": EventView::in_timeline(&event),
            "delivery": delivery_status_json(&delivery),
            "duplicate": duplicate,
        })),
    ))
}
