//! DKIM private keys in the database (`dkim_keys`, migration 0002), so
//! that every node sharing it signs with the same keys, and the version
//! counter that every change of them raises (a trigger), which nodes poll
//! to notice a key another node added or removed.
//!
//! Not part of the `Store` trait: on SQLite the keys are files in the data
//! directory. The server's `dkim` module decides what a key is (names,
//! PEM, the active key); this one only keeps the rows.
//!
//! The work is rare (a poll every few seconds, an operator adding a
//! domain) and blocking, so it runs on one connection of its own
//! ([`SideConnection`]), kept between calls rather than taken from the
//! pools, whose work is async and bounded by permits.

use super::pool::lost_connection;
use super::reads::get;
use super::{Settings, on_own_thread};
use crate::records::DkimKeyRecord;
use crate::{StoreError, StoreResult};
use ::postgres::{Client, GenericClient};
use std::sync::{Arc, Mutex};

/// Every key, by domain and selector.
pub(crate) fn list(c: &mut impl GenericClient) -> StoreResult<Vec<DkimKeyRecord>> {
    c.query(
        "SELECT domain, selector, private_key_pem, created_at FROM dkim_keys \
         ORDER BY domain, selector",
        &[],
    )?
    .iter()
    .map(|r| {
        Ok(DkimKeyRecord {
            domain: get(r, 0)?,
            selector: get(r, 1)?,
            private_key_pem: get(r, 2)?,
            created_at: get(r, 3)?,
        })
    })
    .collect()
}

/// The change counter: it moves with every committed change of the keys.
pub(crate) fn version(c: &mut impl GenericClient) -> StoreResult<i64> {
    get(
        &c.query_one("SELECT version FROM dkim_keys_version", &[])?,
        0,
    )
}

/// Inserts `key` unless a key with its domain and selector exists (which
/// is kept as it is); whether it was inserted.
pub(crate) fn insert(c: &mut impl GenericClient, key: &DkimKeyRecord) -> StoreResult<bool> {
    let inserted = c.execute(
        "INSERT INTO dkim_keys (domain, selector, private_key_pem, created_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (domain, selector) DO NOTHING",
        &[
            &key.domain,
            &key.selector,
            &key.private_key_pem,
            &key.created_at,
        ],
    )?;
    Ok(inserted == 1)
}

/// Deletes `domain`'s keys (only the one with `selector`, if given); how
/// many.
pub(crate) fn remove(
    c: &mut impl GenericClient,
    domain: &str,
    selector: Option<&str>,
) -> StoreResult<u64> {
    Ok(c.execute(
        "DELETE FROM dkim_keys WHERE domain = $1 AND ($2::text IS NULL OR selector = $2)",
        &[&domain, &selector],
    )?)
}

/// The conflict an insert of an existing key is.
pub(crate) fn exists(key: &DkimKeyRecord) -> StoreError {
    StoreError::Conflict(format!(
        "{} already has a DKIM key with selector `{}`",
        key.domain, key.selector
    ))
}

/// What one run of the work on the side connection gave.
pub(super) struct Attempt<T> {
    pub result: StoreResult<T>,
    /// Nothing of the work took effect (a read; a write whose transaction
    /// never began): it may run again on a new connection.
    pub untouched: bool,
}

/// One connection for the occasional blocking work that is not the
/// engine's: kept between calls (a node that polls every few seconds does
/// not connect every time), dropped when it broke and made again at the
/// next call. A read that failed on a kept connection that turned out
/// broken (the database restarted since) runs once more on a new one, as
/// the pools do; so does a write whose transaction never began.
pub(super) struct SideConnection {
    settings: Arc<Settings>,
    client: Mutex<Option<Client>>,
}

impl SideConnection {
    pub(super) fn new(settings: Arc<Settings>) -> Self {
        Self {
            settings,
            client: Mutex::new(None),
        }
    }

    /// Runs `work` on the connection, on a thread of its own (a
    /// `postgres::Client` must not run where a runtime is running), one
    /// call at a time.
    pub(super) fn run<T: Send>(
        &self,
        work: impl Fn(&mut Client) -> Attempt<T> + Sync,
    ) -> StoreResult<T> {
        let settings = &self.settings;
        on_own_thread(|| {
            let mut slot = self.client.lock().unwrap_or_else(|e| e.into_inner());
            // A connection known to be closed is dropped here, off the
            // runtime.
            let kept = slot.take().filter(|c| !c.is_closed());
            let reused = kept.is_some();
            let mut client = match kept {
                Some(c) => c,
                None => settings.connect()?,
            };
            let Attempt {
                mut result,
                untouched,
            } = work(&mut client);
            if lost_connection(&client, &result) {
                if !(reused && untouched) {
                    return result;
                }
                client = settings.connect()?;
                result = work(&mut client).result;
                if lost_connection(&client, &result) {
                    return result;
                }
            }
            *slot = Some(client);
            result
        })
        .map_err(|e| settings.name_in(e))
    }

    /// A read: it may always run again.
    pub(super) fn read<T: Send>(
        &self,
        f: impl Fn(&mut Client) -> StoreResult<T> + Sync,
    ) -> StoreResult<T> {
        self.run(|c| Attempt {
            result: f(c),
            untouched: true,
        })
    }

    /// A write in a transaction of its own.
    pub(super) fn write<T: Send>(
        &self,
        f: impl Fn(&mut ::postgres::Transaction<'_>) -> StoreResult<T> + Sync,
    ) -> StoreResult<T> {
        self.run(|c| match c.transaction() {
            // Nothing of it ran: it may run again on a new connection.
            Err(e) => Attempt {
                result: Err(e.into()),
                untouched: true,
            },
            Ok(mut tx) => Attempt {
                result: f(&mut tx).and_then(|value| {
                    tx.commit()?;
                    Ok(value)
                }),
                untouched: false,
            },
        })
    }
}

impl Drop for SideConnection {
    fn drop(&mut self) {
        // Closing a client blocks on its own runtime, which is not allowed
        // on an async worker thread (where a store is usually dropped).
        let client = self
            .client
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(client) = client {
            let _ = std::thread::spawn(move || drop(client)).join();
        }
    }
}
