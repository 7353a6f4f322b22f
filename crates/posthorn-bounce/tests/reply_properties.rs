//! Property tests: the reply functions take anything a network peer can send
//! and never panic; their answers stay consistent with the hard/soft rule.

use posthorn_bounce::{BounceType, EnhancedCode, Reason, classify_reply, parse_reply_line};
use proptest::prelude::*;

/// Strings that look like replies often enough to reach the deeper paths.
fn reply_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[245][0-9]{2}[ -][245]\\.[0-9]{1,3}\\.[0-9]{1,3} .{0,40}",
        "(smtp; |x-unix; )?[0-9 .\\-]{0,12}(user unknown|over quota|spam|relay|a ... b|\"\\|)?.{0,20}",
        prop::collection::vec(any::<char>(), 0..64).prop_map(|c| c.into_iter().collect()),
    ]
}

proptest! {
    #[test]
    fn classify_reply_never_panics(
        code in proptest::option::of(any::<u16>()),
        enhanced in proptest::option::of(reply_like()),
        text in reply_like(),
    ) {
        let class = classify_reply(code, enhanced.as_deref().and_then(EnhancedCode::parse), &text);
        // Hard only for the reasons that condemn the address.
        if class.bounce_type == BounceType::Hard {
            prop_assert!(matches!(
                class.reason,
                Reason::Userunknown | Reason::Hostunknown | Reason::Hasmoved | Reason::Notaccept
            ));
        }
        prop_assert!(!class.rule.is_empty());
    }

    #[test]
    fn parse_reply_line_never_panics(line in reply_like()) {
        let (code, status, text) = parse_reply_line(&line);
        if let Some(code) = code {
            prop_assert!((200..600).contains(&code));
        }
        if let Some(status) = status {
            prop_assert!(classify_reply(None, Some(status), "").status == Some(status));
        }
        prop_assert!(text.len() <= line.len());
    }

    #[test]
    fn a_parsed_line_classifies_like_the_whole_line(line in reply_like()) {
        let (code, status, text) = parse_reply_line(&line);
        // Classifying the pieces must not panic either.
        let _ = classify_reply(code, status, &text);
    }
}
