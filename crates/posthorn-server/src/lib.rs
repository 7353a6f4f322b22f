//! The running Posthorn service: configuration loading, API keys, the HTTP
//! API (axum), metrics, and the wiring of store and rules. Later issues add
//! the delivery workers, the inbound MX, tracking endpoints and webhooks here.
//!
//! Handlers validate input and translate between HTTP and the [`Store`];
//! they hold no rules of their own (those are in `posthorn-core`).
//!
//! [`Store`]: posthorn_store::Store

pub mod api;
pub mod app;
pub mod config;
pub mod delivery;
pub mod dkim;
pub mod error;
pub mod keys;
pub mod metrics;
pub mod simulator;
pub mod submission;

pub use app::{App, AppState, Bootstrap};
