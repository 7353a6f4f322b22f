//! Helpers shared by the tests that run `posthorn serve` with real SMTP
//! peers: Postfix's `smtp-sink`, and the server under test.
#![allow(dead_code)]

pub mod clients;

use posthorn_testkit::eventually_ok;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_posthorn");
pub const WAIT: Duration = Duration::from_secs(60);

#[allow(unused_imports)]
pub use posthorn_testkit::SmtpSink as Sink;

pub struct Server {
    child: Child,
    pub base: String,
    pub key: String,
    /// The SMTP submission address, when it listens.
    pub submission: Option<SocketAddr>,
    /// The inbound MX address, when it listens.
    pub mx: Option<SocketAddr>,
    /// Everything `serve` printed before "listening" (the first-start key).
    pub banner: String,
}

impl Server {
    /// `posthorn serve` on free ports (the inbound MX on one too); `args`
    /// may set `--submission` and `--mx`.
    pub fn start(data: &Path, args: &[String], env: &[(&str, &str)]) -> Server {
        let submission_given = args.iter().any(|a| a == "--submission");
        let mx_given = args.iter().any(|a| a == "--mx");
        let mut child = Command::new(BIN)
            .args(["serve", "--http", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .args(if submission_given {
                &[][..]
            } else {
                &["--submission", "off"][..]
            })
            .args(if mx_given {
                &[][..]
            } else {
                &["--mx", "127.0.0.1:0"][..]
            })
            .args(args)
            .envs(env.iter().copied())
            .env("POSTHORN_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut submission = None;
        let mut mx = None;
        let mut banner = String::new();
        let base = loop {
            let line = lines
                .next()
                .expect("serve exited before listening")
                .unwrap();
            if let Some(rest) = line.strip_prefix("SMTP submission on ") {
                submission = rest.split_whitespace().next().and_then(|a| a.parse().ok());
            }
            if let Some(rest) = line.strip_prefix("Inbound MX on ") {
                mx = rest.split_whitespace().next().and_then(|a| a.parse().ok());
            }
            if let Some(url) = line.strip_prefix("Posthorn is listening on ") {
                break url.trim().to_owned();
            }
            banner.push_str(&line);
            banner.push('\n');
        };
        std::thread::spawn(move || for _ in lines {});
        let key = std::fs::read_to_string(data.join("initial-admin-key"))
            .unwrap()
            .trim()
            .to_owned();
        Server {
            child,
            base,
            key,
            submission,
            mx,
            banner,
        }
    }

    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the server as an init system does (SIGTERM) and waits until
    /// it has exited; panics unless it exited cleanly.
    pub fn terminate(mut self) {
        let term = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(term.success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "serve exited with {exit}");
    }

    pub fn get(&self, path: &str) -> Value {
        let out = Command::new("curl")
            .args(["-sS", "-H", &format!("Authorization: Bearer {}", self.key)])
            .arg(format!("{}{path}", self.base))
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    pub fn submit(&self, body: Value) -> Value {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-H",
                &format!("Authorization: Bearer {}", self.key),
                "-d",
            ])
            .arg(body.to_string())
            .arg(format!("{}/v1/messages", self.base))
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn status(&self, delivery: &str) -> Value {
        self.get(&format!("/v1/deliveries/{delivery}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn zone_file(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("zone.txt");
    std::fs::write(&path, text).unwrap();
    path
}

pub fn route_args(routes: &[(&str, SocketAddr)], zone: &Path) -> Vec<String> {
    let mut args = vec!["--dns-zone".to_owned(), zone.display().to_string()];
    for (domain, addr) in routes {
        args.push("--route".into());
        args.push(format!("{domain}={addr}"));
    }
    args
}

pub fn ids(receipt: &Value) -> Vec<String> {
    receipt["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until the delivery's status is `want`; a timeout shows the
/// delivery as it last stood.
pub fn wait_status(server: &Server, delivery: &str, want: &str) -> Value {
    eventually_ok(WAIT, || {
        let d = server.status(delivery);
        if d["status"] == want { Ok(d) } else { Err(d) }
    })
}

/// The kinds of a delivery's events, oldest first.
pub fn event_kinds(delivery: &Value) -> Vec<String> {
    delivery["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|e| e["kind"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The events of `kind` in a delivery answer, oldest first.
pub fn events_of(delivery: &Value, kind: &str) -> Vec<Value> {
    delivery["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e["kind"] == kind)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// The first event of `kind` in a delivery answer.
pub fn event_of_kind(delivery: &Value, kind: &str) -> Value {
    events_of(delivery, kind)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no {kind} event in {delivery}"))
}

/// Runs `command` with `input` on its standard input; its output.
pub fn run_with_input(command: &mut Command, input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// The parts of a copy a person's mail client shows: its headers and its
/// decoded HTML and text bodies, read by Python's `email` package.
pub struct Copy {
    pub headers: String,
    pub html: String,
    pub text: String,
}

pub fn read_copy(python: &Path, raw: &str) -> Copy {
    let script = "import email, email.policy, json, sys\n\
        m = email.message_from_string(sys.stdin.read(), policy=email.policy.default)\n\
        html = m.get_body(('html',)); text = m.get_body(('plain',))\n\
        print(json.dumps({'headers': ''.join(f'{k}: {v}\\n' for k, v in m.items()),\n\
          'html': html.get_content() if html else '', 'text': text.get_content() if text else ''}))\n";
    let out = run_with_input(Command::new(python).args(["-c", script]), raw.as_bytes());
    assert!(
        out.status.success(),
        "python could not read the copy: {out:?}"
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    Copy {
        headers: v["headers"].as_str().unwrap().to_owned(),
        html: v["html"].as_str().unwrap().to_owned(),
        text: v["text"].as_str().unwrap().to_owned(),
    }
}

/// Every tracker URL (`BASE/{o,c,u}/TOKEN`) in `text`, in order.
pub fn tracker_urls(text: &str, base: &str, route: &str) -> Vec<String> {
    let prefix = format!("{base}/{route}/");
    text.match_indices(&prefix)
        .map(|(at, _)| {
            let token: String = text[at + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            format!("{prefix}{token}")
        })
        .collect()
}
