//! Disk full: `posthorn serve` runs with its data directory on a small
//! tmpfs (mounted by the test, as root) that a filler file fills up. Then
//! submissions are refused with 503 `storage_full` (API) and 452 4.3.1
//! (SMTP submission, inbound MX) while reads go on; nothing accepted before
//! is lost or corrupted; and once the filler is gone the same process takes
//! mail again and delivers everything it accepted, without a restart.

mod common;

use common::clients::*;
use common::*;
use posthorn_testkit::{eventually, peer, peers_required};
use rusqlite::{Connection, OpenFlags};
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A tmpfs mounted on a directory, unmounted when dropped (also when the
/// test fails). Drop it after the server that uses it.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// `None`, after saying why, when this is not root or mounting fails;
    /// a panic instead when peers are required (CI runs as root).
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        let uid = Command::new("id").arg("-u").output().ok();
        let root = uid.is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let mounted = root
            && Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={size},mode=0700"),
                    "tmpfs",
                ])
                .arg(dir)
                .status()
                .is_ok_and(|s| s.success());
        if !mounted {
            let why = if root {
                "mounting a tmpfs failed"
            } else {
                "not root, cannot mount a tmpfs"
            };
            assert!(
                !peers_required(),
                "the disk-full test needs a tmpfs (POSTHORN_REQUIRE_PEERS=1): {why}"
            );
            eprintln!("SKIPPED: the disk-full test: {why}");
            return None;
        }
        Some(Tmpfs {
            dir: dir.to_owned(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Something still holds a file there: detach it anyway.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Fills the filesystem of `path` with a file until it is full (ENOSPC).
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    loop {
        if let Err(e) = file.write_all(&chunk) {
            assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "{e}");
            break;
        }
    }
    // The last partial chunk may have taken the final pages; smaller writes
    // take what is left.
    while file.write_all(&[0u8; 512]).is_ok() {}
}

fn integrity(db: &Path) -> String {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

fn submit(addr: std::net::SocketAddr, key: &str, i: usize) -> (u16, Value) {
    // Bodies of some size, so the log grows quickly.
    let body = json!({"from": "shop@sender.example", "to": [format!("r{i}@example.com")],
        "subject": format!("message {i}"), "text": format!("{i} {}", "lorem ipsum ".repeat(1500))});
    let (status, answer) = http(
        addr,
        "POST",
        "/v1/messages",
        Some(key),
        Some(&body.to_string()),
    )
    .unwrap();
    (status, serde_json::from_str(&answer).unwrap_or(Value::Null))
}

/// An SMTP submission of one message to `to`; the reply after DATA (or the
/// first refusal).
fn smtp_submit(addr: std::net::SocketAddr, key: &str, to: &str) -> (u16, String) {
    let mut c = SmtpClient::connect(addr).unwrap();
    c.expect("EHLO test.example", 250).unwrap();
    c.expect(&format!("AUTH PLAIN {}", auth_plain(key)), 235)
        .unwrap();
    c.expect("MAIL FROM:<s@sender.example>", 250).unwrap();
    c.expect(&format!("RCPT TO:<{to}>"), 250).unwrap();
    c.expect("DATA", 354).unwrap();
    let message =
        format!("From: s@sender.example\r\nTo: {to}\r\nSubject: over SMTP\r\n\r\nHello\r\n.\r\n");
    c.write_raw(message.as_bytes()).unwrap();
    c.reply().unwrap()
}

/// A returned message at the inbound MX (attributed or not, it is kept);
/// the reply after DATA.
fn return_mail(mx: std::net::SocketAddr) -> (u16, String) {
    let mut c = SmtpClient::connect(mx).unwrap();
    c.expect("EHLO mx.example.com", 250).unwrap();
    c.expect("MAIL FROM:<>", 250).unwrap();
    let to = format!("bounces+{}@sender.example", "a".repeat(42));
    c.expect(&format!("RCPT TO:<{to}>"), 250).unwrap();
    c.expect("DATA", 354).unwrap();
    let report = "From: MAILER-DAEMON@mx.example.com\r\nSubject: Undeliverable\r\n\r\nUser unknown.\r\n.\r\n";
    c.write_raw(report.as_bytes()).unwrap();
    c.reply().unwrap()
}

#[test]
fn a_full_disk_refuses_writes_with_503_and_452_keeps_what_was_accepted_and_recovers_alone() {
    if peer("curl").is_none() {
        return;
    }
    let Some(sink) = Sink::start(&[]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("disk");
    std::fs::create_dir(&mount).unwrap();
    let Some(_tmpfs) = Tmpfs::mount(&mount, "16m") else {
        return;
    };
    let data = mount.join("data");
    let zone = zone_file(dir.path(), "");
    let mut args = route_args(&[("example.com", sink.addr)], &zone);
    args.extend(["--submission", "127.0.0.1:0"].map(str::to_owned));
    let server = Server::start(&data, &args, &[]);
    let addr = address(&server.base);
    let submission = server.submission.unwrap();
    let db = data.join("posthorn.db");

    // Accepted while there is room.
    let mut accepted: Vec<String> = Vec::new();
    let mut n = 0;
    for _ in 0..20 {
        let (status, receipt) = submit(addr, &server.key, n);
        n += 1;
        assert_eq!(status, 202, "{receipt}");
        accepted.extend(ids(&receipt));
    }

    // The disk fills up while four clients submit, and the delivery worker
    // claims and records; each client goes on until it is refused three
    // times in a row.
    let filler = mount.join("filler");
    let next = AtomicUsize::new(n);
    let key = server.key.as_str();
    let refusals: Vec<Value> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..4)
            .map(|_| {
                let next = &next;
                scope.spawn(move || {
                    let deadline = Instant::now() + WAIT;
                    let (mut taken, mut refusals) = (Vec::new(), Vec::new());
                    let mut in_a_row = 0;
                    while in_a_row < 3 {
                        assert!(Instant::now() < deadline, "not refused on a full disk");
                        let (status, answer) =
                            submit(addr, key, next.fetch_add(1, Ordering::Relaxed));
                        match status {
                            202 => {
                                taken.extend(ids(&answer));
                                in_a_row = 0;
                            }
                            503 => {
                                refusals.push(answer);
                                in_a_row += 1;
                            }
                            other => panic!("a submission on a filling disk: {other} {answer}"),
                        }
                    }
                    (taken, refusals)
                })
            })
            .collect();
        fill(&filler);
        let mut all_refusals = Vec::new();
        for client in clients {
            let (taken, refusals) = client.join().unwrap();
            accepted.extend(taken);
            all_refusals.extend(refusals);
        }
        all_refusals
    });
    let mut n = next.into_inner();
    for refusal in &refusals {
        assert_eq!(refusal["error"]["code"], "storage_full", "{refusal}");
        assert!(
            refusal["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("storage is full")),
            "{refusal}"
        );
    }
    // Full it stays: the other doors refuse too. (A write that still fits
    // in log space already allocated may be taken, and is then kept like
    // any other; so each door is asked until it refuses, a few times at
    // most.)
    let refused = |mut attempt: Box<dyn FnMut() -> (u16, String) + '_>, ok: u16, want: u16| {
        for _ in 0..20 {
            let (code, text) = attempt();
            if code != ok {
                assert_eq!(code, want, "{text}");
                return text;
            }
        }
        panic!("20 writes taken on a full disk");
    };
    let mut smtp_taken = Vec::new();
    let text = refused(
        Box::new(|| {
            let (status, answer) = submit(addr, &server.key, n);
            n += 1;
            if status == 202 {
                accepted.extend(ids(&answer));
            }
            (status, answer.to_string())
        }),
        202,
        503,
    );
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["error"]["code"], "storage_full", "{answer}");
    let text = refused(
        Box::new(|| {
            let to = format!("smtp-full-{}@example.com", smtp_taken.len());
            let (code, text) = smtp_submit(submission, &server.key, &to);
            if code == 250 {
                smtp_taken.push(to);
            }
            (code, text)
        }),
        250,
        452,
    );
    assert!(text.starts_with("4.3.1 "), "{text}");
    let text = refused(Box::new(|| return_mail(server.mx.unwrap())), 250, 452);
    assert!(text.starts_with("4.3.1 "), "{text}");

    // Reads go on, and nothing accepted is lost or corrupted, while the
    // disk stays full for a few of the checkpointer's passes (one a
    // second; each fails, as the database file cannot grow).
    let full_since = Instant::now();
    while full_since.elapsed() < Duration::from_secs(3) {
        assert_eq!(http(addr, "GET", "/healthz", None, None).unwrap().0, 200);
        for id in &accepted {
            let path = format!("/v1/deliveries/{id}");
            let (status, body) = http(addr, "GET", &path, Some(&server.key), None).unwrap();
            assert_eq!(status, 200, "{id}: {body}");
        }
    }
    assert_eq!(integrity(&db), "ok");

    // Space returns: the same process takes mail again, by itself.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, answer) = submit(addr, &server.key, n);
        n += 1;
        if status == 202 {
            accepted.extend(ids(&answer));
            break;
        }
        assert_eq!(status, 503, "{answer}");
        assert!(
            Instant::now() < deadline,
            "still refusing after space returned: {answer}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, text) = smtp_submit(submission, &server.key, "smtp-again@example.com");
    assert_eq!(code, 250, "{text}");
    let (code, text) = return_mail(server.mx.unwrap());
    assert_eq!(code, 250, "{text}");

    // Everything accepted, before, during and after, is delivered.
    let deadline = Instant::now() + WAIT;
    loop {
        let waiting: Vec<&String> = accepted
            .iter()
            .filter(|id| server.status(id)["status"] != "delivered")
            .collect();
        let Some(first) = waiting.first() else { break };
        assert!(
            Instant::now() < deadline,
            "{} accepted deliveries are not delivered {WAIT:?} after space returned, e.g. {}",
            waiting.len(),
            server.status(first)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let copies = eventually(WAIT, || {
        let m = sink.messages();
        (m.len() > accepted.len()).then_some(m)
    });
    for id in &accepted {
        assert!(
            copies
                .iter()
                .any(|m| m.contains(&format!("<{id}@sender.example>"))),
            "no copy of {id}"
        );
    }
    assert!(copies.iter().any(|m| m.contains("smtp-again@example.com")));
    for to in &smtp_taken {
        assert!(
            copies.iter().any(|m| m.contains(to.as_str())),
            "no copy for {to}"
        );
    }
    let refused_to = format!("smtp-full-{}@example.com", smtp_taken.len());
    assert!(
        !copies.iter().any(|m| m.contains(&refused_to)),
        "{refused_to} was refused"
    );
    assert_eq!(integrity(&db), "ok");
    assert_eq!(
        half_written(&db),
        (0, 0),
        "messages without deliveries, deliveries without events"
    );
    drop(server);
}

/// Messages without deliveries and deliveries without events: what a
/// write cut in the middle would leave.
fn half_written(db: &Path) -> (i64, i64) {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let count = |sql: &str| conn.query_row(sql, [], |r| r.get(0)).unwrap();
    (
        count(
            "SELECT COUNT(*) FROM messages m WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id)",
        ),
        count(
            "SELECT COUNT(*) FROM deliveries d WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.delivery_id = d.id)",
        ),
    )
}

#[test]
fn a_kill_on_a_full_disk_loses_nothing_and_serve_starts_and_reads_while_it_is_full() {
    if peer("curl").is_none() {
        return;
    }
    let Some(sink) = Sink::start(&[]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("disk");
    std::fs::create_dir(&mount).unwrap();
    let Some(_tmpfs) = Tmpfs::mount(&mount, "16m") else {
        return;
    };
    let data = mount.join("data");
    let zone = zone_file(dir.path(), "");
    let args = route_args(&[("example.com", sink.addr)], &zone);
    let server = Server::start(&data, &args, &[]);
    let mut accepted: Vec<String> = Vec::new();
    let mut n = 0;
    for _ in 0..20 {
        let (status, receipt) = submit(address(&server.base), &server.key, n);
        n += 1;
        assert_eq!(status, 202, "{receipt}");
        accepted.extend(ids(&receipt));
    }
    fill(&mount.join("filler"));
    let refused_until_full = |server: &Server, n: &mut usize, accepted: &mut Vec<String>| {
        for _ in 0..20 {
            let (status, answer) = submit(address(&server.base), &server.key, *n);
            *n += 1;
            match status {
                202 => accepted.extend(ids(&answer)),
                503 => return assert_eq!(answer["error"]["code"], "storage_full", "{answer}"),
                other => panic!("{other} {answer}"),
            }
        }
        panic!("20 writes taken on a full disk");
    };
    refused_until_full(&server, &mut n, &mut accepted);

    // Killed while the disk is full, started again on it: it opens the
    // database (recovering the log), reads everything, refuses writes.
    server.kill9();
    let server = Server::start(&data, &args, &[]);
    let addr = address(&server.base);
    for id in &accepted {
        let path = format!("/v1/deliveries/{id}");
        let (status, body) = http(addr, "GET", &path, Some(&server.key), None).unwrap();
        assert_eq!(status, 200, "{id}: {body}");
    }
    refused_until_full(&server, &mut n, &mut accepted);
    let db = data.join("posthorn.db");
    assert_eq!(integrity(&db), "ok");

    // Space returns: taken again, and everything accepted is delivered.
    std::fs::remove_file(mount.join("filler")).unwrap();
    let receipt = eventually(WAIT, || {
        let (status, answer) = submit(addr, &server.key, n);
        n += 1;
        (status == 202).then_some(answer)
    });
    accepted.extend(ids(&receipt));
    for id in &accepted {
        wait_status(&server, id, "delivered");
    }
    assert_eq!(integrity(&db), "ok");
    assert_eq!(half_written(&db), (0, 0));
    drop(server);
}
