//! The listen daemon: holds the relay websocket, journals every event, delivers each one to
//! the local handler in seq order, one at a time, and acks only what is delivered. It
//! prints nothing: it reports what it does as typed [`observe::DaemonEvent`]s to observers.
//!
//! A pipeline of stages, each given only its own settings, talking through channels:
//!
//! ```text
//!  relay ──ws──▶ conn ──journal insert──▶ handoff ──▶ delivery ──HTTP──▶ handler
//!                 ▲  └──▶ recordings (downloads)         │  └──▶ outcome log, journal
//!                 └────────── delivered cursor (acks) ◀──┘
//!                            control socket ──▶ delivery (events retry|skip)
//! ```
//!
//! # Layout
//! - [`run`]: wires the stages; returns on shutdown or a fatal error (bad token, unknown
//!   channel).
//! - `conn`: the connection stage (hello, journaling, acks, pings, reconnects).
//! - `handoff`: what the connection hands the delivery stage.
//! - `delivery`: the delivery stage (in-order sends, retries, user control, acked cursor).
//! - [`forward`]: one HTTP attempt to the handler and the retry rules.
//! - [`filter`]: `--events` / `--bot`.
//! - [`order`]: `--order`, what goes one at a time.
//! - [`route`]: `[[route]]`, which handler an event goes to.
//! - [`control`]: the control socket (`meethook events retry|skip SEQ`).
//! - [`journal`]: the local SQLite journal of events and attempts.
//! - `outcomes`: the outcome log that makes each outcome crash-safe before the next send.
//! - [`observe`]: the typed events the daemon reports, and their observers.
//! - `prune`: `--retention`, the journal's periodic pruning.
//! - [`recordings`]: `--save-recordings`, background downloads of final events' artifacts.
//! - [`artifacts`]: local copies of artifact links, spliced into replayed bodies.
//! - [`bots`]: the journal's events per Meeting BaaS bot (`events bots`, the meeting view).
//! - `proxy`: `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` for the relay websocket (`CONNECT`).
//! - [`replay`]: re-sending journaled events to a handler (`meethook replay`).

pub mod artifacts;
pub mod bots;
mod conn;
pub mod control;
mod delivery;
pub mod filter;
pub mod forward;
mod handoff;
pub mod journal;
pub mod observe;
pub mod order;
mod outcomes;
mod proxy;
mod prune;
pub mod recordings;
pub mod replay;
pub mod route;

use std::path::PathBuf;
use std::time::Duration;

use meethook_proto::clock::now_ms;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use conn::ConnSettings;
pub use conn::{speaks_plain_http, ws_url};
use delivery::DeliverySettings;
pub use filter::Filter;
use forward::{Backoff, Forwarder};
use journal::{Journal, JournalError};
pub use observe::{DaemonEvent, Observer, Observers};
pub use order::Order;
use outcomes::OutcomeLog;
pub use route::Route;

/// Everything `meethook listen` is told.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Relay base URL (`http(s)://` or `ws(s)://`).
    pub relay: String,
    /// Channel id.
    pub channel: String,
    /// Channel token.
    pub token: String,
    /// Handler URL of events no route takes (empty: none; they are journaled as unrouted).
    pub forward_to: String,
    /// Journal directory.
    pub data: PathBuf,
    /// Per-request timeout to the handler.
    pub timeout: Duration,
    /// Attempts per event before giving up (0 = forever).
    pub max_attempts: u32,
    /// Retry schedule towards the handler.
    pub backoff: Backoff,
    /// Reconnect schedule towards the relay.
    pub reconnect: Backoff,
    /// Unacked events the relay may send ahead.
    pub window: u32,
    /// Largest event body accepted from the relay.
    pub max_frame: usize,
    /// How often to ping the relay.
    pub ping_interval: Duration,
    /// Drop the connection when the relay is silent this long.
    pub liveness_timeout: Duration,
    /// Extra CA certificate (PEM) to trust for `wss://`.
    pub ca_cert: Option<PathBuf>,
    /// `--events` / `--bot`: the events delivered (the others are skipped).
    pub filter: Filter,
    /// Download final events' recordings into this directory.
    pub save_recordings: Option<PathBuf>,
    /// Largest recording saved.
    pub max_recording_size: u64,
    /// Settled events older than this leave the journal (zero: kept forever).
    pub retention: Duration,
    /// `--dedupe`: an event repeating one received at most this long before it is journaled
    /// and acknowledged but not forwarded (`None`: every event is forwarded).
    pub dedupe: Option<Duration>,
    /// What goes one at a time (`--order`).
    pub order: Order,
    /// Most sends at once under a keyed order (`--parallel`).
    pub parallel: usize,
    /// `[[route]]`s, tried in order before `forward_to`.
    pub routes: Vec<Route>,
}

impl DaemonConfig {
    /// A config with the contract's defaults for everything but the four required settings.
    pub fn new(relay: &str, channel: &str, token: &str, forward_to: &str) -> Self {
        DaemonConfig {
            relay: relay.into(),
            channel: channel.into(),
            token: token.into(),
            forward_to: forward_to.into(),
            data: PathBuf::from("meethook-data"),
            timeout: Duration::from_secs(30),
            max_attempts: 0,
            backoff: Backoff::default(),
            reconnect: Backoff {
                initial: Duration::from_millis(200),
                max: Duration::from_secs(10),
            },
            window: 256,
            // Frames come from an authenticated relay; this only bounds a broken one.
            max_frame: 1 << 30,
            ping_interval: Duration::from_secs(15),
            liveness_timeout: Duration::from_secs(45),
            ca_cert: None,
            filter: Filter::default(),
            save_recordings: None,
            max_recording_size: 4 << 30,
            retention: Duration::from_secs(7 * 86_400),
            dedupe: None,
            order: Order::Channel,
            parallel: 8,
            routes: Vec::new(),
        }
    }

    /// Where events go: each route, then `forward_to` when given.
    fn targets(&self) -> Result<Vec<delivery::Target>, DaemonError> {
        let mut targets = Vec::new();
        for r in &self.routes {
            let timeout = r.timeout.unwrap_or(self.timeout);
            let forwarder = Forwarder::new(&r.forward_to, &self.channel, timeout)
                .map_err(|e| DaemonError::Config(format!("route {:?}: {}", r.name, e.reason())))?;
            targets.push(delivery::Target {
                name: Some(r.name.as_str().into()),
                route: Some(r.clone()),
                forwarder,
                max_attempts: r.max_attempts.unwrap_or(self.max_attempts),
                order: r.order.clone().unwrap_or_else(|| self.order.clone()),
                parallel: r.parallel.unwrap_or(self.parallel),
            });
        }
        if !self.forward_to.is_empty() || targets.is_empty() {
            targets.push(delivery::Target {
                name: None,
                route: None,
                forwarder: Forwarder::new(&self.forward_to, &self.channel, self.timeout)?,
                max_attempts: self.max_attempts,
                order: self.order.clone(),
                parallel: self.parallel,
            });
        }
        Ok(targets)
    }

    /// Each stage's own settings.
    fn stages(&self) -> (ConnSettings, DeliverySettings) {
        let (acked_tx, relay_acked) = watch::channel(None);
        let conn = ConnSettings {
            relay: self.relay.clone(),
            channel: self.channel.clone(),
            token: self.token.clone(),
            reconnect: self.reconnect,
            window: self.window,
            max_frame: self.max_frame,
            ping_interval: self.ping_interval,
            liveness_timeout: self.liveness_timeout,
            ca_cert: self.ca_cert.clone(),
            filter: self.filter.clone(),
            dedupe: self.dedupe.is_some(),
            relay_acked: std::sync::Arc::new(acked_tx),
        };
        let delivery = DeliverySettings {
            channel: self.channel.clone(),
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            filter: self.filter.clone(),
            dedupe: self.dedupe,
            relay_acked,
        };
        (conn, delivery)
    }
}

/// Why the daemon stopped.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A setting is unusable.
    #[error("{0}")]
    Config(String),
    /// The relay refused us for good (token, channel, version).
    #[error("{0}")]
    Rejected(String),
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The handler URL is unusable.
    #[error(transparent)]
    Target(#[from] forward::BadTarget),
    /// The control socket is taken by a live daemon.
    #[error(transparent)]
    Control(#[from] control::ControlError),
    /// A file other than the journal could not be written for want of space.
    #[error("{0}")]
    DiskFull(String),
}

impl DaemonError {
    /// Whether the disk is full: space may come back, and the daemon with it.
    pub fn is_disk_full(&self) -> bool {
        match self {
            DaemonError::DiskFull(_) => true,
            DaemonError::Journal(e) => e.is_disk_full(),
            _ => false,
        }
    }
}

/// Opens the journal and applies the outcome log left by the last run.
fn open_journal(cfg: &DaemonConfig) -> Result<(Journal, OutcomeLog), DaemonError> {
    let log_err = |e: outcomes::LogError| {
        if e.is_disk_full() {
            DaemonError::DiskFull(e.to_string())
        } else {
            DaemonError::Config(e.to_string())
        }
    };
    let journal = Journal::open(&cfg.data)?;
    let (mut log, leftover) = OutcomeLog::open(&cfg.data, &cfg.channel).map_err(log_err)?;
    if !leftover.is_empty() {
        journal.recover(&cfg.channel, &leftover)?;
    }
    log.clear(0).map_err(log_err)?;
    log.clear(1).map_err(log_err)?;
    if !cfg.forward_to.is_empty() {
        journal.set_forward_to(&cfg.channel, &cfg.forward_to)?;
    }
    Ok((journal, log))
}

/// Runs the daemon until `shutdown` is cancelled (returns `Ok`) or a fatal error, reporting
/// to `observers`. A full disk is not fatal: the daemon starts again once there is space
/// (the relay keeps the events; exiting would need a supervisor to come back).
pub async fn run(
    cfg: DaemonConfig,
    observers: Observers,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    let mut wait = Duration::from_millis(500);
    loop {
        match run_once(cfg.clone(), observers.clone(), shutdown.clone()).await {
            Err(e) if e.is_disk_full() && !shutdown.is_cancelled() => {
                tracing::error!(
                    "{e}; starting again in {:.1}s (free some space)",
                    wait.as_secs_f64()
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(10));
            }
            r => return r,
        }
    }
}

/// One run of the daemon, from opening the journal to a stop or an error.
///
/// Two main stages: the connection journals events and hands them to delivery; delivery
/// sends them one at a time, makes each outcome crash-safe (the outcome log) before the next
/// send, so a crash can repeat at most the one event in flight, and publishes the delivered
/// cursor, which the connection acks.
async fn run_once(
    cfg: DaemonConfig,
    observers: Observers,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    let targets = cfg.targets()?;
    conn::ws_url(&cfg.relay, &cfg.channel)?;
    let (journal, log) = open_journal(&cfg)?;
    let (ask_tx, ask_rx) = mpsc::channel(16);
    let endpoint = match control::Endpoint::bind(&cfg.data, &cfg.channel) {
        Ok(e) => Some(e),
        Err(e @ control::ControlError::InUse { .. }) => return Err(e.into()),
        // Delivery matters more than the control socket (a --data path too long for one).
        Err(e) => {
            tracing::warn!(error = %e, "no control socket: `meethook events retry|skip` cannot reach this listener");
            None
        }
    };
    let (conn_settings, delivery_settings) = cfg.stages();
    let (journaled, delivered) = journal.cursors(&cfg.channel)?;
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let (delivered_tx, delivered_rx) = watch::channel(delivered);
    let stop = shutdown.child_token();
    if !cfg.retention.is_zero() {
        let (j, ch, o) = (journal.clone(), cfg.channel.clone(), observers.clone());
        tokio::spawn(prune::prune_loop(j, ch, cfg.retention, o, stop.clone()));
    }
    let recorder = match &cfg.save_recordings {
        Some(dir) => {
            let r = recordings::Recorder::new(
                dir,
                cfg.max_recording_size,
                &cfg.channel,
                observers.clone(),
                journal.clone(),
            )?;
            r.resume().await;
            Some(r)
        }
        None => None,
    };
    let control_task = endpoint
        .map(|e| tokio::spawn(e.serve(journal.clone(), cfg.channel.clone(), ask_tx, stop.clone())));
    let conn_task = tokio::spawn(conn::run(
        conn_settings,
        journal.clone(),
        recorder,
        events_tx,
        delivered_rx,
        observers.clone(),
        stop.clone(),
    ));
    // A task of its own rather than part of this future: on the one-thread runtime, a
    // future polled by `block_on` that wakes itself (an answer read while it sends) costs
    // the runtime an extra look at the sockets per event.
    let worker_task = tokio::spawn({
        let (journal, stop) = (journal.clone(), stop.clone());
        let channels = delivery::Channels {
            targets,
            incoming: events_rx,
            control: ask_rx,
            delivered: delivered_tx,
            journaled,
        };
        async move {
            let r = delivery::run(
                &delivery_settings,
                &journal,
                log,
                channels,
                &observers,
                &stop,
            )
            .await;
            stop.cancel();
            r
        }
    });
    let worker = async {
        let r = match worker_task.await {
            Ok(r) => r,
            Err(e) => Err(DaemonError::Config(format!("delivery task failed: {e}"))),
        };
        stop.cancel();
        r
    };
    // The connection task returns early only on a fatal error; either side stops the other.
    let conn = async {
        let r = match conn_task.await {
            Ok(r) => r,
            Err(e) => Err(DaemonError::Config(format!("connection task failed: {e}"))),
        };
        stop.cancel();
        r
    };
    // The control task ends with the stop and removes its socket.
    let control = async {
        if let Some(t) = control_task {
            let _ = t.await;
        }
    };
    let (w, c, ()) = tokio::join!(worker, conn, control);
    c.and(w)
}

/// Runs a journal call on the blocking pool (for calls that may be long: start-up, scans).
pub(crate) async fn blocking<T: Send + 'static>(
    j: &Journal,
    f: impl FnOnce(&Journal) -> Result<T, JournalError> + Send + 'static,
) -> Result<T, DaemonError> {
    let j = j.clone();
    tokio::task::spawn_blocking(move || f(&j))
        .await
        .map_err(|e| DaemonError::Config(format!("journal task failed: {e}")))?
        .map_err(DaemonError::Journal)
}
