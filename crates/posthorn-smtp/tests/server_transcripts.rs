//! Server sessions over in-memory I/O (`tokio::io::duplex`), table-driven:
//! what a client writes (a whole pipelined group in one write where it says
//! so) against the replies the server must give, in order, and what the
//! handler was handed. STARTTLS runs the real rustls handshake over the
//! pipe. The loopback tests in `server.rs` keep what needs a socket
//! (connection limits, `serve`).
//!
//! Time is paused: nothing here waits on a clock, so a session that stops
//! answering ends by its own timeout (a `421 4.4.2` that fails the case)
//! the moment both ends wait, instead of hanging the test.

use posthorn_smtp::EnhancedCode;
use posthorn_smtp::server::{
    Handler, ReceivedEnvelope, ServerReply, ServerSettings, Session, serve_stream,
};
use posthorn_smtp::tls::ServerTlsConfig;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What one message looked like to the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Delivered {
    from: String,
    to: Vec<String>,
    message: Vec<u8>,
    identity: Option<String>,
    tls: bool,
}

/// A handler that refuses `nobody@…`, takes the password `right`, and
/// writes down everything it was asked.
#[derive(Default)]
struct Recorder {
    delivered: Mutex<Vec<Delivered>>,
    auths: Mutex<Vec<(String, String)>>,
}

#[async_trait::async_trait]
impl Handler for Recorder {
    async fn auth(&self, username: &str, password: &str) -> Result<String, ServerReply> {
        self.auths
            .lock()
            .unwrap()
            .push((username.into(), password.into()));
        if password == "right" {
            Ok(username.into())
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
        session: &Session,
        envelope: &ReceivedEnvelope,
        message: Vec<u8>,
    ) -> ServerReply {
        self.delivered.lock().unwrap().push(Delivered {
            from: envelope.mail_from.clone(),
            to: envelope.recipients.clone(),
            message,
            identity: session.identity.clone(),
            tls: session.tls,
        });
        ServerReply::new(250, EnhancedCode::of(2, 0, 0), "queued")
    }
}

/// One expected reply.
#[derive(Debug)]
enum R {
    /// The whole reply starts with this (code, enhanced code, text).
    S(&'static str),
    /// A 250 EHLO reply offering the extensions every session offers
    /// (PIPELINING, SIZE, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES) and
    /// exactly these others, in this order.
    Ehlo(&'static [&'static str]),
}
use R::{Ehlo, S};

impl R {
    fn matches(&self, reply: &str) -> bool {
        match self {
            S(prefix) => reply.starts_with(prefix),
            Ehlo(extra) => {
                let lines: Vec<&str> = reply.lines().collect();
                let always = ["PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"];
                let others: Vec<&str> = lines
                    .iter()
                    .skip(1)
                    .map(|l| &l[4..])
                    .filter(|l| !always.contains(l) && !l.starts_with("SIZE "))
                    .collect();
                reply.starts_with("250-mx.test")
                    && lines.iter().all(|l| l.starts_with("250"))
                    && lines.len() == always.len() + 2 + extra.len()
                    && others == *extra
            }
        }
    }
}

/// How the session ends after the last step.
#[derive(Debug, PartialEq, Eq)]
enum Closes {
    /// When the client closes its end: the server has nothing more to say.
    No,
    /// The server closes by itself (QUIT, too many errors): whatever else
    /// was sent gets no reply.
    Yes,
    /// The server closes by itself after a TLS alert (a failed handshake).
    WithTlsAlert,
}

enum Step {
    /// Bytes written at once (several commands in one write are
    /// pipelined), then these replies read, in order.
    Send(Vec<u8>, &'static [R]),
    /// The client side of the TLS handshake, as after `220` to STARTTLS.
    Handshake,
}

fn send(bytes: impl Into<Vec<u8>>, replies: &'static [R]) -> Step {
    Step::Send(bytes.into(), replies)
}

struct Case {
    name: &'static str,
    settings: fn(&mut ServerSettings),
    peer: SocketAddr,
    steps: Vec<Step>,
    closes: Closes,
    delivered: Vec<Delivered>,
    /// The credentials the handler was asked to check.
    auths: &'static [(&'static str, &'static str)],
}

/// A client on another host; AUTH without TLS is never allowed to it.
const REMOTE: &str = "192.0.2.7:40000";
const LOOPBACK: &str = "127.0.0.1:40000";

fn case(name: &'static str, steps: Vec<Step>) -> Case {
    Case {
        name,
        settings: |_| {},
        peer: REMOTE.parse().unwrap(),
        steps,
        closes: Closes::No,
        delivered: Vec::new(),
        auths: &[],
    }
}

fn msg(from: &str, to: &[&str], message: &[u8]) -> Delivered {
    Delivered {
        from: from.into(),
        to: to.iter().map(|t| t.to_string()).collect(),
        message: message.to_vec(),
        identity: None,
        tls: false,
    }
}

fn tls_config() -> ServerTlsConfig {
    static CONFIG: OnceLock<ServerTlsConfig> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            ServerTlsConfig::self_signed(&["mx.test".into()])
                .expect("a self-signed certificate")
                .0
        })
        .clone()
}

fn small(s: &mut ServerSettings) {
    s.max_message_size = 100;
    s.max_recipients = 2;
}

fn with_tls(s: &mut ServerSettings) {
    s.tls = Some(tls_config());
}

/// Submission: AUTH required, STARTTLS offered.
fn submission(s: &mut ServerSettings) {
    s.require_auth = true;
    s.tls = Some(tls_config());
}

/// AUTH required and no TLS at all (loopback-only submission).
fn auth_without_tls(s: &mut ServerSettings) {
    s.require_auth = true;
}

const EHLO: &[u8] = b"EHLO client.test\r\n";
const TRANSACTION: &[u8] = b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n";
const TRANSACTION_REPLIES: &[R] = &[S("250 2.1.0"), S("250 2.1.5"), S("354 ")];
// PLAIN credentials: "\0me\0right" and "\0me\0wrong".
const AUTH_RIGHT: &[u8] = b"AUTH PLAIN AG1lAHJpZ2h0\r\n";
const AUTH_WRONG: &[u8] = b"AUTH PLAIN AG1lAHdyb25n\r\n";

/// A message whose data is `data` (written after 354, with its end), then
/// a NOOP that must be answered on its own: proof that the data ended
/// exactly where it should and the session is in step.
fn data_case(name: &'static str, data: &[u8], message: &[u8]) -> Case {
    let mut written = data.to_vec();
    written.extend_from_slice(b"NOOP\r\n");
    Case {
        delivered: vec![msg("a@x.test", &["b@y.test"], message)],
        ..case(
            name,
            vec![
                send(EHLO, &[Ehlo(&[])]),
                send(TRANSACTION, TRANSACTION_REPLIES),
                send(written, &[S("250 2.0.0 queued"), S("250 2.0.0 ok")]),
            ],
        )
    }
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            delivered: vec![msg(
                "a@x.test",
                &["b@y.test", "c@y.test"],
                b"Subject: hi\r\n\r\nhello\r\n",
            )],
            closes: Closes::Yes,
            ..case(
                "a pipelined transaction: one write, replies in order, then the message and QUIT in one write",
                vec![
                    send(
                        b"EHLO client.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<nobody@y.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n",
                        &[
                            Ehlo(&[]),
                            S("250 2.1.0"),
                            S("250 2.1.5"),
                            S("550 5.1.1 no such user"),
                            S("250 2.1.5"),
                            S("354 "),
                        ],
                    ),
                    send(
                        b"Subject: hi\r\n\r\nhello\r\n.\r\nQUIT\r\n",
                        &[S("250 2.0.0 queued"), S("221 2.0.0")],
                    ),
                ],
            )
        },
        Case {
            delivered: vec![msg("", &["b@y.test"], b"x\r\n")],
            ..case(
                "HELO instead of EHLO; the null sender; RSET forgets the envelope",
                vec![
                    send(b"HELO client.test\r\n", &[S("250 mx.test\r\n")]),
                    send(
                        b"MAIL FROM:<a@x.test>\r\nRCPT TO:<c@y.test>\r\nRSET\r\nRCPT TO:<c@y.test>\r\n",
                        &[S("250 2.1.0"), S("250 2.1.5"), S("250 2.0.0"), S("503 5.5.1")],
                    ),
                    send(
                        b"MAIL FROM:<>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nx\r\n.\r\n",
                        &[S("250 2.1.0"), S("250 2.1.5"), S("354 "), S("250 2.0.0")],
                    ),
                ],
            )
        },
        // RFC 5321 §4.1.1.4: the CRLF that ends DATA is the one before the
        // first line, so a lone dot right after 354 ends an empty message.
        data_case("a lone dot right after 354 is an empty message", b".\r\n", b""),
        // RFC 5321 §4.5.2: a leading dot is removed, the first line's too.
        data_case(
            "dot-stuffing is removed",
            b"..first\r\nmiddle\r\n...two\r\n.\r\n",
            b".first\r\nmiddle\r\n..two\r\n",
        ),
        // SMTP smuggling: only CRLF.CRLF ends the data. Each of these is
        // an end of data to some other server, and would let a message
        // carry a second one past a relay that does not see it so.
        data_case(
            "a bare-LF dot line does not end the message",
            b"one\n.\ntwo\r\n.\r\n",
            b"one\n.\ntwo\r\n",
        ),
        data_case(
            "LF dot CRLF does not end the message",
            b"one\n.\r\ntwo\r\n.\r\n",
            b"one\n.\r\ntwo\r\n",
        ),
        data_case(
            "CRLF dot LF does not end the message (the dot is stuffing)",
            b"one\r\n.\ntwo\r\n.\r\n",
            b"one\r\n\ntwo\r\n",
        ),
        data_case(
            "CRLF dot CR CRLF does not end the message",
            b"one\r\n.\r\r\ntwo\r\n.\r\n",
            b"one\r\n\r\r\ntwo\r\n",
        ),
        data_case(
            "bare-CR dots do not end the message",
            b"one\r.\rtwo\r\n.\r\n",
            b"one\r.\rtwo\r\n",
        ),
        data_case(
            "a message whose last line ends in bare CR ends at CRLF.CRLF",
            b"one\r\r\n.\r\n",
            b"one\r\r\n",
        ),
        case(
            "an over-long command line is refused whole, and the next is read",
            vec![send(
                format!("NOOP {}\r\nNOOP\r\n", "x".repeat(10_000)),
                &[S("500 5.5.2 line too long"), S("250 2.0.0")],
            )],
        ),
        Case {
            settings: small,
            delivered: vec![msg("a@x.test", &["b@y.test"], b"small\r\n")],
            ..case(
                "a message over the size limit is refused after its data, and nothing is handed on",
                vec![
                    send(EHLO, &[Ehlo(&[])]),
                    send(b"MAIL FROM:<a@x.test> SIZE=5000\r\n", &[S("552 5.3.4")]),
                    send(TRANSACTION, TRANSACTION_REPLIES),
                    send(
                        format!("{}\r\n.\r\nNOOP\r\n", "x".repeat(500)),
                        &[S("552 5.3.4"), S("250 2.0.0")],
                    ),
                    send(TRANSACTION, TRANSACTION_REPLIES),
                    send(b"small\r\n.\r\n", &[S("250 2.0.0")]),
                ],
            )
        },
        Case {
            settings: small,
            ..case(
                "recipients over the limit get 452",
                vec![
                    send(EHLO, &[Ehlo(&[])]),
                    send(
                        b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\nRCPT TO:<d@y.test>\r\n",
                        &[S("250 2.1.0"), S("250 2.1.5"), S("250 2.1.5"), S("452 4.5.3")],
                    ),
                ],
            )
        },
        case(
            "commands out of sequence are refused",
            vec![
                send(b"MAIL FROM:<a@x.test>\r\n", &[S("503 5.5.1 say EHLO first")]),
                send(EHLO, &[Ehlo(&[])]),
                send(b"RCPT TO:<b@y.test>\r\n", &[S("503 5.5.1 need MAIL")]),
                send(b"DATA\r\n", &[S("554 5.5.1 no valid recipients")]),
                send(
                    b"MAIL FROM:<a@x.test>\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<nobody@y.test>\r\nDATA\r\n",
                    &[
                        S("250 2.1.0"),
                        S("503 5.5.1 nested MAIL"),
                        S("550 5.1.1"),
                        S("554 5.5.1 no valid recipients"),
                    ],
                ),
                send(
                    b"FROB\r\nMAIL\r\nBDAT 10 LAST\r\n",
                    &[S("500 5.5.1"), S("501 5.5.4"), S("502 5.5.1")],
                ),
            ],
        ),
        Case {
            closes: Closes::Yes,
            ..case(
                "a client that errs ten times is told 421 and closed",
                vec![send(
                    "FROB\r\n".repeat(11),
                    &[
                        S("500"), S("500"), S("500"), S("500"), S("500"),
                        S("500"), S("500"), S("500"), S("500"), S("500"),
                        S("421 4.7.0 too many errors"),
                    ],
                )],
            )
        },
        Case {
            closes: Closes::Yes,
            ..case(
                "QUIT ends the session; a pipelined command after it gets no reply",
                vec![send(b"QUIT\r\nNOOP\r\n", &[S("221 2.0.0")])],
            )
        },
        case(
            "STARTTLS and AUTH where neither is offered",
            vec![
                send(EHLO, &[Ehlo(&[])]),
                send(b"STARTTLS\r\n", &[S("502 5.5.1 STARTTLS not available")]),
                send(AUTH_RIGHT, &[S("502 5.5.1 AUTH not offered")]),
            ],
        ),
        Case {
            settings: submission,
            ..case(
                "AUTH before STARTTLS is refused off loopback, and not offered",
                vec![
                    send(EHLO, &[Ehlo(&["STARTTLS"])]),
                    send(AUTH_RIGHT, &[S("538 5.7.11")]),
                    send(b"AUTH LOGIN\r\n", &[S("538 5.7.11")]),
                    send(b"MAIL FROM:<a@x.test>\r\n", &[S("530 5.7.0")]),
                ],
            )
        },
        Case {
            settings: auth_without_tls,
            ..case(
                "where AUTH is required and TLS is not configured, a remote client cannot authenticate",
                vec![
                    send(EHLO, &[Ehlo(&[])]),
                    send(AUTH_RIGHT, &[S("538 5.7.11")]),
                    send(b"MAIL FROM:<a@x.test>\r\n", &[S("530 5.7.0")]),
                ],
            )
        },
        Case {
            settings: auth_without_tls,
            peer: LOOPBACK.parse().unwrap(),
            auths: &[("me", "wrong"), ("me", "right")],
            delivered: vec![Delivered {
                identity: Some("me".into()),
                ..msg("a@x.test", &["b@y.test"], b"x\r\n")
            }],
            ..case(
                "AUTH without TLS on loopback, as configured",
                vec![
                    send(EHLO, &[Ehlo(&["AUTH PLAIN LOGIN"])]),
                    send(AUTH_WRONG, &[S("535 5.7.8")]),
                    send(AUTH_RIGHT, &[S("235 2.7.0")]),
                    send(AUTH_RIGHT, &[S("503 5.5.1 already authenticated")]),
                    send(TRANSACTION, TRANSACTION_REPLIES),
                    send(b"x\r\n.\r\n", &[S("250 2.0.0")]),
                ],
            )
        },
        Case {
            settings: submission,
            auths: &[("me", "wrong"), ("me", "right")],
            delivered: vec![Delivered {
                identity: Some("me".into()),
                tls: true,
                ..msg("a@x.test", &["b@y.test"], b"x\r\n")
            }],
            ..case(
                "AUTH after STARTTLS: PLAIN refused then taken, AUTH offered only once encrypted",
                vec![
                    send(EHLO, &[Ehlo(&["STARTTLS"])]),
                    send(b"STARTTLS\r\n", &[S("220 2.0.0")]),
                    Step::Handshake,
                    send(EHLO, &[Ehlo(&["AUTH PLAIN LOGIN"])]),
                    send(b"STARTTLS\r\n", &[S("502 5.5.1")]),
                    send(AUTH_WRONG, &[S("535 5.7.8")]),
                    send(AUTH_RIGHT, &[S("235 2.7.0")]),
                    send(TRANSACTION, TRANSACTION_REPLIES),
                    send(b"x\r\n.\r\n", &[S("250 2.0.0")]),
                ],
            )
        },
        Case {
            settings: submission,
            auths: &[("me", "right")],
            ..case(
                "AUTH LOGIN after STARTTLS, step by step",
                vec![
                    send(EHLO, &[Ehlo(&["STARTTLS"])]),
                    send(b"STARTTLS\r\n", &[S("220 2.0.0")]),
                    Step::Handshake,
                    send(EHLO, &[Ehlo(&["AUTH PLAIN LOGIN"])]),
                    send(b"AUTH LOGIN\r\n", &[S("334 VXNlcm5hbWU6")]),
                    send(b"bWU=\r\n", &[S("334 UGFzc3dvcmQ6")]),
                    send(b"cmlnaHQ=\r\n", &[S("235 2.7.0")]),
                    send(b"MAIL FROM:<a@x.test>\r\n", &[S("250 2.1.0")]),
                ],
            )
        },
        // RFC 3207 §4.2 and CVE-2011-0411: commands pipelined after
        // STARTTLS were sent in plain text (anyone on the path could have
        // put them there) and must not run as if sent over TLS; and
        // everything learnt before TLS (EHLO, AUTH) is forgotten.
        Case {
            settings: |s| {
                submission(s);
                s.require_auth = false;
            },
            ..case(
                "commands pipelined after STARTTLS are discarded, and EHLO is needed again",
                vec![
                    send(EHLO, &[Ehlo(&["STARTTLS"])]),
                    send(
                        b"STARTTLS\r\nEHLO evil.test\r\nMAIL FROM:<evil@x.test>\r\n",
                        &[S("220 2.0.0")],
                    ),
                    Step::Handshake,
                    send(b"RCPT TO:<b@y.test>\r\n", &[S("503 5.5.1 need MAIL")]),
                    send(b"MAIL FROM:<a@x.test>\r\n", &[S("503 5.5.1 say EHLO first")]),
                    send(EHLO, &[Ehlo(&[])]),
                    send(b"MAIL FROM:<a@x.test>\r\n", &[S("250 2.1.0")]),
                ],
            )
        },
        Case {
            settings: |s| {
                submission(s);
                s.plaintext_auth_on_loopback = true;
            },
            peer: LOOPBACK.parse().unwrap(),
            auths: &[("me", "right")],
            ..case(
                "an identity from AUTH before STARTTLS is forgotten by it",
                vec![
                    send(EHLO, &[Ehlo(&["STARTTLS", "AUTH PLAIN LOGIN"])]),
                    send(AUTH_RIGHT, &[S("235 2.7.0")]),
                    send(b"STARTTLS\r\n", &[S("220 2.0.0")]),
                    Step::Handshake,
                    send(EHLO, &[Ehlo(&["AUTH PLAIN LOGIN"])]),
                    send(b"MAIL FROM:<a@x.test>\r\n", &[S("530 5.7.0")]),
                ],
            )
        },
        Case {
            settings: with_tls,
            closes: Closes::WithTlsAlert,
            ..case(
                "plain text where the TLS handshake should be ends the session",
                vec![
                    send(EHLO, &[Ehlo(&["STARTTLS"])]),
                    send(b"STARTTLS\r\n", &[S("220 2.0.0")]),
                    send(b"MAIL FROM:<a@x.test>\r\n", &[]),
                ],
            )
        },
    ]
}

/// The client's end of the pipe, plain or encrypted.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Peer {
    stream: Box<dyn Io>,
    /// Read and not yet taken as a reply.
    buf: Vec<u8>,
}

impl Peer {
    /// One whole reply (every line of a multi-line one), or `None` once
    /// the server has closed.
    async fn reply(&mut self) -> Option<String> {
        let mut end = 0;
        loop {
            while let Some(at) = self.buf[end..].iter().position(|&b| b == b'\n') {
                let line = &self.buf[end..end + at + 1];
                end += at + 1;
                if line.get(3) != Some(&b'-') {
                    let reply: Vec<u8> = self.buf.drain(..end).collect();
                    return Some(String::from_utf8_lossy(&reply).into_owned());
                }
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk).await {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                // A TLS peer that closes without close_notify.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
                Err(e) => panic!("reading a reply: {e}"),
            }
        }
    }

    async fn rest(&mut self) -> String {
        let mut rest = String::new();
        while let Some(reply) = self.reply().await {
            rest.push_str(&reply);
        }
        rest.push_str(&String::from_utf8_lossy(&std::mem::take(&mut self.buf)));
        rest
    }

    async fn handshake(self) -> Peer {
        assert!(
            self.buf.is_empty(),
            "nothing after 220 before the handshake"
        );
        let connector =
            tokio_rustls::TlsConnector::from(posthorn_smtp::tls::opportunistic_config());
        let name = rustls::pki_types::ServerName::try_from("mx.test").unwrap();
        let tls = connector
            .connect(name, self.stream)
            .await
            .expect("TLS handshake over the pipe");
        Peer {
            stream: Box::new(tls),
            buf: Vec::new(),
        }
    }
}

async fn run(case: Case) {
    let name = case.name;
    let mut settings = ServerSettings::new("mx.test");
    (case.settings)(&mut settings);
    let handler = Arc::new(Recorder::default());
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let session = tokio::spawn(serve_stream(
        theirs,
        Some(case.peer),
        Arc::new(settings),
        handler.clone(),
    ));
    let mut peer = Peer {
        stream: Box::new(ours),
        buf: Vec::new(),
    };
    let greeting = peer.reply().await;
    assert_eq!(
        greeting.as_deref(),
        Some("220 mx.test ESMTP Posthorn\r\n"),
        "{name}"
    );
    for (i, step) in case.steps.into_iter().enumerate() {
        match step {
            Step::Handshake => peer = peer.handshake().await,
            Step::Send(bytes, expected) => {
                peer.stream.write_all(&bytes).await.unwrap();
                for want in expected {
                    let got = peer.reply().await;
                    assert!(
                        got.as_deref().is_some_and(|r| want.matches(r)),
                        "{name}, step {i}: expected {want:?}, got {got:?}"
                    );
                }
            }
        }
    }
    match case.closes {
        Closes::No => {}
        Closes::Yes => assert_eq!(peer.rest().await, "", "{name}: closed, nothing more said"),
        Closes::WithTlsAlert => {
            // An alert record: content type 21, version 3.x.
            let rest = peer.rest().await;
            assert!(rest.starts_with("\u{15}\u{3}"), "{name}: {rest:?}");
        }
    }
    // Our end of the pipe closes: the session ends, and must have had
    // nothing more to say.
    let _ = peer.stream.shutdown().await;
    assert_eq!(
        peer.rest().await,
        "",
        "{name}: no reply beyond those expected"
    );
    session.await.unwrap();
    let delivered = handler.delivered.lock().unwrap().clone();
    assert_eq!(delivered, case.delivered, "{name}: messages handed on");
    let auths = handler.auths.lock().unwrap().clone();
    let want: Vec<(String, String)> = case
        .auths
        .iter()
        .map(|(u, p)| (u.to_string(), p.to_string()))
        .collect();
    assert_eq!(auths, want, "{name}: credentials checked");
}

#[tokio::test(start_paused = true)]
async fn server_transcripts() {
    let cases = cases();
    assert!(cases.len() > 20);
    // Every case runs, each in a task of its own, so that one failure
    // (printed as it happens) does not hide the others.
    let mut failed = Vec::new();
    for case in cases {
        let name = case.name;
        if tokio::spawn(run(case)).await.is_err() {
            failed.push(name);
        }
    }
    assert!(failed.is_empty(), "failed: {failed:#?}");
}
