//! The live stream: an [`Observer`] that only `send`s on a bounded broadcast (it never
//! blocks the daemon), and the hub that turns what it hears into list items for the
//! `GET /api/stream` clients; without a daemon (`meethook inspect`), the [`Poller`] of the
//! journal that another process may be writing.

use std::collections::HashMap;
use std::sync::Arc;

use meethook_daemon::observe::{AttemptResult, DaemonEvent, SkipReason};
use meethook_daemon::Observer;
use meethook_proto::meeting::Summary;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use meethook_daemon::journal::{JournalError, Query, State};

use crate::api::{self, Item, Reader};

/// Changes buffered between the daemon and the hub, and between the hub and each client;
/// one that falls further behind gets `event: reload`.
const CAPACITY: usize = 1024;

/// What one daemon event says about one event's row.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    seq: u64,
    /// A newly received event: its whole row is known from the notice.
    received: Option<(i64, Option<Summary>)>,
    state: Option<&'static str>,
    attempts: Option<u32>,
    /// The attempt's status and latency (ms), for an attempt.
    attempt: Option<(Option<u16>, f64)>,
    /// When the next attempt goes (ms since the epoch), or `Some(None)` once none is due.
    next_at: Option<Option<i64>>,
    /// The `[[route]]` the event goes to.
    route: Option<std::sync::Arc<str>>,
}

impl Change {
    fn of(e: &DaemonEvent) -> Option<Change> {
        let blank = |seq| Change {
            seq,
            received: None,
            state: None,
            attempts: None,
            attempt: None,
            next_at: None,
            route: None,
        };
        let settled = Some(None);
        let mut change = match e {
            DaemonEvent::Received {
                seq,
                received_at_ms,
                summary,
            } => Change {
                received: Some((*received_at_ms, summary.clone())),
                state: Some("pending"),
                attempts: Some(0),
                ..blank(*seq)
            },
            DaemonEvent::AttemptFinished { event, report } => Change {
                state: Some(match report.result() {
                    AttemptResult::Delivered => "delivered",
                    AttemptResult::Retrying => "retrying",
                    AttemptResult::GaveUp | AttemptResult::Failed => "failed",
                }),
                attempts: Some(report.attempt),
                attempt: Some((report.status, api::ms(report.latency))),
                next_at: Some(report.next_retry.map(|d| now_ms() + d.as_millis() as i64)),
                ..blank(event.seq)
            },
            DaemonEvent::Delivered { event, attempts } => Change {
                state: Some("delivered"),
                attempts: Some(*attempts),
                next_at: settled,
                ..blank(event.seq)
            },
            DaemonEvent::GaveUp { event, attempts } => Change {
                state: Some("failed"),
                attempts: Some(*attempts),
                next_at: settled,
                ..blank(event.seq)
            },
            DaemonEvent::Skipped {
                event,
                attempts,
                reason,
            } => Change {
                // As journaled: delivered before a crash, not skipped.
                state: Some(match reason {
                    SkipReason::AckedBefore => "delivered",
                    _ => "skipped",
                }),
                attempts: Some(*attempts),
                next_at: settled,
                ..blank(event.seq)
            },
            _ => return None,
        };
        if let DaemonEvent::AttemptFinished { event, .. }
        | DaemonEvent::Delivered { event, .. }
        | DaemonEvent::GaveUp { event, .. }
        | DaemonEvent::Skipped { event, .. } = e
        {
            change.route = event.route.clone();
        }
        Some(change)
    }

    /// The row of a new event, from the notice alone.
    fn new_item(&self, channel: &str) -> Option<Item> {
        let (received_at, summary) = self.received.as_ref()?;
        Some(Item {
            seq: self.seq,
            channel: channel.to_string(),
            received_at: *received_at,
            event: summary.as_ref().map(|s| s.event.clone()),
            bot_id: summary.as_ref().and_then(|s| s.bot_id.clone()),
            code: summary.as_ref().and_then(|s| s.code.clone()),
            summary: summary.as_ref().map(|s| s.detail()).unwrap_or_default(),
            state: "pending".into(),
            attempts: 0,
            last_status: None,
            latency_ms: None,
            duplicate_of: None,
            next_attempt_at: None,
            route: None,
        })
    }

    /// `item` (as journaled, maybe a step behind) with what this notice says.
    fn patch(&self, item: &mut Item) {
        if let Some(s) = self.state {
            item.state = s.into();
        }
        if let Some(n) = self.attempts {
            item.attempts = n;
        }
        if let Some((status, latency)) = self.attempt {
            item.last_status = status;
            item.latency_ms = Some(latency);
        }
        if let Some(next) = self.next_at {
            item.next_attempt_at = next;
        }
        if let Some(r) = &self.route {
            item.route = Some(r.to_string());
        }
    }
}

/// The inspector's live source: subscribe it to a daemon (`Observers::new(vec![…,
/// live.observer()])`) and hand it to [`crate::run`].
#[derive(Clone)]
pub struct Live {
    channel: String,
    tx: broadcast::Sender<Change>,
}

impl Live {
    /// A source for the daemon of `channel`.
    pub fn new(channel: &str) -> Live {
        Live {
            channel: channel.to_string(),
            tx: broadcast::channel(CAPACITY).0,
        }
    }

    /// The observer to subscribe to the daemon.
    pub fn observer(&self) -> Arc<dyn Observer> {
        Arc::new(self.clone())
    }

    /// The channel it follows.
    pub fn channel(&self) -> &str {
        &self.channel
    }
}

impl Observer for Live {
    fn notify(&self, event: &DaemonEvent) {
        // Nobody reads before the server runs: skip the work.
        if self.tx.receiver_count() == 0 {
            return;
        }
        if let Some(c) = Change::of(event) {
            // Never blocks: a full buffer drops the oldest change for a lagging reader.
            let _ = self.tx.send(c);
        }
    }
}

/// What a stream client is sent.
#[derive(Debug, Clone)]
pub(crate) enum Out {
    /// `event: event`, its data the item's JSON.
    Item(Arc<str>),
    /// `event: reload`: changes were lost, read the list again.
    Reload,
}

/// Now, ms since the Unix epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// When each retrying event's next attempt goes (ms since the epoch), as the hub last heard.
pub(crate) type Schedule = Arc<std::sync::Mutex<HashMap<u64, i64>>>;

/// Rows the hub remembers as last sent (cleared when full).
const RECENT: usize = 4096;

/// The journal's row of `seq`, if it can be read.
async fn lookup(reader: &Arc<Reader>, channel: &str, seq: u64) -> Option<Item> {
    let (reader, channel) = (reader.clone(), channel.to_string());
    let found =
        tokio::task::spawn_blocking(move || api::item(&reader.journal()?, &channel, seq)).await;
    match found {
        Ok(Ok(item)) => item,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "inspector: journal read failed");
            None
        }
        Err(_) => None,
    }
}

/// The hub's outlet, which each stream client subscribes to.
pub(crate) fn outlet() -> broadcast::Sender<Out> {
    broadcast::channel(CAPACITY).0
}

/// Reads `live`'s changes, completes them from the journal and sends the items to `out`,
/// until `stop`.
pub(crate) async fn hub(
    live: Live,
    reader: Arc<Reader>,
    out: broadcast::Sender<Out>,
    schedule: Schedule,
    stop: CancellationToken,
) {
    let mut rx = live.tx.subscribe();
    let mut recent: HashMap<u64, Item> = HashMap::new();
    loop {
        let change = tokio::select! {
            _ = stop.cancelled() => return,
            r = rx.recv() => r,
        };
        let change = match change {
            Ok(c) => c,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::debug!(lost = n, "inspector: the stream fell behind the daemon");
                let _ = out.send(Out::Reload);
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if let Some(next) = change.next_at {
            let mut s = schedule.lock().unwrap_or_else(|e| e.into_inner());
            match next {
                Some(at) => s.insert(change.seq, at),
                None => s.remove(&change.seq),
            };
        }
        if out.receiver_count() == 0 {
            recent.clear();
            continue;
        }
        // The row as last sent is newer than the journal's (outcomes reach the journal a
        // step after the notices): start from it when there is one.
        let base = match change.new_item(&live.channel) {
            Some(item) => Some(item),
            None => match recent.get(&change.seq) {
                Some(item) => Some(item.clone()),
                None => lookup(&reader, &live.channel, change.seq).await,
            },
        };
        let Some(mut item) = base else {
            // Not readable: let the page read its list again.
            let _ = out.send(Out::Reload);
            continue;
        };
        change.patch(&mut item);
        if recent.get(&item.seq) == Some(&item) {
            continue;
        }
        let json = serde_json::to_string(&item).expect("an item serializes");
        let _ = out.send(Out::Item(json.into()));
        if recent.len() >= RECENT {
            recent.clear();
        }
        recent.insert(item.seq, item);
    }
}

/// How often [`Poller`] reads the journal.
const POLL_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// New events one poll sends as items; more make the clients read their list again.
const POLL_NEW: usize = 500;
/// Unsettled events a poll follows for state changes.
const POLL_WATCH: usize = 1024;

/// What [`Poller`] remembers between reads.
#[derive(Default)]
struct Polled {
    channel: Option<String>,
    /// The newest seq seen.
    last: u64,
    /// Unsettled events as last seen: seq → (state, attempts).
    watch: HashMap<u64, (String, u32)>,
    /// The first read only learns where the journal stands.
    started: bool,
}

impl Polled {
    /// One read: the items to send (new events, changed ones), or `None` for a reload.
    fn read(
        &mut self,
        j: &meethook_daemon::journal::Journal,
        preferred: Option<&str>,
    ) -> Result<Option<Vec<Item>>, JournalError> {
        if self.channel.is_none() {
            self.channel = api::default_channel(j, preferred)?;
        }
        let Some(channel) = self.channel.clone() else {
            // An empty journal: its first events are all new.
            self.started = true;
            return Ok(Some(Vec::new()));
        };
        let q = |seqs, limit| Query {
            channel: Some(channel.clone()),
            seqs,
            limit,
            ..Query::default()
        };
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            self.last = j.cursors(&channel)?.0;
            let pending = Query {
                state: Some(State::Pending),
                ..q(Vec::new(), Some(POLL_WATCH))
            };
            for it in api::items(j, &pending)? {
                self.watch.insert(it.seq, (it.state, it.attempts));
            }
            return Ok(Some(out));
        }
        let mut watched: Vec<_> = self.watch.keys().map(|s| *s..=*s).collect();
        watched.sort_by_key(|r| *r.start());
        if !watched.is_empty() {
            let rows = api::items(j, &q(watched, None))?;
            // Gone (pruned, or a journal replaced): nothing more to follow.
            self.watch
                .retain(|seq, _| rows.iter().any(|it| it.seq == *seq));
            for it in rows {
                let was = self.watch.get(&it.seq);
                if was != Some(&(it.state.clone(), it.attempts)) {
                    if matches!(it.state.as_str(), "pending" | "retrying") {
                        self.watch.insert(it.seq, (it.state.clone(), it.attempts));
                    } else {
                        self.watch.remove(&it.seq);
                    }
                    out.push(it);
                }
            }
        }
        let fresh = api::items(j, &q(vec![self.last + 1..=u64::MAX], Some(POLL_NEW)))?;
        if let Some(first) = fresh.first() {
            let skipped = first.seq > self.last + 1 && fresh.len() == POLL_NEW;
            self.last = fresh.last().map_or(self.last, |i| i.seq);
            if skipped {
                return Ok(None);
            }
        }
        for it in fresh {
            if matches!(it.state.as_str(), "pending" | "retrying") && self.watch.len() < POLL_WATCH
            {
                self.watch.insert(it.seq, (it.state.clone(), it.attempts));
            }
            out.push(it);
        }
        Ok(Some(out))
    }
}

/// Without a daemon in this process: follows the journal that another process (a `listen`
/// on the same `--data`) may be writing.
pub(crate) struct Poller {
    reader: Arc<Reader>,
    preferred: Option<String>,
    polled: Arc<std::sync::Mutex<Polled>>,
}

impl Poller {
    /// Learns where the journal stands now, before any client can ask for a list.
    pub(crate) async fn start(reader: Arc<Reader>, preferred: Option<String>) -> Poller {
        let p = Poller {
            reader,
            preferred,
            polled: Arc::default(),
        };
        if let Err(e) = p.read().await {
            tracing::debug!(error = %e, "inspector: journal poll failed");
        }
        p
    }

    /// One read on the blocking pool.
    async fn read(&self) -> Result<Option<Vec<Item>>, JournalError> {
        let (reader, polled, preferred) = (
            self.reader.clone(),
            self.polled.clone(),
            self.preferred.clone(),
        );
        let read = tokio::task::spawn_blocking(move || {
            let mut polled = polled.lock().unwrap_or_else(|e| e.into_inner());
            match reader.journal() {
                Ok(j) => polled.read(&j, preferred.as_deref()),
                Err(e) => {
                    // No journal yet: its first events are all new.
                    polled.started |= matches!(e, JournalError::Missing(_));
                    Err(e)
                }
            }
        })
        .await;
        read.unwrap_or(Ok(Some(Vec::new())))
    }

    /// Reads the journal every [`POLL_EVERY`] while a client is subscribed and sends what
    /// changed (new events, state changes) to `out`, until `stop`.
    pub(crate) async fn run(self, out: broadcast::Sender<Out>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            // Nobody to tell: read on once one subscribes (what came meanwhile is sent then,
            // or a reload when it is too much).
            let started = self
                .polled
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .started;
            if out.receiver_count() == 0 && started {
                continue;
            }
            match self.read().await {
                Ok(Some(items)) => {
                    for it in items {
                        let json = serde_json::to_string(&it).expect("an item serializes");
                        let _ = out.send(Out::Item(json.into()));
                    }
                }
                Ok(None) => {
                    let _ = out.send(Out::Reload);
                }
                Err(JournalError::Missing(_)) => {}
                Err(e) => tracing::debug!(error = %e, "inspector: journal poll failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use meethook_daemon::observe::{DaemonEvent, EventInfo, SkipReason};
    use meethook_proto::Event;

    use super::Change;

    #[test]
    fn a_skip_shows_as_journaled_and_one_acked_before_a_crash_as_delivered() {
        let ev = Event {
            seq: 7,
            received_at_ms: 0,
            method: "POST".into(),
            path: "/".into(),
            headers: Vec::new(),
            body: Default::default(),
        };
        let state = |reason| {
            let e = DaemonEvent::Skipped {
                event: EventInfo::of(&ev, None),
                reason,
                attempts: 0,
            };
            Change::of(&e).and_then(|c| c.state)
        };
        assert_eq!(state(SkipReason::AckedBefore), Some("delivered"));
        assert_eq!(state(SkipReason::Filtered), Some("skipped"));
        assert_eq!(state(SkipReason::User), Some("skipped"));
    }
}
