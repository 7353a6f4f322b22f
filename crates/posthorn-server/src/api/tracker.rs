//! The tracker: `GET /o/TOKEN` (the open pixel), `GET /c/TOKEN` (a tracked
//! link: a redirect to the stored URL), `GET`/`POST /u/TOKEN` (unsubscribe:
//! a confirmation page, and the one-click POST of RFC 8058).
//!
//! A token is signed (posthorn-track); an unknown or tampered one is a plain
//! 404, never a redirect, so the tracker is no open redirect: the only URLs
//! it sends anyone to are the ones stored when the message was sent. Every
//! hit is recorded, durably, before the answer, with the client's address
//! (behind trusted proxies only, kept as configured), its user agent and
//! the verdict person or machine; nothing is dropped for being a machine.
//! One client's hits on one target past the first few are counted, not
//! stored as events (`posthorn_track::repeats`).

use crate::app::AppState;
use crate::tracker_cache::{Cached, StoredCounts};
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use posthorn_core::event::{Clicked, Engagement, EventDetails, UnsubscribeScope, Unsubscribed};
use posthorn_core::{EventId, EventKind, EventSource};
use posthorn_store::{NewEvent, NewRepeatedHit, RecordOutcome, RepeatedHits, TrackingFacts};
use posthorn_track::Say;
use posthorn_track::{
    Hit, HitKind, PastHit, Purpose, RepeatKey, STORED_PER_CLIENT, Target, verify_as,
};
use std::net::SocketAddr;

/// A transparent 1×1 GIF, 43 bytes.
pub const PIXEL: [u8; 43] = [
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// Tracker answers must never be cached: each fetch is a hit.
const NO_CACHE: &str = "no-store, no-cache, must-revalidate, max-age=0";

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CACHE_CONTROL, NO_CACHE)],
        "not found\n",
    )
        .into_response()
}

/// The token of a tracker path. A segment that does not decode (its
/// percent-encoded bytes are not UTF-8) is no token we signed: the same 404
/// as any unknown token, not axum's 400 text.
fn token_of(path: Result<Path<String>, PathRejection>) -> Option<String> {
    path.ok().map(|Path(token)| token)
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::CACHE_CONTROL, NO_CACHE),
            (header::RETRY_AFTER, "5"),
        ],
        "try again shortly\n",
    )
        .into_response()
}

/// `GET`/`HEAD /o/TOKEN`.
pub async fn open(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    headers: HeaderMap,
    token: Result<Path<String>, PathRejection>,
) -> Response {
    let Some(token) = token_of(token) else {
        return not_found();
    };
    match verified_hit(&state, Purpose::Open, &token, &method, peer, &headers).await {
        Ok(_) => (
            [
                (header::CONTENT_TYPE, "image/gif"),
                (header::CACHE_CONTROL, NO_CACHE),
                (header::PRAGMA, "no-cache"),
                (header::EXPIRES, "0"),
            ],
            PIXEL,
        )
            .into_response(),
        Err(answer) => answer,
    }
}

/// `GET`/`HEAD /c/TOKEN`.
pub async fn click(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    headers: HeaderMap,
    token: Result<Path<String>, PathRejection>,
) -> Response {
    let Some(token) = token_of(token) else {
        return not_found();
    };
    match verified_hit(&state, Purpose::Click, &token, &method, peer, &headers).await {
        Ok(url) => match HeaderValue::from_str(&url) {
            Ok(location) => (
                StatusCode::FOUND,
                [
                    (header::LOCATION, location),
                    (header::CACHE_CONTROL, HeaderValue::from_static(NO_CACHE)),
                ],
            )
                .into_response(),
            Err(_) => not_found(),
        },
        Err(answer) => answer,
    }
}

/// Verifies `token` as a `purpose` token, then judges and records the hit.
/// `Ok`: recorded (the link's URL for a click, empty for an open); `Err`:
/// the answer instead, 404 for an unknown or tampered token or target, 503
/// when the store failed.
async fn verified_hit(
    state: &AppState,
    purpose: Purpose,
    token: &str,
    method: &Method,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<String, Response> {
    let Some(target) = verify_as(&state.tracking.keys, token, purpose) else {
        return Err(not_found());
    };
    match record_hit(state, &target, method, peer, headers).await {
        Ok(Some(url)) => Ok(url),
        Ok(None) => Err(not_found()),
        Err(()) => Err(unavailable()),
    }
}

/// Judges and records one open or click. `Ok(None)`: the delivery or link
/// is unknown; `Ok(Some(url))`: recorded (the link's URL for a click, empty
/// for an open); `Err`: the store failed, nothing is known to be recorded.
async fn record_hit(
    state: &AppState,
    target: &Target,
    method: &Method,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<Option<String>, ()> {
    let config = &state.config;
    // A delivery hit before needs no read (see `tracker_cache`).
    let Cached {
        facts,
        history,
        stored,
    } = match state.tracker_cache.get(target.delivery()) {
        Some(cached) => cached,
        None => match state.store.tracking_facts(target.delivery()).await {
            Ok(Some(f)) => {
                let mut history = engagement_hits(&f.engagement);
                history.extend(repeated_hits(&f.repeats));
                let counts = stored_counts(&f.engagement);
                state.tracker_cache.insert(f, history, counts)
            }
            Ok(None) => return Ok(None),
            Err(e) => {
                tracing::error!(error = %e, "tracker: reading a delivery failed");
                return Err(());
            }
        },
    };
    let url = match target.link_index() {
        Some(index) => match facts.links.get(index as usize) {
            Some(url) => Some(url.clone()),
            None => return Ok(None),
        },
        None => None,
    };
    let now = state.now();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let ip = posthorn_core::net::client_ip(
        peer.ip(),
        header("forwarded"),
        header("x-forwarded-for"),
        &config.tracking.trust_proxy,
    );
    let user_agent = header("user-agent").map(|ua| ua.chars().take(512).collect::<String>());
    let kind = if url.is_some() {
        HitKind::Click
    } else {
        HitKind::Open
    };
    let open_tracking = posthorn_track::choice(
        config,
        &facts.stream,
        Say {
            opens: facts.tracking_opens,
            clicks: None,
        },
        Say {
            opens: facts.tenant_track_opens,
            clicks: None,
        },
    )
    .opens;
    let hit = Hit {
        kind,
        method_head: method == Method::HEAD,
        prefetch: posthorn_track::is_prefetch(header),
        ip: Some(ip),
        user_agent: user_agent.as_deref(),
        at: now,
        delivered_at: facts.delivered_at,
        link_index: target.link_index(),
        links_in_message: u32::try_from(facts.links.len()).unwrap_or(u32::MAX),
        open_tracking,
    };
    let verdict = posthorn_track::judge(
        &hit,
        &history,
        &config.tracking.machine,
        &state.machine_networks,
    );
    // Let go of the shared history before this hit is appended to it, so
    // the append does not have to copy it.
    drop(history);
    // The network only, and only when `[tracking] ip` keeps an address:
    // the same a stored event would give after a restart.
    let network = config.tracking.ip.apply(ip).map(posthorn_track::network_of);
    let ip = config.tracking.ip.apply(ip).map(|ip| ip.to_string());
    let past = PastHit {
        kind,
        at: now,
        link_index: target.link_index(),
        machine: verdict.machine,
        network,
    };
    // Keyed by what the event would store, so the counts can be rebuilt
    // from stored events alone (see `stored_counts`).
    let key = RepeatKey::new(
        kind,
        target.link_index(),
        ip.as_deref(),
        user_agent.as_deref(),
        verdict.machine,
    );
    let stored_before = stored.get(&key).copied().unwrap_or(0);
    drop(stored);
    if stored_before >= STORED_PER_CLIENT {
        return record_repeat(state, &facts, past)
            .await
            .map(|known| known.then(|| url.unwrap_or_default()));
    }
    let machine_reason = Some(verdict.reason.to_owned());
    let details = match &url {
        Some(url) => EventDetails::Clicked(Clicked {
            url: url.clone(),
            link_index: target.link_index(),
            ip,
            user_agent,
            machine: Some(verdict.machine),
            machine_reason,
            implied_open: verdict.implied_open.then_some(true),
        }),
        None => EventDetails::Opened(Engagement {
            ip,
            user_agent,
            machine: Some(verdict.machine),
            machine_reason,
        }),
    };
    let event = NewEvent {
        id: EventId::generate(),
        delivery_id: facts.delivery_id.clone(),
        occurred_at: now,
        recorded_at: now,
        source: EventSource::Tracker,
        details,
        external_id: None,
    };
    match state.store.record_event(&facts.tenant_id, event).await {
        Ok(RecordOutcome::UnknownDelivery) => Ok(None),
        Ok(outcome) => {
            // Committed: later hits on this delivery must see it. (A fresh
            // event id is never a duplicate, but only a new event counts.)
            if let RecordOutcome::Recorded { .. } = outcome {
                state
                    .tracker_cache
                    .append(&facts.delivery_id, past, Some(key));
            }
            Ok(Some(url.unwrap_or_default()))
        }
        Err(e) => {
            tracing::error!(error = %e, "tracker: recording a hit failed");
            Err(())
        }
    }
}

/// Counts a hit that repeats stored ones, instead of storing it. `Ok(false)`:
/// the delivery is unknown.
async fn record_repeat(state: &AppState, facts: &TrackingFacts, hit: PastHit) -> Result<bool, ()> {
    let repeat = NewRepeatedHit {
        delivery_id: facts.delivery_id.clone(),
        kind: match hit.kind {
            HitKind::Open => EventKind::Opened,
            HitKind::Click => EventKind::Clicked,
        },
        link_index: hit.link_index,
        machine: hit.machine,
        at: hit.at,
    };
    match state
        .store
        .record_repeated_hit(&facts.tenant_id, repeat)
        .await
    {
        Ok(true) => {
            // Its time still matters to the burst rule.
            state.tracker_cache.append(&facts.delivery_id, hit, None);
            Ok(true)
        }
        Ok(false) => Ok(false),
        Err(e) => {
            tracing::error!(error = %e, "tracker: counting a repeated hit failed");
            Err(())
        }
    }
}

/// How many stored hits each repeat key has among `events` (opens and
/// clicks), from the address, user agent and verdict they stored.
fn stored_counts(events: &[posthorn_store::EventRecord]) -> StoredCounts {
    let mut counts = StoredCounts::new();
    for e in events {
        let key = match &e.details {
            EventDetails::Opened(o) => RepeatKey::new(
                HitKind::Open,
                None,
                o.ip.as_deref(),
                o.user_agent.as_deref(),
                o.machine.unwrap_or(false),
            ),
            EventDetails::Clicked(c) => RepeatKey::new(
                HitKind::Click,
                c.link_index,
                c.ip.as_deref(),
                c.user_agent.as_deref(),
                c.machine.unwrap_or(false),
            ),
            _ => continue,
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}

/// The latest of each set of counted repeats, as a hit: the machine rules
/// look at recent clicks, and the count itself is not needed to judge.
pub fn repeated_hits(repeats: &[RepeatedHits]) -> impl Iterator<Item = PastHit> + '_ {
    repeats.iter().map(|r| PastHit {
        kind: hit_kind(r.kind),
        at: r.last_at,
        link_index: r.link_index,
        machine: r.machine,
        network: None,
    })
}

/// `opened` is an open, anything else a click (repeats are only either).
pub fn hit_kind(kind: EventKind) -> HitKind {
    if kind == EventKind::Opened {
        HitKind::Open
    } else {
        HitKind::Click
    }
}

/// Opens and clicks among `events`, with their verdicts.
pub fn engagement_hits(events: &[posthorn_store::EventRecord]) -> Vec<PastHit> {
    events
        .iter()
        .filter_map(|e| {
            let (kind, link_index, machine, ip) = match &e.details {
                EventDetails::Opened(o) => (HitKind::Open, None, o.machine, &o.ip),
                EventDetails::Clicked(c) => (HitKind::Click, c.link_index, c.machine, &c.ip),
                _ => return None,
            };
            Some(PastHit {
                kind,
                at: e.occurred_at,
                link_index,
                machine: machine.unwrap_or(false),
                // Stored as kept (`[tracking] ip`): full or truncated give
                // the same network; none gives none.
                network: ip
                    .as_deref()
                    .and_then(|ip| ip.parse().ok())
                    .map(posthorn_track::network_of),
            })
        })
        .collect()
}

/// `GET /u/TOKEN`: asks before doing anything (link scanners fetch every
/// URL of a message; a GET must never unsubscribe anyone).
pub async fn unsubscribe_page(
    State(state): State<AppState>,
    token: Result<Path<String>, PathRejection>,
) -> Response {
    let Some(token) = token_of(token) else {
        return not_found();
    };
    let Some(target) = verify_as(&state.tracking.keys, &token, Purpose::Unsubscribe) else {
        return not_found();
    };
    let facts = match state.store.tracking_facts(target.delivery()).await {
        Ok(Some(f)) => f,
        Ok(None) => return not_found(),
        Err(_) => return unavailable(),
    };
    page(
        "Unsubscribe",
        &format!(
            "<p>Stop mail to <b>{recipient}</b>?</p>\
             <form method=\"post\">\
             <button type=\"submit\" name=\"scope\" value=\"stream\" id=\"stream\">Unsubscribe from {stream} mail</button> \
             <button type=\"submit\" name=\"scope\" value=\"all\" id=\"all\">Unsubscribe from everything</button>\
             </form>",
            recipient = escape(&facts.recipient),
            stream = escape(&facts.stream),
        ),
    )
}

/// `POST /u/TOKEN`: the one-click unsubscribe of RFC 8058
/// (`List-Unsubscribe=One-Click`, this stream), or the page's form
/// (`scope=stream|all`). Unsubscribing twice is unsubscribed once.
pub async fn unsubscribe(
    State(state): State<AppState>,
    token: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Response {
    let Some(token) = token_of(token) else {
        return not_found();
    };
    let Some(target) = verify_as(&state.tracking.keys, &token, Purpose::Unsubscribe) else {
        return not_found();
    };
    let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let (scope, method) = if field("List-Unsubscribe") == Some("One-Click") {
        (UnsubscribeScope::Stream, "one-click")
    } else {
        match field("scope") {
            Some("stream") => (UnsubscribeScope::Stream, "link"),
            Some("all") => (UnsubscribeScope::All, "link"),
            _ => {
                return (
                    StatusCode::BAD_REQUEST,
                    [(header::CACHE_CONTROL, NO_CACHE)],
                    "say List-Unsubscribe=One-Click, or scope=stream or scope=all\n",
                )
                    .into_response();
            }
        }
    };
    match record_unsubscribe(&state, target.delivery(), scope, method).await {
        Ok(Some(facts)) => page(
            "Unsubscribed",
            &format!(
                "<p>Done: <b>{}</b> will get no more {} mail from this sender.</p>",
                escape(&facts.recipient),
                match scope {
                    UnsubscribeScope::Stream => escape(&facts.stream),
                    UnsubscribeScope::All => "".to_owned(),
                }
            ),
        ),
        Ok(None) => not_found(),
        Err(()) => unavailable(),
    }
}

/// Records an unsubscribe of `delivery`'s recipient. The external id makes
/// a second request (or the same one by mail, see the inbound MX) count once.
async fn record_unsubscribe(
    state: &AppState,
    delivery: &posthorn_core::DeliveryId,
    scope: UnsubscribeScope,
    method: &str,
) -> Result<Option<TrackingFacts>, ()> {
    let facts = match state.store.tracking_facts(delivery).await {
        Ok(Some(f)) => f,
        Ok(None) => return Ok(None),
        Err(_) => return Err(()),
    };
    let now = state.now();
    let event = NewEvent {
        id: EventId::generate(),
        delivery_id: facts.delivery_id.clone(),
        occurred_at: now,
        recorded_at: now,
        source: EventSource::Tracker,
        details: EventDetails::Unsubscribed(Unsubscribed {
            scope,
            method: Some(method.to_owned()),
        }),
        external_id: Some(posthorn_core::external_id::unsubscribe(
            &facts.delivery_id,
            scope,
        )),
    };
    match state.store.record_event(&facts.tenant_id, event).await {
        Ok(RecordOutcome::UnknownDelivery) => Ok(None),
        Ok(_) => Ok(Some(facts)),
        Err(e) => {
            tracing::error!(error = %e, "tracker: recording an unsubscribe failed");
            Err(())
        }
    }
}

fn page(title: &str, body: &str) -> Response {
    (
        [(header::CACHE_CONTROL, NO_CACHE)],
        Html(format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width\"><meta name=\"robots\" content=\"noindex\">\
             <title>{title}</title></head><body style=\"font-family:sans-serif;max-width:36em;margin:3em auto\">\
             <h1>{title}</h1>{body}</body></html>"
        )),
    )
        .into_response()
}

/// Text for an HTML page.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pixel_is_a_43_byte_gif() {
        assert_eq!(&PIXEL[..6], b"GIF89a");
        assert_eq!(PIXEL.len(), 43);
        assert_eq!(PIXEL[42], 0x3b, "GIF trailer");
    }

    #[test]
    fn page_text_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
