//! The WAL checkpointer: a thread that copies committed pages from the
//! write-ahead log back into the database file, so that the writer never
//! does it (and never waits for the database file's fsync) in the middle of
//! a group commit.
//!
//! Under sustained load a passive checkpoint never catches up with the
//! writer, and SQLite only starts the log over when a write transaction
//! begins with every frame checkpointed: the log would grow for as long as
//! the load lasts (hundreds of MB a minute), and every frame written past
//! its end costs the kernel new blocks. So when a pass leaves a long log,
//! the checkpointer asks the writer to checkpoint the few frames written
//! since, between two batches ([`RestartRequest`]); its next transaction then
//! writes the log from the start again.
//!
//! A passive pass that does not reach the end of the log (the writer went
//! on meanwhile) writes pages into the database file but does not sync it;
//! the pass that does reach the end syncs everything copied since. Left to
//! SQLite, that pass is the writer's, between two batches: under load it
//! flushed ~30 MB of the checkpointer's pages, 25-50 ms during which no
//! write committed (the p99 of the tracker benchmark). So the checkpointer
//! syncs the database file itself after each pass, on its own thread, and
//! the writer's pass only has its own few pages left to sync.

use rusqlite::Connection;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often the checkpointer looks at the log. A pass copies the latest
/// version of each page written since the last one and then syncs the
/// database file, so a longer interval copies a page rewritten by many
/// commits (the right edges of the event indexes, interior pages) once,
/// and syncs less often. 1 s rather than 250 ms: 3-9 % less server CPU per
/// tracker hit and 6-10 % more hits per second (docs/benchmarks.md); the
/// log is durable either way, it is only longer between passes.
const INTERVAL: Duration = Duration::from_secs(1);

/// A log longer than this (frames; 8 MiB with 2 KiB pages) after a pass is
/// started over by the writer.
const RESTART_FRAMES: i64 = 4096;

/// At most this many extra passes to catch up with the writer before
/// asking it to restart the log.
const CATCH_UP_PASSES: usize = 3;

/// Caught up: the writer added fewer frames than this during a pass.
const CAUGHT_UP_FRAMES: i64 = 512;

/// One passive pass, then a sync of the database file. Returns the frames
/// in the log.
fn pass(conn: &Connection, database: &std::fs::File) -> rusqlite::Result<i64> {
    // PASSIVE: copy what no reader still needs; never block the writer or
    // readers. (busy, frames in the log, frames checkpointed)
    let log = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1));
    // Any descriptor of the file syncs all of its pages.
    if let Err(e) = database.sync_data() {
        tracing::warn!(error = %e, "syncing the database file failed");
    }
    log
}

/// Set by the checkpointer, taken by the writer: "the log is long and
/// (nearly) all checkpointed; finish it so the next transaction restarts it".
pub(crate) type RestartRequest = Arc<AtomicBool>;

/// Run by the writer between batches when asked: copies what the
/// checkpointer has not copied yet, so that the next write transaction
/// begins with the whole log in the database file and starts it over.
/// PASSIVE: never waits for readers; if one still needs old frames (or the
/// checkpointer is mid-pass), the log just keeps growing until next time.
pub(crate) fn finish_log(conn: &Connection) {
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        tracing::warn!(error = %e, "WAL checkpoint before restarting the log failed");
    }
}

/// Runs until dropped; a final full checkpoint on the way out keeps the log
/// short between restarts.
pub(crate) struct Checkpointer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// `database`: the database file, opened once more, to sync it.
    pub fn start(conn: Connection, database: std::fs::File, restart: RestartRequest) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("posthorn-checkpoint".into())
            .spawn(move || {
                // A pass fails every second while the disk is full (the
                // database file cannot grow): said once, and when it ends.
                let mut failing = false;
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(INTERVAL);
                    let mut log = match pass(&conn, &database) {
                        Ok(log) => log,
                        Err(e) => {
                            if !failing {
                                tracing::warn!(error = %e, "WAL checkpoint failed; trying again every second");
                            }
                            failing = true;
                            continue;
                        }
                    };
                    if failing {
                        tracing::info!("WAL checkpoints work again");
                        failing = false;
                    }
                    if log < RESTART_FRAMES {
                        continue;
                    }
                    // Catch up before asking: each pass copies what the
                    // writer added during the one before, fewer frames each
                    // time, so the writer's own pass has little left.
                    for _ in 0..CATCH_UP_PASSES {
                        match pass(&conn, &database) {
                            Ok(now) if now - log > CAUGHT_UP_FRAMES => log = now,
                            _ => break,
                        }
                    }
                    restart.store(true, Ordering::Relaxed);
                }
                let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
            })
            .expect("spawning the checkpoint thread");
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
