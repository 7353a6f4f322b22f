//! `copy_sqlite_to_postgres` against a real PostgreSQL server
//! (`POSTHORN_TEST_POSTGRES`, a database per test): a SQLite store filled
//! through the `Store` API with deliveries in every status and every kind
//! of row, copied, then read back through `PgStore` and compared with the
//! SQLite store's answers; a second copy and a wrong URL refused.
//!
//! Plain `#[test]`s with a runtime of their own: the copy and the raw SQL
//! use blocking `postgres::Client`s, which must not run on async threads.

use posthorn_core::clock::DAY;
use posthorn_core::config::StoreConfig;
use posthorn_core::event::{
    BounceOrigin, Bounced, Clicked, Complained, Deferred, Delivered, Engagement, EventDetails,
    Sent, UnsubscribeScope, Unsubscribed,
};
use posthorn_core::id::{ApiKeyId, InboundId, IngestSourceId};
use posthorn_core::inbound::{AttributedBy, InboundKind, OrphanReason, RecordKind};
use posthorn_core::status::BounceType;
use posthorn_core::suppression::SuppressionExpiry;
use posthorn_core::{
    DeliveryId, EventId, EventKind, EventSource, MessageId, Millis, NodeId, TenantId,
};
use posthorn_store::conformance::{T0, delivery_event as event, message};
use posthorn_store::copy::{CopyProgress, copy_sqlite_to_postgres};
use posthorn_store::*;
use posthorn_testkit::postgres::TestDatabase;
use std::path::Path;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Hard bounces expire after a day here, so that one address gets a
/// second entry once the first expired (SQLite keeps both not removed).
fn rules() -> StoreRules {
    StoreRules {
        suppression_expiry: SuppressionExpiry {
            hard_bounce: Some(DAY),
            soft_bounce_limit: None,
        },
        ..StoreRules::default()
    }
}

fn open_sqlite(dir: &Path) -> SqliteStore {
    SqliteStore::open(dir, &StoreConfig::default(), rules()).expect("open SQLite")
}

async fn accepted(store: &dyn Store, m: NewMessage) -> Receipt {
    match store.accept_message(m).await.expect("accept") {
        AcceptOutcome::Accepted(r) => r,
        other => panic!("expected Accepted, got {other:?}"),
    }
}

async fn record(
    store: &dyn Store,
    t: &TenantId,
    d: &DeliveryId,
    at: Millis,
    details: EventDetails,
) {
    let outcome = store.record_event(t, event(d, at, details)).await.unwrap();
    assert!(
        matches!(outcome, RecordOutcome::Recorded { .. }),
        "{outcome:?}"
    );
}

fn bounce(bounce_type: BounceType, origin: BounceOrigin) -> EventDetails {
    EventDetails::Bounced(Bounced {
        bounce_type,
        reason: None,
        smtp_code: Some(550),
        enhanced_code: posthorn_core::EnhancedCode::new(5, 1, 1),
        reply_text: Some("550 5.1.1 user unknown".into()),
        origin,
        rule: None,
        mx_host: None,
    })
}

fn delivered() -> EventDetails {
    EventDetails::Delivered(Delivered {
        reply_text: Some("250 2.0.0 OK".into()),
        ..Default::default()
    })
}

/// What the filled store holds, to ask both stores about.
struct Fixture {
    tenants: Vec<TenantId>,
    messages: Vec<(TenantId, MessageId)>,
    addresses: Vec<String>,
    provider_events: Vec<(TenantId, EventId)>,
    queued: DeliveryId,
}

/// Fills a SQLite store through the `Store` API: deliveries ending in
/// every status, inbound mail (attributed and orphan), repeated hits,
/// links, an ingest source with provider events, contacts, suppressions
/// (one expired and followed by another), a lease, an idempotency key.
async fn fill(store: &dyn Store) -> Fixture {
    let t = store.create_tenant("acme", T0).await.unwrap().id;
    let other = store.create_tenant("other", T0).await.unwrap().id;
    store
        .insert_api_key(NewApiKey {
            id: ApiKeyId::generate(),
            tenant_id: t.clone(),
            name: Some("ops".into()),
            scopes: vec![Scope::Send, Scope::Read],
            secret_hash: "ab".repeat(32),
            created_at: T0,
        })
        .await
        .unwrap();
    store
        .claim_sending_domain(&t, "sender.example", T0)
        .await
        .unwrap();
    store
        .put_contact(&t, "fan@example.com", ContactInput::Active, T0)
        .await
        .unwrap();
    store
        .put_contact(&other, "maybe@example.com", ContactInput::Unconfirmed, T0)
        .await
        .unwrap();

    let to = [
        "queued@example.com",
        "sent@example.com",
        "deferred@example.com",
        "delivered@example.com",
        "hard@example.com",
        "soft@example.com",
        "opened@example.com",
        "clicked@example.com",
        "complained@example.com",
        "unsub@example.com",
        "late@example.com",
    ];
    let mut m = message(&t, &to);
    m.idempotency = Some(IdempotencyRequest {
        key: "order-1".into(),
        body_hash: "cd".repeat(32),
        not_before: 0,
    });
    let r = accepted(store, m).await;
    let d = |i: usize| r.deliveries[i].id.clone();
    store
        .put_message_links(&r.id, vec!["https://example.com/a".into()])
        .await
        .unwrap();
    let at = T0 + 1_000;
    let sent = || {
        EventDetails::Sent(Sent {
            attempt: 1,
            mx_host: Some("mx.example.com".into()),
            ip: None,
        })
    };
    record(store, &t, &d(1), at, sent()).await;
    let deferred = EventDetails::Deferred(Deferred {
        attempt: 1,
        next_retry_at: Some(at + 60_000),
        ..Default::default()
    });
    record(store, &t, &d(2), at, deferred).await;
    record(store, &t, &d(3), at, delivered()).await;
    record(
        store,
        &t,
        &d(4),
        at,
        bounce(BounceType::Hard, BounceOrigin::Sync),
    )
    .await;
    record(
        store,
        &t,
        &d(5),
        at,
        bounce(BounceType::Soft, BounceOrigin::Sync),
    )
    .await;
    for i in 6..=10 {
        record(store, &t, &d(i), at, delivered()).await;
    }
    record(
        store,
        &t,
        &d(6),
        at + 1,
        EventDetails::Opened(Engagement::default()),
    )
    .await;
    let clicked = EventDetails::Clicked(Clicked {
        url: "https://example.com/a".into(),
        link_index: Some(0),
        ip: None,
        user_agent: None,
        machine: Some(false),
        machine_reason: None,
        implied_open: None,
    });
    record(store, &t, &d(7), at + 2, clicked).await;
    record(
        store,
        &t,
        &d(8),
        at + 3,
        EventDetails::Complained(Complained::default()),
    )
    .await;
    let unsubscribed = EventDetails::Unsubscribed(Unsubscribed {
        scope: UnsubscribeScope::All,
        method: Some("link".into()),
    });
    record(store, &t, &d(9), at + 4, unsubscribed).await;
    for (machine, hit_at) in [(false, at + 10), (false, at + 11), (true, at + 12)] {
        let hit = NewRepeatedHit {
            delivery_id: d(6),
            kind: EventKind::Opened,
            link_index: None,
            machine,
            at: hit_at,
        };
        assert!(store.record_repeated_hit(&t, hit).await.unwrap());
    }

    // A bounce that came back by mail, and mail nobody can be named for.
    let mut async_bounce = event(
        &d(10),
        at + 5,
        bounce(BounceType::Hard, BounceOrigin::Async),
    );
    async_bounce.source = EventSource::InboundMx;
    async_bounce.external_id = Some("dsn:1".into());
    let inbound =
        |tenant: Option<&TenantId>, delivery: Option<DeliveryId>, outcome| InboundRecord {
            id: InboundId::generate(),
            received_at: at + 5,
            tenant_id: tenant.cloned(),
            attribution: delivery.as_ref().map(|_| AttributedBy::Verp),
            delivery_id: delivery,
            mail_from: String::new(),
            rcpt_to: vec!["bounces+token@sender.example".into()],
            kind: InboundKind::Report(RecordKind::Bounce),
            outcome,
            orphan_reason: (outcome == InboundOutcome::Orphan).then_some(OrphanReason::NoReference),
            records: serde_json::json!([{"kind": "bounce", "reason": "userunknown"}]),
            size: 0,
            event_ids: Vec::new(),
        };
    store
        .record_inbound(NewInbound {
            record: inbound(Some(&t), Some(d(10)), InboundOutcome::Recorded),
            raw: b"From: MAILER-DAEMON\r\n\r\nreport \xff bytes".to_vec(),
            events: vec![async_bounce],
        })
        .await
        .unwrap();
    store
        .record_inbound(NewInbound {
            record: inbound(None, None, InboundOutcome::Orphan),
            raw: b"From: someone\r\n\r\n?".to_vec(),
            events: Vec::new(),
        })
        .await
        .unwrap();

    // Scheduled for later; dropped (suppressed).
    let mut later = message(&t, &["later@example.com"]);
    later.send_at = Some(T0 + 7 * DAY);
    let scheduled = accepted(store, later).await;
    let dropped = accepted(store, message(&t, &["hard@example.com"])).await;
    assert_eq!(dropped.deliveries[0].status, "dropped");

    // The hard bounce of `again` expires after a day; bounced again two
    // days later, it has two entries not removed in SQLite.
    let first = accepted(store, message(&other, &["again@example.com"])).await;
    let bounced = bounce(BounceType::Hard, BounceOrigin::Sync);
    record(
        store,
        &other,
        &first.deliveries[0].id,
        T0 + 1,
        bounced.clone(),
    )
    .await;
    let mut m = message(&other, &["again@example.com"]);
    m.accepted_at = T0 + 2 * DAY;
    let second = accepted(store, m).await;
    assert_eq!(second.deliveries[0].status, "queued", "the entry expired");
    record(
        store,
        &other,
        &second.deliveries[0].id,
        T0 + 2 * DAY + 1,
        bounced,
    )
    .await;

    // Provider ingest: a source, a replay token, two events.
    let source = store
        .create_ingest_source(IngestSource {
            id: IngestSourceId::generate(),
            tenant_id: t.clone(),
            name: Some("mailgun main".into()),
            token_hash: "h".into(),
            verification: SourceVerification::Mailgun {
                signing_key: "key-1".into(),
            },
            created_at: T0,
            pending_confirmation: None,
        })
        .await
        .unwrap();
    let provider_event = |to: &str, key: &str, details| ProviderEvent {
        provider_message_id: "pm-1".into(),
        recipient: to.into(),
        sender: Some("news@sender.example".into()),
        keys: vec![key.into()],
        id: EventId::generate(),
        occurred_at: T0 + 5,
        details,
        raw: format!("{{\"key\":\"{key}\"}}").into_bytes(),
    };
    let events = vec![
        provider_event("p1@example.com", "id:1", delivered()),
        provider_event(
            "p2@example.com",
            "id:2",
            bounce(BounceType::Hard, BounceOrigin::Async),
        ),
    ];
    let provider_events = events.iter().map(|e| (t.clone(), e.id.clone())).collect();
    let outcome = store
        .record_provider_events(ProviderBatch {
            tenant: t.clone(),
            source: source.id.clone(),
            provider: posthorn_core::provider::Provider::Mailgun,
            token: Some(("tok-1".into(), T0 + DAY)),
            events,
            stream: "default".into(),
            now: T0 + 10,
        })
        .await
        .unwrap();
    let ProviderOutcome::Recorded(outcomes) = outcome else {
        panic!("{outcome:?}")
    };

    // The first delivery is leased to a node of the old server.
    let claimed = store
        .claim_due(&NodeId::parse("old-node").unwrap(), T0, 1, T0 + DAY)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);

    let mut messages = vec![
        (t.clone(), r.id.clone()),
        (t.clone(), scheduled.id),
        (t.clone(), dropped.id),
        (other.clone(), first.id),
        (other.clone(), second.id),
        (t.clone(), outcomes[0].message_id.clone()),
    ];
    messages.dedup();
    let mut addresses: Vec<String> = to.iter().map(|a| a.to_string()).collect();
    addresses
        .extend(["fan@example.com", "maybe@example.com", "again@example.com"].map(String::from));
    addresses.extend(["later@example.com", "p1@example.com", "p2@example.com"].map(String::from));
    Fixture {
        tenants: vec![t, other],
        messages,
        addresses,
        provider_events,
        queued: claimed[0].delivery.id.clone(),
    }
}

/// An event as both stores answer it, less its position (renumbered).
fn unnumbered(events: Vec<EventRecord>) -> Vec<EventRecord> {
    events
        .into_iter()
        .map(|e| EventRecord { seq: 0, ..e })
        .collect()
}

fn every_event() -> posthorn_core::search::Filters {
    posthorn_core::search::Filters::default()
}

/// Every event a store lists newest first, in one page.
const EVERY: u32 = 10_000;

/// Everything `fixture` names, asked of `a` and `b` through the trait,
/// must be answered the same.
async fn assert_same_answers(a: &dyn Store, b: &dyn Store, fixture: &Fixture) {
    let now = T0 + 3 * DAY;
    assert_eq!(
        a.tenant_count().await.unwrap(),
        b.tenant_count().await.unwrap()
    );
    assert_eq!(
        a.operator_tenant().await.unwrap(),
        b.operator_tenant().await.unwrap()
    );
    let keys = |k: Vec<ApiKeyRecord>| k.into_iter().map(|k| format!("{k:?}")).collect::<Vec<_>>();
    assert_eq!(
        keys(a.api_keys(None).await.unwrap()),
        keys(b.api_keys(None).await.unwrap())
    );
    assert_eq!(
        a.sending_domains(None).await.unwrap(),
        b.sending_domains(None).await.unwrap()
    );
    let mut deliveries = 0;
    for t in &fixture.tenants {
        assert_eq!(a.tenant(t).await.unwrap(), b.tenant(t).await.unwrap());
        assert_eq!(
            a.suppressions(t, now).await.unwrap(),
            b.suppressions(t, now).await.unwrap()
        );
        assert_eq!(a.queue_len(t).await.unwrap(), b.queue_len(t).await.unwrap());
        assert_eq!(
            posthorn_store::conformance::all_stats(a, t).await,
            posthorn_store::conformance::all_stats(b, t).await,
            "the statistics' counts"
        );
        assert_eq!(
            unnumbered(
                a.search_events(t, &every_event(), None, EVERY)
                    .await
                    .unwrap()
            ),
            unnumbered(
                b.search_events(t, &every_event(), None, EVERY)
                    .await
                    .unwrap()
            )
        );
        assert_eq!(
            a.ingest_sources(t).await.unwrap(),
            b.ingest_sources(t).await.unwrap()
        );
        let inbound = InboundFilter {
            limit: 100,
            ..Default::default()
        };
        let kept = a.inbound_messages(Some(t), &inbound).await.unwrap();
        assert_eq!(kept, b.inbound_messages(Some(t), &inbound).await.unwrap());
        for record in &kept {
            assert_eq!(
                a.inbound_raw(Some(t), &record.id).await.unwrap(),
                b.inbound_raw(Some(t), &record.id).await.unwrap()
            );
            for e in &record.event_ids {
                assert_eq!(
                    b.event_inbound(t, e).await.unwrap(),
                    Some(record.id.clone())
                );
            }
        }
        for address in &fixture.addresses {
            assert_eq!(
                a.contact(t, address).await.unwrap(),
                b.contact(t, address).await.unwrap(),
                "contact {address}"
            );
            assert_eq!(
                a.contact_changes(t, address).await.unwrap(),
                b.contact_changes(t, address).await.unwrap(),
                "changes of {address}"
            );
        }
    }
    let orphans = InboundFilter {
        limit: 100,
        ..Default::default()
    };
    let kept = a.inbound_messages(None, &orphans).await.unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept, b.inbound_messages(None, &orphans).await.unwrap());
    assert_eq!(
        a.inbound_raw(None, &kept[0].id).await.unwrap(),
        b.inbound_raw(None, &kept[0].id).await.unwrap()
    );
    for (t, m) in &fixture.messages {
        assert_eq!(
            a.message(t, m).await.unwrap(),
            b.message(t, m).await.unwrap()
        );
        let of_a = a.deliveries_of_message(t, m).await.unwrap();
        assert_eq!(of_a, b.deliveries_of_message(t, m).await.unwrap());
        assert_eq!(
            a.message_repeated_hits(t, m).await.unwrap(),
            b.message_repeated_hits(t, m).await.unwrap()
        );
        for d in &of_a {
            deliveries += 1;
            assert_eq!(
                a.delivery(t, &d.id).await.unwrap(),
                b.delivery(t, &d.id).await.unwrap()
            );
            // The same events in the same order.
            assert_eq!(
                unnumbered(a.delivery_events(t, &d.id).await.unwrap()),
                unnumbered(b.delivery_events(t, &d.id).await.unwrap()),
                "events of {}",
                d.recipient
            );
            let facts = |f: Option<TrackingFacts>| {
                f.map(|f| TrackingFacts {
                    engagement: unnumbered(f.engagement),
                    ..f
                })
            };
            assert_eq!(
                facts(a.tracking_facts(&d.id).await.unwrap()),
                facts(b.tracking_facts(&d.id).await.unwrap())
            );
        }
    }
    assert_eq!(deliveries, 17);
    for (t, e) in &fixture.provider_events {
        let payload = a.provider_payload(t, e).await.unwrap();
        assert!(payload.is_some());
        assert_eq!(payload, b.provider_payload(t, e).await.unwrap());
    }
}

/// `events_after` asked again until it gives `count` events (or for a few
/// seconds, then what it gives): PostgreSQL returns a committed event once
/// every transaction that may hold a lower position has ended, a moment
/// later when other tests write on the same server.
async fn events_after_settled(
    store: &dyn Store,
    tenant: &TenantId,
    after: i64,
    count: usize,
) -> Vec<EventRecord> {
    let mut events = Vec::new();
    for _ in 0..500 {
        events = store
            .events_after(tenant, after, &every_event(), EVERY)
            .await
            .unwrap();
        if events.len() >= count {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    events
}

/// Rows of every copied table, by raw SQL.
/// A SQLite store in a new temporary directory, filled by [`fill`] and
/// closed (as an operator stops the server before copying).
fn filled_sqlite(rt: &tokio::runtime::Runtime) -> (tempfile::TempDir, Fixture) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_sqlite(dir.path());
    let fixture = rt.block_on(fill(&store));
    drop(store);
    (dir, fixture)
}

fn tenant_rows(c: &mut ::postgres::Client) -> i64 {
    c.query_one("SELECT COUNT(*) FROM tenants", &[])
        .unwrap()
        .get(0)
}

fn row_counts(c: &mut ::postgres::Client) -> Vec<(String, i64)> {
    let tables = [
        "tenants",
        "api_keys",
        "messages",
        "deliveries",
        "events",
        "event_keys",
        "contacts",
        "contact_changes",
        "suppressions",
        "send_queue",
        "inbound_messages",
        "repeated_hits",
        "provider_payloads",
    ];
    tables
        .iter()
        .map(|t| {
            let n: i64 = c
                .query_one(&format!("SELECT COUNT(*) FROM {t}"), &[])
                .unwrap()
                .get(0);
            (t.to_string(), n)
        })
        .collect()
}

#[test]
fn a_store_with_every_status_copies_and_reads_back_the_same() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let rt = runtime();
    let (dir, fixture) = filled_sqlite(&rt);
    // The source is closed, as an operator stops the server first.

    // The data directory's DKIM keys, as the caller read them from their
    // files (the server's `dkim::key_files`), go in the same transaction.
    let keys = [
        dkim_key("sender.example", "posthorn"),
        dkim_key("sender.example", "s2027"),
    ];
    let mut seen: Vec<CopyProgress> = Vec::new();
    let report =
        copy_sqlite_to_postgres(dir.path(), db.url(), &keys, &mut |p| seen.push(p)).expect("copy");
    assert_eq!(report.rows("deliveries"), Some(17));
    assert_eq!(report.rows("dkim_keys"), Some(2));
    assert_eq!(report.rows("tenants"), Some(2));
    let events = report.rows("events").unwrap();
    assert!(events > 20, "{report:?}");
    // Every table reported once done, with its total.
    let done: Vec<&CopyProgress> = seen.iter().filter(|p| p.copied == p.total).collect();
    assert!(
        done.iter()
            .any(|p| p.table == "events" && p.total == events)
    );
    assert!(
        done.iter()
            .any(|p| p.table == "provider_payloads" && p.total == 2)
    );

    let source = open_sqlite(dir.path());
    let target = PgStore::connect(db.url(), &StoreConfig::default(), StoreRules::default())
        .expect("connect");
    rt.block_on(assert_same_answers(&source, &target, &fixture));
    assert_eq!(target.dkim_keys().unwrap(), keys, "the keys, as they were");
    // One key per event id, one per external id (the DSN's, the
    // provider events').
    let mut external = 0;
    for t in &fixture.tenants {
        let all = rt
            .block_on(source.search_events(t, &every_event(), None, EVERY))
            .unwrap();
        external += all.iter().filter(|e| e.external_id.is_some()).count() as u64;
    }
    assert!(external >= 2);
    assert_eq!(report.rows("event_keys"), Some(events + external));

    // `again`'s first entry expired and was followed by another: copied
    // as removed when the second was added, the second active.
    let mut c = db.client();
    let removed: Vec<(Option<i64>, i64)> = c
        .query(
            "SELECT removed_at, created_at FROM suppressions WHERE target = 'again@example.com' \
             ORDER BY created_at",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(removed.len(), 2);
    assert_eq!(removed[0].0, Some(removed[1].1));
    assert_eq!(removed[1].0, None);

    // The feed gives every event once, in the original order, positions
    // rising.
    for t in &fixture.tenants {
        let (a, b) = rt.block_on(async {
            let a = source
                .events_after(t, 0, &every_event(), EVERY)
                .await
                .unwrap();
            let b = events_after_settled(&target, t, 0, a.len()).await;
            (a, b)
        });
        assert!(!a.is_empty());
        let ids = |e: &[EventRecord]| e.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&a), ids(&b));
        assert!(b.windows(2).all(|w| w[0].seq < w[1].seq));
    }

    // The old server's lease is gone: a new node claims the delivery now.
    let claimed = rt
        .block_on(target.claim_due(&NodeId::parse("new-node").unwrap(), T0 + 1, 100, T0 + DAY))
        .unwrap();
    assert!(claimed.iter().any(|c| c.delivery.id == fixture.queued));

    // Serving on, events recorded now come after every copied one.
    let t = &fixture.tenants[0];
    let copied = rt
        .block_on(source.events_after(t, 0, &every_event(), EVERY))
        .unwrap()
        .len();
    let last = rt
        .block_on(events_after_settled(&target, t, 0, copied))
        .last()
        .unwrap()
        .seq;
    rt.block_on(record(&target, t, &fixture.queued, T0 + 5, delivered()));
    let after = rt.block_on(events_after_settled(&target, t, last, 1));
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].delivery_id, fixture.queued);
}

#[test]
fn a_second_copy_into_a_target_that_is_not_empty_is_refused_and_changes_nothing() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let rt = runtime();
    let (dir, _) = filled_sqlite(&rt);
    copy_sqlite_to_postgres(dir.path(), db.url(), &[], &mut |_| {}).expect("first copy");
    let mut c = db.client();
    let before = row_counts(&mut c);

    let mut seen = Vec::new();
    let e = copy_sqlite_to_postgres(dir.path(), db.url(), &[], &mut |p| seen.push(p)).unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
    let message = e.to_string();
    assert!(message.contains("not empty"), "{message}");
    assert!(message.contains("tenants"), "{message}");
    assert!(message.contains("nothing was changed"), "{message}");
    assert!(seen.is_empty(), "nothing was copied: {seen:?}");
    assert_eq!(row_counts(&mut c), before);

    // A target with one row of any table is not empty either.
    let other = TestDatabase::create().unwrap();
    drop(PgStore::connect(other.url(), &StoreConfig::default(), StoreRules::default()).unwrap());
    let mut c = other.client();
    c.batch_execute(
        "INSERT INTO ingest_tokens (source_id, token, expires_at) VALUES ('s', 't', 1)",
    )
    .unwrap();
    let e = copy_sqlite_to_postgres(dir.path(), other.url(), &[], &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("ingest_tokens"), "{e}");
    assert_eq!(tenant_rows(&mut c), 0);

    // A DKIM key (a node started on it imported its key files) is a row.
    c.batch_execute("DELETE FROM ingest_tokens").unwrap();
    let target =
        PgStore::connect(other.url(), &StoreConfig::default(), StoreRules::default()).unwrap();
    target
        .insert_dkim_key(&dkim_key("sender.example", "posthorn"))
        .unwrap();
    let e = copy_sqlite_to_postgres(dir.path(), other.url(), &[], &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("dkim_keys"), "{e}");
    assert_eq!(tenant_rows(&mut c), 0);
}

/// Two keys for one domain and selector (two files whose names differ in
/// case only) stop the copy, and nothing is copied.
#[test]
fn two_dkim_keys_for_one_domain_and_selector_stop_the_copy() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let rt = runtime();
    let (dir, _) = filled_sqlite(&rt);
    let keys = [
        dkim_key("sender.example", "posthorn"),
        dkim_key("sender.example", "posthorn"),
    ];
    let e = copy_sqlite_to_postgres(dir.path(), db.url(), &keys, &mut |_| {}).unwrap_err();
    assert!(
        e.to_string().contains("two DKIM keys for sender.example"),
        "{e}"
    );
    let mut c = db.client();
    for table in ["tenants", "dkim_keys"] {
        let rows: i64 = c
            .query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])
            .unwrap()
            .get(0);
        assert_eq!(rows, 0, "{table}: the copy was rolled back");
    }
}

fn dkim_key(domain: &str, selector: &str) -> DkimKeyRecord {
    DkimKeyRecord {
        domain: domain.into(),
        selector: selector.into(),
        private_key_pem: format!(
            "-----BEGIN PRIVATE KEY-----\n{selector}\n-----END PRIVATE KEY-----\n"
        ),
        created_at: T0,
    }
}

#[test]
fn a_target_that_is_not_postgres_and_a_directory_without_a_store_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = copy_sqlite_to_postgres(dir.path(), "postgres://127.0.0.1:1/x", &[], &mut |_| {})
        .unwrap_err();
    assert!(e.to_string().contains("no Posthorn store"), "{e}");
    assert!(
        !dir.path()
            .join(posthorn_store::sqlite::DATABASE_FILE)
            .exists(),
        "nothing is created"
    );
    {
        let _store = open_sqlite(dir.path());
    }
    for url in [
        "mysql://root@127.0.0.1/posthorn",
        "/var/lib/posthorn",
        "sqlite://x.db",
    ] {
        let e = copy_sqlite_to_postgres(dir.path(), url, &[], &mut |_| {}).unwrap_err();
        assert!(e.to_string().contains("postgres://"), "{url}: {e}");
    }
}
