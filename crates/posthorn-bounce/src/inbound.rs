//! What a message returned to the inbound MX means for a delivery, given
//! the facts the MX gathered: which delivery it is tied to and how
//! ([`Attribution`]), the record about that delivery's recipient
//! ([`record_for`]), and the event the record means ([`event_details`]).
//! The MX checks token signatures and looks deliveries up; everything it
//! decides from those facts is here, pure, and kept as the same text in the
//! inbound store ([`InboundKind`], [`OrphanReason`], [`AttributedBy`]).

use crate::parse::{Record, RecordKind};
use posthorn_core::DeliveryId;
use posthorn_core::event::{
    BounceOrigin, BounceVerdict, BounceWords, Bounced, Complained, Deferred, EventDetails,
    UnsubscribeScope, Unsubscribed,
};

// The stored names of what is decided here, kept in `posthorn-core` so that
// the store can read them back.
pub use posthorn_core::inbound::{AttributedBy, InboundKind, OrphanReason};

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
    /// Decides from the envelope's tokens, the report's tokens and
    /// Message-IDs; `verify` checks a token's signature (the secret stays
    /// with the caller) and names its delivery when it holds.
    pub fn decide(
        verify: impl Fn(&str) -> Option<DeliveryId>,
        envelope_tokens: &[String],
        records: &[Record],
    ) -> Self {
        let tokens = envelope_tokens
            .iter()
            .map(String::as_str)
            .chain(records.iter().filter_map(|r| r.delivery_token.as_deref()));
        let mut tampered = false;
        for token in tokens {
            match verify(token) {
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

    /// The delivery it names, to be looked up.
    pub fn delivery(&self) -> Option<&DeliveryId> {
        match self {
            Attribution::Verp(d) | Attribution::MessageId(d) => Some(d),
            Attribution::TamperedToken | Attribution::NoReference => None,
        }
    }
}

/// The delivery id in a Message-ID we made: `DELIVERY_ID@domain`.
fn delivery_of_message_id(message_id: &str) -> Option<DeliveryId> {
    let id = message_id.trim().trim_start_matches('<');
    DeliveryId::parse(id.split('@').next()?)
}

/// The facts about one received message, once its delivery was looked up.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub attribution: &'a Attribution,
    /// The recipient of the attributed delivery; `None` when no delivery
    /// was named or the one named does not exist.
    pub recipient: Option<&'a str>,
    pub records: &'a [Record],
    /// It came to a copy's unsubscribe address.
    pub unsubscribe: bool,
    /// The domain of the envelope sender (a complaint's reporter).
    pub reporting_domain: Option<&'a str>,
}

/// What is kept of a received message.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Tied to no delivery: kept for an operator to look at.
    Orphan {
        kind: InboundKind,
        reason: OrphanReason,
    },
    /// Tied to its delivery; `details` is the event to record, `None` for
    /// what is only a note (auto-replies, success reports).
    Attributed {
        kind: InboundKind,
        by: AttributedBy,
        details: Option<EventDetails>,
    },
}

/// What a received message means, given the facts.
pub fn judge(facts: Facts<'_>) -> Verdict {
    let first_kind = facts
        .records
        .first()
        .map_or(InboundKind::NotBounce, |r| InboundKind::Report(r.kind));
    let by = match facts.attribution {
        Attribution::Verp(_) => AttributedBy::Verp,
        Attribution::MessageId(_) => AttributedBy::MessageId,
        Attribution::TamperedToken => {
            return Verdict::Orphan {
                kind: first_kind,
                reason: OrphanReason::TamperedToken,
            };
        }
        Attribution::NoReference => {
            return Verdict::Orphan {
                kind: first_kind,
                reason: OrphanReason::NoReference,
            };
        }
    };
    let Some(recipient) = facts.recipient else {
        return Verdict::Orphan {
            kind: first_kind,
            reason: OrphanReason::UnknownDelivery,
        };
    };
    // Mail to a copy's unsubscribe address unsubscribes its recipient,
    // whatever it says (RFC 2369: the address is the request).
    if facts.unsubscribe {
        return Verdict::Attributed {
            kind: InboundKind::Unsubscribe,
            by,
            details: Some(EventDetails::Unsubscribed(Unsubscribed {
                scope: UnsubscribeScope::Stream,
                method: Some("mailto".to_owned()),
            })),
        };
    }
    match record_for(facts.records, recipient) {
        Some(chosen) => Verdict::Attributed {
            kind: InboundKind::Report(chosen.kind),
            by,
            details: event_details(chosen, facts.reporting_domain),
        },
        None => Verdict::Attributed {
            kind: InboundKind::NotBounce,
            by,
            details: None,
        },
    }
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
        RecordKind::Bounce => {
            let verdict = BounceVerdict {
                bounce_type: record.bounce_type,
                reason: record.reason.as_str().to_owned(),
                rule: record.rule.to_owned(),
            };
            let words = BounceWords {
                smtp_code: record.reply_code,
                enhanced_code: record.status,
                reply_text: record.diagnostic.clone(),
            };
            Some(EventDetails::Bounced(Bounced::new(
                verdict,
                BounceOrigin::Async,
                words,
                record.remote_mta.clone(),
            )))
        }
        RecordKind::Delay => Some(EventDetails::Deferred(Deferred {
            attempt: 0,
            smtp_code: record.reply_code,
            enhanced_code: record.status,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Reason;
    use posthorn_core::EnhancedCode;
    use posthorn_core::status::BounceType;

    fn record(kind: RecordKind) -> Record {
        Record {
            kind,
            recipient: Some("gone@example.com".into()),
            status: EnhancedCode::new(5, 1, 1),
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

    /// A stand-in for the VERP signer: `good-<uuid>` verifies, anything
    /// else is forged.
    fn verify(token: &str) -> Option<DeliveryId> {
        DeliveryId::parse(token.strip_prefix("good-")?)
    }

    #[test]
    fn attribution_prefers_a_genuine_token_and_never_trusts_a_forged_one() {
        let delivery = DeliveryId::generate();
        let genuine = format!("good-{delivery}");
        let forged = format!("bad-{delivery}");
        let mut with_id = record(RecordKind::Bounce);
        with_id.original_message_id = Some(format!("<{delivery}@sender.example>"));

        assert_eq!(
            Attribution::decide(verify, std::slice::from_ref(&genuine), &[]),
            Attribution::Verp(delivery.clone())
        );
        // A forged envelope token, but a genuine one inside the report.
        let mut inside = record(RecordKind::Bounce);
        inside.delivery_token = Some(genuine);
        assert_eq!(
            Attribution::decide(verify, std::slice::from_ref(&forged), &[inside]),
            Attribution::Verp(delivery.clone())
        );
        assert_eq!(
            Attribution::decide(verify, &[forged], std::slice::from_ref(&with_id)),
            Attribution::TamperedToken
        );
        assert_eq!(
            Attribution::decide(verify, &[], std::slice::from_ref(&with_id)),
            Attribution::MessageId(delivery)
        );
        assert_eq!(
            Attribution::decide(verify, &[], &[record(RecordKind::Bounce)]),
            Attribution::NoReference
        );
    }

    fn facts<'a>(attribution: &'a Attribution, records: &'a [Record]) -> Facts<'a> {
        Facts {
            attribution,
            recipient: Some("gone@example.com"),
            records,
            unsubscribe: false,
            reporting_domain: Some("fbl.example.net"),
        }
    }

    #[test]
    fn orphans_say_why_with_the_stored_words() {
        let records = [record(RecordKind::Delay)];
        let orphan = |attribution: Attribution, recipient: Option<&str>| {
            let mut facts = facts(&attribution, &records);
            facts.recipient = recipient;
            match judge(facts) {
                Verdict::Orphan { kind, reason } => (kind.as_str(), reason.as_str()),
                other => panic!("{other:?}"),
            }
        };
        let delivery = DeliveryId::generate();
        assert_eq!(
            orphan(Attribution::Verp(delivery.clone()), None),
            ("delay", "unknown_delivery")
        );
        assert_eq!(
            orphan(Attribution::MessageId(delivery), None),
            ("delay", "unknown_delivery")
        );
        assert_eq!(
            orphan(Attribution::TamperedToken, Some("gone@example.com")),
            ("delay", "tampered_token"),
            "a forged token is never trusted, even naming a real delivery"
        );
        assert_eq!(
            orphan(Attribution::NoReference, None),
            ("delay", "no_reference")
        );
        let empty = judge(Facts {
            records: &[],
            ..facts(&Attribution::NoReference, &[])
        });
        assert_eq!(
            empty,
            Verdict::Orphan {
                kind: InboundKind::NotBounce,
                reason: OrphanReason::NoReference
            }
        );
        assert_eq!(InboundKind::NotBounce.as_str(), "not_bounce");
    }

    #[test]
    fn attributed_messages_record_what_the_record_about_the_recipient_says() {
        let by_verp = Attribution::Verp(DeliveryId::generate());
        let mut other = record(RecordKind::Delivered);
        other.recipient = Some("other@example.com".into());
        let records = [other, record(RecordKind::Bounce)];
        let Verdict::Attributed { kind, by, details } = judge(facts(&by_verp, &records)) else {
            panic!()
        };
        assert_eq!((kind.as_str(), by.as_str()), ("bounce", "verp"));
        assert!(matches!(details, Some(EventDetails::Bounced(_))));

        // An auto-reply is only a note.
        let by_id = Attribution::MessageId(DeliveryId::generate());
        let vacation = [record(RecordKind::Vacation)];
        assert_eq!(
            judge(facts(&by_id, &vacation)),
            Verdict::Attributed {
                kind: InboundKind::Report(RecordKind::Vacation),
                by: AttributedBy::MessageId,
                details: None
            }
        );
        // Nothing recognised, but tied to its delivery.
        assert_eq!(
            judge(facts(&by_id, &[])),
            Verdict::Attributed {
                kind: InboundKind::NotBounce,
                by: AttributedBy::MessageId,
                details: None
            }
        );
    }

    #[test]
    fn mail_to_the_unsubscribe_address_unsubscribes_whatever_it_says() {
        let by_verp = Attribution::Verp(DeliveryId::generate());
        let records = [record(RecordKind::Bounce)];
        let verdict = judge(Facts {
            unsubscribe: true,
            ..facts(&by_verp, &records)
        });
        assert_eq!(
            verdict,
            Verdict::Attributed {
                kind: InboundKind::Unsubscribe,
                by: AttributedBy::Verp,
                details: Some(EventDetails::Unsubscribed(Unsubscribed {
                    scope: UnsubscribeScope::Stream,
                    method: Some("mailto".into()),
                })),
            }
        );
        assert_eq!(InboundKind::Unsubscribe.as_str(), "unsubscribe");
    }

    #[test]
    fn each_kind_becomes_its_event() {
        let bounce = event_details(&record(RecordKind::Bounce), None).unwrap();
        assert_eq!(
            bounce,
            EventDetails::Bounced(Bounced {
                bounce_type: BounceType::Hard,
                reason: Some("userunknown".into()),
                smtp_code: Some(550),
                enhanced_code: EnhancedCode::new(5, 1, 1),
                reply_text: Some("550 5.1.1 user unknown".into()),
                origin: BounceOrigin::Async,
                rule: Some("dsn.status".into()),
                mx_host: Some("mx.example.com".into()),
            })
        );
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
