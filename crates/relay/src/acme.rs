//! Certificates from an ACME CA (Let's Encrypt by default), validated by TLS-ALPN-01 on the
//! relay's own TLS port, cached under the data directory (reused on restart without asking
//! the CA) and renewed before expiry; renewal swaps the certificate for new handshakes only.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use crate::tls::{Tls, TlsError};

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// Longest an order may take, all requests and polling included.
const ORDER_TIMEOUT: Duration = Duration::from_secs(300);

/// Where to get the certificate and how to keep it.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// The DNS name the certificate is for.
    pub domain: String,
    /// Contact address given to the CA (expiry and policy notices).
    pub email: Option<String>,
    /// The ACME directory URL.
    pub directory: String,
    /// PEM CA certificate that the directory's own HTTPS is signed by (test CAs like Pebble).
    pub directory_ca: Option<PathBuf>,
    /// Where the account key and certificates are cached.
    pub cache_dir: PathBuf,
    /// Renew this long before expiry; `None`: when a third of the lifetime is left.
    pub renew_before: Option<Duration>,
}

/// Why a certificate could not be had from the CA or the cache.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// `--acme` names no usable DNS name.
    #[error("--acme {0:?} is not a DNS name (expected something like hooks.example.com)")]
    Domain(String),
    /// The cache directory or a file in it could not be used.
    #[error("ACME cache {}: {error}", path.display())]
    Cache {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The directory could not be reached or refused the account.
    #[error(
        "ACME account at {url}: {}; is the directory URL right and reachable?",
        chain(error)
    )]
    Account {
        /// The directory URL.
        url: String,
        /// What the ACME client reported.
        error: instant_acme::Error,
    },
    /// The order did not end in a certificate.
    #[error(
        "ACME order for {domain} failed: {detail}; is DNS for {domain} pointing at this machine \
         and its port 443 reachable from the internet (TLS-ALPN-01 validation)?"
    )]
    Order {
        /// The domain ordered.
        domain: String,
        /// What went wrong, with the CA's own words when it gave any.
        detail: String,
    },
    /// The certificate (issued or cached) could not be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Keeps a certificate for one domain in a [`Tls`].
pub struct Acme {
    cfg: AcmeConfig,
    tls: Arc<Tls>,
    dir: PathBuf,
    /// `(not_before, not_after)` of the certificate in use.
    validity: Mutex<Option<(SystemTime, SystemTime)>>,
}

impl std::fmt::Debug for Acme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acme")
            .field("domain", &self.cfg.domain)
            .field("directory", &self.cfg.directory)
            .finish_non_exhaustive()
    }
}

impl Acme {
    /// Checks the domain and prepares the cache directory; contacts nobody.
    pub fn new(mut cfg: AcmeConfig) -> Result<Acme, AcmeError> {
        cfg.domain = cfg.domain.trim_end_matches('.').to_ascii_lowercase();
        let ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
        if cfg.domain.is_empty() || !cfg.domain.chars().all(ok) || cfg.domain.contains("..") {
            return Err(AcmeError::Domain(cfg.domain));
        }
        // One subdirectory per CA: a staging certificate never stands in for a real one.
        let dir = cfg.cache_dir.join(slug(&cfg.directory));
        create_private_dir(&dir)?;
        Ok(Acme {
            tls: Arc::new(Tls::empty()?),
            dir,
            cfg,
            validity: Mutex::new(None),
        })
    }

    /// The TLS state to serve with; it has no certificate until [`Acme::load_cached`] or
    /// [`Acme::obtain`] succeeds.
    pub fn tls(&self) -> Arc<Tls> {
        self.tls.clone()
    }

    fn cert_path(&self) -> PathBuf {
        self.dir.join(format!("{}.pem", self.cfg.domain))
    }

    /// Serves the cached certificate if there is one that has not expired; `false` otherwise.
    pub fn load_cached(&self) -> Result<bool, AcmeError> {
        let path = self.cert_path();
        let pem = match std::fs::read(&path) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(error) => return Err(AcmeError::Cache { path, error }),
        };
        let what = path.display().to_string();
        let ck = crate::tls::parse_pem(&pem, &pem, &what, &what)?;
        let info = CertInfo::of(&ck)?;
        if info.not_after <= SystemTime::now() {
            tracing::warn!(domain = %self.cfg.domain, not_after = %info.not_after_text, "cached certificate has expired; ordering a new one");
            return Ok(false);
        }
        self.install(ck, &info);
        tracing::info!(domain = %self.cfg.domain, serial = %info.serial, not_after = %info.not_after_text, path = %what, "TLS certificate loaded from the ACME cache");
        Ok(true)
    }

    /// Orders a certificate, serves it to new handshakes and caches it.
    pub async fn obtain(&self) -> Result<(), AcmeError> {
        let renewing = self.validity.lock().expect("acme lock").is_some();
        let res = tokio::time::timeout(ORDER_TIMEOUT, self.order()).await;
        self.tls.set_challenge(&self.cfg.domain, None);
        let (chain_pem, key_pem) = res.map_err(|_| self.order_error("timed out"))??;
        let ck = crate::tls::parse_pem(
            chain_pem.as_bytes(),
            key_pem.as_bytes(),
            "the issued certificate",
            "the generated key",
        )?;
        let info = CertInfo::of(&ck)?;
        let path = self.cert_path();
        write_private(&path, format!("{chain_pem}{key_pem}").as_bytes())?;
        self.install(ck, &info);
        let what = if renewing { "renewed" } else { "obtained" };
        tracing::info!(domain = %self.cfg.domain, serial = %info.serial, not_after = %info.not_after_text, directory = %self.cfg.directory, "TLS certificate {what} by ACME");
        Ok(())
    }

    /// Renews before expiry until `shutdown`; failures are logged, retried with backoff, and
    /// the current certificate stays in use meanwhile.
    pub async fn renew(self: Arc<Self>, shutdown: CancellationToken) {
        let mut failures = 0u32;
        loop {
            let wait = if failures == 0 {
                self.until_renewal()
            } else {
                backoff(failures)
            };
            // Re-check hourly: the wall clock jumps over a suspend, tokio's sleep does not.
            let wait = wait.min(Duration::from_secs(3600));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            if failures == 0 && !self.until_renewal().is_zero() {
                continue;
            }
            match self.obtain().await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::error!(error = %e, retry_in = ?backoff(failures), "TLS certificate renewal failed; the current certificate stays in use");
                }
            }
        }
    }

    /// Time left until the certificate in use is due for renewal.
    fn until_renewal(&self) -> Duration {
        let Some((not_before, not_after)) = *self.validity.lock().expect("acme lock") else {
            return Duration::ZERO;
        };
        let lifetime = not_after.duration_since(not_before).unwrap_or_default();
        let before = self.cfg.renew_before.unwrap_or(lifetime / 3);
        let due = not_after
            .checked_sub(before)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        due.duration_since(SystemTime::now()).unwrap_or_default()
    }

    fn install(&self, ck: Arc<CertifiedKey>, info: &CertInfo) {
        self.tls.set(ck);
        *self.validity.lock().expect("acme lock") = Some((info.not_before, info.not_after));
    }

    fn order_error(&self, detail: impl std::fmt::Display) -> AcmeError {
        AcmeError::Order {
            domain: self.cfg.domain.clone(),
            detail: detail.to_string(),
        }
    }

    /// The cached account, or a new one (then cached).
    async fn account(&self) -> Result<Account, AcmeError> {
        let url = self.cfg.directory.clone();
        let err = |error| AcmeError::Account {
            url: url.clone(),
            error,
        };
        let builder = || match &self.cfg.directory_ca {
            Some(ca) => Account::builder_with_root(ca),
            None => Account::builder(),
        };
        let path = self.dir.join("account.json");
        match std::fs::read(&path) {
            Ok(json) => {
                let creds: AccountCredentials =
                    serde_json::from_slice(&json).map_err(|e| AcmeError::Cache {
                        path: path.clone(),
                        error: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                    })?;
                builder()
                    .map_err(err)?
                    .from_credentials(creds)
                    .await
                    .map_err(err)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let contact = self.cfg.email.as_ref().map(|e| format!("mailto:{e}"));
                let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
                let new = NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                };
                let (account, creds) = builder()
                    .map_err(err)?
                    .create(&new, url.clone(), None)
                    .await
                    .map_err(err)?;
                let json = serde_json::to_vec(&creds).expect("credentials serialize");
                write_private(&path, &json)?;
                tracing::info!(directory = %url, "ACME account created");
                Ok(account)
            }
            Err(error) => Err(AcmeError::Cache { path, error }),
        }
    }

    /// Runs one order to the end: `(PEM chain, PEM key)`.
    async fn order(&self) -> Result<(String, String), AcmeError> {
        let account = self.account().await?;
        let domain = self.cfg.domain.clone();
        let ids = [Identifier::Dns(domain.clone())];
        let oerr = |e: instant_acme::Error| self.order_error(chain(&e));
        let mut order = account
            .new_order(&NewOrder::new(&ids))
            .await
            .map_err(oerr)?;
        let mut authzs = order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = authz.map_err(oerr)?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(self.order_error(format!("authorization is {other:?}"))),
            }
            let mut challenge = authz
                .challenge(ChallengeType::TlsAlpn01)
                .ok_or_else(|| self.order_error("the CA offers no TLS-ALPN-01 challenge"))?;
            let cert = challenge_cert(&domain, challenge.key_authorization().digest().as_ref())?;
            self.tls.set_challenge(&domain, Some(cert));
            challenge.set_ready().await.map_err(oerr)?;
        }
        let poll = RetryPolicy::new().timeout(Duration::from_secs(120));
        let status = order.poll_ready(&poll).await.map_err(oerr)?;
        if status != OrderStatus::Ready {
            return Err(self.order_error(order_problem(&mut order, status).await));
        }
        let key_pem = order.finalize().await.map_err(oerr)?;
        let chain_pem = order.poll_certificate(&poll).await.map_err(oerr)?;
        Ok((chain_pem, key_pem))
    }
}

/// `error` and its causes, `: `-separated (HTTP client errors keep the useful part in causes).
fn chain(error: &dyn std::error::Error) -> String {
    let mut s = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s = format!("{s}: {text}");
        }
        cause = c.source();
    }
    s
}

/// What the CA said about a failed order: the order's or a challenge's problem.
async fn order_problem(order: &mut instant_acme::Order, status: OrderStatus) -> String {
    if let Some(p) = &order.state().error {
        return p.to_string();
    }
    let mut authzs = order.authorizations();
    while let Some(Ok(mut authz)) = authzs.next().await {
        if let Ok(state) = authz.refresh().await {
            if let Some(p) = state.challenges.iter().find_map(|c| c.error.as_ref()) {
                return p.to_string();
            }
        }
    }
    format!("order is {status:?}")
}

/// The self-signed certificate that proves control of `domain` (RFC 8737).
fn challenge_cert(domain: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, AcmeError> {
    let tls = |e: rcgen::Error| TlsError(format!("TLS-ALPN-01 certificate: {e}"));
    let mut params = rcgen::CertificateParams::new(vec![domain.to_string()]).map_err(tls)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(tls)?;
    let cert = params.self_signed(&key).map_err(tls)?;
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signer = crate::tls::provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| TlsError(format!("TLS-ALPN-01 key: {e}")))?;
    // Not `from_der`: its key check parses the certificate with webpki, which refuses the
    // critical acmeIdentifier extension that the validator looks for.
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signer,
    )))
}

/// The parts of a certificate that decide renewal and go into logs.
struct CertInfo {
    not_before: SystemTime,
    not_after: SystemTime,
    not_after_text: String,
    serial: String,
}

impl CertInfo {
    fn of(ck: &CertifiedKey) -> Result<CertInfo, TlsError> {
        let der = ck.end_entity_cert().map_err(|e| TlsError(e.to_string()))?;
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| TlsError(format!("unreadable certificate: {e}")))?;
        let time = |t: x509_parser::time::ASN1Time| {
            SystemTime::UNIX_EPOCH
                + Duration::from_secs(u64::try_from(t.timestamp()).unwrap_or_default())
        };
        let v = cert.validity();
        Ok(CertInfo {
            not_before: time(v.not_before),
            not_after: time(v.not_after),
            not_after_text: v.not_after.to_string(),
            serial: cert.raw_serial_as_string(),
        })
    }
}

/// 10 s, 20 s, 40 s … up to an hour.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(10u64.saturating_mul(1 << failures.saturating_sub(1).min(9)))
        .min(Duration::from_secs(3600))
}

/// A directory name for a directory URL: `acme-v02.api.letsencrypt.org_directory`.
fn slug(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let s: String = rest
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    s.trim_matches('_').to_string()
}

fn create_private_dir(dir: &Path) -> Result<(), AcmeError> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(|error| AcmeError::Cache {
        path: dir.to_path_buf(),
        error,
    })
}

/// Writes `bytes` readable by the owner only, atomically (temp file, fsync, rename).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AcmeError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let res = (|| {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    res.map_err(|error| AcmeError::Cache {
        path: path.to_path_buf(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_is_a_plain_name() {
        assert_eq!(slug(LETS_ENCRYPT), "acme-v02.api.letsencrypt.org_directory");
        assert_eq!(slug("https://127.0.0.1:14000/dir"), "127.0.0.1_14000_dir");
    }

    #[test]
    fn backoff_grows_to_an_hour() {
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(2), Duration::from_secs(20));
        assert_eq!(backoff(50), Duration::from_secs(3600));
    }

    #[test]
    fn rejects_names_that_are_not_dns_names() {
        for bad in ["", "a/../b.com", "a..b", "hooks example.com"] {
            let cfg = AcmeConfig {
                domain: bad.into(),
                email: None,
                directory: LETS_ENCRYPT.into(),
                directory_ca: None,
                cache_dir: std::env::temp_dir().join("meethook-acme-unused"),
                renew_before: None,
            };
            assert!(matches!(Acme::new(cfg), Err(AcmeError::Domain(_))), "{bad}");
        }
    }
}
