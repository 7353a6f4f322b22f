//! SMTP submission, a second way in beside `POST /v1/messages`: clients log
//! in with AUTH PLAIN or LOGIN whose password is an API key with the `send`
//! scope, and every RCPT becomes one delivery through the same policy chain
//! as the HTTP API. The 250 after the data names the message id.
//!
//! The message is kept as the client built it and sent as it is; a
//! `Bcc:` header is removed, and `Message-ID`/`Date` are added when missing.
//! `X-Posthorn-Stream` and `X-Posthorn-Campaign` choose the stream and
//! campaign (and are removed before sending).

use crate::app::AppState;
use crate::headers::HeaderBlock;
use crate::keys;
use posthorn_core::address::{EmailAddress, Mailbox};
use posthorn_core::id::ApiKeyId;
use posthorn_core::{DeliveryId, EventSource, MessageId};
use posthorn_smtp::server::{Handler, ReceivedEnvelope, ServerReply, Session};
use posthorn_store::{AcceptOutcome, NewMessage, NewRecipient, RecipientKind, Scope};

pub struct SubmissionHandler {
    pub state: AppState,
}

fn temporary_failure() -> ServerReply {
    ServerReply::new(451, "4.3.0", "temporary failure on our side; try again")
}

#[async_trait::async_trait]
impl Handler for SubmissionHandler {
    /// The password is the API key; the user name is not checked (clients
    /// insist on sending one).
    async fn auth(&self, _username: &str, password: &str) -> Result<String, ServerReply> {
        let refused = || ServerReply::new(535, "5.7.8", "authentication failed");
        let presented = keys::parse(password.trim()).ok_or_else(refused)?;
        let (key, _tenant) = self
            .state
            .store
            .api_key(&presented.id)
            .await
            .map_err(|_| temporary_failure())?
            .ok_or_else(refused)?;
        if !presented.matches(&key.secret_hash) || key.revoked_at.is_some() {
            return Err(refused());
        }
        if !key.allows(Scope::Send) {
            return Err(ServerReply::new(
                535,
                "5.7.8",
                "this API key lacks the `send` scope",
            ));
        }
        Ok(key.id.to_string())
    }

    async fn mail_from(&self, _session: &Session, address: &str) -> Result<(), ServerReply> {
        EmailAddress::parse(address)
            .map(|_| ())
            .map_err(|e| ServerReply::new(553, "5.1.7", format!("bad sender address: {e}")))
    }

    async fn rcpt_to(
        &self,
        _session: &Session,
        _envelope: &ReceivedEnvelope,
        address: &str,
    ) -> Result<(), ServerReply> {
        EmailAddress::parse(address)
            .map(|_| ())
            .map_err(|e| ServerReply::new(553, "5.1.3", format!("bad recipient address: {e}")))
    }

    async fn data(
        &self,
        session: &Session,
        envelope: &ReceivedEnvelope,
        message: Vec<u8>,
    ) -> ServerReply {
        let Some(key_id) = session.identity.as_deref().and_then(ApiKeyId::parse) else {
            return ServerReply::new(530, "5.7.0", "authentication required");
        };
        let tenant = match self.state.store.api_key(&key_id).await {
            Ok(Some((key, tenant))) if key.revoked_at.is_none() => tenant,
            Ok(_) => return ServerReply::new(535, "5.7.8", "the API key is no longer valid"),
            Err(_) => return temporary_failure(),
        };
        let headers = HeaderBlock::parse(&message);
        let now = self.state.now();
        let from_address = match EmailAddress::parse(&envelope.mail_from) {
            Ok(a) => a.normalized(),
            Err(_) => return ServerReply::new(553, "5.1.7", "bad sender address"),
        };
        let mut recipients = Vec::new();
        for rcpt in &envelope.recipients {
            let Ok(address) = EmailAddress::parse(rcpt) else {
                return ServerReply::new(553, "5.1.3", format!("bad recipient address <{rcpt}>"));
            };
            recipients.push(NewRecipient {
                delivery_id: DeliveryId::generate(),
                address: address.normalized(),
                kind: RecipientKind::To,
                deliverable_domain: address.can_receive_mail(),
            });
        }
        let stream = headers
            .get("x-posthorn-stream")
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| crate::api::valid_stream_name(s))
            .unwrap_or_else(|| crate::api::DEFAULT_STREAM.to_owned());
        let from_header = headers
            .get("from")
            .filter(|f| Mailbox::parse(f.trim()).is_ok())
            .map_or_else(|| envelope.mail_from.clone(), |f| f.trim().to_owned());
        let raw = prepare_raw(&message, &headers, now);
        let size = raw.len() as u64;
        let id = MessageId::generate();
        let stream_requires_confirmation = self
            .state
            .config
            .streams
            .get(&stream)
            .is_some_and(|s| s.require_confirmation);
        let new = NewMessage {
            id: id.clone(),
            tenant_id: tenant.id.clone(),
            from_header,
            from_address,
            to_header: None,
            cc_header: None,
            raw_mime: Some(raw),
            reply_to: None,
            subject: headers
                .get("subject")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            text: None,
            html: None,
            headers: serde_json::json!({}),
            tags: Vec::new(),
            metadata: serde_json::json!({}),
            campaign: headers
                .get("x-posthorn-campaign")
                .map(|c| c.trim().to_owned())
                .filter(|c| !c.is_empty()),
            test: false,
            send_at: None,
            expires_at: None,
            tracking_opens: None,
            tracking_clicks: None,
            size,
            source: EventSource::SmtpSubmission,
            recipients,
            idempotency: None,
            stream_requires_confirmation,
            campaign_dedupe: tenant
                .campaign_dedupe
                .unwrap_or(self.state.config.policy.campaign_dedupe),
            stream,
            accepted_at: now,
        };
        match self.state.store.accept_message(new).await {
            Ok(AcceptOutcome::Accepted(receipt)) => {
                self.state.delivery_wake.notify_one();
                self.state
                    .metrics
                    .count_accepted(receipt.deliveries.iter().map(|d| d.status.clone()));
                ServerReply::new(250, "2.0.0", format!("queued as {id}"))
            }
            Ok(_) => temporary_failure(),
            Err(e) => {
                tracing::error!(error = %e, "accepting an SMTP submission failed");
                crate::error::smtp_store_failure(&e)
            }
        }
    }
}

/// The message as it will be sent: without Bcc and our X-Posthorn headers,
/// with Message-ID and Date when the client left them out.
fn prepare_raw(message: &[u8], headers: &HeaderBlock, now: i64) -> Vec<u8> {
    let head = String::from_utf8_lossy(&message[..headers.body_start]);
    let mut out = Vec::with_capacity(message.len() + 128);
    let mut skipping = false;
    for line in head.split_inclusive('\n') {
        let continuation = line.starts_with([' ', '\t']);
        if !continuation {
            let name = line
                .split(':')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            skipping = matches!(
                name.as_str(),
                "bcc" | "x-posthorn-stream" | "x-posthorn-campaign"
            );
        }
        if !skipping {
            out.extend_from_slice(line.as_bytes());
        }
    }
    // Keep the blank line that ends the header section at the end.
    let mut extra = String::new();
    if headers.get("message-id").is_none() {
        extra.push_str(&format!(
            "Message-ID: <{}@posthorn>\r\n",
            MessageId::generate()
        ));
    }
    if headers.get("date").is_none() {
        // mail-builder already writes RFC 5322 dates.
        let date = mail_builder::headers::date::Date::new(now / 1000).to_rfc822();
        extra.push_str(&format!("Date: {date}\r\n"));
    }
    if !extra.is_empty() {
        out.splice(0..0, extra.into_bytes());
    }
    out.extend_from_slice(&message[headers.body_start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_messages_lose_bcc_and_our_headers_and_gain_missing_ones() {
        let message = b"From: a@x.example\r\nBcc: secret@x.example,\r\n  other@x.example\r\nX-Posthorn-Stream: news\r\nSubject: Hi\r\n  there\r\n\r\nBody\r\nBcc: in the body stays\r\n";
        let headers = HeaderBlock::parse(message);
        assert_eq!(headers.get("subject"), Some("Hi there"));
        assert_eq!(headers.get("x-posthorn-stream"), Some("news"));
        let raw = String::from_utf8(prepare_raw(message, &headers, 1_795_478_400_000)).unwrap();
        assert!(!raw.contains("secret@") && !raw.contains("other@"), "{raw}");
        assert!(!raw.contains("X-Posthorn-Stream"), "{raw}");
        assert!(
            raw.contains("Message-ID: <") && raw.contains("Date: Tue, 24 Nov 2026 00:00:00 +0000"),
            "{raw}"
        );
        assert!(
            raw.ends_with("\r\n\r\nBody\r\nBcc: in the body stays\r\n"),
            "{raw}"
        );
        assert!(raw.contains("Subject: Hi\r\n  there\r\n"), "{raw}");
    }
}
