//! The PostgreSQL backend against a real server (`POSTHORN_TEST_POSTGRES`;
//! each test in a database of its own, dropped at its end): connecting and
//! migrating (once, however many nodes start together), refusals, the
//! event positions' bound, the schema's unique guards and partitions,
//! reads, including values they cannot read, and the DKIM keys kept for
//! every node.
//!
//! Tests are plain `#[test]`s with a runtime of their own for the store's
//! async reads: the raw SQL they run beside it uses blocking
//! `postgres::Client`s, which must not run on an async worker thread.

use posthorn_core::config::StoreConfig;
use posthorn_core::{DeliveryId, EventId, MessageId, TenantId};
use posthorn_store::postgres::{current_xid, event_position};
use posthorn_store::{
    DkimKeyRecord, InboundFilter, PgStore, Store, StoreError, StoreRules, Unavailable,
};
use posthorn_testkit::postgres::TestDatabase;
use std::time::Duration;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn connect(db: &TestDatabase) -> PgStore {
    PgStore::connect(db.url(), &StoreConfig::default(), StoreRules::default())
        .expect("connect to the test database")
}

/// A tenant `t1` with message `m1` and its delivery `d1`, by raw SQL.
fn seed(c: &mut postgres::Client) {
    c.batch_execute(
        "INSERT INTO tenants (id, name, created_at) VALUES ('t1', 'acme', 1);
         INSERT INTO messages (id, tenant_id, from_header, from_address, subject, headers, tags, metadata,
                               stream, test, size, source, created_at)
         VALUES ('m1', 't1', 's@example.com', 's@example.com', 'hi', '{}', '[]', '{}',
                 'default', false, 12, 'api', 1);
         INSERT INTO deliveries (id, tenant_id, message_id, recipient, recipient_kind, sender, stream,
                                 test, created_at, window_ends_at, updated_at, delivery_status)
         VALUES ('d1', 't1', 'm1', 'a@example.com', 'to', 's@example.com', 'default',
                 false, 1, 2, 1, 'queued');",
    )
    .expect("seed");
}

/// Inserts a `queued` event of `d1` as the writer will: numbered from the
/// client's current transaction id. Returns its position.
fn insert_event(c: &mut postgres::Client, id: &str, n: u32) -> i64 {
    let xid = current_xid(c).expect("transaction id");
    let seq = event_position(xid, n).expect("position");
    c.execute(
        "INSERT INTO events (seq, id, tenant_id, delivery_id, message_id, recipient, sender, kind,
                             occurred_at, recorded_at, source, details, outside_window)
         VALUES ($1, $2, 't1', 'd1', 'm1', 'a@example.com', 's@example.com', 'queued',
                 1000, (extract(epoch FROM now()) * 1000)::bigint, 'api', '{\"size\": 12}', false)",
        &[&seq, &id],
    )
    .expect("insert event");
    seq
}

fn t1() -> TenantId {
    TenantId::from_stored("t1".into())
}

fn all() -> posthorn_core::search::Filters {
    posthorn_core::search::Filters::default()
}

fn count(c: &mut postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).expect(sql).get(0)
}

#[test]
fn migrations_apply_on_an_empty_database_and_a_second_connect_applies_nothing() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let store = connect(&db);
    assert_eq!(store.applied_migrations(), &[1, 2, 3, 4]);
    let mut c = db.client();
    for table in [
        "tenants",
        "api_keys",
        "messages",
        "deliveries",
        "events",
        "events_default",
        "event_keys",
        "contacts",
        "contact_changes",
        "suppressions",
        "send_queue",
        "idempotency_keys",
        "inbound_messages",
        "inbound_events",
        "message_links",
        "sending_domains",
        "repeated_hits",
        "ingest_sources",
        "ingest_tokens",
        "provider_deliveries",
        "provider_event_keys",
        "provider_payloads",
        "dkim_keys",
        "dkim_keys_version",
        "delivery_stats",
        "delivery_stats_domains",
    ] {
        let found: Option<String> = c
            .query_one("SELECT to_regclass($1)::text", &[&table])
            .unwrap()
            .get(0);
        assert_eq!(found.as_deref(), Some(table));
    }
    // This month's and the next month's partitions, besides the default.
    assert_eq!(
        count(
            &mut c,
            "SELECT COUNT(*) FROM pg_inherits WHERE inhparent = 'events'::regclass"
        ),
        3
    );
    drop(store);

    let again = connect(&db);
    assert_eq!(again.applied_migrations(), &[] as &[i64]);
    assert_eq!(count(&mut c, "SELECT COUNT(*) FROM schema_migrations"), 4);
    assert_eq!(
        count(
            &mut c,
            "SELECT COUNT(*) FROM pg_inherits WHERE inhparent = 'events'::regclass"
        ),
        3,
        "no partition made twice"
    );
}

#[test]
fn three_nodes_connecting_at_once_to_an_empty_database_apply_the_schema_once() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let start = std::sync::Barrier::new(3);
    let applied: Vec<Vec<i64>> = std::thread::scope(|s| {
        let nodes: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    connect(&db).applied_migrations().to_vec()
                })
            })
            .collect();
        nodes.into_iter().map(|n| n.join().unwrap()).collect()
    });
    assert_eq!(
        applied
            .iter()
            .filter(|a| a.as_slice() == [1, 2, 3, 4])
            .count(),
        1,
        "{applied:?}"
    );
    assert_eq!(applied.iter().filter(|a| a.is_empty()).count(), 2);
    let mut c = db.client();
    assert_eq!(count(&mut c, "SELECT COUNT(*) FROM schema_migrations"), 4);
}

#[test]
fn a_store_url_that_is_not_postgres_is_refused() {
    for url in [
        "mysql://posthorn:hunter2@db/posthorn",
        "sqlite:///var/lib/posthorn",
        "host=db user=posthorn password=hunter2",
    ] {
        let e = PgStore::connect(url, &StoreConfig::default(), StoreRules::default())
            .expect_err(url)
            .to_string();
        assert!(e.contains("postgres://"), "{url}: {e}");
        assert!(!e.contains("hunter2"), "{url}: {e}");
    }
}

#[test]
fn an_unreachable_database_is_named_without_its_password() {
    let port = posthorn_testkit::free_port();
    let url = format!("postgres://alice:hunter2@127.0.0.1:{port}/mail?connect_timeout=5");
    let e = PgStore::connect(&url, &StoreConfig::default(), StoreRules::default())
        .expect_err("nothing listens there");
    assert!(
        matches!(
            e,
            StoreError::Unavailable {
                cause: Unavailable::Unreachable,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.is_transient());
    let text = e.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}/mail")), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!format!("{e:?}").contains("hunter2"), "{e:?}");
}

/// The heart of the gap-safe feed: rows of a transaction still open are
/// not returned, and neither is anything at or above its position (a
/// later transaction that committed first), until it commits; then both
/// come, in position order, and nothing is seen twice.
#[test]
fn events_after_stops_below_an_open_transaction_until_it_commits() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let rt = runtime();
    let store = connect(&db);
    let (mut a, mut b, mut c) = (db.client(), db.client(), db.client());
    seed(&mut a);

    // A commits first.
    a.batch_execute("BEGIN").unwrap();
    let e1 = insert_event(&mut a, "e1", 0);
    a.batch_execute("COMMIT").unwrap();
    // B takes its transaction id and writes, and stays open.
    b.batch_execute("BEGIN").unwrap();
    let b1 = insert_event(&mut b, "b1", 0);
    let b2 = insert_event(&mut b, "b2", 1);
    // C starts after B (a higher id) and commits before it.
    c.batch_execute("BEGIN").unwrap();
    let c1 = insert_event(&mut c, "c1", 0);
    c.batch_execute("COMMIT").unwrap();
    assert!(e1 < b1 && b1 < b2 && b2 < c1, "{e1} {b1} {b2} {c1}");

    let read = |after: i64| -> Vec<(String, i64)> {
        rt.block_on(store.events_after(&t1(), after, &all(), 100))
            .unwrap()
            .into_iter()
            .map(|e| (e.id.to_string(), e.seq))
            .collect()
    };
    // Other tests' short transactions on the same server may hold the
    // bound back for a moment: wait for A's event, never for more.
    let first = posthorn_testkit::eventually(Duration::from_secs(10), || {
        let got = read(0);
        (!got.is_empty()).then_some(got)
    });
    assert_eq!(first, vec![("e1".to_owned(), e1)]);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        read(e1),
        vec![],
        "B is open: nothing at or above its position"
    );

    b.batch_execute("COMMIT").unwrap();
    let rest = posthorn_testkit::eventually(Duration::from_secs(10), || {
        let got = read(e1);
        (got.len() == 3).then_some(got)
    });
    assert_eq!(
        rest,
        vec![
            ("b1".to_owned(), b1),
            ("b2".to_owned(), b2),
            ("c1".to_owned(), c1)
        ]
    );
    assert_eq!(read(c1), vec![]);
    // The other reads see committed rows at once, whatever the bound.
    let newest = rt
        .block_on(store.search_events(&t1(), &all(), None, 100))
        .unwrap();
    assert_eq!(newest.len(), 4);
}

/// A rolled-back transaction's positions leave no gap that blocks the
/// feed: the bound passes it once it has ended.
#[test]
fn a_rolled_back_transaction_does_not_hold_the_feed() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let rt = runtime();
    let store = connect(&db);
    let (mut a, mut b) = (db.client(), db.client());
    seed(&mut a);
    b.batch_execute("BEGIN").unwrap();
    insert_event(&mut b, "lost", 0);
    a.batch_execute("BEGIN").unwrap();
    let kept = insert_event(&mut a, "kept", 0);
    a.batch_execute("COMMIT").unwrap();
    b.batch_execute("ROLLBACK").unwrap();
    let got = posthorn_testkit::eventually(Duration::from_secs(10), || {
        let got = rt
            .block_on(store.events_after(&t1(), 0, &all(), 100))
            .unwrap();
        (!got.is_empty()).then_some(got)
    });
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].id.as_str(), got[0].seq), ("kept", kept));
}

#[test]
fn reads_on_an_empty_database_answer_nothing() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let rt = runtime();
    let store = connect(&db);
    let t = TenantId::from_stored("nobody".into());
    let d = DeliveryId::from_stored("no-delivery".into());
    let m = MessageId::from_stored("no-message".into());
    let e = EventId::from_stored("no-event".into());
    rt.block_on(async {
        assert_eq!(store.tenant_count().await.unwrap(), 0);
        assert!(store.tenant_by_name("acme").await.unwrap().is_none());
        assert!(store.tenant(&t).await.unwrap().is_none());
        assert!(store.operator_tenant().await.unwrap().is_none());
        assert!(
            store
                .api_key(&posthorn_core::id::ApiKeyId::from_stored("k".into()))
                .await
                .unwrap()
                .is_none()
        );
        assert!(store.api_keys(None).await.unwrap().is_empty());
        assert!(store.api_keys(Some(&t)).await.unwrap().is_empty());
        assert!(store.sending_domains(None).await.unwrap().is_empty());
        assert!(store.sending_domains(Some(&t)).await.unwrap().is_empty());
        assert!(
            store
                .domain_owners(&["mail.example.com"])
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .search_events(&t, &all(), None, 100)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .events_after(&t, 0, &all(), 100)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(store.event(&t, &e).await.unwrap().is_none());
        assert!(store.message(&t, &m).await.unwrap().is_none());
        assert!(
            store
                .deliveries_of_message(&t, &m)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(store.delivery(&t, &d).await.unwrap().is_none());
        assert!(store.delivery_events(&t, &d).await.unwrap().is_empty());
        assert!(
            store
                .delivery_events_page(&t, &d, None, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .delivery_engagement_events(&t, &d)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .message_engagement_events(&t, &m)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(store.contact(&t, "a@example.com").await.unwrap().is_none());
        assert!(
            store
                .contact_changes(&t, "a@example.com")
                .await
                .unwrap()
                .is_empty()
        );
        assert!(store.suppressions(&t, 0).await.unwrap().is_empty());
        assert_eq!(store.queue_len(&t).await.unwrap(), 0);
        assert!(store.delivery_owner(&d).await.unwrap().is_none());
        let inbound = InboundFilter {
            limit: 10,
            ..Default::default()
        };
        assert!(
            store
                .inbound_messages(Some(&t), &inbound)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .inbound_messages(None, &inbound)
                .await
                .unwrap()
                .is_empty()
        );
        let i = posthorn_core::id::InboundId::from_stored("i".into());
        assert!(store.inbound_raw(Some(&t), &i).await.unwrap().is_none());
        assert!(store.inbound_raw(None, &i).await.unwrap().is_none());
        assert!(store.event_inbound(&t, &e).await.unwrap().is_none());
        assert!(store.tracking_facts(&d).await.unwrap().is_none());
        assert!(
            store
                .delivery_repeated_hits(&t, &d)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .message_repeated_hits(&t, &m)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(store.ingest_sources(&t).await.unwrap().is_empty());
        assert!(store.ingest_source_by_token("h").await.unwrap().is_none());
        assert!(store.provider_payload(&t, &e).await.unwrap().is_none());
    });
}

/// Rows written by raw SQL read back as records, scoped by tenant.
#[test]
fn stored_rows_read_back_and_only_for_their_tenant() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let rt = runtime();
    let store = connect(&db);
    let mut c = db.client();
    seed(&mut c);
    c.batch_execute(
        "INSERT INTO tenants (id, name, created_at) VALUES ('t2', 'other', 2);
         UPDATE messages SET to_header = '[{\"name\": \"A\", \"address\": \"a@example.com\"}]',
                             tags = '[\"news\"]', raw_mime = '\\x0102';
         INSERT INTO contacts VALUES ('t1', 'a@example.com', 'active', '[\"news\"]', 2, 3, 1, 2);
         INSERT INTO suppressions (id, tenant_id, target, stream, reason, created_at)
         VALUES ('s1', 't1', 'b@example.com', NULL, 'hard_bounce', 5);
         INSERT INTO sending_domains VALUES ('example.com', 't1', 1);
         INSERT INTO send_queue VALUES ('d1', 't1', 1, 0, NULL, NULL, 1);",
    )
    .unwrap();
    c.batch_execute("BEGIN").unwrap();
    insert_event(&mut c, "e1", 0);
    c.batch_execute("COMMIT").unwrap();
    let t2 = TenantId::from_stored("t2".into());
    let d1 = DeliveryId::from_stored("d1".into());
    let m1 = MessageId::from_stored("m1".into());
    rt.block_on(async {
        let delivery = store.delivery(&t1(), &d1).await.unwrap().unwrap();
        assert_eq!(delivery.status(), "queued");
        assert!(store.delivery(&t2, &d1).await.unwrap().is_none());
        let message = store.message(&t1(), &m1).await.unwrap().unwrap();
        assert_eq!(message.content.to[0].address.to_string(), "a@example.com");
        assert_eq!(message.content.tags, vec!["news".to_owned()]);
        assert_eq!(message.content.raw_mime, Some(vec![1, 2]));
        assert!(store.message(&t2, &m1).await.unwrap().is_none());
        let contact = store
            .contact(&t1(), "a@example.com")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(contact.state.consecutive_failed_attempts, 3);
        assert!(store.contact(&t2, "a@example.com").await.unwrap().is_none());
        let events = store.delivery_events(&t1(), &d1).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind(), posthorn_core::EventKind::Queued);
        assert!(store.delivery_events(&t2, &d1).await.unwrap().is_empty());
        assert_eq!(
            store
                .event(&t1(), &EventId::from_stored("e1".into()))
                .await
                .unwrap()
                .map(|e| e.seq),
            Some(events[0].seq)
        );
        assert_eq!(store.suppressions(&t1(), 10).await.unwrap().len(), 1);
        assert!(store.suppressions(&t2, 10).await.unwrap().is_empty());
        assert_eq!(store.queue_len(&t1()).await.unwrap(), 1);
        assert_eq!(store.queue_len(&t2).await.unwrap(), 0);
        let owners = store.domain_owners(&["mail.example.com"]).await.unwrap();
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].domain, "example.com");
        assert_eq!(store.operator_tenant().await.unwrap(), Some(t1()));
        let facts = store.tracking_facts(&d1).await.unwrap().unwrap();
        assert_eq!(facts.tenant_id, t1());
        assert_eq!(facts.delivered_at, None);
        let filter = posthorn_store::conformance::search(
            "recipient=a@example.com",
            posthorn_core::search::Surface::Events,
        );
        assert_eq!(
            store
                .search_events(&t1(), &filter, None, 10)
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(
            store
                .search_events(&t2, &filter, None, 10)
                .await
                .unwrap()
                .is_empty()
        );
    });
}

/// Nothing stored makes a reader panic: a value this version cannot read
/// fails the read naming its table and column.
#[test]
fn unreadable_stored_values_fail_the_read_and_name_it() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let rt = runtime();
    let store = connect(&db);
    let mut c = db.client();
    seed(&mut c);
    c.batch_execute("BEGIN").unwrap();
    insert_event(&mut c, "e1", 0);
    c.batch_execute("COMMIT").unwrap();
    c.batch_execute(
        "INSERT INTO contacts VALUES ('t1', 'a@example.com', 'bounced-forever', '[]', 0, 0, 1, 1);
         UPDATE deliveries SET delivery_status = 'lost-in-space';
         UPDATE events SET details = '{\"size\": \"big\"}';
         UPDATE messages SET tags = '{\"not\": \"a list\"}';",
    )
    .unwrap();
    let d1 = DeliveryId::from_stored("d1".into());
    let m1 = MessageId::from_stored("m1".into());
    let corrupt = |e: StoreError| match e {
        StoreError::Corrupt {
            table,
            column,
            value,
        } => (table, column, value),
        other => panic!("{other:?}"),
    };
    rt.block_on(async {
        let e = store
            .contact(&t1(), "a@example.com")
            .await
            .expect_err("an unknown status is not read as another");
        assert!(!e.is_transient());
        assert_eq!(
            corrupt(e),
            ("contacts", "status", "bounced-forever".to_owned())
        );
        let e = store.delivery(&t1(), &d1).await.unwrap_err();
        assert_eq!(
            corrupt(e),
            ("deliveries", "delivery_status", "lost-in-space".to_owned())
        );
        let e = store.delivery_events(&t1(), &d1).await.unwrap_err();
        assert_eq!(
            corrupt(e),
            // As JSON, compact (jsonb keeps no spacing).
            ("events", "details", "{\"size\":\"big\"}".to_owned())
        );
        let e = store.message(&t1(), &m1).await.unwrap_err();
        assert_eq!(corrupt(e).0, "messages");
    });
    c.batch_execute("UPDATE contacts SET status = 'active', consecutive_failed_deliveries = -1")
        .unwrap();
    let e = rt
        .block_on(store.contact(&t1(), "a@example.com"))
        .unwrap_err();
    assert_eq!(
        corrupt(e),
        ("contacts", "consecutive_failed_deliveries", "-1".to_owned())
    );
}

/// The unique guards that replace SQLite's checks: one active suppression
/// per tenant, target and scope; one delivery per campaign and recipient
/// that is not dropped, among those admitted under the campaign rule.
#[test]
fn the_schema_refuses_a_second_active_suppression_and_campaign_duplicate() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let _store = connect(&db);
    let mut c = db.client();
    seed(&mut c);
    let suppress = |c: &mut postgres::Client, id: &str, stream: Option<&str>| {
        c.execute(
            "INSERT INTO suppressions (id, tenant_id, target, stream, reason, created_at)
             VALUES ($1, 't1', 'a@example.com', $2, 'hard_bounce', 1)",
            &[&id, &stream],
        )
    };
    suppress(&mut c, "s1", None).unwrap();
    let e = suppress(&mut c, "s2", None).unwrap_err();
    assert_eq!(e.code(), Some(&postgres::error::SqlState::UNIQUE_VIOLATION));
    suppress(&mut c, "s3", Some("news")).expect("another scope is another entry");
    c.execute(
        "UPDATE suppressions SET removed_at = 2 WHERE id = 's1'",
        &[],
    )
    .unwrap();
    suppress(&mut c, "s4", None).expect("a removed entry no longer counts");
    // The writer's form: a concurrent duplicate does nothing.
    let n = c
        .execute(
            "INSERT INTO suppressions (id, tenant_id, target, stream, reason, created_at)
             VALUES ('s5', 't1', 'a@example.com', NULL, 'hard_bounce', 1)
             ON CONFLICT (tenant_id, target, COALESCE(stream, '')) WHERE removed_at IS NULL DO NOTHING",
            &[],
        )
        .unwrap();
    assert_eq!(n, 0);
}

/// Rows recorded in a month without a partition of its own wait in the
/// default partition and move into the month's when it is made; making
/// partitions is safe from several nodes at once.
#[test]
fn event_partitions_are_made_once_and_take_rows_from_the_default() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let rt = runtime();
    let store = connect(&db);
    let mut c = db.client();
    seed(&mut c);
    // 2031-03-23, far past the partitions made at connect.
    let march_2031: i64 = 1_931_990_400_000;
    c.batch_execute("BEGIN").unwrap();
    let xid = current_xid(&mut c).unwrap();
    c.execute(
        "INSERT INTO events (seq, id, tenant_id, delivery_id, message_id, recipient, sender, kind,
                             occurred_at, recorded_at, source, details, outside_window)
         VALUES ($1, 'late', 't1', 'd1', 'm1', 'a@example.com', 's@example.com', 'queued',
                 $2, $2, 'api', '{}', false)",
        &[&event_position(xid, 0).unwrap(), &march_2031],
    )
    .unwrap();
    c.batch_execute("COMMIT").unwrap();
    let partition_of = |c: &mut postgres::Client| -> String {
        c.query_one(
            "SELECT tableoid::regclass::text FROM events WHERE id = 'late'",
            &[],
        )
        .unwrap()
        .get(0)
    };
    assert_eq!(partition_of(&mut c), "events_default");

    let made: Vec<u32> = std::thread::scope(|s| {
        let nodes: Vec<_> = (0..3)
            .map(|_| s.spawn(|| store.make_event_partitions(march_2031, 1).unwrap()))
            .collect();
        nodes.into_iter().map(|n| n.join().unwrap()).collect()
    });
    assert_eq!(made.iter().sum::<u32>(), 2, "{made:?}");
    assert_eq!(partition_of(&mut c), "events_2031_03");
    assert_eq!(count(&mut c, "SELECT COUNT(*) FROM ONLY events_default"), 0);
    let late = rt
        .block_on(store.event(&t1(), &EventId::from_stored("late".into())))
        .unwrap();
    assert_eq!(late.map(|e| e.recorded_at), Some(march_2031));
}

/// Read connections that the server ended (a restart, an administrator)
/// are dropped, not reused: a read fails at most once, as unreachable
/// (a 503, retried), and the next one opens a new connection.
#[test]
fn reads_recover_by_themselves_after_their_connections_are_ended() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let rt = runtime();
    let store = connect(&db);
    assert_eq!(rt.block_on(store.tenant_count()).unwrap(), 0);
    let mut c = db.client();
    let ended = count(
        &mut c,
        "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()) ended",
    );
    assert!(ended >= 1, "the pool's connection was open");
    let mut failures = 0;
    let answer = loop {
        match rt.block_on(store.tenant_count()) {
            Ok(n) => break n,
            Err(e) => {
                assert!(
                    matches!(
                        e,
                        StoreError::Unavailable {
                            cause: Unavailable::Unreachable,
                            ..
                        }
                    ),
                    "{e:?}"
                );
                failures += 1;
                assert!(failures <= 1, "the second read reconnects");
            }
        }
    };
    assert_eq!(answer, 0);
}

/// The driver choice rests on this: a `postgres::Client` (which blocks on
/// a small runtime of its own) works inside `spawn_blocking`, where the
/// store's reads run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_client_works_inside_spawn_blocking() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let url = db.url().to_owned();
    let answers = futures_util::future::join_all((0..4).map(|i| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let n: i32 = client
                .query_one("SELECT $1::int + 1", &[&i])
                .unwrap()
                .get(0);
            // Dropped here too, on the blocking thread.
            n
        })
    }))
    .await;
    let answers: Vec<i32> = answers.into_iter().map(Result::unwrap).collect();
    assert_eq!(answers, vec![1, 2, 3, 4]);
}

fn dkim_key(domain: &str, selector: &str, pem: &str, created_at: i64) -> DkimKeyRecord {
    DkimKeyRecord {
        domain: domain.into(),
        selector: selector.into(),
        private_key_pem: pem.into(),
        created_at,
    }
}

/// What `(domain, selector, pem)` the store lists.
fn listed(store: &PgStore) -> Vec<(String, String, String)> {
    store
        .dkim_keys()
        .unwrap()
        .into_iter()
        .map(|k| (k.domain, k.selector, k.private_key_pem))
        .collect()
}

/// DKIM keys kept for every node: what one node inserts the other lists;
/// a key is never replaced; removal by domain or by selector; and every
/// committed change (a row changed by hand too), and nothing else, moves
/// the version that nodes poll.
#[test]
fn dkim_keys_are_shared_never_replaced_and_every_change_moves_the_version() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let (a, b) = (connect(&db), connect(&db));
    assert!(a.dkim_keys().unwrap().is_empty());
    let v0 = a.dkim_keys_version().unwrap();
    assert_eq!(b.dkim_keys_version().unwrap(), v0);

    a.insert_dkim_key(&dkim_key("sender.example", "s1", "PEM-1", 10))
        .unwrap();
    let v1 = b.dkim_keys_version().unwrap();
    assert_ne!(
        v1, v0,
        "an insert moves the version, for the other node too"
    );
    let found = b.dkim_keys().unwrap();
    assert_eq!(found, vec![dkim_key("sender.example", "s1", "PEM-1", 10)]);
    let debug = format!("{found:?}");
    assert!(!debug.contains("PEM-1"), "never the key in Debug: {debug}");

    // The same domain and selector again, from the other node: refused,
    // the first key kept, the version unmoved.
    let e = b
        .insert_dkim_key(&dkim_key("sender.example", "s1", "PEM-other", 20))
        .unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
    assert!(e.to_string().contains("selector `s1`"), "{e}");
    assert_eq!(
        listed(&a),
        [("sender.example".into(), "s1".into(), "PEM-1".into())]
    );
    assert_eq!(a.dkim_keys_version().unwrap(), v1);

    b.insert_dkim_key(&dkim_key("sender.example", "s2", "PEM-2", 30))
        .unwrap();
    b.insert_dkim_key(&dkim_key("other.example", "posthorn", "PEM-3", 40))
        .unwrap();
    let v2 = a.dkim_keys_version().unwrap();
    assert!(v2 > v1);
    let names: Vec<(String, String)> = listed(&a).into_iter().map(|(d, s, _)| (d, s)).collect();
    assert_eq!(
        names,
        [
            ("other.example".into(), "posthorn".into()),
            ("sender.example".into(), "s1".into()),
            ("sender.example".into(), "s2".into()),
        ],
        "by domain and selector"
    );

    // One selector; then nothing to remove changes nothing.
    assert_eq!(a.remove_dkim_keys("sender.example", Some("s1")).unwrap(), 1);
    let v3 = b.dkim_keys_version().unwrap();
    assert!(v3 > v2);
    assert_eq!(a.remove_dkim_keys("sender.example", Some("s1")).unwrap(), 0);
    assert_eq!(a.remove_dkim_keys("nobody.example", None).unwrap(), 0);
    assert_eq!(b.dkim_keys_version().unwrap(), v3, "nothing removed");
    // A whole domain.
    assert_eq!(b.remove_dkim_keys("sender.example", None).unwrap(), 1);
    let v4 = a.dkim_keys_version().unwrap();
    assert!(v4 > v3);
    assert_eq!(
        listed(&a),
        [("other.example".into(), "posthorn".into(), "PEM-3".into())]
    );

    // A change made by hand is seen too, once committed.
    let mut c = db.client();
    let mut tx = c.transaction().unwrap();
    tx.execute(
        "UPDATE dkim_keys SET private_key_pem = 'PEM-4' WHERE domain = 'other.example'",
        &[],
    )
    .unwrap();
    assert_eq!(a.dkim_keys_version().unwrap(), v4, "not before the commit");
    tx.commit().unwrap();
    assert!(a.dkim_keys_version().unwrap() > v4);
    assert_eq!(listed(&b)[0].2, "PEM-4");
}

/// The connection the DKIM calls keep between calls: after the server
/// ended it (a restart, an administrator), the next read and the next
/// write still succeed, on a new connection.
#[test]
fn dkim_key_calls_recover_by_themselves_after_their_connection_is_ended() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let store = connect(&db);
    let before = store.dkim_keys_version().unwrap();
    let mut c = db.client();
    let end_all = |c: &mut postgres::Client| {
        count(
            c,
            "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()) ended",
        )
    };
    assert!(end_all(&mut c) >= 1, "the kept connection was open");
    assert_eq!(store.dkim_keys_version().unwrap(), before, "a read");
    assert!(end_all(&mut c) >= 1);
    store
        .insert_dkim_key(&dkim_key("sender.example", "s1", "PEM", 1))
        .expect("a write");
    assert_eq!(listed(&store).len(), 1);
}

/// Claims start where the last one found due entries (`ClaimFloor`, so that
/// they need not walk past every entry delivered since the oldest open
/// snapshot): an entry that becomes due again below that point, here by
/// its lease running out, is still claimed again, at the latest at the
/// next walk of the whole queue.
#[test]
fn a_lease_that_runs_out_below_where_claims_start_is_claimed_again() {
    use posthorn_store::conformance::{T0, message};
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let store = connect(&db);
    let node = posthorn_core::NodeId::parse("node-a").expect("a node name");
    runtime().block_on(async {
        let tenant = store.create_tenant("acme", T0).await.expect("tenant").id;
        let first = message(&tenant, &["a@example.com"]);
        let mut second = message(&tenant, &["b@example.com"]);
        second.send_at = Some(T0 + 10);
        for m in [first, second] {
            store.accept_message(m).await.expect("accepted");
        }
        let claim = |now: i64, lease_until: i64| store.claim_due(&node, now, 1, lease_until);
        let a = claim(T0 + 20, T0 + 100).await.expect("claim");
        assert_eq!(a[0].delivery.recipient, "a@example.com");
        let b = claim(T0 + 30, T0 + 1_000_000).await.expect("claim");
        assert_eq!(b[0].delivery.recipient, "b@example.com");
        // a's lease runs out at T0 + 100; claims now start at b's due time.
        let mut again = Vec::new();
        for round in 0..40 {
            again = claim(T0 + 200 + round, T0 + 1_000_000)
                .await
                .expect("claim");
            if !again.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert_eq!(again.len(), 1, "claimed again within a full walk");
        assert_eq!(again[0].delivery.recipient, "a@example.com");
        assert_eq!(again[0].attempt, 2);
    });
}

/// Deliveries stored before the statistics were (an older version's) are
/// counted by the migration that adds them: the same counts as kept live.
#[test]
fn the_statistics_migration_counts_what_was_stored_before_it() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = connect(&db);
    let (tenant, live) = rt.block_on(async {
        let tenant = posthorn_store::conformance::stats_scene(&store).await;
        let live = posthorn_store::conformance::all_stats(&store, &tenant).await;
        (tenant, live)
    });
    assert!(live.len() > 20, "{live:?}");
    drop(store);
    db.client()
        .batch_execute(
            "DELETE FROM schema_migrations WHERE version >= 3; \
             ALTER TABLE deliveries DROP COLUMN seen; \
             DROP TABLE delivery_stats; DROP TABLE delivery_stats_domains",
        )
        .unwrap();
    let store = connect(&db);
    assert_eq!(store.applied_migrations(), &[3, 4]);
    let rebuilt = rt.block_on(posthorn_store::conformance::all_stats(&store, &tenant));
    assert_eq!(rebuilt, live);
}

/// The statistics' rows of changes fold into one row per count, with the
/// same sums; changes made after a fold fold at the next.
#[test]
fn folding_the_statistics_rows_keeps_their_sums() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = connect(&db);
    let tenant = rt.block_on(posthorn_store::conformance::stats_scene(&store));
    let live = rt.block_on(posthorn_store::conformance::all_stats(&store, &tenant));
    let mut c = db.client();
    let rows_before = count(&mut c, "SELECT COUNT(*) FROM delivery_stats");
    assert!(store.compact_stats().unwrap() > 0);
    let rows_after = count(&mut c, "SELECT COUNT(*) FROM delivery_stats");
    assert!(
        rows_after < rows_before,
        "{rows_after} rows of {rows_before}"
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT COUNT(*) FROM delivery_stats WHERE NOT compacted"
        ),
        0
    );
    assert_eq!(
        rt.block_on(posthorn_store::conformance::all_stats(&store, &tenant)),
        live
    );
    // Nothing changed: the next round writes nothing.
    assert_eq!(store.compact_stats().unwrap(), 0);
    // A new message after the fold: counted, then folded too.
    rt.block_on(async {
        let m = posthorn_store::conformance::message(&tenant, &["late@example.com"]);
        store.accept_message(m).await.unwrap();
    });
    let with_new = rt.block_on(posthorn_store::conformance::all_stats(&store, &tenant));
    assert_ne!(with_new, live);
    assert!(store.compact_stats().unwrap() > 0);
    assert_eq!(
        rt.block_on(posthorn_store::conformance::all_stats(&store, &tenant)),
        with_new
    );
}
