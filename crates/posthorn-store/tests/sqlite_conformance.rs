//! The conformance suite on SQLite, plus what only a file-backed store can
//! show: data survives closing and reopening.

use posthorn_core::config::StoreConfig;
use posthorn_store::{SqliteStore, Store, StoreRules};

fn fresh() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path(), &StoreConfig::default(), StoreRules::default())
        .expect("open store");
    (store, dir)
}

posthorn_store::conformance_tests!(fresh());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_writes_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let open =
        || SqliteStore::open(dir.path(), &StoreConfig::default(), StoreRules::default()).unwrap();
    let store = open();
    let tenant = store.create_tenant("acme", 1).await.unwrap();
    let message = posthorn_store::conformance::message(&tenant.id, &["a@example.com"]);
    let outcome = store.accept_message(message).await.unwrap();
    let posthorn_store::AcceptOutcome::Accepted(receipt) = outcome else {
        panic!("{outcome:?}")
    };
    drop(store);

    let reopened = open();
    let delivery = reopened
        .delivery(&tenant.id, &receipt.deliveries[0].id)
        .await
        .unwrap();
    assert_eq!(delivery.map(|d| d.status()), Some("queued"));
    assert_eq!(reopened.queue_len(&tenant.id).await.unwrap(), 1);
    assert_eq!(
        reopened.tenant_count().await.unwrap(),
        1,
        "migrations ran once"
    );
}
