//! The shared store: PostgreSQL, for several relays on one database.
//!
//! - **Seqs.** A channel's row carries its counter. An append bumps it
//!   (`UPDATE channels SET head_seq = head_seq + n … RETURNING head_seq`) in the same transaction
//!   as the inserts, so seqs are gap-free whichever relay appends: the row lock orders writers
//!   on every node, and a rolled-back transaction gives its numbers back.
//! - **Group commit.** A few writer tasks each take whatever appends are queued and commit them
//!   in one transaction; callers hear back only after `COMMIT` returned. Channels are locked in
//!   id order, so concurrent batches (on any node) never deadlock.
//! - **Fan-out.** The append transaction also runs `NOTIFY meethook_heads, 'channel:head'`, which
//!   PostgreSQL delivers on commit to every relay's LISTEN connection; each relay publishes what
//!   it hears to its [`Notifier`]. A notification can be missed (while LISTEN reconnects), so each
//!   relay also re-reads the heads of the channels it streams on reconnect and every second:
//!   a lost notification delays an event by at most that, never loses it.
//! - **Failures.** Connection refused, a server restarting, a pool or statement timeout: all
//!   [`StoreError::Unavailable`] (the relay answers 503 and the sender retries). Connections
//!   come back by themselves.
//! - **Schema.** Migrations run on start inside a transaction holding an advisory lock, so
//!   relays starting together take turns; `meethook_schema` records the applied versions.
//!   Tables live in the connection's `search_path` schema (`options=-csearch_path=NAME`).
//! - **TLS.** `sslmode=require` (or libpq's `verify-ca`/`verify-full`) connects with rustls and
//!   verifies the server against the system's CAs or `sslrootcert=FILE`; `disable` and the
//!   default `prefer` connect in plain text.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use meethook_proto::frame::{decode_headers, encode_headers, headers_len, Reader};
use meethook_proto::Event;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, Config, Notification, Row};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::{Bounds, Channel, NewEvent, Notifier, Result, Store, StoreError};

/// The client library, for tools and tests that need a raw connection.
pub use tokio_postgres;

/// Schema version this build expects; older databases are migrated on start.
pub const SCHEMA_VERSION: i32 = 1;

/// Migration `i` brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &["
CREATE TABLE channels (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL,
    sender_secret TEXT,
    created_at BIGINT NOT NULL,
    head_seq BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE events (
    channel_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    headers BYTEA NOT NULL,
    body BYTEA NOT NULL,
    PRIMARY KEY (channel_id, seq)
);
CREATE INDEX events_received_at ON events (received_at);
CREATE TABLE listeners (
    channel_id TEXT NOT NULL,
    listener_id TEXT NOT NULL,
    acked_seq BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    PRIMARY KEY (channel_id, listener_id)
);
"];

/// NOTIFY channel carrying `channel:head` after each committed append.
const NOTIFY_HEADS: &str = "meethook_heads";
/// NOTIFY channel carrying the id of a deleted channel.
const NOTIFY_GONE: &str = "meethook_gone";
/// First key of the advisory locks (`'mhk'`); the second is a hash of the schema name.
const LOCK_SPACE: i32 = 0x006d_686b;
/// Second-key salt of the migration lock.
const LOCK_MIGRATE: &str = "migrate";
/// Second-key salt of the prune lock.
const LOCK_PRUNE: &str = "prune";

/// Writer tasks committing appends; more overlap one batch's commit with the next.
const WRITERS: usize = 4;
/// Most appends one transaction takes.
const MAX_BATCH: usize = 512;
/// Most body bytes one transaction takes.
const MAX_BATCH_BYTES: usize = 16 << 20;
/// Appends waiting for a writer before `append` itself waits.
const QUEUE: usize = 4096;
/// Pooled connections per relay (writers, reads, acks).
const POOL_SIZE: usize = 16;
/// How long a call waits for a pooled connection or a new one.
const POOL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one store call may take before it counts as unavailable.
const OP_TIMEOUT: Duration = Duration::from_secs(15);
/// Pruning may delete a lot at once.
const PRUNE_TIMEOUT: Duration = Duration::from_secs(300);
/// How often the heads of streamed channels are re-read, in case a notification was missed.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait between LISTEN reconnects.
const MAX_RECONNECT: Duration = Duration::from_secs(5);

/// Why [`PostgresStore::connect`] failed; the message says what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConnectError(String);

/// PostgreSQL-backed [`Store`] for several relays sharing one database.
pub struct PostgresStore {
    shared: Arc<Shared>,
    appends: mpsc::Sender<AppendOp>,
    target: String,
}

/// What the writer tasks, the LISTEN task and the store calls share.
struct Shared {
    pool: Pool,
    notifier: Notifier,
    /// Channels subscribed on this relay: the ones whose heads the poll re-reads.
    watched: Mutex<HashSet<String>>,
}

struct AppendOp {
    channel: String,
    event: NewEvent,
    reply: oneshot::Sender<Result<u64>>,
}

fn pg(e: tokio_postgres::Error) -> StoreError {
    StoreError::unavailable(e)
}

fn other(msg: impl Into<String>) -> StoreError {
    StoreError::unavailable(std::io::Error::other(msg.into()))
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
fn reason(e: &tokio_postgres::Error) -> String {
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
                    ConnectError(format!("cannot read sslrootcert {path} from --store: {e}"))
                })?;
                for cert in rustls_pemfile::certs(&mut &pem[..]) {
                    let cert = cert.map_err(|e| {
                        ConnectError(format!("sslrootcert {path} is not PEM certificates: {e}"))
                    })?;
                    roots.add(cert).map_err(|e| {
                        ConnectError(format!("sslrootcert {path} holds a bad certificate: {e}"))
                    })?;
                }
                if roots.is_empty() {
                    return Err(ConnectError(format!(
                        "sslrootcert {path} from --store holds no certificate"
                    )));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(ConnectError(
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
        .map_err(|e| ConnectError(format!("cannot set up TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// Lock-key expression for the current schema (relays on other schemas do not wait).
fn lock_key(salt: &str) -> String {
    format!("{LOCK_SPACE}, hashtext(COALESCE(current_schema(), '') || ':{salt}')")
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/db?options=-csearch_path%3Dname`),
    /// applies migrations, and starts the writer and LISTEN tasks (needs a tokio runtime).
    pub async fn connect(url: &str) -> std::result::Result<PostgresStore, ConnectError> {
        let (url, root) = libpq_compat(url);
        let mut cfg = Config::from_str(&url).map_err(|e| {
            ConnectError(format!(
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
        let fail = |what: &str, e: &tokio_postgres::Error| {
            ConnectError(format!(
                "cannot {what} PostgreSQL at {target}: {} ({})",
                reason(e),
                advice(e)
            ))
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
                return Err(ConnectError(format!(
                    "PostgreSQL at {target}: no schema of the search_path exists; create it \
                     (CREATE SCHEMA name) or fix options=-csearch_path=… in --store"
                )));
            }
            migrate(&mut client)
                .await
                .map_err(|e| ConnectError(format!("PostgreSQL at {target}: {e}")))?;
            Ok(sync)
        };
        let sync = setup.await;
        drop(client);
        let _ = driver.await;
        if sync? == "off" {
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
            .max_size(POOL_SIZE)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(POOL_TIMEOUT))
            .recycle_timeout(Some(POOL_TIMEOUT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| ConnectError(format!("cannot set up the PostgreSQL pool: {e}")))?;
        let shared = Arc::new(Shared {
            pool,
            notifier: Notifier::default(),
            watched: Mutex::new(HashSet::new()),
        });
        let (tx, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..WRITERS {
            tokio::spawn(writer(shared.clone(), rx.clone()));
        }
        tokio::spawn(listen_loop(cfg, tls, Arc::downgrade(&shared)));
        Ok(PostgresStore {
            shared,
            appends: tx,
            target,
        })
    }

    /// `host:port` of the database server (for messages; no credentials).
    pub fn target(&self) -> &str {
        &self.target
    }

    async fn client(&self) -> Result<Object> {
        self.shared
            .pool
            .get()
            .await
            .map_err(StoreError::unavailable)
    }
}

/// Runs `f` on a pooled connection within `limit`; a connection that timed out is dropped
/// rather than returned to the pool.
macro_rules! with_client {
    ($store:expr, $limit:expr, |$c:ident| $body:expr) => {{
        #[allow(unused_mut)]
        let mut $c = $store.client().await?;
        let r = tokio::time::timeout($limit, async { $body }).await;
        match r {
            Ok(r) => r,
            Err(_) => {
                drop(Object::take($c));
                Err(other("PostgreSQL did not answer in time"))
            }
        }
    }};
}

async fn migrate(client: &mut tokio_postgres::Client) -> std::result::Result<(), String> {
    let err = |e: tokio_postgres::Error| format!("cannot apply the schema: {}", reason(&e));
    let tx = client.transaction().await.map_err(err)?;
    // Relays starting together take turns; the loser finds the work done.
    tx.execute(
        &format!("SELECT pg_advisory_xact_lock({})", lock_key(LOCK_MIGRATE)),
        &[],
    )
    .await
    .map_err(err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS meethook_schema (
             version INTEGER PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(err)?;
    let current: i32 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM meethook_schema", &[])
        .await
        .map_err(err)?
        .get(0);
    if current > SCHEMA_VERSION {
        return Err(format!(
            "the database holds meethook schema version {current}, newer than this build's \
             {SCHEMA_VERSION}: upgrade meethook on this relay"
        ));
    }
    for version in current + 1..=SCHEMA_VERSION {
        tx.batch_execute(MIGRATIONS[(version - 1) as usize])
            .await
            .map_err(err)?;
        tx.execute(
            "INSERT INTO meethook_schema (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(err)?;
        tracing::info!(version, "PostgreSQL schema migrated");
    }
    tx.commit().await.map_err(err)
}

async fn writer(shared: Arc<Shared>, rx: Arc<tokio::sync::Mutex<mpsc::Receiver<AppendOp>>>) {
    loop {
        let batch = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            let mut bytes = first.event.body.len();
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(op) => {
                        bytes += op.event.body.len();
                        batch.push(op);
                    }
                    Err(_) => break,
                }
            }
            batch
        };
        commit_appends(&shared, batch).await;
    }
}

/// Commits a batch and answers every caller; a statement error that is not about the
/// connection retries the appends one by one, so one bad event cannot sink the others.
async fn commit_appends(shared: &Shared, batch: Vec<AppendOp>) {
    let ops: Vec<(&str, &NewEvent)> = batch
        .iter()
        .map(|op| (op.channel.as_str(), &op.event))
        .collect();
    let results = match commit_with_retry(shared, &ops).await {
        Ok(r) => r,
        Err(e) if ops.len() > 1 && statement_error(&e) => {
            let mut out = Vec::with_capacity(ops.len());
            for op in &ops {
                out.push(
                    match commit_with_retry(shared, std::slice::from_ref(op)).await {
                        Ok(mut r) => r.pop().expect("one result per op"),
                        Err(e) => Err(e),
                    },
                );
            }
            out
        }
        Err(e) => {
            tracing::error!(error = %e, appends = ops.len(), "PostgreSQL commit failed; batch rejected");
            let msg = e.to_string();
            ops.iter().map(|_| Err(other(msg.clone()))).collect()
        }
    };
    // Local streams get these from memory (a gap-free run at a time; see Notifier).
    let mut fresh: HashMap<&str, Vec<Event>> = HashMap::new();
    for (op, r) in batch.iter().zip(&results) {
        if let Ok(seq) = r {
            fresh.entry(op.channel.as_str()).or_default().push(Event {
                seq: *seq,
                received_at_ms: op.event.received_at_ms,
                method: op.event.method.clone(),
                path: op.event.path.clone(),
                headers: op.event.headers.clone(),
                body: op.event.body.clone(),
            });
        }
    }
    for (channel, mut events) in fresh {
        events.sort_by_key(|e| e.seq);
        shared.notifier.publish_events(channel, events);
    }
    for (op, r) in batch.into_iter().zip(results) {
        let _ = op.reply.send(r);
    }
}

/// Whether a batch failed on what one event could cause (bad data, a constraint, a size
/// limit), so retrying the events one by one helps, rather than on the server or connection.
fn statement_error(e: &StoreError) -> bool {
    match e {
        StoreError::Unavailable(inner) => inner
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(|e| e.code())
            .is_some_and(|c| matches!(&c.code()[..2], "22" | "23" | "54")),
        _ => false,
    }
}

/// Deadlocks and serialization failures: try again.
fn is_transient(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
    )
}

async fn commit_with_retry(shared: &Shared, ops: &[(&str, &NewEvent)]) -> Result<Vec<Result<u64>>> {
    let mut tries = 0;
    loop {
        match commit_once(shared, ops).await {
            Err(StoreError::Unavailable(e))
                if tries < 3
                    && e.downcast_ref::<tokio_postgres::Error>()
                        .is_some_and(is_transient) =>
            {
                tries += 1;
            }
            r => return r,
        }
    }
}

/// One transaction: bump each channel's counter by its number of events (in id order),
/// insert the events with their seqs, NOTIFY the new heads, COMMIT.
async fn commit_once(shared: &Shared, ops: &[(&str, &NewEvent)]) -> Result<Vec<Result<u64>>> {
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for (ch, _) in ops {
        *counts.entry(ch).or_default() += 1;
    }
    let ids: Vec<&str> = counts.keys().copied().collect();
    let ns: Vec<i64> = counts.values().copied().collect();
    let mut client = shared.pool.get().await.map_err(StoreError::unavailable)?;
    let work = async {
        let tx = client.transaction().await.map_err(pg)?;
        if ids.len() > 1 {
            // Row locks in id order, so two batches never wait on each other in a cycle.
            let lock = tx
                .prepare_cached(
                    "SELECT id FROM channels WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
                )
                .await
                .map_err(pg)?;
            tx.execute(&lock, &[&ids]).await.map_err(pg)?;
        }
        let bump = tx
            .prepare_cached(
                "UPDATE channels AS c SET head_seq = c.head_seq + v.n
                 FROM unnest($1::text[], $2::bigint[]) AS v(id, n)
                 WHERE c.id = v.id RETURNING c.id, c.head_seq",
            )
            .await
            .map_err(pg)?;
        let rows = tx.query(&bump, &[&ids, &ns]).await.map_err(pg)?;
        // Next seq to hand out per channel, in queue order.
        let mut next: HashMap<String, i64> = HashMap::with_capacity(rows.len());
        for r in &rows {
            let id: String = r.get(0);
            let head: i64 = r.get(1);
            let n = counts.get(id.as_str()).copied().unwrap_or(0);
            next.insert(id, head - n + 1);
        }
        let mut results = Vec::with_capacity(ops.len());
        let (mut cols_ch, mut cols_seq, mut cols_at) = (Vec::new(), Vec::new(), Vec::new());
        let (mut cols_method, mut cols_path, mut cols_headers, mut cols_body) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (ch, ev) in ops {
            match next.get_mut(*ch) {
                None => results.push(Err(StoreError::NotFound)),
                Some(seq) => {
                    let mut h = BytesMut::with_capacity(headers_len(&ev.headers));
                    encode_headers(&ev.headers, &mut h);
                    cols_ch.push(*ch);
                    cols_seq.push(*seq);
                    cols_at.push(ev.received_at_ms);
                    cols_method.push(ev.method.as_str());
                    cols_path.push(ev.path.as_str());
                    cols_headers.push(h.freeze());
                    cols_body.push(&ev.body[..]);
                    results.push(Ok(*seq as u64));
                    *seq += 1;
                }
            }
        }
        if !cols_ch.is_empty() {
            let insert = tx
                .prepare_cached(
                    "INSERT INTO events (channel_id, seq, received_at, method, path, headers, body)
                     SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[],
                                          $5::text[], $6::bytea[], $7::bytea[])",
                )
                .await
                .map_err(pg)?;
            let headers: Vec<&[u8]> = cols_headers.iter().map(|h| &h[..]).collect();
            tx.execute(
                &insert,
                &[
                    &cols_ch,
                    &cols_seq,
                    &cols_at,
                    &cols_method,
                    &cols_path,
                    &headers,
                    &cols_body,
                ],
            )
            .await
            .map_err(pg)?;
            let payloads: Vec<String> = rows
                .iter()
                .map(|r| format!("{}:{}", r.get::<_, &str>(0), r.get::<_, i64>(1)))
                .collect();
            let notify = tx
                .prepare_cached(&format!(
                    "SELECT pg_notify('{NOTIFY_HEADS}', p) FROM unnest($1::text[]) AS p"
                ))
                .await
                .map_err(pg)?;
            tx.execute(&notify, &[&payloads]).await.map_err(pg)?;
        }
        // Acknowledged means committed: answers go out only after this returns.
        tx.commit().await.map_err(pg)?;
        Ok(results)
    };
    match tokio::time::timeout(OP_TIMEOUT, work).await {
        Ok(r) => r,
        Err(_) => {
            drop(Object::take(client));
            Err(other("PostgreSQL did not commit in time"))
        }
    }
}

/// Keeps one LISTEN connection up for as long as the store lives.
async fn listen_loop(cfg: Config, tls: MakeRustlsConnect, shared: Weak<Shared>) {
    let mut delay = Duration::from_millis(100);
    loop {
        let started = Instant::now();
        match listen_session(&cfg, &tls, &shared).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "PostgreSQL LISTEN connection lost; reconnecting")
            }
        }
        if shared.strong_count() == 0 {
            return;
        }
        if started.elapsed() > Duration::from_secs(30) {
            delay = Duration::from_millis(100);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_RECONNECT);
    }
}

/// One LISTEN connection: publishes notified heads, re-reads watched heads on connect and every
/// [`POLL_INTERVAL`]. `Ok` when the store is gone, `Err` when the connection is.
async fn listen_session(
    cfg: &Config,
    tls: &MakeRustlsConnect,
    shared: &Weak<Shared>,
) -> std::result::Result<(), String> {
    let (client, mut conn) = tokio::time::timeout(OP_TIMEOUT, cfg.connect(tls.clone()))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| reason(&e))?;
    let (tx, mut rx) = mpsc::unbounded_channel::<std::result::Result<Notification, String>>();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if tx.send(Ok(n)).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    let _ = tx.send(Err(reason(&e)));
                    return;
                }
                None => {
                    let _ = tx.send(Err("connection closed".into()));
                    return;
                }
            }
        }
    });
    let _driver = AbortOnDrop(driver);
    let setup = async {
        client
            .batch_execute(&format!("LISTEN {NOTIFY_HEADS}; LISTEN {NOTIFY_GONE}"))
            .await?;
        client
            .prepare("SELECT id, head_seq FROM channels WHERE id = ANY($1)")
            .await
    };
    let poll = tokio::time::timeout(OP_TIMEOUT, setup)
        .await
        .map_err(|_| "LISTEN timed out".to_string())?
        .map_err(|e| reason(&e))?;
    // Notifications may have been missed while disconnected (a channel deleted and created
    // again elsewhere): events kept in memory can no longer be trusted.
    if let Some(shared) = shared.upgrade() {
        shared.notifier.clear_tails();
    }
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            n = rx.recv() => {
                let n = n.unwrap_or_else(|| Err("connection closed".into()))?;
                let Some(shared) = shared.upgrade() else { return Ok(()) };
                on_notification(&shared, &n);
            }
            // The first tick is immediate: heads are re-read right after (re)connecting.
            _ = tick.tick() => {
                let Some(shared) = shared.upgrade() else { return Ok(()) };
                let ids: Vec<String> =
                    shared.watched.lock().expect("watched lock").iter().cloned().collect();
                if ids.is_empty() {
                    continue;
                }
                let rows = tokio::time::timeout(OP_TIMEOUT, client.query(&poll, &[&ids]))
                    .await
                    .map_err(|_| "head poll timed out".to_string())?
                    .map_err(|e| reason(&e))?;
                for r in rows {
                    shared.notifier.publish(r.get::<_, &str>(0), r.get::<_, i64>(1) as u64);
                }
            }
        }
    }
}

fn on_notification(shared: &Shared, n: &Notification) {
    match n.channel() {
        NOTIFY_HEADS => {
            if let Some((channel, head)) = n.payload().rsplit_once(':') {
                if let Ok(head) = head.parse::<u64>() {
                    shared.notifier.publish(channel, head);
                }
            }
        }
        NOTIFY_GONE => {
            let channel = n.payload();
            shared.watched.lock().expect("watched lock").remove(channel);
            shared.notifier.forget(channel);
        }
        _ => {}
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

const CHANNEL_COLS: &str = "id, token_hash, sender_secret, created_at, head_seq";

fn row_to_channel(r: &Row) -> Channel {
    Channel {
        id: r.get(0),
        token_hash: r.get(1),
        sender_secret: r.get(2),
        created_at_ms: r.get(3),
        head: r.get::<_, i64>(4) as u64,
    }
}

fn row_to_event(r: &Row) -> Result<Event> {
    let headers: Vec<u8> = r.get(4);
    let headers = decode_headers(&mut Reader::new(Bytes::from(headers)))
        .map_err(|e| other(format!("stored headers do not decode: {e}")))?;
    Ok(Event {
        seq: r.get::<_, i64>(0) as u64,
        received_at_ms: r.get(1),
        method: r.get(2),
        path: r.get(3),
        headers,
        body: Bytes::from(r.get::<_, Vec<u8>>(5)),
    })
}

fn to_i64(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_channel(&self, ch: Channel) -> Result<()> {
        let n = with_client!(self, OP_TIMEOUT, |c| {
            let st = c
                .prepare_cached(
                    "INSERT INTO channels (id, token_hash, sender_secret, created_at, head_seq)
                     VALUES ($1, $2, $3, $4, 0) ON CONFLICT (id) DO NOTHING",
                )
                .await
                .map_err(pg)?;
            c.execute(
                &st,
                &[&ch.id, &ch.token_hash, &ch.sender_secret, &ch.created_at_ms],
            )
            .await
            .map_err(pg)
        })?;
        if n == 0 {
            Err(StoreError::Conflict)
        } else {
            Ok(())
        }
    }

    async fn channel(&self, id: &str) -> Result<Option<Channel>> {
        with_client!(self, OP_TIMEOUT, |c| {
            let st = c
                .prepare_cached(&format!(
                    "SELECT {CHANNEL_COLS} FROM channels WHERE id = $1"
                ))
                .await
                .map_err(pg)?;
            let row = c.query_opt(&st, &[&id]).await.map_err(pg)?;
            Ok(row.as_ref().map(row_to_channel))
        })
    }

    async fn list_channels(&self) -> Result<Vec<Channel>> {
        with_client!(self, OP_TIMEOUT, |c| {
            let st = c
                .prepare_cached(&format!(
                    "SELECT {CHANNEL_COLS} FROM channels ORDER BY created_at, id"
                ))
                .await
                .map_err(pg)?;
            let rows = c.query(&st, &[]).await.map_err(pg)?;
            Ok(rows.iter().map(row_to_channel).collect())
        })
    }

    async fn delete_channel(&self, id: &str) -> Result<bool> {
        let found = with_client!(self, OP_TIMEOUT, |c| {
            let tx = c.transaction().await.map_err(pg)?;
            // The channel row first: its lock waits out appends in flight, and appends that
            // come after find no row, so no event outlives its channel.
            let n = tx
                .execute("DELETE FROM channels WHERE id = $1", &[&id])
                .await
                .map_err(pg)?;
            tx.execute("DELETE FROM events WHERE channel_id = $1", &[&id])
                .await
                .map_err(pg)?;
            tx.execute("DELETE FROM listeners WHERE channel_id = $1", &[&id])
                .await
                .map_err(pg)?;
            if n > 0 {
                tx.execute(&format!("SELECT pg_notify('{NOTIFY_GONE}', $1)"), &[&id])
                    .await
                    .map_err(pg)?;
            }
            tx.commit().await.map_err(pg)?;
            Ok(n > 0)
        })?;
        self.shared.watched.lock().expect("watched lock").remove(id);
        self.shared.notifier.forget(id);
        Ok(found)
    }

    async fn set_token_hash(&self, id: &str, token_hash: &str) -> Result<bool> {
        with_client!(self, OP_TIMEOUT, |c| {
            c.execute(
                "UPDATE channels SET token_hash = $2 WHERE id = $1",
                &[&id, &token_hash],
            )
            .await
            .map(|n| n > 0)
            .map_err(pg)
        })
    }

    async fn append(&self, channel: &str, event: NewEvent) -> Result<u64> {
        let (tx, rx) = oneshot::channel();
        self.appends
            .send(AppendOp {
                channel: channel.to_string(),
                event,
                reply: tx,
            })
            .await
            .map_err(|_| other("store writer stopped"))?;
        rx.await.map_err(|_| other("store writer stopped"))?
    }

    async fn read_after(
        &self,
        channel: &str,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Event>> {
        let (after, limit, max_bytes) = (to_i64(after), to_i64(limit), to_i64(max_bytes).max(1));
        with_client!(self, OP_TIMEOUT, |c| {
            // The byte budget is applied in the server, so bodies past it are never sent: a
            // row is included while the bytes before it are under the budget (so always one).
            let st = c
                .prepare_cached(
                    "SELECT seq, received_at, method, path, headers, body FROM (
                         SELECT *, SUM(octet_length(headers) + octet_length(body))
                                   OVER (ORDER BY seq) AS upto
                         FROM (SELECT seq, received_at, method, path, headers, body FROM events
                               WHERE channel_id = $1 AND seq > $2 ORDER BY seq LIMIT $3) AS page
                     ) AS sized
                     WHERE upto - (octet_length(headers) + octet_length(body)) < $4
                     ORDER BY seq",
                )
                .await
                .map_err(pg)?;
            let rows = c
                .query(&st, &[&channel, &after, &limit, &max_bytes])
                .await
                .map_err(pg)?;
            rows.iter().map(row_to_event).collect()
        })
    }

    async fn bounds(&self, channel: &str) -> Result<Bounds> {
        let found = with_client!(self, OP_TIMEOUT, |c| {
            let st = c
                .prepare_cached(
                    "SELECT head_seq, (SELECT MIN(seq) FROM events WHERE channel_id = $1)
                     FROM channels WHERE id = $1",
                )
                .await
                .map_err(pg)?;
            let row = c.query_opt(&st, &[&channel]).await.map_err(pg)?;
            Ok(row.map(|r| Bounds {
                head: r.get::<_, i64>(0) as u64,
                oldest: r.get::<_, Option<i64>>(1).unwrap_or(0) as u64,
            }))
        })?;
        found.ok_or(StoreError::NotFound)
    }

    async fn ack(&self, channel: &str, listener: &str, seq: u64, now_ms: i64) -> Result<()> {
        let seq = to_i64(seq);
        with_client!(self, OP_TIMEOUT, |c| {
            // FOR KEY SHARE waits out a concurrent delete of the channel (then inserts nothing).
            let st = c
                .prepare_cached(
                    "INSERT INTO listeners (channel_id, listener_id, acked_seq, last_seen)
                     SELECT id, $2, $3, $4 FROM channels WHERE id = $1 FOR KEY SHARE
                     ON CONFLICT (channel_id, listener_id) DO UPDATE SET
                       acked_seq = GREATEST(listeners.acked_seq, excluded.acked_seq),
                       last_seen = excluded.last_seen",
                )
                .await
                .map_err(pg)?;
            c.execute(&st, &[&channel, &listener, &seq, &now_ms])
                .await
                .map(|_| ())
                .map_err(pg)
        })
    }

    async fn prune(&self, retention: Duration, now_ms: i64) -> Result<u64> {
        let cutoff = now_ms.saturating_sub(to_i64(retention.as_millis()));
        with_client!(self, PRUNE_TIMEOUT, |c| {
            let tx = c.transaction().await.map_err(pg)?;
            // One relay prunes at a time; the others would only wait to find the work done.
            let mine: bool = tx
                .query_one(
                    &format!("SELECT pg_try_advisory_xact_lock({})", lock_key(LOCK_PRUNE)),
                    &[],
                )
                .await
                .map_err(pg)?
                .get(0);
            if !mine {
                return Ok(0);
            }
            let n = tx
                .execute(
                    "DELETE FROM events WHERE received_at < $1 AND seq <= COALESCE(
                       (SELECT MIN(l.acked_seq) FROM listeners l
                        WHERE l.channel_id = events.channel_id AND l.last_seen >= $1),
                       9223372036854775807)",
                    &[&cutoff],
                )
                .await
                .map_err(pg)?;
            tx.execute("DELETE FROM listeners WHERE last_seen < $1", &[&cutoff])
                .await
                .map_err(pg)?;
            tx.commit().await.map_err(pg)?;
            Ok(n)
        })
    }

    fn recent(
        &self,
        channel: &str,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Option<Vec<Event>> {
        self.shared
            .notifier
            .recent(channel, after, limit, max_bytes)
    }

    fn subscribe(&self, channel: &str) -> watch::Receiver<u64> {
        self.shared
            .watched
            .lock()
            .expect("watched lock")
            .insert(channel.to_string());
        self.shared.notifier.subscribe(channel)
    }

    async fn ping(&self) -> Result<()> {
        with_client!(self, OP_TIMEOUT, |c| {
            c.simple_query("SELECT 1").await.map(|_| ()).map_err(pg)
        })
    }
}
