//! The mailbox simulator: a loopback SMTP server for addresses at
//! `simulator.posthorn.test` that answers by local part, so that a new user
//! sees every outcome through the real delivery path without the internet.
//!
//! | local part | answer |
//! |---|---|
//! | `delivered` (or anything else) | 250 |
//! | `bounce` | 550 5.1.1 user unknown |
//! | `mailbox-full` | 552 5.2.2 mailbox full |
//! | `blocked` | 554 5.7.1 message rejected as spam (after the data) |
//! | `defer` | 451 4.3.0 on the first attempt of a delivery, 250 after |
//! | `slow` | 250 after a few seconds |
//! | `expire` | always 451 4.3.0, until the lifetime ends |
//! | `bounce-async` | 250, then a DSN (5.1.1 user unknown) to the inbound MX |
//! | `soft-async` | 250, then a DSN (5.2.2 mailbox full) to the inbound MX |
//! | `delay-async` | 250, then a delay notice (4.2.1, still retrying) to the inbound MX |
//! | `complaint` | 250, then an ARF spam complaint to the complaint address |
//! | `ooto` | 250, then an out-of-office auto-reply to the return path |
//!
//! A label after `+` is not part of the answer: `bounce+anything@` answers
//! as `bounce@` does (as Amazon SES's simulator does), so a demo or a test
//! can give many distinct recipients one outcome.
//!
//! The reports of the last five are real messages sent over SMTP to the
//! inbound MX, as a remote server would send them, so they take the same
//! path as returned mail from the internet.

use posthorn_core::EnhancedCode;
use posthorn_smtp::server::{Handler, ReceivedEnvelope, ServerReply, ServerSettings, Session};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The domain the simulator answers for.
pub const SIMULATOR_DOMAIN: &str = "simulator.posthorn.test";

#[derive(Default)]
pub struct Simulator {
    /// Attempts seen per return path (one per delivery, thanks to VERP).
    attempts: Mutex<HashMap<String, u32>>,
    /// How long `slow@` waits.
    slow: Duration,
    /// Where returned mail goes (the inbound MX), and the local part of the
    /// complaint address.
    inbound: Option<(SocketAddr, String)>,
}

impl Simulator {
    pub fn new(slow: Duration) -> Self {
        Self {
            attempts: Mutex::default(),
            slow,
            inbound: None,
        }
    }

    /// Sends asynchronous reports to the inbound MX at `addr` (without it,
    /// the report addresses are only delivered).
    pub fn with_inbound(mut self, addr: Option<SocketAddr>, complaint_local_part: String) -> Self {
        self.inbound = addr.map(|a| (a, complaint_local_part));
        self
    }

    /// Listens on a loopback port; returns its address.
    pub async fn start(self) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut settings = ServerSettings::new(SIMULATOR_DOMAIN);
        settings.name = "simulator";
        // Only our own delivery workers connect, all from loopback: the
        // per-address cap meant for strangers would defer their mail.
        settings.limits = posthorn_smtp::listen::ConnectionLimits {
            max_connections: 10_000,
            max_per_ip: 10_000,
        };
        let settings = Arc::new(settings);
        tokio::spawn(posthorn_smtp::server::serve(
            listener,
            settings,
            Arc::new(self),
            std::future::pending(),
        ));
        Ok(addr)
    }
}

/// The local part that decides the answer: lower-case, without a
/// `+label`.
fn local_part(address: &str) -> String {
    let local = address.rsplit_once('@').map_or(address, |(local, _)| local);
    let local = local.split_once('+').map_or(local, |(base, _)| base);
    local.to_ascii_lowercase()
}

#[async_trait::async_trait]
impl Handler for Simulator {
    async fn rcpt_to(
        &self,
        _session: &Session,
        envelope: &ReceivedEnvelope,
        address: &str,
    ) -> Result<(), ServerReply> {
        match local_part(address).as_str() {
            "bounce" => Err(ServerReply::new(
                550,
                EnhancedCode::of(5, 1, 1),
                format!("<{address}>: user unknown"),
            )),
            "mailbox-full" => Err(ServerReply::new(
                552,
                EnhancedCode::of(5, 2, 2),
                format!("<{address}>: mailbox full"),
            )),
            "expire" => Err(ServerReply::new(
                451,
                EnhancedCode::of(4, 3, 0),
                "try again later (this address never accepts)",
            )),
            "defer" => {
                let mut attempts = self.attempts.lock().expect("simulator state");
                let seen = attempts.entry(envelope.mail_from.clone()).or_default();
                *seen += 1;
                if *seen == 1 {
                    Err(ServerReply::new(
                        451,
                        EnhancedCode::of(4, 3, 0),
                        "try again later",
                    ))
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    async fn data(
        &self,
        _session: &Session,
        envelope: &ReceivedEnvelope,
        message: Vec<u8>,
    ) -> ServerReply {
        let locals: Vec<String> = envelope.recipients.iter().map(|r| local_part(r)).collect();
        if locals.iter().any(|l| l == "blocked") {
            return ServerReply::new(554, EnhancedCode::of(5, 7, 1), "message rejected as spam");
        }
        if locals.iter().any(|l| l == "slow") {
            tokio::time::sleep(self.slow).await;
        }
        if let Some((inbound, complaint_local_part)) = &self.inbound {
            for recipient in &envelope.recipients {
                let Some(report) = AsyncReport::for_local_part(&local_part(recipient)) else {
                    continue;
                };
                let (return_path, recipient) = (envelope.mail_from.clone(), recipient.clone());
                let to = match report {
                    AsyncReport::Complaint => match return_path.rsplit_once('@') {
                        Some((_, domain)) => format!("{complaint_local_part}@{domain}"),
                        None => continue,
                    },
                    _ => return_path.clone(),
                };
                let message =
                    report.message(&return_path, &to, &recipient, &message, now_seconds());
                tokio::spawn(send_report(*inbound, to, message));
            }
        }
        ServerReply::new(
            250,
            EnhancedCode::of(2, 0, 0),
            "delivered to the Posthorn mailbox simulator",
        )
    }
}

/// A report the simulator sends after accepting a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AsyncReport {
    HardBounce,
    SoftBounce,
    Delay,
    Complaint,
    AutoReply,
}

impl AsyncReport {
    fn for_local_part(local: &str) -> Option<Self> {
        match local {
            "bounce-async" => Some(AsyncReport::HardBounce),
            "soft-async" => Some(AsyncReport::SoftBounce),
            "delay-async" => Some(AsyncReport::Delay),
            "complaint" => Some(AsyncReport::Complaint),
            "ooto" => Some(AsyncReport::AutoReply),
            _ => None,
        }
    }

    /// The report as a remote system would write it: an RFC 3464 DSN in
    /// Postfix's manner, an RFC 5965 ARF report with the whole original
    /// message (as a mailbox provider's feedback loop sends it), or an RFC
    /// 3834 auto-reply.
    fn message(
        self,
        return_path: &str,
        to: &str,
        recipient: &str,
        original: &[u8],
        now: u64,
    ) -> Vec<u8> {
        let date = mail_builder::headers::date::Date::new(now as i64).to_rfc822();
        let id = posthorn_core::MessageId::generate();
        let boundary = format!("{id}/{SIMULATOR_DOMAIN}");
        let parsed = crate::headers::HeaderBlock::parse(original);
        let original_headers = &original[..parsed.body_start];
        let original_message_id = parsed.get("message-id").unwrap_or_default();
        let original_subject = parsed.get("subject").unwrap_or_default();
        let common = format!(
            "Date: {date}\r\nMessage-ID: <{id}@{SIMULATOR_DOMAIN}>\r\nTo: <{to}>\r\nMIME-Version: 1.0\r\n"
        );
        match self {
            AsyncReport::HardBounce | AsyncReport::SoftBounce | AsyncReport::Delay => {
                let (action, status, reply) = match self {
                    AsyncReport::HardBounce => ("failed", "5.1.1", format!("550 5.1.1 <{recipient}>: Recipient address rejected: User unknown in virtual mailbox table")),
                    AsyncReport::SoftBounce => ("failed", "5.2.2", format!("552 5.2.2 <{recipient}>: Mailbox full: user is over quota")),
                    _ => ("delayed", "4.2.1", format!("450 4.2.1 <{recipient}>: Mailbox temporarily unavailable, try again later")),
                };
                // Postfix's wording: a delay notice warns, a bounce apologises.
                let (subject, intro) = if action == "delayed" {
                    (
                        "Delayed Mail (still being retried)",
                        "#################################################################\r\n\
                         # THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\r\n\
                         #################################################################\r\n\r\n\
                         Your message could not be delivered for more than 4 hour(s).\r\n\
                         It will be retried until it is 5 day(s) old.",
                    )
                } else {
                    (
                        "Undelivered Mail Returned to Sender",
                        "I'm sorry to have to inform you that your message could not\r\n\
                         be delivered to one or more recipients.",
                    )
                };
                format!(
                    "From: MAILER-DAEMON@{SIMULATOR_DOMAIN} (Mail Delivery System)\r\n\
                     Subject: {subject}\r\n\
                     Auto-Submitted: auto-replied\r\n{common}\
                     Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\r\n\
                     This is a MIME-encapsulated message.\r\n\r\n\
                     --{boundary}\r\nContent-Description: Notification\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n\
                     This is the mail system at host {SIMULATOR_DOMAIN}.\r\n\r\n\
                     {intro}\r\n\r\n\
                     <{recipient}>: host mailbox.{SIMULATOR_DOMAIN}[127.0.0.1] said:\r\n    {reply}\r\n\r\n\
                     --{boundary}\r\nContent-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n\
                     Reporting-MTA: dns; {SIMULATOR_DOMAIN}\r\nArrival-Date: {date}\r\n\r\n\
                     Final-Recipient: rfc822; {recipient}\r\nOriginal-Recipient: rfc822;{recipient}\r\n\
                     Action: {action}\r\nStatus: {status}\r\nRemote-MTA: dns; mailbox.{SIMULATOR_DOMAIN}\r\n\
                     Diagnostic-Code: smtp; {reply}\r\n\r\n\
                     --{boundary}\r\nContent-Description: Undelivered Message Headers\r\nContent-Type: text/rfc822-headers\r\n\r\n\
                     Return-Path: <{return_path}>\r\n{headers}\r\n\
                     --{boundary}--\r\n",
                    headers = String::from_utf8_lossy(original_headers).trim_end(),
                )
                .into_bytes()
            }
            AsyncReport::Complaint => {
                let mut out = format!(
                    "From: feedback-loop@{SIMULATOR_DOMAIN}\r\n\
                     Subject: Complaint about a message you sent\r\n{common}\
                     Content-Type: multipart/report; report-type=feedback-report;\r\n\tboundary=\"{boundary}\"\r\n\r\n\
                     --{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n\
                     This is an email abuse report for an email message received from IP 127.0.0.1.\r\n\
                     A recipient marked it as spam.\r\n\r\n\
                     --{boundary}\r\nContent-Type: message/feedback-report\r\n\r\n\
                     Feedback-Type: abuse\r\nUser-Agent: PosthornSimulator/1.0\r\nVersion: 1\r\n\
                     Original-Mail-From: <{return_path}>\r\nOriginal-Rcpt-To: <{recipient}>\r\n\
                     Arrival-Date: {date}\r\nReporting-MTA: dns; {SIMULATOR_DOMAIN}\r\nSource-IP: 127.0.0.1\r\n\r\n\
                     --{boundary}\r\nContent-Type: message/rfc822\r\nContent-Disposition: inline\r\n\r\n\
                     Return-Path: <{return_path}>\r\n"
                )
                .into_bytes();
                out.extend_from_slice(original);
                if !original.ends_with(b"\r\n") {
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
                out
            }
            AsyncReport::AutoReply => format!(
                "From: <{recipient}>\r\nSubject: Out of Office: {subject}\r\n\
                 Auto-Submitted: auto-replied\r\nIn-Reply-To: {original_message_id}\r\n\
                 References: {original_message_id}\r\n{common}\
                 Content-Type: text/plain; charset=utf-8\r\n\r\n\
                 Thank you for your message. I am out of the office and will read it when I am back.\r\n",
                subject = original_subject.trim(),
            )
            .into_bytes(),
        }
    }
}

fn now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Sends a report to the inbound MX from the null sender, as MTAs send
/// bounces; a failure is logged (the simulator is a demo aid).
async fn send_report(inbound: SocketAddr, to: String, message: Vec<u8>) {
    let timeouts = posthorn_smtp::Timeouts::default();
    let result = async {
        let (mut client, _) = posthorn_smtp::SmtpClient::connect(inbound, timeouts).await?;
        client.hello(SIMULATOR_DOMAIN).await?;
        let envelope = posthorn_smtp::Envelope {
            mail_from: String::new(),
            recipients: vec![to.clone()],
            envid: None,
            notify: None,
        };
        let result = client.send(&envelope, &message).await?;
        client.quit().await;
        Ok::<_, posthorn_smtp::ClientError>(result)
    }
    .await;
    match result {
        Ok(r) if r.recipients.iter().all(|r| r.delivered()) => {}
        Ok(r) => tracing::warn!(?r, %to, "simulator: the inbound MX refused a report"),
        Err(e) => tracing::warn!(error = %e, %to, "simulator: could not send a report"),
    }
}

#[cfg(test)]
mod tests {
    use super::local_part;

    #[test]
    fn a_label_after_plus_answers_as_the_plain_local_part() {
        assert_eq!(local_part("bounce+x7@simulator.posthorn.test"), "bounce");
        assert_eq!(
            local_part("Mailbox-Full+a+b@simulator.posthorn.test"),
            "mailbox-full"
        );
        assert_eq!(local_part("delivered@simulator.posthorn.test"), "delivered");
        assert_eq!(
            local_part("soft-async+1@simulator.posthorn.test"),
            "soft-async"
        );
    }
}
