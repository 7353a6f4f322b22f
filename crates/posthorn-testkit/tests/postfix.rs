//! The Postfix harness against real peers: a message Postfix accepts and
//! then cannot deliver comes back as Postfix's own DSN to the envelope
//! sender's domain, the way the end-to-end bounce test needs it.

use std::net::SocketAddr;
use std::time::Duration;

use posthorn_testkit::postfix::{PostfixInstance, PostfixOptions, smtp_send};
use posthorn_testkit::{SmtpSink, eventually};

const SENDER: &str = "bounces+abc234@bounces.example.test";
const RECIPIENT: &str = "nobody@example.test";

/// Enough for Postfix on a loaded 2-core machine; a pass takes well under a
/// second.
const LIMIT: Duration = Duration::from_secs(30);

fn message(message_id: &str) -> String {
    format!(
        "From: Sender <sender@bounces.example.test>\n\
         To: <{RECIPIENT}>\n\
         Subject: harness test\n\
         Message-ID: <{message_id}>\n\
         \n\
         Hello.\n\
         .a line starting with a dot\n"
    )
}

/// The DSN `capture` received for `message_id`, after checking it is one:
/// to the VERP sender, from the null sender, a delivery-status report naming
/// the recipient, `status` and the original Message-ID.
fn assert_dsn(postfix: &PostfixInstance, capture: &SmtpSink, message_id: &str, status: &str) {
    let dsn = eventually(LIMIT, || {
        capture
            .messages()
            .into_iter()
            .find(|m| m.contains(message_id))
    });
    let unfolded = dsn.replace("\r\n", "\n").replace("\n\t", " ");
    let context = || format!("DSN:\n{dsn}\n--- maillog ---\n{}", postfix.log());
    assert!(
        unfolded.contains(&format!("X-Rcpt-Args: <{SENDER}>")),
        "not to the VERP sender: {}",
        context()
    );
    assert!(
        unfolded.contains("X-Mail-Args: <> ") || unfolded.contains("X-Mail-Args: <>\n"),
        "not from the null sender: {}",
        context()
    );
    assert!(
        unfolded.contains("Content-Type: multipart/report; report-type=delivery-status;"),
        "not a delivery-status report: {}",
        context()
    );
    assert!(
        unfolded.contains(&format!("Final-Recipient: rfc822; {RECIPIENT}")),
        "recipient not named: {}",
        context()
    );
    assert!(
        unfolded.contains(&format!("Status: {status}")),
        "status {status} not given: {}",
        context()
    );
    assert!(
        unfolded.contains(&format!("Message-ID: <{message_id}>")),
        "original Message-ID not carried: {}",
        context()
    );
    assert!(
        unfolded.contains(&format!("<MAILER-DAEMON@{}>", postfix.hostname())),
        "not from Postfix's MAILER-DAEMON: {}",
        context()
    );
}

/// Starts the failing recipient server, the DSN capture and Postfix between
/// them; `None` when a peer is missing (skipped loudly).
fn setup(recipient_server: &[&str]) -> Option<(SmtpSink, SmtpSink, PostfixInstance)> {
    let failing = SmtpSink::start(recipient_server)?;
    let capture = SmtpSink::start(&[])?;
    let postfix = PostfixInstance::start_or_skip(
        PostfixOptions::new()
            .relay("example.test", failing.addr)
            .route("bounces.example.test", capture.addr),
    )?;
    Some((failing, capture, postfix))
}

/// The recipient's server answers RCPT with `550 5.1.1`: Postfix bounces at
/// once and its DSN reaches the sender's domain.
#[test]
fn a_rejected_recipient_comes_back_as_a_dsn_to_the_sender_domain() {
    let Some((failing, capture, postfix)) = setup(&[
        "-f",
        "rcpt",
        "-B",
        "550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown",
    ]) else {
        return;
    };
    let reply = postfix
        .submit(SENDER, &[RECIPIENT], &message("harness-550@posthorn.test"))
        .unwrap_or_else(|e| panic!("{e}\n--- maillog ---\n{}", postfix.log()));
    assert!(reply.contains("queued as"), "{reply}");

    assert_dsn(&postfix, &capture, "harness-550@posthorn.test", "5.1.1");
    assert!(
        failing.messages().is_empty(),
        "the recipient's server took a message"
    );
    let log = postfix.log();
    assert!(log.contains("status=bounced"), "{log}");
    assert!(log.contains("sender non-delivery notification"), "{log}");
    // The DSN itself was delivered and left the queue.
    eventually(LIMIT, || postfix.queue_is_empty().then_some(()));
}

/// Without a recipient server: Postfix's error transport fails the
/// recipient, with the same DSN to the sender's domain.
#[test]
fn a_failing_relay_domain_needs_no_server() {
    let Some(capture) = SmtpSink::start(&[]) else {
        return;
    };
    let Some(postfix) = PostfixInstance::start_or_skip(
        PostfixOptions::new()
            .relay_and_fail("example.test", "5.1.1 User unknown")
            .route("bounces.example.test", capture.addr),
    ) else {
        return;
    };
    postfix
        .submit(
            SENDER,
            &[RECIPIENT],
            &message("harness-error@posthorn.test"),
        )
        .unwrap_or_else(|e| panic!("{e}\n--- maillog ---\n{}", postfix.log()));
    assert_dsn(&postfix, &capture, "harness-error@posthorn.test", "5.1.1");
}

/// Postfix relays only for its relay domains, even to loopback clients.
#[test]
fn it_is_not_an_open_relay() {
    let Some((_failing, _capture, postfix)) = setup(&[]) else {
        return;
    };
    let refused = postfix
        .submit(
            SENDER,
            &["someone@elsewhere.test"],
            &message("relay@posthorn.test"),
        )
        .expect_err("relayed for a foreign domain");
    assert!(refused.contains("554 5.7.1"), "{refused}");
}

/// A next hop that refuses connections: Postfix defers, and once the queue
/// lifetime is over, returns the message; flushing makes it retry now.
#[test]
fn an_unreachable_next_hop_expires_into_a_dsn() {
    let Some(capture) = SmtpSink::start(&[]) else {
        return;
    };
    // Another loopback address than the one every test server binds, so no
    // server started meanwhile can take this port.
    let closed: SocketAddr = format!("127.0.0.254:{}", posthorn_testkit::free_port())
        .parse()
        .expect("address");
    let Some(postfix) = PostfixInstance::start_or_skip(
        PostfixOptions::new()
            .relay("example.test", closed)
            .route("bounces.example.test", capture.addr)
            .queue_lifetime(Duration::from_secs(1)),
    ) else {
        return;
    };
    postfix
        .submit(
            SENDER,
            &[RECIPIENT],
            &message("harness-expired@posthorn.test"),
        )
        .unwrap_or_else(|e| panic!("{e}\n--- maillog ---\n{}", postfix.log()));
    let dsn = eventually(LIMIT, || {
        postfix.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(200));
        capture
            .messages()
            .into_iter()
            .find(|m| m.contains("harness-expired@posthorn.test"))
    });
    assert!(dsn.contains("Status: 4.4.1"), "{dsn}\n{}", postfix.log());
}

/// Several instances at once in one process, each with its own peers: no
/// shared port, directory, lock or name.
#[test]
fn instances_run_side_by_side() {
    let runs: Vec<_> = (0..3)
        .map(|i| {
            std::thread::spawn(move || {
                let Some((_failing, capture, postfix)) = setup(&[
                    "-f",
                    "rcpt",
                    "-B",
                    "550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown",
                ]) else {
                    return;
                };
                let id = format!("parallel-{i}@posthorn.test");
                postfix
                    .submit(SENDER, &[RECIPIENT], &message(&id))
                    .unwrap_or_else(|e| panic!("{e}\n--- maillog ---\n{}", postfix.log()));
                assert_dsn(&postfix, &capture, &id, "5.1.1");
                // Each got only its own DSN.
                assert_eq!(capture.messages().len(), 1, "{}", postfix.log());
            })
        })
        .collect();
    for run in runs {
        run.join().expect("a parallel instance failed");
    }
}

/// The plain SMTP client refuses to go on after an unexpected reply, with
/// the transcript.
#[test]
fn the_client_reports_an_unexpected_reply() {
    let Some(sink) = SmtpSink::start(&["-f", "mail"]) else {
        return;
    };
    let error = smtp_send(sink.addr, SENDER, &[RECIPIENT], "Subject: x\n\nx\n")
        .expect_err("MAIL was rejected");
    assert!(error.contains("C: MAIL FROM:<"), "{error}");
    assert!(error.contains("S: 500"), "{error}");
}
