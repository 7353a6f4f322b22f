//! The remote servers of a few large mailbox providers answer with their
//! own documented error codes or fixed sentences, whatever MTA wrote the
//! report around them. When the answering host (its `Remote-MTA`, the host
//! named in the text, or the recipient's domain) is one of theirs and the
//! answer carries such a code, the provider's documented meaning is the
//! reason, beating the generic reading of the words (Cox's "sender
//! rejected ... AUP#CDRBL" is an IP block, not a refused sender).
//!
//! Every rule here needs both the provider's host and its code or fixed
//! sentence; a host alone decides nothing.

use super::Finding;
use super::generic::truncate;
use crate::parse::SmtpCommand;
use crate::reply::Reason;
use posthorn_core::EnhancedCode;

/// Gives the findings whose answer comes from one of the known providers
/// the provider's documented reason, as a forced hint.
pub fn apply(findings: &mut [Finding]) {
    for f in findings.iter_mut() {
        if f.force {
            continue;
        }
        if let Some(hint) = reason_of(f) {
            f.hint = Some(hint);
            f.force = true;
        }
    }
}

fn reason_of(f: &Finding) -> Option<(Reason, &'static str)> {
    // The diagnostic can be long (a whole text); the provider's code sits
    // in the server's answer, so a bounded prefix is enough.
    let diagnostic =
        crate::mime::collapse_whitespace(truncate(&f.diagnostic, 4096)).to_ascii_lowercase();
    let remote = f.remote_mta.as_deref().unwrap_or("").to_ascii_lowercase();
    let domain = f
        .recipient
        .as_deref()
        .and_then(|r| r.rsplit_once('@'))
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default();
    let host_is = |suffixes: &[&str]| {
        suffixes.iter().any(|s| {
            remote.ends_with(s)
                || domain == s[1..]
                || domain.ends_with(s)
                || diagnostic.contains(&s[1..])
        })
    };
    if diagnostic.contains("aup#") {
        if host_is(&[".cox.net", ".cox.com"]) {
            return cox(&diagnostic);
        }
        if host_is(&[".charter.net", ".spectrum.net", ".rr.com"]) {
            return spectrum(&diagnostic);
        }
    }
    if host_is(&[".docomo.ne.jp"]) {
        return docomo(&diagnostic, f);
    }
    if host_is(&[".ezweb.ne.jp", ".au.com"]) {
        return kddi(&diagnostic);
    }
    if host_is(&[".zoho.com", ".zohomail.com"]) {
        return zoho(&diagnostic);
    }
    None
}

/// `format.rhost.cox`: Cox's `AUP#<code>` error codes (its postmaster
/// page "email error codes"): CXBL/CDRBL/IPBL* are IP blocks, CXDNS a
/// failed reverse DNS, CXSNDR failed SPF/DKIM, CXCNCT/CXMXRT rate limits,
/// CXTHRT/CXMJ a compromised account, URLBL* a listed URL.
fn cox(diagnostic: &str) -> Option<(Reason, &'static str)> {
    let code = token_after(diagnostic, "aup#")?;
    let reason = match code {
        "cxbl" | "cdrbl" => Reason::Blocked,
        c if c.starts_with("ipbl") => Reason::Blocked,
        "cxdns" => Reason::Requireptr,
        "cxsndr" => Reason::Authfailure,
        "cxsmtp" => Reason::Rejected,
        "cxcnct" | "cxmxrt" => Reason::Ratelimited,
        "cxthrt" | "cxmj" => Reason::Securityerror,
        c if c.starts_with("urlbl") => Reason::Spamdetected,
        _ => return None,
    };
    Some((reason, "format.rhost.cox"))
}

/// `format.rhost.spectrum`: Charter/Spectrum's `AUP#I-NNNN` / `AUP#O-NNNN`
/// codes, by the ranges of its "understanding email error codes" page.
fn spectrum(diagnostic: &str) -> Option<(Reason, &'static str)> {
    let label = token_after(diagnostic, "aup#")?;
    // The four digits of the code ("in-1310", "o-1000").
    let digits: String = label
        .split(|c: char| !c.is_ascii_digit())
        .find(|run| run.len() == 4)?
        .to_string();
    let n: u16 = digits.parse().ok()?;
    let reason = match n {
        1000 => Reason::Blocked,
        1010 | 1020..=1080 => Reason::Rejected,
        1090 => Reason::Systemerror,
        1100..=1150 => Reason::Requireptr,
        1160..=1190 => Reason::Policyviolation,
        1200..=1250 => Reason::Blocked,
        1260 => Reason::Networkerror,
        1300..=1340 => Reason::Ratelimited,
        1350..=1490 => Reason::Ratelimited,
        1500 | 1520 => Reason::Rejected,
        1530 => Reason::Emailtoolarge,
        1540 | 1550 | 1580 => Reason::Ratelimited,
        1560 => Reason::Policyviolation,
        _ => return None,
    };
    Some((reason, "format.rhost.spectrum"))
}

/// `format.rhost.docomo`: NTT DOCOMO's MX answers every refusal with
/// "550 Unknown user"; what it means depends on the stage. Refused at
/// RCPT the address does not exist; refused after DATA (with the generic
/// status 5.0.0, or the 5.2.0 a Sendmail relay turns it into) it is the
/// recipient's reception filter refusing the sender.
fn docomo(diagnostic: &str, f: &Finding) -> Option<(Reason, &'static str)> {
    const RULE: &str = "format.rhost.docomo";
    let status = f.status;
    if status == EnhancedCode::new(5, 1, 1) {
        return Some((Reason::Userunknown, RULE));
    }
    if status == EnhancedCode::new(5, 2, 0) {
        return Some((Reason::Filtered, RULE));
    }
    if diagnostic.contains("552 too much mail data") {
        return Some((Reason::Mailboxfull, RULE));
    }
    if diagnostic.contains("552 too many recipients") {
        return Some((Reason::Ratelimited, RULE));
    }
    if !diagnostic.contains("550 unknown user") {
        return None;
    }
    let command = f
        .command
        .or_else(|| crate::parse::smtp_command(&f.diagnostic));
    match command {
        Some(SmtpCommand::Data) => Some((Reason::Rejected, RULE)),
        Some(SmtpCommand::Rcpt) => Some((Reason::Userunknown, RULE)),
        _ => None,
    }
}

/// `format.rhost.kddi`: au (KDDI)'s MX refuses an address it does not
/// have as "550 <address>: User unknown" and a message the recipient's
/// reception filter refuses as "550 : User unknown" (no address), its
/// support pages on returned mail say.
fn kddi(diagnostic: &str) -> Option<(Reason, &'static str)> {
    const RULE: &str = "format.rhost.kddi";
    if diagnostic.contains("550 : user unknown") {
        return Some((Reason::Filtered, RULE));
    }
    if diagnostic.contains(">: user unknown") {
        return Some((Reason::Userunknown, RULE));
    }
    None
}

/// `format.rhost.zoho`: Zoho Mail's fixed refusals (its SMTP error list):
/// spam-flagged mail and "rejected by destination domain" are refusals of
/// the sender, DMARC failures are authentication.
fn zoho(diagnostic: &str) -> Option<(Reason, &'static str)> {
    const RULE: &str = "format.rhost.zoho";
    const TABLE: &[(&str, Reason)] = &[
        ("email rejected per dmarc policy", Reason::Authfailure),
        ("reason: email flagged as spam", Reason::Rejected),
        ("mail rejected by destination domain", Reason::Rejected),
        ("email policy violation detected", Reason::Policyviolation),
        (
            "mailbox delivery restricted by policy",
            Reason::Policyviolation,
        ),
        ("user does not exist", Reason::Userunknown),
        ("temporary system error", Reason::Systemerror),
        (" detected by zoho mail", Reason::Virusdetected),
    ];
    TABLE
        .iter()
        .find(|(phrase, _)| diagnostic.contains(phrase))
        .map(|(_, reason)| (*reason, RULE))
}

/// The word right after `marker` (up to a space or punctuation that ends
/// a code).
fn token_after<'a>(text: &'a str, marker: &str) -> Option<&'a str> {
    let at = text.find(marker)? + marker.len();
    let rest = &text[at..];
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .unwrap_or(rest.len());
    let token = &rest[..end];
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(recipient: &str, diagnostic: &str) -> Finding {
        Finding::new("dsn", Some(recipient.into()), diagnostic.into())
    }

    #[test]
    fn cox_code() {
        let mut f = [finding(
            "a@cox.net",
            "550 5.1.0 <b@example.com> sender rejected. AUP#CDRBL",
        )];
        apply(&mut f);
        assert_eq!(f[0].hint, Some((Reason::Blocked, "format.rhost.cox")));
    }

    #[test]
    fn spectrum_range() {
        let mut f = [finding(
            "a@charter.net",
            "550 5.1.0 sender rejected. AUP#In-1310",
        )];
        apply(&mut f);
        assert_eq!(
            f[0].hint,
            Some((Reason::Ratelimited, "format.rhost.spectrum"))
        );
    }

    #[test]
    fn unknown_host_untouched() {
        let mut f = [finding("a@example.org", "550 AUP#CDRBL")];
        apply(&mut f);
        assert!(f[0].hint.is_none());
    }
}
