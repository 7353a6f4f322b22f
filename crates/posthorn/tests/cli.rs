//! The `posthorn` binary as users run it: `serve` in a child process over a
//! real socket, `keys`, `send` and `status`, restarts and `kill -9`.

mod common;

use common::{BIN, Server};
use posthorn_testkit::peer;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

/// `posthorn serve` for these tests, which are about the API and keys: no
/// delivery attempts (and so no DNS) behind their backs.
fn serve(data_dir: &Path) -> Server {
    Server::start(data_dir, &[], &[("POSTHORN_DELIVERY__ENABLED", "false")])
}

fn posthorn(args: &[&str], data_dir: &Path) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("POSTHORN_LOG", "warn")
        .output()
        .expect("run posthorn");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn admin_key(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("initial-admin-key"))
        .unwrap()
        .trim()
        .to_owned()
}

async fn submit(client: &reqwest::Client, base: &str, key: &str, to: &str) -> reqwest::Response {
    client
        .post(format!("{base}/v1/messages"))
        .bearer_auth(key)
        .json(&json!({"from": "news@sender.example", "to": [to], "subject": "Hi", "text": "Hello"}))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_creates_one_admin_key_in_a_private_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = serve(&data);
    let key = admin_key(&data);
    assert!(
        server.banner.contains(&key),
        "the key is printed once:\n{}",
        server.banner
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("initial-admin-key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let client = reqwest::Client::new();
    let health = client
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let r = submit(&client, &server.base, &key, "bob@example.com").await;
    assert_eq!(r.status(), 202);
    drop(server);

    // A second start finds the tenant and makes no new key.
    let again = serve(&data);
    assert!(
        !again.banner.contains("ph_"),
        "no key printed on restart:\n{}",
        again.banner
    );
    assert_eq!(admin_key(&data), key);
    let r = submit(&client, &again.base, &key, "carol@example.com").await;
    assert_eq!(r.status(), 202, "the first key still works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_messages_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());
    let key = admin_key(dir.path());
    let client = reqwest::Client::new();
    let mut sends = Vec::new();
    for i in 0..64 {
        let (client, base, key) = (client.clone(), server.base.clone(), key.clone());
        sends.push(tokio::spawn(async move {
            let r = submit(&client, &base, &key, &format!("user{i}@example.com")).await;
            assert_eq!(r.status(), 202);
            r.json::<Value>().await.unwrap()["deliveries"][0]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }));
    }
    let mut accepted = Vec::new();
    for s in sends {
        accepted.push(s.await.unwrap());
    }
    server.kill9();

    let server = serve(dir.path());
    for id in &accepted {
        let d: Value = client
            .get(format!("{}/v1/deliveries/{id}", server.base))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(d["status"], "queued", "delivery {id} after kill -9: {d}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_create_list_revoke_against_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());
    let client = reqwest::Client::new();

    let (ok, key, err) = posthorn(
        &[
            "keys",
            "create",
            "--tenant",
            "acme",
            "--scope",
            "send,read",
            "--name",
            "shop",
        ],
        dir.path(),
    );
    assert!(ok, "{err}");
    let key = key.trim().to_owned();
    assert!(err.contains("created tenant `acme`"), "{err}");
    let r = submit(&client, &server.base, &key, "bob@example.com").await;
    assert_eq!(r.status(), 202);
    let events = client
        .post(format!("{}/v1/events", server.base))
        .bearer_auth(&key)
        .json(&json!({"delivery_id": "x", "kind": "opened"}))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 403, "send,read is not admin");

    let (ok, list, _) = posthorn(&["keys", "list", "--tenant", "acme"], dir.path());
    assert!(ok);
    let line = list
        .lines()
        .find(|l| l.contains("shop"))
        .expect("key listed");
    assert!(
        line.contains("send,read") && line.contains("active"),
        "{list}"
    );
    assert!(!list.contains(&key), "list never shows secrets");
    let id = line.split_whitespace().next().unwrap();

    let (ok, _, err) = posthorn(&["keys", "revoke", id], dir.path());
    assert!(ok, "{err}");
    let r = submit(&client, &server.base, &key, "bob@example.com").await;
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "revoked_api_key");
    let (ok, _, err) = posthorn(&["keys", "revoke", id], dir.path());
    assert!(!ok && err.contains("no active key"), "{err}");

    let (ok, _, err) = posthorn(
        &["keys", "create", "--tenant", "acme", "--scope", "send,root"],
        dir.path(),
    );
    assert!(!ok && err.contains("unknown scope `root`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_then_status_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());
    let api = ["--api", server.base.as_str()];
    let mut args = vec![
        "send",
        "--from",
        "Shop <shop@sender.example>",
        "--to",
        "bob@example.com",
        "--to",
        "x@nowhere.invalid",
    ];
    args.extend(["--subject", "Your receipt", "--text", "Thanks!"]);
    args.extend(api);
    let (ok, out, err) = posthorn(&args, dir.path());
    assert!(ok, "{err}");
    assert!(out.contains("queued") && out.contains("dropped"), "{out}");
    let dropped_id = out
        .lines()
        .find(|l| l.contains("dropped"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap();
    let (ok, timeline, err) = posthorn(&["status", dropped_id, "--api", &server.base], dir.path());
    assert!(ok, "{err}");
    assert!(timeline.contains("Status: dropped"), "{timeline}");
    assert!(timeline.contains("reason=invalid_address"), "{timeline}");

    let (ok, _, err) = posthorn(
        &[
            "status",
            "01a20ba7-0000-7000-8000-000000000000",
            "--api",
            &server.base,
        ],
        dir.path(),
    );
    assert!(!ok && err.contains("not_found"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_writes_a_file_and_events_follow_the_live_feed() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());
    let key = admin_key(dir.path());
    let client = reqwest::Client::new();
    // Following from before the first event, in a child process.
    let mut follow = std::process::Command::new(BIN)
        .args([
            "events",
            "--follow",
            "--after",
            "0",
            "kind=queued",
            "--api",
            &server.base,
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .env("POSTHORN_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for to in ["a@example.com", "b@example.com", "c@example.org"] {
        assert_eq!(submit(&client, &server.base, &key, to).await.status(), 202);
    }
    let out = dir.path().join("queued.csv");
    let (ok, _, err) = posthorn(
        &[
            "export",
            "events",
            "--format",
            "csv",
            "--out",
            out.to_str().unwrap(),
            "recipient=@example.com",
            "--api",
            &server.base,
        ],
        dir.path(),
    );
    assert!(ok, "{err}");
    let csv = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 3, "a header and two events: {csv}");
    assert!(lines[0].starts_with("id,recorded_at,occurred_at,kind,"));
    assert!(
        err.contains("2 rows"),
        "the progress line counts rows: {err}"
    );
    assert!(!dir.path().join("queued.partial").exists());
    // A bad filter is the server's 400, named.
    let (ok, _, err) = posthorn(
        &[
            "export",
            "deliveries",
            "--out",
            out.to_str().unwrap(),
            "status=lost",
            "--api",
            &server.base,
        ],
        dir.path(),
    );
    assert!(
        !ok && err.contains("invalid_query") && err.contains("field status"),
        "{err}"
    );
    // The follower printed one line per queued event.
    let stdout = follow.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .take(3)
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    })
    .await
    .unwrap();
    follow.kill().unwrap();
    let _ = follow.wait();
    assert!(lines.iter().all(|l| l.contains("queued")), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("c@example.org")),
        "{lines:?}"
    );
}

#[test]
fn serve_reports_every_config_error_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("posthorn.toml");
    std::fs::write(
        &config,
        "[status]\nwindwo = \"7d\"\n[retry]\nlifetime = \"forever\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("windwo") && err.contains("retry.lifetime"),
        "{err}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "a bad config changes nothing on disk"
    );
}

/// The README's curl walkthrough, run with the real curl.
#[test]
fn readme_walkthrough_with_curl() {
    let Some(curl) = peer("curl") else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());
    let key = admin_key(dir.path());
    let curl_json = |args: &[&str]| -> (u16, Value) {
        let out = Command::new(&curl)
            .args([
                "-sS",
                "-w",
                "\n%{http_code}",
                "-H",
                &format!("Authorization: Bearer {key}"),
            ])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (
            code.parse().unwrap(),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    };
    let message = r#"{"from":"Shop <shop@sender.example>","to":["ann@example.com"],"subject":"Welcome","text":"Hello Ann"}"#;
    let url = format!("{}/v1/messages", server.base);
    let (code, receipt) = curl_json(&["-H", "Content-Type: application/json", "-d", message, &url]);
    assert_eq!(code, 202, "{receipt}");
    let delivery = receipt["deliveries"][0]["id"].as_str().unwrap().to_owned();

    let event = json!({"delivery_id": delivery, "kind": "bounced",
        "details": {"bounce_type": "hard", "origin": "async", "smtp_code": 550, "enhanced_code": "5.1.1",
                    "reply_text": "550 5.1.1 <ann@example.com>: Recipient address rejected"}})
    .to_string();
    let (code, recorded) = curl_json(&["-d", &event, &format!("{}/v1/events", server.base)]);
    assert_eq!(code, 201, "{recorded}");
    let (code, d) = curl_json(&[&format!("{}/v1/deliveries/{delivery}", server.base)]);
    assert_eq!(code, 200);
    assert_eq!(d["status"], "bounced");
    assert_eq!(d["bounce_type"], "hard");
    assert_eq!(d["set_by"]["delivery"], recorded["event"]["id"]);

    let (code, again) = curl_json(&["-d", message, &url]);
    assert_eq!(code, 202);
    assert_eq!(
        again["deliveries"][0]["status"], "dropped",
        "suppressed after the hard bounce"
    );
    let (_, list) = curl_json(&[&format!(
        "{}/v1/events?recipient=ann@example.com&kind=dropped",
        server.base
    )]);
    assert_eq!(
        list["events"][0]["details"]["reason"], "suppressed",
        "{list}"
    );
}

/// `posthorn classify` prints one JSON line per record with the documented
/// fields, `not_bounce` for other mail, and classifies a single reply.
#[test]
fn classify_prints_one_json_line_per_record() {
    let corpus =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../posthorn-bounce/tests/fixtures/corpus");
    let files = [
        corpus.join("sisimai/lhost-postfix-01.eml"),
        corpus.join("sisimai/arf-12.eml"),
        corpus.join("sisimai-not-bounce/is-not-bounce-02.eml"),
    ];
    let out = Command::new(BIN)
        .arg("classify")
        .args(&files)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    let bounce = &lines[0];
    for field in [
        "file",
        "kind",
        "recipient",
        "status",
        "reply_code",
        "reason",
        "hard_bounce",
        "feedback_type",
        "diagnostic",
        "rule",
    ] {
        assert!(bounce.get(field).is_some(), "no {field} in {bounce}");
    }
    assert_eq!(bounce["kind"], "bounce");
    assert_eq!(bounce["recipient"], "r@p351355.pool.example.ne.jp");
    assert_eq!(bounce["hard_bounce"], false);
    assert_eq!(lines[1]["kind"], "complaint");
    assert_eq!(lines[1]["feedback_type"], "opt-out");
    assert_eq!(lines[2]["kind"], "not_bounce");
    assert!(
        lines[2]["file"]
            .as_str()
            .unwrap()
            .ends_with("is-not-bounce-02.eml")
    );

    let out = Command::new(BIN)
        .args([
            "classify",
            "--reply",
            "550 5.1.1 <x@example.com>: user unknown",
        ])
        .output()
        .unwrap();
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["reason"], "userunknown");
    assert_eq!(reply["hard_bounce"], true);
    assert_eq!(reply["reply_code"], 550);
    assert!(reply["rule"].as_str().is_some());

    let out = Command::new(BIN)
        .args(["classify", "/no/such/file.eml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/file.eml"));
}

/// An operator tries a rules file with `classify --reply` before deploying
/// it: the verdict names the rule, its source, file and line; the same file
/// is found through the configuration; a bad file is refused with its line.
#[test]
fn classify_tries_an_operator_rules_file() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.txt");
    std::fs::write(
        &rules,
        "# Example Mail's closed accounts\nrule local.closed suspend soft\n  domain example.com\n  match user unknown\n",
    )
    .unwrap();
    let classify = |args: &[&str], env: &[(&str, &str)]| {
        let out = Command::new(BIN)
            .arg("classify")
            .args(args)
            .env_remove("POSTHORN_CONFIG")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let reply = "550 5.1.1 <x@example.com>: user unknown";
    let rules_arg = rules.to_str().unwrap();
    let (ok, stdout, stderr) = classify(
        &[
            "--reply",
            reply,
            "--rules-file",
            rules_arg,
            "--recipient",
            "x@example.com",
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    let verdict: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(verdict["rule"], "local.closed", "{verdict}");
    assert_eq!(verdict["rule_source"], "operator");
    assert_eq!(verdict["rules_file"], rules_arg);
    assert_eq!(verdict["rule_line"], 2);
    assert_eq!(verdict["reason"], "suspend");
    assert_eq!(verdict["bounce_type"], "soft");

    // Another recipient's domain: the built-in rules decide.
    let (_, stdout, _) = classify(
        &[
            "--reply",
            reply,
            "--rules-file",
            rules_arg,
            "--recipient",
            "x@example.org",
        ],
        &[],
    );
    let verdict: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(verdict["rule_source"], "builtin", "{verdict}");
    assert_eq!(verdict["reason"], "userunknown");
    assert_eq!(verdict["bounce_type"], "hard");
    assert!(verdict.get("rule_line").is_none(), "{verdict}");

    // Through the configuration, as `serve` would read it.
    let config = dir.path().join("posthorn.toml");
    std::fs::write(&config, format!("[bounce]\nrules_file = {rules_arg:?}\n")).unwrap();
    let (ok, stdout, stderr) = classify(
        &["--reply", reply, "--recipient", "example.com"],
        &[("POSTHORN_CONFIG", config.to_str().unwrap())],
    );
    assert!(ok, "{stderr}");
    let verdict: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(verdict["rule"], "local.closed", "{verdict}");

    // A mistake on line 4: refused, naming the file and the line.
    std::fs::write(
        &rules,
        "# Example Mail's closed accounts\nrule local.closed suspend soft\n  match user unknown\n  domain a@example.com\n",
    )
    .unwrap();
    let (ok, stdout, stderr) = classify(&["--reply", reply, "--rules-file", rules_arg], &[]);
    assert!(!ok && stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains(&format!("{rules_arg}:4: `a@example.com` is not a domain")),
        "{stderr}"
    );
}

/// A rules file that does not parse stops `serve` before it listens, with
/// the file and the line, among the configuration's other errors.
#[test]
fn serve_refuses_to_start_with_a_bad_rules_file() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.txt");
    std::fs::write(
        &rules,
        "rule local.a blocked soft\n  match x\n  status 2.0.0\n",
    )
    .unwrap();
    let config = dir.path().join("posthorn.toml");
    std::fs::write(
        &config,
        format!("[bounce]\nrules_file = {:?}\n", rules.to_str().unwrap()),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--http",
            "127.0.0.1:0",
            "--submission",
            "off",
            "--mx",
            "off",
        ])
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("POSTHORN_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // It must exit by itself; one still running after the wait is killed
    // (never left behind) and fails the test.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let exited = child.try_wait().unwrap();
    if exited.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(exited.is_some_and(|s| !s.success()), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "bounce.rules_file: {}:3: `2.0.0` is a success code",
            rules.display()
        )),
        "{stderr}"
    );
    assert!(!dir.path().join("data").exists(), "nothing was created");
}

/// `serve --store` on PostgreSQL, and `keys` with the same `--store` from
/// another data directory: the key is made in the shared database, so the
/// server takes it at once (issue #14).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_with_store_act_on_the_database_serve_uses() {
    let Some(db) = posthorn_testkit::postgres::TestDatabase::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--store".to_owned(), db.url().to_owned()],
        &[("POSTHORN_DELIVERY__ENABLED", "false")],
    );
    assert!(
        !dir.path().join("posthorn.db").exists(),
        "on PostgreSQL, no SQLite database"
    );
    let elsewhere = tempfile::tempdir().unwrap();
    let (ok, key, err) = posthorn(
        &["keys", "create", "--tenant", "acme", "--store", db.url()],
        elsewhere.path(),
    );
    assert!(ok, "{err}");
    assert!(
        !elsewhere.path().join("posthorn.db").exists(),
        "the key went to the database, not to a SQLite store"
    );
    let key = key.trim().to_owned();
    let client = reqwest::Client::new();
    let r = submit(&client, &server.base, &key, "bob@example.com").await;
    assert_eq!(r.status(), 202, "a key made with --store works at once");
    let (ok, list, err) = posthorn(&["keys", "list", "--store", db.url()], elsewhere.path());
    assert!(ok, "{err}");
    assert!(list.contains("initial admin key"), "{list}");
    assert_eq!(
        list.lines().filter(|l| l.contains("active")).count(),
        2,
        "{list}"
    );
    server.terminate();
}

/// A `--store` that is not PostgreSQL, or a database nobody answers for:
/// `serve` stops with a clear error (the address, never the password) and
/// never falls back to SQLite.
#[test]
fn serve_refuses_a_store_it_cannot_use() {
    let port = posthorn_testkit::free_port();
    let unreachable = format!("postgres://posthorn:hunter2@127.0.0.1:{port}/mail");
    for (url, want) in [
        ("mysql://posthorn:hunter2@db.example/mail", "store.url: "),
        (unreachable.as_str(), &format!("127.0.0.1:{port}/mail")[..]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(BIN)
            .args([
                "serve",
                "--http",
                "127.0.0.1:0",
                "--submission",
                "off",
                "--mx",
                "off",
            ])
            .args(["--store", url, "--data-dir"])
            .arg(dir.path())
            .env("POSTHORN_LOG", "warn")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url}: {err}");
        assert!(err.contains(want), "{url}: {err}");
        assert!(
            !err.contains("hunter2") && !err.contains("panicked"),
            "{err}"
        );
        assert!(
            !dir.path().join("posthorn.db").exists(),
            "{url}: no SQLite instead"
        );
    }
}
