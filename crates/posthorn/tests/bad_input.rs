//! The bad-input table: malformed, hostile and unauthorised requests over
//! every HTTP endpoint and both SMTP listeners (submission and the inbound
//! MX) of a running `posthorn serve`. Each case asserts its exact status and
//! error code (or SMTP reply code at every step), and after each case the
//! test proves that nothing was written: every table's row count and the
//! DKIM key files are as they were.

mod common;

use common::*;
use posthorn_testkit::peer;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Which key a request carries.
#[derive(Clone, Copy, Debug)]
enum Who {
    Admin,
    Send,
    Read,
    Revoked,
    /// An admin of another tenant.
    Other,
    Nobody,
    /// A well-formed bearer token that is no key.
    Forged,
    /// Not a bearer token at all.
    Mangled,
}

enum Body {
    None,
    Json(Value),
    Raw(Vec<u8>),
}

struct HttpCase {
    method: &'static str,
    path: String,
    who: Who,
    body: Body,
    headers: Vec<(&'static str, String)>,
    status: u16,
    /// The JSON error code; `None` for answers that are not JSON errors
    /// (the tracker's 404 page).
    code: Option<&'static str>,
    field: Option<&'static str>,
}

fn case(
    method: &'static str,
    path: impl Into<String>,
    who: Who,
    body: Body,
    status: u16,
    code: &'static str,
    field: Option<&'static str>,
) -> HttpCase {
    HttpCase {
        method,
        path: path.into(),
        who,
        body,
        headers: Vec::new(),
        status,
        code: Some(code),
        field,
    }
}

/// A valid submission with `patch` applied (`null` removes a field).
fn msg(patch: Value) -> Body {
    let mut base = json!({
        "from": "Shop <shop@shop.example>",
        "to": ["ann@example.com"],
        "subject": "Your receipt",
        "text": "Thanks!",
    });
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            base.as_object_mut().unwrap().remove(k);
        } else {
            base[k] = v.clone();
        }
    }
    Body::Json(base)
}

fn submit(patch: Value, code: &'static str, field: &'static str) -> HttpCase {
    let status = match code {
        "invalid_json" | "unknown_field" | "invalid_field" => 400,
        _ => 422,
    };
    case(
        "POST",
        "/v1/messages",
        Who::Admin,
        msg(patch),
        status,
        code,
        Some(field),
    )
}

/// What the store and the data directory hold: every table's row count and
/// the key files.
fn written(data: &Path) -> BTreeMap<String, i64> {
    let db = rusqlite::Connection::open_with_flags(
        data.join("posthorn.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut counts: BTreeMap<String, i64> = tables
        .into_iter()
        .map(|t| {
            let n = db
                .query_row(&format!("SELECT COUNT(*) FROM \"{t}\""), [], |r| r.get(0))
                .unwrap();
            (t, n)
        })
        .collect();
    let keys = std::fs::read_dir(data.join("dkim"))
        .map(|d| d.count() as i64)
        .unwrap_or(0);
    counts.insert("dkim key files".into(), keys);
    counts
}

fn cli(data: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn key_id(token: &str) -> String {
    // `ph_<id>_<secret>`: the id is what `keys revoke` takes.
    token.split('_').nth(1).unwrap().to_owned()
}

/// One SMTP step: what to send (a line without CRLF, or a whole DATA
/// payload ending in `\r\n.\r\n`) and the reply code expected.
type Step = (Vec<u8>, u16);

struct SmtpCase {
    name: &'static str,
    to: Listener,
    steps: Vec<Step>,
}

#[derive(Clone, Copy)]
enum Listener {
    Submission,
    Mx,
}

fn step(send: impl Into<Vec<u8>>, code: u16) -> Step {
    (send.into(), code)
}

fn auth(key: &str) -> String {
    use base64::Engine;
    let plain = format!("\0b\0{key}");
    format!(
        "AUTH PLAIN {}",
        base64::engine::general_purpose::STANDARD.encode(plain)
    )
}

/// Sends each step and reads one (possibly multi-line) reply: its code.
fn converse(addr: SocketAddr, steps: &[Step]) -> Result<(), String> {
    let stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let read_reply = |reader: &mut BufReader<TcpStream>| -> Result<(u16, String), String> {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                return Err(format!("connection closed after {all:?}"));
            }
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                let code = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
                return Ok((code, all));
            }
        }
    };
    let (greeting, _) = read_reply(&mut reader)?;
    if greeting != 220 {
        return Err(format!("greeting {greeting}"));
    }
    for (send, expected) in steps {
        let bytes = if send.ends_with(b"\r\n.\r\n") {
            send.clone()
        } else {
            [&send[..], b"\r\n"].concat()
        };
        writer.write_all(&bytes).map_err(|e| e.to_string())?;
        let (code, text) = read_reply(&mut reader)?;
        if code != *expected {
            return Err(format!(
                "sent {:?}: expected {expected}, got {text:?}",
                String::from_utf8_lossy(send)
                    .chars()
                    .take(80)
                    .collect::<String>()
            ));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_is_refused_with_its_code_and_writes_nothing() {
    if peer("curl").is_none() {
        return;
    }
    let Some(sink) = Sink::start(&[]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let data: PathBuf = dir.path().join("data");
    let zone = zone_file(dir.path(), "");
    let mut args = route_args(&[("example.com", sink.addr)], &zone);
    args.extend(["--submission".to_owned(), "127.0.0.1:0".to_owned()]);
    let server = tokio::task::block_in_place(|| Server::start(&data, &args, &[]));
    let submission = server.submission.expect("submission listens");
    let mx = server.mx.expect("the MX listens");

    // The cast: keys of every kind, another tenant with a domain, one
    // delivered message and one of the other tenant.
    let send = cli(
        &data,
        &["keys", "create", "--tenant", "default", "--scope", "send"],
    );
    let read = cli(
        &data,
        &["keys", "create", "--tenant", "default", "--scope", "read"],
    );
    let revoked = cli(
        &data,
        &["keys", "create", "--tenant", "default", "--scope", "admin"],
    );
    cli(&data, &["keys", "revoke", &key_id(&revoked)]);
    let other = cli(
        &data,
        &["keys", "create", "--tenant", "other", "--scope", "admin"],
    );
    // No pooled connections: a refused upload closes its connection, and a
    // pooled one could be reused just as it closes.
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let call = |method: &str, path: &str, key: Option<&str>, body: Option<Value>| {
        let mut request = http.request(method.parse().unwrap(), format!("{}{path}", server.base));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send()
    };
    let r = call(
        "POST",
        "/v1/domains",
        Some(&other),
        Some(json!({"domain": "other-tenant.example"})),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let receipt: Value = call(
        "POST",
        "/v1/messages",
        Some(&server.key),
        Some(json!({"from": "shop@shop.example", "to": "ann@example.com", "subject": "Hi", "text": "Hello"})),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let delivery = receipt["deliveries"][0]["id"].as_str().unwrap().to_owned();
    let message = receipt["id"].as_str().unwrap().to_owned();
    let theirs: Value = call(
        "POST",
        "/v1/messages",
        Some(&other),
        Some(json!({"from": "x@other-tenant.example", "to": "bob@example.com", "subject": "Hi", "text": "Hello"})),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let their_delivery = theirs["deliveries"][0]["id"].as_str().unwrap().to_owned();
    let their_message = theirs["id"].as_str().unwrap().to_owned();
    // Quiet: both delivered, so nothing more is written on its own.
    tokio::task::block_in_place(|| {
        wait_status(&server, &delivery, "delivered");
        posthorn_testkit::eventually(WAIT, || (sink.messages().len() == 2).then_some(()));
    });
    tokio::task::block_in_place(|| {
        posthorn_testkit::eventually(WAIT, || {
            let d = server.get(&format!("/v1/deliveries/{delivery}"));
            let settled = d["events"].as_array().is_some_and(|e| !e.is_empty());
            settled.then_some(())
        })
    });

    let long = |n: usize| "x".repeat(n);
    #[rustfmt::skip]
    let mut cases = vec![
        // --- authentication and scopes ---
        case("GET", "/v1/events", Who::Nobody, Body::None, 401, "missing_api_key", None),
        case("GET", "/v1/events", Who::Forged, Body::None, 401, "invalid_api_key", None),
        case("GET", "/v1/events", Who::Mangled, Body::None, 401, "invalid_api_key", None),
        case("GET", "/v1/events", Who::Revoked, Body::None, 401, "revoked_api_key", None),
        case("POST", "/v1/messages", Who::Nobody, msg(json!({})), 401, "missing_api_key", None),
        case("POST", "/v1/messages", Who::Revoked, msg(json!({})), 401, "revoked_api_key", None),
        case("POST", "/v1/messages", Who::Forged, msg(json!({})), 401, "invalid_api_key", None),
        case("POST", "/v1/messages", Who::Read, msg(json!({})), 403, "insufficient_scope", None),
        case("GET", "/v1/events", Who::Send, Body::None, 403, "insufficient_scope", None),
        case("POST", "/v1/events", Who::Send, Body::Json(json!({"delivery_id": delivery, "kind": "opened"})), 403, "insufficient_scope", None),
        case("POST", "/v1/events", Who::Read, Body::Json(json!({"delivery_id": delivery, "kind": "opened"})), 403, "insufficient_scope", None),
        case("PATCH", "/v1/settings", Who::Read, Body::Json(json!({"track_opens": false})), 403, "insufficient_scope", None),
        case("PATCH", "/v1/settings", Who::Send, Body::Json(json!({"track_opens": false})), 403, "insufficient_scope", None),
        case("PUT", "/v1/contacts/ann@example.com", Who::Read, Body::Json(json!({"status": "active"})), 403, "insufficient_scope", None),
        case("GET", "/v1/domains", Who::Read, Body::None, 403, "insufficient_scope", None),
        case("POST", "/v1/domains", Who::Send, Body::Json(json!({"domain": "new.example"})), 403, "insufficient_scope", None),
        case("DELETE", "/v1/domains/other-tenant.example", Who::Read, Body::None, 403, "insufficient_scope", None),
        case("GET", "/v1/inbound/orphans", Who::Other, Body::None, 403, "operator_only", None),
        // --- other tenants' things are not found ---
        case("GET", format!("/v1/deliveries/{their_delivery}"), Who::Admin, Body::None, 404, "not_found", None),
        case("GET", format!("/v1/messages/{their_message}"), Who::Admin, Body::None, 404, "not_found", None),
        case("GET", format!("/v1/deliveries/{delivery}"), Who::Other, Body::None, 404, "not_found", None),
        case("GET", format!("/v1/messages/{message}"), Who::Other, Body::None, 404, "not_found", None),
        case("POST", "/v1/events", Who::Admin, Body::Json(json!({"delivery_id": their_delivery, "kind": "opened"})), 404, "not_found", Some("delivery_id")),
        case("POST", "/v1/events", Who::Other, Body::Json(json!({"delivery_id": delivery, "kind": "complained"})), 404, "not_found", Some("delivery_id")),
        case("DELETE", "/v1/domains/other-tenant.example", Who::Admin, Body::None, 404, "not_found", None),
        case("POST", "/v1/domains", Who::Admin, Body::Json(json!({"domain": "other-tenant.example"})), 409, "domain_taken", Some("domain")),
        case("POST", "/v1/domains", Who::Admin, Body::Json(json!({"domain": "sub.other-tenant.example"})), 409, "domain_taken", Some("domain")),
        submit(json!({"from": "ceo@other-tenant.example"}), "domain_owned_by_another_tenant", "from"),
        submit(json!({"from": "CEO <ceo@mail.Other-Tenant.example>"}), "domain_owned_by_another_tenant", "from"),
        // --- malformed ids and unknown routes ---
        case("GET", "/v1/deliveries/not-an-id", Who::Admin, Body::None, 404, "not_found", None),
        case("GET", "/v1/deliveries/%FF", Who::Admin, Body::None, 404, "not_found", None),
        case("GET", "/v1/messages/%FF%FE", Who::Admin, Body::None, 404, "not_found", None),
        case("GET", "/v1/messages/00000000-0000-7000-8000-000000000000", Who::Admin, Body::None, 404, "not_found", None),
        case("GET", "/v1/events/nope/raw", Who::Admin, Body::None, 404, "not_found", None),
        case("GET", "/v1/inbound/nope/raw", Who::Admin, Body::None, 404, "not_found", None),
        case("GET", "/v1/nothing-here", Who::Admin, Body::None, 404, "not_found", None),
        case("DELETE", "/v1/messages", Who::Admin, Body::None, 405, "method_not_allowed", None),
        case("PUT", "/v1/events", Who::Admin, Body::None, 405, "method_not_allowed", None),
        // --- queries ---
        case("GET", "/v1/events?limit=0", Who::Admin, Body::None, 400, "invalid_query", Some("limit")),
        case("GET", "/v1/events?limit=501", Who::Admin, Body::None, 400, "invalid_query", Some("limit")),
        case("GET", "/v1/events?limit=-1", Who::Admin, Body::None, 400, "invalid_query", Some("limit")),
        case("GET", "/v1/events?limit=ten", Who::Admin, Body::None, 400, "invalid_query", Some("limit")),
        case("GET", "/v1/events?cursor=garbage", Who::Admin, Body::None, 400, "invalid_query", Some("cursor")),
        case("GET", "/v1/events?kind=exploded", Who::Admin, Body::None, 400, "invalid_query", Some("kind")),
        case("GET", "/v1/events?colour=red", Who::Admin, Body::None, 400, "invalid_query", Some("colour")),
        case("GET", "/v1/events?from=2026-02-01&to=2026-01-01", Who::Admin, Body::None, 400, "invalid_query", Some("to")),
        case("GET", "/v1/events?from=last%20week", Who::Admin, Body::None, 400, "invalid_query", Some("from")),
        case("GET", "/v1/events?metadata.=x", Who::Admin, Body::None, 400, "invalid_query", Some("metadata.")),
        case("GET", "/v1/deliveries?status=vanished", Who::Admin, Body::None, 400, "invalid_query", Some("status")),
        case("GET", "/v1/deliveries?limit=1000000", Who::Admin, Body::None, 400, "invalid_query", Some("limit")),
        case("GET", "/v1/deliveries/summary?cursor=abc", Who::Admin, Body::None, 400, "invalid_query", Some("cursor")),
        case("GET", "/v1/inbound?limit=100000", Who::Admin, Body::None, 400, "invalid_query", Some("limit")),
        case("GET", "/v1/contacts/not-an-address", Who::Admin, Body::None, 422, "invalid_address", Some("address")),
        case("GET", "/v1/contacts/nobody@example.com", Who::Admin, Body::None, 404, "not_found", None),
        // --- POST /v1/messages: the body as a whole ---
        case("POST", "/v1/messages", Who::Admin, Body::Raw(b"{\"from\":".to_vec()), 400, "invalid_json", Some("from")),
        case("POST", "/v1/messages", Who::Admin, Body::Raw(b"".to_vec()), 400, "invalid_json", None),
        case("POST", "/v1/messages", Who::Admin, Body::Raw(b"[1,2]".to_vec()), 400, "invalid_field", None),
        case("POST", "/v1/messages", Who::Admin, Body::Raw(b"\xff\xfe{}".to_vec()), 400, "invalid_json", None),
        case("POST", "/v1/messages", Who::Admin, Body::Raw(b"{\"from\":\"a@b.example\",\"to\":\"c@d.example\",\"subject\":\"s\",\"text\":\"t\"} trailing".to_vec()), 400, "invalid_json", None),
        case("POST", "/v1/messages", Who::Admin, Body::Raw(vec![b'x'; 11 * 1024 * 1024]), 413, "message_too_large", None),
        // --- POST /v1/messages: field by field ---
        submit(json!({"from": null}), "missing_field", "from"),
        submit(json!({"subject": null}), "missing_field", "subject"),
        submit(json!({"from": "not an address"}), "invalid_address", "from"),
        submit(json!({"from": "a@"}), "invalid_address", "from"),
        submit(json!({"from": "@example.com"}), "invalid_address", "from"),
        submit(json!({"from": 42}), "invalid_field", "from"),
        submit(json!({"to": []}), "missing_recipients", "to"),
        submit(json!({"to": ["ok@example.com", "broken"]}), "invalid_address", "to[1]"),
        submit(json!({"cc": ["a@@example.com"]}), "invalid_address", "cc[0]"),
        submit(json!({"bcc": ["<>"]}), "invalid_address", "bcc[0]"),
        submit(json!({"to": "a@example.com\r\nBcc: x@evil.example"}), "header_injection", "to[0]"),
        submit(json!({"to": [format!("{}@example.com", long(65))]}), "invalid_address", "to[0]"),
        submit(json!({"to": (0..1001).map(|i| format!("r{i}@example.com")).collect::<Vec<_>>()}), "too_many_recipients", "to"),
        submit(json!({"reply_to": "nope"}), "invalid_address", "reply_to"),
        submit(json!({"subject": "Hi\r\nBcc: victim@example.com"}), "header_injection", "subject"),
        submit(json!({"subject": "Hi\nthere"}), "header_injection", "subject"),
        submit(json!({"subject": long(999)}), "invalid_subject", "subject"),
        submit(json!({"text": null}), "missing_body", "text"),
        submit(json!({"text": 5}), "invalid_field", "text"),
        submit(json!({"headers": {"Bad Name": "v"}}), "invalid_header", "headers.Bad Name"),
        submit(json!({"headers": {"X-A:b": "v"}}), "invalid_header", "headers.X-A:b"),
        submit(json!({"headers": {"": "v"}}), "invalid_header", "headers."),
        submit(json!({"headers": {"From": "ceo@bank.example"}}), "reserved_header", "headers.From"),
        submit(json!({"headers": {"bcc": "x@example.com"}}), "reserved_header", "headers.bcc"),
        submit(json!({"headers": {"Message-ID": "<x@y>"}}), "reserved_header", "headers.Message-ID"),
        submit(json!({"headers": {"Content-Type": "text/html"}}), "reserved_header", "headers.Content-Type"),
        submit(json!({"headers": {"DKIM-Signature": "v=1"}}), "reserved_header", "headers.DKIM-Signature"),
        submit(json!({"headers": {"Received": "from x"}}), "reserved_header", "headers.Received"),
        submit(json!({"headers": {"X-Note": "a\r\nBcc: x@evil.example"}}), "header_injection", "headers.X-Note"),
        submit(json!({"headers": {"X-Note": 1}}), "invalid_field", "headers.X-Note"),
        submit(json!({"tags": (0..21).map(|i| format!("t{i}")).collect::<Vec<_>>()}), "invalid_tag", "tags"),
        submit(json!({"tags": [""]}), "invalid_tag", "tags[0]"),
        submit(json!({"tags": ["ok", long(129)]}), "invalid_tag", "tags[1]"),
        submit(json!({"tags": ["bell\u{7}"]}), "invalid_tag", "tags[0]"),
        submit(json!({"tags": "one"}), "invalid_field", "tags"),
        submit(json!({"metadata": {"blob": long(11 * 1024)}}), "invalid_metadata", "metadata"),
        submit(json!({"metadata": [1]}), "invalid_field", "metadata"),
        submit(json!({"stream": "Bad Stream"}), "invalid_stream", "stream"),
        submit(json!({"stream": ""}), "invalid_stream", "stream"),
        submit(json!({"stream": long(65)}), "invalid_stream", "stream"),
        submit(json!({"stream": "-leading"}), "invalid_stream", "stream"),
        submit(json!({"campaign": ""}), "invalid_campaign", "campaign"),
        submit(json!({"campaign": long(129)}), "invalid_campaign", "campaign"),
        submit(json!({"campaign": "spring\u{0}"}), "invalid_campaign", "campaign"),
        submit(json!({"send_at": "tomorrow"}), "invalid_time", "send_at"),
        submit(json!({"send_at": -5}), "invalid_time", "send_at"),
        submit(json!({"send_at": "2026-13-01T00:00:00Z"}), "invalid_time", "send_at"),
        submit(json!({"expires_at": "yesterday"}), "invalid_time", "expires_at"),
        submit(json!({"send_at": "2027-01-02T00:00:00Z", "expires_at": "2027-01-01T00:00:00Z"}), "invalid_time", "expires_at"),
        submit(json!({"tracking": {"opens": "yes"}}), "invalid_field", "tracking.opens"),
        submit(json!({"tracking": {"scroll": true}}), "unknown_field", "tracking.scroll"),
        submit(json!({"test": "true"}), "invalid_field", "test"),
        submit(json!({"priority": 1}), "unknown_field", "priority"),
        // --- POST /v1/messages: content Posthorn would have to send ---
        submit(json!({"text": "a\u{0}b"}), "nul_byte", "text"),
        submit(json!({"html": "<p>a\u{0}b</p>"}), "nul_byte", "html"),
        submit(json!({"headers": {"List-Unsubscribe": "<https://evil.example/u>"}}), "reserved_header", "headers.List-Unsubscribe"),
        submit(json!({"headers": {"List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}}), "reserved_header", "headers.List-Unsubscribe-Post"),
        submit(json!({"headers": {"Return-Path": "<x@evil.example>"}}), "reserved_header", "headers.Return-Path"),
        submit(json!({"headers": {"ARC-Seal": "i=1"}}), "reserved_header", "headers.ARC-Seal"),
        submit(json!({"headers": {"Authentication-Results": "x; dkim=pass"}}), "reserved_header", "headers.Authentication-Results"),
        submit(json!({"headers": {"X-Posthorn-Stream": "news"}}), "reserved_header", "headers.X-Posthorn-Stream"),
        submit(json!({"headers": {"Resent-Bcc": "x@example.com"}}), "reserved_header", "headers.Resent-Bcc"),
        submit(json!({"headers": {"X-Long": long(999)}}), "invalid_header", "headers.X-Long"),
        submit(json!({"headers": {"X-Bell": "ring\u{7}"}}), "header_injection", "headers.X-Bell"),
        submit(json!({"headers": {"X-Nul": "a\u{0}b"}}), "header_injection", "headers.X-Nul"),
        submit(json!({"subject": "bell\u{7}"}), "header_injection", "subject"),
        submit(json!({"send_at": 253_402_300_800_000_i64}), "invalid_time", "send_at"),
        submit(json!({"send_at": "+10000-01-01T00:00:00Z"}), "invalid_time", "send_at"),
        submit(json!({"expires_at": i64::MAX}), "invalid_time", "expires_at"),
        case("POST", "/v1/events", Who::Admin, Body::Json(json!({"delivery_id": delivery, "kind": "opened", "occurred_at": 253_402_300_800_000_i64})), 422, "invalid_time", Some("occurred_at")),
        // --- idempotency keys ---
        HttpCase { headers: vec![("idempotency-key", long(256))], ..case("POST", "/v1/messages", Who::Admin, msg(json!({})), 400, "invalid_idempotency_key", None) },
        HttpCase { headers: vec![("idempotency-key", "two words".into())], ..case("POST", "/v1/messages", Who::Admin, msg(json!({})), 400, "invalid_idempotency_key", None) },
        // --- POST /v1/events ---
        case("POST", "/v1/events", Who::Admin, Body::Json(json!({"kind": "opened"})), 422, "missing_field", Some("delivery_id")),
        case("POST", "/v1/events", Who::Admin, Body::Json(json!({"delivery_id": delivery})), 422, "missing_field", Some("kind")),
        case("POST", "/v1/events", Who::Admin, Body::Json(json!({"delivery_id": delivery, "kind": "exploded"})), 422, "invalid_kind", Some("kind")),
        case("POST", "/v1/events", Who::Admin, Body::Json(json!({"delivery_id": "nope", "kind": "opened"})), 404, "not_found", Some("delivery_id")),
        case("POST", "/v1/events", Who::Admin, Body::Json(json!({"delivery_id": delivery, "kind": "bounced", "details": [1]})), 422, "invalid_details", Some("details")),
        case("POST", "/v1/events", Who::Admin, Body::Json(json!({"delivery_id": delivery, "kind": "bounced", "details": {"bounce_type": "sideways"}})), 422, "invalid_details", Some("details")),
        case("POST", "/v1/events", Who::Admin, Body::Json(json!({"delivery_id": delivery, "kind": "opened", "occurred_at": "noon"})), 422, "invalid_time", Some("occurred_at")),
        case("POST", "/v1/events", Who::Admin, Body::Json(json!({"delivery_id": delivery, "kind": "opened", "occurred_at": -1})), 422, "invalid_time", Some("occurred_at")),
        case("POST", "/v1/events", Who::Admin, Body::Json(json!({"delivery_id": delivery, "kind": "opened", "source": "martians"})), 422, "invalid_source", Some("source")),
        case("POST", "/v1/events", Who::Admin, Body::Json(json!({"delivery_id": delivery, "kind": "opened", "extra": 1})), 400, "unknown_field", Some("extra")),
        case("POST", "/v1/events", Who::Admin, Body::Raw(b"{".to_vec()), 400, "invalid_json", None),
        case("POST", "/v1/events", Who::Admin, Body::Raw(vec![b' '; 70 * 1024]), 413, "message_too_large", None),
        // --- contacts and settings ---
        case("PUT", "/v1/contacts/ann@example.com", Who::Admin, Body::Json(json!({"status": "bounced"})), 422, "invalid_status", Some("status")),
        case("PUT", "/v1/contacts/ann@example.com", Who::Admin, Body::Json(json!({"status": "active", "x": 1})), 400, "unknown_field", Some("x")),
        case("PUT", "/v1/contacts/ann@example.com", Who::Admin, Body::Json(json!({})), 422, "missing_field", Some("status")),
        case("PUT", "/v1/contacts/not-an-address", Who::Admin, Body::Json(json!({"status": "active"})), 422, "invalid_address", Some("address")),
        case("PUT", "/v1/contacts/ann@example.com", Who::Admin, Body::Raw(b"status=active".to_vec()), 400, "invalid_json", None),
        case("PATCH", "/v1/settings", Who::Admin, Body::Json(json!({"track_opens": "no"})), 400, "invalid_field", Some("track_opens")),
        case("PATCH", "/v1/settings", Who::Admin, Body::Json(json!({"dark_mode": true})), 400, "unknown_field", Some("dark_mode")),
        case("PATCH", "/v1/settings", Who::Admin, Body::Raw(b"[]".to_vec()), 400, "invalid_field", None),
        // --- sending domains ---
        case("POST", "/v1/domains", Who::Admin, Body::Json(json!({"domain": "localhost"})), 422, "invalid_domain", Some("domain")),
        case("POST", "/v1/domains", Who::Admin, Body::Json(json!({"domain": "bad domain.example"})), 422, "invalid_domain", Some("domain")),
        case("POST", "/v1/domains", Who::Admin, Body::Json(json!({"domain": "x@shop.example"})), 422, "invalid_domain", Some("domain")),
        case("POST", "/v1/domains", Who::Admin, Body::Json(json!({"domain": "shop.example", "selector": "a.b"})), 422, "invalid_selector", Some("selector")),
        case("POST", "/v1/domains", Who::Admin, Body::Json(json!({"domain": "shop.example", "selector": long(64)})), 422, "invalid_selector", Some("selector")),
        case("POST", "/v1/domains", Who::Admin, Body::Json(json!({})), 422, "missing_field", Some("domain")),
        case("POST", "/v1/domains", Who::Admin, Body::Json(json!({"domain": "shop.example", "owner": "me"})), 400, "unknown_field", Some("owner")),
        case("POST", "/v1/domains", Who::Admin, Body::Raw(vec![b' '; 8 * 1024]), 413, "message_too_large", None),
        case("DELETE", "/v1/domains/never-added.example", Who::Admin, Body::None, 404, "not_found", None),
        case("DELETE", "/v1/domains/%FF", Who::Admin, Body::None, 404, "not_found", None),
    ];
    // --- the tracker: anything but a valid signed token is a 404 ---
    for path in [
        "/o/garbage",
        "/c/garbage",
        "/u/garbage",
        "/o/",
        "/c/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "/u/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "/o/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    ] {
        cases.push(HttpCase {
            code: None,
            ..case("GET", path, Who::Nobody, Body::None, 404, "", None)
        });
    }
    cases.push(HttpCase {
        code: None,
        ..case(
            "POST",
            "/u/garbage",
            Who::Nobody,
            Body::Raw(b"List-Unsubscribe=One-Click".to_vec()),
            404,
            "",
            None,
        )
    });

    let mut baseline = written(&data);
    let http_cases = cases.len();
    let mut failures = Vec::new();
    for (i, c) in cases.into_iter().enumerate() {
        let mut request = http.request(
            c.method.parse().unwrap(),
            format!("{}{}", server.base, c.path),
        );
        request = match c.who {
            Who::Admin => request.bearer_auth(&server.key),
            Who::Send => request.bearer_auth(&send),
            Who::Read => request.bearer_auth(&read),
            Who::Revoked => request.bearer_auth(&revoked),
            Who::Other => request.bearer_auth(&other),
            Who::Forged => request.bearer_auth(format!("ph_{}_{}", key_id(&read), "A".repeat(43))),
            Who::Mangled => request.header("authorization", "Basic dXNlcjpwYXNz"),
            Who::Nobody => request,
        };
        for (name, value) in &c.headers {
            request = request.header(*name, value);
        }
        request = match c.body {
            Body::None => request,
            Body::Json(v) => request.json(&v),
            Body::Raw(bytes) => request
                .header("content-type", "application/json")
                .body(bytes),
        };
        let label = format!(
            "#{i} {} {}",
            c.method,
            c.path.chars().take(60).collect::<String>()
        );
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{label}: {e}"));
                continue;
            }
        };
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let got = (
            status,
            json["error"]["code"].as_str().map(str::to_owned),
            json["error"]["field"].as_str().map(str::to_owned),
        );
        let expected = (
            c.status,
            c.code.map(str::to_owned),
            c.field.filter(|_| c.code.is_some()).map(str::to_owned),
        );
        let matches = if c.code.is_some() {
            got == expected
        } else {
            got.0 == expected.0
        };
        if !matches {
            failures.push(format!(
                "{label}: expected {expected:?}, got {got:?}: {}",
                text.chars().take(300).collect::<String>()
            ));
        }
        let now = written(&data);
        if now != baseline {
            failures.push(format!("{label}: wrote something: {baseline:?} -> {now:?}"));
            baseline = now;
        }
    }

    // --- SMTP: submission (AUTH PLAIN on loopback) and the inbound MX ---
    let ehlo = || step("EHLO client.example", 250);
    let data_msg = |headers: &str, body: &str| format!("{headers}\r\n\r\n{body}\r\n.\r\n");
    let authed = |key: &str| vec![ehlo(), step(auth(key), 235)];
    let envelope = |key: &str| {
        let mut s = authed(key);
        s.push(step("MAIL FROM:<shop@shop.example>", 250));
        s.push(step("RCPT TO:<ann@example.com>", 250));
        s.push(step("DATA", 354));
        s
    };
    let with = |mut steps: Vec<Step>, more: Vec<Step>| {
        steps.extend(more);
        steps
    };
    let forged = format!("ph_{}_{}", key_id(&read), "A".repeat(43));
    let admin = server.key.clone();
    #[rustfmt::skip]
    let smtp_cases = vec![
        SmtpCase { name: "MAIL before EHLO", to: Listener::Submission, steps: vec![step("MAIL FROM:<a@shop.example>", 503)] },
        SmtpCase { name: "MAIL before AUTH", to: Listener::Submission, steps: vec![ehlo(), step("MAIL FROM:<a@shop.example>", 530)] },
        SmtpCase { name: "AUTH with a forged key", to: Listener::Submission, steps: vec![ehlo(), step(auth(&forged), 535)] },
        SmtpCase { name: "AUTH with no key at all", to: Listener::Submission, steps: vec![ehlo(), step(auth("password"), 535)] },
        SmtpCase { name: "AUTH with a revoked key", to: Listener::Submission, steps: vec![ehlo(), step(auth(&revoked), 535)] },
        SmtpCase { name: "AUTH with a read-only key", to: Listener::Submission, steps: vec![ehlo(), step(auth(&read), 535)] },
        SmtpCase { name: "AUTH with broken base64", to: Listener::Submission, steps: vec![ehlo(), step("AUTH PLAIN !!!notbase64", 501)] },
        SmtpCase { name: "AUTH with an unknown mechanism", to: Listener::Submission, steps: vec![ehlo(), step("AUTH CRAM-MD5", 504)] },
        SmtpCase { name: "AUTH twice", to: Listener::Submission, steps: with(authed(&send), vec![step(auth(&send), 503)]) },
        SmtpCase { name: "a bad sender", to: Listener::Submission, steps: with(authed(&send), vec![step("MAIL FROM:<not an address>", 501)]) },
        SmtpCase { name: "a sender without a domain", to: Listener::Submission, steps: with(authed(&send), vec![step("MAIL FROM:<nodomain>", 501)]) },
        SmtpCase { name: "nested MAIL", to: Listener::Submission, steps: with(authed(&send), vec![step("MAIL FROM:<a@shop.example>", 250), step("MAIL FROM:<b@shop.example>", 503)]) },
        SmtpCase { name: "RCPT before MAIL", to: Listener::Submission, steps: with(authed(&send), vec![step("RCPT TO:<ann@example.com>", 503)]) },
        SmtpCase { name: "a bad recipient", to: Listener::Submission, steps: with(authed(&send), vec![step("MAIL FROM:<a@shop.example>", 250), step("RCPT TO:<broken>", 501)]) },
        SmtpCase { name: "DATA without recipients", to: Listener::Submission, steps: with(authed(&send), vec![step("MAIL FROM:<a@shop.example>", 250), step("DATA", 554)]) },
        SmtpCase { name: "SIZE over the limit", to: Listener::Submission, steps: with(authed(&send), vec![step("MAIL FROM:<a@shop.example> SIZE=999999999999", 552)]) },
        SmtpCase { name: "an unknown command", to: Listener::Submission, steps: vec![ehlo(), step("XYZZY", 500)] },
        SmtpCase { name: "a line too long", to: Listener::Submission, steps: vec![ehlo(), step(format!("NOOP {}", long(5000)), 500)] },
        SmtpCase { name: "VRFY", to: Listener::Submission, steps: vec![ehlo(), step("VRFY root", 252)] },
        SmtpCase { name: "envelope sender of another tenant's domain", to: Listener::Submission, steps: with(authed(&admin), vec![step("MAIL FROM:<ceo@other-tenant.example>", 250), step("RCPT TO:<ann@example.com>", 250), step("DATA", 354), step(data_msg("From: ceo@other-tenant.example\r\nSubject: Hi", "Hello"), 550)]) },
        SmtpCase { name: "From header of another tenant's subdomain", to: Listener::Submission, steps: with(envelope(&send), vec![step(data_msg("From: CEO <ceo@x.other-tenant.example>\r\nSubject: Hi", "Hello"), 550)]) },
        SmtpCase { name: "an unknown stream", to: Listener::Submission, steps: with(envelope(&send), vec![step(data_msg("From: shop@shop.example\r\nSubject: Hi\r\nX-Posthorn-Stream: Not A Stream", "Hello"), 554)]) },
        SmtpCase { name: "a subject longer than the API allows", to: Listener::Submission, steps: with(envelope(&send), vec![step(data_msg(&format!("From: shop@shop.example\r\nSubject: {}", long(999)), "Hello"), 554)]) },
        SmtpCase { name: "a campaign with a control character", to: Listener::Submission, steps: with(envelope(&send), vec![step(data_msg("From: shop@shop.example\r\nSubject: Hi\r\nX-Posthorn-Campaign: spring\x07sale", "Hello"), 554)]) },
        SmtpCase { name: "a campaign too long", to: Listener::Submission, steps: with(envelope(&send), vec![step(data_msg(&format!("From: shop@shop.example\r\nSubject: Hi\r\nX-Posthorn-Campaign: {}", long(5002)), "Hello"), 554)]) },
        SmtpCase { name: "the stream given twice", to: Listener::Submission, steps: with(envelope(&send), vec![step(data_msg("From: shop@shop.example\r\nSubject: Hi\r\nX-Posthorn-Stream: news\r\nX-Posthorn-Stream: alerts", "Hello"), 554)]) },
        SmtpCase { name: "a NUL byte in the body", to: Listener::Submission, steps: with(envelope(&send), vec![step(data_msg("From: shop@shop.example\r\nSubject: Hi", "a\0b"), 554)]) },
        SmtpCase { name: "a pasted DKIM signature", to: Listener::Submission, steps: with(envelope(&send), vec![step(data_msg("DKIM-Signature: v=1; d=bank.example; s=x; b=AAAA\r\nFrom: shop@shop.example\r\nSubject: Hi", "Hello"), 550)]) },
        SmtpCase { name: "a forged Authentication-Results", to: Listener::Submission, steps: with(envelope(&send), vec![step(data_msg("Authentication-Results: mx.example; dkim=pass\r\nFrom: shop@shop.example\r\nSubject: Hi", "Hello"), 550)]) },
        SmtpCase { name: "an unknown X-Posthorn header", to: Listener::Submission, steps: with(envelope(&send), vec![step(data_msg("X-Posthorn-Tenant: other\r\nFrom: shop@shop.example\r\nSubject: Hi", "Hello"), 550)]) },
        SmtpCase { name: "a Latin-1 subject", to: Listener::Submission, steps: with(envelope(&send), vec![step(&b"From: shop@shop.example\r\nSubject: Gr\xfc\xdfe\r\n\r\nHello\r\n.\r\n"[..], 554)]) },
        SmtpCase { name: "a header line that is no header", to: Listener::Submission, steps: with(envelope(&send), vec![step(data_msg("From: shop@shop.example\r\nthis is not a header\r\nSubject: Hi", "Hello"), 554)]) },
        // --- the inbound MX ---
        SmtpCase { name: "MX: relaying to a foreign address", to: Listener::Mx, steps: vec![ehlo(), step("MAIL FROM:<a@remote.example>", 250), step("RCPT TO:<victim@gmail.example>", 550)] },
        SmtpCase { name: "MX: an unknown local part", to: Listener::Mx, steps: vec![ehlo(), step("MAIL FROM:<a@remote.example>", 250), step("RCPT TO:<postmaster-not-ours@shop.example>", 550)] },
        SmtpCase { name: "MX: a source route", to: Listener::Mx, steps: vec![ehlo(), step("MAIL FROM:<a@remote.example>", 250), step("RCPT TO:<@relay.example:victim@gmail.example>", 550)] },
        SmtpCase { name: "MX: a percent-hack relay", to: Listener::Mx, steps: vec![ehlo(), step("MAIL FROM:<a@remote.example>", 250), step("RCPT TO:<victim%gmail.example@shop.example>", 550)] },
        SmtpCase { name: "MX: a bare recipient", to: Listener::Mx, steps: vec![ehlo(), step("MAIL FROM:<a@remote.example>", 250), step("RCPT TO:<postmaster>", 501)] },
        SmtpCase { name: "MX: AUTH is not offered", to: Listener::Mx, steps: vec![ehlo(), step(auth(&admin), 502)] },
        SmtpCase { name: "MX: DATA before RCPT", to: Listener::Mx, steps: vec![ehlo(), step("MAIL FROM:<a@remote.example>", 250), step("DATA", 554)] },
        SmtpCase { name: "MX: RCPT before MAIL", to: Listener::Mx, steps: vec![ehlo(), step("RCPT TO:<fbl@shop.example>", 503)] },
        SmtpCase { name: "MX: MAIL before EHLO", to: Listener::Mx, steps: vec![step("MAIL FROM:<a@remote.example>", 503)] },
        SmtpCase { name: "MX: a bad sender", to: Listener::Mx, steps: vec![ehlo(), step("MAIL FROM:<a b>", 501)] },
        SmtpCase { name: "MX: SIZE over the limit", to: Listener::Mx, steps: vec![ehlo(), step("MAIL FROM:<a@remote.example> SIZE=999999999999", 552)] },
        SmtpCase { name: "MX: an unknown command", to: Listener::Mx, steps: vec![ehlo(), step("GET / HTTP/1.1", 500)] },
        SmtpCase { name: "MX: a line too long", to: Listener::Mx, steps: vec![ehlo(), step(format!("MAIL FROM:<{}@remote.example>", long(5000)), 500)] },
        SmtpCase { name: "MX: too many recipients", to: Listener::Mx, steps: {
            let mut s = vec![ehlo(), step("MAIL FROM:<a@remote.example>", 250)];
            s.extend((0..16).map(|_| step("RCPT TO:<fbl@shop.example>", 250)));
            s.push(step("RCPT TO:<fbl@shop.example>", 452));
            s
        } },
        SmtpCase { name: "MX: a recipient with a NUL", to: Listener::Mx, steps: vec![ehlo(), step("MAIL FROM:<a@remote.example>", 250), step("RCPT TO:<fbl\0@shop.example>", 501)] },
    ];
    let smtp_total = smtp_cases.len();
    for c in smtp_cases {
        let addr = match c.to {
            Listener::Submission => submission,
            Listener::Mx => mx,
        };
        let steps = c.steps;
        let result = tokio::task::spawn_blocking(move || converse(addr, &steps))
            .await
            .unwrap();
        if let Err(e) = result {
            failures.push(format!("SMTP {}: {e}", c.name));
        }
        let now = written(&data);
        if now != baseline {
            failures.push(format!(
                "SMTP {}: wrote something: {baseline:?} -> {now:?}",
                c.name
            ));
            baseline = now;
        }
    }

    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        http_cases + smtp_total,
        failures.join("\n")
    );
    assert!(
        http_cases + smtp_total >= 150,
        "{http_cases} + {smtp_total} cases"
    );
    eprintln!("bad-input table: {http_cases} HTTP and {smtp_total} SMTP cases held");
}
