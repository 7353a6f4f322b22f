//! Google Workspace / Gmail notices written without delivery-status
//! fields: sent by `mailer-daemon@googlemail.com`, a title line between
//! double asterisks (`** Message not delivered **`, `** Address not found
//! **`), Google's explanation and, after "The response was:", the remote
//! server's answer. The failed recipient is not in the text: it is the
//! original's `To`.

use super::Finding;
use crate::address;
use crate::reply::Reason;
use crate::report::Report;

/// Google's fixed explanations, and what they mean when the remote
/// answer does not say.
const EXPLANATIONS: &[(&str, Reason, &str)] = &[
    (
        "because the address couldn't be found",
        Reason::Userunknown,
        "format.googleworkspace.address-not-found",
    ),
    // The sending account's "Send mail as" settings were refused: the
    // sender is the problem, not the recipient.
    (
        "using the 'send mail as' feature",
        Reason::Rejected,
        "format.googleworkspace.send-mail-as",
    ),
];

pub fn read(report: &Report) -> Vec<Finding> {
    let from = report.from.to_ascii_lowercase();
    if !from.contains("mailer-daemon@googlemail.com") && !from.contains("mailer-daemon@google.com")
    {
        return Vec::new();
    }
    let text = report.text.trim();
    let Some(title) = text
        .lines()
        .map(str::trim)
        .find(|l| l.len() > 4 && l.starts_with("** ") && l.ends_with(" **"))
    else {
        return Vec::new();
    };
    let _ = title;
    let recipients: Vec<String> = report
        .original
        .as_ref()
        .and_then(|h| h.get("To"))
        .map(address::find_all)
        .unwrap_or_default();
    if recipients.is_empty() {
        return Vec::new();
    }
    let lower = text.to_ascii_lowercase();
    let hint = EXPLANATIONS
        .iter()
        .find(|(phrase, _, _)| lower.contains(phrase))
        .map(|(_, reason, rule)| (*reason, *rule));
    let diagnostic = super::generic::truncate(text, 8 * 1024).to_string();
    recipients
        .into_iter()
        .take(500)
        .map(|r| {
            let mut f = Finding::new("format.googleworkspace", Some(r), diagnostic.clone());
            f.hint = hint;
            f
        })
        .collect()
}
