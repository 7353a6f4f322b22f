//! What a delivery attempt's result means, as events: pure functions from
//! what happened (the remote server's reply, a failed session, a DNS answer)
//! to the event to record and what becomes of the queue entry. The delivery
//! workers translate their SMTP client's results into [`AttemptResult`] at
//! the edge, so these rules know nothing of sockets and are tested alone.

use crate::clock::Millis;
use crate::enhanced::EnhancedCode;
use crate::event::{
    BounceOrigin, BounceVerdict, BounceWords, Bounced, Deferred, Delivered, EventDetails, Expired,
    Failed,
};
use crate::retry::{RetryDecision, RetrySchedule, retry_hint};
use crate::status::BounceType;

/// An SMTP reply: the code, the enhanced status code if the server gave one
/// (RFC 3463), and the whole text (all lines, joined by `\n`, without
/// codes). The remote server's, as the SMTP client reads it
/// (`posthorn_smtp::Reply` is this type), or one made up to describe a
/// failure that has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<EnhancedCode>,
    pub text: String,
}

impl Reply {
    pub fn new(code: u16, enhanced: Option<EnhancedCode>, text: impl Into<String>) -> Self {
        Self {
            code,
            enhanced,
            text: text.into(),
        }
    }

    /// A reply made up for a failure that has no remote reply (a timeout,
    /// a dropped connection), so that events always carry a readable line.
    pub fn local(code: u16, enhanced: EnhancedCode, text: impl Into<String>) -> Self {
        Self::new(code, Some(enhanced), text)
    }

    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }
    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }
    /// 5xx: trying again with the same input cannot help.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// The reply as one line, the way people quote it (and events store it):
    /// `550 5.1.1 <bob@example.com>: user unknown`.
    pub fn line(&self) -> String {
        let text = self.text.replace('\n', " ");
        match self.enhanced {
            Some(e) => format!("{} {e} {text}", self.code),
            None => format!("{} {text}", self.code),
        }
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.line())
    }
}

/// How an attempt ended, as far as its outcome depends on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    /// The server took the message for our recipient after the end of data.
    Delivered(Reply),
    /// The server refused or put off our recipient, or the session failed
    /// (no connection, timeout, dropped connection, garbled replies; the
    /// reply is then one made up to describe it): a 5xx bounces, anything
    /// else is tried again.
    NotDelivered(Reply),
    /// DNS could not answer for now (SERVFAIL, timeout): the resolver's words.
    DnsFailed(String),
    /// Every address DNS gave is one delivery must not connect to; the text
    /// says which and why. Tried again, in case DNS or `allow_networks`
    /// changes.
    Refused(String),
}

impl AttemptResult {
    /// The reply the event quotes. DNS failures are described with the
    /// codes they have always been stored with (4.5.0 and 4.4.4, RFC 3463
    /// "unable to route" for a refusal), so stored history reads the same.
    fn reply(&self) -> Reply {
        match self {
            AttemptResult::Delivered(reply) | AttemptResult::NotDelivered(reply) => reply.clone(),
            AttemptResult::DnsFailed(why) => {
                Reply::new(451, Some(DNS_FAILED), format!("DNS lookup failed: {why}"))
            }
            AttemptResult::Refused(why) => Reply::new(451, Some(UNABLE_TO_ROUTE), why.clone()),
        }
    }
}

/// The code stored for a DNS failure ("other or undefined protocol status").
const DNS_FAILED: EnhancedCode = EnhancedCode::of(4, 5, 0);
/// The code stored for a refused address (RFC 3463 "unable to route").
const UNABLE_TO_ROUTE: EnhancedCode = EnhancedCode::of(4, 4, 4);

/// The TLS an attempt used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub version: String,
    pub cipher: String,
}

/// What is known about one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// 1 for the first attempt.
    pub number: u32,
    /// When retries end ([`crate::retry::deadline`]): no attempt after this.
    pub deadline: Millis,
    pub started_at: Millis,
    pub now: Millis,
    pub mx_host: Option<String>,
    pub ip: Option<String>,
    pub tls: Option<Tls>,
}

/// Classifies a permanent reply (code, enhanced code, text) to the
/// attempt's recipient: the delivery workers' is `posthorn-bounce` with the
/// operator's rules, tests give their own.
pub type Classifier<'a> = &'a dyn Fn(u16, Option<EnhancedCode>, &str) -> BounceVerdict;

/// What happens to the queue entry after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueNext {
    /// A verdict was reached (or the lifetime ended): leave the queue.
    Remove,
    /// Try again at this time.
    RetryAt(Millis),
}

/// The outcome of one attempt for one recipient.
pub fn for_attempt(
    attempt: &Attempt,
    result: &AttemptResult,
    schedule: &RetrySchedule,
    jitter: f64,
    classify: Classifier<'_>,
) -> (EventDetails, QueueNext) {
    let reply = result.reply();
    if let AttemptResult::Delivered(_) = result {
        let delivered = Delivered {
            mx_host: attempt.mx_host.clone(),
            ip: attempt.ip.clone(),
            tls_version: attempt.tls.as_ref().map(|t| t.version.clone()),
            tls_cipher: attempt.tls.as_ref().map(|t| t.cipher.clone()),
            smtp_code: Some(reply.code),
            enhanced_code: reply.enhanced,
            reply_text: Some(reply.line()),
            attempt: attempt.number,
            latency_ms: Some((attempt.now - attempt.started_at).max(0) as u64),
        };
        return (EventDetails::Delivered(delivered), QueueNext::Remove);
    }
    if reply.is_permanent() {
        let verdict = classify(reply.code, reply.enhanced, &reply.text);
        let words = BounceWords {
            smtp_code: Some(reply.code),
            enhanced_code: reply.enhanced,
            reply_text: Some(reply.line()),
        };
        let bounced = Bounced::new(verdict, BounceOrigin::Sync, words, attempt.mx_host.clone());
        return (EventDetails::Bounced(bounced), QueueNext::Remove);
    }
    retry_or_expire(attempt, &reply, schedule, jitter)
}

/// Why DNS says a domain takes no mail at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unroutable {
    /// `MX 0 .` (RFC 7505).
    NullMx,
    /// NXDOMAIN.
    NoSuchDomain,
    /// Mail servers are named, but none has an address.
    NoAddress,
}

/// The hard bounce of a delivery to a domain that takes no mail: decided
/// from DNS before any server is asked, so no code or server goes with it.
pub fn for_unroutable(domain: &str, why: Unroutable) -> (EventDetails, QueueNext) {
    let (rule, text) = match why {
        Unroutable::NullMx => (
            "dns.null-mx",
            format!("556 5.1.10 {domain} accepts no mail (null MX, RFC 7505)"),
        ),
        Unroutable::NoSuchDomain => (
            "dns.nxdomain",
            format!("550 5.1.2 the domain {domain} does not exist"),
        ),
        Unroutable::NoAddress => (
            "dns.no-address",
            format!("550 5.1.2 no mail server of {domain} has an address"),
        ),
    };
    let verdict = BounceVerdict {
        bounce_type: BounceType::Hard,
        reason: "hostunknown".to_owned(),
        rule: rule.to_owned(),
    };
    let words = BounceWords {
        reply_text: Some(text),
        ..BounceWords::default()
    };
    let bounced = Bounced::new(verdict, BounceOrigin::Sync, words, None);
    (EventDetails::Bounced(bounced), QueueNext::Remove)
}

/// A failure on our side (the message could not be built, the sending
/// domain could not be looked up): final, with the error text.
pub fn for_local_failure(error: impl Into<String>) -> (EventDetails, QueueNext) {
    (
        EventDetails::Failed(Failed {
            error: error.into(),
        }),
        QueueNext::Remove,
    )
}

fn retry_or_expire(
    attempt: &Attempt,
    reply: &Reply,
    schedule: &RetrySchedule,
    jitter: f64,
) -> (EventDetails, QueueNext) {
    let hint = retry_hint(&reply.text);
    match schedule.next_before(attempt.number, attempt.now, hint, jitter, attempt.deadline) {
        RetryDecision::RetryAt(at) => {
            let deferred = Deferred {
                attempt: attempt.number,
                smtp_code: Some(reply.code),
                enhanced_code: reply.enhanced,
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
    use crate::clock::{HOUR, MINUTE};

    fn attempt(number: u32, now: Millis) -> Attempt {
        Attempt {
            number,
            deadline: 48 * HOUR,
            started_at: now - 20,
            now,
            mx_host: Some("mx.example.com".into()),
            ip: Some("192.0.2.1".into()),
            tls: None,
        }
    }

    fn reply(code: u16, enhanced: &str, text: &str) -> Reply {
        Reply::new(code, Some(enhanced.parse().unwrap()), text)
    }

    fn hard_on_511(_: u16, enhanced: Option<EnhancedCode>, _: &str) -> BounceVerdict {
        let hard = enhanced == EnhancedCode::new(5, 1, 1);
        BounceVerdict {
            bounce_type: if hard {
                BounceType::Hard
            } else {
                BounceType::Soft
            },
            reason: if hard { "userunknown" } else { "blocked" }.into(),
            rule: "test".into(),
        }
    }

    fn outcome(attempt: &Attempt, result: AttemptResult) -> (EventDetails, QueueNext) {
        for_attempt(
            attempt,
            &result,
            &RetrySchedule::default(),
            0.5,
            &hard_on_511,
        )
    }

    #[test]
    fn delivered_keeps_the_reply_host_tls_and_latency() {
        let mut tls_attempt = attempt(1, 1_000);
        tls_attempt.tls = Some(Tls {
            version: "TLSv1.3".into(),
            cipher: "TLS13_AES_128_GCM_SHA256".into(),
        });
        let (event, next) = outcome(
            &tls_attempt,
            AttemptResult::Delivered(reply(250, "2.0.0", "Ok: queued as X")),
        );
        assert_eq!(next, QueueNext::Remove);
        let EventDetails::Delivered(d) = event else {
            panic!("{event:?}")
        };
        assert_eq!(d.reply_text.as_deref(), Some("250 2.0.0 Ok: queued as X"));
        assert_eq!(d.mx_host.as_deref(), Some("mx.example.com"));
        assert_eq!(d.tls_version.as_deref(), Some("TLSv1.3"));
        assert_eq!(d.latency_ms, Some(20));
    }

    #[test]
    fn permanent_replies_bounce_through_the_classifier() {
        let (event, next) = outcome(
            &attempt(1, 1_000),
            AttemptResult::NotDelivered(reply(550, "5.1.1", "user unknown")),
        );
        assert_eq!(next, QueueNext::Remove);
        assert_eq!(event.bounce_type(), Some(BounceType::Hard));
        let (event, _) = outcome(
            &attempt(1, 1_000),
            AttemptResult::NotDelivered(reply(554, "5.7.1", "rejected as spam")),
        );
        assert_eq!(
            event,
            EventDetails::Bounced(Bounced {
                bounce_type: BounceType::Soft,
                reason: Some("blocked".into()),
                smtp_code: Some(554),
                enhanced_code: EnhancedCode::new(5, 7, 1),
                reply_text: Some("554 5.7.1 rejected as spam".into()),
                origin: BounceOrigin::Sync,
                rule: Some("test".into()),
                mx_host: Some("mx.example.com".into()),
            })
        );
    }

    #[test]
    fn transient_replies_defer_with_backoff_or_the_servers_hint_then_expire() {
        let (event, next) = outcome(
            &attempt(1, 1_000),
            AttemptResult::NotDelivered(reply(451, "4.3.0", "later")),
        );
        assert_eq!(next, QueueNext::RetryAt(1_000 + MINUTE));
        let EventDetails::Deferred(d) = event else {
            panic!()
        };
        assert_eq!((d.attempt, d.next_retry_at), (1, Some(1_000 + MINUTE)));
        let (_, next) = outcome(
            &attempt(1, 1_000),
            AttemptResult::NotDelivered(reply(450, "4.7.1", "greylisted, try again in 5 minutes")),
        );
        assert_eq!(next, QueueNext::RetryAt(1_000 + 5 * MINUTE));
        let (event, next) = outcome(
            &attempt(30, 48 * HOUR),
            AttemptResult::NotDelivered(reply(451, "4.3.0", "later")),
        );
        assert_eq!(next, QueueNext::Remove);
        assert!(matches!(
            event,
            EventDetails::Expired(Expired { attempts: 30, .. })
        ));
    }

    #[test]
    fn the_deadline_is_the_attempts_own() {
        // A stream with a one-hour lifetime: two hours in, it expires even
        // though the default lifetime (48h) would still retry.
        let mut short = attempt(3, 2 * HOUR);
        short.deadline = HOUR;
        let (event, next) = outcome(
            &short,
            AttemptResult::NotDelivered(reply(451, "4.3.0", "later")),
        );
        assert_eq!(next, QueueNext::Remove);
        assert!(matches!(event, EventDetails::Expired(_)));
    }

    #[test]
    fn dns_failures_and_refusals_defer_with_the_words_they_were_always_stored_with() {
        let mut before_any_server = attempt(1, 1_000);
        (before_any_server.mx_host, before_any_server.ip) = (None, None);
        let (event, next) = outcome(
            &before_any_server,
            AttemptResult::DnsFailed("SERVFAIL for example.com".into()),
        );
        assert_eq!(next, QueueNext::RetryAt(1_000 + MINUTE));
        assert_eq!(
            event,
            EventDetails::Deferred(Deferred {
                attempt: 1,
                smtp_code: Some(451),
                enhanced_code: EnhancedCode::new(4, 5, 0),
                reply_text: Some("451 4.5.0 DNS lookup failed: SERVFAIL for example.com".into()),
                next_retry_at: Some(1_000 + MINUTE),
                mx_host: None,
                ip: None,
            })
        );
        let (event, _) = outcome(
            &before_any_server,
            AttemptResult::Refused("mx.example.com (127.0.0.1) is loopback".into()),
        );
        let EventDetails::Deferred(d) = event else {
            panic!("{event:?}")
        };
        assert_eq!(
            d.reply_text.as_deref(),
            Some("451 4.4.4 mx.example.com (127.0.0.1) is loopback")
        );
    }

    #[test]
    fn domains_that_take_no_mail_bounce_hard_with_their_dns_rule() {
        let (event, next) = for_unroutable("null.example", Unroutable::NullMx);
        assert_eq!(next, QueueNext::Remove);
        assert_eq!(
            event,
            EventDetails::Bounced(Bounced {
                bounce_type: BounceType::Hard,
                reason: Some("hostunknown".into()),
                smtp_code: None,
                enhanced_code: None,
                reply_text: Some(
                    "556 5.1.10 null.example accepts no mail (null MX, RFC 7505)".into()
                ),
                origin: BounceOrigin::Sync,
                rule: Some("dns.null-mx".into()),
                mx_host: None,
            })
        );
        for (why, rule) in [
            (Unroutable::NoSuchDomain, "dns.nxdomain"),
            (Unroutable::NoAddress, "dns.no-address"),
        ] {
            let (EventDetails::Bounced(b), _) = for_unroutable("x.example", why) else {
                panic!()
            };
            assert_eq!(b.rule.as_deref(), Some(rule));
            assert_eq!(b.bounce_type, BounceType::Hard);
        }
    }

    #[test]
    fn local_failures_fail() {
        assert_eq!(
            for_local_failure("no route"),
            (
                EventDetails::Failed(Failed {
                    error: "no route".into()
                }),
                QueueNext::Remove
            )
        );
    }
}
