//! `--order bot|event-key=PATH`: the events of one key go one at a time in seq order; those
//! of different keys go at once, at most `--parallel` sends at a time. Each key retries
//! under its own backoff, so a failing bot holds up only its own events.
//!
//! Each attempt (with the wait before a retry) is a task; this loop is their only owner of
//! the outcome log. The delivered cursor it publishes is a low-water mark: the highest seq
//! below which everything is settled. Outcomes above it are in the outcome log too, so after
//! a crash only the sends in flight (at most `--parallel`) can reach the handler again.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use meethook_proto::meeting::Summary;
use meethook_proto::Event;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::control::{control_answer, Act, Paused, Spot};
use super::settle::{Settler, FLUSH_IDLE};
use super::{conclude, repeat_within, skip, Channels, DeliverySettings, Target, PROBE_EVERY};
use crate::control::{Ask, Request};
use crate::forward::{Forwarder, Outcome};
use crate::handoff::{committed, Handoff, Insert, Journaled};
use crate::observe::{DaemonEvent, EventInfo, Observers, SkipReason};
use crate::route::UNROUTED;
use crate::{blocking, now_ms, DaemonError};

/// An event taken in, with what its attempts need.
struct Item {
    ev: Event,
    attempts: u32,
    /// Its target (route) in `Loop::lanes`.
    lane: usize,
    /// Its order key within that target, the target's index first.
    key: String,
    summary: Option<Summary>,
    journaled: Option<Journaled>,
    info: Option<Arc<EventInfo>>,
}

impl Item {
    fn info(&mut self, lanes: &[Lane]) -> Arc<EventInfo> {
        let (ev, summary) = (&self.ev, &mut self.summary);
        let route = lanes[self.lane].name.clone();
        self.info
            .get_or_insert_with(|| EventInfo::routed(ev, summary.clone(), route))
            .clone()
    }
}

/// How an attempt task ended.
enum Done {
    /// Sent; `stored` is false when its journal insert failed (the relay sends it again).
    Sent {
        item: Item,
        outcome: Outcome,
        started_at_ms: i64,
        stored: bool,
    },
    /// The user skipped it before its (next) attempt.
    Skipped(Item),
    /// Its insert failed before a user skip could be recorded.
    Unstored(Item),
    /// Its insert failed before its turn came: not sent; the relay sends it again.
    Unsent(Item),
    /// The daemon stops.
    Stopped,
}

/// What a waiting retry is told.
enum Wake {
    RetryNow,
    Skip,
}

/// What every attempt task of one target shares.
#[derive(Clone)]
struct Lane {
    /// The route's name (`None`: `--forward-to`).
    name: Option<Arc<str>>,
    fwd: Forwarder,
    max_attempts: u32,
    slots: Arc<Semaphore>,
    observers: Observers,
    stop: CancellationToken,
}

/// The events of each key waiting their turn, and where the cursor stands.
#[derive(Default)]
struct Keys {
    /// Per key, events not yet taken up (the key's event in progress is not here).
    queues: HashMap<String, VecDeque<Item>>,
    /// Keys with an event in progress.
    busy: HashSet<String>,
    /// Keys free to start their next event, by that event's seq.
    ready: BTreeSet<(u64, String)>,
    /// Events waiting in `queues`.
    queued: usize,
    /// Taken in, not settled (and seqs whose insert failed, until the relay resends them).
    open: BTreeSet<u64>,
    /// Seqs whose journal insert failed: they hold the cursor back until they come again.
    holes: HashSet<u64>,
    /// The key each hole holds: nothing else of that key goes until the hole comes again,
    /// so a key's events still reach the handler in seq order.
    held: HashMap<u64, String>,
    /// Settled above the cursor.
    settled: BTreeSet<u64>,
    /// The highest seq taken in.
    seen: u64,
    /// Events waiting to retry, and how to wake them.
    waiting: HashMap<u64, oneshot::Sender<Wake>>,
}

impl Keys {
    /// The highest seq at and below which everything is settled.
    fn low_water(&self) -> u64 {
        self.open.first().map_or(self.seen, |s| s - 1)
    }

    /// Whether `seq` was taken in already (the journal and the connection can both hand
    /// over an event at start-up).
    fn known(&self, seq: u64) -> bool {
        seq <= self.low_water()
            || self.settled.contains(&seq)
            || (self.open.contains(&seq) && !self.holes.contains(&seq))
    }

    fn take_in(&mut self, item: Item) {
        let seq = item.ev.seq;
        self.holes.remove(&seq);
        self.open.insert(seq);
        self.seen = self.seen.max(seq);
        let key = item.key.clone();
        let q = self.queues.entry(key.clone()).or_default();
        // A resent hole goes before the later events of its key queued meanwhile.
        let at = q.partition_point(|i| i.ev.seq < seq);
        q.insert(at, item);
        self.queued += 1;
        if self.held.remove(&seq).is_some() {
            self.busy.remove(&key);
        }
        if at == 0 && !self.busy.contains(&key) {
            if let Some(behind) = q.get(1) {
                self.ready.remove(&(behind.ev.seq, key.clone()));
            }
            self.ready.insert((seq, key));
        }
    }

    /// Forgets the queued copy of `seq` when its batch's insert failed (its resend is here);
    /// it stays open, as a hole, so the cursor does not pass it.
    fn drop_failed(&mut self, seq: u64) {
        if !self.open.contains(&seq) || self.holes.contains(&seq) {
            return;
        }
        let failed = |i: &Item| {
            i.ev.seq == seq
                && i.journaled
                    .as_ref()
                    .is_some_and(|j| matches!(*j.borrow(), Some(Insert::Failed)))
        };
        let Some((key, at)) = self
            .queues
            .iter()
            .find_map(|(k, q)| Some((k.clone(), q.iter().position(failed)?)))
        else {
            return;
        };
        let q = self.queues.get_mut(&key).expect("found above");
        q.remove(at);
        self.queued -= 1;
        if at == 0 && self.ready.remove(&(seq, key.clone())) {
            if let Some(next) = q.front() {
                self.ready.insert((next.ev.seq, key.clone()));
            }
        }
        if q.is_empty() && !self.busy.contains(&key) {
            self.queues.remove(&key);
        }
        self.holes.insert(seq);
    }

    /// `item` was sent but its journal insert failed: its key waits for the resend.
    fn hold(&mut self, item: &Item) {
        self.holes.insert(item.ev.seq);
        self.held.insert(item.ev.seq, item.key.clone());
    }

    /// The next event whose key is free, its key now busy.
    fn next(&mut self) -> Option<Item> {
        let (_, key) = self.ready.pop_first()?;
        let item = self.queues.get_mut(&key)?.pop_front()?;
        self.queued -= 1;
        self.busy.insert(key);
        Some(item)
    }

    /// `key`'s event is done with: its next one may start.
    fn free(&mut self, key: &str) {
        self.busy.remove(key);
        match self.queues.get(key).and_then(|q| q.front()) {
            Some(next) => {
                self.ready.insert((next.ev.seq, key.to_string()));
            }
            None => {
                self.queues.remove(key);
            }
        }
    }

    fn settle(&mut self, seq: u64) {
        self.open.remove(&seq);
        self.settled.insert(seq);
        let lw = self.low_water();
        while self.settled.first().is_some_and(|s| *s <= lw) {
            self.settled.pop_first();
        }
    }

    /// Where delivery stands, for a control request about `seq`.
    fn spot(&self, seq: Option<u64>) -> Spot {
        let blocked = match seq {
            Some(s) if self.waiting.contains_key(&s) => Some(s),
            _ => self.waiting.keys().min().copied(),
        };
        let last = match seq {
            Some(s) if self.settled.contains(&s) => s,
            _ => self.low_water(),
        };
        Spot {
            blocked,
            last,
            behind: self.queued,
        }
    }
}

/// Delivers in parallel across keys, in order within each (see the module).
pub(super) async fn deliver_keyed(
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
        journaled,
    } = channels;
    let lanes = targets
        .iter()
        .map(|t| Lane {
            name: t.name.clone(),
            fwd: t.forwarder.clone(),
            max_attempts: t.max_attempts,
            // A route in channel order sends one at a time.
            slots: Arc::new(Semaphore::new(if t.order.is_keyed() {
                t.parallel.max(1)
            } else {
                1
            })),
            observers: observers.clone(),
            stop: stop.clone(),
        })
        .collect();
    let keys = Keys {
        seen: *delivered.borrow(),
        ..Keys::default()
    };
    let ch = settings.channel.clone();
    let pending = blocking(settler.journal, move |j| j.pending(&ch, usize::MAX)).await?;
    if !pending.is_empty() {
        settings.await_relay_ack(stop).await;
    }
    let mut loop_ = Loop {
        settings,
        observers,
        targets,
        lanes,
        tasks: JoinSet::new(),
        marks: BTreeSet::new(),
        keys,
    };
    for (ev, attempts) in pending {
        loop_
            .take_in(settler, (ev, None, None), attempts, stop)
            .await?;
    }
    // Settled events above the old cursor (from a keyed run before) are known: the cursor
    // passes them once the pending ones below are settled.
    loop_.keys.seen = loop_.keys.seen.max(journaled);
    let mut paused = Paused::default();
    let mut incoming_open = true;
    let r = 'run: loop {
        if !paused.0 {
            while let Some(item) = loop_.keys.next() {
                loop_.start(item);
            }
        }
        delivered.send_if_modified(|cur| {
            let lw = loop_.keys.low_water();
            (lw > *cur).then(|| *cur = lw).is_some()
        });
        tokio::select! {
            _ = stop.cancelled() => break 'run Ok(()),
            h = incoming.recv(), if incoming_open => match h {
                Some(h) => {
                    if !loop_.take_in(settler, h, 0, stop).await? {
                        break 'run Ok(());
                    }
                }
                // The connection task is gone; what is in progress goes on until the stop.
                None => incoming_open = false,
            },
            Some(done) = loop_.tasks.join_next() => {
                let done = done.map_err(|e| DaemonError::Config(format!("delivery task failed: {e}")))?;
                if !loop_.finish(settler, done, stop).await? {
                    break 'run Ok(());
                }
            }
            Some(ask) = control.recv() => {
                if !loop_.answer(settler, ask, &mut paused, stop).await? {
                    break 'run Ok(());
                }
            }
            _ = tokio::time::sleep(FLUSH_IDLE), if !settler.batch.is_empty() => {
                if !settler.flush(stop).await? {
                    break 'run Ok(());
                }
            }
        }
    };
    // Sends in flight end (within --timeout) and their outcomes are kept; waits end at once.
    while let Some(done) = loop_.tasks.join_next().await {
        if let Ok(Done::Sent {
            mut item,
            outcome,
            started_at_ms,
            stored: true,
        }) = done
        {
            let info = item.info(&loop_.lanes);
            let (r, _) = conclude(
                (loop_.lanes[item.lane].max_attempts, settings.backoff),
                observers,
                info,
                outcome,
                (item.attempts, started_at_ms),
                0,
            );
            settler.settle(r, stop).await?;
        }
    }
    r
}

/// The keyed delivery loop's state.
struct Loop<'a> {
    settings: &'a DeliverySettings,
    observers: &'a Observers,
    /// Where events go, first match wins.
    targets: Vec<Target>,
    /// Per target, what its attempts share.
    lanes: Vec<Lane>,
    tasks: JoinSet<Done>,
    /// Events the user skipped before their turn.
    marks: BTreeSet<u64>,
    keys: Keys,
}

impl Loop<'_> {
    /// Takes in one event: filtered out at once, else queued under its key. `Ok(false)`
    /// when stopped first.
    async fn take_in(
        &mut self,
        settler: &mut Settler<'_>,
        (ev, parsed, journaled): Handoff,
        attempts: u32,
        stop: &CancellationToken,
    ) -> Result<bool, DaemonError> {
        // A resend of an event still queued from a batch whose insert failed.
        self.keys.drop_failed(ev.seq);
        if self.keys.known(ev.seq) {
            return Ok(true);
        }
        // The rest of a batch whose journal insert failed: the relay sends it again.
        if journaled
            .as_ref()
            .is_some_and(|j| matches!(*j.borrow(), Some(Insert::Failed)))
        {
            return Ok(true);
        }
        // The key needs the summary now (a big body is parsed here, not beside its send).
        let summary = parsed.unwrap_or_else(|| Summary::parse(&ev.body));
        let target = self
            .targets
            .iter()
            .position(|t| t.takes(summary.as_ref(), &ev.path));
        // `--dedupe` turns off early hand-offs, so the repeat is already journaled.
        let repeat = match self.settings.dedupe {
            Some(window) => {
                repeat_within(settler.journal, &self.settings.channel, ev.seq, window).await?
            }
            None => None,
        };
        let wanted = self.settings.filter.wants(summary.as_ref());
        let acked_before = self.settings.acked_at_relay(ev.seq);
        let lane = match (wanted, repeat, target) {
            (true, None, Some(lane)) if !acked_before => lane,
            _ => {
                let reason = match repeat {
                    _ if acked_before => SkipReason::AckedBefore,
                    Some(of) => SkipReason::Duplicate { of },
                    None if wanted => SkipReason::Unrouted,
                    None => SkipReason::Filtered,
                };
                // Skipped at once; an early-handed event only once it is journaled (a
                // filter turns off early hand-offs).
                if let Some(j) = journaled {
                    if committed(j, ev.seq).await.is_none() {
                        return Ok(true);
                    }
                }
                self.keys.seen = self.keys.seen.max(ev.seq);
                let seq = ev.seq;
                self.keys.open.insert(seq);
                // Journaled as going nowhere, so `events list` can say so.
                let route = match (reason, target) {
                    (SkipReason::Unrouted, _) => Some(Arc::from(UNROUTED)),
                    (SkipReason::AckedBefore, Some(lane)) => self.lanes[lane].name.clone(),
                    _ => None,
                };
                let event = EventInfo::routed(&ev, summary, route);
                let r = skip(settler, self.observers, event, reason, attempts, stop).await?;
                self.keys.settle(seq);
                return Ok(r);
            }
        };
        let order = &self.targets[lane].order;
        let key = format!("{lane}/{}", order.key(summary.as_ref(), &ev.body));
        self.keys.take_in(Item {
            ev,
            attempts,
            lane,
            key,
            summary,
            journaled,
            info: None,
        });
        Ok(true)
    }

    /// Starts `item`'s first attempt (or its skip, when the user marked it).
    fn start(&mut self, item: Item) {
        let skipped = !self.marks.is_empty() && self.marks.remove(&item.ev.seq);
        let lane = self.lanes[item.lane].clone();
        self.tasks.spawn(attempt(lane, item, None, skipped));
    }

    /// Acts on an attempt's end. `Ok(false)` when stopped first.
    async fn finish(
        &mut self,
        settler: &mut Settler<'_>,
        done: Done,
        stop: &CancellationToken,
    ) -> Result<bool, DaemonError> {
        match done {
            Done::Stopped => Ok(true),
            Done::Unstored(item) => {
                // The relay sends it again; the user's skip still applies then.
                self.marks.insert(item.ev.seq);
                self.hole(item);
                Ok(true)
            }
            Done::Unsent(item) => {
                self.hole(item);
                Ok(true)
            }
            Done::Skipped(item) => {
                self.keys.waiting.remove(&item.ev.seq);
                self.skip_user(settler, item, stop).await
            }
            Done::Sent {
                item,
                stored: false,
                ..
            } => {
                self.hole(item);
                Ok(true)
            }
            Done::Sent {
                mut item,
                outcome,
                started_at_ms,
                stored: true,
            } => {
                self.keys.waiting.remove(&item.ev.seq);
                let refused = outcome.refused;
                let info = item.info(&self.lanes);
                let (r, next_retry) = conclude(
                    (self.lanes[item.lane].max_attempts, self.settings.backoff),
                    self.observers,
                    info,
                    outcome,
                    (item.attempts, started_at_ms),
                    self.keys.queues.get(&item.key).map_or(0, VecDeque::len),
                );
                if !settler.settle(r, stop).await? {
                    return Ok(false);
                }
                let Some(delay) = next_retry else {
                    self.keys.settle(item.ev.seq);
                    self.keys.free(&item.key);
                    return Ok(true);
                };
                // Skipped by the user while it was in flight.
                if self.marks.remove(&item.ev.seq) {
                    return self.skip_user(settler, item, stop).await;
                }
                // The handler is struggling: show the attempts in `events show` now.
                if !settler.flush(stop).await? {
                    return Ok(false);
                }
                let (tx, rx) = oneshot::channel();
                self.keys.waiting.insert(item.ev.seq, tx);
                let wait = Wait {
                    delay,
                    refused,
                    wake: rx,
                };
                item.journaled = None;
                let lane = self.lanes[item.lane].clone();
                self.tasks.spawn(attempt(lane, item, Some(wait), false));
                Ok(true)
            }
        }
    }

    /// Settles `item` as skipped by the user; its key's next event may go.
    async fn skip_user(
        &mut self,
        settler: &mut Settler<'_>,
        mut item: Item,
        stop: &CancellationToken,
    ) -> Result<bool, DaemonError> {
        let info = item.info(&self.lanes);
        let r = skip(
            settler,
            self.observers,
            info,
            SkipReason::User,
            item.attempts,
            stop,
        )
        .await?;
        self.keys.settle(item.ev.seq);
        self.keys.free(&item.key);
        Ok(r)
    }

    /// An event whose journal insert failed: it holds the cursor until the relay resends it.
    fn hole(&mut self, item: Item) {
        tracing::warn!(
            seq = item.ev.seq,
            "the journal could not store this event; it is delivered again when the relay resends it"
        );
        self.keys.hold(&item);
    }

    /// Answers a control request. `Ok(false)` when stopped first.
    async fn answer(
        &mut self,
        settler: &mut Settler<'_>,
        ask: Ask,
        paused: &mut Paused,
        stop: &CancellationToken,
    ) -> Result<bool, DaemonError> {
        let seq = match ask.request {
            Request::Retry { seq } | Request::Skip { seq } => Some(seq),
            _ => None,
        };
        let at = self.keys.spot(seq);
        let Some(act) = control_answer(ask, at, &mut self.marks, paused, settler, stop).await?
        else {
            return Ok(false);
        };
        let wake = match act {
            Act::Stay => return Ok(true),
            Act::RetryNow => Wake::RetryNow,
            Act::Skip => Wake::Skip,
        };
        if let Some((s, tx)) = seq.and_then(|s| Some((s, self.keys.waiting.remove(&s)?))) {
            // Its wait just ended (it is being sent): a skip then applies to the outcome.
            if tx.send(wake).is_err() && matches!(act, Act::Skip) {
                self.marks.insert(s);
            }
        }
        Ok(true)
    }
}

/// The wait before a retry, and how it can be cut short.
struct Wait {
    delay: Duration,
    refused: bool,
    wake: oneshot::Receiver<Wake>,
}

/// One attempt of `item` (after `wait`, for a retry), holding a send slot while it sends.
async fn attempt(lane: Lane, mut item: Item, wait: Option<Wait>, skipped: bool) -> Done {
    if skipped {
        // An early-handed event's outcome may only be recorded once it is journaled.
        if let Some(j) = item.journaled.take() {
            if committed(j, item.ev.seq).await.is_none() {
                return Done::Unstored(item);
            }
        }
        return Done::Skipped(item);
    }
    if let Some(Wait {
        delay,
        refused,
        mut wake,
    }) = wait
    {
        let at = tokio::time::Instant::now() + delay;
        // Nothing listened on the handler's port: try it often, to retry once it is back.
        let mut probe = refused.then(|| {
            tokio::time::interval_at(tokio::time::Instant::now() + PROBE_EVERY, PROBE_EVERY)
        });
        loop {
            tokio::select! {
                _ = lane.stop.cancelled() => return Done::Stopped,
                _ = tokio::time::sleep_until(at) => break,
                w = &mut wake => match w {
                    Ok(Wake::Skip) => return Done::Skipped(item),
                    Ok(Wake::RetryNow) | Err(_) => break,
                },
                _ = async { probe.as_mut().expect("probing").tick().await }, if probe.is_some() => {
                    if lane.fwd.probe(PROBE_EVERY).await {
                        break;
                    }
                }
            }
        }
    }
    // Its batch's insert failed while it waited its turn: the relay sends it again.
    if item
        .journaled
        .as_ref()
        .is_some_and(|j| matches!(*j.borrow(), Some(Insert::Failed)))
    {
        return Done::Unsent(item);
    }
    let permit = tokio::select! {
        _ = lane.stop.cancelled() => return Done::Stopped,
        p = lane.slots.clone().acquire_owned() => p,
    };
    item.attempts += 1;
    let started_at_ms = now_ms();
    lane.observers.emit(DaemonEvent::AttemptStarted {
        seq: item.ev.seq,
        attempt: item.attempts,
    });
    let outcome = lane.fwd.send(&item.ev, item.attempts, false).await;
    drop(permit);
    // Handed over early: its outcome may only be recorded once the event is journaled.
    let mut stored = true;
    if let Some(j) = item.journaled.take() {
        match committed(j, item.ev.seq).await {
            Some(parsed) => item.summary = item.summary.take().or(parsed),
            None => stored = false,
        }
    }
    Done::Sent {
        item,
        outcome,
        started_at_ms,
        stored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(seq: u64, key: &str) -> Item {
        Item {
            ev: Event {
                seq,
                received_at_ms: 0,
                method: "POST".into(),
                path: String::new(),
                headers: Vec::new(),
                body: bytes::Bytes::new(),
            },
            attempts: 0,
            lane: 0,
            key: key.into(),
            summary: None,
            journaled: None,
            info: None,
        }
    }

    #[test]
    fn one_event_per_key_at_a_time_and_the_cursor_is_a_low_water_mark() {
        let mut k = Keys {
            seen: 10,
            ..Keys::default()
        };
        for (seq, key) in [(11, "a"), (12, "b"), (13, "a"), (14, "b")] {
            k.take_in(item(seq, key));
        }
        assert!(k.known(12) && k.known(9) && !k.known(15));
        let first: Vec<u64> = std::iter::from_fn(|| k.next()).map(|i| i.ev.seq).collect();
        assert_eq!(first, [11, 12], "one per key, lowest seq first");
        // b's event settles first: the cursor waits for a's.
        k.settle(12);
        k.free("b");
        assert_eq!(k.low_water(), 10);
        assert_eq!(k.next().map(|i| i.ev.seq), Some(14));
        k.settle(14);
        k.free("b");
        assert_eq!(k.low_water(), 10, "13 and 11 still open");
        k.settle(11);
        k.free("a");
        assert_eq!(k.low_water(), 12);
        assert_eq!(k.next().map(|i| i.ev.seq), Some(13));
        k.settle(13);
        k.free("a");
        assert_eq!(k.low_water(), 14);
        assert!(k.settled.is_empty() && k.queues.is_empty());
        // A seq whose insert failed holds the cursor, and its key, until it comes again.
        k.take_in(item(15, "a"));
        k.take_in(item(17, "a"));
        let i = k.next().unwrap();
        k.hold(&i);
        k.take_in(item(16, "b"));
        let j = k.next().unwrap();
        assert_eq!(j.ev.seq, 16, "another key goes; 17 waits behind the hole");
        k.settle(16);
        k.free(&j.key);
        assert!(k.next().is_none(), "key a is held");
        assert_eq!(k.low_water(), 14);
        assert!(!k.known(15), "the resend is taken in");
        k.take_in(item(15, "a"));
        assert_eq!(k.next().map(|i| i.ev.seq), Some(15), "the resend before 17");
        k.settle(15);
        k.free("a");
        assert_eq!(k.next().map(|i| i.ev.seq), Some(17));
        k.settle(17);
        k.free("a");
        assert_eq!(k.low_water(), 17);

        // Queued behind a held hole, from the same failed batch: its resend replaces it.
        let (tx, rx) = tokio::sync::watch::channel(None);
        k.take_in(item(18, "a"));
        let mut stale = item(19, "a");
        stale.journaled = Some(rx);
        k.take_in(stale);
        let i = k.next().unwrap();
        k.hold(&i);
        tx.send_replace(Some(Insert::Failed));
        k.drop_failed(19);
        assert!(!k.known(19), "the resend of 19 is taken in");
        assert_eq!(k.low_water(), 17, "19 still holds the cursor");
        k.take_in(item(18, "a"));
        k.take_in(item(19, "a"));
        assert_eq!(k.next().map(|i| i.ev.seq), Some(18));
        k.settle(18);
        k.free("a");
        let i = k.next().unwrap();
        assert!(i.journaled.is_none(), "the fresh copy goes");
        k.settle(19);
        k.free("a");
        assert_eq!(k.low_water(), 19);
    }
}
