//! Trustwave MailMarshal (Secure Email Gateway): its notice quotes the
//! original ("Your message:"), gives the server's answer after "Could not
//! be delivered because of", then lists the recipients, indented, after
//! "The following recipients were affected:", and ends with an
//! "Additional Information" block of `Name: <value>` lines (Remote-MTA,
//! Reporting-MTA ...), which is not the reason.

use super::Finding;
use crate::address;
use crate::report::Report;

const ERROR: &str = "could not be delivered because of";
const RCPTS: &str = "the following recipients were affected:";
const ADDITIONAL: &str = "additional information";

pub fn read(report: &Report) -> Vec<Finding> {
    let lines: Vec<&str> = report.text.lines().collect();
    let find = |marker: &str, from: usize| {
        (from..lines.len()).find(|&i| lines[i].trim().to_ascii_lowercase().starts_with(marker))
    };
    let Some(error) = find(ERROR, 0) else {
        return Vec::new();
    };
    let Some(rcpts) = find(RCPTS, error) else {
        return Vec::new();
    };
    let diagnostic = lines[error + 1..rcpts]
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    let end = find(ADDITIONAL, rcpts).unwrap_or(lines.len());
    let mut recipients: Vec<String> = Vec::new();
    for line in &lines[rcpts + 1..end] {
        for a in address::find_all(line) {
            if !recipients.contains(&a) && recipients.len() < 500 {
                recipients.push(a);
            }
        }
    }
    // The Remote-MTA of the additional block names the answering server.
    let remote_mta = lines[end..]
        .iter()
        .find_map(|l| l.trim().strip_prefix("Remote-MTA:"))
        .map(|v| v.trim().trim_matches(['<', '>']).to_string())
        .filter(|v| !v.is_empty());
    if diagnostic.is_empty() {
        return Vec::new();
    }
    if recipients.is_empty() {
        // The list is empty (copies cut by privacy settings): the whole
        // report is about the original's recipients.
        recipients = report
            .original
            .as_ref()
            .and_then(|h| h.get("To"))
            .map(address::find_all)
            .unwrap_or_default();
    }
    recipients
        .into_iter()
        .map(|r| {
            let mut f = Finding::new("format.mailmarshal", Some(r), diagnostic.clone());
            f.remote_mta = remote_mta.clone();
            f
        })
        .collect()
}
