//! The load of phase `hostile`: the victims, the flooding sender, the slowloris connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::body::{self, Bodies};
use crate::load::{seq_of, Conn};

/// Body size of every webhook of the phase.
pub(super) const BODY: usize = 1 << 10;
/// What the slowloris connections trickle, one byte at a time, then `a` forever.
const SLOW_HEAD: &[u8] = b"POST /hooks/slowloris HTTP/1.1\r\nhost: bench\r\nx-slow: ";

/// `(seq, body hash)` of each 2xx of one channel.
pub(super) type Acks = Vec<(u64, u64)>;

/// What one victim sender saw in one window.
#[derive(Default)]
pub(super) struct VictimLog {
    sent: u64,
    errors: u64,
    first_error: Option<String>,
    latency: Vec<Duration>,
    acks: Acks,
}

/// POSTs `bodies` with ids from `ids` to `path` every `pace` until `until`, after a first
/// wait of `stagger` so the senders do not all post at the same instant.
pub(super) async fn victim(
    addr: SocketAddr,
    path: String,
    ids: Arc<AtomicU64>,
    pace: Duration,
    stagger: Duration,
    until: Instant,
) -> VictimLog {
    let bodies = Bodies::new(BODY);
    let mut log = VictimLog::default();
    let mut conn = Conn::open(addr).await.ok();
    tokio::time::sleep(stagger).await;
    let mut tick = tokio::time::interval(pace);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if Instant::now() >= until {
            break;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::open(addr).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    log.errors += 1;
                    log.first_error.get_or_insert(format!("{e:#}"));
                    continue;
                }
            },
        };
        let body = bodies.make(ids.fetch_add(1, Ordering::Relaxed));
        let hash = body::hash(&body);
        log.sent += 1;
        let t0 = Instant::now();
        match c.send(post(addr, &path, body)).await {
            Ok((head, answer)) if head.status.is_success() => {
                log.latency.push(t0.elapsed());
                match seq_of(&answer) {
                    Some(seq) => log.acks.push((seq, hash)),
                    None => {
                        log.errors += 1;
                        log.first_error.get_or_insert(format!(
                            "2xx without a seq: {}",
                            String::from_utf8_lossy(&answer)
                        ));
                    }
                }
            }
            Ok((head, answer)) => {
                log.errors += 1;
                log.first_error.get_or_insert(format!(
                    "status {}: {}",
                    head.status.as_u16(),
                    String::from_utf8_lossy(&answer[..answer.len().min(200)])
                ));
            }
            Err(e) => {
                log.errors += 1;
                log.first_error.get_or_insert(format!("{e:#}"));
                conn = None;
            }
        }
    }
    log
}

pub(super) fn post(addr: SocketAddr, path: &str, body: Bytes) -> Request<Full<Bytes>> {
    Request::post(path)
        .header(header::HOST, addr.to_string())
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .expect("a valid request")
}

/// All victims for `length`; one log per victim, in the order of `paths`.
pub(super) async fn victims_window(
    addr: SocketAddr,
    paths: &[String],
    ids: &Arc<AtomicU64>,
    pace: Duration,
    length: Duration,
) -> Vec<VictimLog> {
    let until = Instant::now() + length;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, path) in paths.iter().enumerate() {
        let stagger = pace.mul_f64(i as f64 / paths.len() as f64);
        tasks.spawn({
            let (path, ids) = (path.clone(), ids.clone());
            async move { (i, victim(addr, path, ids, pace, stagger, until).await) }
        });
    }
    let mut logs: Vec<(usize, VictimLog)> = tasks.join_all().await;
    logs.sort_by_key(|(i, _)| *i);
    logs.into_iter().map(|(_, l)| l).collect()
}

/// What the flooding sender saw (over all its connections).
#[derive(Default)]
pub(super) struct FloodLog {
    pub(super) limited: u64,
    /// 429s without a `Retry-After` of at least one second.
    pub(super) bad_retry_after: u64,
    pub(super) other: u64,
    pub(super) first_other: Option<String>,
    pub(super) acks: Acks,
    /// When each 2xx came.
    pub(super) ok_at: Vec<Instant>,
    /// The first 429: the burst is used up.
    pub(super) first_limited: Option<Instant>,
    pub(super) started: Option<Instant>,
    pub(super) ended: Option<Instant>,
}

impl FloodLog {
    pub(super) fn merge(&mut self, o: FloodLog) {
        self.limited += o.limited;
        self.bad_retry_after += o.bad_retry_after;
        self.other += o.other;
        if self.first_other.is_none() {
            self.first_other = o.first_other;
        }
        self.acks.extend(o.acks);
        self.ok_at.extend(o.ok_at);
        let earliest = |a: Option<Instant>, b: Option<Instant>| a.into_iter().chain(b).min();
        self.first_limited = earliest(self.first_limited, o.first_limited);
        self.started = earliest(self.started, o.started);
        self.ended = self.ended.max(o.ended);
    }

    pub(super) fn ok(&self) -> u64 {
        self.ok_at.len() as u64
    }
}

/// One connection of the flooding sender, posting to `path` as fast as it is answered and
/// ignoring `Retry-After`.
pub(super) async fn flood(
    addr: SocketAddr,
    path: String,
    ids: Arc<AtomicU64>,
    stop: CancellationToken,
) -> FloodLog {
    let bodies = Bodies::new(BODY);
    let mut log = FloodLog {
        started: Some(Instant::now()),
        ..FloodLog::default()
    };
    let mut conn: Option<Conn> = None;
    while !stop.is_cancelled() {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::open(addr).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    log.other += 1;
                    log.first_other.get_or_insert(format!("{e:#}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let body = bodies.make(ids.fetch_add(1, Ordering::Relaxed));
        let hash = body::hash(&body);
        match c.send(post(addr, &path, body)).await {
            Ok((head, answer)) if head.status.is_success() => {
                log.ok_at.push(Instant::now());
                match seq_of(&answer) {
                    Some(seq) => log.acks.push((seq, hash)),
                    None => {
                        log.other += 1;
                        log.first_other.get_or_insert("2xx without a seq".into());
                    }
                }
            }
            Ok((head, _)) if head.status.as_u16() == 429 => {
                log.limited += 1;
                log.first_limited.get_or_insert_with(Instant::now);
                let wait = head
                    .headers
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                if wait.is_none_or(|w| w < 1) {
                    log.bad_retry_after += 1;
                }
            }
            Ok((head, answer)) => {
                log.other += 1;
                log.first_other.get_or_insert(format!(
                    "status {}: {}",
                    head.status.as_u16(),
                    String::from_utf8_lossy(&answer[..answer.len().min(200)])
                ));
            }
            Err(e) => {
                log.other += 1;
                log.first_other.get_or_insert(format!("{e:#}"));
                conn = None;
            }
        }
    }
    log.ended = Some(Instant::now());
    log
}

/// What the slowloris connections saw.
#[derive(Default)]
pub(super) struct SlowStats {
    pub(super) opened: u64,
    pub(super) connect_errors: u64,
    /// Connections the relay ended, and how long after connecting each ended.
    pub(super) lifetimes: Vec<Duration>,
    /// How the relay ended them: an answer (by status line) or a silent close.
    pub(super) answers: HashMap<String, u64>,
}

/// One slowloris connection, reopened whenever the relay ends it: one byte every `trickle`,
/// never a whole request head. The first connect waits `stagger`.
pub(super) async fn slowloris(
    addr: SocketAddr,
    trickle: Duration,
    stagger: Duration,
    stats: Arc<Mutex<SlowStats>>,
    open: Arc<AtomicUsize>,
    stop: CancellationToken,
) {
    tokio::select! {
        _ = stop.cancelled() => return,
        _ = tokio::time::sleep(stagger) => {}
    }
    while !stop.is_cancelled() {
        let mut s = match TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(_) => {
                stats.lock().expect("slow stats").connect_errors += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let t0 = Instant::now();
        stats.lock().expect("slow stats").opened += 1;
        open.fetch_add(1, Ordering::SeqCst);
        let (mut rd, mut wr) = s.split();
        let mut tick = tokio::time::interval(trickle);
        let (mut sent, mut answer, mut buf) = (0usize, Vec::new(), [0u8; 256]);
        let ended = loop {
            tokio::select! {
                _ = stop.cancelled() => break None,
                r = rd.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break Some(answer),
                    // The status line is enough.
                    Ok(n) if answer.len() < 256 => answer.extend_from_slice(&buf[..n]),
                    Ok(_) => {}
                },
                _ = tick.tick() => {
                    let b = SLOW_HEAD.get(sent).copied().unwrap_or(b'a');
                    sent += 1;
                    if wr.write_all(&[b]).await.is_err() {
                        break Some(answer);
                    }
                }
            }
        };
        open.fetch_sub(1, Ordering::SeqCst);
        let Some(answer) = ended else { break };
        let text = String::from_utf8_lossy(&answer);
        let how = match text.lines().next() {
            Some(line) if !line.is_empty() => format!("answered `{}`", line.trim()),
            _ => "closed without an answer".to_string(),
        };
        let mut st = stats.lock().expect("slow stats");
        st.lifetimes.push(t0.elapsed());
        *st.answers.entry(how).or_default() += 1;
    }
}

/// Latencies, counts and per-channel acks of one window over all victims.
#[derive(Default)]
pub(super) struct Window {
    pub(super) latency: Vec<Duration>,
    pub(super) sent: u64,
    pub(super) acked: u64,
    pub(super) errors: u64,
    pub(super) first_error: Option<String>,
}

impl Window {
    /// The window of `logs` (one per victim), whose acks also go to `acks`.
    pub(super) fn of(logs: Vec<VictimLog>, acks: &mut [Acks]) -> Window {
        let mut w = Window::default();
        for (i, l) in logs.into_iter().enumerate() {
            w.sent += l.sent;
            w.acked += l.acks.len() as u64;
            w.errors += l.errors;
            if w.first_error.is_none() {
                w.first_error = l.first_error;
            }
            w.latency.extend(l.latency);
            acks[i].extend(l.acks);
        }
        w
    }
}
