//! Tracking tokens (`/o/`, `/c/`, `/u/`) and VERP return paths, as anyone
//! can send them: verifying never panics, and a token that verifies is the
//! one spelling its signer writes (no variant names the same target).
#![no_main]

use libfuzzer_sys::fuzz_target;
use posthorn_server::delivery::verp::VerpSigner;
use posthorn_track::token::{Key, Purpose, TokenKeys, sign, verify, verify_as};

const SECRET: &[u8] = b"fuzzing server secret";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let keys = TokenKeys::single(Key::derive(1, SECRET));
    if let Some(target) = verify(&keys, &text) {
        assert_eq!(sign(&keys, &target), text, "a second spelling verified");
        assert_eq!(verify_as(&keys, &text, target.purpose()), Some(target));
    }
    for purpose in [Purpose::Open, Purpose::Click, Purpose::Unsubscribe] {
        if let Some(target) = verify_as(&keys, &text, purpose) {
            assert_eq!(target.purpose(), purpose);
        }
    }

    let signer = VerpSigner::new(SECRET);
    if let Some(delivery) = signer.verify(&text) {
        let local = text
            .split('@')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let token = local
            .strip_prefix(posthorn_core::address::BOUNCE_PREFIX)
            .unwrap_or(&local);
        assert_eq!(signer.token(&delivery), token, "a second spelling verified");
    }
});
