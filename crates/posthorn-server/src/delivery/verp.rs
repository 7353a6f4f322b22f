//! VERP return paths: `bounces+TOKEN@DOMAIN`, where TOKEN is the delivery id
//! and an HMAC-SHA256 tag under the server secret, in lower-case base32 (so
//! that a relay that changes the case of a local part does not break it).
//! An asynchronous bounce to that address names its delivery, and a forged
//! or damaged token is recognised as such. Tokens signed with an earlier
//! server secret listed in `[delivery] previous_secrets` still verify.

use hmac::{Hmac, Mac};
use posthorn_core::DeliveryId;
use sha2::Sha256;

/// Bytes of the HMAC kept in a token: 80 bits, ample against forgery of
/// bounce attributions, and the address stays well under 64 characters.
const TAG_BYTES: usize = 10;

/// Signs tokens with the server secret and checks them against it and the
/// earlier secrets still accepted (`[delivery] previous_secrets`), so that
/// replacing the secret does not turn every return path still out in the
/// world into a forgery: bounces arrive days after the mail left.
#[derive(Clone)]
pub struct VerpSigner {
    secret: Vec<u8>,
    also_accepted: Vec<Vec<u8>>,
}

impl std::fmt::Debug for VerpSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VerpSigner(<secret>, {} previous)",
            self.also_accepted.len()
        )
    }
}

/// The tag of a delivery id under one secret. A token carries no key id
/// (there is no room in a local part to spare), so checking tries each
/// accepted secret.
fn tag(secret: &[u8], id: &[u8; 16]) -> [u8; TAG_BYTES] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(b"posthorn-verp-v1");
    mac.update(id);
    let full = mac.finalize().into_bytes();
    let mut tag = [0u8; TAG_BYTES];
    tag.copy_from_slice(&full[..TAG_BYTES]);
    tag
}

impl VerpSigner {
    /// A signer that signs and accepts with `secret` only.
    pub fn new(secret: &[u8]) -> Self {
        Self {
            secret: secret.to_vec(),
            also_accepted: Vec::new(),
        }
    }

    /// Also accepts tokens signed with these earlier secrets (never signs
    /// with them).
    pub fn also_accepting<S: AsRef<[u8]>>(mut self, previous: impl IntoIterator<Item = S>) -> Self {
        self.also_accepted
            .extend(previous.into_iter().map(|s| s.as_ref().to_vec()));
        self
    }

    /// The token for a delivery.
    pub fn token(&self, delivery: &DeliveryId) -> String {
        let id = uuid_bytes(delivery.as_str());
        let mut raw = id.to_vec();
        raw.extend_from_slice(&tag(&self.secret, &id));
        base32(&raw)
    }

    /// The return path for a delivery.
    pub fn return_path(&self, delivery: &DeliveryId, domain: &str) -> String {
        posthorn_core::address::bounce_address(&self.token(delivery), domain)
    }

    /// The delivery a token (or a whole `bounces+TOKEN@domain` address) names,
    /// if its tag is genuine under the current secret or an earlier one.
    pub fn verify(&self, token_or_address: &str) -> Option<DeliveryId> {
        let local = token_or_address.split('@').next()?.to_ascii_lowercase();
        let token = local
            .strip_prefix(posthorn_core::address::BOUNCE_PREFIX)
            .unwrap_or(&local);
        let raw = unbase32(token)?;
        // One spelling per token: the unused low bits of the last
        // character must be zero (as `token` writes them), so a token
        // cannot be varied into others that name the same delivery.
        if raw.len() != 16 + TAG_BYTES || base32(&raw) != token {
            return None;
        }
        let id: [u8; 16] = raw[..16].try_into().ok()?;
        // Constant time, and every secret is tried even after a match: a
        // forger learns nothing from how long this takes.
        use subtle::ConstantTimeEq;
        let genuine = std::iter::once(&self.secret)
            .chain(&self.also_accepted)
            .fold(subtle::Choice::from(0), |genuine, secret| {
                genuine | tag(secret, &id).ct_eq(&raw[16..])
            });
        if !bool::from(genuine) {
            return None;
        }
        DeliveryId::parse(&hex::encode(id))
    }
}

fn uuid_bytes(id: &str) -> [u8; 16] {
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    let mut out = [0u8; 16];
    if let Ok(bytes) = hex::decode(hex) {
        let n = bytes.len().min(16);
        out[..n].copy_from_slice(&bytes[..n]);
    }
    out
}

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// RFC 4648 base32, lower case, no padding.
fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn unbase32(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let value = ALPHABET.iter().position(|&a| a == c)? as u32;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_fit_in_a_local_part() {
        let signer = VerpSigner::new(b"secret");
        let id = DeliveryId::generate();
        let address = signer.return_path(&id, "bounce.example.com");
        let local = address.split('@').next().unwrap();
        assert!(local.len() <= 64, "{local}");
        assert!(
            local
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'+')
        );
        assert_eq!(signer.verify(&address), Some(id.clone()));
        assert_eq!(
            signer.verify(&address.to_uppercase()),
            Some(id),
            "case does not matter"
        );
    }

    #[test]
    fn forged_damaged_and_foreign_tokens_are_refused() {
        let signer = VerpSigner::new(b"secret");
        let id = DeliveryId::generate();
        let token = signer.token(&id);
        let mut damaged = token.clone().into_bytes();
        damaged[5] = if damaged[5] == b'a' { b'b' } else { b'a' };
        assert_eq!(signer.verify(&String::from_utf8(damaged).unwrap()), None);
        assert_eq!(VerpSigner::new(b"other").verify(&token), None);
        assert_eq!(signer.verify(&token[..token.len() - 2]), None);
        assert_eq!(signer.verify("bounces+hello!@x"), None);
        // The last character carries two unused bits, zero as `token`
        // writes them: the other three spellings of it decode to the same
        // bytes and are refused.
        let last = token.as_bytes()[token.len() - 1];
        let index = ALPHABET.iter().position(|&c| c == last).unwrap();
        assert_eq!(index & 3, 0, "{token}");
        for unused in 1..4 {
            let mut variant = token.clone().into_bytes();
            *variant.last_mut().unwrap() = ALPHABET[index | unused];
            let variant = String::from_utf8(variant).unwrap();
            assert_eq!(signer.verify(&variant), None, "{variant}");
        }
        assert_eq!(signer.verify(""), None);
    }

    #[test]
    fn tokens_of_a_previous_secret_still_verify_and_are_never_signed_again() {
        let old = VerpSigner::new(b"old secret");
        let rotated = VerpSigner::new(b"new secret").also_accepting([b"old secret"]);
        let id = DeliveryId::generate();
        let before = old.token(&id);
        assert_eq!(
            rotated.verify(&before),
            Some(id.clone()),
            "still out in the world"
        );
        assert_ne!(rotated.token(&id), before, "new tokens use the new secret");
        assert_eq!(rotated.verify(&rotated.token(&id)), Some(id.clone()));
        assert_eq!(
            old.verify(&rotated.token(&id)),
            None,
            "the old secret alone does not accept the new token"
        );
        // A secret that is neither current nor listed is a forgery.
        let stranger = VerpSigner::new(b"other").token(&id);
        assert_eq!(rotated.verify(&stranger), None);
        assert_eq!(VerpSigner::new(b"new secret").verify(&before), None);
        assert_eq!(
            format!("{rotated:?}"),
            "VerpSigner(<secret>, 1 previous)",
            "no secret in Debug"
        );
    }
}
