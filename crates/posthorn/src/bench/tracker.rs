//! `posthorn bench tracker`: the tracker under load, with `wrk` (Debian
//! package `wrk`) at 64 connections:
//!
//! (a) the ceiling: a bare axum server answering the same 43-byte GIF, in
//!     its own process (`posthorn bench gif-server`, hidden);
//! (b) `GET /o/TOKEN` on a real `posthorn serve`: every hit judged and its
//!     `opened` event durably committed before the answer;
//! (c) `GET /c/TOKEN`: the same, then a 302 to the stored URL.
//!
//! Hits are spread over many deliveries (as real opens are): the seed
//! writes `deliveries` one-recipient messages with one tracked link each,
//! straight into the store, each delivered an hour before (a `delivered`
//! event: opens come from mail that arrived), and signs their tokens with
//! the data directory's secret. Each request names a user agent of its
//! own, so every hit is a new client's and stored as an event (one
//! client's hits on one target past the first 10 are only counted, see
//! `posthorn_track::repeats`, which would measure a cheaper path).

use anyhow::{Context, Result, bail};
use posthorn_core::config::Config;
use posthorn_core::event::{Delivered, EventDetails};
use posthorn_core::{Clock, EventId, EventSource, SystemClock};
use posthorn_store::{AcceptOutcome, NewEvent};
use posthorn_track::{Target, sign};
use std::path::Path;

#[derive(clap::Args)]
pub struct TrackerArgs {
    /// Deliveries the hits are spread over.
    #[arg(long, default_value_t = 20_000)]
    deliveries: usize,
    /// Seconds each wrk run lasts.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    connections: u32,
    #[command(flatten)]
    store: super::StoreArg,
}

/// One wrk run's figures.
struct WrkResult {
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
    errors: u64,
    /// The server's CPU time per answered request, in microseconds (the
    /// server process only; not measured for the ceiling).
    server_cpu_us: Option<f64>,
}

pub async fn tracker(dir: &Path, args: &TrackerArgs) -> Result<()> {
    let wrk = super::find_program("wrk")
        .context("the tracker benchmark uses wrk (apt-get install wrk)")?;
    let script = dir.join("paths.lua");

    // (a) the ceiling.
    let port = super::free_port()?;
    let mut ceiling = tokio::process::Command::new(std::env::current_exe()?)
        .args([
            "bench",
            "gif-server",
            "--http",
            &format!("127.0.0.1:{port}"),
        ])
        .stderr(super::log_file(dir, "gif-server")?)
        .kill_on_drop(true)
        .spawn()?;
    super::wait_ready(&format!("http://127.0.0.1:{port}")).await?;
    write_script(&script, &["/o/anything".to_owned()])?;
    let bare = run_wrk(&wrk, port, &script, args).await?;
    let _ = ceiling.start_kill();
    let _ = ceiling.wait().await;

    // (b) and (c): the tracker of a real server on a seeded store, on
    // each store asked for.
    let mut runs = vec![("(a) bare axum GIF".to_owned(), bare)];
    let mut notes = Vec::new();
    for backend in args.store.backends() {
        let name = backend.name();
        let data = dir.join(name.to_lowercase());
        let seeded = seed(&data, backend, args.deliveries).await?;
        let port = super::free_port()?;
        let mut server = tokio::process::Command::new(std::env::current_exe()?)
            .args(["serve", "--submission", "off", "--mx", "off", "--http"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(&data)
            .args(seeded.serve_args())
            .env("POSTHORN_DELIVERY__ENABLED", "false")
            .env("POSTHORN_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(super::log_file(&data, "serve")?)
            .kill_on_drop(true)
            .spawn()?;
        let pid = server.id().context("server pid")?;
        super::wait_ready(&format!("http://127.0.0.1:{port}")).await?;
        write_script(&script, &seeded.opens)?;
        let open = run_wrk_measuring(&wrk, port, &script, args, pid).await?;
        write_script(&script, &seeded.clicks)?;
        let click = run_wrk_measuring(&wrk, port, &script, args, pid).await?;
        let recorded = events_recorded(port).await?;
        let rss = super::peak_rss_kib(pid).unwrap_or(0);
        let _ = server.start_kill();
        let _ = server.wait().await;
        notes.push(format!(
            "{name}: events recorded by the server: {recorded} (hits answered by (b)+(c): {}); server peak RSS {:.1} MiB",
            open.requests + click.requests - open.errors - click.errors,
            rss as f64 / 1024.0
        ));
        if let Some(database) = &seeded.database {
            // PostgreSQL's own ceiling for the rows an open writes.
            let (_, rate) = super::postgres::events_ceiling(
                database.url(),
                &seeded.tenant,
                seeded.some_deliveries.clone(),
                40_000,
                1024,
            )
            .await?;
            notes.push(format!(
                "{name}: its own ceiling for these rows (opened events, 1,024 per commit, multi-row statements): {rate:.0} rows/s"
            ));
        }
        runs.push((format!("(b) GET /o/TOKEN, durable, {name}"), open));
        runs.push((format!("(c) GET /c/TOKEN, durable, {name}"), click));
    }

    println!(
        "| run | requests | errors | requests/s | p50 ms | p99 ms | of ceiling | server CPU µs/request |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    let bare_rate = runs[0].1.requests_per_second;
    for (name, r) in &runs {
        println!(
            "| {name} | {} | {} | {:.0} | {:.2} | {:.2} | {:.0} % | {} |",
            r.requests,
            r.errors,
            r.requests_per_second,
            r.p50_ms,
            r.p99_ms,
            100.0 * r.requests_per_second / bare_rate,
            r.server_cpu_us
                .map_or("-".to_owned(), |us| format!("{us:.1}")),
        );
    }
    println!();
    for note in notes {
        println!("{note}");
    }
    Ok(())
}

/// A seeded store: the paths to hit, and what the ceiling needs.
struct Seeded {
    opens: Vec<String>,
    clicks: Vec<String>,
    tenant: posthorn_core::TenantId,
    /// The first 256 deliveries, as stored.
    some_deliveries: Vec<posthorn_store::DeliveryRecord>,
    /// The scratch database (PostgreSQL), kept until the run ends.
    database: Option<super::postgres::ScratchDatabase>,
}

impl Seeded {
    fn serve_args(&self) -> Vec<String> {
        self.database
            .as_ref()
            .map(super::postgres::ScratchDatabase::serve_args)
            .unwrap_or_default()
    }
}

/// A store with `n` one-recipient messages, each with one tracked link and
/// delivered an hour ago, on `backend`.
async fn seed(data: &Path, backend: super::Backend<'_>, n: usize) -> Result<Seeded> {
    std::fs::create_dir_all(data)?;
    let secret: [u8; 32] = rand_bytes();
    std::fs::write(
        data.join(posthorn_server::app::SECRET_FILE),
        hex::encode(secret),
    )?;
    let tracking = posthorn_server::tracking::Tracking::new(&secret, &Config::default());
    let super::BenchStore { store, database } = backend.open(data).await?;
    let tenant = store
        .create_tenant("default", SystemClock.now_ms())
        .await?
        .id;
    let mut tasks = tokio::task::JoinSet::new();
    let per_task = n.div_ceil(64);
    for t in 0..64 {
        let (store, tenant) = (store.clone(), tenant.clone());
        tasks.spawn(async move {
            let mut ids = Vec::new();
            for i in (t * per_task)..((t + 1) * per_task).min(n) {
                let mut message = posthorn_store::conformance::message(
                    &tenant,
                    &[&format!("reader{i}@example.com")],
                );
                message.accepted_at = SystemClock.now_ms();
                let message_id = message.id.clone();
                let delivery = match store.accept_message(message).await? {
                    AcceptOutcome::Accepted(r) => r.deliveries[0].id.clone(),
                    other => bail!("seeding: {other:?}"),
                };
                // Delivered an hour ago, as a read message is: pixels and
                // links are fetched from mail that arrived.
                let now = SystemClock.now_ms();
                store
                    .record_event(
                        &tenant,
                        NewEvent {
                            id: EventId::generate(),
                            delivery_id: delivery.clone(),
                            occurred_at: now - 3_600_000,
                            recorded_at: now,
                            source: EventSource::Delivery,
                            details: EventDetails::Delivered(Delivered {
                                reply_text: Some("250 2.0.0 OK".into()),
                                ..Default::default()
                            }),
                            external_id: None,
                        },
                    )
                    .await?;
                ids.push(delivery);
                store
                    .put_message_links(&message_id, vec![format!("https://example.com/p/{i}")])
                    .await?;
            }
            Ok::<_, anyhow::Error>(ids)
        });
    }
    let (mut opens, mut clicks, mut some_deliveries) = (Vec::new(), Vec::new(), Vec::new());
    while let Some(ids) = tasks.join_next().await {
        for id in ids?? {
            if some_deliveries.len() < 256 {
                let delivery = store.delivery(&tenant, &id).await?;
                some_deliveries.extend(delivery);
            }
            opens.push(format!(
                "/o/{}",
                sign(&tracking.keys, &Target::Open(id.clone()))
            ));
            clicks.push(format!(
                "/c/{}",
                sign(&tracking.keys, &Target::Click(id, 0))
            ));
        }
    }
    Ok(Seeded {
        opens,
        clicks,
        tenant,
        some_deliveries,
        database,
    })
}

fn rand_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    bytes
}

/// A wrk script that walks through `paths` round-robin, each thread from its
/// own offset.
fn write_script(path: &Path, paths: &[String]) -> Result<()> {
    let list: Vec<String> = paths.iter().map(|p| format!("\"{p}\"")).collect();
    std::fs::write(
        path,
        format!(
            "local paths = {{{}}}\nlocal i = 0\nfunction setup(thread) thread:set(\"offset\", math.random(#paths)) end\n\
             function init(args) i = offset end\n\
             local n = 0\n\
             function request() i = i % #paths + 1; n = n + 1\n\
               return wrk.format(\"GET\", paths[i], {{[\"User-Agent\"] = \"posthorn-bench/\" .. offset .. \"-\" .. n}}) end\n",
            list.join(",")
        ),
    )?;
    Ok(())
}

/// `run_wrk`, with the CPU time server `pid` spent on the run's requests.
async fn run_wrk_measuring(
    wrk: &Path,
    port: u16,
    script: &Path,
    args: &TrackerArgs,
    pid: u32,
) -> Result<WrkResult> {
    let before = super::cpu_micros(pid);
    let mut result = run_wrk(wrk, port, script, args).await?;
    let after = super::cpu_micros(pid);
    let answered = result.requests.saturating_sub(result.errors).max(1);
    result.server_cpu_us = before
        .zip(after)
        .map(|(b, a)| a.saturating_sub(b) as f64 / answered as f64);
    Ok(result)
}

async fn run_wrk(wrk: &Path, port: u16, script: &Path, args: &TrackerArgs) -> Result<WrkResult> {
    let out = tokio::process::Command::new(wrk)
        .args(["-t2", "--latency"])
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{}s", args.seconds))
        .arg("-s")
        .arg(script)
        .arg(format!("http://127.0.0.1:{port}"))
        .output()
        .await?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    parse_wrk(&text).with_context(|| format!("reading wrk's output:\n{text}"))
}

fn parse_wrk(text: &str) -> Option<WrkResult> {
    let field = |prefix: &str| {
        text.lines().find_map(|l| {
            l.trim()
                .strip_prefix(prefix)
                .map(str::trim)
                .map(str::to_owned)
        })
    };
    let latency = |pct: &str| field(pct).and_then(|v| duration_ms(&v));
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let errors = field("Non-2xx or 3xx responses:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(WrkResult {
        requests_per_second: field("Requests/sec:")?.parse().ok()?,
        p50_ms: latency("50%")?,
        p99_ms: latency("99%")?,
        requests,
        errors,
        server_cpu_us: None,
    })
}

/// wrk's `1.23ms`, `850.00us`, `1.10s`.
fn duration_ms(text: &str) -> Option<f64> {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

async fn events_recorded(port: u16) -> Result<u64> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await?
        .text()
        .await?;
    text.lines()
        .find_map(|l| l.strip_prefix("posthorn_events_recorded_total "))
        .and_then(|v| v.trim().parse().ok())
        .context("no posthorn_events_recorded_total in /metrics")
}

/// `posthorn bench gif-server`: the ceiling, a bare axum server that
/// answers every GET with the tracker's GIF and headers.
pub async fn gif_server(http: &str) -> Result<()> {
    use axum::http::header;
    let app = axum::Router::new().fallback(|| async {
        (
            [
                (header::CONTENT_TYPE, "image/gif"),
                (
                    header::CACHE_CONTROL,
                    "no-store, no-cache, must-revalidate, max-age=0",
                ),
            ],
            posthorn_server::api::PIXEL,
        )
    });
    let listener = tokio::net::TcpListener::bind(http).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_read() {
        let text = "Running 10s test @ http://127.0.0.1:1\n  2 threads and 64 connections\n\
            Latency Distribution\n     50%  610.00us\n     75%    1.00ms\n     90%    2.00ms\n     99%    4.53ms\n\
            1048576 requests in 10.00s, 100.00MB read\nNon-2xx or 3xx responses: 3\nRequests/sec: 104857.60\n";
        let r = parse_wrk(text).unwrap();
        assert_eq!(r.requests, 1_048_576);
        assert_eq!(r.errors, 3);
        assert!((r.p50_ms - 0.61).abs() < 1e-9 && (r.p99_ms - 4.53).abs() < 1e-9);
        assert!((r.requests_per_second - 104_857.6).abs() < 1e-6);
    }
}
