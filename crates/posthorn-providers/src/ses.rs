//! Amazon SES events, the `Message` of an SNS notification: event
//! publishing records (`eventType`: Send, Reject, Delivery, Bounce,
//! Complaint, DeliveryDelay, Open, Click, Subscription, ...) and the older
//! feedback notifications (`notificationType`: Bounce, Complaint,
//! Delivery). One notification may name several recipients: one event
//! each. Opens and clicks name no recipient: they are attributed only when
//! the message had one (`mail.destination`).

use crate::{Mapped, MappedEvent, PayloadError, Provider, ProviderBounce, leading_code, recipient};
use posthorn_core::EnhancedCode;
use posthorn_core::clock::parse_rfc3339;
use posthorn_core::event::{
    Clicked, Complained, Deferred, Delivered, DropReason, Dropped, Engagement, EventDetails,
    Queued, UnsubscribeScope, Unsubscribed,
};
use posthorn_core::status::BounceType;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    event_type: Option<String>,
    notification_type: Option<String>,
    mail: Mail,
    bounce: Option<Bounce>,
    complaint: Option<Complaint>,
    delivery: Option<Delivery>,
    delivery_delay: Option<DeliveryDelay>,
    open: Option<Open>,
    click: Option<Click>,
    subscription: Option<Subscription>,
    reject: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Mail {
    timestamp: String,
    message_id: String,
    source: Option<String>,
    #[serde(default)]
    destination: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bounce {
    bounce_type: String,
    bounce_sub_type: Option<String>,
    bounced_recipients: Vec<BouncedRecipient>,
    timestamp: String,
    feedback_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BouncedRecipient {
    email_address: String,
    status: Option<String>,
    diagnostic_code: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Complaint {
    complained_recipients: Vec<Address>,
    timestamp: String,
    feedback_id: Option<String>,
    complaint_feedback_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Address {
    email_address: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Delivery {
    timestamp: String,
    recipients: Vec<String>,
    smtp_response: Option<String>,
    reporting_mta: Option<String>,
    processing_time_millis: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeliveryDelay {
    timestamp: String,
    delay_type: Option<String>,
    delayed_recipients: Vec<BouncedRecipient>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Open {
    timestamp: String,
    ip_address: Option<String>,
    user_agent: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Click {
    timestamp: String,
    ip_address: Option<String>,
    user_agent: Option<String>,
    link: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Subscription {
    timestamp: String,
    contact_list: Option<String>,
}

fn time(field: &str, value: &str) -> Result<posthorn_core::Millis, PayloadError> {
    parse_rfc3339(value)
        .ok_or_else(|| PayloadError::new(format!("{field} is not a time: {value:?}")))
}

/// Reads one SES record (the SNS notification's `Message`). `sns_id` is
/// the SNS MessageId: with the recipient, it names each event once (SNS
/// delivers a notification at least once, with the same MessageId).
pub fn parse(message: &str, sns_id: &str) -> Result<Vec<Mapped>, PayloadError> {
    let raw: serde_json::Value = serde_json::from_str(message)?;
    let r: Record = serde_json::from_value(raw.clone())?;
    let kind = r
        .event_type
        .clone()
        .or(r.notification_type.clone())
        .ok_or_else(|| PayloadError::new("eventType (or notificationType) is missing"))?;
    let sender = r.mail.source.as_deref().and_then(recipient);
    let event =
        |address: &str, occurred_at, details, id_part: &str| -> Result<Mapped, PayloadError> {
            let address = recipient(address)
                .ok_or_else(|| PayloadError::new(format!("{address:?} is not an address")))?;
            Ok(Mapped::Event(Box::new(MappedEvent {
                message_id: r.mail.message_id.clone(),
                event_id: Some(format!("{sns_id}:{id_part}:{address}")),
                recipient: address,
                sender: sender.clone(),
                occurred_at,
                details,
                raw: raw.clone(),
            })))
        };
    let missing = |what: &str| PayloadError::new(format!("{kind} without `{what}`"));
    // Every recipient of the message (Send and Reject are about all).
    let all = |details: EventDetails, at| -> Result<Vec<Mapped>, PayloadError> {
        r.mail
            .destination
            .iter()
            .map(|a| event(a, at, details.clone(), &kind))
            .collect()
    };
    // Opens and clicks: the recipient only when there was one.
    let single = |details: EventDetails, at| -> Result<Vec<Mapped>, PayloadError> {
        match r.mail.destination.as_slice() {
            [only] => Ok(vec![event(only, at, details, &kind)?]),
            _ => Ok(vec![Mapped::ignored(
                kind.clone(),
                "SES names no recipient and the message had several",
            )]),
        }
    };
    match kind.as_str() {
        "Send" => all(
            EventDetails::Queued(Queued::default()),
            time("mail.timestamp", &r.mail.timestamp)?,
        ),
        "Reject" => {
            let _ = r.reject.as_ref().ok_or_else(|| missing("reject"))?;
            all(
                EventDetails::Dropped(Dropped {
                    reason: DropReason::ContentRejected,
                    suppression: None,
                }),
                time("mail.timestamp", &r.mail.timestamp)?,
            )
        }
        "Delivery" => {
            let d = r.delivery.as_ref().ok_or_else(|| missing("delivery"))?;
            let at = time("delivery.timestamp", &d.timestamp)?;
            d.recipients
                .iter()
                .map(|a| {
                    let reply = d.smtp_response.clone();
                    let details = EventDetails::Delivered(Delivered {
                        mx_host: d.reporting_mta.clone(),
                        smtp_code: reply.as_deref().and_then(leading_code),
                        reply_text: reply,
                        latency_ms: d.processing_time_millis,
                        ..Default::default()
                    });
                    event(a, at, details, &kind)
                })
                .collect()
        }
        "Bounce" => {
            let b = r.bounce.as_ref().ok_or_else(|| missing("bounce"))?;
            let at = time("bounce.timestamp", &b.timestamp)?;
            // SES: Permanent is final (suppress), Transient may pass,
            // Undetermined is SES not knowing.
            let stated = match b.bounce_type.as_str() {
                "Permanent" => Some(BounceType::Hard),
                "Transient" => Some(BounceType::Soft),
                _ => None,
            };
            let provider_type = format!(
                "{}.{}",
                b.bounce_type,
                b.bounce_sub_type.as_deref().unwrap_or("General")
            );
            let id_part = b.feedback_id.as_deref().unwrap_or("bounce").to_owned();
            b.bounced_recipients
                .iter()
                .map(|br| {
                    let details = ProviderBounce {
                        provider: Provider::Ses,
                        provider_type: &provider_type,
                        stated,
                        smtp_code: None,
                        enhanced: br.status.as_deref().and_then(EnhancedCode::parse),
                        text: br
                            .diagnostic_code
                            .as_deref()
                            .map(|d| d.strip_prefix("smtp; ").unwrap_or(d).to_owned()),
                    }
                    .details();
                    event(&br.email_address, at, details, &id_part)
                })
                .collect()
        }
        "Complaint" => {
            let c = r.complaint.as_ref().ok_or_else(|| missing("complaint"))?;
            let at = time("complaint.timestamp", &c.timestamp)?;
            let id_part = c.feedback_id.as_deref().unwrap_or("complaint").to_owned();
            c.complained_recipients
                .iter()
                .map(|a| {
                    let details = EventDetails::Complained(Complained {
                        feedback_type: c.complaint_feedback_type.clone(),
                        reporting_domain: None,
                    });
                    event(&a.email_address, at, details, &id_part)
                })
                .collect()
        }
        "DeliveryDelay" => {
            let d = r
                .delivery_delay
                .as_ref()
                .ok_or_else(|| missing("deliveryDelay"))?;
            let at = time("deliveryDelay.timestamp", &d.timestamp)?;
            d.delayed_recipients
                .iter()
                .map(|dr| {
                    let text = dr
                        .diagnostic_code
                        .as_deref()
                        .map(|t| t.strip_prefix("smtp; ").unwrap_or(t).to_owned());
                    let details = EventDetails::Deferred(Deferred {
                        smtp_code: text.as_deref().and_then(leading_code),
                        enhanced_code: dr.status.as_deref().and_then(EnhancedCode::parse),
                        reply_text: text.or(d.delay_type.clone()),
                        ..Default::default()
                    });
                    event(&dr.email_address, at, details, &kind)
                })
                .collect()
        }
        "Open" => {
            let o = r.open.as_ref().ok_or_else(|| missing("open"))?;
            single(
                EventDetails::Opened(Engagement {
                    ip: o.ip_address.clone(),
                    user_agent: o.user_agent.clone(),
                    ..Default::default()
                }),
                time("open.timestamp", &o.timestamp)?,
            )
        }
        "Click" => {
            let c = r.click.as_ref().ok_or_else(|| missing("click"))?;
            single(
                EventDetails::Clicked(Clicked {
                    implied_open: None,
                    url: c.link.clone(),
                    link_index: None,
                    ip: c.ip_address.clone(),
                    user_agent: c.user_agent.clone(),
                    machine: None,
                    machine_reason: None,
                }),
                time("click.timestamp", &c.timestamp)?,
            )
        }
        "Subscription" => {
            let s = r
                .subscription
                .as_ref()
                .ok_or_else(|| missing("subscription"))?;
            single(
                EventDetails::Unsubscribed(Unsubscribed {
                    scope: if s.contact_list.is_some() {
                        UnsubscribeScope::Stream
                    } else {
                        UnsubscribeScope::All
                    },
                    method: Some("provider".to_owned()),
                }),
                time("subscription.timestamp", &s.timestamp)?,
            )
        }
        other => Ok(vec![Mapped::ignored(other, "no Posthorn kind")]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use posthorn_core::EventKind;

    fn mail(destination: &[&str]) -> serde_json::Value {
        serde_json::json!({"timestamp": "2016-01-27T14:59:38.237Z",
            "messageId": "0000014644fe5ef6-9a483358-9170-4cb4-a269-f5dcdf415321-000000",
            "source": "john@example.com", "destination": destination})
    }

    #[test]
    fn a_bounce_names_each_recipient() {
        let m = serde_json::json!({"eventType": "Bounce", "mail": mail(&["a@example.com", "b@example.com"]),
            "bounce": {"bounceType": "Permanent", "bounceSubType": "General",
                "bouncedRecipients": [{"emailAddress": "a@example.com", "action": "failed",
                    "status": "5.1.1", "diagnosticCode": "smtp; 550 5.1.1 user unknown"}],
                "timestamp": "2017-08-05T00:41:02.669Z", "feedbackId": "fb-1"}});
        let mapped = parse(&m.to_string(), "sns-1").unwrap();
        assert_eq!(mapped.len(), 1);
        let Mapped::Event(e) = &mapped[0] else {
            panic!()
        };
        assert_eq!(e.event_id.as_deref(), Some("sns-1:fb-1:a@example.com"));
        let EventDetails::Bounced(b) = &e.details else {
            panic!()
        };
        assert_eq!(b.bounce_type, BounceType::Hard);
        assert_eq!(b.smtp_code, Some(550));
        assert_eq!(b.reply_text.as_deref(), Some("550 5.1.1 user unknown"));
        assert_eq!(b.rule.as_deref(), Some("provider.ses.Permanent.General"));
    }

    #[test]
    fn opens_are_attributed_only_to_a_single_recipient() {
        let open = |dest: &[&str]| {
            serde_json::json!({"eventType": "Open", "mail": mail(dest),
                "open": {"ipAddress": "192.0.2.1", "timestamp": "2017-08-09T22:00:19.652Z",
                    "userAgent": "Mozilla/5.0"}})
            .to_string()
        };
        let one = parse(&open(&["a@example.com"]), "s").unwrap();
        assert_eq!(crate::kind_of(&one[0]), Some(EventKind::Opened));
        let two = parse(&open(&["a@example.com", "b@example.com"]), "s").unwrap();
        assert!(matches!(two[0], Mapped::Ignored { .. }));
        // A notification (the older format) reads the same.
        let delivery = serde_json::json!({"notificationType": "Delivery", "mail": mail(&["a@example.com"]),
            "delivery": {"timestamp": "2016-01-27T14:59:38.237Z", "recipients": ["a@example.com"],
                "smtpResponse": "250 ok dirdel", "reportingMTA": "a8-70.smtp-out.amazonses.com",
                "processingTimeMillis": 546}});
        let d = parse(&delivery.to_string(), "s").unwrap();
        assert_eq!(crate::kind_of(&d[0]), Some(EventKind::Delivered));
        assert!(parse("{}", "s").is_err());
    }
}
