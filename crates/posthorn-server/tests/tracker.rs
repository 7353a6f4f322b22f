//! The tracker and a delivery's timeline over a real socket: malformed
//! tokens are 404s, repeated hits from one client are counted but stored
//! only up to a bound, and a long timeline comes in pages.

use posthorn_core::config::Config;
use posthorn_core::{DeliveryId, SystemClock};
use posthorn_store::{SqliteStore, Store};
use posthorn_track::{Target, sign};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

mod common;

const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

struct Server {
    addr: SocketAddr,
    http: reqwest::Client,
    store: Arc<SqliteStore>,
    admin: String,
    keys: posthorn_track::TokenKeys,
    state: posthorn_server::AppState,
    _dir: tempfile::TempDir,
}

async fn start() -> Server {
    start_with(|_| {}).await
}

async fn start_with(configure: impl FnOnce(&mut Config)) -> Server {
    let booted = common::boot(|config, _| configure(config)).await;
    let keys = booted.app.state.tracking.keys.clone();
    let state = booted.app.state.clone();
    common::serve(booted.app, booted.listener);
    Server {
        addr: booted.addr,
        http: common::http_client(),
        store: booted.store,
        admin: booted.admin,
        keys,
        state,
        _dir: booted.dir,
    }
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "POST {path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// A delivery to ann@example.org, delivered an hour ago (so hits now
    /// are not judged too soon after delivery).
    async fn delivered(&self) -> DeliveryId {
        let receipt = self
            .post(
                "/v1/messages",
                json!({"from": "shop@sender.example", "to": ["ann@example.org"],
                       "subject": "Hi", "html": "<p>Hi</p>"}),
            )
            .await;
        let id = receipt["deliveries"][0]["id"].as_str().unwrap().to_owned();
        let an_hour_ago = posthorn_core::clock::format_rfc3339(
            posthorn_core::Clock::now_ms(&SystemClock) - 3_600_000,
        );
        self.post(
            "/v1/events",
            json!({"delivery_id": id, "kind": "delivered", "occurred_at": an_hour_ago}),
        )
        .await;
        DeliveryId::parse(&id).unwrap()
    }

    /// A delivery of a message with two links, delivered `ago` ms ago.
    async fn delivered_with_links(&self, ago: i64) -> DeliveryId {
        let receipt = self
            .post(
                "/v1/messages",
                json!({"from": "shop@sender.example", "to": ["ann@example.org"],
                       "subject": "Your sign-in link", "stream": "transactional",
                       "html": "<p><a href=\"https://shop.example/login?t=1\">Sign in</a> \
                                <a href=\"https://shop.example/help\">Help</a></p>"}),
            )
            .await;
        let id = receipt["deliveries"][0]["id"].as_str().unwrap().to_owned();
        // What sending keeps: the original URLs of the rewritten links.
        let message = posthorn_core::MessageId::parse(receipt["id"].as_str().unwrap()).unwrap();
        self.store
            .put_message_links(
                &message,
                vec![
                    "https://shop.example/login?t=1".into(),
                    "https://shop.example/help".into(),
                ],
            )
            .await
            .unwrap();
        let then =
            posthorn_core::clock::format_rfc3339(posthorn_core::Clock::now_ms(&SystemClock) - ago);
        self.post(
            "/v1/events",
            json!({"delivery_id": id, "kind": "delivered", "occurred_at": then}),
        )
        .await;
        DeliveryId::parse(&id).unwrap()
    }

    /// A tracker hit with extra headers; its status.
    async fn hit_with(&self, path: &str, headers: &[(&str, &str)]) -> u16 {
        let mut request = self.http.get(self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap().status().as_u16()
    }

    /// A tracker hit; its status.
    async fn hit(&self, path: &str, user_agent: &str) -> u16 {
        self.http
            .get(self.url(path))
            .header("user-agent", user_agent)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Every event of a delivery, read page by page through
    /// `/v1/deliveries/{id}/events`.
    async fn all_pages(&self, id: &DeliveryId, limit: u32) -> Vec<Value> {
        let mut events = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/deliveries/{id}/events?limit={limit}&cursor={c}"),
                None => format!("/v1/deliveries/{id}/events?limit={limit}"),
            };
            let (status, page) = self.get(&path).await;
            assert_eq!(status, 200, "{path}: {page}");
            let items = page["events"].as_array().unwrap();
            assert!(items.len() <= limit as usize, "{page}");
            events.extend(items.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return events,
            }
            assert!(events.len() < 10_000, "the pages never end");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_token_paths_are_404_like_any_unknown_token() {
    let server = start().await;
    // %FF is not UTF-8; %C3%28 is a broken two-byte sequence.
    for token in ["%FF", "abc%FFdef", "%C3%28", "%00", "x%2Fy", "%E2%82"] {
        for route in ["o", "c", "u"] {
            let path = format!("/{route}/{token}");
            let r = server.http.get(server.url(&path)).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 404, "GET {path}");
        }
        let path = format!("/u/{token}");
        let r = server
            .http
            .post(server.url(&path))
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404, "POST {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_hits_from_one_client_are_counted_but_stored_only_up_to_the_bound() {
    let server = start().await;
    let id = server.delivered().await;
    let pixel = format!("/o/{}", sign(&server.keys, &Target::Open(id.clone())));
    let kept = posthorn_track::repeats::STORED_PER_CLIENT as usize;
    // One reader's client, far past the bound, and a second client twice.
    for _ in 0..kept + 25 {
        assert_eq!(server.hit(&pixel, BROWSER).await, 200);
    }
    for _ in 0..2 {
        assert_eq!(server.hit(&pixel, "Thunderbird/128.0").await, 200);
    }
    let (status, d) = server.get(&format!("/v1/deliveries/{id}")).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["status"], "opened");
    let engagement = &d["engagement"];
    // Every hit counts ...
    assert_eq!(engagement["all"]["opens"], kept as u64 + 27, "{engagement}");
    assert_eq!(
        engagement["human"]["opens"],
        kept as u64 + 27,
        "{engagement}"
    );
    assert_eq!(engagement["all"]["opened"], true);
    // ... but only the first ones of each client are events.
    assert_eq!(
        engagement["repeats_not_stored"]["opens"], 25,
        "{engagement}"
    );
    let stored = server.all_pages(&id, 500).await;
    let opens: Vec<&Value> = stored.iter().filter(|e| e["kind"] == "opened").collect();
    assert_eq!(opens.len(), kept + 2, "{stored:?}");
    assert_eq!(
        opens
            .iter()
            .filter(|e| e["details"]["user_agent"] == BROWSER)
            .count(),
        kept
    );
    // The stored hits and the count survive a restart of the tracker's
    // memory: the same answer from the store alone.
    let facts = server.store.tracking_facts(&id).await.unwrap().unwrap();
    assert_eq!(facts.engagement.len(), kept + 2);
    assert_eq!(facts.repeats.iter().map(|r| r.hits).sum::<u64>(), 25);
    // Forgotten by the tracker (as after a restart), the client's group is
    // found full again from the stored events: its next hit is counted.
    server.state.tracker_cache.clear();
    assert_eq!(server.hit(&pixel, BROWSER).await, 200);
    let (_, d) = server.get(&format!("/v1/deliveries/{id}")).await;
    assert_eq!(d["engagement"]["all"]["opens"], kept as u64 + 28);
    assert_eq!(d["engagement"]["repeats_not_stored"]["opens"], 26);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_timeline_comes_in_pages() {
    let server = start().await;
    let id = server.delivered().await;
    let pixel = format!("/o/{}", sign(&server.keys, &Target::Open(id.clone())));
    // 120 different clients: each hit is kept.
    for i in 0..120 {
        assert_eq!(
            server.hit(&pixel, &format!("{BROWSER} reader/{i}")).await,
            200
        );
    }
    let total = 2 + 120; // queued, delivered, the opens
    let (status, d) = server.get(&format!("/v1/deliveries/{id}")).await;
    assert_eq!(status, 200);
    let first_page = d["events"].as_array().unwrap();
    assert_eq!(first_page.len(), 50, "the detail holds the first page only");
    assert_eq!(first_page[0]["kind"], "queued");
    let next = d["events_next_cursor"]
        .as_str()
        .expect("a cursor to the rest");
    assert!(
        d["events_next"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/v1/deliveries/{id}/events?cursor={next}")),
        "{}",
        d["events_next"]
    );
    // Its engagement still counts every hit, not only the first page's.
    assert_eq!(d["engagement"]["all"]["opens"], 120);

    // Pages of 7: every event once, oldest first, the first page's the same.
    let paged = server.all_pages(&id, 7).await;
    assert_eq!(paged.len(), total);
    let ids: Vec<&str> = paged.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        total,
        "no repeats"
    );
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "oldest first");
    assert_eq!(&paged[..50], &first_page[..]);
    // The detail's cursor continues where it stopped.
    let (_, rest) = server
        .get(&format!(
            "/v1/deliveries/{id}/events?cursor={next}&limit=500"
        ))
        .await;
    assert_eq!(rest["events"].as_array().unwrap()[..], paged[50..]);
    assert_eq!(rest["next_cursor"], Value::Null);

    // Bad parameters are 400s naming the parameter; another delivery's id
    // (or a malformed one) is a 404.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("cursor=nope", "cursor"),
    ] {
        let (status, body) = server
            .get(&format!("/v1/deliveries/{id}/events?{query}"))
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{body}");
    }
    let (status, _) = server
        .get(&format!("/v1/deliveries/{}/events", DeliveryId::generate()))
        .await;
    assert_eq!(status, 404);
    let (status, _) = server.get("/v1/deliveries/%FF/events").await;
    assert_eq!(status, 404);
}

/// Issue #13: a person who clicks a transactional mail's link seconds after
/// it arrives, in a client that blocks images, is a person, and the click
/// implies the open (inferred); a click from a link scanner's network is a
/// machine's whatever browser it claims to be.
#[tokio::test]
async fn a_quick_click_without_an_open_is_a_person_and_a_scanner_network_is_not() {
    const EDGE: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
        (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0";
    // The tracker sits behind a proxy on loopback, which names the client.
    let server = start_with(|c| {
        c.tracking.trust_proxy = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;

    // The person: two seconds after delivery, no open (images blocked).
    let id = server.delivered_with_links(2_000).await;
    let link = format!("/c/{}", sign(&server.keys, &Target::Click(id.clone(), 0)));
    let home = [("user-agent", EDGE), ("x-forwarded-for", "203.0.113.10")];
    assert_eq!(server.hit_with(&link, &home).await, 302);
    let (_, d) = server.get(&format!("/v1/deliveries/{id}")).await;
    let events = server.all_pages(&id, 100).await;
    let clicked: Vec<&Value> = events.iter().filter(|e| e["kind"] == "clicked").collect();
    assert_eq!(clicked.len(), 1, "{events:?}");
    let details = &clicked[0]["details"];
    assert_eq!(details["machine"], false, "{details}");
    assert_eq!(details["machine_reason"], "click_implies_open", "{details}");
    assert_eq!(details["implied_open"], true, "{details}");
    assert!(
        events.iter().all(|e| e["kind"] != "opened"),
        "the open is inferred, not stored: {events:?}"
    );
    let human = &d["engagement"]["human"];
    assert_eq!(human["clicked"], true, "{d}");
    assert_eq!(human["opened"], true, "{d}");
    assert_eq!(human["open_inferred"], true, "{d}");
    assert_eq!(human["opens"], 0, "{d}");
    assert_eq!(d["status"], "clicked", "{d}");
    let (_, message) = server
        .get(&format!(
            "/v1/messages/{}",
            d["message_id"].as_str().unwrap()
        ))
        .await;
    let sums = &message["engagement"]["human"];
    assert_eq!(sums["opened_deliveries"], 1, "{message}");
    assert_eq!(sums["opened_inferred_deliveries"], 1, "{message}");
    assert_eq!(sums["clicked_deliveries"], 1, "{message}");

    // A second delivery, hit by Microsoft's gateway (Exchange Online
    // Protection's range) with an ordinary browser's agent, then by a
    // browser's prefetch.
    let id = server.delivered_with_links(2_000).await;
    let link = format!("/c/{}", sign(&server.keys, &Target::Click(id.clone(), 1)));
    let eop = [("user-agent", EDGE), ("x-forwarded-for", "40.107.22.51")];
    assert_eq!(server.hit_with(&link, &eop).await, 302);
    let prefetch = [
        ("user-agent", EDGE),
        ("x-forwarded-for", "203.0.113.10"),
        ("sec-purpose", "prefetch;prerender"),
    ];
    assert_eq!(server.hit_with(&link, &prefetch).await, 302);
    let events = server.all_pages(&id, 100).await;
    let reasons: Vec<(&Value, &Value, &Value)> = events
        .iter()
        .filter(|e| e["kind"] == "clicked")
        .map(|e| {
            let d = &e["details"];
            (&d["machine"], &d["machine_reason"], &d["implied_open"])
        })
        .collect();
    assert_eq!(
        reasons,
        [
            (&json!(true), &json!("link_scanner_network"), &Value::Null),
            (&json!(true), &json!("prefetch"), &Value::Null),
        ],
        "{events:?}"
    );
    let (_, d) = server.get(&format!("/v1/deliveries/{id}")).await;
    assert_eq!(d["engagement"]["human"]["clicked"], false, "{d}");
    assert_eq!(d["engagement"]["human"]["opened"], false, "{d}");
    assert_eq!(d["engagement"]["all"]["clicked"], true, "{d}");
}
