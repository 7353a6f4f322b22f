//! The SMTP server side: one session per connection, for the submission
//! port (clients authenticate with an API key), the built-in mailbox
//! simulator and, later, the inbound MX. Commands are parsed by smtp-proto;
//! what to accept is decided by a [`Handler`].
//!
//! Safe by construction: the message ends only at `CRLF.CRLF` (no SMTP
//! smuggling with bare LF dots), lines and messages have limits, a session
//! that errs too often is closed, and nothing is handed on until the whole
//! message has arrived. Connections are capped per listener and per client
//! address (`421` over the cap), and a client has a short time to
//! authenticate (or, where no AUTH is required, to say MAIL) before the
//! RFC 5321 timeouts apply, so idle connections cannot pile up.

use crate::listen::{AcceptBackoff, ConnectionLimiter, ConnectionLimits, ListenerStats, Refusal};
use crate::tls::ServerTlsConfig;
use posthorn_core::EnhancedCode;
use smtp_proto::{Error as ProtoError, Request};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// A reply the server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReply {
    pub code: u16,
    pub enhanced: EnhancedCode,
    pub text: String,
}

impl ServerReply {
    pub fn new(code: u16, enhanced: EnhancedCode, text: impl Into<String>) -> Self {
        Self {
            code,
            enhanced,
            text: text.into(),
        }
    }
    fn line(&self) -> String {
        format!("{} {} {}\r\n", self.code, self.enhanced, self.text)
    }
}

/// Who is talking, as the handler sees it.
#[derive(Debug, Clone, Default)]
pub struct Session {
    pub peer: Option<SocketAddr>,
    pub helo: Option<String>,
    pub tls: bool,
    /// Set by a successful AUTH: what [`Handler::auth`] returned.
    pub identity: Option<String>,
}

/// One transaction as received.
#[derive(Debug, Clone, Default)]
pub struct ReceivedEnvelope {
    pub mail_from: String,
    pub recipients: Vec<String>,
}

/// What the server decides on. Every method may refuse with a reply.
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Checks AUTH credentials; the identity it returns is kept on the session.
    async fn auth(&self, _username: &str, _password: &str) -> Result<String, ServerReply> {
        Err(ServerReply::new(
            535,
            EnhancedCode::of(5, 7, 8),
            "authentication is not offered here",
        ))
    }
    /// Checks the sender; by default any (bounces come from the null sender,
    /// and who may send is decided at RCPT or by AUTH).
    async fn mail_from(&self, _session: &Session, _address: &str) -> Result<(), ServerReply> {
        Ok(())
    }
    async fn rcpt_to(
        &self,
        session: &Session,
        envelope: &ReceivedEnvelope,
        address: &str,
    ) -> Result<(), ServerReply>;
    /// The whole message, after the final dot. The reply is the transaction's.
    async fn data(
        &self,
        session: &Session,
        envelope: &ReceivedEnvelope,
        message: Vec<u8>,
    ) -> ServerReply;
}

/// Settings of one listener.
#[derive(Clone)]
pub struct ServerSettings {
    pub hostname: String,
    pub max_message_size: usize,
    pub max_recipients: usize,
    /// STARTTLS is offered when set.
    pub tls: Option<ServerTlsConfig>,
    /// Offer AUTH (PLAIN, LOGIN) and require it before MAIL.
    pub require_auth: bool,
    /// Allow AUTH before STARTTLS when the client is on loopback.
    pub plaintext_auth_on_loopback: bool,
    /// How long to wait for a command, and for the message data, once the
    /// session is under way (see `first_timeout`).
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    /// How long a client may take from connecting until it has
    /// authenticated (when `require_auth`) or its first MAIL was accepted:
    /// a deadline, not a per-command wait, so NOOPs do not extend it.
    pub first_timeout: Duration,
    /// Connections open at once, in total and per client address.
    pub limits: ConnectionLimits,
    /// The listener's name in logs and metrics.
    pub name: &'static str,
    /// Counters the metrics endpoint reads.
    pub stats: Arc<ListenerStats>,
}

impl ServerSettings {
    pub fn new(hostname: impl Into<String>) -> Self {
        Self {
            hostname: hostname.into(),
            max_message_size: 10 * 1024 * 1024,
            max_recipients: 1000,
            tls: None,
            require_auth: false,
            plaintext_auth_on_loopback: true,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            first_timeout: Duration::from_secs(30),
            limits: ConnectionLimits {
                max_connections: 1000,
                max_per_ip: 20,
            },
            name: "smtp",
            stats: Arc::default(),
        }
    }
}

/// Errors before the session gives up on a client.
const MAX_ERRORS: u32 = 10;
/// Longest command line (RFC 5321 says 512; extensions need more).
const MAX_LINE: usize = 4096;

/// What a session runs over: a TCP connection, or in tests an in-memory
/// pipe (`tokio::io::duplex`), so that sessions can be tested without a
/// socket. The session keeps it boxed, and STARTTLS runs rustls over the
/// box, so a pipe gets the same handshake as TCP (docs/decisions.md).
pub trait SessionIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> SessionIo for T {}

enum Stream {
    Plain(Box<dyn SessionIo>),
    Tls(Box<tokio_rustls::server::TlsStream<Box<dyn SessionIo>>>),
    Upgrading,
}

impl Stream {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Tls(s) => s.read(buf).await,
            Stream::Upgrading => Ok(0),
        }
    }
    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => write_flush(s, bytes).await,
            Stream::Tls(s) => write_flush(s.as_mut(), bytes).await,
            Stream::Upgrading => Ok(()),
        }
    }
}

async fn write_flush<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) -> std::io::Result<()> {
    s.write_all(bytes).await?;
    s.flush().await
}

/// Serves one connection to its end.
pub async fn serve_connection<H: Handler + ?Sized>(
    tcp: TcpStream,
    settings: Arc<ServerSettings>,
    handler: Arc<H>,
) {
    let peer = tcp.peer_addr().ok();
    serve_stream(tcp, peer, settings, handler).await;
}

/// Serves one session over any byte stream to its end; `peer` is what the
/// handler is told (and decides whether AUTH without TLS is on loopback).
pub async fn serve_stream<H: Handler + ?Sized>(
    io: impl SessionIo + 'static,
    peer: Option<SocketAddr>,
    settings: Arc<ServerSettings>,
    handler: Arc<H>,
) {
    let deadline = tokio::time::Instant::now() + settings.first_timeout;
    let mut conn = Connection {
        stream: Stream::Plain(Box::new(io)),
        buf: Vec::new(),
        settings,
        session: Session {
            peer,
            ..Default::default()
        },
        errors: 0,
        deadline: Some(deadline),
    };
    match conn.run(handler.as_ref()).await {
        Err(End::Timeout) => {
            // RFC 5321 §4.5.3.2: say why before closing. A client that does
            // not read gets no more than a short wait.
            let bye = format!(
                "421 4.4.2 {} timeout, closing connection\r\n",
                conn.settings.hostname
            );
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                conn.stream.write_all(bye.as_bytes()),
            )
            .await;
            tracing::debug!(?peer, "SMTP session timed out");
        }
        Err(e) => tracing::debug!(?peer, error = %e, "SMTP session ended"),
        Ok(()) => {}
    }
}

struct Connection {
    stream: Stream,
    /// Bytes read and not yet consumed.
    buf: Vec<u8>,
    settings: Arc<ServerSettings>,
    session: Session,
    errors: u32,
    /// Until the client has authenticated (or said MAIL, where AUTH is not
    /// required), every wait ends at this instant at the latest.
    deadline: Option<tokio::time::Instant>,
}

/// Why a session ended early.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("client went away")]
    Gone,
    #[error("timeout")]
    Timeout,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("too many errors")]
    TooManyErrors,
}

impl Connection {
    /// `wait`, shortened to the first-phase deadline while it runs.
    fn timeout(&self, wait: Duration) -> Duration {
        match self.deadline {
            Some(deadline) => {
                wait.min(deadline.saturating_duration_since(tokio::time::Instant::now()))
            }
            None => wait,
        }
    }

    /// The session is under way: the RFC 5321 timeouts apply from now on.
    fn established(&mut self) {
        self.deadline = None;
    }

    /// Writes with a timeout too: a client that sends commands but never
    /// reads the replies would otherwise hold its connection for ever.
    async fn write(&mut self, bytes: &[u8]) -> Result<(), End> {
        let wait = self.timeout(self.settings.command_timeout);
        tokio::time::timeout(wait, self.stream.write_all(bytes))
            .await
            .map_err(|_| End::Timeout)??;
        Ok(())
    }

    async fn reply(&mut self, reply: &ServerReply) -> Result<(), End> {
        self.write(reply.line().as_bytes()).await?;
        if reply.code >= 500 {
            self.errors += 1;
            if self.errors >= MAX_ERRORS {
                let bye =
                    ServerReply::new(421, EnhancedCode::of(4, 7, 0), "too many errors, closing");
                self.write(bye.line().as_bytes()).await?;
                return Err(End::TooManyErrors);
            }
        }
        Ok(())
    }

    async fn fill(&mut self, timeout: Duration) -> Result<(), End> {
        let mut chunk = [0u8; 8192];
        let timeout = self.timeout(timeout);
        let n = tokio::time::timeout(timeout, self.stream.read(&mut chunk))
            .await
            .map_err(|_| End::Timeout)??;
        if n == 0 {
            return Err(End::Gone);
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// One command line (without CRLF); `None` when it was too long.
    async fn line(&mut self) -> Result<Option<Vec<u8>>, End> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Ok((line.len() <= MAX_LINE).then_some(line));
            }
            if self.buf.len() > MAX_LINE {
                // Swallow the rest of the over-long line.
                self.buf.clear();
                loop {
                    self.fill(self.settings.command_timeout).await?;
                    if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                        self.buf.drain(..=pos);
                        return Ok(None);
                    }
                    self.buf.clear();
                }
            }
            self.fill(self.settings.command_timeout).await?;
        }
    }

    fn auth_allowed(&self) -> bool {
        self.session.tls
            || (self.settings.plaintext_auth_on_loopback
                && self.session.peer.is_some_and(|p| p.ip().is_loopback()))
    }

    fn ehlo_reply(&self) -> String {
        let mut lines = vec![
            format!("{} at your service", self.settings.hostname),
            "PIPELINING".into(),
            format!("SIZE {}", self.settings.max_message_size),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "ENHANCEDSTATUSCODES".into(),
        ];
        if self.settings.tls.is_some() && !self.session.tls {
            lines.push("STARTTLS".into());
        }
        if self.settings.require_auth && self.auth_allowed() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        let last = lines.len() - 1;
        lines
            .iter()
            .enumerate()
            .map(|(i, l)| format!("250{}{l}\r\n", if i == last { ' ' } else { '-' }))
            .collect()
    }

    async fn run<H: Handler + ?Sized>(&mut self, handler: &H) -> Result<(), End> {
        let greeting = format!("220 {} ESMTP Posthorn\r\n", self.settings.hostname);
        self.write(greeting.as_bytes()).await?;
        let mut envelope: Option<ReceivedEnvelope> = None;
        loop {
            let Some(line) = self.line().await? else {
                self.reply(&ServerReply::new(
                    500,
                    EnhancedCode::of(5, 5, 2),
                    "line too long",
                ))
                .await?;
                continue;
            };
            let request = match Request::parse(&mut line.iter()) {
                Ok(r) => r.into_owned(),
                Err(ProtoError::UnknownCommand) => {
                    self.reply(&ServerReply::new(
                        500,
                        EnhancedCode::of(5, 5, 1),
                        "command not recognised",
                    ))
                    .await?;
                    continue;
                }
                Err(_) => {
                    self.reply(&ServerReply::new(
                        501,
                        EnhancedCode::of(5, 5, 4),
                        "syntax error",
                    ))
                    .await?;
                    continue;
                }
            };
            match request {
                Request::Ehlo { host } | Request::Lhlo { host } => {
                    self.session.helo = Some(host);
                    envelope = None;
                    let reply = self.ehlo_reply();
                    self.write(reply.as_bytes()).await?;
                }
                Request::Helo { host } => {
                    self.session.helo = Some(host);
                    envelope = None;
                    let reply = format!("250 {}\r\n", self.settings.hostname);
                    self.write(reply.as_bytes()).await?;
                }
                Request::StartTls => {
                    let Some(tls) = self.settings.tls.clone().filter(|_| !self.session.tls) else {
                        self.reply(&ServerReply::new(
                            502,
                            EnhancedCode::of(5, 5, 1),
                            "STARTTLS not available",
                        ))
                        .await?;
                        continue;
                    };
                    self.reply(&ServerReply::new(
                        220,
                        EnhancedCode::of(2, 0, 0),
                        "ready to start TLS",
                    ))
                    .await?;
                    let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Upgrading)
                    else {
                        return Err(End::Gone);
                    };
                    // RFC 3207: anything pipelined after STARTTLS is discarded.
                    self.buf.clear();
                    let tls_stream = tokio::time::timeout(
                        self.timeout(self.settings.command_timeout),
                        tls.acceptor().accept(tcp),
                    )
                    .await
                    .map_err(|_| End::Timeout)??;
                    self.stream = Stream::Tls(Box::new(tls_stream));
                    self.session.tls = true;
                    self.session.helo = None;
                    self.session.identity = None;
                    envelope = None;
                }
                Request::Auth {
                    mechanism,
                    initial_response,
                } => {
                    self.auth(handler, mechanism, initial_response).await?;
                }
                Request::Mail { from } => {
                    if from.address.chars().any(char::is_control) {
                        self.reply(&ServerReply::new(
                            501,
                            EnhancedCode::of(5, 1, 7),
                            "bad sender address syntax",
                        ))
                        .await?;
                    } else if self.session.helo.is_none() {
                        self.reply(&ServerReply::new(
                            503,
                            EnhancedCode::of(5, 5, 1),
                            "say EHLO first",
                        ))
                        .await?;
                    } else if self.settings.require_auth && self.session.identity.is_none() {
                        self.reply(&ServerReply::new(
                            530,
                            EnhancedCode::of(5, 7, 0),
                            "authentication required",
                        ))
                        .await?;
                    } else if envelope.is_some() {
                        self.reply(&ServerReply::new(
                            503,
                            EnhancedCode::of(5, 5, 1),
                            "nested MAIL command",
                        ))
                        .await?;
                    } else if from.size > self.settings.max_message_size {
                        let text = format!(
                            "message size exceeds the limit of {} bytes",
                            self.settings.max_message_size
                        );
                        self.reply(&ServerReply::new(552, EnhancedCode::of(5, 3, 4), text))
                            .await?;
                    } else {
                        match handler.mail_from(&self.session, &from.address).await {
                            Ok(()) => {
                                envelope = Some(ReceivedEnvelope {
                                    mail_from: from.address,
                                    recipients: Vec::new(),
                                });
                                // Where AUTH is required it ended the first
                                // phase already; elsewhere (the MX) an
                                // accepted MAIL does.
                                self.established();
                                self.reply(&ServerReply::new(
                                    250,
                                    EnhancedCode::of(2, 1, 0),
                                    "sender ok",
                                ))
                                .await?;
                            }
                            Err(reply) => self.reply(&reply).await?,
                        }
                    }
                }
                Request::Rcpt { to } => {
                    let Some(env) = envelope.as_mut() else {
                        self.reply(&ServerReply::new(
                            503,
                            EnhancedCode::of(5, 5, 1),
                            "need MAIL before RCPT",
                        ))
                        .await?;
                        continue;
                    };
                    if to.address.chars().any(char::is_control) {
                        self.reply(&ServerReply::new(
                            501,
                            EnhancedCode::of(5, 1, 3),
                            "bad recipient address syntax",
                        ))
                        .await?;
                        continue;
                    }
                    if env.recipients.len() >= self.settings.max_recipients {
                        self.reply(&ServerReply::new(
                            452,
                            EnhancedCode::of(4, 5, 3),
                            "too many recipients",
                        ))
                        .await?;
                        continue;
                    }
                    let snapshot = env.clone();
                    match handler.rcpt_to(&self.session, &snapshot, &to.address).await {
                        Ok(()) => {
                            env.recipients.push(to.address);
                            self.reply(&ServerReply::new(
                                250,
                                EnhancedCode::of(2, 1, 5),
                                "recipient ok",
                            ))
                            .await?;
                        }
                        Err(reply) => self.reply(&reply).await?,
                    }
                }
                Request::Data => {
                    let Some(env) = envelope.take().filter(|e| !e.recipients.is_empty()) else {
                        self.reply(&ServerReply::new(
                            554,
                            EnhancedCode::of(5, 5, 1),
                            "no valid recipients",
                        ))
                        .await?;
                        continue;
                    };
                    self.write(b"354 end data with <CR><LF>.<CR><LF>\r\n")
                        .await?;
                    let reply = match self.read_data().await? {
                        Some(message) => handler.data(&self.session, &env, message).await,
                        None => ServerReply::new(
                            552,
                            EnhancedCode::of(5, 3, 4),
                            format!(
                                "message size exceeds the limit of {} bytes",
                                self.settings.max_message_size
                            ),
                        ),
                    };
                    self.reply(&reply).await?;
                }
                Request::Rset => {
                    envelope = None;
                    self.reply(&ServerReply::new(250, EnhancedCode::of(2, 0, 0), "reset"))
                        .await?;
                }
                Request::Noop { .. } => {
                    self.reply(&ServerReply::new(250, EnhancedCode::of(2, 0, 0), "ok"))
                        .await?
                }
                Request::Vrfy { .. } => {
                    self.reply(&ServerReply::new(
                        252,
                        EnhancedCode::of(2, 5, 0),
                        "cannot verify, but will try",
                    ))
                    .await?
                }
                Request::Quit => {
                    self.reply(&ServerReply::new(221, EnhancedCode::of(2, 0, 0), "bye"))
                        .await?;
                    return Ok(());
                }
                _ => {
                    self.reply(&ServerReply::new(
                        502,
                        EnhancedCode::of(5, 5, 1),
                        "command not implemented",
                    ))
                    .await?
                }
            }
        }
    }

    /// The message after 354: `None` when it outgrew the limit (the rest is
    /// read and dropped so the session stays in step).
    async fn read_data(&mut self) -> Result<Option<Vec<u8>>, End> {
        let mut decoder = DataDecoder::default();
        let mut message = Vec::new();
        let mut too_large = false;
        loop {
            let (taken, done) = decoder.decode(&self.buf, &mut message);
            self.buf.drain(..taken);
            if message.len() > self.settings.max_message_size {
                too_large = true;
                message.clear();
            }
            if done {
                return Ok((!too_large).then_some(message));
            }
            self.fill(self.settings.data_timeout).await?;
        }
    }

    async fn auth<H: Handler + ?Sized>(
        &mut self,
        handler: &H,
        mechanism: u64,
        initial: String,
    ) -> Result<(), End> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        if !self.settings.require_auth {
            return self
                .reply(&ServerReply::new(
                    502,
                    EnhancedCode::of(5, 5, 1),
                    "AUTH not offered",
                ))
                .await;
        }
        if !self.auth_allowed() {
            return self
                .reply(&ServerReply::new(
                    538,
                    EnhancedCode::of(5, 7, 11),
                    "encryption required: use STARTTLS first",
                ))
                .await;
        }
        if self.session.identity.is_some() {
            return self
                .reply(&ServerReply::new(
                    503,
                    EnhancedCode::of(5, 5, 1),
                    "already authenticated",
                ))
                .await;
        }
        let credentials = if mechanism == smtp_proto::AUTH_PLAIN {
            let response = if initial.is_empty() {
                self.write(b"334 \r\n").await?;
                self.auth_line().await?
            } else {
                initial
            };
            b64.decode(response.trim()).ok().and_then(|raw| {
                let mut parts = raw.split(|&b| b == 0);
                let _authzid = parts.next()?;
                let user = String::from_utf8(parts.next()?.to_vec()).ok()?;
                let pass = String::from_utf8(parts.next()?.to_vec()).ok()?;
                Some((user, pass))
            })
        } else if mechanism == smtp_proto::AUTH_LOGIN {
            let user = if initial.is_empty() {
                self.write(b"334 VXNlcm5hbWU6\r\n").await?;
                self.auth_line().await?
            } else {
                initial
            };
            self.write(b"334 UGFzc3dvcmQ6\r\n").await?;
            let pass = self.auth_line().await?;
            let decode = |s: &str| {
                b64.decode(s.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
            };
            decode(&user).zip(decode(&pass))
        } else {
            return self
                .reply(&ServerReply::new(
                    504,
                    EnhancedCode::of(5, 5, 4),
                    "mechanism not supported",
                ))
                .await;
        };
        let Some((user, pass)) = credentials else {
            return self
                .reply(&ServerReply::new(
                    501,
                    EnhancedCode::of(5, 5, 2),
                    "cannot decode the credentials",
                ))
                .await;
        };
        match handler.auth(&user, &pass).await {
            Ok(identity) => {
                self.session.identity = Some(identity);
                self.established();
                self.reply(&ServerReply::new(
                    235,
                    EnhancedCode::of(2, 7, 0),
                    "authentication succeeded",
                ))
                .await
            }
            Err(reply) => self.reply(&reply).await,
        }
    }

    async fn auth_line(&mut self) -> Result<String, End> {
        let line = self.line().await?.unwrap_or_default();
        Ok(String::from_utf8_lossy(&line).trim().to_owned())
    }
}

/// Where the message data stands, byte by byte.
#[derive(Debug, Clone, Copy, Default)]
enum DataState {
    /// Just after CRLF. The data starts here: the CRLF that ended the DATA
    /// command counts as the one before the first line (RFC 5321
    /// §4.1.1.4), so a lone `.` right after 354 ends an empty message and
    /// a dot-stuffed first line loses its dot like any other.
    #[default]
    LineStart,
    /// A `.` at the start of a line, held back.
    Dot,
    /// `.` CR at the start of a line: the end of the data if LF follows.
    DotCr,
    /// Just after a CR that was not part of the above.
    Cr,
    /// Anywhere else.
    Text,
}

/// The message after 354 (RFC 5321 §4.5.2): it ends at CRLF `.` CRLF and
/// nowhere else, and a `.` that starts a line (after CRLF) is removed.
/// Bare CR and bare LF are data, never line ends.
///
/// Ours rather than smtp-proto's `DataReceiver`, which also ends the data
/// at CRLF `.` CR CR LF (any CRs after the dot, then LF): a relay in front
/// of us that passes such a line on as data would let one message carry a
/// second past it (SMTP smuggling). The transcript tests hold the cases.
#[derive(Debug, Default)]
struct DataDecoder {
    state: DataState,
}

impl DataDecoder {
    /// Decodes `input` into `message` up to the end of the data: how many
    /// bytes were taken, and whether the end was among them (what follows
    /// it is the next command).
    fn decode(&mut self, input: &[u8], message: &mut Vec<u8>) -> (usize, bool) {
        use DataState::*;
        // After a byte of data: a CR may start a CRLF, a LF after CR ends
        // a line, anything else is inside one.
        let after = |previous: DataState, b: u8| match b {
            b'\r' => Cr,
            b'\n' if matches!(previous, Cr) => LineStart,
            _ => Text,
        };
        for (i, &b) in input.iter().enumerate() {
            self.state = match (self.state, b) {
                (LineStart, b'.') => Dot,
                (Dot, b'\r') => DotCr,
                (DotCr, b'\n') => {
                    self.state = LineStart;
                    return (i + 1, true);
                }
                // `.` CR then not LF: the dot was stuffing, the CR is data
                // (so CRLF `.` CR CR LF is the line "CR", not the end).
                (DotCr, b) => {
                    message.extend_from_slice(&[b'\r', b]);
                    after(Cr, b)
                }
                // Anything else is data; a held-back dot (stuffing) is not.
                (state, b) => {
                    message.push(b);
                    after(state, b)
                }
            };
        }
        (input.len(), false)
    }
}

/// Accepts connections on `listener` until `stop` resolves, one task each.
/// A connection over the listener's limits is answered `421` and closed at
/// once, from the accept loop itself: it costs a file descriptor for a
/// moment and no task.
pub async fn serve<H: Handler + ?Sized>(
    listener: tokio::net::TcpListener,
    settings: Arc<ServerSettings>,
    handler: Arc<H>,
    stop: impl std::future::Future<Output = ()>,
) {
    let limiter = Arc::new(ConnectionLimiter::new(
        settings.name,
        settings.limits,
        settings.stats.clone(),
    ));
    let mut backoff = AcceptBackoff::default();
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut stop => return,
            accepted = crate::listen::accept(&listener, &mut backoff, settings.name, &settings.stats) => accepted,
        };
        match limiter.admit(peer.ip()) {
            Ok(permit) => {
                let (settings, handler) = (settings.clone(), handler.clone());
                tokio::spawn(async move {
                    serve_connection(tcp, settings, handler).await;
                    drop(permit);
                });
            }
            Err(refusal) => {
                let line: &[u8] = match refusal {
                    Refusal::Total => b"421 4.7.0 too many connections\r\n",
                    Refusal::PerIp => b"421 4.7.0 too many connections from your address\r\n",
                };
                // A new socket's send buffer is empty, so this does not
                // block; if it cannot be written the client learns from the
                // close alone.
                let _ = tcp.try_write(line);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The data after 354, and the message it holds and what is left for
    /// the next command once it has ended.
    struct Case {
        data: &'static [u8],
        ends: Option<(&'static [u8], &'static [u8])>,
    }

    const CASES: &[Case] = &[
        Case {
            data: b".\r\n",
            ends: Some((b"", b"")),
        },
        Case {
            data: b"a\r\n.\r\nNOOP\r\n",
            ends: Some((b"a\r\n", b"NOOP\r\n")),
        },
        Case {
            data: b"..a\r\n...\r\n.\r\n",
            ends: Some((b".a\r\n..\r\n", b"")),
        },
        Case {
            data: b"a\n.\nb\r\n.\r\n",
            ends: Some((b"a\n.\nb\r\n", b"")),
        },
        Case {
            data: b"a\n.\r\nb\r\n.\r\n",
            ends: Some((b"a\n.\r\nb\r\n", b"")),
        },
        Case {
            data: b"a\r\n.\nb\r\n.\r\n",
            ends: Some((b"a\r\n\nb\r\n", b"")),
        },
        Case {
            data: b"a\r\n.\r\r\nb\r\n.\r\n",
            ends: Some((b"a\r\n\r\r\nb\r\n", b"")),
        },
        Case {
            data: b"a\r\n.\rb\r\n.\r\n",
            ends: Some((b"a\r\n\rb\r\n", b"")),
        },
        Case {
            data: b"a\r.\rb\r\n.\r\n",
            ends: Some((b"a\r.\rb\r\n", b"")),
        },
        Case {
            data: b"a\r\r\n.\r\n",
            ends: Some((b"a\r\r\n", b"")),
        },
        Case {
            data: b"a\r\n.",
            ends: None,
        },
        Case {
            data: b"a\r\n.\r\r\n",
            ends: None,
        },
        Case {
            data: b"a\n.\n",
            ends: None,
        },
    ];

    /// Decodes `data` as if it arrived in two reads, the first `split`
    /// bytes long: the message and the rest, once the data has ended.
    fn decode_in_two(data: &[u8], split: usize) -> Option<(Vec<u8>, Vec<u8>)> {
        let mut decoder = DataDecoder::default();
        let mut message = Vec::new();
        let (first, second) = data.split_at(split);
        let (taken, done) = decoder.decode(first, &mut message);
        if done {
            return Some((message, data[taken..].to_vec()));
        }
        assert_eq!(taken, first.len(), "all of a read is taken until the end");
        let (taken, done) = decoder.decode(second, &mut message);
        done.then(|| (message, second[taken..].to_vec()))
    }

    #[test]
    fn data_ends_only_at_crlf_dot_crlf_however_it_arrives() {
        for case in CASES {
            let want = case.ends.map(|(m, rest)| (m.to_vec(), rest.to_vec()));
            for split in 0..=case.data.len() {
                assert_eq!(
                    decode_in_two(case.data, split),
                    want,
                    "{:?} split at {split}",
                    String::from_utf8_lossy(case.data)
                );
            }
        }
    }
}
