//! The tracker's reads, in batches. Every hit on a shared database reads
//! its delivery's facts (the tracker's per-node cache is off there, since
//! another node may have recorded a hit since): four statements, each a
//! round trip and a wake-up of a database backend. Hits waiting at the same
//! moment are read together instead, with the same four statements for the
//! whole batch (`tracking::tracking_facts_of`): while a batch is being read
//! the next one gathers, so batches grow with the load and a lone hit waits
//! for nothing.
//!
//! Hits on one delivery read in one batch see the same history, as two
//! hits that read before either was recorded always did.

use super::ReadPool;
use super::tracking;
use crate::records::TrackingFacts;
use crate::{StoreError, StoreResult};
use posthorn_core::DeliveryId;
use std::sync::{Arc, Mutex};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Hits read in one batch at most.
const MAX_BATCH: usize = 256;
/// Batches read at once: one reading while the next gathers, and a second
/// so that a slow batch does not hold every hit up.
const BATCHES_AT_ONCE: usize = 2;

type Answer = oneshot::Sender<StoreResult<Option<TrackingFacts>>>;

type Requests = mpsc::UnboundedSender<(DeliveryId, Answer)>;

pub(crate) struct HitFacts {
    reads: Arc<ReadPool>,
    /// The gathering task, started on first use on the caller's runtime
    /// (the store is made before there is one), and again if that runtime
    /// has ended since.
    requests: Mutex<Option<Requests>>,
}

impl HitFacts {
    pub(crate) fn new(reads: Arc<ReadPool>) -> Self {
        Self {
            reads,
            requests: Mutex::new(None),
        }
    }

    /// The facts of a hit on `delivery`, read with the hits waiting beside it.
    pub(crate) async fn get(&self, delivery: &DeliveryId) -> StoreResult<Option<TrackingFacts>> {
        let (answer, answered) = oneshot::channel();
        self.requests()?
            .send((delivery.clone(), answer))
            .map_err(|_| StoreError::closed())?;
        answered.await.map_err(|_| StoreError::closed())?
    }

    /// The running gatherer's queue, starting one if there is none.
    fn requests(&self) -> StoreResult<Requests> {
        let mut requests = self.requests.lock().map_err(|_| StoreError::closed())?;
        match requests.as_ref() {
            Some(running) if !running.is_closed() => Ok(running.clone()),
            _ => {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(gather(self.reads.clone(), rx));
                *requests = Some(tx.clone());
                Ok(tx)
            }
        }
    }
}

/// Takes the waiting requests as a batch whenever fewer than
/// `BATCHES_AT_ONCE` are being read; ends when the store is dropped.
async fn gather(reads: Arc<ReadPool>, mut requests: mpsc::UnboundedReceiver<(DeliveryId, Answer)>) {
    let reading = Arc::new(Semaphore::new(BATCHES_AT_ONCE));
    loop {
        let Ok(permit) = reading.clone().acquire_owned().await else {
            return;
        };
        let mut batch = Vec::new();
        if requests.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let reads = reads.clone();
        tokio::spawn(async move {
            let ids: Vec<DeliveryId> = batch.iter().map(|(id, _)| id.clone()).collect();
            let read = reads
                .run(move |c| tracking::tracking_facts_of(c, &ids))
                .await;
            for (id, answer) in batch {
                let _ = answer.send(match &read {
                    Ok(facts) => Ok(facts.get(&id).cloned()),
                    Err(e) => Err(e.clone()),
                });
            }
            drop(permit);
        });
    }
}
