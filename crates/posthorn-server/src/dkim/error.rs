//! What can go wrong with DKIM keys, in files or in the database. The
//! messages are for the operator (the CLI prints them) or, for a refused
//! name, for the API client; none holds key material.

use super::KeyPlace;
use posthorn_store::StoreError;
use std::path::PathBuf;

/// Why a DKIM key could not be made, read, listed, removed or imported.
///
/// Each message includes its cause (the I/O error, the parser's words), so
/// a log line with `%error` tells the whole story; the cause is therefore
/// not also returned as `source()`, where error reporters would print it a
/// second time.
#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    /// Not a domain name keys can be filed under (as given).
    #[error("`{0}` is not a domain name like example.com")]
    InvalidDomain(String),
    /// Not one DNS label (as given).
    #[error(
        "`{0}` is not a selector: use one DNS label (letters, digits, hyphens), like `posthorn` or `2025a`"
    )]
    InvalidSelector(String),
    /// `<selector>._domainkey.<domain>` could never be published.
    #[error("{0} is longer than a DNS name may be")]
    NameTooLong(String),
    /// A key is never replaced: its record may be published and in use.
    #[error(
        "{domain} already has a key with selector `{selector}` ({place}); remove it first, or choose another --selector"
    )]
    KeyExists {
        domain: String,
        selector: String,
        place: KeyPlace,
    },
    /// A file in the key directory whose name is not `<domain>.<selector>.pem`.
    #[error("{}: a DKIM key file is named <domain>.<selector>.pem", .0.display())]
    MisnamedFile(PathBuf),
    /// A key (file or database row) that is not a usable RSA private key.
    #[error("{place}: {reason}")]
    UnusableKey { place: KeyPlace, reason: String },
    /// The database that keeps the keys on PostgreSQL failed (or refused).
    #[error("DKIM keys in the database: {0}")]
    Store(#[from] StoreError),
    /// Reading or writing the key directory failed (`doing`: "reading",
    /// "creating", "writing", "removing").
    #[error("{doing} {}: {error}", path.display())]
    Io {
        doing: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    /// Making or encoding a key failed (`doing`: "generating an RSA key",
    /// "encoding the key", ...).
    #[error("{doing}: {reason}")]
    Crypto { doing: &'static str, reason: String },
}

impl DkimError {
    pub(super) fn io(
        doing: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |error| DkimError::Io { doing, path, error }
    }
}
