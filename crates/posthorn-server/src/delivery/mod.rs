//! The delivery workers: take due deliveries from the send queue, group them
//! by destination domain, and deliver each over SMTP, recording `sent` when
//! an attempt starts and its outcome (with the remote server's words) when
//! it ends. Retries are durable: they live in the queue, never in memory.
//! Sessions hand what they record to the [`recorder`] and go on: they never
//! wait for a commit.
//!
//! Map: this file claims and groups deliveries and finishes them;
//! [`route`] decides where a domain's mail goes, `session` sends a batch
//! over one connection, `copy` makes each delivery's copy, [`recorder`]
//! writes what they record. What an attempt's result means is
//! `posthorn_core::outcome`.

pub mod build;
mod copy;
pub mod dns;
pub mod recorder;
pub mod route;
mod session;
pub mod verp;

use crate::app::AppState;
use crate::dkim::DkimKeys;
use dns::Resolver;
use posthorn_core::EnhancedCode;
use posthorn_core::event::{BounceVerdict, EventDetails, Sent};
use posthorn_core::outcome::{self, Attempt, AttemptResult};
use posthorn_core::{EventId, EventSource};
use posthorn_smtp::Timeouts;
use posthorn_store::{AttemptRecord, ClaimedDelivery, NewEvent, QueueNext};
use recorder::{Pending, Recorder};
use route::{Destination, Routing, Target};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use verp::VerpSigner;

/// How long the workers sleep when the queue has nothing due (a new
/// submission wakes them at once).
const IDLE_POLL: Duration = Duration::from_millis(500);
/// How long a stop waits for the deliveries under way to be recorded.
const STOP_GRACE: Duration = Duration::from_secs(30);

pub struct DeliveryService {
    state: AppState,
    verp: VerpSigner,
    resolver: Arc<dyn Resolver>,
    routing: Routing,
    helo_name: String,
    timeouts: Timeouts,
    /// Connections per destination domain.
    per_domain: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Message rates per destination domain, where a policy sets one.
    rates: Mutex<HashMap<String, posthorn_core::retry::RateLimit>>,
    /// Deliveries claimed and not finished, bounded so that a slow
    /// destination cannot make us lease the whole queue. A permit comes
    /// back once its delivery's outcome is durable.
    in_flight: Arc<Semaphore>,
    in_flight_max: u32,
    wake: Arc<Notify>,
    /// Signs each copy whose sender's domain has a key.
    dkim: Arc<DkimKeys>,
    /// Writes `sent` and outcomes; sessions never wait for it.
    recorder: Recorder,
    /// Messages whose tracked links are already stored: every copy of a
    /// message has the same link table, so it is written once, not once per
    /// recipient. Bounded; forgetting only costs a redundant write.
    links_kept: Mutex<std::collections::HashSet<posthorn_core::MessageId>>,
}

impl DeliveryService {
    pub fn new(
        state: AppState,
        verp: VerpSigner,
        resolver: Arc<dyn Resolver>,
        wake: Arc<Notify>,
        extra_routes: HashMap<String, SocketAddr>,
    ) -> Result<Self, crate::startup::RouteError> {
        let config = &state.config.delivery;
        let mut routes = route::parse_routes(&config.routes)?;
        routes.extend(extra_routes);
        let routing = Routing {
            routes,
            smarthost: config
                .smarthost
                .as_ref()
                .map(route::smarthost_target)
                .transpose()?,
            allow_networks: config.allow_networks.clone(),
            mx_port: config.mx_port,
        };
        let helo_name = config.helo_name.clone().unwrap_or_else(machine_name);
        let in_flight_max = config.claim_batch.saturating_mul(4);
        let in_flight = Arc::new(Semaphore::new(in_flight_max as usize));
        let lease = Duration::from_millis(u64::try_from(config.lease.0).unwrap_or(0));
        let (recorder, _) = Recorder::start(state.store.clone(), lease);
        Ok(Self {
            state,
            verp,
            resolver,
            routing,
            helo_name,
            timeouts: Timeouts::default(),
            per_domain: Mutex::new(HashMap::new()),
            rates: Mutex::new(HashMap::new()),
            in_flight,
            in_flight_max,
            wake,
            dkim: Arc::new(DkimKeys::default()),
            recorder,
            links_kept: Mutex::default(),
        })
    }

    /// Shorter SMTP timeouts (tests, demos).
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// DKIM keys to sign with (none by default: mail goes unsigned).
    pub fn with_dkim(mut self, keys: Arc<DkimKeys>) -> Self {
        self.dkim = keys;
        self
    }

    /// Runs until `stop` is notified. Leases left by a previous run are
    /// released first, so nothing it held waits for them to expire; until
    /// that has worked (a full disk refuses it) nothing is claimed, since
    /// releasing later would also free what this run holds.
    pub async fn run(self: Arc<Self>, stop: Arc<Notify>) {
        if !self.release_previous_leases(&stop).await {
            return;
        }
        let store = &self.state.store;
        let lease = self.state.config.delivery.lease.0;
        let batch = self.state.config.delivery.claim_batch;
        let mut claims_failing = false;
        loop {
            let room = (self.in_flight.available_permits() as u32).min(batch);
            let claimed = if room == 0 {
                Vec::new()
            } else {
                let now = self.state.now();
                match store
                    .claim_due(&self.state.node, now, room, now + lease)
                    .await
                {
                    Ok(c) => {
                        if claims_failing {
                            tracing::info!("claiming due deliveries works again");
                        }
                        claims_failing = false;
                        c
                    }
                    Err(e) => {
                        // A full disk, or a database away, fails every
                        // claim until it passes: said once, not every
                        // poll; polling on is what recovers.
                        let passes = e.is_transient();
                        if !(passes && claims_failing) {
                            tracing::error!(error = %e, "claiming due deliveries failed");
                        }
                        claims_failing = passes;
                        Vec::new()
                    }
                }
            };
            if room == 0 {
                // Every permit is in use: claim again as soon as a delivery
                // under way is recorded and frees one. (Waiting for a wake
                // instead would wait for the next poll whenever nothing new
                // is queued meanwhile, as on PostgreSQL, where wakes come
                // from the commit stream.)
                tokio::select! {
                    _ = stop.notified() => {
                        self.finish_in_flight().await;
                        return;
                    }
                    _ = self.in_flight.acquire() => {}
                }
                continue;
            }
            if claimed.is_empty() {
                tokio::select! {
                    _ = stop.notified() => {
                        self.finish_in_flight().await;
                        return;
                    }
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                }
                continue;
            }
            let mut groups: HashMap<String, Vec<(ClaimedDelivery, OwnedSemaphorePermit)>> =
                HashMap::new();
            for item in claimed {
                // Only this loop takes permits, and it claimed no more than
                // were free, so this never waits; the semaphore is never closed.
                let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
                    return;
                };
                let domain = item
                    .delivery
                    .recipient
                    .rsplit_once('@')
                    .map_or("", |(_, d)| d)
                    .to_owned();
                groups.entry(domain).or_default().push((item, permit));
            }
            for (domain, items) in groups {
                tokio::spawn(self.clone().deliver_domain(domain, items));
            }
        }
    }

    /// At a stop: waits (for at most `STOP_GRACE`) until every delivery
    /// under way has its outcome recorded, so that nothing that was sent
    /// is left unrecorded, to be sent again after the restart.
    async fn finish_in_flight(&self) {
        let all = self.in_flight.acquire_many(self.in_flight_max);
        match tokio::time::timeout(STOP_GRACE, all).await {
            Ok(_) => {}
            Err(_) => tracing::warn!(
                under_way = self.in_flight_max as usize - self.in_flight.available_permits(),
                "stopping with deliveries still under way; they are attempted again after the restart"
            ),
        }
    }

    /// Releases the leases a previous run of this node left (other nodes'
    /// run out on their own), trying again every poll
    /// until it works (logged once); `false` when stopped first.
    async fn release_previous_leases(&self, stop: &Notify) -> bool {
        let mut logged = false;
        loop {
            match self.state.store.release_leases(&self.state.node).await {
                Ok(0) => return true,
                Ok(n) => {
                    tracing::info!(
                        released = n,
                        "resuming deliveries interrupted by the last stop"
                    );
                    return true;
                }
                Err(e) if !logged => {
                    tracing::error!(error = %e, "could not release queue leases; trying again every poll");
                    logged = true;
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = stop.notified() => return false,
                _ = tokio::time::sleep(IDLE_POLL) => {}
            }
        }
    }

    fn policy(&self, domain: &str) -> Option<&posthorn_core::config::DomainPolicy> {
        self.state.config.delivery.domains.get(domain)
    }

    /// Waits for the domain's message rate, where its policy sets one.
    async fn pace(&self, domain: &str) {
        let Some(rate) = self.policy(domain).and_then(|p| p.messages_per_second) else {
            return;
        };
        let now = self.state.now();
        let wait = {
            let mut rates = self.rates.lock().expect("rate limits");
            rates
                .entry(domain.to_owned())
                .or_insert_with(|| posthorn_core::retry::RateLimit::new(rate, now))
                .take(now)
        };
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
    }

    fn domain_limit(&self, domain: &str) -> Arc<Semaphore> {
        let per_domain = self
            .policy(domain)
            .and_then(|p| p.max_connections)
            .unwrap_or(self.state.config.delivery.max_connections_per_domain)
            .max(1);
        let mut map = self.per_domain.lock().expect("domain limits");
        map.entry(domain.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(per_domain)))
            .clone()
    }

    async fn deliver_domain(
        self: Arc<Self>,
        domain: String,
        items: Vec<(ClaimedDelivery, OwnedSemaphorePermit)>,
    ) {
        let require_tls = self.policy(&domain).is_some_and(|p| p.require_tls);
        let destination = self
            .routing
            .destination(&domain, require_tls, self.resolver.as_ref())
            .await;
        let targets = match destination {
            Destination::Targets(t) => t,
            Destination::Bounce(why) => {
                for item in items {
                    let (details, next) = outcome::for_unroutable(&domain, why);
                    self.finish(item, details, next);
                }
                return;
            }
            Destination::Defer(why) => {
                self.finish_all(items, &AttemptResult::DnsFailed(why));
                return;
            }
            Destination::Refuse(why) => {
                self.finish_all(items, &AttemptResult::Refused(why));
                return;
            }
        };
        // Spread the batch over as many connections as the domain allows,
        // each carrying at most `max_messages_per_connection`; the domain's
        // semaphore keeps the number open at once within its limit.
        let limit = self.domain_limit(&domain);
        let connections = limit.available_permits().max(1);
        let max_per_connection = self
            .state
            .config
            .delivery
            .max_messages_per_connection
            .max(1);
        let per_connection = items
            .len()
            .div_ceil(connections)
            .clamp(1, max_per_connection);
        let targets = Arc::new(targets);
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            let chunk: Vec<_> = items.by_ref().take(per_connection).collect();
            let (this, limit, targets, domain) =
                (self.clone(), limit.clone(), targets.clone(), domain.clone());
            tokio::spawn(async move {
                let Ok(_connection) = limit.acquire_owned().await else {
                    return;
                };
                this.deliver_over_one_connection(&domain, &targets, chunk)
                    .await;
            });
        }
    }

    /// Defers (or, past their lifetime, expires) deliveries that could not
    /// be attempted at all (DNS failed, or named no server we may use).
    fn finish_all(
        &self,
        items: Vec<(ClaimedDelivery, OwnedSemaphorePermit)>,
        result: &AttemptResult,
    ) {
        for item in items {
            self.finish_unattempted(item, result, None, None);
        }
    }

    fn schedule(&self) -> posthorn_core::retry::RetrySchedule {
        self.state.config.retry.schedule()
    }

    /// The attempt's context: its number, and when its retries end.
    fn attempt(
        &self,
        item: &ClaimedDelivery,
        target: Option<&Target>,
        tls: Option<outcome::Tls>,
    ) -> Attempt {
        let deadline = posthorn_core::retry::deadline(
            item.delivery.created_at,
            item.message.send_at,
            self.state.config.lifetime(&item.delivery.stream),
            item.message.expires_at,
        );
        let now = self.state.now();
        Attempt {
            number: item.attempt,
            deadline,
            started_at: now,
            now,
            mx_host: target.map(|t| t.host.clone()),
            ip: target.map(|t| t.addr.ip().to_string()),
            tls,
        }
    }

    /// Hands the attempt's start to the recorder (it is written before the
    /// outcome, in the same or an earlier transaction).
    fn record_sent(&self, item: &ClaimedDelivery, target: &Target) {
        let event = self.event(
            item,
            EventDetails::Sent(Sent {
                attempt: item.attempt,
                mx_host: Some(target.host.clone()),
                ip: Some(target.addr.ip().to_string()),
            }),
        );
        self.recorder.record(Pending {
            attempt: AttemptRecord {
                tenant: item.delivery.tenant_id.clone(),
                delivery: item.delivery.id.clone(),
                events: vec![event],
                next: None,
            },
            permit: None,
        });
    }

    /// The outcome of a delivery that was not attempted itself: DNS failed,
    /// or its session failed before its turn.
    fn finish_unattempted(
        &self,
        item: (ClaimedDelivery, OwnedSemaphorePermit),
        result: &AttemptResult,
        target: Option<&Target>,
        tls: Option<outcome::Tls>,
    ) {
        let attempt = self.attempt(&item.0, target, tls);
        let (details, next) = outcome::for_attempt(
            &attempt,
            result,
            &self.schedule(),
            jitter(),
            &self.classifier(&item.0.delivery.recipient),
        );
        self.finish(item, details, next);
    }

    /// An event the delivery workers observe now.
    fn event(&self, item: &ClaimedDelivery, details: EventDetails) -> NewEvent {
        let now = self.state.now();
        NewEvent {
            id: EventId::generate(),
            delivery_id: item.delivery.id.clone(),
            occurred_at: now,
            recorded_at: now,
            source: EventSource::Delivery,
            details,
            external_id: None,
        }
    }

    /// Hands the attempt's outcome, and with it the delivery's in-flight
    /// permit, to the recorder. Metrics count it once it is durable (the
    /// commit stream).
    fn finish(
        &self,
        (item, permit): (ClaimedDelivery, OwnedSemaphorePermit),
        details: EventDetails,
        next: QueueNext,
    ) {
        tracing::debug!(delivery_id = %item.delivery.id, attempt = item.attempt, kind = %details.kind(), "attempt finished");
        let event = self.event(&item, details);
        self.recorder.record(Pending {
            attempt: AttemptRecord {
                tenant: item.delivery.tenant_id.clone(),
                delivery: item.delivery.id.clone(),
                events: vec![event],
                next: Some(next),
            },
            permit: Some(permit),
        });
    }
}

fn jitter() -> f64 {
    rand::random::<f64>()
}

/// This machine's host name, for EHLO.
fn machine_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

impl DeliveryService {
    /// The classifier of replies about `recipient`: the operator's rules
    /// (which may name the recipient's domain), then the built-in ones.
    fn classifier<'a>(
        &'a self,
        recipient: &'a str,
    ) -> impl Fn(u16, Option<EnhancedCode>, &str) -> BounceVerdict + 'a {
        let domain = recipient.rsplit_once('@').map(|(_, domain)| domain);
        move |code, enhanced, text| {
            let class = self
                .state
                .reply_rules
                .classify(Some(code), enhanced, text, domain);
            classification(class)
        }
    }
}

/// The built-in reply classifier alone, as synchronous bounces use it when
/// the operator has no rules: `posthorn-bounce`, whose rule id is kept on
/// the event so every verdict can be explained.
pub fn classify_reply(code: u16, enhanced: Option<EnhancedCode>, text: &str) -> BounceVerdict {
    classification(posthorn_bounce::reply::classify_reply(
        Some(code),
        enhanced,
        text,
    ))
}

fn classification(class: posthorn_bounce::ReplyClass) -> BounceVerdict {
    BounceVerdict {
        bounce_type: class.bounce_type,
        reason: class.reason.as_str().to_owned(),
        rule: class.rule.to_owned(),
    }
}
