//! RFC 3464 delivery status fields: the per-message block (Reporting-MTA,
//! Original-Envelope-Id, ...) and one block per recipient (Final-Recipient,
//! Action, Status, Remote-MTA, Diagnostic-Code).
//!
//! Read leniently: many MTAs leave out the blank line between blocks, put
//! the fields in a `text/plain` part, or fold a long Diagnostic-Code over
//! several lines. A new recipient starts whenever a recipient field comes
//! after the current recipient already has one.

/// More recipients than this in one report are ignored: real reports
/// name a few, and each costs work later.
pub const MAX_RECIPIENTS: usize = 500;

/// The per-recipient fields of a delivery status report.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DsnRecipient {
    pub final_recipient: Option<String>,
    pub original_recipient: Option<String>,
    pub action: Option<String>,
    pub status: Option<String>,
    pub remote_mta: Option<String>,
    /// The diagnostic with its type (`smtp;`) removed, line breaks of a
    /// folded field kept as `\n` (multi-line SMTP replies stay readable).
    pub diagnostic: Option<String>,
    pub diagnostic_type: Option<String>,
    /// PowerMTA's own verdict, `X-PowerMTA-BounceCategory` (`bad-mailbox`,
    /// `quota-issues`, ...), lowercased.
    pub bounce_category: Option<String>,
}

impl DsnRecipient {
    /// The address: Final-Recipient, else Original-Recipient.
    pub fn address(&self) -> Option<&str> {
        self.final_recipient
            .as_deref()
            .or(self.original_recipient.as_deref())
    }
}

/// A whole report's fields.
#[derive(Debug, Default, Clone)]
pub struct Dsn {
    pub envelope_id: Option<String>,
    pub reporting_mta: Option<String>,
    pub recipients: Vec<DsnRecipient>,
}

/// Whether text reads like delivery status fields: a recipient field and
/// an Action or Status field, each at a line start.
pub fn looks_like_dsn(text: &str) -> bool {
    let mut recipient = false;
    let mut action_or_status = false;
    for line in text.lines().take(2000) {
        let name = field_name(line);
        match name.as_deref() {
            Some("final-recipient" | "original-recipient") => recipient = true,
            Some("action" | "status") => action_or_status = true,
            _ => {}
        }
        if recipient && action_or_status {
            return true;
        }
    }
    false
}

fn field_name(line: &str) -> Option<String> {
    if line.starts_with([' ', '\t']) {
        return None;
    }
    let (name, _) = line.split_once(':')?;
    let name = name.trim();
    (!name.is_empty() && name.len() < 40 && !name.contains(' ')).then(|| name.to_ascii_lowercase())
}

/// Reads the fields of a delivery-status body.
pub fn parse(text: &str) -> Dsn {
    let mut dsn = Dsn::default();
    let mut current: Option<DsnRecipient> = None;
    for (name, value, after_blank) in fields(text) {
        let one_line = crate::mime::collapse_whitespace(&value);
        match name.as_str() {
            "original-envelope-id" => {
                dsn.envelope_id.get_or_insert(one_line);
            }
            "reporting-mta" => {
                dsn.reporting_mta
                    .get_or_insert(strip_type(&one_line).to_string());
            }
            "final-recipient" | "original-recipient" | "x-actual-recipient" => {
                let address = crate::address::clean(strip_type(&one_line));
                let r = current.get_or_insert_with(DsnRecipient::default);
                // The same field again, or a recipient field in a new
                // block after one that named its recipient, starts the next
                // recipient; Action before Final-Recipient stays with it.
                let has_recipient = r.final_recipient.is_some() || r.original_recipient.is_some();
                let starts_new = match name.as_str() {
                    "final-recipient" => r.final_recipient.is_some(),
                    "original-recipient" => r.original_recipient.is_some(),
                    _ => false,
                } || after_blank && has_recipient;
                if starts_new {
                    dsn.recipients.extend(current.take());
                    if dsn.recipients.len() >= MAX_RECIPIENTS {
                        break;
                    }
                }
                let r = current.get_or_insert_with(DsnRecipient::default);
                match name.as_str() {
                    "final-recipient" => r.final_recipient = address,
                    "original-recipient" => r.original_recipient = address,
                    _ => {
                        if r.final_recipient.is_none() {
                            r.final_recipient = address;
                        }
                    }
                }
            }
            "action" => {
                let r = current.get_or_insert_with(DsnRecipient::default);
                if r.action.is_none() {
                    r.action = Some(one_line.to_ascii_lowercase());
                }
            }
            "status" => {
                let r = current.get_or_insert_with(DsnRecipient::default);
                if r.status.is_none() {
                    let code = one_line.split_whitespace().next().unwrap_or("");
                    r.status = Some(code.trim_end_matches([',', ';', '.']).to_string());
                }
            }
            "remote-mta" => {
                let r = current.get_or_insert_with(DsnRecipient::default);
                if r.remote_mta.is_none() {
                    let host = strip_type(&one_line);
                    r.remote_mta =
                        Some(host.trim_matches(['[', ']']).to_string()).filter(|h| !h.is_empty());
                }
            }
            "x-powermta-bouncecategory" => {
                let r = current.get_or_insert_with(DsnRecipient::default);
                if r.bounce_category.is_none() {
                    r.bounce_category =
                        Some(one_line.trim().to_ascii_lowercase()).filter(|c| !c.is_empty());
                }
            }
            "diagnostic-code" => {
                let r = current.get_or_insert_with(DsnRecipient::default);
                if r.diagnostic.is_none() {
                    let (kind, rest) = match value.split_once(';') {
                        Some((kind, rest)) if !kind.trim().contains(' ') => {
                            (Some(kind.trim().to_ascii_lowercase()), rest)
                        }
                        _ => (None, value.as_str()),
                    };
                    let text = rest
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .collect::<Vec<_>>()
                        .join("\n");
                    r.diagnostic_type = kind;
                    r.diagnostic = Some(text).filter(|t| !t.is_empty());
                }
            }
            _ => {}
        }
    }
    dsn.recipients.extend(current);
    dsn.recipients.retain(|r| {
        r.address().is_some() || r.action.is_some() || r.status.is_some() || r.diagnostic.is_some()
    });
    dsn
}

/// `rfc822; a@b` -> `a@b`.
fn strip_type(value: &str) -> &str {
    match value.split_once(';') {
        Some((kind, rest)) if !kind.contains(' ') && !kind.contains('@') => rest.trim(),
        _ => value.trim(),
    }
}

/// `name: value` fields with their continuation lines (kept with `\n`),
/// each marked when it is the first of a block (after an empty line).
/// Lines that are neither are skipped, so text around the fields does no
/// harm.
fn fields(text: &str) -> Vec<(String, String, bool)> {
    let mut out: Vec<(String, String, bool)> = Vec::new();
    let mut open = false;
    let mut blank = false;
    for line in text.lines() {
        if line.trim().is_empty() {
            open = false;
            blank = true;
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if open && let Some((_, value, _)) = out.last_mut() {
                value.push('\n');
                value.push_str(line.trim());
            }
            continue;
        }
        match field_name(line) {
            Some(name) => {
                let value = line
                    .split_once(':')
                    .map_or("", |(_, v)| v)
                    .trim()
                    .to_string();
                out.push((name, value, blank));
                open = true;
                blank = false;
            }
            None => open = false,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_recipients_without_blank_line() {
        let text = "Reporting-MTA: dns; mx.example.org\nOriginal-Envelope-Id: abc\n\n\
            Final-Recipient: rfc822; a@example.com\nAction: failed\nStatus: 5.1.1\n\
            Diagnostic-Code: smtp; 550 5.1.1 <a@example.com>:\n  user unknown\n\
            Final-Recipient: rfc822; <b@example.com>\nAction: delayed\nStatus: 4.4.7\n";
        let dsn = parse(text);
        assert_eq!(dsn.envelope_id.as_deref(), Some("abc"));
        assert_eq!(dsn.recipients.len(), 2);
        assert_eq!(
            dsn.recipients[0].final_recipient.as_deref(),
            Some("a@example.com")
        );
        assert_eq!(
            dsn.recipients[0].diagnostic.as_deref(),
            Some("550 5.1.1 <a@example.com>:\nuser unknown")
        );
        assert_eq!(dsn.recipients[1].action.as_deref(), Some("delayed"));
        assert_eq!(
            dsn.recipients[1].final_recipient.as_deref(),
            Some("b@example.com")
        );
    }
}
