//! The PostgreSQL backend, for any number of Posthorn nodes sharing one
//! database (issue #14). The only module that names the `postgres` crate.
//!
//! The driver is the synchronous `postgres` crate: the write engine is
//! synchronous (SQLite's single writer thread runs it), so one engine serves
//! both backends only if PostgreSQL is driven synchronously too, from
//! threads of its own: writer threads, and reads on the blocking pool
//! (`spawn_blocking`), as SQLite's are. A `postgres::Client` blocks on a
//! small runtime of its own, so it must never be used (nor dropped) on an
//! async worker thread; every use here is on a blocking or plain thread.
//!
//! Connecting applies the migrations under `migrations/postgres/` (once
//! however many nodes start at once) and makes the monthly partitions of
//! `events`. Every write is the engine's (`crate::engine`), run by
//! `writer` in a transaction of its own through `tx`, the engine's
//! statements in PostgreSQL's SQL, with the locks and unique guards that
//! several concurrent writers need.
//!
//! Where things are: `reads` holds the SELECTs and row mapping, `domains`,
//! `inbound`, `tracking` and `ingest` the reads of their part of the
//! schema, `position` the event positions (`seq`) and the bound that makes
//! `events_after` gap-safe, `error` the mapping of PostgreSQL's failures
//! onto [`StoreError`] kinds, `dkim` the DKIM keys kept for every node
//! (inherent methods of [`PgStore`], not of the `Store` trait) and the
//! connection they use.

mod behind;
pub(crate) mod dkim;
mod domains;
mod error;
mod hit_facts;
mod inbound;
mod ingest;
mod pool;
mod position;
mod reads;
mod tail;
mod tracking;
mod tx;
mod writer;

use writer::{ReadAhead, WritePool};

pub use position::{
    EVENTS_PER_TRANSACTION, MAX_XID, POSITION_BITS, current_xid, event_position, position_xid,
};

use crate::feed::CommitFeed;
use crate::ingest::*;
use crate::records::*;
use crate::{Store, StoreError, StoreResult, StoreRules, Unavailable, engine};
use ::postgres::config::Host;
use ::postgres::{Client, NoTls};
use async_trait::async_trait;
use posthorn_core::config::StoreConfig;
use posthorn_core::domain::DomainOwner;
use posthorn_core::id::{ApiKeyId, InboundId, IngestSourceId};
use posthorn_core::suppression::SuppressionEntry;
use posthorn_core::{DeliveryId, EventId, MessageId, Millis, NodeId, TenantId};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Migrations in order; the version is the position (1-based).
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_init.sql"),
    include_str!("../../migrations/postgres/0002_dkim_keys.sql"),
    include_str!("../../migrations/postgres/0003_delivery_stats.sql"),
    include_str!("../../migrations/postgres/0004_delivery_stats_compaction.sql"),
];

/// The advisory lock key that one node at a time holds while it migrates:
/// "posthorn" in ASCII. (The partition maker in the schema uses this + 1.)
const MIGRATION_LOCK: i64 = 0x706f_7374_686f_726e;

/// How long connecting may take when the URL does not say
/// (`connect_timeout`): an address that drops packets fails in this time
/// instead of hanging the start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Months of event partitions made ahead of the current one at connect.
const PARTITION_MONTHS_AHEAD: i32 = 1;

/// A PostgreSQL store: a read pool, a write pool, the rules the writes
/// apply, the commit feed (every node's commits, see `tail`), and a
/// connection for the DKIM keys (`dkim`).
pub struct PgStore {
    reads: Arc<ReadPool>,
    /// The tracker's reads, in batches (see `hit_facts`).
    hit_facts: hit_facts::HitFacts,
    /// Where this node's claims start (see `ClaimFloor`).
    claim_floor: ClaimFloor,
    writes: WritePool,
    side: dkim::SideConnection,
    rules: StoreRules,
    feed: Arc<CommitFeed>,
    _tail: tail::Tail,
    applied: Vec<i64>,
}

// The connection settings hold the password: only the address is shown.
impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("target", &self.reads.target)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://USER[:PASSWORD]@HOST
    /// [:PORT]/DB[?OPTIONS]`), applies pending migrations (one node at a
    /// time, under an advisory lock) and makes the event partitions of this
    /// month and the next. A URL of another scheme is refused; an
    /// unreachable database is [`Unavailable::Unreachable`] naming
    /// HOST:PORT/DB, never the password.
    ///
    /// Blocking, like `SqliteStore::open`; the work runs on a thread of its
    /// own, so this may be called from async code as well as plain code.
    pub fn connect(url: &str, config: &StoreConfig, rules: StoreRules) -> StoreResult<PgStore> {
        let settings = Settings::parse(url)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as Millis);
        let applied = on_own_thread(|| {
            let mut client = settings.connect()?;
            let applied = migrate(&mut client)?;
            make_partitions(&mut client, now, PARTITION_MONTHS_AHEAD)?;
            Ok(applied)
        })
        .map_err(|e| settings.name_in(e))?;
        let settings = Arc::new(settings);
        let feed = Arc::new(CommitFeed::default());
        let local = Arc::new(tail::LocalTransactions::default());
        let tail =
            on_own_thread(|| tail::Tail::start(settings.clone(), feed.clone(), local.clone()))
                .map_err(|e| settings.name_in(e))?;
        let reads = Arc::new(ReadPool {
            target: settings.target.clone(),
            settings: settings.clone(),
            pool: pool::Pool::new(settings.clone(), config.read_connections),
        });
        Ok(PgStore {
            hit_facts: hit_facts::HitFacts::new(reads.clone()),
            claim_floor: ClaimFloor::default(),
            reads,
            side: dkim::SideConnection::new(settings.clone()),
            writes: WritePool::new(settings, config.write_connections, config.max_batch, local),
            rules,
            feed,
            _tail: tail,
            applied,
        })
    }

    /// Whether `url` is a PostgreSQL URL this store can connect with,
    /// without connecting: for checking a configuration before start. The
    /// error says what is wrong, never with the password.
    pub fn check_url(url: &str) -> Result<(), String> {
        parse_url(url).map(|_| ())
    }

    /// The migration versions this connect applied (none when another
    /// node, or an earlier start, had applied them all).
    pub fn applied_migrations(&self) -> &[i64] {
        &self.applied
    }

    /// The secret kept under `name` for every node sharing this database,
    /// keeping `seed` first when none is (the first node to start decides,
    /// however many start at once). Blocking, like `connect`; for start-up.
    pub fn shared_secret(&self, name: &str, seed: Vec<u8>) -> StoreResult<Vec<u8>> {
        let settings = &self.reads.settings;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as Millis);
        on_own_thread(|| {
            let mut c = settings.connect()?;
            c.execute(
                "INSERT INTO shared_secrets (name, value, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO NOTHING",
                &[&name, &seed, &now],
            )?;
            let row = c.query_one("SELECT value FROM shared_secrets WHERE name = $1", &[&name])?;
            Ok(row.try_get(0)?)
        })
        .map_err(|e| settings.name_in(e))
    }

    /// Every DKIM private key kept for the nodes sharing this database,
    /// by domain and selector. Blocking (the work runs on a thread of its
    /// own, so this may be called from async code too, briefly).
    pub fn dkim_keys(&self) -> StoreResult<Vec<DkimKeyRecord>> {
        self.side.read(dkim::list)
    }

    /// The DKIM keys' version: it moves with every committed change of the
    /// keys (made here, by another node or by hand), so a node that reads
    /// it every few seconds knows when to load them again. One row; cheap.
    /// Blocking.
    pub fn dkim_keys_version(&self) -> StoreResult<i64> {
        self.side.read(dkim::version)
    }

    /// Keeps a new DKIM key. A key with the same domain and selector is
    /// never replaced (its record may be published):
    /// [`StoreError::Conflict`], and nothing changes. Blocking.
    pub fn insert_dkim_key(&self, key: &DkimKeyRecord) -> StoreResult<()> {
        if self.side.write(|tx| dkim::insert(tx, key))? {
            Ok(())
        } else {
            Err(dkim::exists(key))
        }
    }

    /// Deletes `domain`'s DKIM keys (only the one with `selector`, if
    /// given); returns how many were deleted. Blocking.
    pub fn remove_dkim_keys(&self, domain: &str, selector: Option<&str>) -> StoreResult<u64> {
        self.side.write(|tx| dkim::remove(tx, domain, selector))
    }

    /// Where the store is: HOST:PORT/DB (no user, no password).
    pub fn target(&self) -> &str {
        &self.reads.target
    }

    /// Makes the monthly event partitions for the month holding `at` and
    /// the `months_ahead` after it, unless they exist; returns how many
    /// were made. Safe to call from several nodes at once and as often as
    /// liked (a node that runs for months calls it, say, daily). Blocking.
    pub fn make_event_partitions(&self, at: Millis, months_ahead: u32) -> StoreResult<u32> {
        let months = i32::try_from(months_ahead)
            .map_err(|_| StoreError::backend("too many months of partitions"))?;
        let settings = &self.reads.settings;
        on_own_thread(|| make_partitions(&mut settings.connect()?, at, months))
            .map_err(|e| settings.name_in(e))
    }

    /// Folds the statistics' rows of changes now (every node's tail does
    /// it each minute); returns how many count rows it wrote (0 when
    /// another node was folding). Blocking.
    pub fn compact_stats(&self) -> StoreResult<u64> {
        let settings = &self.reads.settings;
        on_own_thread(|| compact_stats(&mut settings.connect()?)).map_err(|e| settings.name_in(e))
    }

    /// A plain connection with this store's settings, for work that is
    /// not the engine's (`crate::copy`). Blocking: use it on a thread of
    /// its own, never on an async worker.
    pub(crate) fn plain_client(&self) -> StoreResult<Client> {
        let settings = &self.reads.settings;
        settings.connect().map_err(|e| settings.name_in(e))
    }

    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&mut Reader<'_>) -> StoreResult<T> + Send + 'static,
    {
        self.reads.run(f).await
    }

    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&mut dyn engine::WriteTx) -> StoreResult<T> + Send + 'static,
    {
        self.writes.write(f).await
    }
}

/// Runs `work` on a thread of its own and waits for it: a
/// `postgres::Client` must not be used where a runtime is running.
fn on_own_thread<T: Send>(work: impl FnOnce() -> StoreResult<T> + Send) -> StoreResult<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(work)
            .join()
            .unwrap_or_else(|_| Err(StoreError::backend("the PostgreSQL thread panicked")))
    })
}

/// The parsed connection settings and the address they name.
struct Settings {
    config: ::postgres::Config,
    /// HOST:PORT/DB, for messages: never the user's password.
    target: String,
}

// The settings hold the password: only the address is shown.
impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Settings {
    fn parse(url: &str) -> StoreResult<Settings> {
        let mut config = parse_url(url).map_err(StoreError::backend)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("posthorn");
        }
        let target = describe(&config);
        Ok(Settings { config, target })
    }

    fn connect(&self) -> StoreResult<Client> {
        self.config.connect(NoTls).map_err(connect_error)
    }

    /// `e` with the database's address in front, so an operator knows
    /// which database failed.
    fn name_in(&self, e: StoreError) -> StoreError {
        let target = &self.target;
        match e {
            StoreError::Unavailable { cause, detail } => StoreError::Unavailable {
                cause,
                detail: format!("PostgreSQL at {target}: {detail}"),
            },
            StoreError::Backend(source) => {
                StoreError::backend(format!("PostgreSQL at {target}: {source}"))
            }
            other => other,
        }
    }
}

/// The driver's settings from a store URL, or what is wrong with it.
fn parse_url(url: &str) -> Result<::postgres::Config, String> {
    // postgres::Config also reads `key=value` strings, and would take a
    // typo'd scheme for one: only the URL form is accepted, so that a
    // store URL is always recognisably PostgreSQL's.
    let scheme = url.split_once("://").map(|(s, _)| s);
    if !matches!(scheme, Some("postgres" | "postgresql")) {
        let shown = scheme.map_or_else(|| "no scheme".to_owned(), |s| format!("`{s}://`"));
        return Err(format!(
            "the store URL must start with postgres:// or postgresql:// (it has {shown})"
        ));
    }
    url.parse()
        .map_err(|e| format!("the store URL is not a PostgreSQL URL: {e}"))
}

/// A failed connect: unreachable when the server could not be reached or
/// would not take the connection now; otherwise (a wrong password, a
/// database that does not exist) the driver's words as a backend failure.
fn connect_error(e: ::postgres::Error) -> StoreError {
    let unreachable = error::classify(&e) == error::Failure::Unreachable;
    // The driver's top-level text is "error connecting to server"; the
    // cause (refused, timed out, ...) is its source.
    let mut detail = e.to_string();
    if let Some(source) = std::error::Error::source(&e) {
        detail = format!("{detail}: {source}");
    }
    if unreachable {
        StoreError::Unavailable {
            cause: Unavailable::Unreachable,
            detail,
        }
    } else {
        StoreError::backend(detail)
    }
}

/// HOST:PORT/DB of `config` (the first host, and how many more).
fn describe(config: &::postgres::Config) -> String {
    let hosts = config.get_hosts();
    let host = match hosts.first() {
        Some(Host::Tcp(name)) => name.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    // Without a database name PostgreSQL uses the user's.
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    let more = match hosts.len() {
        0 | 1 => String::new(),
        n => format!(" (and {} more hosts)", n - 1),
    };
    format!("{host}:{port}/{db}{more}")
}

/// Applies the migrations this database lacks, holding the migration lock
/// so that nodes starting together apply them once: the others wait, then
/// find them applied. Each migration commits with its version.
fn migrate(c: &mut Client) -> StoreResult<Vec<i64>> {
    c.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
    let applied = apply_pending(c);
    // Released even when a migration failed (a lost connection releases it
    // by itself).
    let unlocked = c.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
    let applied = applied?;
    unlocked?;
    Ok(applied)
}

fn apply_pending(c: &mut Client) -> StoreResult<Vec<i64>> {
    c.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version bigint PRIMARY KEY, applied_at bigint NOT NULL)",
    )?;
    let current: i64 = c
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::bigint FROM schema_migrations",
            &[],
        )?
        .try_get(0)?;
    let mut applied = Vec::new();
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let version = index as i64 + 1;
        if version <= current {
            continue;
        }
        let mut tx = c.transaction()?;
        tx.batch_execute(sql)?;
        if version == STATS_MIGRATION {
            rebuild_stats(&mut tx)?;
        }
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) \
             VALUES ($1, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)",
            &[&version],
        )?;
        tx.commit()?;
        tracing::info!(version, "applied database migration");
        applied.push(version);
    }
    Ok(applied)
}

/// The migration that adds the statistics (3): deliveries stored before it
/// (by `store copy` of an older store, or an older version) are counted
/// as it runs, in its transaction.
const STATS_MIGRATION: i64 = 3;

/// Counts every delivery stored so far (see `engine::stats::Rebuild`) and
/// stores what each was seen to do.
fn rebuild_stats(tx: &mut ::postgres::Transaction<'_>) -> StoreResult<()> {
    let mut rebuild = crate::engine::stats::Rebuild::default();
    let (deliveries_sql, events_sql) =
        crate::search::rebuild_reads(reads::DELIVERY_COLUMNS, reads::EVENT_COLUMNS);
    let deliveries = tx.query(&deliveries_sql, &[])?;
    for row in &deliveries {
        let d = reads::delivery_row(row)?;
        let tags: Vec<String> = row
            .try_get::<_, Option<serde_json::Value>>(20)?
            .and_then(|t| serde_json::from_value(t).ok())
            .unwrap_or_default();
        let status_event = d.delivery_event_id.as_ref().map(|e| e.as_str());
        let events: Vec<EventRecord> = tx
            .query(&events_sql, &[&d.id.as_str(), &status_event])?
            .iter()
            .map(reads::event_row)
            .collect::<StoreResult<_>>()?;
        let seen = rebuild.add(&d, &tags, &events);
        if seen != Default::default() {
            tx.execute(
                "UPDATE deliveries SET seen = $1 WHERE id = $2",
                &[&seen.bits(), &d.id.as_str()],
            )?;
        }
    }
    for (tenant, (changes, domains)) in rebuild.into_changes() {
        tx::add_stats(
            &mut |sql, params| Ok(tx.execute(sql, params)?),
            &tenant,
            &changes,
            &domains,
        )?;
    }
    Ok(())
}

/// Folds the statistics' rows of changes into one row per count, for the
/// counts that changed since the last time (migration 4); one node at a
/// time (the others skip the round). Rows added by transactions still open
/// are left for the next round. Sums are the same before and after.
/// Returns how many count rows it wrote.
pub(crate) fn compact_stats(c: &mut Client) -> StoreResult<u64> {
    let mut tx = c.transaction()?;
    let mine: bool = tx
        .query_one(
            "SELECT pg_try_advisory_xact_lock($1)",
            &[&(MIGRATION_LOCK + 2)],
        )?
        .try_get(0)?;
    if !mine {
        return Ok(0);
    }
    let mut folded = 0;
    for (table, key) in [
        (
            "delivery_stats",
            "tenant_id, tag, hour, stream, campaign, reason, metric",
        ),
        ("delivery_stats_domains", "tenant_id, day, domain, metric"),
    ] {
        let on: Vec<String> = key.split(", ").map(|k| format!("s.{k} = f.{k}")).collect();
        let returning: Vec<String> = key.split(", ").map(|k| format!("s.{k}")).collect();
        folded += tx.execute(
            &format!(
                "WITH fresh AS (SELECT DISTINCT {key} FROM {table} WHERE NOT compacted), \
                 moved AS (DELETE FROM {table} s USING fresh f WHERE {} RETURNING {}, s.deliveries) \
                 INSERT INTO {table} ({key}, deliveries, compacted) \
                 SELECT {key}, SUM(deliveries), true FROM moved GROUP BY {key} HAVING SUM(deliveries) <> 0",
                on.join(" AND "),
                returning.join(", ")
            ),
            &[],
        )?;
    }
    tx.commit()?;
    Ok(folded)
}

/// Runs the schema's partition maker (see `posthorn_event_partitions` in
/// `0001_init.sql`).
fn make_partitions(c: &mut Client, at: Millis, months_ahead: i32) -> StoreResult<u32> {
    let made: i32 = c
        .query_one(
            "SELECT posthorn_event_partitions($1, $2)",
            &[&at, &months_ahead],
        )?
        .try_get(0)?;
    if made > 0 {
        tracing::info!(made, "made event partitions");
    }
    Ok(made.max(0) as u32)
}

/// Where this node's claims start in the send queue's `due_at` order.
///
/// A claim walks the queue's `due_at` index from its start, past every
/// entry deleted (delivered) since the oldest snapshot still open on the
/// database: neither vacuum nor the index can forget those while it is
/// open. With one transaction holding vacuum back for minutes, claims grew
/// to 70 ms each and delivery lost a quarter of its rate. Claims therefore
/// start at the oldest due time the last claim took (everything older was
/// due then and taken, or held by someone else), and walk the whole queue
/// only every `FULL_WALK_EVERY`, for what becomes due again below that
/// point: a lease that ran out, leases released at a restart, a message
/// another node committed with an older time. Those wait at most that much
/// longer; any other entry is found as before.
#[derive(Default)]
struct ClaimFloor {
    state: Mutex<FloorState>,
}

#[derive(Default)]
struct FloorState {
    from: Millis,
    last_full_walk: Option<std::time::Instant>,
}

/// How often a claim walks the whole queue.
const FULL_WALK_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

impl ClaimFloor {
    /// The window of the next claim at `now`.
    fn window(&self, now: Millis) -> engine::ClaimWindow {
        let Ok(mut state) = self.state.lock() else {
            return engine::ClaimWindow { from: 0, now };
        };
        let full = state
            .last_full_walk
            .is_none_or(|at| at.elapsed() >= FULL_WALK_EVERY);
        if full {
            state.last_full_walk = Some(std::time::Instant::now());
        }
        engine::ClaimWindow {
            from: if full { 0 } else { state.from.min(now) },
            now,
        }
    }

    /// After a claim in `window` took entries due from `oldest_due` on.
    fn claimed(&self, window: engine::ClaimWindow, oldest_due: Option<Millis>) {
        if let (Ok(mut state), Some(oldest)) = (self.state.lock(), oldest_due) {
            // A full walk may find older entries than the floor: it moves
            // down to them; otherwise up to the oldest taken.
            state.from = if window.from == 0 {
                oldest
            } else {
                oldest.max(state.from)
            };
        }
    }
}

/// Read connections (see `pool`): at most `read_connections` reads run at
/// once.
pub(crate) struct ReadPool {
    settings: Arc<Settings>,
    target: String,
    pool: pool::Pool<ReadConnection>,
}

impl ReadPool {
    pub(crate) async fn run<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&mut Reader<'_>) -> StoreResult<T> + Send + 'static,
    {
        // A read changes nothing: it may always run again.
        self.pool
            .run(move |c: &mut ReadConnection| {
                f(&mut reads::Cached {
                    client: &mut c.client,
                    statements: &mut c.statements,
                })
            })
            .await
    }
}

/// What a read runs on: a pooled connection and its prepared statements.
pub(crate) type Reader<'a> = reads::Cached<'a, Client>;

/// A read connection: its transactions are read-only, so a read can never
/// write by mistake.
struct ReadConnection {
    client: Client,
    statements: reads::Statements,
}

impl pool::Pooled for ReadConnection {
    fn open(settings: &Settings) -> StoreResult<Self> {
        let mut client = settings.connect()?;
        client.batch_execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")?;
        Ok(ReadConnection {
            client,
            statements: reads::Statements::new(),
        })
    }

    fn client(&self) -> &Client {
        &self.client
    }
}

#[async_trait]
impl Store for PgStore {
    async fn tenant_by_name(&self, name: &str) -> StoreResult<Option<Tenant>> {
        let name = name.to_owned();
        self.read(move |c| reads::tenant_by_name(c, &name)).await
    }

    async fn tenant_count(&self) -> StoreResult<u64> {
        self.read(|c| reads::tenant_count(c)).await
    }

    async fn tenant(&self, id: &TenantId) -> StoreResult<Option<Tenant>> {
        let id = id.clone();
        self.read(move |c| reads::tenant_by_id(c, &id)).await
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

    async fn sending_domains(&self, tenant: Option<&TenantId>) -> StoreResult<Vec<SendingDomain>> {
        let tenant = tenant.cloned();
        self.read(move |c| domains::list(c, tenant.as_ref())).await
    }

    async fn domain_owners(&self, domains: &[&str]) -> StoreResult<Vec<DomainOwner>> {
        let candidates = engine::domain_candidates(domains);
        self.read(move |c| domains::owners(c, &candidates)).await
    }

    /// Events after position `after`, up to the settled bound (see
    /// [`event_position`]): a reader that goes on from the
    /// last `seq` it got misses none, however many nodes write.
    async fn events_after(
        &self,
        tenant: &TenantId,
        after: i64,
        filters: &posthorn_core::search::Filters,
        limit: u32,
    ) -> StoreResult<Vec<EventRecord>> {
        let settled = position::settled_bound_sql();
        let page = crate::search::EventPage::Committed {
            after,
            settled_below: Some(&settled),
        };
        let sql = crate::search::events_page(
            crate::search::Dialect::Postgres,
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
        self.read(|c| reads::settled_end(c)).await
    }

    async fn search_events(
        &self,
        tenant: &TenantId,
        filters: &posthorn_core::search::Filters,
        after: Option<&EventId>,
        limit: u32,
    ) -> StoreResult<Vec<EventRecord>> {
        let sql = crate::search::events_page(
            crate::search::Dialect::Postgres,
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
            crate::search::Dialect::Postgres,
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
        let sql = crate::search::delivery_counts(crate::search::Dialect::Postgres, tenant, filters);
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

    async fn message_engagement_events(
        &self,
        tenant: &TenantId,
        message: &MessageId,
    ) -> StoreResult<Vec<EventRecord>> {
        let (tenant, message) = (tenant.clone(), message.clone());
        self.read(move |c| reads::message_engagement_events(c, &tenant, &message))
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
        self.read(move |c| reads::queue_len(c, &tenant)).await
    }

    async fn delivery_owner(&self, id: &DeliveryId) -> StoreResult<Option<(TenantId, String)>> {
        let id = id.clone();
        self.read(move |c| inbound::delivery_owner(c, &id)).await
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
        self.read(|c| inbound::operator_tenant(c)).await
    }

    async fn tracking_facts(&self, delivery: &DeliveryId) -> StoreResult<Option<TrackingFacts>> {
        self.hit_facts.get(delivery).await
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

    async fn ingest_sources(&self, tenant: &TenantId) -> StoreResult<Vec<IngestSource>> {
        let tenant = tenant.clone();
        self.read(move |c| ingest::sources(c, &tenant)).await
    }

    async fn ingest_source_by_token(&self, token_hash: &str) -> StoreResult<Option<IngestSource>> {
        let token_hash = token_hash.to_owned();
        self.read(move |c| ingest::source_by_token(c, &token_hash))
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

    async fn create_tenant(&self, name: &str, now: Millis) -> StoreResult<Tenant> {
        let name = name.to_owned();
        self.write(move |tx| engine::create_tenant(tx, &name, now))
            .await
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

    async fn release_sending_domain(&self, tenant: &TenantId, domain: &str) -> StoreResult<bool> {
        let (tenant, domain) = (tenant.clone(), domain.to_owned());
        self.write(move |tx| tx.delete_sending_domain(&tenant, &domain))
            .await
    }

    async fn accept_message(&self, message: NewMessage) -> StoreResult<AcceptOutcome> {
        let rules = self.rules;
        let ahead = ReadAhead {
            tenant: message.tenant_id.clone(),
            deliveries: Vec::new(),
            recipients: message
                .recipients
                .iter()
                .map(|r| r.address.clone())
                .collect(),
        };
        self.writes
            .write_reading_ahead(ahead, move |tx| {
                engine::accept_message(tx, &rules, &message)
            })
            .await
    }

    async fn record_event(&self, tenant: &TenantId, event: NewEvent) -> StoreResult<RecordOutcome> {
        let rules = self.rules;
        let ahead = ReadAhead {
            tenant: tenant.clone(),
            deliveries: vec![event.delivery_id.clone()],
            recipients: Vec::new(),
        };
        let tenant = tenant.clone();
        self.writes
            .write_reading_ahead(ahead, move |tx| {
                engine::record_event(tx, &rules, &tenant, &event)
            })
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
        let window = self.claim_floor.window(now);
        let claimed = self
            .writes
            .write_alone(move |tx| engine::claim_due(tx, &node, window, limit, lease_until))
            .await?;
        self.claim_floor.claimed(window, claimed.oldest_due);
        Ok(claimed.deliveries)
    }

    async fn record_attempts(
        &self,
        attempts: Vec<AttemptRecord>,
    ) -> StoreResult<Vec<std::sync::Arc<EventRecord>>> {
        let rules = self.rules;
        self.writes
            .write_alone(move |tx| engine::record_attempts(tx, &rules, &attempts))
            .await
    }

    async fn record_inbound(&self, new: NewInbound) -> StoreResult<InboundRecord> {
        let rules = self.rules;
        self.write(move |tx| engine::record_inbound(tx, &rules, &new))
            .await
    }

    async fn put_message_links(&self, message: &MessageId, links: Vec<String>) -> StoreResult<()> {
        let message = message.clone();
        self.write(move |tx| tx.insert_message_links(&message, &links))
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

    async fn create_ingest_source(&self, source: IngestSource) -> StoreResult<IngestSource> {
        self.write(move |tx| {
            tx.insert_ingest_source(&source)?;
            Ok(source.clone())
        })
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

    fn commits(&self) -> &CommitFeed {
        &self.feed
    }

    fn stats(&self) -> StoreStats {
        let counters = &self.writes.counters;
        StoreStats {
            batches: counters.commits.load(Ordering::Relaxed),
            writes: counters.writes.load(Ordering::Relaxed),
            replays: counters.split_groups.load(Ordering::Relaxed),
            events: counters.events.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_postgres_urls_are_taken() {
        for url in [
            "mysql://u:secret@db/posthorn",
            "sqlite:///var/lib/posthorn",
            "host=db user=u password=secret",
            "",
        ] {
            let e = Settings::parse(url).unwrap_err().to_string();
            assert!(e.contains("postgres://"), "{url}: {e}");
            assert!(!e.contains("secret"), "{url}: {e}");
        }
        for url in [
            "postgres://u@db/posthorn",
            "postgresql://u@db:6543/posthorn",
        ] {
            assert!(Settings::parse(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn the_target_names_host_port_and_database_but_no_password() {
        let s = Settings::parse("postgres://alice:s3cret@db.internal:6543/mail").unwrap();
        assert_eq!(s.target, "db.internal:6543/mail");
        let s = Settings::parse("postgres://alice@db").unwrap();
        assert_eq!(
            s.target, "db:5432/alice",
            "the database defaults to the user's"
        );
        let s = Settings::parse("postgres://alice:s3cret@a:5433,b:5434/mail").unwrap();
        assert_eq!(s.target, "a:5433/mail (and 1 more hosts)");
        let debug = format!("{:?}", s.target);
        assert!(!debug.contains("s3cret"));
    }

    #[test]
    fn a_connect_timeout_is_set_unless_the_url_has_one() {
        let s = Settings::parse("postgres://u@db/x").unwrap();
        assert_eq!(s.config.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        let s = Settings::parse("postgres://u@db/x?connect_timeout=3").unwrap();
        assert_eq!(
            s.config.get_connect_timeout(),
            Some(&Duration::from_secs(3))
        );
    }
}

/// The crate-private parts that need a server: the error mapping on real
/// failures, and the reads only the write side uses.
#[cfg(test)]
mod db_tests {
    use super::*;
    use posthorn_testkit::postgres::TestDatabase;

    /// A migrated test database and a plain client to it.
    fn database() -> Option<(TestDatabase, Client)> {
        let db = TestDatabase::create()?;
        let store = PgStore::connect(db.url(), &StoreConfig::default(), StoreRules::default())
            .expect("connect");
        drop(store);
        let client = db.client();
        Some((db, client))
    }

    /// The error a statement raising SQLSTATE `code` becomes.
    fn raised(c: &mut Client, code: &str) -> StoreError {
        let sql = format!("DO $$ BEGIN RAISE EXCEPTION 'test' USING ERRCODE = '{code}'; END $$");
        c.batch_execute(&sql).expect_err("raises").into()
    }

    #[test]
    fn failures_map_onto_store_error_kinds() {
        let Some((_db, mut c)) = database() else {
            return;
        };
        for code in ["40001", "40P01", "23505"] {
            let e = raised(&mut c, code);
            assert!(error::is_retryable(&e), "{code}: {e:?}");
            assert!(matches!(e, StoreError::Backend(_)), "{code}: {e:?}");
        }
        for code in ["57P01", "57P03", "53300", "08006"] {
            let e = raised(&mut c, code);
            assert!(
                matches!(
                    e,
                    StoreError::Unavailable {
                        cause: Unavailable::Unreachable,
                        ..
                    }
                ),
                "{code}: {e:?}"
            );
            assert!(e.is_transient() && !error::is_retryable(&e), "{code}");
        }
        assert!(raised(&mut c, "53100").is_storage_full());
        let other = raised(&mut c, "22012");
        assert!(matches!(other, StoreError::Backend(_)), "{other:?}");
        assert!(!error::is_retryable(&other) && !other.is_transient());
    }

    #[test]
    fn a_tenant_name_taken_concurrently_is_a_conflict() {
        let Some((_db, mut c)) = database() else {
            return;
        };
        let insert = "INSERT INTO tenants (id, name, created_at) VALUES ($1, 'acme', 1)";
        c.execute(insert, &[&"t1"]).unwrap();
        let e: StoreError = c.execute(insert, &[&"t2"]).unwrap_err().into();
        assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
        assert!(!error::is_retryable(&e));
        // Another unique violation is a lost race, run again.
        let e: StoreError = c
            .execute(
                "INSERT INTO tenants (id, name, created_at) VALUES ('t1', 'other', 1)",
                &[],
            )
            .unwrap_err()
            .into();
        assert!(error::is_retryable(&e), "{e:?}");
    }

    #[test]
    fn a_connection_ended_by_the_server_is_unreachable() {
        let Some((db, mut c)) = database() else {
            return;
        };
        let mut admin = db.client();
        let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
        admin
            .execute("SELECT pg_terminate_backend($1)", &[&pid])
            .unwrap();
        let e: StoreError = c.query_one("SELECT 1", &[]).unwrap_err().into();
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
    }

    #[test]
    fn the_write_side_s_reads_find_suppressions_and_external_ids() {
        let Some((_db, mut c)) = database() else {
            return;
        };
        c.batch_execute(
            "INSERT INTO tenants (id, name, created_at) VALUES ('t1', 'acme', 1);
             INSERT INTO messages (id, tenant_id, from_header, from_address, subject, headers, tags,
                                   metadata, stream, test, size, source, created_at)
             VALUES ('m1', 't1', 's@x.org', 's@x.org', '', '{}', '[]', '{}', 'default', false, 0, 'api', 1);
             INSERT INTO deliveries (id, tenant_id, message_id, recipient, recipient_kind, sender,
                                     stream, test, created_at, window_ends_at, updated_at)
             VALUES ('d1', 't1', 'm1', 'a@example.com', 'to', 's@x.org', 'default', false, 1, 2, 1);
             INSERT INTO events (seq, id, tenant_id, delivery_id, message_id, recipient, sender, kind,
                                 occurred_at, recorded_at, source, details, external_id, outside_window)
             VALUES (1, 'e1', 't1', 'd1', 'm1', 'a@example.com', 's@x.org', 'queued', 1, 1, 'api',
                     '{}', 'provider-1', false);
             INSERT INTO suppressions (id, tenant_id, target, stream, reason, created_at, expires_at)
             VALUES ('s1', 't1', '@example.com', NULL, 'hard_bounce', 1, NULL),
                    ('s2', 't1', 'a@example.com', 'news', 'unsubscribe', 1, 50),
                    ('s3', 't1', 'b@example.com', NULL, 'hard_bounce', 1, NULL);",
        )
        .unwrap();
        let t1 = TenantId::from_stored("t1".into());
        let found = reads::event_by_external_id(&mut c, &t1, "provider-1").unwrap();
        assert_eq!(found.map(|e| e.id.to_string()), Some("e1".to_owned()));
        let other = TenantId::from_stored("t2".into());
        assert!(
            reads::event_by_external_id(&mut c, &other, "provider-1")
                .unwrap()
                .is_none()
        );
        let ids = |v: Vec<SuppressionEntry>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
        assert_eq!(
            ids(reads::suppressions_for(&mut c, &t1, "a@example.com", 10).unwrap()),
            vec!["s1", "s2"]
        );
        assert_eq!(
            ids(reads::suppressions_for(&mut c, &t1, "a@example.com", 60).unwrap()),
            vec!["s1"],
            "expired at 50"
        );
        // Inside a transaction the reads see its own writes.
        let mut tx = c.transaction().unwrap();
        tx.execute(
            "UPDATE suppressions SET removed_at = 5 WHERE id = 's1'",
            &[],
        )
        .unwrap();
        assert!(
            reads::suppressions_for(&mut tx, &t1, "a@example.com", 60)
                .unwrap()
                .is_empty()
        );
    }
}

#[cfg(test)]
mod claim_floor_tests {
    use super::ClaimFloor;

    #[test]
    fn claims_start_at_the_oldest_due_time_taken_and_walk_everything_first() {
        let floor = ClaimFloor::default();
        let first = floor.window(1_000);
        assert_eq!(
            (first.from, first.now),
            (0, 1_000),
            "the first claim walks all"
        );
        floor.claimed(first, Some(400));
        let next = floor.window(2_000);
        assert_eq!(next.from, 400);
        // A claim that took nothing, or only newer entries, never lowers it.
        floor.claimed(next, None);
        floor.claimed(next, Some(300));
        assert_eq!(floor.window(2_000).from, 400);
        floor.claimed(next, Some(900));
        assert_eq!(floor.window(2_000).from, 900);
        // Never past `now`.
        assert_eq!(floor.window(500).from, 500);
    }
}
