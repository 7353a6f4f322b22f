//! The one event taxonomy: every kind of thing that can happen to a delivery,
//! with its details. The same types drive the stored row, the status fold, the
//! API answer and (later) webhooks, the live feed and metrics.

use crate::clock::Millis;
use crate::enhanced::EnhancedCode;
use crate::status::BounceType;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What happened. See `STATUS_MODEL.md` for the meaning of each kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Scheduled,
    Queued,
    Dropped,
    Held,
    Sent,
    Deferred,
    Delivered,
    Bounced,
    Expired,
    Failed,
    Opened,
    Clicked,
    Unsubscribed,
    Complained,
}

impl EventKind {
    pub const ALL: [EventKind; 14] = [
        EventKind::Scheduled,
        EventKind::Queued,
        EventKind::Dropped,
        EventKind::Held,
        EventKind::Sent,
        EventKind::Deferred,
        EventKind::Delivered,
        EventKind::Bounced,
        EventKind::Expired,
        EventKind::Failed,
        EventKind::Opened,
        EventKind::Clicked,
        EventKind::Unsubscribed,
        EventKind::Complained,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Scheduled => "scheduled",
            EventKind::Queued => "queued",
            EventKind::Dropped => "dropped",
            EventKind::Held => "held",
            EventKind::Sent => "sent",
            EventKind::Deferred => "deferred",
            EventKind::Delivered => "delivered",
            EventKind::Bounced => "bounced",
            EventKind::Expired => "expired",
            EventKind::Failed => "failed",
            EventKind::Opened => "opened",
            EventKind::Clicked => "clicked",
            EventKind::Unsubscribed => "unsubscribed",
            EventKind::Complained => "complained",
        }
    }

    /// Events about the recipient's reaction (the engagement axis) rather than
    /// about getting the message to the mailbox (the delivery axis).
    pub fn is_engagement(self) -> bool {
        matches!(
            self,
            EventKind::Opened
                | EventKind::Clicked
                | EventKind::Unsubscribed
                | EventKind::Complained
        )
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownName(s.to_owned()))
    }
}

/// A name that is not one of the known values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown name `{0}`")]
pub struct UnknownName(pub String);

/// Which part of the system recorded the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventSource {
    Api,
    SmtpSubmission,
    Delivery,
    InboundMx,
    Tracker,
    Admin,
    ProviderWebhook,
}

impl EventSource {
    pub fn as_str(self) -> &'static str {
        match self {
            EventSource::Api => "api",
            EventSource::SmtpSubmission => "smtp-submission",
            EventSource::Delivery => "delivery",
            EventSource::InboundMx => "inbound-mx",
            EventSource::Tracker => "tracker",
            EventSource::Admin => "admin",
            EventSource::ProviderWebhook => "provider-webhook",
        }
    }
}

impl FromStr for EventSource {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            EventSource::Api,
            EventSource::SmtpSubmission,
            EventSource::Delivery,
            EventSource::InboundMx,
            EventSource::Tracker,
            EventSource::Admin,
            EventSource::ProviderWebhook,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| UnknownName(s.to_owned()))
    }
}

/// Why a delivery was not attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    Suppressed,
    DuplicateRecipient,
    UnsubscribedStream,
    InvalidAddress,
    UnconfirmedContact,
    ExpiredBeforeSend,
    QuotaExceeded,
    AccountDisabled,
    ContentRejected,
}

/// Where a bounce came from: the SMTP reply during our attempt, or a
/// delivery status notification that arrived later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BounceOrigin {
    Sync,
    Async,
}

/// Scope of an unsubscribe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnsubscribeScope {
    /// Only the stream of the message that carried the link.
    Stream,
    /// Every stream of the tenant.
    All,
}

impl UnsubscribeScope {
    pub fn as_str(self) -> &'static str {
        match self {
            UnsubscribeScope::Stream => "stream",
            UnsubscribeScope::All => "all",
        }
    }
}

/// The details of each kind, as listed in `STATUS_MODEL.md`. Unknown fields
/// are refused so that a typo in an externally recorded event is an error,
/// not silently lost data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "details", rename_all = "snake_case")]
pub enum EventDetails {
    Scheduled(Scheduled),
    Queued(Queued),
    Dropped(Dropped),
    Held(Held),
    Sent(Sent),
    Deferred(Deferred),
    Delivered(Delivered),
    Bounced(Bounced),
    Expired(Expired),
    Failed(Failed),
    Opened(Engagement),
    Clicked(Clicked),
    Unsubscribed(Unsubscribed),
    Complained(Complained),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scheduled {
    pub send_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Queued {
    /// Size of the message in bytes as accepted.
    #[serde(default)]
    pub size: u64,
}

/// A reference to the suppression entry that caused a drop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuppressionRef {
    pub id: String,
    pub reason: String,
    /// `None` for a tenant-wide entry, else the stream.
    #[serde(default)]
    pub stream: Option<String>,
    #[serde(default)]
    pub created_at: Option<Millis>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dropped {
    pub reason: DropReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppression: Option<SuppressionRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Held {
    pub limit: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_at: Option<Millis>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sent {
    #[serde(default)]
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mx_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deferred {
    #[serde(default)]
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enhanced_code: Option<EnhancedCode>,
    /// The remote server's reply, kept whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_retry_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mx_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivered {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mx_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cipher: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enhanced_code: Option<EnhancedCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_text: Option<String>,
    #[serde(default)]
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bounced {
    pub bounce_type: BounceType,
    /// Reason class (Sisimai vocabulary, e.g. `userunknown`, `mailboxfull`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enhanced_code: Option<EnhancedCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_text: Option<String>,
    pub origin: BounceOrigin,
    /// Id of the classification rule that decided hard or soft.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mx_host: Option<String>,
}

/// A classifier's verdict on a failure: hard or soft, the reason class,
/// and the id of the rule that decided (so every bounce can be explained).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BounceVerdict {
    pub bounce_type: BounceType,
    pub reason: String,
    pub rule: String,
}

/// The words a bounce came with: the remote server's reply during the
/// session, a report's status and diagnostic, or the text we wrote when DNS
/// said the domain takes no mail (no code then).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BounceWords {
    pub smtp_code: Option<u16>,
    pub enhanced_code: Option<EnhancedCode>,
    pub reply_text: Option<String>,
}

impl Bounced {
    /// Every `bounced` event is built here, whichever way the bounce came
    /// (a refusal in the session, a DNS answer, a report returned later),
    /// so that each carries its verdict, reason and rule the same way.
    pub fn new(
        verdict: BounceVerdict,
        origin: BounceOrigin,
        words: BounceWords,
        mx_host: Option<String>,
    ) -> Self {
        Self {
            bounce_type: verdict.bounce_type,
            reason: Some(verdict.reason),
            smtp_code: words.smtp_code,
            enhanced_code: words.enhanced_code,
            reply_text: words.reply_text,
            origin,
            rule: Some(verdict.rule),
            mx_host,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expired {
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reply: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failed {
    pub error: String,
}

/// Details of an `opened` event.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Engagement {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clicked {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_index: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<bool>,
    /// The rule that gave the verdict, for a person's click as for a
    /// machine's (posthorn-track's `machine` module).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_reason: Option<String>,
    /// `true`: a person's click with no person's open before it. It
    /// implies the message was opened; the open is inferred (counted, and
    /// marked as such), never stored as an `opened` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub implied_open: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unsubscribed {
    pub scope: UnsubscribeScope,
    /// How: `link`, `one-click`, `mailto`, `api`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Complained {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporting_domain: Option<String>,
}

impl EventDetails {
    pub fn kind(&self) -> EventKind {
        match self {
            EventDetails::Scheduled(_) => EventKind::Scheduled,
            EventDetails::Queued(_) => EventKind::Queued,
            EventDetails::Dropped(_) => EventKind::Dropped,
            EventDetails::Held(_) => EventKind::Held,
            EventDetails::Sent(_) => EventKind::Sent,
            EventDetails::Deferred(_) => EventKind::Deferred,
            EventDetails::Delivered(_) => EventKind::Delivered,
            EventDetails::Bounced(_) => EventKind::Bounced,
            EventDetails::Expired(_) => EventKind::Expired,
            EventDetails::Failed(_) => EventKind::Failed,
            EventDetails::Opened(_) => EventKind::Opened,
            EventDetails::Clicked(_) => EventKind::Clicked,
            EventDetails::Unsubscribed(_) => EventKind::Unsubscribed,
            EventDetails::Complained(_) => EventKind::Complained,
        }
    }

    /// Builds the details of `kind` from a JSON object (as stored, or as sent
    /// to `POST /v1/events`). A missing object counts as `{}`. The error
    /// says which field is unknown, missing or of the wrong type.
    pub fn from_json(
        kind: EventKind,
        details: serde_json::Value,
    ) -> Result<Self, serde_json::Error> {
        let details = if details.is_null() {
            serde_json::Value::Object(Default::default())
        } else {
            details
        };
        let tagged = serde_json::json!({ "kind": kind.as_str(), "details": details });
        serde_json::from_value(tagged)
    }

    /// The details as a JSON object, without the kind.
    pub fn to_json(&self) -> serde_json::Value {
        let mut tagged = serde_json::to_value(self).unwrap_or_default();
        tagged
            .get_mut("details")
            .map(serde_json::Value::take)
            .unwrap_or_default()
    }

    /// The bounce type, for a `bounced` event.
    pub fn bounce_type(&self) -> Option<BounceType> {
        match self {
            EventDetails::Bounced(b) => Some(b.bounce_type),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in EventKind::ALL {
            assert_eq!(kind.as_str().parse::<EventKind>(), Ok(kind));
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::json!(kind.as_str())
            );
        }
        assert!("bounce".parse::<EventKind>().is_err());
    }

    #[test]
    fn details_round_trip_through_json_per_kind() {
        let details = EventDetails::from_json(
            EventKind::Bounced,
            serde_json::json!({"bounce_type": "hard", "origin": "async", "smtp_code": 550,
                "enhanced_code": "5.1.1", "reply_text": "550 5.1.1 user unknown"}),
        )
        .unwrap();
        assert_eq!(details.kind(), EventKind::Bounced);
        assert_eq!(details.bounce_type(), Some(BounceType::Hard));
        let back = EventDetails::from_json(EventKind::Bounced, details.to_json()).unwrap();
        assert_eq!(back, details);
    }

    #[test]
    fn an_enhanced_code_is_stored_as_the_text_it_was() {
        let json = serde_json::json!({"attempt": 2, "smtp_code": 451, "enhanced_code": "4.7.650",
            "reply_text": "451 4.7.650 rate limited"});
        let details = EventDetails::from_json(EventKind::Deferred, json.clone()).unwrap();
        let EventDetails::Deferred(deferred) = &details else {
            panic!("{details:?}")
        };
        assert_eq!(deferred.enhanced_code, EnhancedCode::new(4, 7, 650));
        assert_eq!(details.to_json(), json);
        // A stored text that is no code is an error to the typed reader,
        // not a panic and not a silently different code.
        let bad = serde_json::json!({"enhanced_code": "4.07.1"});
        let err = EventDetails::from_json(EventKind::Deferred, bad).unwrap_err();
        assert!(err.to_string().contains("4.07.1"), "{err}");
    }

    #[test]
    fn details_refuse_unknown_fields_and_missing_required_ones() {
        let err = EventDetails::from_json(EventKind::Delivered, serde_json::json!({"mx": "x"}))
            .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let err =
            EventDetails::from_json(EventKind::Bounced, serde_json::json!({"origin": "sync"}))
                .unwrap_err();
        assert!(err.to_string().contains("bounce_type"), "{err}");
        // Kinds whose details are all optional accept no details at all.
        assert!(EventDetails::from_json(EventKind::Opened, serde_json::Value::Null).is_ok());
    }
}
