//! HTTPS/WSS with rustls. The certificate for new handshakes is swapped atomically (SIGHUP
//! reload, ACME renewal) without touching established connections.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use rustls::server::{Acceptor, ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

/// ALPN protocol of TLS-ALPN-01 validation handshakes (RFC 8737).
const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Serves HTTPS/WSS: a certificate from PEM files or from ACME, swappable at run time.
pub struct Tls {
    files: Option<(PathBuf, PathBuf)>,
    current: Arc<Current>,
    challenges: Arc<Challenges>,
    config: Arc<ServerConfig>,
    challenge_config: Arc<ServerConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// Why the certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
#[error("TLS: {0}")]
pub struct TlsError(pub(crate) String);

/// The certificate for the next handshake; `None` until ACME has issued one.
#[derive(Debug, Default)]
struct Current(RwLock<Option<Arc<CertifiedKey>>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().expect("tls lock").clone()
    }
}

/// TLS-ALPN-01 challenge certificates by domain, present only while an order is validated.
#[derive(Debug, Default)]
struct Challenges(Mutex<HashMap<String, Arc<CertifiedKey>>>);

impl ResolvesServerCert for Challenges {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?;
        self.0.lock().expect("tls lock").get(name).cloned()
    }
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    alpn: Vec<Vec<u8>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = alpn;
    Ok(Arc::new(cfg))
}

/// Builds a signing certificate from a DER chain and key; checks they belong together.
pub(crate) fn certified_key(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let ck = CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| TlsError(format!("certificate and key do not fit together: {e}")))?;
    Ok(Arc::new(ck))
}

/// Parses a PEM chain and a PEM private key; `what` names their origin in errors.
pub(crate) fn parse_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_what: &str,
    key_what: &str,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError(format!("bad PEM in {cert_what}: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError(format!("{cert_what} holds no certificate")));
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| TlsError(format!("bad PEM in {key_what}: {e}")))?
        .ok_or_else(|| TlsError(format!("{key_what} holds no private key")))?;
    certified_key(certs, key)
}

fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let read = |p: &Path, what: &str| {
        std::fs::read(p).map_err(|e| TlsError(format!("cannot read {what} {}: {e}", p.display())))
    };
    let cert_pem = read(cert, "--tls-cert")?;
    let key_pem = read(key, "--tls-key")?;
    parse_pem(
        &cert_pem,
        &key_pem,
        &cert.display().to_string(),
        &key.display().to_string(),
    )
}

impl Tls {
    fn with(
        files: Option<(PathBuf, PathBuf)>,
        cert: Option<Arc<CertifiedKey>>,
    ) -> Result<Tls, TlsError> {
        let current = Arc::new(Current(RwLock::new(cert)));
        let challenges = Arc::new(Challenges::default());
        Ok(Tls {
            files,
            config: server_config(current.clone(), Vec::new())?,
            challenge_config: server_config(challenges.clone(), vec![ACME_TLS_ALPN.to_vec()])?,
            current,
            challenges,
        })
    }

    /// Loads `cert` (PEM chain) and `key` (PEM private key).
    pub fn load(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        let ck = load(cert, key)?;
        Tls::with(Some((cert.to_path_buf(), key.to_path_buf())), Some(ck))
    }

    /// No certificate yet (ACME fills it in); handshakes fail until then.
    pub(crate) fn empty() -> Result<Tls, TlsError> {
        Tls::with(None, None)
    }

    /// Re-reads the files; on error the previous certificate stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let Some((cert, key)) = &self.files else {
            return Err(TlsError("no --tls-cert/--tls-key to reload".into()));
        };
        self.set(load(cert, key)?);
        Ok(())
    }

    /// Serves `cert` to new handshakes from now on.
    pub(crate) fn set(&self, cert: Arc<CertifiedKey>) {
        *self.current.0.write().expect("tls lock") = Some(cert);
    }

    /// Answers TLS-ALPN-01 validation for `domain` with `cert` (`None` withdraws it).
    pub(crate) fn set_challenge(&self, domain: &str, cert: Option<Arc<CertifiedKey>>) {
        let mut map = self.challenges.0.lock().expect("tls lock");
        match cert {
            Some(c) => map.insert(domain.to_string(), c),
            None => map.remove(domain),
        };
    }

    /// Completes the handshake on `io`; `None` for an ACME validation handshake, which carries
    /// no HTTP and is closed right after.
    pub(crate) async fn accept(
        &self,
        io: TcpStream,
    ) -> std::io::Result<Option<TlsStream<TcpStream>>> {
        let start = LazyConfigAcceptor::new(Acceptor::default(), io).await?;
        let hello = start.client_hello();
        let acme = hello
            .alpn()
            .is_some_and(|mut protos| protos.any(|p| p == ACME_TLS_ALPN));
        if acme {
            start.into_stream(self.challenge_config.clone()).await?;
            return Ok(None);
        }
        Ok(Some(start.into_stream(self.config.clone()).await?))
    }
}
