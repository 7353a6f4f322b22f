//! Table tests: `parse_reply_line` on the shapes replies come in, and
//! `classify_reply` on representative replies of common MTAs and providers,
//! including the hard/soft rule.

use posthorn_bounce::{BounceType, EnhancedCode, Reason, classify_reply, parse_reply_line};

#[test]
fn parse_reply_line_splits_code_status_and_text() {
    let cases: &[(&str, Option<u16>, Option<&str>, &str)] = &[
        (
            "550 5.1.1 <x@y>: user unknown",
            Some(550),
            Some("5.1.1"),
            "<x@y>: user unknown",
        ),
        (
            "550-5.1.1 The email account that you tried to reach does not exist.\r\n\
             550-5.1.1 Please try double-checking the recipient's email\r\n\
             550 5.1.1 address for typos.",
            Some(550),
            Some("5.1.1"),
            "The email account that you tried to reach does not exist. \
             Please try double-checking the recipient's email address for typos.",
        ),
        (
            "421 Too many connections",
            Some(421),
            None,
            "Too many connections",
        ),
        ("5.2.2 Mailbox full", None, Some("5.2.2"), "Mailbox full"),
        (
            "smtp; 552 5.3.4 Message too large",
            Some(552),
            Some("5.3.4"),
            "Message too large",
        ),
        (
            "SMTP; 450 4.7.1 Access denied",
            Some(450),
            Some("4.7.1"),
            "Access denied",
        ),
        (
            "250 2.0.0 Ok: queued as 4F2",
            Some(250),
            Some("2.0.0"),
            "Ok: queued as 4F2",
        ),
        ("554", Some(554), None, ""),
        ("250-", Some(250), None, ""),
        ("Mailbox full", None, None, "Mailbox full"),
        ("", None, None, ""),
        ("   \r\n  ", None, None, ""),
        // Not codes: too many digits, a class that does not exist, an IP.
        ("5500 nope", None, None, "5500 nope"),
        ("650 6.1.1 what", None, None, "650 6.1.1 what"),
        (
            "550 192.0.2.1 blocked",
            Some(550),
            None,
            "192.0.2.1 blocked",
        ),
        ("550 5.1.1x odd", Some(550), None, "5.1.1x odd"),
    ];
    for (line, code, status, text) in cases {
        let got = parse_reply_line(line);
        assert_eq!(
            got,
            (*code, status.map(|s| s.parse().unwrap()), text.to_string()),
            "{line:?}"
        );
    }
}

/// Each case is a whole reply line (split by `parse_reply_line`, so the
/// code and enhanced code reach `classify_reply` as given) and the expected
/// `"reason bounce_type"`, with `" temporary"` appended for 4xx / 4.x.x.
type Case = (&'static str, &'static str);

#[test]
fn classify_reply_follows_the_hard_soft_rule() {
    check(&[
        // The address is bad: hard.
        ("550 5.1.1 <a@b>... User unknown", "userunknown hard"),
        (
            "550 5.1.1 Requested action not taken: mailbox unavailable",
            "userunknown hard",
        ),
        (
            "550 5.1.2 Host unknown (Name server: example.org: host not found)",
            "hostunknown hard",
        ),
        ("550 5.1.6 recipient no longer on server", "hasmoved hard"),
        (
            "556 Domain does not accept mail (null MX)",
            "notaccept hard",
        ),
        // Specific words beat the generic 5.7.1.
        (
            "550 5.7.1 <a@b>: Recipient address rejected: User unknown",
            "userunknown hard",
        ),
        // A spam or reputation block is about the sender, not the address.
        (
            "550 5.7.1 Message rejected as spam by Content Filtering",
            "spamdetected soft",
        ),
        (
            "554 5.7.1 Client host [192.0.2.1] blocked using zen.spamhaus.org",
            "blocked soft",
        ),
        ("550 5.7.1 some unrecognisable words", "securityerror soft"),
        // A precise code beats vague words...
        ("552 5.2.2 Delivery blocked", "mailboxfull soft"),
        // ...and specific words beat a precise code.
        (
            "550 5.1.0 192.0.2.2 is not allowed to send from <example.net> per its SPF Record",
            "authfailure soft",
        ),
        // Temporary failures are soft (notaccept needs a permanent one).
        (
            "450 4.2.2 Mailbox full, try again later",
            "mailboxfull soft temporary",
        ),
        (
            "421 Too many concurrent SMTP connections",
            "ratelimited soft temporary",
        ),
        (
            "452 4.3.2 System not accepting network messages",
            "notaccept soft temporary",
        ),
        (
            "451 4.7.650 The mail server [192.0.2.2] has been temporarily deferred",
            "badreputation soft temporary",
        ),
        // The enhanced code says how final it is: a DSN's "554 4.4.7".
        (
            "554 4.4.7 Message expired: unable to deliver in 840 minutes",
            "expired soft temporary",
        ),
        // Success is not a bounce.
        ("250 2.0.0 Ok: queued as 4F2", "delivered undetermined"),
        ("250", "delivered undetermined"),
        // Nothing to go on.
        ("", "undefined undetermined"),
        ("lorem ipsum", "undefined undetermined"),
        // A code alone still says it failed.
        ("554", "undefined soft"),
        ("552", "mailboxfull soft"),
        ("501", "syntaxerror soft"),
    ]);
}

#[test]
fn classify_reply_knows_common_replies() {
    check(&[
        // Codes inside the text.
        ("smtp; 550 5.1.1 <a@b>... User Unknown", "userunknown hard"),
        (
            "host mx.example.org said: 452 4.2.2 Over quota",
            "mailboxfull soft temporary",
        ),
        // Postfix.
        (
            "450 4.7.1 Client host rejected: cannot find your hostname, [192.0.2.1]",
            "requireptr soft temporary",
        ),
        (
            "450 4.2.0 <a@b>: Recipient address rejected: Greylisted, see https://postgrey.example/",
            "blocked soft temporary",
        ),
        (
            "554 5.7.1 <a@b>: Recipient address rejected: Policy rejection not logged in",
            "policyviolation soft",
        ),
        ("554 5.7.1 <a@b>: Relay access denied", "norelaying soft"),
        (
            "550 5.1.0 <a@b>: Sender address rejected: Domain not found",
            "rejected soft",
        ),
        (
            "connect to mx.example.org[192.0.2.1]:25: Connection refused",
            "networkerror soft",
        ),
        (
            "delivery temporarily suspended: connect to mx.example.org[192.0.2.1]:25: Connection timed out",
            "expired soft",
        ),
        (
            "Host or domain name not found. Name service error for name=example.invalid type=MX: Host not found",
            "hostunknown hard",
        ),
        (
            "mail for example.org loops back to myself",
            "systemerror soft",
        ),
        // Sendmail, qmail, Exim, Domino.
        (
            "553 5.1.8 <a@b>... Domain of sender address a@b does not exist",
            "rejected soft",
        ),
        (
            "sorry, no mailbox here by that name. (#5.1.1)",
            "userunknown hard",
        ),
        (
            "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)",
            "norelaying soft",
        ),
        (
            "552 sorry, that message size exceeds my databytes limit (#5.3.4)",
            "emailtoolarge soft",
        ),
        ("Unrouteable address", "hostunknown hard"),
        (
            "User kijitora not listed in public Name & Address Book",
            "userunknown hard",
        ),
        // Gmail, Outlook, Yahoo.
        (
            "550 5.2.1 The email account that you tried to reach is disabled.",
            "suspend soft",
        ),
        (
            "450 4.2.1 The user you are trying to contact is receiving mail too quickly.",
            "ratelimited soft temporary",
        ),
        (
            "550 5.7.26 Unauthenticated email from example.org is not accepted due to domain's DMARC policy.",
            "authfailure soft",
        ),
        (
            "550 5.4.1 Recipient address rejected: Access denied. AS(201806281)",
            "userunknown hard",
        ),
        (
            "550 5.7.606 Access denied, banned sending IP [192.0.2.1].",
            "blocked soft",
        ),
        (
            "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to user complaints",
            "badreputation soft temporary",
        ),
        (
            "554 delivery error: dd This user doesn't have a yahoo.com account",
            "userunknown hard",
        ),
        (
            "554 5.7.9 Message not accepted for policy reasons.",
            "policyviolation soft",
        ),
        ("550 Daily sending quota exceeded", "ratelimited soft"),
        // Content and security.
        (
            "554 5.7.0 Reject, id=12345-01 - INFECTED (Eicar-Test-Signature)",
            "virusdetected soft",
        ),
        (
            "530 5.7.0 Must issue a STARTTLS command first.",
            "failedstarttls soft",
        ),
        (
            "535 5.7.8 Error: authentication failed",
            "securityerror soft",
        ),
        // Phrases of Sisimai's reason tables.
        (
            "550 5.7.0 <a@b>... Please use the SMTP server of your ISP.",
            "blocked soft",
        ),
        (
            "452 4.4.5 Insufficient disk space; try again later",
            "systemfull soft temporary",
        ),
        (
            "452 Insufficient disk space; try again later",
            "mailboxfull soft temporary",
        ),
        ("554 5.0.0 Line limit exceeded", "emailtoolarge soft"),
        (
            "550 Your email address has been blacklisted",
            "rejected soft",
        ),
        (
            "550 The account or domain may not exist, they may be blacklisted, \
             or missing the proper dns entries.",
            "hostunknown hard",
        ),
        (
            "450 Service permits 2 unverifyable sending IPs",
            "requireptr soft temporary",
        ),
        (
            "550 SC-004 Too many unwanted messages have been sent from the \
             following IP address above.",
            "blocked soft",
        ),
        ("554 Sender IP address rejected", "blocked soft"),
        (
            "550 'a@b' is not a registered gateway user",
            "rejected soft",
        ),
        // Auto-replies: text alone.
        (
            "I am out of the office until Monday.",
            "vacation undetermined",
        ),
    ]);
}

#[test]
fn a_local_programs_exit_status_is_not_an_smtp_code() {
    let class = classify_reply(Some(255), None, "X-Unix; 255");
    assert_eq!(
        (class.reason, class.bounce_type),
        (Reason::Mailererror, BounceType::Soft)
    );
    assert_eq!(class.status, None);
}

fn check(cases: &[Case]) {
    for (line, want) in cases {
        let (code, enhanced, text) = parse_reply_line(line);
        let class = classify_reply(code, enhanced, &text);
        let mut got = format!("{} {}", class.reason, class.bounce_type.as_str());
        if class.temporary {
            got.push_str(" temporary");
        }
        assert_eq!(&got, want, "{line:?} (decided by {})", class.rule);
    }
}

#[test]
fn status_is_given_found_or_implied() {
    // A text that is no code is no code: the caller's parse drops it.
    let status = |code, enhanced: Option<&str>, text| {
        let enhanced = enhanced.and_then(EnhancedCode::parse);
        classify_reply(code, enhanced, text)
            .status
            .map(|s| s.to_string())
    };
    assert_eq!(status(Some(550), Some("5.1.1"), "x"), Some("5.1.1".into()));
    assert_eq!(status(None, None, "550 5.2.2 full"), Some("5.2.2".into()));
    assert_eq!(
        status(Some(550), None, "No such user"),
        Some("5.1.1".into())
    );
    assert_eq!(status(Some(452), None, "over quota"), Some("4.2.2".into()));
    assert_eq!(status(Some(250), None, "ok"), Some("2.0.0".into()));
    assert_eq!(
        status(Some(550), Some("garbage"), "x"),
        Some("5.0.0".into())
    );
    assert_eq!(status(None, None, "No such user"), None);
}

#[test]
fn rules_are_named_by_where_they_come_from() {
    let rule = |code, enhanced: Option<&str>, text| {
        classify_reply(code, enhanced.and_then(EnhancedCode::parse), text).rule
    };
    assert_eq!(rule(Some(550), Some("5.1.1"), "x"), "enhanced.5.1.1");
    assert_eq!(
        rule(Some(550), None, "No such user"),
        "text.userunknown.no-such-user"
    );
    assert_eq!(rule(Some(552), None, ""), "code.552");
    assert_eq!(rule(Some(250), None, ""), "code.2xx");
    assert_eq!(rule(None, None, ""), "none");
}

#[test]
fn reasons_serialize_as_lowercase_names() {
    let json = serde_json::to_string(&Reason::Userunknown).unwrap();
    assert_eq!(json, "\"userunknown\"");
    let old: Reason = serde_json::from_str("\"mesgtoobig\"").unwrap();
    assert_eq!(old, Reason::Emailtoolarge);
    let class = classify_reply(Some(550), EnhancedCode::parse("5.1.1"), "User unknown");
    let value = serde_json::to_value(&class).unwrap();
    assert_eq!(value["reason"], "userunknown");
    assert_eq!(value["bounce_type"], "hard");
    assert_eq!(value["rule"], "text.userunknown.no-such-user");
    assert_eq!(value["status"], "5.1.1");
    assert_eq!(value["temporary"], false);
}
