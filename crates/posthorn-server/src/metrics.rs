//! Prometheus metrics at `/metrics`, in the text exposition format. A small
//! hand-written registry: a few counters do not need a metrics framework.

use posthorn_core::{EventKind, EventSource};
use posthorn_smtp::listen::ListenerStats;
use posthorn_store::{EventRecord, StoreStats};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests by (route, status code).
    http: Mutex<BTreeMap<(String, u16), u64>>,
    /// Deliveries accepted, by their first status (queued, scheduled, dropped).
    accepted: Mutex<BTreeMap<String, u64>>,
    pub messages_accepted: AtomicU64,
    /// Live feeds (`GET /v1/events/stream`) open now.
    pub feeds_open: AtomicU64,
    /// Exports (`GET /v1/*/export`) being sent now.
    pub exports_open: Arc<AtomicU64>,
    /// Delivery attempts finished, by the event recorded (delivered,
    /// deferred, bounced, expired, failed), counted once durable.
    outcomes: Mutex<BTreeMap<String, u64>>,
    /// Messages received by the inbound MX, by (kind, outcome).
    inbound: Mutex<BTreeMap<(String, String), u64>>,
    /// The listeners' connection counters, by listener name.
    listeners: Mutex<BTreeMap<&'static str, Arc<ListenerStats>>>,
}

impl Metrics {
    /// Reports a listener's connection counters under `name`.
    pub fn register_listener(&self, name: &'static str, stats: Arc<ListenerStats>) {
        if let Ok(mut map) = self.listeners.lock() {
            map.insert(name, stats);
        }
    }

    pub fn count_request(&self, route: &str, status: u16) {
        if let Ok(mut map) = self.http.lock() {
            *map.entry((route.to_owned(), status)).or_default() += 1;
        }
    }

    /// Counts what one commit stored (called from the store's commit
    /// stream, so every event is counted once, after it is durable):
    /// deliveries accepted by their first event, the messages they belong
    /// to, and the outcomes of delivery attempts.
    pub fn count_committed(&self, events: &[Arc<EventRecord>]) {
        let mut accepted: Vec<&EventRecord> = Vec::new();
        let mut outcomes: Vec<EventKind> = Vec::new();
        for event in events.iter().map(Arc::as_ref) {
            match event.source {
                // A submission's events are its deliveries' first ones.
                EventSource::Api | EventSource::SmtpSubmission => accepted.push(event),
                EventSource::Delivery if event.kind() != EventKind::Sent => {
                    outcomes.push(event.kind())
                }
                _ => {}
            }
        }
        if !accepted.is_empty() {
            // A message's deliveries are accepted in one transaction, so
            // they are never split over two commits.
            let messages: std::collections::HashSet<_> =
                accepted.iter().map(|e| &e.message_id).collect();
            self.messages_accepted
                .fetch_add(messages.len() as u64, Ordering::Relaxed);
            if let Ok(mut map) = self.accepted.lock() {
                for event in accepted {
                    *map.entry(event.kind().as_str().to_owned()).or_default() += 1;
                }
            }
        }
        if !outcomes.is_empty()
            && let Ok(mut map) = self.outcomes.lock()
        {
            for kind in outcomes {
                *map.entry(kind.as_str().to_owned()).or_default() += 1;
            }
        }
    }

    pub fn count_inbound(&self, kind: &str, outcome: &str) {
        if let Ok(mut map) = self.inbound.lock() {
            *map.entry((kind.to_owned(), outcome.to_owned()))
                .or_default() += 1;
        }
    }

    /// Renders every metric, including the store's counters.
    pub fn render(&self, store: StoreStats) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP posthorn_http_requests_total HTTP requests by route and status."
        );
        let _ = writeln!(out, "# TYPE posthorn_http_requests_total counter");
        if let Ok(map) = self.http.lock() {
            for ((route, status), n) in map.iter() {
                let _ = writeln!(
                    out,
                    "posthorn_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                    escape(route)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP posthorn_messages_accepted_total Messages accepted for processing."
        );
        let _ = writeln!(out, "# TYPE posthorn_messages_accepted_total counter");
        let _ = writeln!(
            out,
            "posthorn_messages_accepted_total {}",
            self.messages_accepted.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# HELP posthorn_feeds_open Live event feeds open now.");
        let _ = writeln!(out, "# TYPE posthorn_feeds_open gauge");
        let _ = writeln!(
            out,
            "posthorn_feeds_open {}",
            self.feeds_open.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# HELP posthorn_exports_open Exports being sent now.");
        let _ = writeln!(out, "# TYPE posthorn_exports_open gauge");
        let _ = writeln!(
            out,
            "posthorn_exports_open {}",
            self.exports_open.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP posthorn_deliveries_accepted_total Deliveries by their first status."
        );
        let _ = writeln!(out, "# TYPE posthorn_deliveries_accepted_total counter");
        if let Ok(map) = self.accepted.lock() {
            for (status, n) in map.iter() {
                let _ = writeln!(
                    out,
                    "posthorn_deliveries_accepted_total{{status=\"{}\"}} {n}",
                    escape(status)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP posthorn_delivery_outcomes_total Delivery attempts finished, by outcome."
        );
        let _ = writeln!(out, "# TYPE posthorn_delivery_outcomes_total counter");
        if let Ok(map) = self.outcomes.lock() {
            for (kind, n) in map.iter() {
                let _ = writeln!(
                    out,
                    "posthorn_delivery_outcomes_total{{outcome=\"{}\"}} {n}",
                    escape(kind)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP posthorn_inbound_messages_total Messages received by the inbound MX, by kind and outcome."
        );
        let _ = writeln!(out, "# TYPE posthorn_inbound_messages_total counter");
        if let Ok(map) = self.inbound.lock() {
            for ((kind, outcome), n) in map.iter() {
                let _ = writeln!(
                    out,
                    "posthorn_inbound_messages_total{{kind=\"{}\",outcome=\"{}\"}} {n}",
                    escape(kind),
                    escape(outcome)
                );
            }
        }
        self.render_listeners(&mut out);
        for (name, help, value) in [
            (
                "posthorn_events_recorded_total",
                "Events recorded by this process.",
                store.events,
            ),
            (
                "posthorn_store_batches_total",
                "Write transactions committed (group commits).",
                store.batches,
            ),
            (
                "posthorn_store_writes_total",
                "Writes committed inside those transactions.",
                store.writes,
            ),
            (
                "posthorn_store_batch_replays_total",
                "Write transactions rolled back and run again, one savepoint per write, because a write failed.",
                store.replays,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }
}

/// One counter of a listener's [`ListenerStats`].
type Pick = fn(&ListenerStats) -> &AtomicU64;

impl Metrics {
    fn render_listeners(&self, out: &mut String) {
        let Ok(map) = self.listeners.lock() else {
            return;
        };
        let name = "posthorn_connections_refused_total";
        let _ = writeln!(
            out,
            "# HELP {name} Connections refused over a listener's caps, by listener and cap."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        for (listener, stats) in map.iter() {
            for (limit, value) in [
                ("total", &stats.refused_total),
                ("per_ip", &stats.refused_per_ip),
            ] {
                let _ = writeln!(
                    out,
                    "{name}{{listener=\"{listener}\",limit=\"{limit}\"}} {}",
                    value.load(Ordering::Relaxed)
                );
            }
        }
        let families: [(&str, &str, &str, Pick); 3] = [
            (
                "posthorn_connections_evicted_total",
                "counter",
                "Idle connections closed to make room for a new one, by listener.",
                |s| &s.evicted,
            ),
            (
                "posthorn_connections_open",
                "gauge",
                "Connections open now, by listener.",
                |s| &s.open,
            ),
            (
                "posthorn_accept_errors_total",
                "counter",
                "Accepts the system refused (e.g. out of file descriptors), by listener.",
                |s| &s.accept_errors,
            ),
        ];
        for (name, kind, help, pick) in families {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (listener, stats) in map.iter() {
                let _ = writeln!(
                    out,
                    "{name}{{listener=\"{listener}\"}} {}",
                    pick(stats).load(Ordering::Relaxed)
                );
            }
        }
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
