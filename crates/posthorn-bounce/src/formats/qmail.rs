//! qmail-send and the ISP MTAs built on it: a greeting ("Hi. This is the
//! qmail-send program at host.", "Your mail message to the following
//! address(es) could not be delivered."), then one block per recipient,
//! `<a@b>:` on a line of its own followed by the answer, up to "--- Below
//! this line is a copy of the message.". The `<a@b>:` lines are the
//! recipients even when they are also the report's addressee (mail sent
//! to oneself).
//!
//! qmail's own fixed sentences carry the reason when the remote server
//! said nothing more precise; they are passed as hints.

use super::Finding;
use crate::address;
use crate::parse::SmtpCommand;
use crate::reply::Reason;
use crate::report::Report;

const GREETINGS: &[&str] = &[
    "this is the qmail-send program at",
    "i'm afraid i wasn't able to deliver your message to the following addresses",
    "your mail message to the following address(es) could not be delivered",
];

/// qmail's fixed sentences and the reason each states.
const SENTENCES: &[(&str, Reason, &str)] = &[
    (
        "sorry, no mailbox here by that name",
        Reason::Userunknown,
        "format.qmail.no-mailbox",
    ),
    (
        "sorry, i couldn't find any host named",
        Reason::Hostunknown,
        "format.qmail.no-host",
    ),
    (
        "mailfolder is full",
        Reason::Mailboxfull,
        "format.qmail.mailfolder-full",
    ),
    (
        "mailfolder is over the allowed quota",
        Reason::Mailboxfull,
        "format.qmail.mailfolder-full",
    ),
    (
        "this message has been in the queue too long",
        Reason::Expired,
        "format.qmail.queue-too-long",
    ),
];

const MAX_BLOCK_LINES: usize = 12;

pub fn read(report: &Report) -> Vec<Finding> {
    let lower = report.text.to_ascii_lowercase();
    if !GREETINGS.iter().any(|g| lower.contains(g)) {
        return Vec::new();
    }
    let lines: Vec<&str> = report.text.lines().collect();
    let starts: Vec<(usize, String)> = lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            let t = l.trim();
            let inner = t.strip_prefix('<')?.strip_suffix(">:")?;
            address::clean(inner).map(|a| (i, a))
        })
        .take(500)
        .collect();
    let mut out: Vec<Finding> = Vec::new();
    for (k, (i, addr)) in starts.iter().enumerate() {
        let end = starts
            .get(k + 1)
            .map_or(lines.len(), |(n, _)| *n)
            .min(i + 1 + MAX_BLOCK_LINES);
        let block: Vec<&str> = lines[i + 1..end]
            .iter()
            .map(|l| l.trim())
            .take_while(|l| !l.is_empty() && !l.starts_with("---"))
            .collect();
        let diagnostic = block.join("\n");
        let low = diagnostic.to_ascii_lowercase();
        let mut f = Finding::new("format.qmail", Some(addr.clone()), diagnostic);
        f.hint = SENTENCES
            .iter()
            .find(|(s, _, _)| low.contains(s))
            .map(|(_, r, id)| (*r, *id));
        f.command = STAGES
            .iter()
            .find(|(s, _)| low.contains(s))
            .map(|(_, c)| *c);
        out.push(f);
    }
    out
}

/// qmail-remote's sentence names the stage of the dialogue that failed.
const STAGES: &[(&str, SmtpCommand)] = &[
    ("but my name was rejected", SmtpCommand::Connect),
    ("but greeting failed", SmtpCommand::Connect),
    ("but sender was rejected", SmtpCommand::Mail),
    ("does not like recipient", SmtpCommand::Rcpt),
    ("failed on data command", SmtpCommand::Data),
    ("failed after i sent the message", SmtpCommand::Data),
];
