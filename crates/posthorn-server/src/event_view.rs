//! The one JSON shape of an event, wherever it is shown: a delivery's
//! timeline and the event feed of the API today, the live feed and webhooks
//! next. Built from the stored [`EventRecord`] and nothing else, so every
//! place that shows an event shows the same fields the same way.

use posthorn_core::clock::format_rfc3339;
use posthorn_core::{DeliveryId, EventId, MessageId};
use posthorn_store::EventRecord;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct EventView<'a> {
    pub id: &'a EventId,
    pub kind: &'static str,
    /// RFC 3339, UTC, milliseconds.
    pub occurred_at: String,
    pub recorded_at: String,
    pub source: &'static str,
    /// The kind's details, the object `EventDetails::to_json` makes (and
    /// the store keeps): without the kind, which is beside it.
    pub details: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<&'a str>,
    /// Why the event contradicts the delivery's status, when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<&'a str>,
    /// Recorded after the update window: it did not change the status.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub outside_window: bool,
    /// Which delivery the event belongs to: shown where events of many
    /// deliveries are listed together, left out of one delivery's timeline.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryOf<'a>>,
}

#[derive(Debug, Serialize)]
pub struct DeliveryOf<'a> {
    pub delivery_id: &'a DeliveryId,
    pub message_id: &'a MessageId,
    pub recipient: &'a str,
    pub sender: &'a str,
}

impl<'a> EventView<'a> {
    /// The event in its delivery's timeline.
    pub fn in_timeline(e: &'a EventRecord) -> Self {
        Self {
            id: &e.id,
            kind: e.kind().as_str(),
            occurred_at: format_rfc3339(e.occurred_at),
            recorded_at: format_rfc3339(e.recorded_at),
            source: e.source.as_str(),
            details: e.details.to_json(),
            external_id: e.external_id.as_deref(),
            anomaly: e.anomaly.as_deref(),
            outside_window: e.outside_window,
            delivery: None,
        }
    }

    /// The event among those of other deliveries (a feed), saying whose.
    pub fn in_feed(e: &'a EventRecord) -> Self {
        Self {
            delivery: Some(DeliveryOf {
                delivery_id: &e.delivery_id,
                message_id: &e.message_id,
                recipient: &e.recipient,
                sender: &e.sender,
            }),
            ..Self::in_timeline(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use posthorn_core::event::EventDetails;
    use posthorn_core::{EventKind, EventSource};
    use serde_json::json;

    fn record() -> EventRecord {
        EventRecord {
            seq: 7,
            id: EventId::from_stored("e1".into()),
            delivery_id: DeliveryId::from_stored("d1".into()),
            message_id: MessageId::from_stored("m1".into()),
            recipient: "r@example.com".into(),
            sender: "s@example.com".into(),
            occurred_at: 0,
            recorded_at: 1_000,
            source: EventSource::Delivery,
            details: EventDetails::from_json(
                EventKind::Delivered,
                json!({"mx_host": "mx.example.com"}),
            )
            .unwrap(),
            external_id: None,
            anomaly: None,
            outside_window: false,
        }
    }

    #[test]
    fn a_timeline_event_leaves_out_its_delivery_and_empty_fields() {
        let e = record();
        assert_eq!(
            serde_json::to_value(EventView::in_timeline(&e)).unwrap(),
            json!({
                "id": "e1",
                "kind": "delivered",
                "occurred_at": "1970-01-01T00:00:00.000Z",
                "recorded_at": "1970-01-01T00:00:01.000Z",
                "source": "delivery",
                // As the store keeps a `delivered` event's details.
                "details": {"attempt": 0, "mx_host": "mx.example.com"},
            })
        );
    }

    #[test]
    fn a_feed_event_says_whose_it_is_and_shows_what_is_set() {
        let mut e = record();
        e.external_id = Some("x-1".into());
        e.anomaly = Some("event_after_dropped".into());
        e.outside_window = true;
        let v = serde_json::to_value(EventView::in_feed(&e)).unwrap();
        assert_eq!(v["delivery_id"], "d1");
        assert_eq!(v["message_id"], "m1");
        assert_eq!(v["recipient"], "r@example.com");
        assert_eq!(v["sender"], "s@example.com");
        assert_eq!(v["external_id"], "x-1");
        assert_eq!(v["anomaly"], "event_after_dropped");
        assert_eq!(v["outside_window"], true);
    }

    /// Clients see the details as the store kept them: reading them back
    /// typed and showing them again changes not one byte (the view used to
    /// show the stored JSON as it was).
    #[test]
    fn details_are_shown_byte_for_byte_as_stored() {
        let stored = [
            (EventKind::Queued, json!({"size": 1234})),
            (EventKind::Queued, json!({})),
            (
                EventKind::Dropped,
                json!({"reason": "suppressed", "suppression": {"id": "s1",
                    "reason": "hard_bounce", "stream": null, "created_at": 5}}),
            ),
            (EventKind::Dropped, json!({"reason": "invalid_address"})),
            (
                EventKind::Delivered,
                json!({"mx_host": "mx.example.com", "smtp_code": 250, "attempt": 2,
                    "reply_text": "250 2.0.0 Ok: queued as é", "latency_ms": 31}),
            ),
            (
                EventKind::Bounced,
                json!({"bounce_type": "hard", "origin": "async", "smtp_code": 550,
                    "enhanced_code": "5.1.1", "reply_text": "550 5.1.1 <a@b>: no such user",
                    "reason": "userunknown", "rule": "dsn.status"}),
            ),
            (
                EventKind::Deferred,
                json!({"attempt": 3, "next_retry_at": 99, "smtp_code": 451}),
            ),
            (EventKind::Opened, json!({})),
            (
                EventKind::Clicked,
                json!({"url": "https://example.com/?a=1&b=2", "link_index": 0,
                    "machine": true, "machine_reason": "scanner"}),
            ),
            (
                EventKind::Unsubscribed,
                json!({"scope": "stream", "method": "one-click"}),
            ),
            (EventKind::Complained, json!({"feedback_type": "abuse"})),
        ];
        for (kind, details) in stored {
            // What the store writes: the details as `to_json` makes them.
            let text = EventDetails::from_json(kind, details)
                .unwrap()
                .to_json()
                .to_string();
            let was = serde_json::from_str::<serde_json::Value>(&text).unwrap();
            let mut e = record();
            e.details =
                EventDetails::from_json(kind, serde_json::from_str(&text).unwrap()).unwrap();
            let shown = serde_json::to_value(EventView::in_timeline(&e)).unwrap();
            assert_eq!(shown["kind"], kind.as_str());
            assert_eq!(
                serde_json::to_string(&shown["details"]).unwrap(),
                serde_json::to_string(&was).unwrap(),
                "{kind}"
            );
            assert_eq!(shown["details"].to_string(), text, "{kind}");
        }
    }
}
