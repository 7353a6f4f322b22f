//! VERP return paths: `bounces+TOKEN@DOMAIN`, where TOKEN is the delivery id
//! and an HMAC-SHA256 tag under the server secret, in lower-case base32 (so
//! that a relay that changes the case of a local part does not break it).
//! An asynchronous bounce to that address names its delivery, and a forged
//! or damaged token is recognised as such.

use hmac::{Hmac, Mac};
use posthorn_core::DeliveryId;
use sha2::Sha256;

/// Bytes of the HMAC kept in a token: 80 bits, ample against forgery of
/// bounce attributions, and the address stays well under 64 characters.
const TAG_BYTES: usize = 10;
const PREFIX: &str = "bounces+";

/// Signs and checks tokens with the server secret.
#[derive(Clone)]
pub struct VerpSigner {
    secret: Vec<u8>,
}

impl std::fmt::Debug for VerpSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerpSigner(<secret>)")
    }
}

impl VerpSigner {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            secret: secret.to_vec(),
        }
    }

    fn tag(&self, id: &[u8; 16]) -> [u8; TAG_BYTES] {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(b"posthorn-verp-v1");
        mac.update(id);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&full[..TAG_BYTES]);
        tag
    }

    /// The token for a delivery.
    pub fn token(&self, delivery: &DeliveryId) -> String {
        let id = uuid_bytes(delivery.as_str());
        let mut raw = id.to_vec();
        raw.extend_from_slice(&self.tag(&id));
        base32(&raw)
    }

    /// The return path for a delivery.
    pub fn return_path(&self, delivery: &DeliveryId, domain: &str) -> String {
        format!("{PREFIX}{}@{domain}", self.token(delivery))
    }

    /// The delivery a token (or a whole `bounces+TOKEN@domain` address) names,
    /// if its tag is genuine.
    pub fn verify(&self, token_or_address: &str) -> Option<DeliveryId> {
        let local = token_or_address.split('@').next()?.to_ascii_lowercase();
        let token = local.strip_prefix(PREFIX).unwrap_or(&local);
        let raw = unbase32(token)?;
        // One spelling per token: the unused low bits of the last
        // character must be zero (as `token` writes them), so a token
        // cannot be varied into others that name the same delivery.
        if raw.len() != 16 + TAG_BYTES || base32(&raw) != token {
            return None;
        }
        let id: [u8; 16] = raw[..16].try_into().ok()?;
        let expected = self.tag(&id);
        // Constant time: a forger learns nothing from how long this takes.
        use subtle::ConstantTimeEq;
        if !bool::from(expected.ct_eq(&raw[16..])) {
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
}
