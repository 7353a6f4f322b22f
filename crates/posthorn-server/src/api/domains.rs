//! `GET/POST/DELETE /v1/domains`: a tenant's sending domains, for its
//! admins. Adding a domain claims it for the tenant (unless another tenant
//! owns it, a parent or a child) and creates its DKIM key; the answer
//! carries the DNS record to publish.

use super::{Auth, Segment, parse_json, read_body, time};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::sending_domains::{self, DomainError, DomainView, ExistingKey};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use posthorn_store::Scope;
use serde::Deserialize;
use serde_json::{Value, json};

/// The largest body `POST /v1/domains` reads.
const MAX_BODY: u64 = 4 * 1024;

/// The body of `POST /v1/domains`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDomain {
    pub domain: String,
    /// The DKIM selector of the key made for it.
    pub selector: Option<String>,
}

/// Reads `POST /v1/domains`'s body and checks its names: every refusal
/// that comes from the body alone. (The fuzz target calls this directly:
/// what follows, a claim and an RSA key, is not outside input.)
pub fn read_new_domain(bytes: &[u8]) -> ApiResult<NewDomain> {
    let new: NewDomain = parse_json(bytes)?;
    sending_domains::names(&new.domain, new.selector.as_deref())?;
    Ok(new)
}

fn domain_json(view: &DomainView) -> Value {
    json!({
        "domain": view.domain,
        "created_at": time(view.created_at),
        "dns_records": view.keys.iter().map(|k| json!({
            "purpose": "dkim",
            "type": "TXT",
            "name": k.record.name,
            "value": k.record.value,
            "selector": k.selector,
            "active": k.active,
        })).collect::<Vec<_>>(),
    })
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::InvalidDomain(m) => {
                ApiError::unprocessable("invalid_domain", m.to_string()).with_field("domain")
            }
            DomainError::InvalidSelector(m) => {
                ApiError::unprocessable("invalid_selector", m.to_string()).with_field("selector")
            }
            DomainError::Taken { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "domain_taken",
                // Which tenant owns it is not this tenant's business.
                "this domain, a parent or a subdomain of it belongs to another tenant",
            )
            .with_field("domain"),
            e @ DomainError::KeyWithoutOwner { .. } => {
                ApiError::new(StatusCode::CONFLICT, "domain_key_unassigned", e.to_string())
                    .with_field("domain")
            }
            DomainError::NotFound(_) => ApiError::not_found("sending domain"),
            DomainError::Key(detail) => {
                tracing::error!(%detail, "DKIM keys");
                ApiError::internal()
            }
            DomainError::Store(e) => e.into(),
        }
    }
}

pub async fn list(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    auth.require(Scope::Admin)?;
    let domains =
        sending_domains::list(&*state.store, &state.dkim_home, Some(&auth.tenant.id)).await?;
    Ok(Json(json!({
        "domains": domains.iter().map(|(_, d)| domain_json(d)).collect::<Vec<_>>(),
    })))
}

pub async fn add(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    auth.require(Scope::Admin)?;
    let bytes = read_body(&headers, body, MAX_BODY).await?;
    let new = read_new_domain(&bytes)?;
    let (view, created) = sending_domains::add(
        &*state.store,
        &state.dkim_home,
        &auth.tenant.id,
        &new.domain,
        new.selector.as_deref(),
        ExistingKey::Refuse,
        state.now(),
    )
    .await?;
    reload_keys(&state).await;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(domain_json(&view))).into_response())
}

pub async fn remove(
    State(state): State<AppState>,
    auth: Auth,
    Segment(domain): Segment,
) -> ApiResult<StatusCode> {
    auth.require(Scope::Admin)?;
    sending_domains::remove(&*state.store, &state.dkim_home, &auth.tenant.id, &domain).await?;
    reload_keys(&state).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The running delivery signs with the keys as they are now (other nodes
/// on the same database follow within `dkim::KEY_POLL`). A failure leaves
/// the keys in use as they were (ownership, read per copy, still decides).
async fn reload_keys(state: &AppState) {
    let keys = state.dkim.clone();
    let reloaded = sending_domains::on_keys(&state.dkim_home, move |home| keys.reload(home)).await;
    if let Err(detail) = reloaded {
        tracing::error!(%detail, "reloading DKIM keys");
    }
}
