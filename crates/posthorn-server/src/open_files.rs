//! The process's open-file limit. Every connection is a file descriptor, and
//! the usual soft limit (1024) is far below what the listeners' caps allow,
//! while the hard limit (often 524288 under systemd) is what the operator
//! granted: `serve` raises the soft limit to the hard one at start, and warns
//! when even that leaves too little room for the configured caps.

use posthorn_core::config::Config;

/// Descriptors kept for everything that is not an accepted connection: the
/// database (the writer and each read connection hold the file, its WAL and
/// its shared memory), outgoing deliveries, DNS, the runtime, the log.
pub const RESERVED: u64 = 256;

/// The soft limit before and after [`raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFileLimit {
    pub before: u64,
    pub now: u64,
    pub hard: Option<u64>,
}

/// Raises the soft open-file limit to the hard limit (unlimited, or a
/// failure to set it, leaves it as it was).
#[cfg(unix)]
pub fn raise() -> std::io::Result<OpenFileLimit> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let before = limit.current.unwrap_or(u64::MAX);
    let Some(hard) = limit.maximum else {
        // No hard limit: some systems refuse an unlimited soft one; keep it.
        return Ok(OpenFileLimit {
            before,
            now: before,
            hard: None,
        });
    };
    if before < hard {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(hard),
                maximum: Some(hard),
            },
        )?;
    }
    let now = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    Ok(OpenFileLimit {
        before,
        now,
        hard: Some(hard),
    })
}

#[cfg(not(unix))]
pub fn raise() -> std::io::Result<OpenFileLimit> {
    Err(std::io::Error::other("not supported on this system"))
}

/// The descriptors the configured listeners may take at once, plus
/// [`RESERVED`].
pub fn needed(config: &Config) -> u64 {
    let mut n = RESERVED + config.server.http_max_connections as u64;
    if !config.submission.listen.is_empty() {
        n += config.submission.max_connections as u64;
    }
    if !config.inbound.listen.is_empty() {
        n += config.inbound.max_connections as u64;
    }
    n
}

/// Raises the limit and logs the outcome: one line, a warning when the
/// caps could use up the descriptors (then the accept loops pause instead
/// of failing in a loop, but every listener suffers).
pub fn raise_and_report(config: &Config) {
    let needed = needed(config);
    match raise() {
        Ok(limit) => {
            if limit.now < needed {
                tracing::warn!(
                    open_file_limit = limit.now,
                    hard_limit = ?limit.hard,
                    needed,
                    "the open-file limit is below the listeners' connection caps plus {RESERVED} in reserve: lower the caps or raise the hard limit (LimitNOFILE= in systemd)"
                );
            } else {
                tracing::info!(
                    open_file_limit = limit.now,
                    was = limit.before,
                    needed,
                    "open-file limit"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, needed, "could not raise the open-file limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_need_the_three_caps_and_the_reserve() {
        let mut c = Config::default();
        assert_eq!(needed(&c), 256 + 2000 + 500 + 1000);
        c.submission.listen.clear();
        assert_eq!(needed(&c), 256 + 2000 + 1000);
    }

    #[test]
    fn raising_never_lowers_the_limit() {
        let limit = raise().unwrap();
        assert!(limit.now >= limit.before);
        if let Some(hard) = limit.hard {
            assert_eq!(limit.now, hard);
        }
    }
}
