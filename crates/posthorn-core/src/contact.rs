//! Contact status rules: who may still be mailed (and billed), and how hard
//! bounces, complaints, unsubscribes and repeated soft failures change that.

use crate::event::{EventDetails, UnsubscribeScope};
use crate::status::{BounceType, DeliveryStatus, FoldOutcome};
use crate::suppression::{SuppressionReason, SuppressionScope};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A contact's status. Only `active` contacts are mailed and billable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactStatus {
    Active,
    /// Double opt-in not yet confirmed.
    Unconfirmed,
    Unsubscribed,
    Bounced,
    Complained,
}

impl ContactStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ContactStatus::Active => "active",
            ContactStatus::Unconfirmed => "unconfirmed",
            ContactStatus::Unsubscribed => "unsubscribed",
            ContactStatus::Bounced => "bounced",
            ContactStatus::Complained => "complained",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "active" => ContactStatus::Active,
            "unconfirmed" => ContactStatus::Unconfirmed,
            "unsubscribed" => ContactStatus::Unsubscribed,
            "bounced" => ContactStatus::Bounced,
            "complained" => ContactStatus::Complained,
            _ => return None,
        })
    }

    /// How strongly the status stops mail: a stronger one is never replaced
    /// by a weaker one by an automatic rule (a complained contact that later
    /// hard-bounces stays `complained`).
    fn severity(self) -> u8 {
        match self {
            ContactStatus::Active | ContactStatus::Unconfirmed => 0,
            ContactStatus::Unsubscribed => 1,
            ContactStatus::Bounced => 2,
            ContactStatus::Complained => 3,
        }
    }
}

/// Why a contact's status changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactChangeReason {
    HardBounce,
    Complaint,
    Unsubscribe,
    SoftBounceLimit,
}

impl ContactChangeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ContactChangeReason::HardBounce => "hard_bounce",
            ContactChangeReason::Complaint => "complaint",
            ContactChangeReason::Unsubscribe => "unsubscribe",
            ContactChangeReason::SoftBounceLimit => "soft_bounce_limit",
        }
    }
}

/// One tenant's view of one address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactState {
    pub status: ContactStatus,
    /// Streams the contact unsubscribed from (when not from everything).
    pub unsubscribed_streams: BTreeSet<String>,
    /// Deliveries in a row that ended `bounced(soft)` or `expired`.
    pub consecutive_failed_deliveries: u32,
    /// Failed attempts in a row (deferrals and soft bounces), across deliveries.
    pub consecutive_failed_attempts: u32,
}

impl ContactState {
    pub fn new(status: ContactStatus) -> Self {
        Self {
            status,
            unsubscribed_streams: BTreeSet::new(),
            consecutive_failed_deliveries: 0,
            consecutive_failed_attempts: 0,
        }
    }

    /// Whether mail on `stream` may go to this contact as far as the contact
    /// itself is concerned (suppressions are checked separately).
    pub fn is_unsubscribed_from(&self, stream: &str) -> bool {
        self.status == ContactStatus::Unsubscribed || self.unsubscribed_streams.contains(stream)
    }
}

/// Limits for soft bounces turning hard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContactLimits {
    /// Deliveries in a row ending `bounced(soft)`/`expired` (default 3).
    pub soft_bounce_limit: u32,
    /// Failed attempts in a row across deliveries (default 10).
    pub soft_attempt_limit: u32,
}

impl Default for ContactLimits {
    fn default() -> Self {
        Self {
            soft_bounce_limit: 3,
            soft_attempt_limit: 10,
        }
    }
}

/// What an event means for the contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactSignal {
    HardBounce,
    /// The delivery ended `bounced(soft)` or `expired`.
    FailedDelivery,
    /// One attempt failed (a deferral or a soft bounce).
    FailedAttempt,
    Delivered,
    Complaint,
    Unsubscribe {
        stream: Option<String>,
    },
}

/// The signals one recorded event sends to its contact, given what the event
/// did to the delivery's status. Delivery outcomes count once per delivery
/// (when the status moves); complaints and unsubscribes always count, even
/// outside the update window, because a person asked to stop.
pub fn signals_for(
    details: &EventDetails,
    fold: &FoldOutcome,
    delivery_stream: &str,
) -> Vec<ContactSignal> {
    let mut signals = Vec::new();
    let moved_to = fold.delivery_changed.map(|(_, to)| to);
    // The delivery has just ended failed. A move from `bounced(soft)` up to
    // `expired` is the same failed delivery, not a second one.
    let ends_failed = |s: Option<DeliveryStatus>| {
        matches!(
            s,
            Some(DeliveryStatus::Bounced(_) | DeliveryStatus::Expired)
        )
    };
    let newly_failed = fold
        .delivery_changed
        .is_some_and(|(before, to)| ends_failed(Some(to)) && !ends_failed(before));
    match details {
        // A deferral that arrives after the outcome is known is not a new failure.
        EventDetails::Deferred(_) if fold.anomaly.is_none() && !fold.stale => {
            signals.push(ContactSignal::FailedAttempt)
        }
        EventDetails::Bounced(b) if fold.anomaly.is_none() => {
            if b.bounce_type == BounceType::Hard {
                // Applying a hard bounce twice changes nothing, so it needs no
                // "first time" check, and a late DSN still protects the sender.
                signals.push(ContactSignal::HardBounce);
            } else {
                signals.push(ContactSignal::FailedAttempt);
                if newly_failed {
                    signals.push(ContactSignal::FailedDelivery);
                }
            }
        }
        EventDetails::Expired(_) if newly_failed => signals.push(ContactSignal::FailedDelivery),
        EventDetails::Delivered(_) if moved_to == Some(DeliveryStatus::Delivered) => {
            signals.push(ContactSignal::Delivered)
        }
        EventDetails::Complained(_) => signals.push(ContactSignal::Complaint),
        EventDetails::Unsubscribed(u) => signals.push(ContactSignal::Unsubscribe {
            stream: match u.scope {
                UnsubscribeScope::All => None,
                UnsubscribeScope::Stream => Some(delivery_stream.to_owned()),
            },
        }),
        _ => {}
    }
    signals
}

/// What applying a signal changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContactEffects {
    /// The status before and after, with the reason, when it changed.
    pub status_change: Option<(ContactStatus, ContactStatus, ContactChangeReason)>,
    /// A suppression entry to add (the store ignores it when an equal active
    /// entry exists).
    pub suppress: Option<(SuppressionScope, SuppressionReason)>,
}

/// Applies one signal to a contact.
pub fn apply_signal(
    contact: &mut ContactState,
    signal: &ContactSignal,
    limits: ContactLimits,
) -> ContactEffects {
    let mut effects = ContactEffects::default();
    match signal {
        ContactSignal::HardBounce => {
            effects.status_change = set_status(
                contact,
                ContactStatus::Bounced,
                ContactChangeReason::HardBounce,
            );
            effects.suppress = Some((SuppressionScope::All, SuppressionReason::HardBounce));
        }
        ContactSignal::Complaint => {
            effects.status_change = set_status(
                contact,
                ContactStatus::Complained,
                ContactChangeReason::Complaint,
            );
            effects.suppress = Some((SuppressionScope::All, SuppressionReason::Complaint));
        }
        ContactSignal::Unsubscribe { stream: None } => {
            effects.status_change = set_status(
                contact,
                ContactStatus::Unsubscribed,
                ContactChangeReason::Unsubscribe,
            );
            effects.suppress = Some((SuppressionScope::All, SuppressionReason::Unsubscribe));
        }
        ContactSignal::Unsubscribe {
            stream: Some(stream),
        } => {
            contact.unsubscribed_streams.insert(stream.clone());
            effects.suppress = Some((
                SuppressionScope::Stream(stream.clone()),
                SuppressionReason::Unsubscribe,
            ));
        }
        ContactSignal::Delivered => {
            contact.consecutive_failed_deliveries = 0;
            contact.consecutive_failed_attempts = 0;
        }
        ContactSignal::FailedDelivery | ContactSignal::FailedAttempt => {
            if *signal == ContactSignal::FailedDelivery {
                contact.consecutive_failed_deliveries =
                    contact.consecutive_failed_deliveries.saturating_add(1);
            } else {
                contact.consecutive_failed_attempts =
                    contact.consecutive_failed_attempts.saturating_add(1);
            }
            let over = contact.consecutive_failed_deliveries >= limits.soft_bounce_limit
                || contact.consecutive_failed_attempts >= limits.soft_attempt_limit;
            if over && contact.status.severity() < ContactStatus::Bounced.severity() {
                effects.status_change = set_status(
                    contact,
                    ContactStatus::Bounced,
                    ContactChangeReason::SoftBounceLimit,
                );
                effects.suppress =
                    Some((SuppressionScope::All, SuppressionReason::SoftBounceLimit));
            }
        }
    }
    effects
}

fn set_status(
    contact: &mut ContactState,
    to: ContactStatus,
    reason: ContactChangeReason,
) -> Option<(ContactStatus, ContactStatus, ContactChangeReason)> {
    let from = contact.status;
    if to.severity() <= from.severity() {
        return None;
    }
    contact.status = to;
    Some((from, to, reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Deferred, Delivered};
    use crate::id::EventId;
    use crate::status::{DeliveryState, FoldInput};

    #[test]
    fn a_late_deferral_after_delivery_is_not_a_failed_attempt() {
        let mut state = DeliveryState::new(i64::MAX);
        let delivered = EventDetails::Delivered(Delivered::default());
        let deferred = EventDetails::Deferred(Deferred::default());
        let (d_id, f_id) = (EventId::generate(), EventId::generate());
        state.apply(&FoldInput {
            id: &d_id,
            occurred_at: 20,
            details: &delivered,
        });
        let late = state.apply(&FoldInput {
            id: &f_id,
            occurred_at: 10,
            details: &deferred,
        });
        assert!(late.stale);
        assert!(signals_for(&deferred, &late, "transactional").is_empty());

        // A deferral of a delivery still in flight counts.
        let mut fresh = DeliveryState::new(i64::MAX);
        let first = fresh.apply(&FoldInput {
            id: &f_id,
            occurred_at: 10,
            details: &deferred,
        });
        let again_id = EventId::generate();
        let again = fresh.apply(&FoldInput {
            id: &again_id,
            occurred_at: 11,
            details: &deferred,
        });
        assert_eq!(
            signals_for(&deferred, &first, "t"),
            vec![ContactSignal::FailedAttempt]
        );
        assert_eq!(
            signals_for(&deferred, &again, "t"),
            vec![ContactSignal::FailedAttempt]
        );
    }
}
