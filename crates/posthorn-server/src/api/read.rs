//! Read endpoints: a delivery with the first page of its timeline (and
//! the rest a page at a time), a message with its deliveries, and the
//! event list. Every lookup is scoped to the caller's
//! tenant; an id of another tenant (or a malformed id) is a plain 404.

use super::{Auth, Segment, page_cursor, page_limit, time};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::event_view::EventView;
use axum::Json;
use axum::extract::{Query, State, rejection::QueryRejection};
use posthorn_core::status::shown_delivery_status;
use posthorn_core::{DeliveryId, EventId, EventKind, MessageId};
use posthorn_store::{DeliveryRecord, EventRecord, RepeatedHits, Scope};
use serde::Deserialize;
use serde_json::{Value, json};

/// A delivery's status fields, as every answer shows them.
pub fn delivery_status_json(d: &DeliveryRecord) -> Value {
    let (shown, inferred) = shown_delivery_status(d.delivery_status, d.engagement_status);
    json!({
        "id": d.id,
        "message_id": d.message_id,
        "recipient": d.recipient,
        "recipient_kind": d.recipient_kind.as_str(),
        "status": d.status(),
        "delivery_status": shown.map(|s| s.as_str()),
        "delivery_status_inferred": inferred,
        "engagement_status": d.engagement_status.as_str(),
        "bounce_type": d.delivery_status.and_then(|s| s.bounce_type()).map(|b| b.as_str()),
        "set_by": {
            "delivery": d.delivery_event_id,
            "engagement": d.engagement_event_id,
        },
        "stream": d.stream,
        "campaign": d.campaign,
        "test": d.test,
        "created_at": time(d.created_at),
        "updated_at": time(d.updated_at),
    })
}

/// Events in the first page of a delivery's timeline, in its detail.
const TIMELINE_FIRST_PAGE: u32 = 50;

/// A delivery's engagement counts: its stored opens and clicks, and the
/// repeats that were only counted (`posthorn_track::repeats`).
fn delivery_counts(events: &[EventRecord], repeats: &[RepeatedHits]) -> posthorn_track::Counts {
    let mut counts = posthorn_track::Counts::from_hits(&super::tracker::engagement_hits(events));
    for r in repeats {
        counts.add_repeats(
            super::tracker::hit_kind(r.kind),
            r.link_index,
            r.machine,
            r.hits,
        );
    }
    counts
}

/// The counted, not stored, repeats among `repeats`: opens and clicks.
fn repeats_json(repeats: &[RepeatedHits]) -> Value {
    let count = |kind: EventKind| -> u64 {
        repeats
            .iter()
            .filter(|r| r.kind == kind)
            .map(|r| r.hits)
            .sum()
    };
    json!({ "opens": count(EventKind::Opened), "clicks": count(EventKind::Clicked) })
}

/// Opens and clicks, counted per delivery: `all` hits and `human` ones
/// (machines apart, see the tracker), with the first human open and click.
pub fn engagement_json(c: &posthorn_track::Counts) -> Value {
    let tally = |t: &posthorn_track::Tally| {
        json!({
            "opened": t.opened,
            "open_inferred": t.open_inferred,
            "clicked": t.clicked,
            "opens": t.opens,
            "clicks": t.clicks,
            "clicks_per_link": per_link_json(&t.clicks_per_link),
        })
    };
    json!({
        "all": tally(&c.all),
        "human": tally(&c.human),
        "first_human_open_at": c.first_human_open.map(time),
        "first_human_click_at": c.first_human_click.map(time),
    })
}

/// Clicks by link index, as a JSON object keyed by the index.
fn per_link_json(clicks: &std::collections::BTreeMap<u32, u64>) -> Value {
    clicks
        .iter()
        .map(|(link, n)| (link.to_string(), json!(n)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

pub async fn delivery(
    State(state): State<AppState>,
    auth: Auth,
    Segment(id): Segment,
) -> ApiResult<Json<Value>> {
    auth.require(Scope::Read)?;
    let id = DeliveryId::parse(&id).ok_or_else(|| ApiError::not_found("delivery"))?;
    let tenant = &auth.tenant.id;
    let d = state
        .store
        .delivery(tenant, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("delivery"))?;
    // The timeline's first page only: a delivery's events have no bound
    // (every client's opens and clicks), its answer must.
    let (events, next_cursor) =
        timeline_page(&state, tenant, &id, None, TIMELINE_FIRST_PAGE).await?;
    let engagement = state.store.delivery_engagement_events(tenant, &id).await?;
    let repeats = state.store.delivery_repeated_hits(tenant, &id).await?;
    let mut body = delivery_status_json(&d);
    body["engagement"] = engagement_json(&delivery_counts(&engagement, &repeats));
    body["engagement"]["repeats_not_stored"] = repeats_json(&repeats);
    body["events"] = json!(
        events
            .iter()
            .map(EventView::in_timeline)
            .collect::<Vec<_>>()
    );
    body["events_next"] = json!(
        next_cursor
            .as_ref()
            .map(|c| format!("/v1/deliveries/{id}/events?cursor={c}"))
    );
    body["events_next_cursor"] = json!(next_cursor);
    Ok(Json(body))
}

/// At most `limit` events of a delivery after `after`, and the cursor of
/// the next page when there are more (one more is read to know).
async fn timeline_page(
    state: &AppState,
    tenant: &posthorn_core::TenantId,
    id: &DeliveryId,
    after: Option<&EventId>,
    limit: u32,
) -> ApiResult<(Vec<EventRecord>, Option<String>)> {
    let mut events = state
        .store
        .delivery_events_page(tenant, id, after, limit + 1)
        .await?;
    let more = events.len() > limit as usize;
    events.truncate(limit as usize);
    let next = more
        .then(|| events.last().map(|e| e.id.to_string()))
        .flatten();
    Ok((events, next))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

/// `GET /v1/deliveries/{id}/events`: a delivery's timeline, oldest first,
/// a page at a time (`limit`, and `cursor` from the previous page's
/// `next_cursor`, as the event feed pages).
pub async fn delivery_events(
    State(state): State<AppState>,
    auth: Auth,
    Segment(id): Segment,
    query: Result<Query<TimelineQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    auth.require(Scope::Read)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let limit = page_limit(q.limit)?;
    let after = page_cursor(q.cursor, EventId::parse)?;
    let id = DeliveryId::parse(&id).ok_or_else(|| ApiError::not_found("delivery"))?;
    let tenant = &auth.tenant.id;
    if state.store.delivery(tenant, &id).await?.is_none() {
        return Err(ApiError::not_found("delivery"));
    }
    let (events, next_cursor) = timeline_page(&state, tenant, &id, after.as_ref(), limit).await?;
    Ok(Json(json!({
        "events": events.iter().map(EventView::in_timeline).collect::<Vec<_>>(),
        "next_cursor": next_cursor,
    })))
}

pub async fn message(
    State(state): State<AppState>,
    auth: Auth,
    Segment(id): Segment,
) -> ApiResult<Json<Value>> {
    auth.require(Scope::Read)?;
    let id = MessageId::parse(&id).ok_or_else(|| ApiError::not_found("message"))?;
    let tenant = &auth.tenant.id;
    let m = state
        .store
        .message(tenant, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("message"))?;
    let deliveries = state.store.deliveries_of_message(tenant, &id).await?;
    // Engagement summed over the deliveries: `opened`/`clicked` count
    // deliveries (the status model counts deliveries, not hits).
    let mut events = state.store.message_engagement_events(tenant, &id).await?;
    events.sort_by(|a, b| a.delivery_id.cmp(&b.delivery_id));
    let mut engagement = MessageEngagement::default();
    for events in events.chunk_by(|a, b| a.delivery_id == b.delivery_id) {
        engagement.add(&posthorn_track::Counts::from_hits(
            &super::tracker::engagement_hits(events),
        ));
    }
    // Counted repeats add to the totals only: each repeats a stored hit of
    // its delivery, which already counted that delivery as opened/clicked.
    let repeats = state.store.message_repeated_hits(tenant, &id).await?;
    engagement.add(&delivery_counts(&[], &repeats));
    Ok(Json(json!({
        "engagement": engagement.json(),
        "id": m.id,
        "from": m.content.from,
        "reply_to": m.content.reply_to,
        "subject": m.content.subject,
        "text": m.content.text,
        "html": m.content.html,
        "headers": m.content.headers,
        "tags": m.content.tags,
        "metadata": m.content.metadata,
        "stream": m.stream,
        "campaign": m.campaign,
        "test": m.test,
        "send_at": m.send_at.map(time),
        "expires_at": m.expires_at.map(time),
        "tracking": { "opens": m.tracking_opens, "clicks": m.tracking_clicks },
        "size": m.size,
        "source": m.source.as_str(),
        "created_at": time(m.created_at),
        "deliveries": deliveries.iter().map(delivery_status_json).collect::<Vec<_>>(),
    })))
}

/// A message's engagement: per-delivery counts added up, `all` and `human`.
#[derive(Default)]
struct MessageEngagement {
    all: Sum,
    human: Sum,
}

#[derive(Default)]
struct Sum {
    opened: u64,
    opened_inferred: u64,
    clicked: u64,
    opens: u64,
    clicks: u64,
    clicks_per_link: std::collections::BTreeMap<u32, u64>,
}

impl Sum {
    fn add(&mut self, t: &posthorn_track::Tally) {
        self.opened += u64::from(t.opened);
        self.opened_inferred += u64::from(t.open_inferred);
        self.clicked += u64::from(t.clicked);
        self.opens += t.opens;
        self.clicks += t.clicks;
        for (link, n) in &t.clicks_per_link {
            *self.clicks_per_link.entry(*link).or_default() += n;
        }
    }

    fn json(&self) -> Value {
        json!({
            "opened_deliveries": self.opened,
            "opened_inferred_deliveries": self.opened_inferred,
            "clicked_deliveries": self.clicked,
            "opens": self.opens,
            "clicks": self.clicks,
            "clicks_per_link": per_link_json(&self.clicks_per_link),
        })
    }
}

impl MessageEngagement {
    fn add(&mut self, c: &posthorn_track::Counts) {
        self.all.add(&c.all);
        self.human.add(&c.human);
    }

    fn json(&self) -> Value {
        json!({ "all": self.all.json(), "human": self.human.json() })
    }
}
