//! Crash consistency: `posthorn serve` is killed with SIGKILL at a random
//! moment while it takes API and SMTP submissions, delivers to Postfix's
//! `smtp-sink`, records opens and clicks and reads returned mail through its
//! inbound MX, while a fifth of its mail waits for a domain it cannot reach
//! yet (deferred and retried across the kills); then it is started again on
//! the same data directory, that domain now reachable, left to settle, and
//! checked. A run kills once during the load, sometimes again soon after a
//! restart, and sometimes once more while `serve` starts. After the last
//! start:
//!
//! - every submission answered (202, or 250 after DATA) is stored, with
//!   each of its recipients;
//! - every copy the sink received has its `delivered` event, and no
//!   delivery was sent more than once more per kill;
//! - no delivery that had a verdict stored at a kill is sent again;
//! - every open and click answered to a client (200, 302) is stored, and
//!   every returned message answered with 250 is kept with its bounce;
//! - each delivery's stored status (and the API's) is the fold of its
//!   stored events.
//!
//! `POSTHORN_CRASH_RUNS` runs (default 5, the CI version); the first run's
//! seed is `POSTHORN_CRASH_SEED` (random if unset), each next run's one more.
//! A seed decides the kill moments, the mix of the load and what the readers
//! of copies do; the threads' interleaving is the machine's, so a replay
//! repeats the scenario, not every byte. Each run prints its seed and the
//! command that replays it.

mod common;

use common::clients::*;
use common::*;
use posthorn_core::event::EventDetails;
use posthorn_core::status::{DeliveryStatus, EngagementStatus, FoldInput};
use posthorn_core::{DeliveryState, EventId, EventKind};
use posthorn_testkit::{eventually, free_port, peer, read_dir_texts};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rusqlite::{Connection, OpenFlags};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Links in mail point here; the tracker is reached at the server's address
/// of the moment (it changes with each start).
const PUBLIC_URL: &str = "http://track.test";
const DATABASE: &str = "posthorn.db";
const HTML: &str =
    "<html><body>\n<p>Hello</p>\n<a href=\"https://shop.example/a\">A</a>\n</body></html>";

#[test]
fn kill_9_at_random_moments_loses_nothing_answered_and_sends_no_verdict_again() {
    if peer("smtp-sink").is_none() {
        return;
    }
    let runs: u64 = env_number("POSTHORN_CRASH_RUNS").unwrap_or(5);
    let first_seed =
        env_number("POSTHORN_CRASH_SEED").unwrap_or_else(|| rand::rng().random::<u32>() as u64);
    println!(
        "crash campaign: {runs} runs, seeds {first_seed}..{}",
        first_seed + runs
    );
    let campaign = Instant::now();
    // Answered API deliveries, SMTP messages, hits, returned messages.
    let mut totals = [0usize; 4];
    for i in 0..runs {
        let seed = first_seed + i;
        println!(
            "run {}/{runs}: seed {seed} (replay: POSTHORN_CRASH_SEED={seed} POSTHORN_CRASH_RUNS=1 \
             cargo test -p posthorn --test crash -- --nocapture)",
            i + 1
        );
        let started = Instant::now();
        let (report, counts) = run(seed);
        for (total, n) in totals.iter_mut().zip(counts) {
            *total += n;
        }
        println!(
            "run {}/{runs}: seed {seed} passed in {:.1} s: {report}",
            i + 1,
            started.elapsed().as_secs_f64()
        );
    }
    println!(
        "crash campaign: {runs} runs passed in {:.1} s",
        campaign.elapsed().as_secs_f64()
    );
    // A load that never got an answer would make its checks pass vacuously.
    assert!(
        runs == 0 || totals.iter().all(|n| *n > 0),
        "some kind of load was never answered (API deliveries, SMTP messages, hits, \
         returned messages): {totals:?}"
    );
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text} is not a number")),
    )
}

/// What clients were answered before the kill: only these must survive.
#[derive(Default)]
struct Answered {
    /// API deliveries: (delivery id, recipient).
    api: Vec<(String, String)>,
    /// SMTP submissions: (message id, recipients accepted at RCPT).
    smtp: Vec<(String, Vec<String>)>,
    /// Tracker hits answered 200 (opens) or 302 (clicks), per recipient.
    hits: HashMap<(String, EventKind), usize>,
    /// Returned mail answered 250: (inbound id, recipient it reports on).
    returned: Vec<(String, String)>,
}

type Ledger = Arc<Mutex<Answered>>;

/// One run: its report line and what was answered (API deliveries, SMTP
/// messages, hits, returned messages).
fn run(seed: u64) -> (String, [usize; 4]) {
    let mut rng = StdRng::seed_from_u64(seed);
    let sink = Sink::start(&[]).expect("smtp-sink");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let zone = zone_file(dir.path(), "");
    // later.example cannot be reached until the last start (nothing
    // listens on its port): its deliveries are deferred and retried across
    // the kills, and delivered at the end.
    let unreachable = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let args_with = |later: SocketAddr| {
        let mut args = route_args(
            &[("example.com", sink.addr), ("later.example", later)],
            &zone,
        );
        args.extend(["--submission", "127.0.0.1:0", "--public-url", PUBLIC_URL].map(str::to_owned));
        args
    };
    let args = args_with(unreachable);
    let env = [
        ("POSTHORN_RETRY__FIRST_RETRY", "1s"),
        ("POSTHORN_RETRY__MAX_INTERVAL", "1s"),
    ];
    let shared = Shared::default();
    // One kill in the middle of the load; sometimes a second one soon after
    // the restart, while what the first left unfinished is sent again.
    let kills = rng.random_range(1..=2);
    let mut at_kills = Vec::new();
    let mut kill_moments = Vec::new();
    for k in 0..kills {
        let server = Server::start(&data, &args, &env);
        let load = Load::start(&server, &sink, &shared, &mut rng);
        let kill_after = Duration::from_millis(if k == 0 {
            rng.random_range(300..3000)
        } else {
            rng.random_range(0..1500)
        });
        std::thread::sleep(kill_after);
        server.kill9();
        load.stop();
        kill_moments.push(format!("{} ms", kill_after.as_millis()));
        at_kills.push(AtKill::read(
            &data,
            &dir.path().join(format!("kill-{k}")),
            &sink,
        ));
    }
    // In a third of the runs, one more kill while `serve` starts: opening
    // the database (recovering the log the last kill left), releasing the
    // leases, or the first deliveries.
    if rng.random_bool(1.0 / 3.0) {
        let kill_after = Duration::from_millis(rng.random_range(0..400));
        kill_while_starting(&data, &args, &env, kill_after);
        kill_moments.push(format!("{} ms after a start", kill_after.as_millis()));
        at_kills.push(AtKill::read(
            &data,
            &dir.path().join("kill-starting"),
            &sink,
        ));
    }

    let restarted = Instant::now();
    let server = Server::start(&data, &args_with(sink.addr), &env);
    let db =
        Connection::open_with_flags(data.join(DATABASE), OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    eventually(Duration::from_secs(120), || settled(&db).then_some(()));
    let settle = restarted.elapsed();

    let answered = std::mem::take(&mut *shared.answered.lock().unwrap());
    let copies = copies_per_recipient(&sink.messages());
    let problems = check(&db, &server, &answered, &at_kills, &copies);
    assert!(
        problems.is_empty(),
        "seed {seed}: {} broken invariants after the restart:\n{}",
        problems.len(),
        problems.join("\n")
    );
    let resent = copies.values().filter(|n| **n > 1).count();
    let deferred: i64 = db
        .query_row(
            "SELECT COUNT(DISTINCT delivery_id) FROM events WHERE kind = 'deferred'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let hits: usize = answered.hits.values().sum();
    let counts = [
        answered.api.len(),
        answered.smtp.len(),
        hits,
        answered.returned.len(),
    ];
    let report = format!(
        "killed after {}; answered {} API deliveries, {} SMTP messages, {hits} opens and clicks, \
         {} returned messages; {deferred} deferred; {} verdicts at the last kill; {resent} sent again; \
         settled {:.1} s after the restart",
        kill_moments.join(", then "),
        answered.api.len(),
        answered.smtp.len(),
        answered.returned.len(),
        at_kills.last().map_or(0, |k| k.verdicts.len()),
        settle.as_secs_f64(),
    );
    (report, counts)
}

/// Starts `serve` as [`Server::start`] does and kills it `after` the spawn,
/// whether or not it listens by then.
fn kill_while_starting(data: &Path, args: &[String], env: &[(&str, &str)], after: Duration) {
    let mut child = std::process::Command::new(BIN)
        .args([
            "serve",
            "--http",
            "127.0.0.1:0",
            "--mx",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data)
        .args(args)
        .envs(env.iter().copied())
        .env("POSTHORN_LOG", "error")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// What the load threads of every start share.
#[derive(Default)]
struct Shared {
    answered: Ledger,
    /// Every recipient is used once, so a copy's recipient names its delivery.
    next_recipient: Arc<AtomicU64>,
    /// Copies the readers have already acted on.
    seen: Arc<Mutex<HashSet<String>>>,
}

/// The load threads of one start of the server.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(server: &Server, sink: &Sink, shared: &Shared, rng: &mut StdRng) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let http_addr = address(&server.base);
        let submission = server.submission.expect("submission listens");
        let mx = server.mx.expect("the inbound MX listens");
        let mut threads = Vec::new();
        for _ in 0..rng.random_range(1..=2) {
            let (ledger, stop, next) = (
                shared.answered.clone(),
                stop.clone(),
                shared.next_recipient.clone(),
            );
            let (key, seed) = (server.key.clone(), rng.random());
            threads.push(std::thread::spawn(move || {
                api_load(http_addr, &key, &ledger, &stop, &next, seed)
            }));
        }
        let (ledger, stop_smtp, next) = (
            shared.answered.clone(),
            stop.clone(),
            shared.next_recipient.clone(),
        );
        let (key, seed) = (server.key.clone(), rng.random());
        threads.push(std::thread::spawn(move || {
            smtp_load(submission, &key, &ledger, &stop_smtp, &next, seed)
        }));
        let (ledger, stop_reader, seen) =
            (shared.answered.clone(), stop.clone(), shared.seen.clone());
        let (dumps, seed) = (sink.dumps_dir().to_owned(), rng.random());
        threads.push(std::thread::spawn(move || {
            read_copies(&dumps, http_addr, mx, &ledger, &seen, &stop_reader, seed)
        }));
        Load { stop, threads }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("a load thread panicked");
        }
    }
}

/// What was durable at a kill, and what the sink had then.
struct AtKill {
    /// Deliveries (by recipient) with a verdict stored.
    verdicts: HashSet<String>,
    copies: HashMap<String, usize>,
}

impl AtKill {
    /// Reads a copy of the database files (the restart must find them as
    /// the kill left them).
    fn read(data: &Path, snapshot: &Path, sink: &Sink) -> AtKill {
        std::fs::create_dir(snapshot).unwrap();
        for suffix in ["", "-wal"] {
            let from = data.join(format!("{DATABASE}{suffix}"));
            if from.exists() {
                std::fs::copy(&from, snapshot.join(format!("{DATABASE}{suffix}"))).unwrap();
            }
        }
        AtKill {
            verdicts: verdicts(&Connection::open(snapshot.join(DATABASE)).unwrap()),
            copies: copies_per_recipient(&sink.messages()),
        }
    }
}

// --- the load ---------------------------------------------------------------

/// Submits through the API until stopped; records each 202's deliveries.
fn api_load(
    addr: SocketAddr,
    key: &str,
    ledger: &Ledger,
    stop: &AtomicBool,
    next: &AtomicU64,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    while !stop.load(Ordering::Relaxed) {
        let to: Vec<String> = (0..rng.random_range(1..=3))
            .map(|_| {
                let domain = if rng.random_bool(0.2) {
                    "later.example"
                } else {
                    "example.com"
                };
                format!("r{}@{domain}", next.fetch_add(1, Ordering::Relaxed))
            })
            .collect();
        let body = json!({"from": "Shop <shop@sender.example>", "to": to, "subject": "News",
            "html": HTML, "text": "Hello"});
        let Ok((status, answer)) = http(
            addr,
            "POST",
            "/v1/messages",
            Some(key),
            Some(&body.to_string()),
        ) else {
            continue; // killed mid-request: not answered
        };
        assert_eq!(status, 202, "{answer}");
        let receipt: Value = serde_json::from_str(&answer).unwrap();
        let mut ledger = ledger.lock().unwrap();
        for d in receipt["deliveries"].as_array().unwrap() {
            ledger.api.push((
                d["id"].as_str().unwrap().to_owned(),
                d["recipient"].as_str().unwrap().to_owned(),
            ));
        }
    }
}

/// Submits over SMTP (AUTH PLAIN on one connection, a new one after an
/// error) until stopped; records each message answered 250 after DATA.
fn smtp_load(
    addr: SocketAddr,
    key: &str,
    ledger: &Ledger,
    stop: &AtomicBool,
    next: &AtomicU64,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut session: Option<SmtpClient> = None;
    while !stop.load(Ordering::Relaxed) {
        let client = match session.take() {
            Some(c) => c,
            None => match SmtpClient::connect(addr).and_then(|mut c| {
                c.expect("EHLO load.test", 250)?;
                c.expect(&format!("AUTH PLAIN {}", auth_plain(key)), 235)?;
                Ok(c)
            }) {
                Ok(c) => c,
                Err(_) => continue,
            },
        };
        let to: Vec<String> = (0..rng.random_range(1..=2))
            .map(|_| format!("r{}@example.com", next.fetch_add(1, Ordering::Relaxed)))
            .collect();
        let message = format!(
            "From: s@sender.example\r\nTo: {}\r\nSubject: over SMTP\r\n\r\nHello\r\n",
            to.join(", ")
        );
        let mut client = client;
        if let Ok(Some(id)) = client.send("s@sender.example", &to, &message) {
            ledger.lock().unwrap().smtp.push((id, to));
            session = Some(client);
        }
    }
}

/// Reads the sink's copies as they arrive: opens and clicks some of the
/// API's (through the tracker URLs in them) and returns a report to the
/// inbound MX for some, at the copy's VERP address. Records what was
/// answered.
fn read_copies(
    dumps: &Path,
    http_addr: SocketAddr,
    mx: SocketAddr,
    ledger: &Ledger,
    seen: &Mutex<HashSet<String>>,
    stop: &AtomicBool,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    while !stop.load(Ordering::Relaxed) {
        for copy in read_dir_texts(dumps) {
            let Some(recipient) = envelope(&copy, "X-Rcpt-Args:") else {
                continue;
            };
            if !seen.lock().unwrap().insert(recipient.clone()) {
                continue;
            }
            let unfolded = copy.replace("=\r\n", "").replace("=\n", "");
            let mut hits = Vec::new();
            for _ in 0..rng.random_range(0..=2) {
                hits.extend(
                    tracker_urls(&unfolded, PUBLIC_URL, "o")
                        .into_iter()
                        .map(|u| (u, EventKind::Opened)),
                );
            }
            if rng.random_bool(0.5) {
                hits.extend(
                    tracker_urls(&unfolded, PUBLIC_URL, "c")
                        .into_iter()
                        .map(|u| (u, EventKind::Clicked)),
                );
            }
            for (url, kind) in hits {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let path = &url[PUBLIC_URL.len()..];
                let want = if kind == EventKind::Opened { 200 } else { 302 };
                if let Ok((status, _)) = http(http_addr, "GET", path, None, None) {
                    assert_eq!(status, want, "{url}");
                    *ledger
                        .lock()
                        .unwrap()
                        .hits
                        .entry((recipient.clone(), kind))
                        .or_default() += 1;
                }
            }
            if rng.random_bool(0.15) {
                let Some(return_path) = envelope(&copy, "X-Mail-Args:") else {
                    continue;
                };
                if let Ok(Some(id)) = return_report(mx, &return_path, &recipient) {
                    ledger
                        .lock()
                        .unwrap()
                        .returned
                        .push((id, recipient.clone()));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The address in a sink's envelope line (`X-Rcpt-Args: <a@b> ...`).
fn envelope(copy: &str, name: &str) -> Option<String> {
    let line = copy.lines().find(|l| l.starts_with(name))?;
    let start = line.find('<')? + 1;
    let end = start + line[start..].find('>')?;
    Some(line[start..end].to_ascii_lowercase())
}

/// Sends an RFC 3464 hard bounce about `recipient` to `return_path`; the
/// inbound id named by the 250, `None` if refused.
fn return_report(
    mx: SocketAddr,
    return_path: &str,
    recipient: &str,
) -> std::io::Result<Option<String>> {
    let report = format!(
        "From: MAILER-DAEMON@mx.example.com\r\nTo: {return_path}\r\n\
         Subject: Delivery Status Notification (Failure)\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n\r\n\
         --b\r\nContent-Type: message/delivery-status\r\n\r\n\
         Reporting-MTA: dns; mx.example.com\r\n\r\n\
         Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n\
         Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: user unknown\r\n\r\n--b--\r\n"
    );
    let mut client = SmtpClient::connect(mx)?;
    client.expect("EHLO mx.example.com", 250)?;
    let kept = client.send("", &[return_path.to_owned()], &report)?;
    Ok(kept)
}

// --- the checks -------------------------------------------------------------

/// Deliveries (by recipient) with a verdict event stored.
fn verdicts(db: &Connection) -> HashSet<String> {
    let mut stmt = db
        .prepare(
            "SELECT DISTINCT d.recipient FROM events e JOIN deliveries d ON d.id = e.delivery_id \
             WHERE e.kind IN ('delivered', 'bounced', 'expired', 'failed')",
        )
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Copies the sink holds, per recipient (every recipient is used once).
fn copies_per_recipient(messages: &[String]) -> HashMap<String, usize> {
    let mut copies = HashMap::new();
    for m in messages {
        if let Some(r) = envelope(m, "X-Rcpt-Args:") {
            *copies.entry(r).or_default() += 1;
        }
    }
    copies
}

/// Nothing left to send and every delivery has its verdict.
fn settled(db: &Connection) -> bool {
    let count = |sql: &str| db.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap_or(-1);
    count("SELECT COUNT(*) FROM send_queue") == 0
        && count(
            "SELECT COUNT(*) FROM deliveries WHERE delivery_status IS NULL \
             OR delivery_status NOT IN ('delivered', 'bounced')",
        ) == 0
}

struct Stored {
    id: String,
    recipient: String,
    delivery_status: Option<String>,
    bounce_type: Option<String>,
    delivery_event_id: Option<String>,
    engagement_status: Option<String>,
    window_ends_at: i64,
}

struct StoredEvent {
    id: String,
    kind: String,
    occurred_at: i64,
    details: String,
    source: String,
}

fn check(
    db: &Connection,
    server: &Server,
    answered: &Answered,
    at_kills: &[AtKill],
    copies: &HashMap<String, usize>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let deliveries: Vec<Stored> = {
        let mut stmt = db
            .prepare(
                "SELECT id, recipient, delivery_status, bounce_type, delivery_event_id, \
                 engagement_status, window_ends_at FROM deliveries",
            )
            .unwrap();
        stmt.query_map([], |r| {
            Ok(Stored {
                id: r.get(0)?,
                recipient: r.get(1)?,
                delivery_status: r.get(2)?,
                bounce_type: r.get(3)?,
                delivery_event_id: r.get(4)?,
                engagement_status: r.get(5)?,
                window_ends_at: r.get(6)?,
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    };
    let mut events: HashMap<String, Vec<StoredEvent>> = HashMap::new();
    {
        let mut stmt = db
            .prepare("SELECT delivery_id, id, kind, occurred_at, details, source FROM events ORDER BY id")
            .unwrap();
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    StoredEvent {
                        id: r.get(1)?,
                        kind: r.get(2)?,
                        occurred_at: r.get(3)?,
                        details: r.get(4)?,
                        source: r.get(5)?,
                    },
                ))
            })
            .unwrap();
        for row in rows {
            let (delivery, event) = row.unwrap();
            events.entry(delivery).or_default().push(event);
        }
    }
    let by_recipient: HashMap<&str, &Stored> = deliveries
        .iter()
        .map(|d| (d.recipient.as_str(), d))
        .collect();
    let by_id: HashMap<&str, &Stored> = deliveries.iter().map(|d| (d.id.as_str(), d)).collect();
    let no_events = Vec::new();
    let events_of = |d: &Stored| events.get(&d.id).unwrap_or(&no_events);
    let count_kind =
        |d: &Stored, kind: &str| events_of(d).iter().filter(|e| e.kind == kind).count();

    // Every answered submission is there, with each of its recipients.
    for (id, recipient) in &answered.api {
        match by_id.get(id.as_str()) {
            Some(d) if d.recipient == *recipient => {}
            Some(d) => problems.push(format!(
                "API delivery {id} is stored for {}, answered for {recipient}",
                d.recipient
            )),
            None => problems.push(format!(
                "API delivery {id} ({recipient}) was answered 202 and is lost"
            )),
        }
    }
    for (message, recipients) in &answered.smtp {
        let stored: HashSet<String> = {
            let mut stmt = db
                .prepare("SELECT recipient FROM deliveries WHERE message_id = ?1")
                .unwrap();
            stmt.query_map([message], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let want: HashSet<String> = recipients.iter().cloned().collect();
        if stored != want {
            problems.push(format!(
                "SMTP message {message} was answered 250 for {want:?}; stored: {stored:?}"
            ));
        }
    }

    // Copies: each has its event; sent once more at most; never again
    // after a verdict.
    for (recipient, n) in copies {
        let Some(d) = by_recipient.get(recipient.as_str()) else {
            problems.push(format!(
                "the sink got a copy for {recipient}, whom no delivery is for"
            ));
            continue;
        };
        if count_kind(d, "delivered") == 0 {
            problems.push(format!(
                "delivery {} reached the sink without a delivered event",
                d.id
            ));
        }
        // Each kill may leave one copy without its event: sent once more.
        if *n > 1 + at_kills.len() {
            problems.push(format!(
                "delivery {} reached the sink {n} times ({} kills: {} at most)",
                d.id,
                at_kills.len(),
                1 + at_kills.len()
            ));
        }
        for (k, at_kill) in at_kills.iter().enumerate() {
            // A stored verdict means the sink took a copy; should its file
            // not have been complete when the copies were counted, it was
            // one copy.
            let then = at_kill.copies.get(recipient).copied().unwrap_or(0).max(1);
            if at_kill.verdicts.contains(recipient) && then != *n {
                problems.push(format!(
                    "delivery {} had a verdict at kill {} with {then} copies, and has {n} now: sent again",
                    d.id,
                    k + 1
                ));
            }
        }
    }
    for d in &deliveries {
        if count_kind(d, "delivered") > 0 && !copies.contains_key(&d.recipient) {
            problems.push(format!(
                "delivery {} has a delivered event and the sink has no copy",
                d.id
            ));
        }
    }

    // Hits and returned mail answered to clients are stored.
    for ((recipient, kind), n) in &answered.hits {
        let Some(d) = by_recipient.get(recipient.as_str()) else {
            problems.push(format!("hits for {recipient}, whom no delivery is for"));
            continue;
        };
        let stored = count_kind(d, kind.as_str());
        if stored < *n {
            problems.push(format!(
                "delivery {}: {n} {kind} hits were answered, {stored} are stored",
                d.id
            ));
        }
    }
    for (inbound, recipient) in &answered.returned {
        let kept: i64 = db
            .query_row(
                "SELECT COUNT(*) FROM inbound_messages WHERE id = ?1",
                [inbound],
                |r| r.get(0),
            )
            .unwrap();
        if kept != 1 {
            problems.push(format!(
                "returned message {inbound} was answered 250 and is lost"
            ));
        }
        let bounced = by_recipient.get(recipient.as_str()).is_some_and(|d| {
            events_of(d)
                .iter()
                .any(|e| e.kind == "bounced" && e.source == "inbound-mx")
        });
        if !bounced {
            problems.push(format!(
                "returned message {inbound} about {recipient} left no bounce"
            ));
        }
    }

    // Statuses are the fold of the stored events, in the store and the API.
    let http_addr = address(&server.base);
    for d in &deliveries {
        let parsed: Vec<(EventId, i64, EventDetails)> = events_of(d)
            .iter()
            .map(|e| {
                let kind: EventKind = e.kind.parse().unwrap();
                let details =
                    EventDetails::from_json(kind, serde_json::from_str(&e.details).unwrap())
                        .unwrap();
                (EventId::parse(&e.id).unwrap(), e.occurred_at, details)
            })
            .collect();
        let folded = DeliveryState::fold(
            d.window_ends_at,
            parsed.iter().map(|(id, occurred_at, details)| FoldInput {
                id,
                occurred_at: *occurred_at,
                details,
            }),
        );
        let stored_delivery = d
            .delivery_status
            .as_deref()
            .and_then(|s| DeliveryStatus::from_parts(s, d.bounce_type.as_deref()));
        let stored_engagement = d
            .engagement_status
            .as_deref()
            .and_then(EngagementStatus::parse)
            .unwrap_or(EngagementStatus::None);
        let folded_event = folded
            .delivery
            .as_ref()
            .map(|v| v.event_id.as_str().to_owned());
        if (stored_delivery, stored_engagement, &d.delivery_event_id)
            != (
                folded.delivery_status(),
                folded.engagement_status(),
                &folded_event,
            )
        {
            problems.push(format!(
                "delivery {}: stored {stored_delivery:?}/{stored_engagement:?} set by {:?}, \
                 the fold of its events gives {:?}/{:?} set by {folded_event:?}",
                d.id,
                d.delivery_event_id,
                folded.delivery_status(),
                folded.engagement_status()
            ));
        }
        match http(
            http_addr,
            "GET",
            &format!("/v1/deliveries/{}", d.id),
            Some(&server.key),
            None,
        ) {
            Ok((200, body)) => {
                let answer: Value = serde_json::from_str(&body).unwrap();
                if answer["status"] != folded.status() {
                    problems.push(format!(
                        "delivery {}: the API says {}, the fold of its events {}",
                        d.id,
                        answer["status"],
                        folded.status()
                    ));
                }
            }
            other => problems.push(format!("GET /v1/deliveries/{}: {other:?}", d.id)),
        }
    }
    problems
}
