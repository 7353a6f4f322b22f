//! The delivery workers: take due deliveries from the send queue, group them
//! by destination domain, and deliver each over SMTP, recording `sent` when
//! an attempt starts and its outcome (with the remote server's words) when
//! it ends. Retries are durable: they live in the queue, never in memory.
//! Sessions hand what they record to the [`recorder`] and go on: they never
//! wait for a commit.

pub mod build;
pub mod dns;
pub mod recorder;
pub mod verp;

use crate::app::AppState;
use crate::dkim::DkimKeys;
use dns::{HostAnswer, MxAnswer, Resolver};
use posthorn_core::domain::SenderDomain;
use posthorn_core::event::{BounceVerdict, EventDetails, Sent};
use posthorn_core::outcome::{self, Attempt, AttemptResult, Next, Unroutable};
use posthorn_core::{EventId, EventSource};
use posthorn_smtp::tls::MaybeTls;
use posthorn_smtp::{ClientError, Envelope, RecipientResult, SmtpClient, Timeouts};
use posthorn_store::{AttemptRecord, ClaimedDelivery, NewEvent, QueueNext};
use posthorn_track::Say;
use recorder::{Pending, Recorder};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use verp::VerpSigner;

/// How long the workers sleep when the queue has nothing due (a new
/// submission wakes them at once).
const IDLE_POLL: Duration = Duration::from_millis(500);

/// One server to try for a domain.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub addr: SocketAddr,
    /// Never send without TLS (domain policy, or a smarthost).
    pub require_tls: bool,
    /// AUTH PLAIN credentials (a smarthost).
    pub auth: Option<(String, String)>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("host", &self.host)
            .field("addr", &self.addr)
            .field("require_tls", &self.require_tls)
            .field(
                "auth",
                &self.auth.as_ref().map(|(user, _)| (user, "<redacted>")),
            )
            .finish()
    }
}

/// Where mail for a domain goes, or why it goes nowhere.
enum Destination {
    Targets(Vec<Target>),
    /// The domain cannot receive mail: bounce every delivery.
    Bounce(Unroutable),
    /// DNS failed for now (the resolver's words): try again later.
    Defer(String),
    /// Every address found is one delivery must not connect to (loopback,
    /// private, metadata, ...; `net::delivery_target`): try again later, in
    /// case DNS or `allow_networks` changes (see `destination`).
    Refuse(String),
}

pub struct DeliveryService {
    state: AppState,
    verp: VerpSigner,
    resolver: Arc<dyn Resolver>,
    routes: HashMap<String, SocketAddr>,
    helo_name: String,
    timeouts: Timeouts,
    /// Connections per destination domain.
    per_domain: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Message rates per destination domain, where a policy sets one.
    rates: Mutex<HashMap<String, posthorn_core::retry::RateLimit>>,
    smarthost: Option<Target>,
    /// Deliveries claimed and not finished, bounded so that a slow
    /// destination cannot make us lease the whole queue.
    in_flight: Arc<Semaphore>,
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

/// How many message ids `links_kept` holds before it starts over.
const LINKS_KEPT_MAX: usize = 10_000;

impl DeliveryService {
    pub fn new(
        state: AppState,
        verp: VerpSigner,
        resolver: Arc<dyn Resolver>,
        wake: Arc<Notify>,
        extra_routes: HashMap<String, SocketAddr>,
    ) -> Result<Self, String> {
        let config = &state.config.delivery;
        let mut routes = parse_routes(&config.routes)?;
        routes.extend(extra_routes);
        let helo_name = config.helo_name.clone().unwrap_or_else(machine_name);
        let smarthost = config
            .smarthost
            .as_ref()
            .map(smarthost_target)
            .transpose()?;
        let in_flight = Arc::new(Semaphore::new(config.claim_batch as usize * 4));
        let lease = Duration::from_millis(u64::try_from(config.lease.0).unwrap_or(0));
        let (recorder, _) = Recorder::start(state.store.clone(), lease);
        Ok(Self {
            state,
            verp,
            resolver,
            routes,
            helo_name,
            timeouts: Timeouts::default(),
            per_domain: Mutex::new(HashMap::new()),
            rates: Mutex::new(HashMap::new()),
            smarthost,
            in_flight,
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

    /// `copy` DKIM-signed for its From domain (or a parent) with a key of
    /// a domain the message's tenant owns; unsigned when there is none.
    /// Ownership is read when the copy leaves, so a domain given up or
    /// moved since acceptance no longer signs.
    async fn sign(
        &self,
        message: &posthorn_store::MessageRecord,
        copy: Vec<u8>,
    ) -> Result<Vec<u8>, posthorn_store::StoreError> {
        if self.dkim.is_empty() {
            return Ok(copy);
        }
        let from_domain = crate::dkim::author_domain(message);
        let owners = self.state.store.domain_owners(&[&from_domain]).await?;
        let tenant = &message.tenant_id;
        let owns = |domain: &str| {
            matches!(
                SenderDomain::judge(tenant, domain, &owners),
                SenderDomain::Own { .. }
            )
        };
        Ok(self.dkim.sign(&from_domain, owns, &copy).unwrap_or(copy))
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
        let mut claims_failing_full = false;
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
                        claims_failing_full = false;
                        c
                    }
                    Err(e) => {
                        // A full disk fails every claim until space
                        // returns: said once, not every poll.
                        let full = matches!(e, posthorn_store::StoreError::Full(_));
                        if !(full && claims_failing_full) {
                            tracing::error!(error = %e, "claiming due deliveries failed");
                        }
                        claims_failing_full = full;
                        Vec::new()
                    }
                }
            };
            if claimed.is_empty() {
                tokio::select! {
                    _ = stop.notified() => return,
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
        let destination = self.destination(&domain).await;
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

    /// Opens one session (trying each target in turn) and sends `items` over
    /// it, one transaction per delivery.
    async fn deliver_over_one_connection(
        &self,
        domain: &str,
        targets: &[Target],
        items: Vec<(ClaimedDelivery, OwnedSemaphorePermit)>,
    ) {
        let (mut client, target) = match self.open_session(targets).await {
            Ok(session) => session,
            Err((error, target)) => {
                let result = session_failure(&error);
                for item in items {
                    self.finish_unattempted(item, &result, target.as_ref(), None);
                }
                return;
            }
        };
        let tls = client.tls_info().map(|t| outcome::Tls {
            version: t.version,
            cipher: t.cipher,
        });
        let mut failed: Option<AttemptResult> = None;
        for item in items {
            let attempt_start = self.state.now();
            if let Some(result) = &failed {
                // The session died under an earlier delivery: this one was
                // not attempted, and is deferred with the same cause.
                self.finish_unattempted(item, result, Some(&target), tls.clone());
                continue;
            }
            self.pace(domain).await;
            self.record_sent(&item.0, &target);
            let message = match self.prepare_copy(&item.0).await {
                Ok(m) => m,
                Err(e) => {
                    let (details, next) =
                        outcome::for_local_failure(format!("building the message failed: {e}"));
                    self.finish(item, details, next);
                    continue;
                }
            };
            let message = match self.sign(&item.0.message, message).await {
                Ok(m) => m,
                Err(e) => {
                    let (details, next) = outcome::for_local_failure(format!(
                        "looking up the sending domain failed: {e}"
                    ));
                    self.finish(item, details, next);
                    continue;
                }
            };
            let claimed = &item.0;
            let envelope = Envelope {
                mail_from: self
                    .verp
                    .return_path(&claimed.delivery.id, &self.return_path_domain(claimed)),
                recipients: vec![claimed.delivery.recipient.clone()],
                envid: Some(claimed.delivery.id.to_string()),
                notify: Some("FAILURE,DELAY".into()),
            };
            let sent = client.send(&envelope, &message).await;
            let mut attempt = self.attempt(claimed, Some(&target), tls.clone());
            attempt.started_at = attempt_start;
            let result = match &sent {
                Ok(transaction) => recipient_result(&transaction.recipients[0]),
                Err(error) => session_failure(error),
            };
            let (details, next) = outcome::for_attempt(
                &attempt,
                &result,
                &self.schedule(),
                jitter(),
                &self.classifier(&claimed.delivery.recipient),
            );
            self.finish(item, details, next);
            if sent.is_err() {
                failed = Some(result);
            }
        }
        if failed.is_none() {
            client.quit().await;
        }
    }

    async fn open_session(
        &self,
        targets: &[Target],
    ) -> Result<(SmtpClient<MaybeTls>, Target), (ClientError, Option<Target>)> {
        let mut last = (
            ClientError::Io {
                phase: posthorn_smtp::Phase::Connect,
                message: "no server to connect to".into(),
            },
            None,
        );
        for target in targets {
            match self.connect(target).await {
                Ok(client) => return Ok((client, target.clone())),
                Err(e) => {
                    tracing::debug!(host = %target.host, addr = %target.addr, error = %e, "trying the next server");
                    last = (e, Some(target.clone()));
                }
            }
        }
        Err(last)
    }

    /// Connect, EHLO, STARTTLS when offered, AUTH for a smarthost. TLS is
    /// opportunistic (if the handshake fails the message goes in plain text
    /// on a new connection, as MTAs do) unless the target requires it.
    async fn connect(&self, target: &Target) -> Result<SmtpClient<MaybeTls>, ClientError> {
        let tls_required = || ClientError::Protocol {
            phase: posthorn_smtp::Phase::StartTls,
            message: format!("TLS is required for {} but could not be used", target.host),
            permanent: false,
        };
        let (mut client, _greeting) = SmtpClient::connect(target.addr, self.timeouts).await?;
        client.hello(&self.helo_name).await?;
        let mut client = if client.extensions.starttls {
            match client.starttls(&target.host, &self.helo_name).await {
                Ok(tls) => tls,
                Err(_) if target.require_tls => return Err(tls_required()),
                Err(e) => {
                    tracing::info!(host = %target.host, error = %e, "STARTTLS failed; sending without TLS");
                    let (mut plain, _) = SmtpClient::connect(target.addr, self.timeouts).await?;
                    plain.hello(&self.helo_name).await?;
                    plain
                }
            }
        } else if target.require_tls {
            return Err(tls_required());
        } else {
            client
        };
        if let Some((user, password)) = &target.auth {
            client.auth_plain(user, password).await?;
        }
        Ok(client)
    }

    async fn destination(&self, domain: &str) -> Destination {
        let require_tls = self.policy(domain).is_some_and(|p| p.require_tls);
        if let Some(addr) = self.routes.get(domain) {
            return Destination::Targets(vec![Target {
                host: domain.to_owned(),
                addr: *addr,
                require_tls,
                auth: None,
            }]);
        }
        if let Some(relay) = &self.smarthost {
            let mut relay = relay.clone();
            relay.require_tls |= require_tls;
            return Destination::Targets(vec![relay]);
        }
        let hosts = match self.resolver.mx(domain).await {
            MxAnswer::Hosts(hosts) => hosts,
            MxAnswer::NullMx => return Destination::Bounce(Unroutable::NullMx),
            MxAnswer::NoSuchDomain => return Destination::Bounce(Unroutable::NoSuchDomain),
            MxAnswer::TemporaryFailure(why) => return Destination::Defer(why),
        };
        // Addresses found in DNS are checked (routes and the smarthost above
        // are the operator's own and are not): a domain whose MX resolves
        // to 127.0.0.1 or a metadata address must not make us connect to a
        // service of our own network. Forbidden addresses are skipped; the
        // others are tried as usual.
        let allow = &self.state.config.delivery.allow_networks;
        let mut targets = Vec::new();
        let mut temporary = None;
        let mut refused = Vec::new();
        for host in hosts {
            match self.resolver.host(&host).await {
                HostAnswer::Addresses(ips) => {
                    for ip in ips {
                        match posthorn_core::net::delivery_target(ip, allow) {
                            Ok(()) => targets.push(Target {
                                host: host.clone(),
                                addr: SocketAddr::new(ip, self.state.config.delivery.mx_port),
                                require_tls,
                                auth: None,
                            }),
                            Err(why) => {
                                tracing::warn!(%domain, %host, %ip, reason = %why, "not connecting to a mail server outside the public internet");
                                refused.push(format!("{host} ({ip}) is {why}"));
                            }
                        }
                    }
                }
                HostAnswer::NoSuchHost => {}
                HostAnswer::TemporaryFailure(why) => temporary = Some(why),
            }
        }
        if targets.is_empty() && !refused.is_empty() {
            return Destination::Refuse(format!(
                "not connecting to the mail servers of {domain}: {}, not a permitted delivery \
                 target (allow its network with [delivery] allow_networks)",
                refused.join(", ")
            ));
        }
        match (targets.is_empty(), temporary) {
            (false, _) => Destination::Targets(targets),
            (true, Some(why)) => Destination::Defer(why),
            (true, None) => Destination::Bounce(Unroutable::NoAddress),
        }
    }

    fn schedule(&self) -> posthorn_core::retry::RetrySchedule {
        self.state.config.retry.schedule()
    }

    fn return_path_domain(&self, item: &ClaimedDelivery) -> String {
        self.state
            .config
            .delivery
            .return_path_domain
            .clone()
            .unwrap_or_else(|| {
                item.message
                    .from_address
                    .rsplit_once('@')
                    .map_or("localhost", |(_, d)| d)
                    .to_owned()
            })
    }

    fn links_already_kept(&self, message: &posthorn_core::MessageId) -> bool {
        self.links_kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(message)
    }

    /// The copy for one delivery, tracking applied. Its links are kept
    /// before it leaves, so no click can arrive before its URL is stored.
    async fn prepare_copy(&self, item: &ClaimedDelivery) -> Result<Vec<u8>, String> {
        let domain = self.return_path_domain(item);
        let tenant = Say {
            opens: item.tenant.track_opens,
            clicks: item.tenant.track_clicks,
        };
        let message = Say {
            opens: item.message.tracking_opens,
            clicks: item.message.tracking_clicks,
        };
        let choice =
            posthorn_track::choice(&self.state.config, &item.delivery.stream, message, tenant);
        let copy =
            self.state
                .tracking
                .prepare(&item.message, &item.delivery, choice, &self.verp, &domain);
        if !copy.links.is_empty() && !self.links_already_kept(&item.message.id) {
            self.state
                .store
                .put_message_links(&item.message.id, copy.links.clone())
                .await
                .map_err(|e| format!("keeping the tracked links: {e}"))?;
            let mut kept = self.links_kept.lock().unwrap_or_else(|e| e.into_inner());
            if kept.len() >= LINKS_KEPT_MAX {
                kept.clear();
            }
            kept.insert(item.message.id.clone());
        }
        build::build(&item.message, &item.delivery, &domain, &copy).map_err(|e| e.to_string())
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
        next: Next,
    ) {
        let next = match next {
            Next::Remove => QueueNext::Remove,
            Next::RetryAt(at) => QueueNext::RetryAt(at),
        };
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

/// The smarthost as a target (resolved once, at start).
fn smarthost_target(relay: &posthorn_core::config::SmarthostConfig) -> Result<Target, String> {
    let addr = std::net::ToSocketAddrs::to_socket_addrs(relay.address.as_str())
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("smarthost `{}` is not a reachable host:port", relay.address))?;
    let host = relay
        .address
        .rsplit_once(':')
        .map_or(relay.address.as_str(), |(h, _)| h);
    Ok(Target {
        host: host.to_owned(),
        addr,
        require_tls: relay.require_tls,
        auth: relay
            .username
            .clone()
            .zip(relay.password.as_ref().map(|p| p.0.clone())),
    })
}

/// Parses `[delivery.routes]` / `--route` values (`host:port`).
pub fn parse_routes(
    routes: &std::collections::BTreeMap<String, String>,
) -> Result<HashMap<String, SocketAddr>, String> {
    let mut parsed = HashMap::new();
    for (domain, target) in routes {
        let addr = std::net::ToSocketAddrs::to_socket_addrs(target.as_str())
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                format!("route for {domain}: `{target}` is not a reachable host:port")
            })?;
        parsed.insert(domain.trim_end_matches('.').to_ascii_lowercase(), addr);
    }
    Ok(parsed)
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
    ) -> impl Fn(u16, Option<&str>, &str) -> BounceVerdict + 'a {
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
pub fn classify_reply(code: u16, enhanced: Option<&str>, text: &str) -> BounceVerdict {
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

/// The SMTP client's answer for our recipient, as the outcome rules read it.
fn recipient_result(result: &RecipientResult) -> AttemptResult {
    let reply = outcome_reply(&result.reply);
    if result.delivered() {
        AttemptResult::Delivered(reply)
    } else {
        AttemptResult::NotDelivered(reply)
    }
}

/// A failed session as the outcome rules read it: the client describes
/// every failure with a reply (a made-up 451 for a timeout or a dropped
/// connection, 554 for a permanent protocol failure) whose class says
/// whether trying again can help.
fn session_failure(error: &ClientError) -> AttemptResult {
    AttemptResult::NotDelivered(outcome_reply(&error.reply()))
}

fn outcome_reply(reply: &posthorn_smtp::Reply) -> outcome::Reply {
    outcome::Reply {
        code: reply.code,
        enhanced: reply.enhanced.clone(),
        text: reply.text.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use posthorn_smtp::Phase;
    use std::time::Duration;

    #[test]
    fn a_session_failure_bounces_exactly_when_the_client_calls_it_permanent() {
        let errors = [
            ClientError::Timeout {
                phase: Phase::DataEnd,
                after: Duration::from_secs(5),
            },
            ClientError::Io {
                phase: Phase::Connect,
                message: "refused".into(),
            },
            ClientError::Reply {
                phase: Phase::MailFrom,
                reply: posthorn_smtp::Reply::local(421, "4.7.0", "closing"),
            },
            ClientError::Reply {
                phase: Phase::MailFrom,
                reply: posthorn_smtp::Reply::local(554, "5.7.1", "go away"),
            },
            ClientError::Protocol {
                phase: Phase::Ehlo,
                message: "garbled".into(),
                permanent: false,
            },
            ClientError::Protocol {
                phase: Phase::Ehlo,
                message: "no common ground".into(),
                permanent: true,
            },
        ];
        for error in errors {
            let AttemptResult::NotDelivered(reply) = session_failure(&error) else {
                panic!("{error:?}")
            };
            assert_eq!(reply.is_permanent(), error.is_permanent(), "{error:?}");
            assert_eq!(reply.line(), error.reply().line());
        }
    }
}
