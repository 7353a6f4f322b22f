//! `POST /v1/messages`: validate a submission, then hand it to the store,
//! which runs the policy chain per recipient in the accepting transaction.

use super::{Auth, TimeInput, parse_json, read_body};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use posthorn_core::address::{AddressError, EmailAddress, Mailbox};
use posthorn_core::clock::DAY;
use posthorn_core::submission::{self, Draft, FieldError};
use posthorn_core::{DeliveryId, EventSource, MessageId};
use posthorn_store::{
    AcceptOutcome, IdempotencyRequest, MessageContent, NewMessage, NewRecipient, RecipientKind,
    Scope, SenderCheck,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// How long an idempotency key is remembered.
const IDEMPOTENCY_WINDOW: i64 = DAY;

/// One address or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl Default for OneOrMany {
    fn default() -> Self {
        OneOrMany::Many(Vec::new())
    }
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(a) => vec![a],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Tracking {
    opens: Option<bool>,
    clicks: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Submission {
    from: String,
    #[serde(default)]
    to: OneOrMany,
    #[serde(default)]
    cc: OneOrMany,
    #[serde(default)]
    bcc: OneOrMany,
    reply_to: Option<String>,
    subject: String,
    text: Option<String>,
    html: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    metadata: serde_json::Map<String, serde_json::Value>,
    stream: Option<String>,
    campaign: Option<String>,
    #[serde(default)]
    test: bool,
    send_at: Option<TimeInput>,
    expires_at: Option<TimeInput>,
    tracking: Option<Tracking>,
}

pub async fn submit(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    auth.require(Scope::Send)?;
    let idempotency_key = idempotency_key(&headers)?;
    let bytes = read_body(&headers, body, state.config.limits.max_message_size.0).await?;
    let submission: Submission = parse_json(&bytes)?;
    let now = state.now();
    let mut message = validate(&state, &auth, submission, bytes.len() as u64, now)?;
    message.idempotency = idempotency_key.map(|key| IdempotencyRequest {
        key,
        body_hash: hex::encode(Sha256::digest(&bytes)),
        not_before: now - IDEMPOTENCY_WINDOW,
    });

    let (receipt, replayed) = match state.store.accept_message(message).await? {
        AcceptOutcome::Accepted(r) => (r, false),
        AcceptOutcome::Replayed(r) => (r, true),
        // A From domain that belongs to another tenant (or, with `[policy]
        // require_own_domain`, not to this one): nothing was written.
        AcceptOutcome::SenderRefused { refusal, domain } => {
            return Err(
                ApiError::unprocessable(refusal.code(), format!("{refusal}: {domain}"))
                    .with_field("from"),
            );
        }
        AcceptOutcome::IdempotencyConflict => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_conflict",
                "this Idempotency-Key was used in the last 24 hours with a different request body",
            ));
        }
    };
    let mut response = (StatusCode::ACCEPTED, axum::Json(&receipt)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.chars().all(|c| c.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be 1 to 255 printable ASCII characters",
            )
        })?;
    Ok(Some(key.to_owned()))
}

fn address_error(field: String, e: AddressError) -> ApiError {
    ApiError::unprocessable(e.code(), e.to_string()).with_field(field)
}

/// A refusal of the shared content rules, as the API answers it.
pub(crate) fn field_error(e: FieldError) -> ApiError {
    ApiError::unprocessable(e.code, e.message).with_field(e.field)
}

/// The API answers a refused draft with its first refusal.
fn first_refusal(errors: Vec<FieldError>) -> ApiError {
    field_error(errors.into_iter().next().expect("an Err holds an error"))
}

/// Checks everything about a submission that does not need the store.
fn validate(
    state: &AppState,
    auth: &Auth,
    s: Submission,
    size: u64,
    now: i64,
) -> ApiResult<NewMessage> {
    let from = Mailbox::parse(&s.from).map_err(|e| address_error("from".into(), e))?;
    let reply_to = s
        .reply_to
        .as_deref()
        .map(|r| Mailbox::parse(r).map_err(|e| address_error("reply_to".into(), e)))
        .transpose()?;

    let mut recipients = Vec::new();
    // The visible headers of every copy: To and Cc as given (Bcc never shows).
    let (mut to, mut cc) = (Vec::new(), Vec::new());
    for (kind, list) in [
        (RecipientKind::To, s.to),
        (RecipientKind::Cc, s.cc),
        (RecipientKind::Bcc, s.bcc),
    ] {
        for (i, raw) in list.into_vec().iter().enumerate() {
            let field = format!("{}[{i}]", kind.as_str());
            let mailbox = Mailbox::parse(raw).map_err(|e| address_error(field, e))?;
            recipients.push(recipient(kind, &mailbox.address));
            match kind {
                RecipientKind::To => to.push(mailbox),
                RecipientKind::Cc => cc.push(mailbox),
                RecipientKind::Bcc => {}
            }
        }
    }
    if recipients.is_empty() {
        return Err(ApiError::unprocessable(
            "missing_recipients",
            "give at least one recipient in to, cc or bcc",
        )
        .with_field("to"));
    }
    let max = state.config.limits.max_recipients;
    if recipients.len() > max {
        return Err(ApiError::unprocessable(
            "too_many_recipients",
            format!("at most {max} recipients per message"),
        )
        .with_field("to"));
    }

    if s.text.is_none() && s.html.is_none() {
        return Err(
            ApiError::unprocessable("missing_body", "give `text`, `html` or both")
                .with_field("text"),
        );
    }
    let send_at = s.send_at.map(|t| t.to_millis("send_at")).transpose()?;
    let expires_at = s
        .expires_at
        .map(|t| t.to_millis("expires_at"))
        .transpose()?;
    let metadata = serde_json::Value::Object(s.metadata);
    let mut bodies: Vec<(&'static str, &[u8])> = Vec::new();
    if let Some(text) = &s.text {
        bodies.push(("text", text.as_bytes()));
    }
    if let Some(html) = &s.html {
        bodies.push(("html", html.as_bytes()));
    }
    // The content rules both doors share; the first refusal is the answer.
    let draft = Draft {
        subject: Some(&s.subject),
        headers: s
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect(),
        tags: &s.tags,
        metadata: Some(&metadata),
        stream: s.stream.as_deref(),
        campaign: s.campaign.as_deref(),
        send_at,
        expires_at,
        bodies,
        tracking_opens: s.tracking.as_ref().and_then(|t| t.opens),
        tracking_clicks: s.tracking.as_ref().and_then(|t| t.clicks),
    };
    let settings = submission::Settings {
        config: &state.config,
        tenant_campaign_dedupe: auth.tenant.campaign_dedupe,
    };
    let valid = submission::validate(&draft, &settings).map_err(first_refusal)?;

    Ok(NewMessage {
        id: MessageId::generate(),
        sender_check: SenderCheck {
            domains: vec![from.address.domain().to_owned()],
            require_own_domain: valid.require_own_domain,
        },
        tenant_id: auth.tenant.id.clone(),
        from_address: from.address.normalized(),
        content: MessageContent {
            from: s.from.trim().to_owned(),
            reply_to: reply_to.map(|_| s.reply_to.unwrap_or_default().trim().to_owned()),
            to,
            cc,
            subject: s.subject,
            text: s.text,
            html: s.html,
            headers: serde_json::to_value(&s.headers).unwrap_or_default(),
            tags: s.tags,
            metadata,
            raw_mime: None,
        },
        campaign: valid.campaign,
        test: s.test,
        send_at: valid.send_at,
        expires_at: valid.expires_at,
        tracking_opens: valid.tracking_opens,
        tracking_clicks: valid.tracking_clicks,
        size,
        source: EventSource::Api,
        recipients,
        idempotency: None,
        stream_requires_confirmation: valid.stream_requires_confirmation,
        campaign_dedupe: valid.campaign_dedupe,
        stream: valid.stream,
        accepted_at: now,
    })
}

fn recipient(kind: RecipientKind, address: &EmailAddress) -> NewRecipient {
    NewRecipient {
        delivery_id: DeliveryId::generate(),
        address: address.normalized(),
        kind,
        deliverable_domain: address.can_receive_mail(),
    }
}
