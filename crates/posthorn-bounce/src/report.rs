//! A returned message seen as a report: its own headers, the human-readable
//! text its MTA wrote, the delivery-status fields, and the headers of the
//! original message it carries (attached, or pasted below a marker line).

use crate::mime::{Headers, Part, split_headers};

/// What the readers of the formats need from one message.
pub struct Report<'a> {
    pub message: &'a Part,
    /// `Subject`, RFC 2047 decoded.
    pub subject: String,
    /// `From`, RFC 2047 decoded.
    pub from: String,
    /// The report's own text: the text parts outside the attached original
    /// (HTML stripped of tags when there is no plain text), cut before the
    /// copy of the original message.
    pub text: String,
    /// The text of the delivery-status parts (or of text parts written as
    /// delivery-status fields).
    pub dsn_text: Option<String>,
    /// The headers of the returned original message, when there are any.
    pub original: Option<Headers>,
}

impl<'a> Report<'a> {
    pub fn new(message: &'a Part) -> Self {
        let subject = message
            .headers
            .get("Subject")
            .map(|s| crate::mime::unfold(&crate::mime::decode_header(s)))
            .unwrap_or_default();
        let from = message
            .headers
            .get("From")
            .map(|s| crate::mime::unfold(&crate::mime::decode_header(s)))
            .unwrap_or_default();
        let mut plain = Vec::new();
        let mut html = Vec::new();
        let mut dsn = Vec::new();
        let mut original: Option<Headers> = None;
        collect(
            message,
            &mut plain,
            &mut html,
            &mut dsn,
            &mut original,
            true,
        );
        let mut text = if plain.iter().any(|t| !t.trim().is_empty()) {
            plain.join("\n")
        } else {
            html.iter()
                .map(|h| strip_html(h))
                .collect::<Vec<_>>()
                .join("\n")
        };
        if let Some(cut) = original_marker(&text) {
            if original.is_none() {
                original = inline_original(&text[cut..]);
            }
            text.truncate(cut);
        }
        if dsn.is_empty() && crate::dsn::looks_like_dsn(&text) {
            dsn.push(text.clone());
        }
        Report {
            message,
            subject,
            from,
            text,
            dsn_text: (!dsn.is_empty()).then(|| dsn.join("\n\n")),
            original,
        }
    }

    /// A header of the report itself.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.message.headers.get(name)
    }
}

fn collect(
    part: &Part,
    plain: &mut Vec<String>,
    html: &mut Vec<String>,
    dsn: &mut Vec<String>,
    original: &mut Option<Headers>,
    top: bool,
) {
    let attached = !part.children.is_empty()
        && (part.mime_type.starts_with("message/") || part.mime_type.contains("rfc822"));
    if attached {
        // A report forwarded as an attachment (a relay returning the DSN
        // it received, with its own empty notice around it): when nothing
        // so far states a failure, the attached report is the one to read.
        let inner = &part.children[0];
        if original.is_none() && dsn.is_empty() && is_report(inner) {
            collect(inner, plain, html, dsn, original, false);
            return;
        }
        if original.is_none() {
            *original = Some(part.children[0].headers.clone());
        }
        // Some MTAs attach their text as a message: read it if it is no
        // copy of the original (no Message-ID, plain text).
        return;
    }
    if !part.children.is_empty() {
        for child in &part.children {
            collect(child, plain, html, dsn, original, false);
        }
        return;
    }
    match part.mime_type.as_str() {
        "message/delivery-status" | "message/global-delivery-status" => dsn.push(part.text.clone()),
        "text/html" => html.push(part.text.clone()),
        t if t.starts_with("text/") || top || t.starts_with("message/") => {
            if crate::dsn::looks_like_dsn(&part.text) && !plain.is_empty() {
                dsn.push(part.text.clone());
            } else {
                plain.push(part.text.clone());
            }
        }
        _ => {}
    }
}

/// A delivery report: `multipart/report` with a delivery-status part.
fn is_report(part: &Part) -> bool {
    part.mime_type == "multipart/report"
        && part.children.iter().any(|c| {
            matches!(
                c.mime_type.as_str(),
                "message/delivery-status" | "message/global-delivery-status"
            )
        })
}

/// Where the copy of the original message starts in a report's text: the
/// line that announces it, as the MTAs write it.
pub fn original_marker(text: &str) -> Option<usize> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let lower = line.trim().to_ascii_lowercase();
        if lower.len() < 200 && ORIGINAL_MARKERS.iter().any(|m| lower.contains(m)) {
            return Some(offset);
        }
        offset += line.len();
    }
    None
}

const ORIGINAL_MARKERS: &[&str] = &[
    "below this line is a copy of the message",
    "this is a copy of the message",
    "original message follows",
    "original message header",
    "----- original message -----",
    "--- original message ---",
    "-----original message-----",
    "header of the original message",
    "headers of the original message",
    "unsent message below",
    "returned message follows",
    "returned mail follows",
    "message header follows",
    "text of original message follows",
    "original message ends",
    "----- message text follows",
    "----- unsent message follows",
    "----- returned message follows",
    "the message you sent follows",
    "your message reads",
    "----- the following is a copy of your message",
    "content-type: message/rfc822",
    "message headers follow",
    "headers follow:",
    "------- returned message",
    "--- returned message",
];

/// The header block of a pasted original: the first run of field lines
/// after the marker line.
fn inline_original(text: &str) -> Option<Headers> {
    let after_marker = text.split_once('\n').map_or("", |(_, rest)| rest);
    let start = after_marker.trim_start_matches(['\n', ' ']);
    let (headers, _) = split_headers(start.as_bytes());
    (!headers.is_empty()).then_some(headers)
}

/// Tags out, entities that matter decoded, block tags as line breaks.
pub fn strip_html(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    let mut tag = String::new();
    let mut skip_content = false;
    for c in html.chars() {
        if in_tag {
            if c == '>' {
                in_tag = false;
                let name = tag
                    .trim_start_matches('/')
                    .split(|c: char| c.is_whitespace() || c == '/')
                    .next()
                    .unwrap_or("")
                    .to_ascii_lowercase();
                if matches!(name.as_str(), "style" | "script" | "head") {
                    skip_content = !tag.starts_with('/');
                }
                if matches!(
                    name.as_str(),
                    "br" | "p" | "div" | "tr" | "li" | "table" | "h1" | "h2" | "h3"
                ) {
                    out.push('\n');
                } else if matches!(name.as_str(), "td" | "th") {
                    out.push(' ');
                }
                tag.clear();
            } else if tag.len() < 64 {
                tag.push(c);
            }
        } else if c == '<' {
            in_tag = true;
        } else if !skip_content {
            out.push(c);
        }
    }
    out.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}
