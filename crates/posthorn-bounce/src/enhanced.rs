//! Enhanced status codes (RFC 3463 `class.subject.detail`, parsed by
//! [`EnhancedCode`]): finding one inside reply text, and the table that maps
//! a code to a [`Reason`].
//!
//! The table is Sisimai's (go-sisimai `smtp/status`, the same rows as
//! `tests/fixtures/smtp-status-codes.jsonl`, with the v5.6 reason names): it
//! states what each registered code means, not what any one sample said.

use crate::reply::Reason;
use posthorn_core::EnhancedCode;

/// The first failure code (class 4 or 5) standing alone in `text`, with
/// its byte offset. Success codes are not searched for: a stray `2.x.y`
/// inside a failure text is more likely a version number than a status.
/// A code must stand alone: `192.0.2.1` or `4.16.55.1` are not codes.
pub(crate) fn find_in(text: &str) -> Option<(EnhancedCode, usize)> {
    let bytes = text.as_bytes();
    (0..bytes.len()).find_map(|at| {
        if !matches!(bytes[at], b'4' | b'5') || (at > 0 && is_code_char(bytes[at - 1])) {
            return None;
        }
        let (status, len) = EnhancedCode::parse_prefix(&bytes[at..])?;
        let end = at + len;
        let continues = match bytes.get(end) {
            None => false,
            // "5.1.1." ends a sentence; "5.1.1.3" is something else.
            Some(b'.') => bytes.get(end + 1).is_some_and(u8::is_ascii_digit),
            Some(&b) => b.is_ascii_alphanumeric(),
        };
        (!continues).then_some((status, at))
    })
}

/// What the table says about a code: the row for the code itself, else
/// the row for the same code in the other failure class (the table lists
/// some codes only as 4.x.x or only as 5.x.x), else the row for the
/// subject's "other" code `class.subject.0`. A row found by a fallback
/// describes a code the table does not list, so it is only trusted like a
/// generic one.
pub(crate) fn lookup(code: EnhancedCode) -> Option<Lookup> {
    let other_class = if code.class() == 4 { 5 } else { 4 };
    let other = code.with_class(other_class);
    let candidates = [
        Some(code),
        other,
        code.with_detail(0),
        other.and_then(|o| o.with_detail(0)),
    ];
    candidates.iter().enumerate().find_map(|(i, wanted)| {
        let wanted = (*wanted)?;
        let row = STATUS_TABLE
            .iter()
            .find(|row| EnhancedCode::parse(row.code) == Some(wanted))?;
        Some(Lookup {
            reason: row.reason,
            rule: row.rule,
            precise: i == 0 && row.precise,
        })
    })
}

/// The answer of [`lookup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lookup {
    pub reason: Reason,
    /// The id of the row used, e.g. `enhanced.5.3.0` for 4.3.0.
    pub rule: &'static str,
    /// See [`StatusRow::precise`]; false for a row found by a fallback.
    pub precise: bool,
}

/// Characters that make a digit part of a longer token (an IP address, a
/// version, an identifier) rather than the start of a status code.
fn is_code_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.'
}

/// One row of the code table.
#[derive(Debug)]
struct StatusRow {
    code: &'static str,
    reason: Reason,
    /// A precise code names one condition (5.1.1 is "no such mailbox") and
    /// is trusted over vague words in the text. A generic one (5.7.1
    /// "delivery not authorized", X.y.0 "other") is used by servers for many
    /// unrelated rejections, so any recognisable text beats it.
    precise: bool,
    /// The rule id reported when this row decides, e.g. `enhanced.5.1.1`.
    rule: &'static str,
}

macro_rules! precise {
    ($code:literal, $reason:ident) => {
        StatusRow {
            code: $code,
            reason: Reason::$reason,
            precise: true,
            rule: concat!("enhanced.", $code),
        }
    };
}

macro_rules! generic {
    ($code:literal, $reason:ident) => {
        StatusRow {
            code: $code,
            reason: Reason::$reason,
            precise: false,
            rule: concat!("enhanced.", $code),
        }
    };
}

/// Code -> reason. Which codes are generic is our judgement (see
/// [`StatusRow::precise`]): the X.y.0 "other" codes, X.2.1 (Gmail sends it
/// for rate limits as well as disabled mailboxes), and in the security
/// subject X.7 everything but the codes RFC 7372/7505 etc. gave one meaning
/// (13, 17, 18, 20-27), because providers use 5.7.1-5.7.10 for anything.
static STATUS_TABLE: &[StatusRow] = &[
    precise!("2.1.5", Delivered),       // Successfully delivered
    precise!("4.1.6", Hasmoved),        // Destination mailbox has moved, No forwarding address
    precise!("4.1.7", Rejected),        // Bad sender's mailbox address syntax
    precise!("4.1.8", Rejected),        // Bad sender's system address
    precise!("4.1.9", Systemerror),     // Message relayed to non-compliant mailer
    generic!("4.2.1", Blocked),         // Mailbox disabled, not accepting messages
    precise!("4.2.2", Mailboxfull),     // Mailbox full
    precise!("4.2.3", Emailtoolarge),   // Message length exceeds administrative limit
    precise!("4.2.4", Filtered),        // Mailing list expansion problem
    precise!("4.3.1", Systemfull),      // Mail system full
    precise!("4.3.2", Notaccept),       // System not accepting network messages
    precise!("4.3.3", Systemerror),     // System not capable of selected features
    precise!("4.3.5", Systemerror),     // System incorrectly configured
    precise!("4.4.1", Expired),         // No answer from host
    precise!("4.4.2", Networkerror),    // Bad connection
    precise!("4.4.3", Systemerror),     // Directory server failure
    precise!("4.4.4", Networkerror),    // Unable to route
    precise!("4.4.5", Systemfull),      // Mail system congestion
    precise!("4.4.6", Networkerror),    // Routing loop detected
    precise!("4.4.7", Expired),         // Delivery time expired
    precise!("4.4.8", Networkerror),    // Retry on IPv4
    precise!("4.5.3", Systemerror),     // Too many recipients
    precise!("4.5.5", Systemerror),     // Wrong protocol version
    generic!("4.6.0", Contenterror),    // Other or undefined media error
    precise!("4.6.2", Contenterror),    // Conversion required and prohibited
    precise!("4.6.5", Contenterror),    // Conversion Failed
    generic!("4.7.1", Blocked),         // Delivery not authorized, message refused
    generic!("4.7.2", Blocked),         // Mailing list expansion prohibited
    generic!("4.7.5", Securityerror),   // Cryptographic failure
    generic!("4.7.6", Securityerror),   // Cryptographic algorithm not supported
    generic!("4.7.7", Securityerror),   // Message integrity failure
    generic!("4.7.12", Securityerror),  // A password transition is needed
    generic!("4.7.15", Securityerror),  // Priority Level is too low
    generic!("4.7.16", Emailtoolarge),  // Message is too big for the specified priority
    precise!("4.7.24", Authfailure),    // SPF validation error
    precise!("4.7.25", Requireptr),     // Reverse DNS validation failed
    precise!("4.7.26", Authfailure),    // Must pass either SPF or DKIM validation
    generic!("5.1.0", Userunknown),     // Other address status
    precise!("5.1.1", Userunknown),     // Bad destination mailbox address
    precise!("5.1.2", Hostunknown),     // Bad destination system address
    precise!("5.1.3", Userunknown),     // Bad destination mailbox address syntax
    precise!("5.1.4", Filtered),        // Destination mailbox address ambiguous
    precise!("5.1.6", Hasmoved),        // Destination mailbox has moved, No forwarding address
    precise!("5.1.7", Rejected),        // Bad sender's mailbox address syntax
    precise!("5.1.8", Rejected),        // Bad sender's system address
    precise!("5.1.9", Systemerror),     // Message relayed to non-compliant mailer
    precise!("5.1.10", Notaccept),      // Recipient address has null MX
    generic!("5.2.0", Filtered),        // Other or undefined mailbox status
    generic!("5.2.1", Filtered),        // Mailbox disabled, not accepting messages
    precise!("5.2.2", Mailboxfull),     // Mailbox full
    precise!("5.2.3", Emailtoolarge),   // Message length exceeds administrative limit
    precise!("5.2.4", Filtered),        // Mailing list expansion problem
    generic!("5.3.0", Systemerror),     // Other or undefined mail system status
    precise!("5.3.1", Systemfull),      // Mail system full
    precise!("5.3.2", Notaccept),       // System not accepting network messages
    precise!("5.3.3", Systemerror),     // System not capable of selected features
    precise!("5.3.4", Emailtoolarge),   // Message too big for system
    precise!("5.3.5", Systemerror),     // System incorrectly configured
    generic!("5.4.0", Networkerror),    // Other or undefined network or routing status
    precise!("5.4.3", Systemerror),     // Directory server failure
    precise!("5.4.4", Hostunknown),     // Unable to route
    precise!("5.5.2", Syntaxerror), // If the server cannot BASE64 decode any client response (AU
    precise!("5.5.3", Ratelimited), // Too many recipients
    precise!("5.5.4", Systemerror), // Invalid command arguments
    precise!("5.5.5", Systemerror), // Wrong protocol version
    precise!("5.5.6", Syntaxerror), // Authentication Exchange line is too long
    generic!("5.6.0", Contenterror), // Other or undefined media error
    precise!("5.6.1", Contenterror), // Media not supported
    precise!("5.6.2", Contenterror), // Conversion required and prohibited
    precise!("5.6.3", Contenterror), // Conversion required but not supported
    precise!("5.6.5", Contenterror), // Conversion Failed
    precise!("5.6.6", Contenterror), // Message content not available
    precise!("5.6.7", Contenterror), // Non-ASCII addresses not permitted for that sender/recipien
    precise!("5.6.8", Contenterror), // UTF-8 string reply is required, but not permitted by the S
    precise!("5.6.9", Contenterror), // UTF-8 header message cannot be transferred to one or more
    generic!("5.7.0", Securityerror), // Other or undefined security status
    generic!("5.7.1", Securityerror), // Delivery not authorized, message refused
    generic!("5.7.2", Securityerror), // Mailing list expansion prohibited
    generic!("5.7.3", Securityerror), // Security conversion required but not possible
    generic!("5.7.4", Securityerror), // Security features not supported
    generic!("5.7.5", Securityerror), // Cryptographic failure
    generic!("5.7.6", Securityerror), // Cryptographic algorithm not supported
    generic!("5.7.7", Securityerror), // Message integrity failure
    generic!("5.7.8", Securityerror), // Authentication credentials invalid
    generic!("5.7.9", Securityerror), // Authentication mechanism is too weak
    generic!("5.7.10", Securityerror), // Encryption Needed
    generic!("5.7.11", Securityerror), // Encryption required for requested authentication mechanism
    precise!("5.7.13", Suspend),    // User Account Disabled
    generic!("5.7.14", Securityerror), // Trust relationship required
    generic!("5.7.15", Securityerror), // Priority Level is too low
    generic!("5.7.16", Emailtoolarge), // Message is too big for the specified priority
    precise!("5.7.17", Hasmoved),   // Mailbox owner has changed
    precise!("5.7.18", Hasmoved),   // Domain owner has changed
    generic!("5.7.19", Securityerror), // RRVS test cannot be completed
    precise!("5.7.20", Authfailure), // No passing DKIM signature found
    precise!("5.7.21", Authfailure), // No acceptable DKIM signature found
    precise!("5.7.22", Authfailure), // No valid author-matched DKIM signature found
    precise!("5.7.23", Authfailure), // SPF validation failed
    precise!("5.7.24", Authfailure), // SPF validation error
    precise!("5.7.25", Requireptr), // Reverse DNS validation failed
    precise!("5.7.26", Authfailure), // Multiple authentication checks failed
    precise!("5.7.27", Notaccept),  // MX resource record of a destination host is Null MX: RFC75
    generic!("5.7.28", Spamdetected), // The message appears to be part of a mail flood of similar
    generic!("5.7.29", Authfailure), // This status code may be returned when a message fails ARC
    generic!("5.7.30", Failedstarttls), // REQUIRETLS support required
    // Codes that well-known receivers document for one condition.
    precise!("4.7.650", Badreputation), // Microsoft: rate limited due to IP reputation
    precise!("4.7.651", Badreputation), // Microsoft: rate limited due to IP reputation
    precise!("4.7.652", Ratelimited),   // Microsoft: exceeded the maximum number of connections
    precise!("5.7.509", Authfailure),   // Microsoft: sending domain does not pass DMARC
    // Sisimai's internal codes X.0.9NN, never sent by a server: Sisimai puts
    // them on a bounce that had no code, so they encode the reason Sisimai
    // decided. 4.0.9NN resolves to the same rows through the class fallback.
    precise!("5.0.926", Authfailure),
    precise!("5.0.975", Badreputation),
    precise!("5.0.971", Blocked),
    precise!("5.0.960", Contenterror),
    precise!("5.0.923", Emailtoolarge),
    precise!("5.0.947", Expired),
    precise!("5.0.976", Failedstarttls),
    precise!("5.0.910", Filtered),
    precise!("5.0.916", Hasmoved),
    precise!("5.0.912", Hostunknown),
    precise!("5.0.922", Mailboxfull),
    precise!("5.0.939", Mailererror),
    precise!("5.0.934", Emailtoolarge),
    precise!("5.0.944", Networkerror),
    precise!("5.0.909", Norelaying),
    precise!("5.0.932", Notaccept),
    precise!("5.0.974", Notcompliantrfc),
    precise!("5.0.901", Onhold),
    precise!("5.0.972", Policyviolation),
    precise!("5.0.918", Rejected),
    precise!("5.0.973", Requireptr),
    precise!("5.0.970", Securityerror),
    precise!("5.0.980", Spamdetected),
    precise!("5.0.946", Ratelimited),
    precise!("5.0.921", Suspend),
    precise!("5.0.930", Systemerror),
    precise!("5.0.931", Systemfull),
    precise!("5.0.902", Syntaxerror),
    precise!("5.0.945", Ratelimited),
    precise!("5.0.911", Userunknown),
    precise!("5.0.900", Undefined),
    precise!("5.0.981", Virusdetected),
    precise!("4.0.924", Filtered),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_a_valid_code_listed_once() {
        for (i, row) in STATUS_TABLE.iter().enumerate() {
            assert!(EnhancedCode::parse(row.code).is_some(), "{}", row.code);
            assert!(
                STATUS_TABLE[..i].iter().all(|other| other.code != row.code),
                "{} listed twice",
                row.code
            );
        }
    }

    #[test]
    fn finds_codes_that_stand_alone() {
        let found = |t: &str| find_in(t).map(|(s, _)| s.to_string());
        assert_eq!(
            found("550 5.1.1 <a@b>: user unknown").as_deref(),
            Some("5.1.1")
        );
        assert_eq!(found("#5.3.4 header too big").as_deref(), Some("5.3.4"));
        assert_eq!(found("from 192.0.2.25 - 4.16.55.1; see").as_deref(), None);
        assert_eq!(found("error 5.7.0, denied").as_deref(), Some("5.7.0"));
        assert_eq!(found("ends in 4.4.7.").as_deref(), Some("4.4.7"));
        assert_eq!(found("550 7.7.1 not a class").as_deref(), None);
        assert_eq!(found("Postfix 2.10.1").as_deref(), None);
    }

    #[test]
    fn lookup_falls_back_to_the_other_class_then_to_other() {
        let rule = |t: &str| EnhancedCode::parse(t).and_then(lookup).map(|r| r.rule);
        let precise = |t: &str| {
            EnhancedCode::parse(t)
                .and_then(lookup)
                .is_some_and(|r| r.precise)
        };
        assert!(precise("5.1.1"));
        assert!(!precise("5.7.1"));
        assert!(!precise("5.4.1"), "found through 4.4.1");
        assert_eq!(rule("5.1.1"), Some("enhanced.5.1.1"));
        assert_eq!(rule("4.2.1"), Some("enhanced.4.2.1"));
        assert_eq!(rule("4.3.0"), Some("enhanced.5.3.0"));
        assert_eq!(rule("5.4.5"), Some("enhanced.4.4.5"));
        assert_eq!(rule("5.4.9"), Some("enhanced.5.4.0"));
        assert_eq!(rule("4.0.947"), Some("enhanced.5.0.947"));
        assert_eq!(rule("5.9.9"), None);
    }
}
