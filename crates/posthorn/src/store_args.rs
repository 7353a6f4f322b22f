//! Where `posthorn keys` and `posthorn domains` act: the data directory,
//! and the store `serve` uses with it (SQLite in the directory, or the
//! PostgreSQL database of `--store`).

use anyhow::{Context, Result};
use posthorn_core::config::{Config, without_user};
use posthorn_store::{PgStore, SqliteStore, Store, StoreRules};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct StoreArgs {
    /// The data directory (DKIM keys live there, and the SQLite database
    /// when there is no --store).
    #[arg(long, env = "POSTHORN_DATA_DIR", default_value = "posthorn-data")]
    pub data_dir: PathBuf,
    /// The PostgreSQL database `serve` runs on
    /// (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB`), so that keys and
    /// domains are those every node sees. Read from POSTHORN_STORE__URL,
    /// the variable `serve` reads, when not given.
    #[arg(long, value_name = "URL", env = "POSTHORN_STORE__URL")]
    pub store: Option<String>,
}

impl StoreArgs {
    /// Opens the store: with a URL, PostgreSQL (never SQLite instead: a
    /// key made in the wrong database would be one no node knows).
    pub fn open(&self) -> Result<Box<dyn Store>> {
        let config = Config::default();
        let rules = StoreRules::from_config(&config);
        match &self.store {
            Some(url) => Ok(Box::new(
                PgStore::connect(url, &config.store, rules)
                    .with_context(|| format!("opening the store {}", without_user(url)))?,
            )),
            None => Ok(Box::new(
                SqliteStore::open(&self.data_dir, &config.store, rules).with_context(|| {
                    format!("opening the data directory {}", self.data_dir.display())
                })?,
            )),
        }
    }
}
