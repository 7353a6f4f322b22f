//! The client against real receiving servers over loopback: Postfix's
//! `smtp-sink` (PIPELINING, DSN, fault injection) and aiosmtpd (neither
//! PIPELINING nor DSN, per-recipient replies, STARTTLS).

use posthorn_smtp::tls::MaybeTls;
use posthorn_smtp::{ClientError, Envelope, Phase, SmtpClient, Timeouts};
use posthorn_testkit::{
    KillOnDrop, SmtpSink as Sink, free_port, peer, python_module, wait_for_port,
};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const MESSAGE: &[u8] = b"From: shop@sender.example\r\nTo: a@example.com\r\nSubject: Receipt\r\n\r\nThanks!\r\n.hidden dot line\r\n";

fn read_dumps(dir: &Path) -> Vec<String> {
    posthorn_testkit::read_dir_texts(dir)
}

fn envelope(recipients: &[&str]) -> Envelope {
    Envelope {
        mail_from: "bounces+t0k3n@return.sender.example".into(),
        recipients: recipients.iter().map(|r| r.to_string()).collect(),
        envid: Some("delivery+1=2".into()),
        notify: Some("FAILURE,DELAY".into()),
    }
}

async fn session(addr: SocketAddr, timeouts: Timeouts) -> SmtpClient<MaybeTls> {
    let (mut client, greeting) = SmtpClient::connect(addr, timeouts).await.expect("connect");
    assert_eq!(greeting.code, 220);
    client.hello("posthorn.test").await.expect("EHLO");
    client
}

#[tokio::test]
async fn smtp_sink_pipelined_transactions_with_dsn_parameters() {
    let Some(sink) = Sink::start(&[]) else { return };
    let mut client = session(sink.addr, Timeouts::default()).await;
    assert!(client.extensions.pipelining && client.extensions.dsn);

    let first = client
        .send(&envelope(&["a@example.com", "b@example.com"]), MESSAGE)
        .await
        .unwrap();
    assert!(first.recipients.iter().all(|r| r.delivered()), "{first:?}");
    assert_eq!(first.recipients[0].reply.code, 250);
    assert_eq!(
        first.recipients[0]
            .reply
            .enhanced
            .map(|e| e.to_string())
            .as_deref(),
        Some("2.0.0")
    );
    // A second transaction on the same session (RSET in between).
    let second = client
        .send(&envelope(&["c@example.com"]), MESSAGE)
        .await
        .unwrap();
    assert!(second.recipients[0].delivered());
    client.quit().await;

    let dumps = posthorn_testkit::eventually(Duration::from_secs(5), || {
        let m = sink.messages();
        (m.len() == 2).then_some(m)
    });
    let with_two = dumps
        .iter()
        .find(|d| d.contains("<b@example.com>"))
        .expect("first transaction");
    assert!(
        with_two.contains("X-Mail-Args: <bounces+t0k3n@return.sender.example>"),
        "{with_two}"
    );
    assert!(
        with_two.contains("ENVID=delivery+2B1+3D2"),
        "xtext-encoded ENVID: {with_two}"
    );
    assert!(
        with_two.contains("NOTIFY=FAILURE,DELAY")
            && with_two.contains("ORCPT=rfc822;a@example.com"),
        "{with_two}"
    );
    assert!(
        with_two.contains("\n.hidden dot line"),
        "dot-stuffing undone by the server: {with_two}"
    );
    assert!(!with_two.contains("..hidden"));
}

#[tokio::test]
async fn smtp_sink_permanent_and_transient_rejections() {
    // 5xx to every RCPT: each recipient gets the reply, and no DATA is sent.
    if let Some(sink) = Sink::start(&["-f", "rcpt"]) {
        let mut client = session(sink.addr, Timeouts::default()).await;
        let result = client
            .send(&envelope(&["a@example.com", "b@example.com"]), MESSAGE)
            .await
            .unwrap();
        for r in &result.recipients {
            assert_eq!(r.phase, Phase::RcptTo);
            assert!(r.reply.is_permanent(), "{r:?}");
            assert!(!r.delivered());
        }
        // smtp-sink may still answer the pipelined DATA with 354: then only
        // the terminating dot is sent, never the message.
        assert!(
            sink.messages().iter().all(|m| !m.contains("Thanks!")),
            "{:?}",
            sink.messages()
        );
    }
    // 4xx to every RCPT: transient, per recipient.
    if let Some(sink) = Sink::start(&["-r", "rcpt"]) {
        let mut client = session(sink.addr, Timeouts::default()).await;
        let result = client
            .send(&envelope(&["a@example.com"]), MESSAGE)
            .await
            .unwrap();
        assert!(result.recipients[0].reply.is_transient(), "{result:?}");
    }
    // 5xx to DATA: the accepted recipients share it.
    if let Some(sink) = Sink::start(&["-f", "data"]) {
        let mut client = session(sink.addr, Timeouts::default()).await;
        let result = client
            .send(&envelope(&["a@example.com"]), MESSAGE)
            .await
            .unwrap();
        assert_eq!(result.recipients[0].phase, Phase::Data);
        assert!(result.recipients[0].reply.is_permanent());
    }
}

#[tokio::test]
async fn smtp_sink_421_disconnects_and_slowness_are_session_failures() {
    if let Some(sink) = Sink::start(&["-Q", "mail"]) {
        let mut client = session(sink.addr, Timeouts::default()).await;
        let err = client
            .send(&envelope(&["a@example.com"]), MESSAGE)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ClientError::Reply { reply, .. } if reply.code == 421),
            "{err:?}"
        );
        assert!(err.is_transient());
    }
    // Dropped right after the final dot: the verdict is unknown, so transient.
    if let Some(sink) = Sink::start(&["-q", "."]) {
        let mut client = session(sink.addr, Timeouts::default()).await;
        let err = client
            .send(&envelope(&["a@example.com"]), MESSAGE)
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Io { .. }), "{err:?}");
        assert!(err.is_transient());
        assert_eq!(
            err.reply().enhanced.map(|e| e.to_string()).as_deref(),
            Some("4.4.2")
        );
    }
    // `-w 5`: five seconds before answering DATA, and (pipelined) the replies
    // before it wait too; our timeouts are shorter.
    if let Some(sink) = Sink::start(&["-w", "5"]) {
        let timeouts = Timeouts {
            mail_from: Duration::from_millis(300),
            rcpt_to: Duration::from_millis(300),
            data_init: Duration::from_millis(300),
            ..Timeouts::default()
        };
        let mut client = session(sink.addr, timeouts).await;
        let err = client
            .send(&envelope(&["a@example.com"]), MESSAGE)
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
        assert!(err.is_transient());
    }
}

struct Aiosmtpd {
    _process: KillOnDrop,
    addr: SocketAddr,
    dumps: tempfile::TempDir,
}

impl Aiosmtpd {
    fn start(tls: Option<(&Path, &Path)>) -> Option<Aiosmtpd> {
        let python = python_module("aiosmtpd")?;
        let dumps = tempfile::tempdir().unwrap();
        let port = free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/aiosmtpd_peer.py");
        let mut command = Command::new(python);
        command.arg(script).arg(port.to_string()).arg(dumps.path());
        if let Some((cert, key)) = tls {
            command.arg(cert).arg(key);
        }
        let child = command
            .stdout(Stdio::null())
            .spawn()
            .expect("start aiosmtpd");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let process = KillOnDrop(child);
        wait_for_port(addr, Duration::from_secs(20));
        Some(Aiosmtpd {
            _process: process,
            addr,
            dumps,
        })
    }
}

#[tokio::test]
async fn aiosmtpd_one_rejected_recipient_does_not_fail_the_others() {
    let Some(server) = Aiosmtpd::start(None) else {
        return;
    };
    let mut client = session(server.addr, Timeouts::default()).await;
    assert!(!client.extensions.pipelining && !client.extensions.dsn);
    let rcpts = [
        "ok@example.com",
        "bounce@example.com",
        "defer@example.com",
        "full@example.com",
        "ok2@example.com",
    ];
    let result = client.send(&envelope(&rcpts), MESSAGE).await.unwrap();
    let by = |r: &str| {
        result
            .recipients
            .iter()
            .find(|x| x.recipient == r)
            .unwrap()
            .clone()
    };
    assert!(by("ok@example.com").delivered() && by("ok2@example.com").delivered());
    assert_eq!(by("ok@example.com").reply.text, "Ok: queued as peer-1");
    let bounce = by("bounce@example.com");
    assert_eq!(
        (
            bounce.reply.code,
            bounce.reply.enhanced.map(|e| e.to_string()).as_deref()
        ),
        (550, Some("5.1.1"))
    );
    assert!(
        bounce.reply.text.contains("User unknown"),
        "whole reply kept: {bounce:?}"
    );
    assert!(by("defer@example.com").reply.is_transient());
    assert_eq!(
        by("full@example.com")
            .reply
            .enhanced
            .map(|e| e.to_string())
            .as_deref(),
        Some("5.2.2")
    );
    client.quit().await;

    let dumps = read_dumps(server.dumps.path());
    assert_eq!(dumps.len(), 1);
    assert!(
        dumps[0].contains("X-Peer-Rcpt-To: ok@example.com")
            && dumps[0].contains("X-Peer-Rcpt-To: ok2@example.com")
    );
    assert!(!dumps[0].contains("bounce@example.com"));
}

#[tokio::test]
async fn aiosmtpd_starttls_and_smtputf8() {
    let Some(openssl) = peer("openssl") else {
        return;
    };
    let keys = tempfile::tempdir().unwrap();
    let (cert, key) = (keys.path().join("cert.pem"), keys.path().join("key.pem"));
    let status = Command::new(openssl)
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let Some(server) = Aiosmtpd::start(Some((&cert, &key))) else {
        return;
    };
    let client = session(server.addr, Timeouts::default()).await;
    assert!(client.extensions.starttls);
    assert!(client.tls_info().is_none());
    let mut client = client
        .starttls("localhost", "posthorn.test")
        .await
        .expect("STARTTLS");
    let tls = client.tls_info().expect("encrypted");
    assert!(tls.version.starts_with("TLSv1"), "{tls:?}");
    assert!(client.extensions.smtputf8, "EHLO repeated after STARTTLS");
    let result = client
        .send(&envelope(&["josé@example.com"]), MESSAGE)
        .await
        .unwrap();
    assert!(result.recipients[0].delivered(), "{result:?}");
    client.quit().await;
    let dumps = read_dumps(server.dumps.path());
    assert!(
        dumps[0].contains("X-Peer-TLS: yes") && dumps[0].contains("josé@example.com"),
        "{}",
        dumps[0]
    );
}

#[tokio::test]
async fn a_peer_that_answers_garbage_is_a_transient_protocol_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let (mut socket, _) = listener.accept().await.unwrap();
        socket
            .write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let err = SmtpClient::connect(addr, Timeouts::default())
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(
            err,
            ClientError::Protocol {
                phase: Phase::Greeting,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_transient());
}

#[tokio::test]
async fn smtp_sink_without_esmtp_gets_helo_and_plain_smtp() {
    // `-e`: smtp-sink answers EHLO with 500, as pre-ESMTP servers do.
    let Some(sink) = Sink::start(&["-e"]) else {
        return;
    };
    let (mut client, _) = SmtpClient::connect(sink.addr, Timeouts::default())
        .await
        .unwrap();
    client
        .hello("posthorn.test")
        .await
        .expect("HELO after a refused EHLO");
    assert!(!client.extensions.esmtp && !client.extensions.pipelining && !client.extensions.dsn);
    let result = client
        .send(&envelope(&["a@example.com"]), MESSAGE)
        .await
        .unwrap();
    assert!(result.recipients[0].delivered(), "{result:?}");
    client.quit().await;
    let dumps = posthorn_testkit::eventually(Duration::from_secs(5), || {
        let m = sink.messages();
        (m.len() == 1).then_some(m)
    });
    assert!(dumps[0].contains("X-Client-Proto: SMTP"), "{}", dumps[0]);
    assert!(
        !dumps[0].contains("ENVID="),
        "no DSN parameters without DSN: {}",
        dumps[0]
    );
}
