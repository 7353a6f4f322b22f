//! The SQLite implementation of [`Store`]: one database file in WAL mode, one
//! writer thread with group commit ([`writer`]), a small pool of read
//! connections, and migrations under `migrations/sqlite/`.
//!
//! Where things are: every write is the engine's (`crate::engine`), run
//! by the writer in its batch transaction through `tx`, the engine's
//! statements in SQLite's SQL; `reads` holds the SELECTs and row mapping
//! (readers and `tx` both use them), `domains`, `inbound`, `ingest` and
//! `tracking` those for their part of the schema; `error` maps SQLite's
//! failures onto [`StoreError`] kinds; `wal_buffer` and `checkpoint` look
//! after the log file.

mod checkpoint;
mod domains;
mod error;
mod inbound;
mod ingest;
mod reads;
mod tracking;
mod tx;
mod wal_buffer;
mod writer;

use crate::engine;
use crate::feed::CommitFeed;
use crate::ingest::*;
use crate::records::*;
use crate::{Store, StoreError, StoreResult, StoreRules};
use async_trait::async_trait;
use posthorn_core::config::{StoreConfig, Synchronous};
use posthorn_core::domain::DomainOwner;
use posthorn_core::id::{ApiKeyId, InboundId, IngestSourceId};
use posthorn_core::suppression::SuppressionEntry;
use posthorn_core::{DeliveryId, EventId, MessageId, Millis, NodeId, TenantId};
use rusqlite::{CachedStatement, Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tx::SqliteTx;
use writer::Writer;

/// Prepares (or reuses) a statement. Placeholders are written `$1`, `$2`, ...
/// so the same SQL text serves PostgreSQL; SQLite numbers named parameters by
/// first appearance, so debug builds check that they first appear in order.
pub(crate) fn prepare<'c>(
    conn: &'c Connection,
    sql: &str,
) -> rusqlite::Result<CachedStatement<'c>> {
    let stmt = conn.prepare_cached(sql)?;
    #[cfg(debug_assertions)]
    for i in 1..=stmt.parameter_count() {
        let want = format!("${i}");
        assert_eq!(
            stmt.parameter_name(i),
            Some(want.as_str()),
            "placeholder order in: {sql}"
        );
    }
    Ok(stmt)
}

/// Migrations in order; the version is the position (1-based). `copy`
/// checks that a store it reads has them all.
pub(crate) const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_init.sql"),
    include_str!("../../migrations/sqlite/0002_delivery.sql"),
    include_str!("../../migrations/sqlite/0003_raw_messages.sql"),
    include_str!("../../migrations/sqlite/0004_inbound.sql"),
    include_str!("../../migrations/sqlite/0005_tracking.sql"),
    include_str!("../../migrations/sqlite/0006_events_recipient_via_deliveries.sql"),
    include_str!("../../migrations/sqlite/0007_sending_domains.sql"),
    include_str!("../../migrations/sqlite/0008_repeated_hits.sql"),
    include_str!("../../migrations/sqlite/0009_event_sequence.sql"),
    include_str!("../../migrations/sqlite/0010_rfc3463_enhanced_codes.sql"),
    include_str!("../../migrations/sqlite/0011_provider_ingest.sql"),
    include_str!("../../migrations/sqlite/0012_delivery_stats.sql"),
];

/// The file name of the database inside the data directory.
pub const DATABASE_FILE: &str = "posthorn.db";

pub struct SqliteStore {
    writer: Writer,
    _checkpointer: checkpoint::Checkpointer,
    reads: ReadPool,
    rules: StoreRules,
    feed: Arc<CommitFeed>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database in `data_dir`, runs pending
    /// migrations and starts the writer.
    pub fn open(data_dir: &Path, config: &StoreConfig, rules: StoreRules) -> StoreResult<Self> {
        create_private_dir(data_dir)
            .map_err(|e| StoreError::backend(format!("creating {}: {e}", data_dir.display())))?;
        let path = data_dir.join(DATABASE_FILE);
        create_private_file(&path)
            .map_err(|e| StoreError::backend(format!("creating {}: {e}", path.display())))?;
        let conn = open_connection(&path, config.synchronous, false)?;
        migrate(&conn)?;
        // Checkpoints run on their own thread, never inside a group commit.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let restart = checkpoint::RestartRequest::default();
        let checkpointer = checkpoint::Checkpointer::start(
            open_connection(&path, config.synchronous, false)?,
            std::fs::File::open(&path)
                .map_err(|e| StoreError::backend(format!("opening {}: {e}", path.display())))?,
            restart.clone(),
        );
        let feed = Arc::new(CommitFeed::default());
        Ok(Self {
            writer: Writer::start(conn, config.max_batch, restart, feed.clone())?,
            _checkpointer: checkpointer,
            reads: ReadPool {
                path,
                synchronous: config.synchronous,
                idle: Mutex::new(Vec::new()),
                permits: tokio::sync::Semaphore::new(config.read_connections.max(1)),
            },
            rules,
            feed,
        })
    }

    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.reads.run(f).await
    }

    /// Runs a write of the engine in the writer's next batch.
    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&mut dyn engine::WriteTx) -> StoreResult<T> + Send + 'static,
    {
        self.writer
            .write(move |batch| f(&mut SqliteTx::new(batch)))
            .await
    }
}

/// Creates the data directory (and missing parents) readable only by its
/// owner; an existing one is left as it is (the server tightens it).
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Creates the database file empty and readable only by its owner, if it
/// does not exist. SQLite would create it 0644 (less the umask), and it
/// gives the `-wal` and `-shm` files the database file's mode, so this one
/// mode keeps all three private. An empty file is a new database to SQLite.
fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    // Never truncated: an existing database is opened as it is.
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map(drop)
}

/// Opens a connection with the settings every Posthorn connection uses.
fn open_connection(
    path: &Path,
    synchronous: Synchronous,
    read_only: bool,
) -> StoreResult<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    // With FULL, log writes are gathered per commit (see `wal_buffer`).
    let conn = match synchronous {
        Synchronous::Full => {
            wal_buffer::register().map_err(StoreError::backend)?;
            Connection::open_with_flags_and_vfs(path, flags, wal_buffer::VFS_NAME)?
        }
        Synchronous::Normal => Connection::open_with_flags(path, flags)?,
    };
    // Other processes (the CLI's `keys` commands) may write too: wait for
    // them instead of failing at once.
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    if !read_only {
        // Only takes effect when the file is created. 2 KiB pages: a group
        // commit touches many index leaves at random (one per delivery and
        // per recipient), and each is written whole to the log; measured
        // faster than 1 KiB and 4 KiB (docs/benchmarks.md).
        conn.pragma_update(None, "page_size", 2048)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
    }
    let sync = match synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn migrate(conn: &Connection) -> StoreResult<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )?;
    let current: i64 = conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )?;
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let version = index as i64 + 1;
        if version <= current {
            continue;
        }
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        if version == STATS_MIGRATION {
            rebuild_stats(&tx)?;
        }
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, strftime('%s','now') * 1000)",
            [version],
        )?;
        tx.commit()?;
        tracing::info!(version, "applied database migration");
    }
    Ok(())
}

/// The migration that adds the statistics (0012): deliveries stored before
/// it are counted as it runs, in its transaction.
const STATS_MIGRATION: i64 = 12;

/// Counts every delivery stored so far (see `engine::stats::Rebuild`) and
/// stores what each was seen to do.
fn rebuild_stats(c: &Connection) -> StoreResult<()> {
    let mut rebuild = engine::stats::Rebuild::default();
    let mut seen = Vec::new();
    let (deliveries_sql, events_sql) =
        crate::search::rebuild_reads(reads::DELIVERY_COLUMNS, reads::EVENT_COLUMNS);
    let mut deliveries = c.prepare(&deliveries_sql)?;
    let mut events = c.prepare(&events_sql)?;
    let mut rows = deliveries.query([])?;
    while let Some(row) = rows.next()? {
        let d = reads::delivery_row(row)?;
        let tags: Vec<String> = row
            .get::<_, Option<String>>(20)?
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let of_delivery: Vec<EventRecord> = events
            .query_map(
                rusqlite::params![
                    d.id.as_str(),
                    d.delivery_event_id.as_ref().map(|e| e.as_str())
                ],
                reads::event_row,
            )?
            .collect::<Result<_, _>>()?;
        let s = rebuild.add(&d, &tags, &of_delivery);
        if s != Default::default() {
            seen.push((d.id.clone(), s));
        }
    }
    drop(rows);
    let mut set_seen = c.prepare("UPDATE deliveries SET seen = $1 WHERE id = $2")?;
    for (id, s) in &seen {
        set_seen.execute(rusqlite::params![s.bits(), id.as_str()])?;
    }
    for (tenant, (changes, domains)) in rebuild.into_changes() {
        tx::add_stats(c, &tenant, &changes, &domains)?;
    }
    Ok(())
}

/// Read connections, reused; reads run on the blocking thread pool so they
/// never stall the async runtime. WAL lets them run beside the writer.
/// At most `read_connections` reads run at once, each on a connection of
/// its own; the others wait for one to be free. (Opening a connection for a
/// burst of reads costs more than the read: the schema is parsed and every
/// statement prepared again.)
struct ReadPool {
    path: PathBuf,
    synchronous: Synchronous,
    idle: Mutex<Vec<Connection>>,
    permits: tokio::sync::Semaphore,
}

impl ReadPool {
    async fn run<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        // A permit per connection: holding one means a connection is idle
        // or may be opened.
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::closed())?;
        let conn = self.idle.lock().map_err(|_| StoreError::closed())?.pop();
        let conn = match conn {
            Some(c) => c,
            None => open_connection(&self.path, self.synchronous, true)?,
        };
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let result = f(&conn);
            (conn, result)
        })
        .await
        .map_err(|e| StoreError::backend(format!("read task: {e}")))?;
        self.idle
            .lock()
            .map_err(|_| StoreError::closed())?
            .push(conn);
        result
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_tenant(&self, name: &str, now: Millis) -> StoreResult<Tenant> {
        let name = name.to_owned();
        self.write(move |tx| engine::create_tenant(tx, &name, now))
            .await
    }

    async fn tenant_by_name(&self, name: &str) -> StoreResult<Option<Tenant>> {
        let name = name.to_owned();
        self.read(move |c| reads::tenant_by_name(c, &name)).await
    }

    async fn tenant_count(&self) -> StoreResult<u64> {
        self.read(|c| {
            Ok(c.query_row("SELECT COUNT(*) FROM tenants", [], |r| r.get::<_, i64>(0))? as u64)
        })
        .await
    }

    async fn tenant(&self, id: &TenantId) -> StoreResult<Option<Tenant>> {
        let id = id.clone();
        self.read(move |c| reads::tenant_by_id(c, &id)).await
    }

    async fn update_tenant_settings(
        &self,
        tenant: &TenantId,
        patch: TenantSettingsPatch,
    ) -> StoreResult<Option<Tenant>> {
        let tenant = tenant.clone();
        self.write(move |tx| {
            tx.update_tenant_settings(&tenant, &patch)?;
            tx.tenant(&tenant)
        })
        .await
    }

    async fn insert_api_key(&self, key: NewApiKey) -> StoreResult<ApiKeyRecord> {
        self.write(move |tx| engine::insert_api_key(tx, &key)).await
    }

    async fn api_key(&self, id: &ApiKeyId) -> StoreResult<Option<(ApiKeyRecord, Tenant)>> {
        let id = id.clone();
        self.read(move |c| reads::api_key_with_tenant(c, &id)).await
    }

    async fn api_keys(&self, tenant: Option<&TenantId>) -> StoreResult<Vec<ApiKeyRecord>> {
        let tenant = tenant.cloned();
        self.read(move |c| reads::api_keys(c, tenant.as_ref()))
            .await
    }

    async fn revoke_api_key(&self, id: &ApiKeyId, now: Millis) -> StoreResult<bool> {
        let id = id.clone();
        self.write(move |tx| tx.revoke_api_key(&id, now)).await
    }

    async fn claim_sending_domain(
        &self,
        tenant: &TenantId,
        domain: &str,
        now: Millis,
    ) -> StoreResult<DomainClaim> {
        let (tenant, domain) = (tenant.clone(), domain.to_owned());
        self.write(move |tx| engine::claim_sending_domain(tx, &tenant, &domain, now))
            .await
    }

    async fn sending_domains(&self, tenant: Option<&TenantId>) -> StoreResult<Vec<SendingDomain>> {
        let tenant = tenant.cloned();
        self.read(move |c| domains::list(c, tenant.as_ref())).await
    }

    async fn release_sending_domain(&self, tenant: &TenantId, domain: &str) -> StoreResult<bool> {
        let (tenant, domain) = (tenant.clone(), domain.to_owned());
        self.write(move |tx| tx.delete_sending_domain(&tenant, &domain))
            .await
    }

    async fn domain_owners(&self, domains: &[&str]) -> StoreResult<Vec<DomainOwner>> {
        let candidates = engine::domain_candidates(domains);
        self.read(move |c| domains::owners(c, &candidates)).await
    }

    async fn accept_message(&self, message: NewMessage) -> StoreResult<AcceptOutcome> {
        let rules = self.rules;
        self.write(move |tx| engine::accept_message(tx, &rules, &message))
            .await
    }

    async fn record_event(&self, tenant: &TenantId, event: NewEvent) -> StoreResult<RecordOutcome> {
        let rules = self.rules;
        let tenant = tenant.clone();
        self.write(move |tx| engine::record_event(tx, &rules, &tenant, &event))
            .await
    }

    async fn events_after(
        &self,
        tenant: &TenantId,
        after: i64,
        filters: &posthorn_core::search::Filters,
        limit: u32,
    ) -> StoreResult<Vec<EventRecord>> {
        let page = crate::search::EventPage::Committed {
            after,
            settled_below: None,
        };
        let sql = crate::search::events_page(
            crate::search::Dialect::Sqlite,
            reads::EVENT_COLUMNS,
            tenant,
            filters,
            page,
            limit,
        );
        self.read(move |c| reads::search(c, &sql, reads::event_row))
            .await
    }

    async fn event(&self, tenant: &TenantId, id: &EventId) -> StoreResult<Option<EventRecord>> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.read(move |c| reads::event_by_id(c, &tenant, &id))
            .await
    }

    async fn message(
        &self,
        tenant: &TenantId,
        id: &MessageId,
    ) -> StoreResult<Option<MessageRecord>> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.read(move |c| reads::message(c, &tenant, &id)).await
    }

    async fn deliveries_of_message(
        &self,
        tenant: &TenantId,
        id: &MessageId,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.read(move |c| reads::deliveries_of_message(c, &tenant, &id))
            .await
    }

    async fn commit_position(&self) -> StoreResult<i64> {
        self.read(|c| {
            Ok(prepare(c, "SELECT COALESCE(MAX(seq), 0) FROM events")?
                .query_row([], |r| r.get(0))?)
        })
        .await
    }

    async fn search_events(
        &self,
        tenant: &TenantId,
        filters: &posthorn_core::search::Filters,
        after: Option<&EventId>,
        limit: u32,
    ) -> StoreResult<Vec<EventRecord>> {
        let sql = crate::search::events_page(
            crate::search::Dialect::Sqlite,
            reads::EVENT_COLUMNS,
            tenant,
            filters,
            crate::search::EventPage::ById(after),
            limit,
        );
        self.read(move |c| reads::search(c, &sql, reads::event_row))
            .await
    }

    async fn search_deliveries(
        &self,
        tenant: &TenantId,
        filters: &posthorn_core::search::Filters,
        after: Option<&DeliveryId>,
        limit: u32,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        let sql = crate::search::deliveries_page(
            crate::search::Dialect::Sqlite,
            reads::DELIVERY_COLUMNS,
            tenant,
            filters,
            after.map(DeliveryId::as_str),
            limit,
        );
        self.read(move |c| reads::search(c, &sql, reads::delivery_row))
            .await
    }

    async fn delivery_stats(
        &self,
        tenant: &TenantId,
        query: &StatsQuery,
    ) -> StoreResult<Vec<StatsCount>> {
        let sql = crate::search::stats_counts(tenant, query);
        self.read(move |c| reads::search(c, &sql, reads::stats_count_row))
            .await
    }

    async fn delivery_status_counts(
        &self,
        tenant: &TenantId,
        filters: &posthorn_core::search::Filters,
    ) -> StoreResult<Vec<StatusCount>> {
        let sql = crate::search::delivery_counts(crate::search::Dialect::Sqlite, tenant, filters);
        self.read(move |c| reads::search(c, &sql, reads::status_count_row))
            .await
    }

    async fn delivery(
        &self,
        tenant: &TenantId,
        id: &DeliveryId,
    ) -> StoreResult<Option<DeliveryRecord>> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.read(move |c| reads::delivery(c, &tenant, &id)).await
    }

    async fn message_engagement_events(
        &self,
        tenant: &TenantId,
        message: &MessageId,
    ) -> StoreResult<Vec<EventRecord>> {
        let (tenant, message) = (tenant.clone(), message.clone());
        self.read(move |c| reads::message_engagement_events(c, &tenant, &message))
            .await
    }

    async fn delivery_events(
        &self,
        tenant: &TenantId,
        id: &DeliveryId,
    ) -> StoreResult<Vec<EventRecord>> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.read(move |c| reads::delivery_events(c, &tenant, &id))
            .await
    }

    async fn delivery_events_page(
        &self,
        tenant: &TenantId,
        id: &DeliveryId,
        after: Option<&EventId>,
        limit: u32,
    ) -> StoreResult<Vec<EventRecord>> {
        let (tenant, id, after) = (tenant.clone(), id.clone(), after.cloned());
        self.read(move |c| reads::delivery_events_page(c, &tenant, &id, after.as_ref(), limit))
            .await
    }

    async fn delivery_engagement_events(
        &self,
        tenant: &TenantId,
        id: &DeliveryId,
    ) -> StoreResult<Vec<EventRecord>> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.read(move |c| reads::delivery_engagement_events(c, &tenant, &id))
            .await
    }

    async fn contact(
        &self,
        tenant: &TenantId,
        address: &str,
    ) -> StoreResult<Option<ContactRecord>> {
        let (tenant, address) = (tenant.clone(), address.to_owned());
        self.read(move |c| reads::contact(c, &tenant, &address))
            .await
    }

    async fn put_contact(
        &self,
        tenant: &TenantId,
        address: &str,
        status: ContactInput,
        now: Millis,
    ) -> StoreResult<ContactRecord> {
        let (tenant, address) = (tenant.clone(), address.to_owned());
        self.write(move |tx| engine::put_contact(tx, &tenant, &address, status, now))
            .await
    }

    async fn contact_changes(
        &self,
        tenant: &TenantId,
        address: &str,
    ) -> StoreResult<Vec<ContactChange>> {
        let (tenant, address) = (tenant.clone(), address.to_owned());
        self.read(move |c| reads::contact_changes(c, &tenant, &address))
            .await
    }

    async fn suppressions(
        &self,
        tenant: &TenantId,
        now: Millis,
    ) -> StoreResult<Vec<SuppressionEntry>> {
        let tenant = tenant.clone();
        self.read(move |c| reads::suppressions(c, &tenant, now))
            .await
    }

    async fn queue_len(&self, tenant: &TenantId) -> StoreResult<u64> {
        let tenant = tenant.clone();
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT COUNT(*) FROM send_queue WHERE tenant_id = $1",
                [tenant.as_str()],
                |r| r.get::<_, i64>(0),
            )? as u64)
        })
        .await
    }

    async fn release_leases(&self, node: &NodeId) -> StoreResult<u64> {
        let node = node.clone();
        self.write(move |tx| tx.release_leases(&node)).await
    }

    async fn claim_due(
        &self,
        node: &NodeId,
        now: Millis,
        limit: u32,
        lease_until: Millis,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        let node = node.clone();
        // One writer: no claim ever walks past rows deleted but still
        // visible to an older transaction, so every claim looks at all.
        let window = engine::ClaimWindow { from: 0, now };
        let claimed = self
            .write(move |tx| engine::claim_due(tx, &node, window, limit, lease_until))
            .await?;
        Ok(claimed.deliveries)
    }

    async fn record_attempts(
        &self,
        attempts: Vec<AttemptRecord>,
    ) -> StoreResult<Vec<std::sync::Arc<EventRecord>>> {
        let rules = self.rules;
        self.write(move |tx| engine::record_attempts(tx, &rules, &attempts))
            .await
    }

    async fn delivery_owner(&self, id: &DeliveryId) -> StoreResult<Option<(TenantId, String)>> {
        let id = id.clone();
        self.read(move |c| inbound::delivery_owner(c, &id)).await
    }

    async fn record_inbound(&self, new: NewInbound) -> StoreResult<InboundRecord> {
        let rules = self.rules;
        self.write(move |tx| engine::record_inbound(tx, &rules, &new))
            .await
    }

    async fn inbound_messages(
        &self,
        tenant: Option<&TenantId>,
        filter: &InboundFilter,
    ) -> StoreResult<Vec<InboundRecord>> {
        let (tenant, filter) = (tenant.cloned(), filter.clone());
        self.read(move |c| inbound::inbound_messages(c, tenant.as_ref(), &filter))
            .await
    }

    async fn inbound_raw(
        &self,
        tenant: Option<&TenantId>,
        id: &InboundId,
    ) -> StoreResult<Option<Vec<u8>>> {
        let (tenant, id) = (tenant.cloned(), id.clone());
        self.read(move |c| inbound::inbound_raw(c, tenant.as_ref(), &id))
            .await
    }

    async fn event_inbound(
        &self,
        tenant: &TenantId,
        event: &EventId,
    ) -> StoreResult<Option<InboundId>> {
        let (tenant, event) = (tenant.clone(), event.clone());
        self.read(move |c| inbound::event_inbound(c, &tenant, &event))
            .await
    }

    async fn operator_tenant(&self) -> StoreResult<Option<TenantId>> {
        self.read(inbound::operator_tenant).await
    }

    async fn put_message_links(&self, message: &MessageId, links: Vec<String>) -> StoreResult<()> {
        let message = message.clone();
        self.write(move |tx| tx.insert_message_links(&message, &links))
            .await
    }

    async fn tracking_facts(&self, delivery: &DeliveryId) -> StoreResult<Option<TrackingFacts>> {
        let delivery = delivery.clone();
        self.read(move |c| tracking::tracking_facts(c, &delivery))
            .await
    }

    async fn record_repeated_hit(
        &self,
        tenant: &TenantId,
        hit: NewRepeatedHit,
    ) -> StoreResult<bool> {
        let tenant = tenant.clone();
        self.write(move |tx| tx.count_repeated_hit(&tenant, &hit))
            .await
    }

    async fn delivery_repeated_hits(
        &self,
        tenant: &TenantId,
        id: &DeliveryId,
    ) -> StoreResult<Vec<RepeatedHits>> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.read(move |c| tracking::delivery_repeated_hits(c, &tenant, &id))
            .await
    }

    async fn message_repeated_hits(
        &self,
        tenant: &TenantId,
        message: &MessageId,
    ) -> StoreResult<Vec<RepeatedHits>> {
        let (tenant, message) = (tenant.clone(), message.clone());
        self.read(move |c| tracking::message_repeated_hits(c, &tenant, &message))
            .await
    }

    async fn create_ingest_source(&self, source: IngestSource) -> StoreResult<IngestSource> {
        self.write(move |tx| {
            tx.insert_ingest_source(&source)?;
            Ok(source.clone())
        })
        .await
    }

    async fn ingest_sources(&self, tenant: &TenantId) -> StoreResult<Vec<IngestSource>> {
        let tenant = tenant.clone();
        self.read(move |c| ingest::sources(c, &tenant)).await
    }

    async fn ingest_source_by_token(&self, token_hash: &str) -> StoreResult<Option<IngestSource>> {
        let token_hash = token_hash.to_owned();
        self.read(move |c| ingest::source_by_token(c, &token_hash))
            .await
    }

    async fn delete_ingest_source(
        &self,
        tenant: &TenantId,
        id: &IngestSourceId,
    ) -> StoreResult<bool> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.write(move |tx| tx.delete_ingest_source(&tenant, &id))
            .await
    }

    async fn set_ingest_pending_confirmation(
        &self,
        tenant: &TenantId,
        id: &IngestSourceId,
        url: Option<String>,
    ) -> StoreResult<bool> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.write(move |tx| tx.set_ingest_pending_confirmation(&tenant, &id, url.as_deref()))
            .await
    }

    async fn record_provider_events(&self, batch: ProviderBatch) -> StoreResult<ProviderOutcome> {
        let rules = self.rules;
        self.write(move |tx| engine::record_provider_events(tx, &rules, &batch))
            .await
    }

    async fn provider_payload(
        &self,
        tenant: &TenantId,
        event: &EventId,
    ) -> StoreResult<Option<Vec<u8>>> {
        let (tenant, event) = (tenant.clone(), event.clone());
        self.read(move |c| ingest::payload(c, &tenant, &event))
            .await
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            batches: self.writer.counters.batches.load(Ordering::Relaxed),
            writes: self.writer.counters.writes.load(Ordering::Relaxed),
            replays: self.writer.counters.replays.load(Ordering::Relaxed),
            events: self.writer.counters.events.load(Ordering::Relaxed),
        }
    }

    fn commits(&self) -> &CommitFeed {
        &self.feed
    }
}

/// Opens a raw connection to the database in `data_dir` with the store's
/// settings and no automatic checkpoints; for benchmarks that measure the
/// plain-SQLite ceiling.
pub fn raw_connection(data_dir: &Path, synchronous: Synchronous) -> StoreResult<Connection> {
    let conn = open_connection(&data_dir.join(DATABASE_FILE), synchronous, false)?;
    migrate(&conn)?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    Ok(conn)
}
