//! The conformance suite: behaviour every [`Store`] backend must show,
//! written against the trait only. A backend runs it with
//! [`conformance_tests!`](crate::conformance_tests), giving a function that
//! makes a fresh, empty store.
//!
//! Each case panics with a message on failure; none depends on wall-clock
//! time (times are fixed numbers).

use crate::*;
use posthorn_core::address::Mailbox;
use posthorn_core::clock::DAY;
use posthorn_core::contact::ContactStatus;
use posthorn_core::event::{
    BounceOrigin, Bounced, Complained, Deferred, Delivered, Engagement, EventDetails, Expired,
    UnsubscribeScope, Unsubscribed,
};
use posthorn_core::id::{ApiKeyId, InboundId};
use posthorn_core::inbound::{AttributedBy, InboundKind, OrphanReason, RecordKind};
use posthorn_core::search::{Filters, Surface};
use posthorn_core::status::{BounceType, DeliveryStatus, EngagementStatus};
use posthorn_core::suppression::SuppressionReason;
use posthorn_core::{
    DeliveryId, EventId, EventKind, EventSource, MessageId, Millis, NodeId, TenantId,
};

/// A fixed "now" for the suite: 2026-11-24T00:00:00Z.
pub const T0: Millis = 1_795_478_400_000;

/// Generates one `#[tokio::test]` per conformance case. `$make` is an async
/// expression (evaluated per test) that yields a fresh `impl Store` plus
/// anything that must live as long as it (e.g. a temporary directory).
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@cases $make;
            tenants_and_keys, sending_domains_have_one_owner,
            accept_refuses_another_tenants_sender_domain, accept_queues_and_creates_contact, policy_chain_outcomes,
            idempotency, status_fold_through_record_event, hard_bounce_suppresses_next_message,
            complaint_marks_contact_and_records_cause, soft_bounces_turn_hard,
            unsubscribe_from_one_stream, external_id_deduplicates, tenant_isolation,
            event_listing_filters_and_pages, search_finds_events_by_every_filter,
            search_lists_deliveries_by_status_and_counts_them,
            search_pages_do_not_shift_while_events_are_recorded,
            stats_count_each_delivery_once_as_its_status_is_now, confirmation_required_streams, event_after_dropped_is_anomaly,
            events_outside_window_do_not_change_status, concurrent_writes_all_commit,
            queue_claims_leases_and_finishes, inbound_reports_record_events_with_their_source,
            inbound_orphans_are_kept_apart, message_engagement_lists_opens_and_clicks_of_every_delivery,
            tracking_facts_give_the_delivery_time_and_earlier_hits,
            a_delivery_timeline_pages_oldest_first,
            repeated_hits_are_counted_per_target_and_verdict,
            leases_belong_to_the_node_that_claimed_them,
            events_are_numbered_and_published_in_commit_order,
            ingest_sources_belong_to_their_tenant, provider_events_make_deliveries_and_count_once,
            concurrent_events_of_one_delivery_end_at_the_folds_maximum,
            concurrent_hard_bounces_make_one_suppression, concurrent_claimers_never_share_a_delivery,
            one_idempotency_key_used_at_once_makes_one_message,
            concurrent_admissions_of_one_campaign_recipient_send_once,
            a_failing_write_among_concurrent_ones_fails_alone,
            one_event_id_recorded_at_once_is_stored_once,
            concurrent_messages_to_one_recipient_make_one_contact,
            a_batch_of_attempts_of_two_tenants_is_recorded_in_order,
            a_hard_bounce_amid_a_burst_of_messages_stops_those_after_it,
            tracking_facts_read_together_are_each_deliverys_own);
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (store, _guard) = $make;
                $crate::conformance::$case(&store).await;
            }
        )*
    };
}

async fn tenant(store: &dyn Store, name: &str) -> TenantId {
    store
        .create_tenant(name, T0)
        .await
        .expect("create tenant")
        .id
}

/// A one-part message from `news@sender.example` to `to`, accepted at `T0`.
pub fn message(tenant: &TenantId, to: &[&str]) -> NewMessage {
    NewMessage {
        sender_check: Default::default(),
        id: MessageId::generate(),
        tenant_id: tenant.clone(),
        from_address: "news@sender.example".into(),
        content: MessageContent {
            from: "News <news@sender.example>".into(),
            reply_to: None,
            to: to
                .iter()
                .map(|a| Mailbox::parse(a).expect("a test recipient is an address"))
                .collect(),
            cc: Vec::new(),
            subject: "Hello".into(),
            text: Some("Hello there".into()),
            html: None,
            headers: serde_json::json!({}),
            tags: vec!["welcome".into()],
            metadata: serde_json::json!({"user": 42}),
            raw_mime: None,
        },
        stream: "transactional".into(),
        campaign: None,
        test: false,
        send_at: None,
        expires_at: None,
        tracking_opens: None,
        tracking_clicks: None,
        size: 1234,
        source: EventSource::Api,
        recipients: to
            .iter()
            .map(|a| NewRecipient {
                delivery_id: DeliveryId::generate(),
                address: a.to_string(),
                kind: RecipientKind::To,
                deliverable_domain: !a.ends_with(".invalid")
                    && a.rsplit_once('@').is_some_and(|(_, d)| d.contains('.')),
            })
            .collect(),
        idempotency: None,
        stream_requires_confirmation: false,
        campaign_dedupe: true,
        accepted_at: T0,
    }
}

async fn accept(store: &dyn Store, m: NewMessage) -> Receipt {
    match store.accept_message(m).await.expect("accept") {
        AcceptOutcome::Accepted(r) => r,
        other => panic!("expected Accepted, got {other:?}"),
    }
}

async fn record(
    store: &dyn Store,
    tenant: &TenantId,
    delivery: &DeliveryId,
    at: Millis,
    details: EventDetails,
) -> (EventRecord, DeliveryRecord) {
    let event = NewEvent {
        id: EventId::generate(),
        delivery_id: delivery.clone(),
        occurred_at: at,
        recorded_at: at,
        source: EventSource::Admin,
        details,
        external_id: None,
    };
    match store.record_event(tenant, event).await.expect("record") {
        RecordOutcome::Recorded { event, delivery } => ((*event).clone(), delivery),
        other => panic!("expected Recorded, got {other:?}"),
    }
}

/// A new event of `delivery` reported by delivery, occurred and recorded
/// at `at`.
pub fn delivery_event(delivery: &DeliveryId, at: Millis, details: EventDetails) -> NewEvent {
    NewEvent {
        id: EventId::generate(),
        delivery_id: delivery.clone(),
        occurred_at: at,
        recorded_at: at,
        source: EventSource::Delivery,
        details,
        external_id: None,
    }
}

fn bounce(bounce_type: BounceType) -> EventDetails {
    EventDetails::Bounced(Bounced {
        bounce_type,
        reason: None,
        smtp_code: Some(550),
        enhanced_code: posthorn_core::EnhancedCode::new(5, 1, 1),
        reply_text: Some("550 5.1.1 user unknown".into()),
        origin: BounceOrigin::Sync,
        rule: None,
        mx_host: None,
    })
}

fn opened() -> EventDetails {
    EventDetails::Opened(Engagement::default())
}

fn delivered() -> EventDetails {
    EventDetails::Delivered(Delivered {
        reply_text: Some("250 2.0.0 OK".into()),
        ..Default::default()
    })
}

fn statuses(r: &Receipt) -> Vec<&str> {
    r.deliveries.iter().map(|d| d.status.as_str()).collect()
}

async fn drop_reason(store: &dyn Store, tenant: &TenantId, delivery: &DeliveryId) -> String {
    let events = store.delivery_events(tenant, delivery).await.unwrap();
    let dropped = events
        .iter()
        .find(|e| e.kind() == EventKind::Dropped)
        .expect("a dropped event");
    dropped.details.to_json()["reason"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub async fn tenants_and_keys(store: &dyn Store) {
    let a = store.create_tenant("acme", T0).await.unwrap();
    assert!(matches!(
        store.create_tenant("acme", T0).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.tenant_by_name("acme").await.unwrap(), Some(a.clone()));
    assert_eq!(store.tenant_count().await.unwrap(), 1);
    let b = tenant(store, "other").await;

    let key = store
        .insert_api_key(NewApiKey {
            id: ApiKeyId::generate(),
            tenant_id: a.id.clone(),
            name: Some("ci".into()),
            scopes: vec![Scope::Send, Scope::Read],
            secret_hash: "ab".repeat(32),
            created_at: T0,
        })
        .await
        .unwrap();
    let (found, owner) = store.api_key(&key.id).await.unwrap().expect("key found");
    assert_eq!(owner.id, a.id);
    assert_eq!(found.scopes, vec![Scope::Send, Scope::Read]);
    assert!(found.allows(Scope::Send) && !found.allows(Scope::Admin));
    assert_eq!(store.api_keys(Some(&a.id)).await.unwrap().len(), 1);
    assert_eq!(store.api_keys(Some(&b)).await.unwrap().len(), 0);
    assert!(store.revoke_api_key(&key.id, T0 + 1).await.unwrap());
    assert!(
        !store.revoke_api_key(&key.id, T0 + 2).await.unwrap(),
        "second revoke is a no-op"
    );
    let (revoked, _) = store.api_key(&key.id).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(T0 + 1));
    assert!(
        store
            .api_key(&ApiKeyId::generate())
            .await
            .unwrap()
            .is_none()
    );

    let t = store
        .update_tenant_settings(
            &a.id,
            TenantSettingsPatch {
                campaign_dedupe: Some(Some(false)),
                track_clicks: Some(Some(false)),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.campaign_dedupe, Some(false));
    assert_eq!((t.track_opens, t.track_clicks), (None, Some(false)));
    // Settings left out stay; `Some(None)` returns one to the default.
    let t = store
        .update_tenant_settings(
            &a.id,
            TenantSettingsPatch {
                track_clicks: Some(None),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!((t.campaign_dedupe, t.track_clicks), (Some(false), None));
}

pub async fn sending_domains_have_one_owner(store: &dyn Store) {
    let a = tenant(store, "a").await;
    let b = tenant(store, "b").await;
    let added = store
        .claim_sending_domain(&a, "victim-a.example", T0)
        .await
        .unwrap();
    assert!(
        matches!(&added, DomainClaim::Added(d) if d.tenant_id == a),
        "{added:?}"
    );
    assert!(matches!(
        store.claim_sending_domain(&a, "victim-a.example", T0 + 1).await.unwrap(),
        DomainClaim::AlreadyOwned(d) if d.created_at == T0
    ));
    // The same domain, a subdomain or a parent: all taken for b.
    for claimed in ["victim-a.example", "sub.victim-a.example"] {
        assert_eq!(
            store.claim_sending_domain(&b, claimed, T0).await.unwrap(),
            DomainClaim::Conflict {
                owned: "victim-a.example".into()
            },
            "{claimed}"
        );
    }
    store
        .claim_sending_domain(&b, "news.b.example", T0)
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_sending_domain(&a, "b.example", T0)
            .await
            .unwrap(),
        DomainClaim::Conflict {
            owned: "news.b.example".into()
        }
    );
    // A look-alike is another domain; a's own subdomain is a's.
    assert!(matches!(
        store
            .claim_sending_domain(&b, "notvictim-a.example", T0)
            .await
            .unwrap(),
        DomainClaim::Added(_)
    ));
    assert!(matches!(
        store
            .claim_sending_domain(&a, "mail.victim-a.example", T0)
            .await
            .unwrap(),
        DomainClaim::Added(_)
    ));

    let of_a: Vec<String> = store
        .sending_domains(Some(&a))
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.domain)
        .collect();
    assert_eq!(of_a, ["mail.victim-a.example", "victim-a.example"]);
    assert_eq!(store.sending_domains(None).await.unwrap().len(), 4);

    let owners = store
        .domain_owners(&["x.mail.victim-a.example", "news.b.example"])
        .await
        .unwrap();
    let mut found: Vec<(String, bool)> = owners
        .iter()
        .map(|o| (o.domain.clone(), o.tenant == a))
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("mail.victim-a.example".to_owned(), true),
            ("news.b.example".to_owned(), false),
            ("victim-a.example".to_owned(), true),
        ]
    );

    // Only the owner can release a domain; then another tenant may claim it.
    assert!(
        !store
            .release_sending_domain(&b, "victim-a.example")
            .await
            .unwrap()
    );
    assert!(
        store
            .release_sending_domain(&a, "mail.victim-a.example")
            .await
            .unwrap()
    );
    assert!(
        store
            .release_sending_domain(&a, "victim-a.example")
            .await
            .unwrap()
    );
    assert!(matches!(
        store.claim_sending_domain(&b, "victim-a.example", T0).await.unwrap(),
        DomainClaim::Added(d) if d.tenant_id == b
    ));
    assert!(store.sending_domains(Some(&a)).await.unwrap().is_empty());
}

/// The accepting transaction judges the sender's domains: another
/// tenant's domain (or a subdomain of it) is refused with nothing written;
/// with `require_own_domain`, so is a domain nobody owns.
pub async fn accept_refuses_another_tenants_sender_domain(store: &dyn Store) {
    use posthorn_core::domain::SenderDomainRefusal;
    let a = tenant(store, "a").await;
    let b = tenant(store, "b").await;
    store
        .claim_sending_domain(&a, "victim-a.example", T0)
        .await
        .unwrap();
    let from = |tenant: &TenantId, domains: &[&str], require_own_domain: bool| {
        let mut m = message(tenant, &["bob@example.com"]);
        m.sender_check = SenderCheck {
            domains: domains.iter().map(|d| (*d).to_owned()).collect(),
            require_own_domain,
        };
        m
    };
    for domains in [
        &["victim-a.example"][..],
        &["sender.example", "sub.victim-a.example"],
    ] {
        let outcome = store
            .accept_message(from(&b, domains, false))
            .await
            .unwrap();
        assert!(
            matches!(&outcome, AcceptOutcome::SenderRefused { refusal: SenderDomainRefusal::OwnedByOther, domain } if domain == domains.last().unwrap()),
            "{domains:?}: {outcome:?}"
        );
    }
    let outcome = store
        .accept_message(from(&b, &["unowned.example"], true))
        .await
        .unwrap();
    assert!(
        matches!(
            &outcome,
            AcceptOutcome::SenderRefused {
                refusal: SenderDomainRefusal::NotOwned,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(store.queue_len(&b).await.unwrap(), 0, "nothing written");
    assert!(
        store
            .contact(&b, "bob@example.com")
            .await
            .unwrap()
            .is_none()
    );
    // The owner may, with or without the requirement; anyone may send as a
    // domain nobody owns when it is not required.
    for (tenant, domain, required) in [
        (&a, "mail.victim-a.example", true),
        (&b, "unowned.example", false),
    ] {
        let outcome = store
            .accept_message(from(tenant, &[domain], required))
            .await
            .unwrap();
        assert!(
            matches!(outcome, AcceptOutcome::Accepted(_)),
            "{domain}: {outcome:?}"
        );
    }
}

pub async fn accept_queues_and_creates_contact(store: &dyn Store) {
    let t = tenant(store, "acme").await;
    let mut m = message(&t, &["bob@example.com"]);
    // The content comes back as it went in, display names and non-ASCII
    // included.
    m.content.to[0].name = Some("Bob, \"the builder\"".into());
    m.content.cc = vec![Mailbox::parse("Zoë Ärger <zoe@bücher.example>").unwrap()];
    m.content.reply_to = Some("Help <help@sender.example>".into());
    m.content.html = Some("<p>Hello there</p>".into());
    m.content.headers = serde_json::json!({"X-Campaign-Ref": "spring"});
    let content = m.content.clone();
    let message_id = m.id.clone();
    let receipt = accept(store, m).await;
    assert_eq!(receipt.id, message_id);
    assert_eq!(statuses(&receipt), vec!["queued"]);
    let d = store
        .delivery(&t, &receipt.deliveries[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.delivery_status, Some(DeliveryStatus::Queued));
    assert_eq!(d.window_ends_at, T0 + 30 * DAY);
    let events = store.delivery_events(&t, &d.id).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind(), EventKind::Queued);
    assert_eq!(events[0].details.to_json()["size"], 1234);
    assert_eq!(d.delivery_event_id.as_ref(), Some(&events[0].id));
    assert_eq!(store.queue_len(&t).await.unwrap(), 1);
    let stored = store.message(&t, &message_id).await.unwrap().unwrap();
    assert_eq!(stored.content, content);
    assert_eq!(stored.content.metadata["user"], 42);
    let contact = store.contact(&t, "bob@example.com").await.unwrap().unwrap();
    assert_eq!(contact.state.status, ContactStatus::Active);
}

pub async fn policy_chain_outcomes(store: &dyn Store) {
    let t = tenant(store, "acme").await;
    let r = accept(
        store,
        message(
            &t,
            &[
                "a@example.com",
                "x@nodot",
                "y@mail.invalid",
                "a@example.com",
            ],
        ),
    )
    .await;
    assert_eq!(
        statuses(&r),
        vec!["queued", "dropped", "dropped", "dropped"]
    );
    assert_eq!(
        drop_reason(store, &t, &r.deliveries[1].id).await,
        "invalid_address"
    );
    assert_eq!(
        drop_reason(store, &t, &r.deliveries[2].id).await,
        "invalid_address"
    );
    assert_eq!(
        drop_reason(store, &t, &r.deliveries[3].id).await,
        "duplicate_recipient"
    );
    assert_eq!(
        store.queue_len(&t).await.unwrap(),
        1,
        "dropped deliveries are never queued"
    );

    let mut m = message(&t, &["c@example.com"]);
    m.campaign = Some("black-friday".into());
    accept(store, m).await;
    let mut again = message(&t, &["c@example.com", "d@example.com"]);
    again.campaign = Some("black-friday".into());
    let r = accept(store, again).await;
    assert_eq!(statuses(&r), vec!["dropped", "queued"]);
    assert_eq!(
        drop_reason(store, &t, &r.deliveries[0].id).await,
        "duplicate_recipient"
    );
    let mut off = message(&t, &["c@example.com"]);
    off.campaign = Some("black-friday".into());
    off.campaign_dedupe = false;
    assert_eq!(
        statuses(&accept(store, off).await),
        vec!["queued"],
        "campaign rule switched off"
    );

    let mut later = message(&t, &["e@example.com"]);
    later.send_at = Some(T0 + 3_600_000);
    let r = accept(store, later).await;
    assert_eq!(statuses(&r), vec!["scheduled"]);
    let d = store
        .delivery(&t, &r.deliveries[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        d.window_ends_at,
        T0 + 3_600_000 + 30 * DAY,
        "window counts from send_at"
    );

    let mut stale = message(&t, &["f@example.com"]);
    stale.expires_at = Some(T0 - 1);
    let r = accept(store, stale).await;
    assert_eq!(
        drop_reason(store, &t, &r.deliveries[0].id).await,
        "expired_before_send"
    );
}

pub async fn idempotency(store: &dyn Store) {
    let t = tenant(store, "acme").await;
    let idem = |hash: &str, not_before| IdempotencyRequest {
        key: "order-1".into(),
        body_hash: hash.into(),
        not_before,
    };
    let mut first = message(&t, &["a@example.com"]);
    first.idempotency = Some(idem("h1", T0 - DAY));
    let receipt = accept(store, first).await;

    let mut same = message(&t, &["a@example.com"]);
    same.idempotency = Some(idem("h1", T0 - DAY));
    let same_id = same.id.clone();
    assert_eq!(
        store.accept_message(same).await.unwrap(),
        AcceptOutcome::Replayed(receipt.clone())
    );
    assert!(
        store.message(&t, &same_id).await.unwrap().is_none(),
        "a replay writes nothing"
    );
    assert_eq!(store.queue_len(&t).await.unwrap(), 1);

    let mut different = message(&t, &["b@example.com"]);
    different.idempotency = Some(idem("h2", T0 - DAY));
    assert_eq!(
        store.accept_message(different).await.unwrap(),
        AcceptOutcome::IdempotencyConflict
    );
    assert_eq!(store.queue_len(&t).await.unwrap(), 1);

    // Once the record is older than the window, the key is free again.
    let mut later = message(&t, &["b@example.com"]);
    later.idempotency = Some(idem("h2", T0 + 1));
    later.accepted_at = T0 + DAY + 1;
    assert!(matches!(
        store.accept_message(later).await.unwrap(),
        AcceptOutcome::Accepted(_)
    ));

    // Keys are per tenant.
    let other = tenant(store, "other").await;
    let mut theirs = message(&other, &["a@example.com"]);
    theirs.idempotency = Some(idem("h9", T0 - DAY));
    assert!(matches!(
        store.accept_message(theirs).await.unwrap(),
        AcceptOutcome::Accepted(_)
    ));
}

pub async fn status_fold_through_record_event(store: &dyn Store) {
    let t = tenant(store, "acme").await;
    let r = accept(store, message(&t, &["a@example.com"])).await;
    let id = &r.deliveries[0].id;
    let deferred = EventDetails::Deferred(Deferred {
        attempt: 1,
        smtp_code: Some(451),
        reply_text: Some("451 4.3.0 try later".into()),
        ..Default::default()
    });
    let (_, d) = record(store, &t, id, T0 + 10, deferred).await;
    assert_eq!(d.status(), "deferred");
    let (delivered_event, d) = record(store, &t, id, T0 + 20, delivered()).await;
    assert_eq!(d.status(), "delivered");
    let (opened, d) = record(store, &t, id, T0 + 30, opened()).await;
    assert_eq!(d.status(), "opened");
    assert_eq!(d.engagement_event_id.as_ref(), Some(&opened.id));
    // A late deferral changes nothing; the set-by event stays.
    let (_, d) = record(
        store,
        &t,
        id,
        T0 + 5,
        EventDetails::Deferred(Deferred::default()),
    )
    .await;
    assert_eq!(d.delivery_status, Some(DeliveryStatus::Delivered));
    assert_eq!(d.delivery_event_id.as_ref(), Some(&delivered_event.id));
    // An asynchronous bounce after delivery wins.
    let (b, d) = record(store, &t, id, T0 + 40, bounce(BounceType::Soft)).await;
    assert_eq!(
        d.delivery_status,
        Some(DeliveryStatus::Bounced(BounceType::Soft))
    );
    assert_eq!(d.status(), "bounced");
    assert_eq!(d.delivery_event_id.as_ref(), Some(&b.id));
    // Stored and read back the same way.
    let read = store.delivery(&t, id).await.unwrap().unwrap();
    assert_eq!(read, d);
    assert_eq!(store.delivery_events(&t, id).await.unwrap().len(), 6);
}

pub async fn hard_bounce_suppresses_next_message(store: &dyn Store) {
    let t = tenant(store, "acme").await;
    let r = accept(store, message(&t, &["gone@example.com"])).await;
    let (event, _) = record(
        store,
        &t,
        &r.deliveries[0].id,
        T0 + 1,
        bounce(BounceType::Hard),
    )
    .await;
    let contact = store
        .contact(&t, "gone@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(contact.state.status, ContactStatus::Bounced);
    let list = store.suppressions(&t, T0 + 2).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].reason, SuppressionReason::HardBounce);
    assert_eq!(list[0].cause_event_id.as_ref(), Some(&event.id));

    let r = accept(
        store,
        message(&t, &["gone@example.com", "fine@example.com"]),
    )
    .await;
    assert_eq!(statuses(&r), vec!["dropped", "queued"]);
    let events = store
        .delivery_events(&t, &r.deliveries[0].id)
        .await
        .unwrap();
    assert_eq!(events[0].details.to_json()["reason"], "suppressed");
    assert_eq!(
        events[0].details.to_json()["suppression"]["reason"],
        "hard_bounce"
    );
    // A soft bounce never suppresses.
    let (_, _) = record(
        store,
        &t,
        &r.deliveries[1].id,
        T0 + 3,
        bounce(BounceType::Soft),
    )
    .await;
    assert_eq!(store.suppressions(&t, T0 + 4).await.unwrap().len(), 1);
}

pub async fn complaint_marks_contact_and_records_cause(store: &dyn Store) {
    let t = tenant(store, "acme").await;
    let r = accept(store, message(&t, &["angry@example.com"])).await;
    let id = &r.deliveries[0].id;
    record(store, &t, id, T0 + 1, delivered()).await;
    let complaint = EventDetails::Complained(Complained {
        feedback_type: Some("abuse".into()),
        reporting_domain: Some("mailbox.example".into()),
    });
    let (event, d) = record(store, &t, id, T0 + 2, complaint).await;
    assert_eq!(d.status(), "complained");
    assert_eq!(d.engagement_status, EngagementStatus::Complained);
    let contact = store
        .contact(&t, "angry@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(contact.state.status, ContactStatus::Complained);
    let changes = store
        .contact_changes(&t, "angry@example.com")
        .await
        .unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(
        (changes[0].from, changes[0].to),
        (ContactStatus::Active, ContactStatus::Complained)
    );
    assert_eq!(changes[0].reason, "complaint");
    assert_eq!(changes[0].cause_event_id.as_ref(), Some(&event.id));
    let list = store.suppressions(&t, T0 + 3).await.unwrap();
    assert_eq!(list[0].reason, SuppressionReason::Complaint);
    assert_eq!(
        list[0].scope,
        posthorn_core::suppression::SuppressionScope::All
    );
    assert_eq!(list[0].expires_at, None, "complaints never expire");
}

pub async fn soft_bounces_turn_hard(store: &dyn Store) {
    let t = tenant(store, "acme").await;
    for i in 0..3 {
        let r = accept(store, message(&t, &["flaky@example.com"])).await;
        assert_eq!(statuses(&r), vec!["queued"], "attempt {i} still mailed");
        let id = &r.deliveries[0].id;
        if i == 2 {
            record(
                store,
                &t,
                id,
                T0 + 10,
                EventDetails::Expired(Expired::default()),
            )
            .await;
        } else {
            // Two soft bounces on one delivery count as one failed delivery.
            record(store, &t, id, T0 + 10, bounce(BounceType::Soft)).await;
            record(store, &t, id, T0 + 11, bounce(BounceType::Undetermined)).await;
        }
        let contact = store
            .contact(&t, "flaky@example.com")
            .await
            .unwrap()
            .unwrap();
        let want = if i == 2 {
            ContactStatus::Bounced
        } else {
            ContactStatus::Active
        };
        assert_eq!(
            contact.state.status,
            want,
            "after {} failed deliveries",
            i + 1
        );
    }
    let changes = store
        .contact_changes(&t, "flaky@example.com")
        .await
        .unwrap();
    assert_eq!(changes.last().unwrap().reason, "soft_bounce_limit");
    let r = accept(store, message(&t, &["flaky@example.com"])).await;
    assert_eq!(statuses(&r), vec!["dropped"]);

    // A delivery in between resets the count.
    for (i, outcome) in ["soft", "soft", "delivered", "soft", "soft"]
        .iter()
        .enumerate()
    {
        let r = accept(store, message(&t, &["ok@example.com"])).await;
        let details = if *outcome == "delivered" {
            delivered()
        } else {
            bounce(BounceType::Soft)
        };
        record(store, &t, &r.deliveries[0].id, T0 + i as i64, details).await;
    }
    let contact = store.contact(&t, "ok@example.com").await.unwrap().unwrap();
    assert_eq!(contact.state.status, ContactStatus::Active);
    assert_eq!(contact.state.consecutive_failed_deliveries, 2);
}

pub async fn unsubscribe_from_one_stream(store: &dyn Store) {
    let t = tenant(store, "acme").await;
    let mut m = message(&t, &["reader@example.com"]);
    m.stream = "newsletter".into();
    let r = accept(store, m).await;
    let unsub = EventDetails::Unsubscribed(Unsubscribed {
        scope: UnsubscribeScope::Stream,
        method: Some("link".into()),
    });
    record(store, &t, &r.deliveries[0].id, T0 + 1, unsub).await;
    let mut news = message(&t, &["reader@example.com"]);
    news.stream = "newsletter".into();
    let r = accept(store, news).await;
    assert_eq!(statuses(&r), vec!["dropped"]);
    assert_eq!(
        drop_reason(store, &t, &r.deliveries[0].id).await,
        "unsubscribed_stream"
    );
    let receipt = accept(store, message(&t, &["reader@example.com"])).await;
    assert_eq!(
        statuses(&receipt),
        vec!["queued"],
        "other streams still mailed"
    );
    let contact = store
        .contact(&t, "reader@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(contact.state.status, ContactStatus::Active);
    assert!(contact.state.unsubscribed_streams.contains("newsletter"));

    let all = EventDetails::Unsubscribed(Unsubscribed {
        scope: UnsubscribeScope::All,
        method: None,
    });
    record(store, &t, &receipt.deliveries[0].id, T0 + 2, all).await;
    let r = accept(store, message(&t, &["reader@example.com"])).await;
    assert_eq!(
        drop_reason(store, &t, &r.deliveries[0].id).await,
        "suppressed"
    );
}

pub async fn external_id_deduplicates(store: &dyn Store) {
    let t = tenant(store, "acme").await;
    let r = accept(store, message(&t, &["a@example.com"])).await;
    let event = |id: EventId| NewEvent {
        id,
        delivery_id: r.deliveries[0].id.clone(),
        occurred_at: T0 + 1,
        recorded_at: T0 + 1,
        source: EventSource::ProviderWebhook,
        details: opened(),
        external_id: Some("provider-123".into()),
    };
    let first = store
        .record_event(&t, event(EventId::generate()))
        .await
        .unwrap();
    let RecordOutcome::Recorded {
        event: recorded, ..
    } = first
    else {
        panic!("{first:?}")
    };
    let again = store
        .record_event(&t, event(EventId::generate()))
        .await
        .unwrap();
    let RecordOutcome::Duplicate { event: dup, .. } = again else {
        panic!("{again:?}")
    };
    assert_eq!(dup.id, recorded.id);
    assert_eq!(
        store
            .delivery_events(&t, &r.deliveries[0].id)
            .await
            .unwrap()
            .len(),
        2
    );
    // The same event id twice is also recorded once.
    let mut same = event(recorded.id.clone());
    same.external_id = None;
    assert!(matches!(
        store.record_event(&t, same).await.unwrap(),
        RecordOutcome::Duplicate { .. }
    ));
}

pub async fn tenant_isolation(store: &dyn Store) {
    let a = tenant(store, "a").await;
    let b = tenant(store, "b").await;
    let r = accept(store, message(&a, &["x@example.com"])).await;
    let id = &r.deliveries[0].id;
    assert!(store.delivery(&b, id).await.unwrap().is_none());
    assert!(store.message(&b, &r.id).await.unwrap().is_none());
    assert!(
        store
            .deliveries_of_message(&b, &r.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.delivery_events(&b, id).await.unwrap().is_empty());
    let filter = search(&format!("delivery_id={id}"), Surface::Events);
    assert!(
        store
            .search_events(&b, &filter, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .search_events(&a, &filter, None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    let foreign = NewEvent {
        id: EventId::generate(),
        delivery_id: id.clone(),
        occurred_at: T0,
        recorded_at: T0,
        source: EventSource::Admin,
        details: bounce(BounceType::Hard),
        external_id: None,
    };
    assert_eq!(
        store.record_event(&b, foreign).await.unwrap(),
        RecordOutcome::UnknownDelivery
    );
    assert!(
        store.suppressions(&a, T0).await.unwrap().is_empty(),
        "nothing written by the refused event"
    );
    assert!(store.contact(&b, "x@example.com").await.unwrap().is_none());
}

/// Filters in the grammar's own words (`posthorn_core::search`).
pub fn search(query: &str, surface: Surface) -> Filters {
    let pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').expect("key=value");
            (k.to_owned(), v.replace("%20", " "))
        })
        .collect();
    posthorn_core::search::parse(&pairs, surface, &[])
        .expect("a valid query")
        .0
}

/// The tenant's events matching `query` (in the grammar's words).
async fn found(store: &dyn Store, t: &TenantId, query: &str) -> Vec<EventRecord> {
    store
        .search_events(t, &search(query, Surface::Events), None, 500)
        .await
        .unwrap()
}

/// The recipients of the tenant's deliveries matching `query`, sorted.
async fn listed(store: &dyn Store, t: &TenantId, query: &str) -> Vec<String> {
    let mut found: Vec<String> = store
        .search_deliveries(t, &search(query, Surface::Deliveries), None, 500)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.recipient)
        .collect();
    found.sort();
    found
}

pub async fn event_listing_filters_and_pages(store: &dyn Store) {
    let t = tenant(store, "acme").await;
    let r = accept(store, message(&t, &["a@example.com", "b@example.com"])).await;
    for i in 0..5 {
        record(store, &t, &r.deliveries[0].id, T0 + i, opened()).await;
    }
    let every = search("", Surface::Events);
    let all = store.search_events(&t, &every, None, 100).await.unwrap();
    assert_eq!(all.len(), 7);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    assert_eq!(found(store, &t, "recipient=b@example.com").await.len(), 1);
    assert_eq!(found(store, &t, "kind=opened").await.len(), 5);
    assert_eq!(
        found(store, &t, "sender=news@sender.example").await.len(),
        7
    );

    let opened = search("kind=opened", Surface::Events);
    let mut pages = Vec::new();
    let mut after: Option<EventId> = None;
    loop {
        let page = store
            .search_events(&t, &opened, after.as_ref(), 2)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|e| e.id.clone());
        pages.push(page.len());
    }
    assert_eq!(pages, vec![2, 2, 1]);
}

/// Two messages of one tenant with every outcome a filter can select,
/// and a message of another tenant to the same address: what
/// `search_*` cases run on.
struct SearchScene {
    t: TenantId,
    other: TenantId,
    first: Receipt,
    second: Receipt,
}

impl SearchScene {
    /// The delivery to `address` (of this tenant's two messages).
    fn delivery(&self, address: &str) -> DeliveryId {
        self.first
            .deliveries
            .iter()
            .chain(&self.second.deliveries)
            .find(|d| d.recipient == address)
            .map(|d| d.id.clone())
            .expect("a recipient of the scene")
    }
}

fn engagement(machine: bool) -> Engagement {
    Engagement {
        machine: Some(machine),
        machine_reason: Some("test".into()),
        ..Default::default()
    }
}

fn bounce_with(bounce_type: BounceType, reason: &str, code: u16, reply: &str) -> EventDetails {
    EventDetails::Bounced(Bounced {
        bounce_type,
        reason: Some(reason.into()),
        smtp_code: Some(code),
        enhanced_code: None,
        reply_text: Some(reply.into()),
        origin: BounceOrigin::Sync,
        rule: None,
        mx_host: None,
    })
}

async fn search_scene(store: &dyn Store) -> SearchScene {
    let t = tenant(store, "acme").await;
    let other = tenant(store, "globex").await;
    // First: transactional, tag `welcome`, metadata {"user": 42}.
    let first = accept(store, message(&t, &["a@example.com", "b@example.org"])).await;
    // Second: a campaign on the `news` stream from another sender.
    let mut m = message(&t, &["c@example.com", "d@example.com", "e@example.net"]);
    m.from_address = "promo@sender.example".into();
    m.stream = "news".into();
    m.campaign = Some("c1".into());
    m.content.tags = vec!["promo".into(), "dec".into()];
    m.content.metadata = serde_json::json!({"plan": "pro", "user": "7"});
    let second = accept(store, m).await;
    let scene = SearchScene {
        t: t.clone(),
        other: other.clone(),
        first,
        second,
    };
    let d = |a: &str| scene.delivery(a);
    record(store, &t, &d("a@example.com"), T0 + 1, delivered()).await;
    record(
        store,
        &t,
        &d("a@example.com"),
        T0 + 2,
        EventDetails::Opened(engagement(false)),
    )
    .await;
    record(
        store,
        &t,
        &d("a@example.com"),
        T0 + 3,
        EventDetails::Opened(engagement(true)),
    )
    .await;
    let unknown = bounce_with(
        BounceType::Hard,
        "userunknown",
        550,
        "550 5.1.1 <b@example.org>: user unknown",
    );
    record(store, &t, &d("b@example.org"), T0 + 4, unknown).await;
    let deferred = EventDetails::Deferred(Deferred {
        smtp_code: Some(421),
        reply_text: Some("421 4.7.0 Try again later, listed on a Blocklist".into()),
        ..Default::default()
    });
    record(store, &t, &d("c@example.com"), T0 + 5, deferred).await;
    let blocked = bounce_with(
        BounceType::Soft,
        "blocked",
        554,
        "554 5.7.1 Service unavailable; client host blocked using Spamhaus blocklist",
    );
    record(store, &t, &d("c@example.com"), T0 + 6, blocked).await;
    record(store, &t, &d("d@example.com"), T0 + 7, delivered()).await;
    let click = EventDetails::Clicked(posthorn_core::event::Clicked {
        url: "https://example.com/offer".into(),
        link_index: Some(0),
        ip: None,
        user_agent: None,
        machine: Some(false),
        machine_reason: Some("test".into()),
        implied_open: Some(true),
    });
    record(store, &t, &d("d@example.com"), T0 + 8, click).await;
    // The other tenant: the same address, a hard bounce with the same words.
    let theirs = accept(store, message(&other, &["a@example.com"])).await;
    let same = bounce_with(
        BounceType::Hard,
        "userunknown",
        550,
        "550 5.1.1 user unknown on a blocklist",
    );
    record(store, &other, &theirs.deliveries[0].id, T0 + 9, same).await;
    scene
}

pub async fn search_finds_events_by_every_filter(store: &dyn Store) {
    let s = search_scene(store).await;
    let t = &s.t;
    let d = |a: &str| s.delivery(a);
    // Every event of the tenant: 5 queued, 8 recorded; none of the other's.
    assert_eq!(found(store, t, "").await.len(), 13);
    for (query, expected) in [
        ("recipient=a@example.com", 4),
        ("recipient=@example.com", 4 + 3 + 3),
        ("recipient=@example.org,e@example.net", 2 + 1),
        ("sender=promo@sender.example", 3 + 3 + 1),
        ("kind=bounced", 2),
        ("kind=bounced,deferred", 3),
        ("reason=userunknown", 1),
        ("reason=userunknown,blocked", 2),
        ("bounce_type=hard", 1),
        ("bounce_type=soft&kind=bounced", 1),
        ("smtp_code=421", 1),
        ("smtp_code=550", 1),
        ("tag=promo", 7),
        ("tag=welcome,dec", 13),
        ("stream=news", 7),
        ("campaign=c1", 7),
        ("campaign=c1&recipient=@example.net", 1),
        ("metadata.plan=pro", 7),
        ("metadata.user=42", 6),
        ("metadata.user=7", 7),
        ("metadata.user=42&metadata.user=7", 13),
        ("metadata.user=42&metadata.plan=pro", 0),
        ("machine=true", 1),
        ("machine=false", 2),
        ("machine=false&kind=clicked", 1),
        ("q=blocklist", 2),
        ("q=SPAMHAUS%20blocklist", 1),
        ("q=user%20unknown", 1),
        ("q=nowhere", 0),
    ] {
        assert_eq!(found(store, t, query).await.len(), expected, "{query}");
    }
    let second = format!("message_id={}", s.second.id);
    assert_eq!(found(store, t, &second).await.len(), 7);
    let of_c = format!("delivery_id={}", d("c@example.com"));
    assert_eq!(found(store, t, &of_c).await.len(), 3);
    // The other tenant's own filters find only its own.
    let theirs = store
        .search_events(
            &s.other,
            &search("recipient=a@example.com&q=blocklist", Surface::Events),
            None,
            500,
        )
        .await
        .unwrap();
    assert_eq!(theirs.len(), 1);
    // Time: from is inclusive, to exclusive, on the time events were
    // recorded (their ids' time).
    let all = found(store, t, "").await;
    let times: Vec<Millis> = all.iter().map(|e| e.id.millis().unwrap()).collect();
    let middle = times[times.len() / 2];
    let (from, to) = (
        found(store, t, &format!("from={middle}")).await.len(),
        found(store, t, &format!("to={middle}")).await.len(),
    );
    assert_eq!(from + to, 13, "from and to split the events in two");
    assert_eq!(from, times.iter().filter(|t| **t >= middle).count());
    // Oldest first on asking.
    let asc = found(store, t, "order=asc").await;
    assert!(asc.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(asc.len(), 13);
}

pub async fn search_lists_deliveries_by_status_and_counts_them(store: &dyn Store) {
    let s = search_scene(store).await;
    for (query, expected) in [
        (
            "",
            vec![
                "a@example.com",
                "b@example.org",
                "c@example.com",
                "d@example.com",
                "e@example.net",
            ],
        ),
        ("status=bounced", vec!["b@example.org", "c@example.com"]),
        ("status=opened", vec!["a@example.com"]),
        (
            "status=clicked,queued",
            vec!["d@example.com", "e@example.net"],
        ),
        (
            "delivery_status=delivered",
            vec!["a@example.com", "d@example.com"],
        ),
        (
            "engagement_status=none",
            vec!["b@example.org", "c@example.com", "e@example.net"],
        ),
        ("campaign=c1&status=bounced", vec!["c@example.com"]),
        ("bounce_type=hard", vec!["b@example.org"]),
        ("kind=deferred", vec!["c@example.com"]),
        ("q=blocklist", vec!["c@example.com"]),
        ("machine=true", vec!["a@example.com"]),
        ("smtp_code=550&status=bounced", vec!["b@example.org"]),
        (
            "recipient=@example.com&tag=promo",
            vec!["c@example.com", "d@example.com"],
        ),
        ("metadata.user=42", vec!["a@example.com", "b@example.org"]),
        ("stream=transactional&status=bounced", vec!["b@example.org"]),
    ] {
        assert_eq!(listed(store, &s.t, query).await, expected, "{query}");
    }
    // Counts per stored pair of axes, the other tenant's apart.
    let counts = store
        .delivery_status_counts(&s.t, &search("", Surface::Deliveries))
        .await
        .unwrap();
    let shown = |name: &str| -> u64 {
        counts
            .iter()
            .filter(|c| {
                posthorn_core::status::shown_status(c.delivery_status, c.engagement_status) == name
            })
            .map(|c| c.deliveries)
            .sum()
    };
    assert_eq!(counts.iter().map(|c| c.deliveries).sum::<u64>(), 5);
    assert_eq!(
        (
            shown("bounced"),
            shown("opened"),
            shown("clicked"),
            shown("queued")
        ),
        (2, 1, 1, 1)
    );
    let campaign = store
        .delivery_status_counts(
            &s.t,
            &search("campaign=c1&status=bounced,queued", Surface::Deliveries),
        )
        .await
        .unwrap();
    assert_eq!(campaign.iter().map(|c| c.deliveries).sum::<u64>(), 2);
    let theirs = store
        .delivery_status_counts(&s.other, &search("", Surface::Deliveries))
        .await
        .unwrap();
    assert_eq!(theirs.iter().map(|c| c.deliveries).sum::<u64>(), 1);
    assert_eq!(
        theirs[0].delivery_status,
        Some(DeliveryStatus::Bounced(BounceType::Hard))
    );
    // Pages of deliveries follow each other by the last id.
    let every = search("", Surface::Deliveries);
    let mut seen = Vec::new();
    let mut after: Option<DeliveryId> = None;
    loop {
        let page = store
            .search_deliveries(&s.t, &every, after.as_ref(), 2)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        seen.extend(page.into_iter().map(|d| d.id));
    }
    assert_eq!(seen.len(), 5);
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "newest first, each once"
    );
}

pub async fn search_pages_do_not_shift_while_events_are_recorded(store: &dyn Store) {
    let t = tenant(store, "acme").await;
    let r = accept(store, message(&t, &["a@example.com"])).await;
    let id = &r.deliveries[0].id;
    for i in 0..9 {
        record(store, &t, id, T0 + i, opened()).await;
    }
    let before = store
        .search_events(&t, &search("kind=opened", Surface::Events), None, 100)
        .await
        .unwrap();
    // Paging newest first while every page is followed by more opens:
    // the pages hold exactly the events there were at the start, each once.
    let filters = search("kind=opened", Surface::Events);
    let mut seen = Vec::new();
    let mut after: Option<EventId> = None;
    for i in 0.. {
        let page = store
            .search_events(&t, &filters, after.as_ref(), 2)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        seen.extend(page.into_iter().map(|e| e.id));
        record(store, &t, id, T0 + 100 + i, opened()).await;
    }
    let expected: Vec<EventId> = before.into_iter().map(|e| e.id).collect();
    assert_eq!(seen, expected);
}

/// The statistics asked of `store` for one tenant: figure -> count.
async fn figures(
    store: &dyn Store,
    t: &TenantId,
    group_by: StatsGroup,
    tag: Option<&str>,
) -> std::collections::BTreeMap<(String, &'static str, String), i64> {
    let q = StatsQuery {
        from: T0 - DAY,
        to: T0 + 2 * DAY,
        group_by,
        stream: None,
        campaign: None,
        tag: tag.map(str::to_owned),
        domain: None,
    };
    store
        .delivery_stats(t, &q)
        .await
        .unwrap()
        .into_iter()
        .map(|c| ((c.group, c.metric.as_str(), c.reason), c.deliveries))
        .collect()
}

/// The same figures counted afresh from the deliveries as they are now.
async fn recount(store: &dyn Store, t: &TenantId) -> std::collections::BTreeMap<&'static str, i64> {
    let mut counts = std::collections::BTreeMap::new();
    let all = store
        .search_deliveries(t, &search("", Surface::Deliveries), None, 500)
        .await
        .unwrap();
    for d in all {
        for m in posthorn_core::stats::metrics_of(d.delivery_status, d.engagement_status, d.seen) {
            *counts.entry(m.as_str()).or_insert(0) += 1;
        }
    }
    counts
}

fn totals(
    f: &std::collections::BTreeMap<(String, &'static str, String), i64>,
) -> std::collections::BTreeMap<&'static str, i64> {
    let mut out = std::collections::BTreeMap::new();
    for ((_, metric, _), n) in f {
        *out.entry(*metric).or_insert(0) += n;
    }
    out
}

pub async fn stats_count_each_delivery_once_as_its_status_is_now(store: &dyn Store) {
    let s = search_scene(store).await;
    let t = &s.t;
    let all = figures(store, t, StatsGroup::All, None).await;
    let get = |metric: &str, reason: &str| {
        all.get(&(String::new(), metric_name(metric), reason.to_owned()))
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(get("submitted", ""), 5);
    assert_eq!(get("delivered", ""), 2);
    assert_eq!(get("bounced_hard", "userunknown"), 1);
    assert_eq!(get("bounced_soft", "blocked"), 1);
    assert_eq!(
        get("deferred", ""),
        0,
        "deferred, then bounced: bounced now"
    );
    assert_eq!(
        (get("opened", ""), get("opened_by_person", "")),
        (2, 2),
        "a click implies an open"
    );
    assert_eq!((get("clicked", ""), get("clicked_by_person", "")), (1, 1));
    assert_eq!(totals(&all), recount(store, t).await);

    // Out of order, twice, and after the window: the counts follow the
    // status, and only it.
    let a = s.delivery("a@example.com");
    let late = delivery_event(&a, T0 + 2, delivered());
    let twice = late.clone();
    store.record_event(t, late).await.unwrap();
    store.record_event(t, twice).await.unwrap();
    let b = s.delivery("b@example.org");
    record(store, t, &b, T0 + 1, delivered()).await; // below the hard bounce
    let outside = delivery_event(&b, T0 + 400 * DAY, EventDetails::Opened(engagement(false)));
    store.record_event(t, outside).await.unwrap();
    let e = s.delivery("e@example.net");
    record(
        store,
        t,
        &e,
        T0 + 20,
        EventDetails::Complained(Default::default()),
    )
    .await;
    record(
        store,
        t,
        &e,
        T0 + 10,
        EventDetails::Opened(engagement(true)),
    )
    .await;
    let all = figures(store, t, StatsGroup::All, None).await;
    assert_eq!(totals(&all), recount(store, t).await);
    let totals = totals(&all);
    assert_eq!(
        totals["delivered"], 2,
        "e is still queued: only a sent or deferred delivery shows as delivered by its engagement"
    );
    assert_eq!(totals["opened"], 3);
    assert_eq!(totals["opened_by_person"], 2, "e's open was a machine's");
    assert_eq!(totals["complained"], 1);
    assert_eq!(
        totals["bounced_hard"], 1,
        "b stays bounced; its late open is outside the window"
    );

    // By tag, campaign, domain and reason.
    let by_tag = figures(store, t, StatsGroup::Tag, None).await;
    let submitted = |f: &std::collections::BTreeMap<(String, &'static str, String), i64>,
                     group: &str| {
        f.get(&(group.to_owned(), "submitted", String::new()))
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(
        (
            submitted(&by_tag, "promo"),
            submitted(&by_tag, "dec"),
            submitted(&by_tag, "welcome")
        ),
        (3, 3, 2)
    );
    let promo = figures(store, t, StatsGroup::All, Some("promo")).await;
    assert_eq!(submitted(&promo, ""), 3);
    let by_campaign = figures(store, t, StatsGroup::Campaign, None).await;
    assert_eq!(
        (submitted(&by_campaign, "c1"), submitted(&by_campaign, "")),
        (3, 2)
    );
    let by_domain = figures(store, t, StatsGroup::Domain, None).await;
    assert_eq!(
        (
            submitted(&by_domain, "example.com"),
            submitted(&by_domain, "example.org")
        ),
        (3, 1)
    );
    let by_day = figures(store, t, StatsGroup::Day, None).await;
    let day = (T0.div_euclid(DAY) * DAY).to_string();
    assert_eq!(submitted(&by_day, &day), 5);
    // The other tenant's are its own.
    let theirs = figures(store, &s.other, StatsGroup::All, None).await;
    assert_eq!(submitted(&theirs, ""), 1);
}

/// The search scene (see `search_scene`), for tests of a store's own:
/// its tenant.
pub async fn stats_scene(store: &dyn Store) -> TenantId {
    search_scene(store).await.t
}

/// Every count of a tenant's statistics around `T0`, grouped each way,
/// sorted: two stores that counted alike answer alike.
pub async fn all_stats(store: &dyn Store, t: &TenantId) -> Vec<(String, StatsCount)> {
    let mut out = Vec::new();
    for group_by in [
        StatsGroup::All,
        StatsGroup::Day,
        StatsGroup::Tag,
        StatsGroup::Campaign,
        StatsGroup::Domain,
        StatsGroup::Reason,
    ] {
        let q = StatsQuery {
            from: T0 - DAY,
            to: T0 + 2 * DAY,
            group_by,
            stream: None,
            campaign: None,
            tag: None,
            domain: None,
        };
        for c in store.delivery_stats(t, &q).await.unwrap() {
            out.push((format!("{group_by:?}"), c));
        }
    }
    out.sort_by(|a, b| {
        (&a.0, &a.1.group, a.1.metric, &a.1.reason).cmp(&(
            &b.0,
            &b.1.group,
            b.1.metric,
            &b.1.reason,
        ))
    });
    out
}

/// A figure's stored name, as a `&'static str` (the map's key).
fn metric_name(name: &str) -> &'static str {
    posthorn_core::stats::Metric::parse(name)
        .expect("a figure")
        .as_str()
}

pub async fn confirmation_required_streams(store: &dyn Store) {
    let t = tenant(store, "acme").await;
    store
        .put_contact(&t, "new@example.com", ContactInput::Unconfirmed, T0)
        .await
        .unwrap();
    let mut m = message(&t, &["new@example.com", "stranger@example.com"]);
    m.stream_requires_confirmation = true;
    let r = accept(store, m).await;
    assert_eq!(statuses(&r), vec!["dropped", "dropped"]);
    assert_eq!(
        drop_reason(store, &t, &r.deliveries[0].id).await,
        "unconfirmed_contact"
    );
    let c = store
        .put_contact(&t, "new@example.com", ContactInput::Active, T0)
        .await
        .unwrap();
    assert_eq!(c.state.status, ContactStatus::Active);
    let mut m = message(&t, &["new@example.com"]);
    m.stream_requires_confirmation = true;
    assert_eq!(statuses(&accept(store, m).await), vec!["queued"]);
}

pub async fn event_after_dropped_is_anomaly(store: &dyn Store) {
    let t = tenant(store, "acme").await;
    let r = accept(store, message(&t, &["x@nodot"])).await;
    let (event, d) = record(store, &t, &r.deliveries[0].id, T0 + 1, delivered()).await;
    assert_eq!(event.anomaly.as_deref(), Some("event_after_dropped"));
    assert_eq!(d.delivery_status, Some(DeliveryStatus::Dropped));
}

pub async fn events_outside_window_do_not_change_status(store: &dyn Store) {
    let t = tenant(store, "acme").await;
    let r = accept(store, message(&t, &["a@example.com"])).await;
    let id = &r.deliveries[0].id;
    record(store, &t, id, T0 + 1, delivered()).await;
    let late = T0 + 31 * DAY;
    let (event, d) = record(store, &t, id, late, opened()).await;
    assert!(event.outside_window);
    assert_eq!(d.status(), "delivered");
    // A complaint outside the window still protects the sender.
    let complaint = EventDetails::Complained(Complained::default());
    let (_, d) = record(store, &t, id, late, complaint).await;
    assert_eq!(d.status(), "delivered");
    let contact = store.contact(&t, "a@example.com").await.unwrap().unwrap();
    assert_eq!(contact.state.status, ContactStatus::Complained);
}

pub async fn concurrent_writes_all_commit(store: &dyn Store) {
    let t = tenant(store, "acme").await;
    let r = accept(store, message(&t, &["a@example.com"])).await;
    let id = r.deliveries[0].id.clone();
    let before = store.stats();
    let writes = (0..200).map(|i| {
        let (t, id) = (t.clone(), id.clone());
        async move {
            let event = NewEvent {
                id: EventId::generate(),
                delivery_id: id,
                occurred_at: T0 + i,
                recorded_at: T0 + i,
                source: EventSource::Tracker,
                details: opened(),
                external_id: None,
            };
            store.record_event(&t, event).await
        }
    });
    // Polled together in one task, so all 200 wait on the writer at once.
    let results = futures_util::future::join_all(writes).await;
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(RecordOutcome::Recorded { .. })))
    );
    assert_eq!(store.delivery_events(&t, &id).await.unwrap().len(), 201);
    let after = store.stats();
    assert_eq!(after.events - before.events, 200);
    // Every write is counted once, however the writer grouped them.
    assert_eq!(after.writes - before.writes, 200);
}

fn node(name: &str) -> NodeId {
    NodeId::parse(name).expect("a node name")
}

pub async fn queue_claims_leases_and_finishes(store: &dyn Store) {
    let n = node("node-a");
    let t = tenant(store, "acme").await;
    let r = accept(
        store,
        message(&t, &["a@example.com", "b@example.com", "c@example.com"]),
    )
    .await;
    let mut later = message(&t, &["d@example.com"]);
    later.send_at = Some(T0 + 60_000);
    accept(store, later).await;

    let claimed = store.claim_due(&n, T0, 10, T0 + 600_000).await.unwrap();
    assert_eq!(claimed.len(), 3, "the scheduled one is not due yet");
    assert!(claimed.iter().all(|c| c.attempt == 1));
    let to: Vec<String> = claimed[0]
        .message
        .content
        .to
        .iter()
        .map(|m| m.address.to_string())
        .collect();
    assert_eq!(to, ["a@example.com", "b@example.com", "c@example.com"]);
    assert!(
        one_message_row(&claimed),
        "one message row shared by its deliveries"
    );
    assert!(
        store
            .claim_due(&n, T0 + 1, 10, T0 + 600_000)
            .await
            .unwrap()
            .is_empty(),
        "leased entries are not claimed twice"
    );

    // a: delivered, leaves the queue; b: deferred, due again later.
    let delivered_event = |id: &DeliveryId| NewEvent {
        id: EventId::generate(),
        delivery_id: id.clone(),
        occurred_at: T0 + 2,
        recorded_at: T0 + 2,
        source: EventSource::Delivery,
        details: delivered(),
        external_id: None,
    };
    let (a, b) = (&r.deliveries[0].id, &r.deliveries[1].id);
    store
        .finish_attempt(&t, vec![delivered_event(a)], a, QueueNext::Remove)
        .await
        .unwrap();
    let deferred = NewEvent {
        details: EventDetails::Deferred(Deferred {
            attempt: 1,
            next_retry_at: Some(T0 + 60_000),
            ..Default::default()
        }),
        ..delivered_event(b)
    };
    store
        .finish_attempt(&t, vec![deferred], b, QueueNext::RetryAt(T0 + 60_000))
        .await
        .unwrap();
    assert_eq!(
        store.delivery(&t, a).await.unwrap().unwrap().status(),
        "delivered"
    );
    assert_eq!(
        store.delivery(&t, b).await.unwrap().unwrap().status(),
        "deferred"
    );
    assert_eq!(store.queue_len(&t).await.unwrap(), 3);

    // c's worker died: after the leases are released it is due at once.
    assert_eq!(store.release_leases(&n).await.unwrap(), 1);
    let again = store.claim_due(&n, T0 + 3, 10, T0 + 600_000).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery.id, r.deliveries[2].id);
    assert_eq!(again[0].attempt, 2, "the interrupted attempt counts");
    // At b's retry time, b and the scheduled message are due.
    let due = store
        .claim_due(&n, T0 + 60_000, 10, T0 + 900_000)
        .await
        .unwrap();
    let mut recipients: Vec<&str> = due.iter().map(|c| c.delivery.recipient.as_str()).collect();
    recipients.sort();
    assert_eq!(recipients, vec!["b@example.com", "d@example.com"]);
}

/// One call records many attempts (as the delivery recorder does): of two
/// tenants, each delivery's `sent` before its outcome, a contact moved by
/// its own delivery's outcome only, and the queue left as each outcome
/// says. The same batch recorded again stores nothing twice.
pub async fn a_batch_of_attempts_of_two_tenants_is_recorded_in_order(store: &dyn Store) {
    let n = node("node-a");
    let (t1, t2) = (tenant(store, "acme").await, tenant(store, "globex").await);
    let r1 = accept(
        store,
        message(
            &t1,
            &["ok@example.com", "later@example.com", "busy@example.com"],
        ),
    )
    .await;
    let r2 = accept(store, message(&t2, &["gone@example.com"])).await;
    assert_eq!(
        store
            .claim_due(&n, T0, 10, T0 + 600_000)
            .await
            .unwrap()
            .len(),
        4
    );
    let (ok, later, busy) = (
        &r1.deliveries[0].id,
        &r1.deliveries[1].id,
        &r1.deliveries[2].id,
    );
    let gone = &r2.deliveries[0].id;
    let event = delivery_event;
    let sent = || EventDetails::Sent(Default::default());
    let deferred = EventDetails::Deferred(Deferred {
        attempt: 1,
        next_retry_at: Some(T0 + 60_000),
        ..Default::default()
    });
    let attempt = |tenant: &TenantId, delivery: &DeliveryId, events, next| AttemptRecord {
        tenant: tenant.clone(),
        delivery: delivery.clone(),
        events,
        next,
    };
    let batch = vec![
        attempt(&t1, ok, vec![event(ok, T0 + 1, sent())], None),
        attempt(&t2, gone, vec![event(gone, T0 + 1, sent())], None),
        attempt(&t1, later, vec![event(later, T0 + 1, sent())], None),
        attempt(
            &t1,
            ok,
            vec![event(ok, T0 + 2, delivered())],
            Some(QueueNext::Remove),
        ),
        attempt(
            &t2,
            gone,
            vec![event(gone, T0 + 2, bounce(BounceType::Hard))],
            Some(QueueNext::Remove),
        ),
        attempt(
            &t1,
            later,
            vec![event(later, T0 + 2, deferred)],
            Some(QueueNext::RetryAt(T0 + 60_000)),
        ),
        // Still under way: only its `sent`, its lease kept.
        attempt(&t1, busy, vec![event(busy, T0 + 1, sent())], None),
    ];
    let stored = store.record_attempts(batch.clone()).await.unwrap();
    assert_eq!(stored.len(), 7, "every event of the batch is stored");
    let status = |t: TenantId, d: DeliveryId| async move {
        store.delivery(&t, &d).await.unwrap().unwrap().status()
    };
    assert_eq!(status(t1.clone(), ok.clone()).await, "delivered");
    assert_eq!(status(t1.clone(), later.clone()).await, "deferred");
    assert_eq!(status(t1.clone(), busy.clone()).await, "sent");
    assert_eq!(status(t2.clone(), gone.clone()).await, "bounced");
    let contact = |t: TenantId, a: &'static str| async move {
        store.contact(&t, a).await.unwrap().unwrap().state
    };
    assert_eq!(
        contact(t2.clone(), "gone@example.com").await.status,
        ContactStatus::Bounced
    );
    assert_eq!(
        contact(t1.clone(), "later@example.com")
            .await
            .consecutive_failed_attempts,
        1
    );
    assert_eq!(
        contact(t1.clone(), "ok@example.com").await.status,
        ContactStatus::Active
    );
    assert_eq!(store.suppressions(&t2, T0 + 3).await.unwrap().len(), 1);
    assert!(store.suppressions(&t1, T0 + 3).await.unwrap().is_empty());
    // ok and gone left the queue; later waits for its retry, busy is leased.
    assert_eq!(store.queue_len(&t1).await.unwrap(), 2);
    assert_eq!(store.queue_len(&t2).await.unwrap(), 0);
    assert!(
        store
            .claim_due(&n, T0 + 3, 10, T0 + 600_000)
            .await
            .unwrap()
            .is_empty()
    );
    let retry = store
        .claim_due(&n, T0 + 60_000, 10, T0 + 900_000)
        .await
        .unwrap();
    assert_eq!(retry.len(), 1);
    assert_eq!(&retry[0].delivery.id, later);
    assert_eq!(retry[0].attempt, 2);

    // A batch written twice (its first answer lost): nothing new.
    assert!(store.record_attempts(batch).await.unwrap().is_empty());
    assert_eq!(store.delivery_events(&t1, ok).await.unwrap().len(), 3);
    assert_eq!(store.suppressions(&t2, T0 + 3).await.unwrap().len(), 1);
}

/// Several nodes share one queue: a node's restart frees only the leases it
/// holds, and a lease that ran out can be taken by any node.
pub async fn leases_belong_to_the_node_that_claimed_them(store: &dyn Store) {
    let (a, b) = (node("node-a"), node("node-b"));
    let t = tenant(store, "acme").await;
    accept(store, message(&t, &["x@example.com", "y@example.com"])).await;
    let lease_until = T0 + 600_000;
    assert_eq!(
        store
            .claim_due(&a, T0, 10, lease_until)
            .await
            .unwrap()
            .len(),
        2
    );

    // b starts (again): a's leases are not b's to free.
    assert_eq!(store.release_leases(&b).await.unwrap(), 0);
    assert!(
        store
            .claim_due(&b, T0 + 1, 10, T0 + 700_000)
            .await
            .unwrap()
            .is_empty(),
        "a's leases still run"
    );
    // Once they have run out (a died and did not come back), b takes them.
    let taken = store
        .claim_due(&b, lease_until + 1, 10, lease_until + 600_000)
        .await
        .unwrap();
    assert_eq!(taken.len(), 2);
    assert!(taken.iter().all(|c| c.attempt == 2));
    // a comes back: the deliveries are b's now and stay leased.
    assert_eq!(store.release_leases(&a).await.unwrap(), 0);
    assert!(
        store
            .claim_due(&a, lease_until + 2, 10, lease_until + 900_000)
            .await
            .unwrap()
            .is_empty()
    );
    // b's own restart frees them.
    assert_eq!(store.release_leases(&b).await.unwrap(), 2);
}

/// Every stored event has a sequence number: higher for every later
/// commit, so reading on from the last one seen misses nothing. Each
/// commit's events are published once, after it, in that order; the
/// writes return what they stored.
pub async fn events_are_numbered_and_published_in_commit_order(store: &dyn Store) {
    let observed = std::sync::Arc::new(std::sync::Mutex::new(Vec::<i64>::new()));
    let seen = observed.clone();
    store.commits().observe(move |events, origin| {
        assert_eq!(origin, crate::Origin::ThisNode);
        seen.lock().unwrap().extend(events.iter().map(|e| e.seq));
    });
    let mut subscriber = store.commits().subscribe();

    let t = tenant(store, "acme").await;
    let other = tenant(store, "other").await;
    let r = accept(store, message(&t, &["a@example.com", "b@example.com"])).await;
    accept(store, message(&other, &["c@example.com"])).await;
    let (a, b) = (&r.deliveries[0].id, &r.deliveries[1].id);
    let opened_event = |id: &DeliveryId, at: Millis| NewEvent {
        id: EventId::generate(),
        delivery_id: id.clone(),
        occurred_at: at,
        recorded_at: at,
        source: EventSource::Tracker,
        details: opened(),
        external_id: None,
    };
    let recorded = match store
        .record_event(&t, opened_event(b, T0 + 5))
        .await
        .unwrap()
    {
        RecordOutcome::Recorded { event, .. } => event,
        other => panic!("expected Recorded, got {other:?}"),
    };
    let finished = store
        .finish_attempt(
            &t,
            vec![NewEvent {
                details: delivered(),
                source: EventSource::Delivery,
                ..opened_event(a, T0 + 1)
            }],
            a,
            QueueNext::Remove,
        )
        .await
        .unwrap();
    assert_eq!(finished.len(), 1, "finish_attempt returns what it stored");
    assert!(
        finished[0].seq > recorded.seq,
        "a later commit numbers higher, whatever the events' own times"
    );

    // The tenant's events in commit order: its two `queued`, the open, the
    // delivery; the other tenant's are not among them.
    let filter = search("", Surface::Events);
    let all = events_after_settled(store, &t, 0, &filter, 100, 4).await;
    let kinds: Vec<EventKind> = all.iter().map(|e| e.kind()).collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::Queued,
            EventKind::Queued,
            EventKind::Opened,
            EventKind::Delivered
        ]
    );
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    // Reading on from any of them gives exactly the rest.
    let rest = events_after_settled(store, &t, all[1].seq, &filter, 100, 2).await;
    assert_eq!(rest.len(), 2);
    assert_eq!(rest[0].id, recorded.id);
    assert_eq!(rest[1].id, finished[0].id);
    // Filters and the limit apply.
    let only_a = search(&format!("delivery_id={a}"), Surface::Events);
    let first_of_a = events_after_settled(store, &t, 0, &only_a, 1, 1).await;
    assert_eq!(first_of_a.len(), 1);
    assert_eq!(first_of_a[0].kind(), EventKind::Queued);
    assert_eq!(first_of_a[0].delivery_id, *a);
    // What an event read back says is what the write returned.
    assert_eq!(
        store.event(&t, &recorded.id).await.unwrap().unwrap().seq,
        recorded.seq
    );

    // Published: every event of both tenants once, in `seq` order, to the
    // observer and to the subscriber alike (on PostgreSQL once they have
    // settled, a moment after their commits).
    for _ in 0..500 {
        if observed.lock().unwrap().len() >= 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let observed = observed.lock().unwrap().clone();
    assert_eq!(observed.len(), 5);
    assert!(observed.windows(2).all(|w| w[0] < w[1]), "{observed:?}");
    let mut received = Vec::new();
    while let Ok(batch) = subscriber.try_recv() {
        received.extend(batch.iter().map(|e| e.seq));
    }
    assert_eq!(received, observed);
}

/// `events_after`, asked again until it gives `count` events (or for a
/// few seconds, then what it gives). A backend with concurrent writers
/// makes a committed event readable by position once every transaction
/// that may hold a lower position has ended (see `Store::events_after`):
/// at once when nothing else writes, a moment later under load (other
/// tests on the same server).
async fn events_after_settled(
    store: &dyn Store,
    tenant: &TenantId,
    after: i64,
    filter: &Filters,
    limit: u32,
    count: usize,
) -> Vec<EventRecord> {
    let mut events = Vec::new();
    for _ in 0..500 {
        events = store
            .events_after(tenant, after, filter, limit)
            .await
            .unwrap();
        if events.len() >= count {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    events
}

fn one_message_row(claimed: &[ClaimedDelivery]) -> bool {
    claimed
        .windows(2)
        .all(|w| std::sync::Arc::ptr_eq(&w[0].message, &w[1].message))
}

fn inbound(
    tenant: Option<&TenantId>,
    delivery: Option<&DeliveryId>,
    outcome: InboundOutcome,
    at: Millis,
) -> InboundRecord {
    InboundRecord {
        id: InboundId::generate(),
        received_at: at,
        tenant_id: tenant.cloned(),
        delivery_id: delivery.cloned(),
        mail_from: String::new(),
        rcpt_to: vec!["bounces+token@sender.example".into()],
        kind: InboundKind::Report(RecordKind::Bounce),
        outcome,
        orphan_reason: (outcome == InboundOutcome::Orphan).then_some(OrphanReason::NoReference),
        attribution: delivery.map(|_| AttributedBy::Verp),
        records: serde_json::json!([{"kind": "bounce", "reason": "userunknown"}]),
        size: 0,
        event_ids: Vec::new(),
    }
}

fn async_bounce(delivery: &DeliveryId, external: &str, at: Millis) -> NewEvent {
    let mut details = bounce(BounceType::Hard);
    if let EventDetails::Bounced(b) = &mut details {
        b.origin = BounceOrigin::Async;
    }
    NewEvent {
        id: EventId::generate(),
        delivery_id: delivery.clone(),
        occurred_at: at,
        recorded_at: at,
        source: EventSource::InboundMx,
        details,
        external_id: Some(external.into()),
    }
}

pub async fn inbound_reports_record_events_with_their_source(store: &dyn Store) {
    let t = tenant(store, "acme").await;
    let other = tenant(store, "other").await;
    assert_eq!(store.operator_tenant().await.unwrap(), Some(t.clone()));
    let r = accept(store, message(&t, &["gone@example.com"])).await;
    let d = &r.deliveries[0].id;
    assert_eq!(
        store.delivery_owner(d).await.unwrap(),
        Some((t.clone(), "gone@example.com".to_owned()))
    );
    assert_eq!(
        store.delivery_owner(&DeliveryId::generate()).await.unwrap(),
        None
    );

    let raw = b"From: MAILER-DAEMON\r\n\r\nreport".to_vec();
    let new = NewInbound {
        record: inbound(Some(&t), Some(d), InboundOutcome::Recorded, T0 + 5),
        raw: raw.clone(),
        events: vec![async_bounce(d, "dsn:1", T0 + 5)],
    };
    let kept = store.record_inbound(new).await.unwrap();
    assert_eq!(kept.outcome, InboundOutcome::Recorded);
    assert_eq!(kept.event_ids.len(), 1);
    let event = &kept.event_ids[0];
    // The event went through the fold and its effects, like any other.
    let delivery = store.delivery(&t, d).await.unwrap().unwrap();
    assert_eq!(
        delivery.delivery_status,
        Some(DeliveryStatus::Bounced(BounceType::Hard))
    );
    assert_eq!(store.suppressions(&t, T0 + 6).await.unwrap().len(), 1);
    // The event names its source, and only to its own tenant.
    assert_eq!(
        store.event_inbound(&t, event).await.unwrap(),
        Some(kept.id.clone())
    );
    assert_eq!(store.event_inbound(&other, event).await.unwrap(), None);
    assert_eq!(
        store.inbound_raw(Some(&t), &kept.id).await.unwrap(),
        Some(raw.clone())
    );
    assert_eq!(
        store.inbound_raw(Some(&other), &kept.id).await.unwrap(),
        None
    );
    assert_eq!(store.inbound_raw(None, &kept.id).await.unwrap(), None);

    // The same report again: kept, but recorded nothing new.
    let again = store
        .record_inbound(NewInbound {
            record: inbound(Some(&t), Some(d), InboundOutcome::Recorded, T0 + 7),
            raw: raw.clone(),
            events: vec![async_bounce(d, "dsn:1", T0 + 7)],
        })
        .await
        .unwrap();
    assert_eq!(again.outcome, InboundOutcome::Duplicate);
    assert_eq!(&again.event_ids, &kept.event_ids);
    assert_eq!(
        store.event_inbound(&t, event).await.unwrap(),
        Some(kept.id.clone()),
        "an event keeps pointing at the first copy"
    );
    let events = store.delivery_events(&t, d).await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind() == EventKind::Bounced)
            .count(),
        1
    );

    let listed = store
        .inbound_messages(
            Some(&t),
            &InboundFilter {
                delivery_id: Some(d.clone()),
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
        vec![again.id.clone(), kept.id.clone()]
    );
    assert_eq!(listed[1].event_ids, kept.event_ids);
    assert_eq!(listed[1].records[0]["reason"], "userunknown");
    assert!(
        store
            .inbound_messages(
                Some(&other),
                &InboundFilter {
                    limit: 10,
                    ..Default::default()
                }
            )
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn inbound_orphans_are_kept_apart(store: &dyn Store) {
    let t = tenant(store, "acme").await;
    let orphan = store
        .record_inbound(NewInbound {
            record: inbound(None, None, InboundOutcome::Orphan, T0),
            raw: b"junk".to_vec(),
            events: Vec::new(),
        })
        .await
        .unwrap();
    let filter = InboundFilter {
        outcome: Some(InboundOutcome::Orphan),
        limit: 10,
        ..Default::default()
    };
    let orphans = store.inbound_messages(None, &filter).await.unwrap();
    assert_eq!(orphans.len(), 1);
    assert_eq!(orphans[0].orphan_reason, Some(OrphanReason::NoReference));
    assert_eq!(
        store.inbound_raw(None, &orphan.id).await.unwrap(),
        Some(b"junk".to_vec())
    );
    // No tenant sees an orphan as its own.
    assert!(
        store
            .inbound_messages(Some(&t), &filter)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.inbound_raw(Some(&t), &orphan.id).await.unwrap(), None);

    // A message with events but no tenant is refused, and nothing is kept.
    let r = accept(store, message(&t, &["a@example.com"])).await;
    let refused = store
        .record_inbound(NewInbound {
            record: inbound(None, None, InboundOutcome::Recorded, T0),
            raw: b"x".to_vec(),
            events: vec![async_bounce(&r.deliveries[0].id, "dsn:2", T0)],
        })
        .await;
    assert!(refused.is_err());
    assert_eq!(
        store.inbound_messages(None, &filter).await.unwrap().len(),
        1
    );
    let delivery = store
        .delivery(&t, &r.deliveries[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(delivery.delivery_status, Some(DeliveryStatus::Queued));
}

pub async fn message_engagement_lists_opens_and_clicks_of_every_delivery(store: &dyn Store) {
    let t = tenant(store, "acme").await;
    let r = accept(store, message(&t, &["a@example.com", "b@example.com"])).await;
    let other = accept(store, message(&t, &["c@example.com"])).await;
    let (a, b) = (&r.deliveries[0].id, &r.deliveries[1].id);
    record(store, &t, a, T0 + 1, delivered()).await;
    record(store, &t, a, T0 + 2, opened()).await;
    record(store, &t, b, T0 + 3, opened()).await;
    record(store, &t, &other.deliveries[0].id, T0 + 4, opened()).await;
    let mut found: Vec<(DeliveryId, EventKind)> = store
        .message_engagement_events(&t, &r.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| {
            let kind = e.kind();
            (e.delivery_id, kind)
        })
        .collect();
    found.sort();
    let mut want = vec![
        (a.clone(), EventKind::Opened),
        (b.clone(), EventKind::Opened),
    ];
    want.sort();
    assert_eq!(found, want, "only this message's opens and clicks");
    let stranger = tenant(store, "other").await;
    assert!(
        store
            .message_engagement_events(&stranger, &r.id)
            .await
            .unwrap()
            .is_empty()
    );
}

/// What a tracker hit is judged on: the delivery time (the first
/// `delivered`, else the first `sent`; known for good only once delivered),
/// the message's links and the earlier opens and clicks, nothing else.
pub async fn tracking_facts_give_the_delivery_time_and_earlier_hits(store: &dyn Store) {
    let t = tenant(store, "acme").await;
    let r = accept(store, message(&t, &["a@example.com"])).await;
    let d = &r.deliveries[0].id;
    store
        .put_message_links(&r.id, vec!["https://example.com/x".into()])
        .await
        .unwrap();
    let facts = store.tracking_facts(d).await.unwrap().unwrap();
    assert_eq!((facts.delivered_at, facts.delivered_known), (None, false));
    assert_eq!(facts.links, vec!["https://example.com/x".to_owned()]);

    record(
        store,
        &t,
        d,
        T0 + 10,
        EventDetails::Sent(Default::default()),
    )
    .await;
    let facts = store.tracking_facts(d).await.unwrap().unwrap();
    assert_eq!(
        (facts.delivered_at, facts.delivered_known),
        (Some(T0 + 10), false)
    );

    record(store, &t, d, T0 + 20, delivered()).await;
    record(store, &t, d, T0 + 30, opened()).await;
    record(
        store,
        &t,
        d,
        T0 + 40,
        EventDetails::Clicked(posthorn_core::event::Clicked {
            url: "https://example.com/x".into(),
            link_index: Some(0),
            ip: None,
            user_agent: None,
            machine: None,
            machine_reason: None,
            implied_open: None,
        }),
    )
    .await;
    let facts = store.tracking_facts(d).await.unwrap().unwrap();
    assert_eq!(
        (facts.delivered_at, facts.delivered_known),
        (Some(T0 + 20), true)
    );
    assert_eq!(facts.tenant_id, t);
    assert_eq!(facts.recipient, "a@example.com");
    let kinds: Vec<(EventKind, Millis)> = facts
        .engagement
        .iter()
        .map(|e| (e.kind(), e.occurred_at))
        .collect();
    assert_eq!(
        kinds,
        vec![(EventKind::Opened, T0 + 30), (EventKind::Clicked, T0 + 40)]
    );
    assert!(
        store
            .tracking_facts(&DeliveryId::generate())
            .await
            .unwrap()
            .is_none()
    );
}

/// A delivery's timeline a page at a time: oldest first, each page after
/// the last event of the one before, another tenant's delivery empty; and
/// its opens and clicks in one read.
pub async fn a_delivery_timeline_pages_oldest_first(store: &dyn Store) {
    let t = tenant(store, "acme").await;
    let r = accept(store, message(&t, &["a@example.com", "b@example.com"])).await;
    let (a, b) = (&r.deliveries[0].id, &r.deliveries[1].id);
    record(store, &t, a, T0 + 1, delivered()).await;
    for i in 0..5 {
        record(store, &t, a, T0 + 10 + i, opened()).await;
    }
    record(store, &t, b, T0 + 2, opened()).await;
    let all = store.delivery_events(&t, a).await.unwrap();
    assert_eq!(all.len(), 7, "queued, delivered, five opens");
    let mut paged = Vec::new();
    let mut after: Option<EventId> = None;
    loop {
        let page = store
            .delivery_events_page(&t, a, after.as_ref(), 3)
            .await
            .unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        paged.extend(page);
    }
    assert_eq!(paged, all, "every event once, in the timeline's order");
    let ids: Vec<&EventId> = paged.iter().map(|e| &e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first");
    let first = store.delivery_events_page(&t, a, None, 2).await.unwrap();
    assert_eq!(first, all[..2]);
    let stranger = tenant(store, "other").await;
    assert!(
        store
            .delivery_events_page(&stranger, a, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let engagement = store.delivery_engagement_events(&t, a).await.unwrap();
    assert_eq!(engagement.len(), 5);
    assert!(engagement.iter().all(|e| e.kind() == EventKind::Opened));
    assert!(
        store
            .delivery_engagement_events(&stranger, a)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Hits counted but not stored: one row per delivery, target and verdict,
/// their number and the latest time; no event and no status change; only
/// for the tenant's own deliveries; shown per delivery, per message, and
/// in the tracker's facts.
pub async fn repeated_hits_are_counted_per_target_and_verdict(store: &dyn Store) {
    let t = tenant(store, "acme").await;
    let r = accept(store, message(&t, &["a@example.com", "b@example.com"])).await;
    let (a, b) = (&r.deliveries[0].id, &r.deliveries[1].id);
    record(store, &t, a, T0 + 1, delivered()).await;
    let before = store.delivery(&t, a).await.unwrap().unwrap();
    let hit = |delivery: &DeliveryId, kind, link_index, machine, at| NewRepeatedHit {
        delivery_id: delivery.clone(),
        kind,
        link_index,
        machine,
        at,
    };
    for at in [T0 + 30, T0 + 10, T0 + 20] {
        let h = hit(a, EventKind::Opened, None, false, at);
        assert!(store.record_repeated_hit(&t, h).await.unwrap());
    }
    for h in [
        hit(a, EventKind::Opened, None, true, T0 + 5),
        hit(a, EventKind::Clicked, Some(1), false, T0 + 40),
        hit(a, EventKind::Clicked, Some(1), false, T0 + 41),
        hit(b, EventKind::Clicked, Some(0), true, T0 + 50),
    ] {
        assert!(store.record_repeated_hit(&t, h).await.unwrap());
    }
    let stranger = tenant(store, "other").await;
    let foreign = hit(a, EventKind::Opened, None, false, T0 + 60);
    assert!(
        !store.record_repeated_hit(&stranger, foreign).await.unwrap(),
        "another tenant's delivery is unknown"
    );
    let unknown = hit(&DeliveryId::generate(), EventKind::Opened, None, false, T0);
    assert!(!store.record_repeated_hit(&t, unknown).await.unwrap());

    let key = |h: &RepeatedHits| (h.delivery_id.clone(), h.kind, h.link_index, h.machine);
    let mut of_a = store.delivery_repeated_hits(&t, a).await.unwrap();
    of_a.sort_by_key(key);
    let want = |delivery: &DeliveryId, kind, link_index, machine, hits, last_at| RepeatedHits {
        delivery_id: delivery.clone(),
        kind,
        link_index,
        machine,
        hits,
        last_at,
    };
    let mut want_a = vec![
        want(a, EventKind::Opened, None, false, 3, T0 + 30),
        want(a, EventKind::Opened, None, true, 1, T0 + 5),
        want(a, EventKind::Clicked, Some(1), false, 2, T0 + 41),
    ];
    want_a.sort_by_key(key);
    assert_eq!(of_a, want_a);
    let mut of_message = store.message_repeated_hits(&t, &r.id).await.unwrap();
    of_message.sort_by_key(key);
    let mut want_message = want_a.clone();
    want_message.push(want(b, EventKind::Clicked, Some(0), true, 1, T0 + 50));
    want_message.sort_by_key(key);
    assert_eq!(of_message, want_message);
    let mut in_facts = store.tracking_facts(a).await.unwrap().unwrap().repeats;
    in_facts.sort_by_key(key);
    assert_eq!(in_facts, want_a);
    // Counted only: no event, the status as it was.
    assert_eq!(store.delivery_events(&t, a).await.unwrap().len(), 2);
    assert_eq!(store.delivery(&t, a).await.unwrap().unwrap(), before);
    assert!(
        store
            .delivery_repeated_hits(&stranger, a)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .message_repeated_hits(&stranger, &r.id)
            .await
            .unwrap()
            .is_empty()
    );
}

// --- provider ingest ---

fn ingest_source(tenant: &TenantId, token_hash: &str) -> IngestSource {
    IngestSource {
        id: posthorn_core::id::IngestSourceId::generate(),
        tenant_id: tenant.clone(),
        name: Some("mailgun main".into()),
        token_hash: token_hash.into(),
        verification: SourceVerification::Mailgun {
            signing_key: "key-1".into(),
        },
        created_at: T0,
        pending_confirmation: None,
    }
}

fn provider_event(
    message: &str,
    to: &str,
    keys: &[&str],
    at: Millis,
    details: EventDetails,
) -> ProviderEvent {
    ProviderEvent {
        provider_message_id: message.into(),
        recipient: to.into(),
        sender: Some("news@sender.example".into()),
        keys: keys.iter().map(|k| k.to_string()).collect(),
        id: EventId::generate(),
        occurred_at: at,
        details,
        raw: format!("{{\"at\":{at}}}").into_bytes(),
    }
}

fn batch(
    t: &TenantId,
    source: &IngestSource,
    token: Option<&str>,
    events: Vec<ProviderEvent>,
) -> ProviderBatch {
    ProviderBatch {
        tenant: t.clone(),
        source: source.id.clone(),
        provider: posthorn_core::provider::Provider::Mailgun,
        token: token.map(|t| (t.to_owned(), T0 + DAY)),
        events,
        stream: "default".into(),
        now: T0 + 10,
    }
}

pub async fn ingest_sources_belong_to_their_tenant(store: &dyn Store) {
    let a = tenant(store, "a").await;
    let b = tenant(store, "b").await;
    let source = store
        .create_ingest_source(ingest_source(&a, "hash-a"))
        .await
        .unwrap();
    assert_eq!(
        store.ingest_sources(&a).await.unwrap(),
        vec![source.clone()]
    );
    assert!(store.ingest_sources(&b).await.unwrap().is_empty());
    let found = store.ingest_source_by_token("hash-a").await.unwrap();
    assert_eq!(found.as_ref().map(|s| &s.tenant_id), Some(&a));
    assert_eq!(found.unwrap().verification, source.verification);
    assert!(
        store
            .ingest_source_by_token("hash-b")
            .await
            .unwrap()
            .is_none()
    );
    // A second source with the same token hash is refused.
    assert!(
        store
            .create_ingest_source(ingest_source(&b, "hash-a"))
            .await
            .is_err()
    );
    assert!(
        store
            .set_ingest_pending_confirmation(&a, &source.id, Some("https://sns.example/".into()))
            .await
            .unwrap()
    );
    assert_eq!(
        store.ingest_sources(&a).await.unwrap()[0]
            .pending_confirmation
            .as_deref(),
        Some("https://sns.example/")
    );
    // Another tenant can neither change nor remove it.
    assert!(
        !store
            .set_ingest_pending_confirmation(&b, &source.id, None)
            .await
            .unwrap()
    );
    assert!(!store.delete_ingest_source(&b, &source.id).await.unwrap());
    assert!(store.delete_ingest_source(&a, &source.id).await.unwrap());
    assert!(
        store
            .ingest_source_by_token("hash-a")
            .await
            .unwrap()
            .is_none()
    );
    assert!(!store.delete_ingest_source(&a, &source.id).await.unwrap());
}

pub async fn provider_events_make_deliveries_and_count_once(store: &dyn Store) {
    let t = tenant(store, "acme").await;
    let other = tenant(store, "other").await;
    let source = store
        .create_ingest_source(ingest_source(&t, "h"))
        .await
        .unwrap();
    let hard = || bounce(BounceType::Hard);
    // Delivered to a, bounced for b: one message, two deliveries.
    let first = store
        .record_provider_events(batch(
            &t,
            &source,
            Some("tok-1"),
            vec![
                provider_event(
                    "pm-1",
                    "a@example.com",
                    &["id:1", "content:1"],
                    T0 + 5,
                    EventDetails::Delivered(Delivered::default()),
                ),
                provider_event(
                    "pm-1",
                    "b@example.com",
                    &["id:2", "content:2"],
                    T0 + 6,
                    hard(),
                ),
            ],
        ))
        .await
        .unwrap();
    let ProviderOutcome::Recorded(outcomes) = first else {
        panic!("{first:?}")
    };
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes.iter().all(|o| !o.duplicate));
    assert_eq!(outcomes[0].message_id, outcomes[1].message_id);
    assert_ne!(outcomes[0].delivery_id, outcomes[1].delivery_id);
    let message = store
        .message(&t, &outcomes[0].message_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(message.source, EventSource::ProviderWebhook);
    assert_eq!(
        store.queue_len(&t).await.unwrap(),
        0,
        "the provider sends it, not us"
    );
    let b = store
        .delivery(&t, &outcomes[1].delivery_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        b.delivery_status,
        Some(DeliveryStatus::Bounced(BounceType::Hard))
    );
    assert_eq!(
        store
            .contact(&t, "b@example.com")
            .await
            .unwrap()
            .unwrap()
            .state
            .status,
        ContactStatus::Bounced
    );
    assert!(
        store
            .suppressions(&t, T0 + 10)
            .await
            .unwrap()
            .iter()
            .any(|s| s.target == "b@example.com")
    );
    assert_eq!(
        store
            .contact(&t, "a@example.com")
            .await
            .unwrap()
            .unwrap()
            .state
            .status,
        ContactStatus::Active
    );
    // The raw payload is kept per event, for its tenant only.
    assert_eq!(
        store
            .provider_payload(&t, &outcomes[0].event_id)
            .await
            .unwrap(),
        Some(format!("{{\"at\":{}}}", T0 + 5).into_bytes())
    );
    assert_eq!(
        store
            .provider_payload(&other, &outcomes[0].event_id)
            .await
            .unwrap(),
        None
    );

    // The same token again: nothing written, whatever the events.
    let replay = store
        .record_provider_events(batch(
            &t,
            &source,
            Some("tok-1"),
            vec![provider_event(
                "pm-2",
                "c@example.com",
                &["id:9"],
                T0 + 7,
                hard(),
            )],
        ))
        .await
        .unwrap();
    assert_eq!(replay, ProviderOutcome::ReplayedToken);
    assert!(store.contact(&t, "c@example.com").await.unwrap().is_none());

    // A retry with a new event id but the same content counts once, and
    // an earlier event of the same delivery (out of order) joins it.
    let again = store
        .record_provider_events(batch(
            &t,
            &source,
            Some("tok-2"),
            vec![
                provider_event(
                    "pm-1",
                    "a@example.com",
                    &["id:1b", "content:1"],
                    T0 + 5,
                    EventDetails::Delivered(Delivered::default()),
                ),
                provider_event(
                    "pm-1",
                    "a@example.com",
                    &["id:3", "content:3"],
                    T0 + 1,
                    EventDetails::Queued(Default::default()),
                ),
            ],
        ))
        .await
        .unwrap();
    let ProviderOutcome::Recorded(again) = again else {
        panic!()
    };
    assert!(again[0].duplicate);
    assert_eq!(again[0].event_id, outcomes[0].event_id);
    assert!(!again[1].duplicate);
    assert_eq!(again[1].delivery_id, outcomes[0].delivery_id);
    let a = store
        .delivery(&t, &outcomes[0].delivery_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.delivery_status, Some(DeliveryStatus::Delivered));
    assert_eq!(store.delivery_events(&t, &a.id).await.unwrap().len(), 2);
    // The key the retry brought is known now too.
    let third = store
        .record_provider_events(batch(
            &t,
            &source,
            None,
            vec![provider_event(
                "pm-1",
                "a@example.com",
                &["id:1b"],
                T0 + 99,
                EventDetails::Delivered(Delivered::default()),
            )],
        ))
        .await
        .unwrap();
    let ProviderOutcome::Recorded(third) = third else {
        panic!()
    };
    assert!(third[0].duplicate);

    // The other tenant's same provider message is its own.
    let theirs = store
        .create_ingest_source(ingest_source(&other, "h2"))
        .await
        .unwrap();
    let ProviderOutcome::Recorded(o) = store
        .record_provider_events(batch(
            &other,
            &theirs,
            Some("tok-1"),
            vec![provider_event(
                "pm-1",
                "a@example.com",
                &["id:1", "content:1"],
                T0 + 5,
                EventDetails::Delivered(Delivered::default()),
            )],
        ))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert!(!o[0].duplicate);
    assert_ne!(o[0].delivery_id, outcomes[0].delivery_id);
    // A removed source records nothing.
    assert!(store.delete_ingest_source(&t, &source.id).await.unwrap());
    assert!(
        store
            .record_provider_events(batch(
                &t,
                &source,
                None,
                vec![provider_event(
                    "pm-5",
                    "e@example.com",
                    &["id:5"],
                    T0,
                    hard()
                ),]
            ))
            .await
            .is_err()
    );
    assert!(store.contact(&t, "e@example.com").await.unwrap().is_none());
}

// --- races: what a backend with concurrent writers must still get right ---
//
// Each case sends its writes together (polled in one task: on PostgreSQL
// they run on several connections at once, on SQLite they meet in the one
// writer's batches) and checks the outcome a one-at-a-time run gives.

/// Events of different rank for one delivery, recorded at once, end at the
/// fold's maximum: the same status as the same events recorded one by one.
pub async fn concurrent_events_of_one_delivery_end_at_the_folds_maximum(store: &dyn Store) {
    let t = tenant(store, "acme").await;
    let r = accept(store, message(&t, &["a@example.com", "b@example.com"])).await;
    let (together, one_by_one) = (&r.deliveries[0].id, &r.deliveries[1].id);
    let details = || {
        let mut all = vec![delivered(), opened(), bounce(BounceType::Soft)];
        all.extend((0..5).map(|_| opened()));
        all
    };
    let event = |id: &DeliveryId, i: usize, details: EventDetails| NewEvent {
        id: EventId::generate(),
        delivery_id: id.clone(),
        occurred_at: T0 + 1 + i as Millis,
        recorded_at: T0 + 1 + i as Millis,
        source: EventSource::Tracker,
        details,
        external_id: None,
    };
    let writes = details()
        .into_iter()
        .enumerate()
        .map(|(i, d)| store.record_event(&t, event(together, i, d)));
    for outcome in futures_util::future::join_all(writes).await {
        assert!(
            matches!(outcome, Ok(RecordOutcome::Recorded { .. })),
            "{outcome:?}"
        );
    }
    for (i, d) in details().into_iter().enumerate() {
        store
            .record_event(&t, event(one_by_one, i, d))
            .await
            .unwrap();
    }
    let a = store.delivery(&t, together).await.unwrap().unwrap();
    let b = store.delivery(&t, one_by_one).await.unwrap().unwrap();
    assert_eq!(a.status(), b.status());
    assert_eq!(a.delivery_status, b.delivery_status);
    assert_eq!(a.engagement_status, b.engagement_status);
    assert_eq!(store.delivery_events(&t, together).await.unwrap().len(), 9);
}

/// Two hard bounces of one address, recorded at once, make one suppression
/// and one change of the contact.
pub async fn concurrent_hard_bounces_make_one_suppression(store: &dyn Store) {
    let t = tenant(store, "acme").await;
    let first = accept(store, message(&t, &["gone@example.com"])).await;
    let second = accept(store, message(&t, &["gone@example.com"])).await;
    let bounce_of = |r: &Receipt| NewEvent {
        id: EventId::generate(),
        delivery_id: r.deliveries[0].id.clone(),
        occurred_at: T0 + 1,
        recorded_at: T0 + 1,
        source: EventSource::Delivery,
        details: bounce(BounceType::Hard),
        external_id: None,
    };
    let (a, b) = futures_util::future::join(
        store.record_event(&t, bounce_of(&first)),
        store.record_event(&t, bounce_of(&second)),
    )
    .await;
    assert!(matches!(a, Ok(RecordOutcome::Recorded { .. })), "{a:?}");
    assert!(matches!(b, Ok(RecordOutcome::Recorded { .. })), "{b:?}");
    let list = store.suppressions(&t, T0 + 2).await.unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    let changes = store.contact_changes(&t, "gone@example.com").await.unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].to, ContactStatus::Bounced);
}

/// Claimers on several nodes, at once, never hold the same delivery, and
/// together they take every due one.
pub async fn concurrent_claimers_never_share_a_delivery(store: &dyn Store) {
    let t = tenant(store, "acme").await;
    for i in 0..20 {
        let to: Vec<String> = (0..3).map(|j| format!("r{i}-{j}@example.com")).collect();
        let to: Vec<&str> = to.iter().map(String::as_str).collect();
        accept(store, message(&t, &to)).await;
    }
    let nodes: Vec<NodeId> = (0..6).map(|i| node(&format!("node-{i}"))).collect();
    let claims = nodes
        .iter()
        .map(|n| store.claim_due(n, T0 + 1, 15, T0 + 600_000));
    let mut held = std::collections::HashSet::new();
    let mut total = 0;
    for claimed in futures_util::future::join_all(claims).await {
        for c in claimed.unwrap() {
            total += 1;
            assert!(
                held.insert(c.delivery.id.clone()),
                "claimed twice: {}",
                c.delivery.id
            );
        }
    }
    assert_eq!(total, 60, "six claimers of fifteen take all sixty");
    assert!(
        store
            .claim_due(&nodes[0], T0 + 2, 100, T0 + 600_000)
            .await
            .unwrap()
            .is_empty()
    );
}

/// One idempotency key used by several requests at once (as from several
/// nodes) makes one message; the others replay its receipt.
pub async fn one_idempotency_key_used_at_once_makes_one_message(store: &dyn Store) {
    let t = tenant(store, "acme").await;
    let requests: Vec<NewMessage> = (0..4)
        .map(|_| {
            let mut m = message(&t, &["a@example.com"]);
            m.idempotency = Some(IdempotencyRequest {
                key: "order-7".into(),
                body_hash: "h".into(),
                not_before: T0 - DAY,
            });
            m
        })
        .collect();
    let outcomes =
        futures_util::future::join_all(requests.into_iter().map(|m| store.accept_message(m))).await;
    let mut accepted = Vec::new();
    let mut replayed = Vec::new();
    for outcome in outcomes {
        match outcome.unwrap() {
            AcceptOutcome::Accepted(r) => accepted.push(r),
            AcceptOutcome::Replayed(r) => replayed.push(r),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(accepted.len(), 1);
    assert_eq!(replayed.len(), 3);
    assert!(replayed.iter().all(|r| *r == accepted[0]));
    assert_eq!(store.queue_len(&t).await.unwrap(), 1);
}

/// With the campaign rule on, one campaign submitted to one recipient
/// several times at once is queued once; the rest are dropped as
/// duplicates.
pub async fn concurrent_admissions_of_one_campaign_recipient_send_once(store: &dyn Store) {
    let t = tenant(store, "acme").await;
    let requests: Vec<NewMessage> = (0..4)
        .map(|_| {
            let mut m = message(&t, &["a@example.com"]);
            m.campaign = Some("spring".into());
            m.campaign_dedupe = true;
            m
        })
        .collect();
    let outcomes =
        futures_util::future::join_all(requests.into_iter().map(|m| store.accept_message(m))).await;
    let mut all: Vec<String> = outcomes
        .into_iter()
        .map(|o| match o.unwrap() {
            AcceptOutcome::Accepted(r) => r.deliveries[0].status.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    all.sort();
    assert_eq!(all, vec!["dropped", "dropped", "dropped", "queued"]);
    assert_eq!(store.queue_len(&t).await.unwrap(), 1);
}

/// Writes that arrive together may share a transaction (group commit): a
/// write that fails among them fails alone, and every other one commits.
pub async fn a_failing_write_among_concurrent_ones_fails_alone(store: &dyn Store) {
    let t = tenant(store, "acme").await;
    let creates = (0..40).map(|i| {
        // Every fourth asks for a name that exists: a conflict.
        let name = if i % 4 == 0 {
            "acme".to_owned()
        } else {
            format!("tenant-{i}")
        };
        async move { (name.clone(), store.create_tenant(&name, T0).await) }
    });
    let accepts =
        (0..40).map(|i| store.accept_message(message(&t, &[&format!("r{i}@example.com")])));
    let (created, accepted) = futures_util::future::join(
        futures_util::future::join_all(creates),
        futures_util::future::join_all(accepts),
    )
    .await;
    for (name, result) in &created {
        match (name.as_str(), result) {
            ("acme", Err(StoreError::Conflict(_))) => {}
            ("acme", other) => panic!("a second `acme` gave {other:?}"),
            (_, Ok(tenant)) => assert_eq!(&tenant.name, name),
            (_, Err(e)) => panic!("{name}: {e}"),
        }
    }
    for outcome in accepted {
        assert!(
            matches!(outcome, Ok(AcceptOutcome::Accepted(_))),
            "{outcome:?}"
        );
    }
    assert_eq!(store.tenant_count().await.unwrap(), 31);
    assert_eq!(store.queue_len(&t).await.unwrap(), 40);
    for i in [1, 2, 3, 5, 39] {
        let name = format!("tenant-{i}");
        assert!(
            store.tenant_by_name(&name).await.unwrap().is_some(),
            "{name}"
        );
    }
}

/// One event id recorded by many writes at once is stored once; the others
/// change nothing.
pub async fn one_event_id_recorded_at_once_is_stored_once(store: &dyn Store) {
    let t = tenant(store, "acme").await;
    let r = accept(store, message(&t, &["a@example.com"])).await;
    let delivery = r.deliveries[0].id.clone();
    let event = NewEvent {
        id: EventId::generate(),
        delivery_id: delivery.clone(),
        occurred_at: T0 + 5,
        recorded_at: T0 + 5,
        source: EventSource::Delivery,
        details: delivered(),
        external_id: None,
    };
    // Other writes around it, so that the copies land in shared
    // transactions with fresh events of other deliveries.
    let others: Vec<DeliveryId> = {
        let mut ids = Vec::new();
        for i in 0..10 {
            let r = accept(store, message(&t, &[&format!("o{i}@example.com")])).await;
            ids.push(r.deliveries[0].id.clone());
        }
        ids
    };
    let copies = (0..20).map(|_| store.record_event(&t, event.clone()));
    let fresh = others.iter().map(|d| {
        store.record_event(
            &t,
            NewEvent {
                id: EventId::generate(),
                delivery_id: d.clone(),
                occurred_at: T0 + 5,
                recorded_at: T0 + 5,
                source: EventSource::Delivery,
                details: delivered(),
                external_id: None,
            },
        )
    });
    let (copies, fresh) = futures_util::future::join(
        futures_util::future::join_all(copies),
        futures_util::future::join_all(fresh),
    )
    .await;
    let recorded = copies
        .iter()
        .filter(|o| matches!(o, Ok(RecordOutcome::Recorded { .. })))
        .count();
    assert_eq!(recorded, 1, "{copies:?}");
    for outcome in &copies {
        assert!(outcome.is_ok(), "{outcome:?}");
    }
    let stored = store.delivery_events(&t, &delivery).await.unwrap();
    assert_eq!(stored.iter().filter(|e| e.id == event.id).count(), 1);
    for (outcome, d) in fresh.iter().zip(&others) {
        assert!(
            matches!(outcome, Ok(RecordOutcome::Recorded { .. })),
            "{outcome:?}"
        );
        let status = store
            .delivery(&t, d)
            .await
            .unwrap()
            .unwrap()
            .delivery_status;
        assert_eq!(status, Some(DeliveryStatus::Delivered));
    }
}

/// Messages to the same recipients accepted at once: each recipient gets
/// one contact, and every message its delivery, queued once.
pub async fn concurrent_messages_to_one_recipient_make_one_contact(store: &dyn Store) {
    let t = tenant(store, "acme").await;
    let addresses = ["a@example.com", "b@example.com", "c@example.com"];
    let accepts = (0..30).map(|i| store.accept_message(message(&t, &[addresses[i % 3]])));
    let outcomes = futures_util::future::join_all(accepts).await;
    let mut deliveries = Vec::new();
    for outcome in outcomes {
        match outcome {
            Ok(AcceptOutcome::Accepted(r)) => {
                assert_eq!(statuses(&r), ["queued"]);
                deliveries.push(r.deliveries[0].id.clone());
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(store.queue_len(&t).await.unwrap(), 30);
    for address in addresses {
        let contact = store.contact(&t, address).await.unwrap();
        assert_eq!(
            contact.map(|c| c.state.status),
            Some(ContactStatus::Active),
            "{address}"
        );
    }
    for d in &deliveries {
        let events = store.delivery_events(&t, d).await.unwrap();
        let kinds: Vec<EventKind> = events.iter().map(|e| e.kind()).collect();
        assert_eq!(kinds, [EventKind::Queued], "{d}");
    }
}

/// Messages accepted together (a group, on PostgreSQL, whose recipients'
/// suppressions and contacts are read ahead in one go) answer as if alone:
/// a hard bounce recorded amid a burst of messages to its address stops
/// every message accepted after its answer, whichever group it joins, and
/// the other recipients of those messages go on.
pub async fn a_hard_bounce_amid_a_burst_of_messages_stops_those_after_it(store: &dyn Store) {
    let t = tenant(store, "acme").await;
    let (gone, fine) = ("gone@example.com", "fine@example.com");
    let first = accept(store, message(&t, &[gone])).await;
    let burst = || {
        futures_util::future::join_all((0..20u32).map(|i| {
            store.accept_message(message(
                &t,
                &[
                    gone,
                    if i.is_multiple_of(2) {
                        fine
                    } else {
                        "other@example.org"
                    },
                ],
            ))
        }))
    };
    let bounced = record(
        store,
        &t,
        &first.deliveries[0].id,
        T0 + 1,
        bounce(BounceType::Hard),
    );
    let (during, _) = tokio::join!(burst(), bounced);
    for outcome in during {
        match outcome {
            Ok(AcceptOutcome::Accepted(r)) => {
                assert!(matches!(statuses(&r)[0], "queued" | "dropped"), "{r:?}");
                assert_eq!(statuses(&r)[1], "queued");
            }
            other => panic!("{other:?}"),
        }
    }
    for outcome in burst().await {
        match outcome {
            Ok(AcceptOutcome::Accepted(r)) => {
                assert_eq!(
                    statuses(&r),
                    ["dropped", "queued"],
                    "accepted after the bounce"
                );
                let events = store
                    .delivery_events(&t, &r.deliveries[0].id)
                    .await
                    .unwrap();
                assert_eq!(events[0].details.to_json()["reason"], "suppressed");
            }
            other => panic!("{other:?}"),
        }
    }
    let contact = store.contact(&t, gone).await.unwrap().unwrap();
    assert_eq!(contact.state.status, ContactStatus::Bounced);
    assert_eq!(store.suppressions(&t, T0 + 2).await.unwrap().len(), 1);
    for address in [fine, "other@example.org"] {
        let contact = store.contact(&t, address).await.unwrap();
        assert_eq!(
            contact.map(|c| c.state.status),
            Some(ContactStatus::Active),
            "{address}"
        );
    }
}

/// Hits arriving together have their facts read together (on PostgreSQL,
/// in one batch): each gets its own delivery's facts, the same as read
/// alone, and an unknown delivery none.
pub async fn tracking_facts_read_together_are_each_deliverys_own(store: &dyn Store) {
    let (t1, t2) = (tenant(store, "acme").await, tenant(store, "globex").await);
    let mut deliveries = Vec::new();
    for i in 0..12u64 {
        let t = if i.is_multiple_of(3) { &t2 } else { &t1 };
        let address = format!("r{i}@example.com");
        let r = accept(store, message(t, &[address.as_str()])).await;
        let d = r.deliveries[0].id.clone();
        store
            .put_message_links(
                &r.id,
                (0..i % 3)
                    .map(|l| format!("https://example.com/{i}/{l}"))
                    .collect(),
            )
            .await
            .unwrap();
        if i.is_multiple_of(2) {
            record(store, t, &d, T0 + 10 + i as Millis, delivered()).await;
        }
        for n in 0..i % 4 {
            record(store, t, &d, T0 + 100 + n as Millis, opened()).await;
        }
        deliveries.push(d);
    }
    deliveries.push(DeliveryId::generate());
    let together =
        futures_util::future::join_all(deliveries.iter().map(|d| store.tracking_facts(d))).await;
    for (d, facts) in deliveries.iter().zip(together) {
        let facts = facts.unwrap();
        assert_eq!(facts, store.tracking_facts(d).await.unwrap(), "{d}");
        let Some(facts) = facts else {
            assert_eq!(
                d,
                deliveries.last().unwrap(),
                "only the unknown one has none"
            );
            continue;
        };
        assert_eq!(&facts.delivery_id, d);
        let i: u64 = facts.recipient[1..facts.recipient.find('@').unwrap()]
            .parse()
            .unwrap();
        assert_eq!(
            facts.tenant_id,
            if i.is_multiple_of(3) {
                t2.clone()
            } else {
                t1.clone()
            }
        );
        assert_eq!(facts.links.len() as u64, i % 3);
        assert_eq!(facts.engagement.len() as u64, i % 4);
        assert!(facts.engagement.iter().all(|e| &e.delivery_id == d));
        assert_eq!(facts.delivered_known, i.is_multiple_of(2));
    }
}
