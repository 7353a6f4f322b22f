//! The server on PostgreSQL (`[store] url`, issue #14): it starts through
//! `App::open` on a real database (one per test, `TestDatabase`), takes
//! messages over the HTTP API and reads them back; a URL that is not
//! PostgreSQL's and a database that cannot be reached are clear start
//! errors (never SQLite instead); and a database lost while serving makes
//! requests fail with 503 (SMTP with 4xx) until it returns, after which
//! the same process serves again and every message answered 202 is there.
//!
//! The database is "lost" by a `TcpForwarder` between the server and
//! PostgreSQL, stopped and started again: PostgreSQL itself is shared by
//! every test and stays up.
//!
//! Nodes on one database share the server secret and the DKIM keys: a key
//! one node adds signs on the other (checked with dkimpy, an independent
//! verifier), a key file in a node's data directory is imported when it
//! starts, and a removed key stops signing everywhere.

use posthorn_server::dkim::{self, KeyHome};
use posthorn_server::startup::StartError;
use posthorn_server::{App, AppState};
use posthorn_store::{StoreError, Unavailable};
use posthorn_testkit::TcpForwarder;
use posthorn_testkit::postgres::TestDatabase;
use serde_json::{Value, json};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

mod common;

/// A server on PostgreSQL, started with `App::open` as `posthorn serve
/// --store URL` starts it.
struct Server {
    addr: SocketAddr,
    submission: SocketAddr,
    http: reqwest::Client,
    admin: String,
    dir: tempfile::TempDir,
    state: AppState,
}

/// An answer, read whole.
struct Resp {
    status: u16,
    retry_after: Option<String>,
    json: Value,
}

impl Server {
    async fn start(url: &str) -> Server {
        let prepared = common::prepare(|config, _| {
            config.store.url = Some(url.to_owned());
        })
        .await;
        let app = App::open(prepared.config).expect("the app starts on PostgreSQL");
        let (admin, _) = common::bootstrap(&app).await;
        let submission_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let submission = submission_listener.local_addr().unwrap();
        app.start_submission(submission_listener)
            .expect("submission starts");
        let state = app.state.clone();
        common::serve(app, prepared.listener);
        Server {
            addr: prepared.addr,
            submission,
            http: common::http_client(),
            admin,
            dir: prepared.dir,
            state,
        }
    }

    async fn request(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Resp {
        let mut request = self
            .http
            .request(method, format!("http://{}{path}", self.addr))
            .bearer_auth(&self.admin);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let json = response.json().await.unwrap_or(Value::Null);
        Resp {
            status,
            retry_after,
            json,
        }
    }

    async fn submit(&self, n: usize) -> Resp {
        let body = json!({
            "from": "Sender <sender@example.com>",
            "to": [format!("rcpt{n}@example.com")],
            "subject": format!("Hello {n}"),
            "text": "Hi there",
        });
        self.request(reqwest::Method::POST, "/v1/messages", Some(&body))
            .await
    }

    /// Submits message `n`, expecting 202; its delivery's id.
    async fn accept(&self, n: usize) -> String {
        let r = self.submit(n).await;
        assert_eq!(r.status, 202, "message {n}: {}", r.json);
        r.json["deliveries"][0]["id"].as_str().unwrap().to_owned()
    }

    async fn delivery(&self, id: &str) -> Resp {
        self.request(reqwest::Method::GET, &format!("/v1/deliveries/{id}"), None)
            .await
    }
}

/// The test database's URL with its host and port replaced by `addr`, and
/// the address it names.
fn through(url: &str, addr: SocketAddr) -> (String, SocketAddr) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (authority, path) = rest.split_once('/').unwrap();
    let (user, host_port) = match authority.rsplit_once('@') {
        Some((user, host)) => (format!("{user}@"), host),
        None => (String::new(), authority),
    };
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    };
    let target = host_port
        .to_socket_addrs()
        .unwrap()
        .next()
        .expect("the test server's address");
    (format!("{scheme}://{user}{addr}/{path}"), target)
}

/// The rows of `table` in the test database. The client is blocking (it
/// runs a runtime of its own), so it lives on a thread of its own.
fn count(db: &TestDatabase, table: &str) -> i64 {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                db.client()
                    .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                    .unwrap()
                    .get(0)
            })
            .join()
            .unwrap()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_runs_on_postgres_and_reads_back_what_it_accepted() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let server = Server::start(db.url()).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(server.accept(n).await);
    }
    for id in &ids {
        let r = server.delivery(id).await;
        assert_eq!(r.status, 200, "{}", r.json);
        assert_eq!(r.json["status"], "queued", "{}", r.json);
        let events = server
            .request(
                reqwest::Method::GET,
                &format!("/v1/deliveries/{id}/events"),
                None,
            )
            .await;
        assert_eq!(events.status, 200, "{}", events.json);
        let kinds: Vec<&str> = events.json["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        assert!(kinds.contains(&"queued"), "{kinds:?}");
    }
    // In PostgreSQL, and no SQLite database beside it; the secret, node
    // name and first key stay in the data directory.
    assert_eq!(count(&db, "deliveries"), 3);
    assert_eq!(count(&db, "tenants"), 1);
    let dir = server.dir.path();
    assert!(!dir.join("posthorn.db").exists(), "no SQLite database");
    for file in ["secret.key", "node-id", "initial-admin-key"] {
        assert!(dir.join(file).exists(), "{file} is in the data directory");
    }
}

/// Opens an app on `url`; the start error it must give.
async fn start_error(url: &str) -> (StartError, tempfile::TempDir) {
    let prepared = common::prepare(|config, _| {
        config.store.url = Some(url.to_owned());
    })
    .await;
    match App::open(prepared.config) {
        Ok(_) => panic!("{url}: the app started"),
        Err(e) => (e, prepared.dir),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_url_that_is_not_postgres_is_refused_at_start() {
    for url in [
        "mysql://app:secret@db.example/mail",
        "sqlite:///var/lib/posthorn/posthorn.db",
        "db.example:5432/mail",
    ] {
        let (e, dir) = start_error(url).await;
        let message = e.to_string();
        assert!(message.contains("postgres://"), "{url}: {message}");
        assert!(!message.contains("secret"), "{url}: {message}");
        assert!(
            !dir.path().join("posthorn.db").exists(),
            "{url}: no SQLite instead"
        );
        // The configuration refuses it too, before anything starts, from
        // the file as from the environment.
        let errors =
            posthorn_server::config::parse("", "t", [("POSTHORN_STORE__URL".into(), url.into())])
                .unwrap_err()
                .0;
        assert!(errors[0].starts_with("store.url: "), "{errors:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_a_start_error_naming_it_without_the_password() {
    let port = posthorn_testkit::free_port();
    let url = format!("postgres://posthorn:hunter2@127.0.0.1:{port}/mail");
    let (e, dir) = start_error(&url).await;
    let message = e.to_string();
    assert!(
        matches!(
            e,
            StartError::Store(StoreError::Unavailable {
                cause: Unavailable::Unreachable,
                ..
            })
        ),
        "{e:?}"
    );
    assert!(
        message.contains(&format!("127.0.0.1:{port}/mail")),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
    assert!(!format!("{e:?}").contains("hunter2"), "{e:?}");
    assert!(
        !dir.path().join("posthorn.db").exists(),
        "no SQLite instead"
    );
}

/// One SMTP reply (all its lines), e.g. "250 ok" or "451 4.3.0 ...".
async fn smtp_reply(reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).await.unwrap();
        assert!(n > 0, "the server closed the connection after {all:?}");
        all.push_str(&line);
        // The last line of a reply has a space after its code.
        if line.as_bytes().get(3) != Some(&b'-') {
            return all;
        }
    }
}

/// Submits one message over SMTP (AUTH PLAIN with the API key, allowed in
/// plain text on loopback); the first reply that is not a success, or the
/// final one.
async fn smtp_submit(server: &Server, n: usize) -> String {
    let stream = tokio::net::TcpStream::connect(server.submission)
        .await
        .unwrap();
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let greeting = smtp_reply(&mut reader).await;
    assert!(greeting.starts_with("220"), "{greeting}");
    let auth = base64_plain(&server.admin);
    let message = format!(
        "From: sender@example.com\r\nTo: smtp{n}@example.com\r\nSubject: SMTP {n}\r\n\r\nHi\r\n.\r\n"
    );
    let steps = [
        "EHLO client.test\r\n".to_owned(),
        format!("AUTH PLAIN {auth}\r\n"),
        "MAIL FROM:<sender@example.com>\r\n".to_owned(),
        format!("RCPT TO:<smtp{n}@example.com>\r\n"),
        "DATA\r\n".to_owned(),
        message,
    ];
    let mut last = String::new();
    for step in steps {
        write.write_all(step.as_bytes()).await.unwrap();
        last = smtp_reply(&mut reader).await;
        if !(last.starts_with('2') || last.starts_with('3')) {
            break;
        }
    }
    let _ = write.write_all(b"QUIT\r\n").await;
    last
}

/// `\0user\0password` in base64: AUTH PLAIN's answer (RFC 4616).
fn base64_plain(key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("\0posthorn\0{key}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_lost_while_serving_gives_503_and_the_server_recovers_by_itself() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let (_, target) = through(db.url(), "127.0.0.1:1".parse().unwrap());
    let mut forwarder = TcpForwarder::start_to(target);
    let (url, _) = through(db.url(), forwarder.addr());
    let server = Server::start(&url).await;

    let mut accepted = Vec::new();
    for n in 0..5 {
        accepted.push(server.accept(n).await);
    }
    let smtp = smtp_submit(&server, 0).await;
    assert!(smtp.starts_with("250"), "{smtp}");

    // The database goes away: every request that needs it is a 503 with a
    // clear code (and Retry-After), SMTP a temporary failure.
    forwarder.stop();
    for n in 100..103 {
        let r = server.submit(n).await;
        assert_eq!(
            r.status, 503,
            "message {n} while the database is away: {}",
            r.json
        );
        assert_eq!(r.json["error"]["code"], "storage_unavailable", "{}", r.json);
        assert!(r.retry_after.is_some(), "a 503 says when to retry");
        let r = server.delivery(&accepted[0]).await;
        assert_eq!(
            r.status, 503,
            "a read while the database is away: {}",
            r.json
        );
        assert_eq!(r.json["error"]["code"], "storage_unavailable", "{}", r.json);
    }
    let smtp = smtp_submit(&server, 1).await;
    assert!(
        smtp.starts_with('4'),
        "a temporary failure over SMTP: {smtp}"
    );
    // Liveness does not need the database.
    let health = server.request(reqwest::Method::GET, "/healthz", None).await;
    assert_eq!(health.status, 200);

    // It comes back: the same process serves again, from the first
    // request on. The write pool still holds connections from before,
    // which fail at their first statement: the write runs again on a new
    // connection instead of failing.
    forwarder.start();
    for n in 200..205 {
        accepted.push(server.accept(n).await);
    }
    // An outage no request noticed: both pools hold connections from
    // before it, and the first read and the first write still succeed.
    forwarder.stop();
    forwarder.start();
    let r = server.delivery(&accepted[0]).await;
    assert_eq!(r.status, 200, "the first read after the return: {}", r.json);
    accepted.push(server.accept(300).await);
    let smtp = smtp_submit(&server, 2).await;
    assert!(smtp.starts_with("250"), "SMTP after the return: {smtp}");

    // Everything answered 202 (and 250) is there, and nothing refused is.
    for id in &accepted {
        let r = server.delivery(id).await;
        assert_eq!(r.status, 200, "{id}: {}", r.json);
        assert_eq!(r.json["status"], "queued", "{}", r.json);
    }
    assert_eq!(count(&db, "deliveries"), accepted.len() as i64 + 2);
    drop(forwarder);
}

/// Nodes sharing a database sign with one secret, the first node's, kept
/// in the database (each data directory's own file only seeds it): a
/// return path made by one node is one the other recognises.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_one_database_share_the_server_secret() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let open = || async {
        let prepared = common::prepare(|config, _| {
            config.store.url = Some(db.url().to_owned());
        })
        .await;
        let app = App::open(prepared.config).expect("the app starts on PostgreSQL");
        (app, prepared.dir)
    };
    let (first, first_dir) = open().await;
    let (second, second_dir) = open().await;
    let file = |dir: &tempfile::TempDir| {
        std::fs::read_to_string(dir.path().join(posthorn_server::app::SECRET_FILE)).unwrap()
    };
    assert_ne!(
        file(&first_dir),
        file(&second_dir),
        "each data directory made its own secret file"
    );
    let delivery = posthorn_core::DeliveryId::generate();
    assert_eq!(
        first.verp.return_path(&delivery, "bounces.example"),
        second.verp.return_path(&delivery, "bounces.example"),
        "both nodes sign with the first node's secret"
    );
}

/// dkimpy's verifier, shared with the binary's DKIM test.
const VERIFIER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../posthorn/tests/peers/dkim_verify.py"
);

const MESSAGE: &[u8] = b"From: Shop <shop@sender.example>\r\n\
    To: ann@example.com\r\n\
    Subject: Your receipt\r\n\
    Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n\
    Message-ID: <1@sender.example>\r\n\
    \r\n\
    Thanks!\r\n";

/// `MESSAGE` signed on `node` for `domain` (any tenant may sign here), or
/// `None` when the node has no key for it.
fn sign(node: &AppState, domain: &str) -> Option<String> {
    let signed = node.dkim.sign(domain, |_| true, MESSAGE)?;
    Some(String::from_utf8(signed).unwrap())
}

/// Waits, with a deadline well past the nodes' poll, until `ready` gives
/// an answer (a node sees another's change within `dkim::KEY_POLL`).
async fn until<T>(what: &str, mut ready: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + dkim::KEY_POLL * 4 + Duration::from_secs(10);
    loop {
        if let Some(answer) = ready() {
            return answer;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether dkimpy accepts the signature of `message` with the key
/// published as `record` (name, value), and what it said.
fn verifies(python: &Path, record: &(String, String), message: &str) -> (bool, String) {
    let mut child = std::process::Command::new(python)
        .arg(VERIFIER)
        .args([&record.0, &record.1])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), message.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// The keys in `home`, as (domain, selector, record value).
async fn keys_in(home: &KeyHome) -> Vec<(String, String, String)> {
    let home = home.clone();
    tokio::task::spawn_blocking(move || dkim::list(&home))
        .await
        .unwrap()
        .expect("list the keys")
        .into_iter()
        .map(|k| (k.domain, k.selector, k.record.value))
        .collect()
}

/// Nodes on one database sign with the keys kept there: a key that node A
/// adds through `POST /v1/domains` signs on node B after B's next look
/// at the database, and dkimpy accepts B's signature with the record A
/// gave (and not with another key's); a key file in a node's data
/// directory is imported when it starts (renamed, and never imported
/// again, so a key removed later does not come back); and a domain A
/// removes stops signing on B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_one_database_sign_with_the_same_dkim_keys() {
    let Some(python) = posthorn_testkit::python_module("dkim") else {
        return;
    };
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let a = Server::start(db.url()).await;

    // Node B starts with a key file of its own, made while it ran on
    // SQLite: imported into the database, renamed, signing at once.
    let b_prepared = common::prepare(|config, _| {
        config.store.url = Some(db.url().to_owned());
    })
    .await;
    let b_data = b_prepared.dir.path().to_owned();
    let b_config = b_prepared.config.clone();
    let old = tokio::task::spawn_blocking({
        let home = KeyHome::Files(b_data.clone());
        move || dkim::generate(&home, "imported.example", "old")
    })
    .await
    .unwrap()
    .unwrap();
    let file = b_data.join("dkim/imported.example.old.pem");
    let b = App::open(b_prepared.config).expect("node B starts on PostgreSQL");
    assert!(!file.exists(), "the imported file is renamed");
    assert!(
        b_data
            .join("dkim/imported.example.old.pem.imported")
            .exists()
    );
    let imported = (
        "imported.example".to_owned(),
        "old".to_owned(),
        old.record.value.clone(),
    );
    assert_eq!(
        keys_in(&b.state.dkim_home).await,
        std::slice::from_ref(&imported)
    );
    assert!(sign(&b.state, "imported.example").is_some());
    until("node A signs with the key node B imported", || {
        sign(&a.state, "imported.example")
    })
    .await;

    // A adds a domain through the API; B signs with its key.
    let added = a
        .request(
            reqwest::Method::POST,
            "/v1/domains",
            Some(&json!({"domain": "sender.example"})),
        )
        .await;
    assert_eq!(added.status, 201, "{}", added.json);
    let dns = &added.json["dns_records"][0];
    let record = (
        dns["name"].as_str().unwrap().to_owned(),
        dns["value"].as_str().unwrap().to_owned(),
    );
    assert_eq!(record.0, "posthorn._domainkey.sender.example");
    assert!(
        a.dir.path().join("dkim").read_dir().is_err(),
        "on PostgreSQL the key is no file in A's data directory"
    );
    let signed = until("node B signs with the key node A added", || {
        sign(&b.state, "sender.example")
    })
    .await;
    assert!(
        signed.starts_with("DKIM-Signature: ") && signed.contains("s=posthorn; d=sender.example;"),
        "{signed}"
    );
    let (ok, said) = verifies(&python, &record, &signed);
    assert!(ok, "dkimpy rejects B's signature with A's record: {said}");
    let other_key = (record.0.clone(), imported.2.clone());
    let (ok, said) = verifies(&python, &other_key, &signed);
    assert!(!ok, "another key under the name must fail: {said}");

    // A removes the domain: B stops signing for it.
    let removed = a
        .request(reqwest::Method::DELETE, "/v1/domains/sender.example", None)
        .await;
    assert_eq!(removed.status, 204, "{}", removed.json);
    until("node B stops signing for the removed domain", || {
        sign(&b.state, "sender.example").is_none().then_some(())
    })
    .await;

    // The imported key removed from the database does not come back when
    // node B starts again on its data directory.
    tokio::task::spawn_blocking({
        let home = a.state.dkim_home.clone();
        move || dkim::remove(&home, "imported.example", None)
    })
    .await
    .unwrap()
    .unwrap();
    drop(b);
    let b = App::open(b_config).expect("node B starts again");
    assert_eq!(keys_in(&b.state.dkim_home).await, []);
    assert!(sign(&b.state, "imported.example").is_none());
}
