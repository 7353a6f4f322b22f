//! The retry schedule of a deferred delivery: exponential backoff with
//! jitter, capped, honouring a retry time in the remote reply, until the
//! message lifetime ends.

use crate::clock::{HOUR, MINUTE, Millis, SECOND};

/// Retry settings (see `STATUS_MODEL.md`, "Retries").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetrySchedule {
    /// Delay before the first retry (default 1 minute).
    pub first_retry: Millis,
    /// Longest wait between attempts (default 1 hour).
    pub max_interval: Millis,
    /// How long after acceptance we keep trying (default 48 hours).
    pub lifetime: Millis,
    /// Jitter as a fraction of the delay, 0..=1 (default 0.2: ±20 %), so that
    /// deliveries deferred together do not retry together.
    pub jitter: f64,
}

impl Default for RetrySchedule {
    fn default() -> Self {
        Self {
            first_retry: MINUTE,
            max_interval: HOUR,
            lifetime: 48 * HOUR,
            jitter: 0.2,
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    RetryAt(Millis),
    /// The lifetime is over: record `expired`.
    Expire,
}

impl RetrySchedule {
    /// The delay after `attempts` failed attempts (1 = the first one failed),
    /// before jitter: `first_retry * 2^(attempts-1)`, capped.
    pub fn backoff(&self, attempts: u32) -> Millis {
        let doublings = attempts.saturating_sub(1).min(40);
        self.first_retry
            .saturating_mul(1_i64 << doublings)
            .min(self.max_interval)
    }

    /// Decides the next attempt with the default lifetime counted from
    /// `accepted_at`. `jitter_sample` is a uniform random number in
    /// `0.0..1.0` supplied by the caller (so this stays pure); `hint` is a
    /// delay the remote server asked for ("try again in 5 minutes").
    pub fn next(
        &self,
        attempts: u32,
        accepted_at: Millis,
        now: Millis,
        hint: Option<Millis>,
        jitter_sample: f64,
    ) -> RetryDecision {
        let deadline = accepted_at.saturating_add(self.lifetime);
        self.next_before(attempts, now, hint, jitter_sample, deadline)
    }

    /// Decides the next attempt of a delivery whose retries end at
    /// `deadline` (see [`deadline`]: per stream, capped by the message).
    pub fn next_before(
        &self,
        attempts: u32,
        now: Millis,
        hint: Option<Millis>,
        jitter_sample: f64,
        deadline: Millis,
    ) -> RetryDecision {
        if now >= deadline {
            return RetryDecision::Expire;
        }
        let delay = match hint {
            // The server knows best when it will take the message again; we
            // never retry sooner than a second.
            Some(hint) => hint.max(SECOND),
            None => {
                let base = self.backoff(attempts) as f64;
                let spread =
                    self.jitter.clamp(0.0, 1.0) * (2.0 * jitter_sample.clamp(0.0, 1.0) - 1.0);
                ((base * (1.0 + spread)) as Millis).max(SECOND)
            }
        };
        // One last attempt at the deadline rather than giving up early.
        RetryDecision::RetryAt(now.saturating_add(delay).min(deadline))
    }
}

/// When a delivery's retries end: `lifetime` (its stream's, or the
/// default) counted from when it was due to leave (`send_at`, never before
/// acceptance at `created_at`: a message scheduled for next week has its
/// whole lifetime from then), and never after the message's own
/// `expires_at`, which the sender set and which wins over any lifetime.
pub fn deadline(
    created_at: Millis,
    send_at: Option<Millis>,
    lifetime: Millis,
    expires_at: Option<Millis>,
) -> Millis {
    let due_at = send_at.map_or(created_at, |s| s.max(created_at));
    let deadline = due_at.saturating_add(lifetime);
    expires_at.map_or(deadline, |e| deadline.min(e))
}

/// Finds a retry delay in a remote reply such as "try again in 5 minutes" or
/// "retry after 300 seconds". Only phrases about retrying count, so that
/// "mailbox over quota 5 MB" is not read as a delay. Capped at 24 hours.
pub fn retry_hint(reply: &str) -> Option<Millis> {
    let text = reply.to_ascii_lowercase();
    let anchors = [
        "try again in",
        "try again after",
        "retry in",
        "retry after",
        "try later in",
        "again in",
    ];
    let start = anchors
        .iter()
        .filter_map(|a| text.find(a).map(|i| i + a.len()))
        .min()?;
    let mut words = text[start..]
        .split(|c: char| c.is_whitespace() || c == ',' || c == '.' || c == ';' || c == ')')
        .filter(|w| !w.is_empty());
    let first = words.next()?;
    // "300s" or "300 seconds"
    let digits_end = first
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(first.len());
    let amount: i64 = first[..digits_end].parse().ok()?;
    let unit = if digits_end < first.len() {
        &first[digits_end..]
    } else {
        words.next().unwrap_or("seconds")
    };
    let unit_ms = match unit.trim_end_matches('s') {
        "" | "sec" | "second" => SECOND,
        "m" | "min" | "minute" => MINUTE,
        "h" | "hr" | "hour" => HOUR,
        _ => return None,
    };
    Some(amount.saturating_mul(unit_ms).min(24 * HOUR))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_minute_and_caps_at_an_hour() {
        let s = RetrySchedule::default();
        let minutes: Vec<i64> = (1..=9).map(|a| s.backoff(a) / MINUTE).collect();
        assert_eq!(minutes, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(s.backoff(1000), HOUR);
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let s = RetrySchedule::default();
        let at = |sample| match s.next(3, 0, 0, None, sample) {
            RetryDecision::RetryAt(t) => t,
            RetryDecision::Expire => panic!("should retry"),
        };
        assert_eq!(at(0.5), 4 * MINUTE);
        assert_eq!(at(0.0), (4.0 * MINUTE as f64 * 0.8) as i64);
        assert_eq!(at(1.0), (4.0 * MINUTE as f64 * 1.2) as i64);
    }

    #[test]
    fn hint_wins_over_backoff_and_lifetime_ends_in_expire() {
        let s = RetrySchedule::default();
        assert_eq!(
            s.next(1, 0, 1000, Some(5 * MINUTE), 0.5),
            RetryDecision::RetryAt(1000 + 5 * MINUTE)
        );
        // The last retry is pulled in to the deadline, then we expire.
        let near_end = 48 * HOUR - 10 * SECOND;
        assert_eq!(
            s.next(30, 0, near_end, None, 0.5),
            RetryDecision::RetryAt(48 * HOUR)
        );
        assert_eq!(s.next(31, 0, 48 * HOUR, None, 0.5), RetryDecision::Expire);
        assert_eq!(
            s.next_before(1, 2 * HOUR, None, 0.5, HOUR),
            RetryDecision::Expire
        );
    }

    #[test]
    fn the_deadline_counts_from_send_at_and_never_passes_expires_at() {
        // Accepted at 10, no schedule: the lifetime runs from acceptance.
        assert_eq!(deadline(10, None, HOUR, None), 10 + HOUR);
        // Scheduled for later: the whole lifetime runs from `send_at`.
        assert_eq!(deadline(10, Some(5 * HOUR), HOUR, None), 6 * HOUR);
        // A `send_at` in the past counts from acceptance.
        assert_eq!(deadline(10, Some(5), HOUR, None), 10 + HOUR);
        // The message's own expiry wins when it is sooner...
        assert_eq!(
            deadline(10, Some(5 * HOUR), HOUR, Some(5 * HOUR + 1)),
            5 * HOUR + 1
        );
        // ...and never extends the lifetime.
        assert_eq!(deadline(10, None, HOUR, Some(9 * HOUR)), 10 + HOUR);
    }

    #[test]
    fn retry_hints_in_replies() {
        let cases = [
            (
                "451 4.7.1 Greylisted, please try again in 300 seconds",
                Some(300 * SECOND),
            ),
            ("421 4.7.0 Try again in 5 minutes", Some(5 * MINUTE)),
            ("450 Rate limited; retry after 2h", Some(2 * HOUR)),
            ("452 4.2.2 Mailbox over quota 5 MB", None),
            ("451 Temporary failure, try later", None),
            ("451 retry in 100 hours", Some(24 * HOUR)),
        ];
        for (text, want) in cases {
            assert_eq!(retry_hint(text), want, "{text}");
        }
    }
}

/// A token bucket: at most `rate` events per second on average, with bursts
/// of up to `burst`. Pure: the caller passes the time and sleeps.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Millis,
}

impl RateLimit {
    pub fn new(per_second: f64, now: Millis) -> Self {
        let rate = per_second.max(0.001);
        let burst = rate.max(1.0);
        Self {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token at `now`; returns how long to wait first (0 when a
    /// token was there). The token is taken either way.
    pub fn take(&mut self, now: Millis) -> Millis {
        let elapsed = (now - self.last).max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            0
        } else {
            ((-self.tokens / self.rate) * 1000.0).ceil() as Millis
        }
    }
}

#[cfg(test)]
mod rate_tests {
    use super::*;

    #[test]
    fn bursts_then_spaces_events_at_the_rate() {
        let mut limit = RateLimit::new(2.0, 0);
        assert_eq!(limit.take(0), 0);
        assert_eq!(limit.take(0), 0, "a burst of two");
        assert_eq!(limit.take(0), 500, "then one every half second");
        assert_eq!(limit.take(0), 1000);
        // After a quiet second the bucket refills (but not beyond the burst).
        let mut limit = RateLimit::new(2.0, 0);
        limit.take(0);
        limit.take(0);
        assert_eq!(limit.take(10_000), 0);
        assert_eq!(limit.take(10_000), 0);
        assert_eq!(limit.take(10_000), 500);
    }
}
