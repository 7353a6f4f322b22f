//! Opens, clicks and unsubscribes through the tracker, from a message that
//! really went out to Postfix's `smtp-sink`: the links in the copy are
//! signed and carry no URL, a tampered token is a 404 and never a redirect,
//! hits are judged person or machine, and unsubscribing works by the page,
//! the one-click POST and mail to the `List-Unsubscribe` address.

mod common;

use common::*;
use posthorn_testkit::{eventually, peer};
use serde_json::{Value, json};
use std::process::Command;

const BROWSER_UA: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

/// `curl` with a method and user agent; (status, Location, body).
fn hit(method: &str, url: &str, ua: &str, extra: &[&str]) -> (u16, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "-X", method, "-A", ua, "-o", "-", "-w"])
        .arg("\n%{http_code} %{redirect_url}")
        .args(if method == "HEAD" {
            &["-I"][..]
        } else {
            &[][..]
        })
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, last) = text.rsplit_once('\n').unwrap();
    let (code, location) = last.split_once(' ').unwrap_or((last, ""));
    (
        code.parse().unwrap(),
        location.trim().to_owned(),
        body.to_owned(),
    )
}

/// The events of `kind` of a delivery, as the API shows them now.
fn events_now(server: &Server, delivery: &str, kind: &str) -> Vec<Value> {
    events_of(&server.status(delivery), kind)
}

struct Setup {
    _dir: tempfile::TempDir,
    sink: Sink,
    server: Server,
    python: std::path::PathBuf,
}

fn setup(extra_env: &[(&str, &str)], extra_args: &[&str]) -> Option<Setup> {
    let (Some(python), Some(_)) = (peer("python3"), peer("curl")) else {
        return None;
    };
    let sink = Sink::start(&[])?;
    let dir = tempfile::tempdir().unwrap();
    let zone = zone_file(dir.path(), "");
    let mut args = route_args(&[("example.org", sink.addr)], &zone);
    args.extend(extra_args.iter().map(|a| a.to_string()));
    let server = Server::start(&dir.path().join("data"), &args, extra_env);
    Some(Setup {
        _dir: dir,
        sink,
        server,
        python,
    })
}

const HTML: &str = "<html><body><p>Hello</p>\
    <a href=\"https://shop.example.com/a?x=1&amp;y=2\">First</a>\
    <a href=\"https://shop.example.com/b\">Second</a>\
    <a href=\"mailto:help@shop.example.com\">Mail us</a>\
    <a href=\"{{unsubscribe_url}}\">Unsubscribe</a></body></html>";

/// Sends one message to `to` and returns its delivery id and the copy as
/// the recipient got it.
fn send_and_read(s: &Setup, to: &str) -> (String, Copy) {
    let receipt = s
        .server
        .submit(json!({"from": "news@shop.example.com", "to": [to],
        "subject": "News", "html": HTML, "text": "Hello. Unsubscribe: {{unsubscribe_url}}"}));
    let id = ids(&receipt).remove(0);
    wait_status(&s.server, &id, "delivered");
    let raw = eventually(WAIT, || {
        s.sink
            .messages()
            .into_iter()
            .find(|m| m.contains(&format!("Message-ID: <{id}@")))
    });
    (id, read_copy(&s.python, &raw))
}

#[test]
fn opens_clicks_and_unsubscribes_are_recorded_and_judged() {
    let Some(s) = setup(
        &[("POSTHORN_TRACKING__MACHINE__MIN_AFTER_DELIVERY", "1s")],
        &[],
    ) else {
        return;
    };
    let base = &s.server.base;
    let (id, copy) = send_and_read(&s, "ann@example.org");

    // The copy: a pixel, two tracked links that carry no URL, mailto left
    // alone, the placeholder replaced, one-click unsubscribe headers.
    let opens = tracker_urls(&copy.html, base, "o");
    let clicks = tracker_urls(&copy.html, base, "c");
    let unsubscribes = tracker_urls(&copy.html, base, "u");
    assert_eq!(
        (opens.len(), clicks.len(), unsubscribes.len()),
        (1, 2, 1),
        "{}",
        copy.html
    );
    assert!(!copy.html.contains("shop.example.com/a"), "{}", copy.html);
    assert!(copy.html.contains("mailto:help@shop.example.com"));
    assert!(!copy.html.contains("{{") && !copy.text.contains("{{"));
    assert!(copy.text.contains(&unsubscribes[0]), "{}", copy.text);
    assert!(
        copy.headers
            .contains(&format!("List-Unsubscribe: <{}>", unsubscribes[0])),
        "{}",
        copy.headers
    );
    assert!(
        copy.headers.contains("mailto:unsubscribe+"),
        "{}",
        copy.headers
    );
    assert!(
        copy.headers
            .contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    );

    // Tampered tokens, and a token on the wrong route: 404, no redirect.
    let mut tampered = clicks[0].clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    for url in [
        tampered,
        clicks[0].replace("/c/", "/o/"),
        opens[0].replace("/o/", "/c/"),
        format!("{base}/c/https%3A%2F%2Fevil.example"),
    ] {
        let (code, location, _) = hit("GET", &url, BROWSER_UA, &[]);
        assert_eq!((code, location.as_str()), (404, ""), "{url}");
    }
    assert!(events_now(&s.server, &id, "clicked").is_empty());

    // A person, past the scanners' window: the pixel, then a link.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let out = Command::new("curl")
        .args(["-sS", "-A", BROWSER_UA, "-o", "/dev/null", "-w"])
        .arg("%{http_code} %{size_download} %{content_type}")
        .arg(&opens[0])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200 43 image/gif");
    let (code, location, _) = hit("GET", &clicks[0], BROWSER_UA, &[]);
    assert_eq!(code, 302);
    assert_eq!(location, "https://shop.example.com/a?x=1&y=2");
    let opened = events_now(&s.server, &id, "opened");
    assert_eq!(opened[0]["details"]["machine"], false, "{opened:?}");
    assert_eq!(opened[0]["details"]["user_agent"], BROWSER_UA);
    assert_eq!(opened[0]["details"]["ip"], "127.0.0.1");
    let clicked = events_now(&s.server, &id, "clicked");
    assert_eq!(clicked[0]["details"]["machine"], false, "{clicked:?}");
    assert_eq!(clicked[0]["details"]["link_index"], 0);
    assert_eq!(
        clicked[0]["details"]["url"],
        "https://shop.example.com/a?x=1&y=2"
    );

    // A link checker: HEAD and a library's user agent. Recorded, judged.
    let (code, location, _) = hit("HEAD", &clicks[1], BROWSER_UA, &[]);
    assert_eq!(
        (code, location.as_str()),
        (302, "https://shop.example.com/b")
    );
    hit("GET", &clicks[1], "python-requests/2.31", &[]);
    let clicked = events_now(&s.server, &id, "clicked");
    let reasons: Vec<&str> = clicked[1..]
        .iter()
        .map(|e| e["details"]["machine_reason"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(reasons, vec!["head_request", "scanner_user_agent"]);
    let delivery = s.server.status(&id);
    assert_eq!(delivery["status"], "clicked");
    let engagement = &delivery["engagement"];
    assert_eq!(engagement["all"]["clicks"], 3);
    assert_eq!(engagement["human"]["clicks"], 1);
    assert_eq!(engagement["human"]["clicks_per_link"]["0"], 1);
    assert_eq!(engagement["all"]["clicks_per_link"]["1"], 2);
    assert!(
        engagement["first_human_open_at"].is_string(),
        "{engagement}"
    );

    // Unsubscribe: the page asks and changes nothing; the one-click POST
    // unsubscribes at once; again changes nothing more.
    let (code, _, page) = hit("GET", &unsubscribes[0], BROWSER_UA, &[]);
    assert_eq!(code, 200);
    assert!(page.contains("<form method=\"post\">"), "{page}");
    assert!(events_now(&s.server, &id, "unsubscribed").is_empty());
    for _ in 0..2 {
        let (code, _, _) = hit(
            "POST",
            &unsubscribes[0],
            BROWSER_UA,
            &["-d", "List-Unsubscribe=One-Click"],
        );
        assert_eq!(code, 200);
    }
    let unsubscribed = events_now(&s.server, &id, "unsubscribed");
    assert_eq!(unsubscribed.len(), 1);
    assert_eq!(unsubscribed[0]["details"]["method"], "one-click");
    assert_eq!(unsubscribed[0]["details"]["scope"], "stream");
    assert!(
        events_now(&s.server, &id, "clicked").len() == 3,
        "an unsubscribe is no click"
    );
    assert_eq!(s.server.status(&id)["status"], "unsubscribed");
    // Unsubscribed from this stream: the next message on it is not sent.
    let contact = s.server.get("/v1/contacts/ann@example.org");
    assert_eq!(
        contact["unsubscribed_streams"],
        json!(["transactional"]),
        "{contact}"
    );
    let again = s.server.submit(json!({"from": "news@shop.example.com",
        "to": ["ann@example.org"], "subject": "More", "text": "Hi"}));
    assert_eq!(again["deliveries"][0]["status"], "dropped", "{again}");
}

#[test]
fn hits_as_a_scanner_makes_them_are_judged_machine() {
    // A gateway at delivery: no browser's agent, and every link at once.
    // (Being quick alone makes no machine: people read transactional mail
    // at once; it counts beside an agent that is no client.)
    let Some(s) = setup(&[], &[]) else {
        return;
    };
    let (id, copy) = send_and_read(&s, "bob@example.org");
    let opens = tracker_urls(&copy.html, &s.server.base, "o");
    let clicks = tracker_urls(&copy.html, &s.server.base, "c");
    hit("GET", &opens[0], "Mozilla/5.0", &[]);
    for url in &clicks {
        hit("GET", url, "Mozilla/5.0", &[]);
    }
    let opened = events_now(&s.server, &id, "opened");
    assert_eq!(opened[0]["details"]["machine"], true);
    assert_eq!(
        opened[0]["details"]["machine_reason"],
        "too_soon_and_unknown_client"
    );
    let clicked = events_now(&s.server, &id, "clicked");
    assert_eq!(clicked.len(), 2);
    let reasons: Vec<&str> = clicked
        .iter()
        .map(|e| e["details"]["machine_reason"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        reasons,
        ["too_soon_and_unknown_client", "all_links_at_once"],
        "{clicked:?}"
    );
    assert!(
        clicked.iter().all(|e| e["details"]["machine"] == true),
        "{clicked:?}"
    );
    let delivery = s.server.status(&id);
    let engagement = &delivery["engagement"];
    assert_eq!(engagement["all"]["clicked"], true);
    assert_eq!(engagement["human"]["clicked"], false);
    assert!(engagement["first_human_click_at"].is_null());
    // The message sums its deliveries, machines apart.
    let message = s.server.get(&format!(
        "/v1/messages/{}",
        delivery["message_id"].as_str().unwrap()
    ));
    assert_eq!(
        message["engagement"]["all"]["clicked_deliveries"], 1,
        "{message}"
    );
    assert_eq!(message["engagement"]["all"]["clicks"], 2);
    assert_eq!(message["engagement"]["human"]["opened_deliveries"], 0);
}

#[test]
fn behind_a_trusted_proxy_the_forwarded_address_counts_and_is_truncated() {
    let Some(s) = setup(
        &[("POSTHORN_TRACKING__IP", "truncated")],
        &["--trust-proxy", "127.0.0.0/8"],
    ) else {
        return;
    };
    let (id, copy) = send_and_read(&s, "cy@example.org");
    let opens = tracker_urls(&copy.html, &s.server.base, "o");
    hit(
        "GET",
        &opens[0],
        BROWSER_UA,
        &["-H", "X-Forwarded-For: 6.6.6.6, 203.0.113.77"],
    );
    let opened = events_now(&s.server, &id, "opened");
    assert_eq!(opened[0]["details"]["ip"], "203.0.113.0");
}

#[test]
fn mail_to_the_unsubscribe_address_unsubscribes() {
    let Some(swaks) = peer("swaks") else {
        return;
    };
    let Some(s) = setup(&[], &[]) else {
        return;
    };
    let (id, copy) = send_and_read(&s, "dee@example.org");
    let mailto = copy
        .headers
        .split("mailto:")
        .nth(1)
        .and_then(|rest| rest.split(['?', '>']).next())
        .unwrap()
        .to_owned();
    let status = Command::new(swaks)
        .args(["--server", &s.server.mx.unwrap().to_string(), "--from"])
        .args(["dee@example.org", "--to", &mailto, "--hide-all"])
        .stdin(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let unsubscribed = eventually(WAIT, || {
        let e = events_now(&s.server, &id, "unsubscribed");
        (!e.is_empty()).then_some(e)
    });
    assert_eq!(unsubscribed[0]["details"]["method"], "mailto");
    assert_eq!(unsubscribed[0]["source"], "inbound-mx");
    assert_eq!(s.server.status(&id)["status"], "unsubscribed");
}
