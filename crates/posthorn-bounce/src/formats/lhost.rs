//! The verdicts some MTAs state in their own fixed vocabulary, not in an
//! SMTP reply: Exchange's IMS error numbers ("MSEXCH:IMS:... (000C05A6)
//! Unknown Recipient"), Lotus Domino/Notes' directory lookups ("not listed
//! in Domino Directory"), IMail's "Unknown user:" line, Verizon's SMS
//! gateway table. The MTA wrote them after looking the recipient up itself,
//! so they name the reason whatever the SMTP stage (these reports name
//! none); Sisimai's readers of these MTAs set the reason from the same
//! tables.
//!
//! Every rule needs the MTA's own mark (its code format, its report's
//! fixed lines or its sender host) as well as the phrase.

use super::Finding;
use super::generic::truncate;
use crate::reply::Reason;
use crate::report::Report;

/// Gives the findings of a report written by one of these MTAs the MTA's
/// stated reason, as a forced hint.
pub fn apply(report: &Report, findings: &mut [Finding]) {
    let text = truncate(&report.text, 16 * 1024);
    let from = report.from.to_ascii_lowercase();
    for f in findings.iter_mut() {
        if f.force {
            continue;
        }
        if let Some(hint) = reason_of(text, &from, f) {
            f.hint = Some(hint);
            f.force = true;
        }
    }
}

fn reason_of(text: &str, from: &str, f: &Finding) -> Option<(Reason, &'static str)> {
    let diagnostic = truncate(&f.diagnostic, 4096);
    exchange_ims(diagnostic)
        .or_else(|| exchange_ims(text))
        .or_else(|| domino(diagnostic))
        .or_else(|| imail(text, f))
        .or_else(|| verizon(from, diagnostic))
        .or_else(|| google(from, diagnostic))
        .or_else(|| messagelabs(from, diagnostic))
}

/// The host part of the report's sender address.
fn sender_host(from: &str) -> Option<&str> {
    from.rsplit_once('@')
        .map(|(_, h)| h.trim_end_matches(|c: char| c == '>' || c.is_whitespace()))
}

fn host_in(host: &str, domains: &[&str]) -> bool {
    domains
        .iter()
        .any(|d| host == *d || host.strip_suffix(d).is_some_and(|rest| rest.ends_with('.')))
}

/// Google's own report (from its mailer-daemon) for an address its
/// directory does not have: "** Address not found ** ... because the
/// address couldn't be found" (Gmail and Google Workspace).
fn google(from: &str, diagnostic: &str) -> Option<(Reason, &'static str)> {
    let host = sender_host(from)?;
    if !host_in(host, &["googlemail.com", "google.com", "gmail.com"]) {
        return None;
    }
    diagnostic
        .contains("because the address couldn't be found")
        .then_some((Reason::Userunknown, "format.google.address-not-found"))
}

/// Symantec/Broadcom Email Security.cloud (MessageLabs) writes its own
/// reports; its support pages list "No such user", "Invalid recipient"
/// and "Recipient mailbox is not allowed" as an invalid recipient.
fn messagelabs(from: &str, diagnostic: &str) -> Option<(Reason, &'static str)> {
    let host = sender_host(from)?;
    if !host_in(host, &["messagelabs.com"]) {
        return None;
    }
    let lower = diagnostic.to_ascii_lowercase();
    [
        "no such user",
        "invalid recipient",
        "mailbox is not allowed",
    ]
    .iter()
    .any(|p| lower.contains(p))
    .then_some((Reason::Userunknown, "format.messagelabs.invalid-recipient"))
}

/// Exchange's Internet Mail Service writes `MSEXCH:<connector>:... (NNNNNNNN)`
/// with an error number whose meaning Microsoft fixed.
fn exchange_ims(text: &str) -> Option<(Reason, &'static str)> {
    let at = text.find("MSEXCH:")?;
    let rest = truncate(&text[at..], 300);
    let open = rest.find('(')?;
    let code = rest.get(open + 1..open + 9)?;
    if rest.as_bytes().get(open + 9) != Some(&b')') {
        return None;
    }
    Some(match code.to_ascii_uppercase().as_str() {
        "000C05A6" => (Reason::Userunknown, "format.exchange.unknown-recipient"),
        "000C0595" => (Reason::Filtered, "format.exchange.ambiguous-recipient"),
        "00120270" => (Reason::Networkerror, "format.exchange.too-many-hops"),
        "00010256" | "000D06B5" => (Reason::Systemerror, "format.exchange.system"),
        "00050311" | "000502CC" => (Reason::Contenterror, "format.exchange.conversion"),
        "000B0981" => (Reason::Securityerror, "format.exchange.auth"),
        _ => return None,
    })
}

/// Lotus Domino and Notes look the recipient up in their directory (the
/// "Domino Directory", formerly the "public Name & Address Book").
fn domino(diagnostic: &str) -> Option<(Reason, &'static str)> {
    let lower = diagnostic.to_ascii_lowercase();
    if lower.contains("not listed in domino directory")
        || lower.contains("not listed in public name & address book")
        || lower.contains("no se encuentra en el directorio de domino")
    {
        return Some((Reason::Userunknown, "format.domino.not-in-directory"));
    }
    if lower.contains("several matches found in domino directory") {
        return Some((Reason::Systemerror, "format.domino.ambiguous"));
    }
    None
}

/// IMail (Ipswitch) states each failure on a line of its own, "Unknown
/// user: <address>" (nothing else on the line), above "Original message
/// follows.".
fn imail(text: &str, f: &Finding) -> Option<(Reason, &'static str)> {
    let recipient = f.recipient.as_deref()?;
    text.lines()
        .take_while(|l| !l.starts_with("Original message follows."))
        .any(|line| {
            let line = line.trim();
            ["Unknown user:", "Invalid final delivery userid:"]
                .iter()
                .filter_map(|p| line.strip_prefix(p))
                .any(|rest| {
                    let rest = rest.trim().trim_start_matches('<').trim_end_matches('>');
                    rest.eq_ignore_ascii_case(recipient)
                })
        })
        .then_some((Reason::Userunknown, "format.imail.unknown-user"))
}

/// Verizon's SMS gateway (mail from post_master@vtext.com) answers an
/// unknown number with its fixed "no such user here".
fn verizon(from: &str, diagnostic: &str) -> Option<(Reason, &'static str)> {
    let host = sender_host(from)?;
    if !host_in(host, &["vtext.com"]) {
        return None;
    }
    diagnostic
        .to_ascii_lowercase()
        .contains("requested action not taken: no such user here")
        .then_some((Reason::Userunknown, "format.verizon.no-such-user"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchange_numbers() {
        let line = "MSEXCH:IMS:ORG:SITE:SERVER 0 (000C05A6) Unknown Recipient";
        assert_eq!(exchange_ims(line).map(|h| h.0), Some(Reason::Userunknown));
        assert_eq!(exchange_ims("MSEXCH:IMC:ORG:SITE:SERVER"), None);
        assert_eq!(exchange_ims("(000C05A6) without the mark"), None);
    }

    #[test]
    fn provider_sentences_need_the_provider() {
        let google =
            "Your message wasn't delivered to a@b.example because the address couldn't be found.";
        assert!(google_hint(
            "Mail Delivery Subsystem <mailer-daemon@googlemail.com>",
            google
        ));
        assert!(!google_hint("postmaster@example.org", google));
        assert!(messagelabs("MAILER-DAEMON@messagelabs.com", "550 a@b... No such user").is_some());
        assert!(messagelabs("MAILER-DAEMON@example.com", "550 a@b... No such user").is_none());
    }

    fn google_hint(from: &str, diagnostic: &str) -> bool {
        google(&from.to_ascii_lowercase(), diagnostic).is_some()
    }
}
