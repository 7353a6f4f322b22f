//! The HTTP API: routes, authentication, and the request/response plumbing
//! shared by the handlers.

mod contacts;
pub mod domains;
mod events;
mod export;
mod feed;
mod inbound;
mod ingest;
mod messages;
mod tracker;

pub use tracker::PIXEL;

mod read;
mod search;
mod stats;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::keys::{self, KeyRefusal};
use axum::Router;
use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use futures_util::StreamExt;
use posthorn_store::{ApiKeyRecord, Scope, Tenant};
use serde::de::DeserializeOwned;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/messages", post(messages::submit))
        .route("/v1/messages/{id}", get(read::message))
        .route("/v1/deliveries", get(search::deliveries))
        .route("/v1/deliveries/summary", get(search::summary))
        .route("/v1/deliveries/{id}", get(read::delivery))
        .route("/v1/deliveries/{id}/events", get(read::delivery_events))
        .route("/v1/events", get(search::events).post(events::record))
        .route("/v1/events/stream", get(feed::stream))
        .route("/v1/events/export", get(export::events))
        .route("/v1/deliveries/export", get(export::deliveries))
        .route("/v1/stats", get(stats::stats))
        .route(
            "/v1/contacts/{address}",
            get(contacts::get).put(contacts::put),
        )
        .route("/o/{token}", get(tracker::open))
        .route("/c/{token}", get(tracker::click))
        .route(
            "/u/{token}",
            get(tracker::unsubscribe_page).post(tracker::unsubscribe),
        )
        .route("/v1/events/{id}/raw", get(inbound::event_raw))
        .route("/v1/inbound", get(inbound::list))
        .route("/v1/inbound/orphans", get(inbound::orphans))
        .route("/v1/inbound/{id}/raw", get(inbound::raw))
        .route("/v1/suppressions", get(contacts::suppressions))
        .route("/v1/domains", get(domains::list).post(domains::add))
        .route(
            "/v1/domains/{domain}",
            axum::routing::delete(domains::remove),
        )
        .route("/v1/ingest/sources", get(ingest::list).post(ingest::create))
        .route(
            "/v1/ingest/sources/{id}",
            axum::routing::delete(ingest::remove),
        )
        .route("/v1/ingest/{token}", post(ingest::receive))
        .route(
            "/v1/settings",
            get(contacts::get_settings).patch(contacts::patch_settings),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// A `400 invalid_query` naming the query parameter at fault.
pub(crate) fn invalid_query(field: &str, message: &str) -> ApiError {
    ApiError::bad_request("invalid_query", message).with_field(field)
}

/// The page size of a list: 50 when not given, at most 500.
pub(crate) fn page_limit(limit: Option<u32>) -> ApiResult<u32> {
    let limit = limit.unwrap_or(50);
    if (1..=500).contains(&limit) {
        Ok(limit)
    } else {
        Err(invalid_query("limit", "limit is 1 to 500"))
    }
}

/// A `cursor` parameter: the id of the last item of the previous page.
pub(crate) fn page_cursor<T>(
    cursor: Option<String>,
    parse: fn(&str) -> Option<T>,
) -> ApiResult<Option<T>> {
    cursor
        .map(|c| {
            parse(&c).ok_or_else(|| invalid_query("cursor", "not a cursor from a previous page"))
        })
        .transpose()
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

async fn metrics(axum::extract::State(state): axum::extract::State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(state.store.stats()),
    )
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// One path segment (an id or an address). A segment that does not decode
/// (not UTF-8) cannot name anything we have: a JSON 404, like any unknown id.
pub struct Segment(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Segment {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(s)| Segment(s))
            .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such resource"))
    }
}

/// The authenticated caller: a live API key and its tenant.
pub struct Auth {
    pub tenant: Tenant,
    pub key: ApiKeyRecord,
}

impl Auth {
    /// Refuses with 403 unless the key has `scope` (admin has every scope).
    pub fn require(&self, scope: Scope) -> ApiResult<()> {
        if self.key.allows(scope) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                format!("this API key lacks the `{}` scope", scope.as_str()),
            ))
        }
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized =
            |code, message: &str| ApiError::new(StatusCode::UNAUTHORIZED, code, message);
        let header = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            unauthorized(
                "missing_api_key",
                "send your API key as `Authorization: Bearer KEY`",
            )
        })?;
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or_else(|| {
                unauthorized(
                    "invalid_api_key",
                    "the Authorization header must be `Bearer KEY`",
                )
            })?;
        match keys::verify(&*state.store, token).await {
            Ok((key, tenant)) => Ok(Auth { tenant, key }),
            Err(KeyRefusal::Invalid) => {
                Err(unauthorized("invalid_api_key", "the API key is not valid"))
            }
            Err(KeyRefusal::Revoked) => Err(unauthorized(
                "revoked_api_key",
                "the API key has been revoked",
            )),
            Err(KeyRefusal::Store(e)) => Err(e.into()),
        }
    }
}

/// Reads a request body up to `limit` bytes; a larger body is a 413 and is
/// not read further.
pub async fn read_body(
    headers: &axum::http::HeaderMap,
    body: Body,
    limit: u64,
) -> ApiResult<Vec<u8>> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "message_too_large",
            format!("the request is larger than the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut stream = body.into_data_stream();
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(limit) as usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| {
            ApiError::bad_request("invalid_body", "the request body could not be read")
        })?;
        if (buf.len() + chunk.len()) as u64 > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// Parses JSON into `T`, naming the field at fault on error: 400 for
/// malformed JSON, unknown fields and wrong types; 422 for a missing field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    // Every body is an object; serde would also read a struct from an
    // array (`[]` is an empty patch), which no client means.
    let is_object = bytes.trim_ascii_start().first() == Some(&b'{');
    if !is_object && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() {
        return Err(ApiError::bad_request(
            "invalid_field",
            "the body must be a JSON object",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        // `.` is the whole body and `?` an unknown position: no field to name.
        let mut field = (path != "." && path != "?").then_some(path);
        let error = if inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request(
                "invalid_json",
                format!("the body is not valid JSON: {message}"),
            )
        } else if message.starts_with("unknown field") {
            ApiError::bad_request("unknown_field", message)
        } else if let Some(name) = missing_field_name(&message) {
            // serde reports a missing field at the object that lacks it.
            field = Some(match field {
                Some(parent) => format!("{parent}.{name}"),
                None => name.to_owned(),
            });
            ApiError::unprocessable("missing_field", message)
        } else {
            ApiError::bad_request("invalid_field", message)
        };
        match field {
            Some(f) => error.with_field(f),
            None => error,
        }
    })?;
    de.end().map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
    })?;
    Ok(value)
}

/// The name in serde's "missing field `name` at line 1 column 2".
fn missing_field_name(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split_once('`').map(|(name, _)| name)
}

/// Epoch milliseconds as RFC 3339, the way every time appears in answers.
pub fn time(ms: posthorn_core::Millis) -> String {
    posthorn_core::clock::format_rfc3339(ms)
}

/// A time given by a client: an RFC 3339 string or epoch milliseconds.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
pub enum TimeInput {
    Millis(i64),
    Text(String),
}

impl TimeInput {
    pub fn to_millis(&self, field: &str) -> ApiResult<posthorn_core::Millis> {
        let ms = match self {
            TimeInput::Millis(ms) => Some(*ms),
            TimeInput::Text(t) => posthorn_core::clock::parse_rfc3339(t),
        };
        let ms = ms.ok_or_else(|| {
            ApiError::unprocessable(
                "invalid_time",
                "expected an RFC 3339 time such as 2026-11-24T10:00:00Z, or epoch milliseconds",
            )
            .with_field(field)
        })?;
        // Only times every reader can show (1970 to 9999) are stored.
        posthorn_core::submission::check_time(field, ms).map_err(messages::field_error)?;
        Ok(ms)
    }
}
