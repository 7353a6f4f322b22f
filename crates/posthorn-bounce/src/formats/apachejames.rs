//! Apache James (and the gateways built on it, such as Verizon's vtext
//! SMS gateway): the notice its `AbstractNotify` mailet writes, from any
//! sender and under any subject:
//!
//! ```text
//! Error: Invalid user address
//!
//! Error message below:
//! 550 - Requested action not taken: no such user here
//!
//! Message details:
//!   Subject: ...
//!   MAIL FROM: sender@example.org
//!   RCPT TO: rcpt@example.net
//! ```
//!
//! The recipients are the `RCPT TO:` lines of the details block, the
//! diagnostic the lines from `Error` down to `Message details:`.

use super::Finding;
use crate::address;
use crate::report::Report;

const ERROR_BELOW: &str = "Error message below:";
const DETAILS: &str = "Message details:";

/// Whether the text is in this format (its two fixed section lines, in
/// order).
pub fn recognises(report: &Report) -> bool {
    sections(&report.text).is_some()
}

/// (text before "Message details:", the details block)
fn sections(text: &str) -> Option<(&str, &str)> {
    let error = line_start(text, ERROR_BELOW)?;
    let details = line_start(&text[error..], DETAILS)? + error;
    Some((&text[..details], &text[details + DETAILS.len()..]))
}

/// Where a line starting with `marker` starts.
fn line_start(text: &str, marker: &str) -> Option<usize> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_start().starts_with(marker) {
            return Some(offset + (line.len() - line.trim_start().len()));
        }
        offset += line.len();
    }
    None
}

pub fn read(report: &Report) -> Vec<Finding> {
    let Some((head, details)) = sections(&report.text) else {
        return Vec::new();
    };
    let diagnostic = head
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(ERROR_BELOW))
        .collect::<Vec<_>>()
        .join("\n");
    let mut recipients: Vec<String> = Vec::new();
    for line in details.lines() {
        let line = line.trim();
        if line.is_empty() && !recipients.is_empty() {
            break;
        }
        let Some(value) = strip_label(line, "RCPT TO:") else {
            continue;
        };
        for addr in address::find_all(value) {
            if !recipients.contains(&addr) && recipients.len() < 500 {
                recipients.push(addr);
            }
        }
    }
    recipients
        .into_iter()
        .map(|r| Finding::new("format.apachejames", Some(r), diagnostic.clone()))
        .collect()
}

fn strip_label<'a>(line: &'a str, label: &str) -> Option<&'a str> {
    let head = line.get(..label.len())?;
    head.eq_ignore_ascii_case(label)
        .then(|| &line[label.len()..])
}
