//! DKIM signing (RFC 6376) of outgoing mail with per-domain keys.
//!
//! Each key is an RSA 2048 private key (PKCS#8 PEM). Its home
//! ([`KeyHome`]) is the data directory on SQLite,
//! `DATA_DIR/dkim/<domain>.<selector>.pem` (readable only by its owner),
//! and the database on PostgreSQL (`dkim_keys`), so that every node
//! sharing it signs alike; a node's key files are imported into the
//! database when it starts there. `posthorn domains add` and `POST
//! /v1/domains` make a key and give the TXT record to publish; `serve`
//! loads the keys when it starts, after its own changes, and on PostgreSQL
//! whenever the database's keys change ([`KeyWatch`], every [`KEY_POLL`]).
//! A copy is signed for the domain of its From header (or the nearest
//! parent domain with a key, which DMARC's relaxed alignment accepts),
//! `rsa-sha256`, relaxed/relaxed, over the [`SIGNED_HEADERS`] that the
//! copy has.
//!
//! The RSA operation is ring's (constant time, through mail-auth); the `rsa`
//! crate only generates keys and encodes public keys. Nothing here logs or
//! prints private key material.
//!
//! By duty: `home` where keys are kept (files or the database, and the
//! import from one into the other), `keys` what is the same wherever they
//! are (generate, list, remove, names, which key is active), `records` what
//! a key publishes in DNS, `sign` the keys `serve` signs with and the
//! signature, `watch` the reload on PostgreSQL, `error` what can go wrong.
//! The items are re-exported here, so callers name `dkim::generate`,
//! `dkim::DkimKeys`, whatever file holds them.

mod error;
mod home;
mod keys;
mod records;
mod sign;
mod watch;

pub use error::DkimError;
pub use home::{IMPORTED_SUFFIX, Imported, KeyFile, KeyHome, import_key_files, key_files};
pub use keys::{
    DEFAULT_SELECTOR, DomainKey, KEY_BITS, KEY_DIR, KeyPlace, generate, list, normalize_domain,
    normalize_selector, remove,
};
pub use records::DnsRecord;
pub use sign::{DkimKeys, SIGNED_HEADERS, author_domain};
pub use watch::{KEY_POLL, KeyWatch};
