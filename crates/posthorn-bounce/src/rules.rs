//! Reply classification rules as data: the language shared by the built-in
//! phrase rules (`rules/replies.txt`, compiled in) and an operator's rules
//! file (`[bounce] rules_file`), its parser and its matcher. The grammar is
//! written at the top of `rules/replies.txt`; `reply.rs` decides when which
//! rules are asked (the ladder of its module doc).
//!
//! Text in, rules out: nothing here reads a file. The server and the CLI
//! read the operator's file and hand its text to [`ReplyRules::parse`].

use crate::reply::{Reason, normalize};
use posthorn_core::EnhancedCode;
use posthorn_core::status::BounceType;
use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

/// The built-in rules, compiled in.
pub const BUILTIN_TEXT: &str = include_str!("../rules/replies.txt");

/// Whose rules a text holds: each refuses what belongs to the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `rules/replies.txt`: every rule sits in a step of the ladder
    /// (`[strong]`, `[weak]`, `[vacation]`), its verdict may follow from
    /// its reason.
    Builtin,
    /// An operator's file: no steps (all its rules are tried first), every
    /// rule says hard or soft, and ids stay out of the built-in namespaces.
    Operator,
}

/// Who decided a verdict: a built-in rule (phrase, code or structure) or
/// one of the operator's file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleSource {
    Builtin,
    Operator,
}

impl RuleSource {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleSource::Builtin => "builtin",
            RuleSource::Operator => "operator",
        }
    }
}

/// The step of the ladder (`reply.rs`) a rule is asked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Before every built-in step: an operator's rules.
    Operator,
    /// Phrases that name one condition (step 2).
    Strong,
    /// Vague words (step 4).
    Weak,
    /// Auto-replies, for text with no code (step 7).
    Vacation,
}

/// The first part of the ids the code gives its own verdicts (`code.552`,
/// `enhanced.5.1.1`, `dsn.status`, `context.filtered.after-data`, ...) and
/// of the built-in phrase rules (`text.`): an operator's id may not start
/// with one, so an id on an event says whose rule it was.
pub const RESERVED_NAMESPACES: &[&str] = &[
    "text",
    "enhanced",
    "code",
    "context",
    "dsn",
    "format",
    "arf",
    "autoreply",
    "rfc3834",
    "none",
];

/// One rule: when it applies and what it decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule<'a> {
    /// Unique among all rules, built-in and the operator's.
    pub id: &'a str,
    pub reason: Reason,
    /// Hard or soft as the file says; `None` (built-in rules only): as the
    /// reason implies (see `classify_reply`).
    pub verdict: Option<BounceType>,
    pub step: Step,
    /// The line of its `rule` statement.
    pub line: usize,
    /// Normalised like reply text (`normalize`); any one may match.
    pub phrases: Vec<String>,
    /// Conditions: each non-empty list must have a member that holds.
    pub codes: Vec<CodePattern>,
    pub statuses: Vec<StatusPattern>,
    pub domains: Vec<DomainPattern>,
}

/// A problem in a rules text, with the line it is on (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct RuleError {
    pub line: usize,
    pub message: String,
}

/// A basic reply code condition: `550`, `55x`, `5xx` (`x`: any digit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodePattern([Option<u8>; 3]);

impl CodePattern {
    fn parse(word: &str) -> Result<Self, String> {
        let bytes = word.as_bytes();
        let shape_ok = bytes.len() == 3
            && bytes[0].is_ascii_digit()
            && bytes[1..].iter().all(|b| b.is_ascii_digit() || *b == b'x');
        if !shape_ok {
            return Err(format!(
                "`{word}` is not a reply code: expected three digits, `x` for any digit after the first (550, 55x, 5xx)"
            ));
        }
        check_failure_class(bytes[0], word)?;
        let digit = |b: u8| (b != b'x').then(|| b - b'0');
        Ok(Self([digit(bytes[0]), digit(bytes[1]), digit(bytes[2])]))
    }

    fn matches(self, code: u16) -> bool {
        let digits = [code / 100, code / 10 % 10, code % 10];
        self.0
            .iter()
            .zip(digits)
            .all(|(want, got)| want.is_none_or(|w| u16::from(w) == got))
    }
}

/// An enhanced status code condition: `5.7.1`, `5.7.*`, `5.*.*`, `*.1.1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusPattern {
    class: Option<u8>,
    subject: Option<u16>,
    detail: Option<u16>,
}

impl StatusPattern {
    fn parse(word: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "`{word}` is not an enhanced status code: expected class.subject.detail, `*` for any part (5.7.1, 5.7.*, 5.*.*)"
            )
        };
        let parts: Vec<&str> = word.split('.').collect();
        let [class, subject, detail] = parts[..] else {
            return Err(bad());
        };
        let number = |part: &str| -> Result<Option<u16>, String> {
            if part == "*" {
                return Ok(None);
            }
            let ok = (1..=3).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit());
            ok.then(|| part.parse().ok())
                .flatten()
                .map(Some)
                .ok_or_else(bad)
        };
        let class = match class {
            "*" => None,
            c if c.len() == 1 && c.as_bytes()[0].is_ascii_digit() => {
                check_failure_class(c.as_bytes()[0], word)?;
                Some(c.as_bytes()[0] - b'0')
            }
            _ => return Err(bad()),
        };
        Ok(Self {
            class,
            subject: number(subject)?,
            detail: number(detail)?,
        })
    }

    fn matches(self, status: EnhancedCode) -> bool {
        self.class.is_none_or(|c| c == status.class())
            && self.subject.is_none_or(|s| s == status.subject())
            && self.detail.is_none_or(|d| d == status.detail())
    }
}

/// A success (2) is decided before any rule is asked, and no other class
/// exists: a rule for either could never apply, so it is an error.
fn check_failure_class(class: u8, word: &str) -> Result<(), String> {
    match class {
        b'4' | b'5' => Ok(()),
        b'2' => Err(format!(
            "`{word}` is a success code: a success is delivered before any rule is tried"
        )),
        _ => Err(format!(
            "`{word}`: a failure code starts with 4 (temporary) or 5 (permanent)"
        )),
    }
}

/// A recipient domain condition: `example.com` (that domain only) or
/// `*.example.com` (its subdomains, not itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainPattern {
    /// Lower-case, without a trailing dot.
    domain: String,
    subdomains: bool,
}

impl DomainPattern {
    fn parse(word: &str) -> Result<Self, String> {
        let lower = word.to_lowercase();
        let (subdomains, domain) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        let ok = !domain.is_empty()
            && domain
                .split('.')
                .all(|label| !label.is_empty() && !label.contains(['@', '*', '/', ':']));
        if !ok {
            return Err(format!(
                "`{word}` is not a domain: expected example.com, or *.example.com for its subdomains"
            ));
        }
        Ok(Self {
            domain: domain.to_owned(),
            subdomains,
        })
    }

    /// `domain`: lower-case, without a trailing dot.
    fn matches(&self, domain: &str) -> bool {
        if self.subdomains {
            domain
                .strip_suffix(self.domain.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
        } else {
            domain == self.domain
        }
    }
}

/// What a rule is matched against: one reply, already normalised.
pub(crate) struct Subject<'t> {
    pub code: Option<u16>,
    pub status: Option<EnhancedCode>,
    /// The recipient's domain, lower-case, no trailing dot; `None` when
    /// the caller does not know it (then no rule with a domain applies).
    pub domain: Option<&'t str>,
    /// `normalize`d reply text.
    pub text: &'t str,
    pub bigrams: &'t Bigrams,
}

impl Rule<'_> {
    /// Whether every condition holds and a phrase occurs. The conditions
    /// first: they cost a comparison, a phrase a search.
    pub(crate) fn matches(&self, s: &Subject<'_>) -> bool {
        let code_ok = self.codes.is_empty()
            || s.code
                .is_some_and(|c| self.codes.iter().any(|p| p.matches(c)));
        let status_ok = self.statuses.is_empty()
            || s.status
                .is_some_and(|st| self.statuses.iter().any(|p| p.matches(st)));
        let domain_ok = self.domains.is_empty()
            || s.domain
                .is_some_and(|d| self.domains.iter().any(|p| p.matches(d)));
        code_ok
            && status_ok
            && domain_ok
            && self
                .phrases
                .iter()
                .any(|phrase| s.bigrams.may_contain(phrase) && contains_phrase(s.text, phrase))
    }
}

/// The first rule of `rules` that matches.
pub(crate) fn first_match<'r>(
    rules: &'r [Rule<'static>],
    s: &Subject<'_>,
) -> Option<&'r Rule<'static>> {
    rules.iter().find(|rule| rule.matches(s))
}

/// A rule being read: its statement was valid, its body is being read.
struct Open<'a> {
    rule: Rule<'a>,
    /// It has a `match` line, valid or not: a refused phrase is reported
    /// once, not again as a rule without phrases.
    has_match: bool,
}

/// Parses a rules text. Every problem is reported, each with its line, so
/// a file is fixed in one go; a rule whose `rule` line is wrong is skipped
/// whole (its body would only repeat the error).
pub fn parse_rules(text: &str, origin: Origin) -> Result<Vec<Rule<'_>>, Vec<RuleError>> {
    let mut rules: Vec<Rule<'_>> = Vec::new();
    let mut errors = Vec::new();
    let mut step = match origin {
        Origin::Builtin => None,
        Origin::Operator => Some(Step::Operator),
    };
    let mut open: Option<Open<'_>> = None;
    // Inside a rule whose `rule` line was refused: its body is skipped.
    let mut skipping = false;
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let at_line = |message: String| RuleError { line, message };
        let statement = raw.trim();
        if statement.is_empty() || statement.starts_with('#') {
            continue;
        }
        if statement.starts_with('[') {
            close(&mut open, &mut rules, &mut errors);
            skipping = false;
            match (origin, statement) {
                (Origin::Operator, _) => errors.push(at_line(format!(
                    "`{statement}`: steps belong to the built-in rules; an operator's rules are all tried before them"
                ))),
                (Origin::Builtin, "[strong]") => step = Some(Step::Strong),
                (Origin::Builtin, "[weak]") => step = Some(Step::Weak),
                (Origin::Builtin, "[vacation]") => step = Some(Step::Vacation),
                (Origin::Builtin, _) => errors.push(at_line(format!(
                    "unknown step `{statement}`: expected [strong], [weak] or [vacation]"
                ))),
            }
            continue;
        }
        let (keyword, rest) = statement
            .split_once(char::is_whitespace)
            .map_or((statement, ""), |(k, r)| (k, r.trim()));
        match keyword {
            "rule" => {
                close(&mut open, &mut rules, &mut errors);
                let Some(step) = step else {
                    errors.push(at_line("a rule before the first step ([strong], [weak] or [vacation])".into()));
                    skipping = true;
                    continue;
                };
                match rule_statement(rest, origin, step, line, &seen) {
                    Ok(rule) => {
                        seen.insert(rule.id, line);
                        open = Some(Open {
                            rule,
                            has_match: false,
                        });
                        skipping = false;
                    }
                    Err(message) => {
                        errors.push(at_line(message));
                        skipping = true;
                    }
                }
            }
            "match" | "code" | "status" | "domain" => {
                if skipping {
                    continue;
                }
                let Some(Open { rule, has_match }) = open.as_mut() else {
                    errors.push(at_line(format!(
                        "`{keyword}` outside a rule: a rule starts with `rule ID REASON hard|soft`"
                    )));
                    continue;
                };
                *has_match |= keyword == "match";
                if let Err(message) = body_statement(rule, keyword, rest) {
                    errors.push(at_line(message));
                }
            }
            _ => errors.push(at_line(format!(
                "unknown statement `{keyword}`: expected rule, match, code, status, domain or a # comment"
            ))),
        }
    }
    close(&mut open, &mut rules, &mut errors);
    // A rule's missing phrase is found at its end, after its body's errors.
    errors.sort_by_key(|e| e.line);
    if errors.is_empty() {
        Ok(rules)
    } else {
        Err(errors)
    }
}

/// Ends the rule being read: it needs a phrase to apply at all.
fn close<'a>(open: &mut Option<Open<'a>>, rules: &mut Vec<Rule<'a>>, errors: &mut Vec<RuleError>) {
    let Some(Open { rule, has_match }) = open.take() else {
        return;
    };
    if !has_match {
        errors.push(RuleError {
            line: rule.line,
            message: format!("rule `{}` has no `match` line", rule.id),
        });
    } else {
        rules.push(rule);
    }
}

/// `rule ID REASON [hard|soft]`.
fn rule_statement<'a>(
    rest: &'a str,
    origin: Origin,
    step: Step,
    line: usize,
    seen: &HashMap<&str, usize>,
) -> Result<Rule<'a>, String> {
    let words: Vec<&str> = rest.split_whitespace().collect();
    let (id, reason, verdict) = match words[..] {
        [id, reason] => (id, reason, None),
        [id, reason, verdict] => (id, reason, Some(verdict)),
        _ => return Err("expected `rule ID REASON hard|soft`".into()),
    };
    let id_ok = id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        && id.starts_with(|c: char| c.is_ascii_alphanumeric());
    if !id_ok {
        return Err(format!(
            "rule id `{id}`: use letters, digits, `.`, `-` and `_`, starting with a letter or digit"
        ));
    }
    if let Some(first) = seen.get(id) {
        return Err(format!("rule id `{id}` is already used on line {first}"));
    }
    if origin == Origin::Operator {
        let namespace = id.split('.').next().unwrap_or(id);
        if RESERVED_NAMESPACES.contains(&namespace) {
            return Err(format!(
                "rule id `{id}`: `{namespace}.` is the namespace of built-in rules; choose another first part (e.g. `local.{}`)",
                id.split_once('.').map_or(id, |(_, rest)| rest)
            ));
        }
        if builtin_ids().contains_key(id) {
            return Err(format!("rule id `{id}` is the id of a built-in rule"));
        }
    }
    let reason: Reason = reason.parse().map_err(|_| {
        let known: Vec<&str> = Reason::ALL
            .into_iter()
            .filter(|r| origin == Origin::Builtin || r.is_failure())
            .map(Reason::as_str)
            .collect();
        format!(
            "unknown reason `{reason}`: expected one of {}",
            known.join(", ")
        )
    })?;
    if origin == Origin::Operator && !reason.is_failure() {
        return Err(format!(
            "reason `{reason}` is not a failure: a rule classifies failures"
        ));
    }
    let verdict = match verdict {
        None if origin == Origin::Operator => {
            return Err(format!(
                "rule `{id}` says no verdict: add hard or soft after the reason"
            ));
        }
        None => None,
        Some("hard") => Some(BounceType::Hard),
        Some("soft") => Some(BounceType::Soft),
        Some(other) => return Err(format!("verdict `{other}`: expected hard or soft")),
    };
    Ok(Rule {
        id,
        reason,
        verdict,
        step,
        line,
        phrases: Vec::new(),
        codes: Vec::new(),
        statuses: Vec::new(),
        domains: Vec::new(),
    })
}

/// `match PHRASE`, `code ...`, `status ...`, `domain ...`.
fn body_statement(rule: &mut Rule<'_>, keyword: &str, rest: &str) -> Result<(), String> {
    if keyword == "match" {
        rule.phrases.push(phrase(rest)?);
        return Ok(());
    }
    let words: Vec<&str> = rest.split_whitespace().collect();
    if words.is_empty() {
        return Err(format!("`{keyword}` needs at least one value"));
    }
    for word in words {
        match keyword {
            "code" => rule.codes.push(CodePattern::parse(word)?),
            "status" => rule.statuses.push(StatusPattern::parse(word)?),
            _ => rule.domains.push(DomainPattern::parse(word)?),
        }
    }
    Ok(())
}

/// A phrase, normalised like the text it is matched against.
fn phrase(text: &str) -> Result<String, String> {
    let phrase = normalize(text);
    if phrase.is_empty() {
        return Err("`match` needs a phrase".into());
    }
    // `...` as a word of its own is the gap: it needs words on both sides.
    let words: Vec<&str> = phrase.split(' ').collect();
    let gap_misplaced = words.first() == Some(&"...")
        || words.last() == Some(&"...")
        || words.windows(2).any(|pair| pair == ["...", "..."]);
    if gap_misplaced {
        return Err(format!(
            "phrase `{phrase}`: `...` stands between two parts, not at an end or twice in a row"
        ));
    }
    Ok(phrase)
}

/// The built-in rules, parsed once.
pub(crate) struct Builtin {
    pub strong: Vec<Rule<'static>>,
    pub weak: Vec<Rule<'static>>,
    pub vacation: Vec<Rule<'static>>,
}

/// A broken `rules/replies.txt` is a bug of this crate, not bad input: the
/// unit test `builtin_rules_parse` fails on it before any release, so the
/// panic cannot be reached by anything a peer sends.
pub(crate) static BUILTIN: LazyLock<Builtin> = LazyLock::new(|| {
    let rules = parse_rules(BUILTIN_TEXT, Origin::Builtin)
        .unwrap_or_else(|errors| panic!("rules/replies.txt: {errors:?}"));
    let of = |step| rules.iter().filter(|r| r.step == step).cloned().collect();
    Builtin {
        strong: of(Step::Strong),
        weak: of(Step::Weak),
        vacation: of(Step::Vacation),
    }
});

/// The ids of the built-in phrase rules.
fn builtin_ids() -> HashMap<&'static str, usize> {
    let b = &*BUILTIN;
    b.strong
        .iter()
        .chain(&b.weak)
        .chain(&b.vacation)
        .map(|r| (r.id, r.line))
        .collect()
}

/// The rules a reply is classified by: an operator's, tried first, then
/// the built-in ones. `ReplyRules::default()` has no operator rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplyRules {
    operator: Vec<Rule<'static>>,
}

impl ReplyRules {
    /// Parses an operator's rules file (see the grammar in
    /// `rules/replies.txt`); errors name their lines.
    ///
    /// The ids of the rules are kept for the life of the process (leaked):
    /// a verdict names its rule as `&'static str` like the built-in ones,
    /// and a rules file is read once, at start-up. Nothing is kept of a
    /// text that is refused.
    pub fn parse(text: &str) -> Result<Self, Vec<RuleError>> {
        let rules = parse_rules(text, Origin::Operator)?;
        let operator = rules
            .into_iter()
            .map(|rule| Rule {
                id: Box::leak(rule.id.to_owned().into_boxed_str()),
                ..rule
            })
            .collect();
        Ok(Self { operator })
    }

    /// The operator's rules, in the order they are tried.
    pub fn operator_rules(&self) -> &[Rule<'static>] {
        &self.operator
    }

    /// Who a rule id belongs to. Ids are unique and an operator's stay out
    /// of the built-in namespaces, so the id alone says it.
    pub fn source_of(&self, rule_id: &str) -> RuleSource {
        if self.operator_rule(rule_id).is_some() {
            RuleSource::Operator
        } else {
            RuleSource::Builtin
        }
    }

    /// The operator's rule with this id.
    pub fn operator_rule(&self, rule_id: &str) -> Option<&Rule<'static>> {
        self.operator.iter().find(|r| r.id == rule_id)
    }
}

impl fmt::Display for RuleSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which byte pairs occur in a text: a phrase none of whose parts' first
/// two bytes occur cannot match, and most phrases of the tables are ruled
/// out this way in constant time instead of a substring search each.
pub(crate) struct Bigrams(Box<[u64; 1024]>);

impl Bigrams {
    pub fn of(text: &str) -> Self {
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

pub(crate) fn contains_phrase(text: &str, phrase: &str) -> bool {
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
