//! `GET /v1/stats?from&to&group_by=hour|day|stream|campaign|tag|domain|reason&FILTERS`:
//! the statistics, counted per delivery (`posthorn_core::stats`), read
//! from counts the store keeps as deliveries change (no event is read).
//!
//! Deliveries count in the hour they were submitted in; `from` and `to`
//! bound that time (default: the 30 days up to now). The filters are the
//! grammar's, those the counts are kept by: `stream`, `campaign`, one
//! `tag`, one receiving domain (`recipient=@example.com`); by domain the
//! counts are by day and domain only. Every figure comes with `list`: the
//! `GET /v1/deliveries` query of the deliveries behind it, in the same
//! grammar (`null` where the grammar cannot say it, as "no campaign").
//! Rates have delivered deliveries as their base.

use super::search::{filter_error, query_pairs};
use super::{Auth, invalid_query, time};
use crate::app::AppState;
use crate::error::ApiResult;
use axum::Json;
use axum::extract::{RawQuery, State};
use posthorn_core::clock::{DAY, HOUR};
use posthorn_core::search::{self, Filters, RecipientFilter, Surface};
use posthorn_core::stats::Metric;
use posthorn_store::{Scope, StatsCount, StatsGroup, StatsQuery};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// The range when none is given: the 30 days up to now.
const DEFAULT_RANGE: i64 = 30 * DAY;

/// The longest range a request may ask for, by hour: a year of hours.
const MAX_HOURS: i64 = 366 * 24;

pub async fn stats(
    State(state): State<AppState>,
    auth: Auth,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    auth.require(Scope::Read)?;
    let (filters, own) =
        search::parse(&query_pairs(raw.as_deref()), Surface::Events, &["group_by"])
            .map_err(filter_error)?;
    let group_by = match own.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>()[..] {
        [] => StatsGroup::All,
        [name] => group(name).ok_or_else(|| {
            invalid_query(
                "group_by",
                "group_by is hour, day, stream, campaign, tag, domain or reason",
            )
        })?,
        _ => return Err(invalid_query("group_by", "given more than once")),
    };
    let now = state.clock.now_ms();
    let query = stats_query(&filters, group_by, now)?;
    let counts = state.store.delivery_stats(&auth.tenant.id, &query).await?;
    // Counts by group, then figure and reason.
    let mut groups: BTreeMap<String, Vec<&StatsCount>> = BTreeMap::new();
    for c in &counts {
        groups.entry(c.group.clone()).or_default().push(c);
    }
    let base = base_filters(&query);
    let answer_groups: Vec<Value> = groups
        .iter()
        .map(|(key, counts)| {
            let (shown_key, behind) = group_key(&query, key, &base);
            json!({ "key": shown_key, "figures": figures(counts, behind.as_ref()) })
        })
        .collect();
    let all: Vec<&StatsCount> = counts.iter().collect();
    Ok(Json(json!({
        "from": time(query.from),
        "to": time(query.to),
        "group_by": own.first().map(|(_, v)| v.as_str()),
        "groups": answer_groups,
        "total": figures(&all, Some(&base)),
    })))
}

fn group(name: &str) -> Option<StatsGroup> {
    Some(match name {
        "hour" => StatsGroup::Hour,
        "day" => StatsGroup::Day,
        "stream" => StatsGroup::Stream,
        "campaign" => StatsGroup::Campaign,
        "tag" => StatsGroup::Tag,
        "domain" => StatsGroup::Domain,
        "reason" => StatsGroup::Reason,
        _ => return None,
    })
}

/// The statistics' question from the grammar's filters: the ones the
/// counts are kept by, and nothing else.
fn stats_query(f: &Filters, group_by: StatsGroup, now: i64) -> ApiResult<StatsQuery> {
    let not_kept = |name: &str| {
        invalid_query(
            name,
            "the statistics are kept by stream, campaign, tag and receiving domain (recipient=@domain) only: \
             list the deliveries with this filter instead",
        )
    };
    if f.sender.is_some() {
        return Err(not_kept("sender"));
    }
    if f.message_id.is_some() {
        return Err(not_kept("message_id"));
    }
    if f.delivery_id.is_some() {
        return Err(not_kept("delivery_id"));
    }
    for (name, given) in [
        ("kind", !f.kinds.is_empty()),
        ("reason", !f.reasons.is_empty()),
        ("bounce_type", !f.bounce_types.is_empty()),
        ("smtp_code", f.smtp_code.is_some()),
        ("machine", f.machine.is_some()),
        ("q", !f.words.is_empty()),
        ("metadata", !f.metadata.is_empty()),
    ] {
        if given {
            return Err(not_kept(name));
        }
    }
    if f.tags.len() > 1 {
        return Err(invalid_query("tag", "the statistics take one tag"));
    }
    let domain = match &f.recipients[..] {
        [] => None,
        [RecipientFilter::Domain(d)] => Some(d.clone()),
        _ => {
            return Err(invalid_query(
                "recipient",
                "the statistics take one receiving domain (recipient=@example.com)",
            ));
        }
    };
    let by_domain = domain.is_some() || group_by == StatsGroup::Domain;
    if by_domain {
        for (name, given) in [
            ("stream", f.stream.is_some()),
            ("campaign", f.campaign.is_some()),
            ("tag", !f.tags.is_empty()),
        ] {
            if given {
                return Err(invalid_query(
                    name,
                    "by receiving domain the statistics are kept by day only, not by stream, campaign or tag",
                ));
            }
        }
        if matches!(
            group_by,
            StatsGroup::Hour
                | StatsGroup::Stream
                | StatsGroup::Campaign
                | StatsGroup::Tag
                | StatsGroup::Reason
        ) {
            return Err(invalid_query(
                "group_by",
                "by receiving domain the statistics are grouped by day or domain only",
            ));
        }
    }
    let to = f.to.unwrap_or(now);
    let from = f.from.unwrap_or(to - DEFAULT_RANGE);
    if (to - from) / HOUR > MAX_HOURS && group_by == StatsGroup::Hour {
        return Err(invalid_query("from", "by hour, at most a year at once"));
    }
    Ok(StatsQuery {
        from,
        to,
        group_by,
        stream: f.stream.clone(),
        campaign: f.campaign.clone(),
        tag: f.tags.first().cloned(),
        domain,
    })
}

/// The filters every figure's list starts with: the question's own.
fn base_filters(q: &StatsQuery) -> Filters {
    Filters {
        stream: q.stream.clone(),
        campaign: q.campaign.clone(),
        tags: q.tag.iter().cloned().collect(),
        recipients: q
            .domain
            .iter()
            .map(|d| RecipientFilter::Domain(d.clone()))
            .collect(),
        from: Some(q.from),
        to: Some(q.to),
        ..Filters::default()
    }
}

/// A group's key as shown (times as RFC 3339), and the filters of the
/// deliveries in it (`None` when the grammar cannot say them).
fn group_key(q: &StatsQuery, key: &str, base: &Filters) -> (Value, Option<Filters>) {
    let mut f = base.clone();
    let at = |unit: i64| -> Option<(i64, i64)> { key.parse::<i64>().ok().map(|t| (t, t + unit)) };
    match q.group_by {
        StatsGroup::All => (Value::Null, Some(f)),
        StatsGroup::Hour | StatsGroup::Day => {
            let unit = if q.group_by == StatsGroup::Hour {
                HOUR
            } else {
                DAY
            };
            match at(unit) {
                Some((start, end)) => {
                    f.from = Some(start.max(q.from));
                    f.to = Some(end.min(q.to));
                    (json!(time(start)), Some(f))
                }
                None => (json!(key), None),
            }
        }
        StatsGroup::Stream => {
            f.stream = Some(key.to_owned());
            (json!(key), Some(f))
        }
        StatsGroup::Campaign | StatsGroup::Tag if key.is_empty() => (json!(key), None),
        StatsGroup::Campaign => {
            f.campaign = Some(key.to_owned());
            (json!(key), Some(f))
        }
        StatsGroup::Tag => {
            f.tags = vec![key.to_owned()];
            (json!(key), Some(f))
        }
        StatsGroup::Domain => {
            f.recipients = vec![RecipientFilter::Domain(key.to_owned())];
            (json!(key), Some(f))
        }
        // The reason narrows each figure's own list (below).
        StatsGroup::Reason => (json!(key), Some(f)),
    }
}

/// A figure: its count and the list behind it.
fn figure(n: i64, behind: Option<Filters>) -> Value {
    json!({
        "deliveries": n,
        "list": behind.map(|f| format!("/v1/deliveries?{}", f.to_query_string())),
    })
}

/// The filters of the deliveries behind `metric` (and `reason`).
fn behind(base: &Filters, metric: Metric, reason: Option<&str>) -> Filters {
    use posthorn_core::BounceType;
    use posthorn_core::EventKind as K;
    let mut f = base.clone();
    match metric {
        Metric::Submitted => {}
        Metric::Dropped => f.statuses = vec!["dropped"],
        Metric::Delivered => f.delivery_statuses = vec!["delivered"],
        Metric::Deferred => f.delivery_statuses = vec!["deferred"],
        Metric::BouncedHard => {
            f.statuses = vec!["bounced"];
            f.bounce_types = vec![BounceType::Hard];
        }
        Metric::BouncedSoft => {
            f.statuses = vec!["bounced"];
            f.bounce_types = vec![BounceType::Soft, BounceType::Undetermined];
        }
        Metric::Expired => f.statuses = vec!["expired"],
        Metric::Failed => f.statuses = vec!["failed"],
        Metric::Opened => f.kinds = vec![K::Opened, K::Clicked],
        Metric::OpenedByPerson => {
            f.kinds = vec![K::Opened, K::Clicked];
            f.machine = Some(false);
        }
        Metric::Clicked => f.kinds = vec![K::Clicked],
        Metric::ClickedByPerson => {
            f.kinds = vec![K::Clicked];
            f.machine = Some(false);
        }
        Metric::Unsubscribed => f.kinds = vec![K::Unsubscribed],
        Metric::Complained => f.kinds = vec![K::Complained],
    }
    if let Some(reason) = reason.filter(|r| !r.is_empty()) {
        let kind = if metric == Metric::Dropped {
            K::Dropped
        } else {
            K::Bounced
        };
        f.kinds = vec![kind];
        f.reasons = vec![reason.to_owned()];
    }
    f
}

/// Every figure of a group, with rates over delivered deliveries.
fn figures(counts: &[&StatsCount], base: Option<&Filters>) -> Value {
    let total = |m: Metric| -> i64 {
        counts
            .iter()
            .filter(|c| c.metric == m)
            .map(|c| c.deliveries)
            .sum()
    };
    let list = |m: Metric| base.map(|b| behind(b, m, None));
    let plain = |m: Metric| figure(total(m), list(m));
    let with_reasons = |m: Metric| {
        let mut by_reason = Map::new();
        for c in counts.iter().filter(|c| c.metric == m) {
            let name = if c.reason.is_empty() {
                "unknown"
            } else {
                c.reason.as_str()
            };
            by_reason.insert(
                name.to_owned(),
                figure(c.deliveries, base.map(|b| behind(b, m, Some(&c.reason)))),
            );
        }
        let mut v = plain(m);
        v["by_reason"] = Value::Object(by_reason);
        v
    };
    let delivered = total(Metric::Delivered);
    let rate = |m: Metric| -> Value {
        if delivered == 0 {
            Value::Null
        } else {
            json!(total(m) as f64 / delivered as f64)
        }
    };
    json!({
        "submitted": plain(Metric::Submitted),
        "dropped": with_reasons(Metric::Dropped),
        "delivered": plain(Metric::Delivered),
        "deferred_now": plain(Metric::Deferred),
        "bounced": {
            "hard": with_reasons(Metric::BouncedHard),
            "soft": with_reasons(Metric::BouncedSoft),
        },
        "expired": plain(Metric::Expired),
        "failed": plain(Metric::Failed),
        "opened": { "all": plain(Metric::Opened), "human": plain(Metric::OpenedByPerson) },
        "clicked": { "all": plain(Metric::Clicked), "human": plain(Metric::ClickedByPerson) },
        "unsubscribed": plain(Metric::Unsubscribed),
        "complained": plain(Metric::Complained),
        "rates": {
            "open": { "all": rate(Metric::Opened), "human": rate(Metric::OpenedByPerson) },
            "click": { "all": rate(Metric::Clicked), "human": rate(Metric::ClickedByPerson) },
            "unsubscribe": rate(Metric::Unsubscribed),
            "complaint": rate(Metric::Complained),
        },
    })
}
