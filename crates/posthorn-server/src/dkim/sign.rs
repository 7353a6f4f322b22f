//! Signing outgoing copies: the keys `serve` signs with (one active key per
//! domain, reloaded when domains change), which domain signs a copy, and the
//! signature itself (ring's RSA through mail-auth).

use super::DkimError;
use super::home::KeyHome;
use super::keys::examine;
use mail_auth::common::crypto::{Algorithm, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::{HeaderWriter, Writable};
use mail_auth::dkim::{Canonicalization, DkimSigner};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

/// The header fields signed when a copy has them. Headers a copy lacks are
/// not listed (OpenDKIM's default), so `h=` names exactly what was there.
pub const SIGNED_HEADERS: [&str; 11] = [
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Unsubscribe",
];

/// The keys `serve` signs with, one per domain: loaded at start, and again
/// when a tenant adds or removes a domain through the API, and on
/// PostgreSQL when the database's keys change (`KeyWatch`).
#[derive(Default)]
pub struct DkimKeys {
    by_domain: RwLock<HashMap<String, DomainSigner>>,
    /// The version of the home's keys these are (the database's; `None`
    /// for files).
    version: Mutex<Option<i64>>,
}

#[derive(Clone)]
struct DomainSigner {
    selector: String,
    key: SharedKey,
}

/// A loaded key shared by every signature made with it (mail-auth's signer
/// takes its key by value).
#[derive(Clone)]
struct SharedKey(Arc<RsaKey<Sha256>>);

impl SigningKey for SharedKey {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        self.0.sign(input)
    }

    fn algorithm(&self) -> Algorithm {
        self.0.algorithm()
    }
}

impl std::fmt::Debug for DkimKeys {
    /// Domains and selectors only: never key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let by_domain = self.by_domain.read().unwrap_or_else(|e| e.into_inner());
        f.debug_map()
            .entries(by_domain.iter().map(|(d, s)| (d, &s.selector)))
            .finish()
    }
}

impl DkimKeys {
    /// Loads every key in `home` (none, when there is none). A key that
    /// cannot be read or used is an error: mail for its domain would
    /// otherwise leave unsigned without anyone noticing. Blocking.
    pub fn load(home: &KeyHome) -> Result<Self, DkimError> {
        let keys = Self::default();
        keys.reload(home)?;
        Ok(keys)
    }

    /// Reads the keys again (after a key was added or removed while
    /// serving); on an error the keys in use stay. Blocking.
    pub fn reload(&self, home: &KeyHome) -> Result<(), DkimError> {
        // The version first: a change that commits between the two reads
        // moves it past what is noted here, so it is loaded again later.
        let version = home.version()?;
        let fresh = read_signers(home)?;
        *self.by_domain.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        *self.version.lock().unwrap_or_else(|e| e.into_inner()) = version;
        Ok(())
    }

    /// The version of the keys loaded (see `KeyHome::version`).
    pub fn version(&self) -> Option<i64> {
        *self.version.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_empty(&self) -> bool {
        self.by_domain
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// `message` with a `DKIM-Signature` header in front, signed for
    /// `from_domain` or its nearest parent domain that has a key and that
    /// `may_sign` allows (the sending tenant owns it); `None` when there is
    /// no such key (the message then goes unsigned).
    pub fn sign(
        &self,
        from_domain: &str,
        may_sign: impl Fn(&str) -> bool,
        message: &[u8],
    ) -> Option<Vec<u8>> {
        let from_domain = from_domain.trim_end_matches('.').to_ascii_lowercase();
        let (domain, signer) = self.signer_for(&from_domain, may_sign)?;
        // Sign the bytes that go on the wire: the SMTP client turns bare LF
        // into CRLF, so do it first.
        let message = &*crlf(message);
        let mut headers: Vec<&str> = SIGNED_HEADERS
            .into_iter()
            .filter(|name| has_header(message, name))
            .collect();
        if !headers.contains(&"From") {
            // RFC 6376 §5.4: From must always be signed.
            headers.insert(0, "From");
        }
        let signature = DkimSigner::from_key(signer.key)
            .domain(domain)
            .selector(signer.selector.as_str())
            .headers(headers)
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Relaxed)
            .sign(message);
        match signature {
            Ok(signature) => {
                let mut signed = signature.to_header().into_bytes();
                signed.extend_from_slice(message);
                Some(signed)
            }
            Err(e) => {
                tracing::error!(%domain, error = %e, "DKIM signing failed; the message goes unsigned");
                None
            }
        }
    }

    /// The key for `domain`, else for its nearest parent domain (never a
    /// single label), among the domains `may_sign` allows.
    fn signer_for<'a>(
        &self,
        domain: &'a str,
        may_sign: impl Fn(&str) -> bool,
    ) -> Option<(&'a str, DomainSigner)> {
        let by_domain = self.by_domain.read().unwrap_or_else(|e| e.into_inner());
        posthorn_core::domain::domain_and_parents(domain)
            .into_iter()
            .filter(|candidate| may_sign(candidate))
            .find_map(|candidate| Some((candidate, by_domain.get(candidate)?.clone())))
    }
}

/// The active key of every domain in `home`.
fn read_signers(home: &KeyHome) -> Result<HashMap<String, DomainSigner>, DkimError> {
    let mut by_domain = HashMap::new();
    for (found, der) in examine(home.read_all()?)?
        .into_iter()
        .filter(|(k, _)| k.active)
    {
        let key = RsaKey::<Sha256>::from_key_der(der).map_err(|e| DkimError::UnusableKey {
            place: found.place.clone(),
            reason: format!("not a usable RSA key: {e}"),
        })?;
        tracing::info!(domain = %found.domain, selector = %found.selector, "DKIM key loaded");
        by_domain.insert(
            found.domain,
            DomainSigner {
                selector: found.selector,
                key: SharedKey(Arc::new(key)),
            },
        );
    }
    Ok(by_domain)
}

/// The domain a message is signed for: its From header's (what DMARC
/// aligns with; an SMTP client's header may differ from its envelope
/// sender), else the envelope sender's.
pub fn author_domain(message: &posthorn_store::MessageRecord) -> String {
    match posthorn_core::address::Mailbox::parse(message.content.from.trim()) {
        Ok(mailbox) => mailbox.address.domain().to_owned(),
        Err(_) => message
            .from_address
            .rsplit_once('@')
            .map_or("", |(_, d)| d)
            .to_owned(),
    }
}

/// `message` with every LF not preceded by CR made CRLF (as the SMTP client
/// sends it).
fn crlf(message: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let bare = |i: usize| message[i] == b'\n' && (i == 0 || message[i - 1] != b'\r');
    if !(0..message.len()).any(bare) {
        return std::borrow::Cow::Borrowed(message);
    }
    let mut out = Vec::with_capacity(message.len() + message.len() / 32);
    for (i, &b) in message.iter().enumerate() {
        if bare(i) {
            out.push(b'\r');
        }
        out.push(b);
    }
    std::borrow::Cow::Owned(out)
}

/// Whether the header section of `message` has a field called `name`
/// (whitespace around the name tolerated).
fn has_header(message: &[u8], name: &str) -> bool {
    posthorn_core::rfc5322::fields(message).any(|field| {
        field
            .name()
            .is_some_and(|n| n.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dkim::keys::tests::{files, path_of};
    use crate::dkim::{DEFAULT_SELECTOR, generate, remove};

    const MESSAGE: &[u8] = b"From: Shop <shop@sender.example>\r\n\
        To: ann@example.com\r\n\
        Subject: Your receipt\r\n\
        Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n\
        Message-ID: <1@sender.example>\r\n\
        MIME-Version: 1.0\r\n\
        Content-Type: text/plain; charset=utf-8\r\n\
        \r\n\
        Thanks!\r\n";

    #[test]
    fn a_loaded_key_signs_for_its_domain_and_subdomains() {
        let dir = tempfile::tempdir().unwrap();
        generate(&files(&dir), "Sender.Example", DEFAULT_SELECTOR).unwrap();
        let keys = DkimKeys::load(&files(&dir)).unwrap();
        let signed = keys
            .sign("sender.example", |_| true, MESSAGE)
            .expect("signed");
        assert!(signed.ends_with(MESSAGE), "the message follows unchanged");
        let header = signature_of(&signed);
        assert!(
            header.starts_with("DKIM-Signature: v=1; a=rsa-sha256;"),
            "{header}"
        );
        assert!(header.contains("s=posthorn; d=sender.example;"), "{header}");
        assert!(header.contains("c=relaxed/relaxed"), "{header}");
        let h = header
            .split("h=")
            .nth(1)
            .and_then(|rest| rest.split(';').next())
            .unwrap()
            .replace(' ', "")
            .to_ascii_lowercase();
        let mut signed_names: Vec<&str> = h.split(':').collect();
        signed_names.sort_unstable();
        assert_eq!(
            signed_names,
            [
                "content-type",
                "date",
                "from",
                "message-id",
                "mime-version",
                "subject",
                "to"
            ],
            "exactly the listed headers the message has"
        );

        // A subdomain is signed with its parent's key (DMARC relaxed
        // alignment); case and a trailing dot do not matter.
        let sub = keys
            .sign("News.Sender.Example.", |_| true, MESSAGE)
            .expect("signed");
        assert!(signature_of(&sub).contains("d=sender.example;"));
    }

    #[test]
    fn the_newest_key_of_a_rotated_domain_signs() {
        let dir = tempfile::tempdir().unwrap();
        let old = generate(&files(&dir), "sender.example", "old").unwrap();
        // Made an hour older, so no clock resolution matters.
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(path_of(&old))
            .and_then(|f| f.set_modified(hour_ago))
            .unwrap();
        generate(&files(&dir), "sender.example", "new").unwrap();
        let loaded = DkimKeys::load(&files(&dir)).unwrap();
        let signed = loaded.sign("sender.example", |_| true, MESSAGE).unwrap();
        assert!(signature_of(&signed).contains("s=new; d=sender.example;"));
    }

    /// The DKIM-Signature header of a signed message, unfolded.
    fn signature_of(signed: &[u8]) -> String {
        let text = String::from_utf8(signed.to_vec()).unwrap();
        let end = text.find("\r\nFrom:").expect("the signature comes first");
        text[..end].replace("\r\n\t", " ")
    }

    #[test]
    fn bare_line_feeds_are_signed_as_the_crlf_the_client_sends() {
        let dir = tempfile::tempdir().unwrap();
        generate(&files(&dir), "sender.example", DEFAULT_SELECTOR).unwrap();
        let keys = DkimKeys::load(&files(&dir)).unwrap();
        let lf = String::from_utf8(MESSAGE.to_vec())
            .unwrap()
            .replace("\r\n", "\n");
        let signed = keys
            .sign("sender.example", |_| true, lf.as_bytes())
            .unwrap();
        assert!(signed.ends_with(MESSAGE), "sent with CRLF line ends");
        let body_hash = |signed: &[u8]| {
            let header = signature_of(signed).replace(' ', "");
            header
                .split("bh=")
                .nth(1)
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_owned()
        };
        let crlf_signed = keys.sign("sender.example", |_| true, MESSAGE).unwrap();
        assert_eq!(body_hash(&signed), body_hash(&crlf_signed));
        assert_eq!(crlf(b"a\r\nb\nc\n\n"), &b"a\r\nb\r\nc\r\n\r\n"[..]);
        assert_eq!(crlf(b"\nx"), &b"\r\nx"[..]);
    }

    #[test]
    fn unknown_domains_go_unsigned() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            DkimKeys::load(&files(&dir)).unwrap().is_empty(),
            "no directory, no keys"
        );
        generate(&files(&dir), "sender.example", "s1").unwrap();
        let keys = DkimKeys::load(&files(&dir)).unwrap();
        assert!(keys.sign("other.example", |_| true, MESSAGE).is_none());
        assert!(keys.sign("example", |_| true, MESSAGE).is_none());
        assert!(keys.sign("", |_| true, MESSAGE).is_none());
        assert!(keys.sign("notsender.example", |_| true, MESSAGE).is_none());
        assert_eq!(format!("{keys:?}"), r#"{"sender.example": "s1"}"#);
    }

    #[test]
    fn only_domains_the_sender_may_sign_for_are_used() {
        let dir = tempfile::tempdir().unwrap();
        generate(&files(&dir), "sender.example", "s1").unwrap();
        let keys = DkimKeys::load(&files(&dir)).unwrap();
        // Another tenant's domain: its key is never used.
        assert!(keys.sign("sender.example", |_| false, MESSAGE).is_none());
        assert!(
            keys.sign(
                "news.sender.example",
                |d| d == "news.sender.example",
                MESSAGE
            )
            .is_none(),
            "the key's own domain must be allowed, not only the From domain"
        );
        let signed = keys
            .sign("news.sender.example", |d| d == "sender.example", MESSAGE)
            .unwrap();
        assert!(signature_of(&signed).contains("d=sender.example"));
    }

    #[test]
    fn reload_picks_up_added_and_removed_keys() {
        let dir = tempfile::tempdir().unwrap();
        let keys = DkimKeys::load(&files(&dir)).unwrap();
        generate(&files(&dir), "sender.example", "s1").unwrap();
        assert!(keys.sign("sender.example", |_| true, MESSAGE).is_none());
        keys.reload(&files(&dir)).unwrap();
        assert!(keys.sign("sender.example", |_| true, MESSAGE).is_some());
        remove(&files(&dir), "sender.example", None).unwrap();
        keys.reload(&files(&dir)).unwrap();
        assert!(keys.is_empty());
    }

    #[test]
    fn header_presence_reads_only_the_header_section() {
        let message =
            b"From: a@b.example\r\nX-Long: one\r\n two\r\nsubject : hi\r\n\r\nTo: not a header\r\n";
        assert!(has_header(message, "From"));
        assert!(
            has_header(message, "Subject"),
            "case and space before the colon"
        );
        assert!(!has_header(message, "To"), "in the body");
        assert!(!has_header(message, "two"));
        assert!(has_header(
            b"From: a@b.example\nCc: c@d.example\n\nbody",
            "Cc"
        ));
    }
}
