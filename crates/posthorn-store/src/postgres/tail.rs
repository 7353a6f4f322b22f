//! The commit stream on PostgreSQL: every node publishes the events of
//! every node, in position order, once they have settled.
//!
//! Why not publish at commit, as SQLite's writer does: this node's writes
//! commit on several connections at once, so their order of commit is not
//! the order of their positions, and other nodes' commits would never be
//! seen. Instead one thread per node follows the event log as a reader of
//! `events_after` does (positions only rising, nothing below the settled
//! bound missed) and publishes what it reads. Every writing transaction
//! sends one `NOTIFY posthorn_events` with its commit (never one per row:
//! a notification takes a database-wide lock at commit); the thread
//! `LISTEN`s, so new events are published a moment after they settle, and
//! it also reads every [`POLL`] without one, so a lost notification (or a
//! commit held back by an older transaction without events) only delays.
//! Events of this node's transactions are marked [`Origin::ThisNode`].
//!
//! The same thread makes the coming months' event partitions once a day,
//! so a node that runs for months never writes into the default partition
//! for long (making them is safe from every node at once).

use super::position::position_xid;
use super::{PARTITION_MONTHS_AHEAD, Settings, compact_stats, make_partitions, reads};
use crate::StoreResult;
use crate::feed::{CommitFeed, Origin};
use crate::records::EventRecord;
use ::postgres::Client;
use ::postgres::fallible_iterator::FallibleIterator;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The channel writers notify and the tail listens on.
pub(crate) const CHANNEL: &str = "posthorn_events";

/// The longest the tail waits for a notification before it reads anyway.
const POLL: Duration = Duration::from_millis(250);

/// After a notification whose events have not settled yet (an older
/// transaction still runs), how long the tail keeps reading at short
/// intervals before it goes back to waiting.
const SETTLE: Duration = Duration::from_millis(100);

/// Events read per query.
const PAGE: i64 = 1000;

/// How often the coming months' event partitions are made.
const PARTITIONS_EVERY: Duration = Duration::from_secs(24 * 3600);

/// How often the statistics' rows of changes are folded (see
/// `compact_stats`): one node folds, the others skip the round.
const COMPACT_STATS_EVERY: Duration = Duration::from_secs(60);

/// The transaction ids of this node's writes that stored events, until the
/// tail has published past them.
#[derive(Debug, Default)]
pub(crate) struct LocalTransactions(Mutex<BTreeSet<i64>>);

impl LocalTransactions {
    /// Notes a transaction before it commits (so the tail can never read
    /// its events before knowing they are this node's).
    pub(crate) fn note(&self, xid: i64) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(xid);
    }

    fn origin(&self, event: &EventRecord) -> Origin {
        let local = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&position_xid(event.seq));
        if local {
            Origin::ThisNode
        } else {
            Origin::OtherNode
        }
    }

    /// Forgets transactions below `xid`: all their events are published.
    fn forget_below(&self, xid: i64) {
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *set = set.split_off(&xid);
    }
}

/// The running tail; stops when dropped.
pub(crate) struct Tail {
    stop: Arc<AtomicBool>,
}

impl Drop for Tail {
    fn drop(&mut self) {
        // The thread sees it within `POLL` and ends with its connection.
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Tail {
    /// Starts following the log from its current end: events committed
    /// before now are history, not news.
    pub(crate) fn start(
        settings: Arc<Settings>,
        feed: Arc<CommitFeed>,
        local: Arc<LocalTransactions>,
    ) -> StoreResult<Tail> {
        let mut client = listen(&settings)?;
        let start = reads::settled_end(&mut client)?;
        let stop = Arc::new(AtomicBool::new(false));
        let follower = Follower {
            settings,
            feed,
            local,
            stop: stop.clone(),
            last: start,
            // `connect` made them just now.
            partitions_due: Instant::now() + PARTITIONS_EVERY,
            stats_due: Instant::now() + COMPACT_STATS_EVERY,
        };
        std::thread::Builder::new()
            .name("posthorn-pg-tail".into())
            .spawn(move || follower.run(client))
            .map_err(|e| crate::StoreError::backend(format!("starting the tail: {e}")))?;
        Ok(Tail { stop })
    }
}

fn listen(settings: &Settings) -> StoreResult<Client> {
    let mut client = settings.connect()?;
    client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
    Ok(client)
}

struct Follower {
    settings: Arc<Settings>,
    feed: Arc<CommitFeed>,
    local: Arc<LocalTransactions>,
    stop: Arc<AtomicBool>,
    /// The position of the last event published.
    last: i64,
    /// When to make the coming months' partitions next.
    partitions_due: Instant,
    stats_due: Instant,
}

impl Follower {
    fn run(mut self, mut client: Client) {
        while !self.stop.load(Ordering::Relaxed) {
            if let Err(e) = self.follow(&mut client) {
                if self.stop.load(Ordering::Relaxed) {
                    return;
                }
                tracing::warn!(error = %e, "the commit stream lost its database connection; reconnecting");
                std::thread::sleep(Duration::from_secs(1));
                match listen(&self.settings) {
                    Ok(c) => client = c,
                    Err(e) => tracing::warn!(error = %e, "the commit stream cannot reconnect yet"),
                }
            }
        }
    }

    /// Publishes what has settled, then waits for news; returns after one
    /// round (or on a database failure).
    fn follow(&mut self, client: &mut Client) -> StoreResult<()> {
        if Instant::now() >= self.partitions_due {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as posthorn_core::Millis);
            make_partitions(client, now, PARTITION_MONTHS_AHEAD)?;
            self.partitions_due = Instant::now() + PARTITIONS_EVERY;
        }
        if Instant::now() >= self.stats_due {
            // On this thread's connection, between two reads of the log:
            // the feed waits for a round, which folds a minute's rows.
            compact_stats(client)?;
            self.stats_due = Instant::now() + COMPACT_STATS_EVERY;
        }
        if self.publish_settled(client)? {
            return Ok(());
        }
        let notified = client.notifications().timeout_iter(POLL).next()?.is_some();
        if notified {
            // Drain the others that came meanwhile: one read serves them.
            while client.notifications().iter().next()?.is_some() {}
            // The notifying commit's events may wait for an older
            // transaction to end: read again shortly, for a while.
            let until = Instant::now() + SETTLE;
            let mut pause = Duration::from_millis(1);
            while Instant::now() < until && !self.publish_settled(client)? {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// Publishes the events settled after the last one published, in
    /// batches of one origin; whether there were any.
    fn publish_settled(&mut self, client: &mut Client) -> StoreResult<bool> {
        let mut any = false;
        loop {
            let page = reads::settled_events_after(client, self.last, PAGE)?;
            let Some(last) = page.last() else {
                return Ok(any);
            };
            any = true;
            self.last = last.seq;
            let full = page.len() as i64 == PAGE;
            let mut batch: Vec<Arc<EventRecord>> = Vec::new();
            let mut batch_origin = Origin::ThisNode;
            for event in page {
                let origin = self.local.origin(&event);
                if origin != batch_origin && !batch.is_empty() {
                    self.feed.publish(std::mem::take(&mut batch), batch_origin);
                }
                batch_origin = origin;
                batch.push(Arc::new(event));
            }
            self.feed.publish(batch, batch_origin);
            self.local.forget_below(position_xid(self.last));
            if !full {
                return Ok(true);
            }
        }
    }
}
