//! The server session against misbehaving clients over a real socket: every
//! bad input gets a clear reply, and nothing half-received is handed on.

use posthorn_smtp::EnhancedCode;
use posthorn_smtp::listen::ConnectionLimits;
use posthorn_smtp::server::{
    Handler, ReceivedEnvelope, ServerReply, ServerSettings, Session, serve,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Default)]
struct Recorder {
    messages: Mutex<Vec<(ReceivedEnvelope, Vec<u8>)>>,
    auths: AtomicUsize,
}

#[async_trait::async_trait]
impl Handler for Recorder {
    async fn auth(&self, _user: &str, password: &str) -> Result<String, ServerReply> {
        self.auths.fetch_add(1, Ordering::SeqCst);
        if password == "right" {
            Ok("me".into())
        } else {
            Err(ServerReply::new(
                535,
                EnhancedCode::of(5, 7, 8),
                "authentication failed",
            ))
        }
    }
    async fn rcpt_to(
        &self,
        _s: &Session,
        _e: &ReceivedEnvelope,
        address: &str,
    ) -> Result<(), ServerReply> {
        if address.starts_with("nobody@") {
            return Err(ServerReply::new(
                550,
                EnhancedCode::of(5, 1, 1),
                "no such user",
            ));
        }
        Ok(())
    }
    async fn data(
        &self,
        _s: &Session,
        envelope: &ReceivedEnvelope,
        message: Vec<u8>,
    ) -> ServerReply {
        self.messages
            .lock()
            .unwrap()
            .push((envelope.clone(), message));
        ServerReply::new(250, EnhancedCode::of(2, 0, 0), "queued")
    }
}

async fn start(settings: ServerSettings) -> (std::net::SocketAddr, Arc<Recorder>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let recorder = Arc::new(Recorder::default());
    tokio::spawn(serve(
        listener,
        Arc::new(settings),
        recorder.clone(),
        std::future::pending(),
    ));
    (addr, recorder)
}

struct Client {
    reader: BufReader<tokio::io::ReadHalf<TcpStream>>,
    writer: tokio::io::WriteHalf<TcpStream>,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr) -> (Client, String) {
        let (r, w) = tokio::io::split(TcpStream::connect(addr).await.unwrap());
        let mut client = Client {
            reader: BufReader::new(r),
            writer: w,
        };
        let greeting = client.reply().await;
        (client, greeting)
    }
    /// One whole reply (all its lines), as text.
    async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).await.unwrap() == 0 {
                return all;
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }
    async fn send(&mut self, raw: &[u8]) {
        self.writer.write_all(raw).await.unwrap();
    }
    async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }
}

#[tokio::test]
async fn a_well_behaved_transaction_and_its_limits() {
    let mut settings = ServerSettings::new("mx.test");
    settings.max_message_size = 1000;
    settings.max_recipients = 2;
    let (addr, recorder) = start(settings).await;
    let (mut c, greeting) = Client::connect(addr).await;
    assert!(greeting.starts_with("220 mx.test"));
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(
        ehlo.contains("250-PIPELINING") && ehlo.contains("SIZE 1000"),
        "{ehlo}"
    );
    assert!(
        !ehlo.contains("AUTH") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
    assert!(
        c.cmd("MAIL FROM:<a@x.test> SIZE=5000")
            .await
            .starts_with("552 5.3.4")
    );
    assert!(c.cmd("MAIL FROM:<a@x.test>").await.starts_with("250"));
    assert!(
        c.cmd("MAIL FROM:<a@x.test>").await.starts_with("503"),
        "nested MAIL"
    );
    assert!(
        c.cmd("RCPT TO:<nobody@y.test>")
            .await
            .starts_with("550 5.1.1")
    );
    assert!(c.cmd("RCPT TO:<b@y.test>").await.starts_with("250"));
    assert!(c.cmd("RCPT TO:<c@y.test>").await.starts_with("250"));
    assert!(c.cmd("RCPT TO:<d@y.test>").await.starts_with("452 4.5.3"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(b"Subject: t\r\n\r\n..dot\r\nnot the end \n.\n still\r\n.\r\n")
        .await;
    assert!(c.reply().await.starts_with("250"));
    let messages = recorder.messages.lock().unwrap().clone();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].0.recipients, vec!["b@y.test", "c@y.test"]);
    // Dot-unstuffed, and a bare-LF dot does not end the message (no smuggling).
    assert_eq!(
        messages[0].1,
        b"Subject: t\r\n\r\n.dot\r\nnot the end \n.\n still\r\n".to_vec()
    );
    assert!(c.cmd("QUIT").await.starts_with("221"));
}

#[tokio::test]
async fn out_of_order_and_malformed_commands_are_refused() {
    let (addr, recorder) = start(ServerSettings::new("mx.test")).await;
    let (mut c, _) = Client::connect(addr).await;
    assert!(
        c.cmd("MAIL FROM:<a@x.test>").await.starts_with("503"),
        "EHLO first"
    );
    c.cmd("EHLO client.test").await;
    assert!(
        c.cmd("RCPT TO:<b@y.test>").await.starts_with("503"),
        "MAIL first"
    );
    assert!(c.cmd("DATA").await.starts_with("554"), "no recipients");
    // A CR inside an address is either dropped by the parser or refused:
    // never does one reach the handler (no header injection via the envelope).
    c.cmd("MAIL FROM:<a@x.test\r>").await;
    c.cmd("RCPT TO:<b@y.test\rBcc: c@z.test>").await;
    c.cmd("RCPT TO:<plain@y.test>").await;
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(b"Subject: envelope\r\n\r\nx\r\n.\r\n").await;
    assert!(c.reply().await.starts_with("250"));
    {
        let messages = recorder.messages.lock().unwrap();
        let envelope = &messages.last().unwrap().0;
        let addresses = std::iter::once(&envelope.mail_from).chain(&envelope.recipients);
        assert!(
            addresses.clone().all(|a| !a.chars().any(char::is_control)),
            "{envelope:?}"
        );
    }
    assert!(c.cmd("FROB").await.starts_with("500"));
    let long = format!("MAIL FROM:<{}@x.test>", "a".repeat(5000));
    assert!(
        c.cmd(&long).await.starts_with("500 5.5.2"),
        "over-long line"
    );
    // 8-bit header bytes are fine with 8BITMIME/SMTPUTF8.
    c.cmd("MAIL FROM:<a@x.test>").await;
    c.cmd("RCPT TO:<b@y.test>").await;
    c.cmd("DATA").await;
    c.send("Subject: Grüße\r\n\r\nhé\r\n.\r\n".as_bytes()).await;
    assert!(c.reply().await.starts_with("250"));
    assert_eq!(recorder.messages.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_client_that_disconnects_mid_data_leaves_nothing() {
    let (addr, recorder) = start(ServerSettings::new("mx.test")).await;
    let (mut c, _) = Client::connect(addr).await;
    c.cmd("EHLO client.test").await;
    c.cmd("MAIL FROM:<a@x.test>").await;
    c.cmd("RCPT TO:<b@y.test>").await;
    c.cmd("DATA").await;
    c.send(b"Subject: half\r\n\r\nthe first half of a messa")
        .await;
    drop(c);
    // A second session completes, so the first had all the time it needed.
    let (mut d, _) = Client::connect(addr).await;
    d.cmd("EHLO client.test").await;
    d.cmd("MAIL FROM:<a@x.test>").await;
    d.cmd("RCPT TO:<b@y.test>").await;
    d.cmd("DATA").await;
    d.send(b"Subject: whole\r\n\r\nok\r\n.\r\n").await;
    assert!(d.reply().await.starts_with("250"));
    let messages = recorder.messages.lock().unwrap().clone();
    assert_eq!(messages.len(), 1);
    assert!(String::from_utf8_lossy(&messages[0].1).contains("whole"));
}

#[tokio::test]
async fn oversized_messages_are_refused_after_the_data() {
    let mut settings = ServerSettings::new("mx.test");
    settings.max_message_size = 100;
    let (addr, recorder) = start(settings).await;
    let (mut c, _) = Client::connect(addr).await;
    c.cmd("EHLO client.test").await;
    c.cmd("MAIL FROM:<a@x.test>").await;
    c.cmd("RCPT TO:<b@y.test>").await;
    c.cmd("DATA").await;
    c.send(format!("Subject: big\r\n\r\n{}\r\n.\r\n", "x".repeat(500)).as_bytes())
        .await;
    assert!(c.reply().await.starts_with("552 5.3.4"));
    assert!(recorder.messages.lock().unwrap().is_empty());
    // The session is still in step.
    assert!(c.cmd("NOOP").await.starts_with("250"));
}

#[tokio::test]
async fn auth_is_required_and_refused_in_plain_text_off_loopback_rules() {
    let mut settings = ServerSettings::new("mx.test");
    settings.require_auth = true;
    settings.plaintext_auth_on_loopback = false;
    let (addr, recorder) = start(settings).await;
    let (mut c, _) = Client::connect(addr).await;
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(!ehlo.contains("AUTH"), "not offered before TLS: {ehlo}");
    assert!(
        c.cmd("AUTH PLAIN AG1lAHJpZ2h0")
            .await
            .starts_with("538 5.7.11")
    );
    assert!(c.cmd("MAIL FROM:<a@x.test>").await.starts_with("530"));
    assert_eq!(
        recorder.auths.load(Ordering::SeqCst),
        0,
        "credentials never checked in plain text"
    );

    let mut loopback = ServerSettings::new("mx.test");
    loopback.require_auth = true;
    let (addr, recorder) = start(loopback).await;
    let (mut c, _) = Client::connect(addr).await;
    assert!(c.cmd("EHLO client.test").await.contains("AUTH PLAIN LOGIN"));
    // "\0me\0wrong" and "\0me\0right"
    assert!(c.cmd("AUTH PLAIN AG1lAHdyb25n").await.starts_with("535"));
    assert!(c.cmd("AUTH PLAIN AG1lAHJpZ2h0").await.starts_with("235"));
    assert!(
        c.cmd("AUTH PLAIN AG1lAHJpZ2h0").await.starts_with("503"),
        "once is enough"
    );
    assert!(c.cmd("MAIL FROM:<a@x.test>").await.starts_with("250"));
    assert_eq!(recorder.auths.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_client_that_keeps_erring_is_disconnected() {
    let (addr, _) = start(ServerSettings::new("mx.test")).await;
    let (mut c, _) = Client::connect(addr).await;
    for _ in 0..10 {
        assert!(c.cmd("BOGUS").await.starts_with("500"));
    }
    assert!(c.reply().await.starts_with("421"), "after the tenth error");
    assert_eq!(c.reply().await, "", "then the connection is closed");
}

/// A client connected from `source` (any 127/8 address is this host's).
async fn connect_from(source: &str, addr: std::net::SocketAddr) -> (Client, String) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let (r, w) = tokio::io::split(socket.connect(addr).await.unwrap());
    let mut client = Client {
        reader: BufReader::new(r),
        writer: w,
    };
    let greeting = client.reply().await;
    (client, greeting)
}

fn limited(total: usize, per_ip: usize) -> ServerSettings {
    let mut settings = ServerSettings::new("mx.test");
    settings.limits = ConnectionLimits {
        max_connections: total,
        max_per_ip: per_ip,
    };
    settings
}

#[tokio::test]
async fn connections_over_the_per_address_limit_are_refused_with_421() {
    let settings = limited(10, 2);
    let stats = settings.stats.clone();
    let (addr, _) = start(settings).await;
    let (_a, g) = connect_from("127.0.0.1", addr).await;
    assert!(g.starts_with("220"), "{g}");
    let (_b, g) = connect_from("127.0.0.1", addr).await;
    assert!(g.starts_with("220"), "{g}");
    let (mut refused, g) = connect_from("127.0.0.1", addr).await;
    assert_eq!(g, "421 4.7.0 too many connections from your address\r\n");
    assert_eq!(refused.reply().await, "", "closed after the 421");
    // Another address is not affected.
    let (_c, g) = connect_from("127.0.0.2", addr).await;
    assert!(g.starts_with("220"), "{g}");
    assert_eq!(stats.refused_per_ip.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn connections_over_the_listener_limit_are_refused_until_one_closes() {
    let (addr, _) = start(limited(2, 10)).await;
    let (a, g) = connect_from("127.0.0.1", addr).await;
    assert!(g.starts_with("220"), "{g}");
    let (_b, g) = connect_from("127.0.0.2", addr).await;
    assert!(g.starts_with("220"), "{g}");
    let (_, g) = connect_from("127.0.0.3", addr).await;
    assert_eq!(g, "421 4.7.0 too many connections\r\n");
    // The place is free once the server has seen the first client go.
    drop(a);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (mut c, g) = connect_from("127.0.0.3", addr).await;
        if g.starts_with("220") {
            assert!(c.cmd("EHLO c.test").await.starts_with("250"));
            break;
        }
        assert_eq!(g, "421 4.7.0 too many connections\r\n");
        assert!(tokio::time::Instant::now() < deadline, "no place freed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Paused time: timeouts are read off tokio's clock, which only moves when
/// every task waits, so these assertions do not depend on the machine's
/// speed.
#[tokio::test(start_paused = true)]
async fn a_client_that_never_authenticates_is_closed_after_the_first_timeout_noop_or_not() {
    let mut settings = ServerSettings::new("mx.test");
    settings.require_auth = true;
    settings.first_timeout = Duration::from_secs(30);
    let (addr, _) = start(settings).await;
    let start = tokio::time::Instant::now();
    let (mut c, _) = Client::connect(addr).await;
    assert!(c.cmd("EHLO c.test").await.starts_with("250"));
    tokio::time::sleep(Duration::from_secs(20)).await;
    // Commands are still answered, but do not extend the deadline.
    assert!(c.cmd("NOOP").await.starts_with("250"));
    let bye = c.reply().await;
    assert_eq!(bye, "421 4.4.2 mx.test timeout, closing connection\r\n");
    assert_eq!(c.reply().await, "", "closed");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(40),
        "closed at {waited:?} of tokio's clock, not 30 s after connecting"
    );
}

#[tokio::test(start_paused = true)]
async fn after_auth_the_command_timeout_applies_not_the_first_one() {
    let mut settings = ServerSettings::new("mx.test");
    settings.require_auth = true;
    settings.first_timeout = Duration::from_secs(30);
    settings.command_timeout = Duration::from_secs(300);
    let (addr, _) = start(settings).await;
    let (mut c, _) = Client::connect(addr).await;
    assert!(c.cmd("EHLO c.test").await.starts_with("250"));
    // PLAIN: "\0user\0right"
    assert!(
        c.cmd("AUTH PLAIN AHVzZXIAcmlnaHQ=")
            .await
            .starts_with("235"),
    );
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(c.cmd("NOOP").await.starts_with("250"), "still open");
    tokio::time::sleep(Duration::from_secs(301)).await;
    assert!(c.reply().await.starts_with("421 4.4.2"), "command timeout");
}

#[tokio::test(start_paused = true)]
async fn on_the_mx_an_accepted_mail_ends_the_first_timeout() {
    let mut settings = ServerSettings::new("mx.test");
    settings.first_timeout = Duration::from_secs(30);
    let (addr, _) = start(settings).await;
    let (mut c, _) = Client::connect(addr).await;
    assert!(c.cmd("EHLO c.test").await.starts_with("250"));
    assert!(c.cmd("MAIL FROM:<>").await.starts_with("250"));
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(c.cmd("RCPT TO:<b@y.test>").await.starts_with("250"));

    let start = tokio::time::Instant::now();
    let (mut idle, _) = Client::connect(addr).await;
    assert!(idle.cmd("EHLO c.test").await.starts_with("250"));
    assert!(
        idle.reply().await.starts_with("421 4.4.2"),
        "no MAIL in time"
    );
    let waited = start.elapsed();
    assert!(
        waited < Duration::from_secs(40),
        "closed at {waited:?} of tokio's clock, not 30 s after connecting"
    );
}
