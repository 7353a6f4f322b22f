//! The SMTP delivery client: one session with one server, able to carry
//! several transactions. It reports a result per recipient with the server's
//! own reply, so one rejected recipient never fails the others.
//!
//! Generic over the stream so that sessions can be tested over in-memory
//! pipes; [`SmtpClient::connect`] opens TCP, and [`SmtpClient::starttls`]
//! works on any stream wrapped in [`MaybeTls`].

use crate::reply::{Parsed, Reply, ReplyReader};
use crate::tls::{MaybeTls, TlsInfo};
use posthorn_core::EnhancedCode;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Where in the session something happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connect,
    Greeting,
    Ehlo,
    StartTls,
    Auth,
    MailFrom,
    RcptTo,
    Data,
    /// The message body and the reply to its final `.`.
    DataEnd,
    Rset,
    Quit,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Connect => "connect",
            Phase::Greeting => "greeting",
            Phase::Ehlo => "EHLO",
            Phase::StartTls => "STARTTLS",
            Phase::Auth => "AUTH",
            Phase::MailFrom => "MAIL FROM",
            Phase::RcptTo => "RCPT TO",
            Phase::Data => "DATA",
            Phase::DataEnd => "end of data",
            Phase::Rset => "RSET",
            Phase::Quit => "QUIT",
        })
    }
}

/// How long to wait in each phase. Defaults are RFC 5321 §4.5.3.2's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// Initial 220 greeting: 5 minutes.
    pub greeting: Duration,
    /// EHLO, STARTTLS, RSET, QUIT replies.
    pub command: Duration,
    /// MAIL FROM: 5 minutes.
    pub mail_from: Duration,
    /// RCPT TO: 5 minutes.
    pub rcpt_to: Duration,
    /// DATA initiation (the 354): 2 minutes.
    pub data_init: Duration,
    /// Each block of the body written: 3 minutes.
    pub data_block: Duration,
    /// The reply after the final `.`: 10 minutes.
    pub data_end: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let minutes = |m: u64| Duration::from_secs(60 * m);
        Self {
            connect: Duration::from_secs(30),
            greeting: minutes(5),
            command: minutes(5),
            mail_from: minutes(5),
            rcpt_to: minutes(5),
            data_init: minutes(2),
            data_block: minutes(3),
            data_end: minutes(10),
        }
    }
}

/// A failure of the session (not of one recipient).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("{phase}: no answer within {after:?}")]
    Timeout { phase: Phase, after: Duration },
    #[error("{phase}: {message}")]
    Io { phase: Phase, message: String },
    #[error("{phase}: the server replied {reply}")]
    Reply { phase: Phase, reply: Reply },
    #[error("{phase}: {message}")]
    Protocol {
        phase: Phase,
        message: String,
        permanent: bool,
    },
}

impl ClientError {
    /// Whether trying again later may succeed. Timeouts, dropped connections,
    /// 4xx (421 included) and garbled replies are transient.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Timeout { .. } | ClientError::Io { .. } => true,
            ClientError::Reply { reply, .. } => !reply.is_permanent(),
            ClientError::Protocol { permanent, .. } => !permanent,
        }
    }

    pub fn is_permanent(&self) -> bool {
        !self.is_transient()
    }

    pub fn phase(&self) -> Phase {
        match self {
            ClientError::Timeout { phase, .. }
            | ClientError::Io { phase, .. }
            | ClientError::Reply { phase, .. }
            | ClientError::Protocol { phase, .. } => *phase,
        }
    }

    /// The server's reply, or one made up to describe the failure (RFC 3463
    /// codes: 4.4.2 for a dropped or silent connection, 4.4.1 for a refused
    /// one), so that every event carries a readable reply.
    pub fn reply(&self) -> Reply {
        match self {
            ClientError::Reply { reply, .. } => reply.clone(),
            ClientError::Timeout { phase, after } => Reply::local(
                451,
                EnhancedCode::of(4, 4, 2),
                format!("timed out after {after:?} waiting at {phase}"),
            ),
            ClientError::Io {
                phase: Phase::Connect,
                message,
            } => Reply::local(
                451,
                EnhancedCode::of(4, 4, 1),
                format!("could not connect: {message}"),
            ),
            ClientError::Io { phase, message } => Reply::local(
                451,
                EnhancedCode::of(4, 4, 2),
                format!("connection lost at {phase}: {message}"),
            ),
            ClientError::Protocol {
                message,
                permanent: true,
                ..
            } => Reply::local(554, EnhancedCode::of(5, 5, 0), message.clone()),
            ClientError::Protocol { message, .. } => {
                Reply::local(451, EnhancedCode::of(4, 5, 0), message.clone())
            }
        }
    }
}

/// What the server said it supports in its EHLO reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    pub pipelining: bool,
    /// SIZE limit, if announced with a number.
    pub size: Option<u64>,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    pub starttls: bool,
    pub enhanced_status_codes: bool,
    /// `false` when the server only took HELO.
    pub esmtp: bool,
}

impl Extensions {
    /// Reads an EHLO reply's lines (after the first, which is the greeting).
    pub fn from_ehlo(text: &str) -> Self {
        let mut ext = Extensions {
            esmtp: true,
            ..Default::default()
        };
        for line in text.lines().skip(1) {
            let mut words = line.split_whitespace();
            let keyword = words.next().unwrap_or("").to_ascii_uppercase();
            match keyword.as_str() {
                "PIPELINING" => ext.pipelining = true,
                "SIZE" => ext.size = words.next().and_then(|n| n.parse().ok()).filter(|n| *n > 0),
                "8BITMIME" => ext.eight_bit_mime = true,
                "SMTPUTF8" => ext.smtputf8 = true,
                "DSN" => ext.dsn = true,
                "STARTTLS" => ext.starttls = true,
                "ENHANCEDSTATUSCODES" => ext.enhanced_status_codes = true,
                _ => {}
            }
        }
        ext
    }
}

/// One transaction's envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The return path (our VERP address), without angle brackets.
    pub mail_from: String,
    pub recipients: Vec<String>,
    /// DSN envelope id (RFC 3461), sent only when the server offers DSN.
    pub envid: Option<String>,
    /// DSN NOTIFY value, e.g. `FAILURE,DELAY`, sent only with DSN.
    pub notify: Option<String>,
}

/// What became of one recipient in a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientResult {
    pub recipient: String,
    /// The reply that decided: the RCPT reply when it refused, else the
    /// reply to MAIL/DATA/end of data.
    pub reply: Reply,
    pub phase: Phase,
}

impl RecipientResult {
    /// Accepted after the end of data: delivered.
    pub fn delivered(&self) -> bool {
        self.phase == Phase::DataEnd && self.reply.is_positive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionResult {
    pub recipients: Vec<RecipientResult>,
}

/// One SMTP session.
pub struct SmtpClient<S> {
    stream: S,
    reader: ReplyReader,
    timeouts: Timeouts,
    pub extensions: Extensions,
    transactions: u32,
}

impl SmtpClient<MaybeTls> {
    /// Connects over TCP and reads the greeting.
    pub async fn connect(
        addr: SocketAddr,
        timeouts: Timeouts,
    ) -> Result<(Self, Reply), ClientError> {
        let tcp = tokio::time::timeout(timeouts.connect, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout {
                phase: Phase::Connect,
                after: timeouts.connect,
            })?
            .map_err(|e| ClientError::Io {
                phase: Phase::Connect,
                message: e.to_string(),
            })?;
        let _ = tcp.set_nodelay(true);
        let mut client = SmtpClient::new(MaybeTls::Plain(tcp), timeouts);
        let greeting = client.read_greeting().await?;
        Ok((client, greeting))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> SmtpClient<MaybeTls<S>> {
    /// STARTTLS, the handshake, and EHLO again (RFC 3207 §4.2: everything
    /// learnt before is forgotten).
    pub async fn starttls(self, server_name: &str, helo_name: &str) -> Result<Self, ClientError> {
        let mut this = self;
        let reply = this
            .command(Phase::StartTls, "STARTTLS\r\n", this.timeouts.command)
            .await?;
        expect(Phase::StartTls, reply, 220)?;
        let timeouts = this.timeouts;
        let stream = tokio::time::timeout(timeouts.command, this.stream.upgrade(server_name))
            .await
            .map_err(|_| ClientError::Timeout {
                phase: Phase::StartTls,
                after: timeouts.command,
            })?
            .map_err(|e| ClientError::Protocol {
                phase: Phase::StartTls,
                message: format!("TLS handshake failed: {e}"),
                permanent: false,
            })?;
        let mut upgraded = SmtpClient::new(stream, timeouts);
        upgraded.hello(helo_name).await?;
        Ok(upgraded)
    }

    pub fn tls_info(&self) -> Option<TlsInfo> {
        self.stream.tls_info()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> SmtpClient<S> {
    pub fn new(stream: S, timeouts: Timeouts) -> Self {
        Self {
            stream,
            reader: ReplyReader::default(),
            timeouts,
            extensions: Extensions::default(),
            transactions: 0,
        }
    }

    /// Reads the server's 220 greeting; anything else ends the session.
    pub async fn read_greeting(&mut self) -> Result<Reply, ClientError> {
        let reply = self
            .read_reply(Phase::Greeting, self.timeouts.greeting)
            .await?;
        expect(Phase::Greeting, reply, 220)
    }

    /// EHLO, falling back to HELO for servers that refuse it.
    pub async fn hello(&mut self, name: &str) -> Result<(), ClientError> {
        let timeout = self.timeouts.command;
        let reply = self
            .command(Phase::Ehlo, &format!("EHLO {name}\r\n"), timeout)
            .await?;
        if reply.code == 250 {
            self.extensions = Extensions::from_ehlo(&reply.text);
            return Ok(());
        }
        if reply.code == 421 || !reply.is_permanent() {
            return Err(ClientError::Reply {
                phase: Phase::Ehlo,
                reply,
            });
        }
        let reply = self
            .command(Phase::Ehlo, &format!("HELO {name}\r\n"), timeout)
            .await?;
        expect(Phase::Ehlo, reply, 250)?;
        self.extensions = Extensions::default();
        Ok(())
    }

    /// Runs one transaction. Recipients the server refuses get their own
    /// reply; the others share the reply to the end of data. An `Err` means
    /// the session failed (timeout, lost connection, 421): no recipient of
    /// this transaction got a verdict, and the session must not be reused.
    pub async fn send(
        &mut self,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<TransactionResult, ClientError> {
        if self.transactions > 0 {
            self.rset().await?;
        }
        self.transactions += 1;
        if let Some(refusal) = self.refuse_locally(envelope, message) {
            return Ok(all(envelope, refusal, Phase::MailFrom));
        }
        let mail = self.mail_from_command(envelope, message);
        let rcpts: Vec<String> = envelope
            .recipients
            .iter()
            .map(|r| self.rcpt_command(envelope, r))
            .collect();

        let (mail_reply, rcpt_replies, data_reply) = if self.extensions.pipelining {
            self.pipelined(&mail, &rcpts).await?
        } else {
            self.one_by_one(&mail, &rcpts).await?
        };
        if !mail_reply.is_positive() {
            if data_reply.as_ref().is_some_and(|r| r.code == 354) {
                self.abort_data().await?;
            }
            return Ok(all(envelope, mail_reply, Phase::MailFrom));
        }
        let mut results: Vec<RecipientResult> = envelope
            .recipients
            .iter()
            .zip(rcpt_replies)
            .map(|(recipient, reply)| RecipientResult {
                recipient: recipient.clone(),
                reply,
                phase: Phase::RcptTo,
            })
            .collect();
        let accepted: Vec<usize> = (0..results.len())
            .filter(|&i| results[i].reply.is_positive())
            .collect();
        let Some(data_reply) = data_reply else {
            return Ok(TransactionResult {
                recipients: results,
            });
        };
        if accepted.is_empty() {
            if data_reply.code == 354 {
                self.abort_data().await?;
            }
            return Ok(TransactionResult {
                recipients: results,
            });
        }
        let (final_reply, phase) = if data_reply.code == 354 {
            (self.send_body(message).await?, Phase::DataEnd)
        } else {
            (data_reply, Phase::Data)
        };
        if final_reply.code == 421 {
            return Err(ClientError::Reply {
                phase,
                reply: final_reply,
            });
        }
        for i in accepted {
            results[i].reply = final_reply.clone();
            results[i].phase = phase;
        }
        Ok(TransactionResult {
            recipients: results,
        })
    }

    /// AUTH PLAIN (RFC 4616), for relaying through a smarthost. Refused
    /// credentials are permanent: trying again will not fix them.
    pub async fn auth_plain(&mut self, username: &str, password: &str) -> Result<(), ClientError> {
        use base64::Engine;
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{username}\0{password}"));
        let reply = self
            .command(
                Phase::Auth,
                &format!("AUTH PLAIN {token}\r\n"),
                self.timeouts.command,
            )
            .await?;
        expect(Phase::Auth, reply, 235)?;
        Ok(())
    }

    /// Ends the current transaction (before the next one on this session).
    pub async fn rset(&mut self) -> Result<(), ClientError> {
        let reply = self
            .command(Phase::Rset, "RSET\r\n", self.timeouts.command)
            .await?;
        expect(Phase::Rset, reply, 250)?;
        Ok(())
    }

    /// Says goodbye; errors do not matter any more at this point.
    pub async fn quit(mut self) {
        let _ = self
            .command(Phase::Quit, "QUIT\r\n", self.timeouts.command)
            .await;
        let _ = self.stream.shutdown().await;
    }

    /// Refusals we can decide without asking: the message is over the
    /// server's SIZE, or the envelope needs SMTPUTF8 the server lacks.
    fn refuse_locally(&self, envelope: &Envelope, message: &[u8]) -> Option<Reply> {
        let size = declared_size(message);
        if let Some(limit) = self.extensions.size
            && size as u64 > limit
        {
            return Some(Reply::local(
                552,
                EnhancedCode::of(5, 3, 4),
                format!("message of {size} bytes exceeds the server's SIZE limit of {limit}"),
            ));
        }
        let addresses = std::iter::once(&envelope.mail_from).chain(&envelope.recipients);
        if addresses.clone().any(|a| a.chars().any(char::is_control)) {
            return Some(Reply::local(
                501,
                EnhancedCode::of(5, 1, 3),
                "an address contains a control character",
            ));
        }
        if !self.extensions.smtputf8 && addresses.clone().any(|a| !a.is_ascii()) {
            return Some(Reply::local(
                553,
                EnhancedCode::of(5, 6, 7),
                "the address is not ASCII and the server does not offer SMTPUTF8",
            ));
        }
        None
    }

    fn mail_from_command(&self, envelope: &Envelope, message: &[u8]) -> String {
        let mut cmd = format!("MAIL FROM:<{}>", envelope.mail_from);
        if self.extensions.size.is_some() {
            cmd.push_str(&format!(" SIZE={}", declared_size(message)));
        }
        if self.extensions.eight_bit_mime && !message.is_ascii() {
            cmd.push_str(" BODY=8BITMIME");
        }
        let needs_utf8 = std::iter::once(&envelope.mail_from)
            .chain(&envelope.recipients)
            .any(|a| !a.is_ascii());
        if self.extensions.smtputf8 && needs_utf8 {
            cmd.push_str(" SMTPUTF8");
        }
        if self.extensions.dsn {
            cmd.push_str(" RET=HDRS");
            if let Some(envid) = &envelope.envid {
                cmd.push_str(&format!(" ENVID={}", xtext(envid)));
            }
        }
        cmd.push_str("\r\n");
        cmd
    }

    fn rcpt_command(&self, envelope: &Envelope, recipient: &str) -> String {
        let mut cmd = format!("RCPT TO:<{recipient}>");
        if self.extensions.dsn {
            if let Some(notify) = &envelope.notify {
                cmd.push_str(&format!(" NOTIFY={notify}"));
            }
            if recipient.is_ascii() {
                cmd.push_str(&format!(" ORCPT=rfc822;{}", xtext(recipient)));
            }
        }
        cmd.push_str("\r\n");
        cmd
    }

    /// RFC 2920: MAIL, every RCPT and DATA in one write, then the replies in
    /// order.
    async fn pipelined(
        &mut self,
        mail: &str,
        rcpts: &[String],
    ) -> Result<(Reply, Vec<Reply>, Option<Reply>), ClientError> {
        let mut batch = String::from(mail);
        for rcpt in rcpts {
            batch.push_str(rcpt);
        }
        batch.push_str("DATA\r\n");
        self.write(Phase::MailFrom, batch.as_bytes(), self.timeouts.mail_from)
            .await?;
        let mail_reply = self
            .read_checked(Phase::MailFrom, self.timeouts.mail_from)
            .await?;
        let mut rcpt_replies = Vec::with_capacity(rcpts.len());
        for _ in rcpts {
            rcpt_replies.push(
                self.read_checked(Phase::RcptTo, self.timeouts.rcpt_to)
                    .await?,
            );
        }
        let data_reply = self
            .read_checked(Phase::Data, self.timeouts.data_init)
            .await?;
        Ok((mail_reply, rcpt_replies, Some(data_reply)))
    }

    async fn one_by_one(
        &mut self,
        mail: &str,
        rcpts: &[String],
    ) -> Result<(Reply, Vec<Reply>, Option<Reply>), ClientError> {
        let mail_reply = self
            .command(Phase::MailFrom, mail, self.timeouts.mail_from)
            .await?;
        check_421(Phase::MailFrom, &mail_reply)?;
        if !mail_reply.is_positive() {
            return Ok((mail_reply, Vec::new(), None));
        }
        let mut rcpt_replies = Vec::with_capacity(rcpts.len());
        for rcpt in rcpts {
            let reply = self
                .command(Phase::RcptTo, rcpt, self.timeouts.rcpt_to)
                .await?;
            check_421(Phase::RcptTo, &reply)?;
            rcpt_replies.push(reply);
        }
        if !rcpt_replies.iter().any(Reply::is_positive) {
            return Ok((mail_reply, rcpt_replies, None));
        }
        let data_reply = self
            .command(Phase::Data, "DATA\r\n", self.timeouts.data_init)
            .await?;
        check_421(Phase::Data, &data_reply)?;
        Ok((mail_reply, rcpt_replies, Some(data_reply)))
    }

    /// The server said 354 although no recipient was accepted (possible with
    /// pipelining): send an empty message so the session stays in step.
    async fn abort_data(&mut self) -> Result<(), ClientError> {
        self.write(Phase::DataEnd, b".\r\n", self.timeouts.data_block)
            .await?;
        self.read_reply(Phase::DataEnd, self.timeouts.data_end)
            .await
            .map(|_| ())
    }

    async fn send_body(&mut self, message: &[u8]) -> Result<Reply, ClientError> {
        let data = encode_data(message);
        for block in data.chunks(64 * 1024) {
            self.write(Phase::DataEnd, block, self.timeouts.data_block)
                .await?;
        }
        self.read_reply(Phase::DataEnd, self.timeouts.data_end)
            .await
    }

    async fn read_checked(
        &mut self,
        phase: Phase,
        timeout: Duration,
    ) -> Result<Reply, ClientError> {
        let reply = self.read_reply(phase, timeout).await?;
        check_421(phase, &reply)?;
        Ok(reply)
    }

    async fn command(
        &mut self,
        phase: Phase,
        line: &str,
        timeout: Duration,
    ) -> Result<Reply, ClientError> {
        self.write(phase, line.as_bytes(), timeout).await?;
        self.read_reply(phase, timeout).await
    }

    async fn write(
        &mut self,
        phase: Phase,
        bytes: &[u8],
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let io = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        tokio::time::timeout(timeout, io)
            .await
            .map_err(|_| ClientError::Timeout {
                phase,
                after: timeout,
            })?
            .map_err(|e| ClientError::Io {
                phase,
                message: e.to_string(),
            })
    }

    async fn read_reply(&mut self, phase: Phase, timeout: Duration) -> Result<Reply, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            match self.reader.take() {
                Parsed::Reply(reply) => return Ok(reply),
                Parsed::Garbage(message) => {
                    return Err(ClientError::Protocol {
                        phase,
                        message: format!("the server's reply is not SMTP: {message}"),
                        permanent: false,
                    });
                }
                Parsed::NeedMore => {}
            }
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut buf))
                .await
                .map_err(|_| ClientError::Timeout {
                    phase,
                    after: timeout,
                })?
                .map_err(|e| ClientError::Io {
                    phase,
                    message: e.to_string(),
                })?;
            if n == 0 {
                return Err(ClientError::Io {
                    phase,
                    message: "the server closed the connection".into(),
                });
            }
            self.reader.push(&buf[..n]);
        }
    }
}

/// The reply if it has the code this step needs, else the session's error.
fn expect(phase: Phase, reply: Reply, code: u16) -> Result<Reply, ClientError> {
    if reply.code == code {
        Ok(reply)
    } else {
        Err(ClientError::Reply { phase, reply })
    }
}

/// 421 means "closing the connection" wherever it comes (RFC 5321 §3.8).
fn check_421(phase: Phase, reply: &Reply) -> Result<(), ClientError> {
    if reply.code == 421 {
        return Err(ClientError::Reply {
            phase,
            reply: reply.clone(),
        });
    }
    Ok(())
}

fn all(envelope: &Envelope, reply: Reply, phase: Phase) -> TransactionResult {
    TransactionResult {
        recipients: envelope
            .recipients
            .iter()
            .map(|r| RecipientResult {
                recipient: r.clone(),
                reply: reply.clone(),
                phase,
            })
            .collect(),
    }
}

/// The body as sent after DATA: CRLF line ends, a leading `.` doubled
/// (RFC 5321 §4.5.2), and the terminating `.` line.
pub fn encode_data(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 5);
    let mut at_line_start = true;
    let mut prev = 0u8;
    for &b in message {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        at_line_start = b == b'\n';
        prev = b;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// The message's size as SIZE declares it (RFC 1870 §3): what is sent
/// after 354, CRLF line ends included (a bare LF goes as CRLF, a missing
/// last line end is added), doubled dots and the final `.` not. Counting
/// the message as given understated it whenever it had bare LFs.
fn declared_size(message: &[u8]) -> usize {
    let bare_lf = message
        .iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'\n' && (i == 0 || message[i - 1] != b'\r'))
        .count();
    let last_line_end = if message.is_empty() || message.ends_with(b"\n") {
        0
    } else {
        2
    };
    message.len() + bare_lf + last_line_end
}

/// RFC 3461 xtext: `+` followed by two hex digits for anything outside
/// printable ASCII and for `+` and `=`.
pub fn xtext(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_dot_stuffed_crlf_and_terminated() {
        assert_eq!(
            encode_data(b"a\r\n.b\r\n..c\r\n"),
            b"a\r\n..b\r\n...c\r\n.\r\n"
        );
        assert_eq!(encode_data(b"x\n.\ny"), b"x\r\n..\r\ny\r\n.\r\n");
        assert_eq!(encode_data(b".start"), b"..start\r\n.\r\n");
        assert_eq!(encode_data(b""), b".\r\n");
    }

    #[test]
    fn declared_size_counts_crlf_line_ends_not_doubled_dots() {
        for (message, size) in [
            (b"".as_slice(), 0),
            (b"a\r\n", 3),
            (b"a\nb", 6),
            (b"\n.x\n", 6),
            (b".x\r\n..y\r\n", 9),
            (b"a\r", 4),
        ] {
            assert_eq!(
                declared_size(message),
                size,
                "{:?}",
                String::from_utf8_lossy(message)
            );
        }
    }

    #[test]
    fn xtext_escapes_plus_equals_and_non_printables() {
        assert_eq!(xtext("bob+tag@example.com"), "bob+2Btag@example.com");
        assert_eq!(xtext("a=b c"), "a+3Db+20c");
    }

    #[test]
    fn extensions_from_ehlo() {
        let ext = Extensions::from_ehlo(
            "mx.example.com hello\nPIPELINING\nSIZE 10240000\n8BITMIME\nDSN\nSTARTTLS\nsmtputf8",
        );
        assert!(
            ext.pipelining
                && ext.eight_bit_mime
                && ext.dsn
                && ext.starttls
                && ext.smtputf8
                && ext.esmtp
        );
        assert_eq!(ext.size, Some(10_240_000));
        let bare = Extensions::from_ehlo("mx.example.com\nSIZE");
        assert_eq!(bare.size, None);
        assert!(!bare.pipelining);
    }

    #[test]
    fn made_up_replies_for_session_failures() {
        let t = ClientError::Timeout {
            phase: Phase::DataEnd,
            after: Duration::from_secs(600),
        };
        assert!(t.is_transient());
        assert_eq!(t.reply().enhanced, EnhancedCode::new(4, 4, 2));
        let refused = ClientError::Io {
            phase: Phase::Connect,
            message: "refused".into(),
        };
        assert_eq!(refused.reply().enhanced, EnhancedCode::new(4, 4, 1));
        let no_service = ClientError::Reply {
            phase: Phase::Greeting,
            reply: Reply::local(554, EnhancedCode::of(5, 3, 2), "no SMTP service here"),
        };
        assert!(no_service.is_permanent());
    }
}
