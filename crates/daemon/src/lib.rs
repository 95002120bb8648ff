//! The listen daemon: holds the relay websocket, journals every event, delivers each one to
//! the local handler in seq order, one at a time, and acks only what is delivered.
//!
//! # Layout
//! - [`run`]: starts the connection task and the delivery loop; returns on shutdown or a
//!   fatal error (bad token, unknown channel).
//! - `conn`: the relay connection (hello, journaling, acks, pings, reconnects).
//! - [`control`]: the control socket (`meethook events retry|skip SEQ`).
//! - [`journal`]: the local SQLite journal of events and attempts.
//! - [`deliver`]: one HTTP attempt to the handler and the retry rules.
//! - [`output`]: the line printed per event.
//! - `prune`: `--retention`, the journal's periodic pruning.
//! - [`recordings`]: `--save-recordings`, background downloads of final events' recordings.
//! - [`replay`]: re-sending journaled events to a handler (`meethook replay`).

mod conn;
pub mod control;
pub mod deliver;
pub mod journal;
mod outcomes;
pub mod output;
mod prune;
pub mod recordings;
pub mod replay;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::{BTreeSet, VecDeque};

use meethook_disk::bodyfile::BODY_FILE_MIN;
use meethook_proto::clock::now_ms;
use meethook_proto::meeting::Summary;
use meethook_proto::Event;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

pub use conn::{speaks_plain_http, ws_url};
use control::{Ask, Did, Reply, Request};
use deliver::{Backoff, Forwarder, Verdict};
use journal::{Attempt, Journal, JournalError, Record, State};
use outcomes::OutcomeLog;
use output::{Blocked, Line, Printer};

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
    /// Deliver only these event types (`bot.status_change`, `bot.*`); empty = all.
    pub events: Vec<String>,
    /// Deliver only events of bots whose id starts with one of these; empty = all.
    pub bots: Vec<String>,
    /// Download final events' recordings into this directory.
    pub save_recordings: Option<PathBuf>,
    /// Largest recording saved.
    pub max_recording_size: u64,
    /// Settled events older than this leave the journal (zero: kept forever).
    pub retention: Duration,
}

impl DaemonConfig {
    /// Whether `--events` or `--bot` filters events (delivery then needs each summary first).
    fn filtering(&self) -> bool {
        !self.events.is_empty() || !self.bots.is_empty()
    }

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
            events: Vec::new(),
            bots: Vec::new(),
            save_recordings: None,
            max_recording_size: 4 << 30,
            retention: Duration::from_secs(7 * 86_400),
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
    /// The control socket is taken by a live daemon.
    #[error(transparent)]
    Control(#[from] control::ControlError),
}

/// Runs the daemon until `shutdown` is cancelled (returns `Ok`) or a fatal error.
///
/// Two tasks: the connection journals events and hands them to the delivery loop; the
/// delivery loop sends them one at a time, makes each outcome crash-safe (the outcome log)
/// before the next send, so a crash can repeat at most the one event in flight, and
/// publishes the delivered cursor, which the connection acks.
pub async fn run(cfg: DaemonConfig, shutdown: CancellationToken) -> Result<(), DaemonError> {
    let forwarder = Forwarder::new(&cfg.forward_to, &cfg.channel, cfg.timeout)?;
    conn::ws_url(&cfg.relay, &cfg.channel)?;
    let journal = Journal::open(&cfg.data)?;
    let log_err = |e: outcomes::LogError| DaemonError::Config(e.to_string());
    let (mut log, leftover) = OutcomeLog::open(&cfg.data, &cfg.channel).map_err(log_err)?;
    if !leftover.is_empty() {
        journal.recover(&cfg.channel, &leftover)?;
    }
    log.clear(0).map_err(log_err)?;
    log.clear(1).map_err(log_err)?;
    journal.set_forward_to(&cfg.channel, &cfg.forward_to)?;
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
    let cfg = Arc::new(cfg);
    let (_, delivered) = journal.cursors(&cfg.channel)?;
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let (delivered_tx, delivered_rx) = watch::channel(delivered);
    let stop = shutdown.child_token();
    if !cfg.retention.is_zero() {
        let (j, ch) = (journal.clone(), cfg.channel.clone());
        tokio::spawn(prune::prune_loop(j, ch, cfg.retention, stop.clone()));
    }
    let recorder = match &cfg.save_recordings {
        Some(dir) => {
            let r = recordings::Recorder::new(
                dir,
                cfg.max_recording_size,
                &cfg.channel,
                Printer {
                    json: cfg.json,
                    buffered: !std::io::stdout().is_terminal(),
                },
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
        cfg.clone(),
        journal.clone(),
        recorder,
        events_tx,
        delivered_rx,
        stop.clone(),
    ));
    // A task of its own rather than part of this future: on the one-thread runtime, a
    // future polled by `block_on` that wakes itself (an answer read while it sends) costs
    // the runtime an extra look at the sockets per event.
    let worker_task = tokio::spawn({
        let (cfg, journal, stop) = (cfg.clone(), journal.clone(), stop.clone());
        async move {
            let r = deliver_loop(
                &cfg,
                &journal,
                log,
                &forwarder,
                events_rx,
                ask_rx,
                delivered_tx,
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
    let (w, c, (), ()) = tokio::join!(worker, conn, output::flush_lines(stop.clone()), control);
    // Lines printed after the stop (an attempt that was in flight) are still written.
    output::flush_now();
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

/// Whether `listen --events/--bot` lets an event through.
fn wanted(cfg: &DaemonConfig, summary: Option<&Summary>) -> bool {
    let matches = |pattern: &str, value: &str| match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => value == pattern,
    };
    let event_ok = cfg.events.is_empty()
        || summary.is_some_and(|s| cfg.events.iter().any(|p| matches(p, &s.event)));
    let bot_ok = cfg.bots.is_empty()
        || summary
            .and_then(|s| s.bot_id.as_deref())
            .is_some_and(|b| cfg.bots.iter().any(|p| b.starts_with(p.as_str())));
    event_ok && bot_ok
}

/// Outcomes on their way to the journal: in the outcome log at once (one `write`, before the
/// next send), in SQLite in batches written behind delivery on the blocking pool.
struct Settler<'a> {
    cfg: &'a DaemonConfig,
    journal: &'a Journal,
    log: OutcomeLog,
    batch: Vec<Record>,
    since: Instant,
    /// The batch being written to the journal, and the log file that holds it.
    writing: Option<(Writing, usize)>,
}

/// An event on its way from the connection to delivery, with its summary once parsed
/// (`None`: not parsed yet) and, when handed over before its journal insert committed,
/// where that insert's outcome will show.
type Handoff = (Event, Option<Option<Summary>>, Option<Journaled>);

/// How an early-handed batch's journal insert ended (`None` while it runs).
type Journaled = watch::Receiver<Option<Insert>>;

/// The end of an early-handed batch's journal insert.
#[derive(Debug, Clone)]
enum Insert {
    /// Committed; for a batch handed over unparsed, each event's summary (ascending seqs).
    Committed(Arc<Vec<(u64, Option<Summary>)>>),
    /// Not stored: the relay sends the batch again.
    Failed,
}

/// Waits for an early-handed event's journal insert: the event's summary once committed,
/// `None` when the insert failed (or was dropped).
async fn committed(mut journaled: Journaled, seq: u64) -> Option<Option<Summary>> {
    let end = journaled.wait_for(Option::is_some).await.ok()?.clone();
    match end {
        Some(Insert::Committed(summaries)) => Some(
            summaries
                .binary_search_by_key(&seq, |(s, _)| *s)
                .ok()
                .and_then(|i| summaries[i].1.clone()),
        ),
        _ => None,
    }
}

type Writing = tokio::task::JoinHandle<(Vec<Record>, Result<(), JournalError>)>;

/// Most outcomes written to the journal in one transaction.
const FLUSH_BATCH: usize = 256;
/// How long the delivery loop waits for more events before writing outcomes to the journal.
const FLUSH_IDLE: Duration = Duration::from_millis(50);
/// Longest an outcome waits for the journal while events keep coming.
const FLUSH_AFTER: Duration = Duration::from_millis(200);

impl Settler<'_> {
    /// Makes an outcome survive a crash before the caller moves on; retries while the disk
    /// refuses it (nothing is acked meanwhile). `Ok(false)` when stopped first.
    async fn settle(&mut self, r: Record, stop: &CancellationToken) -> Result<bool, DaemonError> {
        let mut failures = 0u32;
        while let Err(e) = self.log.append(&r) {
            failures += 1;
            tracing::error!(seq = r.seq, error = %e, "cannot record the delivery outcome; not acking until it works");
            tokio::select! {
                _ = stop.cancelled() => return Ok(false),
                _ = tokio::time::sleep(self.cfg.backoff.delay(failures, None)) => {}
            }
        }
        if self.batch.is_empty() {
            self.since = Instant::now();
        }
        self.batch.push(r);
        if self.batch.len() >= FLUSH_BATCH || self.since.elapsed() >= FLUSH_AFTER {
            return self.write_behind(stop).await;
        }
        Ok(true)
    }

    /// Hands the batch to the blocking pool and goes on: the outcome log holds it meanwhile.
    /// While the previous batch is still being written, the batch just keeps growing.
    async fn write_behind(&mut self, stop: &CancellationToken) -> Result<bool, DaemonError> {
        if self.writing.as_ref().is_some_and(|(h, _)| !h.is_finished()) {
            return Ok(true);
        }
        if !self.finish_writing(stop).await? {
            return Ok(false);
        }
        self.start_writing();
        Ok(true)
    }

    /// Starts writing the batch on the blocking pool, new outcomes going to the other file.
    /// If the other file cannot be emptied the batch stays (and keeps growing) where it is.
    fn start_writing(&mut self) {
        let file = match self.log.rotate() {
            Ok(file) => file,
            Err(e) => {
                tracing::warn!(error = %e, "cannot empty the outcome log; trying again later");
                return;
            }
        };
        let batch = std::mem::take(&mut self.batch);
        self.writing = Some((record_behind(self.journal, &self.cfg.channel, batch), file));
    }

    /// Waits for the batch being written (writing it again if that failed), then empties
    /// its log file. `Ok(false)` when stopped first (the log still holds it).
    async fn finish_writing(&mut self, stop: &CancellationToken) -> Result<bool, DaemonError> {
        let Some((task, file)) = self.writing.take() else {
            return Ok(true);
        };
        let mut failures = 0u32;
        let (mut batch, mut r) = join_record(task).await?;
        // Disk full or similar: delivery waits, so nothing more is acked meanwhile.
        while let Err(e) = r {
            failures += 1;
            tracing::error!(error = %e, "cannot write delivery outcomes to the journal; retrying");
            tokio::select! {
                _ = stop.cancelled() => {
                    // Still pending: its log file must not be emptied or reused before the
                    // batch is written, so a later flush waits for this attempt.
                    self.writing = Some((record_behind(self.journal, &self.cfg.channel, batch), file));
                    return Ok(false);
                }
                _ = tokio::time::sleep(self.cfg.backoff.delay(failures, None)) => {}
            }
            (batch, r) = join_record(record_behind(self.journal, &self.cfg.channel, batch)).await?;
        }
        if let Err(e) = self.log.clear(file) {
            tracing::warn!(error = %e, "cannot empty the outcome log; it is applied again at start-up");
        }
        Ok(true)
    }

    /// Brings the journal up to date with every outcome so far, and empties the log.
    /// `Ok(false)` when stopped first (the log still holds what is missing).
    async fn flush(&mut self, stop: &CancellationToken) -> Result<bool, DaemonError> {
        if !self.finish_writing(stop).await? {
            return Ok(false);
        }
        if !self.batch.is_empty() {
            self.start_writing();
        }
        self.finish_writing(stop).await
    }
}

/// Writes outcomes to the journal on the blocking pool; the task hands the batch back.
fn record_behind(journal: &Journal, channel: &str, batch: Vec<Record>) -> Writing {
    let (j, ch) = (journal.clone(), channel.to_string());
    tokio::task::spawn_blocking(move || {
        let r = j.record_many(&ch, &batch);
        (batch, r)
    })
}

async fn join_record(
    task: Writing,
) -> Result<(Vec<Record>, Result<(), JournalError>), DaemonError> {
    task.await
        .map_err(|e| DaemonError::Config(format!("journal task failed: {e}")))
}

/// Delivers events one at a time, in seq order: first what the journal holds as pending,
/// then what the connection hands over.
#[allow(clippy::too_many_arguments)]
async fn deliver_loop(
    cfg: &DaemonConfig,
    journal: &Journal,
    log: OutcomeLog,
    fwd: &Forwarder,
    incoming: mpsc::UnboundedReceiver<Handoff>,
    control: mpsc::Receiver<Ask>,
    delivered: watch::Sender<u64>,
    stop: &CancellationToken,
) -> Result<(), DaemonError> {
    let mut settler = Settler {
        cfg,
        journal,
        log,
        batch: Vec::new(),
        since: Instant::now(),
        writing: None,
    };
    let r = deliver(cfg, &mut settler, fwd, incoming, control, delivered, stop).await;
    // One try, without retries: what is not written here is applied from the log at the
    // next start.
    let no_retries = CancellationToken::new();
    no_retries.cancel();
    if !matches!(settler.flush(&no_retries).await, Ok(true)) {
        tracing::warn!(
            "delivery outcomes left in the outcome log; they are applied at the next start"
        );
    }
    r
}

/// How often, at most, the handler's port is tried while it refuses connections.
const PROBE_EVERY: Duration = Duration::from_millis(250);

/// What the delivery loop does after answering a control request.
enum Act {
    /// Nothing changes.
    Stay,
    /// Send the blocked event now.
    RetryNow,
    /// Give up on the blocked event.
    Skip,
}

/// Where the delivery loop stands, for answering control requests.
struct Spot {
    /// The event waiting for its next retry, if any.
    blocked: Option<u64>,
    /// The last event taken up (settled unless it is the blocked one).
    last: u64,
    /// Events held behind it.
    behind: usize,
}

/// Answers a control request. `Ok(None)` when stopped first.
async fn control_answer(
    ask: Ask,
    at: Spot,
    marks: &mut BTreeSet<u64>,
    settler: &mut Settler<'_>,
    stop: &CancellationToken,
) -> Result<Option<Act>, DaemonError> {
    let (did, act) = match ask.request {
        Request::Status => (Did::Nothing, Act::Stay),
        Request::Retry { seq } if at.blocked == Some(seq) => (Did::Retrying, Act::RetryNow),
        Request::Skip { seq } if at.blocked == Some(seq) => (Did::Skipped, Act::Skip),
        Request::Retry { seq } | Request::Skip { seq } if seq <= at.last => {
            // Settled here: the journal must say how before the endpoint reads it.
            if !settler.flush(stop).await? {
                return Ok(None);
            }
            (Did::Settled, Act::Stay)
        }
        Request::Retry { .. } => (Did::Queued, Act::Stay),
        Request::Skip { seq } => {
            marks.insert(seq);
            (Did::Marked, Act::Stay)
        }
    };
    let reply = Reply {
        did,
        blocked: at.blocked,
        waiting_behind: at.behind as u64,
    };
    let _ = ask.reply.send(reply);
    Ok(Some(act))
}

/// ` --data DIR` for the commands a retry line suggests, empty when their default applies.
fn data_arg(data: &std::path::Path) -> String {
    let default = std::env::var_os("MEETHOOK_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("./meethook-data"));
    let plain = |p: &std::path::Path| p.strip_prefix(".").unwrap_or(p).to_path_buf();
    if plain(data) == plain(&default) {
        String::new()
    } else {
        format!(" --data {}", data.display())
    }
}

async fn deliver(
    cfg: &DaemonConfig,
    settler: &mut Settler<'_>,
    fwd: &Forwarder,
    mut incoming: mpsc::UnboundedReceiver<Handoff>,
    mut control: mpsc::Receiver<Ask>,
    delivered: watch::Sender<u64>,
    stop: &CancellationToken,
) -> Result<(), DaemonError> {
    let printer = Printer {
        json: cfg.json,
        buffered: !std::io::stdout().is_terminal(),
    };
    let data_arg = data_arg(&cfg.data);
    let ch = cfg.channel.clone();
    // Events left pending by a previous run; their summaries are parsed as they come up.
    let mut queue: VecDeque<(Event, u32)> =
        blocking(settler.journal, move |j| j.pending(&ch, usize::MAX))
            .await?
            .into();
    let mut last = 0u64;
    // Events the user skipped before their turn (`meethook events skip`).
    let mut marks = BTreeSet::new();
    'events: loop {
        // Between events a control request is answered at once (a queue check, no syscall).
        while let Ok(ask) = control.try_recv() {
            let at = Spot {
                blocked: None,
                last,
                behind: queue.len() + incoming.len(),
            };
            if control_answer(ask, at, &mut marks, settler, stop)
                .await?
                .is_none()
            {
                return Ok(());
            }
        }
        let (ev, mut attempts, parsed, mut journaled) = match queue.pop_front() {
            Some((ev, attempts)) => (ev, attempts, None, None),
            None => {
                // Nothing waiting: outcomes go to the journal once the lull lasts (they are
                // safe in the outcome log already), not after every event of a slow trickle.
                let idle_flush = tokio::time::sleep(FLUSH_IDLE);
                tokio::pin!(idle_flush);
                let next = loop {
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        ev = incoming.recv() => break ev,
                        _ = &mut idle_flush, if !settler.batch.is_empty() => {
                            if !settler.flush(stop).await? {
                                return Ok(());
                            }
                        }
                        Some(ask) = control.recv() => {
                            let at = Spot { blocked: None, last, behind: 0 };
                            if control_answer(ask, at, &mut marks, settler, stop).await?.is_none() {
                                return Ok(());
                            }
                        }
                    }
                };
                match next {
                    Some((ev, summary, journaled)) => (ev, 0, summary, journaled),
                    // The connection task is gone; wait for the stop it triggered.
                    None => {
                        stop.cancelled().await;
                        return Ok(());
                    }
                }
            }
        };
        // The journal and the connection can both hand over the same event at start-up.
        if ev.seq <= last {
            continue;
        }
        // The rest of a batch whose journal insert failed: the relay sends it again.
        if journaled
            .as_ref()
            .is_some_and(|j| matches!(*j.borrow(), Some(Insert::Failed)))
        {
            continue;
        }
        last = ev.seq;
        // A big body handed over before the journal parsed it gets its summary from the
        // journal's insert (awaited after the first send anyway). One found pending at
        // start-up is parsed beside its first send, unless a filter needs its summary first.
        let mut later = None;
        let mut summary = match parsed {
            Some(summary) => summary,
            None if journaled.is_some() => None,
            None if !cfg.filtering() && ev.body.len() >= BODY_FILE_MIN => {
                let body = ev.body.clone();
                later = Some(tokio::task::spawn_blocking(move || Summary::parse(&body)));
                None
            }
            None => Summary::parse(&ev.body),
        };
        let skipped_by_user = !marks.is_empty() && marks.remove(&ev.seq);
        if skipped_by_user || !wanted(cfg, summary.as_ref()) {
            // An early-handed event's outcome may only be recorded once it is journaled.
            if let Some(j) = journaled.take() {
                if committed(j, ev.seq).await.is_none() {
                    // The relay sends it again; the user's skip still applies then.
                    if skipped_by_user {
                        marks.insert(ev.seq);
                    }
                    last = ev.seq - 1;
                    continue;
                }
            }
            let line = if skipped_by_user {
                Line::SkippedByUser { attempts }
            } else {
                Line::Skipped
            };
            printer.print(&ev, summary.as_ref(), line);
            let r = Record {
                seq: ev.seq,
                attempt: None,
                state: Some(State::Skipped),
            };
            if !settler.settle(r, stop).await? {
                return Ok(());
            }
            delivered.send_replace(ev.seq);
            continue;
        }
        // Retries are in this loop, so N+1 never starts before N is settled.
        'attempts: loop {
            attempts += 1;
            let started_at_ms = now_ms();
            let outcome = fwd.send(&ev, attempts, false).await;
            if let Some(parsing) = later.take() {
                summary = parsing.await.unwrap_or(None);
            }
            // Handed over early: its outcome may only be recorded once the event is journaled.
            let mut stored = true;
            if let Some(j) = journaled.take() {
                match committed(j, ev.seq).await {
                    Some(parsed) => summary = summary.or(parsed),
                    None => stored = false,
                }
            }
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
                .then(|| cfg.backoff.after(attempts, &outcome));
            let line = Line::Attempt {
                outcome: &outcome,
                attempt: attempts,
                next_retry,
            };
            match next_retry {
                None => printer.print(&ev, summary.as_ref(), line),
                // Held up: say what waits behind it and how to move on.
                Some(_) => {
                    let blocked = Blocked {
                        waiting_behind: queue.len() + incoming.len(),
                        data_arg: &data_arg,
                    };
                    printer.print_blocked(&ev, summary.as_ref(), line, blocked);
                }
            }
            let refused = outcome.refused;
            let attempt = Attempt {
                attempt: attempts,
                started_at_ms,
                latency: outcome.latency,
                status: outcome.status,
                error: outcome.error,
                response_head: outcome.response_head,
                replay: false,
            };
            let r = Record {
                seq: ev.seq,
                attempt: Some(attempt),
                state,
            };
            if !stored {
                tracing::warn!(
                    seq = ev.seq,
                    "the journal could not store this event; it is delivered again when the relay resends it"
                );
                last = ev.seq - 1;
                continue 'events;
            }
            if !settler.settle(r, stop).await? {
                return Ok(());
            }
            let Some(delay) = next_retry else {
                break;
            };
            // The handler is struggling: show the attempts in `events show` now.
            if !settler.flush(stop).await? {
                return Ok(());
            }
            let wake = tokio::time::Instant::now() + delay;
            // Nothing listened on the handler's port: try it often, to retry once it is back.
            let mut probe = refused.then(|| {
                let first = tokio::time::Instant::now() + PROBE_EVERY;
                tokio::time::interval_at(first, PROBE_EVERY)
            });
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep_until(wake) => break,
                    Some(ask) = control.recv() => {
                        let at = Spot {
                            blocked: Some(ev.seq),
                            last,
                            behind: queue.len() + incoming.len(),
                        };
                        match control_answer(ask, at, &mut marks, settler, stop).await? {
                            None => return Ok(()),
                            Some(Act::Stay) => {}
                            Some(Act::RetryNow) => break,
                            Some(Act::Skip) => {
                                printer.print(&ev, summary.as_ref(), Line::SkippedByUser { attempts });
                                let r = Record {
                                    seq: ev.seq,
                                    attempt: None,
                                    state: Some(State::Skipped),
                                };
                                if !settler.settle(r, stop).await? {
                                    return Ok(());
                                }
                                break 'attempts;
                            }
                        }
                    }
                    _ = async { probe.as_mut().expect("probing").tick().await }, if probe.is_some() => {
                        if fwd.probe(PROBE_EVERY).await {
                            break;
                        }
                    }
                }
            }
        }
        delivered.send_replace(ev.seq);
        if stop.is_cancelled() {
            return Ok(());
        }
    }
}
