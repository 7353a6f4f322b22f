//! The examples of STATUS_MODEL.md, one test per rule: the delivery status
//! fold (rules 1-6 and the shown status), the contact rules, retries and
//! suppression expiry. Events are folded for real; contact signals come from
//! `signals_for` on the outcomes of those folds.

mod common;

use common::Ev;
use posthorn_core::clock::{DAY, HOUR, MINUTE, SECOND};
use posthorn_core::config::Config;
use posthorn_core::contact::{
    ContactChangeReason, ContactLimits, ContactSignal, ContactState, ContactStatus, apply_signal,
    signals_for,
};
use posthorn_core::event::{
    BounceOrigin, Bounced, Clicked, Complained, Deferred, Delivered, DropReason, Dropped,
    Engagement, EventDetails, Expired, Failed, Queued, Sent, UnsubscribeScope, Unsubscribed,
};
use posthorn_core::policy::{Admission, RecipientFacts, admit};
use posthorn_core::retry::{RetryDecision, RetrySchedule, retry_hint};
use posthorn_core::status::{
    Anomaly, BounceType, DeliveryState, DeliveryStatus, EngagementStatus, FoldOutcome,
};
use posthorn_core::suppression::{
    SuppressionEntry, SuppressionExpiry, SuppressionReason, SuppressionScope,
};
use posthorn_core::{EventId, Millis};

/// When the delivery was queued in every example.
const T0: Millis = 1_764_000_000_000;

// ---------------------------------------------------------------- helpers

/// A fixed, readable event id: `...-00000000000n`.
fn id(n: u64) -> EventId {
    EventId::parse(&format!("01900000-0000-7000-8000-{n:012x}")).unwrap()
}

/// Events `n = 1, 2, ...` at the given offsets from `T0`.
fn timeline(steps: &[(Millis, EventDetails)]) -> Vec<Ev> {
    steps
        .iter()
        .enumerate()
        .map(|(i, (at, details))| Ev {
            id: id(i as u64 + 1),
            occurred_at: T0 + at,
            details: details.clone(),
        })
        .collect()
}

fn window() -> Millis {
    T0 + Config::default().status.window.0
}

fn fold(events: &[Ev]) -> DeliveryState {
    DeliveryState::fold(window(), events.iter().map(Ev::input))
}

fn fold_with_outcomes(events: &[Ev]) -> (DeliveryState, Vec<FoldOutcome>) {
    let mut state = DeliveryState::new(window());
    let outcomes = events.iter().map(|e| state.apply(&e.input())).collect();
    (state, outcomes)
}

fn queued() -> EventDetails {
    EventDetails::Queued(Queued { size: 2048 })
}
fn sent() -> EventDetails {
    EventDetails::Sent(Sent {
        attempt: 1,
        mx_host: Some("mx.example.com".into()),
        ip: None,
    })
}
fn deferred() -> EventDetails {
    EventDetails::Deferred(Deferred {
        smtp_code: Some(451),
        reply_text: Some("451 4.7.1 Greylisted, try again in 5 minutes".into()),
        ..Deferred::default()
    })
}
fn delivered() -> EventDetails {
    EventDetails::Delivered(Delivered {
        smtp_code: Some(250),
        reply_text: Some("250 2.0.0 OK queued as 4ABC".into()),
        ..Delivered::default()
    })
}
fn bounced(bounce_type: BounceType, origin: BounceOrigin) -> EventDetails {
    EventDetails::Bounced(Bounced {
        bounce_type,
        reason: None,
        smtp_code: Some(550),
        enhanced_code: None,
        reply_text: Some("550 5.1.1 user unknown".into()),
        origin,
        rule: None,
        mx_host: None,
    })
}
fn expired() -> EventDetails {
    EventDetails::Expired(Expired {
        attempts: 12,
        last_reply: None,
    })
}
fn failed() -> EventDetails {
    EventDetails::Failed(Failed {
        error: "no route".into(),
    })
}
fn dropped() -> EventDetails {
    EventDetails::Dropped(Dropped {
        reason: DropReason::Suppressed,
        suppression: None,
    })
}
fn opened() -> EventDetails {
    EventDetails::Opened(Engagement::default())
}
fn clicked() -> EventDetails {
    EventDetails::Clicked(Clicked {
        url: "https://example.com/offer".into(),
        link_index: Some(0),
        ip: None,
        user_agent: None,
        machine: Some(false),
        machine_reason: None,
        implied_open: None,
    })
}
fn unsubscribed(scope: UnsubscribeScope) -> EventDetails {
    EventDetails::Unsubscribed(Unsubscribed {
        scope,
        method: Some("one-click".into()),
    })
}
fn complained() -> EventDetails {
    EventDetails::Complained(Complained {
        feedback_type: Some("abuse".into()),
        reporting_domain: Some("mail.example.net".into()),
    })
}

use BounceOrigin::{Async, Sync};
use BounceType::{Hard, Soft, Undetermined};

// ------------------------------------------------ rule 1: priority

#[test]
fn rule1_priority_a_higher_rank_wins_a_lower_one_never_does() {
    let cases: Vec<(&str, Vec<EventDetails>, DeliveryStatus, EngagementStatus)> = vec![
        (
            "a later delivered after deferred wins",
            vec![queued(), sent(), deferred(), sent(), delivered()],
            DeliveryStatus::Delivered,
            EngagementStatus::None,
        ),
        (
            "a bounced (async DSN) after delivered wins",
            vec![queued(), sent(), delivered(), bounced(Hard, Async)],
            DeliveryStatus::Bounced(Hard),
            EngagementStatus::None,
        ),
        (
            "an opened after clicked leaves clicked",
            vec![queued(), sent(), delivered(), clicked(), opened()],
            DeliveryStatus::Delivered,
            EngagementStatus::Clicked,
        ),
        (
            "a late deferred after delivered leaves delivered",
            vec![queued(), sent(), delivered(), deferred()],
            DeliveryStatus::Delivered,
            EngagementStatus::None,
        ),
    ];
    for (name, kinds, want_delivery, want_engagement) in cases {
        let steps: Vec<_> = kinds
            .into_iter()
            .enumerate()
            .map(|(i, k)| (i as Millis * MINUTE, k))
            .collect();
        let state = fold(&timeline(&steps));
        assert_eq!(state.delivery_status(), Some(want_delivery), "{name}");
        assert_eq!(state.engagement_status(), want_engagement, "{name}");
    }
}

// ------------------------------------------------ rule 2: final values

#[test]
fn rule2_the_final_values_are_the_ones_the_model_lists_and_rank_above_the_rest() {
    let finals = [
        DeliveryStatus::Bounced(Soft),
        DeliveryStatus::Bounced(Undetermined),
        DeliveryStatus::Expired,
        DeliveryStatus::Failed,
        DeliveryStatus::Bounced(Hard),
        DeliveryStatus::Dropped,
    ];
    let ordinary = [
        DeliveryStatus::Scheduled,
        DeliveryStatus::Queued,
        DeliveryStatus::Held,
        DeliveryStatus::Sent,
        DeliveryStatus::Deferred,
        DeliveryStatus::Delivered,
    ];
    for f in finals {
        assert!(f.is_final(), "{f} is final");
        for o in ordinary {
            assert!(!o.is_final(), "{o} is not final");
            assert!(f.rank() > o.rank(), "{f} must rank above {o}");
        }
    }
    assert!(EngagementStatus::Unsubscribed.is_final() && EngagementStatus::Complained.is_final());
    assert!(!EngagementStatus::Opened.is_final() && !EngagementStatus::Clicked.is_final());
}

#[test]
fn rule2_nothing_ordinary_changes_a_final_value() {
    let late_ordinary = [queued(), sent(), deferred(), delivered()];
    for final_event in [
        bounced(Soft, Sync),
        bounced(Undetermined, Async),
        expired(),
        failed(),
        bounced(Hard, Sync),
    ] {
        let want = DeliveryStatus::of_event(&final_event).unwrap();
        let mut steps = vec![(0, queued()), (MINUTE, sent()), (2 * MINUTE, final_event)];
        for (i, e) in late_ordinary.iter().enumerate() {
            steps.push(((3 + i as Millis) * MINUTE, e.clone()));
        }
        let events = timeline(&steps);
        let (state, outcomes) = fold_with_outcomes(&events);
        assert_eq!(state.delivery_status(), Some(want));
        assert_eq!(
            state.delivery.as_ref().unwrap().event_id,
            id(3),
            "{want} is set by its own event"
        );
        assert!(outcomes[3..].iter().all(|o| o.delivery_changed.is_none()));
    }

    for final_event in [unsubscribed(UnsubscribeScope::All), complained()] {
        let want = EngagementStatus::of_event(final_event.kind()).unwrap();
        let events = timeline(&[
            (0, delivered()),
            (MINUTE, final_event),
            (2 * MINUTE, opened()),
            (3 * MINUTE, clicked()),
        ]);
        let state = fold(&events);
        assert_eq!(state.engagement_status(), want);
        assert_eq!(state.status(), want.as_str());
    }
}

#[test]
fn rule2_a_higher_final_value_still_replaces_a_lower_one() {
    // A soft bounce is final, but a later hard bounce DSN ranks higher.
    let state = fold(&timeline(&[
        (0, sent()),
        (MINUTE, bounced(Soft, Sync)),
        (HOUR, bounced(Hard, Async)),
    ]));
    assert_eq!(state.delivery_status(), Some(DeliveryStatus::Bounced(Hard)));
    // An unsubscribed recipient who then reports spam has complained.
    let state = fold(&timeline(&[
        (0, delivered()),
        (MINUTE, unsubscribed(UnsubscribeScope::Stream)),
        (HOUR, complained()),
    ]));
    assert_eq!(state.status(), "complained");
}

#[test]
fn rule2_a_delivery_event_after_dropped_is_flagged_and_changes_no_status() {
    for late in [
        sent(),
        deferred(),
        delivered(),
        bounced(Hard, Async),
        expired(),
        opened(),
        clicked(),
    ] {
        let events = timeline(&[(0, dropped()), (MINUTE, late.clone())]);
        let (state, outcomes) = fold_with_outcomes(&events);
        assert_eq!(outcomes[0].anomaly, None);
        assert_eq!(
            outcomes[1].anomaly,
            Some(Anomaly::EventAfterDropped),
            "{}",
            late.kind()
        );
        assert_eq!(outcomes[1].delivery_changed, None);
        assert_eq!(state.delivery_status(), Some(DeliveryStatus::Dropped));
        assert_eq!(state.delivery.as_ref().unwrap().event_id, id(1));
        assert_eq!(state.status(), "dropped");
        assert_eq!(
            state.shown_delivery_status(),
            (Some(DeliveryStatus::Dropped), false)
        );
    }
}

// ------------------------------------------------ rule 3: order-independence

#[test]
fn rule3_events_out_of_order_give_the_same_status() {
    let cases: Vec<(&str, Vec<(Millis, EventDetails)>)> = vec![
        (
            "an open before the delivery confirmation",
            vec![
                (0, queued()),
                (MINUTE, sent()),
                (2 * MINUTE, delivered()),
                (5 * MINUTE, opened()),
            ],
        ),
        (
            "a DSN before the retry gives up",
            vec![
                (0, queued()),
                (MINUTE, deferred()),
                (HOUR, bounced(Soft, Async)),
                (48 * HOUR, expired()),
            ],
        ),
        (
            "a click before the open",
            vec![
                (0, delivered()),
                (MINUTE, opened()),
                (2 * MINUTE, clicked()),
            ],
        ),
    ];
    for (name, steps) in cases {
        let events = timeline(&steps);
        let in_order = fold(&events);
        let mut reversed = events.clone();
        reversed.reverse();
        assert_eq!(fold(&reversed), in_order, "{name}");
        // Any other arrival: the last event first.
        let mut rotated = events.clone();
        rotated.rotate_right(1);
        assert_eq!(fold(&rotated), in_order, "{name}");
    }
}

#[test]
fn rule3_an_engagement_event_counts_the_same_before_or_after_a_drop() {
    // Regression: an event folded after `dropped` used to be skipped entirely,
    // while the same event folded before it counted, so the two orders gave
    // different engagement axes.
    let events = timeline(&[(0, dropped()), (MINUTE, opened())]);
    let mut reversed = events.clone();
    reversed.reverse();
    let (a, b) = (fold(&events), fold(&reversed));
    assert_eq!(a, b);
    // Recorded on its axis either way, but a dropped delivery shows `dropped`.
    assert_eq!(a.engagement_status(), EngagementStatus::Opened);
    assert_eq!(a.status(), "dropped");
}

#[test]
fn rule3_a_duplicate_event_is_recorded_once() {
    let events = timeline(&[(0, queued()), (MINUTE, delivered()), (2 * MINUTE, opened())]);
    let (state, _) = fold_with_outcomes(&events);
    for e in &events {
        let mut again = state.clone();
        let outcome = again.apply(&e.input());
        // Nothing moves (a repeated lower-ranked event is merely flagged stale).
        let expected = FoldOutcome {
            stale: outcome.stale,
            ..FoldOutcome::default()
        };
        assert_eq!(outcome, expected, "{}", e.details.kind());
        assert_eq!(again, state);
    }
}

// ------------------------------------------------ rule 4: engagement implies delivery

#[test]
fn rule4_engagement_implies_delivery() {
    // The open arrives before the delivery confirmation.
    let events = timeline(&[(0, queued()), (MINUTE, sent()), (2 * MINUTE, opened())]);
    let state = fold(&events);
    assert_eq!(
        state.delivery_status(),
        Some(DeliveryStatus::Sent),
        "stored axis is not rewritten"
    );
    assert_eq!(
        state.shown_delivery_status(),
        (Some(DeliveryStatus::Delivered), true)
    );
    assert_eq!(state.status(), "opened");

    // The confirmation arrives: the same shown status, no longer inferred.
    let mut state = state;
    state.apply(
        &Ev {
            id: id(9),
            occurred_at: T0 + MINUTE + SECOND,
            details: delivered(),
        }
        .input(),
    );
    assert_eq!(
        state.shown_delivery_status(),
        (Some(DeliveryStatus::Delivered), false)
    );
    assert_eq!(state.status(), "opened");

    // Still deferred (the click was on a copy delivered by an earlier attempt).
    let state = fold(&timeline(&[
        (0, queued()),
        (MINUTE, deferred()),
        (HOUR, clicked()),
    ]));
    assert_eq!(
        state.shown_delivery_status(),
        (Some(DeliveryStatus::Delivered), true)
    );
    assert_eq!(state.status(), "clicked");

    // Never over a final value: a bounced delivery with an open stays bounced.
    let state = fold(&timeline(&[
        (0, sent()),
        (MINUTE, bounced(Hard, Sync)),
        (HOUR, opened()),
    ]));
    assert_eq!(
        state.shown_delivery_status(),
        (Some(DeliveryStatus::Bounced(Hard)), false)
    );
    assert_eq!(state.status(), "bounced");
}

// ------------------------------------------------ rule 5: update window

#[test]
fn rule5_events_after_the_window_are_recorded_but_change_nothing() {
    assert_eq!(
        Config::default().status.window.0,
        30 * DAY,
        "the model's default window"
    );
    let events = timeline(&[
        (0, queued()),
        (MINUTE, delivered()),
        (31 * DAY, opened()),
        (31 * DAY + MINUTE, bounced(Hard, Async)),
    ]);
    let (state, outcomes) = fold_with_outcomes(&events);
    for o in &outcomes[2..] {
        assert!(o.outside_window);
        assert_eq!((o.delivery_changed, o.engagement_changed), (None, None));
    }
    assert_eq!(state, fold(&events[..2]));
    assert_eq!(state.status(), "delivered");

    // "More than 30 days after": an event exactly at the end still counts.
    let at_edge = timeline(&[(0, queued()), (MINUTE, delivered()), (30 * DAY, opened())]);
    assert_eq!(fold(&at_edge).status(), "opened");
}

#[test]
fn rule5_contact_effects_still_apply_outside_the_window() {
    // A person asked to stop, or the address is gone: that holds whenever we learn it.
    let cases = [
        (complained(), ContactStatus::Complained),
        (
            unsubscribed(UnsubscribeScope::All),
            ContactStatus::Unsubscribed,
        ),
        (bounced(Hard, Async), ContactStatus::Bounced),
    ];
    for (late, want) in cases {
        let kind = late.kind();
        let events = timeline(&[(0, queued()), (MINUTE, delivered()), (45 * DAY, late)]);
        let (state, outcomes) = fold_with_outcomes(&events);
        assert!(outcomes[2].outside_window);
        assert_eq!(state.status(), "delivered", "{kind}");
        let mut contact = ContactState::new(ContactStatus::Active);
        for (e, o) in events.iter().zip(&outcomes) {
            for s in signals_for(&e.details, o, "newsletter") {
                apply_signal(&mut contact, &s, ContactLimits::default());
            }
        }
        assert_eq!(contact.status, want, "{kind}");
    }
}

// ------------------------------------------------ rule 6: explainability

#[test]
fn rule6_each_axis_says_which_event_set_it() {
    // Two clicks: the earlier one set `clicked`, whichever arrived first.
    let events = timeline(&[
        (0, queued()),
        (MINUTE, sent()),
        (2 * MINUTE, delivered()),
        (3 * MINUTE, opened()),
        (4 * MINUTE, clicked()),
        (5 * MINUTE, clicked()),
    ]);
    let mut arrival = events.clone();
    arrival.swap(4, 5);
    for order in [&events, &arrival] {
        let state = fold(order);
        let d = state.delivery.as_ref().unwrap();
        assert_eq!(
            (d.status, &d.event_id, d.occurred_at),
            (DeliveryStatus::Delivered, &id(3), T0 + 2 * MINUTE)
        );
        let e = state.engagement.as_ref().unwrap();
        assert_eq!((e.status, &e.event_id), (EngagementStatus::Clicked, &id(5)));
    }

    // Two opens at the same millisecond: the smaller id is kept, in any order.
    let same_time = vec![
        Ev {
            id: id(8),
            occurred_at: T0,
            details: opened(),
        },
        Ev {
            id: id(7),
            occurred_at: T0,
            details: opened(),
        },
    ];
    let mut reversed = same_time.clone();
    reversed.reverse();
    assert_eq!(fold(&same_time).engagement.unwrap().event_id, id(7));
    assert_eq!(fold(&reversed).engagement.unwrap().event_id, id(7));
}

// ------------------------------------------------ the shown status

#[test]
fn the_status_string_users_see() {
    let cases: Vec<(Vec<EventDetails>, &str)> = vec![
        (vec![queued()], "queued"),
        (vec![queued(), sent(), deferred()], "deferred"),
        (vec![queued(), sent(), delivered()], "delivered"),
        (vec![delivered(), clicked()], "clicked"),
        (vec![delivered(), opened(), clicked(), opened()], "clicked"),
        (vec![delivered(), complained()], "complained"),
        (
            vec![
                delivered(),
                opened(),
                unsubscribed(UnsubscribeScope::Stream),
            ],
            "unsubscribed",
        ),
        (vec![bounced(Hard, Async), opened()], "bounced"),
        (vec![delivered(), opened(), bounced(Soft, Async)], "bounced"),
        (vec![deferred(), expired(), clicked()], "expired"),
        (vec![sent(), failed()], "failed"),
        (vec![dropped()], "dropped"),
    ];
    for (kinds, want) in cases {
        let names: Vec<_> = kinds.iter().map(|k| k.kind().as_str()).collect();
        let steps: Vec<_> = kinds
            .into_iter()
            .enumerate()
            .map(|(i, k)| (i as Millis * MINUTE, k))
            .collect();
        assert_eq!(fold(&timeline(&steps)).status(), want, "{names:?}");
    }
}

// ------------------------------------------------ contacts

/// Folds one delivery's events and feeds their contact signals to `contact`;
/// returns every effect that changed the contact's status.
fn run_delivery(
    contact: &mut ContactState,
    steps: &[(Millis, EventDetails)],
    stream: &str,
    limits: ContactLimits,
) -> Vec<posthorn_core::contact::ContactEffects> {
    let events = timeline(steps);
    let (_, outcomes) = fold_with_outcomes(&events);
    let mut effects = Vec::new();
    for (e, o) in events.iter().zip(&outcomes) {
        for s in signals_for(&e.details, o, stream) {
            let fx = apply_signal(contact, &s, limits);
            if fx.status_change.is_some() || fx.suppress.is_some() {
                effects.push(fx);
            }
        }
    }
    effects
}

#[test]
fn contact_hard_bounce_makes_it_bounced_and_suppressed() {
    let mut contact = ContactState::new(ContactStatus::Active);
    let fx = run_delivery(
        &mut contact,
        &[(0, queued()), (MINUTE, bounced(Hard, Sync))],
        "t",
        ContactLimits::default(),
    );
    assert_eq!(contact.status, ContactStatus::Bounced);
    assert_eq!(fx.len(), 1);
    assert_eq!(
        fx[0].status_change,
        Some((
            ContactStatus::Active,
            ContactStatus::Bounced,
            ContactChangeReason::HardBounce
        ))
    );
    assert_eq!(
        fx[0].suppress,
        Some((SuppressionScope::All, SuppressionReason::HardBounce))
    );
}

#[test]
fn contact_complaint_makes_it_complained_and_suppressed_everywhere() {
    let mut contact = ContactState::new(ContactStatus::Active);
    let fx = run_delivery(
        &mut contact,
        &[(0, delivered()), (HOUR, complained())],
        "newsletter",
        ContactLimits::default(),
    );
    assert_eq!(contact.status, ContactStatus::Complained);
    assert_eq!(
        fx[0].status_change,
        Some((
            ContactStatus::Active,
            ContactStatus::Complained,
            ContactChangeReason::Complaint
        ))
    );
    assert_eq!(
        fx[0].suppress,
        Some((SuppressionScope::All, SuppressionReason::Complaint))
    );

    // A later hard bounce does not turn a complaint into a mere bounce.
    let fx = run_delivery(
        &mut contact,
        &[(0, bounced(Hard, Sync))],
        "newsletter",
        ContactLimits::default(),
    );
    assert_eq!(contact.status, ContactStatus::Complained);
    assert_eq!(fx[0].status_change, None);
}

#[test]
fn contact_unsubscribe_from_one_stream_keeps_it_active_elsewhere() {
    let mut contact = ContactState::new(ContactStatus::Active);
    let fx = run_delivery(
        &mut contact,
        &[
            (0, delivered()),
            (HOUR, unsubscribed(UnsubscribeScope::Stream)),
        ],
        "newsletter",
        ContactLimits::default(),
    );
    assert_eq!(contact.status, ContactStatus::Active);
    assert!(contact.unsubscribed_streams.contains("newsletter"));
    assert!(contact.is_unsubscribed_from("newsletter"));
    assert!(!contact.is_unsubscribed_from("transactional"));
    assert_eq!(fx[0].status_change, None);
    assert_eq!(
        fx[0].suppress,
        Some((
            SuppressionScope::Stream("newsletter".into()),
            SuppressionReason::Unsubscribe
        ))
    );
}

#[test]
fn contact_unsubscribe_from_everything() {
    let mut contact = ContactState::new(ContactStatus::Active);
    let fx = run_delivery(
        &mut contact,
        &[
            (0, delivered()),
            (HOUR, unsubscribed(UnsubscribeScope::All)),
        ],
        "newsletter",
        ContactLimits::default(),
    );
    assert_eq!(contact.status, ContactStatus::Unsubscribed);
    assert!(contact.is_unsubscribed_from("transactional"));
    assert_eq!(
        fx[0].status_change,
        Some((
            ContactStatus::Active,
            ContactStatus::Unsubscribed,
            ContactChangeReason::Unsubscribe
        ))
    );
    assert_eq!(
        fx[0].suppress,
        Some((SuppressionScope::All, SuppressionReason::Unsubscribe))
    );
}

fn soft_bounced_delivery() -> Vec<(Millis, EventDetails)> {
    vec![
        (0, queued()),
        (MINUTE, sent()),
        (2 * MINUTE, bounced(Soft, Sync)),
    ]
}
fn expired_delivery() -> Vec<(Millis, EventDetails)> {
    vec![(0, queued()), (MINUTE, deferred()), (48 * HOUR, expired())]
}
fn delivered_delivery() -> Vec<(Millis, EventDetails)> {
    vec![(0, queued()), (MINUTE, sent()), (2 * MINUTE, delivered())]
}

#[test]
fn contact_soft_bounces_turn_hard_after_three_failed_deliveries() {
    let limits = ContactLimits::default();
    let mut contact = ContactState::new(ContactStatus::Active);
    assert!(run_delivery(&mut contact, &soft_bounced_delivery(), "t", limits).is_empty());
    assert!(run_delivery(&mut contact, &expired_delivery(), "t", limits).is_empty());
    assert_eq!(
        (contact.status, contact.consecutive_failed_deliveries),
        (ContactStatus::Active, 2)
    );

    let fx = run_delivery(&mut contact, &soft_bounced_delivery(), "t", limits);
    assert_eq!(contact.status, ContactStatus::Bounced);
    assert_eq!(contact.consecutive_failed_deliveries, 3);
    assert!(
        contact.consecutive_failed_attempts < limits.soft_attempt_limit,
        "the delivery limit decided"
    );
    assert_eq!(
        fx[0].status_change,
        Some((
            ContactStatus::Active,
            ContactStatus::Bounced,
            ContactChangeReason::SoftBounceLimit
        ))
    );
    assert_eq!(
        fx[0].suppress,
        Some((SuppressionScope::All, SuppressionReason::SoftBounceLimit))
    );
}

#[test]
fn contact_soft_bounces_turn_hard_after_ten_failed_attempts_across_deliveries() {
    let limits = ContactLimits::default();
    let mut contact = ContactState::new(ContactStatus::Active);
    // Two deliveries still being retried: 6 + 3 deferrals, nothing ended yet.
    let first: Vec<_> = (0..6).map(|i| (i * MINUTE, deferred())).collect();
    let second: Vec<_> = (0..3).map(|i| (i * MINUTE, deferred())).collect();
    assert!(run_delivery(&mut contact, &first, "t", limits).is_empty());
    assert!(run_delivery(&mut contact, &second, "t", limits).is_empty());
    assert_eq!(contact.status, ContactStatus::Active);
    assert_eq!(contact.consecutive_failed_attempts, 9);

    let fx = run_delivery(&mut contact, &[(0, deferred())], "t", limits);
    assert_eq!(
        contact.consecutive_failed_deliveries, 0,
        "the attempt limit decided"
    );
    assert_eq!(contact.status, ContactStatus::Bounced);
    assert_eq!(
        fx[0].status_change,
        Some((
            ContactStatus::Active,
            ContactStatus::Bounced,
            ContactChangeReason::SoftBounceLimit
        ))
    );
}

#[test]
fn contact_a_delivery_resets_both_counters() {
    let limits = ContactLimits::default();
    let mut contact = ContactState::new(ContactStatus::Active);
    run_delivery(&mut contact, &soft_bounced_delivery(), "t", limits);
    run_delivery(&mut contact, &soft_bounced_delivery(), "t", limits);
    // Each soft-bounced delivery was one failed attempt; seven more deferrals.
    let retries: Vec<_> = (0..7).map(|i| (i * MINUTE, deferred())).collect();
    run_delivery(&mut contact, &retries, "t", limits);
    assert_eq!(
        (
            contact.consecutive_failed_deliveries,
            contact.consecutive_failed_attempts
        ),
        (2, 9)
    );

    run_delivery(&mut contact, &delivered_delivery(), "t", limits);
    assert_eq!(
        (
            contact.consecutive_failed_deliveries,
            contact.consecutive_failed_attempts
        ),
        (0, 0)
    );

    // Without the reset, this third failed delivery (and 10th attempt) would bounce the contact.
    run_delivery(&mut contact, &soft_bounced_delivery(), "t", limits);
    assert_eq!(contact.status, ContactStatus::Active);
}

#[test]
fn contact_two_soft_bounce_events_of_one_delivery_are_one_failed_delivery() {
    // The sync 5xx reply, then the DSN for the same delivery.
    let mut contact = ContactState::new(ContactStatus::Active);
    let steps = [
        (0, queued()),
        (MINUTE, sent()),
        (2 * MINUTE, bounced(Soft, Sync)),
        (HOUR, bounced(Undetermined, Async)),
    ];
    run_delivery(&mut contact, &steps, "t", ContactLimits::default());
    assert_eq!(contact.consecutive_failed_deliveries, 1);
    assert_eq!(
        contact.consecutive_failed_attempts, 2,
        "each soft bounce is a failed attempt"
    );

    // The signals themselves: only the bounce that moved the status ends the delivery.
    let events = timeline(&steps);
    let (_, outcomes) = fold_with_outcomes(&events);
    assert_eq!(
        signals_for(&events[2].details, &outcomes[2], "t"),
        vec![ContactSignal::FailedAttempt, ContactSignal::FailedDelivery]
    );
    assert_eq!(
        signals_for(&events[3].details, &outcomes[3], "t"),
        vec![ContactSignal::FailedAttempt]
    );
}

#[test]
fn contact_a_soft_bounce_then_expiry_is_one_failed_delivery_in_either_order() {
    // Regression: `expired` after `bounced(soft)` moves the axis again
    // (expired ranks higher) and used to count the same delivery twice.
    let bounce_first = [
        (0, queued()),
        (MINUTE, deferred()),
        (HOUR, bounced(Soft, Async)),
        (48 * HOUR, expired()),
    ];
    let expiry_first = [
        (0, queued()),
        (MINUTE, deferred()),
        (HOUR, expired()),
        (2 * HOUR, bounced(Soft, Async)),
    ];
    for steps in [bounce_first, expiry_first] {
        let mut contact = ContactState::new(ContactStatus::Active);
        run_delivery(&mut contact, &steps, "t", ContactLimits::default());
        assert_eq!(contact.consecutive_failed_deliveries, 1);
    }
}

#[test]
fn contact_duplicate_or_late_delivery_events_do_not_count_again() {
    // A second `delivered` for the same delivery is not a second reset signal,
    // and a `delivered` under a final value is not a delivery at all.
    let events = timeline(&[
        (0, sent()),
        (MINUTE, delivered()),
        (2 * MINUTE, delivered()),
    ]);
    let (_, outcomes) = fold_with_outcomes(&events);
    assert_eq!(
        signals_for(&events[1].details, &outcomes[1], "t"),
        vec![ContactSignal::Delivered]
    );
    assert_eq!(signals_for(&events[2].details, &outcomes[2], "t"), vec![]);

    let events = timeline(&[
        (0, sent()),
        (MINUTE, bounced(Soft, Sync)),
        (2 * MINUTE, delivered()),
    ]);
    let (_, outcomes) = fold_with_outcomes(&events);
    assert_eq!(signals_for(&events[2].details, &outcomes[2], "t"), vec![]);

    // Nothing about a dropped delivery is an attempt.
    let events = timeline(&[
        (0, dropped()),
        (MINUTE, deferred()),
        (2 * MINUTE, bounced(Soft, Sync)),
    ]);
    let (_, outcomes) = fold_with_outcomes(&events);
    for (e, o) in events.iter().zip(&outcomes) {
        assert_eq!(
            signals_for(&e.details, o, "t"),
            vec![],
            "{}",
            e.details.kind()
        );
    }
}

// ------------------------------------------------ retries

fn retry_at(decision: RetryDecision) -> Millis {
    match decision {
        RetryDecision::RetryAt(t) => t,
        RetryDecision::Expire => panic!("expected a retry"),
    }
}

#[test]
fn retries_start_at_a_minute_double_and_cap_at_an_hour() {
    let s = Config::default().retry.schedule();
    let now = T0 + 10 * MINUTE;
    // A jitter sample of 0.5 is the middle of the spread: no jitter.
    let delays: Vec<Millis> = (1..=9)
        .map(|a| retry_at(s.next(a, T0, now, None, 0.5)) - now)
        .collect();
    let minutes: Vec<Millis> = delays.iter().map(|d| d / MINUTE).collect();
    assert_eq!(minutes, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
    assert!(delays.iter().all(|d| d % MINUTE == 0));

    // Jitter spreads deliveries deferred together, around the same delay.
    let low = retry_at(s.next(3, T0, now, None, 0.0)) - now;
    let high = retry_at(s.next(3, T0, now, None, 0.999)) - now;
    assert!(low < 4 * MINUTE && 4 * MINUTE < high, "{low} {high}");
    assert!(low >= 2 * MINUTE && high <= 8 * MINUTE);
}

#[test]
fn retries_end_in_expired_when_the_lifetime_is_over() {
    let s = RetrySchedule::default();
    assert_eq!(
        s.next(40, T0, T0 + 48 * HOUR, None, 0.5),
        RetryDecision::Expire
    );
    assert_eq!(
        s.next(40, T0, T0 + 50 * HOUR, None, 0.5),
        RetryDecision::Expire
    );
    // Just before the end: one last attempt at the deadline, never after it.
    assert_eq!(
        s.next(40, T0, T0 + 48 * HOUR - 5 * MINUTE, None, 0.5),
        RetryDecision::RetryAt(T0 + 48 * HOUR)
    );
    // A lifetime set per stream, or the message's expiry, sets the deadline.
    let stream_deadline = posthorn_core::retry::deadline(T0, None, HOUR, None);
    assert_eq!(
        s.next_before(3, T0 + 2 * HOUR, None, 0.5, stream_deadline),
        RetryDecision::Expire
    );
    let longer = posthorn_core::retry::deadline(T0, None, 72 * HOUR, None);
    assert!(matches!(
        s.next_before(3, T0 + 2 * HOUR, None, 0.5, longer),
        RetryDecision::RetryAt(_)
    ));
}

#[test]
fn retries_honour_the_time_the_remote_server_asks_for() {
    let s = RetrySchedule::default();
    let now = T0 + 3 * HOUR;
    // Backoff would wait an hour at attempt 10; the server said five minutes.
    let hint = retry_hint("451 4.7.1 Greylisted, please try again in 5 minutes");
    assert_eq!(hint, Some(5 * MINUTE));
    assert_eq!(
        s.next(10, T0, now, hint, 0.9),
        RetryDecision::RetryAt(now + 5 * MINUTE)
    );
    // Longer than the backoff cap, too: the server knows when it takes mail again.
    let hint = retry_hint("421 4.7.0 Rate limited; retry after 2h");
    assert_eq!(
        s.next(1, T0, now, hint, 0.5),
        RetryDecision::RetryAt(now + 2 * HOUR)
    );
    // But never past the lifetime.
    let near_end = T0 + 47 * HOUR;
    assert_eq!(
        s.next(1, T0, near_end, hint, 0.5),
        RetryDecision::RetryAt(T0 + 48 * HOUR)
    );
}

// ------------------------------------------------ suppression

fn entry(
    reason: SuppressionReason,
    scope: SuppressionScope,
    expiry: SuppressionExpiry,
) -> SuppressionEntry {
    SuppressionEntry {
        id: "sup_1".into(),
        target: "ann@example.com".into(),
        scope,
        reason,
        cause_event_id: Some(id(1)),
        created_at: T0,
        expires_at: expiry.expires_at(reason, T0),
    }
}

#[test]
fn suppressions_never_expire_by_default() {
    let expiry = Config::default().suppression.expiry();
    let ten_years = T0 + 3650 * DAY;
    for reason in [
        SuppressionReason::Complaint,
        SuppressionReason::Unsubscribe,
        SuppressionReason::HardBounce,
        SuppressionReason::SoftBounceLimit,
        SuppressionReason::Manual,
    ] {
        let e = entry(reason, SuppressionScope::All, expiry);
        assert_eq!(e.expires_at, None, "{}", reason.as_str());
        assert!(e.blocks("ann@example.com", "newsletter", ten_years));
    }
}

#[test]
fn bounce_suppressions_can_be_set_to_expire_but_complaints_and_unsubscribes_cannot() {
    let cfg: Config = toml::from_str(
        "[suppression]\nhard_bounce_expiry = \"90d\"\nsoft_bounce_limit_expiry = \"7d\"\n",
    )
    .unwrap();
    let expiry = cfg.suppression.expiry();

    let hard = entry(SuppressionReason::HardBounce, SuppressionScope::All, expiry);
    assert_eq!(hard.expires_at, Some(T0 + 90 * DAY));
    assert!(hard.blocks("ann@example.com", "t", T0 + 90 * DAY - 1));
    assert!(!hard.blocks("ann@example.com", "t", T0 + 90 * DAY));

    let soft = entry(
        SuppressionReason::SoftBounceLimit,
        SuppressionScope::All,
        expiry,
    );
    assert_eq!(soft.expires_at, Some(T0 + 7 * DAY));

    for reason in [
        SuppressionReason::Complaint,
        SuppressionReason::Unsubscribe,
        SuppressionReason::Manual,
    ] {
        let e = entry(reason, SuppressionScope::All, expiry);
        assert_eq!(e.expires_at, None, "{}", reason.as_str());
        assert!(e.blocks("ann@example.com", "t", T0 + 3650 * DAY));
    }
}

#[test]
fn sending_to_a_suppressed_address_is_dropped_with_the_entry() {
    let all = entry(
        SuppressionReason::Complaint,
        SuppressionScope::All,
        SuppressionExpiry::default(),
    );
    let stream = entry(
        SuppressionReason::Unsubscribe,
        SuppressionScope::Stream("newsletter".into()),
        SuppressionExpiry::default(),
    );
    let facts = |s| RecipientFacts {
        deliverable_domain: true,
        suppression: Some(s),
        duplicate_in_message: false,
        duplicate_in_campaign: false,
        contact: None,
        stream: "newsletter",
        stream_requires_confirmation: false,
        expires_at: None,
        send_at: None,
        now: T0,
    };
    assert_eq!(
        admit(&facts(&all)),
        Admission::Dropped {
            reason: DropReason::Suppressed,
            suppression: Some(all.clone())
        }
    );
    assert_eq!(
        admit(&facts(&stream)),
        Admission::Dropped {
            reason: DropReason::UnsubscribedStream,
            suppression: Some(stream.clone())
        }
    );
    // A stream entry does not cover other streams.
    assert!(!stream.blocks("ann@example.com", "transactional", T0));
}
