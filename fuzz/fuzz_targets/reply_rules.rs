//! An operator's reply rules file (`[bounce] rules_file`): any text parses
//! or is refused with errors on lines the text has (never a panic), and a
//! rule set that parses classifies a reply without panicking, its own
//! verdicts always hard or soft.
//!
//! Input: the rules text, then optionally a NUL byte and a reply line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use posthorn_bounce::{BounceType, ReplyRules, RuleSource, parse_reply_line};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (rules_text, reply) = text
        .split_once('\0')
        .unwrap_or((text, "550 5.1.1 user unknown"));
    match ReplyRules::parse(rules_text) {
        Ok(rules) => {
            let (code, enhanced, words) = parse_reply_line(reply);
            let class = rules.classify(code, enhanced, &words, Some("example.com"));
            if class.source == RuleSource::Operator {
                assert_ne!(class.bounce_type, BounceType::Undetermined);
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "refused without a reason");
            let lines = rules_text.lines().count().max(1);
            for e in errors {
                assert!((1..=lines).contains(&e.line), "{e} of {lines} lines");
            }
        }
    }
});
