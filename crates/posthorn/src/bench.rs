//! `posthorn bench ingest`: how fast accepted work becomes durable.
//!
//! 1. Events/s through the store's group-commit writer with 1, 16 and 256
//!    concurrent writers (each `record_event` is answered after its commit).
//! 2. The ceiling: the same event rows inserted by plain batched SQLite
//!    transactions (1,024 rows per commit, same file settings, no
//!    checkpoints while timing), and at 128 rows per commit, about the batch
//!    the writer forms with 256 writers.
//! 3. `POST /v1/messages` (one recipient, ~2 KB) against a real `posthorn
//!    serve` child process with 64 concurrent clients: messages/s, p50/p99
//!    latency, and the server's peak RSS.
//!
//! Everything runs on the real disk (a directory under the current one),
//! with the default durability (`synchronous = FULL`).

use anyhow::{Context, Result, bail};
use posthorn_core::config::StoreConfig;
use posthorn_core::event::{Engagement, EventDetails};
use posthorn_core::{Clock, DeliveryId, EventId, EventSource, SystemClock, TenantId};
use posthorn_store::{AcceptOutcome, NewEvent, SqliteStore, Store, StoreRules};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Store writer vs. plain SQLite, and HTTP submissions.
    Ingest(IngestArgs),
}

#[derive(clap::Args)]
pub struct IngestArgs {
    /// Events written per store configuration (the 1-writer run does a tenth).
    #[arg(long, default_value_t = 40_000)]
    events: u64,
    /// Messages submitted over HTTP.
    #[arg(long, default_value_t = 30_000)]
    messages: u64,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Scratch directory (created, then removed).
    #[arg(long, default_value = "posthorn-bench")]
    dir: PathBuf,
}

pub async fn run(command: BenchCommand) -> Result<()> {
    let BenchCommand::Ingest(args) = command;
    if args.dir.exists() {
        bail!("{} exists; give an unused --dir", args.dir.display());
    }
    std::fs::create_dir_all(&args.dir)?;
    let result = ingest(&args).await;
    let _ = std::fs::remove_dir_all(&args.dir);
    result
}

async fn ingest(args: &IngestArgs) -> Result<()> {
    println!("## Store writer (record_event, group commit, synchronous=FULL)\n");
    println!("| writers | events | seconds | events/s | writes per commit |");
    println!("|---:|---:|---:|---:|---:|");
    let mut rate_256 = 0.0;
    for writers in [1usize, 16, 256] {
        let events = if writers == 1 {
            args.events / 10
        } else {
            args.events
        };
        let dir = args.dir.join(format!("writers-{writers}"));
        let (secs, rate, per_commit) = store_writers(&dir, writers, events).await?;
        println!("| {writers} | {events} | {secs:.2} | {rate:.0} | {per_commit:.1} |");
        rate_256 = rate;
    }
    println!("\n## Plain SQLite: the same rows in batched transactions\n");
    println!("| rows per commit | rows | seconds | rows/s |\n|---:|---:|---:|---:|");
    let mut ceiling = 0.0;
    for per_commit in [1024u64, 128] {
        let dir = args.dir.join(format!("plain-{per_commit}"));
        let (secs, rate) = plain_sqlite(&dir, args.events, per_commit).await?;
        println!("| {per_commit} | {} | {secs:.2} | {rate:.0} |", args.events);
        if per_commit == 1024 {
            ceiling = rate;
        }
    }
    println!(
        "\nRatio at 256 writers: {:.0} % of the ceiling (1,024 rows per commit).\n",
        100.0 * rate_256 / ceiling
    );

    println!("## HTTP submissions (POST /v1/messages, 1 recipient, ~2 KB)\n");
    http_submissions(&args.dir.join("http"), args.messages, args.clients).await
}

/// A store with one tenant and 256 queued deliveries to write events for.
async fn seeded_store(dir: &Path) -> Result<(SqliteStore, TenantId, Vec<DeliveryId>)> {
    let store = SqliteStore::open(dir, &StoreConfig::default(), StoreRules::default())?;
    let tenant = store.create_tenant("bench", SystemClock.now_ms()).await?.id;
    let mut deliveries = Vec::new();
    for i in 0..256 {
        let mut message =
            posthorn_store::conformance::message(&tenant, &[&format!("r{i}@example.com")]);
        message.accepted_at = SystemClock.now_ms();
        match store.accept_message(message).await? {
            AcceptOutcome::Accepted(r) => deliveries.push(r.deliveries[0].id.clone()),
            other => bail!("seeding: {other:?}"),
        }
    }
    Ok((store, tenant, deliveries))
}

/// Returns seconds, events per second and the mean number of writes that
/// shared one commit.
async fn store_writers(dir: &Path, writers: usize, events: u64) -> Result<(f64, f64, f64)> {
    let (store, tenant, deliveries) = seeded_store(dir).await?;
    let store: Arc<dyn Store> = Arc::new(store);
    let before = store.stats();
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (store, tenant, next) = (store.clone(), tenant.clone(), next.clone());
        let delivery = deliveries[w % deliveries.len()].clone();
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < events {
                let now = SystemClock.now_ms();
                let event = NewEvent {
                    id: EventId::generate(),
                    delivery_id: delivery.clone(),
                    occurred_at: now,
                    recorded_at: now,
                    source: EventSource::Tracker,
                    details: EventDetails::Opened(Engagement::default()),
                    external_id: None,
                };
                store.record_event(&tenant, event).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    let after = store.stats();
    let per_commit =
        (after.writes - before.writes) as f64 / (after.batches - before.batches).max(1) as f64;
    Ok((secs, events as f64 / secs, per_commit))
}

async fn plain_sqlite(dir: &Path, rows: u64, per_commit: u64) -> Result<(f64, f64)> {
    let (store, tenant, deliveries) = seeded_store(dir).await?;
    drop(store);
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let conn = posthorn_store::sqlite::raw_connection(&dir, posthorn_core::config::Synchronous::Full)?;
        let sql = "INSERT INTO events (id, tenant_id, delivery_id, message_id, recipient, sender, kind, occurred_at, \
                   recorded_at, source, details, external_id, anomaly, outside_window) \
                   VALUES (?1, ?2, ?3, 'm', 'r@example.com', 'news@sender.example', 'opened', ?4, ?4, 'tracker', '{}', NULL, NULL, 0)";
        let start = Instant::now();
        let mut written = 0u64;
        while written < rows {
            let tx = conn.unchecked_transaction()?;
            {
                let mut stmt = tx.prepare_cached(sql)?;
                for _ in 0..per_commit.min(rows - written) {
                    let now = SystemClock.now_ms();
                    let delivery = &deliveries[(written % 256) as usize];
                    stmt.execute(rusqlite_params(&EventId::generate(), &tenant, delivery, now))?;
                    written += 1;
                }
            }
            tx.commit()?;
        }
        let secs = start.elapsed().as_secs_f64();
        Ok((secs, rows as f64 / secs))
    })
    .await?
}

fn rusqlite_params<'a>(
    id: &'a EventId,
    tenant: &'a TenantId,
    delivery: &'a DeliveryId,
    now: i64,
) -> (&'a str, &'a str, &'a str, i64) {
    (id.as_str(), tenant.as_str(), delivery.as_str(), now)
}

async fn http_submissions(dir: &Path, messages: u64, clients: usize) -> Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args([
            "serve",
            "--submission",
            "off",
            "--http",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir)
        .env("POSTHORN_LOG", "warn")
        // This measures ingest: no delivery attempts (and no DNS) meanwhile.
        .env("POSTHORN_DELIVERY__ENABLED", "false")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting posthorn serve")?;
    let pid = child.id().context("child pid")?;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        if Instant::now() > deadline {
            bail!("posthorn serve did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let key = std::fs::read_to_string(dir.join(posthorn_server::app::INITIAL_KEY_FILE))?
        .trim()
        .to_owned();
    let text = "Hello! ".repeat(2048 / 7);
    let warmup = (messages / 20).max(100);
    run_clients(&client, &base, &key, &text, warmup, clients).await?;
    let start = Instant::now();
    let mut latencies = run_clients(&client, &base, &key, &text, messages, clients).await?;
    let secs = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)] as f64 / 1000.0
    };
    let rss_kib = peak_rss_kib(pid).unwrap_or(0);
    println!("| clients | messages | seconds | messages/s | p50 ms | p99 ms | server peak RSS |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {clients} | {messages} | {secs:.2} | {:.0} | {:.2} | {:.2} | {:.1} MiB |",
        messages as f64 / secs,
        pct(0.50),
        pct(0.99),
        rss_kib as f64 / 1024.0
    );
    let _ = child.start_kill();
    let _ = child.wait().await;
    Ok(())
}

/// Sends `total` submissions from `clients` concurrent tasks; returns each
/// request's latency in microseconds.
async fn run_clients(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    text: &str,
    total: u64,
    clients: usize,
) -> Result<Vec<u64>> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, next) = (client.clone(), next.clone());
        let url = format!("{base}/v1/messages");
        let (key, text) = (key.to_owned(), text.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let body = serde_json::json!({
                    "from": "bench@sender.example",
                    "to": [format!("user{i}@example.com")],
                    "subject": format!("Benchmark message {i}"),
                    "text": text,
                });
                let start = Instant::now();
                let response = client
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
                    .await?;
                let status = response.status();
                response.bytes().await?;
                if status != reqwest::StatusCode::ACCEPTED {
                    bail!("submission answered {status}");
                }
                latencies.push(start.elapsed().as_micros() as u64);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    Ok(all)
}

/// Peak resident set size of a process (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
