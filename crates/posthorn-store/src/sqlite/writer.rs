//! The one writer: a thread that owns the write connection, takes jobs from a
//! channel and commits every job that is waiting in one transaction (group
//! commit). Each job runs inside its own savepoint, so a job that fails is
//! rolled back alone and the others of its batch still commit. A caller is
//! answered only after the commit, so an answer means "durable".

use super::checkpoint::{RestartRequest, finish_log};
use crate::{StoreError, StoreResult};
use rusqlite::Connection;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot};

/// Called after the batch's commit with its result, to answer the caller.
type Completion = Box<dyn FnOnce(StoreResult<()>) + Send>;
/// Runs against the connection; says whether the job succeeded and how to
/// answer its caller.
type Job = Box<dyn FnOnce(&Connection) -> (bool, Completion) + Send>;

#[derive(Debug, Default)]
pub(crate) struct WriterCounters {
    pub batches: AtomicU64,
    pub writes: AtomicU64,
}

#[derive(Clone)]
pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
    pub counters: Arc<WriterCounters>,
}

impl Writer {
    /// Starts the writer thread on `conn`. It stops when every `Writer` clone
    /// is dropped, after finishing the jobs already sent.
    pub fn start(conn: Connection, max_batch: usize, restart: RestartRequest) -> Self {
        // Bounded, so that a flood of writers waits instead of growing memory.
        let (tx, rx) = mpsc::channel::<Job>(max_batch.max(1) * 4);
        let counters = Arc::new(WriterCounters::default());
        let thread_counters = counters.clone();
        std::thread::Builder::new()
            .name("posthorn-writer".into())
            .spawn(move || run(conn, rx, max_batch.max(1), &thread_counters, &restart))
            .expect("spawning the writer thread");
        Self { jobs: tx, counters }
    }

    /// Runs `f` in the next batch and returns its result once committed.
    pub async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<StoreResult<T>>();
        let job: Job = Box::new(move |conn| {
            let result = match std::panic::catch_unwind(AssertUnwindSafe(|| f(conn))) {
                Ok(r) => r,
                Err(_) => Err(StoreError::Backend("a write panicked".into())),
            };
            let ok = result.is_ok();
            let complete: Completion = Box::new(move |commit: StoreResult<()>| {
                let _ = tx.send(commit.and(result));
            });
            (ok, complete)
        });
        self.jobs.send(job).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

fn run(
    conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    max_batch: usize,
    counters: &WriterCounters,
    restart: &RestartRequest,
) {
    while let Some(first) = rx.blocking_recv() {
        let (size, commit, completions) = commit_batch(&conn, first, &mut rx, max_batch);
        // Count before answering, so a caller never sees stats without its write.
        if commit.is_ok() {
            counters.batches.fetch_add(1, Ordering::Relaxed);
            counters.writes.fetch_add(size, Ordering::Relaxed);
        }
        for complete in completions {
            complete(commit.clone());
        }
        // Outside any transaction, while the answered callers send more.
        if restart.swap(false, Ordering::Relaxed) {
            finish_log(&conn);
        }
    }
}

/// Runs `first` and then every job that is waiting, or arrives while the
/// batch runs, up to `max_batch`, in one transaction. Jobs that arrive while
/// earlier ones execute join the batch instead of waiting for its commit:
/// the commit (and its fsync) comes once the channel is empty, so the batch
/// grows to the number of callers in flight. Returns the batch size, the
/// commit's result and the callers to answer with it.
fn commit_batch(
    conn: &Connection,
    first: Job,
    rx: &mut mpsc::Receiver<Job>,
    max_batch: usize,
) -> (u64, StoreResult<()>, Vec<Completion>) {
    let mut completions = Vec::with_capacity(max_batch.min(1024));
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        // The job never ran; dropping it answers its caller with
        // `StoreError::Closed`, and nothing was written.
        tracing::error!(error = %e, "could not begin a write transaction");
        drop(first);
        return (0, Err(StoreError::from(e)), completions);
    }
    // Cached statements: these run twice per write, parsing them each time
    // would be measurable.
    let run = |sql: &str| {
        conn.prepare_cached(sql)
            .and_then(|mut s| s.execute([]).map(|_| ()))
    };
    let mut next = Some(first);
    while let Some(job) = next.take() {
        let savepoint = run("SAVEPOINT job");
        let (ok, complete) = job(conn);
        let end = if ok && savepoint.is_ok() {
            run("RELEASE job")
        } else {
            run("ROLLBACK TO job").and_then(|()| run("RELEASE job"))
        };
        if let Err(e) = end {
            tracing::error!(error = %e, "closing a savepoint failed");
        }
        completions.push(complete);
        if completions.len() < max_batch {
            next = rx.try_recv().ok();
        }
    }
    let commit = conn.execute_batch("COMMIT").map_err(StoreError::from);
    if commit.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    (completions.len() as u64, commit, completions)
}
