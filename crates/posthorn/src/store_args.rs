//! Where `posthorn keys` and `posthorn domains` act: the data directory,
//! and the store `serve` uses with it (SQLite in the directory, or the
//! PostgreSQL database of `--store`).

use anyhow::{Context, Result};
use posthorn_core::config::{Config, without_user};
use posthorn_server::dkim::KeyHome;
use posthorn_store::{PgStore, SqliteStore, Store, StoreRules};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct StoreArgs {
    /// The data directory (the SQLite database and the DKIM key files live
    /// there when there is no --store).
    #[arg(long, env = "POSTHORN_DATA_DIR", default_value = "posthorn-data")]
    pub data_dir: PathBuf,
    /// The PostgreSQL database `serve` runs on
    /// (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB`), so that API keys,
    /// domains and DKIM keys are those every node sees. Read from
    /// POSTHORN_STORE__URL, the variable `serve` reads, when not given.
    #[arg(long, value_name = "URL", env = "POSTHORN_STORE__URL")]
    pub store: Option<String>,
}

impl StoreArgs {
    /// Opens the store: with a URL, PostgreSQL (never SQLite instead: a
    /// key made in the wrong database would be one no node knows).
    pub fn open(&self) -> Result<Arc<dyn Store>> {
        Ok(self.open_with_keys()?.0)
    }

    /// Where the DKIM keys are, without opening SQLite when they are files
    /// (it is not needed for them).
    pub fn key_home(&self) -> Result<KeyHome> {
        match &self.store {
            Some(_) => Ok(self.open_with_keys()?.1),
            None => Ok(KeyHome::Files(self.data_dir.clone())),
        }
    }

    /// Opens the store (as [`Self::open`]) and says where its DKIM keys
    /// are, as `serve` keeps them: files in the data directory with
    /// SQLite, the database's with PostgreSQL.
    pub fn open_with_keys(&self) -> Result<(Arc<dyn Store>, KeyHome)> {
        let config = Config::default();
        let rules = StoreRules::from_config(&config);
        match &self.store {
            Some(url) => {
                let store = Arc::new(
                    PgStore::connect(url, &config.store, rules)
                        .with_context(|| format!("opening the store {}", without_user(url)))?,
                );
                Ok((store.clone(), KeyHome::Database(store)))
            }
            None => {
                let store =
                    SqliteStore::open(&self.data_dir, &config.store, rules).with_context(|| {
                        format!("opening the data directory {}", self.data_dir.display())
                    })?;
                Ok((Arc::new(store), KeyHome::Files(self.data_dir.clone())))
            }
        }
    }
}
