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
                "details": {"mx_host": "mx.example.com"},
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
}
