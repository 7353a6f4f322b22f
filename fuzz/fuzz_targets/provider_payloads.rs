//! Other providers' webhook payloads (Postmark, Mailgun, SendGrid, SES and
//! the SNS envelope around it), through their parsers and verifiers: any
//! bytes are mapped or refused, never a panic, and every mapped event
//! names an address and its provider's message.
//!
//! Input: the first byte picks the parser, the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use posthorn_providers::{Mapped, mailgun, postmark, sendgrid, ses, sns};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let mapped = match pick % 5 {
        0 => postmark::parse(body),
        1 => {
            let _ = mailgun::verify(body, b"key", 1_700_000_000_000);
            mailgun::parse(body)
        }
        2 => sendgrid::parse(body),
        3 => ses::parse(&String::from_utf8_lossy(body), "sns-id"),
        _ => {
            if let Ok(envelope) = sns::Envelope::parse(body) {
                let _ = envelope.string_to_sign();
                let _ = sns::check_certificate_url(&envelope.signing_cert_url);
                if let Some(url) = &envelope.subscribe_url {
                    let _ = sns::check_subscribe_url(url);
                }
            }
            let _ = sns::SigningKey::from_pem(body);
            return;
        }
    };
    for m in mapped.into_iter().flatten() {
        if let Mapped::Event(e) = m {
            assert!(e.recipient.contains('@'), "{e:?}");
            assert!(!e.message_id.is_empty(), "{e:?}");
            let _ = e.content_key(posthorn_providers::Provider::Sendgrid);
        }
    }
});
