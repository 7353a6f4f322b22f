//! The inbound MX: where bounces, delay notices, complaints (ARF) and
//! auto-replies come back. It accepts mail only for Posthorn's own addresses
//! (`bounces+TOKEN@` return paths and the complaint address), so it is never
//! an open relay; reads each message with `posthorn-bounce`; finds the
//! delivery (the signed VERP token, or failing that the returned message's
//! Message-ID); and records what it says through the same fold and effects
//! as every other event. Whatever it cannot attribute is kept as an orphan,
//! never dropped. The 250 is sent only once the message is durably stored.
//! The decisions from those facts (attribution, orphan reasons, which
//! event a record means) are `posthorn_bounce::inbound`; this file does the
//! I/O around them.

use crate::app::AppState;
use crate::delivery::verp::VerpSigner;
use posthorn_bounce::inbound::{Attribution, Facts, OrphanReason, Verdict, judge};
use posthorn_core::EnhancedCode;
use posthorn_core::address::{BOUNCE_PREFIX, UNSUBSCRIBE_PREFIX};
use posthorn_core::config::Config;
use posthorn_core::event::UnsubscribeScope;
use posthorn_core::id::InboundId;
use posthorn_core::{EventId, EventSource, external_id};
use posthorn_smtp::server::{Handler, ReceivedEnvelope, ServerReply, Session};
use posthorn_store::{InboundOutcome, InboundRecord, NewEvent, NewInbound};
use sha2::{Digest, Sha256};

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
        let (local, domain) = address.rsplit_once('@').ok_or_else(|| {
            ServerReply::new(
                501,
                EnhancedCode::of(5, 1, 3),
                "bad recipient address syntax",
            )
        })?;
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if !self.domains.is_empty() && !self.domains.contains(&domain) {
            return Err(ServerReply::new(
                550,
                EnhancedCode::of(5, 7, 1),
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
        if let Some(token) = token_after(UNSUBSCRIBE_PREFIX) {
            return Ok(OurAddress::Unsubscribe { token });
        }
        Err(ServerReply::new(
            550,
            EnhancedCode::of(5, 1, 1),
            format!("<{address}>: no such mailbox here (this server only takes returned mail)"),
        ))
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
        // Mail to a copy's unsubscribe address is attributed by its own
        // token only: what it says does not matter (see `judge`).
        let unsubscribe_token = addresses.iter().find_map(|a| match a {
            OurAddress::Unsubscribe { token } => Some(token.clone()),
            _ => None,
        });
        let verify = |token: &str| self.verp.verify(token);
        let attribution = match &unsubscribe_token {
            Some(token) => Attribution::decide(verify, std::slice::from_ref(token), &[]),
            None => Attribution::decide(verify, &envelope_tokens, &records),
        };
        let found = match attribution.delivery() {
            Some(delivery) => self
                .state
                .store
                .delivery_owner(delivery)
                .await?
                .map(|(tenant, recipient)| (delivery.clone(), tenant, recipient)),
            None => None,
        };
        let reporting_domain = envelope
            .mail_from
            .rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase());
        let verdict = judge(Facts {
            attribution: &attribution,
            recipient: found.as_ref().map(|(_, _, recipient)| recipient.as_str()),
            records: &records,
            unsubscribe: unsubscribe_token.is_some(),
            reporting_domain: reporting_domain.as_deref(),
        });
        let (Verdict::Attributed { kind, .. } | Verdict::Orphan { kind, .. }) = verdict;
        let mut record = InboundRecord {
            id: InboundId::generate(),
            received_at: now,
            tenant_id: None,
            delivery_id: None,
            mail_from: envelope.mail_from.clone(),
            rcpt_to: envelope.recipients.clone(),
            kind,
            outcome: InboundOutcome::Orphan,
            orphan_reason: None,
            attribution: None,
            records: serde_json::to_value(&records).unwrap_or_default(),
            size: raw.len() as u64,
            event_ids: Vec::new(),
        };
        let mut events = Vec::new();
        match (verdict, found) {
            (Verdict::Attributed { by, details, .. }, Some((delivery, tenant, _))) => {
                record.attribution = Some(by);
                match details {
                    Some(details) => {
                        // An unsubscribe counts once however it came (link,
                        // one-click, mail): the tracker uses the same id. A
                        // report counts once however often it is received.
                        let external_id = if unsubscribe_token.is_some() {
                            external_id::unsubscribe(&delivery, UnsubscribeScope::Stream)
                        } else {
                            external_id::inbound(
                                &Sha256::digest(&raw)[..16],
                                details.kind().as_str(),
                            )
                        };
                        // The time of arrival: a report's own dates are the
                        // remote clock's, and often missing.
                        events.push(NewEvent {
                            id: EventId::generate(),
                            delivery_id: delivery.clone(),
                            occurred_at: now,
                            recorded_at: now,
                            source: EventSource::InboundMx,
                            external_id: Some(external_id),
                            details,
                        });
                        record.outcome = InboundOutcome::Recorded;
                    }
                    None => record.outcome = InboundOutcome::Note,
                }
                record.tenant_id = Some(tenant);
                record.delivery_id = Some(delivery);
            }
            (Verdict::Orphan { reason, .. }, _) => {
                record.orphan_reason = Some(reason);
            }
            // `judge` attributes only a delivery whose recipient it was
            // given, that is one found; were it not, it is unknown.
            (Verdict::Attributed { .. }, None) => {
                record.orphan_reason = Some(OrphanReason::UnknownDelivery);
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
            .count_inbound(kept.kind.as_str(), kept.outcome.as_str());
        tracing::info!(
            inbound = %kept.id,
            kind = kept.kind.as_str(),
            outcome = kept.outcome.as_str(),
            reason = kept.orphan_reason.map_or("", OrphanReason::as_str),
            delivery = kept.delivery_id.as_ref().map(|d| d.to_string()).unwrap_or_default(),
            "inbound message kept"
        );
        Ok(kept)
    }
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
            Ok(kept) => ServerReply::new(
                250,
                EnhancedCode::of(2, 0, 0),
                format!("kept as {}", kept.id),
            ),
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
    use posthorn_bounce::{Reason, Record, RecordKind};
    use posthorn_core::DeliveryId;
    use posthorn_core::status::BounceType;

    fn rules(domains: &[&str]) -> AcceptRules {
        AcceptRules {
            domains: domains.iter().map(|d| d.to_string()).collect(),
            complaint_local_part: "fbl".into(),
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
    fn after_a_secret_is_replaced_old_return_paths_are_attributed_and_strangers_are_not() {
        let verp = VerpSigner::new(b"new").also_accepting([b"old".as_slice()]);
        let delivery = DeliveryId::generate();
        let before_rotation = VerpSigner::new(b"old").token(&delivery);
        let unknown = VerpSigner::new(b"never listed").token(&delivery);
        let with_id = Record {
            kind: RecordKind::Bounce,
            recipient: Some("gone@example.com".into()),
            status: EnhancedCode::new(5, 1, 1),
            reply_code: Some(550),
            diagnostic: None,
            remote_mta: None,
            reason: Reason::Userunknown,
            bounce_type: BounceType::Hard,
            rule: "dsn.status",
            original_message_id: Some(format!("{delivery}@sender.example")),
            envelope_id: None,
            delivery_token: None,
            feedback_type: None,
            source_ip: None,
            user_agent: None,
        };
        let verify = |token: &str| verp.verify(token);
        assert_eq!(
            Attribution::decide(verify, &[before_rotation], &[]),
            Attribution::Verp(delivery.clone())
        );
        assert_eq!(
            Attribution::decide(verify, &[unknown], std::slice::from_ref(&with_id)),
            Attribution::TamperedToken,
            "a secret neither current nor listed is a forgery, Message-ID or not"
        );
    }
}
