//! Moving an embedded store onto PostgreSQL (`posthorn store copy`, issue
//! #14 point 7): every row of the SQLite database in a data directory,
//! copied into an empty PostgreSQL database. This module names both
//! drivers, `rusqlite` (the source, read only) and `postgres` (the
//! target); everything else keeps to its backend.
//!
//! The copy is ONE PostgreSQL transaction: all or nothing. A failure
//! anywhere (a value PostgreSQL refuses, a lost connection, counts that
//! differ at the end, the process killed) leaves the target as empty as it
//! was, so the operator fixes the cause and runs the same command again.
//! The price is one long transaction on the target; nothing else uses the
//! target during a copy anyway (its tables are locked against writers).
//!
//! The source is read in one SQLite read transaction, so every table comes
//! from the same snapshot even if a server still writes to it (it should
//! not: stop it first, or the rows it writes after the snapshot stay
//! behind). Rows are streamed: one batch per table in memory at a time.
//!
//! What the schemas differ in (migrations/postgres/0001_init.sql):
//! * JSON text becomes jsonb, 0/1 integers booleans, blobs bytea.
//! * Events get new positions (`events.seq`): in SQLite `seq` order, the
//!   positions of the copying transactions (`postgres::position`), so their
//!   order is kept, and every event a node records later is above them. One
//!   transaction numbers at most 2^20 events; a store with more takes the
//!   ids of further transactions, made (and committed, empty) by the copy
//!   before its own, so they are lower than its id, and positions rise
//!   through them in order. Nobody else writes under those ids, and readers
//!   see all the copied events at once, when the copy commits.
//! * Each event's uniqueness goes to `event_keys` (its id, its external id).
//! * An entry of the suppression list that expired without being removed
//!   (SQLite leaves it as it is when a newer one for the same target and
//!   scope is added) is copied as removed when the newer one was added, as
//!   PostgreSQL's writer marks it: `suppressions_active` allows one entry
//!   not removed per target and scope.
//! * Leases in the send queue are dropped: the nodes that held them are
//!   the stopped SQLite server's, which would release them at its next
//!   start too; attempts keep their count.
//! * There is no `event_sequence` (positions come from transaction ids)
//!   and `schema_migrations` is each database's own.
//! * DKIM keys, files in the data directory on SQLite, become rows of
//!   `dkim_keys`; the caller reads and checks the files (the server's
//!   `dkim` module knows what a key is) and passes them in.

use crate::postgres::{EVENTS_PER_TRANSACTION, current_xid, event_position};
use crate::sqlite::DATABASE_FILE;
use crate::{DkimKeyRecord, PgStore, StoreError, StoreResult, StoreRules};
use ::postgres::Transaction;
use ::postgres::types::ToSql;
use posthorn_core::config::StoreConfig;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// How far a copy has come: `copied` of the `total` rows of `table`.
/// Reported after every batch, and once for each table when it is done
/// (also for an empty one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyProgress {
    pub table: &'static str,
    pub copied: u64,
    pub total: u64,
}

/// What a finished copy wrote: the rows of every table, checked against
/// the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// The target, HOST:PORT/DB.
    pub target: String,
    /// Every table the copy wrote, in the order it wrote them, with its
    /// rows (the same number in the target as in the source).
    pub tables: Vec<(&'static str, u64)>,
}

impl CopyReport {
    /// The rows of `table`, if the copy wrote it.
    pub fn rows(&self, table: &str) -> Option<u64> {
        self.tables
            .iter()
            .find(|(name, _)| *name == table)
            .map(|(_, rows)| *rows)
    }
}

/// How a column's SQLite value becomes a PostgreSQL one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Int,
    /// SQLite's 0/1 integer, a PostgreSQL boolean.
    Bool,
    /// JSON text, cast to jsonb by PostgreSQL (the text is kept exactly).
    Json,
    Bytes,
}
use Kind::*;

/// A table and its columns, with the SQLite query that reads them (in
/// this order) when the plain `SELECT columns FROM table` will not do.
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
    select: Option<&'static str>,
}

const EVENT_COLUMNS: &[(&str, Kind)] = &[
    ("id", Text),
    ("tenant_id", Text),
    ("delivery_id", Text),
    ("message_id", Text),
    ("recipient", Text),
    ("sender", Text),
    ("kind", Text),
    ("occurred_at", Int),
    ("recorded_at", Int),
    ("source", Text),
    ("details", Json),
    ("external_id", Text),
    ("anomaly", Text),
    ("outside_window", Bool),
];

/// The table holding events; copied by `copy_events`, between the tables
/// before it here and those after it.
const EVENTS: &str = "events";

/// Every table, in an order that satisfies the foreign keys.
const TABLES: &[Table] = &[
    Table {
        name: "tenants",
        columns: &[
            ("id", Text),
            ("name", Text),
            ("created_at", Int),
            ("campaign_dedupe", Bool),
            ("track_opens", Bool),
            ("track_clicks", Bool),
        ],
        select: None,
    },
    Table {
        name: "api_keys",
        columns: &[
            ("id", Text),
            ("tenant_id", Text),
            ("name", Text),
            ("scopes", Text),
            ("secret_hash", Text),
            ("created_at", Int),
            ("revoked_at", Int),
        ],
        select: None,
    },
    Table {
        name: "sending_domains",
        columns: &[("domain", Text), ("tenant_id", Text), ("created_at", Int)],
        select: None,
    },
    Table {
        name: "messages",
        columns: &[
            ("id", Text),
            ("tenant_id", Text),
            ("from_header", Text),
            ("from_address", Text),
            ("reply_to", Text),
            ("subject", Text),
            ("text_body", Text),
            ("html_body", Text),
            ("headers", Json),
            ("tags", Json),
            ("metadata", Json),
            ("stream", Text),
            ("campaign", Text),
            ("test", Bool),
            ("send_at", Int),
            ("expires_at", Int),
            ("tracking_opens", Bool),
            ("tracking_clicks", Bool),
            ("size", Int),
            ("source", Text),
            ("created_at", Int),
            ("to_header", Json),
            ("cc_header", Json),
            ("raw_mime", Bytes),
        ],
        select: None,
    },
    Table {
        name: "deliveries",
        columns: &[
            ("id", Text),
            ("tenant_id", Text),
            ("message_id", Text),
            ("recipient", Text),
            ("recipient_kind", Text),
            ("sender", Text),
            ("stream", Text),
            ("campaign", Text),
            ("test", Bool),
            ("created_at", Int),
            ("window_ends_at", Int),
            ("delivery_status", Text),
            ("bounce_type", Text),
            ("delivery_event_id", Text),
            ("delivery_occurred_at", Int),
            ("engagement_status", Text),
            ("engagement_event_id", Text),
            ("engagement_occurred_at", Int),
            ("updated_at", Int),
            ("seen", Int),
        ],
        select: None,
    },
    Table {
        name: EVENTS,
        columns: EVENT_COLUMNS,
        select: None,
    },
    Table {
        name: "contacts",
        columns: &[
            ("tenant_id", Text),
            ("address", Text),
            ("status", Text),
            ("unsubscribed_streams", Json),
            ("consecutive_failed_deliveries", Int),
            ("consecutive_failed_attempts", Int),
            ("created_at", Int),
            ("updated_at", Int),
        ],
        select: None,
    },
    Table {
        name: "contact_changes",
        columns: &[
            ("id", Text),
            ("tenant_id", Text),
            ("address", Text),
            ("from_status", Text),
            ("to_status", Text),
            ("reason", Text),
            ("cause_event_id", Text),
            ("at", Int),
        ],
        select: None,
    },
    Table {
        name: "suppressions",
        columns: &[
            ("id", Text),
            ("tenant_id", Text),
            ("target", Text),
            ("stream", Text),
            ("reason", Text),
            ("cause_event_id", Text),
            ("created_at", Int),
            ("expires_at", Int),
            ("removed_at", Int),
        ],
        // An entry not removed that a newer one (same tenant, target and
        // scope, not removed) follows is removed when the next newer one
        // was added: LAG over the newest-first order is that one's time.
        select: Some(
            "SELECT id, tenant_id, target, stream, reason, cause_event_id, created_at, expires_at, \
                    CASE WHEN removed_at IS NULL THEN superseded_at ELSE removed_at END \
             FROM (SELECT s.*, LAG(created_at) OVER ( \
                       PARTITION BY tenant_id, target, IFNULL(stream, ''), removed_at IS NULL \
                       ORDER BY created_at DESC, id DESC) AS superseded_at \
                   FROM suppressions s)",
        ),
    },
    Table {
        name: "send_queue",
        columns: &[
            ("delivery_id", Text),
            ("tenant_id", Text),
            ("due_at", Int),
            ("attempts", Int),
            ("lease_owner", Text),
            ("lease_until", Int),
            ("created_at", Int),
        ],
        // Leases dropped (see the module's documentation).
        select: Some(
            "SELECT delivery_id, tenant_id, due_at, attempts, NULL, NULL, created_at FROM send_queue",
        ),
    },
    Table {
        name: "idempotency_keys",
        columns: &[
            ("tenant_id", Text),
            ("key", Text),
            ("body_hash", Text),
            ("receipt", Json),
            ("created_at", Int),
        ],
        select: None,
    },
    Table {
        name: "inbound_messages",
        columns: &[
            ("id", Text),
            ("received_at", Int),
            ("tenant_id", Text),
            ("delivery_id", Text),
            ("mail_from", Text),
            ("rcpt_to", Json),
            ("kind", Text),
            ("outcome", Text),
            ("orphan_reason", Text),
            ("attribution", Text),
            ("records", Json),
            ("size", Int),
            ("raw", Bytes),
        ],
        select: None,
    },
    Table {
        name: "inbound_events",
        columns: &[("event_id", Text), ("inbound_id", Text)],
        select: None,
    },
    Table {
        name: "message_links",
        columns: &[("message_id", Text), ("position", Int), ("url", Text)],
        select: None,
    },
    Table {
        name: "repeated_hits",
        columns: &[
            ("delivery_id", Text),
            ("kind", Text),
            ("link_index", Int),
            ("machine", Bool),
            ("hits", Int),
            ("last_at", Int),
        ],
        select: None,
    },
    Table {
        name: "ingest_sources",
        columns: &[
            ("id", Text),
            ("tenant_id", Text),
            ("name", Text),
            ("provider", Text),
            ("token_hash", Text),
            ("verification", Json),
            ("created_at", Int),
            ("pending_confirmation", Text),
        ],
        select: None,
    },
    Table {
        name: "ingest_tokens",
        columns: &[("source_id", Text), ("token", Text), ("expires_at", Int)],
        select: None,
    },
    Table {
        name: "provider_deliveries",
        columns: &[
            ("tenant_id", Text),
            ("provider", Text),
            ("provider_message_id", Text),
            ("recipient", Text),
            ("message_id", Text),
            ("delivery_id", Text),
        ],
        select: None,
    },
    Table {
        name: "provider_event_keys",
        columns: &[("tenant_id", Text), ("key", Text), ("event_id", Text)],
        select: None,
    },
    Table {
        name: "provider_payloads",
        columns: &[
            ("tenant_id", Text),
            ("event_id", Text),
            ("source_id", Text),
            ("payload", Bytes),
        ],
        select: None,
    },
    Table {
        name: "delivery_stats",
        columns: &[
            ("tenant_id", Text),
            ("hour", Int),
            ("stream", Text),
            ("campaign", Text),
            ("tag", Text),
            ("reason", Text),
            ("metric", Text),
            ("deliveries", Int),
        ],
        select: None,
    },
    Table {
        name: "delivery_stats_domains",
        columns: &[
            ("tenant_id", Text),
            ("day", Int),
            ("domain", Text),
            ("metric", Text),
            ("deliveries", Int),
        ],
        select: None,
    },
];

/// The PostgreSQL-only table of event keys, written beside `events`.
const EVENT_KEYS: &str = "event_keys";
const EVENT_KEY_COLUMNS: &[(&str, Kind)] = &[("tenant_id", Text), ("kind", Text), ("key", Text)];

/// The PostgreSQL-only table of DKIM keys (files in the data directory on
/// SQLite), written after the store's tables.
const DKIM_KEYS: &str = "dkim_keys";

/// PostgreSQL takes at most 65,535 parameters in one statement.
const MAX_PARAMETERS: usize = 65_535;
/// Rows in one INSERT, at most: large enough that round trips do not
/// dominate, small enough that a batch is a small part of memory.
const MAX_BATCH_ROWS: usize = 1_000;
/// A batch is sent early once its values hold this many bytes (messages
/// and received mail carry their bodies and raw bytes).
const MAX_BATCH_BYTES: usize = 4 << 20;
/// How long the copy waits for the target's tables: a node still running
/// on the target holds them, and the copy says so instead of hanging.
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// Copies the embedded store in `data_dir` into the PostgreSQL database at
/// `url`, which must hold no Posthorn rows (its schema is made or brought
/// up to date by [`PgStore::connect`]), with `dkim_keys`, the data
/// directory's DKIM keys as the caller read them (on SQLite they are files,
/// which the server's `dkim` module reads and checks), in the same
/// transaction. Calls `progress` as rows go, and returns what was copied
/// once the counts of every table matched and the copy committed. On any
/// failure nothing is left in the target.
///
/// Blocking, with the synchronous `postgres` client: call it from a plain
/// thread (or `spawn_blocking`), never on an async worker.
pub fn copy_sqlite_to_postgres(
    data_dir: &Path,
    url: &str,
    dkim_keys: &[DkimKeyRecord],
    progress: &mut dyn FnMut(CopyProgress),
) -> StoreResult<CopyReport> {
    let mut source = open_source(data_dir)?;
    // One read transaction: every count and every row from one snapshot.
    let snapshot = source.transaction()?;
    let mut totals = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        totals.push(count_source(&snapshot, table.name)?);
    }
    let events = count_source(&snapshot, EVENTS)?;
    let external: i64 = snapshot.query_row(
        "SELECT COUNT(*) FROM events WHERE external_id IS NOT NULL",
        [],
        |r| r.get(0),
    )?;

    let store = PgStore::connect(url, &StoreConfig::default(), StoreRules::default())?;
    let target = store.target().to_owned();
    let mut client = store.plain_client()?;
    drop(store);
    let in_target = |e: StoreError| match e {
        StoreError::Backend(source) => StoreError::backend(format!(
            "copying into PostgreSQL at {target}: {}",
            server_words(&*source)
        )),
        other => other,
    };

    // The ids whose positions number the events, lowest first: those of
    // empty transactions committed now, then the copy's own (see the
    // module's documentation).
    let transactions = events.div_ceil(u64::from(EVENTS_PER_TRANSACTION)).max(1);
    let mut xids = Vec::with_capacity(transactions as usize);
    for _ in 1..transactions {
        xids.push(current_xid(&mut client).map_err(in_target)?);
    }
    let mut tx = client.transaction().map_err(StoreError::from)?;
    lock_empty_target(&mut tx, &target).map_err(in_target)?;
    xids.push(current_xid(&mut tx).map_err(in_target)?);
    make_partitions(&snapshot, &mut tx).map_err(in_target)?;

    let mut tables = Vec::with_capacity(TABLES.len() + 1);
    for (table, &total) in TABLES.iter().zip(&totals) {
        if table.name == EVENTS {
            let (copied, keys) =
                copy_events(&snapshot, &mut tx, &xids, total, progress).map_err(in_target)?;
            tables.push((EVENTS, copied));
            tables.push((EVENT_KEYS, keys));
        } else {
            let copied =
                copy_table(&snapshot, &mut tx, table, total, progress).map_err(in_target)?;
            tables.push((table.name, copied));
        }
    }

    let keys = copy_dkim_keys(&mut tx, dkim_keys, progress).map_err(in_target)?;
    tables.push((DKIM_KEYS, keys));

    // Every table holds in the target what it holds in the source (and
    // event_keys one key per event and per external id), checked inside
    // the copy's transaction: a mismatch commits nothing.
    let mut expected: Vec<(&'static str, u64)> = TABLES
        .iter()
        .map(|t| t.name)
        .zip(totals.iter().copied())
        .collect();
    expected.push((EVENT_KEYS, events + external as u64));
    expected.push((DKIM_KEYS, dkim_keys.len() as u64));
    let mut mismatches = Vec::new();
    for (table, want) in &expected {
        let found: i64 = tx
            .query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])
            .map_err(|e| in_target(e.into()))?
            .get(0);
        if found as u64 != *want {
            mismatches.push(format!(
                "{table}: {want} in the source, {found} in the target"
            ));
        }
    }
    if !mismatches.is_empty() {
        return Err(StoreError::backend(format!(
            "the copy into {target} was rolled back, its counts differ: {}",
            mismatches.join("; ")
        )));
    }
    tx.commit().map_err(|e| in_target(e.into()))?;
    Ok(CopyReport { target, tables })
}

/// A failure in the server's own words where it has some: the driver's
/// text of a database error is only "db error", and the operator needs
/// the message (which value, which constraint) to fix the source.
fn server_words(e: &(dyn std::error::Error + 'static)) -> String {
    match e
        .downcast_ref::<::postgres::Error>()
        .and_then(|pg| pg.as_db_error())
    {
        Some(db) => {
            let mut words = db.message().to_owned();
            if let Some(detail) = db.detail() {
                words = format!("{words} ({detail})");
            }
            if let Some(table) = db.table() {
                words = format!("{table}: {words}");
            }
            words
        }
        None => e.to_string(),
    }
}

/// The SQLite database of `data_dir`, opened read-only (nothing is
/// created, nothing migrated), at the schema version this build writes.
fn open_source(data_dir: &Path) -> StoreResult<Connection> {
    let path = data_dir.join(DATABASE_FILE);
    if !path.is_file() {
        return Err(StoreError::backend(format!(
            "there is no Posthorn store in {} ({} does not exist)",
            data_dir.display(),
            path.display()
        )));
    }
    let conn = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::backend(format!("opening {}: {e}", path.display())))?;
    // A server still running on it may hold the database for a moment.
    conn.busy_timeout(Duration::from_secs(10))?;
    let version: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(|e| {
            StoreError::backend(format!("{} is not a Posthorn store: {e}", path.display()))
        })?;
    let current = crate::sqlite::MIGRATIONS.len() as i64;
    if version < current {
        return Err(StoreError::backend(format!(
            "the store in {} is at schema version {version}, this posthorn copies version {current}: \
             start `posthorn serve` on it once (it migrates at start), stop it, then copy",
            data_dir.display()
        )));
    }
    if version > current {
        return Err(StoreError::backend(format!(
            "the store in {} is at schema version {version}, newer than this posthorn knows \
             ({current}): copy it with the posthorn that wrote it",
            data_dir.display()
        )));
    }
    Ok(conn)
}

fn count_source(source: &Connection, table: &str) -> StoreResult<u64> {
    let n: i64 = source.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?;
    Ok(n as u64)
}

/// Locks every table of the target against writers until the copy ends
/// (so that none can add a row between the check and the commit), then
/// refuses the target if any holds a row.
fn lock_empty_target(tx: &mut Transaction<'_>, target: &str) -> StoreResult<()> {
    let mut names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
    names.push(EVENT_KEYS);
    names.push(DKIM_KEYS);
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = '{}ms'",
        LOCK_TIMEOUT.as_millis()
    ))?;
    tx.batch_execute(&format!(
        "LOCK TABLE {} IN EXCLUSIVE MODE",
        names.join(", ")
    ))
    .map_err(|e| {
        StoreError::backend(format!(
            "the tables of {target} stay locked by another session (is a Posthorn node running on it?): {e}"
        ))
    })?;
    tx.batch_execute("SET LOCAL lock_timeout = 0")?;
    let mut holding = Vec::new();
    for name in names {
        let any: bool = tx
            .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {name})"), &[])?
            .get(0);
        if any {
            holding.push(name);
        }
    }
    if !holding.is_empty() {
        return Err(StoreError::Conflict(format!(
            "PostgreSQL at {target} is not empty (rows in {}): `store copy` fills only an empty \
             database; nothing was changed",
            holding.join(", ")
        )));
    }
    Ok(())
}

/// Copies the data directory's DKIM keys (a handful: one statement each);
/// returns how many. Two keys for one domain and selector (two files whose
/// names differ only in case) stop the copy: which one signs would be a
/// guess.
fn copy_dkim_keys(
    tx: &mut Transaction<'_>,
    keys: &[DkimKeyRecord],
    progress: &mut dyn FnMut(CopyProgress),
) -> StoreResult<u64> {
    let total = keys.len() as u64;
    for key in keys {
        if !crate::postgres::dkim::insert(tx, key)? {
            return Err(StoreError::backend(format!(
                "two DKIM keys for {} with selector `{}` in the data directory: keep one",
                key.domain, key.selector
            )));
        }
    }
    progress(CopyProgress {
        table: DKIM_KEYS,
        copied: total,
        total,
    });
    Ok(total)
}

/// Makes the monthly partitions of `events` for every month the copied
/// events were recorded in, so that they land in their own partitions
/// rather than the default one.
fn make_partitions(source: &Connection, tx: &mut Transaction<'_>) -> StoreResult<()> {
    let (first, last): (Option<i64>, Option<i64>) = source.query_row(
        "SELECT MIN(recorded_at), MAX(recorded_at) FROM events",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let (Some(first), Some(last)) = (first, last) else {
        return Ok(());
    };
    tx.execute(
        "SELECT posthorn_event_partitions($1::bigint, \
            ((extract(year FROM hi) - extract(year FROM lo)) * 12 \
             + extract(month FROM hi) - extract(month FROM lo))::integer) \
         FROM (SELECT to_timestamp($1::bigint / 1000.0) AT TIME ZONE 'UTC' AS lo, \
                      to_timestamp($2::bigint / 1000.0) AT TIME ZONE 'UTC' AS hi) AS months",
        &[&first, &last],
    )?;
    Ok(())
}

/// Copies one table as it is (converting types); returns its rows.
fn copy_table(
    source: &Connection,
    tx: &mut Transaction<'_>,
    table: &Table,
    total: u64,
    progress: &mut dyn FnMut(CopyProgress),
) -> StoreResult<u64> {
    let select = match table.select {
        Some(select) => select.to_owned(),
        None => {
            let names: Vec<&str> = table.columns.iter().map(|(name, _)| *name).collect();
            format!("SELECT {} FROM {}", names.join(", "), table.name)
        }
    };
    let mut batch = Batch::new(table.name, table.columns.to_vec());
    let mut stmt = source.prepare(&select)?;
    let mut rows = stmt.query([])?;
    let mut copied = 0;
    while let Some(row) = rows.next()? {
        let values = read_row(table.name, table.columns, row)?;
        if let Some(sent) = batch.push(tx, values)? {
            copied += sent;
            progress(CopyProgress {
                table: table.name,
                copied,
                total,
            });
        }
    }
    copied += batch.flush(tx)?;
    progress(CopyProgress {
        table: table.name,
        copied,
        total,
    });
    Ok(copied)
}

/// Copies the events in SQLite `seq` order, numbering them with positions
/// of `xids` (2^20 events per id, lowest first), and their keys; returns
/// the events and the keys written.
fn copy_events(
    source: &Connection,
    tx: &mut Transaction<'_>,
    xids: &[i64],
    total: u64,
    progress: &mut dyn FnMut(CopyProgress),
) -> StoreResult<(u64, u64)> {
    let mut columns = vec![("seq", Int)];
    columns.extend_from_slice(EVENT_COLUMNS);
    let mut events = Batch::new(EVENTS, columns);
    let mut keys = Batch::new(EVENT_KEYS, EVENT_KEY_COLUMNS.to_vec());
    let names: Vec<&str> = EVENT_COLUMNS.iter().map(|(name, _)| *name).collect();
    let mut stmt = source.prepare(&format!(
        "SELECT {} FROM events ORDER BY seq",
        names.join(", ")
    ))?;
    let mut rows = stmt.query([])?;
    let per_transaction = u64::from(EVENTS_PER_TRANSACTION);
    let (mut n, mut copied, mut keys_written) = (0u64, 0u64, 0u64);
    while let Some(row) = rows.next()? {
        let xid = *xids
            .get((n / per_transaction) as usize)
            .ok_or_else(|| StoreError::backend("more events than when they were counted"))?;
        let seq = event_position(xid, (n % per_transaction) as u32)?;
        n += 1;
        let mut values = vec![Value::Int(Some(seq))];
        values.extend(read_row(EVENTS, EVENT_COLUMNS, row)?);
        // values: seq, id, tenant_id, ..., external_id at 12.
        let (Value::Text(Some(id)), Value::Text(Some(tenant)), Value::Text(external)) =
            (&values[1], &values[2], &values[12])
        else {
            return Err(StoreError::backend(
                "an event without an id or a tenant in the source",
            ));
        };
        let key = |kind: &str, key: &str| {
            vec![
                Value::Text(Some(tenant.clone())),
                Value::Text(Some(kind.to_owned())),
                Value::Text(Some(key.to_owned())),
            ]
        };
        let id_key = key("id", id);
        let external_key = external.as_deref().map(|e| key("external", e));
        // Events before their keys, batch by batch: a key's batch is never
        // sent ahead of its event's (nothing refers to them, but the order
        // keeps a failure's message about the event itself).
        if let Some(sent) = events.push(tx, values)? {
            copied += sent;
            progress(CopyProgress {
                table: EVENTS,
                copied,
                total,
            });
        }
        keys_written += keys.push(tx, id_key)?.unwrap_or(0);
        if let Some(external_key) = external_key {
            keys_written += keys.push(tx, external_key)?.unwrap_or(0);
        }
    }
    copied += events.flush(tx)?;
    keys_written += keys.flush(tx)?;
    progress(CopyProgress {
        table: EVENTS,
        copied,
        total,
    });
    Ok((copied, keys_written))
}

/// One value to bind, typed as its column is in PostgreSQL (a NULL too:
/// `None` of the right type).
#[derive(Debug)]
enum Value {
    Text(Option<String>),
    Int(Option<i64>),
    Bool(Option<bool>),
    Bytes(Option<Vec<u8>>),
}

impl Value {
    fn sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Value::Text(v) => v,
            Value::Int(v) => v,
            Value::Bool(v) => v,
            Value::Bytes(v) => v,
        }
    }

    /// Roughly the bytes it holds, for the batch's size.
    fn size(&self) -> usize {
        match self {
            Value::Text(Some(s)) => s.len(),
            Value::Bytes(Some(b)) => b.len(),
            _ => 8,
        }
    }
}

fn read_row(
    table: &str,
    columns: &[(&str, Kind)],
    row: &rusqlite::Row<'_>,
) -> StoreResult<Vec<Value>> {
    let mut values = Vec::with_capacity(columns.len());
    for (at, (column, kind)) in columns.iter().enumerate() {
        values.push(convert(table, column, *kind, row.get_ref(at)?)?);
    }
    Ok(values)
}

/// A SQLite value as its PostgreSQL column takes it; a value of another
/// type than the column's fails the copy, naming where it is.
fn convert(table: &str, column: &str, kind: Kind, value: ValueRef<'_>) -> StoreResult<Value> {
    let unexpected = || {
        StoreError::backend(format!(
            "{table}.{column} holds a {} value where {kind:?} was expected",
            value.data_type()
        ))
    };
    let text = |bytes: &[u8]| {
        String::from_utf8(bytes.to_vec()).map_err(|_| {
            StoreError::backend(format!("{table}.{column} holds text that is not UTF-8"))
        })
    };
    Ok(match (kind, value) {
        (Text | Json, ValueRef::Null) => Value::Text(None),
        (Text | Json, ValueRef::Text(bytes)) => Value::Text(Some(text(bytes)?)),
        (Int, ValueRef::Null) => Value::Int(None),
        (Int, ValueRef::Integer(i)) => Value::Int(Some(i)),
        (Bool, ValueRef::Null) => Value::Bool(None),
        (Bool, ValueRef::Integer(i)) => Value::Bool(Some(i != 0)),
        (Bytes, ValueRef::Null) => Value::Bytes(None),
        (Bytes, ValueRef::Blob(bytes) | ValueRef::Text(bytes)) => {
            Value::Bytes(Some(bytes.to_vec()))
        }
        _ => return Err(unexpected()),
    })
}

/// Rows of one table waiting to be sent as one multi-row INSERT.
struct Batch {
    table: &'static str,
    columns: Vec<(&'static str, Kind)>,
    values: Vec<Value>,
    rows: usize,
    bytes: usize,
    max_rows: usize,
}

impl Batch {
    fn new(table: &'static str, columns: Vec<(&'static str, Kind)>) -> Batch {
        let max_rows = (MAX_PARAMETERS / columns.len()).min(MAX_BATCH_ROWS);
        Batch {
            table,
            columns,
            values: Vec::new(),
            rows: 0,
            bytes: 0,
            max_rows,
        }
    }

    /// Adds a row; sends the batch when it is full. Returns the rows sent,
    /// if it sent.
    fn push(&mut self, tx: &mut Transaction<'_>, row: Vec<Value>) -> StoreResult<Option<u64>> {
        debug_assert_eq!(row.len(), self.columns.len());
        self.bytes += row.iter().map(Value::size).sum::<usize>();
        self.values.extend(row);
        self.rows += 1;
        if self.rows >= self.max_rows || self.bytes >= MAX_BATCH_BYTES {
            return self.flush(tx).map(Some);
        }
        Ok(None)
    }

    /// Sends the rows waiting, if any; returns how many.
    fn flush(&mut self, tx: &mut Transaction<'_>) -> StoreResult<u64> {
        if self.rows == 0 {
            return Ok(0);
        }
        let sql = insert_sql(self.table, &self.columns, self.rows);
        let params: Vec<&(dyn ToSql + Sync)> = self.values.iter().map(Value::sql).collect();
        let inserted = tx.execute(&sql, &params)?;
        if inserted != self.rows as u64 {
            return Err(StoreError::backend(format!(
                "{}: {} rows sent, {inserted} inserted",
                self.table, self.rows
            )));
        }
        self.values.clear();
        self.rows = 0;
        self.bytes = 0;
        Ok(inserted)
    }
}

/// `INSERT INTO table (columns) VALUES ($1, $2, ...), (...)` for `rows`
/// rows; JSON is bound as text and cast, so it is stored as written.
fn insert_sql(table: &str, columns: &[(&str, Kind)], rows: usize) -> String {
    let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
    let mut sql = format!("INSERT INTO {table} ({}) VALUES ", names.join(", "));
    let mut parameter = 0;
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for (at, (_, kind)) in columns.iter().enumerate() {
            parameter += 1;
            if at > 0 {
                sql.push_str(", ");
            }
            let _ = match kind {
                Json => write!(sql, "${parameter}::text::jsonb"),
                _ => write!(sql, "${parameter}"),
            };
        }
        sql.push(')');
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_insert_numbers_its_parameters_across_rows_and_casts_json() {
        let sql = insert_sql("t", &[("a", Text), ("b", Json)], 2);
        assert_eq!(
            sql,
            "INSERT INTO t (a, b) VALUES ($1, $2::text::jsonb), ($3, $4::text::jsonb)"
        );
    }

    #[test]
    fn a_batch_never_binds_more_parameters_than_postgres_takes() {
        for table in TABLES {
            let batch = Batch::new(table.name, table.columns.to_vec());
            assert!(batch.max_rows * table.columns.len() <= MAX_PARAMETERS);
            assert!(batch.max_rows > 0);
        }
    }

    #[test]
    fn every_table_of_the_sqlite_schema_is_copied_with_every_column() {
        // The SQLite schema as this build migrates it: a table or column
        // added later must be added here too, or this fails.
        let conn = Connection::open_in_memory().unwrap();
        for sql in crate::sqlite::MIGRATIONS {
            conn.execute_batch(sql).unwrap();
        }
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap();
        let tables: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let not_copied = ["event_sequence", "schema_migrations"];
        for name in tables.iter().filter(|t| !not_copied.contains(&t.as_str())) {
            let table = TABLES
                .iter()
                .find(|t| t.name == name)
                .unwrap_or_else(|| panic!("table {name} is not copied"));
            let mut stmt = conn
                .prepare(&format!("SELECT name FROM pragma_table_info('{name}')"))
                .unwrap();
            let mut columns: Vec<String> = stmt
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            if name == EVENTS {
                // Renumbered: `seq` is written, not copied.
                columns.retain(|c| c != "seq");
            }
            let mut copied: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
            columns.sort();
            copied.sort();
            assert_eq!(columns, copied, "columns of {name}");
        }
        let copied = tables.iter().filter(|t| !not_copied.contains(&t.as_str()));
        assert_eq!(
            TABLES.len(),
            copied.count(),
            "a table copied is not in the schema"
        );
    }
}
