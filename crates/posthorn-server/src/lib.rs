//! The running Posthorn service: configuration loading, API keys, the HTTP
//! API (axum), metrics, the delivery workers, the inbound MX, and the wiring
//! of store and rules.
//!
//! Handlers validate input and translate between HTTP and the [`Store`];
//! they hold no rules of their own (those are in `posthorn-core`).
//!
//! [`Store`]: posthorn_store::Store

pub mod api;
pub mod app;
pub mod config;
pub mod cursor;
pub mod data_dir;
pub mod data_file;
pub mod delivery;
pub mod dkim;
pub mod error;
pub mod event_view;
pub mod headers;
pub mod http_server;
pub mod inbound;
pub mod ingest;
pub mod keys;
pub mod machine_networks;
pub mod metrics;
pub mod open_files;
pub mod reply_rules;
pub mod sending_domains;
pub mod simulator;
pub mod startup;
pub mod submission;
pub mod tracker_cache;
pub mod tracking;

pub use app::{App, AppState, Bootstrap};
