//! The key files in the data directory: `DATA_DIR/dkim/<domain>.<selector>.pem`,
//! one RSA 2048 private key each (PKCS#8 PEM, readable only by its owner).
//! Generating, listing and removing them, and which key of a domain is its
//! active one. The file name is the only index, so domains and selectors
//! are normalised before they become part of a path.

use super::DkimError;
use super::records::{DnsRecord, record_name, record_value};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The directory under the data directory that holds the keys.
pub const KEY_DIR: &str = "dkim";
/// The selector `domains add` uses unless told otherwise.
pub const DEFAULT_SELECTOR: &str = "posthorn";
/// RSA modulus size of generated keys: what RFC 8301 recommends and every
/// verifier accepts (Ed25519 is not yet verified everywhere).
pub const KEY_BITS: usize = 2048;

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

/// Generates a key for `domain` with `selector` and writes it to the data
/// directory. An existing key is never replaced: its record may be
/// published and in use.
pub fn generate(data_dir: &Path, domain: &str, selector: &str) -> Result<DomainKey, DkimError> {
    let domain = normalize_domain(domain)?;
    let selector = normalize_selector(selector)?;
    let name = record_name(&domain, &selector)?;
    let dir = data_dir.join(KEY_DIR);
    create_private_dir(&dir).map_err(DkimError::io("creating", &dir))?;
    let path = dir.join(format!("{domain}.{selector}.pem"));
    if path.exists() {
        return Err(DkimError::KeyExists {
            domain,
            selector,
            path,
        });
    }
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
    write_new_private_file(&path, pem.as_bytes()).map_err(DkimError::io("writing", &path))?;
    Ok(DomainKey {
        domain,
        selector,
        path,
        record: DnsRecord { name, value },
        active: true,
    })
}

/// Every key in the data directory, by domain and selector.
pub fn list(data_dir: &Path) -> Result<Vec<DomainKey>, DkimError> {
    scan(data_dir)
}

/// Removes `domain`'s keys (only the one with `selector`, if given) and
/// returns how many were removed.
pub fn remove(data_dir: &Path, domain: &str, selector: Option<&str>) -> Result<usize, DkimError> {
    let domain = normalize_domain(domain)?;
    let selector = selector.map(normalize_selector).transpose()?;
    let mut removed = 0;
    for file in scan(data_dir)? {
        if file.domain == domain && selector.as_ref().is_none_or(|s| *s == file.selector) {
            std::fs::remove_file(&file.path).map_err(DkimError::io("removing", &file.path))?;
            removed += 1;
        }
    }
    Ok(removed)
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

/// The key files in `DATA_DIR/dkim`, sorted, each with its record and
/// whether it is its domain's active (newest) key.
pub(super) fn scan(data_dir: &Path) -> Result<Vec<DomainKey>, DkimError> {
    let dir = data_dir.join(KEY_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(DkimError::io("reading", &dir)(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(DkimError::io("reading", &dir))?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = file_name.strip_suffix(".pem") else {
            continue;
        };
        if file_name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let misnamed = || DkimError::MisnamedFile(path.clone());
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
pub(super) fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, DkimError> {
    let pem = std::fs::read(path).map_err(DkimError::io("reading", path))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| DkimError::UnusableKey {
        path: path.to_owned(),
        reason: format!("not a PEM private key: {e}"),
    })
}

fn public_key(path: &Path) -> Result<rsa::RsaPublicKey, DkimError> {
    let key =
        match read_private_key(path)? {
            PrivateKeyDer::Pkcs8(der) => rsa::RsaPrivateKey::from_pkcs8_der(der.secret_pkcs8_der())
                .map_err(|e| e.to_string()),
            PrivateKeyDer::Pkcs1(der) => rsa::RsaPrivateKey::from_pkcs1_der(der.secret_pkcs1_der())
                .map_err(|e| e.to_string()),
            _ => Err("not an RSA key".to_owned()),
        }
        .map_err(|reason| DkimError::UnusableKey {
            path: path.to_owned(),
            reason,
        })?;
    Ok(key.to_public_key())
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
    use crate::dkim::DkimKeys;

    #[test]
    fn a_generated_key_is_private_listed_and_has_its_record() {
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
        assert_eq!(list(dir.path()).unwrap(), vec![key]);
    }

    #[test]
    fn remove_deletes_a_domains_keys_and_an_existing_key_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let first = generate(dir.path(), "sender.example", "old").unwrap();
        let again = generate(dir.path(), "sender.example", "old").unwrap_err();
        assert!(matches!(again, DkimError::KeyExists { .. }), "{again:?}");
        assert!(again.to_string().contains("already has a key"), "{again}");
        assert_eq!(list(dir.path()).unwrap(), vec![first.clone()], "unchanged");

        // Rotation: a newer key under a second selector becomes the active
        // one (made an hour older here, so no clock resolution matters);
        // `sign`'s tests check that the active key is the one that signs.
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
            let error = generate(dir.path(), "sender.example", selector).unwrap_err();
            assert!(
                matches!(&error, DkimError::InvalidSelector(given) if given == selector),
                "{selector}: {error:?}"
            );
            assert!(
                error.to_string().contains("is not a selector"),
                "{selector}: {error}"
            );
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
        assert!(
            matches!(&error, DkimError::UnusableKey { path, .. } if path.ends_with("sender.example.posthorn.pem")),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("sender.example.posthorn.pem"),
            "{error}"
        );
        std::fs::remove_file(keys.join("sender.example.posthorn.pem")).unwrap();
        std::fs::write(keys.join("nodomain.pem"), "garbage").unwrap();
        let error = DkimKeys::load(dir.path()).unwrap_err();
        assert!(matches!(error, DkimError::MisnamedFile(_)), "{error:?}");
        assert!(
            error.to_string().contains("<domain>.<selector>.pem"),
            "{error}"
        );
    }
}
