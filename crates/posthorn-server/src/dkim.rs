//! DKIM signing (RFC 6376) of outgoing mail with per-domain keys.
//!
//! Keys are files in the data directory, `DATA_DIR/dkim/<domain>.<selector>.pem`
//! (an RSA 2048 private key, PKCS#8 PEM, readable only by its owner):
//! `posthorn domains add` writes one and prints the TXT record to publish,
//! and `serve` loads them all when it starts. A copy is signed for the
//! domain of its From header (or the nearest parent domain with a key, which
//! DMARC's relaxed alignment accepts), `rsa-sha256`, relaxed/relaxed, over
//! the [`SIGNED_HEADERS`] that the copy has.
//!
//! The RSA operation is ring's (constant time, through mail-auth); the `rsa`
//! crate only generates keys and encodes public keys. Nothing here logs or
//! prints private key material.

use mail_auth::common::crypto::{Algorithm, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::{HeaderWriter, Writable};
use mail_auth::dkim::{Canonicalization, DkimSigner};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

/// The directory under the data directory that holds the keys.
pub const KEY_DIR: &str = "dkim";
/// The selector `domains add` uses unless told otherwise.
pub const DEFAULT_SELECTOR: &str = "posthorn";
/// RSA modulus size of generated keys: what RFC 8301 recommends and every
/// verifier accepts (Ed25519 is not yet verified everywhere).
pub const KEY_BITS: usize = 2048;
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

/// The DNS TXT record that publishes a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    /// `<selector>._domainkey.<domain>`
    pub name: String,
    /// `v=DKIM1; k=rsa; p=<base64 SubjectPublicKeyInfo>`
    pub value: String,
}

impl DnsRecord {
    /// The record as a zone-file line. One TXT string holds at most 255
    /// characters and a 2048-bit key's value is longer, so the value is
    /// split into several strings (resolvers join them again).
    pub fn zone_line(&self) -> String {
        let strings: Vec<String> = self
            .value
            .as_bytes()
            .chunks(255)
            .map(|chunk| format!("\"{}\"", String::from_utf8_lossy(chunk)))
            .collect();
        format!("{}. IN TXT {}", self.name, strings.join(" "))
    }
}

/// One key file in the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainKey {
    /// The signing domain (`d=`), ASCII, lower-case.
    pub domain: String,
    /// The selector (`s=`).
    pub selector: String,
    pub path: PathBuf,
    /// What to publish in DNS for this key.
    pub record: DnsRecord,
    /// Whether `serve` signs with this key: when a domain has several (while
    /// a new key is rotated in), the newest file signs.
    pub active: bool,
}

/// The keys `serve` signs with, one per domain: loaded at start, and again
/// when a tenant adds or removes a domain through the API.
#[derive(Default)]
pub struct DkimKeys {
    by_domain: RwLock<HashMap<String, DomainSigner>>,
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
    /// Loads every key in `DATA_DIR/dkim` (none, when it does not exist).
    /// A key file that cannot be read or used is an error: mail for its
    /// domain would otherwise leave unsigned without anyone noticing.
    pub fn load(data_dir: &Path) -> Result<Self, String> {
        Ok(Self {
            by_domain: RwLock::new(read_signers(data_dir)?),
        })
    }

    /// Reads the key directory again (after a key was added or removed
    /// while serving); on an error the keys in use stay.
    pub fn reload(&self, data_dir: &Path) -> Result<(), String> {
        let fresh = read_signers(data_dir)?;
        *self.by_domain.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
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

/// The active key of every domain in `DATA_DIR/dkim`.
fn read_signers(data_dir: &Path) -> Result<HashMap<String, DomainSigner>, String> {
    let mut by_domain = HashMap::new();
    for file in scan(data_dir)?.into_iter().filter(|f| f.active) {
        let der = read_private_key(&file.path)?;
        let key = RsaKey::<Sha256>::from_key_der(der)
            .map_err(|e| format!("{}: not a usable RSA key: {e}", file.path.display()))?;
        tracing::info!(domain = %file.domain, selector = %file.selector, "DKIM key loaded");
        by_domain.insert(
            file.domain,
            DomainSigner {
                selector: file.selector,
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
    match posthorn_core::address::Mailbox::parse(message.from_header.trim()) {
        Ok(mailbox) => mailbox.address.domain().to_owned(),
        Err(_) => message
            .from_address
            .rsplit_once('@')
            .map_or("", |(_, d)| d)
            .to_owned(),
    }
}

/// Generates a key for `domain` with `selector` and writes it to the data
/// directory. An existing key is never replaced: its record may be
/// published and in use.
pub fn generate(data_dir: &Path, domain: &str, selector: &str) -> Result<DomainKey, String> {
    let domain = normalize_domain(domain)?;
    let selector = normalize_selector(selector)?;
    let name = record_name(&domain, &selector)?;
    let dir = data_dir.join(KEY_DIR);
    create_private_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let path = dir.join(format!("{domain}.{selector}.pem"));
    if path.exists() {
        return Err(format!(
            "{domain} already has a key with selector `{selector}` ({}); remove it first, or choose another --selector",
            path.display()
        ));
    }
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, KEY_BITS)
        .map_err(|e| format!("generating an RSA key: {e}"))?;
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| format!("encoding the key: {e}"))?;
    let value = record_value(&key.to_public_key())?;
    write_new_private_file(&path, pem.as_bytes())
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(DomainKey {
        domain,
        selector,
        path,
        record: DnsRecord { name, value },
        active: true,
    })
}

/// Every key in the data directory, by domain and selector.
pub fn list(data_dir: &Path) -> Result<Vec<DomainKey>, String> {
    scan(data_dir)
}

/// Removes `domain`'s keys (only the one with `selector`, if given) and
/// returns how many were removed.
pub fn remove(data_dir: &Path, domain: &str, selector: Option<&str>) -> Result<usize, String> {
    let domain = normalize_domain(domain)?;
    let selector = selector.map(normalize_selector).transpose()?;
    let mut removed = 0;
    for file in scan(data_dir)? {
        if file.domain == domain && selector.as_ref().is_none_or(|s| *s == file.selector) {
            std::fs::remove_file(&file.path)
                .map_err(|e| format!("removing {}: {e}", file.path.display()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// A domain as DKIM keys are filed under: ASCII (punycode), lower-case, a
/// valid host name with at least two labels.
pub fn normalize_domain(domain: &str) -> Result<String, String> {
    let trimmed = domain.trim().trim_end_matches('.');
    let refused = || format!("`{domain}` is not a domain name like example.com");
    if trimmed.contains('@') {
        return Err(refused());
    }
    // The address rules already know valid domains (IDN, label syntax).
    let address = posthorn_core::address::EmailAddress::parse(&format!("x@{trimmed}"))
        .map_err(|_| refused())?;
    let ascii = address.domain().to_ascii_lowercase();
    if !ascii.contains('.') {
        return Err(refused());
    }
    Ok(ascii)
}

/// A selector: one DNS label (letters, digits, hyphens), lower-case. One
/// label keeps `<domain>.<selector>.pem` unambiguous.
pub fn normalize_selector(selector: &str) -> Result<String, String> {
    let s = selector.trim().to_ascii_lowercase();
    let ok = !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(s)
    } else {
        Err(format!(
            "`{selector}` is not a selector: use one DNS label (letters, digits, hyphens), like `posthorn` or `2025a`"
        ))
    }
}

fn record_name(domain: &str, selector: &str) -> Result<String, String> {
    let name = format!("{selector}._domainkey.{domain}");
    if name.len() > posthorn_core::address::MAX_DOMAIN {
        return Err(format!("{name} is longer than a DNS name may be"));
    }
    Ok(name)
}

fn record_value(public: &rsa::RsaPublicKey) -> Result<String, String> {
    use base64::Engine;
    let spki = public
        .to_public_key_der()
        .map_err(|e| format!("encoding the public key: {e}"))?;
    Ok(format!(
        "v=DKIM1; k=rsa; p={}",
        base64::engine::general_purpose::STANDARD.encode(spki.as_bytes())
    ))
}

/// The key files in `DATA_DIR/dkim`, sorted, each with its record and
/// whether it is its domain's active (newest) key.
fn scan(data_dir: &Path) -> Result<Vec<DomainKey>, String> {
    let dir = data_dir.join(KEY_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("reading {}: {e}", dir.display())),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("reading {}: {e}", dir.display()))?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = file_name.strip_suffix(".pem") else {
            continue;
        };
        if file_name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let misnamed = || {
            format!(
                "{}: a DKIM key file is named <domain>.<selector>.pem",
                path.display()
            )
        };
        let (domain, selector) = stem.rsplit_once('.').ok_or_else(misnamed)?;
        let domain = normalize_domain(domain).map_err(|_| misnamed())?;
        let selector = normalize_selector(selector).map_err(|_| misnamed())?;
        let name = record_name(&domain, &selector)?;
        let value = record_value(&public_key(&path)?)?;
        let modified = entry
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        files.push((
            modified,
            DomainKey {
                domain,
                selector,
                path,
                record: DnsRecord { name, value },
                active: false,
            },
        ));
    }
    // The newest key of each domain signs (a tie goes to the selector that
    // sorts last, so the choice never depends on directory order).
    let mut newest: HashMap<String, (SystemTime, String)> = HashMap::new();
    for (modified, file) in &files {
        let candidate = (*modified, file.selector.clone());
        let entry = newest
            .entry(file.domain.clone())
            .or_insert_with(|| candidate.clone());
        if candidate > *entry {
            *entry = candidate;
        }
    }
    let mut keys: Vec<DomainKey> = files
        .into_iter()
        .map(|(_, mut file)| {
            file.active = newest[&file.domain].1 == file.selector;
            file
        })
        .collect();
    keys.sort_by(|a, b| (&a.domain, &a.selector).cmp(&(&b.domain, &b.selector)));
    Ok(keys)
}

/// The private key in a PEM file (PKCS#8, or PKCS#1 `RSA PRIVATE KEY`).
fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("{}: not a PEM private key: {e}", path.display()))
}

fn public_key(path: &Path) -> Result<rsa::RsaPublicKey, String> {
    let key =
        match read_private_key(path)? {
            PrivateKeyDer::Pkcs8(der) => rsa::RsaPrivateKey::from_pkcs8_der(der.secret_pkcs8_der())
                .map_err(|e| e.to_string()),
            PrivateKeyDer::Pkcs1(der) => rsa::RsaPrivateKey::from_pkcs1_der(der.secret_pkcs1_der())
                .map_err(|e| e.to_string()),
            _ => Err("not an RSA key".to_owned()),
        }
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(key.to_public_key())
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

/// Whether the header section of `message` has a field called `name`.
fn has_header(message: &[u8], name: &str) -> bool {
    for line in message.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return false;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            continue;
        }
        if let Some(colon) = line.iter().position(|b| *b == b':')
            && line[..colon]
                .trim_ascii()
                .eq_ignore_ascii_case(name.as_bytes())
        {
            return true;
        }
    }
    false
}

/// Creates the key directory, readable only by its owner.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Writes a new file only its owner can read; fails if it exists (like
/// `app::write_private_file`, but never replaces a key).
fn write_new_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    if written.is_err() {
        let _ = std::fs::remove_file(path);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &[u8] = b"From: Shop <shop@sender.example>\r\n\
        To: ann@example.com\r\n\
        Subject: Your receipt\r\n\
        Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n\
        Message-ID: <1@sender.example>\r\n\
        MIME-Version: 1.0\r\n\
        Content-Type: text/plain; charset=utf-8\r\n\
        \r\n\
        Thanks!\r\n";

    /// The DKIM-Signature header of a signed message, unfolded.
    fn signature_of(signed: &[u8]) -> String {
        let text = String::from_utf8(signed.to_vec()).unwrap();
        let end = text.find("\r\nFrom:").expect("the signature comes first");
        text[..end].replace("\r\n\t", " ")
    }

    #[test]
    fn a_generated_key_loads_and_signs_for_its_domain_and_subdomains() {
        let dir = tempfile::tempdir().unwrap();
        let key = generate(dir.path(), "Sender.Example", DEFAULT_SELECTOR).unwrap();
        assert_eq!(key.domain, "sender.example");
        assert_eq!(key.record.name, "posthorn._domainkey.sender.example");
        assert!(
            key.record
                .value
                .starts_with("v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"),
            "an SPKI RSA 2048 public key: {}",
            key.record.value
        );
        assert_eq!(
            key.path,
            dir.path().join("dkim/sender.example.posthorn.pem")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key.path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(list(dir.path()).unwrap(), vec![key.clone()]);

        let keys = DkimKeys::load(dir.path()).unwrap();
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
    fn bare_line_feeds_are_signed_as_the_crlf_the_client_sends() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path(), "sender.example", DEFAULT_SELECTOR).unwrap();
        let keys = DkimKeys::load(dir.path()).unwrap();
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
            DkimKeys::load(dir.path()).unwrap().is_empty(),
            "no directory, no keys"
        );
        generate(dir.path(), "sender.example", "s1").unwrap();
        let keys = DkimKeys::load(dir.path()).unwrap();
        assert!(keys.sign("other.example", |_| true, MESSAGE).is_none());
        assert!(keys.sign("example", |_| true, MESSAGE).is_none());
        assert!(keys.sign("", |_| true, MESSAGE).is_none());
        assert!(keys.sign("notsender.example", |_| true, MESSAGE).is_none());
        assert_eq!(format!("{keys:?}"), r#"{"sender.example": "s1"}"#);
    }

    #[test]
    fn only_domains_the_sender_may_sign_for_are_used() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path(), "sender.example", "s1").unwrap();
        let keys = DkimKeys::load(dir.path()).unwrap();
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
        let keys = DkimKeys::load(dir.path()).unwrap();
        generate(dir.path(), "sender.example", "s1").unwrap();
        assert!(keys.sign("sender.example", |_| true, MESSAGE).is_none());
        keys.reload(dir.path()).unwrap();
        assert!(keys.sign("sender.example", |_| true, MESSAGE).is_some());
        remove(dir.path(), "sender.example", None).unwrap();
        keys.reload(dir.path()).unwrap();
        assert!(keys.is_empty());
    }

    #[test]
    fn remove_deletes_a_domains_keys_and_an_existing_key_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let first = generate(dir.path(), "sender.example", "old").unwrap();
        let again = generate(dir.path(), "sender.example", "old").unwrap_err();
        assert!(again.contains("already has a key"), "{again}");
        assert_eq!(list(dir.path()).unwrap(), vec![first.clone()], "unchanged");

        // Rotation: a newer key under a second selector becomes the active
        // one (made an hour older here, so no clock resolution matters).
        let hour_ago = SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&first.path)
            .and_then(|f| f.set_modified(hour_ago))
            .unwrap();
        generate(dir.path(), "sender.example", "new").unwrap();
        generate(dir.path(), "other.example", DEFAULT_SELECTOR).unwrap();
        let keys = list(dir.path()).unwrap();
        let summary: Vec<(&str, &str, bool)> = keys
            .iter()
            .map(|k| (k.domain.as_str(), k.selector.as_str(), k.active))
            .collect();
        assert_eq!(
            summary,
            [
                ("other.example", "posthorn", true),
                ("sender.example", "new", true),
                ("sender.example", "old", false)
            ]
        );
        let loaded = DkimKeys::load(dir.path()).unwrap();
        let signed = loaded.sign("sender.example", |_| true, MESSAGE).unwrap();
        assert!(signature_of(&signed).contains("s=new; d=sender.example;"));

        assert_eq!(
            remove(dir.path(), "sender.example", Some("old")).unwrap(),
            1
        );
        assert_eq!(
            remove(dir.path(), "sender.example", Some("old")).unwrap(),
            0
        );
        assert_eq!(remove(dir.path(), "SENDER.example", None).unwrap(), 1);
        assert_eq!(remove(dir.path(), "nobody.example", None).unwrap(), 0);
        let left: Vec<String> = list(dir.path())
            .unwrap()
            .into_iter()
            .map(|k| k.domain)
            .collect();
        assert_eq!(left, ["other.example"]);
        assert!(!first.path.exists());
    }

    #[test]
    fn bad_domains_and_selectors_are_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        for domain in [
            "",
            "localhost",
            "bad domain.example",
            "shop@sender.example",
            "-x.example",
            "x..example",
            "[127.0.0.1]",
            "sender.example/../../etc",
            "x_y.example",
        ] {
            let error = generate(dir.path(), domain, DEFAULT_SELECTOR).unwrap_err();
            assert!(error.contains("is not a domain name"), "{domain}: {error}");
        }
        for selector in ["", "a.b", "-a", "a b", "../x", &"a".repeat(64)] {
            let error = generate(dir.path(), "sender.example", selector).unwrap_err();
            assert!(error.contains("is not a selector"), "{selector}: {error}");
        }
        assert!(list(dir.path()).unwrap().is_empty());
        // Unicode domains are filed under their ASCII form.
        assert_eq!(
            normalize_domain("Bücher.example.").unwrap(),
            "xn--bcher-kva.example"
        );
    }

    #[test]
    fn a_broken_or_misnamed_key_file_stops_loading_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join(KEY_DIR);
        std::fs::create_dir_all(&keys).unwrap();
        std::fs::write(keys.join("README"), "not a key, ignored").unwrap();
        std::fs::write(keys.join("sender.example.posthorn.pem"), "garbage").unwrap();
        let error = DkimKeys::load(dir.path()).unwrap_err();
        assert!(error.contains("sender.example.posthorn.pem"), "{error}");
        std::fs::remove_file(keys.join("sender.example.posthorn.pem")).unwrap();
        std::fs::write(keys.join("nodomain.pem"), "garbage").unwrap();
        let error = DkimKeys::load(dir.path()).unwrap_err();
        assert!(error.contains("<domain>.<selector>.pem"), "{error}");
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

    #[test]
    fn the_zone_line_splits_the_value_into_255_character_strings() {
        let record = DnsRecord {
            name: "s._domainkey.example.com".into(),
            value: "x".repeat(300),
        };
        assert_eq!(
            record.zone_line(),
            format!(
                "s._domainkey.example.com. IN TXT \"{}\" \"{}\"",
                "x".repeat(255),
                "x".repeat(45)
            )
        );
    }
}
