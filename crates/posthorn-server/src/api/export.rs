//! Exports: `GET /v1/events/export?format=csv|ndjson&FILTERS` and
//! `GET /v1/deliveries/export?...`, any number of rows, streamed.
//!
//! The body is read from the store a page at a time (keyset pages, as the
//! lists read), and a page is only read when the client has taken the
//! last one: memory stays that of one page whatever the size, and a client
//! that goes away ends the export at once (its stream is dropped). The
//! rows are the list's, in its order (`order=asc` for oldest first).
//!
//! CSV follows RFC 4180: a header row, CRLF line ends, a field quoted when
//! it holds a comma, a quote or a line break (quotes doubled). Text from
//! outside (a remote server's reply, an address) that begins with `=`,
//! `+`, `-`, `@`, a tab or a carriage return is written after a `'`, so a
//! spreadsheet never runs it as a formula (OWASP's CSV injection advice).
//! NDJSON is one JSON object per line: the `EventView` of the API and the
//! live feed, or the delivery as `GET /v1/deliveries` shows it.

use super::read::delivery_status_json;
use super::search::{filter_error, query_pairs};
use super::{Auth, invalid_query};
use crate::app::AppState;
use crate::error::ApiResult;
use crate::event_view::EventView;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use posthorn_core::clock::format_rfc3339;
use posthorn_core::search::{self, Filters, Surface};
use posthorn_core::status::shown_delivery_status;
use posthorn_core::{DeliveryId, EventId, TenantId};
use posthorn_store::{DeliveryRecord, EventRecord, Scope, Store};
use std::sync::Arc;

/// Rows read from the store at a time.
const PAGE: u32 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    Ndjson,
}

/// The filters and the format of an export request.
fn request(raw: Option<&str>, surface: Surface) -> ApiResult<(Filters, Format)> {
    let (filters, own) =
        search::parse(&query_pairs(raw), surface, &["format"]).map_err(filter_error)?;
    let format = match own.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>()[..] {
        [] | ["csv"] => Format::Csv,
        ["ndjson"] => Format::Ndjson,
        [_] => return Err(invalid_query("format", "format is csv or ndjson")),
        _ => return Err(invalid_query("format", "given more than once")),
    };
    Ok((filters, format))
}

pub async fn events(
    State(state): State<AppState>,
    auth: Auth,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    auth.require(Scope::Read)?;
    let (filters, format) = request(raw.as_deref(), Surface::Events)?;
    let source = EventRows {
        store: state.store.clone(),
        tenant: auth.tenant.id.clone(),
        filters,
    };
    Ok(streamed(source, format, "events", &state))
}

pub async fn deliveries(
    State(state): State<AppState>,
    auth: Auth,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    auth.require(Scope::Read)?;
    let (filters, format) = request(raw.as_deref(), Surface::Deliveries)?;
    let source = DeliveryRows {
        store: state.store.clone(),
        tenant: auth.tenant.id.clone(),
        filters,
    };
    Ok(streamed(source, format, "deliveries", &state))
}

/// What an export reads and how it writes a row.
trait Rows: Send + 'static {
    type Row: Send;
    /// The CSV header's names.
    const COLUMNS: &'static [&'static str];
    /// The page after the row whose id is `after`.
    fn page(
        &self,
        after: Option<String>,
    ) -> impl std::future::Future<Output = posthorn_store::StoreResult<Vec<Self::Row>>> + Send;
    fn id(row: &Self::Row) -> String;
    fn csv(row: &Self::Row) -> Vec<String>;
    fn json(row: &Self::Row) -> serde_json::Value;
}

struct EventRows {
    store: Arc<dyn Store>,
    tenant: TenantId,
    filters: Filters,
}

impl Rows for EventRows {
    type Row = EventRecord;
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "recorded_at",
        "occurred_at",
        "kind",
        "delivery_id",
        "message_id",
        "recipient",
        "sender",
        "source",
        "reason",
        "bounce_type",
        "smtp_code",
        "enhanced_code",
        "reply",
        "machine",
        "details",
    ];

    async fn page(&self, after: Option<String>) -> posthorn_store::StoreResult<Vec<EventRecord>> {
        let after = after.map(EventId::from_stored);
        self.store
            .search_events(&self.tenant, &self.filters, after.as_ref(), PAGE)
            .await
    }

    fn id(row: &EventRecord) -> String {
        row.id.to_string()
    }

    fn csv(e: &EventRecord) -> Vec<String> {
        let details = e.details.to_json();
        let text = |field: &str| -> String {
            match &details[field] {
                serde_json::Value::Null => String::new(),
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            }
        };
        // The remote server's words, whichever field the kind keeps them in.
        let reply = ["reply_text", "last_reply", "error"]
            .into_iter()
            .map(text)
            .find(|t| !t.is_empty())
            .unwrap_or_default();
        vec![
            e.id.to_string(),
            format_rfc3339(e.recorded_at),
            format_rfc3339(e.occurred_at),
            e.kind().as_str().to_owned(),
            e.delivery_id.to_string(),
            e.message_id.to_string(),
            e.recipient.clone(),
            e.sender.clone(),
            e.source.as_str().to_owned(),
            text("reason"),
            text("bounce_type"),
            text("smtp_code"),
            text("enhanced_code"),
            reply,
            text("machine"),
            details.to_string(),
        ]
    }

    fn json(e: &EventRecord) -> serde_json::Value {
        serde_json::to_value(EventView::in_feed(e)).unwrap_or_default()
    }
}

struct DeliveryRows {
    store: Arc<dyn Store>,
    tenant: TenantId,
    filters: Filters,
}

impl Rows for DeliveryRows {
    type Row = DeliveryRecord;
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "message_id",
        "recipient",
        "recipient_kind",
        "sender",
        "stream",
        "campaign",
        "status",
        "delivery_status",
        "engagement_status",
        "bounce_type",
        "created_at",
        "updated_at",
    ];

    async fn page(
        &self,
        after: Option<String>,
    ) -> posthorn_store::StoreResult<Vec<DeliveryRecord>> {
        let after = after.map(DeliveryId::from_stored);
        self.store
            .search_deliveries(&self.tenant, &self.filters, after.as_ref(), PAGE)
            .await
    }

    fn id(row: &DeliveryRecord) -> String {
        row.id.to_string()
    }

    fn csv(d: &DeliveryRecord) -> Vec<String> {
        let shown = shown_delivery_status(d.delivery_status, d.engagement_status).0;
        vec![
            d.id.to_string(),
            d.message_id.to_string(),
            d.recipient.clone(),
            d.recipient_kind.as_str().to_owned(),
            d.sender.clone(),
            d.stream.clone(),
            d.campaign.clone().unwrap_or_default(),
            d.status().to_owned(),
            shown.map_or("queued", |s| s.as_str()).to_owned(),
            d.engagement_status.as_str().to_owned(),
            d.delivery_status
                .and_then(|s| s.bounce_type())
                .map(|b| b.as_str().to_owned())
                .unwrap_or_default(),
            format_rfc3339(d.created_at),
            format_rfc3339(d.updated_at),
        ]
    }

    fn json(d: &DeliveryRecord) -> serde_json::Value {
        delivery_status_json(d)
    }
}

/// Counts an export as open while it lives (`posthorn_exports_open`): it
/// lives in the response body, which is dropped when the client goes.
struct OpenExport(Arc<std::sync::atomic::AtomicU64>);

impl OpenExport {
    fn new(gauge: &Arc<std::sync::atomic::AtomicU64>) -> Self {
        gauge.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(gauge.clone())
    }
}

impl Drop for OpenExport {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The export as a streamed response: each step reads one page and
/// writes its rows; the next is read when the client has taken it.
fn streamed<R: Rows + Sync>(source: R, format: Format, name: &str, state: &AppState) -> Response {
    struct Cursor<R> {
        source: R,
        after: Option<String>,
        header_sent: bool,
        done: bool,
        _open: OpenExport,
    }
    let start = Cursor {
        source,
        after: None,
        header_sent: false,
        done: false,
        _open: OpenExport::new(&state.metrics.exports_open),
    };
    let body = futures_util::stream::unfold(start, move |mut c| async move {
        if c.done {
            return None;
        }
        let mut out = String::new();
        if format == Format::Csv && !c.header_sent {
            csv_line(&mut out, R::COLUMNS.iter().map(|s| (*s).to_owned()));
            c.header_sent = true;
        }
        let page = match c.source.page(c.after.clone()).await {
            Ok(page) => page,
            Err(e) => {
                // The status line is long gone: the body ends with an
                // error, so the client sees the transfer fail (not a
                // complete, shorter export).
                tracing::warn!(error = %e, "export read failed; ending it early");
                return Some((
                    Err(std::io::Error::other(e.to_string())),
                    Cursor { done: true, ..c },
                ));
            }
        };
        if page.len() < PAGE as usize {
            c.done = true;
        }
        for row in &page {
            match format {
                Format::Csv => csv_line(&mut out, R::csv(row).into_iter()),
                Format::Ndjson => {
                    out.push_str(&R::json(row).to_string());
                    out.push('\n');
                }
            }
        }
        c.after = page.last().map(R::id);
        Some((Ok(Bytes::from(out)), c))
    });
    let mut response = Body::from_stream(body).into_response();
    let h = response.headers_mut();
    let (content_type, extension) = match format {
        Format::Csv => ("text/csv; charset=utf-8; header=present", "csv"),
        Format::Ndjson => ("application/x-ndjson", "ndjson"),
    };
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}.{extension}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Appends one CSV record (RFC 4180) and its CRLF.
fn csv_line(out: &mut String, fields: impl Iterator<Item = String>) {
    for (i, field) in fields.enumerate() {
        if i > 0 {
            out.push(',');
        }
        let field = if field.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            format!("'{field}")
        } else {
            field
        };
        if field.contains([',', '"', '\r', '\n']) {
            out.push('"');
            out.push_str(&field.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&field);
        }
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::csv_line;

    fn line(fields: &[&str]) -> String {
        let mut out = String::new();
        csv_line(&mut out, fields.iter().map(|s| (*s).to_owned()));
        out
    }

    #[test]
    fn fields_are_quoted_as_rfc_4180_says() {
        assert_eq!(line(&["a", "b c", ""]), "a,b c,\r\n");
        assert_eq!(
            line(&["x,y", "say \"hi\""]),
            "\"x,y\",\"say \"\"hi\"\"\"\r\n"
        );
        assert_eq!(
            line(&["550 5.1.1\r\nsecond line"]),
            "\"550 5.1.1\r\nsecond line\"\r\n"
        );
    }

    #[test]
    fn text_a_spreadsheet_would_run_is_written_as_text() {
        assert_eq!(
            line(&["=HYPERLINK(\"x\")"]),
            "\"'=HYPERLINK(\"\"x\"\")\"\r\n"
        );
        assert_eq!(line(&["+1", "-2", "@SUM(A1)"]), "'+1,'-2,'@SUM(A1)\r\n");
        assert_eq!(line(&["2026-12-08T00:00:00Z"]), "2026-12-08T00:00:00Z\r\n");
    }
}
