//! Connections, reused, for the reads (the writes have threads of their
//! own, see `writer`): work runs on the blocking thread pool (a `postgres::Client` must not block an async
//! worker), at most as many at once as the pool has permits, each on a
//! connection of its own; the others wait for a permit.
//!
//! A connection that broke is dropped instead of reused, and with it every
//! idle one (a restarted server ended them all), so the pool recovers by
//! itself once the database is back. A read that failed on a connection
//! kept from before the outage runs once more on a new one (a read changes
//! nothing): the first request after the database returns succeeds.

use super::Settings;
use crate::{StoreError, StoreResult, Unavailable};
use ::postgres::Client;
use std::sync::{Arc, Mutex};

/// A connection a [`Pool`] keeps.
pub(crate) trait Pooled: Send + 'static {
    fn open(settings: &Settings) -> StoreResult<Self>
    where
        Self: Sized;
    fn client(&self) -> &Client;
}

pub(crate) struct Pool<C: Pooled> {
    settings: Arc<Settings>,
    idle: Arc<Mutex<Vec<C>>>,
    permits: tokio::sync::Semaphore,
}

impl<C: Pooled> Pool<C> {
    pub(crate) fn new(settings: Arc<Settings>, connections: usize) -> Self {
        Self {
            settings,
            idle: Arc::default(),
            permits: tokio::sync::Semaphore::new(connections.max(1)),
        }
    }

    /// Runs `work` on a connection, on the blocking pool.
    pub(crate) async fn run<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&mut C) -> StoreResult<T> + Send + 'static,
    {
        // A permit per connection: holding one means a connection is idle
        // or may be opened.
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::closed())?;
        let idle = self.idle.lock().map_err(|_| StoreError::closed())?.pop();
        let settings = self.settings.clone();
        let pool = self.idle.clone();
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let reused = idle.as_ref().is_some_and(|c| !c.client().is_closed());
            let mut conn = match idle {
                Some(c) if reused => c,
                // A closed one is dropped here, on a blocking thread.
                _ => match C::open(&settings) {
                    Ok(c) => c,
                    Err(e) => return (None, Err(settings.name_in(e))),
                },
            };
            let mut result = work(&mut conn);
            if lost_connection(conn.client(), &result) {
                drop_idle(&pool);
                if reused {
                    conn = match C::open(&settings) {
                        Ok(c) => c,
                        Err(e) => return (None, Err(settings.name_in(e))),
                    };
                    result = work(&mut conn);
                }
                if lost_connection(conn.client(), &result) {
                    return (None, result);
                }
            }
            (Some(conn), result)
        })
        .await
        .map_err(|e| StoreError::backend(format!("database task: {e}")))?;
        if let Some(conn) = conn {
            self.idle
                .lock()
                .map_err(|_| StoreError::closed())?
                .push(conn);
        }
        result
    }
}

impl<C: Pooled> Drop for Pool<C> {
    fn drop(&mut self) {
        close_off_runtime(&self.idle);
    }
}

/// Whether `client` broke while it ran (`result` is what it answered):
/// the database went away, restarted or cut the connection. A broken
/// connection is dropped instead of going back to its pool.
pub(super) fn lost_connection<T>(client: &Client, result: &StoreResult<T>) -> bool {
    client.is_closed()
        || matches!(
            result,
            Err(StoreError::Unavailable {
                cause: Unavailable::Unreachable,
                ..
            })
        )
}

/// After a lost connection: the pool's idle connections went to the same
/// database, and are most likely broken too (a restarted server ended
/// them all). Dropped now, each would otherwise fail one more request
/// once the database is back; the next requests connect afresh. Closed on
/// a thread of their own and not waited for: closing a connection to a
/// host that stopped answering may take long.
fn drop_idle<T: Send + 'static>(idle: &Mutex<Vec<T>>) {
    let idle = take_idle(idle);
    if !idle.is_empty() {
        std::thread::spawn(move || drop(idle));
    }
}

/// Closes a pool's idle connections. Closing one blocks on its own
/// runtime, which is not allowed on an async worker thread (where a store
/// is usually dropped): they are closed on a thread of their own.
fn close_off_runtime<T: Send + 'static>(idle: &Mutex<Vec<T>>) {
    let idle = take_idle(idle);
    if !idle.is_empty() {
        let _ = std::thread::spawn(move || drop(idle)).join();
    }
}

fn take_idle<T>(idle: &Mutex<Vec<T>>) -> Vec<T> {
    std::mem::take(&mut *idle.lock().unwrap_or_else(|e| e.into_inner()))
}
