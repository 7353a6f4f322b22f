//! How PostgreSQL's failures become [`StoreError`] kinds, and which of them
//! a writer should answer by running its transaction again.
//!
//! - A lost or refused connection (the server shut down or restarted, a
//!   network failure, too many connections) is
//!   [`Unavailable::Unreachable`]: nothing was committed, and the same
//!   request succeeds once the database is back (the HTTP layer answers
//!   503).
//! - A full disk is [`Unavailable::StorageFull`], as on SQLite.
//! - A unique violation of `tenants.name` is [`StoreError::Conflict`], the
//!   answer SQLite gives to a tenant name that exists.
//! - Everything else is [`StoreError::Backend`], which keeps the driver's
//!   error as its source, so [`is_retryable`] can still tell a
//!   serialization failure, a deadlock or a lost unique race after the
//!   conversion.

use crate::{StoreError, Unavailable};
use ::postgres::error::SqlState;

/// What a failure means to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The transaction lost to a concurrent one (serialization failure
    /// 40001, deadlock 40P01, or a unique violation 23505: a check made in
    /// the transaction did not see a row that a concurrent transaction
    /// committed). Running it again from the start sees the winner.
    Retry,
    /// The one unique violation SQLite answers as a conflict.
    TenantNameTaken,
    /// The server is gone or refuses connections now.
    Unreachable,
    /// The server's disk is full (53100).
    StorageFull,
    /// Anything else.
    Other,
}

/// Sorts a driver error into a [`Failure`].
pub(crate) fn classify(e: &::postgres::Error) -> Failure {
    if e.is_closed() {
        return Failure::Unreachable;
    }
    let Some(code) = e.code() else {
        // No SQLSTATE: the failure happened below the protocol (an I/O
        // error, a refused or reset connection, a timeout while
        // connecting), or in the driver while converting a value.
        return if io_failure(e) {
            Failure::Unreachable
        } else {
            Failure::Other
        };
    };
    if *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED {
        return Failure::Retry;
    }
    if *code == SqlState::UNIQUE_VIOLATION {
        let constraint = e.as_db_error().and_then(|d| d.constraint());
        return if constraint == Some("tenants_name_key") {
            Failure::TenantNameTaken
        } else {
            Failure::Retry
        };
    }
    if *code == SqlState::DISK_FULL {
        return Failure::StorageFull;
    }
    // Class 08: connection exceptions. 57P01-57P03: the server is shutting
    // down (or was told to end this session), crashed, or is starting.
    // 53300: too many connections.
    if code.code().starts_with("08")
        || *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
        || *code == SqlState::TOO_MANY_CONNECTIONS
    {
        return Failure::Unreachable;
    }
    Failure::Other
}

/// Whether the error's chain holds an I/O error: the socket failed, or
/// connecting did (refused, unresolvable, timed out).
fn io_failure(e: &::postgres::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Whether a failed write should be run again from the start (see
/// [`Failure::Retry`]). Works on the [`StoreError`] a driver error became,
/// so a retry loop around code that answers `StoreResult` can ask.
pub(crate) fn is_retryable(e: &StoreError) -> bool {
    match e {
        StoreError::Backend(source) => source
            .downcast_ref::<::postgres::Error>()
            .is_some_and(|pg| classify(pg) == Failure::Retry),
        _ => false,
    }
}

impl From<::postgres::Error> for StoreError {
    fn from(e: ::postgres::Error) -> Self {
        match classify(&e) {
            Failure::TenantNameTaken => {
                StoreError::Conflict("a tenant with this name exists".into())
            }
            Failure::Unreachable => StoreError::Unavailable {
                cause: Unavailable::Unreachable,
                detail: e.to_string(),
            },
            Failure::StorageFull => StoreError::storage_full(e),
            Failure::Retry | Failure::Other => StoreError::backend(e),
        }
    }
}
