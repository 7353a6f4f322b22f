//! Reading a returned message: a bounce or delay report (RFC 3464 and the
//! home-made formats of real MTAs), a spam complaint (ARF, RFC 5965) or an
//! auto-reply (RFC 3834 and common vacation formats), as records.
//!
//! Bytes in, records out; never panics, whatever the bytes.

use crate::enhanced;
use crate::formats::{self, Finding};
use crate::reply::Reason;
use crate::report::Report;
use crate::rules::{ReplyRules, RuleSource};
use crate::{arf, autoreply, dsn, mime};
use posthorn_core::EnhancedCode;
use posthorn_core::status::BounceType;
use serde::Serialize;

pub use posthorn_core::inbound::RecordKind;

/// One recipient's fate as a returned message tells it. Fields a kind does
/// not have are `None` (a complaint has no status, a bounce no feedback
/// type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    pub kind: RecordKind,
    /// The original recipient, lower-cased domain, without angle brackets.
    pub recipient: Option<String>,
    /// Enhanced status code (`5.1.1`), as found in the report or implied by
    /// the reply code and the reason.
    pub status: Option<EnhancedCode>,
    /// The remote server's basic reply code (`550`), when the report has one.
    pub reply_code: Option<u16>,
    /// The remote server's words (Diagnostic-Code or the MTA's text), with
    /// whitespace runs collapsed.
    pub diagnostic: Option<String>,
    /// The server that gave the answer (Remote-MTA or the host named in the
    /// text).
    pub remote_mta: Option<String>,
    /// Why; `Feedback` for complaints, `Vacation` for auto-replies,
    /// `Delivered` for successes.
    pub reason: Reason,
    /// Hard or soft for failures, undetermined otherwise.
    pub bounce_type: BounceType,
    /// The id of the rule that decided the reason, e.g. `dsn.status`,
    /// `text.userunknown.no-such-user`, `arf`, `rfc3834.auto-submitted`.
    pub rule: &'static str,
    /// The Message-ID of the message that was returned, without brackets.
    pub original_message_id: Option<String>,
    /// RFC 3461 `Original-Envelope-Id`.
    pub envelope_id: Option<String>,
    /// The token of a Posthorn VERP address (`bounces+TOKEN@domain`) found in
    /// the report (its recipient headers or the returned message's
    /// Return-Path). Not verified here: the caller checks the signature.
    pub delivery_token: Option<String>,
    /// ARF `Feedback-Type` (`abuse`, `fraud`, `opt-out`, ...).
    pub feedback_type: Option<String>,
    /// ARF `Source-IP`.
    pub source_ip: Option<String>,
    /// ARF `User-Agent` of the reporting system.
    pub user_agent: Option<String>,
}

impl Record {
    /// Hard bounce: a failure that condemns the address.
    pub fn hard_bounce(&self) -> Option<bool> {
        match self.bounce_type {
            BounceType::Hard => Some(true),
            BounceType::Soft => Some(false),
            BounceType::Undetermined => None,
        }
    }
}

/// The records of one returned message; empty for a message that is neither
/// a bounce, a delay or delivery report, a complaint nor an auto-reply.
///
/// The readers are asked in order, the most explicit first: a feedback
/// report (ARF), delivery-status fields (RFC 3464, completed from the text
/// when they leave the reason out), the text formats of the MTAs (only for
/// a message that reads like a failure notice), and last the auto-reply
/// marks (bounces carry `Auto-Submitted` too).
pub fn parse(raw: &[u8]) -> Vec<Record> {
    parse_with(raw, &ReplyRules::default())
}

/// [`parse`], with an operator's reply rules tried before the built-in
/// ones on each failure's diagnostic (see [`finish`]).
pub fn parse_with(raw: &[u8], rules: &ReplyRules) -> Vec<Record> {
    let message = mime::parse_message(raw);
    let report = Report::new(&message);
    let mut common = Common::of(&report);

    if let Some(feedback) = arf::parse(&message) {
        return complaints(feedback, &report, &common);
    }
    let ses = formats::amazonses::read(&report.text);
    if !ses.is_empty() {
        return ses
            .into_iter()
            .map(|event| match event {
                formats::amazonses::Event::Finding(f) => finish(f, &common, rules),
                formats::amazonses::Event::Complaint {
                    recipient,
                    feedback_type,
                    user_agent,
                } => {
                    let feedback = arf::Feedback {
                        feedback_type,
                        recipients: recipient.into_iter().collect(),
                        source_ip: None,
                        user_agent,
                        rule: "format.amazonses.complaint",
                    };
                    complaints(feedback, &report, &common).remove(0)
                }
            })
            .collect();
    }

    if crate::challenge::is_notice(&report) {
        return Vec::new();
    }
    let mut findings = Vec::new();
    if let Some(dsn_text) = &report.dsn_text {
        let dsn = dsn::parse(dsn_text);
        common.envelope_id = dsn.envelope_id.clone();
        findings = dsn_findings(&dsn, &report);
    }
    if findings.is_empty() && formats::looks_like_bounce(&report) {
        findings = formats::read(&report);
        if formats::says_delayed(&report) {
            for f in &mut findings {
                f.kind = RecordKind::Delay;
            }
        }
    }
    if !findings.is_empty() {
        let rcpt_lines = transcript_rcpt_lines(&report.text);
        for f in &mut findings {
            if f.command.is_none()
                && let Some(recipient) = f.recipient.as_deref()
            {
                f.command = transcript_command(&rcpt_lines, recipient);
            }
        }
        formats::lhost::apply(&report, &mut findings);
        formats::rhost::apply(&mut findings);
        return findings
            .into_iter()
            .map(|f| finish(f, &common, rules))
            .collect();
    }

    if let Some(rule) = autoreply::detect(&message.headers, &report.text) {
        return vec![vacation(rule, &report, &common)];
    }
    Vec::new()
}

/// What every record of one message shares.
struct Common {
    original_message_id: Option<String>,
    envelope_id: Option<String>,
    delivery_token: Option<String>,
}

impl Common {
    fn of(report: &Report) -> Self {
        let original_message_id = report
            .original
            .as_ref()
            .and_then(|h| h.get("Message-ID"))
            .and_then(message_id);
        let mut delivery_token = ["To", "Delivered-To", "X-Original-To", "Envelope-To"]
            .iter()
            .flat_map(|name| report.message.headers.get_all(name))
            .find_map(crate::address::verp_token);
        if delivery_token.is_none()
            && let Some(original) = &report.original
        {
            let return_path = original
                .get("Return-Path")
                .and_then(crate::address::verp_token);
            delivery_token = return_path.or_else(|| {
                original
                    .0
                    .iter()
                    .find_map(|(_, v)| crate::address::verp_token(v))
            });
        }
        Common {
            original_message_id,
            envelope_id: None,
            delivery_token,
        }
    }
}

/// `<id@host>` -> `id@host`.
fn message_id(value: &str) -> Option<String> {
    let value = value.trim();
    let inner = match (value.find('<'), value.find('>')) {
        (Some(open), Some(close)) if open < close => &value[open + 1..close],
        _ => value.split_whitespace().next().unwrap_or(""),
    };
    let inner = inner.trim();
    (!inner.is_empty()).then(|| inner.to_string())
}

/// The per-recipient fields as findings. A recipient whose fields give no
/// reason (no Diagnostic-Code, or one that only repeats the code) takes
/// the words the MTA wrote about that address in its text.
fn dsn_findings(dsn: &dsn::Dsn, report: &Report) -> Vec<Finding> {
    let mut text_findings: Option<Vec<Finding>> = None;
    let mut out = Vec::new();
    for r in &dsn.recipients {
        let kind = match r
            .action
            .as_deref()
            .map(|a| a.split_whitespace().next().unwrap_or(""))
        {
            Some("delayed") => RecordKind::Delay,
            Some("delivered" | "relayed" | "expanded") => RecordKind::Delivered,
            _ => RecordKind::Bounce,
        };
        let mut diagnostic = r.diagnostic.clone().unwrap_or_default();
        if diagnostic_is_vague(&diagnostic) {
            let text = text_findings.get_or_insert_with(|| formats::read(report));
            let same = text
                .iter()
                .find(|f| f.recipient.is_some() && f.recipient.as_deref() == r.address());
            let only = (text.len() == 1 && dsn.recipients.len() == 1).then(|| &text[0]);
            if let Some(found) = same.or(only) {
                if !diagnostic.is_empty() {
                    diagnostic.push('\n');
                }
                diagnostic.push_str(&found.diagnostic);
            }
        }
        // A Final-Recipient that is no address (Exim's "/path/to/mbox",
        // Sendmail's "@host") leaves the recipient to the text, when the
        // text names exactly one for the report's one recipient.
        let mut recipient = r.address().map(str::to_string);
        if recipient
            .as_deref()
            .is_none_or(|a| crate::address::clean(a).as_deref() != Some(a))
            && dsn.recipients.len() == 1
        {
            let text = text_findings.get_or_insert_with(|| formats::read(report));
            if let [only] = text.as_slice()
                && only.recipient.is_some()
            {
                recipient = only.recipient.clone();
            }
        }
        let mut finding = Finding::new("dsn", recipient, diagnostic);
        finding.command = r.diagnostic.as_deref().and_then(smtp_command).or_else(|| {
            let text = text_findings.get_or_insert_with(|| formats::read(report));
            text.iter()
                .find(|f| f.recipient.is_some() && f.recipient.as_deref() == r.address())
                .and_then(|f| smtp_command(&f.diagnostic))
        });
        finding.kind = kind;
        finding.status = r
            .status
            .as_deref()
            .and_then(|s| EnhancedCode::parse(s.trim()));
        finding.remote_mta = r.remote_mta.clone();
        if r.diagnostic_type.as_deref() == Some("x-unix") {
            finding.hint = Some((Reason::Mailererror, "dsn.x-unix"));
        }
        if let Some(hint) = r.bounce_category.as_deref().and_then(powermta_category) {
            finding.hint = Some(hint);
            finding.force = true;
        }
        out.push(finding);
    }
    out
}

/// PowerMTA classifies every failure it reports (`X-PowerMTA-BounceCategory`)
/// from the whole dialogue, which its DSN text does not always show (a
/// "550 5.2.1 User Unknown" it saw at RCPT is `bad-mailbox`). Only the
/// categories with one meaning are used; `other`, `routing-errors`,
/// `bad-connection` and the like leave the decision to the words.
fn powermta_category(category: &str) -> Option<(Reason, &'static str)> {
    Some(match category {
        "bad-mailbox" => (Reason::Userunknown, "dsn.powermta.bad-mailbox"),
        "bad-domain" => (Reason::Hostunknown, "dsn.powermta.bad-domain"),
        "inactive-mailbox" => (Reason::Suspend, "dsn.powermta.inactive-mailbox"),
        "quota-issues" => (Reason::Mailboxfull, "dsn.powermta.quota-issues"),
        "spam-related" => (Reason::Spamdetected, "dsn.powermta.spam-related"),
        "virus-related" => (Reason::Virusdetected, "dsn.powermta.virus-related"),
        "message-expired" => (Reason::Expired, "dsn.powermta.message-expired"),
        "relaying-issues" => (Reason::Norelaying, "dsn.powermta.relaying-issues"),
        "invalid-sender" => (Reason::Rejected, "dsn.powermta.invalid-sender"),
        _ => return None,
    })
}

/// A diagnostic that says nothing beyond a code.
fn diagnostic_is_vague(diagnostic: &str) -> bool {
    let (_, _, text) = crate::reply::parse_reply_line(diagnostic);
    text.chars().filter(|c| c.is_alphabetic()).count() < 8
}

/// Classifies a finding and makes it a record.
///
/// An operator's rule, when one applies, has the last word: the format's
/// hint, the SMTP stage and the other corrections below are the built-in
/// rules' second thoughts, and the operator's rules come before those.
fn finish(f: Finding, common: &Common, rules: &ReplyRules) -> Record {
    let diagnostic = mime::collapse_whitespace(&f.diagnostic);
    // The words without the codes of continuation lines ("552-5.7.0 ...
    // potential\n552-5.7.0 security issue" reads "potential security issue").
    let (_, _, words) = crate::reply::parse_reply_line(&split_continuations(&f.diagnostic));
    let words = remote_reply(&words);
    let reply_code = f.reply_code.or_else(|| reply_code_in(&f.diagnostic));
    let diag_status = enhanced::find_in(&diagnostic).map(|(s, _)| s);
    let given = f.status;
    // The server's own reply is the finer statement: a report's Status is
    // often the generic X.0.0, or the MTA's own verdict (4.4.7, "gave up")
    // over a server's 4.7.1. Its code wins when it is of the same class.
    let status_code = match (given, diag_status) {
        (Some(g), Some(d)) if d.class() == g.class() => Some(d),
        (Some(g), _) => Some(g),
        (None, d) => d,
    };
    let domain = f
        .recipient
        .as_deref()
        .and_then(|r| r.rsplit_once('@'))
        .map(|(_, domain)| domain);
    let mut class = rules.classify(reply_code, status_code, words, domain);
    let by_operator = class.source == RuleSource::Operator;
    // Postfix writes every RCPT restriction as "Recipient address
    // rejected: <why>". When only those words spoke, a specific status
    // code says the why better than "the recipient was refused".
    if class.rule == "text.userunknown.rejected-recipient"
        && let Some(code) = status_code.filter(|s| !matches!(s.subject(), 0 | 1 | 4))
    {
        let by_code = rules.classify(reply_code, status_code, "", domain);
        if by_code.reason != Reason::Undefined {
            class = by_code;
        }
        let _ = code;
    }
    let status = status_code.or(class.status);
    // A format's or a report field's own statement (an X-Unix diagnostic is
    // a local program's failure) says more than a code that only names a
    // class of trouble ("4.3.0 other mail system problem").
    let only_a_vague_code =
        class.rule.starts_with("enhanced.") && status_code.is_some_and(|s| s.detail() == 0);
    let (mut reason, mut rule) = match f.hint {
        Some(hint)
            if !by_operator
                && (f.force || class.reason == Reason::Undefined || only_a_vague_code) =>
        {
            hint
        }
        _ => {
            // Nothing in the words decided: the format that found the
            // failure is the only explanation there is.
            let rule = if class.rule == "none" {
                f.format
            } else {
                class.rule
            };
            (class.reason, rule)
        }
    };
    if f.kind == RecordKind::Bounce && !f.force && !by_operator {
        let command = f.command.or_else(|| smtp_command(&diagnostic));
        if let Some((r, id)) = context_reason(reason, rule, status_code, command) {
            (reason, rule) = (r, id);
        }
    }
    // X.4.7 is the MTA's own verdict "delivery time expired": the trouble
    // its attempts met (refused or failed connections) is why they failed,
    // the failure reported is that it gave up.
    let gave_up = status_code.is_some_and(|s| s.subject() == 4 && s.detail() == 7);
    if gave_up && reason == Reason::Networkerror && rule.starts_with("text.") {
        (reason, rule) = (Reason::Expired, "context.expired.gave-up");
    }
    // A delay report says "still trying": a generic code (X.y.0) or a
    // gave-up code says nothing more than that.
    let generic_code =
        rule.starts_with("enhanced.") && status_code.is_some_and(|s| s.detail() == 0);
    let (reason, bounce_type, rule) = match f.kind {
        RecordKind::Delivered => (
            Reason::Delivered,
            BounceType::Undetermined,
            "dsn.action.delivered",
        ),
        RecordKind::Delay
            if reason == Reason::Undefined
                || reason == Reason::Expired
                || !reason.is_failure()
                || gave_up
                || generic_code =>
        {
            (Reason::Expired, BounceType::Soft, "dsn.action.delayed")
        }
        _ => {
            let temporary = status.is_some_and(EnhancedCode::is_transient);
            let bounce_type = match reason {
                // An operator's rule states its verdict.
                _ if by_operator => class.bounce_type,
                Reason::Userunknown | Reason::Hostunknown | Reason::Hasmoved => BounceType::Hard,
                Reason::Notaccept if !temporary => BounceType::Hard,
                _ => BounceType::Soft,
            };
            (reason, bounce_type, rule)
        }
    };
    Record {
        kind: f.kind,
        recipient: f.recipient,
        status,
        reply_code,
        diagnostic: Some(diagnostic).filter(|d| !d.is_empty()),
        remote_mta: f.remote_mta,
        reason,
        bounce_type,
        rule,
        original_message_id: common.original_message_id.clone(),
        envelope_id: common.envelope_id.clone(),
        delivery_token: common.delivery_token.clone(),
        feedback_type: None,
        source_ip: None,
        user_agent: None,
    }
}

/// The remote server's own reply when the MTA quotes it after a sentence
/// of its own that would otherwise be read too ("Google tried to deliver
/// your message, but it was rejected by the recipient domain. ... The error
/// that the other server returned was: 500 Remote server does not support
/// TLS"): the MTA's sentence is the same for every failure.
fn remote_reply(words: &str) -> &str {
    const MARKERS: &[&str] = &["the error that the other server returned was:"];
    let lower = words.to_ascii_lowercase();
    MARKERS
        .iter()
        .find_map(|marker| {
            let at = lower.find(marker)? + marker.len();
            words
                .get(at..)
                .map(str::trim)
                .filter(|rest| !rest.is_empty())
        })
        .unwrap_or(words)
}

/// Puts the continuation lines of a multi-line reply that an MTA wrote on
/// one line ("552-5.7.0 blocked because ... potential 552-5.7.0 security
/// issue") back on lines of their own, so their codes can be taken off.
fn split_continuations(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for (i, word) in text.split(' ').enumerate() {
        let b = word.as_bytes();
        let continuation = b.len() >= 4
            && matches!(b[0], b'2' | b'4' | b'5')
            && b[1..3].iter().all(u8::is_ascii_digit)
            && b[3] == b'-';
        if i > 0 {
            out.push(if continuation { '\n' } else { ' ' });
        }
        out.push_str(word);
    }
    out
}

/// The SMTP command a failure answered, as the text names it last
/// ("after end of data", "in reply to RCPT TO command", ">>> DATA").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpCommand {
    Connect,
    Mail,
    Rcpt,
    Data,
}

pub fn smtp_command(text: &str) -> Option<SmtpCommand> {
    const PHRASES: &[(&str, SmtpCommand)] = &[
        ("initial connection", SmtpCommand::Connect),
        ("after connect", SmtpCommand::Connect),
        ("in reply to helo", SmtpCommand::Connect),
        // qmail: "Connected to ... but my name was rejected" (HELO).
        ("my name was rejected", SmtpCommand::Connect),
        ("in reply to ehlo", SmtpCommand::Connect),
        ("after helo", SmtpCommand::Connect),
        ("after ehlo", SmtpCommand::Connect),
        ("smtp greeting", SmtpCommand::Connect),
        ("mail from:", SmtpCommand::Mail),
        ("mail from command", SmtpCommand::Mail),
        ("in reply to mail", SmtpCommand::Mail),
        ("rcpt to:", SmtpCommand::Rcpt),
        ("rcpt to command", SmtpCommand::Rcpt),
        ("rcpt command", SmtpCommand::Rcpt),
        // qmail: "most progress was RCPT TO response", "does not like
        // recipient"; Yahoo "[RCPT_TO]"; "SMTP:RCPT host ..." transcripts.
        ("rcpt to response", SmtpCommand::Rcpt),
        ("does not like recipient", SmtpCommand::Rcpt),
        ("rcpt_to", SmtpCommand::Rcpt),
        ("smtp:rcpt", SmtpCommand::Rcpt),
        ("end of data", SmtpCommand::Data),
        ("after data", SmtpCommand::Data),
        ("data command", SmtpCommand::Data),
        (">>> data", SmtpCommand::Data),
    ];
    // The first command named: transcripts begin at the command that
    // failed (Sendmail ">>> RCPT To:" then ">>> DATA" for the others),
    // Exim and Postfix name only one. Line breaks inside a phrase ("in
    // reply to RCPT\n    TO command") count as one space.
    let lower = mime::collapse_whitespace(text).to_ascii_lowercase();
    PHRASES
        .iter()
        .filter_map(|(phrase, command)| lower.find(phrase).map(|at| (at, *command)))
        .min_by_key(|(at, _)| *at)
        .map(|(_, command)| command)
}

/// The "RCPT TO:" lines of a session transcript (Sendmail's and
/// InterScan's ">>> RCPT To:<a@b>" / "Sent <<< RCPT TO:<a@b>"), lowercased,
/// each with whether the next line answers it with a 4xx or 5xx reply.
/// Read once per message: a report may name thousands of recipients.
fn transcript_rcpt_lines(text: &str) -> Vec<(String, bool)> {
    let lines: Vec<&str> = text
        .lines()
        .take(2000)
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.len() > 400 {
            continue;
        }
        let lower = line.to_ascii_lowercase();
        let Some(at) = lower.find("rcpt to:") else {
            continue;
        };
        let before = lower[..at].trim_end();
        if !(before.ends_with(">>>") || before.ends_with("<<<")) {
            continue;
        }
        let reply = lines.get(i + 1).copied().unwrap_or("");
        let refused = reply
            .find("<<<")
            .or_else(|| reply.find(">>>"))
            .is_some_and(|arrow| {
                let code = reply[arrow + 3..].trim_start().as_bytes();
                code.len() >= 3
                    && matches!(code[0], b'4' | b'5')
                    && code[1..3].iter().all(u8::is_ascii_digit)
            });
        found.push((lower[at..].to_owned(), refused));
    }
    found
}

/// The command a session transcript shows the recipient refused at: the
/// first "RCPT TO:" line naming it, when its reply refused it.
fn transcript_command(rcpt_lines: &[(String, bool)], recipient: &str) -> Option<SmtpCommand> {
    let recipient = recipient.to_ascii_lowercase();
    let (_, refused) = rcpt_lines
        .iter()
        .find(|(line, _)| line.contains(&recipient))?;
    refused.then_some(SmtpCommand::Rcpt)
}

/// What the stage of the SMTP dialogue says about a reason read from the
/// words: a refusal of the message's content after the recipient was
/// accepted is the recipient's filter, not an unknown mailbox; a refusal
/// of MAIL FROM is about the sender; one before any envelope, about the
/// sending host. Codes that state the recipient precisely (X.1.1) stand.
fn context_reason(
    reason: Reason,
    rule: &'static str,
    status: Option<EnhancedCode>,
    command: Option<SmtpCommand>,
) -> Option<(Reason, &'static str)> {
    if crate::reply::is_provider_rule(rule) {
        return None;
    }
    let from_words =
        rule.starts_with("text.") || rule.starts_with("code.") || rule.starts_with("format.");
    // X.1.1 says "bad destination mailbox" whatever the stage.
    let mailbox_code = status.is_some_and(|s| s.subject() == 1 && s.detail() == 1);
    // Sisimai's reading of a "user unknown" that neither an address code
    // (X.1.y) nor the RCPT stage backs: words alone make an unknown user
    // only when the status names the address or the failing command was
    // RCPT; said at DATA, or where nothing shows the stage (a code naming
    // another subject, "550 5.2.1 ... User Unknown", or no code at all,
    // "[User unknown]"), the same words are a refusal by the recipient's
    // filter, which is how per-recipient filters and mobile carriers refuse
    // mail. The MTAs whose reports state the stage or the verdict in their
    // own terms are read first (transcripts' ">>> RCPT To:", the readers'
    // command, `formats::lhost`, `formats::rhost`). Postfix's "Recipient
    // address rejected" wording is itself the RCPT stage, and Sisimai's own
    // X.0.9NN codes are not a server's word.
    let address_code = status.is_some_and(|s| s.subject() == 1);
    let servers_code = status.is_none_or(|s| s.detail() < 900);
    // Only a code that states the mailbox's or the mail system's condition
    // (RFC 3463 subjects 2 and 3: "mailbox disabled", "system not
    // accepting") contradicts the words: the mailbox exists and refused.
    // With no code, or one about something else (X.0.y undefined, X.5.y
    // protocol), nothing does, and the words stand: the hand-labelled
    // corpora of other projects (flufl.bounce, BounceParser) read "user
    // unknown" with no stage as an unknown user, hard.
    let mailbox_state_code = status.is_some_and(|s| matches!(s.subject(), 2 | 3));
    if command.is_none()
        && reason == Reason::Userunknown
        && rule.starts_with("text.userunknown.")
        && rule != "text.userunknown.access-denied-recipient"
        && servers_code
        && !address_code
        && mailbox_state_code
    {
        return Some((Reason::Filtered, "context.filtered.not-at-rcpt"));
    }
    match command? {
        SmtpCommand::Data if reason == Reason::Userunknown && from_words && !mailbox_code => {
            Some((Reason::Filtered, "context.filtered.after-data"))
        }
        SmtpCommand::Mail
            if matches!(
                reason,
                Reason::Userunknown
                    | Reason::Hostunknown
                    | Reason::Filtered
                    | Reason::Suspend
                    | Reason::Undefined
            ) =>
        {
            Some((Reason::Rejected, "context.rejected.mail-from"))
        }
        SmtpCommand::Connect
            if matches!(
                reason,
                Reason::Userunknown
                    | Reason::Hostunknown
                    | Reason::Filtered
                    | Reason::Rejected
                    | Reason::Undefined
            ) =>
        {
            Some((Reason::Blocked, "context.blocked.connection"))
        }
        _ => None,
    }
}

/// A basic reply code in a diagnostic: at its start, or a `[45]xx` that
/// stands alone and is followed by an enhanced code or a word (`said: 550
/// 5.1.1 ...`, `host x [ip]: 554 ...`).
fn reply_code_in(text: &str) -> Option<u16> {
    let (code, _, _) = crate::reply::parse_reply_line(text.lines().next().unwrap_or(""));
    if code.is_some() {
        return code;
    }
    let bytes = text.as_bytes();
    (0..bytes.len().saturating_sub(3)).find_map(|at| {
        let digits = &bytes[at..at + 3];
        if !matches!(digits[0], b'4' | b'5') || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let before_ok = at == 0
            || matches!(
                bytes[at - 1],
                b' ' | b':' | b'\n' | b'(' | b'<' | b'"' | b'=' | b'>'
            );
        let after_ok = matches!(bytes.get(at + 3), Some(b' ' | b'-'))
            && bytes
                .get(at + 4)
                .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'<');
        (before_ok && after_ok).then(|| {
            digits
                .iter()
                .fold(0u16, |acc, b| acc * 10 + u16::from(b - b'0'))
        })
    })
}

/// One complaint record per recipient the report names (one without a
/// recipient when it names none and the attached original has no `To`).
fn complaints(feedback: arf::Feedback, report: &Report, common: &Common) -> Vec<Record> {
    let mut recipients: Vec<Option<String>> =
        feedback.recipients.iter().cloned().map(Some).collect();
    if recipients.is_empty() {
        let to = report
            .original
            .as_ref()
            .and_then(|h| h.get("To"))
            .and_then(crate::address::clean);
        recipients.push(to);
    }
    recipients
        .into_iter()
        .map(|recipient| Record {
            kind: RecordKind::Complaint,
            recipient,
            status: None,
            reply_code: None,
            diagnostic: None,
            remote_mta: None,
            reason: Reason::Feedback,
            bounce_type: BounceType::Undetermined,
            rule: feedback.rule,
            original_message_id: common.original_message_id.clone(),
            envelope_id: None,
            delivery_token: common.delivery_token.clone(),
            feedback_type: feedback.feedback_type.clone(),
            source_ip: feedback.source_ip.clone(),
            user_agent: feedback.user_agent.clone(),
        })
        .collect()
}

/// An auto-reply: the recipient is the person who answered (its `From`);
/// the message it answers is named by `In-Reply-To` when nothing is
/// attached.
fn vacation(rule: &'static str, report: &Report, common: &Common) -> Record {
    let headers = &report.message.headers;
    let recipient = headers
        .get("From")
        .or_else(|| headers.get("Reply-To"))
        .and_then(crate::address::clean);
    let original_message_id = common
        .original_message_id
        .clone()
        .or_else(|| headers.get("In-Reply-To").and_then(message_id));
    Record {
        kind: RecordKind::Vacation,
        recipient,
        status: None,
        reply_code: None,
        diagnostic: Some(mime::collapse_whitespace(&report.subject)).filter(|s| !s.is_empty()),
        remote_mta: None,
        reason: Reason::Vacation,
        bounce_type: BounceType::Undetermined,
        rule,
        original_message_id,
        envelope_id: None,
        delivery_token: common.delivery_token.clone(),
        feedback_type: None,
        source_ip: None,
        user_agent: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcript_rcpt_refused() {
        let text = "While talking to mx.example.org:\n>>> RCPT To:<a@example.org>\n<<< 550 <a@example.org>, User Unknown\n";
        assert_eq!(
            transcript_command(&transcript_rcpt_lines(text), "a@example.org"),
            Some(SmtpCommand::Rcpt)
        );
        // Accepted at RCPT: the failure came later.
        let text = ">>> RCPT To:<a@example.org>\n<<< 250 ok\n>>> DATA\n<<< 554 rejected\n";
        assert_eq!(
            transcript_command(&transcript_rcpt_lines(text), "a@example.org"),
            None
        );
        // Another recipient's line, or no transcript marks.
        assert_eq!(
            transcript_command(
                &transcript_rcpt_lines(">>> RCPT To:<b@example.org>\n<<< 550 no\n"),
                "a@example.org"
            ),
            None
        );
        assert_eq!(
            transcript_command(
                &transcript_rcpt_lines("RCPT TO: a@example.org\n550 no\n"),
                "a@example.org"
            ),
            None
        );
        // Pipelined: the replies follow all the commands; each RCPT line is
        // read against the line after it, as before.
        let text = ">>> RCPT To:<a@example.org>\n>>> RCPT To:<b@example.org>\n<<< 550 no\n";
        let lines = transcript_rcpt_lines(text);
        assert_eq!(
            transcript_command(&lines, "b@example.org"),
            Some(SmtpCommand::Rcpt)
        );
        assert_eq!(transcript_command(&lines, "a@example.org"), None);
    }

    #[test]
    fn command_across_line_breaks() {
        assert_eq!(
            smtp_command("550 Recipient address rejected. (in reply to RCPT\n    TO command)"),
            Some(SmtpCommand::Rcpt)
        );
    }
}
