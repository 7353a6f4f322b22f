//! SMTP submission with real clients: `swaks` (STARTTLS + AUTH PLAIN) and
//! Python's `smtplib` and lettre, delivered onwards to `smtp-sink`.

mod common;

use common::*;
use posthorn_testkit::{eventually, peer};
use serde_json::Value;
use std::process::Command;

fn start(sink: &Sink, dir: &std::path::Path) -> Server {
    let zone = zone_file(dir, "");
    let mut args = route_args(&[("example.com", sink.addr)], &zone);
    args.extend(["--submission".to_owned(), "127.0.0.1:0".to_owned()]);
    Server::start(&dir.join("data"), &args, &[])
}

fn create_key(data: &std::path::Path, scope: &str) -> String {
    let out = Command::new(BIN)
        .args([
            "keys",
            "create",
            "--tenant",
            "default",
            "--scope",
            scope,
            "--data-dir",
        ])
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

#[test]
fn swaks_submits_over_starttls_with_auth_plain_and_the_mail_is_delivered() {
    let (Some(swaks), Some(_curl)) = (peer("swaks"), peer("curl")) else {
        return;
    };
    let Some(sink) = Sink::start(&[]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = start(&sink, dir.path());
    let submission = server.submission.expect("submission listens");
    let out = Command::new(swaks)
        .args([
            "--server",
            &submission.to_string(),
            "--tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            "me",
        ])
        .args(["--auth-password", &server.key])
        .args([
            "--from",
            "shop@sender.example",
            "--to",
            "ann@example.com,bob@example.com",
        ])
        .args([
            "--header",
            "Subject: Over SMTP",
            "--header",
            "Bcc: hidden@example.com",
            "--body",
            "Hello from swaks",
        ])
        .output()
        .unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{transcript}");
    assert!(transcript.contains("235 2.7.0"), "{transcript}");
    let queued = transcript
        .lines()
        .find(|l| l.contains("queued as "))
        .unwrap_or_else(|| panic!("{transcript}"));
    let message_id = queued.rsplit("queued as ").next().unwrap().trim();
    let message = server.get(&format!("/v1/messages/{message_id}"));
    assert_eq!(message["subject"], "Over SMTP");
    assert_eq!(message["source"], "smtp-submission");
    let deliveries: Vec<String> = message["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(deliveries.len(), 2, "one delivery per RCPT");
    for id in &deliveries {
        wait_status(&server, id, "delivered");
    }
    let dumps = eventually(WAIT, || {
        let m = sink.messages();
        (m.len() == 2).then_some(m)
    });
    for dump in &dumps {
        assert!(
            dump.contains("Hello from swaks") && dump.contains("Subject: Over SMTP"),
            "{dump}"
        );
        assert!(
            !dump.contains("hidden@example.com"),
            "Bcc is removed: {dump}"
        );
        // Sent as the client built it, with the unsubscribe headers added.
        assert!(
            dump.contains("List-Unsubscribe: <http://")
                && dump.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
            "{dump}"
        );
    }

    // AUTH LOGIN, in plain text from loopback (allowed by default).
    let out = Command::new(peer("swaks").unwrap())
        .args([
            "--server",
            &submission.to_string(),
            "--auth",
            "LOGIN",
            "--auth-user",
            "me",
        ])
        .args(["--auth-password", &server.key])
        .args([
            "--from",
            "shop@sender.example",
            "--to",
            "carl@example.com",
            "--body",
            "login",
        ])
        .output()
        .unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && transcript.contains("235 2.7.0"),
        "{transcript}"
    );
    assert!(transcript.contains("AUTH LOGIN"), "{transcript}");
}

const SMTPLIB: &str = r#"
import smtplib, sys
host, port, key, scenario = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = smtplib.SMTP(host, port, timeout=30)
s.ehlo("client.example")
try:
    if scenario == "mail-before-auth":
        code, text = s.mail("a@sender.example")
        print(code, text.decode())
    elif scenario == "login":
        s.login("me", key)
        refused = s.sendmail("a@sender.example", ["c@example.com"], b"Subject: via smtplib\r\n\r\nhi\r\n")
        print("sent", refused)
    elif scenario == "bad-recipient":
        s.login("me", key)
        s.mail("a@sender.example")
        code, text = s.rcpt("not an address")
        print(code, text.decode())
    elif scenario == "too-big":
        s.login("me", key)
        try:
            s.sendmail("a@sender.example", ["c@example.com"], b"Subject: big\r\n\r\n" + b"x" * 5000 + b"\r\n")
        except smtplib.SMTPException as e:
            print("refused", e)
except smtplib.SMTPAuthenticationError as e:
    print("auth", e.smtp_code, e.smtp_error.decode())
"#;

fn smtplib(python: &std::path::Path, server: &Server, key: &str, scenario: &str) -> String {
    let addr = server.submission.unwrap();
    let out = Command::new(python)
        .args([
            "-c",
            SMTPLIB,
            &addr.ip().to_string(),
            &addr.port().to_string(),
            key,
            scenario,
        ])
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn message_count(server: &Server) -> usize {
    server.get("/v1/events?kind=queued&limit=500")["events"]
        .as_array()
        .map_or(0, Vec::len)
}

#[test]
fn smtplib_login_and_the_refusals_that_write_nothing() {
    let (Some(python), Some(_curl)) = (peer("python3"), peer("curl")) else {
        return;
    };
    let Some(sink) = Sink::start(&[]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let env_limit = [("POSTHORN_LIMITS__MAX_MESSAGE_SIZE", "4KB")];
    let zone = zone_file(dir.path(), "");
    let mut args = route_args(&[("example.com", sink.addr)], &zone);
    args.extend(["--submission".to_owned(), "127.0.0.1:0".to_owned()]);
    let server = Server::start(&dir.path().join("data"), &args, &env_limit);

    // Loopback clients may log in without STARTTLS (configurable).
    let out = smtplib(&python, &server, &server.key, "login");
    assert!(out.contains("sent {}"), "{out}");
    assert_eq!(message_count(&server), 1);

    let out = smtplib(&python, &server, &server.key, "mail-before-auth");
    assert!(out.starts_with("530"), "{out}");
    let read_only = create_key(&dir.path().join("data"), "read");
    let out = smtplib(&python, &server, &read_only, "login");
    assert!(out.contains("auth 535") && out.contains("send"), "{out}");
    let out = smtplib(&python, &server, "ph_not_a_key", "login");
    assert!(out.contains("auth 535"), "{out}");
    let out = smtplib(&python, &server, &server.key, "bad-recipient");
    assert!(out.starts_with("5"), "{out}");
    let out = smtplib(&python, &server, &server.key, "too-big");
    assert!(out.contains("refused") && out.contains("552"), "{out}");
    assert_eq!(
        message_count(&server),
        1,
        "no refused submission wrote anything"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lettre_sends_through_submission_and_a_read_only_key_is_refused() {
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    if peer("curl").is_none() {
        return;
    }
    let Some(sink) = Sink::start(&[]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = start(&sink, dir.path());
    let port = server.submission.unwrap().port();
    let mailer = |key: &str| {
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(port)
            .credentials(Credentials::new("me".into(), key.to_owned()))
            .build()
    };
    let email = || {
        Message::builder()
            .from("Shop <shop@sender.example>".parse().unwrap())
            .to("ann@example.com".parse().unwrap())
            .subject("From lettre")
            .body(String::from("Hello from lettre"))
            .unwrap()
    };
    let response = mailer(&server.key).send(email()).await.expect("accepted");
    let text = response.message().collect::<Vec<_>>().join(" ");
    let message_id = text.rsplit("queued as ").next().unwrap().trim().to_owned();
    let message: Value = server.get(&format!("/v1/messages/{message_id}"));
    assert_eq!(message["subject"], "From lettre");
    let delivery = message["deliveries"][0]["id"].as_str().unwrap().to_owned();
    wait_status(&server, &delivery, "delivered");

    let read_only = create_key(&dir.path().join("data"), "read");
    let refused = mailer(&read_only).send(email()).await.expect_err("refused");
    assert!(
        refused.to_string().contains("535") || refused.to_string().to_lowercase().contains("auth"),
        "{refused}"
    );
}
