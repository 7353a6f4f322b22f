//! The I/O around provider ingest that `posthorn-providers` leaves out:
//! SNS signing certificates (configured, or fetched and cached) and the
//! confirmation of SNS subscriptions. Every URL is checked by the pure
//! rules (`posthorn_providers::sns`) before anything is fetched.

use posthorn_core::config::IngestConfig;
use posthorn_providers::Refusal;
use posthorn_providers::sns::{self, SigningKey};
use std::collections::HashMap;
use std::sync::Mutex;

/// Most certificates kept in memory: SNS uses few, and a flood of
/// different (valid-looking) URLs must not grow memory without end.
const CACHE_LIMIT: usize = 64;

/// Gets a URL's body over HTTPS. Tests and offline servers have none.
#[async_trait::async_trait]
pub trait Fetcher: Send + Sync {
    /// The body of a `200` answer.
    async fn get(&self, url: &str) -> Result<Vec<u8>, String>;
    /// Whether the answer was `200` (its body unread: SNS's answer to a
    /// confirmation says nothing more).
    async fn visit(&self, url: &str) -> Result<(), String> {
        self.get(url).await.map(|_| ())
    }
}

/// SNS signing certificates: the configured file, else fetched (only from
/// the SNS certificate host pattern) and cached by URL.
pub struct SnsCertificates {
    file: Option<SigningKey>,
    fetcher: Option<Box<dyn Fetcher>>,
    cache: Mutex<HashMap<String, SigningKey>>,
}

impl SnsCertificates {
    /// From `[ingest]`: the certificate file is read (and must parse) now.
    pub fn from_config(config: &IngestConfig) -> Result<Self, String> {
        let file = match &config.sns_certificate_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("ingest.sns_certificate_file {}: {e}", path.display()))?;
                Some(
                    SigningKey::from_pem(&pem).map_err(|e| {
                        format!("ingest.sns_certificate_file {}: {e}", path.display())
                    })?,
                )
            }
            None => None,
        };
        let fetcher: Option<Box<dyn Fetcher>> = if config.fetch {
            Some(Box::new(HttpsFetcher))
        } else {
            None
        };
        Ok(Self {
            file,
            fetcher,
            cache: Mutex::default(),
        })
    }

    /// The key to verify a message signed with the certificate at `url`:
    /// the source's own certificate, else the configured file, else the
    /// cached or fetched one. The URL must be an SNS certificate URL in
    /// every case, so a forged message cannot name another.
    pub async fn key_for(
        &self,
        source_pem: Option<&str>,
        url: &str,
    ) -> Result<SigningKey, Refusal> {
        sns::check_certificate_url(url)?;
        if let Some(pem) = source_pem {
            return SigningKey::from_pem(pem.as_bytes());
        }
        if let Some(key) = &self.file {
            return Ok(key.clone());
        }
        if let Some(key) = self.cache.lock().ok().and_then(|c| c.get(url).cloned()) {
            return Ok(key);
        }
        let fetcher = self.fetcher.as_ref().ok_or_else(|| {
            Refusal::Certificate(
                "no certificate is configured and fetching is off ([ingest] fetch)".into(),
            )
        })?;
        let pem = fetcher.get(url).await.map_err(Refusal::Certificate)?;
        let key = SigningKey::from_pem(&pem)?;
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(url.to_owned(), key.clone());
        }
        Ok(key)
    }

    /// Confirms an SNS subscription by fetching its `SubscribeURL` (checked
    /// first). `Ok(false)`: fetching is off, the caller keeps the URL for
    /// an operator.
    pub async fn confirm(&self, subscribe_url: &str) -> Result<bool, Refusal> {
        sns::check_subscribe_url(subscribe_url)?;
        match &self.fetcher {
            None => Ok(false),
            Some(f) => f
                .visit(subscribe_url)
                .await
                .map(|_| true)
                .map_err(Refusal::Certificate),
        }
    }
}

/// HTTPS GET with the platform's trust store, over rustls: the only
/// outgoing HTTP Posthorn makes, to SNS hosts the caller has checked.
struct HttpsFetcher;

#[async_trait::async_trait]
impl Fetcher for HttpsFetcher {
    async fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        https_get(url, true).await
    }

    async fn visit(&self, url: &str) -> Result<(), String> {
        https_get(url, false).await.map(|_| ())
    }
}

/// Largest answer read (certificates are a few KB).
const MAX_ANSWER: usize = 64 * 1024;

async fn https_get(url: &str, need_body: bool) -> Result<Vec<u8>, String> {
    use rustls_platform_verifier::BuilderVerifierExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("https://").ok_or("not https")?;
    let (host, path) = rest.split_at(rest.find('/').ok_or("no path")?);
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_platform_verifier())
        .map_err(|e| e.to_string())?
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name =
        rustls_pki_types::ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
    let fetch = async {
        let tcp = tokio::net::TcpStream::connect((host, 443))
            .await
            .map_err(|e| e.to_string())?;
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: posthorn\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        tls.write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        let read = (&mut tls)
            .take(MAX_ANSWER as u64 + 1)
            .read_to_end(&mut answer)
            .await;
        match read {
            Ok(_) => {}
            // Many servers close without TLS close_notify; with
            // `Connection: close` the answer has ended all the same.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => {}
            Err(e) => return Err(e.to_string()),
        }
        Ok::<_, String>(answer)
    };
    let answer = tokio::time::timeout(std::time::Duration::from_secs(10), fetch)
        .await
        .map_err(|_| "timed out".to_owned())??;
    read_answer(&answer, need_body)
}

/// The body of an HTTP/1.1 answer read whole (`Connection: close`), when
/// its status is 200; chunked bodies are not read (SNS sends certificates
/// with a length).
fn read_answer(answer: &[u8], need_body: bool) -> Result<Vec<u8>, String> {
    if answer.len() > MAX_ANSWER {
        return Err("answer too large".into());
    }
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP header")?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let status_ok = head
        .lines()
        .next()
        .is_some_and(|l| l.split_whitespace().nth(1) == Some("200"));
    if !status_ok {
        return Err(format!("answered {:?}", head.lines().next().unwrap_or("")));
    }
    if !need_body {
        return Ok(Vec::new());
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err("chunked answers are not read".into());
    }
    Ok(answer[split + 4..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting(std::sync::Arc<AtomicUsize>);

    #[async_trait::async_trait]
    impl Fetcher for Counting {
        async fn get(&self, _url: &str) -> Result<Vec<u8>, String> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Err("offline".into())
        }
    }

    #[test]
    fn answers_are_read_by_status_and_framing() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody";
        assert_eq!(read_answer(ok, true).unwrap(), b"body");
        let not_found = b"HTTP/1.1 404 Not Found\r\n\r\nno";
        assert!(read_answer(not_found, true).unwrap_err().contains("404"));
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n";
        assert!(read_answer(chunked, true).is_err());
        // A confirmation only needs the 200.
        assert_eq!(read_answer(chunked, false).unwrap(), b"");
        assert!(read_answer(b"garbage", false).is_err());
        assert!(read_answer(&vec![b'x'; MAX_ANSWER + 1], false).is_err());
    }

    #[tokio::test]
    async fn no_url_outside_sns_reaches_the_fetcher() {
        let count = std::sync::Arc::new(AtomicUsize::new(0));
        let certs = SnsCertificates {
            file: None,
            fetcher: Some(Box::new(Counting(count.clone()))),
            cache: Mutex::default(),
        };
        for url in [
            "https://169.254.169.254/latest/meta-data/x.pem",
            "http://sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com.evil.example/x.pem",
        ] {
            assert!(matches!(
                certs.key_for(None, url).await,
                Err(Refusal::CertificateUrl(_))
            ));
        }
        assert!(
            certs
                .confirm("https://evil.example/?Action=ConfirmSubscription")
                .await
                .is_err()
        );
        assert_eq!(count.load(Ordering::SeqCst), 0);
        // An SNS URL is fetched (here: fails, and is not cached).
        assert!(
            certs
                .key_for(
                    None,
                    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-a.pem"
                )
                .await
                .is_err()
        );
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }
}
