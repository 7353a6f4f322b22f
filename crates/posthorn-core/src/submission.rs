//! The rules a submitted message must meet, whichever door it came through:
//! `POST /v1/messages` and SMTP submission call the same checks, so that the
//! same bad value is refused the same way by both (HTTP 422, SMTP 5xx).
//!
//! Pure: values in, [`FieldError`]s out. Each door only translates its wire
//! format into a [`Draft`] (or, for a client-built message, into calls of
//! [`raw_header_rule`] and [`check_raw_header`]) and the errors into its own
//! answer. Checks that need the store (the From domain's owner, policy)
//! sit beside this step, not inside it.
//!
//! The same step resolves the settings a submission is accepted with (the
//! stream's confirmation rule, campaign de-duplication), from values the
//! door read beforehand ([`Settings`]), so that no door can resolve them
//! differently.

use crate::Millis;
use crate::config::Config;

/// The stream of a submission that names none.
pub const DEFAULT_STREAM: &str = "transactional";
/// Longest subject in bytes: RFC 5322's line limit, so that even unfolded it
/// fits one line.
pub const MAX_SUBJECT_BYTES: usize = 998;
/// Longest value of a custom header, in bytes (the same bound as the
/// subject; the copy folds and encodes it, see `delivery/build.rs`).
pub const MAX_HEADER_VALUE_BYTES: usize = 998;
/// Longest header name (RFC 5322 allows 997; 76 keeps `Name: ` on one line).
pub const MAX_HEADER_NAME: usize = 76;
/// Campaign ids and tags are measured in bytes of UTF-8, as they always were.
pub const MAX_CAMPAIGN_BYTES: usize = 128;
pub const MAX_TAGS: usize = 20;
pub const MAX_TAG_BYTES: usize = 128;
/// Metadata as compact JSON.
pub const MAX_METADATA_BYTES: usize = 10 * 1024;
/// The earliest time a client may give: the Unix epoch.
pub const EARLIEST_TIME: Millis = 0;
/// The latest time a client may give: 9999-12-31T23:59:59.999Z, the last
/// instant an RFC 3339 four-digit year can express. Every accepted time
/// therefore reads back in the form it was given in.
pub const LATEST_TIME: Millis = 253_402_300_799_999;

/// One refused field: which one, a stable code for programs, and a sentence
/// for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message} ({code})")]
pub struct FieldError {
    /// The field as the API names it (`subject`, `headers.X-Foo`, `text`);
    /// SMTP submission names the header or `message`.
    pub field: String,
    pub code: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            code,
            message: message.into(),
        }
    }

    /// Whether the refusal is about who may set what (a header Posthorn
    /// owns) rather than the content's form: SMTP answers 550 5.7.1 for
    /// these and 554 5.6.0 for the rest.
    pub fn is_policy(&self) -> bool {
        self.code == "reserved_header"
    }
}

/// What both doors have to say about a message, borrowed from the request.
#[derive(Debug, Default, Clone)]
pub struct Draft<'a> {
    pub subject: Option<&'a str>,
    /// Custom headers as (name, value); the API's `headers{}`.
    pub headers: Vec<(&'a str, &'a str)>,
    pub tags: &'a [String],
    /// The metadata object, when one was given.
    pub metadata: Option<&'a serde_json::Value>,
    pub stream: Option<&'a str>,
    pub campaign: Option<&'a str>,
    pub send_at: Option<Millis>,
    pub expires_at: Option<Millis>,
    /// Bodies by field name (`text`, `html`; SMTP: `message`).
    pub bodies: Vec<(&'static str, &'a [u8])>,
    /// The message's own tracking choice (`tracking{opens,clicks}`); unset
    /// leaves it to the stream, tenant and server at sending time.
    pub tracking_opens: Option<bool>,
    pub tracking_clicks: Option<bool>,
}

/// What the server and the tenant say about every submission, read by the
/// door before validating (the tenant comes from the API key).
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    /// `[policy]` and `[streams.NAME]`.
    pub config: &'a Config,
    /// The tenant's own `campaign_dedupe` (`PATCH /v1/settings`); `None`
    /// follows `[policy] campaign_dedupe`.
    pub tenant_campaign_dedupe: Option<bool>,
}

/// A valid draft's choices and the settings they resolve to: everything the
/// accepting transaction needs besides the content and the recipients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Valid {
    /// The stream, [`DEFAULT_STREAM`] when none was named. A name without a
    /// `[streams.NAME]` section is a stream with the defaults.
    pub stream: String,
    pub campaign: Option<String>,
    pub send_at: Option<Millis>,
    pub expires_at: Option<Millis>,
    pub tracking_opens: Option<bool>,
    pub tracking_clicks: Option<bool>,
    /// `[streams.NAME] require_confirmation` of the stream.
    pub stream_requires_confirmation: bool,
    /// The tenant's `campaign_dedupe`, else `[policy] campaign_dedupe`.
    pub campaign_dedupe: bool,
    /// `[policy] require_own_domain`, for the store's sender check.
    pub require_own_domain: bool,
}

/// Checks every field of `draft` and resolves its settings; `Err` holds
/// every refusal, in the order of the fields above (both doors answer with
/// the first).
pub fn validate(draft: &Draft<'_>, settings: &Settings<'_>) -> Result<Valid, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut note = |r: Result<(), FieldError>| {
        if let Err(e) = r {
            errors.push(e);
        }
    };
    if let Some(subject) = draft.subject {
        note(check_subject(subject));
    }
    for (name, value) in &draft.headers {
        note(check_custom_header(name, value));
    }
    note(check_tags(draft.tags));
    if let Some(metadata) = draft.metadata {
        note(check_metadata(metadata));
    }
    if let Some(stream) = draft.stream {
        note(check_stream(stream));
    }
    if let Some(campaign) = draft.campaign {
        note(check_campaign(campaign));
    }
    if let Some(send_at) = draft.send_at {
        note(check_time("send_at", send_at));
    }
    if let Some(expires_at) = draft.expires_at {
        note(check_time("expires_at", expires_at));
    }
    if let (Some(send), Some(expires)) = (draft.send_at, draft.expires_at)
        && expires <= send
    {
        note(Err(FieldError::new(
            "expires_at",
            "invalid_time",
            "expires_at must be after send_at",
        )));
    }
    for (field, body) in &draft.bodies {
        note(check_body(field, body));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let stream = draft.stream.unwrap_or(DEFAULT_STREAM).to_owned();
    let config = settings.config;
    Ok(Valid {
        stream_requires_confirmation: config
            .streams
            .get(&stream)
            .is_some_and(|s| s.require_confirmation),
        stream,
        campaign: draft.campaign.map(str::to_owned),
        send_at: draft.send_at,
        expires_at: draft.expires_at,
        tracking_opens: draft.tracking_opens,
        tracking_clicks: draft.tracking_clicks,
        campaign_dedupe: settings
            .tenant_campaign_dedupe
            .unwrap_or(config.policy.campaign_dedupe),
        require_own_domain: config.policy.require_own_domain,
    })
}

/// A header value as text: no line breaks (header injection) and no other
/// control character except HTAB (RFC 5322 unstructured text).
pub fn check_header_text(field: &str, value: &str) -> Result<(), FieldError> {
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(FieldError::new(
            field,
            "header_injection",
            "line breaks and control characters are not allowed in header values",
        ));
    }
    Ok(())
}

pub fn check_subject(subject: &str) -> Result<(), FieldError> {
    check_header_text("subject", subject)?;
    if subject.len() > MAX_SUBJECT_BYTES {
        return Err(FieldError::new(
            "subject",
            "invalid_subject",
            format!("the subject is longer than {MAX_SUBJECT_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Who may write a header field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderOwner {
    /// The sender: a custom header.
    Sender,
    /// Posthorn, from a submission field (`from`, `subject`, `reply_to`, ...).
    Field,
    /// Posthorn alone: unsubscribe, signing, trace and authentication
    /// results, MIME structure, our own `X-Posthorn-*`.
    Posthorn,
}

/// The API's view of a header name: who writes it in a copy Posthorn builds.
pub fn header_owner(name: &str) -> HeaderOwner {
    let lower = name.to_ascii_lowercase();
    const FIELDS: &[&str] = &[
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "date",
        "message-id",
        "reply-to",
        "sender",
    ];
    const POSTHORN: &[&str] = &[
        // RFC 2369/8058: the unsubscribe Posthorn tracks and honours.
        "list-unsubscribe",
        "list-unsubscribe-post",
        // Signing is Posthorn's (a pasted signature would be a DKIM replay).
        "dkim-signature",
        "domainkey-signature",
        // Trace fields and authentication results are written by MTAs.
        "return-path",
        "received",
        "received-spf",
        "authentication-results",
        "delivered-to",
        // The MIME structure comes from `text`/`html`.
        "mime-version",
    ];
    const POSTHORN_PREFIXES: &[&str] = &["arc-", "resent-", "content-", "x-posthorn-"];
    if FIELDS.contains(&lower.as_str()) {
        HeaderOwner::Field
    } else if POSTHORN.contains(&lower.as_str())
        || POSTHORN_PREFIXES.iter().any(|p| lower.starts_with(p))
    {
        HeaderOwner::Posthorn
    } else {
        HeaderOwner::Sender
    }
}

/// A custom header of the API's `headers{}`: a valid name the sender may
/// set, and a value of header text within the limit.
pub fn check_custom_header(name: &str, value: &str) -> Result<(), FieldError> {
    let field = format!("headers.{name}");
    let valid_name =
        crate::rfc5322::is_field_name(name.as_bytes()) && name.len() <= MAX_HEADER_NAME;
    if !valid_name {
        return Err(FieldError::new(
            field,
            "invalid_header",
            "header names are 1 to 76 printable ASCII characters without `:`",
        ));
    }
    match header_owner(name) {
        HeaderOwner::Sender => {}
        HeaderOwner::Field => {
            return Err(FieldError::new(
                field,
                "reserved_header",
                format!("`{name}` is set by Posthorn; use the matching field instead"),
            ));
        }
        HeaderOwner::Posthorn => {
            return Err(FieldError::new(
                field,
                "reserved_header",
                format!("`{name}` is written by Posthorn alone"),
            ));
        }
    }
    check_header_text(&field, value)?;
    if value.len() > MAX_HEADER_VALUE_BYTES {
        return Err(FieldError::new(
            field,
            "invalid_header",
            format!("header values are at most {MAX_HEADER_VALUE_BYTES} bytes"),
        ));
    }
    Ok(())
}

pub fn check_tags(tags: &[String]) -> Result<(), FieldError> {
    if tags.len() > MAX_TAGS {
        return Err(FieldError::new(
            "tags",
            "invalid_tag",
            format!("at most {MAX_TAGS} tags"),
        ));
    }
    for (i, tag) in tags.iter().enumerate() {
        if tag.is_empty() || tag.len() > MAX_TAG_BYTES || tag.chars().any(char::is_control) {
            return Err(FieldError::new(
                format!("tags[{i}]"),
                "invalid_tag",
                "tags are 1 to 128 bytes without control characters",
            ));
        }
    }
    Ok(())
}

pub fn check_metadata(metadata: &serde_json::Value) -> Result<(), FieldError> {
    if metadata.to_string().len() > MAX_METADATA_BYTES {
        return Err(FieldError::new(
            "metadata",
            "invalid_metadata",
            "metadata is limited to 10 KB of JSON",
        ));
    }
    Ok(())
}

/// Stream names: 1 to 64 of `a-z 0-9 - _`, starting with a letter or digit.
pub fn valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

pub fn check_stream(stream: &str) -> Result<(), FieldError> {
    if !valid_stream_name(stream) {
        return Err(FieldError::new(
            "stream",
            "invalid_stream",
            "stream names are 1 to 64 of a-z, 0-9, `-` and `_`",
        ));
    }
    Ok(())
}

pub fn check_campaign(campaign: &str) -> Result<(), FieldError> {
    if campaign.is_empty()
        || campaign.len() > MAX_CAMPAIGN_BYTES
        || campaign.chars().any(char::is_control)
    {
        return Err(FieldError::new(
            "campaign",
            "invalid_campaign",
            "campaign ids are 1 to 128 bytes without control characters",
        ));
    }
    Ok(())
}

/// A time a client gave (`send_at`, `expires_at`, an event's
/// `occurred_at`): from the epoch to the end of year 9999.
pub fn check_time(field: &str, ms: Millis) -> Result<(), FieldError> {
    if !(EARLIEST_TIME..=LATEST_TIME).contains(&ms) {
        return Err(FieldError::new(
            field,
            "invalid_time",
            "times are from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z",
        ));
    }
    Ok(())
}

/// A body: any bytes but NUL, which no mail format carries (RFC 5322
/// §2.3, RFC 2045 §2.7/2.8) and which receivers truncate or refuse.
pub fn check_body(field: &str, body: &[u8]) -> Result<(), FieldError> {
    if body.contains(&0) {
        return Err(FieldError::new(
            field,
            "nul_byte",
            "NUL bytes are not allowed in mail",
        ));
    }
    Ok(())
}

/// What SMTP submission does with one header field of a client-built message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawHeaderRule {
    /// Sent as the client wrote it.
    Keep,
    /// Read by Posthorn, then removed before sending (`X-Posthorn-Stream`,
    /// `X-Posthorn-Campaign`).
    Consume,
    /// Removed before sending: blind copies must not reach recipients
    /// (`Bcc`, `Resent-Bcc`), and a return path is the delivering MTA's to
    /// write (RFC 5321 §4.4: an originating system SHOULD NOT send one).
    Remove,
    /// The message is refused: the header is Posthorn's to write.
    Refuse,
}

/// The rule for a header field of a message built by an SMTP client.
///
/// Unlike the API, a client builds its own MIME structure (`Content-*`,
/// `MIME-Version`), may relay mail with earlier hops (`Received`) and may
/// resend (`Resent-*`): those are kept. So is a client's own
/// `List-Unsubscribe`/`List-Unsubscribe-Post` (list managers and relays
/// carry theirs, and a copy gets Posthorn's only when it has none, so it
/// never carries two). Refused: signatures and authentication results (a
/// third party's signature pasted into a submission would make Posthorn a
/// DKIM-replay vehicle), and `X-Posthorn-*` names we do not read (a typo
/// such as `X-Posthorn-Strem` must not pass silently).
pub fn raw_header_rule(name: &str) -> RawHeaderRule {
    let lower = name.to_ascii_lowercase();
    match lower.as_str() {
        "x-posthorn-stream" | "x-posthorn-campaign" => RawHeaderRule::Consume,
        "bcc" | "resent-bcc" | "return-path" => RawHeaderRule::Remove,
        "dkim-signature" | "domainkey-signature" | "authentication-results" => {
            RawHeaderRule::Refuse
        }
        _ if lower.starts_with("arc-") || lower.starts_with("x-posthorn-") => RawHeaderRule::Refuse,
        _ => RawHeaderRule::Keep,
    }
}

/// One header field of a client-built message, as its bytes (`value` is
/// everything after the colon, folding included): UTF-8 (RFC 6532) or
/// ASCII, and no control character but the CRLF of folding and HTAB.
/// A field that breaks this is refused, never repaired: what a client sends
/// is delivered as sent or not at all.
pub fn check_raw_header(name: &str, value: &[u8]) -> Result<(), FieldError> {
    raw_header_text(name, value)?;
    // Folding is CRLF (or a bare LF, which the session passes on) followed
    // by whitespace; a CR or LF anywhere else, or another control, is not
    // header text.
    let mut rest = value;
    while let Some(i) = rest
        .iter()
        .position(|&b| b.is_ascii_control() && b != b'\t')
    {
        let fold = match &rest[i..] {
            [b'\r', b'\n', b' ' | b'\t', ..] => 2,
            [b'\n', b' ' | b'\t', ..] => 1,
            _ => 0,
        };
        if fold == 0 {
            return Err(FieldError::new(
                name,
                "header_injection",
                format!("the `{name}` header contains a control character"),
            ));
        }
        rest = &rest[i + fold..];
    }
    Ok(())
}

/// A header field's value as text: ASCII or UTF-8 (RFC 6532), or refused.
pub fn raw_header_text<'a>(name: &str, value: &'a [u8]) -> Result<&'a str, FieldError> {
    std::str::from_utf8(value).map_err(|_| {
        FieldError::new(
            name,
            "invalid_header",
            format!(
                "the `{name}` header is neither ASCII nor UTF-8; encode other charsets as RFC 2047 encoded words"
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_range_edges() {
        assert!(check_time("send_at", 0).is_ok());
        assert!(check_time("send_at", LATEST_TIME).is_ok());
        let e = check_time("send_at", LATEST_TIME + 1).unwrap_err();
        assert_eq!((e.field.as_str(), e.code), ("send_at", "invalid_time"));
        assert!(check_time("occurred_at", -1).is_err());
        assert!(check_time("occurred_at", Millis::MAX).is_err());
        assert_eq!(
            crate::clock::format_rfc3339(LATEST_TIME),
            "9999-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn header_owners() {
        for name in [
            "List-Unsubscribe",
            "list-unsubscribe-post",
            "DKIM-Signature",
            "Return-Path",
            "Received",
            "ARC-Seal",
            "Authentication-Results",
            "Resent-From",
            "X-Posthorn-Stream",
            "Content-Type",
            "Content-Disposition",
            "MIME-Version",
        ] {
            assert_eq!(header_owner(name), HeaderOwner::Posthorn, "{name}");
            let e = check_custom_header(name, "v").unwrap_err();
            assert_eq!(e.code, "reserved_header", "{name}");
            assert_eq!(e.field, format!("headers.{name}"));
        }
        for name in ["From", "bcc", "Message-ID"] {
            assert_eq!(header_owner(name), HeaderOwner::Field, "{name}");
        }
        for name in ["X-Order", "List-Id", "Precedence", "X-Posthorn"] {
            assert_eq!(header_owner(name), HeaderOwner::Sender, "{name}");
            assert!(check_custom_header(name, "v").is_ok(), "{name}");
        }
    }

    #[test]
    fn header_values_refuse_controls_and_oversize_but_keep_tab_and_unicode() {
        assert!(check_custom_header("X-A", "Grüße\tand 😀").is_ok());
        for bad in [
            "a\r\nb",
            "a\nb",
            "a\rb",
            "a\0b",
            "bell\x07",
            "esc\x1b[1m",
            "del\x7f",
            "c1\u{85}",
        ] {
            let e = check_custom_header("X-A", bad).unwrap_err();
            assert_eq!(e.code, "header_injection", "{bad:?}");
        }
        assert!(check_custom_header("X-A", &"a".repeat(998)).is_ok());
        assert_eq!(
            check_custom_header("X-A", &"a".repeat(999))
                .unwrap_err()
                .code,
            "invalid_header"
        );
        assert_eq!(
            check_subject("bell\x07").unwrap_err().code,
            "header_injection"
        );
        assert_eq!(
            check_subject(&"s".repeat(999)).unwrap_err().code,
            "invalid_subject"
        );
    }

    #[test]
    fn campaigns_and_tags_count_bytes_and_refuse_controls() {
        assert!(check_campaign(&"é".repeat(64)).is_ok());
        assert!(check_campaign(&"é".repeat(65)).is_err());
        assert!(check_campaign(&"c".repeat(129)).is_err());
        assert!(check_campaign("a\x01b").is_err());
        assert!(check_campaign("").is_err());
        assert!(check_tags(&["t".repeat(128)]).is_ok());
        assert_eq!(
            check_tags(&["ok".into(), "a\tb".into()]).unwrap_err().field,
            "tags[1]"
        );
    }

    #[test]
    fn raw_headers_are_refused_not_repaired() {
        assert!(check_raw_header("Subject", b" Hi\r\n there\tyou").is_ok());
        assert!(check_raw_header("Subject", " Grüße".as_bytes()).is_ok());
        let latin1 = check_raw_header("Subject", b" Gr\xfc\xdfe").unwrap_err();
        assert_eq!(
            (latin1.field.as_str(), latin1.code),
            ("Subject", "invalid_header")
        );
        for bad in [&b" a\0b"[..], b" a\rb", b" a\r\nb", b" a\x1bb", b" a\r\n"] {
            assert_eq!(
                check_raw_header("Subject", bad).unwrap_err().code,
                "header_injection",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn raw_header_rules() {
        use RawHeaderRule::*;
        for (name, rule) in [
            ("Bcc", Remove),
            ("RESENT-BCC", Remove),
            ("Return-Path", Remove),
            ("X-Posthorn-Stream", Consume),
            ("x-posthorn-campaign", Consume),
            ("X-Posthorn-Strem", Refuse),
            ("List-Unsubscribe", Keep),
            ("List-Unsubscribe-Post", Keep),
            ("DKIM-Signature", Refuse),
            ("ARC-Seal", Refuse),
            ("Authentication-Results", Refuse),
            ("Received", Keep),
            ("Resent-From", Keep),
            ("Content-Type", Keep),
            ("MIME-Version", Keep),
            ("Subject", Keep),
        ] {
            assert_eq!(raw_header_rule(name), rule, "{name}");
        }
    }

    #[test]
    fn a_draft_reports_every_field() {
        let tags = vec![String::new()];
        let draft = Draft {
            subject: Some("a\nb"),
            tags: &tags,
            stream: Some("Bad"),
            campaign: Some(""),
            send_at: Some(LATEST_TIME + 1),
            bodies: vec![("text", b"a\0")],
            ..Default::default()
        };
        let config = Config::default();
        let fields: Vec<String> = validate(&draft, &settings(&config, None))
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "subject", "tags[0]", "stream", "campaign", "send_at", "text"
            ]
        );
    }

    fn settings(config: &Config, tenant_campaign_dedupe: Option<bool>) -> Settings<'_> {
        Settings {
            config,
            tenant_campaign_dedupe,
        }
    }

    /// One draft as a test row writes it: owned values, rendered into the
    /// borrowed [`Draft`] both doors build.
    #[derive(Default)]
    struct Row {
        name: &'static str,
        subject: Option<String>,
        headers: Vec<(&'static str, String)>,
        tags: Vec<String>,
        metadata: Option<serde_json::Value>,
        stream: Option<String>,
        campaign: Option<String>,
        send_at: Option<Millis>,
        expires_at: Option<Millis>,
        text: Option<&'static [u8]>,
    }

    impl Row {
        fn draft(&self) -> Draft<'_> {
            Draft {
                subject: self.subject.as_deref(),
                headers: self.headers.iter().map(|(n, v)| (*n, v.as_str())).collect(),
                tags: &self.tags,
                metadata: self.metadata.as_ref(),
                stream: self.stream.as_deref(),
                campaign: self.campaign.as_deref(),
                send_at: self.send_at,
                expires_at: self.expires_at,
                bodies: self.text.map(|t| ("text", t)).into_iter().collect(),
                ..Default::default()
            }
        }
    }

    /// Every refusal both doors share, one bad field per row: exactly that
    /// field and code come out, and only a header Posthorn owns is policy
    /// (SMTP 550 5.7.1 rather than 554 5.6.0).
    #[test]
    fn bad_drafts_table() {
        let s = |v: &str| Some(v.to_owned());
        let rows: Vec<(Row, &str, &str)> = vec![
            (
                Row {
                    name: "upper-case stream",
                    stream: s("Newsletter"),
                    ..Default::default()
                },
                "stream",
                "invalid_stream",
            ),
            (
                Row {
                    name: "empty stream",
                    stream: s(""),
                    ..Default::default()
                },
                "stream",
                "invalid_stream",
            ),
            (
                Row {
                    name: "65-byte stream",
                    stream: Some("s".repeat(65)),
                    ..Default::default()
                },
                "stream",
                "invalid_stream",
            ),
            (
                Row {
                    name: "stream with a leading dash",
                    stream: s("-news"),
                    ..Default::default()
                },
                "stream",
                "invalid_stream",
            ),
            (
                Row {
                    name: "empty campaign",
                    campaign: s(""),
                    ..Default::default()
                },
                "campaign",
                "invalid_campaign",
            ),
            (
                Row {
                    name: "129-byte campaign",
                    campaign: Some("c".repeat(129)),
                    ..Default::default()
                },
                "campaign",
                "invalid_campaign",
            ),
            (
                Row {
                    name: "campaign with a control",
                    campaign: s("a\u{1}b"),
                    ..Default::default()
                },
                "campaign",
                "invalid_campaign",
            ),
            (
                Row {
                    name: "21 tags",
                    tags: vec!["t".into(); 21],
                    ..Default::default()
                },
                "tags",
                "invalid_tag",
            ),
            (
                Row {
                    name: "129-byte tag",
                    tags: vec!["ok".into(), "t".repeat(129)],
                    ..Default::default()
                },
                "tags[1]",
                "invalid_tag",
            ),
            (
                Row {
                    name: "empty tag",
                    tags: vec![String::new()],
                    ..Default::default()
                },
                "tags[0]",
                "invalid_tag",
            ),
            (
                Row {
                    name: "metadata over 10 KB",
                    metadata: Some(serde_json::json!({"k": "m".repeat(MAX_METADATA_BYTES)})),
                    ..Default::default()
                },
                "metadata",
                "invalid_metadata",
            ),
            (
                Row {
                    name: "send_at after year 9999",
                    send_at: Some(LATEST_TIME + 1),
                    ..Default::default()
                },
                "send_at",
                "invalid_time",
            ),
            (
                Row {
                    name: "send_at before 1970",
                    send_at: Some(-1),
                    ..Default::default()
                },
                "send_at",
                "invalid_time",
            ),
            (
                Row {
                    name: "expires_at after year 9999",
                    expires_at: Some(LATEST_TIME + 1),
                    ..Default::default()
                },
                "expires_at",
                "invalid_time",
            ),
            (
                Row {
                    name: "expires_at not after send_at",
                    send_at: Some(2_000),
                    expires_at: Some(2_000),
                    ..Default::default()
                },
                "expires_at",
                "invalid_time",
            ),
            (
                Row {
                    name: "CR LF in the subject",
                    subject: s("Hi\r\nBcc: x@example.com"),
                    ..Default::default()
                },
                "subject",
                "header_injection",
            ),
            (
                Row {
                    name: "999-byte subject",
                    subject: Some("s".repeat(999)),
                    ..Default::default()
                },
                "subject",
                "invalid_subject",
            ),
            (
                Row {
                    name: "X-Posthorn-Stream as a header",
                    headers: vec![("X-Posthorn-Stream", "news".into())],
                    ..Default::default()
                },
                "headers.X-Posthorn-Stream",
                "reserved_header",
            ),
            (
                Row {
                    name: "Bcc as a header",
                    headers: vec![("Bcc", "x@example.com".into())],
                    ..Default::default()
                },
                "headers.Bcc",
                "reserved_header",
            ),
            (
                Row {
                    name: "header name with a space",
                    headers: vec![("X Foo", "v".into())],
                    ..Default::default()
                },
                "headers.X Foo",
                "invalid_header",
            ),
            (
                Row {
                    name: "NUL in the text",
                    text: Some(b"a\0b"),
                    ..Default::default()
                },
                "text",
                "nul_byte",
            ),
        ];
        let config = Config::default();
        for (row, field, code) in &rows {
            let errors = validate(&row.draft(), &settings(&config, None)).unwrap_err();
            let got: Vec<_> = errors.iter().map(|e| (e.field.as_str(), e.code)).collect();
            assert_eq!(got, [(*field, *code)], "{}", row.name);
            assert_eq!(
                errors[0].is_policy(),
                *code == "reserved_header",
                "{}",
                row.name
            );
        }
        // The control row: every field given, each within its rule.
        let good = Row {
            name: "valid",
            subject: s("Grüße\tand more"),
            headers: vec![("X-Order", "42".into())],
            tags: vec!["t".repeat(MAX_TAG_BYTES); MAX_TAGS],
            metadata: Some(serde_json::json!({"order": 42})),
            stream: s("news_2-b"),
            campaign: Some("é".repeat(64)),
            send_at: Some(0),
            expires_at: Some(LATEST_TIME),
            text: Some(b"hello"),
        };
        assert!(
            validate(&good.draft(), &settings(&config, None)).is_ok(),
            "{}",
            good.name
        );
    }

    #[test]
    fn settings_resolve_from_the_stream_the_tenant_and_the_policy() {
        let mut config = Config::default();
        config.streams.insert(
            "news".into(),
            crate::config::StreamConfig {
                require_confirmation: true,
                ..Default::default()
            },
        );
        config.policy.require_own_domain = true;
        let draft = Draft {
            stream: Some("news"),
            campaign: Some("spring"),
            send_at: Some(1_000),
            expires_at: Some(2_000),
            tracking_opens: Some(false),
            ..Default::default()
        };
        let valid = validate(&draft, &settings(&config, None)).unwrap();
        assert_eq!(
            valid,
            Valid {
                stream: "news".into(),
                campaign: Some("spring".into()),
                send_at: Some(1_000),
                expires_at: Some(2_000),
                tracking_opens: Some(false),
                tracking_clicks: None,
                stream_requires_confirmation: true,
                // `[policy] campaign_dedupe` defaults to on.
                campaign_dedupe: true,
                require_own_domain: true,
            }
        );
        // The tenant's choice wins over the policy, either way.
        assert!(
            !validate(&draft, &settings(&config, Some(false)))
                .unwrap()
                .campaign_dedupe
        );
        config.policy.campaign_dedupe = false;
        assert!(
            !validate(&draft, &settings(&config, None))
                .unwrap()
                .campaign_dedupe
        );
        assert!(
            validate(&draft, &settings(&config, Some(true)))
                .unwrap()
                .campaign_dedupe
        );
        // No stream: the default, which has no section (so no confirmation);
        // an unknown name is a stream with the defaults, as it always was.
        let plain = validate(&Draft::default(), &settings(&config, None)).unwrap();
        assert_eq!(plain.stream, DEFAULT_STREAM);
        assert!(!plain.stream_requires_confirmation);
        let unknown = Draft {
            stream: Some("never-configured"),
            ..Default::default()
        };
        assert!(
            !validate(&unknown, &settings(&config, None))
                .unwrap()
                .stream_requires_confirmation
        );
    }
}
