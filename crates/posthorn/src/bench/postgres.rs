//! The benchmarks on PostgreSQL (`--store URL`): every run gets a scratch
//! database of its own on the server the URL names, dropped afterwards (a
//! benchmark never touches data it did not make), and PostgreSQL's own
//! ceiling: the same rows the store writes, by multi-row `INSERT`s (one
//! statement per table per batch, arrays bound as parameters) in plain
//! transactions, on one connection, with no reads and no locks.

use anyhow::{Context, Result};
use posthorn_core::config::{with_database, without_user};
use posthorn_core::event::{Engagement, EventDetails};
use posthorn_core::{Clock, EventId, SystemClock, TenantId};
use posthorn_store::DeliveryRecord;
use posthorn_store::postgres::{current_xid, event_position};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

/// A database made for one benchmark run.
pub struct ScratchDatabase {
    server: String,
    name: String,
    url: String,
}

impl ScratchDatabase {
    /// Creates `posthorn_bench_PID_N` on the server of `server` (a URL; its
    /// own database is only used to connect).
    pub fn create(server: &str) -> Result<ScratchDatabase> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "posthorn_bench_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        admin(
            server,
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )?;
        admin(server, &format!("CREATE DATABASE {name}"))
            .with_context(|| format!("creating a scratch database on {}", without_user(server)))?;
        Ok(ScratchDatabase {
            url: with_database(server, &name),
            server: server.to_owned(),
            name,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The `serve` arguments that run on this database.
    pub fn serve_args(&self) -> Vec<String> {
        vec!["--store".to_owned(), self.url.clone()]
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = admin(&self.server, &statement) {
            eprintln!("warning: {statement} failed: {e}");
        }
    }
}

/// Runs one statement on a thread of its own (`postgres::Client` blocks on
/// a runtime of its own and must not run on an async thread).
fn admin(server: &str, statement: &str) -> Result<()> {
    let (server, statement) = (server.to_owned(), statement.to_owned());
    std::thread::spawn(move || {
        let mut client = ::postgres::Client::connect(&server, ::postgres::NoTls)?;
        client.batch_execute(&statement)?;
        anyhow::Ok(())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the admin thread panicked"))?
}

/// The store writer's ceiling: `rows` `opened` events of `deliveries`
/// (round robin, as the writers write them), each with its id key, and the
/// status update of each delivery's first open, `per_commit` rows per
/// transaction: one `INSERT` for the keys, one for the events and one
/// `UPDATE` for the statuses per transaction. Positions are numbered from
/// the transaction's id, as the store numbers them.
pub async fn events_ceiling(
    url: &str,
    tenant: &TenantId,
    deliveries: Vec<DeliveryRecord>,
    rows: u64,
    per_commit: u64,
) -> Result<(f64, f64)> {
    let (url, tenant) = (url.to_owned(), tenant.as_str().to_owned());
    tokio::task::spawn_blocking(move || {
        let mut client = ::postgres::Client::connect(&url, ::postgres::NoTls)?;
        let details = EventDetails::Opened(Engagement::default()).to_json();
        let keys = client.prepare(
            "INSERT INTO event_keys (tenant_id, kind, key) SELECT $1, 'id', k FROM unnest($2::text[]) AS k",
        )?;
        let events = client.prepare(
            "INSERT INTO events (seq, id, tenant_id, delivery_id, message_id, recipient, sender, kind, occurred_at, \
             recorded_at, source, details, external_id, anomaly, outside_window) \
             SELECT s, i, $1, d, m, r, f, 'opened', t, t, 'tracker', $2, NULL, NULL, false \
             FROM unnest($3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::bigint[]) \
             AS u(s, i, d, m, r, f, t)",
        )?;
        let statuses = client.prepare(
            "UPDATE deliveries SET engagement_status = 'opened', engagement_event_id = u.e, \
             engagement_occurred_at = u.t, updated_at = u.t \
             FROM unnest($1::text[], $2::text[], $3::bigint[]) AS u(d, e, t) WHERE deliveries.id = u.d",
        )?;
        let mut opened = vec![false; deliveries.len()];
        let start = Instant::now();
        let mut written = 0u64;
        while written < rows {
            let mut tx = client.transaction()?;
            let xid = current_xid(&mut tx)?;
            let batch = per_commit.min(rows - written);
            let mut columns = EventColumns::default();
            let (mut first_d, mut first_e, mut first_t) = (Vec::new(), Vec::new(), Vec::new());
            for n in 0..batch {
                let now = SystemClock.now_ms();
                let i = (written % deliveries.len() as u64) as usize;
                let d = &deliveries[i];
                let id = EventId::generate().as_str().to_owned();
                if !opened[i] {
                    opened[i] = true;
                    first_d.push(d.id.as_str().to_owned());
                    first_e.push(id.clone());
                    first_t.push(now);
                }
                columns.push(event_position(xid, n as u32)?, id, d, now);
                written += 1;
            }
            tx.execute(&keys, &[&tenant, &columns.id])?;
            tx.execute(
                &events,
                &[
                    &tenant,
                    &details,
                    &columns.seq,
                    &columns.id,
                    &columns.delivery,
                    &columns.message,
                    &columns.recipient,
                    &columns.sender,
                    &columns.at,
                ],
            )?;
            if !first_d.is_empty() {
                tx.execute(&statuses, &[&first_d, &first_e, &first_t])?;
            }
            tx.commit()?;
        }
        let secs = start.elapsed().as_secs_f64();
        Ok((secs, rows as f64 / secs))
    })
    .await?
}

/// The columns of a batch of events, one array each.
#[derive(Default)]
struct EventColumns {
    seq: Vec<i64>,
    id: Vec<String>,
    delivery: Vec<String>,
    message: Vec<String>,
    recipient: Vec<String>,
    sender: Vec<String>,
    at: Vec<i64>,
}

impl EventColumns {
    fn push(&mut self, seq: i64, id: String, d: &DeliveryRecord, at: i64) {
        self.seq.push(seq);
        self.id.push(id);
        self.delivery.push(d.id.as_str().to_owned());
        self.message.push(d.message_id.as_str().to_owned());
        self.recipient.push(d.recipient.clone());
        self.sender.push(d.sender.clone());
        self.at.push(at);
    }
}

/// A transaction that holds back vacuum while it lives: a repeatable-read
/// snapshot kept open on a connection of its own, as a long report or a
/// forgotten `psql` session does. It has no transaction id, so it does not
/// hold the event feed back (positions wait only for writing
/// transactions): what it costs is the dead rows nobody may remove.
pub struct VacuumHold {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl VacuumHold {
    /// Opens the snapshot on `url` and checks that it holds an xmin.
    pub fn start(url: &str) -> Result<VacuumHold> {
        let url = url.to_owned();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let (ready, started) = std::sync::mpsc::channel::<Result<()>>();
        let thread = std::thread::spawn(move || {
            let mut client = ::postgres::Client::connect(&url, ::postgres::NoTls)?;
            let mut tx = client
                .build_transaction()
                .isolation_level(::postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            tx.query_one("SELECT count(*) FROM deliveries", &[])?;
            let held: Option<String> = tx
                .query_one(
                    "SELECT backend_xmin::text FROM pg_stat_activity WHERE pid = pg_backend_pid()",
                    &[],
                )?
                .get(0);
            let _ = ready.send(match held {
                Some(_) => Ok(()),
                None => Err(anyhow::anyhow!("the snapshot holds no xmin")),
            });
            let _ = stopped.recv();
            tx.rollback()?;
            anyhow::Ok(())
        });
        started
            .recv()
            .map_err(|_| anyhow::anyhow!("the vacuum-holding connection failed"))??;
        Ok(VacuumHold {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for VacuumHold {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Dead rows of the tables delivery churns (`deliveries`, `send_queue`),
/// as the statistics collector last counted them.
pub async fn dead_rows(url: &str) -> Result<i64> {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut client = ::postgres::Client::connect(&url, ::postgres::NoTls)?;
        let row = client.query_one(
            "SELECT COALESCE(sum(n_dead_tup), 0)::bigint FROM pg_stat_user_tables \
             WHERE relname IN ('deliveries', 'send_queue')",
            &[],
        )?;
        Ok(row.get(0))
    })
    .await?
}
