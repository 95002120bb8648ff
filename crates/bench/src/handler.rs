//! The recording webhook handler: answers 200 (at once, or after a set delay) and checks every
//! request against what the senders sent (byte-identical body, once each, `meethook-seq`
//! strictly increasing by 1, or per bot increasing).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::body;

/// Counters are few and cheap next to an HTTP request: keep them simple and sequentially consistent.
const R: Ordering = Ordering::SeqCst;
/// `acked_seq` of an event answered 2xx without a seq (the direct path).
const NO_SEQ: u64 = u64::MAX;

/// What one measured run sent and what the handler saw of it; ids are `0..n`.
pub struct Tracker {
    base: Instant,
    /// Hash of the body sent for each id (0: not sent yet).
    expect: Vec<AtomicU64>,
    /// How often each id arrived intact.
    recv: Vec<AtomicU32>,
    /// First arrival of each id, ns after `base` plus 1 (0: never).
    recv_ns: Vec<AtomicU64>,
    /// `meethook-seq` each id arrived with.
    got_seq: Vec<AtomicU64>,
    /// `seq` the relay answered for each id (0: not acknowledged; `NO_SEQ`: no seq).
    acked_seq: Vec<AtomicU64>,
    /// Which channel each id was posted to (a hash of its path; seqs count per channel).
    lane: Vec<AtomicU64>,
    unique: AtomicU64,
    dups: AtomicU64,
    corrupt: AtomicU64,
    out_of_order: AtomicU64,
    last_ns: AtomicU64,
    notify: Notify,
}

/// Integrity counts of one run.
#[derive(Debug, Default, Clone, Copy)]
pub struct Checks {
    /// Events the senders tried.
    pub sent: u64,
    /// Events answered 2xx (by the relay, or by the handler on the direct path).
    pub acked: u64,
    /// Distinct events the handler received intact.
    pub delivered: u64,
    /// Acknowledged but never delivered.
    pub lost: u64,
    /// Deliveries whose `meethook-seq` was not the previous one plus 1.
    pub out_of_order: u64,
    /// Deliveries of an event already delivered.
    pub dups: u64,
    /// Bodies that did not match what was sent (or unknown ids).
    pub corrupt: u64,
    /// Events delivered with another seq than the relay acknowledged.
    pub seq_mismatch: u64,
    /// Sends that failed or were not answered 2xx.
    pub send_errors: u64,
}

impl Checks {
    /// Whether nothing was lost, duplicated, reordered, corrupted or refused.
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.out_of_order == 0
            && self.dups == 0
            && self.corrupt == 0
            && self.seq_mismatch == 0
            && self.send_errors == 0
    }
}

fn atomics(n: usize) -> Vec<AtomicU64> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

impl Tracker {
    /// A tracker for ids `0..n`.
    pub fn new(n: usize) -> Arc<Tracker> {
        Arc::new(Tracker {
            base: Instant::now(),
            expect: atomics(n),
            recv: (0..n).map(|_| AtomicU32::new(0)).collect(),
            recv_ns: atomics(n),
            got_seq: atomics(n),
            acked_seq: atomics(n),
            lane: atomics(n),
            unique: AtomicU64::new(0),
            dups: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
            out_of_order: AtomicU64::new(0),
            last_ns: AtomicU64::new(0),
            notify: Notify::new(),
        })
    }

    /// Ids this tracker covers.
    pub fn len(&self) -> usize {
        self.expect.len()
    }

    /// Records what is about to be sent as `id`.
    pub fn expect(&self, id: u64, body: &[u8]) {
        self.expect[id as usize].store(body::hash(body), R);
    }

    /// Records that `id` was answered 2xx, with the seq the relay handed out (if any).
    pub fn acked(&self, id: u64, seq: Option<u64>) {
        self.acked_seq[id as usize].store(seq.unwrap_or(NO_SEQ), R);
    }

    /// Records the channel `id` is posted to (see [`Tracker::acked_seq_faults`]).
    pub fn lane(&self, id: u64, lane: u64) {
        self.lane[id as usize].store(lane, R);
    }

    fn since_base(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.base).as_nanos() as u64 + 1
    }

    /// Whether `id` arrived.
    pub fn received(&self, id: u64) -> bool {
        // Its arrival time, not the count: the count goes up first, so a waiter could see
        // it before the time is there.
        self.recv_ns[id as usize].load(R) > 0
    }

    /// When `id` first arrived.
    pub fn received_at(&self, id: u64) -> Option<Instant> {
        match self.recv_ns[id as usize].load(R) {
            0 => None,
            ns => Some(self.base + Duration::from_nanos(ns - 1)),
        }
    }

    /// When the latest delivery arrived.
    pub fn last_received_at(&self) -> Option<Instant> {
        match self.last_ns.load(R) {
            0 => None,
            ns => Some(self.base + Duration::from_nanos(ns - 1)),
        }
    }

    /// Distinct ids received so far.
    pub fn unique(&self) -> u64 {
        self.unique.load(R)
    }

    /// Waits until `done` holds or `deadline` passes; returns whether it held.
    pub async fn wait(
        &self,
        deadline: tokio::time::Instant,
        done: impl Fn(&Tracker) -> bool,
    ) -> bool {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done(self) {
                return true;
            }
            // The timeout also covers a wakeup that slipped between the check and the wait.
            let slice = Duration::from_millis(100);
            let until = deadline.min(tokio::time::Instant::now() + slice);
            let _ = tokio::time::timeout_at(until, notified).await;
            if tokio::time::Instant::now() >= deadline {
                return done(self);
            }
        }
    }

    /// Waits until `n` distinct ids arrived, or `deadline`; returns whether they did.
    pub async fn wait_unique(&self, n: u64, deadline: tokio::time::Instant) -> bool {
        self.wait(deadline, |t| t.unique() >= n).await
    }

    fn record(
        &self,
        seq: Option<u64>,
        body: &[u8],
        at: Instant,
        seq_state: Option<&Mutex<SeqState>>,
    ) {
        let Some(id) = body::id_of(body).filter(|&id| (id as usize) < self.len()) else {
            self.corrupt.fetch_add(1, R);
            return;
        };
        let i = id as usize;
        if self.expect[i].load(R) != body::hash(body) {
            self.corrupt.fetch_add(1, R);
            return;
        }
        let first = self.recv[i].fetch_add(1, R) == 0;
        if let Some(state) = seq_state {
            let mut state = state.lock().expect("seq state");
            let consecutive = state.consecutive;
            let keys = state.last.len() as u64;
            let last = &mut state.last[(id % keys) as usize];
            match seq {
                Some(s) if s == *last + 1 || (!consecutive && s > *last) => *last = s,
                Some(s) if !first && s <= *last => {} // a redelivery: counted as a duplicate
                Some(s) => {
                    self.out_of_order.fetch_add(1, R);
                    *last = (*last).max(s);
                }
                None => {
                    self.out_of_order.fetch_add(1, R);
                }
            }
        }
        if let Some(s) = seq {
            self.got_seq[i].store(s, R);
        }
        if first {
            let ns = self.since_base(at);
            self.recv_ns[i].store(ns, R);
            self.last_ns.fetch_max(ns, R);
            self.unique.fetch_add(1, R);
        } else {
            self.dups.fetch_add(1, R);
        }
        self.notify.notify_waiters();
    }

    /// Seqs the relay answered for `ids`: how many repeat another's, and how many numbers of
    /// `1..=max` none got (seqs are gap-free per channel, whichever relay appended).
    pub fn acked_seq_faults(&self, ids: Range<u64>) -> (u64, u64) {
        let mut lanes: std::collections::HashMap<u64, Vec<u64>> = Default::default();
        for id in ids {
            let s = self.acked_seq[id as usize].load(R);
            if s != 0 && s != NO_SEQ {
                lanes
                    .entry(self.lane[id as usize].load(R))
                    .or_default()
                    .push(s);
            }
        }
        let (mut dups, mut gaps) = (0, 0);
        for seqs in lanes.values_mut() {
            seqs.sort_unstable();
            let n = seqs.len() as u64;
            seqs.dedup();
            dups += n - seqs.len() as u64;
            gaps += seqs.last().map_or(0, |&max| max - seqs.len() as u64);
        }
        (dups, gaps)
    }

    /// Integrity counts over `ids`, given what the senders saw.
    pub fn checks(&self, ids: Range<u64>, sent: u64, acked: u64, send_errors: u64) -> Checks {
        let mut c = Checks {
            sent,
            acked,
            send_errors,
            dups: self.dups.load(R),
            corrupt: self.corrupt.load(R),
            out_of_order: self.out_of_order.load(R),
            ..Checks::default()
        };
        for id in ids {
            let i = id as usize;
            let got = self.recv[i].load(R) > 0;
            let acked_seq = self.acked_seq[i].load(R);
            if got {
                c.delivered += 1;
                if acked_seq != 0 && acked_seq != NO_SEQ && self.got_seq[i].load(R) != acked_seq {
                    c.seq_mismatch += 1;
                }
            } else if acked_seq != 0 {
                c.lost += 1;
            }
        }
        c
    }
}

/// The order a handler checks `meethook-seq` in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqOrder {
    /// No check (the direct path and the tunnels carry no seq).
    None,
    /// The channel's: each seq is the previous one plus 1.
    Channel,
    /// Per bot, the bot of id `i` being `i % bots` (see [`crate::body::Bodies::for_bots`]):
    /// each bot's seqs increase.
    Bots(u64),
}

/// The last `meethook-seq` seen per key.
struct SeqState {
    last: Vec<u64>,
    /// Whether a seq must be the previous plus 1 (one key: the channel), or just above it.
    consecutive: bool,
}

impl SeqState {
    fn new(order: SeqOrder) -> Option<SeqState> {
        match order {
            SeqOrder::None => None,
            SeqOrder::Channel => Some(SeqState {
                last: vec![0],
                consecutive: true,
            }),
            SeqOrder::Bots(n) => Some(SeqState {
                last: vec![0; n.max(1) as usize],
                consecutive: false,
            }),
        }
    }
}

struct State {
    tracker: Mutex<Arc<Tracker>>,
    /// Last `meethook-seq` seen, when checking order.
    seq: Option<Mutex<SeqState>>,
    /// How long each request is held before its answer.
    delay: Duration,
    in_flight: AtomicU64,
    most_in_flight: AtomicU64,
}

/// A hyper server on 127.0.0.1 that records into the current [`Tracker`]; stops on drop.
pub struct Handler {
    addr: SocketAddr,
    state: Arc<State>,
    stop: CancellationToken,
}

impl Handler {
    /// Starts on an ephemeral port; `check_seq` turns on the channel's `meethook-seq` order
    /// check.
    pub async fn start(tracker: Arc<Tracker>, check_seq: bool) -> anyhow::Result<Handler> {
        let order = if check_seq {
            SeqOrder::Channel
        } else {
            SeqOrder::None
        };
        Handler::start_with(tracker, order, Duration::ZERO).await
    }

    /// Starts on an ephemeral port, checking `order`, answering each request `delay` after
    /// reading it (a handler that does some work).
    pub async fn start_with(
        tracker: Arc<Tracker>,
        order: SeqOrder,
        delay: Duration,
    ) -> anyhow::Result<Handler> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            tracker: Mutex::new(tracker),
            seq: SeqState::new(order).map(Mutex::new),
            delay,
            in_flight: AtomicU64::new(0),
            most_in_flight: AtomicU64::new(0),
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, state.clone(), stop.clone()));
        Ok(Handler { addr, state, stop })
    }

    /// The URL events are sent to.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The most requests it held at once so far.
    pub fn most_in_flight(&self) -> u64 {
        self.state.most_in_flight.load(R)
    }

    /// Records into `tracker` from now on (the seq order check carries over).
    pub fn set_tracker(&self, tracker: Arc<Tracker>) {
        *self.state.tracker.lock().expect("tracker") = tracker;
    }
}

impl Drop for Handler {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, stop: CancellationToken) {
    loop {
        let io = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok((io, _)) => io,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = io.set_nodelay(true);
        let state = state.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(state.clone(), req));
            let conn =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), svc);
            tokio::select! {
                _ = conn => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    /// Counts the request out however it ends (a dropped connection too).
    struct Held<'a>(&'a AtomicU64);
    impl Drop for Held<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, R);
        }
    }
    let now = state.in_flight.fetch_add(1, R) + 1;
    let _held = Held(&state.in_flight);
    state.most_in_flight.fetch_max(now, R);
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes());
    let at = Instant::now();
    let tracker = state.tracker.lock().expect("tracker").clone();
    match body {
        Ok(body) => {
            let seq = parts
                .headers
                .get("meethook-seq")
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.parse().ok());
            tracker.record(seq, &body, at, state.seq.as_ref());
        }
        Err(_) => {
            tracker.corrupt.fetch_add(1, R);
        }
    }
    if !state.delay.is_zero() {
        tokio::time::sleep(state.delay).await;
    }
    Ok(Response::new(Full::new(Bytes::new())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::Bodies;

    #[test]
    fn tracker_counts_every_kind_of_problem() {
        let b = Bodies::new(256);
        let t = Tracker::new(6);
        let seq = Mutex::new(SeqState::new(SeqOrder::Channel).unwrap());
        let now = Instant::now();
        for id in 0..6 {
            t.expect(id, &b.make(id));
            t.acked(id, Some(id + 1));
        }
        t.record(Some(1), &b.make(0), now, Some(&seq)); // fine
        t.record(Some(3), &b.make(2), now, Some(&seq)); // skips seq 2: out of order
        t.record(Some(3), &b.make(2), now, Some(&seq)); // redelivery: duplicate
        let mut bad = b.make(3).to_vec();
        bad[100] ^= 1;
        t.record(Some(4), &bad, now, Some(&seq)); // corrupt
        t.record(Some(9), &b.make(4), now, Some(&seq)); // out of order, and not the acked seq
                                                        // 1, 3 and 5 never arrive intact: lost.
        let c = t.checks(0..6, 6, 6, 0);
        assert_eq!(c.delivered, 3);
        assert_eq!(c.lost, 3);
        assert_eq!(c.out_of_order, 2);
        assert_eq!(c.dups, 1);
        assert_eq!(c.corrupt, 1);
        assert_eq!(c.seq_mismatch, 1);
        assert!(!c.clean());
    }

    #[test]
    fn tracker_is_clean_for_a_clean_run() {
        let b = Bodies::new(1024);
        let t = Tracker::new(3);
        let seq = Mutex::new(SeqState::new(SeqOrder::Channel).unwrap());
        for id in 0..3 {
            t.expect(id, &b.make(id));
            t.acked(id, Some(id + 1));
            t.record(Some(id + 1), &b.make(id), Instant::now(), Some(&seq));
        }
        let c = t.checks(0..3, 3, 3, 0);
        assert!(c.clean(), "{c:?}");
        assert_eq!(c.delivered, 3);
    }

    #[test]
    fn per_bot_order_allows_bots_to_interleave_but_not_to_go_back() {
        let b = Bodies::for_bots(256, 2);
        let t = Tracker::new(6);
        let seq = Mutex::new(SeqState::new(SeqOrder::Bots(2)).unwrap());
        let now = Instant::now();
        // Ids 0, 2, 4 are bot 0; 1, 3, 5 bot 1; the relay numbered them 1..=6 in id order.
        for id in 0..6 {
            t.expect(id, &b.make(id));
            t.acked(id, Some(id + 1));
        }
        for id in [1, 0, 3, 2] {
            t.record(Some(id + 1), &b.make(id), now, Some(&seq)); // bots interleaved: fine
        }
        assert_eq!(t.checks(0..4, 4, 4, 0).out_of_order, 0);
        t.record(Some(6), &b.make(5), now, Some(&seq)); // bot 1: 4 then 6, fine
        t.record(Some(6), &b.make(5), now, Some(&seq)); // redelivery: duplicate
        t.record(Some(5), &b.make(4), now, Some(&seq)); // bot 0: 3 then 5, fine
        let c = t.checks(0..6, 6, 6, 0);
        assert_eq!((c.out_of_order, c.dups, c.delivered), (0, 1, 6));
        let t = Tracker::new(4);
        let seq = Mutex::new(SeqState::new(SeqOrder::Bots(2)).unwrap());
        for id in 0..4 {
            t.expect(id, &b.make(id));
            t.acked(id, Some(id + 1));
        }
        t.record(Some(3), &b.make(2), now, Some(&seq));
        t.record(Some(1), &b.make(0), now, Some(&seq)); // bot 0: 3 then 1
        assert_eq!(t.checks(0..4, 4, 4, 0).out_of_order, 1);
    }
}
