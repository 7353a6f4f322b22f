//! Other providers' event webhooks: `POST/GET /v1/ingest/sources` and
//! `DELETE /v1/ingest/sources/{id}` (admin) manage a tenant's sources;
//! `POST /v1/ingest/{token}` takes a provider's webhook. The token in that
//! URL names the source (a capability: providers that cannot send an API
//! key can still be told apart); the provider's own verification then
//! decides whether anything in the request is believed. A request that
//! fails it is answered 401 and writes nothing.

use super::{Auth, Segment, parse_json, read_body, time};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine;
use posthorn_core::EventId;
use posthorn_core::id::IngestSourceId;
use posthorn_core::provider::Provider;
use posthorn_providers::sns::{Envelope, MessageType};
use posthorn_providers::{Mapped, Refusal, mailgun, postmark, sendgrid, ses};
use posthorn_store::{
    IngestSource, ProviderBatch, ProviderEvent, ProviderOutcome, Scope, SourceVerification,
    StoreError,
};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Largest body of a source's creation (a certificate at most).
const MAX_SOURCE_BODY: u64 = 64 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceInput {
    provider: String,
    name: Option<String>,
    /// Postmark: the basic-auth user and password (made up when absent).
    username: Option<String>,
    password: Option<String>,
    /// Mailgun: the webhook signing key.
    signing_key: Option<String>,
    /// SendGrid: the verification key (base64 DER public key).
    public_key: Option<String>,
    /// SES: the SNS topics taken.
    topic_arns: Option<Vec<String>>,
    /// SES: the SNS signing certificate (PEM), for offline use.
    certificate_pem: Option<String>,
}

fn random_token(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::unprocessable("invalid_field", message).with_field(field)
}

/// A field that must be given for this provider.
fn required<T>(value: Option<T>, field: &str, provider: Provider) -> ApiResult<T> {
    value.ok_or_else(|| {
        ApiError::unprocessable(
            "missing_field",
            format!("a {provider} source needs `{field}`"),
        )
        .with_field(field)
    })
}

/// Fields of another provider are an error, not silently ignored.
fn refuse_others(input: &SourceInput, allowed: &[&str]) -> ApiResult<()> {
    let given = [
        ("username", input.username.is_some()),
        ("password", input.password.is_some()),
        ("signing_key", input.signing_key.is_some()),
        ("public_key", input.public_key.is_some()),
        ("topic_arns", input.topic_arns.is_some()),
        ("certificate_pem", input.certificate_pem.is_some()),
    ];
    match given
        .iter()
        .find(|(name, set)| *set && !allowed.contains(name))
    {
        Some((name, _)) => Err(invalid(
            name,
            format!("`{name}` is not a setting of a {} source", input.provider),
        )),
        None => Ok(()),
    }
}

/// A credential part: printable ASCII without `:` (it would split the
/// basic-auth pair) or characters that need escaping in a URL.
fn credential(field: &str, value: &str) -> ApiResult<()> {
    let ok = (1..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{field} is 1 to 128 of A-Z a-z 0-9 - . _ ~"),
        ))
    }
}

/// `POST /v1/ingest/sources`: a new source; its URL (and Postmark's
/// password) are shown in this answer only.
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    auth.require(Scope::Admin)?;
    let bytes = read_body(&headers, body, MAX_SOURCE_BODY).await?;
    let input: SourceInput = parse_json(&bytes)?;
    let provider: Provider = input.provider.parse().map_err(|_| {
        invalid(
            "provider",
            "provider is `ses`, `sendgrid`, `mailgun` or `postmark`",
        )
    })?;
    if let Some(name) = &input.name
        && (name.is_empty() || name.len() > 100 || name.chars().any(char::is_control))
    {
        return Err(invalid("name", "name is 1 to 100 characters"));
    }
    let mut shown = json!({});
    let verification = match provider {
        Provider::Postmark => {
            refuse_others(&input, &["username", "password"])?;
            let user = input.username.clone().unwrap_or_else(|| "posthorn".into());
            let password = input.password.clone().unwrap_or_else(|| random_token(24));
            credential("username", &user)?;
            credential("password", &password)?;
            shown = json!({ "username": user, "password": password });
            SourceVerification::Postmark {
                credentials_sha256: hex::encode(postmark::credentials_hash(&user, &password)),
                user,
            }
        }
        Provider::Mailgun => {
            refuse_others(&input, &["signing_key"])?;
            let key = required(input.signing_key.clone(), "signing_key", provider)?;
            if key.trim().is_empty() || key.len() > 200 {
                return Err(invalid("signing_key", "signing_key is 1 to 200 characters"));
            }
            SourceVerification::Mailgun {
                signing_key: key.trim().to_owned(),
            }
        }
        Provider::Sendgrid => {
            refuse_others(&input, &["public_key"])?;
            let key = required(input.public_key.clone(), "public_key", provider)?;
            let parsed = sendgrid::PublicKey::parse(&key).map_err(|e| invalid("public_key", e))?;
            SourceVerification::Sendgrid {
                public_key: parsed.to_base64(),
            }
        }
        Provider::Ses => {
            refuse_others(&input, &["topic_arns", "certificate_pem"])?;
            let topics = required(input.topic_arns.clone(), "topic_arns", provider)?;
            if topics.is_empty()
                || topics.len() > 50
                || topics.iter().any(|t| {
                    !t.starts_with("arn:aws") || t.len() > 256 || t.contains(char::is_whitespace)
                })
            {
                return Err(invalid(
                    "topic_arns",
                    "topic_arns is 1 to 50 SNS topic ARNs (arn:aws:sns:REGION:ACCOUNT:NAME)",
                ));
            }
            if let Some(pem) = &input.certificate_pem {
                posthorn_providers::sns::SigningKey::from_pem(pem.as_bytes())
                    .map_err(|e| invalid("certificate_pem", e.to_string()))?;
            }
            SourceVerification::Ses {
                topic_arns: topics,
                certificate_pem: input.certificate_pem.clone(),
            }
        }
    };
    let token = random_token(32);
    let source = IngestSource {
        id: IngestSourceId::generate(),
        tenant_id: auth.tenant.id.clone(),
        name: input.name.clone(),
        token_hash: token_hash(&token),
        verification,
        created_at: state.now(),
        pending_confirmation: None,
    };
    let source = state.store.create_ingest_source(source).await?;
    let base = state.config.server.public_url();
    let url = format!("{base}/v1/ingest/{token}");
    let mut answer = source_json(&source);
    answer["url"] = json!(url);
    if provider == Provider::Postmark {
        // Postmark takes the credentials as part of the webhook URL.
        let (scheme, rest) = base.split_once("://").unwrap_or(("https", &base));
        answer["url"] = json!(format!(
            "{scheme}://{}:{}@{rest}/v1/ingest/{token}",
            shown["username"].as_str().unwrap_or_default(),
            shown["password"].as_str().unwrap_or_default()
        ));
        answer["username"] = shown["username"].clone();
        answer["password"] = shown["password"].clone();
    }
    Ok((StatusCode::CREATED, Json(answer)))
}

fn source_json(s: &IngestSource) -> Value {
    let mut v = json!({
        "id": s.id,
        "provider": s.provider().as_str(),
        "name": s.name,
        "created_at": time(s.created_at),
    });
    match &s.verification {
        SourceVerification::Postmark { user, .. } => v["username"] = json!(user),
        SourceVerification::Sendgrid { public_key } => v["public_key"] = json!(public_key),
        SourceVerification::Ses {
            topic_arns,
            certificate_pem,
        } => {
            v["topic_arns"] = json!(topic_arns);
            v["certificate_configured"] = json!(certificate_pem.is_some());
            v["pending_confirmation"] = json!(s.pending_confirmation);
        }
        SourceVerification::Mailgun { .. } => {}
    }
    v
}

/// `GET /v1/ingest/sources`: the tenant's sources (without secrets or URLs).
pub async fn list(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    auth.require(Scope::Admin)?;
    let sources = state.store.ingest_sources(&auth.tenant.id).await?;
    Ok(Json(json!({
        "data": sources.iter().map(source_json).collect::<Vec<_>>()
    })))
}

/// `DELETE /v1/ingest/sources/{id}`: its URL stops working at once; what
/// it recorded stays.
pub async fn remove(
    State(state): State<AppState>,
    auth: Auth,
    Segment(id): Segment,
) -> ApiResult<StatusCode> {
    auth.require(Scope::Admin)?;
    let id = IngestSourceId::parse(&id).ok_or_else(|| ApiError::not_found("source"))?;
    if state
        .store
        .delete_ingest_source(&auth.tenant.id, &id)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("source"))
    }
}

fn refused(refusal: Refusal) -> ApiError {
    tracing::info!(reason = %refusal, "provider webhook refused");
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "verification_failed",
        refusal.to_string(),
    )
}

fn invalid_payload(e: posthorn_providers::PayloadError) -> ApiError {
    ApiError::bad_request("invalid_payload", e.to_string())
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `POST /v1/ingest/{token}`: one provider webhook request.
pub async fn receive(
    State(state): State<AppState>,
    Segment(token): Segment,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    // An unknown token is "no such endpoint", like any unknown URL.
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint");
    if token.len() > 100 {
        return Err(not_found());
    }
    let source = state
        .store
        .ingest_source_by_token(&token_hash(&token))
        .await?
        .ok_or_else(not_found)?;
    let body = read_body(&headers, body, state.config.ingest.max_body.0).await?;
    let now = state.now();
    let provider = source.provider();
    let mut token_use = None;
    let mapped = match &source.verification {
        SourceVerification::Postmark {
            credentials_sha256, ..
        } => {
            let mut expected = [0u8; 32];
            hex::decode_to_slice(credentials_sha256, &mut expected)
                .map_err(|_| ApiError::internal())?;
            postmark::verify(
                header_str(&headers, header::AUTHORIZATION.as_str()),
                &expected,
            )
            .map_err(refused)?;
            postmark::parse(&body).map_err(invalid_payload)?
        }
        SourceVerification::Mailgun { signing_key } => {
            let sig = mailgun::verify(&body, signing_key.as_bytes(), now).map_err(refused)?;
            token_use = Some((sig.token.clone(), sig.token_expires_at()));
            mailgun::parse(&body).map_err(invalid_payload)?
        }
        SourceVerification::Sendgrid { public_key } => {
            let key = sendgrid::PublicKey::parse(public_key).map_err(|_| ApiError::internal())?;
            sendgrid::verify(
                header_str(&headers, sendgrid::SIGNATURE_HEADER),
                header_str(&headers, sendgrid::TIMESTAMP_HEADER),
                &body,
                &key,
            )
            .map_err(refused)?;
            sendgrid::parse(&body).map_err(invalid_payload)?
        }
        SourceVerification::Ses {
            topic_arns,
            certificate_pem,
        } => {
            // Nothing of an unverified envelope is believed; only its
            // shape is read to find what to verify.
            let envelope =
                Envelope::parse(&body).map_err(|_| refused(Refusal::Missing("an SNS message")))?;
            let key = state
                .sns
                .key_for(certificate_pem.as_deref(), &envelope.signing_cert_url)
                .await
                .map_err(refused)?;
            posthorn_providers::sns::verify(&envelope, &key, now).map_err(refused)?;
            if !topic_arns.contains(&envelope.topic_arn) {
                return Err(refused(Refusal::TopicNotAllowed(
                    envelope.topic_arn.clone(),
                )));
            }
            match envelope.message_type() {
                Some(MessageType::Notification) => {
                    ses::parse(&envelope.message, &envelope.message_id).map_err(invalid_payload)?
                }
                Some(MessageType::SubscriptionConfirmation) => {
                    return confirm_subscription(&state, &source, &envelope).await;
                }
                Some(MessageType::UnsubscribeConfirmation) | None => {
                    return Ok((
                        StatusCode::OK,
                        Json(json!({ "recorded": 0, "duplicates": 0, "ignored": 1 })),
                    ));
                }
            }
        }
    };

    let mut events = Vec::new();
    let mut ignored = 0usize;
    for m in mapped {
        match m {
            Mapped::Event(e) => {
                let mut keys: Vec<String> = e.id_key(provider).into_iter().collect();
                keys.push(e.content_key(provider));
                events.push(ProviderEvent {
                    provider_message_id: e.message_id,
                    recipient: e.recipient,
                    sender: e.sender,
                    keys,
                    id: EventId::generate(),
                    occurred_at: e.occurred_at,
                    details: e.details,
                    raw: serde_json::to_vec(&e.raw).unwrap_or_default(),
                });
            }
            Mapped::Ignored { what, why } => {
                tracing::debug!(%provider, %what, %why, "provider event not recorded");
                ignored += 1;
            }
        }
    }
    let batch = ProviderBatch {
        tenant: source.tenant_id.clone(),
        source: source.id.clone(),
        provider,
        token: token_use,
        events,
        stream: state.config.ingest.stream.clone(),
        now,
    };
    let outcome = match state.store.record_provider_events(batch).await {
        Ok(o) => o,
        // Removed while this request was read.
        Err(StoreError::Conflict(_)) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    let outcomes = match outcome {
        ProviderOutcome::ReplayedToken => return Err(refused(Refusal::ReplayedToken)),
        ProviderOutcome::Recorded(o) => o,
    };
    let duplicates = outcomes.iter().filter(|o| o.duplicate).count();
    Ok((
        StatusCode::OK,
        Json(json!({
            "recorded": outcomes.len() - duplicates,
            "duplicates": duplicates,
            "ignored": ignored,
            "events": outcomes.iter().map(|o| json!({
                "id": o.event_id, "delivery_id": o.delivery_id, "message_id": o.message_id,
                "duplicate": o.duplicate,
            })).collect::<Vec<_>>(),
        })),
    ))
}

/// A verified `SubscriptionConfirmation`: confirmed by fetching its
/// `SubscribeURL` (an SNS URL, checked first), or, when fetching is off,
/// kept on the source for an operator to open.
async fn confirm_subscription(
    state: &AppState,
    source: &IngestSource,
    envelope: &Envelope,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let url = envelope
        .subscribe_url
        .as_deref()
        .ok_or_else(|| refused(Refusal::Missing("SubscribeURL")))?;
    let confirmed = state.sns.confirm(url).await.map_err(|e| match e {
        Refusal::SubscribeUrl(_) => refused(e),
        // SNS could not be reached: SNS sends the confirmation again.
        other => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "confirmation_failed",
            other.to_string(),
        ),
    })?;
    let pending = (!confirmed).then(|| url.to_owned());
    state
        .store
        .set_ingest_pending_confirmation(&source.tenant_id, &source.id, pending.clone())
        .await?;
    Ok((
        StatusCode::OK,
        Json(json!({ "confirmed": confirmed, "pending_confirmation": pending })),
    ))
}
