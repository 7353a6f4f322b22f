//! DKIM signing (RFC 6376) of outgoing mail with per-domain keys.
//!
//! Keys are files in the data directory, `DATA_DIR/dkim/<domain>.<selector>.pem`
//! (an RSA 2048 private key, PKCS#8 PEM, readable only by its owner):
//! `posthorn domains add` writes one and prints the TXT record to publish,
//! and `serve` loads them all when it starts. A copy is signed for the
//! domain of its From header (or the nearest parent domain with a key, which
//! DMARC's relaxed alignment accepts), `rsa-sha256`, relaxed/relaxed, over
//! the [`SIGNED_HEADERS`] that the copy has.
//!
//! The RSA operation is ring's (constant time, through mail-auth); the `rsa`
//! crate only generates keys and encodes public keys. Nothing here logs or
//! prints private key material.
//!
//! By duty: `keys` the key files (generate, list, remove, which key
//! is active), `records` what a key publishes in DNS, `sign` the keys
//! `serve` signs with and the signature, `error` what can go wrong. The items are re-exported here, so
//! callers name `dkim::generate`, `dkim::DkimKeys`, whatever file holds them.

mod error;
mod keys;
mod records;
mod sign;

pub use error::DkimError;
pub use keys::{
    DEFAULT_SELECTOR, DomainKey, KEY_BITS, KEY_DIR, generate, list, normalize_domain,
    normalize_selector, remove,
};
pub use records::DnsRecord;
pub use sign::{DkimKeys, SIGNED_HEADERS, author_domain};
