//! An operator's reply rules (`[bounce] rules_file`): what they decide,
//! when their conditions hold, and the errors a bad file gets, each with
//! its line.

use posthorn_bounce::{
    BounceType, Reason, ReplyRules, RuleSource, classify_reply, parse, parse_reply_line, parse_with,
};

fn rules(text: &str) -> ReplyRules {
    ReplyRules::parse(text).unwrap_or_else(|e| panic!("{e:?}"))
}

/// `"reason verdict rule source"` for one reply line.
fn verdict(rules: &ReplyRules, line: &str, domain: Option<&str>) -> String {
    let (code, enhanced, text) = parse_reply_line(line);
    let class = rules.classify(code, enhanced, &text, domain);
    format!(
        "{} {} {} {}",
        class.reason,
        class.bounce_type.as_str(),
        class.rule,
        class.source
    )
}

const EXAMPLE: &str = "\
# Example Mail says \"mailbox unavailable\" for an account it closed.
rule local.example-closed suspend hard
  domain example.com *.example.net
  code 5xx
  status 5.2.* 5.1.1
  match Mailbox  UNAVAILABLE
  match account ... closed

rule local.dnsbl-soft blocked soft
  match listed at ... dnsbl
";

#[test]
fn an_operator_rule_decides_before_the_built_in_ones() {
    let ours = rules(EXAMPLE);
    let line = "550 5.1.1 Mailbox unavailable";
    // Built in, 5.1.1 is a precise code: userunknown, hard.
    assert_eq!(
        verdict(&ReplyRules::default(), line, Some("example.com")),
        "userunknown hard enhanced.5.1.1 builtin"
    );
    assert_eq!(
        verdict(&ours, line, Some("example.com")),
        "suspend hard local.example-closed operator"
    );
    // The gap wildcard, and a phrase that beats a built-in strong phrase
    // ("user unknown" would be userunknown).
    assert_eq!(
        verdict(
            &ours,
            "552 5.2.1 user unknown: account was closed",
            Some("EXAMPLE.COM.")
        ),
        "suspend hard local.example-closed operator"
    );
    // The verdict is the rule's, whatever the reason would imply.
    assert_eq!(
        verdict(&ours, "554 5.7.1 IP listed at the ZZ dnsbl", None),
        "blocked soft local.dnsbl-soft operator"
    );
}

#[test]
fn every_condition_must_hold() {
    let ours = rules(EXAMPLE);
    let builtin = |line: &str| verdict(&ReplyRules::default(), line, None);
    for (line, domain, why) in [
        ("550 5.1.1 Mailbox unavailable", None, "domain unknown"),
        (
            "550 5.1.1 Mailbox unavailable",
            Some("example.org"),
            "other domain",
        ),
        (
            "550 5.1.1 Mailbox unavailable",
            Some("example.net"),
            "*.example.net is its subdomains only",
        ),
        (
            "550 5.1.1 Mailbox unavailable",
            Some("notexample.com"),
            "a suffix is not the domain",
        ),
        (
            "450 4.2.1 Mailbox unavailable",
            Some("example.com"),
            "4xx is not 5xx",
        ),
        (
            "550 5.7.1 Mailbox unavailable",
            Some("example.com"),
            "5.7.1 is not 5.2.* or 5.1.1",
        ),
        ("Mailbox unavailable", Some("example.com"), "no code at all"),
        ("550 5.1.1 unknown", Some("example.com"), "no phrase"),
    ] {
        assert_eq!(
            verdict(&ours, line, domain),
            builtin(line),
            "{line:?} {domain:?}: {why}"
        );
    }
    assert_eq!(
        verdict(
            &ours,
            "550 5.2.0 Mailbox unavailable",
            Some("mx.example.net")
        ),
        "suspend hard local.example-closed operator"
    );
}

#[test]
fn a_success_is_delivered_whatever_the_rules_say() {
    let ours = rules("rule local.odd blocked soft\nmatch ok\n");
    assert_eq!(
        verdict(&ours, "250 2.0.0 Ok: queued", None),
        "delivered undetermined enhanced.2.x.x builtin"
    );
}

#[test]
fn no_operator_rules_is_the_built_in_classifier() {
    for line in [
        "550 5.1.1 user unknown",
        "452 4.2.2 over quota",
        "554 rejected as spam",
        "I am out of the office",
        "",
    ] {
        let (code, enhanced, text) = parse_reply_line(line);
        assert_eq!(
            ReplyRules::default().classify(code, enhanced, &text, Some("example.com")),
            classify_reply(code, enhanced, &text),
            "{line:?}"
        );
    }
    let empty = rules("# nothing yet\n\n");
    assert!(empty.operator_rules().is_empty());
}

#[test]
fn rule_sources_and_lines_are_known() {
    let ours = rules(EXAMPLE);
    assert_eq!(ours.source_of("local.dnsbl-soft"), RuleSource::Operator);
    assert_eq!(ours.source_of("enhanced.5.1.1"), RuleSource::Builtin);
    assert_eq!(ours.operator_rule("local.dnsbl-soft").unwrap().line, 9);
}

/// The same rule applies to the diagnostic of returned mail, for the
/// recipient the report names, and its word is final: the SMTP stage does
/// not turn it into something else.
#[test]
fn returned_mail_is_classified_by_the_operator_rules_too() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/corpus/sisimai/lhost-postfix-03.eml"
    );
    let raw = std::fs::read(path).unwrap();
    let builtin = &parse(&raw)[0];
    assert_eq!(builtin.recipient.as_deref(), Some("kijitora@example.net"));
    assert_eq!(
        (builtin.reason, builtin.bounce_type, builtin.rule),
        (
            Reason::Filtered,
            BounceType::Soft,
            "context.filtered.after-data"
        )
    );
    let ours = rules(
        "rule local.really-unknown userunknown hard\ndomain example.net\nmatch unknown user\n",
    );
    let record = &parse_with(&raw, &ours)[0];
    assert_eq!(
        (record.reason, record.bounce_type, record.rule),
        (
            Reason::Userunknown,
            BounceType::Hard,
            "local.really-unknown"
        )
    );
    let elsewhere =
        rules("rule local.x userunknown hard\ndomain example.org\nmatch unknown user\n");
    assert_eq!(&parse_with(&raw, &elsewhere)[0], builtin);
}

/// Each bad text and the error it must get: `(line, words in the message)`.
#[test]
fn bad_rules_are_refused_with_their_line() {
    let cases: &[(&str, usize, &str)] = &[
        (
            "rule a.b usrunknown hard\nmatch x\n",
            1,
            "unknown reason `usrunknown`",
        ),
        ("rule a.b userunknown\nmatch x\n", 1, "add hard or soft"),
        ("rule a.b userunknown firm\nmatch x\n", 1, "verdict `firm`"),
        ("rule a.b delivered soft\nmatch x\n", 1, "not a failure"),
        (
            "rule text.mine blocked soft\nmatch x\n",
            1,
            "namespace of built-in rules",
        ),
        (
            "rule code.550 blocked soft\nmatch x\n",
            1,
            "namespace of built-in rules",
        ),
        ("rule a/b blocked soft\nmatch x\n", 1, "rule id `a/b`"),
        (
            "rule a.b blocked soft now\nmatch x\n",
            1,
            "expected `rule ID REASON hard|soft`",
        ),
        (
            "rule a blocked soft\nmatch x\n\nrule a blocked soft\nmatch y\n",
            4,
            "already used on line 1",
        ),
        ("# start\nmatch x\n", 2, "`match` outside a rule"),
        (
            "rule a blocked soft\nmatch x\nregex .*\n",
            3,
            "unknown statement `regex`",
        ),
        (
            "rule a blocked soft\nmatch x\ncode 55\n",
            3,
            "`55` is not a reply code",
        ),
        (
            "rule a blocked soft\nmatch x\ncode 250\n",
            3,
            "success code",
        ),
        (
            "rule a blocked soft\nmatch x\ncode 650\n",
            3,
            "starts with 4",
        ),
        (
            "rule a blocked soft\nmatch x\nstatus 5.7\n",
            3,
            "`5.7` is not an enhanced status code",
        ),
        (
            "rule a blocked soft\nmatch x\nstatus 5.x.1\n",
            3,
            "not an enhanced status code",
        ),
        (
            "rule a blocked soft\nmatch x\nstatus 2.0.0\n",
            3,
            "success code",
        ),
        (
            "rule a blocked soft\nmatch x\ndomain a@b.com\n",
            3,
            "not a domain",
        ),
        (
            "rule a blocked soft\nmatch x\ndomain example..com\n",
            3,
            "not a domain",
        ),
        (
            "rule a blocked soft\nmatch x\ndomain\n",
            3,
            "needs at least one value",
        ),
        ("rule a blocked soft\nmatch\n", 2, "needs a phrase"),
        (
            "rule a blocked soft\nmatch ... x\n",
            2,
            "`...` stands between",
        ),
        (
            "rule a blocked soft\nmatch x ... ... y\n",
            2,
            "`...` stands between",
        ),
        ("rule a blocked soft\ncode 550\n", 1, "has no `match` line"),
        (
            "[strong]\nrule a blocked soft\nmatch x\n",
            1,
            "steps belong to the built-in rules",
        ),
    ];
    for (text, line, words) in cases {
        let errors = ReplyRules::parse(text).expect_err(text);
        assert_eq!(errors.len(), 1, "{text:?}: {errors:?}");
        assert_eq!(errors[0].line, *line, "{text:?}: {errors:?}");
        let shown = errors[0].to_string();
        assert!(
            shown.starts_with(&format!("line {line}: ")) && shown.contains(words),
            "{text:?}: {shown}"
        );
    }
}

#[test]
fn every_error_of_a_file_is_reported_at_once() {
    let text = "\
rule local.a usrunknown hard
  match skipped with its rule
  code 999
rule local.b blocked soft
  code 5x
  match ok
rule local.c blocked
  match y
";
    let errors = ReplyRules::parse(text).unwrap_err();
    let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
    // The body of a refused `rule` line is not checked: its errors would
    // only repeat the first.
    assert_eq!(lines, [1, 5, 7], "{errors:?}");
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Lines that look like rules often enough to reach every statement.
    fn rules_like() -> impl Strategy<Value = String> {
        let line = prop_oneof![
            any::<String>(),
            "rule [a-z.]{1,8} (blocked|suspend|userunknown|x) (hard|soft)?",
            "match .{0,20}( \\.\\.\\. .{0,10})?",
            "code [2-6x][0-9x]{1,3}",
            "status [2-5*]\\.[0-9*]{1,4}\\.[0-9*]{1,3}",
            "domain [a-z.*@]{0,12}",
            "\\[[a-z]{0,8}\\]",
        ];
        prop::collection::vec(line, 0..12).prop_map(|lines| lines.join("\n"))
    }

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused_with_lines(text in rules_like(), reply in ".{0,60}") {
            match ReplyRules::parse(&text) {
                Ok(rules) => {
                    let (code, enhanced, words) = parse_reply_line(&reply);
                    let class = rules.classify(code, enhanced, &words, Some("example.com"));
                    if class.source == RuleSource::Operator {
                        prop_assert!(class.bounce_type != BounceType::Undetermined);
                    }
                }
                Err(errors) => {
                    prop_assert!(!errors.is_empty());
                    let lines = text.lines().count().max(1);
                    for e in errors {
                        prop_assert!((1..=lines).contains(&e.line), "{e} of {lines}");
                    }
                }
            }
        }
    }
}
