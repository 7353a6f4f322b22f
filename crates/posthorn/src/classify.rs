//! `posthorn classify`: what Posthorn reads in returned mail, or in one SMTP
//! reply, as JSON lines; the same parser and classifier the inbound MX and
//! the delivery workers use, with the same operator rules (`--rules-file`,
//! or the configuration's `[bounce] rules_file`), so a user can see why a
//! bounce was judged so, and an operator can try a rules file before
//! deploying it.

use anyhow::{Context, Result};
use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(
    after_help = "Each record prints as one JSON line with the fields file, kind (bounce delay \
                  complaint vacation delivered), recipient, status, reply_code, reason, \
                  hard_bounce, feedback_type, diagnostic, rule and rule_source (builtin or \
                  operator; an operator's rule adds rules_file and rule_line); a file that is \
                  none of these prints {\"file\": ..., \"kind\": \"not_bounce\"}."
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
    /// The recipient (or just its domain) the reply was about, for rules
    /// with a `domain` condition.
    #[arg(long, requires = "reply", value_name = "ADDRESS")]
    recipient: Option<String>,
    /// Operator rules to try before the built-in ones (see the README's
    /// "Your own reply rules"); default: the configuration's
    /// `[bounce] rules_file`, if any.
    #[arg(long, value_name = "PATH")]
    rules_file: Option<PathBuf>,
    /// The configuration file whose `[bounce] rules_file` to use, as
    /// `serve` reads it (file, then POSTHORN_*__* variables);
    /// `--rules-file` wins over it.
    #[arg(long, env = "POSTHORN_CONFIG")]
    config: Option<PathBuf>,
}

/// The operator's rules and the file they came from.
struct Rules {
    rules: posthorn_bounce::ReplyRules,
    file: Option<PathBuf>,
}

impl Rules {
    /// `--rules-file`, else the configuration's, else none. A bad file is
    /// an error naming it and its lines, as at `serve`'s start.
    fn load(args: &ClassifyArgs) -> Result<Self> {
        let file = match &args.rules_file {
            Some(path) => Some(path.clone()),
            None => {
                posthorn_server::config::load(args.config.as_deref(), std::env::vars())?
                    .bounce
                    .rules_file
            }
        };
        let rules = posthorn_server::reply_rules::load(file.as_deref())
            .map_err(|errors| anyhow::anyhow!("{}", errors.join("\n")))?;
        Ok(Self { rules, file })
    }

    /// Who decided: `rule_source`, and for an operator's rule its file and
    /// line, so the rule can be found at once.
    fn describe(&self, rule: &str, out: &mut serde_json::Map<String, Value>) {
        let source = self.rules.source_of(rule);
        out.insert("rule_source".into(), json!(source.as_str()));
        if let Some(found) = self.rules.operator_rule(rule) {
            let file = self.file.as_ref().map(|f| f.display().to_string());
            out.insert("rules_file".into(), json!(file));
            out.insert("rule_line".into(), json!(found.line));
        }
    }
}

pub fn run(args: ClassifyArgs) -> Result<()> {
    let rules = Rules::load(&args)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if let Some(line) = &args.reply {
        writeln!(
            out,
            "{}",
            reply_json(line, args.recipient.as_deref(), &rules)
        )?;
        return Ok(());
    }
    for path in &args.files {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        for line in file_json(&path.display().to_string(), &bytes, &rules) {
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

/// The JSON lines for one file.
fn file_json(file: &str, bytes: &[u8], rules: &Rules) -> Vec<Value> {
    let records = posthorn_bounce::parse_with(bytes, &rules.rules);
    if records.is_empty() {
        return vec![json!({ "file": file, "kind": "not_bounce" })];
    }
    records
        .iter()
        .map(|r| {
            let mut line = json!({
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
            });
            if let Value::Object(fields) = &mut line {
                rules.describe(r.rule, fields);
            }
            line
        })
        .collect()
}

/// The classification of one reply line, about `recipient` when given
/// (an address or a domain).
fn reply_json(line: &str, recipient: Option<&str>, rules: &Rules) -> Value {
    let (code, enhanced, text) = posthorn_bounce::parse_reply_line(line);
    let domain = recipient.map(|r| r.rsplit_once('@').map_or(r, |(_, domain)| domain));
    let class = rules.rules.classify(code, enhanced, &text, domain);
    let mut out = json!({
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
    });
    if let Value::Object(fields) = &mut out {
        rules.describe(class.rule, fields);
    }
    out
}
