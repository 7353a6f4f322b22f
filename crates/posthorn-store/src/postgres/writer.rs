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

use super::error::is_retryable;
use super::tail::{CHANNEL, LocalTransactions};
use super::tx::{PgTx, Statements};
use super::{Settings, close_off_runtime, drop_idle, lost_connection};
use crate::engine;
use crate::{StoreError, StoreResult};
use ::postgres::Client;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    settings: Arc<Settings>,
    idle: Arc<Mutex<Vec<Connection>>>,
    permits: tokio::sync::Semaphore,
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
            settings,
            idle: Arc::default(),
            permits: tokio::sync::Semaphore::new(connections.max(1)),
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
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::closed())?;
        let idle = self.idle.lock().map_err(|_| StoreError::closed())?.pop();
        let settings = self.settings.clone();
        let local = self.local.clone();
        let counters = self.counters.clone();
        let pool = self.idle.clone();
        let (client, result) = tokio::task::spawn_blocking(move || {
            let (mut conn, mut reused) = match idle {
                Some(c) if !c.client.is_closed() => (c, true),
                _ => match Connection::open(&settings) {
                    Ok(c) => (c, false),
                    Err(e) => return (None, Err(settings.name_in(e))),
                },
            };
            let result = loop {
                let mut begun = false;
                let result = run_with_retries(&mut conn, &f, &local, &counters, &mut begun);
                // A connection kept from before the database went away (or
                // restarted) fails at its first statement, so the write
                // never began: it runs once more on a new connection,
                // instead of failing a request after the database is back.
                if reused && !begun && lost_connection(&conn.client, &result) {
                    drop_idle(&pool);
                    conn = match Connection::open(&settings) {
                        Ok(c) => c,
                        Err(e) => return (None, Err(settings.name_in(e))),
                    };
                    reused = false;
                    continue;
                }
                break result;
            };
            let result = result.map(|(value, events)| {
                counters.writes.fetch_add(1, Ordering::Relaxed);
                counters.events.fetch_add(events, Ordering::Relaxed);
                value
            });
            if lost_connection(&conn.client, &result) {
                drop_idle(&pool);
                return (None, result);
            }
            (Some(conn), result)
        })
        .await
        .map_err(|e| StoreError::backend(format!("write task: {e}")))?;
        if let Some(client) = client {
            self.idle
                .lock()
                .map_err(|_| StoreError::closed())?
                .push(client);
        }
        result
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

impl Connection {
    fn open(settings: &Settings) -> StoreResult<Connection> {
        Ok(Connection {
            client: settings.connect()?,
            statements: Statements::new(),
        })
    }
}

impl Drop for WritePool {
    fn drop(&mut self) {
        close_off_runtime(&self.idle);
    }
}
