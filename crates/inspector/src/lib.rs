//! meethook's browser inspector: a page and a JSON API over a listener's durable journal,
//! served on localhost (`meethook listen` / `dev` on 127.0.0.1:4040, `meethook inspect`).
//!
//! The journal is the source of every list and detail; a [`Live`] observer subscribed to the
//! daemon feeds the server-sent-event stream (it only ever `send`s on a bounded broadcast,
//! so a slow browser never slows delivery). Retry and skip go to the running daemon's control
//! socket; replay sends an event again from here. The API is documented in `docs/inspector.md`.
//!
//! # Layout
//! - [`run`], [`Config`], [`bind_default`]: the server.
//! - `http`: routing and answers, the page (embedded at compile time) and the stream.
//! - `api`: the JSON items and the journal reads behind them.
//! - `guard`: Host (DNS rebinding), Origin and content type (CSRF), the token.
//! - [`Live`]: the daemon observer and the hub that turns its notices into items.

mod api;
mod artifacts;
mod bots;
mod guard;
mod http;
mod live;
mod replay;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use api::Item;
pub use guard::is_loopback;
pub use live::Live;

/// The first port tried when no address is given; the next ones up to [`LAST_PORT`] follow.
pub const DEFAULT_PORT: u16 = 4040;
/// The last port tried when no address is given.
pub const LAST_PORT: u16 = 4049;

/// What the inspector serves.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `--data` directory whose journal is shown.
    pub data: PathBuf,
    /// The channel shown when a request names none (the listener's); without it, the
    /// journal's only channel, or the one with the newest event.
    pub channel: Option<String>,
    /// The token clients must present (required off loopback).
    pub token: Option<String>,
    /// Whether retry and skip may reach a running daemon (`false` for `meethook inspect`:
    /// they answer 409).
    pub control: bool,
    /// How long to wait for the daemon's answer to a retry or skip (it answers between
    /// attempts, so one in flight delays it).
    pub control_timeout: Duration,
    /// The `whsec_…` secret a replay with `"resign": true` signs with (`--signing-secret`);
    /// such a replay answers 400 without it.
    pub signing_secret: Option<meethook_proto::signature::SigningKey>,
    /// Per-request timeout of a replay to the handler.
    pub replay_timeout: Duration,
}

impl Config {
    /// A config for the journal in `data`, with retry and skip reaching a running daemon.
    pub fn new(data: impl Into<PathBuf>) -> Config {
        Config {
            data: data.into(),
            channel: None,
            token: None,
            control: true,
            control_timeout: Duration::from_secs(60),
            signing_secret: None,
            replay_timeout: Duration::from_secs(30),
        }
    }
}

/// Why the inspector could not serve.
#[derive(Debug, thiserror::Error)]
pub enum InspectorError {
    /// The listener has no local address.
    #[error("inspector: cannot read the listening address: {0}")]
    Addr(std::io::Error),
    /// A non-loopback address without a token.
    #[error("inspector: {0} is reachable from other machines: give it a token (--inspect-token)")]
    NeedsToken(SocketAddr),
}

/// Binds 127.0.0.1:[`DEFAULT_PORT`], or the next free port up to [`LAST_PORT`]; `None` when
/// every one is taken.
pub async fn bind_default() -> Option<TcpListener> {
    for port in DEFAULT_PORT..=LAST_PORT {
        if let Ok(l) = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await {
            return Some(l);
        }
    }
    None
}

/// How long open connections (streams) get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Serves the inspector on `listener` until `shutdown`; `live` (subscribed to the daemon
/// writing the journal) feeds the stream, which without it follows the journal by reading
/// it every second.
pub async fn run(
    config: Config,
    listener: TcpListener,
    live: Option<Live>,
    shutdown: CancellationToken,
) -> Result<(), InspectorError> {
    let served = listener.local_addr().map_err(InspectorError::Addr)?;
    if !is_loopback(&served) && config.token.is_none() {
        return Err(InspectorError::NeedsToken(served));
    }
    let reader = Arc::new(api::Reader::new(&config.data));
    let out = live::outlet();
    let stop = shutdown.child_token();
    let tasks = TaskTracker::new();
    let is_live = live.is_some();
    let channel = config
        .channel
        .clone()
        .or_else(|| live.as_ref().map(|l| l.channel().to_string()));
    let schedule = live::Schedule::default();
    match live {
        Some(live) => tasks.spawn(live::hub(
            live,
            reader.clone(),
            out.clone(),
            schedule.clone(),
            stop.clone(),
        )),
        None => {
            let poller = live::Poller::start(reader.clone(), channel.clone()).await;
            tasks.spawn(poller.run(out.clone(), stop.clone()))
        }
    };
    let state = Arc::new(http::State {
        guard: guard::Guard {
            served,
            token: config.token.clone(),
        },
        config: Config { channel, ..config },
        reader,
        out,
        schedule,
        live: is_live,
        stop: stop.clone(),
    });
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "inspector: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        http::serve_conn(&state, &tasks, stream, peer);
    }
    drop(listener);
    tasks.close();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, tasks.wait()).await;
    Ok(())
}
