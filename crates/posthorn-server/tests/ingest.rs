//! Other providers' event webhooks over a real socket: a server on
//! 127.0.0.1:0 with a SQLite store in a temporary directory. Each
//! provider's documented payloads are posted signed the way the provider
//! signs them, with keys the test makes; the statuses, contacts and
//! suppressions they cause are read back through the API, and forged or
//! replayed requests are shown to be refused with 401 having written
//! nothing. No test touches the internet: SNS certificates are configured.

use base64::Engine;
use posthorn_core::config::Config;
use posthorn_core::{Clock, SystemClock};
use posthorn_store::{SqliteStore, Store, Tenant};
use reqwest::Method;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;

mod common;

fn now() -> i64 {
    SystemClock.now_ms()
}

struct Server {
    addr: SocketAddr,
    http: reqwest::Client,
    store: Arc<SqliteStore>,
    admin: String,
    tenant: Tenant,
    _dir: tempfile::TempDir,
}

#[derive(Debug)]
struct Resp {
    status: u16,
    text: String,
    json: Value,
}

/// What a tenant has written, to show a refused request wrote nothing.
#[derive(Debug, PartialEq)]
struct Snapshot {
    events: usize,
    suppressions: usize,
    contacts: Vec<Option<String>>,
}

async fn start(configure: impl FnOnce(&mut Config)) -> Server {
    let booted = common::boot(|config, addr| {
        // The URLs handed out point at this server.
        config.server.public_url = Some(format!("http://{addr}"));
        // Never out to the internet from a test.
        config.ingest.fetch = false;
        configure(config);
    })
    .await;
    let tenant = booted
        .store
        .tenant_by_name("default")
        .await
        .unwrap()
        .unwrap();
    common::serve(booted.app, booted.listener);
    Server {
        addr: booted.addr,
        http: common::http_client(),
        store: booted.store,
        admin: booted.admin,
        tenant,
        _dir: booted.dir,
    }
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let r = req.send().await.expect("request sent");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body read");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp { status, text, json }
    }

    async fn api(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        let mut req = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.admin);
        if let Some(body) = body {
            req = req.json(&body);
        }
        self.send(req).await
    }

    /// Creates a source and returns its answer (with `url`).
    async fn source(&self, body: Value) -> Value {
        let r = self
            .api(Method::POST, "/v1/ingest/sources", Some(body))
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.json
    }

    /// The path of a source's URL (the server's public URL is its address).
    fn path_of(url: &Value) -> String {
        let url = url.as_str().unwrap();
        let at = url.find("/v1/ingest/").unwrap();
        url[at..].to_owned()
    }

    async fn webhook(&self, path: &str, body: &[u8], headers: &[(&str, String)]) -> Resp {
        let mut req = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_vec());
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        self.send(req).await
    }

    async fn delivery(&self, id: &str) -> Value {
        let r = self
            .api(Method::GET, &format!("/v1/deliveries/{id}"), None)
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json
    }

    async fn contact_status(&self, address: &str) -> Option<String> {
        let r = self
            .api(Method::GET, &format!("/v1/contacts/{address}"), None)
            .await;
        (r.status == 200).then(|| r.json["status"].as_str().unwrap().to_owned())
    }

    async fn suppressed(&self, address: &str) -> Option<String> {
        let r = self.api(Method::GET, "/v1/suppressions", None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json["suppressions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["address"] == address)
            .map(|s| s["reason"].as_str().unwrap().to_owned())
    }

    async fn snapshot(&self, addresses: &[&str]) -> Snapshot {
        let events = self
            .store
            .search_events(
                &self.tenant.id,
                &posthorn_store::conformance::search("", posthorn_core::search::Surface::Events),
                None,
                10_000,
            )
            .await
            .unwrap()
            .len();
        let suppressions = self
            .store
            .suppressions(&self.tenant.id, now())
            .await
            .unwrap()
            .len();
        let mut contacts = Vec::new();
        for a in addresses {
            contacts.push(self.contact_status(a).await);
        }
        Snapshot {
            events,
            suppressions,
            contacts,
        }
    }

    /// The delivery of the `i`th event of a webhook answer.
    async fn delivery_of(&self, answer: &Resp, i: usize) -> Value {
        assert_eq!(answer.status, 200, "{}", answer.text);
        let id = answer.json["events"][i]["delivery_id"]
            .as_str()
            .unwrap()
            .to_owned();
        self.delivery(&id).await
    }
}

/// Asserts a refusal: 401 `verification_failed`, and nothing written.
/// A new API key of `tenant` with one scope, stored directly.
async fn key_of(
    s: &Server,
    tenant: &posthorn_core::TenantId,
    scope: posthorn_store::Scope,
) -> posthorn_server::keys::GeneratedKey {
    let key = posthorn_server::keys::generate();
    s.store
        .insert_api_key(posthorn_store::NewApiKey {
            id: key.id.clone(),
            tenant_id: tenant.clone(),
            name: None,
            scopes: vec![scope],
            secret_hash: key.secret_hash.clone(),
            created_at: now(),
        })
        .await
        .unwrap();
    key
}

async fn assert_refused(server: &Server, before: &Snapshot, addresses: &[&str], r: Resp) {
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "verification_failed", "{}", r.text);
    assert_eq!(
        &server.snapshot(addresses).await,
        before,
        "a refused request wrote something"
    );
}

// ---------------------------------------------------------------------------
// Sources
// ---------------------------------------------------------------------------

/// A delivery's shown status and its two axes.
fn status_axes(d: &Value) -> (Value, Value, Value) {
    (
        d["status"].clone(),
        d["delivery_status"].clone(),
        d["engagement_status"].clone(),
    )
}

/// Delivered, opened and clicked in any order end as the fold's maximum.
fn assert_every_order_clicked(statuses: &[(Value, Value, Value)]) {
    assert_eq!(
        statuses[0],
        (json!("clicked"), json!("delivered"), json!("clicked"))
    );
    assert!(statuses.iter().all(|s| *s == statuses[0]), "{statuses:?}");
}

#[tokio::test]
async fn sources_are_created_listed_and_removed_by_admins_of_their_tenant() {
    let s = start(|_| {}).await;
    let mailgun = s
        .source(json!({"provider": "mailgun", "name": "main", "signing_key": "key-abc"}))
        .await;
    assert_eq!(mailgun["provider"], "mailgun");
    let url = mailgun["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("http://{}/v1/ingest/", s.addr)),
        "{url}"
    );
    // The token is long and random: two sources never share one.
    let other = s
        .source(json!({"provider": "mailgun", "signing_key": "k2"}))
        .await;
    assert_ne!(other["url"], mailgun["url"]);
    assert!(Server::path_of(&mailgun["url"]).len() > "/v1/ingest/".len() + 40);

    let postmark = s.source(json!({"provider": "postmark"})).await;
    let password = postmark["password"].as_str().unwrap();
    assert!(password.len() >= 24);
    assert!(
        postmark["url"]
            .as_str()
            .unwrap()
            .contains(&format!("posthorn:{password}@"))
    );

    // Listing shows no secret and no URL.
    let list = s.api(Method::GET, "/v1/ingest/sources", None).await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(list.json["data"].as_array().unwrap().len(), 3);
    assert!(
        !list.text.contains("key-abc") && !list.text.contains(password),
        "{}",
        list.text
    );
    assert!(!list.text.contains("/v1/ingest/"), "{}", list.text);

    // Bad input: a clear error naming the field, nothing created.
    for (body, status, field) in [
        (json!({"provider": "sparkpost"}), 422, "provider"),
        (json!({"provider": "mailgun"}), 422, "signing_key"),
        (
            json!({"provider": "mailgun", "signing_key": "k", "public_key": "x"}),
            422,
            "public_key",
        ),
        (
            json!({"provider": "sendgrid", "public_key": "bm90IGEga2V5"}),
            422,
            "public_key",
        ),
        (
            json!({"provider": "ses", "topic_arns": []}),
            422,
            "topic_arns",
        ),
        (
            json!({"provider": "postmark", "password": "has:colon"}),
            422,
            "password",
        ),
        (
            json!({"provider": "mailgun", "signing_key": "k", "extra": 1}),
            400,
            "extra",
        ),
    ] {
        let r = s
            .api(Method::POST, "/v1/ingest/sources", Some(body.clone()))
            .await;
        assert_eq!(r.status, status, "{body}: {}", r.text);
        assert_eq!(r.json["error"]["field"], field, "{body}: {}", r.text);
    }
    let list = s.api(Method::GET, "/v1/ingest/sources", None).await;
    assert_eq!(list.json["data"].as_array().unwrap().len(), 3);

    // A key without the admin scope may not.
    let read = key_of(&s, &s.tenant.id, posthorn_store::Scope::Read).await;
    let r = s
        .send(
            s.http
                .get(s.url("/v1/ingest/sources"))
                .bearer_auth(&read.token),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);

    // Another tenant's admin sees none and removes none.
    let t2 = s.store.create_tenant("t2", now()).await.unwrap();
    let k2 = key_of(&s, &t2.id, posthorn_store::Scope::Admin).await;
    let id = mailgun["id"].as_str().unwrap();
    let theirs = s
        .send(
            s.http
                .get(s.url("/v1/ingest/sources"))
                .bearer_auth(&k2.token),
        )
        .await;
    assert_eq!(theirs.json["data"].as_array().unwrap().len(), 0);
    let r = s
        .send(
            s.http
                .delete(s.url(&format!("/v1/ingest/sources/{id}")))
                .bearer_auth(&k2.token),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);

    // Removed: its URL is no endpoint any more.
    let r = s
        .api(Method::DELETE, &format!("/v1/ingest/sources/{id}"), None)
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s
        .webhook(&Server::path_of(&mailgun["url"]), b"{}", &[])
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = s.webhook("/v1/ingest/not-a-token", b"{}", &[]).await;
    assert_eq!(r.status, 404, "{}", r.text);
}

// ---------------------------------------------------------------------------
// Postmark
// ---------------------------------------------------------------------------

fn postmark(record: &str, message: &str, to: &str, at: &str, extra: Value) -> Vec<u8> {
    let mut v = json!({"RecordType": record, "MessageStream": "outbound", "ServerID": 23,
        "MessageID": message, "Tag": "welcome", "Metadata": {}});
    let fields = v.as_object_mut().unwrap();
    match record {
        "Bounce" | "SpamComplaint" => {
            fields.insert("Email".into(), json!(to));
            fields.insert("From".into(), json!("sender@example.com"));
            fields.insert("BouncedAt".into(), json!(at));
        }
        "Delivery" => {
            fields.insert("Recipient".into(), json!(to));
            fields.insert("DeliveredAt".into(), json!(at));
            fields.insert("Details".into(), json!("smtp;250 2.0.0 OK 1573000000 ok"));
        }
        "SubscriptionChange" => {
            fields.insert("Recipient".into(), json!(to));
            fields.insert("ChangedAt".into(), json!(at));
        }
        _ => {
            fields.insert("Recipient".into(), json!(to));
            fields.insert("ReceivedAt".into(), json!(at));
        }
    }
    fields.extend(extra.as_object().unwrap().clone());
    serde_json::to_vec(&v).unwrap()
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test]
async fn postmark_webhooks_fold_into_statuses_contacts_and_suppressions() {
    let s = start(|_| {}).await;
    let source = s
        .source(json!({"provider": "postmark", "username": "hook", "password": "s3cret-pw"}))
        .await;
    let path = Server::path_of(&source["url"]);
    let auth = [("authorization", basic("hook", "s3cret-pw"))];
    let msg = "883953f4-6105-42a2-a16a-77a8eac79483";

    // The URL Postmark is given carries the credentials itself.
    let url = source["url"].as_str().unwrap().to_owned();
    let r = s
        .send(
            s.http
                .post(reqwest::Url::parse(&url).unwrap())
                .header("content-type", "application/json")
                .body(postmark(
                    "Delivery",
                    msg,
                    "John@Example.com",
                    "2019-11-05T16:33:54.9070259Z",
                    json!({}),
                )),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["recorded"], 1);
    let john = s.delivery_of(&r, 0).await;
    assert_eq!(john["status"], "delivered");
    assert_eq!(john["recipient"], "john@example.com");
    let message_id = john["message_id"].as_str().unwrap().to_owned();
    assert_eq!(
        s.contact_status("john@example.com").await.as_deref(),
        Some("active")
    );

    // A hard bounce for another recipient of the same message joins it.
    let bounce = postmark(
        "Bounce",
        msg,
        "jane@example.com",
        "2019-11-05T16:35:00Z",
        json!({
        "ID": 4323372036854775807u64, "Type": "HardBounce", "TypeCode": 1, "Name": "Hard bounce",
        "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "DumpAvailable": true, "Inactive": true, "CanActivate": true, "Subject": "Welcome"}),
    );
    let r = s.webhook(&path, &bounce, &auth).await;
    let jane = s.delivery_of(&r, 0).await;
    assert_eq!(jane["message_id"], message_id.as_str());
    assert_eq!(jane["status"], "bounced");
    assert_eq!(jane["bounce_type"], "hard");
    assert_eq!(
        s.contact_status("jane@example.com").await.as_deref(),
        Some("bounced")
    );
    assert_eq!(
        s.suppressed("jane@example.com").await.as_deref(),
        Some("hard_bounce")
    );
    let message = s
        .api(Method::GET, &format!("/v1/messages/{message_id}"), None)
        .await;
    assert_eq!(message.status, 200, "{}", message.text);
    assert_eq!(
        message.json["deliveries"].as_array().map(Vec::len),
        Some(2),
        "{}",
        message.text
    );

    // Postmark's words are kept: in the details and the raw payload.
    let event_id = r.json["events"][0]["id"].as_str().unwrap().to_owned();
    let timeline = s
        .api(
            Method::GET,
            &format!("/v1/deliveries/{}/events", jane["id"].as_str().unwrap()),
            None,
        )
        .await;
    for shown in [
        "provider.postmark.HardBounce(1)",
        "does not exist",
        // The reply's codes, read from Postmark's `smtp;550 5.1.1 ...`.
        "\"smtp_code\":550",
        "\"enhanced_code\":\"5.1.1\"",
        "\"reason\":\"userunknown\"",
        "provider-webhook",
    ] {
        assert!(timeline.text.contains(shown), "{shown}: {}", timeline.text);
    }
    let raw = s
        .api(Method::GET, &format!("/v1/events/{event_id}/raw"), None)
        .await;
    assert_eq!(raw.status, 200, "{}", raw.text);
    assert_eq!(raw.json["ID"], 4323372036854775807u64);

    // The same bounce again is recorded once.
    let r = s.webhook(&path, &bounce, &auth).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (r.json["recorded"].clone(), r.json["duplicates"].clone()),
        (json!(0), json!(1))
    );
    assert_eq!(r.json["events"][0]["id"], event_id.as_str());

    // A complaint suppresses; an unsubscribe is the recipient's.
    let r = s
        .webhook(
            &path,
            &postmark(
                "SpamComplaint",
                msg,
                "john@example.com",
                "2019-11-05T17:00:00Z",
                json!({"ID": 42, "Type": "SpamComplaint", "TypeCode": 512}),
            ),
            &auth,
        )
        .await;
    assert_eq!(s.delivery_of(&r, 0).await["status"], "complained");
    assert_eq!(
        s.contact_status("john@example.com").await.as_deref(),
        Some("complained")
    );
    assert_eq!(
        s.suppressed("john@example.com").await.as_deref(),
        Some("complaint")
    );

    // Refusals: wrong password, another user, none at all, another scheme.
    let addresses = ["john@example.com", "jane@example.com", "new@example.com"];
    let before = s.snapshot(&addresses).await;
    let fresh = postmark(
        "Bounce",
        "other-msg",
        "new@example.com",
        "2019-11-05T16:35:00Z",
        json!({"ID": 7, "Type": "HardBounce", "TypeCode": 1, "Details": "550 5.1.1 unknown"}),
    );
    for headers in [
        vec![("authorization", basic("hook", "wrong"))],
        vec![("authorization", basic("other", "s3cret-pw"))],
        vec![],
        vec![("authorization", "Bearer s3cret-pw".to_owned())],
    ] {
        let r = s.webhook(&path, &fresh, &headers).await;
        assert_refused(&s, &before, &addresses, r).await;
    }
    // Verified but not Postmark's format: 400, nothing written.
    let r = s
        .webhook(&path, b"{\"RecordType\": \"Bounce\"}", &auth)
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(s.snapshot(&addresses).await, before);
}

#[tokio::test]
async fn postmark_out_of_order_arrival_gives_the_same_status() {
    let s = start(|_| {}).await;
    let source = s
        .source(json!({"provider": "postmark", "username": "u", "password": "p"}))
        .await;
    let path = Server::path_of(&source["url"]);
    let auth = [("authorization", basic("u", "p"))];
    let delivered = |m: &str| {
        postmark(
            "Delivery",
            m,
            "a@example.com",
            "2019-11-05T16:33:54Z",
            json!({}),
        )
    };
    let opened = |m: &str| {
        postmark(
            "Open",
            m,
            "a@example.com",
            "2019-11-05T16:40:00Z",
            json!({"FirstOpen": true, "UserAgent": "Mozilla/5.0", "Geo": {"IP": "192.0.2.1"}}),
        )
    };
    let clicked = |m: &str| {
        postmark(
            "Click",
            m,
            "a@example.com",
            "2019-11-05T16:41:00Z",
            json!({"OriginalLink": "https://example.com/welcome", "ClickLocation": "HTML", "UserAgent": "Mozilla/5.0"}),
        )
    };
    let mut statuses = Vec::new();
    for (m, order) in [
        ("in-order", [0, 1, 2]),
        ("reversed", [2, 1, 0]),
        ("mixed", [1, 2, 0]),
    ] {
        let mut last = None;
        for i in order {
            let body = [delivered(m), opened(m), clicked(m)][i].clone();
            let r = s.webhook(&path, &body, &auth).await;
            last = Some(s.delivery_of(&r, 0).await);
        }
        statuses.push(status_axes(&last.unwrap()));
    }
    assert_every_order_clicked(&statuses);
}

// ---------------------------------------------------------------------------
// Mailgun
// ---------------------------------------------------------------------------

const MAILGUN_KEY: &str = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0";

fn mailgun(key: &str, timestamp: i64, token: &str, event: Value) -> Vec<u8> {
    let ts = timestamp.to_string();
    let signature = posthorn_providers::mailgun::sign(key.as_bytes(), &ts, token);
    serde_json::to_vec(&json!({
        "signature": {"timestamp": ts, "token": token, "signature": signature},
        "event-data": event,
    }))
    .unwrap()
}

fn mailgun_event(kind: &str, id: &str, to: &str, message: &str, at: f64, extra: Value) -> Value {
    let mut v = json!({"event": kind, "id": id, "timestamp": at, "recipient": to,
        "log-level": "info", "envelope": {"sender": "bob@sender.example", "transport": "smtp"},
        "message": {"headers": {"message-id": message, "from": "Bob <bob@sender.example>",
            "to": to, "subject": "Hi"}, "size": 1234},
        "tags": [], "user-variables": {}});
    v.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    v
}

fn token(n: u32) -> String {
    format!("{n:0>50}")
}

#[tokio::test]
async fn mailgun_webhooks_are_verified_once_and_folded() {
    let s = start(|_| {}).await;
    let source = s
        .source(json!({"provider": "mailgun", "signing_key": MAILGUN_KEY}))
        .await;
    let path = Server::path_of(&source["url"]);
    let ts = now() / 1000;
    let at = ts as f64 + 0.329574;
    let msg = "20130503182626.18666.16540@sender.example";

    let delivered = mailgun(
        MAILGUN_KEY,
        ts,
        &token(1),
        mailgun_event(
            "delivered",
            "CPgfbmQMTCKtHW6uIWtuVe",
            "alice@example.com",
            msg,
            at,
            json!({"delivery-status": {"tls": true, "mx-host": "smtp-in.example.com", "code": 250,
            "description": "", "attempt-no": 1, "message": "OK", "certificate-verified": true}}),
        ),
    );
    let r = s.webhook(&path, &delivered, &[]).await;
    assert_eq!(r.json["recorded"], 1, "{}", r.text);
    assert_eq!(s.delivery_of(&r, 0).await["status"], "delivered");

    let failed = mailgun(
        MAILGUN_KEY,
        ts,
        &token(2),
        mailgun_event(
            "failed",
            "G9Bn5sl1TC6nu79C8C0bwg",
            "bob@example.com",
            msg,
            at + 1.0,
            json!({"severity": "permanent", "reason": "bounce",
            "delivery-status": {"code": 550, "attempt-no": 1, "mx-host": "mx.example.com",
                "message": "5.1.1 The email account that you tried to reach does not exist.",
                "description": ""}}),
        ),
    );
    let r = s.webhook(&path, &failed, &[]).await;
    let bob = s.delivery_of(&r, 0).await;
    assert_eq!(
        (bob["status"].clone(), bob["bounce_type"].clone()),
        (json!("bounced"), json!("hard"))
    );
    assert_eq!(
        s.contact_status("bob@example.com").await.as_deref(),
        Some("bounced")
    );
    assert_eq!(
        s.suppressed("bob@example.com").await.as_deref(),
        Some("hard_bounce")
    );

    // Refusals, each writing nothing.
    let addresses = ["alice@example.com", "bob@example.com", "carol@example.com"];
    let before = s.snapshot(&addresses).await;
    // The very same request again: its token was used.
    let r = s.webhook(&path, &failed, &[]).await;
    assert_refused(&s, &before, &addresses, r).await;
    let carol = |tok: u32, key: &str, t: i64| {
        mailgun(
            key,
            t,
            &token(tok),
            mailgun_event("complained", "c1", "carol@example.com", msg, at, json!({})),
        )
    };
    // A wrong key, a stale and a future timestamp.
    for body in [
        carol(3, "another-key", ts),
        carol(4, MAILGUN_KEY, ts - 3600),
        carol(5, MAILGUN_KEY, ts + 3600),
    ] {
        let r = s.webhook(&path, &body, &[]).await;
        assert_refused(&s, &before, &addresses, r).await;
    }
    // A forged signature: the signed timestamp changed.
    let mut forged: Value = serde_json::from_slice(&carol(6, MAILGUN_KEY, ts)).unwrap();
    forged["signature"]["timestamp"] = json!((ts - 1).to_string());
    let r = s
        .webhook(&path, &serde_json::to_vec(&forged).unwrap(), &[])
        .await;
    assert_refused(&s, &before, &addresses, r).await;

    // A retry with a new token but the same event id counts once.
    let retry = mailgun(
        MAILGUN_KEY,
        ts,
        &token(7),
        mailgun_event(
            "delivered",
            "CPgfbmQMTCKtHW6uIWtuVe",
            "alice@example.com",
            msg,
            at,
            json!({"delivery-status": {"code": 250, "message": "OK"}}),
        ),
    );
    let r = s.webhook(&path, &retry, &[]).await;
    assert_eq!(
        (r.json["recorded"].clone(), r.json["duplicates"].clone()),
        (json!(0), json!(1)),
        "{}",
        r.text
    );

    // A complaint with a fresh token is taken.
    let r = s.webhook(&path, &carol(8, MAILGUN_KEY, ts), &[]).await;
    assert_eq!(
        s.delivery_of(&r, 0).await["engagement_status"],
        "complained"
    );
    assert_eq!(
        s.suppressed("carol@example.com").await.as_deref(),
        Some("complaint")
    );
}

#[tokio::test]
async fn mailgun_out_of_order_arrival_gives_the_same_status() {
    let s = start(|_| {}).await;
    let source = s
        .source(json!({"provider": "mailgun", "signing_key": MAILGUN_KEY}))
        .await;
    let path = Server::path_of(&source["url"]);
    let ts = now() / 1000;
    let mut n = 100;
    let mut statuses = Vec::new();
    for (m, order) in [
        ("m1@x", [0, 1, 2, 3]),
        ("m2@x", [3, 2, 1, 0]),
        ("m3@x", [2, 0, 3, 1]),
    ] {
        let events = [
            mailgun_event(
                "accepted",
                &format!("{m}a"),
                "a@example.com",
                m,
                ts as f64,
                json!({}),
            ),
            mailgun_event(
                "failed",
                &format!("{m}t"),
                "a@example.com",
                m,
                ts as f64 + 1.0,
                json!({"severity": "temporary", "reason": "generic",
                    "delivery-status": {"code": 452, "message": "4.2.2 Mailbox full", "attempt-no": 1}}),
            ),
            mailgun_event(
                "delivered",
                &format!("{m}d"),
                "a@example.com",
                m,
                ts as f64 + 60.0,
                json!({"delivery-status": {"code": 250, "message": "OK", "attempt-no": 2}}),
            ),
            mailgun_event(
                "clicked",
                &format!("{m}c"),
                "a@example.com",
                m,
                ts as f64 + 120.0,
                json!({"url": "https://example.com/x", "ip": "192.0.2.9",
                    "client-info": {"user-agent": "Mozilla/5.0"}}),
            ),
        ];
        let mut last = None;
        for i in order {
            n += 1;
            let r = s
                .webhook(
                    &path,
                    &mailgun(MAILGUN_KEY, ts, &token(n), events[i].clone()),
                    &[],
                )
                .await;
            last = Some(s.delivery_of(&r, 0).await);
        }
        statuses.push(status_axes(&last.unwrap()));
    }
    assert_every_order_clicked(&statuses);
}

// ---------------------------------------------------------------------------
// SendGrid
// ---------------------------------------------------------------------------

struct SendgridKey(ring::signature::EcdsaKeyPair);

impl SendgridKey {
    fn new() -> Self {
        use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        SendgridKey(
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
                .unwrap(),
        )
    }

    /// The verification key as SendGrid shows it: base64 DER SPKI.
    fn public(&self) -> String {
        use ring::signature::KeyPair;
        posthorn_providers::sendgrid::PublicKey::from_point(self.0.public_key().as_ref())
            .unwrap()
            .to_base64()
    }

    /// The two headers SendGrid sends with a batch.
    fn sign(&self, timestamp: &str, body: &[u8]) -> Vec<(&'static str, String)> {
        let mut signed = timestamp.as_bytes().to_vec();
        signed.extend_from_slice(body);
        let sig = self
            .0
            .sign(&ring::rand::SystemRandom::new(), &signed)
            .unwrap();
        vec![
            (
                "X-Twilio-Email-Event-Webhook-Signature",
                base64::engine::general_purpose::STANDARD.encode(sig.as_ref()),
            ),
            (
                "X-Twilio-Email-Event-Webhook-Timestamp",
                timestamp.to_owned(),
            ),
        ]
    }
}

fn sendgrid_event(kind: &str, id: &str, to: &str, message: &str, at: i64, extra: Value) -> Value {
    let mut v = json!({"email": to, "timestamp": at, "event": kind, "sg_event_id": id,
        "sg_message_id": format!("{message}.filter0001.16648.5515E0B88.0"),
        "smtp-id": format!("<{message}@ismtpd-555>"), "category": ["cat facts"]});
    v.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    v
}

#[tokio::test]
async fn sendgrid_batches_are_verified_and_recorded_once_even_with_new_ids() {
    let s = start(|_| {}).await;
    let key = SendgridKey::new();
    let source = s
        .source(json!({"provider": "sendgrid", "public_key": key.public()}))
        .await;
    let path = Server::path_of(&source["url"]);
    let msg = "14c5d75ce93.dfd.64b469";
    let batch = |suffix: &str| {
        serde_json::to_vec(&json!([
            sendgrid_event("processed", &format!("p{suffix}"), "a@example.com", msg, 1513299569, json!({})),
            sendgrid_event("delivered", &format!("d{suffix}"), "a@example.com", msg, 1513299570,
                json!({"response": "250 OK", "ip": "168.1.1.1", "tls": 1})),
            sendgrid_event("processed", &format!("q{suffix}"), "b@example.com", msg, 1513299569, json!({})),
            sendgrid_event("bounce", &format!("b{suffix}"), "b@example.com", msg, 1513299571,
                json!({"reason": "550 5.1.1 The email account that you tried to reach does not exist.",
                    "status": "5.1.1", "type": "bounce", "bounce_classification": "Invalid Address"})),
            sendgrid_event("open", &format!("o{suffix}"), "a@example.com", msg, 1513299600,
                json!({"useragent": "Mozilla/5.0", "ip": "255.255.255.255", "sg_machine_open": false})),
            sendgrid_event("spamreport", &format!("s{suffix}"), "c@example.com", msg, 1513299650, json!({})),
            sendgrid_event("group_resubscribe", &format!("g{suffix}"), "a@example.com", msg, 1513299700,
                json!({"asm_group_id": 10})),
        ]))
        .unwrap()
    };
    let first = batch("1");
    let r = s
        .webhook(&path, &first, &key.sign("1513299569", &first))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (r.json["recorded"].clone(), r.json["ignored"].clone()),
        (json!(6), json!(1)),
        "{}",
        r.text
    );
    let a = s.delivery_of(&r, 1).await;
    assert_eq!(
        (a["status"].clone(), a["delivery_status"].clone()),
        (json!("opened"), json!("delivered"))
    );
    let b = s.delivery_of(&r, 3).await;
    assert_eq!(
        (b["status"].clone(), b["bounce_type"].clone()),
        (json!("bounced"), json!("hard"))
    );
    assert_eq!(
        a["message_id"], b["message_id"],
        "one SendGrid message, one Posthorn message"
    );
    assert_eq!(
        s.suppressed("b@example.com").await.as_deref(),
        Some("hard_bounce")
    );
    assert_eq!(
        s.contact_status("c@example.com").await.as_deref(),
        Some("complained")
    );
    assert_eq!(
        s.suppressed("c@example.com").await.as_deref(),
        Some("complaint")
    );
    assert_eq!(
        s.contact_status("a@example.com").await.as_deref(),
        Some("active")
    );

    // SendGrid retries with new sg_event_ids: the content counts once.
    let addresses = [
        "a@example.com",
        "b@example.com",
        "c@example.com",
        "d@example.com",
    ];
    let before = s.snapshot(&addresses).await;
    let retry = batch("2");
    let r = s
        .webhook(&path, &retry, &key.sign("1513299999", &retry))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (r.json["recorded"].clone(), r.json["duplicates"].clone()),
        (json!(0), json!(6)),
        "{}",
        r.text
    );
    assert_eq!(s.snapshot(&addresses).await, before);

    // Refusals: a changed body, another key, a changed timestamp, no headers.
    let evil = serde_json::to_vec(&json!([sendgrid_event(
        "bounce",
        "x",
        "d@example.com",
        msg,
        1513299571,
        json!({"reason": "550 5.1.1 unknown", "type": "bounce"})
    )]))
    .unwrap();
    let other = SendgridKey::new();
    let mut tampered = key.sign("1513299569", &first);
    tampered[1].1 = "1513299570".into();
    for (body, headers) in [
        (evil.clone(), key.sign("1513299569", &first)),
        (evil.clone(), other.sign("1513299569", &evil)),
        (first.clone(), tampered),
        (evil.clone(), vec![]),
    ] {
        let r = s.webhook(&path, &body, &headers).await;
        assert_refused(&s, &before, &addresses, r).await;
    }
}

#[tokio::test]
async fn sendgrid_out_of_order_arrival_gives_the_same_status() {
    let s = start(|_| {}).await;
    let key = SendgridKey::new();
    let source = s
        .source(json!({"provider": "sendgrid", "public_key": key.public()}))
        .await;
    let path = Server::path_of(&source["url"]);
    let mut statuses = Vec::new();
    for (m, order) in [
        ("m1", [0, 1, 2, 3]),
        ("m2", [3, 2, 1, 0]),
        ("m3", [1, 3, 0, 2]),
    ] {
        let events = [
            sendgrid_event(
                "processed",
                &format!("{m}p"),
                "a@example.com",
                m,
                1513299569,
                json!({}),
            ),
            sendgrid_event(
                "deferred",
                &format!("{m}f"),
                "a@example.com",
                m,
                1513299570,
                json!({"response": "400 try again later", "attempt": "1"}),
            ),
            sendgrid_event(
                "delivered",
                &format!("{m}d"),
                "a@example.com",
                m,
                1513299600,
                json!({"response": "250 OK"}),
            ),
            sendgrid_event(
                "click",
                &format!("{m}c"),
                "a@example.com",
                m,
                1513299700,
                json!({"url": "https://example.com/x", "useragent": "Mozilla/5.0", "ip": "192.0.2.1"}),
            ),
        ];
        // One event per batch, in this order.
        let mut last = None;
        for i in order {
            let body = serde_json::to_vec(&json!([events[i]])).unwrap();
            let r = s.webhook(&path, &body, &key.sign("1", &body)).await;
            last = Some(s.delivery_of(&r, 0).await);
        }
        statuses.push(status_axes(&last.unwrap()));
    }
    assert_every_order_clicked(&statuses);
}

// ---------------------------------------------------------------------------
// Amazon SES through SNS
// ---------------------------------------------------------------------------

const TOPIC: &str = "arn:aws:sns:us-west-2:123456789012:ses-events";
const CERT_URL: &str = "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-7506a1e35b36ef5a444dd1a8e7cc3ed8.pem";

/// An SNS signing key and its self-signed certificate, made by the test.
struct SnsSigner {
    key: rsa::RsaPrivateKey,
    cert_pem: String,
}

impl SnsSigner {
    fn new() -> Self {
        use rsa::pkcs8::{EncodePrivateKey, LineEnding};
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        let pair =
            rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["sns.amazonaws.com".to_owned()])
            .unwrap()
            .self_signed(&pair)
            .unwrap();
        SnsSigner {
            key,
            cert_pem: cert.pem(),
        }
    }

    /// Signs an SNS message as SNS does: the documented fields, each as
    /// `Name\nvalue\n` in this order, with SHA1withRSA (version 1) or
    /// SHA256withRSA (version 2). Written here from the SNS documentation,
    /// apart from the server's own code.
    fn sign(&self, message: &mut Value, version: &str) {
        let names: &[&str] = if message["Type"] == "Notification" {
            &[
                "Message",
                "MessageId",
                "Subject",
                "Timestamp",
                "TopicArn",
                "Type",
            ]
        } else {
            &[
                "Message",
                "MessageId",
                "SubscribeURL",
                "Timestamp",
                "Token",
                "TopicArn",
                "Type",
            ]
        };
        let mut text = String::new();
        for name in names {
            if let Some(value) = message[*name].as_str() {
                text.push_str(&format!("{name}\n{value}\n"));
            }
        }
        // PKCS#1 v1.5: DigestInfo (algorithm, digest), then the padding.
        let (prefix, digest): (&[u8], _) = if version == "1" {
            (
                &[
                    0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00,
                    0x04, 0x14,
                ],
                ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, text.as_bytes()),
            )
        } else {
            (
                &[
                    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
                    0x02, 0x01, 0x05, 0x00, 0x04, 0x20,
                ],
                ring::digest::digest(&ring::digest::SHA256, text.as_bytes()),
            )
        };
        let mut info = prefix.to_vec();
        info.extend_from_slice(digest.as_ref());
        let sig = self
            .key
            .sign(rsa::Pkcs1v15Sign::new_unprefixed(), &info)
            .unwrap();
        message["SignatureVersion"] = json!(version);
        message["Signature"] = json!(base64::engine::general_purpose::STANDARD.encode(sig));
    }
}

fn sns_notification(id: &str, ses: &Value) -> Value {
    json!({"Type": "Notification", "MessageId": id, "TopicArn": TOPIC,
        "Message": ses.to_string(), "Timestamp": "2017-08-05T00:41:02.669Z",
        "SigningCertURL": CERT_URL,
        "UnsubscribeURL": "https://sns.us-west-2.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x"})
}

fn ses_mail(message: &str, to: &[&str]) -> Value {
    json!({"timestamp": "2017-08-05T00:40:01.123Z", "source": "Sender Name <sender@example.com>",
        "sourceArn": "arn:aws:ses:us-west-2:123456789012:identity/sender@example.com",
        "sendingAccountId": "123456789012", "messageId": message, "destination": to,
        "headersTruncated": false, "tags": {"ses:configuration-set": ["ConfigSet"]}})
}

#[tokio::test]
async fn ses_notifications_are_verified_against_the_signing_certificate() {
    let signer = SnsSigner::new();
    let s = start(|_| {}).await;
    let source = s
        .source(
            json!({"provider": "ses", "topic_arns": [TOPIC], "certificate_pem": signer.cert_pem}),
        )
        .await;
    let path = Server::path_of(&source["url"]);
    let msg = "0000014644fe5ef6-9a483358-9170-4cb4-a269-f5dcdf415321-000000";

    // The subscription is confirmed: with fetching off, its URL is kept
    // for an operator (and nothing is fetched).
    let subscribe = "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-west-2:123456789012:ses-events&Token=2336412f37fb687f5d51e6e2425c464de";
    let mut confirm = json!({"Type": "SubscriptionConfirmation", "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": "2336412f37fb687f5d51e6e2425c464de", "TopicArn": TOPIC,
        "Message": "You have chosen to subscribe to the topic. To confirm the subscription, visit the SubscribeURL included in this message.",
        "SubscribeURL": subscribe, "Timestamp": "2012-04-26T20:45:04.751Z", "SigningCertURL": CERT_URL});
    signer.sign(&mut confirm, "1");
    let r = s
        .webhook(&path, &serde_json::to_vec(&confirm).unwrap(), &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["confirmed"], false);
    let list = s.api(Method::GET, "/v1/ingest/sources", None).await;
    assert_eq!(
        list.json["data"][0]["pending_confirmation"], subscribe,
        "{}",
        list.text
    );

    // Version 1: a delivery to a, signed SHA1withRSA.
    let delivery = json!({"eventType": "Delivery", "mail": ses_mail(msg, &["a@example.com", "b@example.com"]),
        "delivery": {"timestamp": "2017-08-05T00:41:01.669Z", "processingTimeMillis": 3760,
            "recipients": ["a@example.com"], "smtpResponse": "250 2.6.0 Message received",
            "reportingMTA": "a8-70.smtp-out.amazonses.com"}});
    let mut n1 = sns_notification("n-1", &delivery);
    signer.sign(&mut n1, "1");
    let r = s
        .webhook(&path, &serde_json::to_vec(&n1).unwrap(), &[])
        .await;
    assert_eq!(s.delivery_of(&r, 0).await["status"], "delivered");

    // Version 2: a permanent bounce for b, signed SHA256withRSA.
    let bounce = json!({"eventType": "Bounce", "mail": ses_mail(msg, &["a@example.com", "b@example.com"]),
        "bounce": {"bounceType": "Permanent", "bounceSubType": "General",
            "bouncedRecipients": [{"emailAddress": "b@example.com", "action": "failed", "status": "5.1.1",
                "diagnosticCode": "smtp; 550 5.1.1 user unknown"}],
            "timestamp": "2017-08-05T00:41:02.669Z", "feedbackId": "01000157c44f053b-61b59c11-9236-11e6-8f96-7be8aexample-000000",
            "reportingMTA": "dsn; mta.example.com"}});
    let mut n2 = sns_notification("n-2", &bounce);
    signer.sign(&mut n2, "2");
    let n2 = serde_json::to_vec(&n2).unwrap();
    let r = s.webhook(&path, &n2, &[]).await;
    let b = s.delivery_of(&r, 0).await;
    assert_eq!(
        (b["status"].clone(), b["bounce_type"].clone()),
        (json!("bounced"), json!("hard"))
    );
    assert_eq!(b["message_id"], s.delivery_of(&r, 0).await["message_id"]);
    assert_eq!(
        s.suppressed("b@example.com").await.as_deref(),
        Some("hard_bounce")
    );
    // SNS delivers at least once: the same notification again counts once.
    let r = s.webhook(&path, &n2, &[]).await;
    assert_eq!(r.json["duplicates"], 1, "{}", r.text);

    // A complaint.
    let complaint = json!({"notificationType": "Complaint", "mail": ses_mail(msg, &["a@example.com", "b@example.com"]),
        "complaint": {"complainedRecipients": [{"emailAddress": "a@example.com"}],
            "timestamp": "2017-08-05T01:00:00.000Z", "feedbackId": "fb-c1", "complaintFeedbackType": "abuse",
            "userAgent": "ExampleCorp Feedback Loop (V0.01)"}});
    let mut n3 = sns_notification("n-3", &complaint);
    signer.sign(&mut n3, "2");
    let r = s
        .webhook(&path, &serde_json::to_vec(&n3).unwrap(), &[])
        .await;
    assert_eq!(
        s.delivery_of(&r, 0).await["engagement_status"],
        "complained"
    );
    assert_eq!(
        s.suppressed("a@example.com").await.as_deref(),
        Some("complaint")
    );

    // Opens name no recipient: attributed when the message had one only.
    let open = |m: &str, to: &[&str]| {
        json!({"eventType": "Open", "mail": ses_mail(m, to),
        "open": {"ipAddress": "192.0.2.1", "timestamp": "2017-08-09T22:00:19.652Z",
            "userAgent": "Mozilla/5.0"}})
    };
    let mut one = sns_notification("n-4", &open("single", &["solo@example.com"]));
    signer.sign(&mut one, "2");
    let r = s
        .webhook(&path, &serde_json::to_vec(&one).unwrap(), &[])
        .await;
    assert_eq!(s.delivery_of(&r, 0).await["engagement_status"], "opened");
    let mut many = sns_notification("n-5", &open(msg, &["a@example.com", "b@example.com"]));
    signer.sign(&mut many, "2");
    let r = s
        .webhook(&path, &serde_json::to_vec(&many).unwrap(), &[])
        .await;
    assert_eq!(
        (r.json["recorded"].clone(), r.json["ignored"].clone()),
        (json!(0), json!(1)),
        "{}",
        r.text
    );

    // Refusals, each writing nothing.
    let addresses = ["a@example.com", "b@example.com", "c@example.com"];
    let before = s.snapshot(&addresses).await;
    let c_bounce = json!({"eventType": "Bounce", "mail": ses_mail("m-c", &["c@example.com"]),
        "bounce": {"bounceType": "Permanent", "bounceSubType": "General",
            "bouncedRecipients": [{"emailAddress": "c@example.com"}], "timestamp": "2017-08-05T00:41:02.669Z"}});
    let signed = |f: &dyn Fn(&mut Value), version: &str, after: &dyn Fn(&mut Value)| {
        let mut n = sns_notification("n-x", &c_bounce);
        f(&mut n);
        signer.sign(&mut n, version);
        after(&mut n);
        serde_json::to_vec(&n).unwrap()
    };
    let other = SnsSigner::new();
    let mut by_other = sns_notification("n-y", &c_bounce);
    other.sign(&mut by_other, "2");
    for body in [
        // Another topic than the source's.
        signed(
            &|n| n["TopicArn"] = json!("arn:aws:sns:us-west-2:123456789012:other"),
            "2",
            &|_| {},
        ),
        // The message changed after signing (both versions).
        signed(&|_| {}, "1", &|n| {
            n["Message"] = json!(
                n["Message"]
                    .as_str()
                    .unwrap()
                    .replace("c@example.com", "b@example.com")
            )
        }),
        signed(&|_| {}, "2", &|n| {
            n["Timestamp"] = json!("2017-08-05T00:41:03.000Z")
        }),
        // A certificate URL outside SNS.
        signed(
            &|n| n["SigningCertURL"] = json!("https://evil.example/cert.pem"),
            "2",
            &|_| {},
        ),
        // An unknown signature version.
        signed(&|_| {}, "2", &|n| n["SignatureVersion"] = json!("3")),
        // Signed with another key.
        serde_json::to_vec(&by_other).unwrap(),
    ] {
        let r = s.webhook(&path, &body, &[]).await;
        assert_refused(&s, &before, &addresses, r).await;
    }
}

#[tokio::test]
async fn ses_uses_the_configured_certificate_file_and_folds_out_of_order() {
    let signer = SnsSigner::new();
    let cert_dir = tempfile::tempdir().unwrap();
    let cert_file = cert_dir.path().join("sns.pem");
    std::fs::write(&cert_file, &signer.cert_pem).unwrap();
    let s = start(|c| c.ingest.sns_certificate_file = Some(cert_file.clone())).await;
    let source = s
        .source(json!({"provider": "ses", "topic_arns": [TOPIC]}))
        .await;
    let path = Server::path_of(&source["url"]);
    let mut statuses = Vec::new();
    let mut n = 0;
    for (m, order) in [
        ("m1", [0, 1, 2, 3]),
        ("m2", [3, 2, 1, 0]),
        ("m3", [2, 0, 3, 1]),
    ] {
        let mail = ses_mail(m, &["a@example.com"]);
        let events = [
            json!({"eventType": "Send", "mail": mail, "send": {}}),
            json!({"eventType": "DeliveryDelay", "mail": mail, "deliveryDelay": {
                "timestamp": "2017-08-05T00:40:30.000Z", "delayType": "TransientCommunicationFailure",
                "expirationTime": "2017-08-06T00:40:01.123Z",
                "delayedRecipients": [{"emailAddress": "a@example.com", "status": "4.4.1",
                    "diagnosticCode": "smtp; 421 4.4.1 Unable to connect"}]}}),
            json!({"eventType": "Delivery", "mail": mail, "delivery": {
                "timestamp": "2017-08-05T00:41:01.669Z", "recipients": ["a@example.com"],
                "smtpResponse": "250 ok"}}),
            json!({"eventType": "Click", "mail": mail, "click": {"ipAddress": "192.0.2.1",
                "link": "https://example.com/x", "timestamp": "2017-08-05T00:50:00.000Z",
                "userAgent": "Mozilla/5.0"}}),
        ];
        let mut last = None;
        for i in order {
            n += 1;
            let mut note = sns_notification(&format!("o-{n}"), &events[i]);
            signer.sign(&mut note, if n % 2 == 0 { "1" } else { "2" });
            let r = s
                .webhook(&path, &serde_json::to_vec(&note).unwrap(), &[])
                .await;
            last = Some(s.delivery_of(&r, 0).await);
        }
        statuses.push(status_axes(&last.unwrap()));
    }
    assert_every_order_clicked(&statuses);
}

#[tokio::test]
async fn a_webhook_body_over_the_limit_is_refused_unread() {
    let s = start(|c| c.ingest.max_body = posthorn_core::config::ByteSize(2048)).await;
    let source = s
        .source(json!({"provider": "postmark", "username": "u", "password": "p"}))
        .await;
    let path = Server::path_of(&source["url"]);
    let before = s.snapshot(&["big@example.com"]).await;
    let big = postmark(
        "Delivery",
        "m",
        "big@example.com",
        "2019-11-05T16:33:54Z",
        json!({"Details": "x".repeat(4096)}),
    );
    let r = s
        .webhook(&path, &big, &[("authorization", basic("u", "p"))])
        .await;
    assert_eq!(r.status, 413, "{}", r.text);
    assert_eq!(s.snapshot(&["big@example.com"]).await, before);
    // Within the limit the same source takes it.
    let small = postmark(
        "Delivery",
        "m",
        "big@example.com",
        "2019-11-05T16:33:54Z",
        json!({}),
    );
    let r = s
        .webhook(&path, &small, &[("authorization", basic("u", "p"))])
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn a_source_writes_only_for_its_own_tenant() {
    let s = start(|_| {}).await;
    // Tenant t2 with its own admin key and its own Mailgun source.
    let t2 = s.store.create_tenant("t2", now()).await.unwrap();
    let k2 = key_of(&s, &t2.id, posthorn_store::Scope::Admin).await;
    let r = s
        .send(
            s.http
                .post(s.url("/v1/ingest/sources"))
                .bearer_auth(&k2.token)
                .json(&json!({"provider": "mailgun", "signing_key": "their-key"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let theirs = Server::path_of(&r.json["url"]);
    let ours = Server::path_of(
        &s.source(json!({"provider": "mailgun", "signing_key": MAILGUN_KEY}))
            .await["url"],
    );
    let ts = now() / 1000;
    let event = |id: &str| {
        mailgun_event(
            "failed",
            id,
            "x@example.com",
            "shared@m",
            ts as f64,
            json!({"severity": "permanent", "reason": "bounce",
                "delivery-status": {"code": 550, "message": "5.1.1 user unknown"}}),
        )
    };
    // Signed with our key, sent to their URL: refused.
    let r = s
        .webhook(
            &theirs,
            &mailgun(MAILGUN_KEY, ts, &token(1), event("e1")),
            &[],
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text);
    // Signed with their key to their URL: theirs only.
    let r = s
        .webhook(
            &theirs,
            &mailgun("their-key", ts, &token(2), event("e1")),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let delivery = r.json["events"][0]["delivery_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mine = s
        .api(Method::GET, &format!("/v1/deliveries/{delivery}"), None)
        .await;
    assert_eq!(
        mine.status, 404,
        "another tenant's delivery is not found: {}",
        mine.text
    );
    assert_eq!(s.contact_status("x@example.com").await, None);
    assert_eq!(s.suppressed("x@example.com").await, None);
    let t2_contact = s.store.contact(&t2.id, "x@example.com").await.unwrap();
    assert_eq!(
        t2_contact
            .map(|c| c.state.status.as_str().to_owned())
            .as_deref(),
        Some("bounced")
    );
    // The same provider message and event id at our source is ours, new.
    let r = s
        .webhook(
            &ours,
            &mailgun(MAILGUN_KEY, ts, &token(3), event("e1")),
            &[],
        )
        .await;
    assert_eq!(
        (r.json["recorded"].clone(), r.json["duplicates"].clone()),
        (json!(1), json!(0)),
        "{}",
        r.text
    );
    assert_ne!(r.json["events"][0]["delivery_id"], delivery.as_str());
}

#[tokio::test]
async fn an_ses_subscription_to_a_foreign_url_is_refused_and_kept_nowhere() {
    let signer = SnsSigner::new();
    let s = start(|_| {}).await;
    let source = s
        .source(
            json!({"provider": "ses", "topic_arns": [TOPIC], "certificate_pem": signer.cert_pem}),
        )
        .await;
    let path = Server::path_of(&source["url"]);
    for url in [
        "https://169.254.169.254/latest/meta-data/?Action=ConfirmSubscription",
        "http://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&Token=x",
        "https://sns.us-west-2.amazonaws.com.evil.example/?Action=ConfirmSubscription",
    ] {
        // Signed properly: only the URL is wrong.
        let mut confirm = json!({"Type": "SubscriptionConfirmation", "MessageId": "m",
            "Token": "t", "TopicArn": TOPIC, "Message": "confirm", "SubscribeURL": url,
            "Timestamp": "2012-04-26T20:45:04.751Z", "SigningCertURL": CERT_URL});
        signer.sign(&mut confirm, "2");
        let r = s
            .webhook(&path, &serde_json::to_vec(&confirm).unwrap(), &[])
            .await;
        assert_eq!(r.status, 401, "{url}: {}", r.text);
        let list = s.api(Method::GET, "/v1/ingest/sources", None).await;
        assert_eq!(
            list.json["data"][0]["pending_confirmation"],
            Value::Null,
            "{}",
            list.text
        );
    }
}
