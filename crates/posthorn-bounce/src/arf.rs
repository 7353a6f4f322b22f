//! Spam complaints: the Abuse Reporting Format (RFC 5965), a
//! `multipart/report; report-type=feedback-report` whose
//! `message/feedback-report` part names the feedback type, and the older
//! variants of the same idea that mailbox providers still send.

use crate::mime::{Headers, Part, split_headers, unfold};

/// What a feedback report says.
#[derive(Debug, Default)]
pub struct Feedback {
    pub feedback_type: Option<String>,
    /// Every recipient the report names (one record each); empty when it
    /// names none.
    pub recipients: Vec<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub rule: &'static str,
}

/// The feedback report in `message`, if it is one.
pub fn parse(message: &Part) -> Option<Feedback> {
    let report_type = message
        .headers
        .get("Content-Type")
        .map(|v| v.to_ascii_lowercase().contains("feedback-report"))
        .unwrap_or(false);
    let part = message.walk().into_iter().find(|p| {
        p.is_type("message/feedback-report")
            || report_type && p.text.contains("Feedback-Type:") && p.children.is_empty()
    });
    if let Some(part) = part {
        let (fields, _) = split_headers(part.text.trim_start().as_bytes());
        return Some(from_fields(&fields, "arf"));
    }
    // Microsoft's Junk Mail Reporting Program: no report part, the
    // complained-about message attached with the recipient in
    // X-HmXmrOriginalRecipient.
    for part in message.walk() {
        if let Some(child) = part
            .children
            .first()
            .filter(|_| part.mime_type.starts_with("message/"))
            && let Some(recipient) = child.headers.get("X-HmXmrOriginalRecipient")
        {
            return Some(Feedback {
                feedback_type: Some("abuse".into()),
                recipients: crate::address::clean(recipient).into_iter().collect(),
                source_ip: None,
                user_agent: None,
                rule: "arf.microsoft-jmrp",
            });
        }
    }
    // Some senders put the feedback fields in the body of a plain message.
    let top_text = message
        .walk()
        .into_iter()
        .find(|p| p.mime_type == "text/plain")?;
    if top_text.text.contains("Feedback-Type:") && top_text.text.contains("User-Agent:") {
        let start = top_text.text.find("Feedback-Type:").unwrap_or(0);
        let (fields, _) = split_headers(&top_text.text.as_bytes()[start..]);
        return Some(from_fields(&fields, "arf.inline"));
    }
    None
}

fn from_fields(fields: &Headers, rule: &'static str) -> Feedback {
    let get = |name: &str| {
        fields
            .get(name)
            .map(unfold)
            .filter(|value| !value.is_empty())
    };
    let mut recipients: Vec<String> = fields
        .get_all("Original-Rcpt-To")
        .chain(fields.get_all("Removal-Recipient"))
        .filter_map(crate::address::clean)
        .collect();
    recipients.dedup();
    Feedback {
        feedback_type: get("Feedback-Type").map(|t| t.to_ascii_lowercase()),
        recipients,
        source_ip: get("Source-IP"),
        user_agent: get("User-Agent"),
        rule,
    }
}
