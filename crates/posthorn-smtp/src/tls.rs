//! TLS for SMTP: a stream that starts plain and may be upgraded by STARTTLS,
//! and the client configuration used for it.
//!
//! Delivery to MX hosts uses opportunistic TLS the way MTAs do (RFC 7435):
//! encrypt whenever offered, without checking the certificate, because MX
//! certificates very often do not match and a refusal would push mail back to
//! plain text. What was negotiated (version and cipher) is recorded on every
//! `delivered` event.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A stream (TCP unless said otherwise), plain or after STARTTLS. Generic
/// so that the client's STARTTLS runs over an in-memory pipe in tests,
/// with the same rustls handshake as over TCP.
pub enum MaybeTls<S = TcpStream> {
    Plain(S),
    Tls(Box<TlsStream<S>>),
}

/// The negotiated protocol, as recorded on events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    pub version: String,
    pub cipher: String,
}

impl<S> MaybeTls<S> {
    pub fn tls_info(&self) -> Option<TlsInfo> {
        let MaybeTls::Tls(stream) = self else {
            return None;
        };
        let (_, conn) = stream.get_ref();
        Some(TlsInfo {
            version: conn
                .protocol_version()
                .map_or_else(|| "unknown".into(), |v| format!("{v:?}").replace('_', ".")),
            cipher: conn
                .negotiated_cipher_suite()
                .map_or_else(|| "unknown".into(), |c| format!("{:?}", c.suite())),
        })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> MaybeTls<S> {
    /// Upgrades a plain stream (after the server said 220 to STARTTLS).
    pub async fn upgrade(self, server_name: &str) -> io::Result<Self> {
        let MaybeTls::Plain(plain) = self else {
            return Err(io::Error::other("the connection is already encrypted"));
        };
        let name = ServerName::try_from(server_name.to_owned())
            .or_else(|_| ServerName::try_from("localhost".to_owned()))
            .map_err(io::Error::other)?;
        let connector = tokio_rustls::TlsConnector::from(opportunistic_config());
        Ok(MaybeTls::Tls(Box::new(
            connector.connect(name, plain).await?,
        )))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for MaybeTls<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MaybeTls<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Client configuration for opportunistic TLS: any certificate is accepted,
/// signatures on the handshake are still checked.
pub fn opportunistic_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = provider();
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Why a server certificate could not be set up (the operator's files, or
/// making a self-signed one). Each message includes the library's words.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("reading the certificate: {0}")]
    Certificate(String),
    #[error("the certificate file holds no certificate")]
    NoCertificate,
    #[error("reading the key: {0}")]
    Key(String),
    #[error("certificate and key do not fit: {0}")]
    Mismatch(String),
    /// The TLS library refused its own defaults or could not make a
    /// certificate: not the operator's doing.
    #[error("{0}")]
    Library(String),
}

/// A server certificate and key, ready to accept STARTTLS.
#[derive(Clone)]
pub struct ServerTlsConfig(Arc<rustls::ServerConfig>);

impl ServerTlsConfig {
    /// From PEM text: a certificate chain and its private key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsSetupError> {
        use rustls::pki_types::PrivateKeyDer;
        use rustls::pki_types::pem::PemObject;
        let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsSetupError::Certificate(e.to_string()))?;
        if certs.is_empty() {
            return Err(TlsSetupError::NoCertificate);
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| TlsSetupError::Key(e.to_string()))?;
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError::Library(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| TlsSetupError::Mismatch(e.to_string()))?;
        Ok(Self(Arc::new(config)))
    }

    /// A self-signed certificate for `names`: (config, certificate PEM, key PEM).
    pub fn self_signed(names: &[String]) -> Result<(Self, String, String), TlsSetupError> {
        let certified = rcgen::generate_simple_self_signed(names.to_vec())
            .map_err(|e| TlsSetupError::Library(e.to_string()))?;
        let (cert, key) = (certified.cert.pem(), certified.signing_key.serialize_pem());
        Ok((Self::from_pem(&cert, &key)?, cert, key))
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.0.clone())
    }
}
