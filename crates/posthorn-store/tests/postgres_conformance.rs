//! The conformance suite on PostgreSQL (`POSTHORN_TEST_POSTGRES`), each
//! case in a database of its own, dropped at its end: the same cases, and
//! the same answers, as on SQLite. Without the variable every case skips
//! loudly (and fails under `POSTHORN_REQUIRE_PEERS=1`, as in CI).

use posthorn_core::config::StoreConfig;
use posthorn_store::{PgStore, StoreRules};
use posthorn_testkit::postgres::TestDatabase;

fn fresh() -> Option<(PgStore, TestDatabase)> {
    let db = TestDatabase::create()?;
    let store = PgStore::connect(db.url(), &StoreConfig::default(), StoreRules::default())
        .expect("connect to the test database");
    Some((store, db))
}

posthorn_store::conformance_tests!(match fresh() {
    Some(store_and_database) => store_and_database,
    None => return,
});
