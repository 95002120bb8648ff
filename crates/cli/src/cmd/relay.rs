//! `meethook relay`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use meethook_relay::acme::{Acme, AcmeConfig, LETS_ENCRYPT};
use meethook_relay::tls::Tls;
use meethook_relay::{defaults, RelayConfig};
use meethook_store::{SqliteStore, Store};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// `meethook relay` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// HTTP address to listen on.
    #[arg(long, env = "MEETHOOK_LISTEN", default_value = defaults::LISTEN, value_parser = super::listen_addr)]
    pub listen: SocketAddr,
    /// Directory of the embedded SQLite store.
    #[arg(long, env = "MEETHOOK_DATA", default_value = "./meethook-data")]
    pub data: PathBuf,
    /// `postgres://…` to share one database between several relays.
    #[arg(long, env = "MEETHOOK_STORE", hide_env_values = true)]
    pub store: Option<String>,
    /// With --store: PostgreSQL connections this relay keeps (writers, reads, acks); the
    /// relays together must stay under the server's max_connections.
    #[arg(long, env = "MEETHOOK_STORE_POOL_SIZE", default_value_t = defaults::store_pool_size(), value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(3..=1000))]
    pub store_pool_size: usize,
    /// With --store: writer tasks committing appends, each for its share of the channels.
    #[arg(long, env = "MEETHOOK_STORE_WRITERS", default_value_t = defaults::store_writers(), value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1000))]
    pub store_writers: usize,
    /// With --store: how long to keep trying while PostgreSQL is unreachable or starting up
    /// (relays and their database often start together); 0 gives up at the first failure.
    #[arg(long, env = "MEETHOOK_STORE_WAIT", default_value = "30s", value_parser = super::duration)]
    pub store_wait: Duration,
    /// Token guarding the channel API (`Authorization: Bearer …`).
    #[arg(long, env = "MEETHOOK_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Base of the webhook URLs handed out [default: https://DOMAIN with --acme, else from
    /// --listen].
    #[arg(long, env = "MEETHOOK_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Serve HTTPS/WSS with this PEM certificate chain (reloaded on SIGHUP).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Get and renew a certificate for DOMAIN by ACME (Let's Encrypt unless --acme-directory),
    /// cached under --data; the CA checks DOMAIN:443 by TLS-ALPN-01, which must reach --listen.
    #[arg(
        long,
        env = "MEETHOOK_ACME",
        value_name = "DOMAIN",
        conflicts_with_all = ["tls_cert", "tls_key"]
    )]
    pub acme: Option<String>,
    /// Contact email for the ACME account (the CA's expiry and policy notices).
    #[arg(long, env = "MEETHOOK_ACME_EMAIL", requires = "acme")]
    pub acme_email: Option<String>,
    /// ACME directory URL (e.g. Let's Encrypt staging while trying things out).
    #[arg(long, env = "MEETHOOK_ACME_DIRECTORY", default_value = LETS_ENCRYPT, requires = "acme")]
    pub acme_directory: String,
    /// PEM CA certificate to trust for the ACME directory's own HTTPS (test CAs such as Pebble).
    #[arg(long, requires = "acme")]
    pub acme_ca_cert: Option<PathBuf>,
    /// Renew this long before expiry [default: when a third of the lifetime is left] (tests).
    #[arg(long, hide = true, value_parser = super::duration, requires = "acme")]
    pub acme_renew_before: Option<Duration>,
    /// Larger webhook bodies get 413.
    #[arg(long, default_value = defaults::MAX_BODY, value_parser = super::size)]
    pub max_body: usize,
    /// Time a client has to send its request headers (slowloris guard).
    #[arg(long, default_value = defaults::HEADER_TIMEOUT, value_parser = super::positive_duration)]
    pub header_timeout: Duration,
    /// Largest request head (request line + headers); larger ones get 431.
    #[arg(long, default_value = defaults::MAX_HEADER_SIZE, value_parser = super::size)]
    pub max_header_size: usize,
    /// Most HTTP connections at once; more get 503 (listener streams count separately).
    #[arg(long, default_value_t = defaults::MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Most listener streams at once; more get 503.
    #[arg(long, default_value_t = defaults::MAX_LISTENERS)]
    pub max_listeners: usize,
    /// Webhooks per second per channel; more get 429 with Retry-After (0 = unlimited).
    #[arg(long, default_value_t = defaults::RATE_LIMIT)]
    pub rate_limit: f64,
    /// Webhooks a channel may send in a burst before --rate-limit applies.
    #[arg(long, default_value_t = defaults::RATE_BURST)]
    pub rate_burst: f64,
    /// Failed authentications per minute per client IP before it gets 429 (0 = unlimited).
    #[arg(long, default_value_t = defaults::AUTH_FAIL_LIMIT)]
    pub auth_fail_limit: u32,
    /// How long delivered events stay in history.
    #[arg(long, default_value = defaults::RETENTION, value_parser = super::duration)]
    pub retention: Duration,
    /// How often expired events are pruned.
    #[arg(long, default_value = defaults::PRUNE_INTERVAL, value_parser = super::positive_duration, hide = true)]
    pub prune_interval: Duration,
    /// How often listeners are pinged.
    #[arg(long, default_value = defaults::PING_INTERVAL, value_parser = super::positive_duration)]
    pub ping_interval: Duration,
    /// A listener silent this long is dropped.
    #[arg(long, default_value = defaults::LIVENESS_TIMEOUT, value_parser = super::positive_duration)]
    pub liveness_timeout: Duration,
}

impl Args {
    /// The relay configuration for these flags, with `public_url` from the bound address.
    pub fn config(&self, bound: SocketAddr, tls: Option<Arc<Tls>>) -> RelayConfig {
        let scheme = if tls.is_some() { "https" } else { "http" };
        RelayConfig {
            public_url: self.public_url.clone().unwrap_or_else(|| match &self.acme {
                Some(domain) => format!("https://{domain}"),
                None => default_public_url(scheme, bound),
            }),
            tls,
            admin_token: self.admin_token.clone().filter(|t| !t.is_empty()),
            max_body: self.max_body,
            retention: self.retention,
            prune_interval: self.prune_interval,
            ping_interval: self.ping_interval,
            liveness_timeout: self.liveness_timeout,
            header_read_timeout: self.header_timeout,
            max_header_size: self.max_header_size,
            max_connections: self.max_connections.max(1),
            max_listeners: self.max_listeners.max(1),
            rate_limit: self.rate_limit,
            rate_burst: self.rate_burst,
            auth_fail_limit: self.auth_fail_limit,
            ..RelayConfig::default()
        }
    }
}

/// The base of webhook URLs when `--public-url` is not given: the bound address, or for an
/// all-interfaces bind (`0.0.0.0`, `::`) this machine's address on its default route.
pub fn default_public_url(scheme: &str, bound: SocketAddr) -> String {
    if !bound.ip().is_unspecified() {
        return format!("{scheme}://{bound}");
    }
    // Connecting a UDP socket sends nothing: it only asks the kernel which local address
    // would be used to reach a public address.
    let probe = |local: &str, remote: &str| {
        let s = std::net::UdpSocket::bind(local).ok()?;
        s.connect(remote).ok()?;
        s.local_addr().ok().map(|a| a.ip())
    };
    let ip = if bound.is_ipv4() {
        probe("0.0.0.0:0", "192.0.2.1:9")
    } else {
        probe("[::]:0", "[2001:db8::1]:9").or_else(|| probe("0.0.0.0:0", "192.0.2.1:9"))
    };
    match ip {
        Some(ip) => {
            let url = format!("{scheme}://{}", SocketAddr::new(ip, bound.port()));
            tracing::warn!(
                "webhook URLs use {url} (this machine's address on its default route): \
                 if senders reach this relay by another name, set --public-url"
            );
            url
        }
        None => {
            let url = format!("{scheme}://127.0.0.1:{}", bound.port());
            tracing::warn!(
                "no network route found: webhook URLs use {url}, which only this machine \
                 reaches; set --public-url to the URL senders reach"
            );
            url
        }
    }
}

/// Opens the store named by `--store` / `--data`; PostgreSQL gets `--store-wait` to come up.
pub async fn open_store(
    args: &Args,
    shutdown: &CancellationToken,
) -> anyhow::Result<Arc<dyn Store>> {
    let data = &args.data;
    if let Some(url) = args.store.as_deref() {
        // Only ever name the scheme: the URL may carry a password.
        let scheme = url.split_once("://").map_or("", |(s, _)| s);
        if !matches!(scheme, "postgres" | "postgresql") {
            bail!(
                "--store: expected a postgres://USER:PASSWORD@HOST:5432/DATABASE URL{}; drop \
                 --store to use the embedded SQLite store under --data",
                if scheme.is_empty() {
                    String::new()
                } else {
                    format!(", not {scheme}://…")
                }
            );
        }
        let opts = meethook_store::postgres::PgOptions {
            pool_size: args.store_pool_size,
            writers: args.store_writers,
        };
        let deadline = tokio::time::Instant::now() + args.store_wait;
        let mut pause = Duration::from_millis(200);
        let pg = loop {
            let err = match meethook_store::PostgresStore::connect_with(url, opts).await {
                Ok(pg) => break pg,
                Err(e) => e,
            };
            let now = tokio::time::Instant::now();
            if !err.is_retryable() || now >= deadline {
                if args.store_wait.is_zero() || !err.is_retryable() {
                    return Err(err.into());
                }
                bail!(
                    "{err}; gave up after --store-wait {}",
                    humantime::format_duration(args.store_wait)
                );
            }
            tracing::warn!(
                "{err}; retrying for up to {} more",
                humantime::format_duration(Duration::from_secs(
                    (deadline - now).as_secs_f64().ceil() as u64
                ))
            );
            tokio::select! {
                _ = tokio::time::sleep(pause.min(deadline - now)) => {}
                _ = shutdown.cancelled() => bail!("stopped while waiting for PostgreSQL"),
            }
            pause = (pause * 2).min(Duration::from_secs(2));
        };
        tracing::info!(server = pg.target(), "using the PostgreSQL store");
        return Ok(Arc::new(pg));
    }
    let s = SqliteStore::open(data)
        .with_context(|| format!("cannot open the store in {}", data.display()))?;
    Ok(Arc::new(s))
}

/// Binds `addr` with a message that says what to do when it is taken.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} (another relay running? pick another --listen)")
    })
}

pub async fn run(args: Args, shutdown: CancellationToken) -> anyhow::Result<()> {
    if args.acme.is_some() {
        return run_acme(args, shutdown).await;
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(Arc::new(Tls::load(c, k)?)),
        _ => None,
    };
    let store = open_store(&args, &shutdown).await?;
    let listener = bind(args.listen).await?;
    let bound = listener.local_addr()?;
    if let Some(t) = &tls {
        let t = t.clone();
        tokio::spawn(reload_on_sighup(move || t.reload(), shutdown.clone()));
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let cfg = args.config(bound, tls);
    if cfg.admin_token.is_none() {
        tracing::warn!("no --admin-token: the channel API is disabled");
    }
    println!("listening on {scheme}://{bound}");
    meethook_relay::run(cfg, listener, store, shutdown)
        .await
        .context("relay stopped")
}

/// `--acme`: serve as soon as bound (the CA validates over this very port), announce once a
/// certificate is in place (from the cache or a fresh order), then keep it renewed.
async fn run_acme(args: Args, shutdown: CancellationToken) -> anyhow::Result<()> {
    let acme = Arc::new(Acme::new(AcmeConfig {
        domain: args.acme.clone().unwrap_or_default(),
        email: args.acme_email.clone().filter(|e| !e.is_empty()),
        directory: args.acme_directory.clone(),
        directory_ca: args.acme_ca_cert.clone(),
        cache_dir: args.data.join("acme"),
        renew_before: args.acme_renew_before,
    })?);
    let cached = acme.load_cached()?;
    let store = open_store(&args, &shutdown).await?;
    let listener = bind(args.listen).await?;
    let bound = listener.local_addr()?;
    let cfg = args.config(bound, Some(acme.tls()));
    if cfg.admin_token.is_none() {
        tracing::warn!("no --admin-token: the channel API is disabled");
    }
    let relay = tokio::spawn(meethook_relay::run(cfg, listener, store, shutdown.clone()));
    // SIGHUP re-reads the cached certificate (e.g. one restored from a backup).
    let a = acme.clone();
    tokio::spawn(reload_on_sighup(
        move || a.load_cached().map(drop),
        shutdown.clone(),
    ));
    if !cached {
        tracing::info!(domain = args.acme.as_deref().unwrap_or_default(), directory = %args.acme_directory, "ordering a TLS certificate by ACME");
        let got = tokio::select! {
            r = acme.obtain() => r,
            _ = shutdown.cancelled() => Ok(()),
        };
        if let Err(e) = got {
            shutdown.cancel();
            let _ = relay.await;
            return Err(e.into());
        }
    }
    tokio::spawn(acme.renew(shutdown.clone()));
    if !shutdown.is_cancelled() {
        println!("listening on https://{bound}");
    }
    relay.await.context("relay task")?.context("relay stopped")
}

/// Re-reads the certificate on every SIGHUP; established connections keep theirs.
async fn reload_on_sighup<E: std::fmt::Display>(
    reload: impl Fn() -> Result<(), E> + Send + 'static,
    shutdown: CancellationToken,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = hup.recv() => match reload() {
                    Ok(()) => tracing::info!("TLS certificate reloaded"),
                    Err(e) => tracing::error!(error = %e, "TLS reload failed; keeping the previous certificate"),
                },
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (reload, shutdown);
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        relay: Args,
    }

    #[test]
    fn no_flags_give_the_relay_defaults() {
        let args = Cmd::parse_from(["relay"]).relay;
        let bound = args.listen;
        // Destructured in full, so that a new setting has to be compared here too.
        let RelayConfig {
            public_url,
            admin_token,
            max_body,
            retention,
            prune_interval,
            ping_interval,
            liveness_timeout,
            max_window,
            max_inflight_bytes,
            header_read_timeout,
            body_timeout,
            shutdown_grace,
            tls,
            max_connections,
            max_listeners,
            max_header_size,
            rate_limit,
            rate_burst,
            auth_fail_limit,
        } = args.config(bound, None);
        let d = RelayConfig::default();
        assert_eq!(public_url, d.public_url);
        assert_eq!(admin_token, d.admin_token);
        assert_eq!(max_body, d.max_body);
        assert_eq!(retention, d.retention);
        assert_eq!(prune_interval, d.prune_interval);
        assert_eq!(ping_interval, d.ping_interval);
        assert_eq!(liveness_timeout, d.liveness_timeout);
        assert_eq!(max_window, d.max_window);
        assert_eq!(max_inflight_bytes, d.max_inflight_bytes);
        assert_eq!(header_read_timeout, d.header_read_timeout);
        assert_eq!(body_timeout, d.body_timeout);
        assert_eq!(shutdown_grace, d.shutdown_grace);
        assert!(tls.is_none() && d.tls.is_none());
        assert_eq!(max_connections, d.max_connections);
        assert_eq!(max_listeners, d.max_listeners);
        assert_eq!(max_header_size, d.max_header_size);
        assert_eq!(rate_limit, d.rate_limit);
        assert_eq!(rate_burst, d.rate_burst);
        assert_eq!(auth_fail_limit, d.auth_fail_limit);
    }
}
