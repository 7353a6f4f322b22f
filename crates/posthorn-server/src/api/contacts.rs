//! Contacts, the suppression list and tenant settings: the small part of
//! audience management the status model needs now (full management comes in
//! a later issue).

use super::{Auth, Segment, parse_json, read_body, time};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use posthorn_core::address::EmailAddress;
use posthorn_store::{ContactInput, ContactRecord, Scope};
use serde::Deserialize;
use serde_json::{Value, json};

fn normalized(address: &str) -> ApiResult<String> {
    EmailAddress::parse(address.trim())
        .map(|a| a.normalized())
        .map_err(|e| ApiError::unprocessable(e.code(), e.to_string()).with_field("address"))
}

fn contact_json(c: &ContactRecord) -> Value {
    json!({
        "address": c.address,
        "status": c.state.status.as_str(),
        "unsubscribed_streams": c.state.unsubscribed_streams,
        "consecutive_failed_deliveries": c.state.consecutive_failed_deliveries,
        "consecutive_failed_attempts": c.state.consecutive_failed_attempts,
        "created_at": time(c.created_at),
        "updated_at": time(c.updated_at),
    })
}

pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    Segment(address): Segment,
) -> ApiResult<Json<Value>> {
    auth.require(Scope::Read)?;
    let address = normalized(&address)?;
    let tenant = &auth.tenant.id;
    let contact = state
        .store
        .contact(tenant, &address)
        .await?
        .ok_or_else(|| ApiError::not_found("contact"))?;
    let changes = state.store.contact_changes(tenant, &address).await?;
    let mut body = contact_json(&contact);
    body["changes"] = changes
        .iter()
        .map(|c| {
            json!({
                "from": c.from.as_str(), "to": c.to.as_str(), "reason": c.reason,
                "cause_event_id": c.cause_event_id, "at": time(c.at),
            })
        })
        .collect();
    Ok(Json(body))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContactPut {
    status: String,
}

/// Creates a contact as `active` or `unconfirmed`, or confirms one.
pub async fn put(
    State(state): State<AppState>,
    auth: Auth,
    Segment(address): Segment,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    auth.require(Scope::Send)?;
    let address = normalized(&address)?;
    let input: ContactPut = parse_json(&read_body(&headers, body, 4096).await?)?;
    let status = match input.status.as_str() {
        "active" => ContactInput::Active,
        "unconfirmed" => ContactInput::Unconfirmed,
        _ => {
            return Err(ApiError::unprocessable(
                "invalid_status",
                "status is `active` or `unconfirmed`; other statuses come from events",
            )
            .with_field("status"));
        }
    };
    let contact = state
        .store
        .put_contact(&auth.tenant.id, &address, status, state.now())
        .await?;
    Ok(Json(contact_json(&contact)))
}

pub async fn suppressions(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    auth.require(Scope::Read)?;
    let entries = state
        .store
        .suppressions(&auth.tenant.id, state.now())
        .await?;
    Ok(Json(json!({
        "suppressions": entries.iter().map(|s| json!({
            "id": s.id,
            "address": s.target,
            "stream": s.scope.stream(),
            "reason": s.reason.as_str(),
            "cause_event_id": s.cause_event_id,
            "created_at": time(s.created_at),
            "expires_at": s.expires_at.map(time),
        })).collect::<Vec<_>>(),
    })))
}

fn settings_json(state: &AppState, auth_tenant: &posthorn_store::Tenant) -> Value {
    json!({
        "tenant": auth_tenant.name,
        "campaign_dedupe": auth_tenant.campaign_dedupe.unwrap_or(state.config.policy.campaign_dedupe),
        "campaign_dedupe_is_default": auth_tenant.campaign_dedupe.is_none(),
        "track_opens": auth_tenant.track_opens.unwrap_or(state.config.tracking.opens),
        "track_opens_is_default": auth_tenant.track_opens.is_none(),
        "track_clicks": auth_tenant.track_clicks.unwrap_or(state.config.tracking.clicks),
        "track_clicks_is_default": auth_tenant.track_clicks.is_none(),
    })
}

pub async fn get_settings(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    auth.require(Scope::Read)?;
    Ok(Json(settings_json(&state, &auth.tenant)))
}

/// Each setting: `true`/`false`, or `null` to follow the server default
/// again; a setting left out stays as it is.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsPatch {
    #[serde(default, deserialize_with = "present")]
    campaign_dedupe: Option<Option<bool>>,
    #[serde(default, deserialize_with = "present")]
    track_opens: Option<Option<bool>>,
    #[serde(default, deserialize_with = "present")]
    track_clicks: Option<Option<bool>>,
}

/// A field that is present (even as `null`) is `Some`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<bool>>, D::Error> {
    Option::<bool>::deserialize(d).map(Some)
}

pub async fn patch_settings(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    auth.require(Scope::Admin)?;
    let patch: SettingsPatch = parse_json(&read_body(&headers, body, 4096).await?)?;
    let tenant = state
        .store
        .update_tenant_settings(
            &auth.tenant.id,
            posthorn_store::TenantSettingsPatch {
                campaign_dedupe: patch.campaign_dedupe,
                track_opens: patch.track_opens,
                track_clicks: patch.track_clicks,
            },
        )
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    // The tracker remembers each delivery's open-tracking default.
    state.tracker_cache.clear();
    Ok(Json(settings_json(&state, &tenant)))
}
