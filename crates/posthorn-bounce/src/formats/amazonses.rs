//! Amazon SES notifications delivered by email (through SNS): a JSON
//! document, often wrapped in the SNS envelope whose `Message` field holds
//! the notification as a JSON string. One notification names its type
//! (`Bounce`, `Complaint`, `Delivery`) and the recipients it is about.

use super::Finding;
use crate::parse::RecordKind;
use posthorn_core::EnhancedCode;
use serde_json::Value;

/// What one SES notification says.
pub enum Event {
    /// A bounce or delivery, to be classified like any other.
    Finding(Finding),
    /// A complaint: the recipient and the feedback type.
    Complaint {
        recipient: Option<String>,
        feedback_type: Option<String>,
        user_agent: Option<String>,
    },
}

/// The events of an SES notification in `text`, if it holds one.
pub fn read(text: &str) -> Vec<Event> {
    let Some(doc) = json_in(text) else {
        return Vec::new();
    };
    let inner = doc
        .get("Message")
        .and_then(Value::as_str)
        .and_then(|m| serde_json::from_str::<Value>(m).ok());
    let note = inner.as_ref().unwrap_or(&doc);
    let kind = note
        .get("notificationType")
        .or_else(|| note.get("eventType"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let str_of = |v: &Value, name: &str| v.get(name).and_then(Value::as_str).map(str::to_string);
    match kind {
        "Bounce" => {
            let bounce = note.get("bounce").cloned().unwrap_or(Value::Null);
            let transient = str_of(&bounce, "bounceType").as_deref() == Some("Transient");
            recipients(&bounce, "bouncedRecipients")
                .map(|r| {
                    let diagnostic = str_of(r, "diagnosticCode").unwrap_or_default();
                    let diagnostic = diagnostic
                        .strip_prefix("smtp;")
                        .map(str::trim)
                        .unwrap_or(&diagnostic)
                        .to_string();
                    let mut f =
                        Finding::new("format.amazonses", str_of(r, "emailAddress"), diagnostic);
                    f.status = str_of(r, "status").and_then(|s| EnhancedCode::parse(s.trim()));
                    if str_of(r, "action").as_deref() == Some("delayed")
                        || transient && f.status.is_some_and(EnhancedCode::is_transient)
                    {
                        f.kind = RecordKind::Delay;
                    }
                    Event::Finding(f)
                })
                .collect()
        }
        "Complaint" => {
            let complaint = note.get("complaint").cloned().unwrap_or(Value::Null);
            let feedback_type =
                str_of(&complaint, "complaintFeedbackType").or(Some("abuse".into()));
            let user_agent = str_of(&complaint, "userAgent");
            recipients(&complaint, "complainedRecipients")
                .map(|r| Event::Complaint {
                    recipient: str_of(r, "emailAddress"),
                    feedback_type: feedback_type.clone(),
                    user_agent: user_agent.clone(),
                })
                .collect()
        }
        "Delivery" => {
            let delivery = note.get("delivery").cloned().unwrap_or(Value::Null);
            let response = str_of(&delivery, "smtpResponse").unwrap_or_default();
            delivery
                .get("recipients")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|r| {
                    let mut f =
                        Finding::new("format.amazonses", Some(r.to_string()), response.clone());
                    f.kind = RecordKind::Delivered;
                    Event::Finding(f)
                })
                .collect()
        }
        _ => Vec::new(),
    }
}

fn recipients<'a>(v: &'a Value, name: &str) -> impl Iterator<Item = &'a Value> {
    v.get(name).and_then(Value::as_array).into_iter().flatten()
}

/// The JSON object in a message body: from the first `{` to the last `}`,
/// with the `!` + line break + space that some MTAs insert into over-long
/// lines removed.
fn json_in(text: &str) -> Option<Value> {
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    if end <= start
        || !text[start..end].contains("notificationType") && !text[start..end].contains("eventType")
    {
        return None;
    }
    let body = text[start..=end].replace("!\n ", "");
    serde_json::from_str(&body).ok()
}
