//! Suppression: addresses (or whole domains) that must not be mailed, with a
//! scope, a reason, the event that caused the entry and an optional expiry.

use crate::clock::Millis;
use crate::id::EventId;
use serde::{Deserialize, Serialize};

/// Why an address is suppressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuppressionReason {
    HardBounce,
    Complaint,
    Unsubscribe,
    SoftBounceLimit,
    Manual,
}

impl SuppressionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SuppressionReason::HardBounce => "hard_bounce",
            SuppressionReason::Complaint => "complaint",
            SuppressionReason::Unsubscribe => "unsubscribe",
            SuppressionReason::SoftBounceLimit => "soft_bounce_limit",
            SuppressionReason::Manual => "manual",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "hard_bounce" => SuppressionReason::HardBounce,
            "complaint" => SuppressionReason::Complaint,
            "unsubscribe" => SuppressionReason::Unsubscribe,
            "soft_bounce_limit" => SuppressionReason::SoftBounceLimit,
            "manual" => SuppressionReason::Manual,
            _ => return None,
        })
    }
}

/// Where an entry applies.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SuppressionScope {
    /// Every stream of the tenant.
    All,
    /// One stream (an unsubscribe from that stream).
    Stream(String),
}

impl SuppressionScope {
    /// `None` for tenant-wide, else the stream name (how it is stored).
    pub fn stream(&self) -> Option<&str> {
        match self {
            SuppressionScope::All => None,
            SuppressionScope::Stream(s) => Some(s),
        }
    }
    pub fn from_stream(stream: Option<String>) -> Self {
        stream.map_or(SuppressionScope::All, SuppressionScope::Stream)
    }
}

/// One entry of the suppression list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuppressionEntry {
    pub id: String,
    /// A normalised address (`user@example.com`), or `@example.com` for a
    /// whole domain.
    pub target: String,
    pub scope: SuppressionScope,
    pub reason: SuppressionReason,
    pub cause_event_id: Option<EventId>,
    pub created_at: Millis,
    pub expires_at: Option<Millis>,
}

impl SuppressionEntry {
    /// Whether the entry still holds at `now`.
    pub fn is_active(&self, now: Millis) -> bool {
        self.expires_at.is_none_or(|t| now < t)
    }

    /// Whether the entry stops mail to `address` (normalised) on `stream` at `now`.
    pub fn blocks(&self, address: &str, stream: &str, now: Millis) -> bool {
        self.is_active(now) && self.scope_covers(stream) && target_matches(&self.target, address)
    }

    fn scope_covers(&self, stream: &str) -> bool {
        match &self.scope {
            SuppressionScope::All => true,
            SuppressionScope::Stream(s) => s == stream,
        }
    }
}

/// Whether a target (`user@domain` or `@domain`) covers a normalised address.
pub fn target_matches(target: &str, address: &str) -> bool {
    if let Some(domain) = target.strip_prefix('@') {
        address
            .rsplit_once('@')
            .is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain))
    } else {
        target.eq_ignore_ascii_case(address)
    }
}

/// The targets to look up for an address: itself and its domain.
pub fn lookup_targets(address: &str) -> [String; 2] {
    let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
    [address.to_owned(), format!("@{domain}")]
}

/// How long entries of each reason last (`None` = until removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SuppressionExpiry {
    pub hard_bounce: Option<Millis>,
    pub soft_bounce_limit: Option<Millis>,
}

impl SuppressionExpiry {
    /// Complaints, unsubscribes and manual entries never expire on their own:
    /// a person asked not to be mailed. Bounces may, where configured, because
    /// addresses do come back to life.
    pub fn expires_at(&self, reason: SuppressionReason, created_at: Millis) -> Option<Millis> {
        let ttl = match reason {
            SuppressionReason::HardBounce => self.hard_bounce,
            SuppressionReason::SoftBounceLimit => self.soft_bounce_limit,
            SuppressionReason::Complaint
            | SuppressionReason::Unsubscribe
            | SuppressionReason::Manual => None,
        };
        ttl.map(|t| created_at.saturating_add(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        target: &str,
        scope: SuppressionScope,
        expires_at: Option<Millis>,
    ) -> SuppressionEntry {
        SuppressionEntry {
            id: "s1".into(),
            target: target.into(),
            scope,
            reason: SuppressionReason::Manual,
            cause_event_id: None,
            created_at: 0,
            expires_at,
        }
    }

    #[test]
    fn scope_address_domain_and_expiry() {
        let all = entry("a@example.com", SuppressionScope::All, None);
        assert!(all.blocks("a@example.com", "transactional", 5));
        assert!(all.blocks("a@example.com", "newsletter", 5));
        assert!(!all.blocks("b@example.com", "newsletter", 5));

        let stream = entry(
            "a@example.com",
            SuppressionScope::Stream("newsletter".into()),
            None,
        );
        assert!(stream.blocks("a@example.com", "newsletter", 5));
        assert!(!stream.blocks("a@example.com", "transactional", 5));

        let domain = entry("@example.com", SuppressionScope::All, None);
        assert!(domain.blocks("anyone@example.com", "transactional", 5));
        assert!(!domain.blocks("anyone@example.org", "transactional", 5));

        let expiring = entry("a@example.com", SuppressionScope::All, Some(100));
        assert!(expiring.blocks("a@example.com", "transactional", 99));
        assert!(!expiring.blocks("a@example.com", "transactional", 100));
    }

    #[test]
    fn expiry_defaults_never_and_never_for_complaints() {
        let cfg = SuppressionExpiry {
            hard_bounce: Some(1000),
            soft_bounce_limit: Some(10),
        };
        assert_eq!(cfg.expires_at(SuppressionReason::HardBounce, 5), Some(1005));
        assert_eq!(
            cfg.expires_at(SuppressionReason::SoftBounceLimit, 5),
            Some(15)
        );
        assert_eq!(cfg.expires_at(SuppressionReason::Complaint, 5), None);
        assert_eq!(cfg.expires_at(SuppressionReason::Unsubscribe, 5), None);
        assert_eq!(
            SuppressionExpiry::default().expires_at(SuppressionReason::HardBounce, 5),
            None
        );
    }
}
