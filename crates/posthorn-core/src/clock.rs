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
///
/// Total: any `Millis` formats, because stored rows are read with it and a
/// reader must never panic on what a row holds. Years outside RFC 3339's
/// 0000-9999 (which submissions refuse, see `submission::check_time`) are
/// written as ISO 8601 expanded years with a sign (`+10000-01-01T...`)
/// rather than clamped, so that the value shown is still the value stored.
pub fn format_rfc3339(ms: Millis) -> String {
    let days = ms.div_euclid(DAY);
    let in_day = ms.rem_euclid(DAY);
    let (year, month, day) = civil_from_days(days);
    let (h, m, s, milli) = (
        in_day / HOUR,
        in_day % HOUR / MINUTE,
        in_day % MINUTE / SECOND,
        in_day % SECOND,
    );
    let year = if (0..=9999).contains(&year) {
        format!("{year:04}")
    } else {
        format!("{year:+05}")
    };
    format!("{year}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

/// The proleptic Gregorian (year, month, day) of a day number counted from
/// 1970-01-01 (Howard Hinnant's `civil_from_days`). Exact for every `i64`
/// day that `Millis` can produce (about ±1.07e11), with no overflow.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // 0..=365
    let mp = (5 * doy + 2) / 153; // March-based month, 0..=11
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
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

    /// Stored times come from rows written by any version: formatting one
    /// must never panic, whatever the value (issue 11, defect 3).
    #[test]
    fn every_millis_value_formats_without_panic() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339(253_402_300_799_999),
            "9999-12-31T23:59:59.999Z"
        );
        // Beyond year 9999: ISO 8601's expanded years, with a sign.
        assert_eq!(
            format_rfc3339(253_402_300_800_000),
            "+10000-01-01T00:00:00.000Z"
        );
        assert_eq!(
            format_rfc3339(Millis::MAX),
            "+292278994-08-17T07:12:55.807Z"
        );
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            format_rfc3339(Millis::MIN),
            "-292275055-05-16T16:47:04.192Z"
        );
    }

    proptest::proptest! {
        /// Within RFC 3339's years the output is humantime's, and parses back.
        #[test]
        fn formatting_matches_humantime_and_round_trips(ms in 0i64..=253_402_300_799_999) {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
            let text = format_rfc3339(ms);
            proptest::prop_assert_eq!(&text, &humantime::format_rfc3339_millis(t).to_string());
            proptest::prop_assert_eq!(parse_rfc3339(&text), Some(ms));
        }
    }
}
