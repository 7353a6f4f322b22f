//! Admission of connections, for every listener (the SMTP ones here, and the
//! HTTP server, which uses the same pieces): caps on the connections open at
//! once, in total and per client address, and an accept loop that pauses
//! when the system refuses to accept (out of file descriptors, out of
//! buffers) and says so in one line a minute instead of one per failed try.
//!
//! Without these, idle connections that never say a word use up the
//! process's file descriptors, every listener (and the database) fails, and
//! an accept loop that retries at once writes gigabytes of the same error.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;

/// How many connections a listener keeps open at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// In total.
    pub max_connections: usize,
    /// From one client address (an IPv6 client: from its /64, which one
    /// host usually holds whole).
    pub max_per_ip: usize,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("too many connections")]
    Total,
    #[error("too many connections from one address")]
    PerIp,
}

/// Counters of one listener, read by the metrics endpoint.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Connections admitted.
    pub accepted: AtomicU64,
    /// Connections refused because the listener was full.
    pub refused_total: AtomicU64,
    /// Connections refused because their address had too many open.
    pub refused_per_ip: AtomicU64,
    /// Idle connections closed to make room for a new one.
    pub evicted: AtomicU64,
    /// Connections open now.
    pub open: AtomicU64,
    /// Accepts the system refused (e.g. out of file descriptors).
    pub accept_errors: AtomicU64,
}

/// Decides, per accepted socket, whether it may stay; see [`Permit`].
pub struct ConnectionLimiter {
    name: &'static str,
    limits: ConnectionLimits,
    /// Addresses counted only towards the total (trusted reverse proxies:
    /// every client of theirs shares their address).
    exempt: Option<Arc<dyn Fn(IpAddr) -> bool + Send + Sync>>,
    /// At the total limit, close the connection idle longest instead of
    /// refusing the new one (HTTP: a connection between requests costs its
    /// client nothing to reopen, and a flood of idle ones cannot lock
    /// everyone else out).
    evict_idle: bool,
    stats: Arc<ListenerStats>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Connections open, including those told to close.
    open: usize,
    /// Connections told to close that have not closed yet.
    evicting: usize,
    per_ip: HashMap<IpAddr, usize>,
    slots: HashMap<u64, Slot>,
    /// Idle connections by the order they became idle (oldest first).
    idle: BTreeMap<u64, u64>,
    next_id: u64,
    next_idle: u64,
    refusals: Reporter,
}

struct Slot {
    /// Requests in progress; the connection is idle at 0.
    busy: u32,
    /// Its key in `State::idle` while idle.
    idle_seq: Option<u64>,
    evicted: bool,
    evict: Arc<Notify>,
}

impl ConnectionLimiter {
    pub fn new(name: &'static str, limits: ConnectionLimits, stats: Arc<ListenerStats>) -> Self {
        Self {
            name,
            limits,
            exempt: None,
            evict_idle: false,
            stats,
            state: Mutex::default(),
        }
    }

    /// Addresses for which `exempt` is true count only towards the total.
    pub fn with_exempt(mut self, exempt: Arc<dyn Fn(IpAddr) -> bool + Send + Sync>) -> Self {
        self.exempt = Some(exempt);
        self
    }

    /// At the total limit, tell the connection idle longest to close (see
    /// [`Permit::evicted`]) instead of refusing.
    pub fn evicting_idle(mut self) -> Self {
        self.evict_idle = true;
        self
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while counting leaves counts that are still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a connection from `ip`, or says why not. Counting stops when
    /// the returned permit is dropped.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refusal> {
        let key = (!self.exempt.as_ref().is_some_and(|f| f(ip))).then(|| ip_key(ip));
        let mut state = self.state();
        let refusal = if key
            .is_some_and(|k| state.per_ip.get(&k).copied().unwrap_or(0) >= self.limits.max_per_ip)
        {
            Some(Refusal::PerIp)
        } else if state.open - state.evicting >= self.limits.max_connections {
            if self.evict_idle && evict_oldest_idle(&mut state) {
                self.stats.evicted.fetch_add(1, Ordering::Relaxed);
                None
            } else {
                Some(Refusal::Total)
            }
        } else {
            None
        };
        if let Some(refusal) = refusal {
            let counter = match refusal {
                Refusal::Total => &self.stats.refused_total,
                Refusal::PerIp => &self.stats.refused_per_ip,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = state.refusals.tick(Instant::now()) {
                tracing::warn!(
                    listener = self.name,
                    %ip,
                    reason = %refusal,
                    refused_since_last_report = suppressed,
                    "refusing connections over the limit (reported at most once a minute)"
                );
            }
            return Err(refusal);
        }
        state.open += 1;
        if let Some(k) = key {
            *state.per_ip.entry(k).or_default() += 1;
        }
        let id = state.next_id;
        state.next_id += 1;
        let evict = Arc::new(Notify::new());
        state.slots.insert(
            id,
            Slot {
                busy: 0,
                idle_seq: None,
                evicted: false,
                evict: evict.clone(),
            },
        );
        if self.evict_idle {
            // A new connection has sent no request yet: it is idle.
            mark_idle(&mut state, id);
        }
        drop(state);
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        Ok(Permit {
            limiter: self.clone(),
            id,
            key,
            evict,
        })
    }
}

/// Tells the connection idle longest to close; false when none is idle.
fn evict_oldest_idle(state: &mut State) -> bool {
    let Some((_, id)) = state.idle.pop_first() else {
        return false;
    };
    let Some(slot) = state.slots.get_mut(&id) else {
        return false;
    };
    slot.idle_seq = None;
    slot.evicted = true;
    // `notify_one` keeps the wake-up for a task not waiting yet.
    slot.evict.notify_one();
    state.evicting += 1;
    true
}

fn mark_idle(state: &mut State, id: u64) {
    let seq = state.next_idle;
    state.next_idle += 1;
    if let Some(slot) = state.slots.get_mut(&id) {
        slot.idle_seq = Some(seq);
        state.idle.insert(seq, id);
    }
}

/// The address a per-IP limit counts by: IPv4 addresses (also written as
/// IPv6) whole, IPv6 addresses by their /64, since one host is usually given
/// a whole /64 and could otherwise open its connections from 2^64 addresses.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

/// One admitted connection; dropping it frees its place.
pub struct Permit {
    limiter: Arc<ConnectionLimiter>,
    id: u64,
    key: Option<IpAddr>,
    evict: Arc<Notify>,
}

impl Permit {
    /// Resolves when the limiter wants this connection closed to make room.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }

    /// Marks the connection busy (a request is in progress) until the guard
    /// is dropped; a busy connection is never evicted.
    pub fn busy(&self) -> BusyGuard {
        let mut state = self.limiter.state();
        if let Some(slot) = state.slots.get_mut(&self.id) {
            slot.busy += 1;
            if let Some(seq) = slot.idle_seq.take() {
                state.idle.remove(&seq);
            }
        }
        BusyGuard {
            limiter: self.limiter.clone(),
            id: self.id,
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut state = self.limiter.state();
        state.open -= 1;
        if let Some(k) = self.key
            && let Some(n) = state.per_ip.get_mut(&k)
        {
            *n -= 1;
            if *n == 0 {
                state.per_ip.remove(&k);
            }
        }
        if let Some(slot) = state.slots.remove(&self.id) {
            if let Some(seq) = slot.idle_seq {
                state.idle.remove(&seq);
            }
            if slot.evicted {
                state.evicting -= 1;
            }
        }
        drop(state);
        self.limiter.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// See [`Permit::busy`].
pub struct BusyGuard {
    limiter: Arc<ConnectionLimiter>,
    id: u64,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let mut state = self.limiter.state();
        let now_idle = match state.slots.get_mut(&self.id) {
            Some(slot) => {
                slot.busy = slot.busy.saturating_sub(1);
                slot.busy == 0 && !slot.evicted && self.limiter.evict_idle
            }
            None => false,
        };
        if now_idle {
            mark_idle(&mut state, self.id);
        }
    }
}

/// Says "now" at most once per interval, counting the times it said
/// nothing, so that a flood of the same failure is one log line a minute.
#[derive(Debug, Default)]
pub struct Reporter {
    last: Option<Instant>,
    suppressed: u64,
}

/// How often a repeated failure is logged.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(60);

impl Reporter {
    /// `Some(times suppressed since the last report)` when this occurrence
    /// should be logged.
    pub fn tick(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < REPORT_INTERVAL)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// First pause after a failed accept; it doubles up to [`MAX_ACCEPT_PAUSE`].
pub const FIRST_ACCEPT_PAUSE: Duration = Duration::from_millis(10);
/// Longest pause between accepts while they fail.
pub const MAX_ACCEPT_PAUSE: Duration = Duration::from_secs(1);

/// The pauses and reports of an accept loop.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    pause: Option<Duration>,
    reporter: Reporter,
}

impl AcceptBackoff {
    /// An accept succeeded: the next failure pauses briefly again.
    pub fn succeeded(&mut self) {
        self.pause = None;
    }

    /// An accept failed at `now`: how long to pause, and `Some(failures
    /// not logged since the last report)` when this one is to be logged.
    pub fn failed(&mut self, now: Instant) -> (Duration, Option<u64>) {
        let pause = match self.pause {
            None => FIRST_ACCEPT_PAUSE,
            Some(p) => (p * 2).min(MAX_ACCEPT_PAUSE),
        };
        self.pause = Some(pause);
        (pause, self.reporter.tick(now))
    }
}

/// Failures that concern one connection only (the client gave up before we
/// took it): try again at once.
fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    )
}

/// Accepts the next connection on `listener`. When the system refuses
/// (EMFILE, ENFILE, ENOBUFS, ENOMEM...) it pauses, 10 ms doubling to 1 s,
/// so that a process out of file descriptors does not spin, and logs one
/// line a minute with the count of failures in between. Cancel-safe.
pub async fn accept(
    listener: &TcpListener,
    backoff: &mut AcceptBackoff,
    name: &'static str,
    stats: &ListenerStats,
) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => {
                backoff.succeeded();
                return accepted;
            }
            Err(e) if is_per_connection(&e) => {
                tracing::debug!(listener = name, error = %e, "a connection went away before it was accepted");
            }
            Err(e) => {
                stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                let (pause, report) = backoff.failed(Instant::now());
                if let Some(suppressed) = report {
                    tracing::warn!(
                        listener = name,
                        error = %e,
                        failures_since_last_report = suppressed,
                        "accepting connections fails; pausing up to 1s between tries (reported at most once a minute)"
                    );
                }
                tokio::time::sleep(pause).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(total: usize, per_ip: usize) -> Arc<ConnectionLimiter> {
        Arc::new(ConnectionLimiter::new(
            "test",
            ConnectionLimits {
                max_connections: total,
                max_per_ip: per_ip,
            },
            Arc::default(),
        ))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn per_ip_and_total_caps_free_their_place_when_a_connection_ends() {
        let l = limiter(3, 2);
        let a1 = l.admit(ip("192.0.2.1")).unwrap();
        let _a2 = l.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(l.admit(ip("192.0.2.1")).err(), Some(Refusal::PerIp));
        let _b1 = l.admit(ip("192.0.2.2")).unwrap();
        assert_eq!(l.admit(ip("192.0.2.3")).err(), Some(Refusal::Total));
        drop(a1);
        let _c1 = l.admit(ip("192.0.2.3")).unwrap();
        assert_eq!(l.stats.refused_per_ip.load(Ordering::Relaxed), 1);
        assert_eq!(l.stats.refused_total.load(Ordering::Relaxed), 1);
        assert_eq!(l.stats.open.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn ipv6_clients_count_by_their_64_and_mapped_v4_as_v4() {
        let l = limiter(10, 1);
        let _a = l.admit(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            l.admit(ip("2001:db8:1:2:ffff::9")).err(),
            Some(Refusal::PerIp)
        );
        let _b = l.admit(ip("2001:db8:1:3::1")).unwrap();
        let _c = l.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(l.admit(ip("::ffff:192.0.2.1")).err(), Some(Refusal::PerIp));
    }

    #[test]
    fn exempt_addresses_count_only_towards_the_total() {
        let proxy = ip("10.0.0.1");
        let l = Arc::new(
            ConnectionLimiter::new(
                "test",
                ConnectionLimits {
                    max_connections: 3,
                    max_per_ip: 1,
                },
                Arc::default(),
            )
            .with_exempt(Arc::new(move |ip| ip == proxy)),
        );
        let _held: Vec<Permit> = (0..3).map(|_| l.admit(proxy).unwrap()).collect();
        assert_eq!(l.admit(proxy).err(), Some(Refusal::Total));
    }

    #[tokio::test]
    async fn at_the_total_the_longest_idle_connection_makes_room_never_a_busy_one() {
        let l = Arc::new(
            ConnectionLimiter::new(
                "test",
                ConnectionLimits {
                    max_connections: 2,
                    max_per_ip: 10,
                },
                Arc::default(),
            )
            .evicting_idle(),
        );
        let old = l.admit(ip("192.0.2.1")).unwrap();
        let busy = l.admit(ip("192.0.2.2")).unwrap();
        let guard = busy.busy();
        // Full: the idle one is told to go, the busy one is not.
        let new = l.admit(ip("192.0.2.3")).unwrap();
        tokio::time::timeout(Duration::from_secs(5), old.evicted())
            .await
            .expect("the idle connection was told to close");
        // Nothing is idle now: a fourth is refused, also once `old` has
        // closed, while both others are in a request.
        let new_guard = new.busy();
        assert_eq!(l.admit(ip("192.0.2.4")).err(), Some(Refusal::Total));
        drop(old);
        assert_eq!(l.admit(ip("192.0.2.4")).err(), Some(Refusal::Total));
        // `new` finished its request: it is idle and goes next.
        drop(new_guard);
        let _fourth = l.admit(ip("192.0.2.4")).unwrap();
        tokio::time::timeout(Duration::from_secs(5), new.evicted())
            .await
            .expect("the next idle connection was told to close");
        drop(guard);
        assert_eq!(l.stats.evicted.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn accept_failures_pause_longer_and_are_logged_once_a_minute() {
        let mut b = AcceptBackoff::default();
        let start = Instant::now();
        let mut pauses = Vec::new();
        let mut reports = Vec::new();
        // A process out of file descriptors: 1000 failures over 10 minutes.
        for i in 0..1000u64 {
            let (pause, report) = b.failed(start + Duration::from_millis(i * 600));
            pauses.push(pause);
            reports.extend(report);
        }
        assert_eq!(pauses[0], FIRST_ACCEPT_PAUSE);
        assert_eq!(pauses[1], FIRST_ACCEPT_PAUSE * 2);
        assert!(pauses.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*pauses.last().unwrap(), MAX_ACCEPT_PAUSE);
        assert_eq!(reports.len(), 10, "one line a minute: {reports:?}");
        assert_eq!(reports[0], 0);
        // Each report counts the failures since the one before; the last
        // minute's 99 are told in the next.
        assert_eq!(reports[1..], [99; 9]);
        b.succeeded();
        let (pause, report) = b.failed(start + Duration::from_secs(660));
        assert_eq!(pause, FIRST_ACCEPT_PAUSE);
        assert_eq!(report, Some(99));
    }
}
