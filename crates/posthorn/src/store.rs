//! `posthorn store ...`: work on a whole store. `store copy` moves the
//! embedded SQLite store of a data directory, with its DKIM key files,
//! into an empty PostgreSQL database (issue #14, point 7), showing its
//! progress on stderr and a summary on stdout.

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use posthorn_core::config::StoreConfig;
use posthorn_server::app::{SECRET_FILE, SERVER_SECRET};
use posthorn_server::dkim;
use posthorn_store::copy::{CopyProgress, copy_sqlite_to_postgres};
use posthorn_store::{PgStore, StoreRules};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Copy the embedded store of a data directory and its DKIM keys into
    /// an empty PostgreSQL database, in one transaction (all or nothing),
    /// and check the counts. Stop `posthorn serve` on the data directory
    /// first.
    Copy {
        /// The data directory whose store is copied (read only).
        #[arg(long, value_name = "DATA_DIR")]
        from: PathBuf,
        /// The target: postgres://USER[:PASSWORD]@HOST[:PORT]/DB, empty.
        #[arg(long, value_name = "URL")]
        to: String,
    },
}

pub async fn run(command: StoreCommand) -> Result<()> {
    match command {
        StoreCommand::Copy { from, to } => {
            // The copy drives PostgreSQL with the blocking client, which
            // must not run on an async worker thread.
            tokio::task::spawn_blocking(move || copy(from, to))
                .await
                .context("the copy's thread")?
        }
    }
}

fn copy(from: PathBuf, to: String) -> Result<()> {
    let started = Instant::now();
    // Read (and checked, as `serve` checks a key it loads) before anything
    // is copied: a key file that cannot be used stops the copy.
    let keys: Vec<_> = dkim::key_files(&from)
        .with_context(|| format!("reading the DKIM keys of {}", from.display()))?
        .into_iter()
        .map(|file| file.record)
        .collect();
    let mut display = Display::new();
    let result = copy_sqlite_to_postgres(&from, &to, &keys, &mut |p| display.show(p));
    display.end_line();
    let report = result.with_context(|| format!("copying the store in {}", from.display()))?;
    let rows: u64 = report.tables.iter().map(|(_, rows)| rows).sum();
    println!(
        "copied {rows} rows from {} to {} in {:.1}s; the counts of every table match:",
        from.display(),
        report.target,
        started.elapsed().as_secs_f64()
    );
    for (table, rows) in &report.tables {
        println!("  {table:<20} {rows:>12}");
    }
    keep_secret(&from, &to)
}

/// Return paths and tracking links sent before the move are signed with
/// the data directory's secret: the nodes on PostgreSQL share the secret
/// kept in the database, so it becomes that one, and they keep verifying
/// them.
fn keep_secret(from: &std::path::Path, to: &str) -> Result<()> {
    let path = from.join(SECRET_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let secret = hex::decode(text.trim()).with_context(|| format!("reading {}", path.display()))?;
    let store = PgStore::connect(to, &StoreConfig::default(), StoreRules::default())?;
    if store.shared_secret(SERVER_SECRET, secret.clone())? != secret {
        bail!(
            "the database already keeps another server secret: links and return paths sent \
             before the move will not verify on it"
        );
    }
    println!("kept {} as the server secret of every node", path.display());
    Ok(())
}

/// One stderr line per table, rewritten in place (`\r`) as batches go:
/// rows copied of the table's total and the rate.
struct Display {
    table: Option<&'static str>,
    table_started: Instant,
    last_shown: Option<Instant>,
}

/// Updates of one line at most this often (a batch takes milliseconds).
const REDRAW: Duration = Duration::from_millis(200);

impl Display {
    fn new() -> Display {
        Display {
            table: None,
            table_started: Instant::now(),
            last_shown: None,
        }
    }

    fn show(&mut self, p: CopyProgress) {
        if self.table != Some(p.table) {
            self.end_line();
            self.table = Some(p.table);
            self.table_started = Instant::now();
            self.last_shown = None;
        }
        let done = p.copied >= p.total;
        let due = self.last_shown.is_none_or(|at| at.elapsed() >= REDRAW);
        if !done && !due {
            return;
        }
        self.last_shown = Some(Instant::now());
        let seconds = self.table_started.elapsed().as_secs_f64();
        let rate = if seconds > 0.0 {
            p.copied as f64 / seconds
        } else {
            0.0
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r{:<20} {:>12} / {:<12} rows  {:>10.0} rows/s",
            p.table, p.copied, p.total, rate
        );
        let _ = err.flush();
    }

    /// Ends the current table's line, if one is shown.
    fn end_line(&mut self) {
        if self.table.take().is_some() {
            eprintln!();
        }
    }
}
