//! Challenge-response notices: "your message is held until you prove you
//! are a person" (Boxbe, Spam Arrest, Mailblocks, Sendio, TMDA and the
//! like). The recipient's mailbox exists and may still take the message
//! once the sender answers, so a notice is not a bounce, even when it is
//! dressed as a delivery-status report with `Action: failed` (Boxbe's
//! are). A receiving server that refuses until the sender is confirmed
//! answers with an SMTP code ("550 Your server requires confirmation"):
//! that is a bounce, and a notice carrying any SMTP reply code is left to
//! the bounce readers.

use crate::report::Report;

/// Words only a challenge asks with: the sender must get approved, be
/// added to a list, or prove to be a person.
const CHALLENGE_PHRASES: &[&str] = &[
    "not pre-approved",
    "guest list",
    "approved senders list",
    "approved sender list",
    "verify that you are a person",
    "verify that you are a human",
    "prove that you are a person",
    "prove that you are human",
    "challenge-response",
    "challenge/response",
    "challenge response",
];

/// Whether the report is a challenge-response notice and not a bounce.
pub fn is_notice(report: &Report) -> bool {
    let text = crate::mime::collapse_whitespace(&report.text).to_ascii_lowercase();
    let dsn = report
        .dsn_text
        .as_deref()
        .map(|d| crate::mime::collapse_whitespace(d).to_ascii_lowercase())
        .unwrap_or_default();
    let asks = CHALLENGE_PHRASES
        .iter()
        .any(|p| text.contains(p) || dsn.contains(p));
    asks && !has_smtp_reply(&report.text) && !has_smtp_reply(&dsn)
}

/// A basic SMTP failure code standing as a word of its own (`550`,
/// `550-5.7.1`), as a server's refusal quotes it.
fn has_smtp_reply(text: &str) -> bool {
    text.split(|c: char| c.is_whitespace() || matches!(c, ';' | ':' | '(' | ')' | '"'))
        .any(|word| {
            let b = word.as_bytes();
            b.len() >= 3
                && matches!(b[0], b'4' | b'5')
                && b[1..3].iter().all(u8::is_ascii_digit)
                && (b.len() == 3 || b[3] == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report_of(raw: &str) -> bool {
        let message = crate::mime::parse_message(raw.as_bytes());
        is_notice(&Report::new(&message))
    }

    #[test]
    fn a_notice_asking_for_approval_is_not_a_bounce() {
        let raw = "From: noreply@cr.example\r\nSubject: Re: hello\r\n\r\n\
                   Your message is waiting. Please add yourself to my guest list\r\n\
                   so your messages reach my inbox.\r\n";
        assert!(report_of(raw));
    }

    #[test]
    fn a_server_refusal_until_confirmed_stays_a_bounce() {
        let raw = "From: MAILER-DAEMON@mx.example\r\nSubject: Undelivered Mail\r\n\r\n\
                   host mx.example said: 550 Your server requires confirmation, \
                   see the approved senders list\r\n";
        assert!(!report_of(raw));
    }

    #[test]
    fn an_ordinary_bounce_is_no_notice() {
        let raw = "From: MAILER-DAEMON@mx.example\r\nSubject: failure\r\n\r\n\
                   <a@example.com>: user unknown\r\n";
        assert!(!report_of(raw));
    }
}
