//! PostgreSQL for tests: a throwaway schema per test in the database named by
//! `MEETHOOK_TEST_POSTGRES_URL`, selected with `options=-csearch_path=…`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use meethook_store::postgres::tokio_postgres;

use crate::fault::random;

/// The PostgreSQL server to test against, or `None` (with a note naming `what` is skipped).
pub fn postgres_url(what: &str) -> Option<String> {
    match std::env::var("MEETHOOK_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            eprintln!("note: MEETHOOK_TEST_POSTGRES_URL is unset; {what} skipped");
            // scripts/test counts these and says so loudly at the end.
            if let Some(log) = std::env::var_os("MEETHOOK_TEST_SKIP_LOG") {
                use std::io::Write;
                if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(log) {
                    let _ = writeln!(f, "{what}");
                }
            }
            None
        }
    }
}

/// A uniquely named schema in the test database, dropped on drop.
pub struct Schema {
    base: String,
    name: String,
}

impl Schema {
    /// Creates `PREFIX_<pid>_<n>_<random>`, or `None` when PostgreSQL is not configured.
    pub async fn create(prefix: &str, what: &str) -> Option<Schema> {
        let base = postgres_url(what)?;
        static N: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "{prefix}_{}_{}_{:x}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            random() & 0xffff_ffff
        );
        connect(&base)
            .await
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .unwrap();
        Some(Schema { base, name })
    }

    /// The test URL with this schema as the search path (a `--store` URL).
    pub fn url(&self) -> String {
        with_search_path(&self.base, &self.name)
    }

    /// The same, but through `addr` (a proxy) instead of the server's address.
    pub fn url_via(&self, addr: SocketAddr) -> String {
        let cfg: tokio_postgres::Config = self.base.parse().unwrap();
        let user = cfg.get_user().unwrap_or("postgres");
        let db = cfg.get_dbname().unwrap_or(user);
        let pass = cfg
            .get_password()
            .map(|p| format!(":{}", pct(&String::from_utf8_lossy(p))))
            .unwrap_or_default();
        with_search_path(
            &format!("postgres://{}{pass}@{addr}/{db}", pct(user)),
            &self.name,
        )
    }

    /// The server's address, for a proxy in front of it.
    pub async fn server_addr(&self) -> SocketAddr {
        let cfg: tokio_postgres::Config = self.base.parse().unwrap();
        let host = match cfg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "127.0.0.1".into(),
        };
        let port = cfg.get_ports().first().copied().unwrap_or(5432);
        let mut addrs = tokio::net::lookup_host((host.as_str(), port))
            .await
            .unwrap();
        addrs.next().unwrap()
    }

    /// A plain client on this schema, to look at what the store wrote.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url()).await
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let (base, name) = (self.base.clone(), self.name.clone());
        // Drop runs inside the test's runtime; a thread of its own may block on a new one.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let _ = connect(&base)
                    .await
                    .batch_execute(&format!(
                        "SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS {name} CASCADE"
                    ))
                    .await;
            });
        })
        .join();
    }
}

/// `url` with `schema` as its search path.
pub fn with_search_path(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-csearch_path%3D{schema}")
}

/// Percent-encodes a URL user or password.
fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to MEETHOOK_TEST_POSTGRES_URL");
    tokio::spawn(conn);
    client
}
