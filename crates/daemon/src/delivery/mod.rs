//! The delivery stage: events one at a time, in seq order, to the handler; retries, user
//! control (`events retry|skip`, pause / resume), and the delivered cursor the connection acks.
//!
//! # Layout
//! - [`run`]: the loop; first what the journal holds as pending, then what the connection
//!   hands over.
//! - `settle`: each outcome made crash-safe before the next send.
//! - `control`: answers to `meethook events retry|skip`.
//! - `keyed`: `--order bot|event-key=…`, in order per key and in parallel across keys.

mod control;
mod keyed;
mod settle;

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meethook_disk::bodyfile::BODY_FILE_MIN;
use meethook_proto::meeting::Summary;
use meethook_proto::Event;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::control::Ask;
use crate::filter::Filter;
use crate::forward::{Backoff, Forwarder, Outcome, Verdict};
use crate::handoff::{committed, Handoff, Insert};
use crate::journal::{Attempt, Journal, Record, State};
use crate::observe::{AttemptReport, DaemonEvent, EventInfo, Observers, SkipReason};
use crate::order::Order;
use crate::outcomes::OutcomeLog;
use crate::route::Route;
use crate::{blocking, now_ms, DaemonError};
use control::{control_answer, Act, Paused, Spot};
use settle::{Settler, FLUSH_IDLE};

/// What the delivery stage is told.
#[derive(Debug, Clone)]
pub(crate) struct DeliverySettings {
    /// The channel (its journal rows).
    pub channel: String,
    /// Attempts per event before giving up (0 = forever).
    pub max_attempts: u32,
    /// Retry schedule towards the handler.
    pub backoff: Backoff,
    /// `--events` / `--bot`.
    pub filter: Filter,
    /// `--dedupe`: repeats of an event received at most this long before are not forwarded.
    pub dedupe: Option<Duration>,
    /// The relay's ack for this listener, from its last `welcome` (`None` before the first):
    /// events up to it were delivered before, whatever the journal lost.
    pub relay_acked: watch::Receiver<Option<u64>>,
}

impl DeliverySettings {
    /// Whether the relay holds this listener's ack for `seq`.
    fn acked_at_relay(&self, seq: u64) -> bool {
        self.relay_acked.borrow().is_some_and(|a| seq <= a)
    }

    /// Before events a previous run left pending are sent, a short wait for the relay's
    /// `welcome`: its ack says which of them were delivered before a power cut took their
    /// outcomes. A relay that does not answer by then does not hold delivery up.
    async fn await_relay_ack(&self, stop: &CancellationToken) {
        let mut rx = self.relay_acked.clone();
        tokio::select! {
            _ = tokio::time::timeout(WELCOME_WAIT, rx.wait_for(Option::is_some)) => {}
            _ = stop.cancelled() => {}
        }
    }
}

/// How long delivery of a pending backlog waits for the relay's `welcome` at start-up.
const WELCOME_WAIT: Duration = Duration::from_secs(3);

/// The delivery stage's ends: the handler, events in, control requests in, the delivered
/// cursor out.
pub(crate) struct Channels {
    /// Where events go: the routes, then `--forward-to` (if given), first match wins.
    pub targets: Vec<Target>,
    /// Events from the connection stage.
    pub incoming: mpsc::UnboundedReceiver<Handoff>,
    /// `meethook events retry|skip` requests.
    pub control: mpsc::Receiver<Ask>,
    /// The highest seq below which everything is settled (the connection acks it).
    pub delivered: watch::Sender<u64>,
    /// The journal's highest seq before the connection started: every event up to it is
    /// journaled, and settled unless pending.
    pub journaled: u64,
}

/// A handler events are routed to, with its delivery rules.
#[derive(Clone)]
pub(crate) struct Target {
    /// The route's name (`None`: `--forward-to`, taken by events no route matches).
    pub name: Option<Arc<str>>,
    /// Which events take it (`None`: any).
    pub route: Option<Route>,
    /// The handler.
    pub forwarder: Forwarder,
    /// Attempts per event before giving up (0 = forever).
    pub max_attempts: u32,
    /// What goes one at a time.
    pub order: Order,
    /// Most sends at once under a keyed order.
    pub parallel: usize,
}

impl Target {
    /// Whether an event with this summary and sub-path takes this target.
    pub(crate) fn takes(&self, summary: Option<&Summary>, path: &str) -> bool {
        self.route.as_ref().is_none_or(|r| r.matches(summary, path))
    }
}

/// How often, at most, the handler's port is tried while it refuses connections.
pub(super) const PROBE_EVERY: Duration = Duration::from_millis(250);

/// Delivers events one at a time, in seq order: first what the journal holds as pending,
/// then what the connection hands over.
pub(crate) async fn run(
    settings: &DeliverySettings,
    journal: &Journal,
    log: OutcomeLog,
    channels: Channels,
    observers: &Observers,
    stop: &CancellationToken,
) -> Result<(), DaemonError> {
    let mut settler = Settler {
        backoff: settings.backoff,
        channel: &settings.channel,
        journal,
        log,
        batch: Vec::new(),
        since: Instant::now(),
        writing: None,
    };
    // One handler for everything, in channel order: today's loop, exactly.
    let plain = matches!(&channels.targets[..], [t] if t.route.is_none() && !t.order.is_keyed());
    let r = if !plain {
        keyed::deliver_keyed(settings, &mut settler, channels, observers, stop).await
    } else {
        deliver(settings, &mut settler, channels, observers, stop).await
    };
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

async fn deliver(
    settings: &DeliverySettings,
    settler: &mut Settler<'_>,
    channels: Channels,
    observers: &Observers,
    stop: &CancellationToken,
) -> Result<(), DaemonError> {
    let Channels {
        targets,
        mut incoming,
        mut control,
        delivered,
        ..
    } = channels;
    let fwd = &targets[0].forwarder;
    let ch = settings.channel.clone();
    // Events left pending by a previous run; their summaries are parsed as they come up.
    let mut queue: VecDeque<(Event, u32)> =
        blocking(settler.journal, move |j| j.pending(&ch, usize::MAX))
            .await?
            .into();
    if !queue.is_empty() {
        settings.await_relay_ack(stop).await;
    }
    let mut last = 0u64;
    // Events the user skipped before their turn (`meethook events skip`).
    let mut marks = BTreeSet::new();
    // `Pause` until `Resume`: no new event is taken up.
    let mut paused = Paused::default();
    'events: loop {
        // Between events a control request is answered at once (a queue check, no syscall).
        while let Ok(ask) = control.try_recv() {
            let at = Spot {
                blocked: None,
                last,
                behind: queue.len() + incoming.len(),
            };
            if control_answer(ask, at, &mut marks, &mut paused, settler, stop)
                .await?
                .is_none()
            {
                return Ok(());
            }
        }
        // Paused: wait here, between events, answering control requests, until resumed.
        if paused.0 {
            if !settler.flush(stop).await? {
                return Ok(());
            }
            while paused.0 {
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    ask = control.recv() => {
                        let Some(ask) = ask else {
                            stop.cancelled().await;
                            return Ok(());
                        };
                        let at = Spot {
                            blocked: None,
                            last,
                            behind: queue.len() + incoming.len(),
                        };
                        if control_answer(ask, at, &mut marks, &mut paused, settler, stop)
                            .await?
                            .is_none()
                        {
                            return Ok(());
                        }
                    }
                }
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
                            if control_answer(ask, at, &mut marks, &mut paused, settler, stop).await?.is_none() {
                                return Ok(());
                            }
                            if paused.0 {
                                continue 'events;
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
            None if !settings.filter.is_active() && ev.body.len() >= BODY_FILE_MIN => {
                let body = ev.body.clone();
                later = Some(tokio::task::spawn_blocking(move || Summary::parse(&body)));
                None
            }
            None => Summary::parse(&ev.body),
        };
        let skipped_by_user = !marks.is_empty() && marks.remove(&ev.seq);
        let repeat = match settings.dedupe {
            Some(window) => {
                repeat_within(settler.journal, &settings.channel, ev.seq, window).await?
            }
            None => None,
        };
        let acked_before = settings.acked_at_relay(ev.seq);
        if skipped_by_user
            || acked_before
            || repeat.is_some()
            || !settings.filter.wants(summary.as_ref())
        {
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
            let reason = if acked_before {
                SkipReason::AckedBefore
            } else if skipped_by_user {
                SkipReason::User
            } else if let Some(of) = repeat {
                SkipReason::Duplicate { of }
            } else {
                SkipReason::Filtered
            };
            let event = EventInfo::of(&ev, summary);
            if !skip(settler, observers, event, reason, attempts, stop).await? {
                return Ok(());
            }
            delivered.send_replace(ev.seq);
            continue;
        }
        // Built once the summary is known (after the first send for a big body).
        let mut info: Option<Arc<EventInfo>> = None;
        // Retries are in this loop, so N+1 never starts before N is settled.
        'attempts: loop {
            attempts += 1;
            let started_at_ms = now_ms();
            observers.emit(DaemonEvent::AttemptStarted {
                seq: ev.seq,
                attempt: attempts,
            });
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
            let event = info
                .get_or_insert_with(|| EventInfo::of(&ev, summary.take()))
                .clone();
            let refused = outcome.refused;
            let (r, next_retry) = conclude(
                (settings.max_attempts, settings.backoff),
                observers,
                event,
                outcome,
                (attempts, started_at_ms),
                queue.len() + incoming.len(),
            );
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
                        match control_answer(ask, at, &mut marks, &mut paused, settler, stop).await? {
                            None => return Ok(()),
                            Some(Act::Stay) => {}
                            Some(Act::RetryNow) => break,
                            Some(Act::Skip) => {
                                let event = info.clone().expect("built at the first attempt");
                                if !skip(settler, observers, event, SkipReason::User, attempts, stop).await? {
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

/// `--dedupe`: the event `seq` repeats, if it repeats one received at most `window` before.
async fn repeat_within(
    journal: &Journal,
    channel: &str,
    seq: u64,
    window: Duration,
) -> Result<Option<u64>, DaemonError> {
    let ch = channel.to_string();
    let found = blocking(journal, move |j| j.duplicate_of(&ch, seq)).await?;
    Ok(found.and_then(|(of, after_ms)| (after_ms <= window.as_millis() as i64).then_some(of)))
}

/// What one attempt's outcome comes to, under `max_attempts` and `backoff`: the notices to
/// the observers, the record to settle, and when the next attempt goes (`None` once
/// settled). `behind`: events held behind it.
fn conclude(
    (max_attempts, backoff): (u32, Backoff),
    observers: &Observers,
    event: Arc<EventInfo>,
    outcome: Outcome,
    (attempts, started_at_ms): (u32, i64),
    behind: usize,
) -> (Record, Option<Duration>) {
    let verdict = outcome.verdict();
    let out_of_attempts = max_attempts > 0 && attempts >= max_attempts;
    let state = match verdict {
        Verdict::Delivered => Some(State::Delivered),
        Verdict::Failed => Some(State::Failed),
        Verdict::Retry if out_of_attempts => Some(State::Failed),
        Verdict::Retry => None,
    };
    let next_retry = state.is_none().then(|| backoff.after(attempts, &outcome));
    let behind = next_retry.map_or(0, |_| behind);
    let report = AttemptReport::of(&outcome, attempts, next_retry, behind);
    let (seq, route) = (event.seq, event.route.clone());
    observers.emit(DaemonEvent::AttemptFinished {
        event: event.clone(),
        report,
    });
    match state {
        Some(State::Delivered) => observers.emit(DaemonEvent::Delivered { event, attempts }),
        Some(_) => observers.emit(DaemonEvent::GaveUp { event, attempts }),
        None => {}
    }
    let attempt = Attempt {
        attempt: attempts,
        started_at_ms,
        latency: outcome.latency,
        status: outcome.status,
        error: outcome.error,
        response_head: outcome.response_head,
        response_headers: outcome.response_headers,
        truncated: outcome.truncated,
        replay: false,
    };
    let r = Record {
        seq,
        attempt: Some(attempt),
        state,
        route,
    };
    (r, next_retry)
}

/// Settles `event` as skipped, and says so. `Ok(false)` when stopped first.
async fn skip(
    settler: &mut Settler<'_>,
    observers: &Observers,
    event: Arc<EventInfo>,
    reason: SkipReason,
    attempts: u32,
    stop: &CancellationToken,
) -> Result<bool, DaemonError> {
    let (seq, route) = (event.seq, event.route.clone());
    observers.emit(DaemonEvent::Skipped {
        event,
        reason,
        attempts,
    });
    let state = match reason {
        SkipReason::AckedBefore => State::Delivered,
        _ => State::Skipped,
    };
    let r = Record {
        seq,
        attempt: None,
        state: Some(state),
        route,
    };
    settler.settle(r, stop).await
}
