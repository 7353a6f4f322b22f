//! Where the keys live. On SQLite, files in the data directory,
//! `DATA_DIR/dkim/<domain>.<selector>.pem` (PKCS#8 PEM, 0600 in a 0700
//! directory): the file name is the only index, the modification time says
//! which key is newest. On PostgreSQL, rows of the database's `dkim_keys`,
//! so that every node sharing the database signs with the same keys; a
//! node's own key files are imported into it when it starts
//! ([`import_key_files`]).
//!
//! Everything here is blocking (file I/O, or the store's blocking DKIM
//! calls, which run on a thread of their own): async callers run it on the
//! blocking pool.

use super::DkimError;
use super::keys::{
    KEY_DIR, KeyPlace, StoredKey, check, examine, normalize_domain, normalize_selector,
};
use posthorn_core::Millis;
use posthorn_store::{DkimKeyRecord, PgStore, StoreError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Where a server's (or the CLI's) DKIM keys are kept.
#[derive(Clone)]
pub enum KeyHome {
    /// Files in this data directory's `dkim/` (SQLite: one node).
    Files(PathBuf),
    /// The PostgreSQL database that nodes share.
    Database(Arc<PgStore>),
}

impl std::fmt::Debug for KeyHome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyHome::Files(dir) => f.debug_tuple("Files").field(dir).finish(),
            KeyHome::Database(store) => f.debug_tuple("Database").field(&store.target()).finish(),
        }
    }
}

impl KeyHome {
    /// The keys' version, when their home has one (the database: it moves
    /// with every committed change). Files have none: a node on SQLite is
    /// alone, and reloads after its own changes.
    pub fn version(&self) -> Result<Option<i64>, DkimError> {
        match self {
            KeyHome::Files(_) => Ok(None),
            KeyHome::Database(store) => Ok(Some(store.dkim_keys_version()?)),
        }
    }

    /// Every key as kept, names checked (not yet the keys: [`examine`]).
    pub(super) fn read_all(&self) -> Result<Vec<StoredKey>, DkimError> {
        match self {
            KeyHome::Files(data_dir) => read_files(data_dir),
            KeyHome::Database(store) => store.dkim_keys()?.into_iter().map(from_row).collect(),
        }
    }

    /// Fails when `domain` has a key with `selector` already (for files,
    /// before a key is made for nothing; the database refuses a second
    /// key by itself when it is stored).
    pub(super) fn check_free(&self, domain: &str, selector: &str) -> Result<(), DkimError> {
        match self {
            KeyHome::Files(data_dir) => {
                let path = key_path(data_dir, domain, selector);
                if path.exists() {
                    return Err(DkimError::KeyExists {
                        domain: domain.to_owned(),
                        selector: selector.to_owned(),
                        place: KeyPlace::File(path),
                    });
                }
                Ok(())
            }
            KeyHome::Database(_) => Ok(()),
        }
    }

    /// Keeps a new key, never replacing one.
    pub(super) fn store_new(
        &self,
        domain: &str,
        selector: &str,
        pem: &str,
    ) -> Result<KeyPlace, DkimError> {
        match self {
            KeyHome::Files(data_dir) => {
                let dir = data_dir.join(KEY_DIR);
                create_private_dir(&dir).map_err(DkimError::io("creating", &dir))?;
                let path = key_path(data_dir, domain, selector);
                write_new_private_file(&path, pem.as_bytes()).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::AlreadyExists {
                        DkimError::KeyExists {
                            domain: domain.to_owned(),
                            selector: selector.to_owned(),
                            place: KeyPlace::File(path.clone()),
                        }
                    } else {
                        DkimError::io("writing", &path)(e)
                    }
                })?;
                Ok(KeyPlace::File(path))
            }
            KeyHome::Database(store) => {
                let place = KeyPlace::Database {
                    domain: domain.to_owned(),
                    selector: selector.to_owned(),
                };
                let record = DkimKeyRecord {
                    domain: domain.to_owned(),
                    selector: selector.to_owned(),
                    private_key_pem: pem.to_owned(),
                    created_at: millis(SystemTime::now()),
                };
                match store.insert_dkim_key(&record) {
                    Ok(()) => Ok(place),
                    Err(StoreError::Conflict(_)) => Err(DkimError::KeyExists {
                        domain: record.domain,
                        selector: record.selector,
                        place,
                    }),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Deletes `domain`'s keys (only `selector`'s, if given), names
    /// normalised; how many.
    pub(super) fn delete(&self, domain: &str, selector: Option<&str>) -> Result<usize, DkimError> {
        match self {
            KeyHome::Files(data_dir) => {
                let mut removed = 0;
                for (key, _) in examine(read_files(data_dir)?)? {
                    if key.domain == domain && selector.is_none_or(|s| s == key.selector) {
                        let KeyPlace::File(path) = &key.place else {
                            continue;
                        };
                        std::fs::remove_file(path).map_err(DkimError::io("removing", path))?;
                        removed += 1;
                    }
                }
                Ok(removed)
            }
            KeyHome::Database(store) => Ok(store.remove_dkim_keys(domain, selector)? as usize),
        }
    }
}

/// `DATA_DIR/dkim/<domain>.<selector>.pem`.
fn key_path(data_dir: &Path, domain: &str, selector: &str) -> PathBuf {
    data_dir
        .join(KEY_DIR)
        .join(format!("{domain}.{selector}.pem"))
}

/// The key files in `DATA_DIR/dkim` (none when it does not exist); other
/// files (not `*.pem`, or hidden) are ignored, a `.pem` file whose name is
/// not `<domain>.<selector>.pem` is an error.
fn read_files(data_dir: &Path) -> Result<Vec<StoredKey>, DkimError> {
    let dir = data_dir.join(KEY_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(DkimError::io("reading", &dir)(e)),
    };
    let mut keys = Vec::new();
    for entry in entries {
        let entry = entry.map_err(DkimError::io("reading", &dir))?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = file_name.strip_suffix(".pem") else {
            continue;
        };
        if file_name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let misnamed = || DkimError::MisnamedFile(path.clone());
        let (domain, selector) = stem.rsplit_once('.').ok_or_else(misnamed)?;
        let domain = normalize_domain(domain).map_err(|_| misnamed())?;
        let selector = normalize_selector(selector).map_err(|_| misnamed())?;
        let pem = std::fs::read(&path).map_err(DkimError::io("reading", &path))?;
        let made = entry
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        keys.push(StoredKey {
            domain,
            selector,
            pem,
            made,
            place: KeyPlace::File(path),
        });
    }
    Ok(keys)
}

/// A row of `dkim_keys`; its names must be as Posthorn writes them (a row
/// changed by hand into something else is refused, not guessed at).
fn from_row(row: DkimKeyRecord) -> Result<StoredKey, DkimError> {
    let place = KeyPlace::Database {
        domain: row.domain.clone(),
        selector: row.selector.clone(),
    };
    let normal = normalize_domain(&row.domain).is_ok_and(|d| d == row.domain)
        && normalize_selector(&row.selector).is_ok_and(|s| s == row.selector);
    if !normal {
        return Err(DkimError::UnusableKey {
            place,
            reason: "the domain or selector is not in the form Posthorn keeps (lower case, ASCII)"
                .into(),
        });
    }
    Ok(StoredKey {
        domain: row.domain,
        selector: row.selector,
        pem: row.private_key_pem.into_bytes(),
        made: SystemTime::UNIX_EPOCH + Duration::from_millis(row.created_at.max(0) as u64),
        place,
    })
}

fn millis(at: SystemTime) -> Millis {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}

/// A key file of a data directory, as the database would keep it.
#[derive(Debug)]
pub struct KeyFile {
    pub path: PathBuf,
    /// Made when the file was last modified (what decides the active key
    /// among files), so the same key stays active in the database.
    pub record: DkimKeyRecord,
}

/// The key files of `data_dir`, each checked as `serve` checks a key it
/// loads (a file that is not a usable key is an error naming it): what
/// `store copy` and [`import_key_files`] put into the database.
pub fn key_files(data_dir: &Path) -> Result<Vec<KeyFile>, DkimError> {
    let mut files = Vec::new();
    for key in read_files(data_dir)? {
        check(&key)?;
        let KeyPlace::File(path) = key.place else {
            unreachable!("read from files")
        };
        let private_key_pem = String::from_utf8(key.pem).map_err(|_| DkimError::UnusableKey {
            place: KeyPlace::File(path.clone()),
            reason: "not PEM text".into(),
        })?;
        files.push(KeyFile {
            record: DkimKeyRecord {
                domain: key.domain,
                selector: key.selector,
                private_key_pem,
                created_at: millis(key.made),
            },
            path,
        });
    }
    files.sort_by(|a, b| {
        (&a.record.domain, &a.record.selector).cmp(&(&b.record.domain, &b.record.selector))
    });
    Ok(files)
}

/// What the import did with one key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imported {
    /// The database did not have it: it does now.
    Added,
    /// The database has this very key already (another node, or `store
    /// copy`, put it there).
    AlreadyThere,
    /// The database has another key under this domain and selector: that
    /// one signs, the file is left alone (and said so at every start).
    Different,
}

/// The suffix an imported key file gets: it is in the database, and is no
/// longer read (not imported again, so a key removed from the database
/// never comes back from a node's old file).
pub const IMPORTED_SUFFIX: &str = ".imported";

/// Moves a node's key files into the database it starts on, so that a
/// node moving up from SQLite keeps signing, and every node with it: each
/// file the database lacks is added; a key is never replaced (one the
/// database has under the same domain and selector stays). Every file the
/// database now holds is renamed `<name>.pem.imported`; a file whose
/// domain and selector the database holds with another key is left as it
/// is, with a warning at every start. Logs what it did; blocking.
pub fn import_key_files(
    store: &PgStore,
    data_dir: &Path,
) -> Result<Vec<(KeyFile, Imported)>, DkimError> {
    let files = key_files(data_dir)?;
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let mut in_database = store.dkim_keys()?;
    let mut done = Vec::with_capacity(files.len());
    for file in files {
        let held = |keys: &[DkimKeyRecord]| {
            keys.iter()
                .find(|k| k.domain == file.record.domain && k.selector == file.record.selector)
                .map(|k| k.private_key_pem.trim() == file.record.private_key_pem.trim())
        };
        let outcome = match held(&in_database) {
            Some(true) => Imported::AlreadyThere,
            Some(false) => Imported::Different,
            None => match store.insert_dkim_key(&file.record) {
                Ok(()) => Imported::Added,
                // Another node imported the same domain and selector just
                // now: whose key is it?
                Err(StoreError::Conflict(_)) => {
                    in_database = store.dkim_keys()?;
                    match held(&in_database) {
                        Some(true) => Imported::AlreadyThere,
                        _ => Imported::Different,
                    }
                }
                Err(e) => return Err(e.into()),
            },
        };
        let (domain, selector, path) = (
            &file.record.domain,
            &file.record.selector,
            file.path.display(),
        );
        match outcome {
            Imported::Added | Imported::AlreadyThere => {
                let mut renamed = file.path.clone().into_os_string();
                renamed.push(IMPORTED_SUFFIX);
                match std::fs::rename(&file.path, &renamed) {
                    Ok(()) => tracing::info!(
                        %domain, %selector, file = %path, added = (outcome == Imported::Added),
                        "DKIM key file imported into the database (every node signs with it); the file is renamed *.pem.imported"
                    ),
                    Err(error) => tracing::warn!(
                        %domain, %selector, file = %path, %error,
                        "DKIM key file imported into the database, but it could not be renamed: remove it"
                    ),
                }
            }
            Imported::Different => tracing::warn!(
                %domain, %selector, file = %path,
                "the database holds another DKIM key with this domain and selector: that one signs, this file is not used; remove it"
            ),
        }
        done.push((file, outcome));
    }
    Ok(done)
}

/// Creates the key directory, readable only by its owner.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Writes a new file only its owner can read; fails if it exists (like
/// `app::write_private_file`, but never replaces a key).
fn write_new_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    if written.is_err() {
        let _ = std::fs::remove_file(path);
    }
    written
}
