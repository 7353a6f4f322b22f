//! How SQLite's failures become [`StoreError`] kinds: a full disk is
//! [`Unavailable::StorageFull`], a stored value that cannot be read is
//! [`StoreError::Corrupt`], anything else is a backend failure.

use crate::{StoreError, Unavailable};

/// A stored value this code cannot read, while a row is being mapped
/// (inside rusqlite, whose row closures return `rusqlite::Error`). The
/// conversion below turns it into [`StoreError::Corrupt`].
#[derive(Debug, thiserror::Error)]
#[error("{table}.{column} holds {value:?}, which is not a value this version can read")]
pub(crate) struct Undecodable {
    pub(crate) table: &'static str,
    pub(crate) column: &'static str,
    pub(crate) value: String,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        // SQLite answers SQLITE_FULL when a write to the database, its log
        // or a temporary file finds the disk full (ENOSPC), and
        // SQLITE_IOERR_SHMSIZE when the log's index cannot grow (its file
        // is extended by writing to it, which fails the same way).
        let full = e.sqlite_error().is_some_and(|f| {
            f.code == rusqlite::ErrorCode::DiskFull
                || f.extended_code == rusqlite::ffi::SQLITE_IOERR_SHMSIZE
        });
        if full {
            return StoreError::Unavailable {
                cause: Unavailable::StorageFull,
                detail: e.to_string(),
            };
        }
        match e {
            rusqlite::Error::FromSqlConversionFailure(at, ty, inner) => {
                match inner.downcast::<Undecodable>() {
                    Ok(u) => StoreError::Corrupt {
                        table: u.table,
                        column: u.column,
                        value: u.value,
                    },
                    Err(inner) => StoreError::backend(rusqlite::Error::FromSqlConversionFailure(
                        at, ty, inner,
                    )),
                }
            }
            e => StoreError::backend(e),
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::backend(format!("stored JSON: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::ffi;

    fn sqlite(code: std::ffi::c_int) -> StoreError {
        rusqlite::Error::SqliteFailure(ffi::Error::new(code), None).into()
    }

    #[test]
    fn a_full_disk_is_its_own_error_and_other_failures_are_not() {
        assert!(sqlite(ffi::SQLITE_FULL).is_storage_full());
        assert!(sqlite(ffi::SQLITE_IOERR_SHMSIZE).is_storage_full());
        assert!(sqlite(ffi::SQLITE_FULL).is_transient());
        for other in [ffi::SQLITE_CORRUPT, ffi::SQLITE_IOERR_FSYNC] {
            let e = sqlite(other);
            assert!(matches!(e, StoreError::Backend(_)), "{e:?}");
            assert!(!e.is_transient());
        }
    }

    #[test]
    fn an_undecodable_value_is_corrupt_and_other_conversions_are_backend_failures() {
        let undecodable = rusqlite::Error::FromSqlConversionFailure(
            1,
            rusqlite::types::Type::Text,
            Box::new(Undecodable {
                table: "contacts",
                column: "status",
                value: "bounced-forever".into(),
            }),
        );
        assert!(matches!(
            StoreError::from(undecodable),
            StoreError::Corrupt { table: "contacts", column: "status", ref value }
                if value == "bounced-forever"
        ));
        let other = rusqlite::Error::FromSqlConversionFailure(
            1,
            rusqlite::types::Type::Text,
            "not a number".into(),
        );
        let e = StoreError::from(other);
        assert!(matches!(e, StoreError::Backend(_)), "{e:?}");
        assert!(e.to_string().contains("not a number"), "{e}");
    }
}
