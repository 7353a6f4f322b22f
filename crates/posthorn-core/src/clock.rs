//! Time as epoch milliseconds, and the clock that is passed into everything
//! that needs "now" so that windows and retries are testable.

use std::sync::atomic::{AtomicI64, Ordering};

/// Milliseconds since the Unix epoch (UTC). Stored as a 64-bit integer on
/// every backend.
pub type Millis = i64;

pub const SECOND: Millis = 1_000;
pub const MINUTE: Millis = 60 * SECOND;
pub const HOUR: Millis = 60 * MINUTE;
pub const DAY: Millis = 24 * HOUR;

/// Source of the current time.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> Millis;
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Millis::try_from(now.as_millis()).unwrap_or(Millis::MAX)
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(start: Millis) -> Self {
        Self(AtomicI64::new(start))
    }
    pub fn set(&self, now: Millis) {
        self.0.store(now, Ordering::SeqCst);
    }
    pub fn advance(&self, by: Millis) {
        self.0.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

/// Formats epoch milliseconds as RFC 3339 UTC with milliseconds,
/// e.g. `2026-11-24T10:00:00.000Z`.
pub fn format_rfc3339(ms: Millis) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Parses an RFC 3339 time (`2026-11-24T10:00:00Z`, offsets allowed) into epoch
/// milliseconds.
pub fn parse_rfc3339(text: &str) -> Option<Millis> {
    let text = text.trim();
    // humantime accepts only `Z`; normalise a numeric offset ourselves.
    let (base, offset_ms) = split_offset(text)?;
    let t = humantime::parse_rfc3339_weak(base).ok()?;
    let ms = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
    Some(Millis::try_from(ms).ok()? - offset_ms)
}

fn split_offset(text: &str) -> Option<(&str, Millis)> {
    if let Some(base) = text.strip_suffix('Z').or_else(|| text.strip_suffix('z')) {
        return Some((base, 0));
    }
    // Look for +HH:MM / -HH:MM after the time part.
    let time_start = text.find('T').or_else(|| text.find('t'))?;
    let rel = text[time_start..].rfind(['+', '-'])?;
    let pos = time_start + rel;
    let (base, off) = text.split_at(pos);
    let sign = if off.starts_with('-') { -1 } else { 1 };
    let digits = &off[1..];
    let (h, m) = digits.split_once(':')?;
    let h: i64 = h.parse().ok()?;
    let m: i64 = m.parse().ok()?;
    if h > 23 || m > 59 {
        return None;
    }
    Some((base, sign * (h * HOUR + m * MINUTE)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip_and_offsets() {
        let ms = parse_rfc3339("2026-11-24T10:00:00Z").unwrap();
        assert_eq!(format_rfc3339(ms), "2026-11-24T10:00:00.000Z");
        assert_eq!(parse_rfc3339("2026-11-24T11:00:00+01:00"), Some(ms));
        assert_eq!(parse_rfc3339("2026-11-24T05:30:00-04:30"), Some(ms));
        assert_eq!(parse_rfc3339("2026-11-24T10:00:00.250Z"), Some(ms + 250));
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(parse_rfc3339("2026-11-24T10:00:00+25:00"), None);
    }
}
