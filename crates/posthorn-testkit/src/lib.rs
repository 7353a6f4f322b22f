//! Test support: finding the real programs tests talk to (Postfix's
//! `smtp-sink`, `swaks`, Python with aiosmtpd, curl, ...), a fresh
//! PostgreSQL database per test (`postgres`), a TCP forwarder that cuts a
//! connection to a peer on demand (`forwarder`), free loopback ports, and
//! waiting for a peer on a deadline instead of a fixed sleep.
//!
//! A test whose peer is missing is skipped with a loud message, except when
//! `POSTHORN_REQUIRE_PEERS=1` (as `.ci/run` sets it): then it fails.

pub mod forwarder;
pub mod postfix;
pub mod postgres;

pub use forwarder::TcpForwarder;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Whether missing peers must fail the test run instead of skipping.
pub fn peers_required() -> bool {
    std::env::var("POSTHORN_REQUIRE_PEERS").as_deref() == Ok("1")
}

/// The path of `program` on `PATH` (or in the usual sbin directories, where
/// Debian puts Postfix's tools). `None`, after saying so loudly, when it is
/// not installed and peers are not required; a panic when they are.
pub fn peer(program: &str) -> Option<PathBuf> {
    let found = find(program);
    if found.is_none() {
        missing(program);
    }
    found
}

fn find(program: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// A Python 3 that can import `module` (e.g. `aiosmtpd`); same rules as
/// [`peer`]. The `python3` on `PATH` is asked first, then Debian's own
/// `/usr/bin/python3`: `apt-get install python3-…` puts modules there, out
/// of sight of a pyenv or virtualenv Python that `PATH` may lead to.
pub fn python_module(module: &str) -> Option<PathBuf> {
    let candidates = find("python3")
        .into_iter()
        .chain([PathBuf::from("/usr/bin/python3")]);
    for python in candidates {
        let ok = Command::new(&python)
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(python);
        }
    }
    missing(&format!("python3 module {module}"));
    None
}

fn missing(what: &str) {
    assert!(
        !peers_required(),
        "{what} is required (POSTHORN_REQUIRE_PEERS=1) but not installed; ./scripts/test installs it"
    );
    eprintln!("SKIPPED: {what} is not installed; run ./scripts/test (as root) to install it");
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Waits until something accepts connections on `addr`, up to `limit`.
pub fn wait_for_port(addr: SocketAddr, limit: Duration) {
    let deadline = Instant::now() + limit;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on {addr} after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `check` until it returns `Some`, up to `limit`.
pub fn eventually<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    eventually_ok(limit, || check().ok_or("nothing yet"))
}

/// Polls `check` until it returns `Ok`, up to `limit`; a timeout shows
/// the last `Err` (where things stood).
pub fn eventually_ok<T, E: std::fmt::Debug>(
    limit: Duration,
    mut check: impl FnMut() -> Result<T, E>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        let last = match check() {
            Ok(value) => return value,
            Err(last) => last,
        };
        assert!(
            Instant::now() < deadline,
            "condition not met within {limit:?}; last seen: {last:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process killed (and reaped) when dropped, so a failing test never
/// leaves a peer running.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The loopback address sinks listen on. Not 127.0.0.1: the servers under
/// test bind 127.0.0.1 port 0, and one of them could take a sink's port
/// between choosing it and smtp-sink binding it (then the sink would be
/// that server).
pub const SINK_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 3);

/// Postfix's `smtp-sink` on a free loopback port, writing every message it
/// receives (with its envelope, as `X-Mail-Args`/`X-Rcpt-Args` lines) to a
/// file of its own. `options` are smtp-sink's fault options (`-f rcpt`,
/// `-r rcpt`, `-Q mail`, `-q .`, `-w 5`, `-B "550 ..."`).
pub struct SmtpSink {
    _process: KillOnDrop,
    pub addr: SocketAddr,
    dumps: tempfile::TempDir,
}

impl SmtpSink {
    /// `None` (after saying so) when smtp-sink is not installed.
    pub fn start(options: &[&str]) -> Option<SmtpSink> {
        use std::os::unix::fs::PermissionsExt;
        let program = peer("smtp-sink")?;
        let dumps = tempfile::tempdir().expect("temp dir");
        // smtp-sink drops root privileges to `nobody`, who must write here.
        std::fs::set_permissions(dumps.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let addr = TcpListener::bind((SINK_IP, 0))
            .and_then(|l| l.local_addr())
            .expect("a free loopback port");
        let child = Command::new(program)
            .args(["-u", "nobody", "-d"])
            .arg(format!("{}/m.", dumps.path().display()))
            .args(options)
            .arg(addr.to_string())
            .arg("128")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start smtp-sink");
        let process = KillOnDrop(child);
        wait_for_port(addr, Duration::from_secs(10));
        Some(SmtpSink {
            _process: process,
            addr,
            dumps,
        })
    }

    /// Every message received in full so far, in file-name order.
    ///
    /// smtp-sink creates a message's file before it has written it (and
    /// says nothing when it has), so a file read just after the client was
    /// answered can still be empty or short. A file counts once it is not
    /// empty and has not changed over a short pause: the sink writes a
    /// received message in one go, in far less time than that.
    pub fn messages(&self) -> Vec<String> {
        let first = read_dir_texts(self.dumps.path());
        std::thread::sleep(Duration::from_millis(50));
        let second = read_dir_texts(self.dumps.path());
        second
            .into_iter()
            .filter(|text| !text.is_empty() && first.contains(text))
            .collect()
    }

    /// The directory the messages are written to (for a thread of its own
    /// to read them with [`read_dir_texts`]).
    pub fn dumps_dir(&self) -> &std::path::Path {
        self.dumps.path()
    }
}

/// The text of every file in `dir`, sorted by name.
pub fn read_dir_texts(dir: &std::path::Path) -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_none_or(|e| e != "tmp"));
    files.sort();
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .collect()
}
