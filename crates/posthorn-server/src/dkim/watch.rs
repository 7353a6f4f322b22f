//! On PostgreSQL, other nodes add and remove keys: every node reads the
//! keys' version (one row, raised with every committed change) every
//! [`KEY_POLL`] and loads the keys again when it moved, so a key added on
//! any node signs on all of them within that time, and a removed one stops
//! signing. A node also reloads at once after its own API change.
//!
//! A plain thread, not an async task: the reads block (the store's DKIM
//! calls), and so does parsing the keys.

use super::{DkimKeys, KeyHome};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// How often a node on PostgreSQL looks whether the keys changed: a key
/// added or removed on another node (or by `posthorn domains --store`)
/// signs, or stops signing, here within this time. One read of one row.
pub const KEY_POLL: Duration = Duration::from_secs(5);

/// The running watch; it ends when this is dropped.
#[derive(Debug)]
pub struct KeyWatch {
    _stop: mpsc::Sender<()>,
}

impl KeyWatch {
    /// Starts watching `home` for `keys`, every `every`.
    pub fn start(home: KeyHome, keys: Arc<DkimKeys>, every: Duration) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel();
        std::thread::Builder::new()
            .name("posthorn-dkim-watch".into())
            .spawn(move || watch(&home, &keys, every, &stopped))?;
        Ok(Self { _stop: stop })
    }
}

fn watch(home: &KeyHome, keys: &DkimKeys, every: Duration, stopped: &mpsc::Receiver<()>) {
    // A failure is said once, and that it works again once.
    let mut failing = false;
    loop {
        match stopped.recv_timeout(every) {
            Err(RecvTimeoutError::Timeout) => {}
            // Dropped (or, never, sent): the server is gone.
            _ => return,
        }
        let looked = home.version().and_then(|version| {
            let changed = version != keys.version();
            if changed {
                keys.reload(home)?;
            }
            Ok(changed)
        });
        match looked {
            Ok(changed) => {
                if failing {
                    tracing::info!("DKIM keys: reading them from the database works again");
                    failing = false;
                }
                if changed {
                    tracing::info!(
                        version = keys.version(),
                        "DKIM keys changed in the database; loaded them again"
                    );
                }
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, "DKIM keys: cannot load them from the database; signing with the keys loaded before");
                    failing = true;
                }
            }
        }
    }
}
