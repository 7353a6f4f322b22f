//! Statistics, counted per delivery (issue #15): which figures a delivery
//! counts in, from its stored status and what it has been seen to do.
//! The store keeps the counts up to date in the transaction that changes a
//! delivery (the figures it left, minus one; those it joined, plus one),
//! so they follow the status fold: an event out of order or twice changes
//! the status as it would anyway, and the figures with it; an event after
//! the status window changes neither.
//!
//! A delivery counts in the figures of the hour it was submitted in (the
//! time of a mailing), so "the 1st of December" means "what became of the
//! mail sent that day". Delivery figures are the state now: a delivery
//! deferred and later delivered counts as delivered, and `deferred` counts
//! those deferred now. Engagement figures are what was ever seen: a
//! delivery opened and then complained about counts in both.

use crate::event::EventDetails;
use crate::status::{BounceType, DeliveryStatus, EngagementStatus, shown_delivery_status};

/// What a delivery has been seen to do, kept with it (each only ever set,
/// by events inside the status window).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seen {
    pub opened: bool,
    pub opened_by_person: bool,
    pub clicked: bool,
    pub clicked_by_person: bool,
    pub unsubscribed: bool,
    pub complained: bool,
}

impl Seen {
    /// As stored: one bit each.
    pub fn bits(self) -> i64 {
        [
            self.opened,
            self.opened_by_person,
            self.clicked,
            self.clicked_by_person,
            self.unsubscribed,
            self.complained,
        ]
        .iter()
        .enumerate()
        .map(|(i, set)| i64::from(*set) << i)
        .sum()
    }

    /// Read back; bits this version does not know are ignored.
    pub fn from_bits(bits: i64) -> Self {
        let bit = |i: u32| bits & (1 << i) != 0;
        Self {
            opened: bit(0),
            opened_by_person: bit(1),
            clicked: bit(2),
            clicked_by_person: bit(3),
            unsubscribed: bit(4),
            complained: bit(5),
        }
    }

    /// What an event adds. A hit with no verdict (an open sent to the
    /// events API) counts as a person's: only a machine verdict excludes.
    pub fn with(self, details: &EventDetails) -> Self {
        let mut s = self;
        match details {
            EventDetails::Opened(o) => {
                s.opened = true;
                s.opened_by_person |= o.machine != Some(true);
            }
            EventDetails::Clicked(c) => {
                s.clicked = true;
                s.clicked_by_person |= c.machine != Some(true);
            }
            EventDetails::Unsubscribed(_) => s.unsubscribed = true,
            EventDetails::Complained(_) => s.complained = true,
            _ => {}
        }
        s
    }
}

/// One figure of the statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    Submitted,
    Dropped,
    Delivered,
    Deferred,
    BouncedHard,
    BouncedSoft,
    Expired,
    Failed,
    /// Opened (a click implies an open), by anyone, or by a person.
    Opened,
    OpenedByPerson,
    Clicked,
    ClickedByPerson,
    Unsubscribed,
    Complained,
}

impl Metric {
    pub const ALL: [Metric; 14] = [
        Metric::Submitted,
        Metric::Dropped,
        Metric::Delivered,
        Metric::Deferred,
        Metric::BouncedHard,
        Metric::BouncedSoft,
        Metric::Expired,
        Metric::Failed,
        Metric::Opened,
        Metric::OpenedByPerson,
        Metric::Clicked,
        Metric::ClickedByPerson,
        Metric::Unsubscribed,
        Metric::Complained,
    ];

    /// The stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Submitted => "submitted",
            Metric::Dropped => "dropped",
            Metric::Delivered => "delivered",
            Metric::Deferred => "deferred",
            Metric::BouncedHard => "bounced_hard",
            Metric::BouncedSoft => "bounced_soft",
            Metric::Expired => "expired",
            Metric::Failed => "failed",
            Metric::Opened => "opened",
            Metric::OpenedByPerson => "opened_by_person",
            Metric::Clicked => "clicked",
            Metric::ClickedByPerson => "clicked_by_person",
            Metric::Unsubscribed => "unsubscribed",
            Metric::Complained => "complained",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Metric::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// Whether the figure is broken down by the reason of the status (a
    /// drop's, a bounce's class).
    pub fn has_reason(self) -> bool {
        matches!(
            self,
            Metric::Dropped | Metric::BouncedHard | Metric::BouncedSoft
        )
    }
}

/// The figures a delivery counts in.
pub fn metrics_of(
    delivery: Option<DeliveryStatus>,
    engagement: EngagementStatus,
    seen: Seen,
) -> Vec<Metric> {
    let mut m = vec![Metric::Submitted];
    let shown = shown_delivery_status(delivery, engagement).0;
    m.extend(match shown {
        Some(DeliveryStatus::Dropped) => Some(Metric::Dropped),
        Some(DeliveryStatus::Delivered) => Some(Metric::Delivered),
        Some(DeliveryStatus::Deferred) => Some(Metric::Deferred),
        Some(DeliveryStatus::Bounced(BounceType::Hard)) => Some(Metric::BouncedHard),
        Some(DeliveryStatus::Bounced(_)) => Some(Metric::BouncedSoft),
        Some(DeliveryStatus::Expired) => Some(Metric::Expired),
        Some(DeliveryStatus::Failed) => Some(Metric::Failed),
        _ => None,
    });
    for (set, metric) in [
        (seen.opened || seen.clicked, Metric::Opened),
        (
            seen.opened_by_person || seen.clicked_by_person,
            Metric::OpenedByPerson,
        ),
        (seen.clicked, Metric::Clicked),
        (seen.clicked_by_person, Metric::ClickedByPerson),
        (seen.unsubscribed, Metric::Unsubscribed),
        (seen.complained, Metric::Complained),
    ] {
        if set {
            m.push(metric);
        }
    }
    m
}

/// The reason a status-setting event gives its figure: a drop's reason,
/// a bounce's class.
pub fn status_reason(details: &EventDetails) -> Option<String> {
    match details {
        EventDetails::Dropped(d) => serde_json::to_value(d.reason)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned)),
        EventDetails::Bounced(b) => b.reason.clone(),
        _ => None,
    }
}

/// The changes of counts when a delivery goes from `before` to `after`
/// (each as `(metric, reason)`): -1 for each it leaves, +1 for each it
/// joins, nothing for what stays.
pub fn changes(
    before: &[(Metric, Option<String>)],
    after: &[(Metric, Option<String>)],
) -> Vec<((Metric, Option<String>), i64)> {
    let mut out = Vec::new();
    for b in before {
        if !after.contains(b) {
            out.push((b.clone(), -1));
        }
    }
    for a in after {
        if !before.contains(a) {
            out.push((a.clone(), 1));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Clicked, Engagement};

    #[test]
    fn seen_bits_round_trip() {
        let all = Seen {
            opened: true,
            opened_by_person: false,
            clicked: true,
            clicked_by_person: true,
            unsubscribed: false,
            complained: true,
        };
        assert_eq!(Seen::from_bits(all.bits()), all);
        assert_eq!(Seen::default().bits(), 0);
    }

    #[test]
    fn a_machine_open_is_an_open_but_not_a_persons() {
        let machine = EventDetails::Opened(Engagement {
            machine: Some(true),
            ..Default::default()
        });
        let s = Seen::default().with(&machine);
        let m = metrics_of(Some(DeliveryStatus::Delivered), EngagementStatus::Opened, s);
        assert!(m.contains(&Metric::Opened) && !m.contains(&Metric::OpenedByPerson));
        // A person's click later implies a person's open.
        let click = EventDetails::Clicked(Clicked {
            url: "https://example.com/".into(),
            link_index: None,
            ip: None,
            user_agent: None,
            machine: Some(false),
            machine_reason: None,
            implied_open: Some(true),
        });
        let m = metrics_of(
            Some(DeliveryStatus::Delivered),
            EngagementStatus::Clicked,
            s.with(&click),
        );
        assert!(m.contains(&Metric::OpenedByPerson) && m.contains(&Metric::ClickedByPerson));
    }

    #[test]
    fn delivery_figures_are_the_status_now() {
        let seen = Seen::default();
        let now = |d| metrics_of(Some(d), EngagementStatus::None, seen);
        assert_eq!(now(DeliveryStatus::Queued), vec![Metric::Submitted]);
        assert!(now(DeliveryStatus::Deferred).contains(&Metric::Deferred));
        assert!(
            now(DeliveryStatus::Bounced(BounceType::Undetermined)).contains(&Metric::BouncedSoft)
        );
        // Engagement on a delivery still deferred means it was delivered.
        let m = metrics_of(
            Some(DeliveryStatus::Deferred),
            EngagementStatus::Opened,
            seen,
        );
        assert!(m.contains(&Metric::Delivered) && !m.contains(&Metric::Deferred));
    }

    #[test]
    fn changes_leave_and_join_only_what_differs() {
        let before = vec![
            (Metric::Submitted, None),
            (Metric::BouncedSoft, Some("mailboxfull".into())),
        ];
        let after = vec![
            (Metric::Submitted, None),
            (Metric::BouncedHard, Some("userunknown".into())),
        ];
        assert_eq!(
            changes(&before, &after),
            vec![
                ((Metric::BouncedSoft, Some("mailboxfull".into())), -1),
                ((Metric::BouncedHard, Some("userunknown".into())), 1),
            ]
        );
        assert!(changes(&before, &before).is_empty());
    }
}
