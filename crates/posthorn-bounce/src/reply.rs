//! Classification of one SMTP reply (or the diagnostic text of a DSN): reply
//! code + enhanced status code + text -> hard/soft/undetermined, a reason and
//! the id of the rule that decided, so every verdict can be explained.
//!
//! The decision runs down a fixed ladder; the first step that recognises
//! something decides:
//!
//! 1. a success reply (2xx / 2.x.x) is `delivered`;
//!    then the operator's rules (`[bounce] rules_file`, see [`ReplyRules`]),
//!    before every built-in step: the operator knows their peers' wordings
//!    better than any general table, and a rule's conditions (code,
//!    enhanced code, recipient domain) keep it as narrow as they want;
//! 2. a provider's own statement of the reason (Orange and La Poste error
//!    numbers `OFR_416`, `LPN007_505`; Yahoo's "delivery error: dd"
//!    wording), see `provider_code`;
//!    then the `[strong]` rules: phrases that name one condition ("user unknown",
//!    "over quota", "spamhaus"). Servers put a generic code on almost every
//!    rejection (550 5.7.1 for spam, policy, relaying and unknown users
//!    alike), so the words are more specific than the code;
//! 3. a *precise* enhanced code (5.1.1, 5.2.2, 5.3.4, ...), see
//!    `enhanced.rs`: it beats the vague words below;
//! 4. the `[weak]` rules: vague words ("blocked", "does not exist", "policy");
//! 5. a *generic* enhanced code (5.7.1, X.y.0, ...) from the same table;
//! 6. the basic reply code where RFC 5321/7504 give it one meaning (552,
//!    5.0x, 556, ...);
//! 7. text with no code at all that reads like an auto-reply is `vacation`
//!    (the `[vacation]` rules);
//! 8. a failure we know nothing more about is `undefined`, and with no code
//!    and no recognisable text at all the bounce type is undetermined.
//!
//! The phrase rules are data: `rules/replies.txt`, compiled in, in the
//! language an operator's file is written in too (its grammar is at the top
//! of that file; parser and matcher in `rules.rs`). What is code stays
//! here: reading the reply, the order of the steps, codes, the providers'
//! error numbers. Phrases are matched on lowercased text with whitespace
//! runs collapsed, as plain substrings that must start at a word boundary
//! ("locked" does not match inside "blocked"). A phrase `"a ... b"` matches
//! `a` followed by `b` within a few words, for wordings such as "account
//! has been disabled". No regular expressions: substring tests are enough
//! for these phrases, cost nothing to compile and read like the replies
//! they match. The rules say what a phrase means in any server's reply;
//! none of them is written for one sample line.

use crate::enhanced;
use crate::rules::{
    BUILTIN, Bigrams, ReplyRules, RuleSource, Subject, contains_phrase, first_match,
};
use posthorn_core::EnhancedCode;
use posthorn_core::status::BounceType;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The verdict on one reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplyClass {
    /// Hard: the address is bad and must be suppressed (userunknown,
    /// hostunknown, hasmoved, and notaccept on a permanent failure). Soft:
    /// any other failure. Undetermined: not a failure (delivered, vacation,
    /// feedback) or nothing to go on.
    ///
    /// As in Sisimai, the three address reasons are hard even on a 4xx
    /// ("450 4.1.1 User unknown" from a server in soft-bounce mode): the
    /// caller defers on `temporary` and only acts on the type of a final
    /// failure.
    pub bounce_type: BounceType,
    pub reason: Reason,
    /// The enhanced status code used: as given, else found in the text, else
    /// implied by the reason and the reply's class (`5.1.1` for an unknown
    /// user on a 550). `None` when there is no code of any kind.
    pub status: Option<EnhancedCode>,
    /// The rule that decided, e.g. `text.userunknown.no-such-user`,
    /// `enhanced.5.1.1`, `code.552`, or the id of an operator's rule.
    pub rule: &'static str,
    /// Whether `rule` is built in or the operator's (whose verdict, hard
    /// or soft, is the one its rule states).
    pub source: RuleSource,
    /// The server said "try again later": a 4xx reply or a 4.x.x code.
    pub temporary: bool,
}

/// Why a message was not delivered, in Sisimai's vocabulary (v5.6 names;
/// `exceedlimit`/`mesgtoobig` are `emailtoolarge`, `speeding`/`toomanyconn`
/// are `ratelimited`), plus the non-failures `feedback`, `vacation` and
/// `delivered`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// The mailbox does not exist.
    Userunknown,
    /// The domain does not exist or has no mail server.
    Hostunknown,
    /// The mailbox has moved and left no forwarding address.
    Hasmoved,
    /// The mailbox is over its quota.
    Mailboxfull,
    /// The account exists but is disabled, suspended or locked.
    Suspend,
    /// The recipient (or its filters) refused the message.
    Filtered,
    /// The sender address or domain was refused.
    Rejected,
    /// The sending IP or network is blocked (block lists, connection refusals).
    Blocked,
    /// The content was judged to be spam.
    Spamdetected,
    /// The message broke a local policy of the receiver.
    Policyviolation,
    /// A security requirement failed (authentication, encryption, ...).
    Securityerror,
    /// The message carried a virus.
    Virusdetected,
    /// The content could not be handled (media, encoding, headers).
    Contenterror,
    /// The message (or a header, or the attachment count) is too large.
    #[serde(alias = "exceedlimit", alias = "mesgtoobig")]
    Emailtoolarge,
    /// The message does not follow RFC 5322.
    Notcompliantrfc,
    /// SPF, DKIM or DMARC failed.
    Authfailure,
    /// The sending IP or domain has a bad reputation.
    Badreputation,
    /// The sending IP has no (matching) reverse DNS.
    Requireptr,
    /// Too many connections, messages or recipients, or too fast.
    #[serde(alias = "speeding", alias = "toomanyconn")]
    Ratelimited,
    /// Delivery was given up after trying for too long.
    Expired,
    /// Routing, DNS or connection trouble.
    Networkerror,
    /// A local delivery program failed.
    Mailererror,
    /// The receiving system failed or is misconfigured.
    Systemerror,
    /// The receiving system is out of space.
    Systemfull,
    /// The server refused to relay for us.
    Norelaying,
    /// The domain does not accept mail at all (null MX, 521/556).
    Notaccept,
    /// TLS was required and not used, or failed.
    Failedstarttls,
    /// We broke the SMTP protocol.
    Syntaxerror,
    /// Sisimai's "could not decide yet".
    Onhold,
    /// A failure with no recognisable reason.
    Undefined,
    /// A complaint (ARF feedback report), not a failure.
    Feedback,
    /// An auto-reply, not a failure.
    Vacation,
    /// Accepted.
    Delivered,
}

impl Reason {
    pub const ALL: [Reason; 33] = [
        Reason::Userunknown,
        Reason::Hostunknown,
        Reason::Hasmoved,
        Reason::Mailboxfull,
        Reason::Suspend,
        Reason::Filtered,
        Reason::Rejected,
        Reason::Blocked,
        Reason::Spamdetected,
        Reason::Policyviolation,
        Reason::Securityerror,
        Reason::Virusdetected,
        Reason::Contenterror,
        Reason::Emailtoolarge,
        Reason::Notcompliantrfc,
        Reason::Authfailure,
        Reason::Badreputation,
        Reason::Requireptr,
        Reason::Ratelimited,
        Reason::Expired,
        Reason::Networkerror,
        Reason::Mailererror,
        Reason::Systemerror,
        Reason::Systemfull,
        Reason::Norelaying,
        Reason::Notaccept,
        Reason::Failedstarttls,
        Reason::Syntaxerror,
        Reason::Onhold,
        Reason::Undefined,
        Reason::Feedback,
        Reason::Vacation,
        Reason::Delivered,
    ];

    /// The lowercase Sisimai name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Userunknown => "userunknown",
            Reason::Hostunknown => "hostunknown",
            Reason::Hasmoved => "hasmoved",
            Reason::Mailboxfull => "mailboxfull",
            Reason::Suspend => "suspend",
            Reason::Filtered => "filtered",
            Reason::Rejected => "rejected",
            Reason::Blocked => "blocked",
            Reason::Spamdetected => "spamdetected",
            Reason::Policyviolation => "policyviolation",
            Reason::Securityerror => "securityerror",
            Reason::Virusdetected => "virusdetected",
            Reason::Contenterror => "contenterror",
            Reason::Emailtoolarge => "emailtoolarge",
            Reason::Notcompliantrfc => "notcompliantrfc",
            Reason::Authfailure => "authfailure",
            Reason::Badreputation => "badreputation",
            Reason::Requireptr => "requireptr",
            Reason::Ratelimited => "ratelimited",
            Reason::Expired => "expired",
            Reason::Networkerror => "networkerror",
            Reason::Mailererror => "mailererror",
            Reason::Systemerror => "systemerror",
            Reason::Systemfull => "systemfull",
            Reason::Norelaying => "norelaying",
            Reason::Notaccept => "notaccept",
            Reason::Failedstarttls => "failedstarttls",
            Reason::Syntaxerror => "syntaxerror",
            Reason::Onhold => "onhold",
            Reason::Undefined => "undefined",
            Reason::Feedback => "feedback",
            Reason::Vacation => "vacation",
            Reason::Delivered => "delivered",
        }
    }

    /// Delivered, vacation and feedback say nothing about a failure.
    pub fn is_failure(self) -> bool {
        !matches!(
            self,
            Reason::Delivered | Reason::Vacation | Reason::Feedback
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reason name that is neither a current nor a pre-5.6 Sisimai name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown bounce reason {0:?}")]
pub struct UnknownReason(pub String);

impl FromStr for Reason {
    type Err = UnknownReason;

    /// Accepts the names of [`Reason::as_str`] in any case, and the names
    /// Sisimai used before v5.6 merged them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim().to_ascii_lowercase();
        match name.as_str() {
            "exceedlimit" | "mesgtoobig" => return Ok(Reason::Emailtoolarge),
            "speeding" | "toomanyconn" => return Ok(Reason::Ratelimited),
            _ => {}
        }
        Reason::ALL
            .into_iter()
            .find(|reason| reason.as_str() == name)
            .ok_or_else(|| UnknownReason(s.to_string()))
    }
}

/// Splits a reply such as `550 5.1.1 <x@y>: user unknown` into its reply
/// code, enhanced status code and text. A multi-line reply
/// (`550-5.1.1 first\r\n550 5.1.1 second`) gives the first line's codes and
/// the texts of all lines joined by spaces. Missing parts are `None`; a DSN
/// diagnostic prefix `smtp;` is dropped. Never fails: anything that is not a
/// code is text.
pub fn parse_reply_line(line: &str) -> (Option<u16>, Option<EnhancedCode>, String) {
    let mut code = None;
    let mut enhanced = None;
    let mut texts = Vec::new();
    for raw in line.split(['\r', '\n']) {
        let mut rest = raw.trim();
        if let Some(after) = strip_prefix_ignore_case(rest, "smtp;") {
            rest = after.trim_start();
        }
        if let Some((c, after)) = split_reply_code(rest) {
            code = code.or(Some(c));
            rest = after.trim_start();
        }
        let token_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        if let Some(status) = EnhancedCode::parse(&rest[..token_end]) {
            enhanced = enhanced.or(Some(status));
            rest = &rest[token_end..];
        }
        let rest = rest.trim();
        if !rest.is_empty() {
            texts.push(rest);
        }
    }
    (code, enhanced, texts.join(" "))
}

/// A reply code `[2-5]xx` at the start of `s`, followed by a space, a `-`
/// (continuation line) or nothing; returns it and what follows.
fn split_reply_code(s: &str) -> Option<(u16, &str)> {
    let bytes = s.as_bytes();
    let digits = bytes.get(..3)?;
    if !(b'2'..=b'5').contains(&digits[0]) || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let after = &s[3..];
    let next = after.chars().next();
    if !matches!(next, None | Some('-') | Some(' ') | Some('\t')) {
        return None;
    }
    let code = digits
        .iter()
        .fold(0u16, |acc, b| acc * 10 + u16::from(b - b'0'));
    Some((code, after.strip_prefix('-').unwrap_or(after)))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Classifies one reply by the built-in rules. `code` and `enhanced` are
/// used when given (an invalid enhanced code is ignored); when missing they
/// are looked for in `text`. Never fails and never panics.
pub fn classify_reply(code: Option<u16>, enhanced: Option<EnhancedCode>, text: &str) -> ReplyClass {
    ReplyRules::default().classify(code, enhanced, text, None)
}

impl ReplyRules {
    /// Classifies one reply by the operator's rules, then the built-in
    /// ones, as [`classify_reply`] does. `recipient_domain` is the domain of
    /// the recipient the reply was about, for rules that name domains;
    /// `None` when unknown (no such rule applies then).
    pub fn classify(
        &self,
        code: Option<u16>,
        enhanced: Option<EnhancedCode>,
        text: &str,
        recipient_domain: Option<&str>,
    ) -> ReplyClass {
        let domain = recipient_domain.map(|d| d.trim().trim_end_matches('.').to_lowercase());
        classify_with(self, code, enhanced, text, domain.as_deref())
    }
}

fn classify_with(
    rules: &ReplyRules,
    code: Option<u16>,
    enhanced: Option<EnhancedCode>,
    text: &str,
    domain: Option<&str>,
) -> ReplyClass {
    let text = normalize(text);
    // A DSN diagnostic of type X-Unix carries a local program's exit status
    // ("X-Unix; 255"), not an SMTP reply: its numbers are not codes.
    let local_program = text.starts_with("x-unix;");
    let (code, found_status) = if local_program {
        (None, None)
    } else {
        let found = enhanced::find_in(&text);
        let code = code
            .filter(|c| (200..=599).contains(c))
            .or_else(|| reply_code_in(&text, found.map(|(_, at)| at)));
        (code, found.map(|(status, _)| status))
    };
    let status = enhanced.or(found_status);
    // The enhanced code is the finer statement (a DSN says "554 4.4.7" for
    // a message that expired after temporary failures), so it wins.
    let temporary = match (status, code) {
        (Some(status), _) => status.is_transient(),
        (None, Some(code)) => code / 100 == 4,
        (None, None) => false,
    };

    let Decision {
        reason,
        rule,
        verdict,
        source,
    } = decide(rules, code, status, &text, domain);
    let known = code.is_some() || status.is_some() || rule != RULE_NOTHING;
    // A rule that states hard or soft (an operator's) is taken at its word.
    let bounce_type = verdict.unwrap_or(match reason {
        Reason::Userunknown | Reason::Hostunknown | Reason::Hasmoved => BounceType::Hard,
        Reason::Notaccept if !temporary => BounceType::Hard,
        _ if !reason.is_failure() || !known => BounceType::Undetermined,
        _ => BounceType::Soft,
    });
    let class = status
        .map(EnhancedCode::class)
        .or_else(|| code.map(|c| (c / 100) as u8));
    let status = status.or_else(|| class.and_then(|class| implied_status(reason, class)));
    ReplyClass {
        bounce_type,
        reason,
        status,
        rule,
        source,
        temporary,
    }
}

const RULE_NOTHING: &str = "none";

/// What decided, and how.
struct Decision {
    reason: Reason,
    rule: &'static str,
    /// Hard or soft when the rule says which.
    verdict: Option<BounceType>,
    source: RuleSource,
}

impl Decision {
    /// A built-in rule whose verdict follows from the reason.
    fn builtin((reason, rule): (Reason, &'static str)) -> Self {
        Decision {
            reason,
            rule,
            verdict: None,
            source: RuleSource::Builtin,
        }
    }
}

impl From<&crate::rules::Rule<'static>> for Decision {
    fn from(rule: &crate::rules::Rule<'static>) -> Self {
        Decision {
            reason: rule.reason,
            rule: rule.id,
            verdict: rule.verdict,
            source: match rule.step {
                crate::rules::Step::Operator => RuleSource::Operator,
                _ => RuleSource::Builtin,
            },
        }
    }
}

/// Steps 1-8 of the module doc.
fn decide(
    rules: &ReplyRules,
    code: Option<u16>,
    status: Option<EnhancedCode>,
    text: &str,
    domain: Option<&str>,
) -> Decision {
    if status.is_some_and(|s| s.class() == 2) {
        return Decision::builtin((Reason::Delivered, "enhanced.2.x.x"));
    }
    // A failure status beats a 2xx-looking number: "255 ... 554 5.3.0
    // unknown mailer error 255" is a program's exit status, not a reply.
    if code.is_some_and(|c| c / 100 == 2) && status.is_none_or(|s| s.class() == 2) {
        return Decision::builtin((Reason::Delivered, "code.2xx"));
    }
    // One look at the text's byte pairs serves every phrase of every step.
    let bigrams = Bigrams::of(text);
    let subject = Subject {
        code,
        status,
        domain,
        text,
        bigrams: &bigrams,
    };
    if let Some(rule) = first_match(rules.operator_rules(), &subject) {
        return rule.into();
    }
    if let Some(found) = provider_code(text) {
        return Decision::builtin(found);
    }
    let builtin = &*BUILTIN;
    if let Some(rule) = first_match(&builtin.strong, &subject) {
        return rule.into();
    }
    let row = status.and_then(enhanced::lookup);
    if let Some(row) = row.filter(|row| row.precise) {
        return Decision::builtin((row.reason, row.rule));
    }
    if let Some(rule) = first_match(&builtin.weak, &subject) {
        return rule.into();
    }
    if let Some(row) = row {
        return Decision::builtin((row.reason, row.rule));
    }
    if let Some(found) = code.and_then(basic_code_reason) {
        return Decision::builtin(found);
    }
    // An auto-reply is a message, not a server's reply: only text with no
    // code of any kind can be one.
    if code.is_none()
        && status.is_none()
        && let Some(rule) = first_match(&builtin.vacation, &subject)
    {
        return rule.into();
    }
    if code.is_some() || status.is_some() {
        return Decision::builtin((Reason::Undefined, "code.unrecognised"));
    }
    Decision::builtin((Reason::Undefined, RULE_NOTHING))
}

/// Whether a rule is a provider's stated reason ([`provider_code`]): the
/// receiver knows why it refused, so no stage of the dialogue changes it.
pub fn is_provider_rule(rule: &str) -> bool {
    rule.contains(".provider-")
}

/// Orange (`OFR`, `OUK`) and La Poste (`LPN`) end every refusal with a
/// label and a number (`OFR_416`, `OFR005_505`, `LPN007_416`), documented
/// by them per number: the number says the reason whatever the text and
/// the stage (La Poste refuses unknown recipients after DATA). Numbers
/// documented without one meaning ("please try later") are left out.
///
/// Yahoo checks recipients only after DATA and says so in its own words
/// ("554 delivery error: dd This user doesn't have a yahoo.com account"):
/// that is an unknown mailbox, not a filter of the message.
fn provider_code(text: &str) -> Option<(Reason, &'static str)> {
    if text.contains("delivery error: dd ") && contains_phrase(text, "doesn't have a ... account") {
        return Some((Reason::Userunknown, "text.userunknown.provider-yahoo"));
    }
    if !(text.contains("ofr") || text.contains("lpn") || text.contains("ouk")) {
        return None;
    }
    let number = text
        .split(|c: char| c.is_whitespace() || c == '(' || c == '[')
        .find_map(|word| {
            let rest = ["ofr", "lpn", "ouk"]
                .iter()
                .find_map(|label| word.strip_prefix(label))?;
            let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
            let digits = rest.strip_prefix('_')?;
            let digits = digits.trim_end_matches(['.', ',', ')', ';']);
            (digits.len() == 3 && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
        })?;
    Some(match number {
        "101" | "102" | "103" | "510" | "999" => (Reason::Blocked, "text.blocked.provider-orange"),
        "104" => (Reason::Ratelimited, "text.ratelimited.provider-orange"),
        "305" | "402" => (Reason::Securityerror, "text.securityerror.provider-orange"),
        "401" | "517" => (Reason::Authfailure, "text.authfailure.provider-orange"),
        "403" | "405" | "415" | "421" => (Reason::Rejected, "text.rejected.provider-orange"),
        "416" => (Reason::Userunknown, "text.userunknown.provider-orange"),
        "417" => (Reason::Mailboxfull, "text.mailboxfull.provider-orange"),
        "420" | "426" => (Reason::Suspend, "text.suspend.provider-orange"),
        "505" => (Reason::Systemerror, "text.systemerror.provider-orange"),
        "506" => (Reason::Spamdetected, "text.spamdetected.provider-orange"),
        "514" => (Reason::Emailtoolarge, "text.emailtoolarge.provider-orange"),
        "630" => (
            Reason::Policyviolation,
            "text.policyviolation.provider-orange",
        ),
        _ => return None,
    })
}

/// Step 6: basic reply codes with one meaning.
fn basic_code_reason(code: u16) -> Option<(Reason, &'static str)> {
    Some(match code {
        // RFC 5321: "local error in processing".
        451 => (Reason::Systemerror, "code.451"),
        // RFC 5321: "insufficient system storage".
        452 => (Reason::Systemfull, "code.452"),
        // RFC 5321: syntax errors, unknown or unimplemented commands.
        500..=504 => (Reason::Syntaxerror, "code.50x"),
        // RFC 7504: the host / the domain does not accept mail.
        521 | 556 => (Reason::Notaccept, "code.521-556"),
        // RFC 4954 / 3207: authentication or encryption required or failed.
        530 | 534 | 535 | 538 => (Reason::Securityerror, "code.53x"),
        // RFC 5321: "exceeded storage allocation".
        552 => (Reason::Mailboxfull, "code.552"),
        _ => return None,
    })
}

/// A reply code inside the text when none was given: at the very start
/// ("550 ...", "smtp; 550 ...") or just before the enhanced code found at
/// `status_at` ("... said: 550 5.1.1 ...").
fn reply_code_in(text: &str, status_at: Option<usize>) -> Option<u16> {
    let start = text.strip_prefix("smtp;").unwrap_or(text);
    let start = start.trim_start_matches(|c: char| !c.is_alphanumeric());
    if let Some((code, _)) = split_reply_code(start) {
        return Some(code);
    }
    let at = status_at?.checked_sub(4)?;
    let before = text.get(at..)?;
    let preceded_by_word = at > 0 && text.as_bytes()[at - 1].is_ascii_alphanumeric();
    if preceded_by_word {
        return None;
    }
    split_reply_code(before).map(|(code, _)| code)
}

/// The code RFC 3463 gives the reason, in the reply's class, for replies
/// that came with a basic code only.
fn implied_status(reason: Reason, class: u8) -> Option<EnhancedCode> {
    let (subject, detail) = match reason {
        Reason::Delivered => (0, 0),
        Reason::Userunknown => (1, 1),
        Reason::Hostunknown => (1, 2),
        Reason::Hasmoved => (1, 6),
        Reason::Notaccept => (1, 10),
        Reason::Mailboxfull => (2, 2),
        Reason::Systemfull => (3, 1),
        Reason::Emailtoolarge => (3, 4),
        Reason::Requireptr => (7, 25),
        Reason::Authfailure => (7, 26),
        _ => (0, 0),
    };
    // A 3xx reply implies no code: RFC 3463 has no class 3.
    EnhancedCode::new(class, subject, detail)
}

/// Lowercase, whitespace runs collapsed to one space, and words that a
/// wrapped provider page split with a hyphen ("securi- ty") joined again.
pub(crate) fn normalize(text: &str) -> String {
    let lower = text.to_lowercase();
    let mut out = String::with_capacity(lower.len());
    for word in lower.split_whitespace() {
        let wrapped = out.ends_with('-')
            && out[..out.len() - 1].ends_with(|c: char| c.is_alphabetic())
            && word.starts_with(|c: char| c.is_alphabetic());
        if wrapped {
            out.pop();
        } else if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Origin, parse_rules};

    #[test]
    fn phrases_start_at_word_boundaries() {
        assert!(contains_phrase("account locked", "locked"));
        assert!(!contains_phrase("ip blocked", "locked"));
        assert!(contains_phrase("no (ptr) record", "ptr"));
        assert!(!contains_phrase("interrupted", "ptr"));
    }

    #[test]
    fn gapped_phrases_need_their_parts_close_and_in_order() {
        let phrase = "account ... disabled";
        assert!(contains_phrase("the account has been disabled", phrase));
        assert!(!contains_phrase("disabled account", phrase));
        let far = format!("account {} disabled", "x".repeat(60));
        assert!(!contains_phrase(&far, phrase));
    }

    #[test]
    fn normalize_collapses_space_and_joins_wrapped_words() {
        assert_eq!(normalize("  A\r\n  B\tc "), "a b c");
        assert_eq!(
            normalize("potential securi- ty issue"),
            "potential security issue"
        );
        assert_eq!(normalize("Blocked - see"), "blocked - see");
    }

    #[test]
    fn orange_and_la_poste_codes_say_the_reason() {
        let reason = |t: &str| provider_code(&normalize(t)).map(|(r, _)| r);
        assert_eq!(
            reason("550 5.5.0 Invalid recipient. LPN007_416"),
            Some(Reason::Userunknown)
        );
        assert_eq!(
            reason("Service refused, please try later. OFR005_505 [505]"),
            Some(Reason::Systemerror)
        );
        assert_eq!(
            reason("Mail rejected. OFR_506 [506]"),
            Some(Reason::Spamdetected)
        );
        assert_eq!(reason("please try later. LPN001_108"), None);
        assert_eq!(reason("user unknown"), None);
        assert_eq!(reason("lpn007_4160"), None);
    }

    #[test]
    fn every_reason_name_round_trips() {
        for reason in Reason::ALL {
            assert_eq!(reason.as_str().parse::<Reason>(), Ok(reason));
        }
        assert_eq!("MesgTooBig".parse::<Reason>(), Ok(Reason::Emailtoolarge));
        assert!("nonsense".parse::<Reason>().is_err());
    }

    #[test]
    fn builtin_rules_parse_and_their_ids_are_unique() {
        let rules = parse_rules(crate::rules::BUILTIN_TEXT, Origin::Builtin)
            .unwrap_or_else(|errors| panic!("rules/replies.txt: {errors:?}"));
        assert!(rules.len() > 40, "only {} rules", rules.len());
        let ids: Vec<&str> = rules.iter().map(|r| r.id).collect();
        for (i, id) in ids.iter().enumerate() {
            assert!(!ids[..i].contains(id), "{id} used twice");
            assert!(
                id.starts_with("text."),
                "{id}: built-in phrase ids are text.*"
            );
        }
        // Every step has its rules, and the parsed set is the one in use.
        let b = &*BUILTIN;
        assert!(!b.strong.is_empty() && !b.weak.is_empty() && !b.vacation.is_empty());
        assert_eq!(
            b.strong.len() + b.weak.len() + b.vacation.len(),
            rules.len()
        );
    }
}
