//! The live stream: an [`Observer`] that only `send`s on a bounded broadcast (it never
//! blocks the daemon), and the hub that turns what it hears into list items for the
//! `GET /api/stream` clients.

use std::collections::HashMap;
use std::sync::Arc;

use meethook_daemon::observe::{AttemptResult, DaemonEvent};
use meethook_daemon::Observer;
use meethook_proto::meeting::Summary;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

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
            route: None,
        };
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
                ..blank(event.seq)
            },
            DaemonEvent::Delivered { event, attempts } => Change {
                state: Some("delivered"),
                attempts: Some(*attempts),
                ..blank(event.seq)
            },
            DaemonEvent::GaveUp { event, attempts } => Change {
                state: Some("failed"),
                attempts: Some(*attempts),
                ..blank(event.seq)
            },
            DaemonEvent::Skipped {
                event, attempts, ..
            } => Change {
                state: Some("skipped"),
                attempts: Some(*attempts),
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
