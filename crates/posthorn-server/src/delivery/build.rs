//! Building the copy of a message that goes to one recipient: one copy per
//! delivery, so that each can carry its own Message-ID, return path,
//! tracking links and unsubscribe address.

use crate::headers::HeaderBlock;
use crate::tracking::TrackedCopy;
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::raw::Raw;
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
    if let Some(raw) = &message.raw_mime {
        return Ok(with_unsubscribe_headers(raw, &copy.list_unsubscribe));
    }
    let mut builder = MessageBuilder::new()
        .from(mailbox(&message.from_header))
        .subject(message.subject.as_str())
        // The time of acceptance, the same on every attempt.
        .date(message.created_at / 1000)
        .message_id(format!("{}@{id_domain}", delivery.id));
    builder = match header_list(message.to_header.as_deref()) {
        Some(to) => builder.to(to),
        // Only Bcc recipients: say so rather than leave To out.
        None => builder.header("To", Raw::new("undisclosed-recipients:;")),
    };
    if let Some(cc) = header_list(message.cc_header.as_deref()) {
        builder = builder.cc(cc);
    }
    if let Some(reply_to) = &message.reply_to {
        builder = builder.reply_to(mailbox(reply_to));
    }
    if let Some(headers) = message.headers.as_object() {
        for (name, value) in headers {
            if let Some(value) = value.as_str() {
                builder = builder.header(name.clone(), Raw::new(value.to_owned()));
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
/// in front, unless its header block already has one.
fn with_unsubscribe_headers(raw: &[u8], list_unsubscribe: &str) -> Vec<u8> {
    if HeaderBlock::parse(raw).get("list-unsubscribe").is_some() {
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

/// The stored To/Cc list: `[{"name": ..., "address": ...}]`.
fn header_list(json: Option<&str>) -> Option<Address<'static>> {
    let list: Vec<serde_json::Value> = serde_json::from_str(json?).ok()?;
    let addresses: Vec<Address<'static>> = list
        .iter()
        .filter_map(|v| {
            let address = v["address"].as_str()?.to_owned();
            let name = v["name"].as_str().map(str::to_owned);
            Some(Address::new_address(name, address))
        })
        .collect();
    (!addresses.is_empty()).then(|| Address::new_list(addresses))
}
