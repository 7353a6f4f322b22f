//! The inbound MX: where bounces, delay notices, complaints (ARF) and
//! auto-replies come back. It accepts mail only for Posthorn's own addresses
//! (`bounces+TOKEN@` return paths and the complaint address), so it is never
//! an open relay; reads each message with `posthorn-bounce`; finds the
//! delivery (the signed VERP token, or failing that the returned message's
//! Message-ID); and records what it says through the same fold and effects
//! as every other event. Whatever it cannot attribute is kept as an orphan,
//! never dropped. The 250 is sent only once the message is durably stored.

use crate::app::AppState;
use crate::delivery::verp::VerpSigner;
use posthorn_bounce::{Record, RecordKind};
use posthorn_core::config::Config;
use posthorn_core::event::{
    BounceOrigin, Bounced, Complained, Deferred, EventDetails, UnsubscribeScope, Unsubscribed,
};
use posthorn_core::id::InboundId;
use posthorn_core::{DeliveryId, EventId, EventSource};
use posthorn_smtp::server::{Handler, ReceivedEnvelope, ServerReply, Session};
use posthorn_store::{InboundOutcome, InboundRecord, NewEvent, NewInbound};
use sha2::{Digest, Sha256};

/// The local part of a VERP return path, before the token.
const BOUNCE_PREFIX: &str = "bounces+";

/// Which addresses the MX takes mail for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptRules {
    /// Lower-case domains; empty: any domain (see `InboundConfig::domains`).
    pub domains: Vec<String>,
    pub complaint_local_part: String,
}

/// One of our addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OurAddress {
    /// A return path; the token is not verified yet (a tampered one is still
    /// accepted, to be kept as an orphan).
    Bounce { token: String },
    /// The feedback-loop address.
    Complaint,
    /// The mailto of a copy's `List-Unsubscribe`: `unsubscribe+TOKEN@`,
    /// TOKEN being the delivery's VERP token.
    Unsubscribe { token: String },
}

impl AcceptRules {
    pub fn from_config(config: &Config) -> Self {
        let mut domains: Vec<String> = config
            .inbound
            .domains
            .iter()
            .chain(config.delivery.return_path_domain.iter())
            .map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase())
            .filter(|d| !d.is_empty())
            .collect();
        domains.sort();
        domains.dedup();
        Self {
            domains,
            complaint_local_part: config.inbound.complaint_local_part.to_ascii_lowercase(),
        }
    }

    /// What an envelope recipient is to us, or the refusal to give.
    pub fn recipient(&self, address: &str) -> Result<OurAddress, ServerReply> {
        let (local, domain) = address
            .rsplit_once('@')
            .ok_or_else(|| ServerReply::new(501, "5.1.3", "bad recipient address syntax"))?;
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if !self.domains.is_empty() && !self.domains.contains(&domain) {
            return Err(ServerReply::new(
                550,
                "5.7.1",
                format!("relay access denied: this server takes no mail for {domain}"),
            ));
        }
        let local = local.to_ascii_lowercase();
        if local == self.complaint_local_part {
            return Ok(OurAddress::Complaint);
        }
        let token_after = |prefix: &str| {
            local
                .strip_prefix(prefix)
                .filter(|t| {
                    !t.is_empty() && t.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7'))
                })
                .map(str::to_owned)
        };
        if let Some(token) = token_after(BOUNCE_PREFIX) {
            return Ok(OurAddress::Bounce { token });
        }
        if let Some(token) = token_after(crate::tracking::UNSUBSCRIBE_PREFIX) {
            return Ok(OurAddress::Unsubscribe { token });
        }
        Err(ServerReply::new(
            550,
            "5.1.1",
            format!("<{address}>: no such mailbox here (this server only takes returned mail)"),
        ))
    }
}

/// How a message was tied to its delivery, or why it could not be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribution {
    /// By a signed VERP token (from the envelope or found in the report).
    Verp(DeliveryId),
    /// By the returned message's Message-ID (`<DELIVERY_ID@...>`, as we
    /// build it), when there is no token at all.
    MessageId(DeliveryId),
    /// A token whose signature does not hold: forged or damaged. Never
    /// trusted, not even with a Message-ID beside it.
    TamperedToken,
    /// Nothing points at a delivery.
    NoReference,
}

impl Attribution {
    /// Decides from the envelope's tokens, the report's tokens and Message-IDs.
    /// Pure apart from the signature check.
    pub fn decide(verp: &VerpSigner, envelope_tokens: &[String], records: &[Record]) -> Self {
        let tokens = envelope_tokens
            .iter()
            .map(String::as_str)
            .chain(records.iter().filter_map(|r| r.delivery_token.as_deref()));
        let mut tampered = false;
        for token in tokens {
            match verp.verify(token) {
                Some(delivery) => return Attribution::Verp(delivery),
                None => tampered = true,
            }
        }
        if tampered {
            return Attribution::TamperedToken;
        }
        records
            .iter()
            .filter_map(|r| r.original_message_id.as_deref())
            .find_map(delivery_of_message_id)
            .map_or(Attribution::NoReference, Attribution::MessageId)
    }

    fn delivery(&self) -> Option<&DeliveryId> {
        match self {
            Attribution::Verp(d) | Attribution::MessageId(d) => Some(d),
            _ => None,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Attribution::Verp(_) => "verp",
            Attribution::MessageId(_) => "message_id",
            Attribution::TamperedToken => "tampered_token",
            Attribution::NoReference => "no_reference",
        }
    }
}

/// The delivery id in a Message-ID we made: `DELIVERY_ID@domain`.
fn delivery_of_message_id(message_id: &str) -> Option<DeliveryId> {
    let id = message_id.trim().trim_start_matches('<');
    DeliveryId::parse(id.split('@').next()?)
}

/// The record that speaks about our recipient: the one naming it, else the
/// first that reports a failure or a complaint, else the first.
pub fn record_for<'r>(records: &'r [Record], recipient: &str) -> Option<&'r Record> {
    records
        .iter()
        .find(|r| {
            r.recipient
                .as_deref()
                .is_some_and(|a| a.eq_ignore_ascii_case(recipient))
        })
        .or_else(|| {
            records.iter().find(|r| {
                matches!(
                    r.kind,
                    RecordKind::Bounce | RecordKind::Delay | RecordKind::Complaint
                )
            })
        })
        .or_else(|| records.first())
}

/// The event a record means for its delivery; `None` for what is only a
/// note (auto-replies, success reports).
pub fn event_details(record: &Record, reporting_domain: Option<&str>) -> Option<EventDetails> {
    match record.kind {
        RecordKind::Bounce => Some(EventDetails::Bounced(Bounced {
            bounce_type: record.bounce_type,
            reason: Some(record.reason.as_str().to_owned()),
            smtp_code: record.reply_code,
            enhanced_code: record.status.clone(),
            reply_text: record.diagnostic.clone(),
            origin: BounceOrigin::Async,
            rule: Some(record.rule.to_owned()),
            mx_host: record.remote_mta.clone(),
        })),
        RecordKind::Delay => Some(EventDetails::Deferred(Deferred {
            attempt: 0,
            smtp_code: record.reply_code,
            enhanced_code: record.status.clone(),
            reply_text: record.diagnostic.clone(),
            next_retry_at: None,
            mx_host: record.remote_mta.clone(),
            ip: None,
        })),
        RecordKind::Complaint => Some(EventDetails::Complained(Complained {
            feedback_type: record.feedback_type.clone(),
            reporting_domain: reporting_domain.map(str::to_owned),
        })),
        RecordKind::Delivered | RecordKind::Vacation => None,
    }
}

pub struct InboundHandler {
    pub state: AppState,
    pub verp: VerpSigner,
    pub rules: AcceptRules,
}

impl InboundHandler {
    /// Reads, attributes and keeps one received message.
    pub async fn receive(
        &self,
        envelope: &ReceivedEnvelope,
        raw: Vec<u8>,
    ) -> Result<InboundRecord, posthorn_store::StoreError> {
        let now = self.state.now();
        let rules = self.state.reply_rules.clone();
        let (records, raw) =
            tokio::task::spawn_blocking(move || (posthorn_bounce::parse_with(&raw, &rules), raw))
                .await
                .map_err(|e| posthorn_store::StoreError::backend(format!("parser task: {e}")))?;
        let addresses: Vec<OurAddress> = envelope
            .recipients
            .iter()
            .filter_map(|r| self.rules.recipient(r).ok())
            .collect();
        let envelope_tokens: Vec<String> = addresses
            .iter()
            .filter_map(|a| match a {
                OurAddress::Bounce { token } => Some(token.clone()),
                _ => None,
            })
            .collect();
        // Mail to a copy's unsubscribe address unsubscribes its recipient,
        // whatever it says (RFC 2369: the address is the request).
        let unsubscribe_token = addresses.iter().find_map(|a| match a {
            OurAddress::Unsubscribe { token } => Some(token.clone()),
            _ => None,
        });
        let attribution = match &unsubscribe_token {
            Some(token) => Attribution::decide(&self.verp, std::slice::from_ref(token), &[]),
            None => Attribution::decide(&self.verp, &envelope_tokens, &records),
        };
        let owner = match attribution.delivery() {
            Some(delivery) => self
                .state
                .store
                .delivery_owner(delivery)
                .await?
                .map(|(tenant, recipient)| (delivery.clone(), tenant, recipient)),
            None => None,
        };
        let mut record = InboundRecord {
            id: InboundId::generate(),
            received_at: now,
            tenant_id: None,
            delivery_id: None,
            mail_from: envelope.mail_from.clone(),
            rcpt_to: envelope.recipients.clone(),
            kind: records
                .first()
                .map_or("not_bounce", |r| r.kind.as_str())
                .to_owned(),
            outcome: InboundOutcome::Orphan,
            orphan_reason: None,
            attribution: None,
            records: serde_json::to_value(&records).unwrap_or_default(),
            size: raw.len() as u64,
            event_ids: Vec::new(),
        };
        let mut events = Vec::new();
        match owner {
            None => {
                record.orphan_reason = Some(
                    match attribution {
                        Attribution::Verp(_) | Attribution::MessageId(_) => "unknown_delivery",
                        other => other.name(),
                    }
                    .to_owned(),
                );
            }
            Some((delivery, tenant, recipient)) => {
                record.attribution = Some(attribution.name().to_owned());
                let chosen = record_for(&records, &recipient);
                if let Some(chosen) = chosen {
                    record.kind = chosen.kind.as_str().to_owned();
                }
                let reporting_domain = envelope
                    .mail_from
                    .rsplit_once('@')
                    .map(|(_, d)| d.to_ascii_lowercase());
                let details = if unsubscribe_token.is_some() {
                    record.kind = "unsubscribe".to_owned();
                    Some(EventDetails::Unsubscribed(Unsubscribed {
                        scope: UnsubscribeScope::Stream,
                        method: Some("mailto".to_owned()),
                    }))
                } else {
                    chosen.and_then(|r| event_details(r, reporting_domain.as_deref()))
                };
                match details {
                    Some(details) => {
                        // The time of arrival: a report's own dates are the
                        // remote clock's, and often missing.
                        events.push(NewEvent {
                            id: EventId::generate(),
                            delivery_id: delivery.clone(),
                            occurred_at: now,
                            recorded_at: now,
                            source: EventSource::InboundMx,
                            // An unsubscribe counts once however it came
                            // (link, one-click, mail): the tracker uses the
                            // same id.
                            external_id: Some(if unsubscribe_token.is_some() {
                                format!("unsubscribe:{delivery}:stream")
                            } else {
                                external_id(&raw, details.kind().as_str())
                            }),
                            details,
                        });
                        record.outcome = InboundOutcome::Recorded;
                    }
                    None => record.outcome = InboundOutcome::Note,
                }
                record.tenant_id = Some(tenant);
                record.delivery_id = Some(delivery);
            }
        }
        let kept = self
            .state
            .store
            .record_inbound(NewInbound {
                record,
                raw,
                events,
            })
            .await?;
        self.state
            .metrics
            .count_inbound(&kept.kind, kept.outcome.as_str());
        tracing::info!(
            inbound = %kept.id,
            kind = %kept.kind,
            outcome = kept.outcome.as_str(),
            reason = kept.orphan_reason.as_deref().unwrap_or(""),
            delivery = kept.delivery_id.as_ref().map(|d| d.to_string()).unwrap_or_default(),
            "inbound message kept"
        );
        Ok(kept)
    }
}

/// The same report received twice (a retransmission after a lost 250) must
/// not count twice: the event's external id is a digest of the bytes.
fn external_id(raw: &[u8], kind: &str) -> String {
    let digest = Sha256::digest(raw);
    format!("inbound:{}:{kind}", hex::encode(&digest[..16]))
}

#[async_trait::async_trait]
impl Handler for InboundHandler {
    // MAIL FROM: the trait's default, any sender. Bounces come from the
    // null sender, complaints and auto-replies from anyone.

    async fn rcpt_to(
        &self,
        _session: &Session,
        _envelope: &ReceivedEnvelope,
        address: &str,
    ) -> Result<(), ServerReply> {
        self.rules.recipient(address).map(|_| ())
    }

    async fn data(
        &self,
        _session: &Session,
        envelope: &ReceivedEnvelope,
        message: Vec<u8>,
    ) -> ServerReply {
        match self.receive(envelope, message).await {
            Ok(kept) => ServerReply::new(250, "2.0.0", format!("kept as {}", kept.id)),
            Err(e) => {
                tracing::error!(error = %e, "inbound MX: could not keep a message");
                crate::error::smtp_store_failure(&e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use posthorn_bounce::Reason;
    use posthorn_core::status::BounceType;

    fn rules(domains: &[&str]) -> AcceptRules {
        AcceptRules {
            domains: domains.iter().map(|d| d.to_string()).collect(),
            complaint_local_part: "fbl".into(),
        }
    }

    fn record(kind: RecordKind) -> Record {
        Record {
            kind,
            recipient: Some("gone@example.com".into()),
            status: Some("5.1.1".into()),
            reply_code: Some(550),
            diagnostic: Some("550 5.1.1 user unknown".into()),
            remote_mta: Some("mx.example.com".into()),
            reason: Reason::Userunknown,
            bounce_type: BounceType::Hard,
            rule: "dsn.status",
            original_message_id: None,
            envelope_id: None,
            delivery_token: None,
            feedback_type: None,
            source_ip: None,
            user_agent: None,
        }
    }

    #[test]
    fn only_our_addresses_are_accepted() {
        let any = rules(&[]);
        assert_eq!(
            any.recipient("bounces+abc234@Sender.Example"),
            Ok(OurAddress::Bounce {
                token: "abc234".into()
            })
        );
        assert_eq!(
            any.recipient("FBL@sender.example"),
            Ok(OurAddress::Complaint)
        );
        for refused in [
            "someone@example.com",
            "bounces+@example.com",
            "bounces+has-dash@example.com",
            "bounces+abc1@example.com",
            "postmaster@example.com",
            "no-at-sign",
        ] {
            assert!(any.recipient(refused).is_err(), "{refused} was accepted");
        }
        let one = rules(&["bounce.example.net"]);
        assert!(one.recipient("bounces+abc@bounce.example.net").is_ok());
        let refusal = one.recipient("bounces+abc@elsewhere.example").unwrap_err();
        assert_eq!(refusal.code, 550);
        assert!(one.recipient("fbl@elsewhere.example").is_err());
    }

    #[test]
    fn attribution_prefers_a_genuine_token_and_never_trusts_a_forged_one() {
        let verp = VerpSigner::new(b"secret");
        let delivery = DeliveryId::generate();
        let genuine = verp.token(&delivery);
        let forged = VerpSigner::new(b"other").token(&delivery);
        let mut with_id = record(RecordKind::Bounce);
        with_id.original_message_id = Some(format!("{delivery}@sender.example"));

        assert_eq!(
            Attribution::decide(&verp, std::slice::from_ref(&genuine), &[]),
            Attribution::Verp(delivery.clone())
        );
        // A forged envelope token, but a genuine one inside the report.
        let mut inside = record(RecordKind::Bounce);
        inside.delivery_token = Some(genuine);
        assert_eq!(
            Attribution::decide(&verp, std::slice::from_ref(&forged), &[inside]),
            Attribution::Verp(delivery.clone())
        );
        assert_eq!(
            Attribution::decide(&verp, &[forged], std::slice::from_ref(&with_id)),
            Attribution::TamperedToken
        );
        assert_eq!(
            Attribution::decide(&verp, &[], std::slice::from_ref(&with_id)),
            Attribution::MessageId(delivery)
        );
        assert_eq!(
            Attribution::decide(&verp, &[], &[record(RecordKind::Bounce)]),
            Attribution::NoReference
        );
    }

    #[test]
    fn after_a_secret_is_replaced_old_return_paths_are_attributed_and_strangers_are_not() {
        let verp = VerpSigner::new(b"new").also_accepting([b"old".as_slice()]);
        let delivery = DeliveryId::generate();
        let before_rotation = VerpSigner::new(b"old").token(&delivery);
        let unknown = VerpSigner::new(b"never listed").token(&delivery);
        let mut with_id = record(RecordKind::Bounce);
        with_id.original_message_id = Some(format!("{delivery}@sender.example"));
        assert_eq!(
            Attribution::decide(&verp, &[before_rotation], &[]),
            Attribution::Verp(delivery.clone())
        );
        assert_eq!(
            Attribution::decide(&verp, &[unknown], std::slice::from_ref(&with_id)),
            Attribution::TamperedToken,
            "a secret neither current nor listed is a forgery, Message-ID or not"
        );
    }

    #[test]
    fn each_kind_becomes_its_event() {
        let bounce = event_details(&record(RecordKind::Bounce), None).unwrap();
        let EventDetails::Bounced(b) = bounce else {
            panic!("not a bounce: {bounce:?}")
        };
        assert_eq!(b.origin, BounceOrigin::Async);
        assert_eq!(b.bounce_type, BounceType::Hard);
        assert_eq!(b.reason.as_deref(), Some("userunknown"));
        assert_eq!(b.rule.as_deref(), Some("dsn.status"));
        assert_eq!(b.smtp_code, Some(550));
        assert!(matches!(
            event_details(&record(RecordKind::Delay), None),
            Some(EventDetails::Deferred(_))
        ));
        let mut complaint = record(RecordKind::Complaint);
        complaint.feedback_type = Some("abuse".into());
        assert_eq!(
            event_details(&complaint, Some("fbl.example.net")),
            Some(EventDetails::Complained(Complained {
                feedback_type: Some("abuse".into()),
                reporting_domain: Some("fbl.example.net".into()),
            }))
        );
        assert_eq!(event_details(&record(RecordKind::Vacation), None), None);
        assert_eq!(event_details(&record(RecordKind::Delivered), None), None);
    }

    #[test]
    fn the_record_about_our_recipient_is_chosen() {
        let mut other = record(RecordKind::Delivered);
        other.recipient = Some("other@example.com".into());
        let ours = record(RecordKind::Bounce);
        let records = vec![other.clone(), ours.clone()];
        assert_eq!(record_for(&records, "GONE@example.com"), Some(&ours));
        assert_eq!(record_for(&records, "unknown@example.com"), Some(&ours));
        assert_eq!(record_for(&[other.clone()], "x@y.z"), Some(&other));
        assert_eq!(record_for(&[], "x@y.z"), None);
    }
}
