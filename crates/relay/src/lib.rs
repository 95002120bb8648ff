//! The relay: accepts webhooks, stores them durably, streams them to listeners.
//!
//! # Layout
//! - [`run`]: the accept loop; the caller binds the listener and owns the shutdown token.
//! - [`defaults`]: the defaults of [`RelayConfig`] that are also `meethook relay` flags.
//! - `http`: routing and the HTTP handlers (ingress, channel API, health, metrics).
//! - `stream`: one websocket listener stream (handshake, flow control, acks, pings).
//! - `preload`: big bodies sent on to listeners while they still arrive.
//! - [`auth`]: tokens and sender-secret checks.
//! - [`metrics`]: the `/metrics` counters.
//! - [`limits`]: per-channel rate limits, per-IP failed-auth limits.
//! - [`tls`]: HTTPS/WSS certificates, reloadable.
//! - [`acme`]: certificates from an ACME CA (Let's Encrypt), cached and renewed.

pub mod acme;
pub mod auth;
pub mod defaults;
mod http;
pub mod limits;
pub mod metrics;
mod preload;
mod stream;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use meethook_proto::units::{parse_duration, parse_size};
use meethook_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use metrics::Metrics;

/// Everything the relay needs besides its listener and store.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Base of the webhook URLs handed out (`http://127.0.0.1:8787`).
    pub public_url: String,
    /// Guards the channel API; the API answers 401 when unset.
    pub admin_token: Option<String>,
    /// Largest webhook body accepted; larger ones get 413.
    pub max_body: usize,
    /// How long delivered events stay in history.
    pub retention: Duration,
    /// How often pruning runs.
    pub prune_interval: Duration,
    /// How often the relay pings each listener.
    pub ping_interval: Duration,
    /// A listener silent for this long is dropped.
    pub liveness_timeout: Duration,
    /// Upper bound on the in-flight window a listener may ask for.
    pub max_window: u32,
    /// Upper bound on unacknowledged body bytes in flight to one listener.
    pub max_inflight_bytes: usize,
    /// Time allowed for a client to send its request headers.
    pub header_read_timeout: Duration,
    /// Longest a webhook's body may take to arrive (then 408, nothing stored).
    pub body_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// Serve HTTPS/WSS with this certificate instead of plain HTTP.
    pub tls: Option<Arc<tls::Tls>>,
    /// Most HTTP connections open at once (listener streams count separately).
    pub max_connections: usize,
    /// Most listener streams open at once.
    pub max_listeners: usize,
    /// Largest request head (request line + headers) accepted.
    pub max_header_size: usize,
    /// Webhooks per second per channel (0 = unlimited).
    pub rate_limit: f64,
    /// Webhooks a channel may send at once before the rate applies.
    pub rate_burst: f64,
    /// Failed authentications per minute per client IP before it gets 429 (0 = unlimited).
    pub auth_fail_limit: u32,
}

impl Default for RelayConfig {
    fn default() -> Self {
        let size = |s| usize::try_from(parse_size(s).expect("a valid default")).expect("fits");
        let duration = |s| parse_duration(s).expect("a valid default");
        RelayConfig {
            public_url: format!("http://{}", defaults::LISTEN),
            admin_token: None,
            max_body: size(defaults::MAX_BODY),
            retention: duration(defaults::RETENTION),
            prune_interval: duration(defaults::PRUNE_INTERVAL),
            ping_interval: duration(defaults::PING_INTERVAL),
            liveness_timeout: duration(defaults::LIVENESS_TIMEOUT),
            max_window: 1024,
            max_inflight_bytes: 32 << 20,
            header_read_timeout: duration(defaults::HEADER_TIMEOUT),
            body_timeout: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(10),
            tls: None,
            max_connections: defaults::MAX_CONNECTIONS,
            max_listeners: defaults::MAX_LISTENERS,
            max_header_size: size(defaults::MAX_HEADER_SIZE),
            rate_limit: defaults::RATE_LIMIT,
            rate_burst: defaults::RATE_BURST,
            auth_fail_limit: defaults::AUTH_FAIL_LIMIT,
        }
    }
}

/// Shared by every connection.
struct State {
    cfg: RelayConfig,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    rate: limits::RateLimiter,
    auth_failures: limits::AuthFailures,
    listener_slots: Arc<tokio::sync::Semaphore>,
    channels: ChannelCache,
    preloads: Arc<preload::Preloads>,
}

/// Recently read channels, so a webhook costs no store read for its channel lookup.
/// Entries live one second: a channel deleted on another relay node stops being served
/// within that time (and appends to it fail at the store anyway).
#[derive(Default)]
struct ChannelCache {
    map: std::sync::Mutex<
        std::collections::HashMap<String, (meethook_store::Channel, std::time::Instant)>,
    >,
}

impl ChannelCache {
    const TTL: Duration = Duration::from_secs(1);
    const MAX: usize = 10_000;

    async fn get(
        &self,
        store: &dyn Store,
        id: &str,
    ) -> Result<Option<meethook_store::Channel>, meethook_store::StoreError> {
        if let Some((ch, at)) = self.map.lock().expect("cache lock").get(id) {
            if at.elapsed() < Self::TTL {
                return Ok(Some(ch.clone()));
            }
        }
        let found = store.channel(id).await?;
        let mut map = self.map.lock().expect("cache lock");
        match &found {
            Some(ch) => {
                if map.len() >= Self::MAX {
                    map.retain(|_, (_, at)| at.elapsed() < Self::TTL);
                }
                map.insert(id.to_string(), (ch.clone(), std::time::Instant::now()));
            }
            None => {
                map.remove(id);
            }
        }
        Ok(found)
    }

    fn forget(&self, id: &str) {
        self.map.lock().expect("cache lock").remove(id);
    }
}

/// Serves the relay on `listener` until `shutdown` is cancelled, then stops accepting, lets
/// in-flight requests finish (up to `shutdown_grace`) and closes listener streams.
pub async fn run(
    cfg: RelayConfig,
    listener: TcpListener,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    run_with_metrics(cfg, listener, store, Arc::new(Metrics::default()), shutdown).await
}

/// [`run`] with caller-owned metrics (tests and `meethook dev` read them).
pub async fn run_with_metrics(
    cfg: RelayConfig,
    listener: TcpListener,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let tasks = TaskTracker::new();
    let conn_slots = Arc::new(tokio::sync::Semaphore::new(cfg.max_connections));
    let state = Arc::new(State {
        rate: limits::RateLimiter::new(cfg.rate_limit, cfg.rate_burst),
        auth_failures: limits::AuthFailures::new(cfg.auth_fail_limit),
        listener_slots: Arc::new(tokio::sync::Semaphore::new(cfg.max_listeners)),
        channels: ChannelCache::default(),
        preloads: Arc::default(),
        cfg,
        store,
        metrics,
        shutdown: shutdown.clone(),
        tasks: tasks.clone(),
    });
    tasks.spawn(prune_loop(state.clone()));
    let http_tasks = TaskTracker::new();
    loop {
        let (io, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = io.set_nodelay(true);
        let Ok(permit) = conn_slots.clone().try_acquire_owned() else {
            http_tasks.spawn(refuse(io));
            continue;
        };
        match state.cfg.tls.clone() {
            None => serve_conn(&state, &http_tasks, TokioIo::new(io), peer, permit),
            Some(tls) => {
                let st = state.clone();
                let tasks = http_tasks.clone();
                http_tasks.spawn(async move {
                    // The handshake shares the header deadline: a silent client can't hold a slot.
                    match tokio::time::timeout(st.cfg.header_read_timeout, tls.accept(io)).await {
                        Ok(Ok(Some(tls))) => {
                            serve_conn(&st, &tasks, TokioIo::new(tls), peer, permit)
                        }
                        Ok(Ok(None)) => {
                            tracing::debug!(%peer, "answered an ACME TLS-ALPN-01 check")
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
    drop(listener);
    http_tasks.close();
    if tokio::time::timeout(state.cfg.shutdown_grace, http_tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests still running after the grace period; closing");
    }
    tasks.close();
    tasks.wait().await;
    Ok(())
}

fn serve_conn<I>(
    state: &Arc<State>,
    http_tasks: &TaskTracker,
    io: TokioIo<I>,
    peer: SocketAddr,
    permit: tokio::sync::OwnedSemaphorePermit,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let st = state.clone();
    let svc = hyper::service::service_fn(move |req| http::handle(st.clone(), peer, req));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(state.cfg.header_read_timeout)
        .max_buf_size(state.cfg.max_header_size.max(8192))
        .serve_connection(io, svc)
        .with_upgrades();
    let shutdown = state.shutdown.clone();
    http_tasks.spawn(async move {
        let mut conn = std::pin::pin!(conn);
        let res = tokio::select! {
            r = conn.as_mut() => r,
            _ = shutdown.cancelled() => {
                // Finish the request in flight, then close.
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = res {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
        drop(permit);
    });
}

/// Answers 503 to a connection over `max_connections` and closes it.
async fn refuse(mut io: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    const BODY: &str = r#"{"error":"too many connections; retry later"}"#;
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), io.write_all(resp.as_bytes())).await;
    let _ = io.shutdown().await;
}

async fn prune_loop(state: Arc<State>) {
    let mut tick = tokio::time::interval(state.cfg.prune_interval);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match state
            .store
            .prune(state.cfg.retention, meethook_proto::clock::now_ms())
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(pruned = n, "pruned delivered events past retention"),
            Err(e) => tracing::warn!(error = %e, "pruning failed; will retry"),
        }
    }
}
