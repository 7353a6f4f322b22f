//! `posthorn`: self-hosted email sending and delivery tracking.
//!
//! The command line: `serve` runs the service; `send` and `status` talk to a
//! running one over its HTTP API; `keys` manages API keys and `domains`
//! sending domains and their DKIM keys (in the data directory's store, or
//! the `--store` database); `classify` shows how returned mail and SMTP
//! replies are read; `bench` measures ingest speed.

mod bench;
mod classify;
mod client;
mod domains;
mod export;
mod keys;
mod store;
mod store_args;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use posthorn_server::{App, Bootstrap};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "posthorn", version, about = "Self-hosted email sending and delivery tracking", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (HTTP API) on the embedded SQLite store, or on a
    /// PostgreSQL database with --store.
    Serve(ServeArgs),
    /// Submit a message through a running service's API.
    Send(client::SendArgs),
    /// Show the timeline of one delivery, readable by a person.
    Status(client::StatusArgs),
    /// Export events or deliveries (filtered as the API's lists) to a CSV
    /// or NDJSON file, with a progress line.
    Export(export::ExportArgs),
    /// Follow the live feed of events (`--follow`), one line per event.
    Events(export::EventsArgs),
    /// Create, list and revoke API keys (works on the data directory).
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Give sending domains to tenants, with their DKIM keys (works on the
    /// data directory).
    #[command(subcommand)]
    Domains(domains::DomainsCommand),
    /// Read bounces, complaints and auto-replies (or one SMTP reply) and
    /// print what Posthorn makes of them, as JSON lines.
    Classify(classify::ClassifyArgs),
    /// Measure ingest speed; results go to docs/benchmarks.md by hand.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Work on a whole store: `store copy` moves the embedded store into
    /// an empty PostgreSQL database.
    #[command(subcommand)]
    Store(store::StoreCommand),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// A TOML configuration file (optional; every setting has a default).
    #[arg(long, env = "POSTHORN_CONFIG")]
    config: Option<PathBuf>,
    /// Where the database and generated files live [default: ./posthorn-data].
    #[arg(long, env = "POSTHORN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Keep messages and events in this PostgreSQL database, which several
    /// nodes may share (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB`),
    /// instead of SQLite in the data directory. Also `[store] url`, or
    /// `POSTHORN_STORE__URL`, which this flag overrides.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// HTTP listen address [default: 127.0.0.1:8025].
    #[arg(long, env = "POSTHORN_HTTP")]
    http: Option<String>,
    /// Base URL of links put into mail [default: http:// + the HTTP address].
    #[arg(long, env = "POSTHORN_PUBLIC_URL")]
    public_url: Option<String>,
    /// Send mail for DOMAIN to HOST:PORT instead of its MX (repeatable).
    #[arg(long = "route", value_name = "DOMAIN=HOST:PORT")]
    routes: Vec<String>,
    /// Answer DNS from this zone file instead of the system resolver (for
    /// tests and demos): RFC 1035 master-file text with `$ORIGIN` and `$TTL`,
    /// e.g. `$TTL 300` then `example.com. MX 10 mx.example.com.`.
    #[arg(long, value_name = "FILE")]
    dns_zone: Option<PathBuf>,
    /// With --dns-zone: NAME answers SERVFAIL, a temporary DNS failure
    /// (repeatable; a zone file has no way to say it).
    #[arg(long = "dns-servfail", value_name = "NAME", requires = "dns_zone")]
    dns_servfail: Vec<String>,
    /// SMTP submission listen address [default: 127.0.0.1:2587]; `off` to
    /// turn it off.
    #[arg(long, env = "POSTHORN_SUBMISSION")]
    submission: Option<String>,
    /// Inbound MX listen address, where bounces, complaints and auto-replies
    /// come back [default: 127.0.0.1:2525; port 25 in production]; `off` to
    /// turn it off.
    #[arg(long, env = "POSTHORN_MX")]
    mx: Option<String>,
    /// A reverse proxy or CDN network in front of the tracker, whose
    /// Forwarded / X-Forwarded-For headers are believed (repeatable).
    #[arg(long = "trust-proxy", value_name = "CIDR")]
    trust_proxy: Vec<posthorn_core::net::Cidr>,
    /// A network that mail servers found in DNS may resolve to although it
    /// is loopback, private or link-local (repeatable; adds to
    /// `[delivery] allow_networks`). Routes need none.
    #[arg(long = "allow-network", value_name = "CIDR")]
    allow_networks: Vec<posthorn_core::net::Cidr>,
    /// Demo mode: the mailbox simulator answers for simulator.posthorn.test,
    /// and retries are fast, so every outcome shows within minutes.
    #[arg(long)]
    demo: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // A benchmark prints its tables and nothing else: the stores it opens
    // in-process log only warnings and errors unless POSTHORN_LOG says more.
    let default_level = match cli.command {
        Command::Bench(_) => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("POSTHORN_LOG")
                .unwrap_or_else(|_| default_level.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Send(args) => client::send(args).await,
            Command::Status(args) => client::status(args).await,
            Command::Export(args) => export::export(args).await,
            Command::Events(args) => export::events(args).await,
            Command::Keys(command) => keys::run(command).await,
            Command::Domains(command) => domains::run(command).await,
            Command::Bench(command) => bench::run(command).await,
            Command::Classify(args) => classify::run(args),
            Command::Store(command) => store::run(command).await,
        }
    })
}

/// Loads the configuration: defaults, the file, `POSTHORN_*__*` variables,
/// then the flags.
fn load_config(args: &ServeArgs) -> Result<posthorn_core::config::Config> {
    // `--store` goes in as the last `POSTHORN_STORE__URL`, so that it
    // overrides the file and the environment and is checked where they
    // are: one setting, one check, whichever of the three gave it.
    let store_flag = args
        .store
        .clone()
        .map(|url| ("POSTHORN_STORE__URL".to_owned(), url));
    let mut config =
        posthorn_server::config::load(args.config.as_deref(), std::env::vars().chain(store_flag))?;
    if let Some(dir) = &args.data_dir {
        config.server.data_dir = dir.clone();
    }
    if let Some(http) = &args.http {
        config.server.http = http.clone();
    }
    if let Some(url) = &args.public_url {
        config.server.public_url = Some(url.clone());
    }
    if let Some(listen) = &args.submission {
        config.submission.listen = if listen == "off" {
            String::new()
        } else {
            listen.clone()
        };
    }
    if let Some(listen) = &args.mx {
        config.inbound.listen = if listen == "off" {
            String::new()
        } else {
            listen.clone()
        };
    }
    config
        .tracking
        .trust_proxy
        .extend(args.trust_proxy.iter().copied());
    config
        .delivery
        .allow_networks
        .extend(args.allow_networks.iter().copied());
    if args.demo {
        // Fast retries, unless the file or environment chose other values.
        use posthorn_core::config::{HumanDuration, RetryConfig};
        let defaults = RetryConfig::default();
        config.delivery.simulator = true;
        if config.retry.first_retry == defaults.first_retry {
            config.retry.first_retry = HumanDuration(5_000);
        }
        if config.retry.max_interval == defaults.max_interval {
            config.retry.max_interval = HumanDuration(20_000);
        }
        if config.retry.lifetime == defaults.lifetime {
            config.retry.lifetime = HumanDuration(2 * 60_000);
        }
    }
    for route in &args.routes {
        let (domain, target) = route
            .split_once('=')
            .with_context(|| format!("--route `{route}` is not DOMAIN=HOST:PORT"))?;
        config
            .delivery
            .routes
            .insert(domain.to_ascii_lowercase(), target.to_owned());
    }
    Ok(config)
}

async fn serve(args: ServeArgs) -> Result<()> {
    let mut config = load_config(&args)?;
    // Before any listener opens: every connection is a file descriptor.
    posthorn_server::open_files::raise_and_report(&config);
    let http: std::net::SocketAddr = config.server.http.parse().with_context(|| {
        format!(
            "--http `{}` is not an address like 127.0.0.1:8025",
            config.server.http
        )
    })?;
    // Bound first, so that links in mail (the default public URL) name the
    // port really listened on, also when port 0 let the system choose.
    let listener = tokio::net::TcpListener::bind(http)
        .await
        .with_context(|| format!("listening on {http}"))?;
    config.server.http = listener.local_addr()?.to_string();
    let data_dir = config.server.data_dir.clone();
    let public_url = config.server.public_url();
    // What the log may say about the store: never the user or password.
    let store = config.store.url.as_deref().map_or_else(
        || data_dir.join("posthorn.db").display().to_string(),
        posthorn_core::config::without_user,
    );
    let on_postgres = config.store.url.is_some();
    let app = App::open(config).map_err(|e| {
        if on_postgres {
            // The error names the database (HOST:PORT/DB) itself.
            anyhow::anyhow!("starting on PostgreSQL: {e}")
        } else {
            anyhow::anyhow!("opening {}: {e}", data_dir.display())
        }
    })?;
    if let Bootstrap::Created { key, key_file } =
        app.bootstrap().await.map_err(|e| anyhow::anyhow!("{e}"))?
    {
        println!("First start: created tenant `default` and an admin API key (shown once):");
        println!();
        println!("    {key}");
        println!();
        println!(
            "It is also in {} (readable only by you).",
            key_file.display()
        );
    }
    // The inbound MX listens before delivery starts: the mailbox simulator
    // sends its reports there.
    let inbound = if app.state.config.inbound.listen.is_empty() {
        None
    } else {
        let listen = &app.state.config.inbound.listen;
        let listener = tokio::net::TcpListener::bind(listen.as_str())
            .await
            .with_context(|| format!("inbound MX: listening on {listen}"))?;
        let addr = listener.local_addr()?;
        app.start_inbound(listener)
            .map_err(|e| anyhow::anyhow!("inbound MX: {e}"))?;
        Some(addr)
    };
    let delivery = if app.state.config.delivery.enabled {
        let resolver: std::sync::Arc<dyn posthorn_server::delivery::dns::Resolver> =
            match &args.dns_zone {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    std::sync::Arc::new(
                        posthorn_server::delivery::dns::ZoneResolver::from_zone(&text)
                            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
                            .with_servfail(&args.dns_servfail),
                    )
                }
                None => std::sync::Arc::new(
                    posthorn_server::delivery::dns::SystemResolver::new()
                        .map_err(anyhow::Error::msg)?,
                ),
            };
        Some(app.start_delivery(resolver, inbound).await?)
    } else {
        None
    };
    let submission = if app.state.config.submission.listen.is_empty() {
        None
    } else {
        let listen = &app.state.config.submission.listen;
        let listener = tokio::net::TcpListener::bind(listen.as_str())
            .await
            .with_context(|| format!("SMTP submission: listening on {listen}"))?;
        let addr = listener.local_addr()?;
        app.start_submission(listener)
            .map_err(|e| anyhow::anyhow!("SMTP submission: {e}"))?;
        Some(addr)
    };
    tracing::info!(%http, %public_url, data_dir = %data_dir.display(), %store, "posthorn is ready");
    if let Some(addr) = inbound {
        println!("Inbound MX on {addr} (bounces, complaints and auto-replies come back here)");
    }
    if let Some(addr) = submission {
        println!("SMTP submission on {addr} (AUTH with an API key as the password; STARTTLS)");
    }
    let http_addr = listener.local_addr()?;
    if args.demo {
        print_demo_help(http_addr);
    }
    println!("Posthorn is listening on http://{http_addr}");
    app.serve(listener, shutdown_signal()).await?;
    if let Some(delivery) = delivery {
        delivery.stop().await;
    }
    tracing::info!("stopped");
    Ok(())
}

fn print_demo_help(http: std::net::SocketAddr) {
    let domain = posthorn_server::simulator::SIMULATOR_DOMAIN;
    println!("Demo mode: the mailbox simulator answers for @{domain}. Try:");
    println!();
    println!(
        "    posthorn send --api http://{http} --from you@example.com --subject Hi --text Hello \\"
    );
    for local in [
        "delivered",
        "bounce",
        "mailbox-full",
        "blocked",
        "defer",
        "slow",
        "expire",
        "bounce-async",
        "soft-async",
        "delay-async",
        "complaint",
        "ooto",
    ] {
        println!("        --to {local}@{domain} \\");
    }
    println!();
    println!(
        "then `posthorn status DELIVERY_ID` for each. `defer` is delivered on its second attempt,"
    );
    println!("`expire` never is and shows `expired` after about two minutes. The last five are");
    println!("accepted, then a bounce, a delay notice, a complaint or an auto-reply comes back");
    println!("to the inbound MX.");
    println!();
}

/// Resolves on Ctrl-C or SIGTERM, so in-flight requests finish and every
/// accepted write is committed before exit.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
