//! The application: shared state, the router, first-start bootstrap and the
//! HTTP listener.

use crate::api;
use crate::delivery::DeliveryService;
use crate::delivery::dns::Resolver;
use crate::delivery::verp::VerpSigner;
use crate::dkim::{DkimKeys, KeyHome, KeyWatch};
use crate::inbound::{AcceptRules, InboundHandler};
use crate::keys;
use crate::metrics::Metrics;
use crate::simulator::{SIMULATOR_DOMAIN, Simulator};
use crate::startup::StartError;
use crate::submission::SubmissionHandler;
use crate::tracker_cache::TrackerCache;
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use posthorn_core::config::Config;
use posthorn_core::{Clock, EventKind, EventSource, NodeId, SystemClock};
use posthorn_smtp::listen::ConnectionLimits;
use posthorn_smtp::server::ServerSettings;
use posthorn_smtp::tls::ServerTlsConfig;
use posthorn_store::{NewApiKey, Origin, PgStore, Scope, SqliteStore, Store, StoreRules};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// What every handler can reach. Extractors clone it per request, so it is
/// one shared allocation: a clone is one reference count, not one per part.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Shared {
    pub store: Arc<dyn Store>,
    pub config: Arc<Config>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    /// Poked when a `queued` event commits (see `follow_commits`) so the
    /// delivery workers look at the queue at once instead of at their next
    /// poll.
    pub delivery_wake: Arc<tokio::sync::Notify>,
    /// Signs and checks tracking links.
    pub tracking: Arc<crate::tracking::Tracking>,
    /// Signs and checks the cursors of listed pages.
    pub cursors: Arc<crate::cursor::Cursors>,
    /// Facts and hit histories of recently hit deliveries, so a hit costs
    /// its durable write and no read (see `tracker_cache`).
    pub tracker_cache: Arc<crate::tracker_cache::TrackerCache>,
    /// The DKIM keys of sending domains, loaded from `dkim_home`; a copy
    /// is signed only with a key of a domain its tenant owns.
    pub dkim: Arc<DkimKeys>,
    /// Where the DKIM keys are kept: the data directory's files, or on
    /// PostgreSQL the database (then `_dkim_watch` reloads `dkim` when
    /// another node changes them).
    pub dkim_home: KeyHome,
    /// Held only to keep the watch running while the state lives.
    _dkim_watch: Option<KeyWatch>,
    /// This node's name: what holds its leases on queued deliveries.
    pub node: NodeId,
    /// The operator's reply rules (`[bounce] rules_file`), tried before
    /// the built-in ones on synchronous bounces and returned mail.
    pub reply_rules: Arc<posthorn_bounce::ReplyRules>,
    /// The machine networks (`[tracking.machine] networks_file`, or the
    /// compiled-in list) the tracker judges hits by.
    pub machine_networks: Arc<posthorn_track::Networks>,
    /// SNS signing certificates for SES ingest sources (`[ingest]`).
    pub sns: Arc<crate::ingest::SnsCertificates>,
}

impl AppState {
    pub fn now(&self) -> posthorn_core::Millis {
        self.clock.now_ms()
    }
}

/// What one SMTP listener serves: its settings and its handler.
pub type SmtpSession<H> = (Arc<ServerSettings>, Arc<H>);

/// Serves an SMTP listener's sessions on `listener` until the process ends.
fn serve_smtp<H: posthorn_smtp::server::Handler>(
    listener: tokio::net::TcpListener,
    (settings, handler): SmtpSession<H>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(posthorn_smtp::server::serve(
        listener,
        settings,
        handler,
        std::future::pending(),
    ))
}

/// The name of the file the first admin key is written to.
pub const INITIAL_KEY_FILE: &str = "initial-admin-key";
/// The server secret (signs VERP tokens and, later, tracking links).
pub const SECRET_FILE: &str = "secret.key";
/// This node's name, when `[server] node_id` does not give one.
pub const NODE_ID_FILE: &str = "node-id";

/// What happened on start-up that the operator must see.
#[derive(Debug)]
pub enum Bootstrap {
    /// First start: tenant `default` and an admin key were created.
    Created {
        key: String,
        key_file: PathBuf,
    },
    Existing,
}

/// A ready application: state plus router.
pub struct App {
    pub state: AppState,
    pub verp: VerpSigner,
}

/// Running delivery workers; [`DeliveryHandle::stop`] ends them.
pub struct DeliveryHandle {
    stop: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl DeliveryHandle {
    pub async fn stop(self) {
        self.stop.notify_one();
        let _ = self.task.await;
    }
}

impl App {
    /// Opens the store: the PostgreSQL database of `[store] url` when set,
    /// else SQLite in the configured data directory; either way after
    /// making the data directory private (`data_dir::secure`), since it
    /// holds the server secret, the node name and (on SQLite) the DKIM
    /// keys.
    ///
    /// On PostgreSQL the DKIM keys are the database's: key files in the
    /// data directory are imported into it first (`dkim::import_key_files`),
    /// and the keys are loaded again whenever they change there
    /// (`dkim::KeyWatch`, every `dkim::KEY_POLL`).
    ///
    /// A URL that is not PostgreSQL's, or a database that cannot be
    /// reached, is an error naming HOST:PORT/DB (never the password):
    /// never SQLite instead, which would leave this node alone with a
    /// queue its peers cannot see.
    pub fn open(config: Config) -> Result<Self, StartError> {
        // Before the store opens the database, so that SQLite's log files
        // take the tightened mode of an existing database file.
        crate::data_dir::secure(&config.server.data_dir)
            .map_err(StartError::io(&config.server.data_dir))?;
        let rules = StoreRules::from_config(&config);
        match &config.store.url {
            Some(url) => {
                let store = PgStore::connect(url, &config.store, rules)?;
                tracing::info!(store = %store.target(), "on PostgreSQL");
                // Every node signs and verifies return paths and tracking
                // links with one secret: the first node's, kept in the
                // database (this node's file only seeds it).
                let seed = load_or_create_secret(&config.server.data_dir)?;
                let secret = store.shared_secret(SERVER_SECRET, seed)?;
                // The tracker judges a hit on the delivery's earlier hits;
                // a cached history would miss another node's until the
                // commit stream brings them, a moment later. So every hit
                // reads them from the database.
                let tracker_cache = TrackerCache::new(0);
                let store = Arc::new(store);
                // A node moving up keeps signing with its keys, and now
                // every node does.
                crate::dkim::import_key_files(&store, &config.server.data_dir)?;
                Self::assemble(
                    config,
                    store.clone(),
                    Arc::new(SystemClock),
                    secret,
                    tracker_cache,
                    KeyHome::Database(store),
                )
            }
            None => {
                let store = SqliteStore::open(&config.server.data_dir, &config.store, rules)?;
                Self::with_store(config, Arc::new(store), Arc::new(SystemClock))
            }
        }
    }

    /// An application on a given store; the server secret is read from (or
    /// created in) the configured data directory, and so are the DKIM keys.
    pub fn with_store(
        config: Config,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartError> {
        let secret = load_or_create_secret(&config.server.data_dir)?;
        let keys = KeyHome::Files(config.server.data_dir.clone());
        Self::assemble(config, store, clock, secret, TrackerCache::default(), keys)
    }

    fn assemble(
        config: Config,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        secret: Vec<u8>,
        tracker_cache: TrackerCache,
        dkim_home: KeyHome,
    ) -> Result<Self, StartError> {
        let tracking = Arc::new(crate::tracking::Tracking::new(&secret, &config));
        let verp = VerpSigner::new(&secret)
            .also_accepting(config.delivery.previous_secrets.iter().map(|s| &s.0));
        let dkim = Arc::new(DkimKeys::load(&dkim_home)?);
        let dkim_watch = match &dkim_home {
            KeyHome::Files(_) => None,
            KeyHome::Database(_) => Some(
                KeyWatch::start(dkim_home.clone(), dkim.clone(), crate::dkim::KEY_POLL)
                    .map_err(StartError::KeyWatch)?,
            ),
        };
        // `config::load` checked the file already; read again here, it is
        // still an error to start with one that no longer parses.
        let reply_rules = crate::reply_rules::load(config.bounce.rules_file.as_deref())
            .map_err(StartError::ReplyRules)?;
        let machine_networks =
            crate::machine_networks::load(config.tracking.machine.networks_file.as_deref())
                .map_err(StartError::MachineNetworks)?;
        let sns = crate::ingest::SnsCertificates::from_config(&config.ingest)
            .map_err(StartError::Ingest)?;
        let node = match &config.server.node_id {
            Some(node) => node.clone(),
            None => load_or_create_node_id(&config.server.data_dir)?,
        };
        let state = AppState(Arc::new(Shared {
            store,
            config: Arc::new(config),
            clock,
            metrics: Arc::new(Metrics::default()),
            delivery_wake: Arc::new(tokio::sync::Notify::new()),
            tracking,
            cursors: Arc::new(crate::cursor::Cursors::new(&secret)),
            tracker_cache: Arc::new(tracker_cache),
            dkim,
            dkim_home,
            _dkim_watch: dkim_watch,
            node,
            reply_rules: Arc::new(reply_rules),
            machine_networks: Arc::new(machine_networks),
            sns: Arc::new(sns),
        }));
        follow_commits(&state);
        Ok(Self { state, verp })
    }

    /// Starts the delivery workers with `resolver` for MX lookups (and the
    /// mailbox simulator first, when configured; it sends its asynchronous
    /// bounces, complaints and auto-replies to `inbound`, the inbound MX).
    pub async fn start_delivery(
        &self,
        resolver: Arc<dyn Resolver>,
        inbound: Option<SocketAddr>,
    ) -> Result<DeliveryHandle, StartError> {
        let timeouts = smtp_timeouts(&self.state.config.delivery.timeouts);
        let mut extra_routes = std::collections::HashMap::new();
        if self.state.config.delivery.simulator {
            let addr = Simulator::new(std::time::Duration::from_secs(5))
                .with_inbound(
                    inbound,
                    self.state.config.inbound.complaint_local_part.clone(),
                )
                .start()
                .await
                .map_err(StartError::Simulator)?;
            extra_routes.insert(SIMULATOR_DOMAIN.to_owned(), addr);
        }
        let service = DeliveryService::new(
            self.state.clone(),
            self.verp.clone(),
            resolver,
            self.state.delivery_wake.clone(),
            extra_routes,
        )?
        .with_timeouts(timeouts)
        .with_dkim(self.state.dkim.clone());
        let stop = Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn(Arc::new(service).run(stop.clone()));
        Ok(DeliveryHandle { stop, task })
    }

    /// On the first start (no tenant yet), creates tenant `default` and an
    /// admin key, and writes the key to `DATA_DIR/initial-admin-key` (0600).
    pub async fn bootstrap(&self) -> Result<Bootstrap, StartError> {
        let store = &self.state.store;
        if store.tenant_count().await? > 0 {
            self.adopt_unowned_keys().await?;
            return Ok(Bootstrap::Existing);
        }
        let now = self.state.now();
        let tenant = store.create_tenant("default", now).await?;
        let key = keys::generate();
        store
            .insert_api_key(NewApiKey {
                id: key.id.clone(),
                tenant_id: tenant.id,
                name: Some("initial admin key".into()),
                scopes: vec![Scope::Admin],
                secret_hash: key.secret_hash.clone(),
                created_at: now,
            })
            .await?;
        let key_file = self.state.config.server.data_dir.join(INITIAL_KEY_FILE);
        write_private_file(&key_file, &format!("{}\n", key.token))
            .map_err(StartError::io(&key_file))?;
        Ok(Bootstrap::Created {
            key: key.token,
            key_file,
        })
    }

    /// DKIM keys made before sending domains belonged to tenants have no
    /// owner, and an unowned key never signs. With one tenant, whose they
    /// are is clear: it gets them (so an upgrade keeps signing). With
    /// several, the operator must say: `posthorn domains add DOMAIN
    /// --tenant NAME` adopts the existing key.
    async fn adopt_unowned_keys(&self) -> Result<(), StartError> {
        let store = &self.state.store;
        let home = self.state.dkim_home.clone();
        let keys = tokio::task::spawn_blocking(move || crate::dkim::list(&home))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
        let owned = store.sending_domains(None).await?;
        let mut unowned: Vec<String> = keys
            .into_iter()
            .map(|k| k.domain)
            .filter(|d| !owned.iter().any(|o| o.domain == *d))
            .collect();
        unowned.dedup();
        if unowned.is_empty() {
            return Ok(());
        }
        let single_tenant = match store.tenant_count().await? {
            1 => store.operator_tenant().await?,
            _ => None,
        };
        for domain in unowned {
            match &single_tenant {
                Some(tenant) => {
                    let claim = store
                        .claim_sending_domain(tenant, &domain, self.state.now())
                        .await?;
                    tracing::info!(%domain, ?claim, "a DKIM key without an owner went to the only tenant");
                }
                None => tracing::warn!(
                    %domain,
                    "this DKIM key belongs to no tenant and signs nothing; assign it with `posthorn domains add DOMAIN --tenant NAME`"
                ),
            }
        }
        Ok(())
    }

    /// What Posthorn's SMTP listeners (submission, inbound MX) share: the
    /// name they greet with, the message size limit, the STARTTLS
    /// certificate, and their connection caps and timeouts (the first until
    /// the client has done something useful, then per command and for the
    /// message), with their counters in `/metrics` under `name`.
    fn smtp_listener_settings(
        &self,
        name: &'static str,
        limits: ConnectionLimits,
        [first, command, data]: [posthorn_core::config::HumanDuration; 3],
    ) -> Result<ServerSettings, StartError> {
        let config = &self.state.config;
        let mut settings = ServerSettings::new(
            config
                .delivery
                .helo_name
                .clone()
                .unwrap_or_else(|| "posthorn".into()),
        );
        settings.max_message_size = config.limits.max_message_size.0 as usize;
        settings.tls = Some(submission_tls(config)?);
        settings.name = name;
        settings.limits = limits;
        settings.first_timeout = first.to_std();
        settings.command_timeout = command.to_std();
        settings.data_timeout = data.to_std();
        self.state
            .metrics
            .register_listener(name, settings.stats.clone());
        Ok(settings)
    }

    /// SMTP submission's settings and handler: what [`Self::start_submission`]
    /// serves on its socket, and what the fuzz target drives over a pipe.
    pub fn submission_session(&self) -> Result<SmtpSession<SubmissionHandler>, StartError> {
        let config = &self.state.config;
        let c = &config.submission;
        let mut settings = self.smtp_listener_settings(
            "submission",
            ConnectionLimits {
                max_connections: c.max_connections,
                max_per_ip: c.max_connections_per_ip,
            },
            [c.auth_timeout, c.command_timeout, c.data_timeout],
        )?;
        settings.max_recipients = config.limits.max_recipients;
        settings.require_auth = true;
        settings.plaintext_auth_on_loopback = c.plaintext_auth_on_loopback;
        let handler = SubmissionHandler {
            state: self.state.clone(),
        };
        Ok((Arc::new(settings), Arc::new(handler)))
    }

    /// Listens for SMTP submission on `listener` (STARTTLS with the
    /// configured certificate, or a self-signed one kept in the data
    /// directory).
    pub fn start_submission(
        &self,
        listener: tokio::net::TcpListener,
    ) -> Result<tokio::task::JoinHandle<()>, StartError> {
        Ok(serve_smtp(listener, self.submission_session()?))
    }

    /// The inbound MX's settings and handler: returned mail for our
    /// addresses only, no AUTH, no relaying; STARTTLS with the submission
    /// certificate.
    pub fn inbound_session(&self) -> Result<SmtpSession<InboundHandler>, StartError> {
        let config = &self.state.config;
        let c = &config.inbound;
        let mut settings = self.smtp_listener_settings(
            "inbound",
            ConnectionLimits {
                max_connections: c.max_connections,
                max_per_ip: c.max_connections_per_ip,
            },
            [c.mail_timeout, c.command_timeout, c.data_timeout],
        )?;
        // Returned mail names one return path; a few more allow for an MTA
        // that batches reports to several of them.
        settings.max_recipients = 16;
        let handler = InboundHandler {
            state: self.state.clone(),
            verp: self.verp.clone(),
            rules: AcceptRules::from_config(config),
        };
        Ok((Arc::new(settings), Arc::new(handler)))
    }

    /// Runs the inbound MX on `listener` (see [`Self::inbound_session`]).
    pub fn start_inbound(
        &self,
        listener: tokio::net::TcpListener,
    ) -> Result<tokio::task::JoinHandle<()>, StartError> {
        Ok(serve_smtp(listener, self.inbound_session()?))
    }

    pub fn router(&self) -> Router {
        api::routes()
            .layer(middleware::from_fn_with_state(
                self.state.clone(),
                count_requests,
            ))
            .with_state(self.state.clone())
    }

    /// Serves HTTP on `listener` until `shutdown` resolves, with the
    /// configured connection caps and timeouts (see [`crate::http_server`]).
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let server = &self.state.config.server;
        // Clients of a trusted reverse proxy all arrive from its address:
        // a per-address cap would count them as one.
        let proxies = self.state.config.tracking.trust_proxy.clone();
        let exempt: Option<Arc<dyn Fn(std::net::IpAddr) -> bool + Send + Sync>> = (!proxies
            .is_empty())
        .then(|| Arc::new(move |ip| proxies.iter().any(|net| net.contains(ip))) as _);
        let limits = crate::http_server::HttpLimits {
            connections: ConnectionLimits {
                max_connections: server.http_max_connections,
                max_per_ip: server.http_max_connections_per_ip,
            },
            header_timeout: server.http_header_timeout.to_std(),
            body_timeout: server.http_body_timeout.to_std(),
            exempt,
        };
        let stats = Arc::new(posthorn_smtp::listen::ListenerStats::default());
        self.state.metrics.register_listener("http", stats.clone());
        crate::http_server::serve(listener, self.router(), limits, stats, shutdown).await
    }
}

async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    state
        .metrics
        .count_request(&route, response.status().as_u16());
    response
}

/// The submission certificate: from the configured files, or self-signed
/// (made once, kept in the data directory so clients can pin it).
fn submission_tls(config: &Config) -> Result<ServerTlsConfig, StartError> {
    let (cert, key) = match (&config.submission.cert_file, &config.submission.key_file) {
        (Some(cert), Some(key)) => (
            std::fs::read_to_string(cert).map_err(StartError::io(cert))?,
            std::fs::read_to_string(key).map_err(StartError::io(key))?,
        ),
        (None, None) => {
            let dir = &config.server.data_dir;
            let (cert_path, key_path) = (
                dir.join("submission-cert.pem"),
                dir.join("submission-key.pem"),
            );
            if !cert_path.exists() || !key_path.exists() {
                let (_, cert, key) = ServerTlsConfig::self_signed(&["localhost".to_owned()])?;
                // Public, but in the data directory, where every file is
                // private (see `data_dir`).
                write_private_file(&cert_path, &cert).map_err(StartError::io(&cert_path))?;
                write_private_file(&key_path, &key).map_err(StartError::io(&key_path))?;
            }
            (
                std::fs::read_to_string(&cert_path).map_err(StartError::io(&cert_path))?,
                std::fs::read_to_string(&key_path).map_err(StartError::io(&key_path))?,
            )
        }
        _ => return Err(StartError::CertificatePair),
    };
    Ok(ServerTlsConfig::from_pem(&cert, &key)?)
}

/// The configured SMTP client timeouts, as the client takes them.
fn smtp_timeouts(t: &posthorn_core::config::SmtpTimeouts) -> posthorn_smtp::Timeouts {
    let d = |h: posthorn_core::config::HumanDuration| {
        std::time::Duration::from_millis(h.0.max(0) as u64)
    };
    posthorn_smtp::Timeouts {
        connect: d(t.connect),
        greeting: d(t.greeting),
        command: d(t.command),
        mail_from: d(t.mail_from),
        rcpt_to: d(t.rcpt_to),
        data_init: d(t.data_init),
        data_block: d(t.data_block),
        data_end: d(t.data_end),
    }
}

/// The 32-byte server secret, created (readable only by its owner) on the
/// first start.
/// The name the server secret is kept under in a store that nodes share.
pub const SERVER_SECRET: &str = "server";

fn load_or_create_secret(data_dir: &std::path::Path) -> Result<Vec<u8>, StartError> {
    let path = data_dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => hex::decode(text.trim()).map_err(|e| StartError::BadFile {
            reason: e.to_string(),
            path,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::data_dir::create_private_dir(data_dir).map_err(StartError::io(data_dir))?;
            let mut secret = vec![0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut secret);
            write_private_file(&path, &format!("{}\n", hex::encode(&secret)))
                .map_err(StartError::io(&path))?;
            Ok(secret)
        }
        Err(e) => Err(StartError::io(path)(e)),
    }
}

/// This node's name when the configuration gives none: made at random on
/// the first start and kept in the data directory, so that a restart is the
/// same node (and frees the leases its previous run held).
fn load_or_create_node_id(data_dir: &std::path::Path) -> Result<NodeId, StartError> {
    let path = data_dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => NodeId::parse(text.trim()).ok_or_else(|| StartError::BadFile {
            path,
            reason: "not a node name".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::data_dir::create_private_dir(data_dir).map_err(StartError::io(data_dir))?;
            let mut bytes = [0u8; 6];
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
            let node = NodeId::parse(&format!("node-{}", hex::encode(bytes)))
                .expect("a generated node name is valid");
            write_private_file(&path, &format!("{node}\n")).map_err(StartError::io(&path))?;
            Ok(node)
        }
        Err(e) => Err(StartError::io(path)(e)),
    }
}

/// What hangs off the store's commit stream: counting delivery outcomes
/// and accepted deliveries, waking the delivery workers when something was
/// queued, and dropping the tracker's memory of a delivery that an event
/// from elsewhere changed. Observers run on the committing thread, so each
/// of these is a counter, a map removal or a notification.
fn follow_commits(state: &AppState) {
    let (metrics, wake, cache) = (
        state.metrics.clone(),
        state.delivery_wake.clone(),
        state.tracker_cache.clone(),
    );
    state.store.commits().observe(move |events, origin| {
        let here = origin == Origin::ThisNode;
        if here {
            metrics.count_committed(events);
        }
        // New work, here or on another node sharing the database.
        if events.iter().any(|e| e.kind() == EventKind::Queued) {
            wake.notify_one();
        }
        // This node's tracker appends its own hits to its memory; any other
        // event (the events API, a bounce or complaint from the inbound MX,
        // a hit taken by another node's tracker) may change what it knows
        // of the delivery.
        cache.forget_each(
            events
                .iter()
                .filter(|e| !here || e.source != EventSource::Tracker)
                .map(|e| &e.delivery_id),
        );
    });
}

/// Writes a file only its owner can read (the key must not leak to other
/// local users).
fn write_private_file(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}
