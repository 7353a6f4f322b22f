//! What the server's end-to-end tests share: an app on a fresh data
//! directory with SQLite (or the parts to build one on another store),
//! bootstrapped, its HTTP listener bound (so a test
//! can put the address in its configuration before the app is built), and
//! an HTTP client. Each test file keeps its own `Server` handle.

// Each test binary compiles this module and uses part of it.
#![allow(dead_code)]

use posthorn_core::SystemClock;
use posthorn_core::config::Config;
use posthorn_server::{App, Bootstrap};
use posthorn_store::{SqliteStore, StoreRules};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub struct Booted {
    pub app: App,
    pub listener: tokio::net::TcpListener,
    pub addr: SocketAddr,
    pub store: Arc<SqliteStore>,
    /// The admin key the first start created, and the file it was written to.
    pub admin: String,
    pub key_file: PathBuf,
    pub dir: tempfile::TempDir,
}

/// What an app is built from: a fresh data directory, the HTTP listener
/// (bound, so its address can go into the configuration) and the
/// configuration, which `configure` saw with the data directory set.
pub struct Prepared {
    pub dir: tempfile::TempDir,
    pub listener: tokio::net::TcpListener,
    pub addr: SocketAddr,
    pub config: Config,
}

pub async fn prepare(configure: impl FnOnce(&mut Config, SocketAddr)) -> Prepared {
    let dir = tempfile::tempdir().expect("temp dir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = Config::default();
    config.server.data_dir = dir.path().to_path_buf();
    configure(&mut config, addr);
    Prepared {
        dir,
        listener,
        addr,
        config,
    }
}

/// The first start's bootstrap: the admin key it created, and its file.
pub async fn bootstrap(app: &App) -> (String, PathBuf) {
    match app.bootstrap().await.expect("bootstrap") {
        Bootstrap::Created { key, key_file } => (key, key_file),
        other => panic!("first start must create the admin key, got {other:?}"),
    }
}

/// Builds and bootstraps an app on SQLite; `configure` sees the
/// configuration with its data directory set, and the address the app
/// will serve on.
pub async fn boot(configure: impl FnOnce(&mut Config, SocketAddr)) -> Booted {
    let Prepared {
        dir,
        listener,
        addr,
        config,
    } = prepare(configure).await;
    let store = Arc::new(
        SqliteStore::open(
            &config.server.data_dir,
            &config.store,
            StoreRules::from_config(&config),
        )
        .expect("open store"),
    );
    let app = App::with_store(config, store.clone(), Arc::new(SystemClock)).expect("app");
    let (admin, key_file) = bootstrap(&app).await;
    Booted {
        app,
        listener,
        addr,
        store,
        admin,
        key_file,
        dir,
    }
}

/// Serves `app` on `listener` until the test ends.
pub fn serve(app: App, listener: tokio::net::TcpListener) {
    tokio::spawn(async move {
        app.serve(listener, std::future::pending())
            .await
            .expect("serve");
    });
}

/// A client for the app on loopback; redirects are answers to look at,
/// not to follow.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}
