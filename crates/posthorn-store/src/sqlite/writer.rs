//! The one writer: a thread that owns the write connection, takes jobs from a
//! channel and commits every job that is waiting in one transaction (group
//! commit). A caller is answered only after the commit, so an answer means
//! "durable".
//!
//! A job that fails must not take its batch with it. A savepoint per job
//! would isolate it, but costs every job a copy of each page it touches
//! (without them, HTTP submissions went from ~11.5k to ~19k/s). So a batch
//! first runs without savepoints, and jobs almost never fail; when one does,
//! the batch is rolled back and run again with a savepoint around each job,
//! so the failed job is undone alone and the others commit. Jobs are
//! therefore `Fn`: they may run twice, and only their last run counts.
//!
//! On a full disk (SQLITE_FULL) or an I/O error SQLite may roll the whole
//! transaction back by itself. Then nothing of the batch is kept, no job may
//! run after it (outside a transaction each statement would commit alone),
//! and every caller gets that error: a full disk is answered 503 or
//! 452 and is retried once space returns. The writer checks for this with
//! `is_autocommit` after each job (a flag read, nothing on the disk).
//!
//! Jobs run in a [`BatchTx`]: the connection, plus the events the batch has
//! written. Each event gets its sequence number there, in the order the
//! single writer writes them, so `seq` order is commit order. After the
//! commit the batch's events are published once on the [`CommitFeed`],
//! before any caller is answered.

use super::checkpoint::{RestartRequest, finish_log};
use crate::feed::CommitFeed;
use crate::{DomainStatsChange, EventRecord, StatsChange, StoreError, StoreResult};
use posthorn_core::TenantId;
use rusqlite::Connection;
use std::cell::{Cell, RefCell};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot};

/// The transaction a write runs in: the connection (which it derefs to)
/// and the events written so far in this batch.
pub(crate) struct BatchTx<'c> {
    conn: &'c Connection,
    /// The last sequence number given to an event (committed or not).
    last_seq: Cell<i64>,
    written: RefCell<Vec<Arc<EventRecord>>>,
    /// Changes to the statistics' counts made by the batch's writes, added
    /// up and written once before the commit: a batch of deliveries changes
    /// a few counts many times.
    stats: RefCell<PendingStats>,
}

#[derive(Default)]
struct PendingStats {
    changes: Vec<(TenantId, StatsChange)>,
    domains: Vec<(TenantId, DomainStatsChange)>,
}

/// How much a batch had noted before a write: what to forget when the
/// write is rolled back.
#[derive(Debug, Clone, Copy, Default)]
struct Noted {
    events: usize,
    changes: usize,
    domains: usize,
}

impl std::ops::Deref for BatchTx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl<'c> BatchTx<'c> {
    fn new(conn: &'c Connection, last_seq: i64) -> Self {
        Self {
            conn,
            last_seq: Cell::new(last_seq),
            written: RefCell::default(),
            stats: RefCell::default(),
        }
    }

    /// The sequence number for the next event this transaction stores.
    /// Numbers of writes that are rolled back are not given again (gaps
    /// are allowed; going backwards is not).
    pub(crate) fn next_event_seq(&self) -> i64 {
        let seq = self.last_seq.get() + 1;
        self.last_seq.set(seq);
        seq
    }

    /// Notes an event stored in this transaction, to publish at its commit.
    pub(crate) fn stored(&self, event: Arc<EventRecord>) {
        self.written.borrow_mut().push(event);
    }

    fn noted(&self) -> Noted {
        let stats = self.stats.borrow();
        Noted {
            events: self.written.borrow().len(),
            changes: stats.changes.len(),
            domains: stats.domains.len(),
        }
    }

    /// Forgets the events and count changes noted after `noted` (their
    /// writes were rolled back).
    fn forget_after(&self, noted: Noted) {
        self.written.borrow_mut().truncate(noted.events);
        let mut stats = self.stats.borrow_mut();
        stats.changes.truncate(noted.changes);
        stats.domains.truncate(noted.domains);
    }

    /// Notes changes to the statistics' counts, written before the commit.
    pub(crate) fn note_stats(
        &self,
        tenant: &TenantId,
        changes: &[StatsChange],
        domains: &[DomainStatsChange],
    ) {
        let mut stats = self.stats.borrow_mut();
        stats
            .changes
            .extend(changes.iter().map(|c| (tenant.clone(), c.clone())));
        stats
            .domains
            .extend(domains.iter().map(|c| (tenant.clone(), c.clone())));
    }

    /// Writes the noted count changes, added up per count.
    fn write_stats(&self) -> StoreResult<()> {
        let pending = std::mem::take(&mut *self.stats.borrow_mut());
        let mut tally = crate::engine::stats::Tally::default();
        for (tenant, c) in &pending.changes {
            tally.add(tenant, std::slice::from_ref(c), &[]);
        }
        for (tenant, c) in &pending.domains {
            tally.add(tenant, &[], std::slice::from_ref(c));
        }
        for (tenant, (changes, domains)) in tally.into_changes() {
            super::tx::add_stats(self.conn, &tenant, &changes, &domains)?;
        }
        Ok(())
    }

    /// Keeps the last sequence number given, in the same transaction, so
    /// the next start goes on from it.
    fn save_sequence(&self, saved: i64) -> StoreResult<()> {
        let last = self.last_seq.get();
        if last != saved {
            self.conn
                .prepare_cached("UPDATE event_sequence SET last = $1")?
                .execute([last])?;
        }
        Ok(())
    }
}

/// The last event sequence number kept in the database.
pub(crate) fn saved_sequence(conn: &Connection) -> StoreResult<i64> {
    Ok(conn.query_row("SELECT last FROM event_sequence", [], |r| r.get(0))?)
}

/// A caller's write waiting for its batch.
trait Job: Send {
    /// Runs the write in the transaction; its error if it failed.
    /// Called again if its batch is replayed: the last run's result counts.
    fn run(&mut self, tx: &BatchTx<'_>) -> StoreResult<()>;
    /// Answers the caller once the batch's commit has `committed` (or not).
    fn answer(self: Box<Self>, committed: StoreResult<()>);
}

struct Write<F, T> {
    f: F,
    result: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<F, T> Job for Write<F, T>
where
    F: Fn(&BatchTx<'_>) -> StoreResult<T> + Send,
    T: Send,
{
    fn run(&mut self, tx: &BatchTx<'_>) -> StoreResult<()> {
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
}

#[derive(Debug, Default)]
pub(crate) struct WriterCounters {
    pub batches: AtomicU64,
    pub writes: AtomicU64,
    /// Events committed.
    pub events: AtomicU64,
    /// Batches rolled back and run again because a job failed.
    pub replays: AtomicU64,
}

#[derive(Clone)]
pub(crate) struct Writer {
    jobs: mpsc::Sender<Box<dyn Job>>,
    pub counters: Arc<WriterCounters>,
}

impl Writer {
    /// Starts the writer thread on `conn`, publishing committed events on
    /// `feed`. It stops when every `Writer` clone is dropped, after
    /// finishing the jobs already sent.
    pub fn start(
        conn: Connection,
        max_batch: usize,
        restart: RestartRequest,
        feed: Arc<CommitFeed>,
    ) -> StoreResult<Self> {
        let last_seq = saved_sequence(&conn)?;
        // Bounded, so that a flood of writers waits instead of growing memory.
        let (tx, rx) = mpsc::channel::<Box<dyn Job>>(max_batch.max(1) * 4);
        let counters = Arc::new(WriterCounters::default());
        let thread_counters = counters.clone();
        let thread = WriterThread {
            conn,
            last_seq,
            max_batch: max_batch.max(1),
            counters: thread_counters,
            restart,
            feed,
        };
        std::thread::Builder::new()
            .name("posthorn-writer".into())
            .spawn(move || thread.run(rx))
            .expect("spawning the writer thread");
        Ok(Self { jobs: tx, counters })
    }

    /// Runs `f` in the next batch and returns its result once committed.
    /// `f` may run more than once (see the module's comment): it must act
    /// only through the connection.
    pub async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&BatchTx<'_>) -> StoreResult<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel::<StoreResult<T>>();
        let job = Box::new(Write {
            f,
            result: None,
            reply,
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| StoreError::closed())?;
        rx.await.map_err(|_| StoreError::closed())?
    }
}

struct WriterThread {
    conn: Connection,
    /// The last event sequence number committed.
    last_seq: i64,
    max_batch: usize,
    counters: Arc<WriterCounters>,
    restart: RestartRequest,
    feed: Arc<CommitFeed>,
}

impl WriterThread {
    fn run(mut self, mut rx: mpsc::Receiver<Box<dyn Job>>) {
        // Writes in flight when the last batch committed: what it took plus
        // what was left waiting. Unknown at first, so no split.
        let mut in_flight = self.max_batch;
        while let Some(first) = rx.blocking_recv() {
            let cap = batch_cap(in_flight, self.max_batch);
            let tx = BatchTx::new(&self.conn, self.last_seq);
            let (jobs, commit) = commit_batch(&tx, first, &mut rx, cap, &self.counters);
            in_flight = jobs.len() + rx.len();
            if commit.is_ok() {
                self.last_seq = tx.last_seq.get();
                // Counted and published before answering, so a caller
                // never sees stats or a feed without its write.
                self.counters.batches.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .writes
                    .fetch_add(jobs.len() as u64, Ordering::Relaxed);
                let events = tx.written.take();
                self.counters
                    .events
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                self.feed.publish(events, crate::Origin::ThisNode);
            }
            for job in jobs {
                job.answer(commit.clone());
            }
            // Outside any transaction, while the answered callers send more.
            if self.restart.swap(false, Ordering::Relaxed) {
                finish_log(&self.conn);
            }
        }
    }
}

/// Batches are split only between these numbers of writes in flight.
/// Below, group commit matters more than overlap (a split costs one more
/// fsync per round); above, the writer itself is the bottleneck, callers
/// queue faster than it commits, and a split only adds commits (measured:
/// 256 writers lost 20-30 % with batches of 128 instead of 254).
const SPLIT_FROM: usize = 32;
const SPLIT_UP_TO: usize = 128;

/// How many writes the next batch may take. With a moderate number in
/// flight, half of them: taking them all made every caller wait for the
/// same commit and then send its next write at the same moment while the
/// writer sat idle; with half, one half's callers prepare their next writes
/// while the other half's commit. Measured on the tracker at 64
/// connections: +10-15 % hits/s (docs/benchmarks.md).
fn batch_cap(in_flight: usize, max_batch: usize) -> usize {
    if (SPLIT_FROM..=SPLIT_UP_TO).contains(&in_flight) {
        (in_flight / 2).min(max_batch)
    } else {
        max_batch
    }
}

/// Runs `first` and then every job that is waiting, or arrives while the
/// batch runs, up to `max_batch`, in one transaction. Jobs that arrive while
/// earlier ones execute join the batch instead of waiting for its commit:
/// the commit (and its fsync) comes once the channel is empty, so the batch
/// grows to the number of callers in flight. Returns the batch's jobs, to
/// answer, and the commit's result.
fn commit_batch(
    tx: &BatchTx<'_>,
    first: Box<dyn Job>,
    rx: &mut mpsc::Receiver<Box<dyn Job>>,
    max_batch: usize,
    counters: &WriterCounters,
) -> (Vec<Box<dyn Job>>, StoreResult<()>) {
    let conn: &Connection = tx;
    let saved_seq = tx.last_seq.get();
    let mut jobs = Vec::with_capacity(max_batch.min(1024));
    jobs.push(first);
    if let Err(e) = begin(conn) {
        return (jobs, Err(e));
    }
    let mut all_ran = true;
    let mut next = 0;
    while next < jobs.len() {
        if jobs[next].run(tx).is_err() || conn.is_autocommit() {
            all_ran = false;
            break;
        }
        next += 1;
        if next == jobs.len() && jobs.len() < max_batch {
            jobs.extend(rx.try_recv().ok());
        }
    }
    if !all_ran {
        // Undo the batch and run it again, each job in its own savepoint.
        counters.replays.fetch_add(1, Ordering::Relaxed);
        tx.forget_after(Noted::default());
        tx.last_seq.set(saved_seq);
        let restarted = rollback(conn).and_then(|()| begin(conn));
        if let Err(e) = restarted {
            return (jobs, Err(e));
        }
        if let Err(e) = replay_in_savepoints(tx, &mut jobs) {
            return (jobs, Err(e));
        }
    }
    let commit = tx
        .write_stats()
        .and_then(|()| tx.save_sequence(saved_seq))
        .and_then(|()| conn.execute_batch("COMMIT").map_err(StoreError::from));
    if commit.is_err() {
        let _ = rollback(conn);
    }
    (jobs, commit)
}

/// Rolls back the open transaction, if SQLite has not already: after some
/// errors (a full disk, an I/O error) it rolls the whole transaction back
/// itself, and a ROLLBACK would fail.
fn rollback(conn: &Connection) -> StoreResult<()> {
    if conn.is_autocommit() {
        return Ok(());
    }
    conn.execute_batch("ROLLBACK").map_err(StoreError::from)
}

fn begin(conn: &Connection) -> StoreResult<()> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| {
        // No job's writes can be kept; each caller is answered with this.
        tracing::error!(error = %e, "could not begin a write transaction");
        StoreError::from(e)
    })
}

/// Runs every job of the (rolled back) batch again, each in a savepoint that
/// is rolled back if the job fails, so only the failed jobs' writes are lost.
///
/// An error when SQLite rolled the whole transaction back itself (it may,
/// on a full disk or an I/O error): the jobs before are undone too, and the
/// jobs after must not run outside a transaction, where each statement would
/// commit on its own. The batch then fails as a whole, with that error.
fn replay_in_savepoints(tx: &BatchTx<'_>, jobs: &mut [Box<dyn Job>]) -> StoreResult<()> {
    let conn: &Connection = tx;
    // Cached statements: these run twice per job.
    let run = |sql: &str| {
        conn.prepare_cached(sql)
            .and_then(|mut s| s.execute([]).map(|_| ()))
    };
    for job in jobs {
        let savepoint = run("SAVEPOINT job");
        let noted_before = tx.noted();
        let ran = job.run(tx);
        if conn.is_autocommit() {
            tracing::error!(error = ?ran.as_ref().err(), "SQLite rolled back a whole batch");
            return Err(ran
                .err()
                .unwrap_or_else(|| StoreError::backend("the transaction ended inside a write")));
        }
        let ok = ran.is_ok();
        let end = if ok && savepoint.is_ok() {
            run("RELEASE job")
        } else {
            tx.forget_after(noted_before);
            run("ROLLBACK TO job").and_then(|()| run("RELEASE job"))
        };
        if let Err(e) = end {
            tracing::error!(error = %e, "closing a savepoint failed");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    type Reply = oneshot::Receiver<StoreResult<()>>;

    fn job(f: impl Fn(&Connection) -> StoreResult<()> + Send + 'static) -> (Box<dyn Job>, Reply) {
        let (reply, rx) = oneshot::channel();
        let job = Write {
            f: move |tx: &BatchTx<'_>| f(tx),
            result: None,
            reply,
        };
        (Box::new(job), rx)
    }

    fn insert(value: i64) -> impl Fn(&Connection) -> StoreResult<()> + Send + 'static {
        move |c| {
            c.execute("INSERT INTO t (x) VALUES (?1)", [value])?;
            Ok(())
        }
    }

    fn table() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
        conn
    }

    fn values(conn: &Connection) -> Vec<i64> {
        let mut stmt = conn.prepare("SELECT x FROM t ORDER BY x").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// A channel holding `jobs`, as the writer finds them.
    fn queue(jobs: Vec<Box<dyn Job>>) -> mpsc::Receiver<Box<dyn Job>> {
        let (tx, rx) = mpsc::channel(16);
        for j in jobs {
            assert!(tx.try_send(j).is_ok());
        }
        rx
    }

    /// Runs the next batch from `rx` and answers its jobs; returns its size
    /// and the commit's result.
    fn next_batch(
        conn: &Connection,
        rx: &mut mpsc::Receiver<Box<dyn Job>>,
        counters: &WriterCounters,
    ) -> (usize, StoreResult<()>) {
        let first = rx.try_recv().expect("a write waits");
        let (ran, commit) = commit_batch(&BatchTx::new(conn, 0), first, rx, 1024, counters);
        let size = ran.len();
        for j in ran {
            j.answer(commit.clone());
        }
        (size, commit)
    }

    /// Runs `jobs` as one batch (as far as they go in one).
    fn batch(
        conn: &Connection,
        jobs: Vec<Box<dyn Job>>,
        counters: &WriterCounters,
    ) -> (usize, StoreResult<()>) {
        next_batch(conn, &mut queue(jobs), counters)
    }

    #[test]
    fn a_batch_takes_half_of_a_moderate_number_of_writes_in_flight() {
        // Few: group commit first; many: the writer is the bottleneck.
        assert_eq!(batch_cap(8, 1024), 1024);
        assert_eq!(batch_cap(31, 1024), 1024);
        assert_eq!(batch_cap(256, 1024), 1024);
        // In between: half, so the two halves overlap.
        assert_eq!(batch_cap(32, 1024), 16);
        assert_eq!(batch_cap(64, 1024), 32);
        assert_eq!(batch_cap(128, 1024), 64);
        // Never above the configured maximum.
        assert_eq!(batch_cap(64, 10), 10);
        assert_eq!(batch_cap(500, 10), 10);
    }

    #[test]
    fn a_batch_whose_writes_all_succeed_runs_each_once_without_replay() {
        let conn = table();
        let counters = WriterCounters::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let mut jobs = Vec::new();
        let mut replies = Vec::new();
        for value in 1..=3 {
            let runs = runs.clone();
            let write = insert(value);
            let (j, r) = job(move |c| {
                runs.fetch_add(1, Ordering::Relaxed);
                write(c)
            });
            jobs.push(j);
            replies.push(r);
        }
        let (size, commit) = batch(&conn, jobs, &counters);
        assert!(commit.is_ok());
        assert_eq!(size, 3);
        assert_eq!(runs.load(Ordering::Relaxed), 3);
        assert_eq!(counters.replays.load(Ordering::Relaxed), 0);
        for mut r in replies {
            assert!(r.try_recv().unwrap().is_ok());
        }
        assert_eq!(values(&conn), [1, 2, 3]);
    }

    #[test]
    fn a_failed_write_is_undone_alone_and_its_batch_commits() {
        let conn = table();
        let counters = WriterCounters::default();
        let (a, mut ra) = job(insert(1));
        // Writes a row, then fails: the row must not survive.
        let (b, mut rb) = job(|c| {
            insert(2)(c)?;
            Err(StoreError::backend("refused"))
        });
        let (size, commit) = batch(&conn, vec![a, b], &counters);
        assert!(commit.is_ok());
        assert_eq!(size, 2);
        assert_eq!(counters.replays.load(Ordering::Relaxed), 1);
        assert!(ra.try_recv().unwrap().is_ok());
        assert!(
            matches!(rb.try_recv().unwrap(), Err(StoreError::Backend(m)) if m.to_string() == "refused")
        );
        assert_eq!(values(&conn), [1]);
    }

    /// A write that notes the event it stored, as `writes::apply_event` does.
    fn store_event(tx: &BatchTx<'_>) -> StoreResult<()> {
        let seq = tx.next_event_seq();
        tx.execute("INSERT INTO t (x) VALUES (?1)", [seq])?;
        tx.stored(Arc::new(EventRecord {
            seq,
            id: posthorn_core::EventId::generate(),
            delivery_id: posthorn_core::DeliveryId::generate(),
            message_id: posthorn_core::MessageId::generate(),
            recipient: String::new(),
            sender: String::new(),
            occurred_at: 0,
            recorded_at: 0,
            source: posthorn_core::EventSource::Tracker,
            details: posthorn_core::event::EventDetails::Opened(Default::default()),
            external_id: None,
            anomaly: None,
            outside_window: false,
        }));
        Ok(())
    }

    fn event_job(
        f: impl Fn(&BatchTx<'_>) -> StoreResult<()> + Send + 'static,
    ) -> (Box<dyn Job>, Reply) {
        let (reply, rx) = oneshot::channel();
        (
            Box::new(Write {
                f,
                result: None,
                reply,
            }),
            rx,
        )
    }

    /// Only committed events are published: those of a write that failed
    /// (and was undone in its savepoint) are not, and no number is given
    /// twice or goes backwards.
    #[test]
    fn events_of_an_undone_write_are_not_published() {
        let conn = table();
        conn.execute_batch("CREATE TABLE event_sequence (last INTEGER NOT NULL); INSERT INTO event_sequence VALUES (7);")
            .unwrap();
        let counters = WriterCounters::default();
        let (a, _ra) = event_job(store_event);
        let (b, _rb) = event_job(|tx| {
            store_event(tx)?;
            Err(StoreError::backend("refused"))
        });
        let tx = BatchTx::new(&conn, saved_sequence(&conn).unwrap());
        let (_, commit) = commit_batch(&tx, a, &mut queue(vec![b]), 1024, &counters);
        assert!(commit.is_ok());
        assert_eq!(counters.replays.load(Ordering::Relaxed), 1);
        let published: Vec<i64> = tx.written.take().iter().map(|e| e.seq).collect();
        // The replay numbers again from the batch's start (8); b's number
        // (9) is lost with b.
        assert_eq!(published, [8]);
        assert_eq!(values(&conn), [8]);

        // The next batch goes on after every number given, from the database.
        let (c, _rc) = event_job(store_event);
        let tx = BatchTx::new(&conn, saved_sequence(&conn).unwrap());
        let (_, commit) = commit_batch(&tx, c, &mut queue(vec![]), 1024, &counters);
        assert!(commit.is_ok());
        let published: Vec<i64> = tx.written.take().iter().map(|e| e.seq).collect();
        assert_eq!(published, [10]);
        assert_eq!(values(&conn), [8, 10]);
        assert_eq!(saved_sequence(&conn).unwrap(), 10);
    }

    #[test]
    fn a_panicking_write_is_answered_with_an_error_and_the_others_commit() {
        let conn = table();
        let counters = WriterCounters::default();
        let (a, mut ra) = job(insert(1));
        let (b, mut rb) = job(|c| {
            insert(2)(c)?;
            panic!("a bug in a write");
        });
        let (size, commit) = batch(&conn, vec![a, b], &counters);
        assert!(commit.is_ok());
        assert_eq!(size, 2);
        assert!(ra.try_recv().unwrap().is_ok());
        assert!(rb.try_recv().unwrap().is_err());
        assert_eq!(values(&conn), [1]);
        // The writes after it form the next batch, as usual.
        let (c, mut rc) = job(insert(3));
        let (_, commit) = batch(&conn, vec![c], &counters);
        assert!(commit.is_ok());
        assert!(rc.try_recv().unwrap().is_ok());
        assert_eq!(values(&conn), [1, 3]);
    }

    /// A table whose database cannot grow past its size now: an insert
    /// that needs a new page fails with SQLITE_FULL, as on a full disk, and
    /// SQLite then rolls the whole transaction back itself (a one-row
    /// insert has no statement journal to undo just itself).
    fn full_table() -> Connection {
        let conn = table();
        conn.execute_batch("CREATE TABLE big (b BLOB)").unwrap();
        let pages: i64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        conn.pragma_update(None, "max_page_count", pages).unwrap();
        conn
    }

    fn insert_big(c: &Connection) -> StoreResult<()> {
        c.execute("INSERT INTO big (b) VALUES (zeroblob(100000))", [])?;
        Ok(())
    }

    #[test]
    fn a_full_disk_fails_the_batch_with_a_typed_error_and_the_writer_goes_on() {
        let conn = full_table();
        let counters = WriterCounters::default();
        let (a, mut ra) = job(insert(1));
        let (b, mut rb) = job(insert_big);
        let (size, commit) = batch(&conn, vec![a, b], &counters);
        assert_eq!(size, 2);
        // The disk is full for everyone: each caller is told so (503, 452),
        // not "no transaction is active" (500).
        assert!(
            commit.as_ref().is_err_and(StoreError::is_storage_full),
            "{commit:?}"
        );
        for r in [&mut ra, &mut rb] {
            let answer = r.try_recv().unwrap();
            assert!(
                answer.as_ref().is_err_and(StoreError::is_storage_full),
                "{answer:?}"
            );
        }
        assert!(values(&conn).is_empty(), "nothing told 'failed' is kept");
        assert!(conn.is_autocommit(), "no transaction is left open");
        // Space returns: the next batch commits as usual.
        conn.pragma_update(None, "max_page_count", 1_000_000)
            .unwrap();
        let (d, mut rd) = job(insert_big);
        let (e, mut re) = job(insert(5));
        let (_, commit) = batch(&conn, vec![d, e], &counters);
        assert!(commit.is_ok(), "{commit:?}");
        let answer = rd.try_recv().unwrap();
        assert!(answer.is_ok(), "{answer:?}");
        assert!(re.try_recv().unwrap().is_ok());
        assert_eq!(values(&conn), [5]);
    }

    #[test]
    fn no_write_runs_outside_the_transaction_after_sqlite_rolled_it_back() {
        let conn = full_table();
        let counters = WriterCounters::default();
        // b fails on its own, so the batch is replayed in savepoints; in the
        // replay c finds the disk full (it filled up meanwhile) and SQLite
        // rolls back the whole transaction, a's insert with it. d must not
        // run after that: its insert would commit on its own while its
        // caller is told it failed.
        let (a, mut ra) = job(insert(1));
        let runs = AtomicUsize::new(0);
        let (c, mut rc) = job(move |conn| match runs.fetch_add(1, Ordering::Relaxed) {
            0 => insert(3)(conn),
            _ => insert_big(conn),
        });
        let (d, mut rd) = job(insert(4));
        let (b, mut rb) = job(|_| Err(StoreError::backend("refused")));
        let (size, commit) = batch(&conn, vec![a, c, d, b], &counters);
        assert_eq!(size, 4);
        assert!(
            commit.as_ref().is_err_and(StoreError::is_storage_full),
            "{commit:?}"
        );
        for r in [&mut ra, &mut rc, &mut rd] {
            let answer = r.try_recv().unwrap();
            assert!(
                answer.as_ref().is_err_and(StoreError::is_storage_full),
                "{answer:?}"
            );
        }
        assert!(rb.try_recv().unwrap().is_err());
        assert!(
            values(&conn).is_empty(),
            "every caller was told its write failed: none may be kept"
        );
        assert!(conn.is_autocommit(), "no transaction is left open");
    }

    #[test]
    fn writes_after_a_failed_one_wait_for_the_next_batch() {
        let conn = table();
        let counters = WriterCounters::default();
        let (a, _ra) = job(insert(1));
        let (b, _rb) = job(|_| Err(StoreError::backend("refused")));
        let (c, mut rc) = job(insert(3));
        let mut rx = queue(vec![a, b, c]);
        let (size, commit) = next_batch(&conn, &mut rx, &counters);
        assert!(commit.is_ok());
        assert_eq!(size, 2, "the batch stops at the failed write");
        // The third write waited for the next batch.
        let _ = next_batch(&conn, &mut rx, &counters);
        assert!(rc.try_recv().unwrap().is_ok());
        assert_eq!(values(&conn), [1, 3]);
    }
}
