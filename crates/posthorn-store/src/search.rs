//! The filter grammar (`posthorn_core::search`) as SQL, once for both
//! backends: the conditions are the same, only a few expressions differ
//! (reading a JSON field, a boolean in JSON, the domain of an address),
//! and those come from the [`Dialect`]. Both backends number parameters
//! `$1`, `$2`, ... and this builder numbers them in the order they appear
//! in the text (rusqlite binds `$N` by first appearance).
//!
//! Events are listed in the order of their ids (UUIDv7: the time they were
//! recorded, then a random part), newest first unless `order=asc`; a page
//! goes on after the previous page's last id, so events recorded while a
//! client pages do not shift its pages, at any depth. `from` and `to`
//! bound the same order (ids at or after `from`, before `to`). Deliveries
//! are listed the same way by their ids (the time they were submitted).

use posthorn_core::search::{Filters, Order, RecipientFilter, stored_status_pairs};
use posthorn_core::{EventId, Millis, TenantId};

/// Which SQL the expressions are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// A JSON object field of `column` as text (numbers as digits).
    fn json_text(self, column: &str, field: &str) -> String {
        match self {
            Dialect::Sqlite => format!("CAST(json_extract({column}, '$.{field}') AS TEXT)"),
            Dialect::Postgres => format!("({column} ->> '{field}')"),
        }
    }

    /// Whether a JSON boolean field of `column` is `value`, a missing
    /// field counting as false.
    fn json_bool_is(self, column: &str, field: &str, value: bool) -> String {
        match self {
            Dialect::Sqlite => format!(
                "coalesce(json_extract({column}, '$.{field}'), 0) = {}",
                if value { 1 } else { 0 }
            ),
            Dialect::Postgres => {
                format!("coalesce({column} ->> '{field}', 'false') = '{value}'")
            }
        }
    }

    /// The domain of a stored (normalised) address.
    fn domain_of(self, column: &str) -> String {
        match self {
            Dialect::Sqlite => format!("substr({column}, instr({column}, '@') + 1)"),
            Dialect::Postgres => format!("split_part({column}, '@', 2)"),
        }
    }

    /// Whether `needle` (lower-case) occurs in `text` lower-cased.
    fn contains_lower(self, text: &str, needle: &str) -> String {
        match self {
            Dialect::Sqlite => format!("instr(lower({text}), {needle}) > 0"),
            Dialect::Postgres => format!("strpos(lower({text}), {needle}) > 0"),
        }
    }

    /// Whether the message `m` carries one of `tags` (parameters).
    fn has_tag(self, tags: &[String]) -> String {
        match self {
            Dialect::Sqlite => format!(
                "EXISTS (SELECT 1 FROM json_each(m.tags) t WHERE t.value IN ({}))",
                tags.join(", ")
            ),
            Dialect::Postgres => tags
                .iter()
                .map(|t| format!("m.tags @> jsonb_build_array({t}::text)"))
                .collect::<Vec<_>>()
                .join(" OR "),
        }
    }

    /// Whether the message `m`'s metadata has `key` with one of `values`
    /// (as text; a list of parameters).
    fn metadata_is(self, key: &str, values: &str) -> String {
        match self {
            Dialect::Sqlite => format!(
                "EXISTS (SELECT 1 FROM json_each(m.metadata) j WHERE j.key = {key} AND \
                 (CASE j.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' \
                  ELSE CAST(j.value AS TEXT) END) IN ({values}))"
            ),
            Dialect::Postgres => format!("(m.metadata ->> {key}::text) IN ({values})"),
        }
    }
}

/// A parameter's value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SqlValue {
    Text(String),
    Int(i64),
}

/// A statement and its parameters, numbered as they were added.
#[derive(Debug, Default)]
pub(crate) struct Sql {
    pub text: String,
    pub values: Vec<SqlValue>,
}

impl Sql {
    /// Adds a parameter and returns its placeholder.
    fn param(&mut self, value: SqlValue) -> String {
        self.values.push(value);
        format!("${}", self.values.len())
    }

    fn text(&mut self, value: &str) -> String {
        self.param(SqlValue::Text(value.to_owned()))
    }

    /// Adds text parameters and returns their placeholders as a list for
    /// `IN (...)`.
    fn texts<'v>(&mut self, values: impl IntoIterator<Item = &'v str>) -> String {
        let placeholders: Vec<String> = values.into_iter().map(|v| self.text(v)).collect();
        placeholders.join(", ")
    }
}

/// The lowest id recorded at `at`: UUIDv7 ids begin with their time in
/// milliseconds (48 bits, hex), so every id recorded at or after `at`
/// sorts at or above this text, every earlier one below.
fn id_at(at: Millis) -> String {
    let t = at.clamp(0, (1 << 48) - 1) as u64;
    format!("{:08x}-{:04x}-0000-0000-000000000000", t >> 16, t & 0xffff)
}

/// The reply text an event carries: the remote server's words of a
/// deferral, delivery or bounce, the last reply before an expiry, a
/// failure's error.
fn reply_text(dialect: Dialect, details: &str) -> String {
    format!(
        "coalesce({}, {}, {})",
        dialect.json_text(details, "reply_text"),
        dialect.json_text(details, "last_reply"),
        dialect.json_text(details, "error")
    )
}

/// Conditions about one event `e` (its kind, reason, bounce type, code,
/// verdict and reply words), in text order.
fn event_conditions(
    sql: &mut Sql,
    dialect: Dialect,
    f: &Filters,
    with_bounce_type: bool,
) -> Vec<String> {
    let mut c = Vec::new();
    if !f.kinds.is_empty() {
        let list = sql.texts(f.kinds.iter().map(|k| k.as_str()));
        c.push(format!("e.kind IN ({list})"));
    }
    if !f.reasons.is_empty() {
        let list = sql.texts(f.reasons.iter().map(String::as_str));
        c.push(format!(
            "{} IN ({list})",
            dialect.json_text("e.details", "reason")
        ));
    }
    if with_bounce_type && !f.bounce_types.is_empty() {
        let list = sql.texts(f.bounce_types.iter().map(|b| b.as_str()));
        c.push(format!(
            "e.kind = 'bounced' AND {} IN ({list})",
            dialect.json_text("e.details", "bounce_type")
        ));
    }
    if let Some(code) = f.smtp_code {
        let p = sql.text(&code.to_string());
        c.push(format!(
            "{} = {p}",
            dialect.json_text("e.details", "smtp_code")
        ));
    }
    if let Some(machine) = f.machine {
        c.push(format!(
            "e.kind IN ('opened', 'clicked') AND {}",
            dialect.json_bool_is("e.details", "machine", machine)
        ));
    }
    let reply = reply_text(dialect, "e.details");
    for word in &f.words {
        let p = sql.text(word);
        c.push(dialect.contains_lower(&reply, &p));
    }
    c
}

/// Conditions about the message `m` of a delivery or event (tags and
/// metadata), as one `EXISTS` on `message_id_column`, or none.
fn message_condition(
    sql: &mut Sql,
    dialect: Dialect,
    f: &Filters,
    message_id_column: &str,
) -> Option<String> {
    if f.tags.is_empty() && f.metadata.is_empty() {
        return None;
    }
    let mut c = vec![format!("m.id = {message_id_column}")];
    if !f.tags.is_empty() {
        let tags: Vec<String> = f.tags.iter().map(|t| sql.text(t)).collect();
        c.push(format!("({})", dialect.has_tag(&tags)));
    }
    // One key given twice widens; different keys narrow (the list is
    // sorted, so a key's values are together).
    for group in f.metadata.chunk_by(|a, b| a.0 == b.0) {
        let key = sql.text(&group[0].0);
        let values = sql.texts(group.iter().map(|(_, v)| v.as_str()));
        c.push(dialect.metadata_is(&key, &values));
    }
    Some(format!(
        "EXISTS (SELECT 1 FROM messages m WHERE {})",
        c.join(" AND ")
    ))
}

/// The recipient filters on an address column, widening.
fn recipient_condition(
    sql: &mut Sql,
    dialect: Dialect,
    f: &Filters,
    column: &str,
) -> Option<String> {
    if f.recipients.is_empty() {
        return None;
    }
    let alternatives: Vec<String> = f
        .recipients
        .iter()
        .map(|r| match r {
            RecipientFilter::Address(a) => format!("{column} = {}", sql.text(a)),
            RecipientFilter::Domain(d) => {
                format!("{} = {}", dialect.domain_of(column), sql.text(d))
            }
        })
        .collect();
    Some(format!("({})", alternatives.join(" OR ")))
}

fn order_sql(order: Order, column: &str) -> String {
    match order {
        Order::Desc => format!("{column} DESC"),
        Order::Asc => column.to_owned(),
    }
}

/// Which page of the matching events a statement reads.
#[derive(Debug, Clone, Copy)]
pub(crate) enum EventPage<'a> {
    /// In the order of ids (`f.order`), after the event with this id (the
    /// previous page's last).
    ById(Option<&'a EventId>),
    /// In commit order, after this position (`seq`): the live feed's read.
    /// On PostgreSQL, only below the settled bound (`postgres::position`),
    /// whose SQL is given.
    Committed {
        after: i64,
        settled_below: Option<&'a str>,
    },
}

/// A page of a tenant's events matching `f`. `columns` are the backend's
/// event columns, unqualified.
pub(crate) fn events_page(
    dialect: Dialect,
    columns: &str,
    tenant: &TenantId,
    f: &Filters,
    page: EventPage<'_>,
    limit: u32,
) -> Sql {
    let mut sql = Sql::default();
    let tenant = sql.text(tenant.as_str());
    let addresses: Vec<&String> = f
        .recipients
        .iter()
        .filter_map(|r| match r {
            RecipientFilter::Address(a) => Some(a),
            RecipientFilter::Domain(_) => None,
        })
        .collect();
    let domains: Vec<&String> = f
        .recipients
        .iter()
        .filter_map(|r| match r {
            RecipientFilter::Domain(d) => Some(d),
            RecipientFilter::Address(_) => None,
        })
        .collect();
    // A delivery, a message or addresses alone lead to few deliveries,
    // whose events the (delivery_id, id) index finds. SQLite, without
    // statistics, would as soon walk (tenant_id, id) through every event
    // of the tenant: `+` keeps it off that index (as it does when reading
    // in commit order, which is the table's own, by `seq`).
    let narrow = f.delivery_id.is_some()
        || f.message_id.is_some()
        || (!addresses.is_empty() && domains.is_empty());
    let by_seq = matches!(page, EventPage::Committed { .. });
    let hint = if dialect == Dialect::Sqlite && (narrow || by_seq) {
        "+"
    } else {
        ""
    };
    let mut c = vec![format!("{hint}e.tenant_id = {tenant}")];
    if let Some(d) = &f.delivery_id {
        c.push(format!("e.delivery_id = {}", sql.text(d.as_str())));
    }
    if let Some(m) = &f.message_id {
        // Through the message's deliveries (events have no index of their
        // own on the message).
        let p = sql.text(m.as_str());
        c.push(format!(
            "e.delivery_id IN (SELECT d.id FROM deliveries d WHERE d.message_id = {p} AND d.tenant_id = {tenant})"
        ));
    }
    if !f.recipients.is_empty() {
        // Addresses through their deliveries (the (tenant_id, recipient)
        // index), domains on the events' own recipient.
        let mut alternatives = Vec::new();
        if !addresses.is_empty() {
            let list = sql.texts(addresses.iter().map(|a| a.as_str()));
            alternatives.push(format!(
                "e.delivery_id IN (SELECT d.id FROM deliveries d WHERE d.tenant_id = {tenant} AND d.recipient IN ({list}))"
            ));
        }
        if !domains.is_empty() {
            let list = sql.texts(domains.iter().map(|d| d.as_str()));
            alternatives.push(format!("{} IN ({list})", dialect.domain_of("e.recipient")));
        }
        c.push(format!("({})", alternatives.join(" OR ")));
    }
    if let Some(s) = &f.sender {
        c.push(format!("e.sender = {}", sql.text(s)));
    }
    c.extend(event_conditions(&mut sql, dialect, f, true));
    if f.stream.is_some() || f.campaign.is_some() {
        let mut d = vec!["d.id = e.delivery_id".to_owned()];
        if let Some(s) = &f.stream {
            d.push(format!("d.stream = {}", sql.text(s)));
        }
        if let Some(campaign) = &f.campaign {
            d.push(format!("d.campaign = {}", sql.text(campaign)));
        }
        c.push(format!(
            "EXISTS (SELECT 1 FROM deliveries d WHERE {})",
            d.join(" AND ")
        ));
    }
    if let Some(m) = message_condition(&mut sql, dialect, f, "e.message_id") {
        c.push(m);
    }
    let order = match page {
        EventPage::ById(after) => {
            push_range(&mut sql, &mut c, f, "e.id", after.map(EventId::as_str));
            order_sql(f.order, "e.id")
        }
        EventPage::Committed {
            after,
            settled_below,
        } => {
            push_range(&mut sql, &mut c, f, "e.id", None);
            let p = sql.param(SqlValue::Int(after));
            c.push(format!("e.seq > {p}"));
            if let Some(bound) = settled_below {
                c.push(format!("e.seq < {bound}"));
            }
            "e.seq".to_owned()
        }
    };
    let limit = sql.param(SqlValue::Int(i64::from(limit)));
    sql.text = format!(
        "SELECT {columns} FROM events e WHERE {} ORDER BY {order} LIMIT {limit}",
        c.join(" AND "),
    );
    sql
}

/// `from`, `to` and the cursor, on an id column.
fn push_range(sql: &mut Sql, c: &mut Vec<String>, f: &Filters, id: &str, after: Option<&str>) {
    if let Some(from) = f.from {
        c.push(format!("{id} >= {}", sql.text(&id_at(from))));
    }
    if let Some(to) = f.to {
        c.push(format!("{id} < {}", sql.text(&id_at(to))));
    }
    if let Some(after) = after {
        let op = match f.order {
            Order::Desc => "<",
            Order::Asc => ">",
        };
        c.push(format!("{id} {op} {}", sql.text(after)));
    }
}

/// The conditions on deliveries `d` (the tenant's) matching `f`.
fn delivery_conditions(
    sql: &mut Sql,
    dialect: Dialect,
    tenant: &TenantId,
    f: &Filters,
) -> Vec<String> {
    let tenant = sql.text(tenant.as_str());
    let mut c = vec![format!("d.tenant_id = {tenant}")];
    if let Some(d) = &f.delivery_id {
        c.push(format!("d.id = {}", sql.text(d.as_str())));
    }
    if let Some(m) = &f.message_id {
        c.push(format!("d.message_id = {}", sql.text(m.as_str())));
    }
    if let Some(r) = recipient_condition(sql, dialect, f, "d.recipient") {
        c.push(r);
    }
    if let Some(s) = &f.sender {
        c.push(format!("d.sender = {}", sql.text(s)));
    }
    if let Some(s) = &f.stream {
        c.push(format!("d.stream = {}", sql.text(s)));
    }
    if let Some(campaign) = &f.campaign {
        c.push(format!("d.campaign = {}", sql.text(campaign)));
    }
    if !f.bounce_types.is_empty() {
        let list = sql.texts(f.bounce_types.iter().map(|b| b.as_str()));
        c.push(format!(
            "d.delivery_status = 'bounced' AND d.bounce_type IN ({list})"
        ));
    }
    if f.filters_status() {
        // The stored pairs of axes that show as the statuses asked for
        // (the rule is `Filters::status_matches`), as `delivery/engagement`.
        let mut pairs: Vec<String> = stored_status_pairs()
            .into_iter()
            .filter(|(d, e)| f.status_matches(*d, *e))
            .map(|(d, e)| format!("{}/{}", d.map_or("-", |d| d.as_str()), e.as_str()))
            .collect();
        pairs.sort();
        pairs.dedup();
        if pairs.is_empty() {
            c.push("1 = 0".to_owned());
        } else {
            let list = sql.texts(pairs.iter().map(String::as_str));
            c.push(format!(
                "(coalesce(d.delivery_status, '-') || '/' || coalesce(d.engagement_status, 'none')) IN ({list})"
            ));
        }
    }
    if f.filters_events() {
        let mut e = vec!["e.delivery_id = d.id".to_owned()];
        e.extend(event_conditions(sql, dialect, f, false));
        c.push(format!(
            "EXISTS (SELECT 1 FROM events e WHERE {})",
            e.join(" AND ")
        ));
    }
    if let Some(m) = message_condition(sql, dialect, f, "d.message_id") {
        c.push(m);
    }
    c
}

/// A page of a tenant's deliveries matching `f` (by their current status
/// and, for the event filters, having such an event), after the delivery
/// `after` in the filters' order.
pub(crate) fn deliveries_page(
    dialect: Dialect,
    columns: &str,
    tenant: &TenantId,
    f: &Filters,
    after: Option<&str>,
    limit: u32,
) -> Sql {
    let mut sql = Sql::default();
    let mut c = delivery_conditions(&mut sql, dialect, tenant, f);
    push_range(&mut sql, &mut c, f, "d.id", after);
    let limit = sql.param(SqlValue::Int(i64::from(limit)));
    sql.text = format!(
        "SELECT {columns} FROM deliveries d WHERE {} ORDER BY {} LIMIT {limit}",
        c.join(" AND "),
        order_sql(f.order, "d.id")
    );
    sql
}

/// How many of a tenant's deliveries matching `f` have each stored pair
/// of axes: rows of (delivery status, bounce type, engagement status,
/// count).
pub(crate) fn delivery_counts(dialect: Dialect, tenant: &TenantId, f: &Filters) -> Sql {
    let mut sql = Sql::default();
    let mut c = delivery_conditions(&mut sql, dialect, tenant, f);
    push_range(&mut sql, &mut c, f, "d.id", None);
    sql.text = format!(
        "SELECT d.delivery_status, d.bounce_type, d.engagement_status, count(*) FROM deliveries d \
         WHERE {} GROUP BY d.delivery_status, d.bounce_type, d.engagement_status",
        c.join(" AND ")
    );
    sql
}

/// The statistics' counts asked by `q` (see `StatsQuery`): summed rows
/// of the counts tables (on PostgreSQL rows of changes; on SQLite one row
/// per count), as (group, metric, reason, deliveries).
pub(crate) fn stats_counts(tenant: &TenantId, q: &crate::StatsQuery) -> Sql {
    use crate::StatsGroup as G;
    use posthorn_core::clock::{DAY, HOUR};
    let mut sql = Sql::default();
    let tenant = sql.text(tenant.as_str());
    let by_domain = q.group_by == G::Domain || q.domain.is_some();
    let (table, time, unit) = if by_domain {
        ("delivery_stats_domains", "day", DAY)
    } else {
        ("delivery_stats", "hour", HOUR)
    };
    let mut c = vec![format!("tenant_id = {tenant}")];
    if !by_domain {
        // Every delivery counts once under the tag '' (all), and again
        // under each of its message's tags.
        c.push(match (&q.tag, q.group_by) {
            (Some(tag), _) => format!("tag = {}", sql.text(tag)),
            (None, G::Tag) => "tag <> ''".to_owned(),
            (None, _) => "tag = ''".to_owned(),
        });
    }
    let from = sql.param(SqlValue::Int(q.from.div_euclid(unit) * unit));
    let to = sql.param(SqlValue::Int(q.to));
    c.push(format!("{time} >= {from} AND {time} < {to}"));
    for (column, value) in [
        ("stream", &q.stream),
        ("campaign", &q.campaign),
        ("domain", &q.domain),
    ] {
        if let Some(v) = value {
            c.push(format!("{column} = {}", sql.text(v)));
        }
    }
    let key = match q.group_by {
        G::All => "CAST('' AS TEXT)".to_owned(),
        G::Hour => "CAST(hour AS TEXT)".to_owned(),
        G::Day => format!("CAST(({time} / {DAY}) * {DAY} AS TEXT)"),
        G::Stream => "stream".to_owned(),
        G::Campaign => "campaign".to_owned(),
        G::Tag => "tag".to_owned(),
        G::Domain => "domain".to_owned(),
        G::Reason => "reason".to_owned(),
    };
    let reason = if by_domain {
        "CAST('' AS TEXT)"
    } else {
        "reason"
    };
    sql.text = format!(
        "SELECT {key} AS grp, metric, {reason} AS why, CAST(SUM(deliveries) AS BIGINT) FROM {table} \
         WHERE {} GROUP BY 1, 2, 3 HAVING SUM(deliveries) <> 0",
        c.join(" AND ")
    );
    sql
}

/// The reads of the statistics' first count (`engine::stats::Rebuild`,
/// run by the migration that adds them): every delivery with its
/// message's tags (the column after `delivery_columns`), and for one
/// delivery (`$1`) its engagement events and the event that set its
/// status (`$2`).
pub(crate) fn rebuild_reads(delivery_columns: &str, event_columns: &str) -> (String, String) {
    (
        format!(
            "SELECT {delivery_columns}, (SELECT m.tags FROM messages m WHERE m.id = deliveries.message_id) \
             FROM deliveries"
        ),
        format!(
            "SELECT {event_columns} FROM events WHERE delivery_id = $1 \
             AND (kind IN ('opened', 'clicked', 'unsubscribed', 'complained') OR id = $2)"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::search as filters;
    use posthorn_core::search::Surface;

    /// rusqlite binds `$N` by first appearance: the numbers must appear
    /// in order, each new one the next.
    fn assert_numbered_in_order(sql: &Sql) {
        let mut highest = 0;
        let text = &sql.text;
        let mut rest = text.as_str();
        while let Some(at) = rest.find('$') {
            rest = &rest[at + 1..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if digits.is_empty() {
                continue; // a JSON path ('$.field')
            }
            let n: usize = digits.parse().unwrap();
            assert!(n <= highest + 1, "${n} before ${} in {text}", highest + 1);
            highest = highest.max(n);
        }
        assert_eq!(highest, sql.values.len(), "every value is used: {text}");
    }

    #[test]
    fn every_filter_numbers_its_parameters_in_order() {
        let t = TenantId::generate();
        let all = "recipient=a@example.com,@example.org&sender=s@example.com\
                   &message_id=0193a1c2-0000-7000-8000-000000000000&kind=bounced,deferred\
                   &reason=userunknown&bounce_type=hard&smtp_code=550&tag=x,y&stream=news\
                   &campaign=c1&metadata.plan=pro&metadata.plan=team&metadata.tier=1\
                   &machine=false&from=2026-12-01&to=2026-12-02&q=blocked%20list";
        for dialect in [Dialect::Sqlite, Dialect::Postgres] {
            let f = filters(all, Surface::Events);
            let after = EventId::generate();
            assert_numbered_in_order(&events_page(
                dialect,
                "*",
                &t,
                &f,
                EventPage::ById(Some(&after)),
                50,
            ));
            let committed = EventPage::Committed {
                after: 7,
                settled_below: Some("(SELECT 1)"),
            };
            assert_numbered_in_order(&events_page(dialect, "*", &t, &f, committed, 50));
            let f = filters(
                &format!("{all}&status=opened,bounced&engagement_status=none"),
                Surface::Deliveries,
            );
            assert_numbered_in_order(&deliveries_page(dialect, "*", &t, &f, Some("x"), 50));
            assert_numbered_in_order(&delivery_counts(dialect, &t, &f));
        }
    }

    #[test]
    fn ids_at_a_time_bound_the_ids_recorded_then() {
        let id = EventId::generate();
        let ms = i64::from_str_radix(&id.as_str()[..8], 16).unwrap() << 16
            | i64::from_str_radix(&id.as_str()[9..13], 16).unwrap();
        assert!(id_at(ms).as_str() <= id.as_str());
        assert!(id_at(ms + 1).as_str() > id.as_str());
    }
}
