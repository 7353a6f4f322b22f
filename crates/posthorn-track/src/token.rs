//! Signed tracking tokens: the `TOKEN` in `PUBLIC_URL/o/TOKEN` (open pixel),
//! `PUBLIC_URL/c/TOKEN` (click) and `PUBLIC_URL/u/TOKEN` (unsubscribe).
//!
//! A token names a delivery and what the hit means, and nothing else: the
//! URL a click leads to is stored with the delivery, never carried in the
//! link, so a token cannot be turned into an open redirect.
//!
//! Layout (bytes, then URL-safe base64 without padding):
//!
//! ```text
//! [version << 4 | purpose] [key id] [delivery UUID: 16] [link index: LEB128, clicks only] [tag: 12]
//! ```
//!
//! * version 1; purpose 0 open, 1 click, 2 unsubscribe. Version and purpose
//!   share one byte because both are tiny and every byte is 1.33 characters.
//! * The tag is HMAC-SHA256 over every byte before it, truncated to 12 bytes
//!   (96 bits). A forger gets one guess per HTTP request and a hit only
//!   records an event for a delivery the forger already knows: 2^-96 per
//!   guess is far beyond reach, while a full 32-byte tag would add 27
//!   characters to every link of every message.
//! * The purpose and the link index are under the tag, so a click token
//!   shown on the open route, or with another link's index, does not verify
//!   as something else: [`verify`] returns the [`Target`] and the route
//!   checks it is the kind it serves ([`verify_as`] does both).
//!
//! Lengths: open and unsubscribe tokens are 40 characters; click tokens 42
//! (link index < 128), 43 (< 16384), at most 47 (any `u32`).
//!
//! Keys: the MAC key is derived from the server secret with the label
//! `posthorn-track-v1`, so the tracking key differs from the VERP key made
//! from the same secret and a token of one kind can never be a valid token of
//! the other. Every token carries the id of the key that signed it, so the
//! secret can be rotated: sign with the new key, keep accepting the old one
//! in [`TokenKeys::also_accepted`] until mail signed with it no longer matters.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use posthorn_core::DeliveryId;
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Format version carried in every token.
const VERSION: u8 = 1;
/// Bytes of the HMAC kept in a token (96 bits, see the module doc).
pub const TAG_BYTES: usize = 12;
/// Label that separates tracking keys from every other key made from the
/// same server secret (the VERP signer uses `posthorn-verp-v1`).
const KEY_LABEL: &[u8] = b"posthorn-track-v1";
/// Longest token [`sign`] produces: 2 + 16 + 5 (LEB128 of `u32::MAX`) + 12
/// bytes, in base64. Anything longer is refused before decoding.
pub const MAX_TOKEN_LEN: usize = (2 + 16 + 5 + TAG_BYTES).div_ceil(3) * 4;

/// What a hit on a token means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    Open,
    Click,
    Unsubscribe,
}

impl Purpose {
    fn code(self) -> u8 {
        match self {
            Purpose::Open => 0,
            Purpose::Click => 1,
            Purpose::Unsubscribe => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Open => "open",
            Purpose::Click => "click",
            Purpose::Unsubscribe => "unsubscribe",
        }
    }
}

/// What a token names: a delivery, the kind of hit and, for a click, which
/// link of that delivery's link table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Open(DeliveryId),
    Click(DeliveryId, u32),
    Unsubscribe(DeliveryId),
}

impl Target {
    pub fn delivery(&self) -> &DeliveryId {
        match self {
            Target::Open(d) | Target::Click(d, _) | Target::Unsubscribe(d) => d,
        }
    }

    pub fn purpose(&self) -> Purpose {
        match self {
            Target::Open(_) => Purpose::Open,
            Target::Click(..) => Purpose::Click,
            Target::Unsubscribe(_) => Purpose::Unsubscribe,
        }
    }

    /// The link index of a click; `None` for the other purposes.
    pub fn link_index(&self) -> Option<u32> {
        match self {
            Target::Click(_, i) => Some(*i),
            _ => None,
        }
    }
}

/// One MAC key with the id tokens name it by.
#[derive(Clone)]
pub struct Key {
    id: u8,
    secret: [u8; 32],
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key {{ id: {}, secret: <redacted> }}", self.id)
    }
}

impl Key {
    /// The tracking key for `id` made from a server secret:
    /// HMAC-SHA256(server secret, `posthorn-track-v1` || id). The id is in
    /// the derivation so that two ids given the same secret by mistake still
    /// get different keys.
    pub fn derive(id: u8, server_secret: &[u8]) -> Key {
        let mut secret = [0u8; 32];
        if let Ok(mut mac) = HmacSha256::new_from_slice(server_secret) {
            mac.update(KEY_LABEL);
            mac.update(&[id]);
            secret.copy_from_slice(&mac.finalize().into_bytes());
        }
        Key { id, secret }
    }

    /// The key for a server secret, its id derived from the secret too, so
    /// that a token names the secret that signed it and a rotated-out secret
    /// (still accepted) is found by that id.
    pub fn from_secret(server_secret: &[u8]) -> Key {
        use sha2::Digest;
        let id = Sha256::new()
            .chain_update(b"posthorn-track-key-id")
            .chain_update(server_secret)
            .finalize()[0];
        Key::derive(id, server_secret)
    }

    pub fn id(&self) -> u8 {
        self.id
    }

    fn tag(&self, signed: &[u8]) -> [u8; TAG_BYTES] {
        let mut tag = [0u8; TAG_BYTES];
        // HMAC accepts keys of any length, so this never fails.
        if let Ok(mut mac) = HmacSha256::new_from_slice(&self.secret) {
            mac.update(signed);
            tag.copy_from_slice(&mac.finalize().into_bytes()[..TAG_BYTES]);
        }
        tag
    }
}

/// The keys in force: one signs new tokens, all of them verify.
#[derive(Debug, Clone)]
pub struct TokenKeys {
    pub signing: Key,
    /// Older keys still accepted while mail signed with them is in inboxes.
    pub also_accepted: Vec<Key>,
}

impl TokenKeys {
    /// A single key, nothing else accepted.
    pub fn single(key: Key) -> TokenKeys {
        TokenKeys {
            signing: key,
            also_accepted: Vec::new(),
        }
    }

    fn accepting(&self, id: u8) -> impl Iterator<Item = &Key> {
        std::iter::once(&self.signing)
            .chain(self.also_accepted.iter())
            .filter(move |k| k.id == id)
    }
}

/// The token for `target`, signed with `keys.signing`.
pub fn sign(keys: &TokenKeys, target: &Target) -> String {
    let mut raw = Vec::with_capacity(2 + 16 + 5 + TAG_BYTES);
    raw.push(VERSION << 4 | target.purpose().code());
    raw.push(keys.signing.id);
    raw.extend_from_slice(&uuid_bytes(target.delivery()));
    if let Target::Click(_, index) = target {
        leb128_push(&mut raw, *index);
    }
    let tag = keys.signing.tag(&raw);
    raw.extend_from_slice(&tag);
    URL_SAFE_NO_PAD.encode(raw)
}

/// The target a token names, if it was signed by one of `keys` and is well
/// formed. Any other input (tampered, truncated, unknown key id, another
/// version, garbage of any length) is `None`. The caller must check the
/// purpose matches its route, or use [`verify_as`].
pub fn verify(keys: &TokenKeys, token: &str) -> Option<Target> {
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    // Strict decoding: no padding, and the unused low bits of the last
    // character must be zero, so each byte string has exactly one spelling.
    let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
    if raw.len() < 2 + 16 + TAG_BYTES {
        return None;
    }
    let (signed, tag) = raw.split_at(raw.len() - TAG_BYTES);
    let (version, purpose) = (signed[0] >> 4, signed[0] & 0x0f);
    if version != VERSION {
        return None;
    }
    let key_id = signed[1];
    // Constant-time compare: how long a rejection takes says nothing about
    // how much of a forged tag was right.
    let genuine = keys
        .accepting(key_id)
        .any(|k| bool::from(k.tag(signed).ct_eq(tag)));
    if !genuine {
        return None;
    }
    let uuid: [u8; 16] = signed[2..18].try_into().ok()?;
    let delivery = DeliveryId::parse(&uuid::Uuid::from_bytes(uuid).hyphenated().to_string())?;
    let rest = &signed[18..];
    match purpose {
        0 if rest.is_empty() => Some(Target::Open(delivery)),
        2 if rest.is_empty() => Some(Target::Unsubscribe(delivery)),
        1 => {
            let index = leb128_read(rest)?;
            Some(Target::Click(delivery, index))
        }
        _ => None,
    }
}

/// [`verify`], and the token must be for `purpose`: what the `/o/`, `/c/`
/// and `/u/` routes call.
pub fn verify_as(keys: &TokenKeys, token: &str, purpose: Purpose) -> Option<Target> {
    verify(keys, token).filter(|t| t.purpose() == purpose)
}

fn uuid_bytes(delivery: &DeliveryId) -> [u8; 16] {
    // A DeliveryId is a UUID by construction (`parse`/`generate`); one read
    // back from storage that is not gets the nil UUID rather than a panic,
    // and its token then names no delivery.
    uuid::Uuid::parse_str(delivery.as_str())
        .map(|u| *u.as_bytes())
        .unwrap_or_default()
}

fn leb128_push(out: &mut Vec<u8>, mut value: u32) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Reads exactly one canonical LEB128 `u32` filling `bytes`: no overlong
/// forms, nothing after it, so each index has one encoding.
fn leb128_read(bytes: &[u8]) -> Option<u32> {
    if bytes.is_empty() || bytes.len() > 5 {
        return None;
    }
    let mut value: u64 = 0;
    for (i, &b) in bytes.iter().enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        let last = i == bytes.len() - 1;
        if last != (b & 0x80 == 0) {
            return None;
        }
        if last && b == 0 && i > 0 {
            return None; // overlong: a trailing zero group
        }
    }
    u32::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys() -> TokenKeys {
        TokenKeys::single(Key::derive(1, b"server secret"))
    }

    fn delivery() -> DeliveryId {
        DeliveryId::parse("0190b0c4-7e1a-7c3d-9f00-123456789abc").unwrap()
    }

    #[test]
    fn lengths_are_as_documented() {
        let k = keys();
        assert_eq!(sign(&k, &Target::Open(delivery())).len(), 40);
        assert_eq!(sign(&k, &Target::Unsubscribe(delivery())).len(), 40);
        assert_eq!(sign(&k, &Target::Click(delivery(), 0)).len(), 42);
        assert_eq!(sign(&k, &Target::Click(delivery(), 127)).len(), 42);
        assert_eq!(sign(&k, &Target::Click(delivery(), 128)).len(), 43);
        let longest = sign(&k, &Target::Click(delivery(), u32::MAX));
        assert_eq!(longest.len(), 47);
        assert!(longest.len() <= MAX_TOKEN_LEN);
    }

    #[test]
    fn tokens_are_url_safe() {
        let t = sign(&keys(), &Target::Click(delivery(), 300));
        assert!(
            t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }

    #[test]
    fn every_single_character_tamper_fails() {
        const ALPHABET: &[u8] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/.%~ ";
        let k = keys();
        for target in [
            Target::Open(delivery()),
            Target::Click(delivery(), 5),
            Target::Click(delivery(), 1000),
            Target::Unsubscribe(delivery()),
        ] {
            let token = sign(&k, &target);
            assert_eq!(verify(&k, &token), Some(target.clone()));
            let bytes = token.as_bytes();
            for i in 0..bytes.len() {
                for &c in ALPHABET {
                    if c == bytes[i] {
                        continue;
                    }
                    let mut forged = bytes.to_vec();
                    forged[i] = c;
                    let forged = String::from_utf8(forged).unwrap();
                    assert_eq!(verify(&k, &forged), None, "{forged} from {token}");
                }
            }
            // Dropping or adding a character fails too.
            assert_eq!(verify(&k, &token[..token.len() - 1]), None);
            assert_eq!(verify(&k, &token[1..]), None);
            assert_eq!(verify(&k, &format!("{token}A")), None);
        }
    }

    #[test]
    fn a_click_token_is_not_an_open_token() {
        let k = keys();
        let click = sign(&k, &Target::Click(delivery(), 3));
        assert_eq!(verify_as(&k, &click, Purpose::Open), None);
        assert_eq!(verify_as(&k, &click, Purpose::Unsubscribe), None);
        assert_eq!(
            verify_as(&k, &click, Purpose::Click),
            Some(Target::Click(delivery(), 3))
        );
        let open = sign(&k, &Target::Open(delivery()));
        assert_eq!(verify_as(&k, &open, Purpose::Click), None);
        assert_eq!(verify_as(&k, &open, Purpose::Unsubscribe), None);
    }

    #[test]
    fn purpose_is_under_the_tag() {
        // Rewrite the purpose nibble of a genuine open token to "click" and
        // "unsubscribe": the tag no longer matches.
        let k = keys();
        let token = sign(&k, &Target::Open(delivery()));
        let mut raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for purpose in [1u8, 2] {
            raw[0] = VERSION << 4 | purpose;
            assert_eq!(verify(&k, &URL_SAFE_NO_PAD.encode(&raw)), None);
        }
    }

    #[test]
    fn rotation_keeps_old_tokens_valid() {
        let old = Key::derive(1, b"old secret");
        let new = Key::derive(2, b"new secret");
        let before = TokenKeys::single(old.clone());
        let token = sign(&before, &Target::Click(delivery(), 7));

        let after = TokenKeys {
            signing: new.clone(),
            also_accepted: vec![old],
        };
        assert_eq!(verify(&after, &token), Some(Target::Click(delivery(), 7)));
        let fresh = sign(&after, &Target::Open(delivery()));
        assert_eq!(verify(&after, &fresh), Some(Target::Open(delivery())));

        // Once the old key is retired its tokens stop working.
        let retired = TokenKeys::single(new);
        assert_eq!(verify(&retired, &token), None);
        assert_eq!(verify(&retired, &fresh), Some(Target::Open(delivery())));
    }

    #[test]
    fn unknown_key_id_fails() {
        let token = sign(
            &TokenKeys::single(Key::derive(9, b"server secret")),
            &Target::Open(delivery()),
        );
        assert_eq!(verify(&keys(), &token), None);
    }

    #[test]
    fn same_secret_other_id_is_another_key() {
        let a = TokenKeys::single(Key::derive(1, b"s"));
        let b = TokenKeys::single(Key::derive(2, b"s"));
        let token = sign(&a, &Target::Open(delivery()));
        assert_eq!(verify(&b, &token), None);
    }

    #[test]
    fn tracking_key_is_not_the_raw_secret() {
        // A tag made with the raw server secret (as the VERP signer uses it)
        // must not verify: the label separates the two domains.
        let k = keys();
        let token = sign(&k, &Target::Open(delivery()));
        let mut raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        let n = raw.len() - TAG_BYTES;
        let mut mac = HmacSha256::new_from_slice(b"server secret").unwrap();
        mac.update(&raw[..n]);
        let full = mac.finalize().into_bytes();
        raw[n..].copy_from_slice(&full[..TAG_BYTES]);
        assert_eq!(verify(&k, &URL_SAFE_NO_PAD.encode(&raw)), None);
    }

    #[test]
    fn key_debug_hides_the_secret() {
        let text = format!("{:?}", keys());
        assert!(text.contains("redacted"));
        assert!(!text.contains("secret: ["));
    }

    #[test]
    fn garbage_is_none() {
        let k = keys();
        let huge = "A".repeat(1 << 20);
        for input in [
            "",
            "=",
            "A",
            "AAAA",
            "not a token",
            "%00%00",
            "ÄÖÜ€",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "////////////////////////////////////////",
            huge.as_str(),
        ] {
            assert_eq!(verify(&k, input), None, "{input:.40}");
        }
    }

    #[test]
    fn leb128_is_canonical() {
        assert_eq!(leb128_read(&[0]), Some(0));
        assert_eq!(leb128_read(&[0x7f]), Some(127));
        assert_eq!(leb128_read(&[0x80, 0x01]), Some(128));
        assert_eq!(leb128_read(&[0x80, 0x00]), None); // overlong 0
        assert_eq!(leb128_read(&[0x80]), None); // unterminated
        assert_eq!(leb128_read(&[0x01, 0x01]), None); // bytes after the end
        assert_eq!(leb128_read(&[0xff, 0xff, 0xff, 0xff, 0x0f]), Some(u32::MAX));
        assert_eq!(leb128_read(&[0xff, 0xff, 0xff, 0xff, 0x1f]), None); // > u32
        assert_eq!(leb128_read(&[]), None);
    }

    fn any_target() -> impl Strategy<Value = Target> {
        (any::<u128>(), 0u8..3, any::<u32>()).prop_map(|(id, purpose, index)| {
            let d = DeliveryId::parse(&uuid::Uuid::from_u128(id).to_string()).unwrap();
            match purpose {
                0 => Target::Open(d),
                1 => Target::Click(d, index),
                _ => Target::Unsubscribe(d),
            }
        })
    }

    proptest! {
        #[test]
        fn round_trip(target in any_target(), key_id: u8, secret: Vec<u8>) {
            let k = TokenKeys::single(Key::derive(key_id, &secret));
            let token = sign(&k, &target);
            prop_assert!(token.len() <= MAX_TOKEN_LEN);
            prop_assert_eq!(verify(&k, &token), Some(target));
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,80}") {
            let _ = verify(&keys(), &text);
        }
    }
}
