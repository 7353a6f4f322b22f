//! Automatic replies (RFC 3834 and the common vacation formats): the header
//! fields auto-responders set, and the subjects they write.
//!
//! Only asked after the bounce readers found nothing: MTAs mark their
//! bounces `Auto-Submitted: auto-replied` too.

use crate::mime::Headers;

/// The rule that recognises `headers` as an auto-reply, if one does.
pub fn detect(headers: &Headers) -> Option<&'static str> {
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
