//! Several nodes on one PostgreSQL database, with a real kill (issue #14,
//! "Tests with real parts"): three `posthorn serve --store URL` processes,
//! each with its own data directory, node id and ports, share one fresh
//! database (`POSTHORN_TEST_POSTGRES`) and route `example.com` to one
//! Postfix `smtp-sink`. [`MESSAGES`] messages, one recipient each, are
//! submitted through all three HTTP APIs and all three SMTP submission
//! listeners at once; when half of them have been answered, node B is
//! killed with SIGKILL, and started again a moment later on the same data
//! directory with the same node id (its load waits meanwhile; the other
//! two nodes go on submitting and delivering). Then, once every delivery
//! in the database has its verdict:
//!
//! - every submission answered 202 (API) or 250 after DATA (SMTP) is
//!   stored with its recipient, and every delivery is `delivered` (read in
//!   the database, and a sample through each node's API);
//! - every delivery reached the sink, none more than twice, and only those
//!   node B held a lease on at the kill (in flight there) more than once:
//!   the duplicates are at most the copies in flight on the killed node.
//!   The test prints how many there were;
//! - no delivery that had its verdict stored at the kill reached the sink
//!   again afterwards.
//!
//! Then the tracker: the pixel (and the link) of one delivery is hit in a
//! fixed sequence of clients alternately on node A and node B, the same
//! sequence for another delivery on node A alone, and the two get the
//! same person/machine verdicts, the same stored events and the same
//! engagement.
//!
//! **Hits of one delivery on two nodes, back to back.** The first
//! delivery's hits go to A and B in turn with nothing between them: each
//! is judged on the hits the other node committed just before. (With a
//! tracker cache a node would learn of them only from its commit stream,
//! a moment later, and judged one repeated open too many as stored in a
//! third of the runs; on a shared database the cache is off.)
//!
//! **10,000 messages, as the issue asks.** The test runs in debug builds
//! on two cores that also run PostgreSQL, the sink and the three nodes;
//! since writes commit in groups a run takes about 70 s there (it was
//! 2,400 messages while every write was a transaction of its own, when
//! 10,000 took three minutes). `POSTHORN_MULTINODE_MESSAGES` sets another
//! number.
//!
//! No wall-clock assertions: the waits have generous deadlines.

mod common;

use common::clients::*;
use common::*;
use posthorn_testkit::postgres::TestDatabase;
use posthorn_testkit::{eventually, eventually_ok, peer};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Messages answered across the nodes (see the module's documentation).
const MESSAGES: usize = 10_000;
/// Links in mail point here; tests hit the tracker on a node's own address.
const PUBLIC_URL: &str = "http://track.test";
const HTML: &str =
    "<html><body>\n<p>Hello</p>\n<a href=\"https://shop.example/a\">A</a>\n</body></html>";
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
/// The node killed and started again.
const KILLED: usize = 1;

/// Where a node's clients connect; `None` while it is down.
#[derive(Clone, Copy)]
struct Endpoints {
    http: SocketAddr,
    submission: SocketAddr,
}

type Slot = Arc<Mutex<Option<Endpoints>>>;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Channel {
    Api,
    Smtp,
}

/// A submission answered to its client.
struct Answer {
    /// The delivery id (API) or the message id (SMTP).
    id: String,
    recipient: String,
    node: usize,
    channel: Channel,
}

/// What the load threads share.
#[derive(Default)]
struct Load {
    answered: Mutex<Vec<Answer>>,
    /// Answers so far, and submissions taken on (answered or under way).
    count: AtomicUsize,
    taken: AtomicUsize,
    /// Every recipient is used once, so a copy names its delivery.
    next_recipient: AtomicUsize,
}

impl Load {
    /// Takes on one more submission, unless enough are answered or under
    /// way; `false` when the load is over.
    fn take(&self, goal: usize) -> Option<bool> {
        if self.count.load(Ordering::SeqCst) >= goal {
            return Some(false);
        }
        if self.taken.fetch_add(1, Ordering::SeqCst) >= goal {
            self.taken.fetch_sub(1, Ordering::SeqCst);
            return None; // wait: one under way may still fail
        }
        Some(true)
    }

    fn failed(&self) {
        self.taken.fetch_sub(1, Ordering::SeqCst);
    }

    fn answered(&self, answer: Answer) {
        self.answered.lock().unwrap().push(answer);
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    fn recipient(&self) -> String {
        format!(
            "r{}@example.com",
            self.next_recipient.fetch_add(1, Ordering::SeqCst)
        )
    }
}

struct Node {
    name: &'static str,
    data: PathBuf,
    slot: Slot,
    server: Option<Server>,
}

impl Node {
    fn start(&mut self, args: &[String]) {
        let env = [("POSTHORN_SERVER__NODE_ID", self.name)];
        let server = Server::start(&self.data, args, &env);
        *self.slot.lock().unwrap() = Some(Endpoints {
            http: address(&server.base),
            submission: server.submission.expect("submission listens"),
        });
        self.server = Some(server);
    }

    fn kill9(&mut self) {
        *self.slot.lock().unwrap() = None;
        self.server.take().expect("running").kill9();
    }

    fn http(&self) -> SocketAddr {
        address(&self.server.as_ref().expect("running").base)
    }
}

#[test]
fn three_nodes_on_one_database_survive_a_kill_9_and_judge_opens_as_one() {
    if peer("smtp-sink").is_none() {
        return;
    }
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let goal = std::env::var("POSTHORN_MULTINODE_MESSAGES")
        .ok()
        .map_or(MESSAGES, |n| n.parse().expect("a number of messages"));
    let started = Instant::now();
    let sink = Sink::start(&[]).expect("smtp-sink");
    let dir = tempfile::tempdir().unwrap();
    let zone = zone_file(dir.path(), "");
    let mut args = route_args(&[("example.com", sink.addr)], &zone);
    args.extend(
        [
            "--store",
            db.url(),
            "--submission",
            "127.0.0.1:0",
            "--public-url",
            PUBLIC_URL,
            "--trust-proxy",
            "127.0.0.0/8",
        ]
        .map(str::to_owned),
    );
    let mut nodes: Vec<Node> = NODES
        .iter()
        .map(|name| Node {
            name,
            data: dir.path().join(name),
            slot: Slot::default(),
            server: None,
        })
        .collect();
    // The first node makes the tenant and its admin key; the others find
    // them in the database. The key file is the first node's: an operator
    // hands the key to every client, which here reach every node.
    nodes[0].start(&args);
    let key = nodes[0].server.as_ref().unwrap().key.clone();
    for node in &mut nodes[1..] {
        std::fs::create_dir_all(&node.data).unwrap();
        std::fs::write(node.data.join("initial-admin-key"), format!("{key}\n")).unwrap();
        node.start(&args);
    }
    let mut pg = db.client();

    // The load: an API client and an SMTP client on every node.
    let load = Arc::new(Load::default());
    let mut threads = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for channel in [Channel::Api, Channel::Smtp] {
            let (load, slot, key) = (load.clone(), node.slot.clone(), key.clone());
            threads.push(std::thread::spawn(move || {
                submit(&load, &slot, &key, i, channel, goal)
            }));
        }
    }

    // The kill, half-way through the submissions, while the node holds
    // leases (deliveries in flight), so that the kill cuts work short.
    eventually(Duration::from_secs(300), || {
        (load.count.load(Ordering::SeqCst) >= goal / 2).then_some(())
    });
    let leases_held = format!(
        "SELECT count(*) FROM send_queue WHERE lease_owner = '{}'",
        NODES[KILLED]
    );
    eventually(Duration::from_secs(60), || {
        (count(&mut pg, &leases_held) > 0).then_some(())
    });
    nodes[KILLED].kill9();
    let killed_at = load.count.load(Ordering::SeqCst);
    // Read at once: the killed node's leases stay until it starts again,
    // and a verdict, once stored, stays.
    let in_flight: HashSet<String> = strings(
        &mut pg,
        &format!(
            "SELECT d.recipient FROM send_queue q JOIN deliveries d ON d.id = q.delivery_id \
             WHERE q.lease_owner = '{}'",
            NODES[KILLED]
        ),
    );
    let verdicts_at_kill: HashSet<String> = strings(
        &mut pg,
        "SELECT recipient FROM deliveries \
         WHERE delivery_status IN ('delivered', 'bounced', 'expired', 'failed')",
    );
    let copies_at_kill = copies_per_recipient(&sink.messages());
    // The other nodes go on alone for a moment.
    std::thread::sleep(Duration::from_millis(1500));
    nodes[KILLED].start(&args);
    for t in threads {
        t.join().expect("a load thread panicked");
    }
    let submitted = started.elapsed();

    // Every delivery in the database reaches its verdict.
    eventually_ok(Duration::from_secs(300), || {
        let queued = count(&mut pg, "SELECT COUNT(*) FROM send_queue");
        let open = count(
            &mut pg,
            "SELECT COUNT(*) FROM deliveries WHERE delivery_status IS DISTINCT FROM 'delivered'",
        );
        if queued == 0 && open == 0 {
            Ok(())
        } else {
            Err(format!("{queued} queued, {open} without a verdict"))
        }
    });
    let settled = started.elapsed();

    let answered = std::mem::take(&mut *load.answered.lock().unwrap());
    let copies = copies_per_recipient(&sink.messages());
    let mut problems = Vec::new();
    check_answered(&mut pg, &answered, &mut problems);
    let stored: HashMap<String, String> = pairs(
        &mut pg,
        "SELECT recipient, id FROM deliveries WHERE recipient LIKE 'r%@example.com'",
    );
    let duplicates = check_copies(
        &stored,
        &copies,
        &in_flight,
        &verdicts_at_kill,
        &copies_at_kill,
        &mut problems,
    );
    // The API of every node (the restarted one included) agrees with the
    // database: a sample of deliveries, each read on the next node.
    let mut ids: Vec<&String> = stored.values().collect();
    ids.sort();
    for (i, id) in ids.iter().enumerate().step_by(10) {
        let node = &nodes[i % nodes.len()];
        match http(
            node.http(),
            "GET",
            &format!("/v1/deliveries/{id}"),
            Some(&key),
            None,
        ) {
            Ok((200, body)) => {
                let d: Value = serde_json::from_str(&body).unwrap();
                if d["status"] != "delivered" {
                    problems.push(format!("{}: delivery {id} is {}", node.name, d["status"]));
                }
            }
            other => problems.push(format!("{}: GET delivery {id}: {other:?}", node.name)),
        }
    }
    assert!(
        problems.is_empty(),
        "{} broken invariants:\n{}",
        problems.len(),
        problems.join("\n")
    );

    let per = |node: Option<usize>, channel: Channel| {
        answered
            .iter()
            .filter(|a| node.is_none_or(|n| a.node == n) && a.channel == channel)
            .count()
    };
    let shares: Vec<String> = NODES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            format!(
                "{name} {} API + {} SMTP",
                per(Some(i), Channel::Api),
                per(Some(i), Channel::Smtp)
            )
        })
        .collect();
    println!(
        "multinode: {} messages answered ({}); {} deliveries stored; {} killed after {killed_at} \
         answers with {} deliveries in flight there; {} verdicts stored at the kill; \
         {duplicates} duplicate copies at the sink; submitted in {:.1} s, settled at {:.1} s",
        answered.len(),
        shares.join(", "),
        stored.len(),
        NODES[KILLED],
        in_flight.len(),
        verdicts_at_kill.len(),
        submitted.as_secs_f64(),
        settled.as_secs_f64(),
    );
    for (node, name) in NODES.iter().enumerate() {
        for channel in [Channel::Api, Channel::Smtp] {
            assert!(
                per(Some(node), channel) > 0,
                "{name} answered no {channel:?} submission"
            );
        }
    }
    assert_eq!(answered.len(), goal);

    opens_on_two_nodes_are_judged_as_on_one(&nodes, &key, &sink, &mut pg);
}

/// Submits through one node's API or SMTP listener until `goal`
/// submissions are answered across all clients; waits while the node is
/// down. A request cut by the kill was not answered.
fn submit(load: &Load, slot: &Slot, key: &str, node: usize, channel: Channel, goal: usize) {
    let mut session: Option<(SocketAddr, SmtpClient)> = None;
    loop {
        let Some(endpoints) = *slot.lock().unwrap() else {
            session = None;
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        match load.take(goal) {
            Some(false) => return,
            None => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Some(true) => {}
        }
        let to = load.recipient();
        let answered = match channel {
            Channel::Api => api_submit(endpoints.http, key, &to),
            Channel::Smtp => smtp_submit(&mut session, endpoints.submission, key, &to),
        };
        match answered {
            Some(id) => load.answered(Answer {
                id,
                recipient: to,
                node,
                channel,
            }),
            None => {
                load.failed();
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// One message through the API; its delivery id when answered 202.
fn api_submit(addr: SocketAddr, key: &str, to: &str) -> Option<String> {
    let body = json!({"from": "Shop <shop@sender.example>", "to": [to], "subject": "News",
        "html": HTML, "text": "Hello"});
    let (status, answer) = http(
        addr,
        "POST",
        "/v1/messages",
        Some(key),
        Some(&body.to_string()),
    )
    .ok()?;
    assert_eq!(status, 202, "{answer}");
    let receipt: Value = serde_json::from_str(&answer).unwrap();
    let d = &receipt["deliveries"][0];
    assert_eq!(d["recipient"], to, "{answer}");
    Some(d["id"].as_str().unwrap().to_owned())
}

/// One message over SMTP submission (AUTH PLAIN, the session kept while it
/// works); the message id named by the 250 after DATA.
fn smtp_submit(
    session: &mut Option<(SocketAddr, SmtpClient)>,
    addr: SocketAddr,
    key: &str,
    to: &str,
) -> Option<String> {
    let mut client = match session.take() {
        Some((at, c)) if at == addr => c,
        _ => {
            let mut c = SmtpClient::connect(addr).ok()?;
            c.expect("EHLO load.test", 250).ok()?;
            c.expect(&format!("AUTH PLAIN {}", auth_plain(key)), 235)
                .ok()?;
            c
        }
    };
    let message =
        format!("From: s@sender.example\r\nTo: {to}\r\nSubject: over SMTP\r\n\r\nHello\r\n");
    let id = client
        .send("s@sender.example", &[to.to_owned()], &message)
        .ok()??;
    *session = Some((addr, client));
    Some(id)
}

// --- the checks -------------------------------------------------------------

/// Every answered submission is stored, for its recipient.
fn check_answered(pg: &mut postgres::Client, answered: &[Answer], problems: &mut Vec<String>) {
    let by_delivery: HashMap<String, String> = pairs(pg, "SELECT id, recipient FROM deliveries");
    let by_message: HashMap<String, String> =
        pairs(pg, "SELECT message_id, recipient FROM deliveries");
    for a in answered {
        let stored = match a.channel {
            Channel::Api => by_delivery.get(&a.id),
            Channel::Smtp => by_message.get(&a.id),
        };
        if stored != Some(&a.recipient) {
            problems.push(format!(
                "{:?} submission {} to {} on {} was answered; stored for {stored:?}",
                a.channel, a.id, a.recipient, NODES[a.node]
            ));
        }
    }
}

/// Checks the sink's copies against the deliveries (`stored`: recipient
/// to delivery id); the number of duplicate copies.
fn check_copies(
    stored: &HashMap<String, String>,
    copies: &HashMap<String, usize>,
    in_flight: &HashSet<String>,
    verdicts_at_kill: &HashSet<String>,
    copies_at_kill: &HashMap<String, usize>,
    problems: &mut Vec<String>,
) -> usize {
    for (recipient, id) in stored {
        if !copies.contains_key(recipient) {
            problems.push(format!(
                "delivery {id} ({recipient}) is delivered and the sink has no copy"
            ));
        }
    }
    let mut duplicates = 0;
    for (recipient, n) in copies {
        let Some(id) = stored.get(recipient) else {
            problems.push(format!(
                "the sink got a copy for {recipient}, whom no delivery is for"
            ));
            continue;
        };
        duplicates += n - 1;
        if *n > 1 && !in_flight.contains(recipient) {
            problems.push(format!(
                "delivery {id} reached the sink {n} times and was not in flight on {} at the kill",
                NODES[KILLED]
            ));
        }
        if *n > 2 {
            problems.push(format!(
                "delivery {id} reached the sink {n} times (one kill: 2 at most)"
            ));
        }
        // A stored verdict means the sink had taken the copy; should its
        // file not have been complete when the copies were counted, it was
        // one copy.
        let then = copies_at_kill.get(recipient).copied().unwrap_or(0).max(1);
        if verdicts_at_kill.contains(recipient) && then != *n {
            problems.push(format!(
                "delivery {id} had its verdict at the kill with {then} copies and has {n} now: \
                 sent again"
            ));
        }
    }
    if duplicates > in_flight.len() {
        problems.push(format!(
            "{duplicates} duplicate copies, more than the {} in flight on the killed node",
            in_flight.len()
        ));
    }
    duplicates
}

/// The address in a sink's envelope line (`X-Rcpt-Args: <a@b> ...`).
fn envelope(copy: &str, name: &str) -> Option<String> {
    let line = copy.lines().find(|l| l.starts_with(name))?;
    let start = line.find('<')? + 1;
    let end = start + line[start..].find('>')?;
    Some(line[start..end].to_ascii_lowercase())
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

fn count(pg: &mut postgres::Client, sql: &str) -> i64 {
    pg.query_one(sql, &[]).unwrap().get(0)
}

fn strings(pg: &mut postgres::Client, sql: &str) -> HashSet<String> {
    pg.query(sql, &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn pairs(pg: &mut postgres::Client, sql: &str) -> HashMap<String, String> {
    pg.query(sql, &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

// --- opens on two nodes -----------------------------------------------------

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const APPLE_MAIL: &str =
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)";

/// One delivery's pixel and link hit alternately on nodes A and B, the
/// same sequence for another delivery on node A alone: the same verdicts,
/// events and engagement.
fn opens_on_two_nodes_are_judged_as_on_one(
    nodes: &[Node],
    key: &str,
    sink: &Sink,
    pg: &mut postgres::Client,
) {
    // Two deliveries sent now, side by side.
    let mut urls = Vec::new();
    for to in ["two-nodes@example.com", "one-node@example.com"] {
        let id = api_submit(nodes[0].http(), key, to).expect("answered");
        let copy = eventually(Duration::from_secs(120), || {
            sink.messages()
                .into_iter()
                .find(|m| envelope(m, "X-Rcpt-Args:").as_deref() == Some(to))
        });
        let unfolded = copy.replace("=\r\n", "").replace("=\n", "");
        let pixel = tracker_urls(&unfolded, PUBLIC_URL, "o")[0][PUBLIC_URL.len()..].to_owned();
        let link = tracker_urls(&unfolded, PUBLIC_URL, "c")[0][PUBLIC_URL.len()..].to_owned();
        urls.push((id, pixel, link));
    }
    // Both have their delivered event before the first hit.
    eventually_ok(Duration::from_secs(60), || {
        let delivered = count(
            pg,
            "SELECT COUNT(*) FROM deliveries WHERE recipient IN \
             ('two-nodes@example.com', 'one-node@example.com') AND delivery_status = 'delivered'",
        );
        if delivered == 2 {
            Ok(())
        } else {
            Err(delivered)
        }
    });

    // (pixel or link, user agent, client address): a person, Apple's
    // proxy, Apple Mail elsewhere, an HTTP library, a link-scanning
    // gateway, one client past the repeat bound, then a click from the
    // person's network (judged by the history of earlier hits).
    let mut sequence: Vec<(bool, &str, &str)> = vec![
        (true, FIREFOX, "203.0.113.10"),
        (true, APPLE_MAIL, "17.58.0.1"),
        (true, APPLE_MAIL, "198.51.100.7"),
        (true, "python-requests/2.31", "203.0.113.20"),
        (true, FIREFOX, "40.107.22.51"),
    ];
    // With the first hit, three past the bound: counted, not stored.
    let repeats = posthorn_track::repeats::STORED_PER_CLIENT as usize + 2;
    sequence.extend(std::iter::repeat_n(
        (true, FIREFOX, "203.0.113.10"),
        repeats,
    ));
    sequence.push((false, FIREFOX, "203.0.113.11"));

    // The first delivery's whole sequence first, each hit on A or B in
    // turn, right after the last one on the other node; then the same
    // sequence on A alone for the second delivery.
    let (a, b) = (nodes[0].http(), nodes[1].http());
    let mut hits = Vec::new();
    for (step, entry) in sequence.iter().enumerate() {
        let two = if step % 2 == 0 { a } else { b };
        hits.push((0, two, entry));
    }
    for entry in &sequence {
        hits.push((1, a, entry));
    }
    for (delivery, node, (open, agent, ip)) in hits {
        let (_, pixel, link) = &urls[delivery];
        let path = if *open { pixel } else { link };
        let status = hit(node, path, agent, ip).expect("the tracker answers");
        assert_eq!(status, if *open { 200 } else { 302 }, "{path}");
    }

    let read = |id: &str| -> (Value, Vec<Value>) {
        let (status, body) =
            http(a, "GET", &format!("/v1/deliveries/{id}"), Some(key), None).unwrap();
        assert_eq!(status, 200, "{body}");
        let mut d: Value = serde_json::from_str(&body).unwrap();
        let verdicts = d["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "opened" || e["kind"] == "clicked")
            .map(|e| {
                let x = &e["details"];
                json!([
                    e["kind"],
                    x["user_agent"],
                    x["ip"],
                    x["machine"],
                    x["machine_reason"],
                    x["implied_open"]
                ])
            })
            .collect();
        // When the person first opened and clicked differs by the moment
        // of each delivery's hits; whether they did is compared.
        for at in ["first_human_open_at", "first_human_click_at"] {
            let known = !d["engagement"][at].is_null();
            d["engagement"][at] = json!(known);
        }
        (json!([d["status"], d["engagement"]]), verdicts)
    };
    let (two, two_verdicts) = read(&urls[0].0);
    let (one, one_verdicts) = read(&urls[1].0);
    let reasons: Vec<String> = two_verdicts
        .iter()
        .map(|v| {
            format!(
                "{}:{}",
                v[0].as_str().unwrap_or("?"),
                v[4].as_str().unwrap_or("?")
            )
        })
        .collect();
    println!(
        "multinode: {} hits on nodes A and B alternately, judged as on one node: {}; \
         engagement {}",
        sequence.len(),
        reasons.join(", "),
        two[1]
    );
    assert_eq!(
        two_verdicts, one_verdicts,
        "the verdicts of hits sent to two nodes differ from those on one"
    );
    assert_eq!(
        two, one,
        "engagement on two nodes differs from that on one node"
    );
    // And the sequence was judged as it should be at all.
    let reasons: Vec<&Value> = one_verdicts.iter().map(|v| &v[4]).collect();
    for want in [
        "no_machine_signal",
        "apple_mpp",
        "apple_mail_without_mpp",
        "scanner_user_agent",
        "link_scanner_network",
        "mail_client_then_browser",
    ] {
        assert!(reasons.contains(&&json!(want)), "{want}: {one_verdicts:?}");
    }
    assert_eq!(one[1]["repeats_not_stored"]["opens"], 3, "{one}");
}

/// A tracker hit through a proxy on loopback that names the client; the
/// status, or an error when the answer did not arrive whole.
fn hit(addr: SocketAddr, path: &str, agent: &str, ip: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: track.test\r\nConnection: close\r\n\
         User-Agent: {agent}\r\nX-Forwarded-For: {ip}\r\n\r\n"
    )?;
    // The pixel is a GIF: only the status line is read as text.
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    String::from_utf8_lossy(&answer)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::ErrorKind::UnexpectedEof.into())
}
