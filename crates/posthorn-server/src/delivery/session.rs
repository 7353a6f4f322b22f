//! One SMTP session: connect (trying each server in turn), EHLO, STARTTLS,
//! AUTH for a smarthost, then the deliveries of a batch one transaction
//! each. The client's results are translated here, at the edge, into the
//! pure [`AttemptResult`] the outcome rules read.

use super::{DeliveryService, Target, jitter};
use posthorn_core::outcome::{self, AttemptResult};
use posthorn_smtp::tls::MaybeTls;
use posthorn_smtp::{ClientError, Envelope, RecipientResult, SmtpClient};
use posthorn_store::ClaimedDelivery;
use tokio::sync::OwnedSemaphorePermit;

impl DeliveryService {
    /// Opens one session (trying each target in turn) and sends `items` over
    /// it, one transaction per delivery.
    pub(super) async fn deliver_over_one_connection(
        &self,
        domain: &str,
        targets: &[Target],
        items: Vec<(ClaimedDelivery, OwnedSemaphorePermit)>,
    ) {
        let (mut client, target) = match self.open_session(targets).await {
            Ok(session) => session,
            Err((error, target)) => {
                let result = session_failure(&error);
                for item in items {
                    self.finish_unattempted(item, &result, target.as_ref(), None);
                }
                return;
            }
        };
        let tls = client.tls_info().map(|t| outcome::Tls {
            version: t.version,
            cipher: t.cipher,
        });
        let mut failed: Option<AttemptResult> = None;
        for item in items {
            let attempt_start = self.state.now();
            if let Some(result) = &failed {
                // The session died under an earlier delivery: this one was
                // not attempted, and is deferred with the same cause.
                self.finish_unattempted(item, result, Some(&target), tls.clone());
                continue;
            }
            self.pace(domain).await;
            self.record_sent(&item.0, &target);
            let message = match self.prepare_copy(&item.0).await {
                Ok(m) => m,
                Err(e) => {
                    let (details, next) =
                        outcome::for_local_failure(format!("building the message failed: {e}"));
                    self.finish(item, details, next);
                    continue;
                }
            };
            let message = match self.sign(&item.0.message, message).await {
                Ok(m) => m,
                Err(e) => {
                    let (details, next) = outcome::for_local_failure(format!(
                        "looking up the sending domain failed: {e}"
                    ));
                    self.finish(item, details, next);
                    continue;
                }
            };
            let claimed = &item.0;
            let envelope = Envelope {
                mail_from: self
                    .verp
                    .return_path(&claimed.delivery.id, &self.return_path_domain(claimed)),
                recipients: vec![claimed.delivery.recipient.clone()],
                envid: Some(claimed.delivery.id.to_string()),
                notify: Some("FAILURE,DELAY".into()),
            };
            let sent = client.send(&envelope, &message).await;
            let mut attempt = self.attempt(claimed, Some(&target), tls.clone());
            attempt.started_at = attempt_start;
            let result = match &sent {
                Ok(transaction) => recipient_result(&transaction.recipients[0]),
                Err(error) => session_failure(error),
            };
            let (details, next) = outcome::for_attempt(
                &attempt,
                &result,
                &self.schedule(),
                jitter(),
                &self.classifier(&claimed.delivery.recipient),
            );
            self.finish(item, details, next);
            if sent.is_err() {
                failed = Some(result);
            }
        }
        if failed.is_none() {
            client.quit().await;
        }
    }

    async fn open_session(
        &self,
        targets: &[Target],
    ) -> Result<(SmtpClient<MaybeTls>, Target), (ClientError, Option<Target>)> {
        let mut last = (
            ClientError::Io {
                phase: posthorn_smtp::Phase::Connect,
                message: "no server to connect to".into(),
            },
            None,
        );
        for target in targets {
            match self.connect(target).await {
                Ok(client) => return Ok((client, target.clone())),
                Err(e) => {
                    tracing::debug!(host = %target.host, addr = %target.addr, error = %e, "trying the next server");
                    last = (e, Some(target.clone()));
                }
            }
        }
        Err(last)
    }

    /// Connect, EHLO, STARTTLS when offered, AUTH for a smarthost. TLS is
    /// opportunistic (if the handshake fails the message goes in plain text
    /// on a new connection, as MTAs do) unless the target requires it.
    async fn connect(&self, target: &Target) -> Result<SmtpClient<MaybeTls>, ClientError> {
        let tls_required = || ClientError::Protocol {
            phase: posthorn_smtp::Phase::StartTls,
            message: format!("TLS is required for {} but could not be used", target.host),
            permanent: false,
        };
        let (mut client, _greeting) = SmtpClient::connect(target.addr, self.timeouts).await?;
        client.hello(&self.helo_name).await?;
        let mut client = if client.extensions.starttls {
            match client.starttls(&target.host, &self.helo_name).await {
                Ok(tls) => tls,
                Err(_) if target.require_tls => return Err(tls_required()),
                Err(e) => {
                    tracing::info!(host = %target.host, error = %e, "STARTTLS failed; sending without TLS");
                    let (mut plain, _) = SmtpClient::connect(target.addr, self.timeouts).await?;
                    plain.hello(&self.helo_name).await?;
                    plain
                }
            }
        } else if target.require_tls {
            return Err(tls_required());
        } else {
            client
        };
        if let Some((user, password)) = &target.auth {
            client.auth_plain(user, password).await?;
        }
        Ok(client)
    }
}

/// The SMTP client's answer for our recipient, as the outcome rules read it.
fn recipient_result(result: &RecipientResult) -> AttemptResult {
    let reply = result.reply.clone();
    if result.delivered() {
        AttemptResult::Delivered(reply)
    } else {
        AttemptResult::NotDelivered(reply)
    }
}

/// A failed session as the outcome rules read it: the client describes
/// every failure with a reply (a made-up 451 for a timeout or a dropped
/// connection, 554 for a permanent protocol failure) whose class says
/// whether trying again can help.
fn session_failure(error: &ClientError) -> AttemptResult {
    AttemptResult::NotDelivered(error.reply())
}

#[cfg(test)]
mod tests {
    use super::*;
    use posthorn_core::EnhancedCode;
    use posthorn_smtp::Phase;
    use std::time::Duration;

    #[test]
    fn a_session_failure_bounces_exactly_when_the_client_calls_it_permanent() {
        let errors = [
            ClientError::Timeout {
                phase: Phase::DataEnd,
                after: Duration::from_secs(5),
            },
            ClientError::Io {
                phase: Phase::Connect,
                message: "refused".into(),
            },
            ClientError::Reply {
                phase: Phase::MailFrom,
                reply: posthorn_smtp::Reply::local(421, EnhancedCode::of(4, 7, 0), "closing"),
            },
            ClientError::Reply {
                phase: Phase::MailFrom,
                reply: posthorn_smtp::Reply::local(554, EnhancedCode::of(5, 7, 1), "go away"),
            },
            ClientError::Protocol {
                phase: Phase::Ehlo,
                message: "garbled".into(),
                permanent: false,
            },
            ClientError::Protocol {
                phase: Phase::Ehlo,
                message: "no common ground".into(),
                permanent: true,
            },
        ];
        for error in errors {
            let AttemptResult::NotDelivered(reply) = session_failure(&error) else {
                panic!("{error:?}")
            };
            assert_eq!(reply.is_permanent(), error.is_permanent(), "{error:?}");
            assert_eq!(reply.line(), error.reply().line());
        }
    }

    /// The code a server wrote on its reply line is the one the event
    /// stores, text for text: read once by the SMTP client, carried typed
    /// through the classifier, written back as the same string.
    #[tokio::test]
    async fn a_reply_lines_enhanced_code_reaches_the_stored_event_unchanged() {
        use posthorn_core::outcome::{Attempt, QueueNext, for_attempt};
        use posthorn_core::retry::RetrySchedule;
        use posthorn_smtp::{SmtpClient, Timeouts};
        use tokio::io::AsyncWriteExt;

        for (line, kind) in [
            (
                "554 5.7.26 Unauthenticated email is not accepted",
                "bounced",
            ),
            (
                "451 4.7.650 The mail server has been rate limited",
                "deferred",
            ),
            ("550 5.1.10 null MX", "bounced"),
        ] {
            let (ours, mut theirs) = tokio::io::duplex(4096);
            theirs
                .write_all(format!("{line}\r\n").as_bytes())
                .await
                .unwrap();
            let mut client = SmtpClient::new(ours, Timeouts::default());
            let error = client.read_greeting().await.unwrap_err();
            let attempt = Attempt {
                number: 1,
                deadline: 1_000_000_000,
                started_at: 0,
                now: 10,
                mx_host: Some("mx.example.com".into()),
                ip: None,
                tls: None,
            };
            let (details, next) = for_attempt(
                &attempt,
                &session_failure(&error),
                &RetrySchedule::default(),
                0.5,
                &crate::delivery::classify_reply,
            );
            assert_eq!(details.kind().as_str(), kind, "{line}");
            assert_eq!(matches!(next, QueueNext::Remove), kind == "bounced");
            let json = details.to_json();
            let code = line.split(' ').nth(1).unwrap();
            assert_eq!(json["enhanced_code"], code, "{line}");
            assert_eq!(json["reply_text"], line);
            let back = posthorn_core::event::EventDetails::from_json(details.kind(), json).unwrap();
            assert_eq!(back, details);
        }
    }
}
