//! The filter grammar (issue #15): one set of query parameters that means
//! the same on every surface that lists events or deliveries (the event
//! list, the delivery list and its summary, the live feed, the exports,
//! the statistics, the CLI and the console).
//!
//! Two rules make it predictable: different parameters narrow (all must
//! hold), and several values of one parameter widen (any may hold), given
//! either as repeated parameters (`kind=bounced&kind=deferred`) or comma-
//! separated (`kind=bounced,deferred`). A parameter that takes one value
//! (`sender`, `from`, ...) given twice is an error rather than a guess.
//!
//! Parsing is pure: the HTTP layer hands over the raw pairs and gets back
//! typed [`Filters`] or a [`FilterError`] naming the parameter at fault;
//! the store turns the filters into SQL. [`Filters::to_query`] writes them
//! back in the same parameters (canonical: one order, one spelling), which
//! is what a cursor is bound to and what a statistic links to.

use crate::address::EmailAddress;
use crate::clock::{Millis, format_rfc3339, parse_rfc3339};
use crate::event::EventKind;
use crate::id::{DeliveryId, MessageId};
use crate::status::{
    BounceType, DeliveryStatus, EngagementStatus, shown_delivery_status, shown_status,
};

/// Which list the parameters filter: events, or deliveries by their
/// current status (which also take `status`, `delivery_status` and
/// `engagement_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Events,
    Deliveries,
}

/// A recipient filter: one address, or every address at a domain
/// (`@example.com`; subdomains are other domains).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientFilter {
    Address(String),
    Domain(String),
}

impl RecipientFilter {
    fn as_param(&self) -> String {
        match self {
            RecipientFilter::Address(a) => a.clone(),
            RecipientFilter::Domain(d) => format!("@{d}"),
        }
    }
}

/// Newest first (the default) or oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    Desc,
    Asc,
}

/// Every filter of the grammar, typed. Empty lists and `None` do not
/// filter. Lists are sorted and without repeats, so two spellings of one
/// query are equal (and bind the same cursors).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filters {
    pub recipients: Vec<RecipientFilter>,
    pub sender: Option<String>,
    pub message_id: Option<MessageId>,
    pub delivery_id: Option<DeliveryId>,
    pub kinds: Vec<EventKind>,
    /// An event's reason: a drop's (`suppressed`, ...) or a bounce's class
    /// (`userunknown`, ...).
    pub reasons: Vec<String>,
    pub bounce_types: Vec<BounceType>,
    pub smtp_code: Option<u16>,
    pub tags: Vec<String>,
    pub stream: Option<String>,
    pub campaign: Option<String>,
    /// `metadata.KEY=VALUE`: the message's metadata has KEY with VALUE
    /// (as text); different keys narrow, one key given twice widens.
    pub metadata: Vec<(String, String)>,
    /// Opens and clicks judged a machine's (`true`), or not (`false`: a
    /// person's, or given with no verdict, as the statistics count them).
    pub machine: Option<bool>,
    /// Inclusive start and exclusive end: for events the time they were
    /// recorded (the order of the list), for deliveries the time they
    /// were submitted.
    pub from: Option<Millis>,
    pub to: Option<Millis>,
    /// `q`: words that must all appear (case-insensitively) in the remote
    /// server's reply text.
    pub words: Vec<String>,
    /// Deliveries only: the status users see, and each axis.
    pub statuses: Vec<&'static str>,
    pub delivery_statuses: Vec<&'static str>,
    pub engagement_statuses: Vec<EngagementStatus>,
    pub order: Order,
}

impl PartialOrd for RecipientFilter {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for RecipientFilter {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_param().cmp(&other.as_param())
    }
}

/// A parameter that is not understood: a `400` naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{parameter}: {message}")]
pub struct FilterError {
    pub parameter: String,
    pub message: String,
}

impl FilterError {
    fn new(parameter: &str, message: impl Into<String>) -> Self {
        Self {
            parameter: parameter.to_owned(),
            message: message.into(),
        }
    }
}

/// The longest value of one parameter, and the most values and words: a
/// filter is a question, not a payload.
const MAX_VALUE_LEN: usize = 998;
const MAX_VALUES: usize = 100;
const MAX_WORDS: usize = 16;

/// Delivery statuses as users see them (`shown_status`), in rank order.
pub const STATUS_NAMES: [&str; 14] = [
    "scheduled",
    "queued",
    "held",
    "sent",
    "deferred",
    "delivered",
    "opened",
    "clicked",
    "unsubscribed",
    "complained",
    "bounced",
    "expired",
    "failed",
    "dropped",
];

/// Names of the delivery axis (`delivery_status`).
pub const DELIVERY_STATUS_NAMES: [&str; 10] = [
    "scheduled",
    "queued",
    "held",
    "sent",
    "deferred",
    "delivered",
    "bounced",
    "expired",
    "failed",
    "dropped",
];

/// Every pair of stored axes a delivery can have (no delivery status yet,
/// or one of them, with every engagement status).
pub fn stored_status_pairs() -> Vec<(Option<DeliveryStatus>, EngagementStatus)> {
    let delivery = [
        None,
        Some(DeliveryStatus::Scheduled),
        Some(DeliveryStatus::Queued),
        Some(DeliveryStatus::Held),
        Some(DeliveryStatus::Sent),
        Some(DeliveryStatus::Deferred),
        Some(DeliveryStatus::Delivered),
        Some(DeliveryStatus::Bounced(BounceType::Hard)),
        Some(DeliveryStatus::Bounced(BounceType::Soft)),
        Some(DeliveryStatus::Bounced(BounceType::Undetermined)),
        Some(DeliveryStatus::Expired),
        Some(DeliveryStatus::Failed),
        Some(DeliveryStatus::Dropped),
    ];
    let engagement = [
        EngagementStatus::None,
        EngagementStatus::Opened,
        EngagementStatus::Clicked,
        EngagementStatus::Unsubscribed,
        EngagementStatus::Complained,
    ];
    delivery
        .into_iter()
        .flat_map(|d| engagement.into_iter().map(move |e| (d, e)))
        .collect()
}

impl Filters {
    /// Whether a delivery with these stored axes passes the three status
    /// filters. The store asks this of every stored pair
    /// ([`stored_status_pairs`]) and searches for the pairs that pass, so
    /// the rule of what users see stays here, in one place.
    pub fn status_matches(
        &self,
        delivery: Option<DeliveryStatus>,
        engagement: EngagementStatus,
    ) -> bool {
        let shown_axis = shown_delivery_status(delivery, engagement)
            .0
            .map_or("queued", DeliveryStatus::as_str);
        (self.statuses.is_empty() || self.statuses.contains(&shown_status(delivery, engagement)))
            && (self.delivery_statuses.is_empty() || self.delivery_statuses.contains(&shown_axis))
            && (self.engagement_statuses.is_empty()
                || self.engagement_statuses.contains(&engagement))
    }

    /// Whether any status filter is given.
    pub fn filters_status(&self) -> bool {
        !(self.statuses.is_empty()
            && self.delivery_statuses.is_empty()
            && self.engagement_statuses.is_empty())
    }

    /// Whether a filter about one event (its kind, reason, reply, verdict
    /// or code) is given: on deliveries these ask for a delivery with such
    /// an event.
    pub fn filters_events(&self) -> bool {
        !(self.kinds.is_empty()
            && self.reasons.is_empty()
            && self.smtp_code.is_none()
            && self.machine.is_none()
            && self.words.is_empty())
    }

    /// The filters in the grammar's own parameters, in one fixed order and
    /// spelling: parsing them gives these filters back. Cursors are bound
    /// to this text, and statistics link to lists with it.
    pub fn to_query(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut put = |k: &str, v: String| out.push((k.to_owned(), v));
        for r in &self.recipients {
            put("recipient", r.as_param());
        }
        if let Some(s) = &self.sender {
            put("sender", s.clone());
        }
        if let Some(m) = &self.message_id {
            put("message_id", m.to_string());
        }
        if let Some(d) = &self.delivery_id {
            put("delivery_id", d.to_string());
        }
        for k in &self.kinds {
            put("kind", k.as_str().to_owned());
        }
        for r in &self.reasons {
            put("reason", r.clone());
        }
        for b in &self.bounce_types {
            put("bounce_type", b.as_str().to_owned());
        }
        if let Some(c) = self.smtp_code {
            put("smtp_code", c.to_string());
        }
        for t in &self.tags {
            put("tag", t.clone());
        }
        if let Some(s) = &self.stream {
            put("stream", s.clone());
        }
        if let Some(c) = &self.campaign {
            put("campaign", c.clone());
        }
        for (k, v) in &self.metadata {
            put(&format!("metadata.{k}"), v.clone());
        }
        if let Some(m) = self.machine {
            put("machine", m.to_string());
        }
        if let Some(f) = self.from {
            put("from", format_rfc3339(f));
        }
        if let Some(t) = self.to {
            put("to", format_rfc3339(t));
        }
        if !self.words.is_empty() {
            put("q", self.words.join(" "));
        }
        for s in &self.statuses {
            put("status", (*s).to_owned());
        }
        for s in &self.delivery_statuses {
            put("delivery_status", (*s).to_owned());
        }
        for s in &self.engagement_statuses {
            put("engagement_status", s.as_str().to_owned());
        }
        if self.order == Order::Asc {
            put("order", "asc".to_owned());
        }
        out
    }

    /// [`Filters::to_query`] as one URL query string (without `?`).
    pub fn to_query_string(&self) -> String {
        self.to_query()
            .iter()
            .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'@') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Parses the grammar's parameters out of `pairs` (decoded, in the order
/// given). Parameters named in `own` belong to the surface (`limit`,
/// `cursor`, `format`, ...) and are returned for it to read; any other
/// parameter is an error naming it.
pub fn parse(
    pairs: &[(String, String)],
    surface: Surface,
    own: &[&str],
) -> Result<(Filters, Vec<(String, String)>), FilterError> {
    let mut f = Filters::default();
    let mut rest = Vec::new();
    let mut seen_single: Vec<&str> = Vec::new();
    for (key, value) in pairs {
        if own.contains(&key.as_str()) {
            rest.push((key.clone(), value.clone()));
            continue;
        }
        if value.len() > MAX_VALUE_LEN {
            return Err(FilterError::new(key, "value is too long"));
        }
        if let Some(name) = key.strip_prefix("metadata.") {
            if name.is_empty() {
                return Err(FilterError::new(
                    key,
                    "metadata filter needs a key: metadata.KEY=VALUE",
                ));
            }
            if name.len() > 256 || name.chars().any(char::is_control) {
                return Err(FilterError::new(key, "not a metadata key"));
            }
            f.metadata.push((name.to_owned(), value.clone()));
            continue;
        }
        let single = |seen: &mut Vec<&str>, name: &'static str| -> Result<(), FilterError> {
            if seen.contains(&name) {
                return Err(FilterError::new(
                    name,
                    "given more than once; it takes one value",
                ));
            }
            seen.push(name);
            Ok(())
        };
        match key.as_str() {
            "recipient" => {
                for v in values(key, value)? {
                    f.recipients.push(recipient(v)?);
                }
            }
            "sender" => {
                single(&mut seen_single, "sender")?;
                f.sender = Some(address("sender", value)?);
            }
            "message_id" => {
                single(&mut seen_single, "message_id")?;
                f.message_id = Some(
                    MessageId::parse(value.trim())
                        .ok_or_else(|| FilterError::new(key, "not a message id"))?,
                );
            }
            "delivery_id" => {
                single(&mut seen_single, "delivery_id")?;
                f.delivery_id = Some(
                    DeliveryId::parse(value.trim())
                        .ok_or_else(|| FilterError::new(key, "not a delivery id"))?,
                );
            }
            "kind" => {
                for v in values(key, value)? {
                    f.kinds.push(
                        v.parse().map_err(|_| {
                            FilterError::new(key, format!("unknown event kind `{v}`"))
                        })?,
                    );
                }
            }
            "reason" => {
                for v in values(key, value)? {
                    f.reasons.push(v.to_owned());
                }
            }
            "bounce_type" => {
                for v in values(key, value)? {
                    f.bounce_types.push(BounceType::parse(v).ok_or_else(|| {
                        FilterError::new(key, "bounce_type is hard, soft or undetermined")
                    })?);
                }
            }
            "smtp_code" => {
                single(&mut seen_single, "smtp_code")?;
                f.smtp_code = Some(
                    value
                        .trim()
                        .parse::<u16>()
                        .ok()
                        .filter(|c| (200..600).contains(c))
                        .ok_or_else(|| FilterError::new(key, "an SMTP reply code, 200 to 599"))?,
                );
            }
            "tag" => {
                for v in values(key, value)? {
                    f.tags.push(v.to_owned());
                }
            }
            "stream" => {
                single(&mut seen_single, "stream")?;
                f.stream = Some(nonempty(key, value)?);
            }
            "campaign" => {
                single(&mut seen_single, "campaign")?;
                f.campaign = Some(nonempty(key, value)?);
            }
            "machine" => {
                single(&mut seen_single, "machine")?;
                f.machine = Some(match value.trim() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(FilterError::new(key, "machine is true or false")),
                });
            }
            "from" => {
                single(&mut seen_single, "from")?;
                f.from = Some(time(key, value)?);
            }
            "to" => {
                single(&mut seen_single, "to")?;
                f.to = Some(time(key, value)?);
            }
            "q" => {
                single(&mut seen_single, "q")?;
                f.words = value.split_whitespace().map(str::to_lowercase).collect();
                if f.words.len() > MAX_WORDS {
                    return Err(FilterError::new(key, format!("at most {MAX_WORDS} words")));
                }
            }
            "order" => {
                single(&mut seen_single, "order")?;
                f.order = match value.trim() {
                    "desc" => Order::Desc,
                    "asc" => Order::Asc,
                    _ => return Err(FilterError::new(key, "order is desc or asc")),
                };
            }
            "status" if surface == Surface::Deliveries => {
                for v in values(key, value)? {
                    f.statuses.push(named(key, v, &STATUS_NAMES)?);
                }
            }
            "delivery_status" if surface == Surface::Deliveries => {
                for v in values(key, value)? {
                    f.delivery_statuses
                        .push(named(key, v, &DELIVERY_STATUS_NAMES)?);
                }
            }
            "engagement_status" if surface == Surface::Deliveries => {
                for v in values(key, value)? {
                    f.engagement_statuses.push(EngagementStatus::parse(v).ok_or_else(|| {
                        FilterError::new(
                            key,
                            "engagement_status is none, opened, clicked, unsubscribed or complained",
                        )
                    })?);
                }
            }
            _ => return Err(FilterError::new(key, "unknown parameter")),
        }
    }
    if let (Some(from), Some(to)) = (f.from, f.to)
        && to < from
    {
        return Err(FilterError::new("to", "to is before from"));
    }
    for (name, n) in [
        ("recipient", f.recipients.len()),
        ("kind", f.kinds.len()),
        ("reason", f.reasons.len()),
        ("tag", f.tags.len()),
        ("metadata", f.metadata.len()),
    ] {
        if n > MAX_VALUES {
            return Err(FilterError::new(
                name,
                format!("at most {MAX_VALUES} values"),
            ));
        }
    }
    normalize(&mut f.recipients);
    normalize(&mut f.kinds);
    normalize(&mut f.reasons);
    normalize(&mut f.bounce_types);
    normalize(&mut f.tags);
    normalize(&mut f.metadata);
    normalize(&mut f.statuses);
    normalize(&mut f.delivery_statuses);
    normalize(&mut f.engagement_statuses);
    Ok((f, rest))
}

fn normalize<T: Ord>(list: &mut Vec<T>) {
    list.sort();
    list.dedup();
}

/// The values of a parameter that may take several, comma-separated.
fn values<'a>(key: &str, value: &'a str) -> Result<Vec<&'a str>, FilterError> {
    let list: Vec<&str> = value.split(',').map(str::trim).collect();
    if list.iter().any(|v| v.is_empty()) {
        return Err(FilterError::new(key, "an empty value"));
    }
    if list.len() > MAX_VALUES {
        return Err(FilterError::new(
            key,
            format!("at most {MAX_VALUES} values"),
        ));
    }
    Ok(list)
}

fn nonempty(key: &str, value: &str) -> Result<String, FilterError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(FilterError::new(key, "an empty value"));
    }
    Ok(v.to_owned())
}

fn named(key: &str, value: &str, names: &[&'static str]) -> Result<&'static str, FilterError> {
    names
        .iter()
        .find(|n| **n == value)
        .copied()
        .ok_or_else(|| FilterError::new(key, format!("one of: {}", names.join(", "))))
}

/// An address as stored: normalised (lower-case, the domain in punycode).
fn address(key: &str, value: &str) -> Result<String, FilterError> {
    EmailAddress::parse(value.trim())
        .map(|a| a.normalized())
        .map_err(|_| FilterError::new(key, "not an email address"))
}

fn recipient(value: &str) -> Result<RecipientFilter, FilterError> {
    match value.strip_prefix('@') {
        Some(domain) => {
            // The domain as the stored addresses spell it.
            let probe = address("recipient", &format!("x@{domain}"))?;
            Ok(RecipientFilter::Domain(
                probe
                    .split_once('@')
                    .map(|(_, d)| d.to_owned())
                    .unwrap_or_default(),
            ))
        }
        None => Ok(RecipientFilter::Address(address("recipient", value)?)),
    }
}

/// A time: RFC 3339 (`2026-12-01T00:00:00Z`), a date (`2026-12-01`,
/// midnight UTC) or milliseconds since the epoch.
fn time(key: &str, value: &str) -> Result<Millis, FilterError> {
    let v = value.trim();
    let bad = || {
        FilterError::new(
            key,
            "a time: RFC 3339 (2026-12-01T00:00:00Z), a date (2026-12-01) or epoch milliseconds",
        )
    };
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        let ms: i64 = v.parse().map_err(|_| bad())?;
        return (ms <= MAX_TIME).then_some(ms).ok_or_else(bad);
    }
    let ms = if v.len() == 10 {
        parse_rfc3339(&format!("{v}T00:00:00Z"))
    } else {
        parse_rfc3339(v)
    }
    .ok_or_else(bad)?;
    (0..=MAX_TIME).contains(&ms).then_some(ms).ok_or_else(bad)
}

/// The year 9999's end: later times are typing errors.
const MAX_TIME: Millis = 253_402_300_799_999;

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        q.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }

    fn events(q: &str) -> Result<Filters, FilterError> {
        parse(&pairs(q), Surface::Events, &["limit", "cursor"]).map(|(f, _)| f)
    }

    #[test]
    fn several_values_widen_and_are_kept_sorted() {
        let a = events("kind=deferred,bounced&kind=bounced").unwrap();
        assert_eq!(a.kinds, vec![EventKind::Deferred, EventKind::Bounced]);
        let b = events("kind=bounced&kind=deferred").unwrap();
        assert_eq!(a, b, "two spellings of one query are one query");
    }

    #[test]
    fn recipients_are_addresses_or_domains_as_stored() {
        let f = events("recipient=Ann@Example.COM&recipient=@B%C3%BCcher.de").unwrap_err();
        // Raw pairs are already percent-decoded by the HTTP layer; an
        // encoded value is not an address.
        assert_eq!(f.parameter, "recipient");
        let f = events("recipient=Ann@Example.COM&recipient=@Bücher.de").unwrap();
        assert_eq!(
            f.recipients,
            vec![
                RecipientFilter::Domain("xn--bcher-kva.de".into()),
                RecipientFilter::Address("ann@example.com".into()),
            ]
        );
    }

    #[test]
    fn each_bad_parameter_is_named() {
        for (query, parameter) in [
            ("colour=red", "colour"),
            ("kind=bounce", "kind"),
            ("from=yesterday", "from"),
            ("from=2026-12-02&to=2026-12-01", "to"),
            ("metadata.=x", "metadata."),
            ("sender=a@b.c&sender=d@e.f", "sender"),
            ("smtp_code=99", "smtp_code"),
            ("machine=maybe", "machine"),
            ("order=up", "order"),
            ("status=delivered", "status"),
            ("kind=,", "kind"),
            ("delivery_id=nope", "delivery_id"),
            ("from=99999999999999999999", "from"),
        ] {
            let e = events(query).unwrap_err();
            assert_eq!(e.parameter, parameter, "{query}: {e}");
        }
    }

    #[test]
    fn status_filters_belong_to_deliveries() {
        let (f, _) = parse(
            &pairs("status=opened,bounced&engagement_status=none"),
            Surface::Deliveries,
            &[],
        )
        .unwrap();
        assert_eq!(f.statuses, vec!["bounced", "opened"]);
        assert!(f.filters_status());
        assert!(events("status=opened").is_err());
    }

    #[test]
    fn status_matching_follows_what_users_see() {
        let (f, _) = parse(&pairs("status=opened"), Surface::Deliveries, &[]).unwrap();
        // An open on a delivery still `sent` shows as opened (delivery inferred).
        assert!(f.status_matches(Some(DeliveryStatus::Sent), EngagementStatus::Opened));
        assert!(f.status_matches(Some(DeliveryStatus::Delivered), EngagementStatus::Opened));
        // A bounce stays a bounce, whatever was opened before.
        assert!(!f.status_matches(
            Some(DeliveryStatus::Bounced(BounceType::Hard)),
            EngagementStatus::Opened
        ));
        let (f, _) = parse(
            &pairs("delivery_status=delivered"),
            Surface::Deliveries,
            &[],
        )
        .unwrap();
        assert!(f.status_matches(Some(DeliveryStatus::Deferred), EngagementStatus::Clicked));
        assert!(!f.status_matches(Some(DeliveryStatus::Deferred), EngagementStatus::None));
        let matching = stored_status_pairs()
            .into_iter()
            .filter(|(d, e)| f.status_matches(*d, *e))
            .count();
        // delivered × 5 engagement values, sent and deferred × 4 with engagement.
        assert_eq!(matching, 5 + 4 + 4);
    }

    #[test]
    fn the_canonical_query_parses_back_to_the_same_filters() {
        let f = events(
            "recipient=@example.com&kind=opened,clicked&machine=false&tag=b&tag=a\
             &metadata.plan=pro&from=2026-12-01&to=1798761600000&q=Blocked  Listed&order=asc",
        )
        .unwrap();
        let back = parse(&f.to_query(), Surface::Events, &[]).unwrap().0;
        assert_eq!(f, back);
        // The words of `q`, case folded, whatever the spaces between.
        assert_eq!(f.words, vec!["blocked".to_owned(), "listed".to_owned()]);
        assert!(f.to_query_string().contains("&q=blocked%20listed&"));
        assert!(
            f.to_query_string()
                .starts_with("recipient=@example.com&kind=opened")
        );
    }

    #[test]
    fn times_are_rfc3339_dates_or_milliseconds() {
        let f = events("from=2026-12-01&to=2026-12-01T12:00:00%2B01:00").map(|f| f.from);
        assert!(f.is_err(), "the HTTP layer decodes; %2B is not a time");
        let f = events("from=2026-12-01&to=1796126400000").unwrap();
        assert_eq!(f.from, Some(1_796_083_200_000));
        assert_eq!(f.to, Some(1_796_126_400_000));
        let f = events(
            "from=2026-12-01T13:00:00%2B01:00"
                .replace("%2B", "+")
                .as_str(),
        )
        .unwrap();
        assert_eq!(f.from, Some(1_796_126_400_000), "an offset is honoured");
    }

    #[test]
    fn own_parameters_are_handed_back() {
        let (f, rest) = parse(
            &pairs("limit=5&kind=sent&cursor=abc"),
            Surface::Events,
            &["limit", "cursor"],
        )
        .unwrap();
        assert_eq!(f.kinds, vec![EventKind::Sent]);
        assert_eq!(rest, pairs("limit=5&cursor=abc"));
    }
}
