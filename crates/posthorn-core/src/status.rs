//! The status fold of a delivery: two axes (delivery and engagement), each the
//! highest-ranked event received, so that folding a set of events in any order
//! gives the same answer and a late event never loses information.

use crate::clock::Millis;
use crate::event::{EventDetails, EventKind};
use crate::id::EventId;
use serde::{Deserialize, Serialize};
use std::fmt;

/// How final a bounce is for the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BounceType {
    /// The address does not exist or never will accept mail: suppress it.
    Hard,
    /// A condition that may pass (full mailbox, reputation block, ...).
    Soft,
    /// Could not be told; treated like soft for ranking and contact rules.
    Undetermined,
}

impl BounceType {
    pub fn as_str(self) -> &'static str {
        match self {
            BounceType::Hard => "hard",
            BounceType::Soft => "soft",
            BounceType::Undetermined => "undetermined",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "hard" => Some(BounceType::Hard),
            "soft" => Some(BounceType::Soft),
            "undetermined" => Some(BounceType::Undetermined),
            _ => None,
        }
    }
}

/// The delivery axis, lowest rank first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    Scheduled,
    Queued,
    Held,
    Sent,
    Deferred,
    Delivered,
    Bounced(BounceType),
    Expired,
    Failed,
    Dropped,
}

impl DeliveryStatus {
    /// Position on the axis: `bounced(soft)` ranks below `expired`,
    /// `bounced(hard)` above `failed`, `dropped` above everything.
    pub fn rank(self) -> u8 {
        match self {
            DeliveryStatus::Scheduled => 0,
            DeliveryStatus::Queued => 1,
            DeliveryStatus::Held => 2,
            DeliveryStatus::Sent => 3,
            DeliveryStatus::Deferred => 4,
            DeliveryStatus::Delivered => 5,
            DeliveryStatus::Bounced(BounceType::Soft | BounceType::Undetermined) => 6,
            DeliveryStatus::Expired => 7,
            DeliveryStatus::Failed => 8,
            DeliveryStatus::Bounced(BounceType::Hard) => 9,
            DeliveryStatus::Dropped => 10,
        }
    }

    /// Final values rank above every value that is not final.
    pub fn is_final(self) -> bool {
        self.rank() >= DeliveryStatus::Bounced(BounceType::Soft).rank()
    }

    /// The status name (`bounced` for every bounce type).
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Scheduled => "scheduled",
            DeliveryStatus::Queued => "queued",
            DeliveryStatus::Held => "held",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Deferred => "deferred",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Bounced(_) => "bounced",
            DeliveryStatus::Expired => "expired",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Dropped => "dropped",
        }
    }

    pub fn bounce_type(self) -> Option<BounceType> {
        match self {
            DeliveryStatus::Bounced(t) => Some(t),
            _ => None,
        }
    }

    /// Reads back the stored pair (status name, bounce type).
    pub fn from_parts(name: &str, bounce_type: Option<&str>) -> Option<Self> {
        Some(match name {
            "scheduled" => DeliveryStatus::Scheduled,
            "queued" => DeliveryStatus::Queued,
            "held" => DeliveryStatus::Held,
            "sent" => DeliveryStatus::Sent,
            "deferred" => DeliveryStatus::Deferred,
            "delivered" => DeliveryStatus::Delivered,
            "bounced" => DeliveryStatus::Bounced(
                bounce_type
                    .and_then(BounceType::parse)
                    .unwrap_or(BounceType::Undetermined),
            ),
            "expired" => DeliveryStatus::Expired,
            "failed" => DeliveryStatus::Failed,
            "dropped" => DeliveryStatus::Dropped,
            _ => return None,
        })
    }

    /// The value an event of this kind puts on the delivery axis, if any.
    pub fn of_event(details: &EventDetails) -> Option<Self> {
        Some(match details.kind() {
            EventKind::Scheduled => DeliveryStatus::Scheduled,
            EventKind::Queued => DeliveryStatus::Queued,
            EventKind::Held => DeliveryStatus::Held,
            EventKind::Sent => DeliveryStatus::Sent,
            EventKind::Deferred => DeliveryStatus::Deferred,
            EventKind::Delivered => DeliveryStatus::Delivered,
            EventKind::Bounced => DeliveryStatus::Bounced(details.bounce_type()?),
            EventKind::Expired => DeliveryStatus::Expired,
            EventKind::Failed => DeliveryStatus::Failed,
            EventKind::Dropped => DeliveryStatus::Dropped,
            _ => return None,
        })
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeliveryStatus::Bounced(t) => write!(f, "bounced({})", t.as_str()),
            other => f.write_str(other.as_str()),
        }
    }
}

/// The engagement axis, lowest rank first. `unsubscribed` and `complained`
/// are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EngagementStatus {
    None,
    Opened,
    Clicked,
    Unsubscribed,
    Complained,
}

impl EngagementStatus {
    pub fn rank(self) -> u8 {
        self as u8
    }
    pub fn is_final(self) -> bool {
        self >= EngagementStatus::Unsubscribed
    }
    pub fn as_str(self) -> &'static str {
        match self {
            EngagementStatus::None => "none",
            EngagementStatus::Opened => "opened",
            EngagementStatus::Clicked => "clicked",
            EngagementStatus::Unsubscribed => "unsubscribed",
            EngagementStatus::Complained => "complained",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => EngagementStatus::None,
            "opened" => EngagementStatus::Opened,
            "clicked" => EngagementStatus::Clicked,
            "unsubscribed" => EngagementStatus::Unsubscribed,
            "complained" => EngagementStatus::Complained,
            _ => return None,
        })
    }
    /// The value an event of this kind puts on the engagement axis, if any.
    pub fn of_event(kind: EventKind) -> Option<Self> {
        Some(match kind {
            EventKind::Opened => EngagementStatus::Opened,
            EventKind::Clicked => EngagementStatus::Clicked,
            EventKind::Unsubscribed => EngagementStatus::Unsubscribed,
            EventKind::Complained => EngagementStatus::Complained,
            _ => return None,
        })
    }
}

/// The value of one axis and the event that set it (explainability).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AxisValue<S> {
    pub status: S,
    pub event_id: EventId,
    pub occurred_at: Millis,
}

/// What the fold needs to know about one event.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldInput<'a> {
    pub id: &'a EventId,
    pub occurred_at: Millis,
    pub details: &'a EventDetails,
}

/// Why an event was recorded without changing the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Anomaly {
    /// A delivery or engagement event for a delivery we dropped (never sent).
    EventAfterDropped,
}

/// The result of folding one event in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FoldOutcome {
    /// The delivery axis before, when this event raised it.
    pub delivery_changed: Option<(Option<DeliveryStatus>, DeliveryStatus)>,
    /// The engagement axis before, when this event raised it.
    pub engagement_changed: Option<(EngagementStatus, EngagementStatus)>,
    /// The event happened after the update window closed: recorded only.
    pub outside_window: bool,
    pub anomaly: Option<Anomaly>,
    /// A delivery-axis event ranked below the value already held (a late
    /// `deferred` after `delivered`): it tells nothing new about the outcome.
    pub stale: bool,
}

/// The folded status of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryState {
    pub delivery: Option<AxisValue<DeliveryStatus>>,
    pub engagement: Option<AxisValue<EngagementStatus>>,
    /// Events that happen after this time no longer change the status
    /// (`status_window` after the delivery was queued).
    pub window_ends_at: Millis,
}

impl DeliveryState {
    /// A delivery with no events yet, whose update window ends at
    /// `window_ends_at`.
    pub fn new(window_ends_at: Millis) -> Self {
        Self {
            delivery: None,
            engagement: None,
            window_ends_at,
        }
    }

    /// Folds a set of events, in the order given.
    pub fn fold<'a>(
        window_ends_at: Millis,
        events: impl IntoIterator<Item = FoldInput<'a>>,
    ) -> Self {
        let mut state = Self::new(window_ends_at);
        for event in events {
            state.apply(&event);
        }
        state
    }

    /// Folds one event in. An axis moves only to a higher rank; between events
    /// of equal rank the earliest (by time, then id) is kept as the one that
    /// set it, so the answer does not depend on arrival order.
    pub fn apply(&mut self, event: &FoldInput<'_>) -> FoldOutcome {
        let mut outcome = FoldOutcome::default();
        let kind = event.details.kind();
        let dropped = self
            .delivery
            .as_ref()
            .is_some_and(|v| v.status == DeliveryStatus::Dropped);
        if dropped && kind != EventKind::Dropped {
            // Flagged, then folded like any other event: skipping it would make
            // the engagement axis depend on whether it arrived before or after
            // the `dropped`. Nothing ranks above `dropped`, so the delivery axis
            // (and the shown status) cannot move.
            outcome.anomaly = Some(Anomaly::EventAfterDropped);
        }
        if event.occurred_at > self.window_ends_at {
            outcome.outside_window = true;
            return outcome;
        }
        if let Some(status) = DeliveryStatus::of_event(event.details) {
            let before = self.delivery.as_ref().map(|v| v.status);
            outcome.stale = before.is_some_and(|b| b.rank() > status.rank());
            if raise(
                &mut self.delivery,
                status,
                status.rank(),
                |s| s.rank(),
                event,
            ) {
                outcome.delivery_changed = Some((before, status));
            }
        } else if let Some(status) = EngagementStatus::of_event(kind) {
            let before = self.engagement_status();
            if raise(
                &mut self.engagement,
                status,
                status.rank(),
                |s| s.rank(),
                event,
            ) {
                outcome.engagement_changed = Some((before, status));
            }
        }
        outcome
    }

    /// The delivery axis as stored (without inference).
    pub fn delivery_status(&self) -> Option<DeliveryStatus> {
        self.delivery.as_ref().map(|v| v.status)
    }

    pub fn engagement_status(&self) -> EngagementStatus {
        self.engagement
            .as_ref()
            .map_or(EngagementStatus::None, |v| v.status)
    }

    /// The delivery status shown to users, and whether it was inferred:
    /// engagement for a delivery still `sent`/`deferred` means it was delivered.
    pub fn shown_delivery_status(&self) -> (Option<DeliveryStatus>, bool) {
        shown_delivery_status(self.delivery_status(), self.engagement_status())
    }

    /// The one status string users see.
    pub fn status(&self) -> &'static str {
        shown_status(self.delivery_status(), self.engagement_status())
    }
}

/// See [`DeliveryState::shown_delivery_status`]; usable on stored columns.
pub fn shown_delivery_status(
    delivery: Option<DeliveryStatus>,
    engagement: EngagementStatus,
) -> (Option<DeliveryStatus>, bool) {
    match delivery {
        Some(DeliveryStatus::Sent | DeliveryStatus::Deferred)
            if engagement != EngagementStatus::None =>
        {
            (Some(DeliveryStatus::Delivered), true)
        }
        other => (other, false),
    }
}

/// The status users see: the engagement status when the (shown) delivery
/// status is `delivered` and there is engagement; otherwise the delivery status.
pub fn shown_status(
    delivery: Option<DeliveryStatus>,
    engagement: EngagementStatus,
) -> &'static str {
    match shown_delivery_status(delivery, engagement).0 {
        Some(DeliveryStatus::Delivered) if engagement != EngagementStatus::None => {
            engagement.as_str()
        }
        Some(status) => status.as_str(),
        None => "queued",
    }
}

fn raise<S: Copy>(
    axis: &mut Option<AxisValue<S>>,
    status: S,
    rank: u8,
    rank_of: impl Fn(S) -> u8,
    event: &FoldInput<'_>,
) -> bool {
    let replace = match axis {
        None => true,
        Some(current) => {
            let current_rank = rank_of(current.status);
            rank > current_rank
                || (rank == current_rank
                    && (event.occurred_at, event.id) < (current.occurred_at, &current.event_id))
        }
    };
    if !replace {
        return false;
    }
    let changed = axis.as_ref().is_none_or(|c| rank_of(c.status) != rank);
    *axis = Some(AxisValue {
        status,
        event_id: event.id.clone(),
        occurred_at: event.occurred_at,
    });
    changed
}
