//! The data directory is private to the user Posthorn runs as: the
//! database holds every recipient address, message body and API key hash,
//! beside the server secret and private keys. The directory is 0700 and
//! every file in it 0600, however it was created.
//!
//! Files are created that way where they are written (the store creates
//! the database file 0600 before SQLite opens it, and SQLite gives its
//! `-wal` and `-shm` files the database file's mode); [`secure`] runs at
//! start and tightens what an older version, another tool or a restored
//! backup left readable, because the process umask is not ours to rely on
//! (and setting it would take `unsafe` code).

use std::path::Path;

/// Creates `dir` (and missing parents) readable only by its owner.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Creates `dir` if needed, then takes every permission of group and
/// others from it and from everything under it: directories end 0700 and
/// files 0600 (at most: an owner's read-only file stays read-only).
/// Symbolic links are left alone and not followed, so nothing outside the
/// directory is changed. Returns the paths it changed. An entry it cannot
/// change (another user's file) is logged and left: the directory itself
/// is private, so nobody else reaches it through there.
pub fn secure(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    create_private_dir(dir)?;
    let mut changed = Vec::new();
    tighten(dir, &mut changed, true)?;
    for path in &changed {
        tracing::info!(path = %path.display(), "made readable by its owner only");
    }
    Ok(changed)
}

/// Tightens `path` and what is under it; an error is returned only for
/// the data directory itself (`top`), logged for anything inside it.
#[cfg(unix)]
fn tighten(path: &Path, changed: &mut Vec<std::path::PathBuf>, top: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let result = (|| {
        let meta = std::fs::symlink_metadata(path)?;
        if meta.file_type().is_symlink() {
            return Ok(());
        }
        let mode = meta.permissions().mode() & 0o7777;
        // Only the owner's bits are kept (no setuid/setgid/sticky either).
        let private = mode & 0o700;
        if mode != private {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(private))?;
            changed.push(path.to_path_buf());
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(path)? {
                tighten(&entry?.path(), changed, false)?;
            }
        }
        Ok(())
    })();
    match result {
        Err(e) if !top => {
            tracing::warn!(path = %path.display(), error = %e, "could not make this readable by its owner only");
            Ok(())
        }
        other => other,
    }
}

#[cfg(not(unix))]
fn tighten(_: &Path, _: &mut Vec<std::path::PathBuf>, _: bool) -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    fn set(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn an_open_directory_and_its_files_are_made_private_and_links_left_alone() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        std::fs::create_dir_all(data.join("dkim")).unwrap();
        let outside = root.path().join("outside.txt");
        std::fs::write(&outside, "not ours").unwrap();
        set(&outside, 0o644);
        for (name, m) in [
            ("posthorn.db", 0o644),
            ("posthorn.db-wal", 0o664),
            ("dkim/example.com.sel.pem", 0o640),
            ("readonly", 0o400),
        ] {
            std::fs::write(data.join(name), "x").unwrap();
            set(&data.join(name), m);
        }
        set(&data, 0o755);
        set(&data.join("dkim"), 0o2775);
        std::os::unix::fs::symlink(&outside, data.join("link")).unwrap();

        let changed = secure(&data).unwrap();
        assert_eq!(changed.len(), 5, "{changed:?}");
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("dkim")), 0o700);
        assert_eq!(mode(&data.join("posthorn.db")), 0o600);
        assert_eq!(mode(&data.join("posthorn.db-wal")), 0o600);
        assert_eq!(mode(&data.join("dkim/example.com.sel.pem")), 0o600);
        assert_eq!(mode(&data.join("readonly")), 0o400, "no permission added");
        assert_eq!(mode(&outside), 0o644, "a link's target is not ours");
        // Done once: nothing left to change.
        assert!(secure(&data).unwrap().is_empty());
        // A missing directory is created private.
        let fresh = root.path().join("a/b");
        secure(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
    }
}
