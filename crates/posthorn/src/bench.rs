//! `posthorn bench ingest`: how fast accepted work becomes durable.
//!
//! 1. Events/s through the store's group-commit writer with 1, 16 and 256
//!    concurrent writers (each `record_event` is answered after its commit).
//! 2. The ceiling: the same rows (each event with its delivery's message
//!    id, recipient and sender, and the status update of each delivery's
//!    first `opened`) inserted by plain batched SQLite transactions (1,024
//!    rows per commit, same file settings, no checkpoints while timing), and
//!    at 256 rows per commit, about the batch the writer forms with 256
//!    writers.
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
use posthorn_store::{AcceptOutcome, NewEvent, PgStore, SqliteStore, Store, StoreRules};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod postgres;
mod tracker;

/// `--store`: the benchmark runs on SQLite and then again on PostgreSQL.
#[derive(clap::Args, Clone)]
pub struct StoreArg {
    /// Also run on PostgreSQL: on a scratch database made for each run on
    /// the server of this URL (`postgres://USER@HOST[:PORT]/DB`; DB is only
    /// used to connect) and dropped afterwards.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
}

impl StoreArg {
    /// SQLite first, then PostgreSQL when asked for.
    fn backends(&self) -> Vec<Backend<'_>> {
        let mut backends = vec![Backend::Sqlite];
        backends.extend(self.store.as_deref().map(Backend::Postgres));
        backends
    }
}

/// Where a benchmark's store lives.
#[derive(Clone, Copy)]
enum Backend<'a> {
    /// The data directory's SQLite file.
    Sqlite,
    /// A scratch database on the PostgreSQL server of this URL.
    Postgres(&'a str),
}

/// A store opened for one run, with the scratch database it lives in.
struct BenchStore {
    store: Arc<dyn Store>,
    database: Option<postgres::ScratchDatabase>,
}

impl Backend<'_> {
    fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres(_) => "PostgreSQL",
        }
    }

    /// A new, empty store for one run (`dir` holds the SQLite file).
    async fn open(&self, dir: &Path) -> Result<BenchStore> {
        let rules = StoreRules::default();
        match self {
            Backend::Sqlite => Ok(BenchStore {
                store: Arc::new(SqliteStore::open(dir, &StoreConfig::default(), rules)?),
                database: None,
            }),
            Backend::Postgres(server) => {
                let database = postgres::ScratchDatabase::create(server)?;
                let store = PgStore::connect(database.url(), &StoreConfig::default(), rules)?;
                Ok(BenchStore {
                    store: Arc::new(store),
                    database: Some(database),
                })
            }
        }
    }
}

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Store writer vs. plain SQLite, and HTTP submissions.
    Ingest(IngestArgs),
    /// SMTP delivery end to end, against Postfix's smtp-source/smtp-sink.
    Delivery(DeliveryArgs),
    /// Opens and clicks through the tracker vs. a bare GIF server (wrk).
    Tracker(tracker::TrackerArgs),
    /// The tracker benchmark's ceiling: a bare server answering the GIF.
    #[command(hide = true)]
    GifServer {
        #[arg(long)]
        http: String,
    },
}

#[derive(clap::Args)]
pub struct DeliveryArgs {
    /// Messages in the end-to-end run (one recipient, ~2 KB).
    #[arg(long, default_value_t = 20_000)]
    messages: u64,
    /// Messages of the multi-recipient run (each to 10 recipients).
    #[arg(long, default_value_t = 1_000)]
    fanout_messages: u64,
    /// Deliveries queued for the memory measurement.
    #[arg(long, default_value_t = 100_000)]
    queued: u64,
    /// With --store: messages of a run on PostgreSQL with a transaction
    /// holding back vacuum throughout, and of the same run without it
    /// (0: no such runs). Choose enough for about five minutes.
    #[arg(long, default_value_t = 0)]
    vacuum_hold_messages: u64,
    /// Scratch directory (created, then removed).
    #[arg(long, default_value = "posthorn-bench")]
    dir: PathBuf,
    #[command(flatten)]
    store: StoreArg,
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
    #[command(flatten)]
    store: StoreArg,
}

pub async fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Ingest(args) => in_scratch_dir(&args.dir, ingest(&args)).await,
        BenchCommand::Delivery(args) => in_scratch_dir(&args.dir, delivery(&args)).await,
        BenchCommand::Tracker(args) => {
            let dir = PathBuf::from("posthorn-bench");
            in_scratch_dir(&dir, tracker::tracker(&dir, &args)).await
        }
        BenchCommand::GifServer { http } => tracker::gif_server(&http).await,
    }
}

/// Runs `bench` with `dir` as its scratch directory: it must not exist
/// (a benchmark never touches data it did not make) and is removed after.
async fn in_scratch_dir(dir: &Path, bench: impl Future<Output = Result<()>>) -> Result<()> {
    if dir.exists() {
        bail!("{} exists; give an unused --dir", dir.display());
    }
    std::fs::create_dir_all(dir)?;
    let result = bench.await;
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(dir);
    } else {
        eprintln!("the servers' logs are kept in {} (*.log)", dir.display());
    }
    result
}

/// Where a child process's output goes: a log file in the scratch
/// directory, so the benchmark's own output stays one clean table.
fn log_file(dir: &Path, name: &str) -> Result<std::process::Stdio> {
    std::fs::create_dir_all(dir)?;
    let file = std::fs::File::create(dir.join(format!("{name}.log")))
        .with_context(|| format!("creating {name}.log in {}", dir.display()))?;
    Ok(file.into())
}

async fn ingest(args: &IngestArgs) -> Result<()> {
    for backend in args.store.backends() {
        let dir = args.dir.join(backend.name().to_lowercase());
        println!("# {}\n", backend.name());
        println!("## Store writer (record_event, group commit, durable commits)\n");
        println!("| writers | events | seconds | events/s | writes per commit |");
        println!("|---:|---:|---:|---:|---:|");
        let mut rate_256 = 0.0;
        for writers in [1usize, 16, 256] {
            let events = if writers == 1 {
                args.events / 10
            } else {
                args.events
            };
            let dir = dir.join(format!("writers-{writers}"));
            let (secs, rate, per_commit) = store_writers(&dir, backend, writers, events).await?;
            println!("| {writers} | {events} | {secs:.2} | {rate:.0} | {per_commit:.1} |");
            rate_256 = rate;
        }
        println!(
            "\n## The ceiling: the same rows in plain batched transactions ({})\n",
            match backend {
                Backend::Sqlite => "one prepared statement per row",
                Backend::Postgres(_) => "multi-row statements, one per table per batch",
            }
        );
        println!("| rows per commit | rows | seconds | rows/s |\n|---:|---:|---:|---:|");
        let mut ceiling = 0.0;
        for per_commit in [1024u64, 256] {
            let dir = dir.join(format!("plain-{per_commit}"));
            let (secs, rate) = plain_rows(&dir, backend, args.events, per_commit).await?;
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
        http_submissions(&dir.join("http"), backend, args.messages, args.clients).await?;
    }
    Ok(())
}

/// A store with one tenant and 256 queued deliveries to write events for.
async fn seeded_store(
    dir: &Path,
    backend: Backend<'_>,
) -> Result<(BenchStore, TenantId, Vec<DeliveryId>)> {
    let opened = backend.open(dir).await?;
    let store = &opened.store;
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
    Ok((opened, tenant, deliveries))
}

/// Returns seconds, events per second and the mean number of writes that
/// shared one commit.
async fn store_writers(
    dir: &Path,
    backend: Backend<'_>,
    writers: usize,
    events: u64,
) -> Result<(f64, f64, f64)> {
    let (opened, tenant, deliveries) = seeded_store(dir, backend).await?;
    let store = opened.store.clone();
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

/// The ceiling for the store writer's rows on `backend`: see
/// [`plain_sqlite`] and [`postgres::events_ceiling`].
async fn plain_rows(
    dir: &Path,
    backend: Backend<'_>,
    rows: u64,
    per_commit: u64,
) -> Result<(f64, f64)> {
    let (opened, tenant, ids) = seeded_store(dir, backend).await?;
    let mut deliveries = Vec::with_capacity(ids.len());
    for id in &ids {
        deliveries.push(
            opened
                .store
                .delivery(&tenant, id)
                .await?
                .context("seeded delivery")?,
        );
    }
    let BenchStore { store, database } = opened;
    drop(store);
    match database {
        None => plain_sqlite(dir, &tenant, deliveries, rows, per_commit).await,
        Some(database) => {
            postgres::events_ceiling(database.url(), &tenant, deliveries, rows, per_commit).await
        }
    }
}

/// The ceiling: the rows `record_event` writes for the same load, by one
/// prepared statement in plain transactions of `per_commit` rows. Same
/// database, schema, indexes and connection settings as the store; each row
/// carries its delivery's real message id, recipient and sender (so every
/// index sees the same keys as the writer's rows) and the same `details`
/// JSON; and, as the fold does, the first `opened` event of each delivery
/// also updates its status columns. No savepoints, no reads, no checkpoint
/// while timing: the most generous plain-SQLite number for these rows.
async fn plain_sqlite(
    dir: &Path,
    tenant: &TenantId,
    deliveries: Vec<posthorn_store::DeliveryRecord>,
    rows: u64,
    per_commit: u64,
) -> Result<(f64, f64)> {
    let (dir, tenant) = (dir.to_owned(), tenant.clone());
    tokio::task::spawn_blocking(move || {
        let conn = posthorn_store::sqlite::raw_connection(&dir, posthorn_core::config::Synchronous::Full)?;
        let insert = "INSERT INTO events (id, tenant_id, delivery_id, message_id, recipient, sender, kind, occurred_at, \
                      recorded_at, source, details, external_id, anomaly, outside_window, seq) \
                      VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'opened', ?7, ?7, 'tracker', ?8, NULL, NULL, 0, ?9)";
        // Sequence numbers as the writer gives them: one per event, the
        // last one kept once per commit.
        let mut seq: i64 = conn.query_row("SELECT last FROM event_sequence", [], |r| r.get(0))?;
        let status = "UPDATE deliveries SET engagement_status = 'opened', engagement_event_id = ?1, \
                      engagement_occurred_at = ?2, updated_at = ?2 WHERE id = ?3";
        let details = EventDetails::Opened(Engagement::default()).to_json().to_string();
        let mut opened = vec![false; deliveries.len()];
        let start = Instant::now();
        let mut written = 0u64;
        while written < rows {
            let tx = conn.unchecked_transaction()?;
            {
                let mut insert = tx.prepare_cached(insert)?;
                let mut status = tx.prepare_cached(status)?;
                for _ in 0..per_commit.min(rows - written) {
                    let now = SystemClock.now_ms();
                    let i = (written % deliveries.len() as u64) as usize;
                    let d = &deliveries[i];
                    let id = EventId::generate();
                    seq += 1;
                    insert.execute((
                        id.as_str(),
                        tenant.as_str(),
                        d.id.as_str(),
                        d.message_id.as_str(),
                        d.recipient.as_str(),
                        d.sender.as_str(),
                        now,
                        details.as_str(),
                        seq,
                    ))?;
                    if !opened[i] {
                        opened[i] = true;
                        status.execute((id.as_str(), now, d.id.as_str()))?;
                    }
                    written += 1;
                }
                tx.prepare_cached("UPDATE event_sequence SET last = ?1")?.execute([seq])?;
            }
            tx.commit()?;
        }
        let secs = start.elapsed().as_secs_f64();
        Ok((secs, rows as f64 / secs))
    })
    .await?
}

async fn http_submissions(
    dir: &Path,
    backend: Backend<'_>,
    messages: u64,
    clients: usize,
) -> Result<()> {
    // This measures ingest: no delivery attempts (and no DNS) meanwhile.
    let (args, _database) = serve_store(backend)?;
    let child = Child::start(
        dir,
        &args,
        &[("POSTHORN_DELIVERY__ENABLED", "false")],
        clients,
    )
    .await?;
    let url = format!("{}/v1/messages", child.base);
    let text = "Hello! ".repeat(2048 / 7);
    let warmup = (messages / 20).max(100);
    submit_all(&child.client, &url, &child.key, warmup, clients, 1, &text).await?;
    let start = Instant::now();
    let mut latencies =
        submit_all(&child.client, &url, &child.key, messages, clients, 1, &text).await?;
    let secs = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)] as f64 / 1000.0
    };
    let rss_kib = peak_rss_kib(child.pid).unwrap_or(0);
    println!("| clients | messages | seconds | messages/s | p50 ms | p99 ms | server peak RSS |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {clients} | {messages} | {secs:.2} | {:.0} | {:.2} | {:.2} | {:.1} MiB |",
        messages as f64 / secs,
        pct(0.50),
        pct(0.99),
        rss_kib as f64 / 1024.0
    );
    child.stop().await;
    Ok(())
}

/// The `serve` arguments for a fresh store on `backend`, and the scratch
/// database to keep until the server has stopped.
fn serve_store(backend: Backend<'_>) -> Result<(Vec<String>, Option<postgres::ScratchDatabase>)> {
    Ok(match backend {
        Backend::Sqlite => (Vec::new(), None),
        Backend::Postgres(server) => {
            let database = postgres::ScratchDatabase::create(server)?;
            (database.serve_args(), Some(database))
        }
    })
}

/// A loopback port nothing listens on (yet).
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits until the server at `base` answers `GET /healthz`.
async fn wait_ready(base: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{base}/healthz")).await.is_err() {
        if Instant::now() > deadline {
            bail!("{base} did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Peak resident set size of a process (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU time (user + system) `pid` has used so far, in microseconds, from
/// `/proc/PID/stat` (fields 14 and 15, in clock ticks: `USER_HZ`, which
/// Linux fixes at 100 for user space on the architectures we run on).
fn cpu_micros(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let mut fields = after_name.split(' ').skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((user + system) * 10_000)
}

/// A running `posthorn serve` child for benchmarks.
struct Child {
    process: tokio::process::Child,
    pid: u32,
    base: String,
    key: String,
    client: reqwest::Client,
}

impl Child {
    async fn start(
        dir: &Path,
        args: &[String],
        env: &[(&str, &str)],
        clients: usize,
    ) -> Result<Child> {
        let port = free_port()?;
        let process = tokio::process::Command::new(std::env::current_exe()?)
            .args([
                "serve",
                "--submission",
                "off",
                "--http",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir)
            .args(args)
            .envs(env.iter().copied())
            .env("POSTHORN_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(log_file(dir, "serve")?)
            .kill_on_drop(true)
            .spawn()
            .context("starting posthorn serve")?;
        let pid = process.id().context("child pid")?;
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(clients)
            .build()?;
        wait_ready(&base).await?;
        let key = std::fs::read_to_string(dir.join(posthorn_server::app::INITIAL_KEY_FILE))?
            .trim()
            .to_owned();
        Ok(Child {
            process,
            pid,
            base,
            key,
            client,
        })
    }

    /// `posthorn_delivery_outcomes_total` by outcome, from one scrape.
    async fn outcomes(&self) -> Result<std::collections::HashMap<String, u64>> {
        let text = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter_map(|l| l.strip_prefix("posthorn_delivery_outcomes_total{outcome=\""))
            .filter_map(|rest| {
                let (kind, value) = rest.split_once("\"} ")?;
                Some((kind.to_owned(), value.trim().parse().ok()?))
            })
            .collect())
    }

    /// CPU seconds used so far (user + system).
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
            + fields
                .get(12)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
        ticks / 100.0
    }

    async fn stop(mut self) {
        let _ = self.process.start_kill();
        let _ = self.process.wait().await;
    }
}

fn find_program(name: &str) -> Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| {
            format!("{name} is needed (Debian package postfix); ./scripts/test installs it")
        })
}

/// A Postfix smtp-sink on a free loopback port, not dumping anything; what
/// it says goes to `sink.log` in `dir`.
fn start_sink(
    dir: &Path,
    options: &[&str],
) -> Result<(tokio::process::Child, std::net::SocketAddr)> {
    let addr: std::net::SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let child = tokio::process::Command::new(find_program("smtp-sink")?)
        .args(["-u", "nobody"])
        .args(options)
        .arg(addr.to_string())
        .arg("1024")
        .stdout(log_file(dir, "sink")?)
        .stderr(log_file(dir, "sink-errors")?)
        .kill_on_drop(true)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            bail!("smtp-sink did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((child, addr))
}

async fn delivery(args: &DeliveryArgs) -> Result<()> {
    let (_sink, sink_addr) = start_sink(&args.dir, &[])?;

    // (a) The SMTP ceiling: Postfix talking to itself.
    let start = Instant::now();
    let status = tokio::process::Command::new(find_program("smtp-source")?)
        .args(["-s", "32", "-m", &args.messages.to_string(), "-l", "2048"])
        .args(["-f", "bench@sender.example", "-t", "user@example.com"])
        .arg(sink_addr.to_string())
        .stdout(log_file(&args.dir, "smtp-source")?)
        .stderr(log_file(&args.dir, "smtp-source-errors")?)
        .status()
        .await?;
    if !status.success() {
        bail!("smtp-source failed");
    }
    let ceiling_secs = start.elapsed().as_secs_f64();
    let ceiling = args.messages as f64 / ceiling_secs;

    // (b) The same messages through Posthorn: API in, SMTP out; (c)
    // fan-out: 10 recipients per message. On each store asked for.
    let route = vec!["--route".to_owned(), format!("example.com={sink_addr}")];
    let text = "Hello! ".repeat(2048 / 7);
    let mut runs = Vec::new();
    for backend in args.store.backends() {
        let (store_args, _database) = serve_store(backend)?;
        let serve_args = [route.clone(), store_args].concat();
        let dir = args.dir.join(backend.name().to_lowercase());
        let (secs_b, cpu_b) =
            end_to_end(&dir.join("e2e"), &serve_args, args.messages, 1, &text).await?;
        // A store of its own, as the SQLite run has its own directory.
        let (fanout_store_args, _fanout_database) = serve_store(backend)?;
        let fanout_args = [route.clone(), fanout_store_args].concat();
        let (secs_c, cpu_c) = end_to_end(
            &dir.join("fanout"),
            &fanout_args,
            args.fanout_messages,
            10,
            &text,
        )
        .await?;
        runs.push((backend.name(), secs_b, cpu_b, secs_c, cpu_c));
    }

    println!("## SMTP delivery end to end (API in, SMTP out to smtp-sink, every event durable)\n");
    println!("| run | messages | deliveries | seconds | deliveries/s | CPU ms per delivery |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| smtp-source → smtp-sink (ceiling, 32 sessions) | {} | {} | {ceiling_secs:.2} | {ceiling:.0} | - |",
        args.messages, args.messages
    );
    let row = |name: &str, messages: u64, per: u64, secs: f64, cpu: f64| {
        let deliveries = messages * per;
        println!(
            "| {name} | {messages} | {deliveries} | {secs:.2} | {:.0} | {:.3} |",
            deliveries as f64 / secs,
            1000.0 * cpu / deliveries as f64
        );
    };
    for (name, secs_b, cpu_b, secs_c, cpu_c) in &runs {
        row(
            &format!("Posthorn on {name}, 1 recipient"),
            args.messages,
            1,
            *secs_b,
            *cpu_b,
        );
        row(
            &format!("Posthorn on {name}, 10 recipients"),
            args.fanout_messages,
            10,
            *secs_c,
            *cpu_c,
        );
    }
    for (name, secs_b, ..) in &runs {
        println!(
            "\nRatio (b)/(a) on {name}: {:.0} %",
            100.0 * (args.messages as f64 / secs_b) / ceiling
        );
    }
    println!();

    if let (Some(server), true) = (&args.store.store, args.vacuum_hold_messages > 0) {
        vacuum_hold(&args.dir, server, &route, args.vacuum_hold_messages, &text).await?;
    }

    // (d) Memory with a large queue: the sink answers DATA after an hour.
    let (_slow, slow_addr) = start_sink(&args.dir.join("queued"), &["-w", "3600"])?;
    let dir = args.dir.join("queued");
    let child = Child::start(
        &dir,
        &["--route".to_owned(), format!("example.com={slow_addr}")],
        &[],
        64,
    )
    .await?;
    let url = format!("{}/v1/messages", child.base);
    submit_all(&child.client, &url, &child.key, args.queued, 64, 1, &text).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = peak_rss_kib(child.pid).unwrap_or(0);
    println!(
        "Peak RSS of serve with {} deliveries queued: {:.1} MiB",
        args.queued,
        rss as f64 / 1024.0
    );
    child.stop().await;
    Ok(())
}

/// The same end-to-end run on PostgreSQL twice: plainly, then with a
/// transaction holding back vacuum from before the first submission to
/// the last delivery.
async fn vacuum_hold(
    dir: &Path,
    server: &str,
    route: &[String],
    messages: u64,
    text: &str,
) -> Result<()> {
    println!("## Delivery on PostgreSQL while a transaction holds back vacuum\n");
    println!("| run | messages | seconds | deliveries/s | dead rows at the end |");
    println!("|---|---:|---:|---:|---:|");
    let mut rates = Vec::new();
    for held in [false, true] {
        let database = postgres::ScratchDatabase::create(server)?;
        let serve_args = [route.to_vec(), database.serve_args()].concat();
        let dir = dir.join(if held { "vacuum-held" } else { "vacuum-free" });
        // The schema first, so the snapshot can read it.
        // (`connect` works on a thread of its own; the store closes its
        // connections off the runtime when dropped.)
        drop(PgStore::connect(
            database.url(),
            &StoreConfig::default(),
            StoreRules::default(),
        )?);
        let hold = if held {
            Some(postgres::VacuumHold::start(database.url())?)
        } else {
            None
        };
        let (secs, _) = end_to_end(&dir, &serve_args, messages, 1, text).await?;
        let dead = postgres::dead_rows(database.url()).await?;
        drop(hold);
        let rate = messages as f64 / secs;
        rates.push(rate);
        println!(
            "| {} | {messages} | {secs:.1} | {rate:.0} | {dead} |",
            if held {
                "vacuum held back"
            } else {
                "vacuum free"
            }
        );
    }
    println!(
        "\nThroughput with vacuum held back: {:.0} % of the free run.\n",
        100.0 * rates[1] / rates[0]
    );
    Ok(())
}

/// Submits `messages` (each to `per_message` recipients) and waits until all
/// their deliveries are `delivered`; returns seconds and server CPU seconds.
async fn end_to_end(
    dir: &Path,
    args: &[String],
    messages: u64,
    per_message: u64,
    text: &str,
) -> Result<(f64, f64)> {
    let child = Child::start(dir, args, &[], 64).await?;
    let url = format!("{}/v1/messages", child.base);
    let expected = messages * per_message;
    let cpu_before = child.cpu_seconds();
    let start = Instant::now();
    submit_all(
        &child.client,
        &url,
        &child.key,
        messages,
        64,
        per_message,
        text,
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        // One scrape for both numbers, so they describe the same moment.
        let outcomes = child.outcomes().await?;
        let delivered = outcomes.get("delivered").copied().unwrap_or(0);
        let other: Vec<_> = outcomes
            .iter()
            .filter(|(k, _)| k.as_str() != "delivered")
            .collect();
        if !other.is_empty() {
            bail!("deliveries that did not end delivered: {other:?}");
        }
        if delivered >= expected {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {delivered} of {expected} delivered after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = child.cpu_seconds() - cpu_before;
    child.stop().await;
    Ok((secs, cpu))
}

/// Sends `total` submissions (each to `per_message` recipients) from
/// `clients` concurrent tasks; returns each request's latency in microseconds.
async fn submit_all(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    total: u64,
    clients: usize,
    per_message: u64,
    text: &str,
) -> Result<Vec<u64>> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, next, url, key, text) = (
            client.clone(),
            next.clone(),
            url.to_owned(),
            key.to_owned(),
            text.to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let to: Vec<String> = (0..per_message).map(|r| format!("user{i}.{r}@example.com")).collect();
                let body = serde_json::json!({"from": "bench@sender.example", "to": to, "subject": format!("Benchmark {i}"), "text": text});
                let started = Instant::now();
                let response = client.post(&url).bearer_auth(&key).json(&body).send().await?;
                let status = response.status();
                response.bytes().await?;
                if status != reqwest::StatusCode::ACCEPTED {
                    bail!("submission answered {status}");
                }
                latencies.push(started.elapsed().as_micros() as u64);
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
