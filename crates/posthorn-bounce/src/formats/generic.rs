//! The shape most MTAs' texts share: each failed address at the start of a
//! line (`<a@b>:`, `a@b`, `"a@b"...`, `Recipient: a@b`), followed by the
//! server's answer on the same or the next lines. When no address stands
//! out, the recipients come from `X-Failed-Recipients` or the original's
//! `To`, and the whole text is the diagnostic.

use super::Finding;
use crate::address;
use crate::report::Report;

/// At most this many recipients, and this many bytes of diagnostic for
/// one: enough for any real report, and it keeps hostile input linear.
const MAX_RECIPIENTS: usize = 500;
const MAX_DIAGNOSTIC: usize = 8 * 1024;

/// How many lines after an address line still belong to it.
const MAX_BLOCK_LINES: usize = 12;

pub fn read(report: &Report) -> Vec<Finding> {
    read_as(report, "format.generic")
}

pub fn read_as(report: &Report, format: &'static str) -> Vec<Finding> {
    let excluded = excluded_addresses(report);
    let lines: Vec<&str> = report.text.lines().collect();
    // (line index, address, rest of the line)
    let mut starts: Vec<(usize, String, String)> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if let Some((addr, rest)) = leading_address(line)
            && !excluded.iter().any(|e| e.eq_ignore_ascii_case(&addr))
        {
            starts.push((i, addr, rest));
            if starts.len() >= MAX_RECIPIENTS * 4 {
                break;
            }
        }
    }
    if starts.is_empty() {
        starts = bracketed_addresses(&lines, &excluded);
    }
    let mut findings: Vec<Finding> = Vec::new();
    for (k, (i, addr, rest)) in starts.iter().enumerate() {
        // Up to the next address's line; two addresses on one line (the
        // bracketed fallback finds those) leave the first only its line.
        let end = starts
            .get(k + 1)
            .map_or(lines.len(), |(next, _, _)| *next)
            .min(i + 1 + MAX_BLOCK_LINES)
            .max(i + 1);
        let mut block = vec![rest.as_str()];
        block.extend(lines[i + 1..end].iter().copied());
        let diagnostic = trim_block(&block);
        if let Some(existing) = findings.iter_mut().find(|f| {
            f.recipient
                .as_deref()
                .is_some_and(|r| r.eq_ignore_ascii_case(addr))
        }) {
            if !diagnostic.is_empty() && existing.diagnostic.len() < MAX_DIAGNOSTIC {
                existing.diagnostic.push('\n');
                existing.diagnostic.push_str(&diagnostic);
            }
            continue;
        }
        if findings.len() < MAX_RECIPIENTS {
            findings.push(Finding::new(format, Some(addr.clone()), diagnostic));
        }
    }
    if !findings.is_empty() {
        // An address line with nothing after it ("The following address
        // failed:\n  a@b\n\n") leaves the reason to the text around it.
        let whole = truncate(report.text.trim(), MAX_DIAGNOSTIC).to_string();
        for f in &mut findings {
            if f.diagnostic.trim().is_empty() {
                f.diagnostic = whole.clone();
            }
        }
        return findings;
    }
    let recipients = fallback_recipients(report, &excluded);
    let whole = truncate(report.text.trim(), MAX_DIAGNOSTIC).to_string();
    if recipients.is_empty() {
        return if whole.is_empty() {
            Vec::new()
        } else {
            vec![Finding::new(format, None, whole)]
        };
    }
    recipients
        .into_iter()
        .take(MAX_RECIPIENTS)
        .map(|r| Finding::new(format, Some(r), whole.clone()))
        .collect()
}

/// At most `max` bytes of `text`, cut at a character boundary.
pub fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Addresses in angle brackets inside sentences ("There was an error
/// delivering your mail to <a@b>."), for texts that put none at a line
/// start; the rest of the line after the address goes with it.
fn bracketed_addresses(lines: &[&str], excluded: &[String]) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let mut search = 0;
        while let Some(open) = line.get(search..).and_then(|l| l.find('<')) {
            let start = search + open + 1;
            let Some(close) = line[start..].find('>') else {
                break;
            };
            let inner = &line[start..start + close];
            if inner.contains(char::is_whitespace) {
                // Not an address in brackets, but a transcript's arrows
                // ("Sent <<< RCPT TO:<a@b>"): look again from the next `<`.
                search = start;
                continue;
            }
            search = start + close + 1;
            if !inner.contains('@') {
                continue;
            }
            if let Some(addr) = address::clean(inner)
                && !excluded.iter().any(|e| e.eq_ignore_ascii_case(&addr))
                && !is_role(&addr)
                && !out
                    .iter()
                    .any(|(_, a, _): &(usize, String, String)| *a == addr)
            {
                out.push((i, addr, line[search..].trim().to_string()));
            }
        }
    }
    out
}

/// Lines of a block up to the first empty line that follows some text, so
/// the next paragraph (often boilerplate) is not read as the reason.
fn trim_block(block: &[&str]) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut blank_run = 0;
    for line in block {
        let line = line.trim();
        if line.is_empty() {
            blank_run += 1;
            if blank_run >= 2 && !out.is_empty() {
                break;
            }
            continue;
        }
        blank_run = 0;
        out.push(line);
    }
    out.join("\n")
}

/// An address that begins a line (after bullets, quotes and brackets), or
/// that follows a recipient label; with the rest of the line.
pub fn leading_address(line: &str) -> Option<(String, String)> {
    let trimmed = line.trim();
    if trimmed.len() > 400 {
        return None;
    }
    let lower = trimmed.to_ascii_lowercase();
    let mut body = trimmed;
    for label in RECIPIENT_LABELS {
        if lower.starts_with(label) {
            body = trimmed[label.len()..].trim_start();
            break;
        }
    }
    let body = body.trim_start_matches(['*', '-', '>', '#', '(', '[', '\t', ' ', ':']);
    // Sendmail's transcript: "554 <a@b>... 550 Host unknown".
    let after_label = body;
    let body = strip_reply_code(body).trim_start_matches(['(', '[', ' ']);
    let token_end = body
        .find(|c: char| c.is_whitespace() || c == ',' || c == ';')
        .unwrap_or(body.len());
    let token = &body[..token_end];
    if !token.contains('@') {
        return None;
    }
    // "a@b:" and "<a@b>..." are fine; "a@b.c/x" or a URL is not an address line.
    if token.contains("://") || token.contains('/') && !token.starts_with('<') {
        return None;
    }
    let addr = address::clean(token)?;
    // The reply code before the address stays with the words after it.
    let code = &after_label[..after_label.len() - body.len()];
    let rest = format!("{} {}", code.trim(), body[token_end..].trim());
    Some((addr, rest.trim().to_string()))
}

/// `550 ` or `550-5.1.1 ` at the start of a line, removed.
fn strip_reply_code(line: &str) -> &str {
    let bytes = line.as_bytes();
    let is_code = bytes.len() > 4
        && matches!(bytes[0], b'2' | b'4' | b'5')
        && bytes[1..3].iter().all(u8::is_ascii_digit)
        && matches!(bytes[3], b' ' | b'-');
    if !is_code {
        return line;
    }
    let rest = line[4..].trim_start();
    let token_end = rest.find(' ').unwrap_or(rest.len());
    let token = &rest[..token_end];
    if token.split('.').count() == 3
        && token
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        rest[token_end..].trim_start()
    } else {
        rest
    }
}

/// Labels that introduce a recipient at the start of a line.
const RECIPIENT_LABELS: &[&str] = &[
    "original-recipient:",
    "final-recipient:",
    "recipient address:",
    "recipient:",
    "recipients:",
    "failed recipient:",
    "failed address:",
    "to:",
    "address:",
    "rcpt to:",
    "mailbox:",
    "invalid recipient:",
    "unknown recipient:",
    "envelope-to:",
    // Exim: a pipe or file target, then the address it came from.
    "generated by",
];

/// Addresses that are never the failed recipient: the report's own
/// sender and addressee (the original sender), the original's sender, and
/// the postmaster-like role addresses MTAs sign with.
fn excluded_addresses(report: &Report) -> Vec<String> {
    let mut out = Vec::new();
    for name in [
        "From",
        "To",
        "Return-Path",
        "Reply-To",
        "Sender",
        "Delivered-To",
        "X-Original-To",
    ] {
        if let Some(v) = report.header(name) {
            out.extend(address::find_all(v));
        }
    }
    if let Some(original) = &report.original {
        for name in ["From", "Return-Path", "Sender", "Reply-To"] {
            if let Some(v) = original.get(name) {
                out.extend(address::find_all(v));
            }
        }
    }
    // A message sent to oneself: the recipient is also the sender.
    if let Some(original) = &report.original {
        let to = original
            .get("To")
            .map(address::find_all)
            .unwrap_or_default();
        out.retain(|a| !to.contains(a));
    }
    out
}

/// Who failed when the text names nobody: `X-Failed-Recipients`, else the
/// original's `To`.
fn fallback_recipients(report: &Report, excluded: &[String]) -> Vec<String> {
    let failed: Vec<String> = report
        .message
        .headers
        .get_all("X-Failed-Recipients")
        .flat_map(address::find_all)
        .collect();
    if !failed.is_empty() {
        return failed;
    }
    if let Some(original) = &report.original {
        let to: Vec<String> = original
            .get("To")
            .map(address::find_all)
            .unwrap_or_default()
            .into_iter()
            .filter(|a| !excluded.contains(a))
            .collect();
        if !to.is_empty() {
            return to;
        }
    }
    // Addresses anywhere in the text, other than the excluded ones.
    let found: Vec<String> = address::find_all(&report.text)
        .into_iter()
        .filter(|a| !excluded.iter().any(|e| e.eq_ignore_ascii_case(a)) && !is_role(a))
        .collect();
    found.into_iter().take(1).collect()
}

fn is_role(address: &str) -> bool {
    let local = address.split('@').next().unwrap_or("").to_ascii_lowercase();
    matches!(
        local.as_str(),
        "postmaster" | "mailer-daemon" | "abuse" | "root" | "hostmaster"
    )
}
