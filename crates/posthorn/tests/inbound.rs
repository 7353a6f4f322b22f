//! Returned mail comes back: the mailbox simulator sends real DSNs, ARF
//! reports and auto-replies over SMTP to `serve`'s inbound MX, which
//! attributes each to its delivery and applies its effects; independent
//! clients (swaks, Python's smtplib) check that the MX takes mail only for
//! Posthorn's own addresses and keeps what it cannot attribute.

mod common;

use common::*;
use posthorn_testkit::{eventually, peer};
use serde_json::{Value, json};
use std::process::Command;

const SIM: &str = "simulator.posthorn.test";

impl Server {
    fn get_with(&self, key: &str, path: &str) -> (u16, String) {
        let out = Command::new("curl")
            .args(["-sS", "-w", "\n%{http_code}", "-H"])
            .arg(format!("Authorization: Bearer {key}"))
            .arg(format!("{}{path}", self.base))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.trim().parse().unwrap(), body.to_owned())
    }
}

fn suppression_for(server: &Server, address: &str) -> Option<Value> {
    server.get("/v1/suppressions")["suppressions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["address"] == address)
        .cloned()
}

#[test]
fn simulator_reports_come_back_through_the_inbound_mx_with_their_effects() {
    if peer("curl").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--demo".to_owned()], &[]);
    assert!(server.mx.is_some(), "the inbound MX is on by default");
    let locals = [
        "bounce-async",
        "soft-async",
        "complaint",
        "ooto",
        "bounce",
        "delay-async",
    ];
    let to: Vec<String> = locals.iter().map(|l| format!("{l}@{SIM}")).collect();
    let receipt = server
        .submit(json!({"from": "news@sender.example", "to": to, "subject": "Hello", "text": "Hi"}));
    let ids = ids(&receipt);

    // A hard bounce after delivery: bounced (async), with its source kept.
    let hard = wait_status(&server, &ids[0], "bounced");
    assert_eq!(hard["bounce_type"], "hard");
    assert!(
        event_kinds(&hard).contains(&"delivered".to_owned()),
        "{hard}"
    );
    let bounced = event_of_kind(&hard, "bounced");
    assert_eq!(bounced["source"], "inbound-mx");
    assert_eq!(bounced["details"]["origin"], "async");
    assert_eq!(bounced["details"]["reason"], "userunknown");
    assert_eq!(bounced["details"]["enhanced_code"], "5.1.1");
    assert!(bounced["details"]["rule"].as_str().is_some(), "{bounced}");
    assert_eq!(hard["set_by"]["delivery"], bounced["id"]);
    let (code, raw) = server.get_with(
        &server.key,
        &format!("/v1/events/{}/raw", bounced["id"].as_str().unwrap()),
    );
    assert_eq!(code, 200);
    assert!(
        raw.contains(&format!("Final-Recipient: rfc822; bounce-async@{SIM}")),
        "{raw}"
    );
    // Its effects: the contact is bounced and the address suppressed, with
    // the bounce as the cause.
    let contact = server.get(&format!("/v1/contacts/bounce-async@{SIM}"));
    assert_eq!(contact["status"], "bounced", "{contact}");
    let entry = suppression_for(&server, &format!("bounce-async@{SIM}")).expect("suppressed");
    assert_eq!(entry["reason"], "hard_bounce");
    assert_eq!(entry["cause_event_id"], bounced["id"]);

    // A full mailbox: soft, never suppressed.
    let soft = wait_status(&server, &ids[1], "bounced");
    assert_eq!(soft["bounce_type"], "soft");
    assert_eq!(
        event_of_kind(&soft, "bounced")["details"]["reason"],
        "mailboxfull"
    );
    assert!(suppression_for(&server, &format!("soft-async@{SIM}")).is_none());

    // A complaint: complained, and suppressed for every stream.
    let complained = wait_status(&server, &ids[2], "complained");
    let event = event_of_kind(&complained, "complained");
    assert_eq!(event["details"]["feedback_type"], "abuse");
    let entry = suppression_for(&server, &format!("complaint@{SIM}")).expect("suppressed");
    assert_eq!(entry["reason"], "complaint");
    let contact = server.get(&format!("/v1/contacts/complaint@{SIM}"));
    assert_eq!(contact["status"], "complained", "{contact}");

    // An auto-reply: a note on the delivery, which stays delivered.
    let notes = eventually(WAIT, || {
        let page = server.get(&format!("/v1/inbound?delivery_id={}", ids[3]));
        let messages = page["messages"].as_array()?.clone();
        (!messages.is_empty()).then_some(messages)
    });
    assert_eq!(notes[0]["kind"], "vacation");
    assert_eq!(notes[0]["outcome"], "note");
    assert_eq!(notes[0]["attribution"], "verp");
    assert_eq!(server.status(&ids[3])["status"], "delivered");

    // A synchronous bounce has no returned message behind it.
    let sync = wait_status(&server, &ids[4], "bounced");
    let event = event_of_kind(&sync, "bounced");
    let (code, body) = server.get_with(
        &server.key,
        &format!("/v1/events/{}/raw", event["id"].as_str().unwrap()),
    );
    assert_eq!(code, 404);
    assert!(body.contains("no_raw_message"), "{body}");

    // A delay notice: deferred, after the delivery it cannot outrank.
    let delayed = eventually(WAIT, || {
        let d = server.status(&ids[5]);
        event_kinds(&d)
            .contains(&"deferred".to_owned())
            .then_some(d)
    });
    let deferred = event_of_kind(&delayed, "deferred");
    assert_eq!(deferred["source"], "inbound-mx");
    assert_eq!(deferred["details"]["enhanced_code"], "4.2.1");
    assert_eq!(
        delayed["status"], "delivered",
        "a delay ranks below delivered"
    );

    // Each report is counted.
    let (_, metrics) = server.get_with(&server.key, "/metrics");
    assert!(
        metrics.contains("posthorn_inbound_messages_total{kind=\"bounce\",outcome=\"recorded\"} 2"),
        "{metrics}"
    );
}

/// The operator's rules (`[bounce] rules_file`) decide for both kinds of
/// bounce the server reads: the delivery workers' synchronous replies and
/// the DSNs that come back to the inbound MX. The simulator's "user
/// unknown" replies, read by a rule for its domain as a suspended account,
/// bounce soft with the operator's rule id, and nothing is suppressed.
#[test]
fn the_operator_rules_decide_synchronous_and_returned_bounces() {
    if peer("curl").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.txt");
    std::fs::write(
        &rules,
        format!("rule local.sim-suspended suspend soft\n  domain {SIM}\n  match user unknown\n"),
    )
    .unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--demo".to_owned()],
        &[("POSTHORN_BOUNCE__RULES_FILE", rules.to_str().unwrap())],
    );
    let to = [format!("bounce@{SIM}"), format!("bounce-async@{SIM}")];
    let receipt = server
        .submit(json!({"from": "news@sender.example", "to": to, "subject": "Hello", "text": "Hi"}));
    let ids = ids(&receipt);
    for (id, origin) in ids.iter().zip(["sync", "async"]) {
        let delivery = wait_status(&server, id, "bounced");
        let bounced = event_of_kind(&delivery, "bounced");
        assert_eq!(bounced["details"]["origin"], origin, "{bounced}");
        assert_eq!(
            bounced["details"]["rule"], "local.sim-suspended",
            "{bounced}"
        );
        assert_eq!(bounced["details"]["reason"], "suspend", "{bounced}");
        assert_eq!(delivery["bounce_type"], "soft", "{delivery}");
    }
    for address in &to {
        assert!(suppression_for(&server, address).is_none(), "{address}");
    }
}

/// An RFC 3464 report about `recipient`, whose returned headers carry
/// `message_id` and no return path.
fn dsn(recipient: &str, message_id: &str) -> String {
    format!(
        "From: MAILER-DAEMON@mx.example.net\r\nTo: fbl@sender.example\r\n\
         Subject: Delivery Status Notification (Failure)\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n\r\n\
         --b\r\nContent-Type: message/delivery-status\r\n\r\n\
         Reporting-MTA: dns; mx.example.net\r\n\r\n\
         Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n\
         Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: user unknown\r\n\r\n\
         --b\r\nContent-Type: text/rfc822-headers\r\n\r\n\
         From: news@sender.example\r\nTo: {recipient}\r\nSubject: Hello\r\n\
         Message-ID: <{message_id}>\r\n\r\n--b--\r\n"
    )
}

#[test]
fn the_inbound_mx_is_no_open_relay_and_keeps_what_it_cannot_attribute() {
    let (Some(swaks), Some(python), Some(_)) = (peer("swaks"), peer("python3"), peer("curl"))
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--demo".to_owned()], &[]);
    let mx = server.mx.unwrap().to_string();
    let swaks_to = |to: &str, body: Option<&str>| {
        let mut cmd = Command::new(&swaks);
        cmd.args(["--server", &mx, "--from", "<>", "--to", to, "--hide-all"])
            .stdin(std::process::Stdio::null());
        if let Some(body) = body {
            cmd.args(["--data", body]);
        }
        cmd.status().unwrap().success()
    };

    // Not an open relay: strangers' addresses and unknown local parts are
    // refused by swaks' and Python's reckoning alike.
    assert!(!swaks_to("victim@example.com", None));
    assert!(!swaks_to("postmaster@sender.example", None));
    let script = format!(
        "import smtplib, sys\n\
         s = smtplib.SMTP('127.0.0.1', {port})\n\
         try:\n    s.sendmail('spammer@example.org', ['someone@gmail.com'], 'Subject: hi\\r\\n\\r\\nrelay me')\n\
         except smtplib.SMTPRecipientsRefused as e:\n    print(list(e.recipients.values())[0][0]); sys.exit(0)\n\
         sys.exit(1)\n",
        port = server.mx.unwrap().port()
    );
    let out = Command::new(&python)
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "550");

    // A report with a forged token is accepted, kept as an orphan and
    // changes nothing.
    let forged = format!("bounces+{}@sender.example", "a".repeat(42));
    let report = dsn("someone@example.com", "not-ours@example.com");
    assert!(swaks_to(&forged, Some(&report)));
    let orphans = eventually(WAIT, || {
        let page = server.get("/v1/inbound/orphans");
        let list = page["messages"].as_array()?.clone();
        (!list.is_empty()).then_some(list)
    });
    assert_eq!(orphans[0]["orphan_reason"], "tampered_token");
    assert_eq!(orphans[0]["outcome"], "orphan");
    assert_eq!(orphans[0]["records"][0]["kind"], "bounce");
    let (code, raw) = server.get_with(
        &server.key,
        &format!("/v1/inbound/{}/raw", orphans[0]["id"].as_str().unwrap()),
    );
    assert_eq!(code, 200);
    assert!(raw.contains("Final-Recipient: rfc822; someone@example.com"));
    assert!(
        server.get("/v1/suppressions")["suppressions"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Orphans are the operator's business: another tenant's admin is refused.
    let out = Command::new(BIN)
        .args([
            "keys",
            "create",
            "--tenant",
            "other",
            "--scope",
            "admin",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let other = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (code, body) = server.get_with(&other, "/v1/inbound/orphans");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("operator_only"));
    let (code, _) = server.get_with(
        &other,
        &format!("/v1/inbound/{}/raw", orphans[0]["id"].as_str().unwrap()),
    );
    assert_eq!(code, 404);

    // No token at all (a report sent to the complaint address): the returned
    // Message-ID names the delivery.
    let receipt = server.submit(json!({"from": "news@sender.example",
        "to": [format!("delivered@{SIM}")], "subject": "Hello", "text": "Hi"}));
    let id = ids(&receipt).remove(0);
    wait_status(&server, &id, "delivered");
    let report = dsn(&format!("delivered@{SIM}"), &format!("{id}@sender.example"));
    assert!(swaks_to("fbl@sender.example", Some(&report)));
    let bounced = wait_status(&server, &id, "bounced");
    assert_eq!(bounced["bounce_type"], "hard");
    let page = server.get(&format!("/v1/inbound?delivery_id={id}"));
    assert_eq!(page["messages"][0]["attribution"], "message_id");
    assert_eq!(page["messages"][0]["outcome"], "recorded");

    // The same report again is kept but counts once.
    assert!(swaks_to("fbl@sender.example", Some(&report)));
    let page = eventually(WAIT, || {
        let page = server.get(&format!("/v1/inbound?delivery_id={id}"));
        (page["messages"].as_array()?.len() == 2).then_some(page)
    });
    assert_eq!(page["messages"][0]["outcome"], "duplicate");
    let kinds = event_kinds(&server.status(&id));
    assert_eq!(
        kinds.iter().filter(|k| *k == "bounced").count(),
        1,
        "{kinds:?}"
    );
}

/// Replacing the server secret: mail that left before keeps its return
/// path, and a bounce to it still finds its delivery once the old secret is
/// listed under `[delivery] previous_secrets`; a return path signed with a
/// secret nobody listed is kept as a forgery and changes nothing.
#[test]
fn a_bounce_to_a_return_path_of_a_previous_secret_finds_its_delivery() {
    let (Some(swaks), Some(_)) = (peer("swaks"), peer("curl")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--demo".to_owned()], &[]);
    let receipt = server.submit(json!({"from": "news@sender.example",
        "to": [format!("delivered@{SIM}")], "subject": "Hello", "text": "Hi"}));
    let id = ids(&receipt).remove(0);
    wait_status(&server, &id, "delivered");
    drop(server);

    // The operator replaces the secret and lists the old one.
    let old = std::fs::read_to_string(data.join("secret.key"))
        .unwrap()
        .trim()
        .to_owned();
    std::fs::write(data.join("secret.key"), format!("{}\n", "5a".repeat(32))).unwrap();
    let config = dir.path().join("posthorn.toml");
    std::fs::write(
        &config,
        format!("[delivery]\nprevious_secrets = [\"{old}\"]\n"),
    )
    .unwrap();
    let server = Server::start(
        &data,
        &[
            "--demo".to_owned(),
            "--config".to_owned(),
            config.display().to_string(),
        ],
        &[],
    );
    let delivery = posthorn_core::DeliveryId::parse(&id).unwrap();
    let return_path = |secret: &[u8]| {
        let token = posthorn_server::delivery::verp::VerpSigner::new(secret).token(&delivery);
        format!("bounces+{token}@sender.example")
    };
    let mx = server.mx.unwrap().to_string();
    // No Message-ID of ours in the report: only the token can attribute it.
    let report = dsn(&format!("delivered@{SIM}"), "not-ours@example.com");
    let send = |to: &str| {
        Command::new(&swaks)
            .args(["--server", &mx, "--from", "<>", "--to", to, "--hide-all"])
            .args(["--data", &report])
            .stdin(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    };

    assert!(send(&return_path(b"a secret never listed")));
    let orphans = eventually(WAIT, || {
        let page = server.get("/v1/inbound/orphans");
        let list = page["messages"].as_array()?.clone();
        (!list.is_empty()).then_some(list)
    });
    assert_eq!(orphans[0]["orphan_reason"], "tampered_token");
    assert_eq!(server.status(&id)["status"], "delivered", "changed nothing");

    assert!(send(&return_path(&hex::decode(&old).unwrap())));
    let bounced = wait_status(&server, &id, "bounced");
    assert_eq!(bounced["bounce_type"], "hard");
    let page = server.get(&format!("/v1/inbound?delivery_id={id}"));
    assert_eq!(page["messages"][0]["attribution"], "verp", "{page}");
    assert_eq!(page["messages"][0]["outcome"], "recorded");
}

/// A real MTA's bounce, end to end: Posthorn hands the message to a real
/// Postfix (250), Postfix cannot deliver it onward (the next hop refuses the
/// recipient), writes its own DSN and sends it to the return path's domain,
/// which routes to Posthorn's inbound MX; the DSN lands on the right
/// delivery as an asynchronous hard bounce.
#[test]
fn a_real_postfix_bounce_comes_back_to_its_delivery() {
    use posthorn_testkit::SmtpSink;
    use posthorn_testkit::postfix::{PostfixInstance, PostfixOptions};
    let Some(_) = peer("curl") else {
        return;
    };
    let Some(refusing) = SmtpSink::start(&[
        "-f",
        "rcpt",
        "-B",
        "550 5.1.1 <gone@example.test>: Recipient address rejected: User unknown in virtual mailbox table",
    ]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let zone = zone_file(dir.path(), "");
    // Postfix first, on its own port; Posthorn's MX address is known only
    // once it runs, so the MX listens on a port chosen here. On 127.0.0.2:
    // the other tests bind 127.0.0.1 (port 0), so none of them can take
    // this port between choosing it and `serve` binding it.
    let mx = std::net::TcpListener::bind("127.0.0.2:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let Some(postfix) = PostfixInstance::start_or_skip(
        PostfixOptions::new()
            .relay("example.test", refusing.addr)
            .route("sender.example", mx),
    ) else {
        return;
    };
    let mut args = route_args(&[("example.test", postfix.smtp_addr())], &zone);
    args.extend(["--mx".to_owned(), mx.to_string()]);
    let server = Server::start(&dir.path().join("data"), &args, &[]);
    let receipt = server.submit(json!({"from": "news@sender.example",
        "to": ["gone@example.test"], "subject": "Hello", "text": "Hi"}));
    let ids = ids(&receipt);

    let bounced = eventually(WAIT, || {
        let d = server.status(&ids[0]);
        (d["status"] == "bounced").then_some(d)
    });
    let log = || postfix.log();
    assert_eq!(bounced["bounce_type"], "hard", "{bounced}\n{}", log());
    let kinds = event_kinds(&bounced);
    assert!(
        kinds.contains(&"delivered".to_owned()),
        "Postfix accepted it first: {kinds:?}"
    );
    let event = event_of_kind(&bounced, "bounced");
    assert_eq!(event["source"], "inbound-mx");
    assert_eq!(event["details"]["origin"], "async");
    assert_eq!(event["details"]["reason"], "userunknown");
    assert_eq!(event["details"]["enhanced_code"], "5.1.1");
    let (code, raw) = server.get_with(
        &server.key,
        &format!("/v1/events/{}/raw", event["id"].as_str().unwrap()),
    );
    assert_eq!(code, 200);
    assert!(
        raw.contains(&format!("MAILER-DAEMON@{}", postfix.hostname())),
        "{raw}"
    );
    let page = server.get(&format!("/v1/inbound?delivery_id={}", ids[0]));
    assert_eq!(page["messages"][0]["attribution"], "verp");
    assert!(suppression_for(&server, "gone@example.test").is_some());
}
