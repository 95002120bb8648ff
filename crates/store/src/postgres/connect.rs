//! From a `postgres://` URL to a running [`PostgresStore`]: libpq's TLS options, rustls,
//! the pool, and the writer and LISTEN tasks.

use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::str::FromStr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::Config;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{listen, schema, writer, PgOptions, PostgresStore, Shared};
use crate::Notifier;

/// How long a call waits for a pooled connection or a new one.
const POOL_TIMEOUT: Duration = Duration::from_secs(5);

/// Why [`PostgresStore::connect`] failed; the message says what to do.
#[derive(Debug, thiserror::Error)]
#[error("{msg}")]
pub struct ConnectError {
    msg: String,
    retryable: bool,
}

/// A failure that trying again will not fix (bad URL, password, database, TLS set-up).
fn fatal(msg: String) -> ConnectError {
    ConnectError {
        msg,
        retryable: false,
    }
}

impl ConnectError {
    /// True when the server was unreachable, starting up or shutting down: a later attempt may
    /// succeed, while a wrong password or database name never will.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

/// Whether `e` says the server is not there (yet), rather than that the request is wrong.
fn transient(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        Some(c) => [
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::TOO_MANY_CONNECTIONS,
        ]
        .contains(c),
        None => !reason(e).contains("TLS"),
    }
}

/// `host:port` of the first server a config names (never the user or password).
fn target(cfg: &Config) -> String {
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    match cfg.get_hosts().first() {
        Some(Host::Tcp(h)) if h.contains(':') => format!("[{h}]:{port}"),
        Some(Host::Tcp(h)) => format!("{h}:{port}"),
        #[cfg(unix)]
        Some(Host::Unix(p)) => format!("{}/.s.PGSQL.{port}", p.display()),
        None => match cfg.get_hostaddrs().first() {
            Some(a) => format!("{a}:{port}"),
            None => format!("localhost:{port}"),
        },
    }
}

/// A one-line reason from a client error, server message included.
pub(super) fn reason(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(cause) = src {
                let c = cause.to_string();
                if !s.contains(&c) {
                    let _ = write!(s, ": {c}");
                }
                src = cause.source();
            }
            s
        }
    }
}

/// The advice that goes with a failed connection attempt.
fn advice(e: &tokio_postgres::Error) -> &'static str {
    if reason(e).contains("TLS") {
        return "check sslmode and sslrootcert in --store";
    }
    match e.code() {
        Some(c)
            if *c == SqlState::INVALID_PASSWORD
                || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
        {
            "check the user and password in --store"
        }
        Some(c) if *c == SqlState::INVALID_CATALOG_NAME => {
            "create the database (createdb NAME) or check the database name in --store"
        }
        _ => "is it running? check --store",
    }
}

/// Takes out of a `postgres://` URL what libpq accepts but tokio-postgres does not:
/// `sslrootcert=FILE` (returned) and the `allow`, `verify-ca`, `verify-full` ssl modes (mapped to
/// `disable`, and to `require`, which always verifies the certificate and host name).
fn libpq_compat(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None);
    };
    if !(base.starts_with("postgres://") || base.starts_with("postgresql://")) {
        return (url.to_string(), None);
    }
    let mut root = None;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("sslrootcert", v)) => root = Some(percent_decode(v)),
            Some(("sslmode", "verify-ca" | "verify-full")) => kept.push("sslmode=require"),
            Some(("sslmode", "allow")) => kept.push("sslmode=disable"),
            _ => kept.push(pair),
        }
    }
    if kept.is_empty() {
        (base.to_string(), root)
    } else {
        (format!("{base}?{}", kept.join("&")), root)
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, ..) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The rustls connector (only used with `sslmode=require`): the system's CAs, or only the
/// ones in `root` when given.
fn tls_connector(
    mode: SslMode,
    root: Option<&str>,
) -> std::result::Result<MakeRustlsConnect, ConnectError> {
    let mut roots = rustls::RootCertStore::empty();
    if mode == SslMode::Require {
        match root {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    fatal(format!("cannot read sslrootcert {path} from --store: {e}"))
                })?;
                for cert in rustls_pemfile::certs(&mut &pem[..]) {
                    let cert = cert.map_err(|e| {
                        fatal(format!("sslrootcert {path} is not PEM certificates: {e}"))
                    })?;
                    roots.add(cert).map_err(|e| {
                        fatal(format!("sslrootcert {path} holds a bad certificate: {e}"))
                    })?;
                }
                if roots.is_empty() {
                    return Err(fatal(format!(
                        "sslrootcert {path} from --store holds no certificate"
                    )));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(fatal(
                        "sslmode=require but no trusted CA certificates were found on this \
                         system: install ca-certificates or give sslrootcert=FILE in --store"
                            .into(),
                    ));
                }
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fatal(format!("cannot set up TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/db?options=-csearch_path%3Dname`),
    /// applies migrations, and starts the writer and LISTEN tasks (needs a tokio runtime).
    pub async fn connect(url: &str) -> std::result::Result<PostgresStore, ConnectError> {
        Self::connect_with(url, PgOptions::default()).await
    }

    /// [`PostgresStore::connect`] with the pool and writer sizes of `opts`.
    pub async fn connect_with(
        url: &str,
        opts: PgOptions,
    ) -> std::result::Result<PostgresStore, ConnectError> {
        let writers = opts.writers.max(1);
        let pool_size = opts.pool_size.max(writers + 2);
        let node = format!(
            "{}-{:08x}",
            std::process::id(),
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish() as u32
        );
        let (url, root) = libpq_compat(url);
        let mut cfg = Config::from_str(&url).map_err(|e| {
            fatal(format!(
                "--store is not a valid PostgreSQL URL ({e}); expected \
                 postgres://USER:PASSWORD@HOST:5432/DATABASE"
            ))
        })?;
        let tls = tls_connector(cfg.get_ssl_mode(), root.as_deref())?;
        if cfg.get_ssl_mode() == SslMode::Prefer {
            // `prefer` would try TLS and fail on a certificate it cannot verify (a self-signed
            // default one); like libpq's `prefer` without verification, stay in plain text.
            cfg.ssl_mode(SslMode::Disable);
        }
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(POOL_TIMEOUT);
        }
        if cfg.get_tcp_user_timeout().is_none() {
            cfg.tcp_user_timeout(Duration::from_secs(30));
        }
        if cfg.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
            // Notice a vanished server in about a minute, not the default two hours.
            cfg.keepalives_idle(Duration::from_secs(30));
        }
        if cfg.get_application_name().is_none() {
            cfg.application_name("meethook-relay");
        }
        let target = target(&cfg);
        let fail = |what: &str, e: &tokio_postgres::Error| ConnectError {
            msg: format!(
                "cannot {what} PostgreSQL at {target}: {} ({})",
                reason(e),
                advice(e)
            ),
            retryable: transient(e),
        };

        // One plain connection for the checks and migrations.
        let (mut client, conn) = cfg
            .connect(tls.clone())
            .await
            .map_err(|e| fail("connect to", &e))?;
        let driver = tokio::spawn(conn);
        let setup = async {
            let row = client
                .query_one(
                    "SELECT current_schema(), current_setting('synchronous_commit')",
                    &[],
                )
                .await
                .map_err(|e| fail("query", &e))?;
            let schema: Option<String> = row.get(0);
            let sync: String = row.get(1);
            if schema.is_none() {
                return Err(fatal(format!(
                    "PostgreSQL at {target}: no schema of the search_path exists; create it \
                     (CREATE SCHEMA name) or fix options=-csearch_path=… in --store"
                )));
            }
            schema::migrate(&mut client)
                .await
                .map_err(|e| fatal(format!("PostgreSQL at {target}: {e}")))?;
            let beat = listen::heartbeat(&client, &node, &[])
                .await
                .map_err(|e| fail("query", &e))?;
            Ok((sync, beat))
        };
        let setup = setup.await;
        drop(client);
        let _ = driver.await;
        let (sync, (nodes, remote_interest)) = setup?;
        if sync == "off" {
            // Acknowledged means durable: never let a server default weaken that.
            tracing::warn!(
                "PostgreSQL has synchronous_commit=off; meethook turns it on for its sessions"
            );
            let opts = cfg.get_options().unwrap_or_default().to_string();
            cfg.options(format!("{opts} -csynchronous_commit=on").trim().to_string());
        }

        let mgr = Manager::from_config(
            cfg.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(pool_size)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(POOL_TIMEOUT))
            .recycle_timeout(Some(POOL_TIMEOUT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| fatal(format!("cannot set up the PostgreSQL pool: {e}")))?;
        let shared = Arc::new(Shared {
            pool,
            notifier: Notifier::default(),
            node,
            nodes: AtomicUsize::new(nodes),
            heads_out: Default::default(),
            remote_interest: std::sync::Mutex::new(remote_interest),
            nudge: Default::default(),
        });
        let appends = writer::start(&shared, writers);
        tokio::spawn(listen::listen_loop(cfg, tls, Arc::downgrade(&shared)));
        Ok(PostgresStore {
            shared,
            appends,
            target,
        })
    }
}
