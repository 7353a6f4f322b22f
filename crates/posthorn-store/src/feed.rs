//! The commit stream: every stored event, published once, after the
//! transaction that wrote it has committed, in `seq` order. On SQLite the
//! one writer publishes its own commits at once; on PostgreSQL every node
//! publishes the commits of all nodes, read back in position order once
//! they have settled (see `postgres::tail`), each marked with its
//! [`Origin`].
//!
//! Two kinds of listener, because they need different promises:
//!
//! - **Observers** run on the publishing thread (SQLite: the committing
//!   one, before any writer of the batch is answered) and see every batch:
//!   for bookkeeping that must not miss an event and costs next to nothing
//!   (counting metrics, dropping a cache entry, waking a worker). An
//!   observer must never block.
//! - **Subscribers** get the batches over a bounded broadcast channel: a
//!   slow subscriber falls behind (`RecvError::Lagged`) instead of holding
//!   up a commit, and catches up from the store with `events_after`, from
//!   the last `seq` it saw. The live feed and webhooks are subscribers.

use crate::EventRecord;
use std::sync::{Arc, RwLock};
use tokio::sync::broadcast;

/// The events of one commit, in `seq` order.
pub type CommittedEvents = Arc<[Arc<EventRecord>]>;

/// How many commits a subscriber may fall behind before it lags.
const SUBSCRIBER_BACKLOG: usize = 4096;

/// Which node's transaction wrote a batch of events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    ThisNode,
    /// Another node sharing the database (PostgreSQL).
    OtherNode,
}

type Observer = Box<dyn Fn(&[Arc<EventRecord>], Origin) + Send + Sync>;

pub struct CommitFeed {
    observers: RwLock<Vec<Observer>>,
    subscribers: broadcast::Sender<CommittedEvents>,
}

impl Default for CommitFeed {
    fn default() -> Self {
        Self {
            observers: RwLock::default(),
            subscribers: broadcast::channel(SUBSCRIBER_BACKLOG).0,
        }
    }
}

impl std::fmt::Debug for CommitFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitFeed")
            .field("subscribers", &self.subscribers.receiver_count())
            .finish_non_exhaustive()
    }
}

impl CommitFeed {
    /// Calls `observer` with the events of every later commit and where
    /// they were written, on the publishing thread. It must be quick and
    /// must not block or await.
    pub fn observe(&self, observer: impl Fn(&[Arc<EventRecord>], Origin) + Send + Sync + 'static) {
        self.observers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(observer));
    }

    /// The events of every later commit, as long as the receiver keeps up.
    pub fn subscribe(&self) -> broadcast::Receiver<CommittedEvents> {
        self.subscribers.subscribe()
    }

    /// Publishes one commit's events (nothing when it wrote none).
    pub(crate) fn publish(&self, events: Vec<Arc<EventRecord>>, origin: Origin) {
        if events.is_empty() {
            return;
        }
        let events: CommittedEvents = events.into();
        for observer in self
            .observers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            // A panicking observer is a bug, but it must not stop the
            // writer thread that publishes.
            let run = std::panic::AssertUnwindSafe(|| observer(&events, origin));
            if std::panic::catch_unwind(run).is_err() {
                tracing::error!("a commit observer panicked");
            }
        }
        // An error only means that nobody subscribes.
        let _ = self.subscribers.send(events);
    }
}
