//! SMTP submission, a second way in beside `POST /v1/messages`: clients log
//! in with AUTH PLAIN or LOGIN whose password is an API key with the `send`
//! scope, and every RCPT becomes one delivery through the same policy chain
//! as the HTTP API. The 250 after the data names the message id.
//!
//! The message is kept as the client built it and sent byte for byte;
//! `Bcc`, `Resent-Bcc` and `Return-Path` are removed, and `Message-ID`/`Date`
//! are added when missing. `X-Posthorn-Stream` and `X-Posthorn-Campaign`
//! choose the stream and campaign (and are removed before sending). The
//! content rules and the settings they resolve to are the API's
//! (`posthorn_core::submission::validate`): this door only reads the
//! message into a draft; what breaks the rules is refused with 554 5.6.0
//! (550 5.7.1 for a header Posthorn owns: signatures, authentication
//! results, unknown `X-Posthorn-*`), never repaired.

use crate::app::AppState;
use crate::headers::{HeaderBlock, unfold};
use crate::keys::{self, KeyRefusal};
use posthorn_core::EnhancedCode;
use posthorn_core::address::{EmailAddress, Mailbox};
use posthorn_core::id::ApiKeyId;
use posthorn_core::rfc5322;
use posthorn_core::submission::{self, Draft, FieldError, RawHeaderRule};
use posthorn_core::{DeliveryId, EventSource, MessageId};
use posthorn_smtp::server::{Handler, ReceivedEnvelope, ServerReply, Session};
use posthorn_store::{
    AcceptOutcome, MessageContent, NewMessage, NewRecipient, RecipientKind, Scope, SenderCheck,
};

pub struct SubmissionHandler {
    pub state: AppState,
}

fn temporary_failure() -> ServerReply {
    ServerReply::new(
        451,
        EnhancedCode::of(4, 3, 0),
        "temporary failure on our side; try again",
    )
}

#[async_trait::async_trait]
impl Handler for SubmissionHandler {
    /// The password is the API key; the user name is not checked (clients
    /// insist on sending one).
    async fn auth(&self, _username: &str, password: &str) -> Result<String, ServerReply> {
        let (key, _tenant) = match keys::verify(&*self.state.store, password.trim()).await {
            Ok(found) => found,
            // A revoked key is refused like a wrong one: SMTP has one
            // reply for both.
            Err(KeyRefusal::Invalid | KeyRefusal::Revoked) => {
                return Err(ServerReply::new(
                    535,
                    EnhancedCode::of(5, 7, 8),
                    "authentication failed",
                ));
            }
            Err(KeyRefusal::Store(_)) => return Err(temporary_failure()),
        };
        if !key.allows(Scope::Send) {
            return Err(ServerReply::new(
                535,
                EnhancedCode::of(5, 7, 8),
                "this API key lacks the `send` scope",
            ));
        }
        Ok(key.id.to_string())
    }

    async fn mail_from(&self, _session: &Session, address: &str) -> Result<(), ServerReply> {
        EmailAddress::parse(address).map(|_| ()).map_err(|e| {
            ServerReply::new(
                553,
                EnhancedCode::of(5, 1, 7),
                format!("bad sender address: {e}"),
            )
        })
    }

    async fn rcpt_to(
        &self,
        _session: &Session,
        _envelope: &ReceivedEnvelope,
        address: &str,
    ) -> Result<(), ServerReply> {
        EmailAddress::parse(address).map(|_| ()).map_err(|e| {
            ServerReply::new(
                553,
                EnhancedCode::of(5, 1, 3),
                format!("bad recipient address: {e}"),
            )
        })
    }

    async fn data(
        &self,
        session: &Session,
        envelope: &ReceivedEnvelope,
        message: Vec<u8>,
    ) -> ServerReply {
        let Some(key_id) = session.identity.as_deref().and_then(ApiKeyId::parse) else {
            return ServerReply::new(530, EnhancedCode::of(5, 7, 0), "authentication required");
        };
        let tenant = match self.state.store.api_key(&key_id).await {
            Ok(Some((key, tenant))) if key.revoked_at.is_none() => tenant,
            Ok(_) => {
                return ServerReply::new(
                    535,
                    EnhancedCode::of(5, 7, 8),
                    "the API key is no longer valid",
                );
            }
            Err(_) => return temporary_failure(),
        };
        // The content rules first, as the API applies them: nothing about
        // the message is stored unless all of them hold.
        let settings = submission::Settings {
            config: &self.state.config,
            tenant_campaign_dedupe: tenant.campaign_dedupe,
        };
        let submitted = match read_message(&message, &settings) {
            Ok(s) => s,
            Err(e) => return refusal(&e),
        };
        let headers = HeaderBlock::parse(&message);
        let now = self.state.now();
        let from_address = match EmailAddress::parse(&envelope.mail_from) {
            Ok(a) => a.normalized(),
            Err(_) => {
                return ServerReply::new(553, EnhancedCode::of(5, 1, 7), "bad sender address");
            }
        };
        let mut recipients = Vec::new();
        for rcpt in &envelope.recipients {
            let Ok(address) = EmailAddress::parse(rcpt) else {
                return ServerReply::new(
                    553,
                    EnhancedCode::of(5, 1, 3),
                    format!("bad recipient address <{rcpt}>"),
                );
            };
            recipients.push(NewRecipient {
                delivery_id: DeliveryId::generate(),
                address: address.normalized(),
                kind: RecipientKind::To,
                deliverable_domain: address.can_receive_mail(),
            });
        }
        let valid = submitted.valid;
        let from_header = headers
            .get("from")
            .filter(|f| Mailbox::parse(f.trim()).is_ok())
            .map_or_else(|| envelope.mail_from.clone(), |f| f.trim().to_owned());
        let raw = prepare_raw(&message, &submitted.kept, now);
        let size = raw.len() as u64;
        let id = MessageId::generate();
        let new = NewMessage {
            id: id.clone(),
            sender_check: SenderCheck {
                domains: sender_domains(&from_address, &headers),
                require_own_domain: valid.require_own_domain,
            },
            tenant_id: tenant.id.clone(),
            from_address,
            // What the API shows of a message that went out as the client
            // built it: its From and Subject; the rest is in `raw_mime`.
            content: MessageContent {
                from: from_header,
                reply_to: None,
                to: Vec::new(),
                cc: Vec::new(),
                subject: submitted.subject.unwrap_or_default(),
                text: None,
                html: None,
                headers: serde_json::json!({}),
                tags: Vec::new(),
                metadata: serde_json::json!({}),
                raw_mime: Some(raw),
            },
            campaign: valid.campaign,
            test: false,
            send_at: valid.send_at,
            expires_at: valid.expires_at,
            tracking_opens: valid.tracking_opens,
            tracking_clicks: valid.tracking_clicks,
            size,
            source: EventSource::SmtpSubmission,
            recipients,
            idempotency: None,
            stream_requires_confirmation: valid.stream_requires_confirmation,
            campaign_dedupe: valid.campaign_dedupe,
            stream: valid.stream,
            accepted_at: now,
        };
        match self.state.store.accept_message(new).await {
            Ok(AcceptOutcome::Accepted(_)) => {
                ServerReply::new(250, EnhancedCode::of(2, 0, 0), format!("queued as {id}"))
            }
            Ok(AcceptOutcome::SenderRefused { refusal, domain }) => ServerReply::new(
                550,
                EnhancedCode::of(5, 7, 1),
                format!("{refusal}: {domain}"),
            ),
            Ok(_) => temporary_failure(),
            Err(e) => {
                tracing::error!(error = %e, "accepting an SMTP submission failed");
                crate::error::smtp_store_failure(&e)
            }
        }
    }
}

/// The envelope sender's and the From header's domains: the accepting
/// transaction refuses the message when one belongs to another tenant
/// (or, with `[policy] require_own_domain`, not to this one).
fn sender_domains(envelope_from: &str, headers: &HeaderBlock) -> Vec<String> {
    let envelope = envelope_from.rsplit_once('@').map(|(_, d)| d.to_owned());
    let header_from = headers
        .get("from")
        .and_then(|f| Mailbox::parse(f.trim()).ok())
        .map(|m| m.address.domain().to_owned());
    envelope.into_iter().chain(header_from).collect()
}

/// What submission reads from a client-built message that passed the
/// content rules.
#[derive(Debug)]
struct Submitted {
    subject: Option<String>,
    /// The stream and campaign chosen by `X-Posthorn-*` and the settings
    /// they resolve to, exactly as the API resolves its fields.
    valid: submission::Valid,
    /// The byte ranges of the header fields that go out as sent, in order,
    /// and whether Message-ID and Date are among them.
    kept: KeptHeaders,
}

#[derive(Debug, Default)]
struct KeptHeaders {
    fields: Vec<std::ops::Range<usize>>,
    has_message_id: bool,
    has_date: bool,
    /// Where the header fields end: the blank line (if any) and the body
    /// follow.
    header_end: usize,
}

/// Applies the shared content rules (`posthorn_core::submission`) to a
/// message as an SMTP client built it. Works on the bytes: a field that is
/// not ASCII or UTF-8 text is refused, never converted. Each field is kept,
/// removed (blind copies, a return path) or consumed (our `X-Posthorn-*`
/// settings), or the message is refused (a header Posthorn owns).
fn read_message(
    message: &[u8],
    settings: &submission::Settings<'_>,
) -> Result<Submitted, FieldError> {
    submission::check_body("message", message)?;
    // A line that is not a field (no colon, or leading whitespace with no
    // field to continue) is refused below, never skipped.
    let (fields, _body_start) = rfc5322::read(message);
    let mut kept = KeptHeaders {
        header_end: fields.last().map_or(0, |f| f.range.end),
        ..Default::default()
    };
    let (mut subject, mut stream, mut campaign) = (None, None, None);
    for field in &fields {
        let name = field
            .name()
            .filter(|n| rfc5322::is_field_name(n))
            .and_then(|n| std::str::from_utf8(n).ok())
            .ok_or_else(|| {
                FieldError::new(
                    "message",
                    "invalid_header",
                    "the header section has a line that is not a header field (`Name: value`)",
                )
            })?;
        match submission::raw_header_rule(name) {
            RawHeaderRule::Refuse => {
                return Err(FieldError::new(
                    name,
                    "reserved_header",
                    format!("`{name}` is written by Posthorn alone"),
                ));
            }
            RawHeaderRule::Remove => continue,
            RawHeaderRule::Consume => {
                // Never sent: its value is judged as the API's field is
                // (`stream`, `campaign`), so both doors answer alike.
                let value = unfold(submission::raw_header_text(name, field.value())?);
                let (slot, field, code) = if name.eq_ignore_ascii_case("x-posthorn-stream") {
                    (&mut stream, "stream", "invalid_stream")
                } else {
                    (&mut campaign, "campaign", "invalid_campaign")
                };
                // The API's JSON has room for one value; a second header
                // would make us pick one silently.
                if slot.is_some() {
                    return Err(FieldError::new(
                        field,
                        code,
                        format!("`{name}` is given more than once"),
                    ));
                }
                *slot = Some(value);
                continue;
            }
            RawHeaderRule::Keep => submission::check_raw_header(name, field.value())?,
        }
        let value = unfold(submission::raw_header_text(name, field.value())?);
        if name.eq_ignore_ascii_case("subject") {
            subject.get_or_insert(value);
        }
        kept.has_message_id |= name.eq_ignore_ascii_case("message-id");
        kept.has_date |= name.eq_ignore_ascii_case("date");
        kept.fields.push(field.range.clone());
    }
    let draft = Draft {
        subject: subject.as_deref(),
        stream: stream.as_deref(),
        campaign: campaign.as_deref(),
        ..Default::default()
    };
    let valid = submission::validate(&draft, settings)
        .map_err(|errors| errors.into_iter().next().expect("an Err holds an error"))?;
    Ok(Submitted {
        subject,
        valid,
        kept,
    })
}

/// A refused message: 550 5.7.1 for a header that is Posthorn's to write
/// (policy), 554 5.6.0 for content that breaks the rules. The text names
/// the field and the API's error code, so both doors read alike.
fn refusal(e: &FieldError) -> ServerReply {
    let (code, enhanced) = if e.is_policy() {
        (550, EnhancedCode::of(5, 7, 1))
    } else {
        (554, EnhancedCode::of(5, 6, 0))
    };
    ServerReply::new(
        code,
        enhanced,
        format!("{} ({}: {})", e.message, e.code, e.field),
    )
}

/// The message as it will be sent: the kept header fields byte for byte,
/// with Message-ID and Date in front when the client left them out, then the
/// blank line and the body exactly as received.
fn prepare_raw(message: &[u8], kept: &KeptHeaders, now: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 128);
    if !kept.has_message_id {
        out.extend_from_slice(
            format!("Message-ID: <{}@posthorn>\r\n", MessageId::generate()).as_bytes(),
        );
    }
    if !kept.has_date {
        // mail-builder already writes RFC 5322 dates.
        let date = mail_builder::headers::date::Date::new(now / 1000).to_rfc822();
        out.extend_from_slice(format!("Date: {date}\r\n").as_bytes());
    }
    for range in &kept.fields {
        out.extend_from_slice(&message[range.clone()]);
    }
    // The blank line and the body as the client sent them.
    out.extend_from_slice(&message[kept.header_end..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use posthorn_core::config::Config;

    fn read(message: &[u8]) -> Result<Submitted, FieldError> {
        let config = Config::default();
        let settings = submission::Settings {
            config: &config,
            tenant_campaign_dedupe: None,
        };
        read_message(message, &settings)
    }

    #[test]
    fn raw_messages_lose_bcc_and_our_headers_and_gain_missing_ones() {
        let message = b"From: a@x.example\r\nBcc: secret@x.example,\r\n  other@x.example\r\nX-Posthorn-Stream: news\r\nSubject: Hi\r\n  there\r\n\r\nBody\r\nBcc: in the body stays\r\n";
        let submitted = read(message).unwrap();
        assert_eq!(submitted.subject.as_deref(), Some("Hi there"));
        assert_eq!(submitted.valid.stream, "news");
        let raw =
            String::from_utf8(prepare_raw(message, &submitted.kept, 1_795_478_400_000)).unwrap();
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

    #[test]
    fn a_message_without_a_body_or_blank_line_keeps_its_end() {
        for (message, tail) in [
            (&b"Subject: a\r\n"[..], "Subject: a\r\n"),
            (b"Subject: a\r\n\r\n", "Subject: a\r\n\r\n"),
            (b"Subject: a\n\nbody", "Subject: a\n\nbody"),
        ] {
            let submitted = read(message).unwrap();
            let raw = String::from_utf8(prepare_raw(message, &submitted.kept, 0)).unwrap();
            assert!(raw.ends_with(tail), "{raw:?}");
        }
    }

    #[test]
    fn refusals_name_the_code_and_the_field() {
        let e = read(b"DKIM-Signature: v=1; d=victim.example\r\n\r\nhi").unwrap_err();
        let reply = refusal(&e);
        assert_eq!(
            (reply.code, reply.enhanced),
            (550, EnhancedCode::of(5, 7, 1))
        );
        assert!(
            reply.text.ends_with("(reserved_header: DKIM-Signature)"),
            "{}",
            reply.text
        );
        let e = read(b"X-Posthorn-Stream: Bad\r\n\r\nhi").unwrap_err();
        let reply = refusal(&e);
        assert_eq!(
            (reply.code, reply.enhanced),
            (554, EnhancedCode::of(5, 6, 0))
        );
        assert!(
            reply.text.ends_with("(invalid_stream: stream)"),
            "{}",
            reply.text
        );
        // A second setting is refused rather than one of them picked.
        for (message, ending) in [
            (
                &b"X-Posthorn-Stream: news\r\nX-Posthorn-Stream: alerts\r\n\r\nhi"[..],
                "(invalid_stream: stream)",
            ),
            (
                b"X-Posthorn-Campaign: a\r\nx-posthorn-campaign: a\r\n\r\nhi",
                "(invalid_campaign: campaign)",
            ),
        ] {
            let reply = refusal(&read(message).unwrap_err());
            assert_eq!(
                (reply.code, reply.enhanced),
                (554, EnhancedCode::of(5, 6, 0))
            );
            assert!(reply.text.ends_with(ending), "{}", reply.text);
        }
    }

    #[test]
    fn settings_resolve_as_the_api_resolves_them() {
        let mut config = Config::default();
        config.streams.insert(
            "news".into(),
            posthorn_core::config::StreamConfig {
                require_confirmation: true,
                ..Default::default()
            },
        );
        let settings = submission::Settings {
            config: &config,
            tenant_campaign_dedupe: Some(false),
        };
        let message = b"X-Posthorn-Stream: news\r\nX-Posthorn-Campaign: spring\r\n\r\nhi";
        let valid = read_message(message, &settings).unwrap().valid;
        assert!(valid.stream_requires_confirmation);
        assert!(!valid.campaign_dedupe, "the tenant's choice wins");
        assert_eq!(valid.campaign.as_deref(), Some("spring"));
    }
}
