//! Building the copy of a message that goes to one recipient: one copy per
//! delivery, so that each can carry its own Message-ID, return path,
//! tracking links and unsubscribe address.

use crate::headers::HeaderBlock;
use crate::tracking::TrackedCopy;
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text;
use posthorn_core::address::Mailbox;
use posthorn_store::{DeliveryRecord, MessageRecord};

/// The RFC 5322 bytes of the copy for `delivery`, with the bodies and
/// `List-Unsubscribe` of `copy`. `id_domain` names the Message-ID's
/// right-hand side.
pub fn build(
    message: &MessageRecord,
    delivery: &DeliveryRecord,
    id_domain: &str,
    copy: &TrackedCopy,
) -> std::io::Result<Vec<u8>> {
    // A message that arrived over SMTP goes out as the client built it,
    // with only the unsubscribe headers added if it has none.
    let content = &message.content;
    if let Some(raw) = &content.raw_mime {
        return Ok(with_unsubscribe_headers(raw, &copy.list_unsubscribe));
    }
    let mut builder = MessageBuilder::new()
        .from(mailbox(&content.from))
        .subject(content.subject.as_str())
        // The time of acceptance, the same on every attempt.
        .date(message.created_at / 1000)
        .message_id(format!("{}@{id_domain}", delivery.id));
    builder = match address_list(&content.to) {
        Some(to) => builder.to(to),
        // Only Bcc recipients: say so rather than leave To out.
        None => builder.header("To", Raw::new("undisclosed-recipients:;")),
    };
    if let Some(cc) = address_list(&content.cc) {
        builder = builder.cc(cc);
    }
    if let Some(reply_to) = &content.reply_to {
        builder = builder.reply_to(mailbox(reply_to));
    }
    // Custom headers are unstructured text: written as `Text`, which encodes
    // non-ASCII, control characters and over-long values (RFC 2047) and
    // folds (RFC 5322), so that no stored value, even one from before
    // validation refused it, goes out raw.
    if let Some(headers) = content.headers.as_object() {
        for (name, value) in headers {
            if let Some(value) = value.as_str() {
                builder = builder.header(name.clone(), Text::new(value.to_owned()));
            }
        }
    }
    builder = builder
        .header("List-Unsubscribe", Raw::new(copy.list_unsubscribe.clone()))
        .header(
            "List-Unsubscribe-Post",
            Raw::new("List-Unsubscribe=One-Click"),
        );
    if let Some(text) = &copy.text {
        builder = builder.text_body(text.clone());
    }
    if let Some(html) = &copy.html {
        builder = builder.html_body(html.clone());
    }
    builder.write_to_vec()
}

/// `raw` with `List-Unsubscribe` (and the one-click `List-Unsubscribe-Post`)
/// in front, unless its header block already has either: the client's own
/// unsubscribe stays alone, so that a copy never carries two.
fn with_unsubscribe_headers(raw: &[u8], list_unsubscribe: &str) -> Vec<u8> {
    let headers = HeaderBlock::parse(raw);
    if headers.get("list-unsubscribe").is_some() || headers.get("list-unsubscribe-post").is_some() {
        return raw.to_vec();
    }
    let mut out = format!(
        "List-Unsubscribe: {list_unsubscribe}\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    )
    .into_bytes();
    out.extend_from_slice(raw);
    out
}

/// A mailbox header value as validated at submission.
fn mailbox(text: &str) -> Address<'static> {
    match Mailbox::parse(text) {
        Ok(m) => Address::new_address(m.name, m.address.to_string()),
        Err(_) => Address::new_address(None::<String>, text.to_owned()),
    }
}

/// A To or Cc header's mailboxes; `None` when there are none.
fn address_list(list: &[Mailbox]) -> Option<Address<'static>> {
    let addresses: Vec<Address<'static>> = list
        .iter()
        .map(|m| Address::new_address(m.name.clone(), m.address.to_string()))
        .collect();
    (!addresses.is_empty()).then(|| Address::new_list(addresses))
}

#[cfg(test)]
mod tests {
    use super::*;
    use posthorn_core::status::EngagementStatus;
    use posthorn_core::{DeliveryId, EventSource, MessageId, TenantId};
    use posthorn_store::{MessageContent, RecipientKind};
    use serde_json::json;

    #[test]
    fn a_client_built_message_gets_our_unsubscribe_headers_only_without_its_own() {
        let ours = "<https://t.example/u/x>";
        let bare = b"Subject: a\r\n\r\nbody\r\n";
        let added = String::from_utf8(with_unsubscribe_headers(bare, ours)).unwrap();
        assert!(
            added.starts_with(
                "List-Unsubscribe: <https://t.example/u/x>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\nSubject: a\r\n"
            ),
            "{added}"
        );
        for own in [
            &b"List-Unsubscribe: <mailto:l@x>\r\nSubject: a\r\n\r\nbody\r\n"[..],
            b"Subject: a\r\nlist-unsubscribe-post: List-Unsubscribe=One-Click\r\n\r\nbody\r\n",
        ] {
            assert_eq!(with_unsubscribe_headers(own, ours), own);
        }
    }

    /// A copy built from stored values that no longer pass submission (a
    /// 100,000-character header, control characters) or that are
    /// legitimately non-ASCII: every line within RFC 5322's 998 octets,
    /// only ASCII on the wire (no SMTPUTF8 needed), and every value decodes
    /// back to what was stored (Python's `email` is the independent reader).
    #[test]
    fn header_values_are_folded_and_encoded_and_decode_back() {
        let long = "x".repeat(100_000);
        let unicode = vec!["Grüße aus Köln 😀"; 40].join(" ");
        let control = "ring \u{7} the bell";
        let subject = format!("Grüße {}", vec!["wörter"; 100].join(" "));
        let message = MessageRecord {
            id: MessageId::generate(),
            tenant_id: TenantId::generate(),
            from_address: "sender@example.com".into(),
            content: MessageContent {
                from: "Jörg Müller <sender@example.com>".into(),
                reply_to: Some("Ünïcode Support <help@example.com>".into()),
                to: vec![Mailbox::parse("Zoë Ärger <rcpt@example.com>").unwrap()],
                cc: Vec::new(),
                subject: subject.clone(),
                text: Some("hello".into()),
                html: None,
                headers: json!({"X-Long": long, "X-Unicode": unicode, "X-Control": control}),
                tags: Vec::new(),
                metadata: json!({}),
                raw_mime: None,
            },
            stream: "transactional".into(),
            campaign: None,
            test: false,
            send_at: None,
            expires_at: None,
            tracking_opens: None,
            tracking_clicks: None,
            size: 1,
            source: EventSource::Api,
            created_at: 1_795_478_400_000,
        };
        let delivery = DeliveryRecord {
            id: DeliveryId::generate(),
            tenant_id: message.tenant_id.clone(),
            message_id: message.id.clone(),
            recipient: "rcpt@example.com".into(),
            recipient_kind: RecipientKind::To,
            sender: "sender@example.com".into(),
            stream: "transactional".into(),
            campaign: None,
            test: false,
            created_at: 0,
            window_ends_at: 0,
            delivery_status: None,
            delivery_event_id: None,
            delivery_occurred_at: None,
            engagement_status: EngagementStatus::None,
            engagement_event_id: None,
            engagement_occurred_at: None,
            updated_at: 0,
            seen: Default::default(),
        };
        let copy = TrackedCopy {
            html: None,
            text: Some("hello".into()),
            links: Vec::new(),
            list_unsubscribe: "<https://t.example/u/x>, <mailto:u@t.example>".into(),
        };
        let bytes = build(&message, &delivery, "example.com", &copy).unwrap();
        let head_end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a header section");
        let head = &bytes[..head_end + 2];
        for line in head.split(|&b| b == b'\n') {
            assert!(line.len() <= 998, "a line of {} octets", line.len());
        }
        assert!(head.is_ascii(), "{}", String::from_utf8_lossy(head));
        assert!(
            !head
                .iter()
                .any(|&b| b.is_ascii_control() && !matches!(b, b'\r' | b'\n' | b'\t')),
            "no raw control characters"
        );

        let Some(python) = posthorn_testkit::peer("python3") else {
            return;
        };
        let script = r#"
import email, email.policy, json, sys
m = email.message_from_bytes(sys.stdin.buffer.read(), policy=email.policy.default)
print(json.dumps({
    "subject": str(m["Subject"]),
    "from": m["From"].addresses[0].display_name,
    "to": m["To"].addresses[0].display_name,
    "reply_to": m["Reply-To"].addresses[0].display_name,
    "long": str(m["X-Long"]),
    "unicode": str(m["X-Unicode"]),
    "control": str(m["X-Control"]),
}))
"#;
        let mut child = std::process::Command::new(python)
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let decoded: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(decoded["subject"], subject.as_str());
        assert_eq!(decoded["from"], "Jörg Müller");
        assert_eq!(decoded["to"], "Zoë Ärger");
        assert_eq!(decoded["reply_to"], "Ünïcode Support");
        assert_eq!(decoded["long"], long.as_str());
        assert_eq!(decoded["unicode"], unicode.as_str());
        assert_eq!(decoded["control"], control);
    }
}
