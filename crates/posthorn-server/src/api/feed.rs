//! The live feed: `GET /v1/events/stream?FILTERS`, server-sent events.
//!
//! Each event is one SSE message: `id:` its position in commit order
//! (`seq`), `data:` its `EventView` JSON (as `GET /v1/events` shows it).
//! A client that reconnects with `Last-Event-ID` (which `EventSource`
//! sends by itself), or `?last_event_id=`, goes on right after that
//! position, with no gap and no repeat: the feed reads the commit-ordered
//! log (`Store::events_after`), which on PostgreSQL holds back what a
//! transaction still open may precede, so every node's feed gives every
//! node's events in one order. Without either, the feed starts at the
//! newest event committed when it opens.
//!
//! Commits only wake the feed (the store's commit stream, which also
//! carries other nodes' commits); what it sends is read from the store
//! with the feed's filters, a page at a time. So a feed costs writers
//! nothing, and one that falls behind catches up from the log.
//!
//! A client that does not take what it is sent for [`SLOW_CLIENT`] is
//! sent a `lagged` event naming the last position it was given (`data:
//! {"resume_after": N}`) and the feed ends: it resumes from there (its
//! `Last-Event-ID` is that position already). A comment line every
//! [`HEARTBEAT`] keeps idle connections (and proxies) alive. A client
//! that goes away ends the feed at once.

use super::search::{filter_error, query_pairs};
use super::{Auth, invalid_query};
use crate::app::AppState;
use crate::error::ApiResult;
use crate::event_view::EventView;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use posthorn_core::TenantId;
use posthorn_core::search::{self, Filters, Surface};
use posthorn_store::{EventRecord, Scope, Store};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};

/// How long a client may leave the feed's buffer full before it is told
/// it lags and the feed ends.
pub const SLOW_CLIENT: Duration = Duration::from_secs(10);

/// How often an idle feed sends a comment line.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// Messages buffered for a client beyond what its socket holds.
const BUFFERED: usize = 256;

/// Events read from the store at a time.
const PAGE: u32 = 500;

/// The longest a feed waits after a failed read before trying again.
const RETRY: Duration = Duration::from_secs(1);

pub async fn stream(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    auth.require(Scope::Read)?;
    let (filters, own) = search::parse(
        &query_pairs(raw.as_deref()),
        Surface::Events,
        &["last_event_id"],
    )
    .map_err(filter_error)?;
    let from_query = own.into_iter().map(|(_, v)| v).next_back();
    let from_header = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("?").to_owned());
    let start = match (from_header, from_query) {
        (Some(v), _) => Some(position(&v, "Last-Event-ID")?),
        (None, Some(v)) => Some(position(&v, "last_event_id")?),
        (None, None) => None,
    };
    // Subscribed before the start is read, so no commit after it goes
    // unnoticed.
    let commits = state.store.commits().subscribe();
    let start = match start {
        Some(p) => p,
        None => state.store.commit_position().await?,
    };
    let (tx, rx) = mpsc::channel::<Bytes>(BUFFERED);
    let feed = Feed {
        store: state.store.clone(),
        tenant: auth.tenant.id.clone(),
        filters,
        last: start,
        slow_client: SLOW_CLIENT,
        heartbeat: HEARTBEAT,
    };
    let metrics = state.metrics.clone();
    metrics.feeds_open.fetch_add(1, Ordering::Relaxed);
    // How the feed ended: `Some(position)` when the client lagged.
    let (ended_tx, ended_rx) = oneshot::channel();
    tokio::spawn(async move {
        let _ = ended_tx.send(feed.run(commits, tx).await);
        metrics.feeds_open.fetch_sub(1, Ordering::Relaxed);
    });
    // What the client reads: the buffered messages, then (when the feed
    // ended because the client lagged) the `lagged` message.
    let messages = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|bytes| (bytes, rx))
    });
    let lagged = futures_util::stream::once(async move {
        ended_rx.await.ok().flatten().map(|resume_after| {
            Bytes::from(format!(
                "event: lagged\ndata: {{\"resume_after\":{resume_after}}}\n\n"
            ))
        })
    })
    .filter_map(std::future::ready);
    let body = messages
        .chain(lagged)
        .map(Ok::<_, std::convert::Infallible>);
    let mut response = Body::from_stream(body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Proxies that buffer responses (nginx) would hold the feed back.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// A position given by a client: a `seq` this feed sent, or 0.
fn position(value: &str, name: &str) -> ApiResult<i64> {
    value
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|p| *p >= 0)
        .ok_or_else(|| invalid_query(name, "an event id of this feed (a number)"))
}

/// One client's feed: what it filters, where it is.
pub struct Feed {
    pub store: Arc<dyn Store>,
    pub tenant: TenantId,
    pub filters: Filters,
    /// The last position sent.
    pub last: i64,
    pub slow_client: Duration,
    pub heartbeat: Duration,
}

/// Why sending stopped.
enum Stop {
    /// The client went away.
    Gone,
    /// The client did not take its messages in time.
    Lagged,
}

impl Feed {
    /// Sends events to `tx` until the client goes away (`None`) or lags
    /// (`Some(last position sent)`).
    pub async fn run(
        mut self,
        mut commits: broadcast::Receiver<posthorn_store::CommittedEvents>,
        tx: mpsc::Sender<Bytes>,
    ) -> Option<i64> {
        let mut heartbeat = tokio::time::interval(self.heartbeat);
        heartbeat.tick().await;
        loop {
            match self.catch_up(&tx).await {
                Ok(()) => {}
                Err(Stop::Gone) => return None,
                Err(Stop::Lagged) => return Some(self.last),
            }
            tokio::select! {
                woken = commits.recv() => {
                    // A lag of the commit stream only means wake-ups were
                    // missed: the log has everything.
                    if let Err(broadcast::error::RecvError::Closed) = woken {
                        return None;
                    }
                    // One read for all the commits that are already in.
                    while commits.try_recv().is_ok() {}
                }
                _ = heartbeat.tick() => {
                    match self.send(&tx, Bytes::from_static(b": heartbeat\n\n")).await {
                        Ok(()) => {}
                        Err(Stop::Gone) => return None,
                        Err(Stop::Lagged) => return Some(self.last),
                    }
                }
                _ = tx.closed() => return None,
            }
        }
    }

    /// Sends everything after `last` that matches, a page at a time. A
    /// failed read (the database away) is tried again until it works or
    /// the client goes away.
    async fn catch_up(&mut self, tx: &mpsc::Sender<Bytes>) -> Result<(), Stop> {
        loop {
            let page = match self
                .store
                .events_after(&self.tenant, self.last, &self.filters, PAGE)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "live feed read failed; trying again");
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY) => continue,
                        _ = tx.closed() => return Err(Stop::Gone),
                    }
                }
            };
            for event in &page {
                self.send(tx, message(event)).await?;
                self.last = event.seq;
            }
            if page.len() < PAGE as usize {
                return Ok(());
            }
        }
    }

    async fn send(&self, tx: &mpsc::Sender<Bytes>, bytes: Bytes) -> Result<(), Stop> {
        match tokio::time::timeout(self.slow_client, tx.send(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Stop::Gone),
            Err(_) => Err(Stop::Lagged),
        }
    }
}

/// One event as an SSE message.
fn message(e: &EventRecord) -> Bytes {
    let json = serde_json::to_string(&EventView::in_feed(e)).unwrap_or_else(|_| "{}".into());
    Bytes::from(format!("id: {}\ndata: {json}\n\n", e.seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use posthorn_store::conformance::{T0, delivery_event, message as new_message};
    use posthorn_store::{AcceptOutcome, SqliteStore, StoreRules};

    /// A client that reads nothing is told where to resume, once its
    /// buffer has stayed full for the time allowed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_does_not_read_is_told_it_lags() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            SqliteStore::open(dir.path(), &Default::default(), StoreRules::default()).unwrap(),
        );
        let tenant = store.create_tenant("t", T0).await.unwrap().id;
        let mut m = new_message(&tenant, &["a@example.com"]);
        m.recipients.truncate(1);
        let AcceptOutcome::Accepted(r) = store.accept_message(m).await.unwrap() else {
            panic!("accepted")
        };
        let delivery = &r.deliveries[0].id;
        for i in 0..5 {
            let opened = posthorn_core::event::EventDetails::Opened(Default::default());
            store
                .record_event(&tenant, delivery_event(delivery, T0 + i, opened))
                .await
                .unwrap();
        }
        let feed = Feed {
            store: store.clone(),
            tenant,
            filters: Filters::default(),
            last: 0,
            slow_client: Duration::from_millis(200),
            heartbeat: HEARTBEAT,
        };
        // Room for two messages, and nobody reading.
        let (tx, mut rx) = mpsc::channel(2);
        let lagged = feed.run(store.commits().subscribe(), tx).await;
        let mut sent = Vec::new();
        while let Ok(bytes) = rx.try_recv() {
            sent.push(String::from_utf8(bytes.to_vec()).unwrap());
        }
        assert_eq!(sent.len(), 2);
        let last_sent: i64 = sent[1]
            .strip_prefix("id: ")
            .and_then(|s| s.split('\n').next())
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            lagged,
            Some(last_sent),
            "resume right after the last one sent"
        );
    }

    /// A client that goes away ends its feed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_leaves_ends_its_feed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            SqliteStore::open(dir.path(), &Default::default(), StoreRules::default()).unwrap(),
        );
        let tenant = store.create_tenant("t", T0).await.unwrap().id;
        let feed = Feed {
            store: store.clone(),
            tenant,
            filters: Filters::default(),
            last: 0,
            slow_client: SLOW_CLIENT,
            heartbeat: HEARTBEAT,
        };
        let (tx, rx) = mpsc::channel(2);
        let running = tokio::spawn(feed.run(store.commits().subscribe(), tx));
        drop(rx);
        let ended = tokio::time::timeout(Duration::from_secs(5), running).await;
        assert_eq!(ended.expect("the feed ends").unwrap(), None);
    }
}
