//! Lists in the filter grammar (`posthorn_core::search`): the tenant's
//! events (`GET /v1/events`), its deliveries by their current status
//! (`GET /v1/deliveries`) and how many are in each status
//! (`GET /v1/deliveries/summary`). Pages follow each other by cursors
//! bound to their query and tenant (`crate::cursor`), with no cap on depth.

use super::read::delivery_status_json;
use super::{Auth, page_limit};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::event_view::EventView;
use axum::Json;
use axum::extract::{RawQuery, State};
use posthorn_core::search::{self, DELIVERY_STATUS_NAMES, Filters, STATUS_NAMES, Surface};
use posthorn_core::status::{EngagementStatus, shown_delivery_status, shown_status};
use posthorn_core::{DeliveryId, EventId, TenantId};
use posthorn_store::Scope;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The decoded pairs of a query string, in order.
pub(crate) fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// A filter the grammar refuses: `400 invalid_query` naming it.
pub(crate) fn filter_error(e: search::FilterError) -> ApiError {
    super::invalid_query(&e.parameter, &e.message)
}

/// What a list request asks: its filters, page size and where it goes on.
struct PageRequest {
    filters: Filters,
    /// The canonical query, which cursors are bound to.
    query: String,
    limit: u32,
    after: Option<String>,
}

impl PageRequest {
    fn parse(
        state: &AppState,
        tenant: &TenantId,
        raw: Option<&str>,
        list: List,
    ) -> ApiResult<Self> {
        let (filters, own) = search::parse(&query_pairs(raw), list.surface, &["limit", "cursor"])
            .map_err(filter_error)?;
        let mut limit = None;
        let mut cursor = None;
        for (key, value) in own {
            let slot = if key == "limit" {
                &mut limit
            } else {
                &mut cursor
            };
            if slot.replace(value).is_some() {
                return Err(super::invalid_query(&key, "given more than once"));
            }
        }
        let limit = page_limit(
            limit
                .map(|l| {
                    l.parse::<u32>()
                        .map_err(|_| super::invalid_query("limit", "limit is 1 to 500"))
                })
                .transpose()?,
        )?;
        let query = filters.to_query_string();
        let after = cursor
            .map(|c| {
                state
                    .cursors
                    .open(tenant, list.name, &query, &c)
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        super::invalid_query(
                            "cursor",
                            "not a cursor of this query: pass the next_cursor of its previous page with the same filters",
                        )
                    })
            })
            .transpose()?;
        Ok(Self {
            filters,
            query,
            limit,
            after,
        })
    }

    /// The id the cursor goes on after, as the list's id type.
    fn after<T>(&self, parse: fn(&str) -> Option<T>) -> ApiResult<Option<T>> {
        self.after
            .as_deref()
            .map(|a| parse(a).ok_or_else(|| super::invalid_query("cursor", "not a cursor")))
            .transpose()
    }

    /// Cuts `items` (read one longer than the page, to know whether more
    /// follow) to the page, and gives the next page's cursor and URL.
    fn finish<T>(
        &self,
        state: &AppState,
        tenant: &TenantId,
        list: List,
        items: &mut Vec<T>,
        id_of: impl Fn(&T) -> String,
    ) -> (Value, Value) {
        let more = items.len() > self.limit as usize;
        items.truncate(self.limit as usize);
        match items.last().filter(|_| more) {
            None => (Value::Null, Value::Null),
            Some(last) => {
                let cursor = state
                    .cursors
                    .issue(tenant, list.name, &self.query, &id_of(last));
                let sep = if self.query.is_empty() { "" } else { "&" };
                let url = format!(
                    "{}?{}{sep}limit={}&cursor={cursor}",
                    list.path, self.query, self.limit
                );
                (json!(cursor), json!(url))
            }
        }
    }
}

/// A list a page belongs to: its cursors are its own.
#[derive(Clone, Copy)]
struct List {
    name: &'static str,
    path: &'static str,
    surface: Surface,
}

const EVENTS: List = List {
    name: "events",
    path: "/v1/events",
    surface: Surface::Events,
};

const DELIVERIES: List = List {
    name: "deliveries",
    path: "/v1/deliveries",
    surface: Surface::Deliveries,
};

/// `GET /v1/events?FILTERS&limit&cursor`: the tenant's events, newest
/// first (or `order=asc`).
pub async fn events(
    State(state): State<AppState>,
    auth: Auth,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    auth.require(Scope::Read)?;
    let tenant = &auth.tenant.id;
    let page = PageRequest::parse(&state, tenant, raw.as_deref(), EVENTS)?;
    let after = page.after(EventId::parse)?;
    let mut events = state
        .store
        .search_events(tenant, &page.filters, after.as_ref(), page.limit + 1)
        .await?;
    let (next_cursor, next) =
        page.finish(&state, tenant, EVENTS, &mut events, |e| e.id.to_string());
    Ok(Json(json!({
        "events": events.iter().map(EventView::in_feed).collect::<Vec<_>>(),
        "next_cursor": next_cursor,
        "next": next,
    })))
}

/// `GET /v1/deliveries?FILTERS&limit&cursor`: the tenant's deliveries
/// with their current status, newest first (or `order=asc`).
pub async fn deliveries(
    State(state): State<AppState>,
    auth: Auth,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    auth.require(Scope::Read)?;
    let tenant = &auth.tenant.id;
    let page = PageRequest::parse(&state, tenant, raw.as_deref(), DELIVERIES)?;
    let after = page.after(DeliveryId::parse)?;
    let mut deliveries = state
        .store
        .search_deliveries(tenant, &page.filters, after.as_ref(), page.limit + 1)
        .await?;
    let (next_cursor, next) = page.finish(&state, tenant, DELIVERIES, &mut deliveries, |d| {
        d.id.to_string()
    });
    Ok(Json(json!({
        "deliveries": deliveries.iter().map(delivery_status_json).collect::<Vec<_>>(),
        "next_cursor": next_cursor,
        "next": next,
    })))
}

/// `GET /v1/deliveries/summary?FILTERS`: how many of the deliveries the
/// filters select are in each status (as users see it), on each axis,
/// and in all; every count with the list of the deliveries behind it.
pub async fn summary(
    State(state): State<AppState>,
    auth: Auth,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    auth.require(Scope::Read)?;
    let tenant = &auth.tenant.id;
    let (filters, _) = search::parse(&query_pairs(raw.as_deref()), Surface::Deliveries, &[])
        .map_err(filter_error)?;
    let counts = state.store.delivery_status_counts(tenant, &filters).await?;
    let mut status: BTreeMap<&'static str, u64> = STATUS_NAMES.iter().map(|s| (*s, 0)).collect();
    let mut delivery: BTreeMap<&'static str, u64> =
        DELIVERY_STATUS_NAMES.iter().map(|s| (*s, 0)).collect();
    let mut engagement: BTreeMap<&'static str, u64> = [
        EngagementStatus::None,
        EngagementStatus::Opened,
        EngagementStatus::Clicked,
        EngagementStatus::Unsubscribed,
        EngagementStatus::Complained,
    ]
    .iter()
    .map(|e| (e.as_str(), 0))
    .collect();
    let mut total = 0;
    for c in &counts {
        total += c.deliveries;
        *status
            .entry(shown_status(c.delivery_status, c.engagement_status))
            .or_default() += c.deliveries;
        let axis = shown_delivery_status(c.delivery_status, c.engagement_status)
            .0
            .map_or("queued", |d| d.as_str());
        *delivery.entry(axis).or_default() += c.deliveries;
        *engagement.entry(c.engagement_status.as_str()).or_default() += c.deliveries;
    }
    // The deliveries behind a count: the same filters, with that status
    // in place of any given for the same axis.
    let behind = |param: &str, name: &'static str| {
        let mut f = filters.clone();
        match param {
            "status" => f.statuses = vec![name],
            "delivery_status" => f.delivery_statuses = vec![name],
            _ => f.engagement_statuses = EngagementStatus::parse(name).into_iter().collect(),
        }
        format!("/v1/deliveries?{}", f.to_query_string())
    };
    let figures = |param: &str, counts: &BTreeMap<&'static str, u64>| -> Value {
        counts
            .iter()
            .map(|(name, n)| {
                (
                    (*name).to_owned(),
                    json!({ "deliveries": n, "list": behind(param, name) }),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    Ok(Json(json!({
        "total": total,
        "status": figures("status", &status),
        "delivery_status": figures("delivery_status", &delivery),
        "engagement_status": figures("engagement_status", &engagement),
    })))
}
