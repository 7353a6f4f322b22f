//! Amazon SNS messages (how SES event notifications arrive over HTTPS):
//! the envelope, the string SNS signs, the signature check against the
//! signing certificate (version 1: SHA1withRSA, version 2: SHA256withRSA),
//! and the rules on which URLs may be fetched at all (the certificate, the
//! subscription's confirmation), checked before any fetch.

use crate::{PayloadError, Refusal};
use base64::Engine;
use posthorn_core::Millis;
use serde::Deserialize;

/// An SNS message as posted to an HTTP(S) endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Envelope {
    #[serde(rename = "Type")]
    pub kind: String,
    pub message_id: String,
    pub topic_arn: String,
    pub subject: Option<String>,
    pub message: String,
    pub timestamp: String,
    pub signature_version: String,
    pub signature: String,
    #[serde(rename = "SigningCertURL")]
    pub signing_cert_url: String,
    #[serde(rename = "SubscribeURL")]
    pub subscribe_url: Option<String>,
    pub token: Option<String>,
}

/// What kind of SNS message this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Notification,
    SubscriptionConfirmation,
    UnsubscribeConfirmation,
}

impl Envelope {
    pub fn parse(body: &[u8]) -> Result<Self, PayloadError> {
        Ok(serde_json::from_slice(body)?)
    }

    pub fn message_type(&self) -> Option<MessageType> {
        match self.kind.as_str() {
            "Notification" => Some(MessageType::Notification),
            "SubscriptionConfirmation" => Some(MessageType::SubscriptionConfirmation),
            "UnsubscribeConfirmation" => Some(MessageType::UnsubscribeConfirmation),
            _ => None,
        }
    }

    /// The string SNS signs: named fields in a fixed order, each as
    /// `Name\nvalue\n`; `Subject` only when present (SNS documentation,
    /// "Verifying the signatures of Amazon SNS messages").
    pub fn string_to_sign(&self) -> Option<String> {
        let mut fields: Vec<(&str, &str)> =
            vec![("Message", &self.message), ("MessageId", &self.message_id)];
        match self.message_type()? {
            MessageType::Notification => {
                if let Some(subject) = &self.subject {
                    fields.push(("Subject", subject));
                }
                fields.extend([
                    ("Timestamp", self.timestamp.as_str()),
                    ("TopicArn", self.topic_arn.as_str()),
                    ("Type", self.kind.as_str()),
                ]);
            }
            MessageType::SubscriptionConfirmation | MessageType::UnsubscribeConfirmation => {
                fields.extend([
                    ("SubscribeURL", self.subscribe_url.as_deref()?),
                    ("Timestamp", self.timestamp.as_str()),
                    ("Token", self.token.as_deref()?),
                    ("TopicArn", self.topic_arn.as_str()),
                    ("Type", self.kind.as_str()),
                ]);
            }
        }
        let mut s = String::new();
        for (name, value) in fields {
            s.push_str(name);
            s.push('\n');
            s.push_str(value);
            s.push('\n');
        }
        Some(s)
    }
}

/// Whether `host` is an SNS endpoint: `sns.<region>.amazonaws.com` (or
/// `.amazonaws.com.cn`), region of lower-case letters, digits and dashes.
fn is_sns_host(host: &str) -> bool {
    let Some(rest) = host.strip_prefix("sns.") else {
        return false;
    };
    let region = rest
        .strip_suffix(".amazonaws.com")
        .or_else(|| rest.strip_suffix(".amazonaws.com.cn"));
    region.is_some_and(|r| {
        !r.is_empty()
            && r.len() <= 32
            && r.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    })
}

/// Splits an `https://host/path?query` URL, refusing anything that could
/// make a fetch go elsewhere than `host` (user info, a port, a fragment,
/// backslashes, percent-encoded host bytes).
fn https_host_and_rest(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("https://")?;
    let (host, path) = rest.split_at(rest.find('/')?);
    if host.is_empty()
        || host.contains(['@', ':', '%', '\\'])
        || url.contains('#')
        || url
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || !b.is_ascii())
    {
        return None;
    }
    Some((host, path))
}

/// Checks a `SigningCertURL` before anything is fetched from it: https, an
/// SNS host, a `.pem` path, no query.
pub fn check_certificate_url(url: &str) -> Result<(), Refusal> {
    let refuse = || Refusal::CertificateUrl(url.chars().take(200).collect());
    let (host, path) = https_host_and_rest(url).ok_or_else(refuse)?;
    // One path segment: SNS serves its certificates at the root.
    let one_segment = path.matches('/').count() == 1 && !path.contains('?');
    if !is_sns_host(host) || !one_segment || !path.ends_with(".pem") {
        return Err(refuse());
    }
    Ok(())
}

/// Checks a `SubscribeURL` before it is fetched to confirm a
/// subscription: https, an SNS host, the `ConfirmSubscription` action.
pub fn check_subscribe_url(url: &str) -> Result<(), Refusal> {
    let refuse = || Refusal::SubscribeUrl(url.chars().take(200).collect());
    let (host, path) = https_host_and_rest(url).ok_or_else(refuse)?;
    if !is_sns_host(host) || !path.starts_with("/?") || !path.contains("Action=ConfirmSubscription")
    {
        return Err(refuse());
    }
    Ok(())
}

/// A signing certificate's public key, read from PEM (or DER).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKey {
    /// The RSAPublicKey DER, what ring verifies with.
    rsa_public_key: Vec<u8>,
    not_after: Millis,
    not_before: Millis,
}

impl SigningKey {
    pub fn from_pem(pem: &[u8]) -> Result<Self, Refusal> {
        let bad = |e: &dyn std::fmt::Display| Refusal::Certificate(e.to_string());
        let der = if pem.trim_ascii_start().starts_with(b"-----") {
            let (_, pem) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| bad(&e))?;
            pem.contents
        } else {
            pem.to_vec()
        };
        let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| bad(&e))?;
        let spki = cert.public_key();
        if spki.algorithm.algorithm != x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION {
            return Err(Refusal::Certificate("not an RSA key".to_owned()));
        }
        Ok(SigningKey {
            rsa_public_key: spki.subject_public_key.data.to_vec(),
            not_before: cert.validity().not_before.timestamp().saturating_mul(1000),
            not_after: cert.validity().not_after.timestamp().saturating_mul(1000),
        })
    }
}

/// Verifies the envelope's signature with the signing certificate's key,
/// at `now` (the certificate must be valid then).
pub fn verify(envelope: &Envelope, key: &SigningKey, now: Millis) -> Result<(), Refusal> {
    if now < key.not_before || now > key.not_after {
        return Err(Refusal::Certificate("outside its validity".to_owned()));
    }
    let algorithm: &dyn ring::signature::VerificationAlgorithm =
        match envelope.signature_version.as_str() {
            "1" => &ring::signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            "2" => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            other => return Err(Refusal::SignatureVersion(other.chars().take(10).collect())),
        };
    let signed = envelope
        .string_to_sign()
        .ok_or(Refusal::Missing("the signed fields"))?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(envelope.signature.trim())
        .map_err(|_| Refusal::BadSignature)?;
    ring::signature::UnparsedPublicKey::new(algorithm, &key.rsa_public_key)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| Refusal::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sns_certificate_urls_pass() {
        for good in [
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem",
            "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
        ] {
            assert_eq!(check_certificate_url(good), Ok(()), "{good}");
        }
        for bad in [
            "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem",
            "https://sns.us-east-1.amazonaws.com.evil.example/x.pem",
            "https://evil.example/sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com@evil.example/x.pem",
            "https://sns.us-east-1.amazonaws.com:8443/x.pem",
            "https://sns.us-east-1.amazonaws.com/x.pem?x=1",
            "https://sns.us-east-1.amazonaws.com/a/../x.pem",
            "https://sns.us-east-1.amazonaws.com/x.txt",
            "https://sns..amazonaws.com/x.pem",
            "https://SNS.us-east-1.amazonaws.com/x.pem",
            "https://169.254.169.254/latest/meta-data.pem",
        ] {
            assert!(check_certificate_url(bad).is_err(), "{bad}");
        }
        assert!(check_subscribe_url(
            "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-west-2:123456789012:MyTopic&Token=2336412f37"
        ).is_ok());
        assert!(check_subscribe_url("https://evil.example/?Action=ConfirmSubscription").is_err());
        assert!(
            check_subscribe_url("https://sns.us-west-2.amazonaws.com/?Action=Publish").is_err()
        );
    }

    #[test]
    fn the_string_to_sign_follows_the_documented_order() {
        let env = Envelope {
            kind: "Notification".into(),
            message_id: "id".into(),
            topic_arn: "arn".into(),
            subject: None,
            message: "m".into(),
            timestamp: "t".into(),
            signature_version: "1".into(),
            signature: String::new(),
            signing_cert_url: String::new(),
            subscribe_url: None,
            token: None,
        };
        assert_eq!(
            env.string_to_sign().unwrap(),
            "Message\nm\nMessageId\nid\nTimestamp\nt\nTopicArn\narn\nType\nNotification\n"
        );
        let confirm = Envelope {
            kind: "SubscriptionConfirmation".into(),
            subscribe_url: Some("u".into()),
            token: Some("k".into()),
            ..env
        };
        assert_eq!(
            confirm.string_to_sign().unwrap(),
            "Message\nm\nMessageId\nid\nSubscribeURL\nu\nTimestamp\nt\nToken\nk\nTopicArn\narn\nType\nSubscriptionConfirmation\n"
        );
    }
}
