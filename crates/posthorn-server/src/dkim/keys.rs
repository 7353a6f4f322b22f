//! DKIM keys, wherever they live ([`KeyHome`]: files in the data
//! directory, or the PostgreSQL database that nodes share): generating,
//! listing and removing them, and which key of a domain is its active one.
//! What is the same in both homes is here, once: the names (normalised
//! before they become part of a path or a row), the records, the active-key
//! rule, and the checks a key must pass before it is listed or signs.

use super::DkimError;
use super::home::KeyHome;
use super::records::{DnsRecord, record_name, record_value};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::SystemTime;

/// The directory under the data directory that holds the key files.
pub const KEY_DIR: &str = "dkim";
/// The selector `domains add` uses unless told otherwise.
pub const DEFAULT_SELECTOR: &str = "posthorn";
/// RSA modulus size of generated keys: what RFC 8301 recommends and every
/// verifier accepts (Ed25519 is not yet verified everywhere).
pub const KEY_BITS: usize = 2048;

/// One DKIM key, with what to publish for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainKey {
    /// The signing domain (`d=`), ASCII, lower-case.
    pub domain: String,
    /// The selector (`s=`).
    pub selector: String,
    /// Where the key is kept.
    pub place: KeyPlace,
    /// What to publish in DNS for this key.
    pub record: DnsRecord,
    /// Whether `serve` signs with this key: when a domain has several (while
    /// a new key is rotated in), the newest signs.
    pub active: bool,
}

/// Where a key is kept, as messages name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPlace {
    /// `DATA_DIR/dkim/<domain>.<selector>.pem`.
    File(PathBuf),
    /// A row of the PostgreSQL database's `dkim_keys`.
    Database { domain: String, selector: String },
}

impl std::fmt::Display for KeyPlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyPlace::File(path) => write!(f, "{}", path.display()),
            KeyPlace::Database { domain, selector } => {
                write!(f, "the database's DKIM key {selector} of {domain}")
            }
        }
    }
}

/// A key as its home keeps it, before it is checked (see [`examine`]).
pub(super) struct StoredKey {
    /// Normalised (a file's name or a row that is not is refused first).
    pub domain: String,
    pub selector: String,
    /// The private key, PEM.
    pub pem: Vec<u8>,
    /// When it was made: a file's modification time, a row's `created_at`.
    pub made: SystemTime,
    pub place: KeyPlace,
}

/// Generates a key for `domain` with `selector` and keeps it in `home`. An
/// existing key is never replaced: its record may be published and in use.
pub fn generate(home: &KeyHome, domain: &str, selector: &str) -> Result<DomainKey, DkimError> {
    let domain = normalize_domain(domain)?;
    let selector = normalize_selector(selector)?;
    let name = record_name(&domain, &selector)?;
    home.check_free(&domain, &selector)?;
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, KEY_BITS).map_err(|e| {
        DkimError::Crypto {
            doing: "generating an RSA key",
            reason: e.to_string(),
        }
    })?;
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| DkimError::Crypto {
            doing: "encoding the key",
            reason: e.to_string(),
        })?;
    let value = record_value(&key.to_public_key())?;
    let place = home.store_new(&domain, &selector, &pem)?;
    Ok(DomainKey {
        domain,
        selector,
        place,
        record: DnsRecord { name, value },
        active: true,
    })
}

/// Every key in `home`, by domain and selector.
pub fn list(home: &KeyHome) -> Result<Vec<DomainKey>, DkimError> {
    Ok(examine(home.read_all()?)?
        .into_iter()
        .map(|(key, _)| key)
        .collect())
}

/// Removes `domain`'s keys (only the one with `selector`, if given) from
/// `home` and returns how many were removed.
pub fn remove(home: &KeyHome, domain: &str, selector: Option<&str>) -> Result<usize, DkimError> {
    let domain = normalize_domain(domain)?;
    let selector = selector.map(normalize_selector).transpose()?;
    home.delete(&domain, selector.as_deref())
}

/// A domain as DKIM keys are filed under: ASCII (punycode), lower-case, a
/// valid host name with at least two labels.
pub fn normalize_domain(domain: &str) -> Result<String, DkimError> {
    let trimmed = domain.trim().trim_end_matches('.');
    let refused = || DkimError::InvalidDomain(domain.to_owned());
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
pub fn normalize_selector(selector: &str) -> Result<String, DkimError> {
    let s = selector.trim().to_ascii_lowercase();
    let ok = !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(s)
    } else {
        Err(DkimError::InvalidSelector(selector.to_owned()))
    }
}

/// The stored keys checked (each an RSA private key whose record can be
/// published), sorted by domain and selector, each with its record,
/// whether it is its domain's active key, and its private key.
///
/// The active key of a domain is its newest; a tie goes to the selector
/// that sorts last, so the choice never depends on the order a directory
/// or a query gives.
pub(super) fn examine(
    stored: Vec<StoredKey>,
) -> Result<Vec<(DomainKey, PrivateKeyDer<'static>)>, DkimError> {
    let mut keys = Vec::with_capacity(stored.len());
    for key in stored {
        let (der, record) = check(&key)?;
        keys.push((
            key.made,
            DomainKey {
                domain: key.domain,
                selector: key.selector,
                place: key.place,
                record,
                active: false,
            },
            der,
        ));
    }
    let mut newest: HashMap<String, (SystemTime, String)> = HashMap::new();
    for (made, key, _) in &keys {
        let candidate = (*made, key.selector.clone());
        let entry = newest
            .entry(key.domain.clone())
            .or_insert_with(|| candidate.clone());
        if candidate > *entry {
            *entry = candidate;
        }
    }
    let mut keys: Vec<(DomainKey, PrivateKeyDer<'static>)> = keys
        .into_iter()
        .map(|(_, mut key, der)| {
            key.active = newest[&key.domain].1 == key.selector;
            (key, der)
        })
        .collect();
    keys.sort_by(|(a, _), (b, _)| (&a.domain, &a.selector).cmp(&(&b.domain, &b.selector)));
    Ok(keys)
}

/// Checks one stored key: its record can be published and it is an RSA
/// private key. Its private key and record.
pub(super) fn check(key: &StoredKey) -> Result<(PrivateKeyDer<'static>, DnsRecord), DkimError> {
    let name = record_name(&key.domain, &key.selector)?;
    let der = private_key(&key.pem, &key.place)?;
    let value = record_value(&public_key(&der, &key.place)?)?;
    Ok((der, DnsRecord { name, value }))
}

/// The private key in PEM text (PKCS#8, or PKCS#1 `RSA PRIVATE KEY`).
fn private_key(pem: &[u8], place: &KeyPlace) -> Result<PrivateKeyDer<'static>, DkimError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| DkimError::UnusableKey {
        place: place.clone(),
        reason: format!("not a PEM private key: {e}"),
    })
}

fn public_key(der: &PrivateKeyDer<'_>, place: &KeyPlace) -> Result<rsa::RsaPublicKey, DkimError> {
    let key =
        match der {
            PrivateKeyDer::Pkcs8(der) => rsa::RsaPrivateKey::from_pkcs8_der(der.secret_pkcs8_der())
                .map_err(|e| e.to_string()),
            PrivateKeyDer::Pkcs1(der) => rsa::RsaPrivateKey::from_pkcs1_der(der.secret_pkcs1_der())
                .map_err(|e| e.to_string()),
            _ => Err("not an RSA key".to_owned()),
        }
        .map_err(|reason| DkimError::UnusableKey {
            place: place.clone(),
            reason,
        })?;
    Ok(key.to_public_key())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::dkim::DkimKeys;

    /// The key files of a test's data directory.
    pub(in crate::dkim) fn files(dir: &tempfile::TempDir) -> KeyHome {
        KeyHome::Files(dir.path().to_owned())
    }

    /// A key file's path.
    pub(in crate::dkim) fn path_of(key: &DomainKey) -> &std::path::Path {
        match &key.place {
            KeyPlace::File(path) => path,
            other => panic!("not a file: {other}"),
        }
    }

    #[test]
    fn a_generated_key_is_private_listed_and_has_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let key = generate(&files(&dir), "Sender.Example", DEFAULT_SELECTOR).unwrap();
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
            key.place,
            KeyPlace::File(dir.path().join("dkim/sender.example.posthorn.pem"))
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path_of(&key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(list(&files(&dir)).unwrap(), vec![key]);
    }

    #[test]
    fn remove_deletes_a_domains_keys_and_an_existing_key_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let first = generate(&files(&dir), "sender.example", "old").unwrap();
        let again = generate(&files(&dir), "sender.example", "old").unwrap_err();
        assert!(matches!(again, DkimError::KeyExists { .. }), "{again:?}");
        assert!(again.to_string().contains("already has a key"), "{again}");
        assert_eq!(
            list(&files(&dir)).unwrap(),
            vec![first.clone()],
            "unchanged"
        );

        // Rotation: a newer key under a second selector becomes the active
        // one (made an hour older here, so no clock resolution matters);
        // `sign`'s tests check that the active key is the one that signs.
        let hour_ago = SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(path_of(&first))
            .and_then(|f| f.set_modified(hour_ago))
            .unwrap();
        generate(&files(&dir), "sender.example", "new").unwrap();
        generate(&files(&dir), "other.example", DEFAULT_SELECTOR).unwrap();
        let keys = list(&files(&dir)).unwrap();
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

        assert_eq!(
            remove(&files(&dir), "sender.example", Some("old")).unwrap(),
            1
        );
        assert_eq!(
            remove(&files(&dir), "sender.example", Some("old")).unwrap(),
            0
        );
        assert_eq!(remove(&files(&dir), "SENDER.example", None).unwrap(), 1);
        assert_eq!(remove(&files(&dir), "nobody.example", None).unwrap(), 0);
        let left: Vec<String> = list(&files(&dir))
            .unwrap()
            .into_iter()
            .map(|k| k.domain)
            .collect();
        assert_eq!(left, ["other.example"]);
        assert!(!path_of(&first).exists());
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
            let error = generate(&files(&dir), domain, DEFAULT_SELECTOR).unwrap_err();
            assert!(
                matches!(&error, DkimError::InvalidDomain(given) if given == domain),
                "{domain}: {error:?}"
            );
            assert!(
                error.to_string().contains("is not a domain name"),
                "{domain}: {error}"
            );
        }
        for selector in ["", "a.b", "-a", "a b", "../x", &"a".repeat(64)] {
            let error = generate(&files(&dir), "sender.example", selector).unwrap_err();
            assert!(
                matches!(&error, DkimError::InvalidSelector(given) if given == selector),
                "{selector}: {error:?}"
            );
            assert!(
                error.to_string().contains("is not a selector"),
                "{selector}: {error}"
            );
        }
        assert!(list(&files(&dir)).unwrap().is_empty());
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
        let error = DkimKeys::load(&files(&dir)).unwrap_err();
        assert!(
            matches!(&error, DkimError::UnusableKey { place: KeyPlace::File(path), .. } if path.ends_with("sender.example.posthorn.pem")),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("sender.example.posthorn.pem"),
            "{error}"
        );
        std::fs::remove_file(keys.join("sender.example.posthorn.pem")).unwrap();
        std::fs::write(keys.join("nodomain.pem"), "garbage").unwrap();
        let error = DkimKeys::load(&files(&dir)).unwrap_err();
        assert!(matches!(error, DkimError::MisnamedFile(_)), "{error:?}");
        assert!(
            error.to_string().contains("<domain>.<selector>.pem"),
            "{error}"
        );
    }
}
