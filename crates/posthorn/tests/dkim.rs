//! DKIM end to end: `posthorn domains add` makes a key and prints the TXT
//! record to publish; `serve` signs mail from that domain; an independent
//! verifier (dkimpy, Debian's python3-dkim) checks the copy Postfix's
//! `smtp-sink` received against the printed record, and fails it once one
//! byte of the body or a signed header changes. On PostgreSQL, nodes
//! sharing the database sign with the keys kept there, wherever they were
//! added, and a node moving up brings its key files with it.

mod common;

use common::*;
use posthorn_testkit::postgres::TestDatabase;
use posthorn_testkit::{eventually, peer, python_module};
use serde_json::json;
use std::path::Path;
use std::process::{Command, Output};

const VERIFIER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/dkim_verify.py");

fn posthorn(args: &[&str], data: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// The record's name and value from `domains add`'s output.
fn printed_record(text: &str) -> (String, String) {
    let field = |label: &str| {
        text.lines()
            .find_map(|l| l.trim_start().strip_prefix(label))
            .unwrap_or_else(|| panic!("no `{label}` line in {text}"))
            .trim()
            .to_owned()
    };
    (field("name:"), field("value:"))
}

/// The message as Posthorn sent it: smtp-sink writes its own trace fields
/// (`X-Client-*`, `X-Helo-Args`, `X-Mail-Args`, `X-Rcpt-Args`, `Received`)
/// in front of it.
fn strip_sink_trace(dump: &str) -> String {
    const TRACE: [&str; 5] = [
        "x-client-",
        "x-helo-args:",
        "x-mail-args:",
        "x-rcpt-args:",
        "received:",
    ];
    let mut rest = dump;
    let mut in_trace = false;
    loop {
        let line = rest.split_inclusive('\n').next().unwrap_or("");
        let lower = line.to_ascii_lowercase();
        let folded = line.starts_with([' ', '\t']);
        if TRACE.iter().any(|t| lower.starts_with(t)) || (in_trace && folded) {
            in_trace = true;
            rest = &rest[line.len()..];
        } else {
            return rest.to_owned();
        }
    }
}

/// Runs the verifier: whether the signature verifies, and what it said.
fn verify(python: &Path, record: &(String, String), message: &str) -> (bool, String) {
    let out = run_with_input(
        Command::new(python)
            .arg(VERIFIER)
            .args([&record.0, &record.1]),
        message.as_bytes(),
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// `message` with the case of the first letter of its body flipped.
fn tamper_body(message: &str) -> String {
    let separator = message
        .find("\n\n")
        .or_else(|| message.find("\r\n\r\n"))
        .unwrap();
    let at = separator
        + message[separator..]
            .find(|c: char| c.is_ascii_alphabetic())
            .unwrap();
    let mut bytes = message.as_bytes().to_vec();
    bytes[at] ^= 0x20;
    String::from_utf8(bytes).unwrap()
}

#[test]
fn mail_from_a_domain_with_a_key_is_signed_and_an_independent_verifier_accepts_it() {
    let Some(python) = python_module("dkim") else {
        return;
    };
    if peer("curl").is_none() {
        return;
    }
    let Some(sink) = Sink::start(&[]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let zone = zone_file(dir.path(), "");
    let serve_args = route_args(&[("example.com", sink.addr)], &zone);
    // The first start makes the tenant the domain will belong to.
    let server = Server::start(&data, &serve_args, &[]);

    // The key and the record to publish.
    let added = stdout(&posthorn(&["domains", "add", "Sender.Example"], &data));
    let record = printed_record(&added);
    assert_eq!(record.0, "posthorn._domainkey.sender.example");
    assert!(record.1.starts_with("v=DKIM1; k=rsa; p="), "{added}");
    assert!(
        added.contains("posthorn._domainkey.sender.example. IN TXT \"v=DKIM1; k=rsa; p="),
        "{added}"
    );
    let listed = stdout(&posthorn(&["domains", "list"], &data));
    let row = listed
        .lines()
        .find(|l| l.starts_with("sender.example "))
        .unwrap_or_else(|| panic!("{listed}"));
    let fields: Vec<&str> = row.split_whitespace().take(5).collect();
    assert_eq!(
        fields,
        [
            "sender.example",
            "default",
            "posthorn",
            "signs",
            record.0.as_str()
        ]
    );
    assert!(row.ends_with(&record.1), "{row}");
    // Adding it again keeps the key (its record may be published); a bad
    // domain and an unknown tenant are refused.
    let again = stdout(&posthorn(&["domains", "add", "sender.example"], &data));
    assert_eq!(printed_record(&again), record);
    let bad = posthorn(&["domains", "add", "not a domain"], &data);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a domain name"));
    let nobody = posthorn(
        &["domains", "add", "x.example", "--tenant", "nobody"],
        &data,
    );
    assert!(!nobody.status.success());
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("no tenant `nobody`"));

    // A key added on the data directory signs after a restart.
    drop(server);
    let server = Server::start(&data, &serve_args, &[]);
    let signed = ids(&server.submit(json!({
        "from": "Shop <shop@sender.example>",
        "to": ["Ann <ann@example.com>"], "cc": ["bob@example.com"],
        "reply_to": "help@sender.example",
        "subject": "Your receipt",
        "text": "Thanks for your order!\n.a line starting with a dot\ntrailing spaces   \n\n\n",
        "html": "<p>Thanks for your <b>order</b>!</p>",
        "headers": {"List-Id": "Receipts <receipts.sender.example>", "X-Order": "1042"}
    })));
    let unsigned = ids(&server.submit(json!({
        "from": "someone@unsigned.example", "to": "carl@example.com",
        "subject": "Hi", "text": "No key for this domain."
    })));
    for id in signed.iter().chain(&unsigned) {
        wait_status(&server, id, "delivered");
    }
    let dumps = eventually(WAIT, || {
        let m = sink.messages();
        (m.len() == 3).then_some(m)
    });
    let copy = |id: &str, domain: &str| {
        let dump = dumps
            .iter()
            .find(|m| m.contains(&format!("<{id}@{domain}>")))
            .unwrap_or_else(|| panic!("no copy of {id}: {dumps:?}"));
        strip_sink_trace(dump)
    };

    for id in &signed {
        let message = copy(id, "sender.example");
        assert!(message.starts_with("DKIM-Signature: v=1; a=rsa-sha256; s=posthorn; d=sender.example; c=relaxed/relaxed;"), "{message}");
        let header: String = message
            .split_inclusive('\n')
            .take_while(|l| l.starts_with("DKIM-Signature:") || l.starts_with([' ', '\t']))
            .collect::<String>()
            .to_ascii_lowercase();
        for name in [
            "from",
            "to",
            "cc",
            "subject",
            "date",
            "message-id",
            "reply-to",
            "mime-version",
            "content-type",
            "list-unsubscribe",
        ] {
            assert!(header.contains(name), "{name} is signed: {header}");
        }

        let (ok, said) = verify(&python, &record, &message);
        assert!(ok, "dkimpy rejects the signature: {said}\n{message}");
        let (ok, said) = verify(&python, &record, &tamper_body(&message));
        assert!(!ok, "a changed body byte must fail: {said}");
        let changed_subject =
            message.replacen("Subject: Your receipt", "Subject: Your receipts", 1);
        assert_ne!(changed_subject, message);
        let (ok, said) = verify(&python, &record, &changed_subject);
        assert!(!ok, "a changed signed header must fail: {said}");
    }
    let message = copy(&unsigned[0], "unsigned.example");
    assert!(!message.contains("DKIM-Signature"), "{message}");
    drop(server);

    // Rotation: a key under a new selector; a signature of the old key does
    // not verify against the new record.
    let rotated_output = stdout(&posthorn(
        &["domains", "add", "sender.example", "--selector", "s2027"],
        &data,
    ));
    // Both keys are printed; the new one comes under its selector.
    let rotated = printed_record(
        &rotated_output[rotated_output.find("selector s2027").expect("the new key")..],
    );
    assert_eq!(rotated.0, "s2027._domainkey.sender.example");
    let (ok, said) = verify(
        &python,
        &(record.0.clone(), rotated.1.clone()),
        &copy(&signed[0], "sender.example"),
    );
    assert!(
        !ok,
        "another key published under the name must fail: {said}"
    );
    stdout(&posthorn(
        &["domains", "remove", "sender.example", "--selector", "s2027"],
        &data,
    ));

    // Removing the domain: nothing left to list, and a second removal fails.
    stdout(&posthorn(&["domains", "remove", "sender.example"], &data));
    let listed = posthorn(&["domains", "list"], &data);
    assert!(!stdout(&listed).contains("sender.example"));
    assert!(String::from_utf8_lossy(&listed.stderr).contains("no sending domains"));
    assert!(
        !posthorn(&["domains", "remove", "sender.example"], &data)
            .status
            .success()
    );
}

/// `posthorn keys create` for `tenant`: the printed key.
fn create_key(data: &Path, tenant: &str, scope: &str) -> String {
    stdout(&posthorn(
        &["keys", "create", "--tenant", tenant, "--scope", scope],
        data,
    ))
    .trim()
    .to_owned()
}

/// swaks submitting as `key` with `from` in the envelope and `header_from`
/// in the From header: the transcript and whether it ended well.
fn swaks_submit(
    swaks: &Path,
    server: &Server,
    key: &str,
    from: &str,
    header_from: &str,
) -> (bool, String) {
    let out = Command::new(swaks)
        .args(["--server", &server.submission.unwrap().to_string()])
        .args(["--tls", "--auth", "PLAIN", "--auth-user", "b"])
        .args(["--auth-password", key])
        .args(["--from", from, "--to", "ann@example.com"])
        .args(["--header", &format!("From: {header_from}")])
        .args([
            "--header",
            "Subject: Board minutes",
            "--body",
            "Wire the money.",
        ])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_tenant_can_neither_send_as_nor_be_signed_for_another_tenants_domain() {
    let (Some(python), Some(swaks)) = (python_module("dkim"), peer("swaks")) else {
        return;
    };
    if peer("curl").is_none() {
        return;
    }
    let Some(sink) = Sink::start(&[]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let zone = zone_file(dir.path(), "");
    let mut serve_args = route_args(&[("example.com", sink.addr)], &zone);
    serve_args.extend(["--submission".to_owned(), "127.0.0.1:0".to_owned()]);
    let server = Server::start(&data, &serve_args, &[]);
    // Tenant `default` owns victim-a.example and its key.
    let record = printed_record(&stdout(&posthorn(
        &["domains", "add", "victim-a.example"],
        &data,
    )));
    let b_key = create_key(&data, "b", "send,read");
    // A key made before domains had owners, now that there are two
    // tenants: it belongs to nobody and must sign nothing.
    std::fs::copy(
        data.join("dkim/victim-a.example.posthorn.pem"),
        data.join("dkim/legacy.example.posthorn.pem"),
    )
    .unwrap();
    drop(server);
    let server = Server::start(&data, &serve_args, &[]);

    // Through the API: refused, for the domain and its subdomains.
    for from in ["ceo@victim-a.example", "CEO <ceo@sub.victim-a.example>"] {
        let answer = curl_json(
            &server,
            &b_key,
            "/v1/messages",
            Some(json!({
                "from": from, "to": "ann@example.com", "subject": "Board minutes", "text": "Wire the money."
            })),
        );
        assert_eq!(
            answer["error"]["code"], "domain_owned_by_another_tenant",
            "{from}: {answer}"
        );
    }
    // Through SMTP submission: the envelope sender or the From header.
    for (envelope, header) in [
        ("ceo@victim-a.example", "ceo@victim-a.example"),
        ("b@b-own.example", "CEO <ceo@sub.victim-a.example>"),
    ] {
        let (ok, transcript) = swaks_submit(&swaks, &server, &b_key, envelope, header);
        assert!(!ok, "{transcript}");
        assert!(
            transcript.contains("550 5.7.1") && transcript.contains("another tenant"),
            "{transcript}"
        );
    }
    assert_eq!(
        curl_json(&server, &b_key, "/v1/events", None)["events"],
        json!([]),
        "the refusals wrote nothing"
    );

    // b's own mail and the owner's mail from the unowned legacy domain
    // leave unsigned; the owner's mail from its own domain is signed.
    let (ok, transcript) = swaks_submit(
        &swaks,
        &server,
        &b_key,
        "b@b-own.example",
        "b@b-own.example",
    );
    assert!(ok, "{transcript}");
    let mut owner_ids = Vec::new();
    for from in ["news@legacy.example", "ceo@victim-a.example"] {
        owner_ids.extend(ids(&server.submit(json!({
            "from": from, "to": "ann@example.com", "subject": "Minutes", "text": "Attached."
        }))));
    }
    for id in &owner_ids {
        wait_status(&server, id, "delivered");
    }
    let dumps = eventually(WAIT, || {
        let m = sink.messages();
        (m.len() == 3).then_some(m)
    });
    let mut signed = 0;
    for dump in &dumps {
        let message = strip_sink_trace(dump);
        if message.contains("From: <ceo@victim-a.example>") {
            assert!(message.starts_with("DKIM-Signature:"), "{message}");
            let (ok, said) = verify(&python, &record, &message);
            assert!(ok, "{said}");
            signed += 1;
        } else {
            assert!(!message.contains("DKIM-Signature"), "{message}");
        }
    }
    assert_eq!(signed, 1, "{dumps:?}");
}

/// A JSON answer of the API for `key` (GET, or POST of `body`).
fn curl_json(
    server: &Server,
    key: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    let mut command = Command::new("curl");
    command.args(["-sS", "-H", &format!("Authorization: Bearer {key}")]);
    if let Some(body) = body {
        command.arg("-d").arg(body.to_string());
    }
    let out = command
        .arg(format!("{}{path}", server.base))
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// Submits a message from `from` to `to` on `server` until the copy the
/// sink receives is signed (a node on PostgreSQL loads keys added
/// elsewhere within its poll of the database, `dkim::KEY_POLL`), and
/// returns that copy as sent.
fn signed_copy(server: &Server, sink: &Sink, from: &str, to: &str) -> String {
    let domain = from.rsplit_once('@').unwrap().1;
    let mut attempt = 0;
    eventually(WAIT, || {
        attempt += 1;
        let id = ids(&server.submit(json!({
            "from": from, "to": to, "subject": format!("Attempt {attempt}"),
            "text": "Signed by whichever node sends it."
        })))
        .remove(0);
        wait_status(server, &id, "delivered");
        let dump = eventually(WAIT, || {
            sink.messages()
                .into_iter()
                .find(|m| m.contains(&format!("<{id}@{domain}>")))
        });
        let message = strip_sink_trace(&dump);
        if message.starts_with("DKIM-Signature:") {
            Some(message)
        } else {
            std::thread::sleep(std::time::Duration::from_millis(500));
            None
        }
    })
}

#[test]
fn nodes_on_one_database_sign_with_keys_added_anywhere_and_dkimpy_accepts_them() {
    let Some(python) = python_module("dkim") else {
        return;
    };
    if peer("curl").is_none() {
        return;
    }
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let Some(sink) = Sink::start(&[]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let (data_a, data_b) = (dir.path().join("a"), dir.path().join("b"));
    let zone = zone_file(dir.path(), "");
    let mut serve_args = route_args(&[("example.com", sink.addr)], &zone);
    serve_args.extend(["--store".to_owned(), db.url().to_owned()]);

    // Node B's data directory ran on SQLite, with a key whose record is
    // published: the record it printed then.
    stdout(&posthorn(&["keys", "create", "--tenant", "shop"], &data_b));
    let moved = printed_record(&stdout(&posthorn(
        &["domains", "add", "moved.example"],
        &data_b,
    )));
    let key_file = data_b.join("dkim/moved.example.posthorn.pem");
    assert!(key_file.exists());

    // Node A makes the tenant on PostgreSQL; node B starts beside it and
    // brings its key into the database (the file is renamed; the only
    // tenant gets the domain, as on an upgrade).
    let a = Server::start(&data_a, &serve_args, &[]);
    std::fs::write(data_b.join("initial-admin-key"), format!("{}\n", a.key)).unwrap();
    let b = Server::start(&data_b, &serve_args, &[]);
    assert!(!key_file.exists(), "imported, so renamed");
    assert!(
        data_b
            .join("dkim/moved.example.posthorn.pem.imported")
            .exists()
    );

    // A key added with the CLI on the database, while both nodes run.
    let elsewhere = tempfile::tempdir().unwrap();
    let added = posthorn(
        &["domains", "add", "sender.example", "--store", db.url()],
        elsewhere.path(),
    );
    let added = stdout(&added);
    assert!(added.contains("within 5 s on every"), "{added}");
    let sender = printed_record(&added);
    assert!(
        !elsewhere.path().join("dkim").exists(),
        "no key file: the key is the database's"
    );
    let listed = stdout(&posthorn(
        &["domains", "list", "--store", db.url()],
        elsewhere.path(),
    ));
    for (domain, record) in [("moved.example", &moved), ("sender.example", &sender)] {
        let row = listed
            .lines()
            .find(|l| l.starts_with(&format!("{domain} ")))
            .unwrap_or_else(|| panic!("{domain}: {listed}"));
        assert!(row.contains(" signs ") && row.ends_with(&record.1), "{row}");
    }

    // Each node signs with the key the other side added, without a
    // restart, and dkimpy accepts the copies with the records printed.
    for (node, from, record) in [
        (&a, "news@moved.example", &moved),
        (&b, "shop@sender.example", &sender),
        (&b, "news@moved.example", &moved),
    ] {
        let message = signed_copy(node, &sink, from, "ann@example.com");
        let (ok, said) = verify(&python, record, &message);
        assert!(
            ok,
            "{from}: dkimpy rejects the signature: {said}\n{message}"
        );
        let (ok, said) = verify(&python, record, &tamper_body(&message));
        assert!(!ok, "{from}: a changed body byte must fail: {said}");
    }

    // Removed with the CLI: no node signs with it any more.
    stdout(&posthorn(
        &["domains", "remove", "sender.example", "--store", db.url()],
        elsewhere.path(),
    ));
    eventually(WAIT, || {
        let id = ids(&a.submit(json!({
            "from": "shop@sender.example", "to": "carl@example.com",
            "subject": "After the removal", "text": "Unsigned now."
        })))
        .remove(0);
        wait_status(&a, &id, "delivered");
        let dump = eventually(WAIT, || {
            sink.messages()
                .into_iter()
                .find(|m| m.contains(&format!("<{id}@sender.example>")))
        });
        (!strip_sink_trace(&dump).starts_with("DKIM-Signature:")).then_some(())
    });
}
