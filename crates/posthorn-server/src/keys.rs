//! API keys: `ph_<id>_<secret>`, where `<id>` is the key's public id (32 hex
//! digits) and `<secret>` is 32 random bytes in URL-safe base64. Only the
//! SHA-256 of the secret is stored; it is compared in constant time.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use posthorn_core::id::ApiKeyId;
use posthorn_store::{ApiKeyRecord, Store, StoreError, Tenant};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const PREFIX: &str = "ph_";

/// A freshly made key. The full text is shown once and never stored.
pub struct GeneratedKey {
    pub id: ApiKeyId,
    /// The whole key, as the client sends it.
    pub token: String,
    /// Hex SHA-256 of the secret part, for storage.
    pub secret_hash: String,
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("id", &self.id)
            .field("token", &"<redacted>")
            .finish()
    }
}

pub fn generate() -> GeneratedKey {
    let id = ApiKeyId::generate();
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let token = format!(
        "{PREFIX}{}_{}",
        id.as_str().replace('-', ""),
        URL_SAFE_NO_PAD.encode(secret)
    );
    GeneratedKey {
        id,
        token,
        secret_hash: hash_secret(&secret),
    }
}

/// A key as presented by a client, split into its parts.
pub struct PresentedKey {
    pub id: ApiKeyId,
    secret: Vec<u8>,
}

/// Splits a presented key; `None` when it is not shaped like one of ours.
pub fn parse(token: &str) -> Option<PresentedKey> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id_hex, secret) = (rest.get(..32)?, rest.get(32..)?.strip_prefix('_')?);
    let id = ApiKeyId::parse(id_hex)?;
    let secret = URL_SAFE_NO_PAD.decode(secret).ok()?;
    (secret.len() == 32).then_some(PresentedKey { id, secret })
}

impl PresentedKey {
    /// Whether the secret matches the stored hash, in constant time.
    pub fn matches(&self, stored_hash: &str) -> bool {
        let Ok(stored) = hex::decode(stored_hash) else {
            return false;
        };
        let presented = Sha256::digest(&self.secret);
        presented.as_slice().ct_eq(stored.as_slice()).into()
    }
}

/// Why a presented key was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum KeyRefusal {
    /// Not shaped like one of our keys, unknown, or the wrong secret.
    #[error("the API key is not valid")]
    Invalid,
    #[error("the API key has been revoked")]
    Revoked,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks a key as a client presented it (a bearer token or an SMTP
/// password): the one check the API and SMTP submission both make. The
/// caller then checks the scope it needs.
pub async fn verify(store: &dyn Store, token: &str) -> Result<(ApiKeyRecord, Tenant), KeyRefusal> {
    let presented = parse(token).ok_or(KeyRefusal::Invalid)?;
    let (key, tenant) = store
        .api_key(&presented.id)
        .await?
        .ok_or(KeyRefusal::Invalid)?;
    if !presented.matches(&key.secret_hash) {
        return Err(KeyRefusal::Invalid);
    }
    if key.revoked_at.is_some() {
        return Err(KeyRefusal::Revoked);
    }
    Ok((key, tenant))
}

fn hash_secret(secret: &[u8]) -> String {
    hex::encode(Sha256::digest(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_match_only_their_hash() {
        let key = generate();
        let presented = parse(&key.token).expect("own key parses");
        assert_eq!(presented.id, key.id);
        assert!(presented.matches(&key.secret_hash));
        let other = generate();
        assert!(!presented.matches(&other.secret_hash));
        assert!(
            !key.token.contains(&key.secret_hash),
            "the stored hash is not in the key"
        );
        assert!(
            !format!("{key:?}").contains(&key.token),
            "Debug redacts the key"
        );
    }

    #[test]
    fn malformed_keys_do_not_parse() {
        let key = generate();
        let last = key.token.chars().last().unwrap();
        let other = if last == 'A' { 'B' } else { 'A' };
        let tampered = format!("{}{other}", &key.token[..key.token.len() - 1]);
        // Still well-formed, but the secret no longer matches.
        if let Some(p) = parse(&tampered) {
            assert!(!p.matches(&key.secret_hash));
        }
        for bad in [
            "",
            "ph_",
            "Bearer x",
            "ph_zzzz_abc",
            &key.token[3..],
            &key.token[..40],
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }
}
