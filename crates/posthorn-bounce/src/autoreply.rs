//! Automatic replies (RFC 3834 and the common vacation formats): the header
//! fields auto-responders set, and the subjects they write.
//!
//! Only asked after the bounce readers found nothing: MTAs mark their
//! bounces `Auto-Submitted: auto-replied` too.

use crate::mime::Headers;

/// The rule that recognises a message as an auto-reply, if one does: its
/// header fields and subject first, then, for responders that set neither
/// (many older and home-made ones), the first sentences of a short text.
pub fn detect(headers: &Headers, text: &str) -> Option<&'static str> {
    detect_by_headers(headers).or_else(|| detect_by_text(text))
}

/// An out-of-office notice says so in its opening lines, in the first
/// person. Only short texts are read, and only their beginning: a person's
/// long reply that mentions a holiday further down is not a notice.
fn detect_by_text(text: &str) -> Option<&'static str> {
    if text.len() > MAX_NOTICE_BYTES {
        return None;
    }
    let opening: String = text.chars().take(OPENING_CHARS).collect();
    let opening = crate::mime::collapse_whitespace(&opening).to_lowercase();
    BODY_PHRASES
        .iter()
        .any(|p| opening.contains(p))
        .then_some("autoreply.text")
}

/// Longer texts are not read for [`BODY_PHRASES`].
const MAX_NOTICE_BYTES: usize = 4096;
/// How much of the beginning of a text is read for them.
const OPENING_CHARS: usize = 400;

/// First-person out-of-office sentences, as responders write them.
const BODY_PHRASES: &[&str] = &[
    "i am out of the office",
    "i'm out of the office",
    "i am currently out of the office",
    "i'm currently out of the office",
    "i will be out of the office",
    "i am out of office",
    "i am currently out of office",
    "i am on vacation",
    "i'm on vacation",
    "i am currently on vacation",
    "i am on holiday",
    "i'm on holiday",
    "i am on leave",
    "i am away from the office",
    "i am currently away",
    "i'm currently away",
    "with limited access to e-mail",
    "with limited access to email",
    "this is an automatic reply",
    "this is an automated reply",
    "this is an auto-reply",
    "this is an automated response",
    "this is an automatic response",
];

fn detect_by_headers(headers: &Headers) -> Option<&'static str> {
    let lower = |name: &str| headers.get(name).map(|v| v.trim().to_ascii_lowercase());
    if lower("Auto-Submitted").is_some_and(|v| v.starts_with("auto-replied")) {
        return Some("rfc3834.auto-submitted");
    }
    if [
        "X-Autoreply",
        "X-Autorespond",
        "X-Autoresponder",
        "X-Vacation-Reply",
    ]
    .iter()
    .any(|name| headers.get(name).is_some())
    {
        return Some("autoreply.x-autoreply");
    }
    if lower("Precedence").is_some_and(|v| v == "auto_reply") {
        return Some("autoreply.precedence");
    }
    let subject = headers
        .get("Subject")
        .map(|s| crate::mime::decode_header(s).trim().to_lowercase())
        .unwrap_or_default();
    if SUBJECT_PREFIXES.iter().any(|p| subject.starts_with(p))
        || SUBJECT_PHRASES.iter().any(|p| subject.contains(p))
    {
        return Some("autoreply.subject");
    }
    None
}

/// How auto-responders begin their subjects ("Auto: Re: ...").
const SUBJECT_PREFIXES: &[&str] = &[
    "auto:",
    "auto re:",
    "auto-reply",
    "autoreply",
    "auto reply",
    "auto response",
    "auto-response",
    "autoresponse",
    "automatic reply",
    "automatische antwort",
    "réponse automatique",
    "respuesta automática",
    "risposta automatica",
    "resposta automática",
    "automatisch antwoord",
    "自動応答",
    "自動返信",
];

/// Words that make a subject an out-of-office notice wherever they stand.
const SUBJECT_PHRASES: &[&str] = &[
    "out of office",
    "out of the office",
    "on vacation",
    "on holiday",
    "away from my mail",
    "away from the office",
    "abwesenheitsnotiz",
    "absence du bureau",
    "fuera de la oficina",
    "vacation reply",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(raw: &str) -> Headers {
        crate::mime::parse_message(raw.as_bytes()).headers
    }

    #[test]
    fn a_notice_without_the_standard_fields_is_read_from_its_opening() {
        let h = headers("From: a@example.com\r\nSubject: Re: your order\r\n\r\n");
        let text = "Thank you for your message. I am currently out of the office \
                    until Monday with limited access to email.";
        assert_eq!(detect(&h, text), Some("autoreply.text"));
    }

    #[test]
    fn a_persons_reply_that_mentions_a_holiday_later_is_no_notice() {
        let h = headers("From: a@example.com\r\nSubject: Re: plans\r\n\r\n");
        let mut text = "Thanks, the plan looks good to me. ".repeat(20);
        text.push_str("By the way, I am on vacation next month.");
        assert_eq!(detect(&h, &text), None);
    }

    #[test]
    fn the_header_fields_still_decide_first() {
        let h =
            headers("From: a@example.com\r\nAuto-Submitted: auto-replied\r\nSubject: x\r\n\r\n");
        assert_eq!(detect(&h, ""), Some("rfc3834.auto-submitted"));
    }
}
