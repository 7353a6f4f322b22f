//! DKIM end to end: `posthorn domains add` makes a key and prints the TXT
//! record to publish; `serve` signs mail from that domain; an independent
//! verifier (dkimpy, Debian's python3-dkim) checks the copy Postfix's
//! `smtp-sink` received against the printed record, and fails it once one
//! byte of the body or a signed header changes.

mod common;

use common::*;
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
    let fields: Vec<&str> = row.split_whitespace().take(4).collect();
    assert_eq!(
        fields,
        ["sender.example", "posthorn", "signs", record.0.as_str()]
    );
    assert!(row.ends_with(&record.1), "{row}");
    // An existing key is never replaced; a bad domain is refused.
    let again = posthorn(&["domains", "add", "sender.example"], &data);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already has a key"));
    let bad = posthorn(&["domains", "add", "not a domain"], &data);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a domain name"));

    // Another valid key, not the one that signs.
    let other_key = printed_record(&stdout(&posthorn(
        &["domains", "add", "sender.example"],
        &dir.path().join("elsewhere"),
    )));
    assert_ne!(other_key.1, record.1);

    let zone = zone_file(dir.path(), "");
    let server = Server::start(
        &data,
        &route_args(&[("example.com", sink.addr)], &zone),
        &[],
    );
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
        let (ok, said) = verify(&python, &(record.0.clone(), other_key.1.clone()), &message);
        assert!(
            !ok,
            "another key published under the name must fail: {said}"
        );
    }
    let message = copy(&unsigned[0], "unsigned.example");
    assert!(!message.contains("DKIM-Signature"), "{message}");
    drop(server);

    // Removing the key: nothing left to list, and a second removal fails.
    stdout(&posthorn(&["domains", "remove", "sender.example"], &data));
    let listed = posthorn(&["domains", "list"], &data);
    assert_eq!(stdout(&listed), "");
    assert!(String::from_utf8_lossy(&listed.stderr).contains("no DKIM keys"));
    assert!(
        !posthorn(&["domains", "remove", "sender.example"], &data)
            .status
            .success()
    );
}
