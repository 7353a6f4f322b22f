//! Classification of one SMTP reply (or the diagnostic text of a DSN): reply
//! code + enhanced status code + text -> hard/soft/undetermined, a reason and
//! the id of the rule that decided, so every verdict can be explained.
//!
//! The decision runs down a fixed ladder; the first step that recognises
//! something decides:
//!
//! 1. a success reply (2xx / 2.x.x) is `delivered`;
//! 2. a provider's own statement of the reason (Orange and La Poste error
//!    numbers `OFR_416`, `LPN007_505`; Yahoo's "delivery error: dd"
//!    wording), see `provider_code`;
//!    then `STRONG_TEXT`: phrases that name one condition ("user unknown",
//!    "over quota", "spamhaus"). Servers put a generic code on almost every
//!    rejection (550 5.7.1 for spam, policy, relaying and unknown users
//!    alike), so the words are more specific than the code;
//! 3. a *precise* enhanced code (5.1.1, 5.2.2, 5.3.4, ...), see
//!    `enhanced.rs`: it beats the vague words below;
//! 4. `WEAK_TEXT`: vague words ("blocked", "does not exist", "policy");
//! 5. a *generic* enhanced code (5.7.1, X.y.0, ...) from the same table;
//! 6. the basic reply code where RFC 5321/7504 give it one meaning (552,
//!    5.0x, 556, ...);
//! 7. text with no code at all that reads like an auto-reply is `vacation`;
//! 8. a failure we know nothing more about is `undefined`, and with no code
//!    and no recognisable text at all the bounce type is undetermined.
//!
//! Phrases are matched on lowercased text with whitespace runs collapsed, as
//! plain substrings that must start at a word boundary ("locked" does not
//! match inside "blocked"). A phrase `"a ... b"` matches `a` followed by `b`
//! within a few words, for wordings such as "account has been disabled".
//! No regular expressions: substring tests are enough for these phrases,
//! cost nothing to compile and read like the replies they match.
//! The rules say what a phrase means in any server's reply; none of them is
//! written for one sample line.

use crate::enhanced::EnhancedStatus;
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
    pub status: Option<String>,
    /// The rule that decided, e.g. `text.userunknown.no-such-user`,
    /// `enhanced.5.1.1`, `code.552`.
    pub rule: &'static str,
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
pub fn parse_reply_line(line: &str) -> (Option<u16>, Option<String>, String) {
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
        if let Some(status) = EnhancedStatus::parse(&rest[..token_end]) {
            enhanced = enhanced.or(Some(status.to_string()));
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

/// Classifies one reply. `code` and `enhanced` are used when given (an
/// invalid enhanced code is ignored); when missing they are looked for in
/// `text`. Never fails and never panics.
pub fn classify_reply(code: Option<u16>, enhanced: Option<&str>, text: &str) -> ReplyClass {
    let text = normalize(text);
    // A DSN diagnostic of type X-Unix carries a local program's exit status
    // ("X-Unix; 255"), not an SMTP reply: its numbers are not codes.
    let local_program = text.starts_with("x-unix;");
    let (code, found_status) = if local_program {
        (None, None)
    } else {
        let found = EnhancedStatus::find_in(&text);
        let code = code
            .filter(|c| (200..=599).contains(c))
            .or_else(|| reply_code_in(&text, found.map(|(_, at)| at)));
        (code, found.map(|(status, _)| status))
    };
    let status = enhanced.and_then(EnhancedStatus::parse).or(found_status);
    // The enhanced code is the finer statement (a DSN says "554 4.4.7" for
    // a message that expired after temporary failures), so it wins.
    let temporary = match (status, code) {
        (Some(status), _) => status.class == 4,
        (None, Some(code)) => code / 100 == 4,
        (None, None) => false,
    };

    let (reason, rule) = decide(code, status, &text);
    let known = code.is_some() || status.is_some() || rule != RULE_NOTHING;
    let bounce_type = match reason {
        Reason::Userunknown | Reason::Hostunknown | Reason::Hasmoved => BounceType::Hard,
        Reason::Notaccept if !temporary => BounceType::Hard,
        _ if !reason.is_failure() || !known => BounceType::Undetermined,
        _ => BounceType::Soft,
    };
    let class = status
        .map(|s| s.class)
        .or_else(|| code.map(|c| (c / 100) as u8));
    let status = status
        .map(|s| s.to_string())
        .or_else(|| class.map(|class| implied_status(reason, class)));
    ReplyClass {
        bounce_type,
        reason,
        status,
        rule,
        temporary,
    }
}

const RULE_NOTHING: &str = "none";

/// Steps 1-8 of the module doc.
fn decide(code: Option<u16>, status: Option<EnhancedStatus>, text: &str) -> (Reason, &'static str) {
    if status.is_some_and(|s| s.class == 2) {
        return (Reason::Delivered, "enhanced.2.x.x");
    }
    // A failure status beats a 2xx-looking number: "255 ... 554 5.3.0
    // unknown mailer error 255" is a program's exit status, not a reply.
    if code.is_some_and(|c| c / 100 == 2) && status.is_none_or(|s| s.class == 2) {
        return (Reason::Delivered, "code.2xx");
    }
    if let Some(found) = provider_code(text) {
        return found;
    }
    if let Some(rule) = first_match(STRONG_TEXT, text) {
        return (rule.reason, rule.id);
    }
    let row = status.and_then(EnhancedStatus::lookup);
    if let Some(row) = row.filter(|row| row.precise) {
        return (row.reason, row.rule);
    }
    if let Some(rule) = first_match(WEAK_TEXT, text) {
        return (rule.reason, rule.id);
    }
    if let Some(row) = row {
        return (row.reason, row.rule);
    }
    if let Some(found) = code.and_then(basic_code_reason) {
        return found;
    }
    // An auto-reply is a message, not a server's reply: only text with no
    // code of any kind can be one.
    if code.is_none()
        && status.is_none()
        && let Some(rule) = first_match(VACATION_TEXT, text)
    {
        return (rule.reason, rule.id);
    }
    if code.is_some() || status.is_some() {
        return (Reason::Undefined, "code.unrecognised");
    }
    (Reason::Undefined, RULE_NOTHING)
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
fn implied_status(reason: Reason, class: u8) -> String {
    let subject_detail = match reason {
        Reason::Delivered => "0.0",
        Reason::Userunknown => "1.1",
        Reason::Hostunknown => "1.2",
        Reason::Hasmoved => "1.6",
        Reason::Notaccept => "1.10",
        Reason::Mailboxfull => "2.2",
        Reason::Systemfull => "3.1",
        Reason::Emailtoolarge => "3.4",
        Reason::Requireptr => "7.25",
        Reason::Authfailure => "7.26",
        _ => "0.0",
    };
    format!("{class}.{subject_detail}")
}

/// Lowercase, whitespace runs collapsed to one space, and words that a
/// wrapped provider page split with a hyphen ("securi- ty") joined again.
fn normalize(text: &str) -> String {
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

/// A group of phrases with one meaning.
struct TextRule {
    id: &'static str,
    reason: Reason,
    phrases: &'static [&'static str],
}

const fn rule(id: &'static str, reason: Reason, phrases: &'static [&'static str]) -> TextRule {
    TextRule {
        id,
        reason,
        phrases,
    }
}

fn first_match<'a>(rules: &'a [TextRule], text: &str) -> Option<&'a TextRule> {
    let bigrams = Bigrams::of(text);
    rules.iter().find(|rule| {
        rule.phrases
            .iter()
            .any(|phrase| bigrams.may_contain(phrase) && contains_phrase(text, phrase))
    })
}

/// Which byte pairs occur in a text: a phrase none of whose parts' first
/// two bytes occur cannot match, and most phrases of the tables are ruled
/// out this way in constant time instead of a substring search each.
struct Bigrams(Box<[u64; 1024]>);

impl Bigrams {
    fn of(text: &str) -> Self {
        let mut bits = Box::new([0u64; 1024]);
        for pair in text.as_bytes().windows(2) {
            let i = (usize::from(pair[0]) << 8) | usize::from(pair[1]);
            bits[i / 64] |= 1 << (i % 64);
        }
        Bigrams(bits)
    }

    fn has(&self, a: u8, b: u8) -> bool {
        let i = (usize::from(a) << 8) | usize::from(b);
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    fn may_contain(&self, phrase: &str) -> bool {
        phrase.split(" ... ").all(|part| match part.as_bytes() {
            [a, b, ..] => self.has(*a, *b),
            _ => true,
        })
    }
}

/// How far apart (in bytes) the parts of an `"a ... b"` phrase may be: a few
/// words, so that "account ... disabled" matches "account has been
/// disabled" but not two unrelated sentences.
const MAX_GAP: usize = 40;

fn contains_phrase(text: &str, phrase: &str) -> bool {
    parts_match(text, phrase, 0, None)
}

/// Whether the first part of `phrase` (up to ` ... `) occurs in `text` at
/// or after `from` (no further than `within` bytes from it, when given) at
/// a word start, followed by the remaining parts in the same way. Only the
/// allowed window is searched, so a long text costs linear time.
fn parts_match(text: &str, phrase: &str, from: usize, within: Option<usize>) -> bool {
    let (first, rest) = match phrase.split_once(" ... ") {
        Some((first, rest)) => (first, Some(rest)),
        None => (phrase, None),
    };
    if first.is_empty() {
        return false;
    }
    let mut window_end =
        within.map_or(text.len(), |gap| (from + gap + first.len()).min(text.len()));
    while !text.is_char_boundary(window_end) {
        window_end += 1;
    }
    // `contains` has a fast path for short needles that `find` lacks, and
    // most phrases do not occur at all: ask it first.
    if !text
        .get(from..window_end)
        .is_some_and(|t| t.contains(first))
    {
        return false;
    }
    let mut search_from = from;
    while let Some(offset) = text
        .get(search_from..window_end)
        .and_then(|t| t.find(first))
    {
        let at = search_from + offset;
        let rest_ok = match rest {
            None => true,
            Some(rest) => parts_match(text, rest, at + first.len(), Some(MAX_GAP)),
        };
        if starts_word(text, at, first) && rest_ok {
            return true;
        }
        // Step one character on, so overlapping occurrences are tried too.
        search_from = at + text[at..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

/// A phrase that begins with a letter or digit must begin a word.
fn starts_word(text: &str, at: usize, phrase: &str) -> bool {
    let phrase_is_word = phrase.starts_with(|c: char| c.is_alphanumeric());
    let after_word = text[..at].ends_with(|c: char| c.is_alphanumeric());
    !(phrase_is_word && after_word)
}

/// Step 2: phrases that name one condition, most specific first. The order
/// settles texts that mention two things ("rate limited due to IP
/// reputation" is about reputation; "the SPF record ... rate limited" about
/// authentication).
static STRONG_TEXT: &[TextRule] = &[
    // A quota on what we send, not on the recipient's mailbox: before the
    // mailbox rule, which also reads "quota exceeded".
    rule(
        "text.ratelimited.sending-quota",
        Reason::Ratelimited,
        &["sending quota", "quota for sending", "send quota"],
    ),
    // First, because a full mailbox is often reported by a local delivery
    // program ("X-Unix; ...: Disk quota exceeded") whose other failures are
    // mailer errors.
    rule(
        "text.mailboxfull.quota",
        Reason::Mailboxfull,
        &[
            "mailbox full",
            "mailbox is full",
            "mailbox ... exceeded",
            "mailbox exceeds",
            "mailbox size",
            "mailbox quota",
            "inbox is full",
            "full mailbox",
            "quota exceeded",
            "quotaexceeded",
            "quota full",
            "over quota",
            "overquota",
            "over its quota",
            "exceeds quota",
            "exceed quota",
            "disk quota",
            "out of storage",
            "storage space",
            "exceeded storage",
            "exceeds storage",
        ],
    ),
    rule(
        "text.mailererror.local-program",
        Reason::Mailererror,
        &[
            "x-unix;",
            "pipe to |",
            // Local delivery agents that name themselves in the error.
            "procmail:",
            "maildrop:",
            "\"|",
            "mailer error",
            "command died",
            "exit status",
        ],
    ),
    rule(
        "text.notcompliantrfc.compliance",
        Reason::Notcompliantrfc,
        &[
            "not rfc ... compliant",
            "rfc 5322 compliant",
            "rfc5322 compliant",
            "noncompliant",
            "non-compliant",
            "not compliant with rfc",
        ],
    ),
    // cPanel's Exim says "The account or domain may not exist, they may be
    // blacklisted, or missing the proper dns entries": the first guess is
    // the address, so before the block-list words it also contains.
    rule(
        "text.hostunknown.may-not-exist",
        Reason::Hostunknown,
        &["account or domain may not exist"],
    ),
    // A listed *address* (ours or the recipient's) is a refusal of the
    // address, not of our IP: before the block-list rule that reads
    // "blacklisted".
    rule(
        "text.rejected.address-blacklisted",
        Reason::Rejected,
        &[
            "address that has been blacklisted",
            "email address has been blacklisted",
            "sender address has been blacklisted",
            "sender is in my black list",
        ],
    ),
    rule(
        "text.blocked.blocklist",
        Reason::Blocked,
        &[
            "blacklist",
            "blocklist",
            "block list",
            "black list",
            "blocked using",
            "is listed in",
            "is listed on",
            "listed by",
            "ip ... listed",
            "surbl",
            "uribl",
            "spamhaus",
            "spamcop",
            "sorbs",
            "dnsbl",
            "rbl",
            "banned sending ip",
            "unusual rate of",
            "denial of service",
            "not in whitelist",
            "not whitelisted",
            "refused to talk to me",
            "service refuse",
            "invalid helo",
            "helo/ehlo argument",
            "helo command rejected",
            "invalid ip for sending",
            "access forbidden by your ip",
            // Port 25 blocking of dynamic ranges: "please use the SMTP
            // server of your ISP".
            "smtp server of your isp",
            // Refusals of the sending host itself (Sisimai's "blocked").
            "too many unwanted messages",
            "too many spams from your ip",
            "sender ip address rejected",
            "bad sender ip address",
            "not currently accepting mail from your ip",
            "hosts with dynamic ip",
            "mail from dynamic ip",
            "rejecting open proxy",
            "extreme bad ip profile",
            "you are not allowed to connect",
        ],
    ),
    rule(
        "text.requireptr.reverse-dns",
        Reason::Requireptr,
        &[
            "ptr",
            "reverse dns",
            "reverse lookup",
            "reverse hostname",
            "rdns",
            "cannot find your hostname",
            "ip name lookup",
            "cannot resolve your address",
            "unresolvable relay host",
            // "service permits N unverifyable sending IPs": the sending IP
            // is not one the sender's domain resolves to.
            "unverifyable sending ip",
            "unverifiable sending ip",
        ],
    ),
    // An explicit spam verdict, before the rules for other things the same
    // reply may mention ("... rejected due to spam classification. Set up
    // SPF records ...") and before the virus rule ("rejected for spam or
    // virus content" is a spam verdict, "virus or spam content" a virus one).
    rule(
        "text.spamdetected.rejected-as-spam",
        Reason::Spamdetected,
        &[
            "rejected for spam",
            "rejected as spam",
            "due to spam",
            "spam classification",
        ],
    ),
    // Before authentication: "duplicate header 'DKIM-Signature'" is about
    // the message's form, not a failed check.
    rule(
        "text.contenterror.content",
        Reason::Contenterror,
        &[
            "improperly-formatted",
            "improperly formatted",
            "binary content",
            "duplicate header",
            // Too many or too large header lines: the form of the message,
            // before the size rule reads "too large".
            "headers too large",
            "header too large",
            "8-bit data",
            "8bit data",
            "invalid mime",
            "mime error",
            "content error",
            "conversion failed",
        ],
    ),
    rule(
        "text.authfailure.spf-dkim-dmarc",
        Reason::Authfailure,
        &[
            "spf",
            "dkim",
            "dmarc",
            "unauthenticated email",
            "unauthenticated mail",
            "sender is unauthenticated",
            "authentication checks",
            "authentication information",
            "sender policy framework",
        ],
    ),
    rule(
        "text.badreputation.reputation",
        Reason::Badreputation,
        &["reputation", "user complaints"],
    ),
    rule(
        "text.notaccept.null-mx",
        Reason::Notaccept,
        &[
            "null mx",
            // A domain that exists but names no mail exchanger.
            "no mx record",
            "no mx found",
            "mx record ... not found",
            "find a mail exchanger",
            "find any mail exchanger",
            "domain ... does not accept mail",
            "domain ... doesn't accept mail",
            "domain ... does not receive email",
            "domain ... doesn't receive email",
        ],
    ),
    // Greylisting ("Recipient address rejected: Greylisted") is a deliberate
    // "come back later" to unknown senders: it says nothing about the
    // recipient, so it must not reach the recipient rules below.
    rule(
        "text.blocked.greylisted",
        Reason::Blocked,
        &["greylist", "graylist"],
    ),
    // Our sender address, not the recipient, is the problem: before the
    // recipient rules, because sender verification failures reuse their
    // words ("Sender address rejected: Domain not found").
    rule(
        "text.rejected.sender",
        Reason::Rejected,
        &[
            "sender address rejected",
            "sender was rejected",
            "sender rejected",
            "sender ... denied",
            "sender ... refused",
            "sender address ... does not exist",
            "sender domain",
            "domain of sender",
            "sender account",
            "sender verif",
            "envelope sender",
            "badmailfrom",
            "bad sender",
            "invalid sender",
            "unknown sender",
            "purported responsible",
            "permanently deferred",
        ],
    ),
    // Refusals that Sisimai's table files under "rejected" although they
    // do not say "sender": a gateway that does not know the address, a
    // filter that refuses the whole envelope, an invalid From: header.
    rule(
        "text.rejected.not-accepted",
        Reason::Rejected,
        &[
            "not a registered gateway user",
            "recipient addresses rejected : access denied",
            "provide a valid from",
        ],
    ),
    // Exchange Online's refusal of an address it does not host, whatever
    // enhanced code goes with it (5.4.1, 5.7.1): the "why" of Postfix's
    // wrapper is "access denied" to that mailbox, not to our host.
    rule(
        "text.userunknown.access-denied-recipient",
        Reason::Userunknown,
        &["recipient address rejected: access denied"],
    ),
    rule(
        "text.userunknown.no-such-user",
        Reason::Userunknown,
        &[
            "user unknown",
            "unknown user",
            "no such user",
            "no such mailbox",
            "no such recipient",
            "no such account",
            "no such address",
            "no such local user",
        ],
    ),
    rule(
        "text.userunknown.unknown-recipient",
        Reason::Userunknown,
        &[
            "unknown recipient",
            "recipient unknown",
            "address unknown",
            "unknown mailbox",
            "unknown local part",
            "unknown or illegal alias",
            "illegal alias",
            "invalid recipient",
            "invalid mailbox",
            "not a valid mailbox",
            "not a valid recipient",
            "mailbox name not allowed",
            "not a valid user",
        ],
    ),
    rule(
        "text.userunknown.not-found",
        Reason::Userunknown,
        &[
            "user not found",
            "recipient not found",
            "mailbox not found",
            "address not found",
            "account not found",
            "recipnotfound",
            "recipientnotfound",
            "user does not exist",
            "user doesn't exist",
            "user ... unknown",
            "user not exist",
            "mailbox does not exist",
            "mailbox doesn't exist",
            "account does not exist",
            "account ... does not exist",
            "address does not exist",
            "recipient does not exist",
            "user doesn't have",
            "user does not have",
            "user ... not listed",
            "not our customer",
            "no mailbox here",
        ],
    ),
    rule(
        "text.filtered.recipient-refuses",
        Reason::Filtered,
        &[
            "user reject",
            "blocked by the recipient",
            "blocked by recipient",
            "rejected by the recipient",
            "rejected by recipient",
            "recipient preferences",
            "refuse to receive",
            "not accepting any mail",
            "message filtered",
        ],
    ),
    // DNS trouble that may pass, before the rules that read a missing
    // domain as permanent.
    rule(
        "text.networkerror.dns",
        Reason::Networkerror,
        &[
            "dns error",
            "name server reply",
            "dns query failed",
            "host not found, try again",
            "temporary failure in name resolution",
        ],
    ),
    rule(
        "text.hostunknown.no-such-domain",
        Reason::Hostunknown,
        &[
            "host unknown",
            "unknown host",
            "host not found",
            "host ... not found",
            "no such domain",
            "unknown domain",
            "invalid domain",
            "domain not found",
            "domain name not found",
            "domain ... does not exist",
            "domain ... doesn't exist",
            "domain ... not reachable",
            "domain ... unreachable",
            "unrouteable address",
            "unroutable address",
            "find any host",
            "non-existent host",
            "nxdomain",
        ],
    ),
    rule(
        "text.hasmoved.moved",
        Reason::Hasmoved,
        &[
            "has moved",
            "has been replaced by",
            "no forwarding address",
            "owner has changed",
            "address has changed",
        ],
    ),
    rule(
        "text.suspend.disabled",
        Reason::Suspend,
        &[
            "account ... disabled",
            "mailbox ... disabled",
            "account ... inactive",
            "mailbox ... inactive",
            "account ... suspended",
            "mailbox ... suspended",
            "domain ... suspended",
            "user ... suspended",
            "recipient suspend",
            "service suspended",
            "suspended account",
            "disabled account",
            "deactivated",
            "locked",
            "frozen",
            "no longer valid",
            "no longer active",
        ],
    ),
    rule(
        "text.systemfull.system-storage",
        Reason::Systemfull,
        &[
            "system full",
            "system storage",
            "disk full",
            "no space left",
            // RFC 5321's words for 452: the server's storage, not the
            // recipient's quota.
            "insufficient system storage",
        ],
    ),
    rule(
        "text.syntaxerror.protocol",
        Reason::Syntaxerror,
        &[
            "syntax error",
            "sequence of commands",
            "out of sequence",
            "protocol violation",
            "command unrecognized",
            "unrecognized command",
            "command not recognized",
            "not implemented",
            "line too long",
            "cannot decode",
        ],
    ),
    rule(
        "text.failedstarttls.tls",
        Reason::Failedstarttls,
        &[
            "starttls",
            "tls required",
            "tls is required",
            "requiretls",
            "tls connection",
            "must use tls",
            "support tls",
            "encryption required for ... domain",
        ],
    ),
    rule(
        "text.ratelimited.too-many",
        Reason::Ratelimited,
        &[
            "too many connections",
            "too many concurrent",
            "too many messages",
            "too many recipients",
            "too many emails",
            "too many mails",
            "too many sessions",
            "rate limit",
            "rate-limit",
            "ratelimit",
            "frequency limit",
            "too quickly",
            "too fast",
            "slower",
            "slow down",
            "at a rate that",
            "excessive volume",
            "relay limit",
            "sending limit",
            "receive limit",
            "daily ... limit",
            "hourly ... limit",
            "maximum number of connections",
            "per connection",
            "connection limit",
            "throttl",
        ],
    ),
    rule(
        "text.norelaying.relay",
        Reason::Norelaying,
        &[
            "relay access denied",
            "relaying",
            "relay ... denied",
            "relay ... not permitted",
            "relay ... not allowed",
            "unable to relay",
            "cannot relay",
            "can't relay",
            "to relay mail",
            "permitted to relay",
            "allowed to relay",
            "credentials for relay",
            "rcpthosts",
            "smtp relay",
        ],
    ),
    rule(
        "text.securityerror.authentication",
        Reason::Securityerror,
        &[
            "authentication required",
            "authrequired",
            "authentication failure",
            "authentication failed",
            "unauthenticated senders",
            "password",
            "login",
            "log in",
            "credentials",
        ],
    ),
    rule(
        "text.emailtoolarge.size",
        Reason::Emailtoolarge,
        &[
            "too large",
            "too big",
            "size exceeds",
            "size exceeded",
            "exceeds size",
            "size limit",
            "exceeds the size",
            "exceeds the maximum size",
            "maximum message size",
            "message size",
            "message length exceeds",
            "exceeds ... limit",
            "recipsizelimit",
            // Exim's refusal of a message whose lines exceed its limit:
            // the message is too big for the receiver, not a syntax error.
            "line limit exceeded",
        ],
    ),
    rule(
        "text.virusdetected.virus",
        Reason::Virusdetected,
        &["virus", "malware", "infected", "trojan"],
    ),
    rule(
        "text.spamdetected.spam",
        Reason::Spamdetected,
        &[
            "spam detected",
            "as spam",
            "spam content",
            "spam message",
            "likely spam",
            "spam score",
            "unsolicited",
            "bulk mail",
        ],
    ),
    rule(
        "text.policyviolation.policy",
        Reason::Policyviolation,
        &[
            "policy reasons",
            "by policy",
            "local policy",
            "security polic",
            "policy violation",
            "violation of ... policy",
            "policy that prohibit",
            "content policy",
            "illegal attachment",
            "header error",
            "content presents a potential",
            "organizational settings",
            "organization policy",
            "mass mailer",
            "prohibited attachment",
            "security issue",
        ],
    ),
    rule(
        "text.notcompliantrfc.format",
        Reason::Notcompliantrfc,
        &[
            "rfc 5322",
            "rfc5322",
            "rfc 2822",
            "rfc2822",
            "rfc 822",
            "missing ... header",
            "multiple ... header",
            "disallowed header",
            "message is malformed",
            "malformed message",
            "malformed header",
        ],
    ),
    rule(
        "text.expired.gave-up",
        Reason::Expired,
        &[
            "expired",
            "has been delayed",
            "will be retried",
            "retry time",
            "queue too long",
            "too long in queue",
            "giving up",
            "cannot send message for",
            "timed out",
            "timeout",
            // Gmail's words when it gave up connecting after days.
            "did not accept our requests to connect",
            "could not be delivered for more than",
            "delivery attempts will continue",
        ],
    ),
    rule(
        "text.networkerror.route",
        Reason::Networkerror,
        &[
            "no route to host",
            "hop count",
            "hops",
            "mail loop",
            "routing loop",
            "forwarding loop",
            "loop detected",
            "network is unreachable",
            "host is unreachable",
            "connection refused",
            "connection reset",
            "could not connect",
            "unable to connect",
            "lost connection",
            "network error",
        ],
    ),
    rule(
        "text.systemerror.server",
        Reason::Systemerror,
        &[
            "loops back to myself",
            "config error",
            "configuration error",
            "system error",
            "internal error",
            "server error",
            "local error",
            "system problem",
            "upstream error",
        ],
    ),
];

/// Step 4: vague words, used when no precise code decided. Spam and policy
/// words come before the recipient words: in "Recipient address rejected:
/// <why>" the why decides.
static WEAK_TEXT: &[TextRule] = &[
    // Whose disk? "452 4.4.5" / "4.3.1" say the server's, and a precise code
    // decides before this; bare, Sisimai reads it as the mailbox's.
    rule(
        "text.mailboxfull.disk-space",
        Reason::Mailboxfull,
        &["insufficient disk space", "not sufficient disk space"],
    ),
    // Postfix notes the SMTP command a refusal answered: a refusal of MAIL
    // FROM is about the sender.
    rule(
        "text.rejected.mail-from",
        Reason::Rejected,
        &["in reply to mail from"],
    ),
    rule(
        "text.spamdetected.maybe-spam",
        Reason::Spamdetected,
        &[
            "spam",
            "score",
            "suspicious",
            "junk",
            "content rejected",
            "content denied",
        ],
    ),
    rule(
        "text.policyviolation.maybe-policy",
        Reason::Policyviolation,
        &["policy", "prohibited", "not allowed"],
    ),
    // A recipient refusal whose real reason is not among the words above
    // ("Recipient address rejected: Access denied" is how Exchange Online
    // refuses an address it does not have).
    rule(
        "text.userunknown.rejected-recipient",
        Reason::Userunknown,
        &[
            "does not exist",
            "doesn't exist",
            "mailbox unavailable",
            "recipient address rejected",
            "recipient rejected",
            "address rejected",
        ],
    ),
    rule(
        "text.suspend.inactive",
        Reason::Suspend,
        &["inactive", "disabled", "suspended"],
    ),
    rule(
        "text.blocked.refused",
        Reason::Blocked,
        &[
            "blocked",
            "access denied",
            "client host rejected",
            "not accepting connections",
            "connections not accepted",
            "connections will not be accepted",
            "banned",
            "forbidden",
        ],
    ),
    rule(
        "text.rejected.from-domain",
        Reason::Rejected,
        &["from domain"],
    ),
    rule(
        "text.systemerror.unavailable",
        Reason::Systemerror,
        &[
            "service unavailable",
            "currently unavailable",
            "transaction failed",
        ],
    ),
];

/// Auto-replies, for text that came with no code at all.
static VACATION_TEXT: &[TextRule] = &[rule(
    "text.vacation.away",
    Reason::Vacation,
    &[
        "out of the office",
        "out of office",
        "on vacation",
        "on holiday",
        "i am away",
        "i'm away",
        "i will be away",
        "i am currently away",
        "i will be traveling",
        "i will be travelling",
        "i am traveling",
        "i am travelling",
        "auto-reply",
        "autoreply",
        "automatic reply",
    ],
)];

#[cfg(test)]
mod tests {
    use super::*;

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
    fn rule_ids_are_unique() {
        let all: Vec<&str> = STRONG_TEXT
            .iter()
            .chain(WEAK_TEXT)
            .chain(VACATION_TEXT)
            .map(|r| r.id)
            .collect();
        for (i, id) in all.iter().enumerate() {
            assert!(!all[..i].contains(id), "{id} used twice");
        }
    }
}
