//! What can keep Posthorn from starting: [`StartError`] for opening the
//! application and its listeners, [`RouteError`] for the delivery routes.
//! The messages are for the operator, who reads them on the terminal or in
//! the service log; each includes its cause (the I/O error, the library's
//! words), so the cause is not also returned as `source()`, where error
//! reporters would print it a second time.

use crate::dkim::DkimError;
use posthorn_smtp::tls::TlsSetupError;
use posthorn_store::StoreError;
use std::path::PathBuf;

/// Why the application or one of its listeners could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A file or directory of the data directory (or a configured file)
    /// could not be read, created or written.
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A file Posthorn wrote holds something it cannot use (the server
    /// secret, the node name): changed by hand, or damaged.
    #[error("{}: {reason}", path.display())]
    BadFile { path: PathBuf, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A DKIM key (file, or row on PostgreSQL) cannot be used: mail for
    /// its domain would otherwise leave unsigned without anyone noticing.
    #[error(transparent)]
    Dkim(#[from] DkimError),
    /// `[bounce] rules_file` does not parse (every error, one a line).
    #[error("{}", .0.join("\n"))]
    ReplyRules(Vec<String>),
    /// `[tracking.machine] networks_file` does not parse (every error, one
    /// a line).
    #[error("{}", .0.join("\n"))]
    MachineNetworks(Vec<String>),
    /// Only one of `[submission] cert_file` and `key_file` is set.
    #[error("set both [submission] cert_file and key_file, or neither")]
    CertificatePair,
    /// The STARTTLS certificate and key cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error("starting the mailbox simulator: {0}")]
    Simulator(std::io::Error),
    /// The thread that reloads DKIM keys changed in the database.
    #[error("starting the DKIM key watch: {0}")]
    KeyWatch(std::io::Error),
    #[error(transparent)]
    Routes(#[from] RouteError),
    /// `[ingest] sns_certificate_file` cannot be read or used.
    #[error("{0}")]
    Ingest(String),
}

impl StartError {
    /// For `map_err`: an I/O error on `path`.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |error| StartError::Io { path, error }
    }
}

/// A delivery route (`[delivery.routes]`, `--route`) or the smarthost that
/// does not name a reachable `host:port`. Resolved once, at start.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("route for {domain}: `{target}` is not a reachable host:port")]
    Route { domain: String, target: String },
    #[error("smarthost `{0}` is not a reachable host:port")]
    Smarthost(String),
}
