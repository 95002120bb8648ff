//! What the daemon reports as it works: typed [`DaemonEvent`]s, handed to [`Observer`]s.
//!
//! The daemon never prints. The cli's terminal lines and `--json` lines are observers, and so
//! is anything else that wants to follow a listener (the browser inspector's live stream):
//! adding one is a matter of subscribing, not of touching the delivery loop. Observers are
//! called synchronously on the daemon's tasks, so they must be quick (format a line, push to
//! a buffer or a channel) and never block.

use std::sync::Arc;
use std::time::Duration;

use meethook_proto::meeting::Summary;
use meethook_proto::Event;

use crate::forward::{Outcome, Verdict};

/// What a notice says about the event it concerns: built once per delivered event and
/// shared by every notice about it.
#[derive(Debug, Clone)]
pub struct EventInfo {
    /// The event's seq in its channel.
    pub seq: u64,
    /// When the relay received it (ms since the Unix epoch).
    pub received_at_ms: i64,
    /// HTTP method the sender used.
    pub method: String,
    /// Sub-path the webhook came in on (`/x?y=1`, or empty).
    pub path: String,
    /// The Meeting BaaS summary, when the body is a Meeting BaaS webhook.
    pub summary: Option<Summary>,
    /// The `[[route]]` it goes to (`None`: `--forward-to`, or no routes).
    pub route: Option<Arc<str>>,
}

impl EventInfo {
    /// The info of `ev`, with its summary when known.
    pub fn of(ev: &Event, summary: Option<Summary>) -> Arc<EventInfo> {
        EventInfo::routed(ev, summary, None)
    }

    /// [`EventInfo::of`] for an event going to the route named `route`.
    pub fn routed(ev: &Event, summary: Option<Summary>, route: Option<Arc<str>>) -> Arc<EventInfo> {
        Arc::new(EventInfo {
            seq: ev.seq,
            received_at_ms: ev.received_at_ms,
            method: ev.method.clone(),
            path: ev.path.clone(),
            summary,
            route,
        })
    }
}

/// How one attempt to the handler went.
#[derive(Debug, Clone)]
pub struct AttemptReport {
    /// 1-based attempt number (within this replay, for a replay).
    pub attempt: u32,
    /// The handler's status, when it answered.
    pub status: Option<u16>,
    /// Connection error or timeout, when it did not.
    pub error: Option<String>,
    /// Time to the answer.
    pub latency: Duration,
    /// What the delivery rules make of it.
    pub verdict: Verdict,
    /// When the next attempt goes; `None` once the event is settled.
    pub next_retry: Option<Duration>,
    /// Events this listener holds behind this one while it is retried (0 for a replay).
    pub waiting_behind: usize,
}

impl AttemptReport {
    /// The report of an attempt with `outcome`.
    pub fn of(
        outcome: &Outcome,
        attempt: u32,
        next_retry: Option<Duration>,
        waiting_behind: usize,
    ) -> AttemptReport {
        AttemptReport {
            attempt,
            status: outcome.status,
            error: outcome.error.clone(),
            latency: outcome.latency,
            verdict: outcome.verdict(),
            next_retry,
            waiting_behind,
        }
    }

    /// How the attempt ended the event: delivered, retrying, gave up (retries ran out) or
    /// failed (a status that is not retried).
    pub fn result(&self) -> AttemptResult {
        match (self.verdict, self.next_retry) {
            (Verdict::Delivered, _) => AttemptResult::Delivered,
            (_, Some(_)) => AttemptResult::Retrying,
            (Verdict::Retry, None) => AttemptResult::GaveUp,
            (Verdict::Failed, None) => AttemptResult::Failed,
        }
    }
}

/// Where an attempt left its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    /// The handler answered 2xx.
    Delivered,
    /// Another attempt follows.
    Retrying,
    /// Retryable, but `--max-attempts` ran out.
    GaveUp,
    /// A status that is not retried (4xx but 408/425/429).
    Failed,
}

/// Why an event was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// `--events` / `--bot` left it out.
    Filtered,
    /// `meethook events skip SEQ`.
    User,
    /// `listen --dedupe`: it repeats event `of`.
    Duplicate {
        /// The event it repeats.
        of: u64,
    },
    /// No `[[route]]` matched and there is no `--forward-to`: journaled, not sent.
    Unrouted,
    /// The relay holds this listener's ack for it: it was delivered before a power cut took
    /// its outcome from the journal, so it is recorded as delivered and not sent again.
    AckedBefore,
}

/// One thing the daemon did or saw.
#[derive(Debug, Clone)]
pub enum DaemonEvent {
    /// Connected to the relay and past the handshake.
    Connected {
        /// The relay's URL.
        relay: String,
        /// The channel.
        channel: String,
        /// The channel's last seq at the relay.
        head: u64,
        /// The last seq this journal holds.
        journaled: u64,
    },
    /// The relay pruned these events before this listener received them.
    Missed {
        /// First missed seq.
        first: u64,
        /// Last missed seq.
        last: u64,
    },
    /// The connection to the relay ended (or could not be made); it is tried again.
    Reconnecting {
        /// What happened, with the fix when there is one.
        reason: String,
        /// When the next try goes.
        retry_in: Duration,
    },
    /// Every event the relay held when this connection began is journaled.
    CaughtUp {
        /// The last seq journaled.
        seq: u64,
    },
    /// Once per run: the first time the listener is connected and caught up; events sent
    /// to the relay from now on reach this listener without a catch-up (scripts wait on it).
    Ready {
        /// The relay's URL.
        relay: String,
        /// The channel.
        channel: String,
        /// The last seq journaled.
        seq: u64,
    },
    /// An event arrived from the relay and is on its way to the journal and delivery.
    Received {
        /// Its seq.
        seq: u64,
        /// When the relay received it (ms since the Unix epoch).
        received_at_ms: i64,
        /// Its summary, when it was parsed on arrival (small bodies).
        summary: Option<Summary>,
    },
    /// A journaled event repeats an earlier one (same `svix-id`, or the same unsigned body).
    Duplicate {
        /// Its seq.
        seq: u64,
        /// The seq of the event it repeats.
        of: u64,
    },
    /// An attempt to the handler begins.
    AttemptStarted {
        /// The event's seq.
        seq: u64,
        /// 1-based attempt number.
        attempt: u32,
    },
    /// An attempt to the handler ended.
    AttemptFinished {
        /// The event.
        event: Arc<EventInfo>,
        /// How it went.
        report: AttemptReport,
    },
    /// The handler took the event (2xx).
    Delivered {
        /// The event.
        event: Arc<EventInfo>,
        /// Attempts it took.
        attempts: u32,
    },
    /// The event is settled without a 2xx: a status that is not retried, or retries ran out.
    GaveUp {
        /// The event.
        event: Arc<EventInfo>,
        /// Attempts made.
        attempts: u32,
    },
    /// The event is settled without being sent (again).
    Skipped {
        /// The event.
        event: Arc<EventInfo>,
        /// Why.
        reason: SkipReason,
        /// Attempts made before.
        attempts: u32,
    },
    /// A replay waits before its next event (`--speed`).
    Waiting {
        /// The next event's seq.
        seq: u64,
        /// How long.
        delay: Duration,
    },
    /// A replayed event is settled.
    Replayed {
        /// The event.
        seq: u64,
        /// Whether the handler answered 2xx.
        delivered: bool,
        /// Events settled so far in this replay, this one included.
        done: usize,
        /// Events in this replay.
        total: usize,
    },
    /// A recording download made progress (at most every few seconds).
    RecordingProgress {
        /// The final event carrying the link.
        seq: u64,
        /// The file being written.
        path: String,
        /// Bytes so far.
        bytes: u64,
        /// The full size, when the server said it.
        total: Option<u64>,
    },
    /// A recording is saved.
    RecordingSaved {
        /// The final event carrying the link.
        seq: u64,
        /// `video`, `audio`, …
        kind: &'static str,
        /// The file.
        path: String,
        /// Its size.
        bytes: u64,
    },
    /// A recording could not be saved.
    RecordingFailed {
        /// The final event carrying the link.
        seq: u64,
        /// `video`, `audio`, …
        kind: &'static str,
        /// The file it was going to.
        path: String,
        /// Bytes received before the failure.
        bytes: u64,
        /// Why.
        error: String,
    },
    /// Settled events past `--retention` left the journal.
    JournalPruned {
        /// Events removed.
        events: u64,
        /// Body bytes removed.
        bytes: u64,
    },
}

/// Something that follows a daemon: called for every [`DaemonEvent`], on the daemon's tasks.
pub trait Observer: Send + Sync {
    /// Takes one event; must not block.
    fn notify(&self, event: &DaemonEvent);
}

/// The observers of one daemon (or replay): cheap to clone, calls each in turn.
#[derive(Clone, Default)]
pub struct Observers(Arc<[Arc<dyn Observer>]>);

impl Observers {
    /// These observers.
    pub fn new(observers: Vec<Arc<dyn Observer>>) -> Observers {
        Observers(observers.into())
    }

    /// Hands `event` to every observer.
    pub fn emit(&self, event: DaemonEvent) {
        for o in self.0.iter() {
            o.notify(&event);
        }
    }
}

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Observers({})", self.0.len())
    }
}

/// An observer from a closure (tests, small tools).
pub struct FnObserver<F>(pub F);

impl<F: Fn(&DaemonEvent) + Send + Sync> Observer for FnObserver<F> {
    fn notify(&self, event: &DaemonEvent) {
        (self.0)(event)
    }
}
