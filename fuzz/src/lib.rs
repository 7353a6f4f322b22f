//! The service the fuzz targets talk to: one `App` per fuzzing process, on
//! SQLite in a temporary directory, with its admin key and one accepted
//! delivery whose return path returned mail can name. No delivery workers
//! run: nothing leaves the process.

use axum::body::Body;
use posthorn_core::SystemClock;
use posthorn_core::config::Config;
use posthorn_server::{App, Bootstrap};
use posthorn_store::{SqliteStore, StoreRules};
use std::sync::{Arc, OnceLock};
use tower_service::Service;

pub struct Harness {
    pub runtime: tokio::runtime::Runtime,
    pub app: App,
    pub router: axum::Router,
    /// The admin key of tenant `default` (every scope).
    pub admin_key: String,
    /// `bounces+TOKEN@bounce.example` of a delivery that exists.
    pub return_path: String,
    _dir: tempfile::TempDir,
}

/// The process's harness, made on first use.
pub fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(start)
}

fn start() -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::default();
    config.server.data_dir = dir.path().to_path_buf();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = SqliteStore::open(
        &config.server.data_dir,
        &config.store,
        StoreRules::from_config(&config),
    )
    .expect("open store");
    let app = App::with_store(config, Arc::new(store), Arc::new(SystemClock)).expect("app");
    let router = app.router();
    let (admin_key, return_path) = runtime.block_on(async {
        let Ok(Bootstrap::Created { key, .. }) = app.bootstrap().await else {
            panic!("a new data directory bootstraps an admin key");
        };
        let body = br#"{"from": "shop@shop.example", "to": ["ann@example.com"],
            "subject": "Receipt", "text": "Thanks"}"#;
        let (status, answer) = request(&router, "POST", "/v1/messages", &key, body.to_vec()).await;
        assert_eq!(status, 202, "{}", String::from_utf8_lossy(&answer));
        let receipt: serde_json::Value = serde_json::from_slice(&answer).expect("JSON receipt");
        let delivery = receipt["deliveries"][0]["id"]
            .as_str()
            .expect("a delivery id");
        let delivery = posthorn_core::DeliveryId::parse(delivery).expect("a delivery id");
        (key, app.verp.return_path(&delivery, "bounce.example"))
    });
    Harness {
        runtime,
        app,
        router,
        admin_key,
        return_path,
        _dir: dir,
    }
}

/// One request through the service's router (the same handlers as on the
/// socket); the answer's status and body.
pub async fn request(
    router: &axum::Router,
    method: &str,
    path: &str,
    key: &str,
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    let request = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .extension(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            40000,
        ))))
        .body(Body::from(body))
        .expect("a request");
    let response = router.clone().call(request).await.expect("infallible");
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("the whole answer");
    (status, bytes.to_vec())
}
