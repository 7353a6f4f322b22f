//! A fresh PostgreSQL database per test, dropped when the test ends.
//!
//! The server is named by `POSTHORN_TEST_POSTGRES` (a URL such as
//! `postgres://postgres@127.0.0.1:5432/test`, which `./scripts/test` sets
//! and starts the server for); its user must be allowed to create
//! databases. Without the variable a test skips loudly, or fails when
//! `POSTHORN_REQUIRE_PEERS=1`, as for every other peer.
//!
//! `postgres::Client` blocks on a runtime of its own, so it must not run on
//! an async test's thread: the administrative work here (create, drop)
//! runs on a thread of its own, and tests may call it from anywhere.

pub use posthorn_core::config::with_database;
use std::sync::atomic::{AtomicU32, Ordering};

/// The variable that names the test server.
pub const ENV: &str = "POSTHORN_TEST_POSTGRES";

/// A database made for one test: its URL is the server's with the new
/// database's name; the database is dropped (closing any connection left
/// open to it) when this is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    server: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates a database with a name of its own. `None`, after saying so
    /// loudly, when `POSTHORN_TEST_POSTGRES` is not set and peers are not
    /// required; a panic when they are, or when the server refuses.
    pub fn create() -> Option<TestDatabase> {
        let Ok(server) = std::env::var(ENV) else {
            super::missing(&format!("PostgreSQL ({ENV} is not set)"));
            return None;
        };
        let name = unique_name();
        let url = with_database(&server, &name);
        let statement = format!("CREATE DATABASE {name}");
        admin(&server, &statement).unwrap_or_else(|e| {
            panic!("{statement} on the server of {ENV} failed: {e}");
        });
        Some(TestDatabase { server, name, url })
    }

    /// The new database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The new database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A plain connection to the database, for a test's own SQL. Blocking;
    /// use it on a thread of its own (or `spawn_blocking`) in async tests.
    pub fn client(&self) -> ::postgres::Client {
        ::postgres::Client::connect(&self.url, ::postgres::NoTls)
            .unwrap_or_else(|e| panic!("connecting to the test database {}: {e}", self.name))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // FORCE: a store under test may still hold connections.
        let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = admin(&self.server, &statement) {
            eprintln!("warning: {statement} failed: {e}");
        }
    }
}

/// A database name no other test (in this process or another) is using:
/// the process id, the time and a counter.
fn unique_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "posthorn_test_{}_{nanos}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs one statement on the server's own database, on a thread of its
/// own (see the module's documentation).
fn admin(server: &str, statement: &str) -> Result<(), String> {
    let (server, statement) = (server.to_owned(), statement.to_owned());
    std::thread::spawn(move || {
        let mut client =
            ::postgres::Client::connect(&server, ::postgres::NoTls).map_err(|e| e.to_string())?;
        client.batch_execute(&statement).map_err(|e| e.to_string())
    })
    .join()
    .unwrap_or_else(|_| Err("the admin thread panicked".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_do_not_repeat() {
        let a = unique_name();
        let b = unique_name();
        assert_ne!(a, b);
        assert!(a.starts_with("posthorn_test_"));
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    }
}
