//! Recording delivery attempts without making the SMTP sessions wait.
//!
//! A session hands each attempt's `sent` (when it starts) and its outcome
//! (when the remote server has answered) to the recorder and goes on with
//! its next message at once. The recorder writes everything handed to it
//! since its last write in one store call (one transaction, in the order
//! received, so a delivery's `sent` always comes before its outcome), and
//! only then lets go of the delivery's in-flight permit.
//!
//! The guarantees stay those of a write per attempt: a delivery keeps its
//! lease until its outcome is durable, so nothing claims it meanwhile; a
//! verdict that is durable has taken the delivery out of the queue in the
//! same transaction, so it is never sent again; and a verdict lost to a
//! kill -9 before its commit leaves the delivery leased and unrecorded,
//! attempted again once the lease is released (at worst sent twice, as
//! with a crash during the SMTP transaction itself).

use posthorn_store::{AttemptRecord, Store, StoreError, StoreResult};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

/// Attempts written at most in one transaction.
const MAX_PER_WRITE: usize = 1024;

/// One write handed to the recorder.
pub struct Pending {
    pub attempt: AttemptRecord,
    /// The delivery's in-flight permit, given back once the write is
    /// durable (only with the outcome).
    pub permit: Option<OwnedSemaphorePermit>,
}

/// The sessions' side: hands writes over, never waits.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<Pending>,
}

impl Recorder {
    /// Starts the task that writes; it ends when every `Recorder` is
    /// dropped and what they handed over is written. `lease` bounds how
    /// long a write is tried again on a full disk (see `write_batch`).
    pub fn start(store: Arc<dyn Store>, lease: Duration) -> (Self, tokio::task::JoinHandle<()>) {
        // Unbounded, yet bounded in effect: each delivery in flight holds
        // a permit and hands over at most two writes.
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(store, rx, lease));
        (Self { tx }, task)
    }

    pub fn record(&self, pending: Pending) {
        if let Err(lost) = self.tx.send(pending) {
            // Only after the recorder stopped (shutting down): the lease
            // runs out and the delivery is attempted again.
            tracing::error!(delivery_id = %lost.0.attempt.delivery, "the attempt recorder has stopped; attempt not recorded");
        }
    }
}

async fn run(store: Arc<dyn Store>, mut rx: mpsc::UnboundedReceiver<Pending>, lease: Duration) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, MAX_PER_WRITE).await > 0 {
        write_batch(store.as_ref(), &mut batch, lease).await;
        // Permits go back here, after the commit (or the final failure).
        batch.clear();
    }
}

/// Writes a batch in one transaction. While the disk is full it tries
/// again, every few seconds, for at most half the lease (after which the
/// deliveries could be claimed again): an outcome not recorded now is
/// recorded once space returns, instead of the lease running out and the
/// mail being sent a second time. On any other error each attempt is
/// written alone, so one that cannot be written does not sink the others.
async fn write_batch(store: &dyn Store, batch: &mut [Pending], lease: Duration) {
    let attempts = || batch.iter().map(|p| p.attempt.clone()).collect::<Vec<_>>();
    match while_storage_full(lease, || store.record_attempts(attempts())).await {
        Ok(_) => {}
        Err(e) if batch.len() == 1 => log_lost(&batch[0].attempt, &e),
        Err(_) => {
            for pending in batch.iter() {
                let one = || store.record_attempts(vec![pending.attempt.clone()]);
                if let Err(e) = while_storage_full(lease, one).await {
                    log_lost(&pending.attempt, &e);
                }
            }
        }
    }
}

fn log_lost(attempt: &AttemptRecord, error: &StoreError) {
    // The lease runs out and the delivery is attempted again: it is never
    // lost, at worst sent twice.
    tracing::error!(delivery_id = %attempt.delivery, error = %error, "recording a delivery attempt failed");
}

/// Runs `write` again while it fails with a full disk, with growing pauses,
/// until half of `lease` has passed.
async fn while_storage_full<T, F, Fut>(lease: Duration, mut write: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StoreResult<T>>,
{
    let until = tokio::time::Instant::now() + lease / 2;
    let mut pause = Duration::from_millis(200);
    let mut first = true;
    loop {
        match write().await {
            Err(e) if e.is_storage_full() && tokio::time::Instant::now() + pause < until => {
                // Once per write: a long outage must not flood the log.
                if first {
                    tracing::warn!(detail = %e, "storage full: recording delivery attempts again when space returns");
                    first = false;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}
