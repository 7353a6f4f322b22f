//! A real Postfix MTA of the test's own: its configuration, queue and log in
//! a temporary directory, its SMTP server on a free loopback port, started by
//! the test and stopped when dropped.
//!
//! Its purpose is the part of the mail system Posthorn does not control: a
//! relay that accepts a message (250) and later fails to deliver it, and then
//! sends its own non-delivery report (DSN) back to the envelope sender. Every
//! destination is a literal loopback `[host]:port` from [`PostfixOptions`];
//! Postfix never looks anything up in DNS, and mail for any other domain
//! bounces at once (`default_transport = error`).
//!
//! ```no_run
//! use posthorn_testkit::postfix::{PostfixInstance, PostfixOptions};
//! # let failing: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
//! # let posthorn_mx: std::net::SocketAddr = "127.0.0.1:2".parse().unwrap();
//! let Some(postfix) = PostfixInstance::start_or_skip(
//!     PostfixOptions::new()
//!         .relay("example.test", failing) // accepted from clients, then 550s
//!         .route("bounces.example.test", posthorn_mx), // where its DSNs go
//! ) else {
//!     return; // skipped loudly: no Postfix, or not root
//! };
//! // ... deliver to postfix.smtp_addr() ...
//! ```
//!
//! Postfix's master must run as root (it binds the port, then every daemon
//! runs as `postfix`). Without root, or without Postfix installed, the test is
//! skipped loudly, or fails under `POSTHORN_REQUIRE_PEERS=1`. The system's
//! own `/etc/postfix` is neither read nor changed, and no system Postfix is
//! started: every command is given `-c` with the instance's directory.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{KillOnDrop, find, free_port, missing, peers_required};

/// What a [`PostfixInstance`] accepts and where it sends mail.
#[derive(Clone, Debug)]
pub struct PostfixOptions {
    /// Recipient domains Postfix accepts from SMTP clients (`relay_domains`),
    /// each with the next hop its mail is relayed to. Mail for any other
    /// domain is refused at RCPT (`554 5.7.1 Relay access denied`), so the
    /// instance is not an open relay even to loopback clients.
    pub relays: Vec<(String, NextHop)>,
    /// Further domains Postfix only sends to, each with its next hop: above
    /// all the envelope sender's domain, where the DSNs it generates go (the
    /// inbound MX under test).
    pub routes: Vec<(String, NextHop)>,
    /// How long a message may stay deferred before it is returned as
    /// undeliverable (`maximal_queue_lifetime`, `bounce_queue_lifetime`).
    /// Only matters for soft failures (4xx, refused connections): a 5xx
    /// reply bounces at once.
    pub queue_lifetime: Duration,
    /// Extra `main.cf` settings, applied last (they override the harness's).
    pub main_cf: Vec<(String, String)>,
}

/// Where Postfix sends the mail for a domain.
#[derive(Clone, Debug)]
pub enum NextHop {
    /// An SMTP server (IPv4 loopback), as the literal `smtp:[ip]:port`: no
    /// MX or address lookup.
    Smtp(SocketAddr),
    /// Nowhere: every message bounces at once with this reply, e.g.
    /// `5.1.1 User unknown` (Postfix's `error` transport), without any server.
    /// Its DSN names `X-Postfix` as the diagnostic type; [`NextHop::Smtp`] to a
    /// server that answers 550 gives the `smtp; 550 …` one of real MTAs.
    Fail(String),
}

impl NextHop {
    /// Its `transport_maps` value.
    fn transport(&self) -> String {
        match self {
            NextHop::Smtp(addr) => format!("smtp:[{}]:{}", addr.ip(), addr.port()),
            NextHop::Fail(reply) => format!("error:{reply}"),
        }
    }
}

impl Default for PostfixOptions {
    fn default() -> Self {
        PostfixOptions {
            relays: Vec::new(),
            routes: Vec::new(),
            queue_lifetime: Duration::from_secs(60),
            main_cf: Vec::new(),
        }
    }
}

impl PostfixOptions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Accept mail for `domain` from SMTP clients and relay it to the SMTP
    /// server at `next_hop`.
    pub fn relay(mut self, domain: &str, next_hop: SocketAddr) -> Self {
        self.relays
            .push((domain.to_owned(), NextHop::Smtp(next_hop)));
        self
    }

    /// Accept mail for `domain` from SMTP clients, then bounce it with
    /// `reply` (e.g. `5.1.1 User unknown`) without any server: see
    /// [`NextHop::Fail`].
    pub fn relay_and_fail(mut self, domain: &str, reply: &str) -> Self {
        self.relays
            .push((domain.to_owned(), NextHop::Fail(reply.to_owned())));
        self
    }

    /// Send mail for `domain` (not accepted from clients) to the SMTP server
    /// at `next_hop`: the envelope sender's domain, where DSNs go.
    pub fn route(mut self, domain: &str, next_hop: SocketAddr) -> Self {
        self.routes
            .push((domain.to_owned(), NextHop::Smtp(next_hop)));
        self
    }

    /// See [`PostfixOptions::queue_lifetime`]; whole seconds, at least one.
    pub fn queue_lifetime(mut self, lifetime: Duration) -> Self {
        self.queue_lifetime = lifetime;
        self
    }

    /// One more `main.cf` setting, e.g. `("smtp_connect_timeout", "2s")`.
    pub fn main_cf(mut self, name: &str, value: &str) -> Self {
        self.main_cf.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// A running Postfix with its own configuration, queue and log.
pub struct PostfixInstance {
    /// Dropped (killed) before the directory it would remove goes.
    watchdog: Option<KillOnDrop>,
    postfix: PathBuf,
    postqueue: PathBuf,
    /// Holds `config/`, `queue/`, `data/` and `maillog`.
    root: tempfile::TempDir,
    smtp_addr: SocketAddr,
    hostname: String,
}

/// How often a port that turned out taken is given up for another.
const START_ATTEMPTS: usize = 3;

impl PostfixInstance {
    /// Whether a Postfix can be started here: its programs are installed and
    /// this process is root. When not, says why loudly (the same skip as
    /// [`crate::peer`]), or panics under `POSTHORN_REQUIRE_PEERS=1`.
    pub fn available() -> bool {
        if programs().is_none() {
            missing("postfix (/usr/sbin/postfix, Debian package postfix)");
            return false;
        }
        if !is_root() {
            let what = "a Postfix instance (its master daemon must start as root)";
            assert!(
                !peers_required(),
                "{what} is required (POSTHORN_REQUIRE_PEERS=1) but this test does not run as root"
            );
            eprintln!("SKIPPED: {what}: this test does not run as root");
            return false;
        }
        true
    }

    /// [`PostfixInstance::start`] when [`PostfixInstance::available`], `None`
    /// (after a loud skip) when not; a failure to start panics, with the
    /// commands' output and the mail log.
    pub fn start_or_skip(options: PostfixOptions) -> Option<PostfixInstance> {
        if !Self::available() {
            return None;
        }
        match Self::start(options) {
            Ok(instance) => Some(instance),
            Err(e) => panic!("{e}"),
        }
    }

    /// Writes the configuration, checks it (`postfix check`), starts the
    /// mail system and waits until its SMTP port accepts connections. The
    /// error tells what failed, with the output and the mail log.
    pub fn start(options: PostfixOptions) -> Result<PostfixInstance, String> {
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            match Self::start_once(&options) {
                Ok(instance) => return Ok(instance),
                // The free port was taken between finding it and binding it:
                // another one.
                Err(e) if e.contains("Address already in use") => last_error = e,
                Err(e) => return Err(e),
            }
        }
        Err(last_error)
    }

    fn start_once(options: &PostfixOptions) -> Result<PostfixInstance, String> {
        use std::os::unix::fs::PermissionsExt;
        let (postfix, postqueue) = programs().ok_or("postfix is not installed")?;
        let root = tempfile::Builder::new()
            .prefix("posthorn-postfix.")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        // The daemons run as `postfix` and must reach the queue inside.
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod {}: {e}", root.path().display()))?;
        let port = free_port();
        let smtp_addr = SocketAddr::from(([127, 0, 0, 1], port));
        let hostname = format!("mta-{}-{port}.posthorn.test", std::process::id());
        let mut instance = PostfixInstance {
            postfix,
            postqueue,
            root,
            smtp_addr,
            hostname,
            watchdog: None,
        };
        instance.watchdog = instance.watchdog();
        instance.write_config(options)?;
        // `postfix check` (its `post-install create-missing`) makes the
        // queue's subdirectories and the data directory, not the queue.
        std::fs::create_dir(instance.queue_dir()).map_err(|e| format!("queue dir: {e}"))?;
        std::fs::set_permissions(instance.queue_dir(), std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod queue dir: {e}"))?;

        instance.postfix_command("check")?;
        // `postfix start` would repeat the check this file skips.
        std::fs::write(instance.queue_dir().join("quick-start"), "")
            .map_err(|e| format!("quick-start: {e}"))?;
        instance.postfix_command("start")?;
        // `master -w` has bound the port when `start` returns; this is a
        // second look, bounded.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&instance.smtp_addr, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                return Err(instance.failure(&format!(
                    "Postfix started but nothing listens on {}",
                    instance.smtp_addr
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(instance)
    }

    /// Where its SMTP server listens (loopback).
    pub fn smtp_addr(&self) -> SocketAddr {
        self.smtp_addr
    }

    /// Its `myhostname`: the domain of its `MAILER-DAEMON@…` DSN sender, and
    /// the name it greets with.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The directory holding its `main.cf` and `master.cf` (for `-c`).
    pub fn config_dir(&self) -> PathBuf {
        self.root.path().join("config")
    }

    /// Its `queue_directory`.
    pub fn queue_dir(&self) -> PathBuf {
        self.root.path().join("queue")
    }

    /// The mail log so far (`maillog_file`): every connection, delivery
    /// attempt, bounce and DSN, for diagnosing a failing test.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("maillog")).unwrap_or_default()
    }

    /// Attempts delivery of every queued message now (`postqueue -f`),
    /// instead of waiting for the deferred queue's next scan.
    pub fn flush(&self) -> Result<(), String> {
        self.run(
            Command::new(&self.postqueue)
                .arg("-c")
                .arg(self.config_dir())
                .arg("-f"),
        )
        .map(drop)
    }

    /// The queue listing (`postqueue -p`): `Mail queue is empty`, or each
    /// queued message with why it is deferred.
    pub fn queue(&self) -> Result<String, String> {
        self.run(
            Command::new(&self.postqueue)
                .arg("-c")
                .arg(self.config_dir())
                .arg("-p"),
        )
    }

    /// Whether no message is queued (none waiting, none being delivered).
    pub fn queue_is_empty(&self) -> bool {
        self.queue()
            .is_ok_and(|listing| listing.contains("Mail queue is empty"))
    }

    /// Sends one message over SMTP to this instance (EHLO, MAIL FROM, one
    /// RCPT TO per recipient, DATA) and returns the final reply to the data,
    /// e.g. `250 2.0.0 Ok: queued as 4ZxYz…`. `message` is the message text
    /// with headers; line ends are made CRLF and leading dots are doubled.
    /// Any reply other than the expected one is an error with the transcript.
    pub fn submit(&self, from: &str, recipients: &[&str], message: &str) -> Result<String, String> {
        smtp_send(self.smtp_addr, from, recipients, message)
    }

    /// `postfix -c DIR COMMAND`, its output, or an error with it and the log.
    fn postfix_command(&self, command: &str) -> Result<String, String> {
        self.run(
            Command::new(&self.postfix)
                .arg("-c")
                .arg(self.config_dir())
                .arg(command),
        )
    }

    fn run(&self, command: &mut Command) -> Result<String, String> {
        let shown = format!("{command:?}");
        let output = command
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{shown}: {e}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if output.status.success() {
            Ok(text)
        } else {
            Err(self.failure(&format!("{shown} failed ({}):\n{text}", output.status)))
        }
    }

    /// `what`, with the mail log and the configuration, for an error message.
    fn failure(&self, what: &str) -> String {
        let main_cf =
            std::fs::read_to_string(self.config_dir().join("main.cf")).unwrap_or_default();
        format!(
            "{what}\n--- maillog ---\n{}--- main.cf ---\n{main_cf}",
            self.log()
        )
    }

    fn write_config(&self, options: &PostfixOptions) -> Result<(), String> {
        let config = self.config_dir();
        // Postfix waits for a configuration file changed within the last
        // second to settle, in 300 ms naps, in every process that reads it:
        // over two seconds per start. Backdated, the files are read at once.
        let settled = std::time::SystemTime::now() - Duration::from_secs(10);
        let write = |name: &str, text: &str| {
            std::fs::create_dir_all(&config)
                .and_then(|()| std::fs::write(config.join(name), text))
                .and_then(|()| std::fs::File::options().write(true).open(config.join(name)))
                .and_then(|file| file.set_modified(settled))
                .map_err(|e| format!("writing {name}: {e}"))
        };
        let root = self.root.path().display();
        let lifetime = options.queue_lifetime.as_secs().max(1);
        let relay_domains: Vec<&str> = options.relays.iter().map(|(d, _)| d.as_str()).collect();
        let mut settings: Vec<(String, String)> = [
            ("compatibility_level", "3.6".to_owned()),
            // Everything of this instance's in its own directory.
            ("queue_directory", format!("{root}/queue")),
            ("data_directory", format!("{root}/data")),
            ("mail_owner", "postfix".to_owned()),
            ("setgid_group", "postdrop".to_owned()),
            ("myhostname", self.hostname.clone()),
            ("mydomain", "posthorn.test".to_owned()),
            ("myorigin", "$myhostname".to_owned()),
            ("syslog_name", format!("postfix-{}", self.smtp_addr.port())),
            ("maillog_file", format!("{root}/maillog")),
            ("maillog_file_prefixes", root.to_string()),
            // Loopback only; nothing delivered locally.
            ("inet_interfaces", "127.0.0.1".to_owned()),
            ("inet_protocols", "ipv4".to_owned()),
            ("mynetworks", "127.0.0.0/8".to_owned()),
            ("mydestination", String::new()),
            ("local_recipient_maps", String::new()),
            ("alias_maps", String::new()),
            ("alias_database", String::new()),
            ("relay_domains", relay_domains.join(", ")),
            // Only relay_domains, even from mynetworks: not an open relay.
            (
                "smtpd_relay_restrictions",
                "reject_unauth_destination".to_owned(),
            ),
            ("smtpd_recipient_restrictions", String::new()),
            // Accept first, fail later, also for NextHop::Fail (an `error`
            // transport is else refused at RCPT already).
            ("smtpd_reject_unlisted_recipient", "no".to_owned()),
            ("relayhost", String::new()),
            (
                "transport_maps",
                format!("texthash:{}", config.join("transport").display()),
            ),
            (
                "default_transport",
                "error:5.1.2 no route to this domain in the test Postfix".to_owned(),
            ),
            // No DNS anywhere: literal next hops, files for names.
            ("smtp_dns_support_level", "disabled".to_owned()),
            ("smtp_host_lookup", "native".to_owned()),
            ("smtpd_peername_lookup", "no".to_owned()),
            ("smtp_tls_security_level", "none".to_owned()),
            ("smtpd_tls_security_level", "none".to_owned()),
            // Fast: no waiting between tries, no delay warnings, short
            // timeouts, every delivery on a fresh connection.
            ("queue_run_delay", "1s".to_owned()),
            ("minimal_backoff_time", "1s".to_owned()),
            ("maximal_backoff_time", "2s".to_owned()),
            ("maximal_queue_lifetime", format!("{lifetime}s")),
            ("bounce_queue_lifetime", format!("{lifetime}s")),
            ("delay_warning_time", "0h".to_owned()),
            ("smtp_connect_timeout", "5s".to_owned()),
            ("smtp_helo_timeout", "10s".to_owned()),
            ("smtp_connection_cache_on_demand", "no".to_owned()),
            ("smtpd_error_sleep_time", "0s".to_owned()),
            ("in_flow_delay", "0s".to_owned()),
            ("enable_long_queue_ids", "yes".to_owned()),
            ("biff", "no".to_owned()),
            ("append_dot_mydomain", "no".to_owned()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
        settings.extend(options.main_cf.iter().cloned());
        let main_cf: String = settings
            .iter()
            .map(|(name, value)| format!("{name} = {value}\n"))
            .collect();
        write("main.cf", &main_cf)?;

        let transport: String = options
            .relays
            .iter()
            .chain(&options.routes)
            .map(|(domain, hop)| format!("{domain} {}\n", hop.transport()))
            .collect();
        write("transport", &transport)?;

        write("master.cf", &master_cf(self.smtp_addr))
    }

    /// A process that stops this Postfix and removes its directory if the
    /// test process dies without dropping the instance (killed, aborted):
    /// else its master would live on, holding its port. Its own process
    /// group, so a Ctrl-C to the test does not kill it first.
    fn watchdog(&self) -> Option<KillOnDrop> {
        use std::os::unix::process::CommandExt;
        let script = r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done
"$2" -c "$3" abort >/dev/null 2>&1
sleep 1
rm -rf "$4""#;
        Command::new("sh")
            .args(["-c", script, "postfix-watchdog"])
            .arg(std::process::id().to_string())
            .arg(&self.postfix)
            .arg(self.config_dir())
            .arg(self.root.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .ok()
            .map(KillOnDrop)
    }

    /// The master's process id, from its pid file.
    fn master_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.queue_dir().join("pid/master.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for PostfixInstance {
    /// Stops the master (which takes its daemons with it) and waits until it
    /// is gone, so its port and directory are free when the test goes on.
    fn drop(&mut self) {
        let pid = self.master_pid();
        // `abort` signals the master and returns; `stop` would poll in whole
        // seconds. The wait is ours, finer.
        let _ = Command::new(&self.postfix)
            .arg("-c")
            .arg(self.config_dir())
            .arg("abort")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(pid) = pid {
            let deadline = Instant::now() + Duration::from_secs(10);
            while process_alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if process_alive(pid) {
                let _ = Command::new("kill")
                    .args(["-KILL", &format!("-{pid}")])
                    .status();
            }
        }
    }
}

/// Whether `pid` runs (a zombie, reaped by nobody in a container, does not).
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// `master.cf`: the SMTP server on `smtp_addr`, the daemons that queue,
/// relay and bounce, and `postlog` for `maillog_file`. Nothing chrooted
/// (Debian's default chroots).
fn master_cf(smtp_addr: SocketAddr) -> String {
    let services = [
        format!("{smtp_addr} inet n - n - - smtpd"),
        // Nothing is injected locally, but `postqueue -f` takes a running
        // pickup for a running mail system.
        "pickup unix n - n 60 1 pickup".into(),
        "cleanup unix n - n - 0 cleanup".into(),
        "qmgr unix n - n 300 1 qmgr".into(),
        "rewrite unix - - n - - trivial-rewrite".into(),
        "bounce unix - - n - 0 bounce".into(),
        "defer unix - - n - 0 bounce".into(),
        "trace unix - - n - 0 bounce".into(),
        "verify unix - - n - 1 verify".into(),
        "flush unix n - n 1000? 0 flush".into(),
        "proxymap unix - - n - - proxymap".into(),
        "proxywrite unix - - n - 1 proxymap".into(),
        "smtp unix - - n - - smtp".into(),
        "relay unix - - n - - smtp".into(),
        "showq unix n - n - - showq".into(),
        "error unix - - n - - error".into(),
        "retry unix - - n - - error".into(),
        "discard unix - - n - - discard".into(),
        "anvil unix - - n - 1 anvil".into(),
        "scache unix - - n - 1 scache".into(),
        "postlog unix-dgram n - n - 1 postlogd".into(),
    ];
    services.iter().map(|s| format!("{s}\n")).collect()
}

/// `postfix` and `postqueue`, when Postfix is installed.
fn programs() -> Option<(PathBuf, PathBuf)> {
    Some((find("postfix")?, find("postqueue")?))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// One SMTP transaction to `addr` in plain text, as [`PostfixInstance::submit`]
/// describes.
pub fn smtp_send(
    addr: SocketAddr,
    from: &str,
    recipients: &[&str],
    message: &str,
) -> Result<String, String> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(30))))
        .map_err(|e| format!("socket: {e}"))?;
    let mut session = SmtpSession {
        reader: BufReader::new(stream.try_clone().map_err(|e| e.to_string())?),
        writer: stream,
        transcript: String::new(),
    };
    session.expect(None, 220)?;
    session.expect(Some("EHLO client.posthorn.test"), 250)?;
    session.expect(Some(&format!("MAIL FROM:<{from}>")), 250)?;
    for rcpt in recipients {
        session.expect(Some(&format!("RCPT TO:<{rcpt}>")), 250)?;
    }
    session.expect(Some("DATA"), 354)?;
    let mut data = String::new();
    for line in message.lines() {
        if line.starts_with('.') {
            data.push('.');
        }
        data.push_str(line);
        data.push_str("\r\n");
    }
    data.push('.');
    let reply = session.expect(Some(&data), 250)?;
    let _ = session.expect(Some("QUIT"), 221);
    Ok(reply)
}

struct SmtpSession {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    transcript: String,
}

impl SmtpSession {
    /// Sends `command` (if any) and reads the reply, which must have `code`.
    fn expect(&mut self, command: Option<&str>, code: u16) -> Result<String, String> {
        if let Some(command) = command {
            self.transcript.push_str(&format!("C: {command}\n"));
            self.writer
                .write_all(format!("{command}\r\n").as_bytes())
                .map_err(|e| format!("{e}\n{}", self.transcript))?;
        }
        let mut reply = String::new();
        loop {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .map_err(|e| format!("{e}\n{}", self.transcript))?;
            if n == 0 {
                return Err(format!("connection closed\n{}", self.transcript));
            }
            self.transcript.push_str(&format!("S: {line}"));
            reply.push_str(line.trim_end());
            // "250-" continues, "250 " ends.
            if line.as_bytes().get(3) != Some(&b'-') {
                break;
            }
            reply.push('\n');
        }
        if reply.starts_with(&code.to_string()) {
            Ok(reply)
        } else {
            Err(format!("expected {code}\n{}", self.transcript))
        }
    }
}
