//! Property tests of the status model (STATUS_MODEL.md, rules 1-5, and the
//! contact rules): the delivery fold is a maximum over ranks, so it must not
//! depend on arrival order, duplicates or events outside the update window.

mod common;

use common::Ev;
use posthorn_core::contact::{
    ContactLimits, ContactSignal, ContactState, ContactStatus, apply_signal,
};
use posthorn_core::event::{
    BounceOrigin, Bounced, Clicked, Complained, Deferred, Delivered, DropReason, Dropped,
    Engagement, EventDetails, Expired, Failed, Held, Queued, Scheduled, Sent, UnsubscribeScope,
    Unsubscribed,
};
use posthorn_core::status::{
    BounceType, DeliveryState, DeliveryStatus, EngagementStatus, FoldOutcome,
};
use posthorn_core::{EventId, Millis};
use proptest::prelude::*;

fn fold(window_ends_at: Millis, events: &[Ev]) -> DeliveryState {
    DeliveryState::fold(window_ends_at, events.iter().map(Ev::input))
}

/// A UUID-shaped id from 128 bits, read back through `EventId::parse` as an id
/// from storage or a request would be.
fn event_id(bits: u128) -> EventId {
    let hex = format!("{bits:032x}");
    let text = format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    );
    EventId::parse(&text).expect("a formatted u128 is a UUID")
}

fn bounced(bounce_type: BounceType) -> EventDetails {
    EventDetails::Bounced(Bounced {
        bounce_type,
        reason: None,
        smtp_code: Some(550),
        enhanced_code: None,
        reply_text: None,
        origin: BounceOrigin::Async,
        rule: None,
        mx_host: None,
    })
}

fn details_strategy() -> impl Strategy<Value = EventDetails> {
    prop_oneof![
        2 => Just(EventDetails::Scheduled(Scheduled { send_at: 0 })),
        3 => Just(EventDetails::Queued(Queued { size: 100 })),
        1 => Just(EventDetails::Dropped(Dropped { reason: DropReason::Suppressed, suppression: None })),
        2 => Just(EventDetails::Held(Held { limit: "rate".into(), release_at: None })),
        3 => Just(EventDetails::Sent(Sent::default())),
        3 => Just(EventDetails::Deferred(Deferred::default())),
        3 => Just(EventDetails::Delivered(Delivered::default())),
        2 => Just(bounced(BounceType::Hard)),
        2 => Just(bounced(BounceType::Soft)),
        2 => Just(bounced(BounceType::Undetermined)),
        2 => Just(EventDetails::Expired(Expired::default())),
        2 => Just(EventDetails::Failed(Failed { error: "boom".into() })),
        3 => Just(EventDetails::Opened(Engagement::default())),
        3 => Just(EventDetails::Clicked(Clicked {
            url: "https://example.com/".into(),
            link_index: Some(0),
            ip: None,
            user_agent: None,
            machine: None,
            machine_reason: None,
            implied_open: None,
        })),
        1 => Just(EventDetails::Unsubscribed(Unsubscribed { scope: UnsubscribeScope::Stream, method: None })),
        1 => Just(EventDetails::Unsubscribed(Unsubscribed { scope: UnsubscribeScope::All, method: None })),
        1 => Just(EventDetails::Complained(Complained::default())),
    ]
}

/// A set of distinct events. Times come from a narrow range so that equal
/// times (and so the id tie-break) are common. Ids are random in their high
/// bits (so id order is unrelated to list order) and unique by the low byte.
fn events_strategy() -> impl Strategy<Value = Vec<Ev>> {
    prop::collection::vec((details_strategy(), 0..40_i64, any::<u128>()), 0..12).prop_map(|raw| {
        raw.into_iter()
            .enumerate()
            .map(|(i, (details, occurred_at, bits))| Ev {
                id: event_id((bits << 8) | i as u128),
                occurred_at,
                details,
            })
            .collect()
    })
}

/// Window ends mostly after the generated times, sometimes inside them.
fn window_strategy() -> impl Strategy<Value = Millis> {
    prop_oneof![3 => 40..50_i64, 1 => 0..40_i64]
}

fn no_change(outcome: &FoldOutcome) -> bool {
    outcome.delivery_changed.is_none() && outcome.engagement_changed.is_none()
}

/// The value each event puts on an axis, and (for set_by) its (time, id) key.
fn expected_axis<S: Copy>(
    events: &[Ev],
    window_ends_at: Millis,
    value_of: impl Fn(&EventDetails) -> Option<S>,
    rank_of: impl Fn(S) -> u8,
) -> Option<(S, EventId)> {
    let candidates: Vec<(S, &Ev)> = events
        .iter()
        .filter(|e| e.occurred_at <= window_ends_at)
        .filter_map(|e| value_of(&e.details).map(|s| (s, e)))
        .collect();
    let top = candidates.iter().map(|(s, _)| rank_of(*s)).max()?;
    candidates
        .into_iter()
        .filter(|(s, _)| rank_of(*s) == top)
        .min_by(|(_, a), (_, b)| (a.occurred_at, &a.id).cmp(&(b.occurred_at, &b.id)))
        .map(|(s, e)| (s, e.id.clone()))
}

proptest! {
    /// Rule 3: any arrival order of the same set gives the same state, down to
    /// the event that set each axis.
    #[test]
    fn every_order_of_a_set_gives_the_same_state(
        (events, shuffled) in events_strategy().prop_flat_map(|evs| (Just(evs.clone()), Just(evs).prop_shuffle())),
        window in window_strategy(),
    ) {
        let a = fold(window, &events);
        let b = fold(window, &shuffled);
        prop_assert_eq!(a.delivery_status(), b.delivery_status());
        prop_assert_eq!(a.engagement_status(), b.engagement_status());
        prop_assert_eq!(
            a.delivery.as_ref().map(|v| &v.event_id),
            b.delivery.as_ref().map(|v| &v.event_id)
        );
        prop_assert_eq!(
            a.engagement.as_ref().map(|v| &v.event_id),
            b.engagement.as_ref().map(|v| &v.event_id)
        );
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(a.status(), b.status());
        prop_assert_eq!(a.shown_delivery_status(), b.shown_delivery_status());
    }

    /// Rule 3: a duplicate (same event again) changes nothing, whether it comes
    /// straight after the original or anywhere later.
    #[test]
    fn a_duplicate_changes_nothing(
        events in events_strategy().prop_filter("needs an event", |e| !e.is_empty()),
        pick in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        window in window_strategy(),
    ) {
        let state = fold(window, &events);
        let dup = &events[pick.index(events.len())];
        let mut again = state.clone();
        let outcome = again.apply(&dup.input());
        prop_assert!(no_change(&outcome), "duplicate reported a change: {:?}", outcome);
        prop_assert_eq!(&again, &state);

        // The duplicate inserted at a position after its original.
        let original = pick.index(events.len());
        let pos = original + 1 + at.index(events.len() - original);
        let mut with_dup = events.clone();
        with_dup.insert(pos, dup.clone());
        prop_assert_eq!(fold(window, &with_dup), state);
    }

    /// Rule 2: a final value is only ever replaced by a higher-ranked (so also
    /// final) value; an event whose own value is not final never changes it.
    /// (`bounced(soft)` and `bounced(undetermined)` share a rank: between the
    /// two, the earlier event is kept, so the type may switch to it.)
    #[test]
    fn final_values_are_not_changed_by_ordinary_events(
        events in events_strategy(),
        window in window_strategy(),
    ) {
        let mut state = DeliveryState::new(window);
        for e in &events {
            let before = state.clone();
            state.apply(&e.input());
            let event_delivery = DeliveryStatus::of_event(&e.details);
            let event_engagement = EngagementStatus::of_event(e.details.kind());

            if let Some(prev) = before.delivery_status().filter(|s| s.is_final()) {
                let now = state.delivery_status().expect("an axis is never cleared");
                prop_assert!(now.is_final());
                if !event_delivery.is_some_and(|s| s.is_final()) {
                    prop_assert_eq!(now, prev, "non-final event {:?} changed final {}", e.details.kind(), prev);
                } else if now != prev {
                    let same_rank_bounce = now.rank() == prev.rank()
                        && now.bounce_type().is_some()
                        && prev.bounce_type().is_some();
                    prop_assert!(now.rank() > prev.rank() || same_rank_bounce, "{} -> {}", prev, now);
                    prop_assert_eq!(&state.delivery.as_ref().unwrap().event_id, &e.id);
                }
            }
            let prev = before.engagement_status();
            if prev.is_final() {
                let now = state.engagement_status();
                if !event_engagement.is_some_and(|s| s.is_final()) {
                    prop_assert_eq!(now, prev);
                } else {
                    prop_assert!(now >= prev);
                }
            }
        }
    }

    /// Rules 1 and 6: each axis holds the highest-ranked in-window event's
    /// value (so `dropped`, the top of the delivery axis, whenever there is an
    /// in-window `dropped`), set by the earliest such event (time, then id).
    #[test]
    fn each_axis_is_the_maximum_over_in_window_events(
        events in events_strategy(),
        window in window_strategy(),
    ) {
        let state = fold(window, &events);

        let want = expected_axis(&events, window, DeliveryStatus::of_event, DeliveryStatus::rank);
        let has_dropped = events
            .iter()
            .any(|e| e.occurred_at <= window && matches!(e.details, EventDetails::Dropped(_)));
        if has_dropped {
            prop_assert_eq!(state.delivery_status(), Some(DeliveryStatus::Dropped));
        }
        prop_assert_eq!(state.delivery_status(), want.as_ref().map(|(s, _)| *s));
        prop_assert_eq!(state.delivery.as_ref().map(|v| v.event_id.clone()), want.map(|(_, id)| id));

        let want = expected_axis(
            &events,
            window,
            |d| EngagementStatus::of_event(d.kind()),
            EngagementStatus::rank,
        );
        prop_assert_eq!(
            state.engagement_status(),
            want.as_ref().map_or(EngagementStatus::None, |(s, _)| *s)
        );
        prop_assert_eq!(state.engagement.as_ref().map(|v| v.event_id.clone()), want.map(|(_, id)| id));
    }

    /// Rule 5: an event after the window closes is recorded (flagged) but
    /// changes nothing, at any point of the fold.
    #[test]
    fn events_after_the_window_change_nothing(
        events in events_strategy(),
        late in events_strategy(),
        window in window_strategy(),
    ) {
        let late: Vec<Ev> = late
            .into_iter()
            .map(|mut e| {
                e.occurred_at += window + 1;
                // Keep the ids apart from those of `events`.
                e.id = event_id(u128::from_str_radix(&e.id.as_str().replace('-', ""), 16).unwrap() ^ (1 << 127));
                e
            })
            .collect();
        let mut state = DeliveryState::new(window);
        for (i, e) in events.iter().enumerate() {
            state.apply(&e.input());
            if let Some(l) = late.get(i) {
                let before = state.clone();
                let outcome = state.apply(&l.input());
                prop_assert!(no_change(&outcome));
                prop_assert_eq!(&state, &before);
            }
        }
        let mut all = events.clone();
        all.extend(late);
        prop_assert_eq!(fold(window, &all), fold(window, &events));
    }
}

fn contact_status_strategy() -> impl Strategy<Value = ContactStatus> {
    prop_oneof![
        Just(ContactStatus::Active),
        Just(ContactStatus::Unconfirmed),
        Just(ContactStatus::Unsubscribed),
        Just(ContactStatus::Bounced),
        Just(ContactStatus::Complained),
    ]
}

fn signal_strategy() -> impl Strategy<Value = ContactSignal> {
    prop_oneof![
        1 => Just(ContactSignal::HardBounce),
        3 => Just(ContactSignal::FailedDelivery),
        3 => Just(ContactSignal::FailedAttempt),
        2 => Just(ContactSignal::Delivered),
        1 => Just(ContactSignal::Complaint),
        1 => Just(ContactSignal::Unsubscribe { stream: None }),
        1 => prop_oneof![Just("newsletter"), Just("transactional")]
            .prop_map(|s| ContactSignal::Unsubscribe { stream: Some(s.to_owned()) }),
    ]
}

fn limits_strategy() -> impl Strategy<Value = ContactLimits> {
    prop_oneof![
        Just(ContactLimits::default()),
        (1..5_u32, 1..12_u32).prop_map(|(d, a)| ContactLimits {
            soft_bounce_limit: d,
            soft_attempt_limit: a
        }),
    ]
}

/// A contact in some reachable state: a starting status and a history.
fn contact_strategy() -> impl Strategy<Value = (ContactState, ContactLimits)> {
    (
        contact_status_strategy(),
        prop::collection::vec(signal_strategy(), 0..20),
        limits_strategy(),
    )
        .prop_map(|(status, history, limits)| {
            let mut contact = ContactState::new(status);
            for s in &history {
                apply_signal(&mut contact, s, limits);
            }
            (contact, limits)
        })
}

proptest! {
    /// A hard bounce or complaint applied twice is the same as once: the
    /// second changes no status and asks for the same suppression again
    /// (which the store ignores when an equal entry exists).
    #[test]
    fn hard_bounce_and_complaint_are_idempotent(
        (contact, limits) in contact_strategy(),
        signal in prop_oneof![Just(ContactSignal::HardBounce), Just(ContactSignal::Complaint)],
    ) {
        let mut once = contact.clone();
        let first = apply_signal(&mut once, &signal, limits);
        let mut twice = once.clone();
        let second = apply_signal(&mut twice, &signal, limits);
        prop_assert_eq!(&twice, &once);
        prop_assert_eq!(second.status_change, None);
        prop_assert_eq!(second.suppress, first.suppress);
    }

    /// A complained contact stays complained whatever happens next, and a
    /// reported change always matches the actual before and after.
    #[test]
    fn complained_is_never_weakened(
        (contact, limits) in contact_strategy(),
        later in prop::collection::vec(signal_strategy(), 0..30),
    ) {
        let mut contact = contact;
        apply_signal(&mut contact, &ContactSignal::Complaint, limits);
        prop_assert_eq!(contact.status, ContactStatus::Complained);
        for s in &later {
            let before = contact.status;
            let effects = apply_signal(&mut contact, s, limits);
            prop_assert_eq!(contact.status, ContactStatus::Complained, "after {:?}", s);
            prop_assert_eq!(effects.status_change, None);
            prop_assert_eq!(before, contact.status);
        }
    }

    /// Whatever a signal does, a status change it reports is the real one.
    #[test]
    fn reported_status_changes_are_the_real_ones(
        (contact, limits) in contact_strategy(),
        signal in signal_strategy(),
    ) {
        let mut after = contact.clone();
        let effects = apply_signal(&mut after, &signal, limits);
        match effects.status_change {
            Some((from, to, _)) => {
                prop_assert_eq!(from, contact.status);
                prop_assert_eq!(to, after.status);
                prop_assert_ne!(from, to);
            }
            None => prop_assert_eq!(after.status, contact.status),
        }
    }
}
