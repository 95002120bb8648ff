//! The listen daemon: holds the relay websocket, journals every event, delivers each one to
//! the local handler in seq order, one at a time, and acks only what is delivered.
//!
//! # Layout
//! - [`run`]: starts the connection task and the delivery loop; returns on shutdown or a
//!   fatal error (bad token, unknown channel).
//! - `conn`: the relay connection (hello, journaling, acks, pings, reconnects).
//! - [`journal`]: the local SQLite journal of events and attempts.
//! - [`deliver`]: one HTTP attempt to the handler and the retry rules.
//! - [`output`]: the line printed per event.

mod conn;
pub mod deliver;
pub mod journal;
pub mod output;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use conn::ws_url;
use deliver::{Backoff, Forwarder, Verdict};
use journal::{Attempt, Journal, JournalError, State};
use output::{Line, Printer};

/// Everything `meethook listen` is told.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Relay base URL (`http(s)://` or `ws(s)://`).
    pub relay: String,
    /// Channel id.
    pub channel: String,
    /// Channel token.
    pub token: String,
    /// Handler URL.
    pub forward_to: String,
    /// Journal directory.
    pub data: PathBuf,
    /// Per-request timeout to the handler.
    pub timeout: Duration,
    /// Attempts per event before giving up (0 = forever).
    pub max_attempts: u32,
    /// Print JSON lines.
    pub json: bool,
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
            json: false,
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
        }
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
    Target(#[from] deliver::BadTarget),
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Runs the daemon until `shutdown` is cancelled (returns `Ok`) or a fatal error.
pub async fn run(cfg: DaemonConfig, shutdown: CancellationToken) -> Result<(), DaemonError> {
    let forwarder = Forwarder::new(&cfg.forward_to, &cfg.channel, cfg.timeout)?;
    conn::ws_url(&cfg.relay, &cfg.channel)?;
    let journal = Journal::open(&cfg.data)?;
    let cfg = Arc::new(cfg);
    let (_, delivered) = journal.cursors(&cfg.channel)?;
    let (journaled_tx, journaled_rx) = watch::channel(0u64);
    let (delivered_tx, delivered_rx) = watch::channel(delivered);
    let stop = shutdown.child_token();
    let conn_task = tokio::spawn(conn::run(
        cfg.clone(),
        journal.clone(),
        journaled_tx,
        delivered_rx,
        stop.clone(),
    ));
    let worker = async {
        let r = deliver_loop(
            &cfg,
            &journal,
            &forwarder,
            journaled_rx,
            delivered_tx,
            &stop,
        )
        .await;
        stop.cancel();
        r
    };
    // The connection task returns early only on a fatal error; either side stops the other.
    let conn = async {
        let r = wait_conn(conn_task).await;
        stop.cancel();
        r
    };
    let (w, c) = tokio::join!(worker, conn);
    c.and(w)
}

async fn wait_conn(
    task: tokio::task::JoinHandle<Result<(), DaemonError>>,
) -> Result<(), DaemonError> {
    match task.await {
        Ok(r) => r,
        Err(e) => Err(DaemonError::Config(format!("connection task failed: {e}"))),
    }
}

async fn blocking<T: Send + 'static>(
    j: &Journal,
    f: impl FnOnce(&Journal) -> Result<T, JournalError> + Send + 'static,
) -> Result<T, DaemonError> {
    let j = j.clone();
    tokio::task::spawn_blocking(move || f(&j))
        .await
        .map_err(|e| DaemonError::Config(format!("journal task failed: {e}")))?
        .map_err(DaemonError::Journal)
}

/// Delivers pending events one at a time, in seq order; publishes the delivered cursor.
async fn deliver_loop(
    cfg: &DaemonConfig,
    journal: &Journal,
    fwd: &Forwarder,
    mut journaled_rx: watch::Receiver<u64>,
    delivered_tx: watch::Sender<u64>,
    stop: &CancellationToken,
) -> Result<(), DaemonError> {
    let printer = Printer { json: cfg.json };
    loop {
        journaled_rx.borrow_and_update();
        let ch = cfg.channel.clone();
        let next = blocking(journal, move |j| j.first_pending(&ch)).await?;
        let Some((ev, mut attempts)) = next else {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                r = journaled_rx.changed() => if r.is_err() {
                    // The connection task is gone; wait for the stop it triggered.
                    stop.cancelled().await;
                    return Ok(());
                },
            }
            continue;
        };
        // Retries are in this loop, so N+1 never starts before N is settled.
        let final_state = loop {
            attempts += 1;
            let started_at_ms = now_ms();
            let outcome = fwd.send(&ev, attempts, false).await;
            let verdict = outcome.verdict();
            let out_of_attempts = cfg.max_attempts > 0 && attempts >= cfg.max_attempts;
            let state = match verdict {
                Verdict::Delivered => Some(State::Delivered),
                Verdict::Failed => Some(State::Failed),
                Verdict::Retry if out_of_attempts => Some(State::Failed),
                Verdict::Retry => None,
            };
            let next_retry = state
                .is_none()
                .then(|| cfg.backoff.delay(attempts, outcome.retry_after));
            let attempt = Attempt {
                attempt: attempts,
                started_at_ms,
                latency: outcome.latency,
                status: outcome.status,
                error: outcome.error.clone(),
                response_head: outcome.response_head.clone(),
                replay: false,
            };
            let ch = cfg.channel.clone();
            let seq = ev.seq;
            // A journal that cannot record the outcome must not ack: keep trying to record.
            let mut record_failures = 0u32;
            loop {
                let (ch, a) = (ch.clone(), attempt.clone());
                match blocking(journal, move |j| j.record(&ch, seq, &a, state)).await {
                    Ok(()) => break,
                    Err(e) => {
                        record_failures += 1;
                        tracing::error!(seq, error = %e, "cannot record delivery outcome; not acking");
                        tokio::select! {
                            _ = stop.cancelled() => return Ok(()),
                            _ = tokio::time::sleep(cfg.backoff.delay(record_failures, None)) => {}
                        }
                    }
                }
            }
            printer.print(
                &ev,
                Line::Attempt {
                    outcome: &outcome,
                    attempt: attempts,
                    next_retry,
                },
            );
            if verdict == Verdict::Retry && out_of_attempts {
                printer.print(&ev, Line::GaveUp { attempts });
            }
            match (state, next_retry) {
                (Some(s), _) => break s,
                (None, Some(delay)) => {
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                (None, None) => unreachable!("a retry always has a delay"),
            }
        };
        tracing::debug!(seq = ev.seq, state = ?final_state, "settled");
        delivered_tx.send_replace(ev.seq);
        if stop.is_cancelled() {
            return Ok(());
        }
    }
}
