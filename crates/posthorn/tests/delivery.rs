//! Mail really leaves: `posthorn serve` delivers to Postfix's `smtp-sink`
//! over loopback (routes and zone-text DNS, never the internet), records
//! every attempt, and after `kill -9` loses nothing and sends nothing twice
//! that already had a verdict.

mod common;

use common::*;
use posthorn_testkit::{eventually, peer};
use serde_json::{Value, json};
use std::collections::HashMap;

#[test]
fn messages_leave_over_smtp_with_verp_one_copy_per_recipient_and_dns_outcomes() {
    if peer("curl").is_none() {
        return;
    }
    let Some(sink) = Sink::start(&[]) else { return };
    let dir = tempfile::tempdir().unwrap();
    // example.com is routed to the sink; the zone answers the rest: a null
    // MX, and nothing at all for nowhere.example (NXDOMAIN); broken.example
    // answers SERVFAIL.
    let zone = zone_file(dir.path(), "$TTL 300\nnull.example. MX 0 .\n");
    let mut args = route_args(&[("example.com", sink.addr)], &zone);
    args.extend(["--dns-servfail".to_owned(), "broken.example".to_owned()]);
    let server = Server::start(&dir.path().join("data"), &args, &[]);
    let receipt = server.submit(json!({
        "from": "Shop <shop@sender.example>",
        "to": ["Ann <ann@example.com>"], "cc": ["bob@example.com"], "bcc": ["carl@example.com", "x@nowhere.example", "y@null.example", "z@broken.example"],
        "subject": "Your receipt", "text": "Thanks!\n.a line starting with a dot\n",
        "headers": {"X-Order": "1042"}
    }));
    let ids = ids(&receipt);
    for id in &ids[..3] {
        let d = wait_status(&server, id, "delivered");
        let kinds = event_kinds(&d);
        assert_eq!(kinds, vec!["queued", "sent", "delivered"], "{d}");
        let delivered = &d["events"][2]["details"];
        assert_eq!(delivered["smtp_code"], 250);
        assert_eq!(delivered["reply_text"], "250 2.0.0 Ok");
        assert_eq!(delivered["mx_host"], "example.com");
        assert_eq!(delivered["ip"], sink.addr.ip().to_string());
        assert_eq!(d["events"][1]["details"]["attempt"], 1);
    }
    let nx = wait_status(&server, &ids[3], "bounced");
    assert_eq!(nx["bounce_type"], "hard");
    assert_eq!(nx["events"][1]["details"]["rule"], "dns.nxdomain");
    assert_eq!(nx["events"][1]["details"]["reason"], "hostunknown");
    let null = wait_status(&server, &ids[4], "bounced");
    assert_eq!(null["events"][1]["details"]["rule"], "dns.null-mx");
    // A DNS failure is not a verdict: try again later.
    let servfail = wait_status(&server, &ids[5], "deferred");
    let deferred = &servfail["events"][1]["details"];
    assert!(
        deferred["reply_text"].as_str().unwrap().contains("DNS"),
        "{deferred}"
    );
    assert!(deferred["next_retry_at"].is_number());

    let dumps = eventually(WAIT, || {
        let m = sink.messages();
        (m.len() == 3).then_some(m)
    });
    for (i, id) in ids[..3].iter().enumerate() {
        let copy = dumps
            .iter()
            .find(|m| m.contains(&format!("Message-ID: <{id}@sender.example>")))
            .unwrap_or_else(|| panic!("copy {i} with its own Message-ID: {dumps:?}"));
        assert!(copy.contains("X-Mail-Args: <bounces+"), "{copy}");
        assert!(copy.contains("@sender.example>"), "{copy}");
        assert!(
            copy.contains("To: \"Ann\" <ann@example.com>")
                || copy.contains("To: Ann <ann@example.com>"),
            "{copy}"
        );
        assert!(
            copy.contains("Cc: <bob@example.com>") || copy.contains("Cc: bob@example.com"),
            "{copy}"
        );
        // No Bcc header (ids in the copy are random hex and may spell "bcc").
        assert!(
            !copy
                .lines()
                .any(|line| line.to_ascii_lowercase().starts_with("bcc:")),
            "Bcc never shows: {copy}"
        );
        assert!(copy.contains("X-Order: 1042"), "{copy}");
        assert!(copy.contains("\n.a line starting with a dot"), "{copy}");
    }
}

#[test]
fn after_kill_9_nothing_is_lost_and_nothing_with_a_verdict_is_sent_again() {
    if peer("curl").is_none() {
        return;
    }
    let Some(sink) = Sink::start(&[]) else { return };
    let Some(refusing) = Sink::start(&["-r", "rcpt"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let zone = zone_file(dir.path(), "");
    let fast_retries = [
        ("POSTHORN_RETRY__FIRST_RETRY", "1s"),
        ("POSTHORN_RETRY__MAX_INTERVAL", "1s"),
    ];
    let server = Server::start(
        &data,
        &route_args(
            &[("ok.example", sink.addr), ("later.example", refusing.addr)],
            &zone,
        ),
        &fast_retries,
    );
    let mut ok = Vec::new();
    for i in 0..60 {
        let receipt = server.submit(json!({"from": "s@sender.example", "to": format!("u{i}@ok.example"), "subject": "Hi", "text": format!("message {i}")}));
        ok.extend(ids(&receipt));
    }
    let mut later = Vec::new();
    for i in 0..5 {
        let receipt = server.submit(json!({"from": "s@sender.example", "to": format!("u{i}@later.example"), "subject": "Hi", "text": "later"}));
        later.extend(ids(&receipt));
    }
    for id in &later {
        let d = wait_status(&server, id, "deferred");
        let deferred = d["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "deferred")
            .unwrap();
        assert!(
            deferred["details"]["reply_text"]
                .as_str()
                .unwrap()
                .starts_with("4"),
            "{d}"
        );
        assert!(deferred["details"]["next_retry_at"].is_number());
    }
    // Whatever has a verdict now must never be sent again.
    let with_verdict: Vec<String> = ok
        .iter()
        .filter(|id| server.status(id)["status"] == "delivered")
        .cloned()
        .collect();
    server.kill9();

    // Restart: later.example now reaches the working sink.
    let server = Server::start(
        &data,
        &route_args(
            &[("ok.example", sink.addr), ("later.example", sink.addr)],
            &zone,
        ),
        &fast_retries,
    );
    for id in ok.iter().chain(&later) {
        wait_status(&server, id, "delivered");
    }
    let dumps = eventually(WAIT, || {
        let m = sink.messages();
        (m.len() >= ok.len() + later.len()).then_some(m)
    });
    let mut copies: HashMap<&str, usize> = HashMap::new();
    for id in ok.iter().chain(&later) {
        let n = dumps
            .iter()
            .filter(|m| m.contains(&format!("<{id}@sender.example>")))
            .count();
        assert!(n >= 1, "delivery {id} was lost");
        copies.insert(id, n);
    }
    for id in &with_verdict {
        assert_eq!(
            copies[id.as_str()],
            1,
            "delivery {id} had a verdict before the kill and was sent again"
        );
    }
    for id in &later {
        let d = server.status(id);
        let attempts: Vec<&Value> = d["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "sent")
            .collect();
        assert!(attempts.len() >= 2, "retried after the restart: {d}");
    }
}

#[test]
fn synchronous_bounces_are_classified_and_a_hard_one_suppresses_the_address() {
    if peer("curl").is_none() {
        return;
    }
    let Some(unknown) = Sink::start(&[
        "-f",
        "rcpt",
        "-B",
        "550 5.1.1 <gone@hard.example>: Recipient address rejected: User unknown",
    ]) else {
        return;
    };
    let Some(spam) = Sink::start(&["-f", "data", "-B", "554 5.7.1 Message rejected as spam"])
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let zone = zone_file(dir.path(), "");
    let server = Server::start(
        &dir.path().join("data"),
        &route_args(
            &[("hard.example", unknown.addr), ("soft.example", spam.addr)],
            &zone,
        ),
        &[],
    );
    let receipt = server.submit(json!({"from": "s@sender.example", "to": ["gone@hard.example", "reader@soft.example"], "subject": "Hi", "text": "x"}));
    let ids = ids(&receipt);

    let hard = wait_status(&server, &ids[0], "bounced");
    assert_eq!(hard["bounce_type"], "hard");
    let bounce = &hard["events"].as_array().unwrap().last().unwrap()["details"];
    assert_eq!(bounce["origin"], "sync");
    assert_eq!(bounce["reason"], "userunknown");
    assert_eq!(bounce["smtp_code"], 550);
    assert_eq!(bounce["enhanced_code"], "5.1.1");
    assert!(
        bounce["reply_text"]
            .as_str()
            .unwrap()
            .contains("User unknown"),
        "{bounce}"
    );
    assert!(bounce["rule"].as_str().is_some_and(|r| !r.is_empty()));

    // A spam block is about the sender, not the address: soft, no suppression.
    let soft = wait_status(&server, &ids[1], "bounced");
    assert_eq!(soft["bounce_type"], "soft");
    let suppressions = server.get("/v1/suppressions");
    let listed: Vec<&str> = suppressions["suppressions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["address"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec!["gone@hard.example"]);
    assert_eq!(
        server.get("/v1/contacts/gone@hard.example")["status"],
        "bounced"
    );

    // The next message to the bounced address is never attempted.
    let again = server.submit(json!({"from": "s@sender.example", "to": "gone@hard.example", "subject": "Hi", "text": "x"}));
    assert_eq!(again["deliveries"][0]["status"], "dropped");
}

#[test]
fn demo_mode_shows_every_outcome_through_the_simulator() {
    if peer("curl").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Shorter than the demo's own two-minute lifetime, so `expire@` ends soon.
    let env = [
        ("POSTHORN_RETRY__FIRST_RETRY", "1s"),
        ("POSTHORN_RETRY__LIFETIME", "6s"),
    ];
    let server = Server::start(&dir.path().join("data"), &["--demo".to_owned()], &env);
    let locals = [
        "delivered",
        "bounce",
        "mailbox-full",
        "blocked",
        "defer",
        "slow",
        "expire",
    ];
    let to: Vec<String> = locals
        .iter()
        .map(|l| format!("{l}@simulator.posthorn.test"))
        .collect();
    let receipt = server
        .submit(json!({"from": "you@example.com", "to": to, "subject": "Demo", "text": "Hello"}));
    let ids = ids(&receipt);
    let outcome = |i: usize, status: &str| wait_status(&server, &ids[i], status);

    assert_eq!(outcome(0, "delivered")["delivery_status"], "delivered");
    let bounce = outcome(1, "bounced");
    assert_eq!(bounce["bounce_type"], "hard");
    assert_eq!(
        outcome(2, "bounced")["bounce_type"],
        "soft",
        "a full mailbox is not a dead address"
    );
    let blocked = outcome(3, "bounced");
    assert_eq!(
        blocked["bounce_type"], "soft",
        "a spam block is about the sender"
    );
    let defer = outcome(4, "delivered");
    let kinds = event_kinds(&defer);
    assert_eq!(
        kinds,
        vec!["queued", "sent", "deferred", "sent", "delivered"]
    );
    outcome(5, "delivered");
    let expired = outcome(6, "expired");
    let last = expired["events"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert!(
        last["details"]["last_reply"]
            .as_str()
            .unwrap()
            .starts_with("451"),
        "{last}"
    );
    assert!(last["details"]["attempts"].as_u64().unwrap() >= 2, "{last}");
}

#[test]
fn a_smarthost_relays_everything_with_starttls_and_auth() {
    if peer("curl").is_none() {
        return;
    }
    let Some(sink) = Sink::start(&[]) else { return };
    // B: an upstream relay (another Posthorn, through its submission port).
    let dir_b = tempfile::tempdir().unwrap();
    let mut args_b = route_args(&[("example.com", sink.addr)], &zone_file(dir_b.path(), ""));
    args_b.extend(["--submission".to_owned(), "127.0.0.1:0".to_owned()]);
    let relay = Server::start(&dir_b.path().join("data"), &args_b, &[]);
    let relay_addr = relay.submission.unwrap();

    // A: sends everything through B.
    let dir_a = tempfile::tempdir().unwrap();
    let config = dir_a.path().join("posthorn.toml");
    std::fs::write(
        &config,
        format!(
            "[delivery.smarthost]\naddress = \"{relay_addr}\"\nusername = \"relay\"\npassword = \"{}\"\nrequire_tls = true\n",
            relay.key
        ),
    )
    .unwrap();
    let mut args_a = vec!["--config".to_owned(), config.display().to_string()];
    args_a.extend([
        "--dns-zone".to_owned(),
        zone_file(dir_a.path(), "").display().to_string(),
    ]);
    let sender = Server::start(&dir_a.path().join("data"), &args_a, &[]);
    let receipt = sender.submit(json!({"from": "shop@sender.example", "to": "ann@example.com", "subject": "Relayed", "text": "via B"}));
    let d = wait_status(&sender, &ids(&receipt)[0], "delivered");
    let delivered = &d["events"].as_array().unwrap().last().unwrap()["details"];
    assert!(
        delivered["tls_version"]
            .as_str()
            .is_some_and(|v| v.starts_with("TLS")),
        "{delivered}"
    );
    assert!(
        delivered["reply_text"]
            .as_str()
            .unwrap()
            .contains("queued as"),
        "{delivered}"
    );

    let dumps = eventually(WAIT, || {
        let m = sink.messages();
        (!m.is_empty()).then_some(m)
    });
    assert!(
        dumps[0].contains("Subject: Relayed") && dumps[0].contains("via B"),
        "{}",
        dumps[0]
    );
}

#[test]
fn a_domain_that_requires_tls_is_deferred_by_a_server_without_it() {
    if peer("curl").is_none() {
        return;
    }
    let Some(sink) = Sink::start(&[]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("posthorn.toml");
    std::fs::write(
        &config,
        "[delivery.domains.\"example.com\"]\nrequire_tls = true\n",
    )
    .unwrap();
    let mut args = route_args(&[("example.com", sink.addr)], &zone_file(dir.path(), ""));
    args.extend(["--config".to_owned(), config.display().to_string()]);
    let server = Server::start(&dir.path().join("data"), &args, &[]);
    let receipt = server.submit(
        json!({"from": "s@sender.example", "to": "ann@example.com", "subject": "x", "text": "x"}),
    );
    let d = wait_status(&server, &ids(&receipt)[0], "deferred");
    let deferred = d["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "deferred")
        .unwrap()
        .clone();
    assert!(
        deferred["details"]["reply_text"]
            .as_str()
            .unwrap()
            .contains("TLS is required"),
        "{deferred}"
    );
    assert!(sink.messages().is_empty(), "nothing was sent in plain text");
}

/// An MX (or a domain's own address) in DNS that resolves to loopback, a
/// private network or a metadata service is never connected to: the
/// delivery is deferred with the reason, and nothing reaches the address.
/// With the network allowed (`--allow-network`, `[delivery]
/// allow_networks`) the same zone delivers.
#[test]
fn mail_hosts_resolving_to_loopback_or_metadata_are_not_connected_to_unless_allowed() {
    if peer("curl").is_none() {
        return;
    }
    let Some(sink) = Sink::start(&[]) else { return };
    // A listener that must see no connection at all. `mx_port` makes the
    // port of mail servers found in DNS its port, as 25 would be.
    let trap = std::net::TcpListener::bind("127.0.0.3:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let zone = zone_file(
        dir.path(),
        "$TTL 300\nloop.example. MX 10 mx.loop.example.\nmx.loop.example. A 127.0.0.3\n\
         meta.example. A 169.254.169.254\n",
    );
    let trap_port = trap.local_addr().unwrap().port().to_string();
    let message = json!({"from": "shop@sender.example", "to": ["ann@loop.example", "bob@meta.example"],
        "subject": "Hi", "text": "Hi"});
    let server = Server::start(
        &dir.path().join("data"),
        &route_args(&[], &zone),
        &[("POSTHORN_DELIVERY__MX_PORT", &trap_port)],
    );
    let receipt = server.submit(message.clone());
    let ids = ids(&receipt);
    for (id, why) in [
        (&ids[0], "mx.loop.example (127.0.0.3) is a loopback address"),
        (
            &ids[1],
            "meta.example (169.254.169.254) is a cloud metadata address",
        ),
    ] {
        let d = wait_status(&server, id, "deferred");
        assert_eq!(event_kinds(&d), ["queued", "deferred"], "never sent: {d}");
        let deferred = event_of_kind(&d, "deferred");
        let text = deferred["details"]["reply_text"].as_str().unwrap();
        assert!(
            text.starts_with("451 4.4.4 ") && text.contains(why) && text.contains("allow_networks"),
            "{text}"
        );
        assert_eq!(deferred["details"]["enhanced_code"], "4.4.4");
        assert!(deferred["details"]["next_retry_at"].is_number(), "{d}");
    }
    assert!(
        matches!(trap.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a connection reached the loopback address"
    );
    drop(server);

    // Loopback allowed: the same zone delivers, to the sink on that port;
    // the metadata address is still refused.
    let dir = tempfile::tempdir().unwrap();
    let zone = zone_file(
        dir.path(),
        "$TTL 300\nloop.example. MX 10 mx.loop.example.\nmx.loop.example. A 127.0.0.3\n\
         meta.example. A 169.254.169.254\n",
    );
    let mut args = route_args(&[], &zone);
    args.extend(["--allow-network".to_owned(), "127.0.0.0/8".to_owned()]);
    let sink_port = sink.addr.port().to_string();
    let server = Server::start(
        &dir.path().join("data"),
        &args,
        &[("POSTHORN_DELIVERY__MX_PORT", &sink_port)],
    );
    let ids = common::ids(&server.submit(message));
    let d = wait_status(&server, &ids[0], "delivered");
    assert_eq!(
        event_of_kind(&d, "delivered")["details"]["mx_host"],
        "mx.loop.example"
    );
    wait_status(&server, &ids[1], "deferred");
}

/// The data directory is its owner's alone: 0700, and every file in it
/// (database, its log files, the secret, the first admin key, the
/// submission certificate and key, anything else) 0600, from the first
/// start; an installation left readable (an older version, a restored
/// backup) is tightened at the next start.
#[cfg(unix)]
#[test]
fn the_data_directory_and_every_file_in_it_are_private() {
    use std::os::unix::fs::PermissionsExt;
    if peer("curl").is_none() {
        return;
    }
    let Some(sink) = Sink::start(&[]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut args = route_args(&[("example.com", sink.addr)], &zone_file(dir.path(), ""));
    args.extend(["--submission".to_owned(), "127.0.0.1:0".to_owned()]);
    let deliver_one = |server: &Server| {
        let receipt = server.submit(
            json!({"from": "s@sender.example", "to": "ann@example.com", "subject": "x", "text": "x"}),
        );
        wait_status(server, &ids(&receipt)[0], "delivered");
    };
    /// Every entry under `root` with its mode.
    fn modes(root: &std::path::Path) -> Vec<(String, bool, u32)> {
        let mut found = Vec::new();
        let mut todo = vec![root.to_path_buf()];
        while let Some(path) = todo.pop() {
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                todo.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            }
            let name = path.strip_prefix(root).unwrap().display().to_string();
            found.push((name, meta.is_dir(), meta.permissions().mode() & 0o7777));
        }
        found.sort();
        found
    }
    let assert_private = |when: &str| {
        let found = modes(&data);
        for (name, is_dir, mode) in &found {
            let want = if *is_dir { 0o700 } else { 0o600 };
            assert_eq!(*mode, want, "{when}: `{name}` is {mode:o}: {found:?}");
        }
        found
    };

    let server = Server::start(&data, &args, &[]);
    deliver_one(&server);
    let found = assert_private("first start");
    let names: Vec<&str> = found.iter().map(|(n, _, _)| n.as_str()).collect();
    for expected in [
        "",
        "posthorn.db",
        "posthorn.db-wal",
        "posthorn.db-shm",
        "secret.key",
        "initial-admin-key",
        "submission-cert.pem",
        "submission-key.pem",
    ] {
        assert!(names.contains(&expected), "no `{expected}` in {names:?}");
    }
    server.kill9();

    // Loosen everything as an older version would have left it, and add
    // what an operator might: a key directory and a note.
    std::fs::create_dir_all(data.join("dkim")).unwrap();
    std::fs::write(data.join("dkim/README"), "keys live here").unwrap();
    std::fs::write(data.join("notes.txt"), "backup on Sundays").unwrap();
    for (name, is_dir, _) in modes(&data) {
        let mode = if is_dir { 0o755 } else { 0o644 };
        std::fs::set_permissions(data.join(name), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let server = Server::start(&data, &args, &[]);
    deliver_one(&server);
    let found = assert_private("after a restart");
    assert!(
        found.iter().any(|(n, _, _)| n == "dkim/README"),
        "{found:?}"
    );
}

/// A stop (SIGTERM) while a copy is on its way waits for the remote
/// server's answer to be recorded: after the restart the delivery is
/// `delivered` and the recipient has one copy. (Without the wait, the
/// outcome would be lost and the restart would send a second copy.)
#[test]
fn a_stop_waits_until_what_is_being_sent_is_recorded() {
    if peer("curl").is_none() {
        return;
    }
    // The sink answers each DATA only after 2 s: the stop comes while the
    // transaction is under way.
    let Some(sink) = Sink::start(&["-w", "2"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = route_args(&[("example.com", sink.addr)], &zone_file(dir.path(), ""));
    let server = Server::start(&data, &args, &[]);
    let receipt = server.submit(json!({
        "from": "a@sender.example",
        "to": ["r@example.com"],
        "subject": "Stopped mid-way",
        "text": "One copy only.",
    }));
    let id = ids(&receipt)[0].clone();
    wait_status(&server, &id, "sent");
    server.terminate();

    let server = Server::start(&data, &args, &[]);
    let delivery = server.status(&id);
    assert_eq!(delivery["status"], "delivered", "{delivery}");
    let copies = eventually(WAIT, || {
        let m = sink.messages();
        (!m.is_empty()).then_some(m)
    });
    assert_eq!(copies.len(), 1, "{copies:?}");
}
