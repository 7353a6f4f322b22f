//! fml, the Japanese mailing-list manager: its notices carry an
//! `X-MLServer: fml ...` header and state the error in a fixed title, in
//! the subject or first lines ("Loop Alert: ...", "NOT MEMBER article from
//! ...", "fml system error message"), with the list or member address in
//! angle brackets; the returned mail follows "Original mail as follows:".
//!
//! The title is the whole reason: a loop or an internal error of the list
//! server is `systemerror`, a post from a non-member `rejected`, a security
//! alert `securityerror`.

use super::Finding;
use crate::address;
use crate::reply::Reason;
use crate::report::Report;

const TITLES: &[(&str, Reason)] = &[
    (" are not member", Reason::Rejected),
    ("not member article from ", Reason::Rejected),
    ("reject mail ", Reason::Rejected),
    ("spam mail from a spammer is rejected", Reason::Rejected),
    ("fml system error message", Reason::Systemerror),
    ("loop alert: ", Reason::Systemerror),
    ("loop back warning: ", Reason::Systemerror),
    ("warning: unix from loop", Reason::Systemerror),
    ("security alert", Reason::Securityerror),
];

pub fn recognises(report: &Report) -> bool {
    is_fml(report) && title(report).is_some()
}

fn is_fml(report: &Report) -> bool {
    ["X-MLServer", "X-ML-Server"].iter().any(|h| {
        report
            .header(h)
            .is_some_and(|v| v.to_ascii_lowercase().contains("fml"))
    })
}

/// The reason the fixed title states, from the subject or the text before
/// the returned mail.
fn title(report: &Report) -> Option<Reason> {
    let subject = report.subject.to_ascii_lowercase();
    let text = head(report).to_ascii_lowercase();
    TITLES
        .iter()
        .find(|(t, _)| subject.contains(t) || text.contains(t))
        .map(|(_, r)| *r)
}

/// The notice's own words, without the returned mail.
fn head<'a>(report: &'a Report) -> &'a str {
    let text = report.text.as_str();
    match text.find("Original mail as follows:") {
        Some(at) => &text[..at],
        None => text,
    }
}

pub fn read(report: &Report) -> Vec<Finding> {
    if !is_fml(report) {
        return Vec::new();
    }
    let Some(reason) = title(report) else {
        return Vec::new();
    };
    let text = head(report).trim();
    // The address the title names, in angle brackets.
    let recipient = text
        .lines()
        .filter_map(|l| {
            let open = l.find('<')?;
            let close = l[open..].find('>')? + open;
            address::clean(&l[open + 1..close])
        })
        .next()
        .or_else(|| address::find_all(text).into_iter().next());
    let diagnostic = format!("{}\n{}", report.subject.trim(), text);
    let mut f = Finding::new("format.fml", recipient, diagnostic);
    f.hint = Some((reason, "format.fml"));
    f.force = true;
    vec![f]
}
