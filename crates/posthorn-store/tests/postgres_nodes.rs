//! Several nodes on one PostgreSQL database (`POSTHORN_TEST_POSTGRES`):
//! what must hold when writers on different nodes commit at the same time.

use posthorn_core::config::StoreConfig;
use posthorn_core::event::{Engagement, EventDetails};
use posthorn_core::{EventId, EventSource, TenantId};
use posthorn_store::{
    AcceptOutcome, DeliveryRecord, NewEvent, PgStore, RecordOutcome, Store, StoreRules,
};
use posthorn_testkit::postgres::TestDatabase;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

fn node(db: &TestDatabase) -> Arc<PgStore> {
    Arc::new(
        PgStore::connect(db.url(), &StoreConfig::default(), StoreRules::default())
            .expect("connect to the test database"),
    )
}

fn opened(delivery: &DeliveryRecord, at: i64) -> NewEvent {
    NewEvent {
        id: EventId::generate(),
        delivery_id: delivery.id.clone(),
        occurred_at: at,
        recorded_at: at,
        source: EventSource::Tracker,
        details: EventDetails::Opened(Engagement::default()),
        external_id: None,
    }
}

/// Writers on two nodes record events at once while a reader tails
/// `events_after` from the last position it saw: it sees positions only
/// rising, and in the end every committed event exactly once. (A plain
/// sequence would fail this: numbers are taken at insert, and a
/// transaction that took a lower one can commit after the reader has
/// moved past it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_tailing_events_after_sees_every_commit_of_two_nodes_once() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let (a, b) = (node(&db), node(&db));
    let tenant: TenantId = a.create_tenant("acme", 1).await.unwrap().id;
    let to: Vec<String> = (0..20).map(|i| format!("r{i}@example.com")).collect();
    let to: Vec<&str> = to.iter().map(String::as_str).collect();
    let receipt = match a
        .accept_message(posthorn_store::conformance::message(&tenant, &to))
        .await
        .unwrap()
    {
        AcceptOutcome::Accepted(r) => r,
        other => panic!("{other:?}"),
    };
    let mut deliveries = Vec::new();
    for d in &receipt.deliveries {
        deliveries.push(a.delivery(&tenant, &d.id).await.unwrap().unwrap());
    }
    let deliveries = Arc::new(deliveries);

    let writing = Arc::new(AtomicBool::new(true));
    let reader = {
        let (store, tenant, writing) = (b.clone(), tenant.clone(), writing.clone());
        tokio::spawn(async move {
            let filter = posthorn_core::search::Filters::default();
            let (mut last, mut seen) = (0i64, Vec::new());
            let mut idle_after_writers = 0;
            loop {
                let page = store
                    .events_after(&tenant, last, &filter, 50)
                    .await
                    .unwrap();
                for e in &page {
                    assert!(e.seq > last, "position {} after {last}", e.seq);
                    last = e.seq;
                    seen.push(e.id.clone());
                }
                if page.is_empty() {
                    if !writing.load(Ordering::SeqCst) {
                        idle_after_writers += 1;
                        // Some empty reads once the writers are done: what
                        // is still unsettled settles in the meantime.
                        if idle_after_writers > 200 {
                            return seen;
                        }
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
        })
    };

    // Eight writers, four per node, each recording 60 opens one at a time.
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = if w % 2 == 0 { a.clone() } else { b.clone() };
            let (tenant, deliveries) = (tenant.clone(), deliveries.clone());
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..60 {
                    let delivery = &deliveries[(w * 7 + i) % deliveries.len()];
                    let event = opened(delivery, 10 + i as i64);
                    match store.record_event(&tenant, event).await.unwrap() {
                        RecordOutcome::Recorded { event, .. } => ids.push(event.id.clone()),
                        other => panic!("{other:?}"),
                    }
                }
                ids
            })
        })
        .collect();
    let mut recorded: Vec<EventId> = Vec::new();
    for w in writers {
        recorded.extend(w.await.unwrap());
    }
    writing.store(false, Ordering::SeqCst);
    let seen = reader.await.unwrap();

    // Every event of the tenant: the 20 `queued` of the submission and the
    // 480 opens.
    let unique: HashSet<&EventId> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "an event was seen twice");
    assert_eq!(seen.len(), 20 + 480);
    assert!(recorded.iter().all(|id| unique.contains(id)));
}

/// Every node publishes every node's commits on its commit stream, each
/// marked with where it was written: new work queued on one node wakes the
/// others, and a hit taken by another node's tracker reaches this one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_node_publishes_the_commits_of_both_marked_with_their_origin() {
    use posthorn_store::Origin;
    use std::sync::Mutex;
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let (a, b) = (node(&db), node(&db));
    type Seen = Arc<Mutex<Vec<(EventId, Origin)>>>;
    let watch = |store: &PgStore| {
        let seen: Seen = Arc::default();
        let sink = seen.clone();
        store.commits().observe(move |events, origin| {
            let mut sink = sink.lock().unwrap();
            sink.extend(events.iter().map(|e| (e.id.clone(), origin)));
        });
        seen
    };
    let (seen_by_a, seen_by_b) = (watch(&a), watch(&b));

    let tenant = a.create_tenant("acme", 1).await.unwrap().id;
    let receipt = match a
        .accept_message(posthorn_store::conformance::message(
            &tenant,
            &["x@example.com"],
        ))
        .await
        .unwrap()
    {
        AcceptOutcome::Accepted(r) => r,
        other => panic!("{other:?}"),
    };
    let delivery = b
        .delivery(&tenant, &receipt.deliveries[0].id)
        .await
        .unwrap()
        .unwrap();
    let open = match b.record_event(&tenant, opened(&delivery, 5)).await.unwrap() {
        RecordOutcome::Recorded { event, .. } => event,
        other => panic!("{other:?}"),
    };
    let queued = a
        .delivery_events(&tenant, &delivery.id)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.id != open.id)
        .expect("the queued event");

    // Published a moment after they settle: wait for both on both nodes.
    for _ in 0..500 {
        if seen_by_a.lock().unwrap().len() >= 2 && seen_by_b.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let expect = |here: &str| {
        let (queued_origin, open_origin) = if here == "a" {
            (Origin::ThisNode, Origin::OtherNode)
        } else {
            (Origin::OtherNode, Origin::ThisNode)
        };
        vec![
            (queued.id.clone(), queued_origin),
            (open.id.clone(), open_origin),
        ]
    };
    assert_eq!(*seen_by_a.lock().unwrap(), expect("a"));
    assert_eq!(*seen_by_b.lock().unwrap(), expect("b"));
}

/// The first node to keep a shared secret decides it; later nodes get it,
/// whatever they offer.
#[test]
fn the_first_node_s_secret_is_every_node_s() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let connect =
        || PgStore::connect(db.url(), &StoreConfig::default(), StoreRules::default()).unwrap();
    let (a, b) = (connect(), connect());
    assert_eq!(a.shared_secret("server", vec![1; 32]).unwrap(), vec![1; 32]);
    assert_eq!(b.shared_secret("server", vec![2; 32]).unwrap(), vec![1; 32]);
    assert_eq!(a.shared_secret("other", vec![3; 8]).unwrap(), vec![3; 8]);
}
