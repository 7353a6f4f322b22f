//! A real browser reads a real message: headless Chromium (Debian's
//! `chromium`), driven over the DevTools protocol by `peers/cdp.py`, opens
//! the HTML of a message that went through `posthorn serve` to Postfix's
//! `smtp-sink` (as read from the sink's dump by Python's `email` package),
//! served over loopback by the test. The pixel records an `opened`, a DOM
//! click on a tracked link goes through the tracker's redirect to a page
//! the test serves and records a `clicked`, and the unsubscribe page works
//! by clicking its button. The browser's hits are judged a person's.

mod common;

use common::*;
use posthorn_testkit::{KillOnDrop, eventually, peer};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a person's desktop Chrome sends. Headless Chromium names itself
/// `HeadlessChrome`, which the tracker rightly judges a machine (sandboxes
/// that detonate links run it); the fetching is still the real browser's.
const DESKTOP_CHROME_UA: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 \
    (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

const CDP_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/cdp.py");

/// A tiny loopback web server, a thread per connection: `/copy` is the
/// message's HTML (once set), `/landing...` the page its links lead to;
/// every request line is noted.
struct Pages {
    addr: SocketAddr,
    copy: Arc<Mutex<Option<String>>>,
    seen: Arc<Mutex<Vec<String>>>,
}

const LANDING: &str = "<!doctype html><html><head><title>Landing</title></head>\
    <body><h1>Welcome to the shop</h1></body></html>";

impl Pages {
    fn start() -> Pages {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let copy: Arc<Mutex<Option<String>>> = Arc::default();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let (c, s) = (copy.clone(), seen.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (c, s) = (c.clone(), s.clone());
                std::thread::spawn(move || Pages::answer(stream, &c, &s));
            }
        });
        Pages { addr, copy, seen }
    }

    /// One request, then the connection closes. A browser's preconnected
    /// socket that never asks anything times out quietly.
    fn answer(mut stream: TcpStream, copy: &Mutex<Option<String>>, seen: &Mutex<Vec<String>>) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let head = String::from_utf8_lossy(&head);
        let line = head.lines().next().unwrap_or("").to_owned();
        let path = line.split(' ').nth(1).unwrap_or("");
        let (status, body) = if path == "/copy" {
            match copy.lock().unwrap().clone() {
                Some(html) => ("200 OK", html),
                None => ("404 Not Found", "not yet".to_owned()),
            }
        } else if path.starts_with("/landing") {
            ("200 OK", LANDING.to_owned())
        } else {
            ("404 Not Found", "no such page".to_owned())
        };
        seen.lock().unwrap().push(line);
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n\
             Content-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// Headless Chromium on a fresh profile, its DevTools on a port it picks;
/// killed when dropped (before its profile directory goes).
struct Chromium {
    _process: KillOnDrop,
    ws_url: String,
    log: PathBuf,
}

impl Chromium {
    fn start(program: &Path, dir: &Path) -> Chromium {
        let profile = dir.join("profile");
        let log = dir.join("chromium.log");
        let child = Command::new(program)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--user-agent={DESKTOP_CHROME_UA}"))
            .arg("about:blank")
            // Crash reports and caches in the test's directory, not $HOME.
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("XDG_CACHE_HOME", dir.join("cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut process = KillOnDrop(child);
        // DevToolsActivePort: the port, then the browser's endpoint path.
        let ws_url = eventually(WAIT, || {
            if let Ok(Some(status)) = process.0.try_wait() {
                panic!(
                    "chromium exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            let text = std::fs::read_to_string(profile.join("DevToolsActivePort")).ok()?;
            let mut lines = text.lines();
            let (port, path) = (lines.next()?, lines.next()?);
            Some(format!("ws://127.0.0.1:{port}{path}"))
        });
        Chromium {
            _process: process,
            ws_url,
            log,
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

#[test]
fn a_browser_opens_clicks_and_unsubscribes_as_a_person() {
    let (Some(python), Some(chromium), Some(_)) = (peer("python3"), peer("chromium"), peer("curl"))
    else {
        return;
    };
    let Some(sink) = Sink::start(&[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pages = Pages::start();
    let zone = zone_file(dir.path(), "");
    let server = Server::start(
        &dir.path().join("data"),
        &route_args(&[("example.org", sink.addr)], &zone),
        &[("POSTHORN_TRACKING__MACHINE__MIN_AFTER_DELIVERY", "1s")],
    );
    let base = &server.base;

    // The message, with two links to the test's own landing page.
    let first = pages.url("/landing?x=1");
    let second = pages.url("/landing?x=2");
    let html = format!(
        "<html><head><title>News</title></head><body><p>Hello Ann</p>\
         <p><a href=\"{first}\">See the offer</a></p>\
         <p><a href=\"{second}\">Another offer</a></p>\
         <p><a href=\"{{{{unsubscribe_url}}}}\">Unsubscribe</a></p></body></html>"
    );
    let receipt = server.submit(json!({"from": "news@shop.example.com",
        "to": ["ann@example.org"], "subject": "News", "html": html,
        "text": "Hello Ann. Unsubscribe: {{unsubscribe_url}}"}));
    let id = ids(&receipt).remove(0);
    wait_status(&server, &id, "delivered");
    let raw = eventually(WAIT, || {
        sink.messages()
            .into_iter()
            .find(|m| m.contains(&format!("Message-ID: <{id}@")))
    });
    let copy = read_copy(&python, &raw).html;
    let opens = tracker_urls(&copy, base, "o");
    let clicks = tracker_urls(&copy, base, "c");
    let unsubscribes = tracker_urls(&copy, base, "u");
    assert_eq!(
        (opens.len(), clicks.len(), unsubscribes.len()),
        (1, 2, 1),
        "{copy}"
    );
    assert!(!copy.contains("/landing"), "the links carry no URL: {copy}");
    *pages.copy.lock().unwrap() = Some(copy.clone());

    // A person reads it later than a gateway scans it (the window is 1 s).
    std::thread::sleep(Duration::from_millis(1500));
    let browser = Chromium::start(&chromium, dir.path());
    let out = Command::new(&python)
        .arg(CDP_SCRIPT)
        .args([&browser.ws_url, &pages.url("/copy"), &pages.url("/landing")])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the browser did not get through:\n{}\nchromium's log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        browser.log_tail()
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    drop(browser);

    // What the browser saw: the pixel loaded, the first link led through
    // the tracker's 302 to the landing page, the unsubscribe page answered.
    assert_eq!(report["pixel_loaded"], json!([true]), "{report:#}");
    assert_eq!(report["link"], clicks[0], "{report:#}");
    assert_eq!(report["landed"], first, "{report:#}");
    assert!(
        report["landing_text"]
            .as_str()
            .unwrap()
            .contains("Welcome to the shop")
    );
    let requests = report["requests"].as_array().unwrap();
    let redirect = requests
        .iter()
        .find(|r| r["url"] == clicks[0])
        .unwrap_or_else(|| panic!("no request for the tracked link: {report:#}"));
    assert_eq!(redirect["status"], 302, "{report:#}");
    assert_eq!(redirect["location"], first, "{report:#}");
    assert!(
        requests
            .iter()
            .any(|r| r["url"] == opens[0] && r["status"] == 200),
        "{report:#}"
    );
    assert_eq!(report["unsubscribe_link"], unsubscribes[0]);
    assert_eq!(report["unsubscribe_page"], unsubscribes[0]);
    assert!(
        report["unsubscribe_page_text"]
            .as_str()
            .unwrap()
            .contains("ann@example.org"),
        "{report:#}"
    );
    assert!(
        report["unsubscribed_text"]
            .as_str()
            .unwrap()
            .contains("Done: ann@example.org will get no more transactional mail"),
        "{report:#}"
    );
    // The landing page was reached, and only the first link followed.
    let landed: Vec<String> = pages
        .seen()
        .into_iter()
        .filter(|l| l.contains("/landing"))
        .collect();
    assert_eq!(landed, vec!["GET /landing?x=1 HTTP/1.1"]);

    // What Posthorn recorded: opens and one click, a person's all, the
    // click after an open; the unsubscribe by the page, no click.
    let delivery = server.status(&id);
    let kinds = event_kinds(&delivery);
    let opened = events_of(&delivery, "opened");
    let clicked = events_of(&delivery, "clicked");
    assert!(!opened.is_empty(), "{kinds:?}");
    for open in &opened {
        assert_eq!(open["details"]["machine"], false, "{open}");
        assert_eq!(open["details"]["user_agent"], DESKTOP_CHROME_UA, "{open}");
        assert_eq!(open["details"]["ip"], "127.0.0.1", "{open}");
    }
    assert_eq!(clicked.len(), 1, "{kinds:?}");
    assert_eq!(clicked[0]["details"]["machine"], false, "{}", clicked[0]);
    // The open, then one link from the same network: the sequence a
    // person makes.
    assert_eq!(
        clicked[0]["details"]["machine_reason"], "mail_client_then_browser",
        "{}",
        clicked[0]
    );
    assert_eq!(clicked[0]["details"]["url"], first.as_str());
    assert_eq!(clicked[0]["details"]["link_index"], 0);
    assert_eq!(clicked[0]["details"]["user_agent"], DESKTOP_CHROME_UA);
    let at = |kind: &str| kinds.iter().position(|k| k == kind).unwrap();
    assert!(at("opened") < at("clicked"), "{kinds:?}");
    let engagement = &delivery["engagement"];
    assert_eq!(engagement["human"]["clicks"], 1, "{engagement}");
    assert_eq!(engagement["human"]["clicks_per_link"]["0"], 1);
    assert!(engagement["first_human_open_at"].is_string());
    assert!(engagement["first_human_click_at"].is_string());

    let unsubscribed = events_of(&delivery, "unsubscribed");
    assert_eq!(unsubscribed.len(), 1, "{kinds:?}");
    assert_eq!(unsubscribed[0]["details"]["method"], "link");
    assert_eq!(unsubscribed[0]["details"]["scope"], "stream");
    assert_eq!(delivery["status"], "unsubscribed");
    let contact = server.get("/v1/contacts/ann@example.org");
    assert_eq!(
        contact["unsubscribed_streams"],
        json!(["transactional"]),
        "{contact}"
    );
}
