//! Writes on PostgreSQL, committed in groups: a few writer threads, each
//! with a connection of its own, take every write that is waiting (up to
//! `max_batch`) and run them in one transaction, so a commit (its round
//! trips, its log flush, its `NOTIFY`) is shared by the whole group. A
//! caller is answered after the commit: an answer means durable. Other
//! nodes write at the same time anyway; several threads here keep the
//! database busy while one of them waits for its flush.
//!
//! A write that fails must not take its group with it. PostgreSQL aborts
//! a transaction at its first error, and a savepoint per write would cost
//! every write two more round trips; writes almost never fail, so a group
//! first runs as one transaction, and when any write in it fails, it is
//! rolled back and each of its writes runs again alone, in a transaction of
//! its own (as every write did before group commit). Writes are therefore
//! `Fn`: only their last run counts.
//!
//! A write alone that loses a race to a concurrent one (serialization
//! failure, deadlock, a unique violation where its check did not see the
//! winner) is rolled back and run again from the start, where it sees the
//! winner; the engine acts only through its transaction, so that is
//! always safe.
//!
//! A transaction that stored events notifies the commit stream's channel
//! once, with its commit, and notes its transaction as this node's (`tail`
//! publishes the events once they have settled).

use super::Settings;
use super::error::is_retryable;
use super::tail::{CHANNEL, LocalTransactions};
use super::tx::{PgTx, Statements};
use crate::engine;
use crate::{StoreError, StoreResult};
use ::postgres::Client;
use posthorn_core::{DeliveryId, TenantId};
use std::collections::{BTreeMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// Runs of one write alone before its last failure is the answer.
const ATTEMPTS: u32 = 8;

#[derive(Debug, Default)]
pub(crate) struct WriteCounters {
    /// Transactions committed.
    pub commits: AtomicU64,
    /// Writes committed in them.
    pub writes: AtomicU64,
    pub events: AtomicU64,
    /// Groups rolled back because one of their writes failed, their
    /// writes then run alone.
    pub split_groups: AtomicU64,
    /// Writes run again alone after losing a race.
    pub retries: AtomicU64,
}

/// A caller's write waiting for its group.
trait Job: Send {
    /// Runs the write in `tx`, keeping its value; its error if it failed.
    /// Called again if its group is split: the last run counts.
    fn run(&mut self, tx: &mut dyn engine::WriteTx) -> StoreResult<()>;
    /// Answers the caller once its transaction has `committed` (or not).
    fn answer(self: Box<Self>, committed: StoreResult<()>);
    /// Whether it must run in a transaction of its own.
    fn alone(&self) -> bool;
    /// What it is about to read, for its group to read ahead.
    fn read_ahead(&self) -> Option<&ReadAhead>;
}

/// What a write of one tenant is about to read and lock: a group reads it
/// for all its writes at once, a statement per kind and tenant, instead of
/// a round trip or two per write (see `WriteTx::prefetch_deliveries` and
/// `WriteTx::prefetch_recipients`).
pub(crate) struct ReadAhead {
    pub tenant: TenantId,
    /// Deliveries whose events it records.
    pub deliveries: Vec<DeliveryId>,
    /// Recipients it admits (an accepted message's).
    pub recipients: Vec<String>,
}

struct Write<F, T> {
    f: F,
    alone: bool,
    read_ahead: Option<ReadAhead>,
    result: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<F, T> Job for Write<F, T>
where
    F: Fn(&mut dyn engine::WriteTx) -> StoreResult<T> + Send,
    T: Send,
{
    fn run(&mut self, tx: &mut dyn engine::WriteTx) -> StoreResult<()> {
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| (self.f)(tx)))
            .unwrap_or_else(|_| Err(StoreError::backend("a write panicked")));
        let outcome = match &result {
            Ok(_) => Ok(()),
            Err(e) => Err(e.clone()),
        };
        self.result = Some(result);
        outcome
    }

    fn answer(self: Box<Self>, committed: StoreResult<()>) {
        let result = self
            .result
            .unwrap_or_else(|| Err(StoreError::backend("a write never ran")));
        let _ = self.reply.send(committed.and(result));
    }

    fn alone(&self) -> bool {
        self.alone
    }

    fn read_ahead(&self) -> Option<&ReadAhead> {
        self.read_ahead.as_ref()
    }
}

/// The writes waiting for a writer thread.
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<Box<dyn Job>>,
    closed: bool,
}

impl Queue {
    fn push(&self, job: Box<dyn Job>) -> StoreResult<()> {
        let mut state = self.state.lock().map_err(|_| StoreError::closed())?;
        if state.closed {
            return Err(StoreError::closed());
        }
        state.jobs.push_back(job);
        drop(state);
        self.ready.notify_one();
        Ok(())
    }

    /// Up to `max` waiting writes, waiting for one; `None` once closed.
    fn take(&self, max: usize) -> Option<Vec<Box<dyn Job>>> {
        let mut state = self.state.lock().ok()?;
        while state.jobs.is_empty() && !state.closed {
            state = self.ready.wait(state).ok()?;
        }
        if state.jobs.is_empty() {
            return None;
        }
        let n = state.jobs.len().min(max);
        Some(state.jobs.drain(..n).collect())
    }

    fn close(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.closed = true;
        }
        self.ready.notify_all();
    }
}

pub(crate) struct WritePool {
    queue: Arc<Queue>,
    pub counters: Arc<WriteCounters>,
}

impl WritePool {
    /// Starts `threads` writer threads; each connects when it first has
    /// work (and again after losing its connection).
    pub(crate) fn new(
        settings: Arc<Settings>,
        threads: usize,
        max_batch: usize,
        local: Arc<LocalTransactions>,
    ) -> Self {
        let queue = Arc::new(Queue::default());
        let counters = Arc::new(WriteCounters::default());
        for n in 0..threads.max(1) {
            let writer = Writer {
                settings: settings.clone(),
                connection: None,
                local: local.clone(),
                counters: counters.clone(),
            };
            let queue = queue.clone();
            let max_batch = max_batch.max(1);
            // A thread that cannot start leaves the others to do the work.
            let _ = std::thread::Builder::new()
                .name(format!("posthorn-pg-writer-{n}"))
                .spawn(move || writer.run(&queue, max_batch));
        }
        Self { queue, counters }
    }

    /// Runs `f` in a transaction (shared with other waiting writes) and
    /// returns its result once committed.
    pub(crate) async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&mut dyn engine::WriteTx) -> StoreResult<T> + Send + 'static,
    {
        self.push(f, false, None).await
    }

    /// As [`WritePool::write`], for a write that says what it will read:
    /// its group reads that ahead for all its writes at once.
    pub(crate) async fn write_reading_ahead<T, F>(&self, ahead: ReadAhead, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&mut dyn engine::WriteTx) -> StoreResult<T> + Send + 'static,
    {
        self.push(f, false, Some(ahead)).await
    }

    /// Runs `f` in a transaction of its own: for the writes that lock
    /// many rows at once (a claim, a batch of attempts), which in a group
    /// would hold their locks for the whole group, and meet the locks of
    /// the other thread's group in any order (a deadlock, found only after
    /// `deadlock_timeout`).
    pub(crate) async fn write_alone<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&mut dyn engine::WriteTx) -> StoreResult<T> + Send + 'static,
    {
        self.push(f, true, None).await
    }

    async fn push<T, F>(&self, f: F, alone: bool, read_ahead: Option<ReadAhead>) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&mut dyn engine::WriteTx) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.queue.push(Box::new(Write {
            f,
            alone,
            read_ahead,
            result: None,
            reply,
        }))?;
        answer.await.map_err(|_| StoreError::closed())?
    }
}

impl Drop for WritePool {
    /// The threads finish the writes already waiting, then end.
    fn drop(&mut self) {
        self.queue.close();
    }
}

/// One writer thread's state.
struct Writer {
    settings: Arc<Settings>,
    connection: Option<Connection>,
    local: Arc<LocalTransactions>,
    counters: Arc<WriteCounters>,
}

/// Events a committed transaction stored.
type Written = u64;

impl Writer {
    fn run(mut self, queue: &Queue, max_batch: usize) {
        while let Some(jobs) = queue.take(max_batch) {
            self.run_group(jobs);
        }
    }

    fn run_group(&mut self, jobs: Vec<Box<dyn Job>>) {
        let (alone, grouped): (Vec<_>, Vec<_>) = jobs.into_iter().partition(|j| j.alone());
        self.run_together(grouped);
        self.run_each_alone(alone);
    }

    fn run_together(&mut self, mut jobs: Vec<Box<dyn Job>>) {
        if jobs.len() > 1 {
            match self.with_connection(|conn, local| commit_group(conn, &mut jobs, local)) {
                Ok(written) => {
                    self.counted(jobs.len(), written);
                    for job in jobs {
                        job.answer(Ok(()));
                    }
                    return;
                }
                // A connection that cannot be had fails every write now;
                // the next group connects again.
                Err(e) if self.connection.is_none() => {
                    for job in jobs {
                        job.answer(Err(e.clone()));
                    }
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = ?e, writes = jobs.len(), "a group failed; its writes run alone");
                    self.counters.split_groups.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.run_each_alone(jobs);
    }

    /// Each write in a transaction of its own: first with its rows written
    /// behind (a claim or a batch of attempts then costs a few statements,
    /// not a few per delivery); if that fails, rolled back and run plainly,
    /// with retries, as a group's writes are when it is split.
    fn run_each_alone(&mut self, jobs: Vec<Box<dyn Job>>) {
        let counters = self.counters.clone();
        for mut job in jobs {
            let committed = self.with_connection(|conn, local| {
                match commit(conn, local, Mode::Behind, Plans::PerRun, |tx| job.run(tx)) {
                    Err(Failed::Later(e)) => {
                        tracing::debug!(error = ?e, "a write failed written behind; it runs plainly");
                        counters.split_groups.fetch_add(1, Ordering::Relaxed);
                        commit_alone(conn, job.as_mut(), local, &counters)
                    }
                    other => other,
                }
            });
            if let Ok(written) = committed {
                self.counted(1, written);
            }
            job.answer(committed.map(|_| ()));
        }
    }

    fn counted(&self, writes: usize, events: Written) {
        self.counters.commits.fetch_add(1, Ordering::Relaxed);
        self.counters
            .writes
            .fetch_add(writes as u64, Ordering::Relaxed);
        self.counters.events.fetch_add(events, Ordering::Relaxed);
    }

    /// Runs `work` on this thread's connection, connecting first if it has
    /// none. A connection that broke is dropped, and work that failed on a
    /// connection kept from before an outage without taking effect (at
    /// `BEGIN`) runs once more on a new one: the first write after the
    /// database returns succeeds.
    fn with_connection<T>(
        &mut self,
        mut work: impl FnMut(&mut Connection, &LocalTransactions) -> Result<T, Failed>,
    ) -> StoreResult<T> {
        let mut reused = self.connection.is_some();
        loop {
            if self.connection.is_none() {
                let connection =
                    Connection::open(&self.settings).map_err(|e| self.settings.name_in(e))?;
                self.connection = Some(connection);
            }
            let Some(conn) = self.connection.as_mut() else {
                return Err(StoreError::closed());
            };
            let result = work(conn, &self.local);
            if conn.client.is_closed() {
                self.connection = None;
                if let Err(Failed::AtBegin(_)) = &result
                    && reused
                {
                    reused = false;
                    continue;
                }
            }
            return result.map_err(Failed::into_error);
        }
    }
}

/// How a transaction failed: at its `BEGIN` (nothing took effect), or
/// later.
enum Failed {
    AtBegin(StoreError),
    Later(StoreError),
}

impl Failed {
    fn into_error(self) -> StoreError {
        match self {
            Failed::AtBegin(e) | Failed::Later(e) => e,
        }
    }
}

impl From<StoreError> for Failed {
    fn from(e: StoreError) -> Self {
        Failed::Later(e)
    }
}

impl From<::postgres::Error> for Failed {
    fn from(e: ::postgres::Error) -> Self {
        Failed::Later(e.into())
    }
}

/// Runs every write of a group in one transaction and commits it; the
/// first failure rolls the whole group back.
fn commit_group(
    conn: &mut Connection,
    jobs: &mut [Box<dyn Job>],
    local: &LocalTransactions,
) -> Result<Written, Failed> {
    commit(conn, local, Mode::Behind, Plans::Kept, |tx| {
        read_ahead(tx, jobs)?;
        for job in jobs.iter_mut() {
            job.run(tx)?;
        }
        Ok(())
    })
}

/// Reads ahead what the group's writes said they will read, tenant by
/// tenant: deliveries first, then contacts, the order every write locks
/// them in.
fn read_ahead(tx: &mut dyn engine::WriteTx, jobs: &[Box<dyn Job>]) -> StoreResult<()> {
    let mut by_tenant: BTreeMap<&TenantId, (Vec<&DeliveryId>, Vec<&str>)> = BTreeMap::new();
    for ahead in jobs.iter().filter_map(|j| j.read_ahead()) {
        let (deliveries, recipients) = by_tenant.entry(&ahead.tenant).or_default();
        deliveries.extend(&ahead.deliveries);
        recipients.extend(ahead.recipients.iter().map(String::as_str));
    }
    for (tenant, (deliveries, mut recipients)) in by_tenant {
        if !deliveries.is_empty() {
            let deliveries: Vec<DeliveryId> = deliveries.into_iter().cloned().collect();
            tx.prefetch_deliveries(tenant, &deliveries)?;
        }
        if !recipients.is_empty() {
            recipients.sort_unstable();
            recipients.dedup();
            tx.prefetch_recipients(tenant, &recipients)?;
        }
    }
    Ok(())
}

/// Runs one write in a transaction of its own until it commits, fails for
/// good or runs out of attempts.
fn commit_alone(
    conn: &mut Connection,
    job: &mut dyn Job,
    local: &LocalTransactions,
    counters: &WriteCounters,
) -> Result<Written, Failed> {
    let mut attempt = 1;
    loop {
        match commit(conn, local, Mode::Plain, Plans::PerRun, |tx| job.run(tx)) {
            Err(Failed::Later(e)) if attempt < ATTEMPTS && is_retryable(&e) => {
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

/// Whether a transaction writes rows behind (see `behind`) or runs every
/// statement at once (the exact path a failed write is run again on).
enum Mode {
    Behind,
    Plain,
}

/// Whether a transaction's statements run the plans kept with them, or are
/// planned for each run.
///
/// A write alone is a claim or a batch of attempts: a few statements over
/// arrays of hundreds of keys (`UPDATE ... FROM unnest`, `DELETE ... USING
/// unnest`), whose best plan depends on the batch's size and the tables'.
/// A prepared statement's generic plan is made at about its sixth run and
/// kept (see `reads::Statements`); on a new database that was a sequential
/// scan of a then tiny table, and delivery fell to a third while the table
/// grew. A plan per run (from the tables' sizes on disk then) costs a
/// fraction of a millisecond per statement and one round trip per
/// transaction. A group's writes are mostly lookups by key, whose plan
/// never changes, so they keep theirs.
enum Plans {
    Kept,
    PerRun,
}

/// Begins a transaction, runs `body` in it and commits, notifying the
/// commit stream when events were stored.
fn commit(
    conn: &mut Connection,
    local: &LocalTransactions,
    mode: Mode,
    plans: Plans,
    body: impl FnOnce(&mut dyn engine::WriteTx) -> StoreResult<()>,
) -> Result<Written, Failed> {
    let mut tx = conn
        .client
        .transaction()
        .map_err(|e| Failed::AtBegin(e.into()))?;
    if let Plans::PerRun = plans {
        tx.batch_execute("SET LOCAL plan_cache_mode = force_custom_plan")?;
    }
    let mut pg = match mode {
        Mode::Behind => PgTx::writing_behind(&mut tx, &mut conn.statements),
        Mode::Plain => PgTx::new(&mut tx, &mut conn.statements),
    };
    body(&mut pg)?;
    pg.finish()?;
    let (written, xid) = (pg.events_stored(), pg.xid());
    if let Some(xid) = xid {
        local.note(xid);
        // Delivered with the commit, and only if it commits.
        tx.execute(&format!("NOTIFY {CHANNEL}"), &[])?;
    }
    // Dropping an uncommitted transaction (on an error above) rolls it back.
    tx.commit()?;
    Ok(written)
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
