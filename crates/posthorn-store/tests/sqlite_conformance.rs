//! The conformance suite on SQLite, plus what only a file-backed store can
//! show: data survives closing and reopening.

use posthorn_core::config::StoreConfig;
use posthorn_core::{DeliveryId, TenantId};
use posthorn_store::{SqliteStore, Store, StoreError, StoreRules};

fn fresh() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path(), &StoreConfig::default(), StoreRules::default())
        .expect("open store");
    (store, dir)
}

posthorn_store::conformance_tests!(fresh());

/// A tenant `acme` with one message to `a@example.com`: the tenant and the
/// message's one delivery.
async fn one_delivery(store: &SqliteStore) -> (TenantId, DeliveryId) {
    let tenant = store.create_tenant("acme", 1).await.unwrap();
    let message = posthorn_store::conformance::message(&tenant.id, &["a@example.com"]);
    let outcome = store.accept_message(message).await.unwrap();
    let posthorn_store::AcceptOutcome::Accepted(receipt) = outcome else {
        panic!("{outcome:?}")
    };
    (tenant.id, receipt.deliveries[0].id.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_writes_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let open =
        || SqliteStore::open(dir.path(), &StoreConfig::default(), StoreRules::default()).unwrap();
    let store = open();
    let (tenant, delivery) = one_delivery(&store).await;
    drop(store);

    let reopened = open();
    let delivery = reopened.delivery(&tenant, &delivery).await.unwrap();
    assert_eq!(delivery.map(|d| d.status()), Some("queued"));
    assert_eq!(reopened.queue_len(&tenant).await.unwrap(), 1);
    assert_eq!(
        reopened.tenant_count().await.unwrap(),
        1,
        "migrations ran once"
    );
}

/// Under writes that never pause, the write-ahead log is started over from
/// time to time instead of growing for as long as the load lasts (a
/// passive checkpoint alone never catches up with a busy writer, and SQLite
/// only restarts a fully checkpointed log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_stays_bounded_under_sustained_writes() {
    use posthorn_core::event::{Engagement, EventDetails};
    use posthorn_core::{EventId, EventSource};
    use std::sync::Arc;
    let (store, dir) = fresh();
    let store = Arc::new(store);
    let tenant = store.create_tenant("acme", 1).await.unwrap();
    let to: Vec<String> = (0..64).map(|i| format!("r{i}@example.com")).collect();
    let to: Vec<&str> = to.iter().map(String::as_str).collect();
    let posthorn_store::AcceptOutcome::Accepted(receipt) = store
        .accept_message(posthorn_store::conformance::message(&tenant.id, &to))
        .await
        .unwrap()
    else {
        panic!("not accepted")
    };
    let wal = dir.path().join("posthorn.db-wal");
    let mut largest = 0u64;
    let mut written = 0u64;
    // Rounds of 64 concurrent writers until well past what the restart
    // threshold (8 MiB) and a checkpoint interval's worth of writes (1 s)
    // need: at least 30,720 events and six intervals. (Time only decides
    // how long to write; nothing asserts on it.)
    let started = std::time::Instant::now();
    while written < 120 * 1024 * 1024 / 4096 || started.elapsed().as_secs() < 6 {
        let mut tasks = Vec::new();
        for d in &receipt.deliveries {
            let (store, tenant, delivery) = (store.clone(), tenant.id.clone(), d.id.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..8 {
                    let event = posthorn_store::NewEvent {
                        id: EventId::generate(),
                        delivery_id: delivery.clone(),
                        occurred_at: 2,
                        recorded_at: 2,
                        source: EventSource::Tracker,
                        details: EventDetails::Opened(Engagement::default()),
                        external_id: None,
                    };
                    store.record_event(&tenant, event).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        written += 64 * 8;
        largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
    }
    let growth = written * 4096;
    assert!(
        largest < growth / 2,
        "the log reached {largest} bytes for {written} events (unbounded: ~{growth})"
    );
}

/// More reads at once than there are read connections all answer: they
/// wait for one of the pool's connections, and every permit comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_beyond_the_pool_wait_their_turn() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        read_connections: 2,
        ..StoreConfig::default()
    };
    let store =
        std::sync::Arc::new(SqliteStore::open(dir.path(), &config, StoreRules::default()).unwrap());
    store.create_tenant("acme", 1).await.unwrap();
    let reads = (0..64).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.tenant_count().await })
    });
    let counts = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        futures_util::future::join_all(reads),
    )
    .await
    .expect("every read is answered");
    for count in counts {
        assert_eq!(count.unwrap().unwrap(), 1);
    }
}

/// The database and its log files are readable by their owner only, like
/// the secrets beside them; so is a data directory the store creates.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_and_its_log_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let store = SqliteStore::open(&data, &StoreConfig::default(), StoreRules::default()).unwrap();
    // A write, so the log files exist.
    store.create_tenant("acme", 1).await.unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        names.push(path.file_name().unwrap().to_string_lossy().into_owned());
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    names.sort();
    assert_eq!(names, ["posthorn.db", "posthorn.db-shm", "posthorn.db-wal"]);
}

/// A stored value the code cannot read fails the read with the table,
/// column and value; it is never read as something else (an unknown
/// contact status used to read as `active`: mailable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_stored_value_fails_the_read_and_names_it() {
    let (store, dir) = fresh();
    let tenant = store.create_tenant("acme", 1).await.unwrap();
    let message = posthorn_store::conformance::message(&tenant.id, &["a@example.com"]);
    store.accept_message(message).await.unwrap();
    assert!(
        store
            .contact(&tenant.id, "a@example.com")
            .await
            .unwrap()
            .is_some()
    );

    // As a newer version, or a damaged file, might have left it.
    let raw =
        rusqlite::Connection::open(dir.path().join(posthorn_store::sqlite::DATABASE_FILE)).unwrap();
    raw.execute("UPDATE contacts SET status = 'bounced-forever'", [])
        .unwrap();
    drop(raw);

    let error = store
        .contact(&tenant.id, "a@example.com")
        .await
        .expect_err("an unknown status is not read as another");
    assert!(
        matches!(
            &error,
            StoreError::Corrupt { table: "contacts", column: "status", value }
                if value == "bounced-forever"
        ),
        "{error:?}"
    );
    assert!(!error.is_transient(), "reading again reads the same value");
    let text = error.to_string();
    assert!(
        text.contains("contacts.status") && text.contains("bounced-forever"),
        "{text}"
    );
}

/// Writes `sql` into the store's file behind its back, as a newer version
/// or a damaged file might have left it.
fn tamper(dir: &tempfile::TempDir, sql: &str) {
    let raw =
        rusqlite::Connection::open(dir.path().join(posthorn_store::sqlite::DATABASE_FILE)).unwrap();
    assert!(raw.execute(sql, []).unwrap() > 0, "{sql} changed nothing");
}

fn is_corrupt(error: &StoreError, table: &str, column: &str) -> bool {
    matches!(error, StoreError::Corrupt { table: t, column: c, .. } if *t == table && *c == column)
}

/// An event's details are read as the details of its kind: JSON that is
/// not, or is not that kind's, fails the read naming `events.details`
/// (it used to read as `null`, shown to clients as if nothing were known).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_event_details_fail_the_read_and_name_the_column() {
    let (store, dir) = fresh();
    let (tenant, delivery) = one_delivery(&store).await;
    let events = store.delivery_events(&tenant, &delivery).await.unwrap();
    assert_eq!(events[0].kind(), posthorn_core::EventKind::Queued);

    for (details, shown) in [
        // Not JSON at all.
        ("{\"size\": 12", "{\"size\": 12".to_owned()),
        // JSON, but not a `queued` event's details.
        ("{\"size\": \"big\"}", "{\"size\": \"big\"}".to_owned()),
        (
            "{\"mx_host\": \"mx.example.com\"}",
            "{\"mx_host\": \"mx.example.com\"}".to_owned(),
        ),
        // A long value is named by its start.
        (
            &*format!("[{}", "1,".repeat(500)),
            format!("[{}1…", "1,".repeat(59)),
        ),
    ] {
        tamper(&dir, &format!("UPDATE events SET details = '{details}'"));
        let error = store
            .delivery_events(&tenant, &delivery)
            .await
            .expect_err("unreadable details are not read as null");
        assert!(is_corrupt(&error, "events", "details"), "{error:?}");
        let StoreError::Corrupt { value, .. } = &error else {
            unreachable!()
        };
        assert_eq!(value, &shown);
        assert!(error.to_string().contains("events.details"), "{error}");
    }
}

/// Events stored by an older version with an "enhanced code" that RFC 3463
/// does not allow (`3.0.0` implied for a 3xx reply, a class-6 token) are
/// mended by migration 0010: the code goes, the reply text stays, and the
/// event reads back; valid codes are left as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_that_are_not_rfc_3463_codes_are_dropped_by_the_migration() {
    let (store, dir) = fresh();
    let (tenant, delivery) = one_delivery(&store).await;
    drop(store);
    let cases = [
        ("3.0.0", None),
        ("6.8.9", None),
        ("5.01.1", None),
        ("5.1.1000", None),
        ("5.1.1", Some("5.1.1")),
        ("4.7.650", Some("4.7.650")),
        ("2.0.0", Some("2.0.0")),
    ];
    for (stored, kept) in cases {
        // As a version before the migration left it.
        // As a version before the migration left it (without what later
        // migrations added, which run again after it).
        tamper(&dir, "DELETE FROM schema_migrations WHERE version >= 10");
        let raw =
            rusqlite::Connection::open(dir.path().join(posthorn_store::sqlite::DATABASE_FILE))
                .unwrap();
        raw.execute_batch(
            "ALTER TABLE deliveries DROP COLUMN seen; \
             DROP TABLE delivery_stats; DROP TABLE delivery_stats_domains",
        )
        .unwrap();
        drop(raw);
        tamper(
            &dir,
            &format!(
                "UPDATE events SET kind = 'deferred', details = \
                 '{{\"attempt\": 1, \"smtp_code\": 451, \"enhanced_code\": \"{stored}\", \"reply_text\": \"451 {stored} later\"}}'"
            ),
        );
        let store =
            SqliteStore::open(dir.path(), &StoreConfig::default(), StoreRules::default()).unwrap();
        let events = store.delivery_events(&tenant, &delivery).await.unwrap();
        let posthorn_core::event::EventDetails::Deferred(deferred) = &events[0].details else {
            panic!("{:?}", events[0].details)
        };
        assert_eq!(
            deferred.enhanced_code.map(|c| c.to_string()).as_deref(),
            kept,
            "{stored}"
        );
        assert_eq!(
            deferred.reply_text.as_deref(),
            Some(format!("451 {stored} later").as_str())
        );
    }
}

/// What the inbound MX decided is read back as the names it wrote; another
/// text fails the read naming the column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_inbound_kind_fails_the_read_and_names_it() {
    use posthorn_core::inbound::{InboundKind, OrphanReason, RecordKind};
    use posthorn_store::{InboundFilter, InboundOutcome, InboundRecord, NewInbound};
    let (store, dir) = fresh();
    let record = InboundRecord {
        id: posthorn_core::id::InboundId::generate(),
        received_at: 1,
        tenant_id: None,
        delivery_id: None,
        mail_from: String::new(),
        rcpt_to: vec!["bounces@sender.example".into()],
        kind: InboundKind::Report(RecordKind::Bounce),
        outcome: InboundOutcome::Orphan,
        orphan_reason: Some(OrphanReason::TamperedToken),
        attribution: None,
        records: serde_json::json!([]),
        size: 0,
        event_ids: Vec::new(),
    };
    store
        .record_inbound(NewInbound {
            record: record.clone(),
            raw: b"x".to_vec(),
            events: Vec::new(),
        })
        .await
        .unwrap();
    let filter = InboundFilter {
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        store.inbound_messages(None, &filter).await.unwrap(),
        vec![record]
    );

    for (sql, column) in [
        ("UPDATE inbound_messages SET kind = 'bounced'", "kind"),
        (
            "UPDATE inbound_messages SET kind = 'bounce', orphan_reason = 'no_token'",
            "orphan_reason",
        ),
        (
            "UPDATE inbound_messages SET orphan_reason = NULL, attribution = 'dkim'",
            "attribution",
        ),
        (
            "UPDATE inbound_messages SET attribution = NULL, records = '[{'",
            "records",
        ),
    ] {
        tamper(&dir, sql);
        let error = store
            .inbound_messages(None, &filter)
            .await
            .expect_err("an unknown value is not read as another");
        assert!(
            is_corrupt(&error, "inbound_messages", column),
            "{sql}: {error:?}"
        );
    }
}

/// A message's JSON columns are read or the read fails: headers used to
/// read as `null` and tags as none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_message_json_fails_the_read_and_names_it() {
    let (store, dir) = fresh();
    let tenant = store.create_tenant("acme", 1).await.unwrap();
    let message = posthorn_store::conformance::message(&tenant.id, &["a@example.com"]);
    let id = message.id.clone();
    store.accept_message(message).await.unwrap();
    assert!(store.message(&tenant.id, &id).await.unwrap().is_some());
    for column in ["headers", "tags", "metadata"] {
        tamper(&dir, &format!("UPDATE messages SET {column} = 'nope'"));
        let error = store
            .message(&tenant.id, &id)
            .await
            .expect_err("unreadable JSON is not read as null");
        assert!(is_corrupt(&error, "messages", column), "{error:?}");
        tamper(&dir, &format!("UPDATE messages SET {column} = '[]'"));
    }
}

/// A message's To and Cc are stored as the server has always written them
/// (a JSON array of `{"name", "address"}`, NULL when empty), read back as
/// mailboxes; a list that does not decode fails the read and names the
/// column, rather than a copy going out with no To.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_to_and_cc_read_back_or_fail_the_read() {
    let (store, dir) = fresh();
    let tenant = store.create_tenant("acme", 1).await.unwrap();
    let message = posthorn_store::conformance::message(&tenant.id, &["a@example.com"]);
    let id = message.id.clone();
    store.accept_message(message).await.unwrap();
    let raw =
        rusqlite::Connection::open(dir.path().join(posthorn_store::sqlite::DATABASE_FILE)).unwrap();
    let stored: (Option<String>, Option<String>) = raw
        .query_row("SELECT to_header, cc_header FROM messages", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(
        stored,
        (
            Some(r#"[{"name":null,"address":"a@example.com"}]"#.into()),
            None
        )
    );

    // What the API door wrote before the lists were typed (keys in another
    // order, a display name, an IDN domain in its ASCII form) reads back.
    raw.execute(
        r#"UPDATE messages SET to_header = '[{"address":"a@example.com","name":"A, \"Jr\""}]',
           cc_header = '[{"address":"z@xn--bcher-kva.example","name":null}]'"#,
        [],
    )
    .unwrap();
    let m = store.message(&tenant.id, &id).await.unwrap().unwrap();
    let shown = |list: &[posthorn_core::address::Mailbox]| {
        list.iter()
            .map(|m| (m.name.clone(), m.address.to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        shown(&m.content.to),
        [(Some("A, \"Jr\"".into()), "a@example.com".into())]
    );
    assert_eq!(
        shown(&m.content.cc),
        [(None, "z@xn--bcher-kva.example".into())]
    );

    for (column, value) in [
        // The conformance suite's own format until the lists were typed.
        ("to_header", "a@example.com, b@example.com"),
        ("to_header", r#"[{"name":null,"address":"not an address"}]"#),
        ("cc_header", r#"[{"name":"no address"}]"#),
        ("cc_header", "{}"),
    ] {
        raw.execute(
            &format!("UPDATE messages SET to_header = NULL, cc_header = NULL, {column} = ?1"),
            [value],
        )
        .unwrap();
        let error = store
            .message(&tenant.id, &id)
            .await
            .expect_err("an unreadable list is not read as an empty one");
        assert!(
            matches!(
                &error,
                StoreError::Corrupt { table: "messages", column: c, value: v }
                    if *c == column && v == value
            ),
            "{value}: {error:?}"
        );
    }
}

/// Deliveries stored before the statistics were (an older version's) are
/// counted by the migration that adds them: the same counts as kept live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_statistics_migration_counts_what_was_stored_before_it() {
    let (store, dir) = fresh();
    let tenant = posthorn_store::conformance::stats_scene(&store).await;
    let live = posthorn_store::conformance::all_stats(&store, &tenant).await;
    assert!(live.len() > 20, "{live:?}");
    drop(store);
    let raw =
        rusqlite::Connection::open(dir.path().join(posthorn_store::sqlite::DATABASE_FILE)).unwrap();
    raw.execute_batch(
        "DELETE FROM schema_migrations WHERE version >= 12; \
         ALTER TABLE deliveries DROP COLUMN seen; \
         DROP TABLE delivery_stats; DROP TABLE delivery_stats_domains",
    )
    .unwrap();
    drop(raw);
    let store =
        SqliteStore::open(dir.path(), &StoreConfig::default(), StoreRules::default()).unwrap();
    assert_eq!(
        posthorn_store::conformance::all_stats(&store, &tenant).await,
        live
    );
}
