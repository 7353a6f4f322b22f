//! The pre-send policy chain: per recipient of an accepted message, decide
//! whether it is dropped (and why), scheduled, or queued. The store gathers
//! the facts inside the accepting transaction and asks this function, so the
//! decision is atomic with the write and the rule stays pure.

use crate::clock::Millis;
use crate::contact::{ContactState, ContactStatus};
use crate::event::DropReason;
use crate::suppression::SuppressionEntry;

/// Everything the chain needs to know about one recipient.
#[derive(Debug, Clone)]
pub struct RecipientFacts<'a> {
    /// The domain can receive mail (see `EmailAddress::can_receive_mail`).
    pub deliverable_domain: bool,
    /// An active suppression entry covering this address on this stream.
    pub suppression: Option<&'a SuppressionEntry>,
    /// The same recipient appeared earlier in this message.
    pub duplicate_in_message: bool,
    /// The recipient already has a delivery in this campaign (only set when
    /// the tenant's campaign de-duplication is on).
    pub duplicate_in_campaign: bool,
    /// The contact, if the tenant knows this address.
    pub contact: Option<&'a ContactState>,
    pub stream: &'a str,
    /// The stream only mails confirmed (double opt-in) contacts.
    pub stream_requires_confirmation: bool,
    pub expires_at: Option<Millis>,
    pub send_at: Option<Millis>,
    pub now: Millis,
}

/// The decision for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Dropped {
        reason: DropReason,
        /// The entry that caused a `suppressed`/`unsubscribed_stream` drop.
        suppression: Option<SuppressionEntry>,
    },
    Scheduled {
        send_at: Millis,
    },
    Queued,
}

/// Runs the chain in its documented order; the first step that objects decides.
pub fn admit(facts: &RecipientFacts<'_>) -> Admission {
    let drop = |reason, suppression: Option<&SuppressionEntry>| Admission::Dropped {
        reason,
        suppression: suppression.cloned(),
    };
    if !facts.deliverable_domain {
        return drop(DropReason::InvalidAddress, None);
    }
    if let Some(entry) = facts.suppression {
        // A stream-scoped entry is an unsubscribe from that stream: say so.
        let reason = if entry.scope.stream().is_some() {
            DropReason::UnsubscribedStream
        } else {
            DropReason::Suppressed
        };
        return drop(reason, Some(entry));
    }
    if facts.duplicate_in_message || facts.duplicate_in_campaign {
        return drop(DropReason::DuplicateRecipient, None);
    }
    if facts
        .contact
        .is_some_and(|c| c.is_unsubscribed_from(facts.stream))
    {
        return drop(DropReason::UnsubscribedStream, None);
    }
    if facts.stream_requires_confirmation
        && !facts
            .contact
            .is_some_and(|c| c.status == ContactStatus::Active)
    {
        return drop(DropReason::UnconfirmedContact, None);
    }
    if facts.expires_at.is_some_and(|t| t <= facts.now) {
        return drop(DropReason::ExpiredBeforeSend, None);
    }
    match facts.send_at {
        Some(send_at) if send_at > facts.now => Admission::Scheduled { send_at },
        _ => Admission::Queued,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suppression::{SuppressionReason, SuppressionScope};

    fn facts<'a>() -> RecipientFacts<'a> {
        RecipientFacts {
            deliverable_domain: true,
            suppression: None,
            duplicate_in_message: false,
            duplicate_in_campaign: false,
            contact: None,
            stream: "transactional",
            stream_requires_confirmation: false,
            expires_at: None,
            send_at: None,
            now: 1_000,
        }
    }

    fn entry(scope: SuppressionScope) -> SuppressionEntry {
        SuppressionEntry {
            id: "s".into(),
            target: "a@example.com".into(),
            scope,
            reason: SuppressionReason::HardBounce,
            cause_event_id: None,
            created_at: 0,
            expires_at: None,
        }
    }

    fn dropped(reason: DropReason) -> impl Fn(&Admission) -> bool {
        move |a| matches!(a, Admission::Dropped { reason: r, .. } if *r == reason)
    }

    #[test]
    fn each_step_of_the_chain() {
        assert_eq!(admit(&facts()), Admission::Queued);

        let f = RecipientFacts {
            deliverable_domain: false,
            ..facts()
        };
        assert!(dropped(DropReason::InvalidAddress)(&admit(&f)));

        let all = entry(SuppressionScope::All);
        let f = RecipientFacts {
            suppression: Some(&all),
            ..facts()
        };
        assert_eq!(
            admit(&f),
            Admission::Dropped {
                reason: DropReason::Suppressed,
                suppression: Some(all.clone())
            }
        );

        let stream = entry(SuppressionScope::Stream("transactional".into()));
        let f = RecipientFacts {
            suppression: Some(&stream),
            ..facts()
        };
        assert!(dropped(DropReason::UnsubscribedStream)(&admit(&f)));

        let f = RecipientFacts {
            duplicate_in_message: true,
            ..facts()
        };
        assert!(dropped(DropReason::DuplicateRecipient)(&admit(&f)));
        let f = RecipientFacts {
            duplicate_in_campaign: true,
            ..facts()
        };
        assert!(dropped(DropReason::DuplicateRecipient)(&admit(&f)));

        let mut unsub = ContactState::new(ContactStatus::Active);
        unsub.unsubscribed_streams.insert("transactional".into());
        let f = RecipientFacts {
            contact: Some(&unsub),
            ..facts()
        };
        assert!(dropped(DropReason::UnsubscribedStream)(&admit(&f)));
        let f = RecipientFacts {
            contact: Some(&unsub),
            stream: "other",
            ..facts()
        };
        assert_eq!(admit(&f), Admission::Queued);

        let unconfirmed = ContactState::new(ContactStatus::Unconfirmed);
        let f = RecipientFacts {
            contact: Some(&unconfirmed),
            stream_requires_confirmation: true,
            ..facts()
        };
        assert!(dropped(DropReason::UnconfirmedContact)(&admit(&f)));
        // Unknown contacts are not confirmed either.
        let f = RecipientFacts {
            stream_requires_confirmation: true,
            ..facts()
        };
        assert!(dropped(DropReason::UnconfirmedContact)(&admit(&f)));
        let active = ContactState::new(ContactStatus::Active);
        let f = RecipientFacts {
            contact: Some(&active),
            stream_requires_confirmation: true,
            ..facts()
        };
        assert_eq!(admit(&f), Admission::Queued);
        // Confirmation only matters on streams that ask for it.
        let f = RecipientFacts {
            contact: Some(&unconfirmed),
            ..facts()
        };
        assert_eq!(admit(&f), Admission::Queued);

        let f = RecipientFacts {
            expires_at: Some(1_000),
            ..facts()
        };
        assert!(dropped(DropReason::ExpiredBeforeSend)(&admit(&f)));
        let f = RecipientFacts {
            expires_at: Some(1_001),
            ..facts()
        };
        assert_eq!(admit(&f), Admission::Queued);

        let f = RecipientFacts {
            send_at: Some(5_000),
            ..facts()
        };
        assert_eq!(admit(&f), Admission::Scheduled { send_at: 5_000 });
        let f = RecipientFacts {
            send_at: Some(500),
            ..facts()
        };
        assert_eq!(admit(&f), Admission::Queued);
    }

    #[test]
    fn earlier_steps_win() {
        let all = entry(SuppressionScope::All);
        let f = RecipientFacts {
            deliverable_domain: false,
            suppression: Some(&all),
            duplicate_in_message: true,
            ..facts()
        };
        assert!(dropped(DropReason::InvalidAddress)(&admit(&f)));
        let f = RecipientFacts {
            suppression: Some(&all),
            duplicate_in_message: true,
            ..facts()
        };
        assert!(dropped(DropReason::Suppressed)(&admit(&f)));
        let f = RecipientFacts {
            expires_at: Some(0),
            send_at: Some(9_000),
            ..facts()
        };
        assert!(dropped(DropReason::ExpiredBeforeSend)(&admit(&f)));
    }
}
