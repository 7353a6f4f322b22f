//! What an attempt's result means, as events: pure functions from the SMTP
//! client's result (or failure) to the event to record and what becomes of
//! the queue entry. The rules they apply live in `posthorn-core` (retry
//! schedule) and the reply classifier.

use posthorn_core::Millis;
use posthorn_core::event::{
    BounceOrigin, Bounced, Deferred, Delivered, EventDetails, Expired, Failed,
};
use posthorn_core::retry::{RetryDecision, RetrySchedule, retry_hint};
use posthorn_core::status::BounceType;
use posthorn_smtp::tls::TlsInfo;
use posthorn_smtp::{ClientError, RecipientResult, Reply};
use posthorn_store::QueueNext;

/// How a permanent reply was classified, and by which rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    pub bounce_type: BounceType,
    pub reason: String,
    pub rule: String,
}

/// Classifies a reply (code, enhanced code, text) to the attempt's
/// recipient: the delivery workers' is `posthorn-bounce` with the
/// operator's rules (see `DeliveryService::classifier`), tests give their own.
pub type Classifier<'a> = &'a dyn Fn(u16, Option<&str>, &str) -> Classification;

/// What is known about one attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// 1 for the first attempt.
    pub number: u32,
    /// When the delivery was accepted (or its `send_at`): retries count from here.
    pub accepted_at: Millis,
    /// The end of its lifetime: no attempt after this.
    pub deadline: Millis,
    pub started_at: Millis,
    pub now: Millis,
    pub mx_host: Option<String>,
    pub ip: Option<String>,
    pub tls: Option<TlsInfo>,
}

/// The outcome for one recipient of a transaction.
pub fn for_recipient(
    attempt: &Attempt,
    result: &RecipientResult,
    schedule: &RetrySchedule,
    jitter: f64,
    classify: Classifier<'_>,
) -> (EventDetails, QueueNext) {
    let reply = &result.reply;
    if result.delivered() {
        let delivered = Delivered {
            mx_host: attempt.mx_host.clone(),
            ip: attempt.ip.clone(),
            tls_version: attempt.tls.as_ref().map(|t| t.version.clone()),
            tls_cipher: attempt.tls.as_ref().map(|t| t.cipher.clone()),
            smtp_code: Some(reply.code),
            enhanced_code: reply.enhanced.clone(),
            reply_text: Some(reply.line()),
            attempt: attempt.number,
            latency_ms: Some((attempt.now - attempt.started_at).max(0) as u64),
        };
        return (EventDetails::Delivered(delivered), QueueNext::Remove);
    }
    if reply.is_permanent() {
        return (bounce(attempt, reply, classify), QueueNext::Remove);
    }
    retry_or_expire(attempt, reply, schedule, jitter)
}

/// The outcome for every delivery of a session that failed (no connection,
/// timeout, 421, dropped connection, garbled replies).
pub fn for_session_error(
    attempt: &Attempt,
    error: &ClientError,
    schedule: &RetrySchedule,
    jitter: f64,
    classify: Classifier<'_>,
) -> (EventDetails, QueueNext) {
    let reply = error.reply();
    if error.is_permanent() {
        return (bounce(attempt, &reply, classify), QueueNext::Remove);
    }
    retry_or_expire(attempt, &reply, schedule, jitter)
}

/// A failure on our side (the message could not be built, a route is
/// misconfigured): final, with the error text.
pub fn for_local_failure(error: impl Into<String>) -> (EventDetails, QueueNext) {
    (
        EventDetails::Failed(Failed {
            error: error.into(),
        }),
        QueueNext::Remove,
    )
}

fn bounce(attempt: &Attempt, reply: &Reply, classify: Classifier<'_>) -> EventDetails {
    let class = classify(reply.code, reply.enhanced.as_deref(), &reply.text);
    EventDetails::Bounced(Bounced {
        bounce_type: class.bounce_type,
        reason: Some(class.reason),
        smtp_code: Some(reply.code),
        enhanced_code: reply.enhanced.clone(),
        reply_text: Some(reply.line()),
        origin: BounceOrigin::Sync,
        rule: Some(class.rule),
        mx_host: attempt.mx_host.clone(),
    })
}

fn retry_or_expire(
    attempt: &Attempt,
    reply: &Reply,
    schedule: &RetrySchedule,
    jitter: f64,
) -> (EventDetails, QueueNext) {
    let lifetime = attempt.deadline - attempt.accepted_at;
    let hint = retry_hint(&reply.text);
    match schedule.next_with_lifetime(
        attempt.number,
        attempt.accepted_at,
        attempt.now,
        hint,
        jitter,
        lifetime,
    ) {
        RetryDecision::RetryAt(at) => {
            let deferred = Deferred {
                attempt: attempt.number,
                smtp_code: Some(reply.code),
                enhanced_code: reply.enhanced.clone(),
                reply_text: Some(reply.line()),
                next_retry_at: Some(at),
                mx_host: attempt.mx_host.clone(),
                ip: attempt.ip.clone(),
            };
            (EventDetails::Deferred(deferred), QueueNext::RetryAt(at))
        }
        RetryDecision::Expire => {
            let expired = Expired {
                attempts: attempt.number,
                last_reply: Some(reply.line()),
            };
            (EventDetails::Expired(expired), QueueNext::Remove)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use posthorn_core::clock::{HOUR, MINUTE};
    use posthorn_smtp::Phase;

    fn attempt(number: u32, now: Millis) -> Attempt {
        Attempt {
            number,
            accepted_at: 0,
            deadline: 48 * HOUR,
            started_at: now - 20,
            now,
            mx_host: Some("mx.example.com".into()),
            ip: Some("192.0.2.1".into()),
            tls: None,
        }
    }

    fn result(code: u16, enhanced: &str, text: &str, phase: Phase) -> RecipientResult {
        RecipientResult {
            recipient: "bob@example.com".into(),
            reply: Reply::local(code, enhanced, text),
            phase,
        }
    }

    fn hard_on_511(_: u16, enhanced: Option<&str>, _: &str) -> Classification {
        let hard = enhanced == Some("5.1.1");
        Classification {
            bounce_type: if hard {
                BounceType::Hard
            } else {
                BounceType::Soft
            },
            reason: if hard { "userunknown" } else { "blocked" }.into(),
            rule: "test".into(),
        }
    }

    #[test]
    fn delivered_keeps_the_reply_host_and_latency() {
        let (event, next) = for_recipient(
            &attempt(1, 1_000),
            &result(250, "2.0.0", "Ok: queued as X", Phase::DataEnd),
            &RetrySchedule::default(),
            0.5,
            &hard_on_511,
        );
        assert_eq!(next, QueueNext::Remove);
        let EventDetails::Delivered(d) = event else {
            panic!("{event:?}")
        };
        assert_eq!(d.reply_text.as_deref(), Some("250 2.0.0 Ok: queued as X"));
        assert_eq!(d.mx_host.as_deref(), Some("mx.example.com"));
        assert_eq!(d.latency_ms, Some(20));
    }

    #[test]
    fn permanent_replies_bounce_through_the_classifier() {
        let (event, next) = for_recipient(
            &attempt(1, 1_000),
            &result(550, "5.1.1", "user unknown", Phase::RcptTo),
            &RetrySchedule::default(),
            0.5,
            &hard_on_511,
        );
        assert_eq!(next, QueueNext::Remove);
        assert_eq!(event.bounce_type(), Some(BounceType::Hard));
        let (event, _) = for_recipient(
            &attempt(1, 1_000),
            &result(554, "5.7.1", "rejected as spam", Phase::DataEnd),
            &RetrySchedule::default(),
            0.5,
            &hard_on_511,
        );
        let EventDetails::Bounced(b) = event else {
            panic!()
        };
        assert_eq!(
            (b.bounce_type, b.origin),
            (BounceType::Soft, BounceOrigin::Sync)
        );
        assert_eq!(b.reply_text.as_deref(), Some("554 5.7.1 rejected as spam"));
    }

    #[test]
    fn transient_replies_defer_with_backoff_or_the_servers_hint_then_expire() {
        let schedule = RetrySchedule::default();
        let (event, next) = for_recipient(
            &attempt(1, 1_000),
            &result(451, "4.3.0", "later", Phase::RcptTo),
            &schedule,
            0.5,
            &hard_on_511,
        );
        assert_eq!(next, QueueNext::RetryAt(1_000 + MINUTE));
        let EventDetails::Deferred(d) = event else {
            panic!()
        };
        assert_eq!((d.attempt, d.next_retry_at), (1, Some(1_000 + MINUTE)));
        let (_, next) = for_recipient(
            &attempt(1, 1_000),
            &result(
                450,
                "4.7.1",
                "greylisted, try again in 5 minutes",
                Phase::RcptTo,
            ),
            &schedule,
            0.5,
            &hard_on_511,
        );
        assert_eq!(next, QueueNext::RetryAt(1_000 + 5 * MINUTE));
        let (event, next) = for_recipient(
            &attempt(30, 48 * HOUR),
            &result(451, "4.3.0", "later", Phase::RcptTo),
            &schedule,
            0.5,
            &hard_on_511,
        );
        assert_eq!(next, QueueNext::Remove);
        assert!(matches!(
            event,
            EventDetails::Expired(Expired { attempts: 30, .. })
        ));
    }

    #[test]
    fn session_failures_defer_and_local_failures_fail() {
        let err = ClientError::Io {
            phase: Phase::Connect,
            message: "connection refused".into(),
        };
        let (event, next) = for_session_error(
            &attempt(2, 5_000),
            &err,
            &RetrySchedule::default(),
            0.5,
            &hard_on_511,
        );
        assert_eq!(next, QueueNext::RetryAt(5_000 + 2 * MINUTE));
        let EventDetails::Deferred(d) = event else {
            panic!()
        };
        assert!(d.reply_text.unwrap().contains("connection refused"));
        let (event, next) = for_local_failure("no route");
        assert_eq!(
            (event, next),
            (
                EventDetails::Failed(Failed {
                    error: "no route".into()
                }),
                QueueNext::Remove
            )
        );
    }
}
