#![allow(unsafe_code)] // FFI: a VFS is C callbacks over raw pointers.

//! A thin VFS over SQLite's default one that gathers the writes of a
//! commit into the write-ahead log and hands them to the kernel at once.
//!
//! SQLite writes each log frame with two `pwrite`s (its 24-byte header, then
//! the page), one after the other at increasing offsets. A group commit of a
//! tracker batch writes ~150 frames: ~300 system calls, a fifth of the
//! writer's time in the profile. Here those writes are kept in memory while
//! they follow each other, and written with one call when anything else
//! happens to the log file: a sync, a read, a write elsewhere, a size
//! question, a truncation, a file control, closing it, or 120 KiB gathered.
//!
//! Why this is safe: a commit is answered after SQLite syncs the log, and
//! the sync writes everything gathered first, so an acknowledged commit is
//! on disk exactly as without the shim. Other connections only read frames
//! the shared WAL index says are committed, and SQLite updates that index
//! after the sync. That ordering only holds with `synchronous = FULL` (with
//! NORMAL a commit does not sync the log), so only FULL connections use
//! this VFS (see `open_connection`). Files other than logs (the database,
//! temporary files) are the default VFS's own, untouched.

use rusqlite::ffi;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::OnceLock;

/// The name connections open the database with.
pub(crate) const VFS_NAME: &CStr = c"posthorn-wal";

/// Most bytes gathered before they are written anyway. The default unix
/// VFS writes at most 128 KiB - 1 per call (it masks larger counts), and
/// SQLite's own writes are never larger than a 64 KiB page and its header.
const LIMIT: usize = 120 << 10;

thread_local! {
    /// Writes handed to the default VFS for log files by this thread
    /// (counted for the tests: a commit should cost a few, not hundreds).
    static LOG_WRITES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn count_write() {
    LOG_WRITES.with(|n| n.set(n.get() + 1));
}

/// An open log file: SQLite's handle, what is gathered, then the default
/// VFS's own handle at `INNER_OFFSET`.
#[repr(C)]
struct LogFile {
    base: ffi::sqlite3_file,
    pending: *mut Pending,
}

/// Bytes to be written at `start`, contiguous.
struct Pending {
    start: i64,
    bytes: Vec<u8>,
}

const INNER_OFFSET: usize = std::mem::size_of::<LogFile>().next_multiple_of(16);

/// The default VFS, wrapped.
struct Inner(*mut ffi::sqlite3_vfs);
// SAFETY: SQLite's VFS objects are immutable once registered and
// thread-safe (SQLite is built threadsafe).
unsafe impl Send for Inner {}
unsafe impl Sync for Inner {}

static INNER: OnceLock<Result<Inner, String>> = OnceLock::new();

/// Registers the VFS (once per process); the default VFS stays the default.
pub(crate) fn register() -> Result<(), String> {
    INNER
        .get_or_init(|| {
            // SAFETY: plain SQLite API calls; the registered struct is leaked
            // so it lives as long as the process, as SQLite requires.
            unsafe {
                let inner = ffi::sqlite3_vfs_find(std::ptr::null());
                if inner.is_null() {
                    return Err("SQLite has no default VFS".into());
                }
                let mut vfs: ffi::sqlite3_vfs = *inner;
                vfs.zName = VFS_NAME.as_ptr();
                vfs.szOsFile = (INNER_OFFSET as c_int) + (*inner).szOsFile;
                vfs.xOpen = Some(open);
                vfs.pNext = std::ptr::null_mut();
                let rc = ffi::sqlite3_vfs_register(Box::leak(Box::new(vfs)), 0);
                if rc != ffi::SQLITE_OK {
                    return Err(format!("registering the log-buffer VFS failed ({rc})"));
                }
                Ok(Inner(inner))
            }
        })
        .as_ref()
        .map(|_| ())
        .map_err(Clone::clone)
}

fn inner_vfs() -> *mut ffi::sqlite3_vfs {
    match INNER.get() {
        Some(Ok(inner)) => inner.0,
        _ => unreachable!("the VFS is only used once registered"),
    }
}

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let inner_vfs = inner_vfs();
    // SAFETY: `file` has `szOsFile` bytes, more than the default VFS needs;
    // the default VFS's xOpen is always set.
    unsafe {
        let inner_open = (*inner_vfs).xOpen.expect("the default VFS opens files");
        if flags & ffi::SQLITE_OPEN_WAL == 0 {
            return inner_open(inner_vfs, name, file, flags, out_flags);
        }
        let log = file.cast::<LogFile>();
        let rc = inner_open(inner_vfs, name, inner(file), flags, out_flags);
        if rc != ffi::SQLITE_OK {
            // SQLite must not close what did not open.
            (*log).base.pMethods = std::ptr::null();
            (*log).pending = std::ptr::null_mut();
            return rc;
        }
        (*log).pending = Box::into_raw(Box::new(Pending {
            start: 0,
            bytes: Vec::new(),
        }));
        (*log).base.pMethods = &METHODS;
        ffi::SQLITE_OK
    }
}

/// The default VFS's handle inside ours.
unsafe fn inner(file: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    // SAFETY: see `INNER_OFFSET`.
    unsafe { file.cast::<u8>().add(INNER_OFFSET).cast() }
}

unsafe fn inner_methods(file: *mut ffi::sqlite3_file) -> &'static ffi::sqlite3_io_methods {
    // SAFETY: set by the default VFS's xOpen, which succeeded.
    unsafe { &*(*inner(file)).pMethods }
}

unsafe fn pending<'a>(file: *mut ffi::sqlite3_file) -> &'a mut Pending {
    // SAFETY: set in `open` for every log file that opened.
    unsafe { &mut *(*file.cast::<LogFile>()).pending }
}

/// One write through the default VFS (counted).
unsafe fn write_through(file: *mut ffi::sqlite3_file, data: &[u8], offset: i64) -> c_int {
    count_write();
    // SAFETY: a log file opened by `open`; `data` is at most `LIMIT` bytes
    // or a single write of SQLite's own, so its length fits a c_int.
    unsafe {
        let write = inner_methods(file).xWrite.expect("files can be written");
        write(
            inner(file),
            data.as_ptr().cast(),
            data.len() as c_int,
            offset,
        )
    }
}

/// Writes what is gathered. SQLite calls a file from one thread at a time.
unsafe fn flush(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: a log file opened by `open`.
    unsafe {
        let pending = pending(file);
        if pending.bytes.is_empty() {
            return ffi::SQLITE_OK;
        }
        let rc = write_through(file, &pending.bytes, pending.start);
        pending.bytes.clear();
        rc
    }
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: a log file opened by `open`; `data` holds `amount` bytes.
    unsafe {
        let data = std::slice::from_raw_parts(data.cast::<u8>(), amount as usize);
        let pending = pending(file);
        let end = pending.start + pending.bytes.len() as i64;
        if !pending.bytes.is_empty() && offset == end && pending.bytes.len() + data.len() <= LIMIT {
            pending.bytes.extend_from_slice(data);
            return ffi::SQLITE_OK;
        }
        let rc = flush(file);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        if data.len() > LIMIT {
            return write_through(file, data, offset);
        }
        pending.start = offset;
        pending.bytes.extend_from_slice(data);
        ffi::SQLITE_OK
    }
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: a log file opened by `open`; closed once.
    unsafe {
        let flushed = flush(file);
        let close = inner_methods(file).xClose.expect("files can be closed");
        let closed = close(inner(file));
        let log = file.cast::<LogFile>();
        drop(Box::from_raw((*log).pending));
        (*log).pending = std::ptr::null_mut();
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            closed
        }
    }
}

/// Methods that see the file's contents or size write what is gathered
/// first, then do what the default VFS does.
macro_rules! flush_then {
    ($name:ident, $method:ident, ($($arg:ident: $ty:ty),*)) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file, $($arg: $ty),*) -> c_int {
            // SAFETY: a log file opened by `open`.
            unsafe {
                let rc = flush(file);
                if rc != ffi::SQLITE_OK {
                    return rc;
                }
                match inner_methods(file).$method {
                    Some(method) => method(inner(file), $($arg),*),
                    None => ffi::SQLITE_NOTFOUND,
                }
            }
        }
    };
}

/// Methods that do not touch the contents go straight through.
macro_rules! pass {
    ($name:ident, $method:ident, ($($arg:ident: $ty:ty),*), $default:expr) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file, $($arg: $ty),*) -> c_int {
            // SAFETY: a log file opened by `open`.
            unsafe {
                match inner_methods(file).$method {
                    Some(method) => method(inner(file), $($arg),*),
                    None => $default,
                }
            }
        }
    };
}

flush_then!(read, xRead, (data: *mut c_void, amount: c_int, offset: i64));
flush_then!(truncate, xTruncate, (size: i64));
flush_then!(sync, xSync, (flags: c_int));
flush_then!(file_size, xFileSize, (size: *mut i64));
flush_then!(file_control, xFileControl, (op: c_int, arg: *mut c_void));
flush_then!(fetch, xFetch, (offset: i64, amount: c_int, page: *mut *mut c_void));
pass!(lock, xLock, (level: c_int), ffi::SQLITE_OK);
pass!(unlock, xUnlock, (level: c_int), ffi::SQLITE_OK);
pass!(check_reserved_lock, xCheckReservedLock, (out: *mut c_int), ffi::SQLITE_OK);
pass!(sector_size, xSectorSize, (), 4096);
pass!(device_characteristics, xDeviceCharacteristics, (), 0);
pass!(shm_map, xShmMap, (region: c_int, size: c_int, extend: c_int, out: *mut *mut c_void), ffi::SQLITE_IOERR);
pass!(shm_lock, xShmLock, (offset: c_int, n: c_int, flags: c_int), ffi::SQLITE_IOERR);
pass!(shm_unmap, xShmUnmap, (delete: c_int), ffi::SQLITE_OK);
pass!(unfetch, xUnfetch, (offset: i64, page: *mut c_void), ffi::SQLITE_OK);

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    // SAFETY: a log file opened by `open`.
    unsafe {
        if let Some(barrier) = inner_methods(file).xShmBarrier {
            barrier(inner(file));
        }
    }
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{Connection, OpenFlags};

    fn open(path: &std::path::Path, through_shim: bool) -> Connection {
        register().unwrap();
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
        let c = if through_shim {
            Connection::open_with_flags_and_vfs(path, flags, VFS_NAME).unwrap()
        } else {
            Connection::open_with_flags(path, flags).unwrap()
        };
        c.execute_batch(
            "PRAGMA page_size = 2048; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
             PRAGMA wal_autocheckpoint = 0;",
        )
        .unwrap();
        c
    }

    /// Frames in the log, from its size (32-byte header, 24 + 2048 per frame).
    fn frames(path: &std::path::Path) -> u64 {
        let log = std::fs::metadata(path.with_extension("db-wal"))
            .unwrap()
            .len();
        (log - 32) / (24 + 2048)
    }

    #[test]
    fn a_commit_reaches_the_log_in_a_few_writes_and_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let writer = open(&path, true);
        writer
            .execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .unwrap();
        let before = LOG_WRITES.with(|n| n.get());
        let tx = writer.unchecked_transaction().unwrap();
        for k in 0..2_000 {
            tx.execute(
                "INSERT INTO t VALUES (?1, ?2)",
                (k, format!("value {k:0>200}")),
            )
            .unwrap();
        }
        tx.commit().unwrap();
        let writes = LOG_WRITES.with(|n| n.get()) - before;
        let frames = frames(&path);
        assert!(frames > 200, "the commit wrote {frames} frames");
        // Without the shim: two writes per frame.
        assert!(
            writes > 0 && writes * 20 < frames,
            "{writes} writes for {frames} frames"
        );

        // Another connection, not through the shim, sees every row: the
        // commit was in the file before the WAL index said so.
        let reader = open(&path, false);
        let (count, sum): (i64, i64) = reader
            .query_row("SELECT COUNT(*), SUM(length(v)) FROM t", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(count, 2_000);
        assert_eq!(sum, 2_000 * 206);
        let check: String = reader
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");

        // A checkpoint reads the log back through the shim; a fresh
        // connection then finds the same rows in the database file.
        writer
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        drop((writer, reader));
        let again = open(&path, false);
        let count: i64 = again
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 2_000);
    }

    #[test]
    fn a_rolled_back_transaction_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let c = open(&path, true);
        // A small cache, so the big transaction spills frames into the log
        // before it is rolled back.
        c.execute_batch("PRAGMA cache_size = 10; CREATE TABLE t (v TEXT NOT NULL)")
            .unwrap();
        let tx = c.unchecked_transaction().unwrap();
        for k in 0..2_000 {
            tx.execute("INSERT INTO t VALUES (?1)", [format!("{k:0>300}")])
                .unwrap();
        }
        tx.rollback().unwrap();
        c.execute("INSERT INTO t VALUES ('kept')", []).unwrap();
        drop(c);
        let c = open(&path, false);
        let rows: Vec<String> = c
            .prepare("SELECT v FROM t")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows, vec!["kept".to_owned()]);
        let check: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }
}
