//! `posthorn classify`: what Posthorn reads in returned mail, or in one SMTP
//! reply, as JSON lines; the same parser and classifier the inbound MX and
//! the delivery workers use, so a user can see why a bounce was judged so.

use anyhow::{Context, Result};
use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(
    after_help = "Each record prints as one JSON line with the fields file, kind (bounce delay \
                  complaint vacation delivered), recipient, status, reply_code, reason, \
                  hard_bounce, feedback_type, diagnostic and rule; a file that is none of these \
                  prints {\"file\": ..., \"kind\": \"not_bounce\"}."
)]
pub struct ClassifyArgs {
    /// Messages to read (RFC 5322 files: bounces, delay notices, ARF
    /// complaints, auto-replies).
    #[arg(required_unless_present = "reply", conflicts_with = "reply")]
    files: Vec<PathBuf>,
    /// Classify one SMTP reply line instead, e.g.
    /// "550 5.1.1 <x@example.com>: user unknown".
    #[arg(long)]
    reply: Option<String>,
}

pub fn run(args: ClassifyArgs) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if let Some(line) = &args.reply {
        writeln!(out, "{}", reply_json(line))?;
        return Ok(());
    }
    for path in &args.files {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        for line in file_json(&path.display().to_string(), &bytes) {
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

/// The JSON lines for one file.
fn file_json(file: &str, bytes: &[u8]) -> Vec<Value> {
    let records = posthorn_bounce::parse(bytes);
    if records.is_empty() {
        return vec![json!({ "file": file, "kind": "not_bounce" })];
    }
    records
        .iter()
        .map(|r| {
            json!({
                "file": file,
                "kind": r.kind.as_str(),
                "recipient": r.recipient,
                "status": r.status,
                "reply_code": r.reply_code,
                "reason": r.reason.as_str(),
                "hard_bounce": r.hard_bounce(),
                "feedback_type": r.feedback_type,
                "diagnostic": r.diagnostic,
                "rule": r.rule,
            })
        })
        .collect()
}

/// The classification of one reply line.
fn reply_json(line: &str) -> Value {
    let (code, enhanced, text) = posthorn_bounce::parse_reply_line(line);
    let class = posthorn_bounce::classify_reply(code, enhanced.as_deref(), &text);
    json!({
        "reply": line,
        "reply_code": code,
        "status": class.status,
        "reason": class.reason.as_str(),
        "bounce_type": class.bounce_type.as_str(),
        "hard_bounce": match class.bounce_type {
            posthorn_bounce::BounceType::Hard => Some(true),
            posthorn_bounce::BounceType::Soft => Some(false),
            posthorn_bounce::BounceType::Undetermined => None,
        },
        "temporary": class.temporary,
        "rule": class.rule,
    })
}
