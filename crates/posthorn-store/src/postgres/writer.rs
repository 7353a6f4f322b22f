//! Writes on PostgreSQL: each one a transaction of its own on a pooled
//! connection, on the blocking thread pool, several at once (other nodes
//! write at the same time anyway). A write that loses a race to a
//! concurrent one (serialization failure, deadlock, a unique violation
//! where its check did not see the winner) is rolled back and run again
//! from the start, where it sees the winner; the engine acts only through
//! its transaction, so that is always safe. PostgreSQL gathers the commits
//! of concurrent transactions into shared log flushes by itself.
//!
//! A write that stored events notifies the commit stream's channel once,
//! with its commit, and notes its transaction as this node's (`tail`
//! publishes the events once they have settled).

use super::Settings;
use super::error::is_retryable;
use super::pool::{Attempt, Pool, Pooled};
use super::tail::{CHANNEL, LocalTransactions};
use super::tx::{PgTx, Statements};
use crate::engine;
use crate::{StoreError, StoreResult};
use ::postgres::Client;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Runs of one write before its last failure is the answer.
const ATTEMPTS: u32 = 8;

#[derive(Debug, Default)]
pub(crate) struct WriteCounters {
    pub writes: AtomicU64,
    pub events: AtomicU64,
    /// Writes run again after losing a race.
    pub retries: AtomicU64,
}

pub(crate) struct WritePool {
    pool: Pool<Connection>,
    local: Arc<LocalTransactions>,
    pub counters: Arc<WriteCounters>,
}

impl WritePool {
    pub(crate) fn new(
        settings: Arc<Settings>,
        connections: usize,
        local: Arc<LocalTransactions>,
    ) -> Self {
        Self {
            pool: Pool::new(settings, connections),
            local,
            counters: Arc::default(),
        }
    }

    /// Runs `f` in a transaction, again if it loses a race, and returns
    /// its result once committed.
    pub(crate) async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&mut dyn engine::WriteTx) -> StoreResult<T> + Send + 'static,
    {
        let (local, counters) = (self.local.clone(), self.counters.clone());
        let (value, events) = self
            .pool
            .run(move |conn: &mut Connection| {
                let mut begun = false;
                let result = run_with_retries(conn, &f, &local, &counters, &mut begun);
                // A write whose transaction never began (a connection kept
                // from before an outage fails at BEGIN) may run again.
                Attempt {
                    result,
                    untouched: !begun,
                }
            })
            .await?;
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        self.counters.events.fetch_add(events, Ordering::Relaxed);
        Ok(value)
    }
}

/// Events a committed write stored.
type Written = u64;

/// Runs `f` until it commits, fails for good or runs out of attempts;
/// `begun` is set once a transaction has begun on `client`.
fn run_with_retries<T>(
    conn: &mut Connection,
    f: &dyn Fn(&mut dyn engine::WriteTx) -> StoreResult<T>,
    local: &LocalTransactions,
    counters: &WriteCounters,
    begun: &mut bool,
) -> StoreResult<(T, Written)> {
    let mut attempt = 1;
    loop {
        match run_once(conn, f, local, begun) {
            Err(e) if attempt < ATTEMPTS && is_retryable(&e) => {
                counters.retries.fetch_add(1, Ordering::Relaxed);
                // A little later each time, so that two writers that keep
                // colliding stop doing it in step.
                std::thread::sleep(Duration::from_millis(u64::from(attempt) * 2));
                attempt += 1;
            }
            other => return other,
        }
    }
}

fn run_once<T>(
    conn: &mut Connection,
    f: &dyn Fn(&mut dyn engine::WriteTx) -> StoreResult<T>,
    local: &LocalTransactions,
    begun: &mut bool,
) -> StoreResult<(T, Written)> {
    let mut tx = conn.client.transaction()?;
    *begun = true;
    let mut pg = PgTx::new(&mut tx, &mut conn.statements);
    let value = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut pg)))
        .unwrap_or_else(|_| Err(StoreError::backend("a write panicked")))?;
    let (written, xid) = (pg.events_stored(), pg.xid());
    if let Some(xid) = xid {
        local.note(xid);
        // Delivered with the commit, and only if it commits.
        tx.execute(&format!("NOTIFY {CHANNEL}"), &[])?;
    }
    // Dropping an uncommitted transaction (on an error above) rolls it back.
    tx.commit()?;
    Ok((value, written))
}

/// A write connection and the statements prepared on it.
struct Connection {
    client: Client,
    statements: Statements,
}

impl Pooled for Connection {
    fn open(settings: &Settings) -> StoreResult<Connection> {
        Ok(Connection {
            client: settings.connect()?,
            statements: Statements::new(),
        })
    }

    fn client(&self) -> &Client {
        &self.client
    }
}
