//! The one error type of the HTTP API. Every failure becomes
//! `{"error": {"code": "...", "message": "...", "field": "..."}}` with a
//! fitting status; internal details go to the log, never to the client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use posthorn_core::EnhancedCode;
use posthorn_store::{StoreError, Unavailable};
use std::sync::atomic::AtomicU64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// A stable, machine-readable code (`invalid_address`, ...).
    pub code: &'static str,
    pub message: String,
    /// The request field at fault, when there is one (`to[1]`).
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such {what}"),
        )
    }

    /// The disk under the data directory is full: nothing was written, and
    /// the same request succeeds once the operator frees space.
    pub fn storage_full() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_full",
            "the server's storage is full; nothing was written; retry later",
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "something went wrong on our side; nothing was changed",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            StoreError::Unavailable {
                cause: Unavailable::Closed,
                ..
            } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down; retry shortly",
            ),
            StoreError::Unavailable {
                cause: Unavailable::StorageFull,
                detail,
            } => {
                static LAST: AtomicU64 = AtomicU64::new(0);
                if log_due(&LAST) {
                    tracing::error!(%detail, "storage full: refusing writes until space returns");
                }
                ApiError::storage_full()
            }
            // PostgreSQL away (restarting, network): nothing was written,
            // and the same request succeeds once it is back (the pools
            // drop broken connections and open new ones). Logged like a
            // full disk: every request fails while it lasts.
            StoreError::Unavailable {
                cause: Unavailable::Unreachable,
                detail,
            } => {
                static LAST: AtomicU64 = AtomicU64::new(0);
                if log_due(&LAST) {
                    tracing::error!(%detail, "database unreachable: answering 503 until it is back");
                }
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "the server's database cannot be reached; nothing was written; retry later",
                )
            }
            // Which value is unreadable is for operators: the client is
            // told only that it failed on our side.
            e @ StoreError::Corrupt { .. } => {
                tracing::error!(detail = %e, "storage error");
                ApiError::internal()
            }
            StoreError::Backend(detail) => {
                tracing::error!(%detail, "storage error");
                ApiError::internal()
            }
        }
    }
}

/// Whether to log a refusal for a full disk (or a lost database) now, of
/// which `last` is the second of the last line: at most one line every
/// 10 s, however many requests are refused (the log may share the disk).
fn log_due(last: &AtomicU64) -> bool {
    use std::sync::atomic::Ordering;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let previous = last.load(Ordering::Relaxed);
    now >= previous + 10
        && last
            .compare_exchange(previous, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = serde_json::json!({ "code": self.code, "message": self.message });
        if let Some(field) = self.field {
            error["field"] = serde_json::Value::String(field);
        }
        let mut response = (
            self.status,
            axum::Json(serde_json::json!({ "error": error })),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // Each 503 is a state that passes (shutting down, a full disk, a
            // database away).
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("30"),
            );
        }
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 9110 §11.6.1: a 401 names the scheme to use.
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"posthorn\""),
            );
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The SMTP answer (submission and inbound MX) when storing a message
/// failed: 452 4.3.1, "insufficient system storage" (RFC 5321 §4.2.3, RFC
/// 3463 "mail system full"), when the disk is full, so the client queues
/// the message and tries again; 451 4.3.0 for any other failure.
pub fn smtp_store_failure(e: &StoreError) -> posthorn_smtp::server::ServerReply {
    use posthorn_smtp::server::ServerReply;
    if e.is_storage_full() {
        ServerReply::new(
            452,
            EnhancedCode::of(4, 3, 1),
            "insufficient system storage; nothing was kept; try again later",
        )
    } else {
        ServerReply::new(
            451,
            EnhancedCode::of(4, 3, 0),
            "temporary failure on our side; try again",
        )
    }
}
