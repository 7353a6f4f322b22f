//! The delivery client against a scripted server over in-memory I/O
//! (`tokio::io::duplex`), table-driven: what the server says, turn by turn,
//! against the result per recipient (or the session's error and where it
//! happened) and what the client wrote. The real servers are in
//! `peers.rs`.
//!
//! What the client wrote is kept read by read: a client writes a pipelined
//! group in one write, and the scripted server reads everything written
//! before it answers, so a group arrives as one read and commands sent one
//! by one as one read each.
//!
//! Time is paused: nothing waits on a clock, so a client that waits for a
//! reply the script never gives times out at once instead of hanging.

use posthorn_smtp::EnhancedCode;
use posthorn_smtp::server::{
    Handler, ReceivedEnvelope, ServerReply, ServerSettings, Session, serve_stream,
};
use posthorn_smtp::tls::{MaybeTls, ServerTlsConfig};
use posthorn_smtp::{ClientError, Envelope, Phase, SmtpClient, Timeouts, TransactionResult};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// One turn of the scripted server.
#[derive(Debug, Clone, Copy)]
enum Turn {
    /// Written as it is: a reply, part of one, garbage or nothing.
    Say(&'static str),
    /// Closes the connection without a word.
    Close,
}
use Turn::{Close, Say};

/// The scripted server: says the first turn at once (the greeting), then
/// answers each command line with the next turn; after a `354` to DATA,
/// the whole message up to CRLF.CRLF is one command. When the script runs
/// out, it closes. Returns what it read, one entry per read.
async fn scripted_server(mut io: DuplexStream, script: &[Turn]) -> Vec<String> {
    let mut turns = script.iter();
    let mut reads = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut in_data = false;
    match turns.next() {
        Some(Say(greeting)) => io.write_all(greeting.as_bytes()).await.unwrap(),
        Some(Close) | None => return reads,
    }
    loop {
        // One command from what has been read: a line, or the message.
        let command_len = if in_data {
            // The CRLF that ended DATA counts as the one before the data.
            let seen = [b"\r\n".as_slice(), &pending].concat();
            seen.windows(5)
                .position(|w| w == b"\r\n.\r\n")
                .map(|at| at + 5 - 2)
        } else {
            pending.iter().position(|&b| b == b'\n').map(|at| at + 1)
        };
        let Some(len) = command_len else {
            let mut chunk = [0u8; 64 * 1024];
            let n = io.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                return reads;
            }
            reads.push(String::from_utf8_lossy(&chunk[..n]).into_owned());
            pending.extend_from_slice(&chunk[..n]);
            continue;
        };
        let command: Vec<u8> = pending.drain(..len).collect();
        let Some(Say(answer)) = turns.next() else {
            return reads;
        };
        // Closed by the client? Then the answer is lost, as on a socket.
        if io.write_all(answer.as_bytes()).await.is_err() {
            return reads;
        }
        in_data = !in_data && command == b"DATA\r\n" && answer.starts_with("354");
    }
}

/// What the client made of the session.
#[derive(Debug)]
enum Outcome {
    /// Per recipient, in order: the reply as one line and the phase that
    /// decided it.
    Results(&'static [(&'static str, Phase)]),
    /// The session failed here; the reply (made up by the client where the
    /// server gave none) starts with this. A 4xx means "try again later".
    Failed(Phase, &'static str),
}
use Outcome::{Failed, Results};

struct Case {
    name: &'static str,
    script: &'static [Turn],
    recipients: &'static [&'static str],
    message: &'static [u8],
    outcome: Outcome,
    /// What the server read, read by read.
    wrote: &'static [&'static str],
}

const GREETING: Turn = Say("220 mx.test ESMTP\r\n");
const EHLO_PIPELINING: Turn = Say("250-mx.test hello\r\n250-PIPELINING\r\n250 8BITMIME\r\n");
const EHLO_PLAIN: Turn = Say("250-mx.test hello\r\n250 8BITMIME\r\n");
const MESSAGE: &[u8] = b"Subject: hi\r\n\r\nhello\r\n";
const EHLO: &str = "EHLO client.test\r\n";
const MAIL: &str = "MAIL FROM:<bounces@sender.test>\r\n";
const BODY: &str = "Subject: hi\r\n\r\nhello\r\n.\r\n";

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "pipelined, every recipient accepted",
            script: &[
                GREETING,
                EHLO_PIPELINING,
                Say("250 2.1.0 ok\r\n"),
                Say("250 2.1.5 ok\r\n"),
                Say("250 2.1.5 ok\r\n"),
                Say("354 go on\r\n"),
                Say("250 2.0.0 queued as 1\r\n"),
            ],
            recipients: &["a@r.test", "b@r.test"],
            message: MESSAGE,
            outcome: Results(&[
                ("250 2.0.0 queued as 1", Phase::DataEnd),
                ("250 2.0.0 queued as 1", Phase::DataEnd),
            ]),
            wrote: &[
                EHLO,
                "MAIL FROM:<bounces@sender.test>\r\nRCPT TO:<a@r.test>\r\nRCPT TO:<b@r.test>\r\nDATA\r\n",
                BODY,
            ],
        },
        Case {
            name: "without PIPELINING, one command at a time",
            script: &[
                GREETING,
                EHLO_PLAIN,
                Say("250 2.1.0 ok\r\n"),
                Say("250 2.1.5 ok\r\n"),
                Say("250 2.1.5 ok\r\n"),
                Say("354 go on\r\n"),
                Say("250 2.0.0 queued\r\n"),
            ],
            recipients: &["a@r.test", "b@r.test"],
            message: MESSAGE,
            outcome: Results(&[
                ("250 2.0.0 queued", Phase::DataEnd),
                ("250 2.0.0 queued", Phase::DataEnd),
            ]),
            wrote: &[
                EHLO,
                MAIL,
                "RCPT TO:<a@r.test>\r\n",
                "RCPT TO:<b@r.test>\r\n",
                "DATA\r\n",
                BODY,
            ],
        },
        Case {
            name: "the body: line ends made CRLF, leading dots doubled, SIZE and BODY=8BITMIME said",
            script: &[
                GREETING,
                Say("250-mx.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 8BITMIME\r\n"),
                Say("250 ok\r\n"),
                Say("250 ok\r\n"),
                Say("354 go on\r\n"),
                Say("250 queued\r\n"),
            ],
            recipients: &["a@r.test"],
            message: ".first\n..second\r\nthird \u{e9}\n.\n".as_bytes(),
            outcome: Results(&[("250 queued", Phase::DataEnd)]),
            wrote: &[
                EHLO,
                "MAIL FROM:<bounces@sender.test> SIZE=31 BODY=8BITMIME\r\nRCPT TO:<a@r.test>\r\nDATA\r\n",
                "..first\r\n...second\r\nthird \u{e9}\r\n..\r\n.\r\n",
            ],
        },
        Case {
            name: "one recipient refused, the others delivered",
            script: &[
                GREETING,
                EHLO_PIPELINING,
                Say("250 2.1.0 ok\r\n"),
                Say("250 2.1.5 ok\r\n"),
                Say("550 5.1.1 no such user\r\n"),
                Say("250 2.1.5 ok\r\n"),
                Say("354 go on\r\n"),
                Say("250 2.0.0 queued\r\n"),
            ],
            recipients: &["a@r.test", "nobody@r.test", "c@r.test"],
            message: MESSAGE,
            outcome: Results(&[
                ("250 2.0.0 queued", Phase::DataEnd),
                ("550 5.1.1 no such user", Phase::RcptTo),
                ("250 2.0.0 queued", Phase::DataEnd),
            ]),
            wrote: &[
                EHLO,
                "MAIL FROM:<bounces@sender.test>\r\nRCPT TO:<a@r.test>\r\nRCPT TO:<nobody@r.test>\r\nRCPT TO:<c@r.test>\r\nDATA\r\n",
                BODY,
            ],
        },
        Case {
            name: "452 to a recipient over the server's limit: that one later, the others delivered",
            script: &[
                GREETING,
                EHLO_PIPELINING,
                Say("250 2.1.0 ok\r\n"),
                Say("250 2.1.5 ok\r\n"),
                Say("250 2.1.5 ok\r\n"),
                Say("452 4.5.3 too many recipients\r\n"),
                Say("354 go on\r\n"),
                Say("250 2.0.0 queued\r\n"),
            ],
            recipients: &["a@r.test", "b@r.test", "c@r.test"],
            message: MESSAGE,
            outcome: Results(&[
                ("250 2.0.0 queued", Phase::DataEnd),
                ("250 2.0.0 queued", Phase::DataEnd),
                ("452 4.5.3 too many recipients", Phase::RcptTo),
            ]),
            wrote: &[
                EHLO,
                "MAIL FROM:<bounces@sender.test>\r\nRCPT TO:<a@r.test>\r\nRCPT TO:<b@r.test>\r\nRCPT TO:<c@r.test>\r\nDATA\r\n",
                BODY,
            ],
        },
        // RFC 5321 §3.8: 421 closes the session wherever it comes; no
        // recipient has a verdict and nothing more is sent.
        Case {
            name: "421 during pipelined RCPT: the session fails, transiently, and no body is sent",
            script: &[
                GREETING,
                EHLO_PIPELINING,
                Say("250 2.1.0 ok\r\n"),
                Say("250 2.1.5 ok\r\n"),
                Say("421 4.3.2 shutting down\r\n"),
                Close,
            ],
            recipients: &["a@r.test", "b@r.test", "c@r.test"],
            message: MESSAGE,
            outcome: Failed(Phase::RcptTo, "421 4.3.2 shutting down"),
            wrote: &[
                EHLO,
                "MAIL FROM:<bounces@sender.test>\r\nRCPT TO:<a@r.test>\r\nRCPT TO:<b@r.test>\r\nRCPT TO:<c@r.test>\r\nDATA\r\n",
            ],
        },
        Case {
            name: "421 to RCPT without pipelining: nothing more is sent",
            script: &[
                GREETING,
                EHLO_PLAIN,
                Say("250 2.1.0 ok\r\n"),
                Say("421 4.3.2 shutting down\r\n"),
            ],
            recipients: &["a@r.test", "b@r.test"],
            message: MESSAGE,
            outcome: Failed(Phase::RcptTo, "421 4.3.2"),
            wrote: &[EHLO, MAIL, "RCPT TO:<a@r.test>\r\n"],
        },
        // RFC 2920 §3.1: a pipelining client cannot assume DATA fails when
        // every RCPT did; if the server says 354 anyway, the client sends a
        // lone dot (an empty message) and no body.
        Case {
            name: "354 after every RCPT was refused: a lone dot, not the body",
            script: &[
                GREETING,
                EHLO_PIPELINING,
                Say("250 2.1.0 ok\r\n"),
                Say("550 5.1.1 no\r\n"),
                Say("550 5.1.1 no either\r\n"),
                Say("354 go on\r\n"),
                Say("554 5.5.1 no valid recipients\r\n"),
            ],
            recipients: &["a@r.test", "b@r.test"],
            message: MESSAGE,
            outcome: Results(&[
                ("550 5.1.1 no", Phase::RcptTo),
                ("550 5.1.1 no either", Phase::RcptTo),
            ]),
            wrote: &[
                EHLO,
                "MAIL FROM:<bounces@sender.test>\r\nRCPT TO:<a@r.test>\r\nRCPT TO:<b@r.test>\r\nDATA\r\n",
                ".\r\n",
            ],
        },
        Case {
            name: "every RCPT refused without pipelining: no DATA at all",
            script: &[
                GREETING,
                EHLO_PLAIN,
                Say("250 2.1.0 ok\r\n"),
                Say("550 5.1.1 no\r\n"),
            ],
            recipients: &["a@r.test"],
            message: MESSAGE,
            outcome: Results(&[("550 5.1.1 no", Phase::RcptTo)]),
            wrote: &[EHLO, MAIL, "RCPT TO:<a@r.test>\r\n"],
        },
        Case {
            name: "MAIL refused while pipelined (and DATA said 354 anyway): every recipient gets the MAIL reply",
            script: &[
                GREETING,
                EHLO_PIPELINING,
                Say("553 5.1.8 bad sender\r\n"),
                Say("503 5.5.1 no\r\n"),
                Say("354 go on\r\n"),
                Say("554 5.5.1 no valid recipients\r\n"),
            ],
            recipients: &["a@r.test"],
            message: MESSAGE,
            outcome: Results(&[("553 5.1.8 bad sender", Phase::MailFrom)]),
            wrote: &[
                EHLO,
                "MAIL FROM:<bounces@sender.test>\r\nRCPT TO:<a@r.test>\r\nDATA\r\n",
                ".\r\n",
            ],
        },
        Case {
            name: "DATA refused with recipients accepted: they get the DATA reply",
            script: &[
                GREETING,
                EHLO_PIPELINING,
                Say("250 ok\r\n"),
                Say("250 ok\r\n"),
                Say("554 5.7.1 not from you\r\n"),
            ],
            recipients: &["a@r.test"],
            message: MESSAGE,
            outcome: Results(&[("554 5.7.1 not from you", Phase::Data)]),
            wrote: &[
                EHLO,
                "MAIL FROM:<bounces@sender.test>\r\nRCPT TO:<a@r.test>\r\nDATA\r\n",
            ],
        },
        Case {
            name: "multi-line replies: EHLO, a refusal, and the final reply",
            script: &[
                GREETING,
                Say(
                    "250-mx.test hello\r\n250-SIZE 1000\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n",
                ),
                Say("250 2.1.0 ok\r\n"),
                Say("550-5.1.1 the account\r\n550-5.1.1 does not\r\n550 5.1.1 exist\r\n"),
                Say("250 2.1.5 ok\r\n"),
                Say("354 go on\r\n"),
                Say("250-2.0.0 queued\r\n250 2.0.0 as 1234\r\n"),
            ],
            recipients: &["nobody@r.test", "b@r.test"],
            message: MESSAGE,
            outcome: Results(&[
                ("550 5.1.1 the account does not exist", Phase::RcptTo),
                ("250 2.0.0 queued as 1234", Phase::DataEnd),
            ]),
            wrote: &[
                EHLO,
                "MAIL FROM:<bounces@sender.test> SIZE=22\r\nRCPT TO:<nobody@r.test>\r\nRCPT TO:<b@r.test>\r\nDATA\r\n",
                BODY,
            ],
        },
        Case {
            name: "EHLO refused: HELO, and then no extensions",
            script: &[
                GREETING,
                Say("502 5.5.1 EHLO not here\r\n"),
                Say("250 mx.test\r\n"),
                Say("250 ok\r\n"),
                Say("250 ok\r\n"),
                Say("354 go on\r\n"),
                Say("250 queued\r\n"),
            ],
            recipients: &["a@r.test"],
            message: MESSAGE,
            outcome: Results(&[("250 queued", Phase::DataEnd)]),
            wrote: &[
                EHLO,
                "HELO client.test\r\n",
                MAIL,
                "RCPT TO:<a@r.test>\r\n",
                "DATA\r\n",
                BODY,
            ],
        },
        Case {
            name: "a greeting that is not SMTP",
            script: &[Say("SSH-2.0-OpenSSH_9.6\r\n")],
            recipients: &["a@r.test"],
            message: MESSAGE,
            outcome: Failed(Phase::Greeting, "451 4.5.0 the server's reply is not SMTP"),
            wrote: &[],
        },
        Case {
            name: "a 554 greeting: permanent, at the greeting",
            script: &[Say("554 5.3.2 no SMTP service here\r\n")],
            recipients: &["a@r.test"],
            message: MESSAGE,
            outcome: Failed(Phase::Greeting, "554 5.3.2"),
            wrote: &[],
        },
        Case {
            name: "garbage for a reply to MAIL",
            script: &[
                GREETING,
                EHLO_PIPELINING,
                Say("HTTP/1.1 400 Bad Request\r\n"),
            ],
            recipients: &["a@r.test"],
            message: MESSAGE,
            outcome: Failed(Phase::MailFrom, "451 4.5.0 the server's reply is not SMTP"),
            wrote: &[
                EHLO,
                "MAIL FROM:<bounces@sender.test>\r\nRCPT TO:<a@r.test>\r\nDATA\r\n",
            ],
        },
        // RFC 5321 §4.2: the first digit is 2 to 5. A 999 (or 600) must not
        // pass for a permanent refusal that would bounce the recipient.
        Case {
            name: "a reply code out of range is garbage, not a refusal",
            script: &[
                GREETING,
                EHLO_PIPELINING,
                Say("250 ok\r\n"),
                Say("999 5.1.1 no\r\n"),
            ],
            recipients: &["a@r.test"],
            message: MESSAGE,
            outcome: Failed(Phase::RcptTo, "451 4.5.0"),
            wrote: &[
                EHLO,
                "MAIL FROM:<bounces@sender.test>\r\nRCPT TO:<a@r.test>\r\nDATA\r\n",
            ],
        },
        Case {
            name: "a multi-line reply whose lines change code is garbage",
            script: &[GREETING, EHLO_PIPELINING, Say("250-ok\r\n550 no\r\n")],
            recipients: &["a@r.test"],
            message: MESSAGE,
            outcome: Failed(Phase::MailFrom, "451 4.5.0"),
            wrote: &[
                EHLO,
                "MAIL FROM:<bounces@sender.test>\r\nRCPT TO:<a@r.test>\r\nDATA\r\n",
            ],
        },
        Case {
            name: "the connection closed after the body, before the final reply",
            script: &[
                GREETING,
                EHLO_PIPELINING,
                Say("250 ok\r\n"),
                Say("250 ok\r\n"),
                Say("354 go on\r\n"),
                Close,
            ],
            recipients: &["a@r.test"],
            message: MESSAGE,
            outcome: Failed(Phase::DataEnd, "451 4.4.2 connection lost at end of data"),
            wrote: &[
                EHLO,
                "MAIL FROM:<bounces@sender.test>\r\nRCPT TO:<a@r.test>\r\nDATA\r\n",
                BODY,
            ],
        },
        Case {
            name: "421 after the body: the session fails, transiently",
            script: &[
                GREETING,
                EHLO_PIPELINING,
                Say("250 ok\r\n"),
                Say("250 ok\r\n"),
                Say("354 go on\r\n"),
                Say("421 4.3.0 try later\r\n"),
            ],
            recipients: &["a@r.test"],
            message: MESSAGE,
            outcome: Failed(Phase::DataEnd, "421 4.3.0 try later"),
            wrote: &[
                EHLO,
                "MAIL FROM:<bounces@sender.test>\r\nRCPT TO:<a@r.test>\r\nDATA\r\n",
                BODY,
            ],
        },
        Case {
            name: "the connection closed in the middle of a reply",
            script: &[
                GREETING,
                EHLO_PIPELINING,
                Say("250 ok\r\n"),
                Say("250-first line\r\n"),
            ],
            recipients: &["a@r.test"],
            message: MESSAGE,
            outcome: Failed(Phase::RcptTo, "451 4.4.2 connection lost at RCPT TO"),
            wrote: &[
                EHLO,
                "MAIL FROM:<bounces@sender.test>\r\nRCPT TO:<a@r.test>\r\nDATA\r\n",
            ],
        },
        Case {
            name: "no reply at all: a timeout, transient",
            // Nothing to MAIL, RCPT or DATA, and the connection stays open.
            script: &[GREETING, EHLO_PIPELINING, Say(""), Say(""), Say("")],
            recipients: &["a@r.test"],
            message: MESSAGE,
            outcome: Failed(Phase::MailFrom, "451 4.4.2 timed out"),
            wrote: &[
                EHLO,
                "MAIL FROM:<bounces@sender.test>\r\nRCPT TO:<a@r.test>\r\nDATA\r\n",
            ],
        },
    ]
}

/// The session as a delivery worker runs it: greeting, EHLO, one
/// transaction.
async fn deliver(
    client: &mut SmtpClient<DuplexStream>,
    recipients: &[&str],
    message: &[u8],
) -> Result<TransactionResult, ClientError> {
    client.read_greeting().await?;
    client.hello("client.test").await?;
    let envelope = Envelope {
        mail_from: "bounces@sender.test".into(),
        recipients: recipients.iter().map(|r| r.to_string()).collect(),
        envid: None,
        notify: None,
    };
    client.send(&envelope, message).await
}

async fn run(case: Case) {
    let name = case.name;
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(scripted_server(theirs, case.script));
    let mut client = SmtpClient::new(ours, Timeouts::default());
    let result = deliver(&mut client, case.recipients, case.message).await;
    // The client closes: the script ends, and tells what it read.
    drop(client);
    let wrote = server.await.unwrap();
    match (&case.outcome, &result) {
        (Results(want), Ok(got)) => {
            let got: Vec<(String, String, Phase)> = got
                .recipients
                .iter()
                .map(|r| (r.recipient.clone(), r.reply.line(), r.phase))
                .collect();
            let want: Vec<(String, String, Phase)> = case
                .recipients
                .iter()
                .zip(want.iter())
                .map(|(r, (line, phase))| (r.to_string(), line.to_string(), *phase))
                .collect();
            assert_eq!(got, want, "{name}");
        }
        (Failed(phase, reply), Err(e)) => {
            assert_eq!(e.phase(), *phase, "{name}: {e}");
            assert!(e.reply().line().starts_with(reply), "{name}: {e}");
            assert_eq!(
                e.is_transient(),
                reply.starts_with('4'),
                "{name}: transient is a 4xx: {e}"
            );
        }
        (want, got) => panic!("{name}: expected {want:?}, got {got:?}"),
    }
    assert_eq!(wrote, case.wrote, "{name}: what the client wrote");
}

#[tokio::test(start_paused = true)]
async fn client_transcripts() {
    let cases = cases();
    assert!(cases.len() > 15);
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

/// Takes the password `right`, keeps every message with whether it came
/// over TLS and from whom.
#[derive(Default)]
struct Mailbox {
    messages: Mutex<Vec<Kept>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Kept {
    tls: bool,
    identity: Option<String>,
    message: Vec<u8>,
}

#[async_trait::async_trait]
impl Handler for Mailbox {
    async fn auth(&self, username: &str, password: &str) -> Result<String, ServerReply> {
        match password {
            "right" => Ok(username.into()),
            _ => Err(ServerReply::new(
                535,
                EnhancedCode::of(5, 7, 8),
                "authentication failed",
            )),
        }
    }
    async fn rcpt_to(
        &self,
        _s: &Session,
        _e: &ReceivedEnvelope,
        _address: &str,
    ) -> Result<(), ServerReply> {
        Ok(())
    }
    async fn data(
        &self,
        session: &Session,
        _e: &ReceivedEnvelope,
        message: Vec<u8>,
    ) -> ServerReply {
        self.messages.lock().unwrap().push(Kept {
            tls: session.tls,
            identity: session.identity.clone(),
            message,
        });
        ServerReply::new(250, EnhancedCode::of(2, 0, 0), "queued")
    }
}

/// The client's STARTTLS, EHLO again and AUTH against our own submission
/// session, both over one in-memory pipe with the real rustls handshake.
#[tokio::test(start_paused = true)]
async fn starttls_then_auth_against_our_server_in_memory() {
    let mut settings = ServerSettings::new("mx.test");
    settings.require_auth = true;
    settings.tls = Some(
        ServerTlsConfig::self_signed(&["mx.test".into()])
            .expect("a certificate")
            .0,
    );
    let mailbox = Arc::new(Mailbox::default());
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let session = tokio::spawn(serve_stream(
        theirs,
        Some("192.0.2.7:40000".parse().unwrap()),
        Arc::new(settings),
        mailbox.clone(),
    ));

    let mut client = SmtpClient::new(MaybeTls::Plain(ours), Timeouts::default());
    client.read_greeting().await.unwrap();
    client.hello("client.test").await.unwrap();
    assert!(client.extensions.starttls && client.tls_info().is_none());
    let refused = client.auth_plain("me", "right").await.unwrap_err();
    assert_eq!(refused.reply().code, 538, "no AUTH before TLS: {refused}");
    let mut client = client.starttls("mx.test", "client.test").await.unwrap();
    let tls = client.tls_info().expect("encrypted");
    assert!(tls.version.starts_with("TLSv1"), "{tls:?}");
    assert!(!client.extensions.starttls, "EHLO again, over TLS");
    client.auth_plain("me", "right").await.unwrap();
    let envelope = Envelope {
        mail_from: "shop@sender.test".into(),
        recipients: vec!["a@r.test".into()],
        envid: None,
        notify: None,
    };
    let result = client.send(&envelope, b".dot\r\nend").await.unwrap();
    assert!(result.recipients[0].delivered(), "{result:?}");
    client.quit().await;
    session.await.unwrap();
    let messages = mailbox.messages.lock().unwrap().clone();
    assert_eq!(
        messages,
        [Kept {
            tls: true,
            identity: Some("me".into()),
            message: b".dot\r\nend\r\n".to_vec(),
        }]
    );
}
