//! The load generator: N concurrent senders, each on its own keep-alive HTTP/1 connection,
//! each sending its next event as soon as the previous one is answered.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::Bodies;
use crate::handler::Tracker;

/// Longest a single request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Where events are posted.
#[derive(Debug, Clone)]
pub struct Target {
    /// Server address.
    pub addr: SocketAddr,
    /// Request path (`/hooks/{channel}` or `/hook`).
    pub path: String,
    /// Whether 2xx answers carry `{"seq":N}` (the relay).
    pub relay: bool,
}

/// What the senders of one run saw.
#[derive(Debug)]
pub struct LoadResult {
    /// Requests started.
    pub sent: u64,
    /// Requests answered 2xx.
    pub acked: u64,
    /// Requests that failed or got another status.
    pub errors: u64,
    /// The first failure, for the report.
    pub first_error: Option<String>,
    /// When the first request started.
    pub started: Instant,
    /// When the last 2xx answer arrived.
    pub last_ack: Option<Instant>,
    /// Time from start to answer of each request, when asked for.
    pub ack_latency: Vec<Duration>,
    /// Time from start to arrival at the handler of each event (serial runs only).
    pub e2e_latency: Vec<Duration>,
}

impl LoadResult {
    fn new() -> LoadResult {
        LoadResult {
            sent: 0,
            acked: 0,
            errors: 0,
            first_error: None,
            started: Instant::now(),
            last_ack: None,
            ack_latency: Vec::new(),
            e2e_latency: Vec::new(),
        }
    }

    fn error(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }

    fn merge(&mut self, o: LoadResult) {
        self.sent += o.sent;
        self.acked += o.acked;
        self.errors += o.errors;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
        self.last_ack = self.last_ack.max(o.last_ack);
        self.ack_latency.extend(o.ack_latency);
    }

    /// 2xx answers per second, from the first request to the last answer.
    pub fn acked_per_sec(&self) -> f64 {
        match self.last_ack {
            Some(end) if self.acked > 0 => {
                self.acked as f64 / end.duration_since(self.started).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

/// One keep-alive connection.
pub(crate) struct Conn {
    tx: SendRequest<Full<Bytes>>,
}

impl Conn {
    /// Connects to `addr` (HTTP/1, no Nagle).
    pub(crate) async fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { tx })
    }

    /// Sends one POST; returns the status and the answer's body.
    async fn post(&mut self, target: &Target, body: Bytes) -> anyhow::Result<(u16, Bytes)> {
        let req = Request::post(target.path.as_str())
            .header(header::HOST, target.addr.to_string())
            .header(header::CONTENT_TYPE, "application/json")
            .header("user-agent", "meethook-bench")
            .body(Full::new(body))?;
        let (parts, body) = self.send(req).await?;
        Ok((parts.status.as_u16(), body))
    }

    /// Sends `req`; returns the answer's head and its whole body.
    pub(crate) async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> anyhow::Result<(http::response::Parts, Bytes)> {
        let work = async {
            self.tx.ready().await?;
            let resp = self.tx.send_request(req).await?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await?.to_bytes();
            anyhow::Ok((parts, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, work)
            .await
            .map_err(|_| anyhow!("no answer within {REQUEST_TIMEOUT:?}"))?
    }
}

/// The `seq` of a `{"seq":N}` answer.
pub(crate) fn seq_of(body: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(body).ok()?;
    let n = s.split("\"seq\":").nth(1)?;
    let digits: String = n
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Checks the answer and tells the tracker; `Err` is the failure to count.
fn settle(
    target: &Target,
    tracker: &Tracker,
    id: u64,
    answer: anyhow::Result<(u16, Bytes)>,
) -> Result<(), String> {
    match answer {
        Ok((status, body)) if (200..300).contains(&status) => {
            let seq = if target.relay {
                Some(seq_of(&body).ok_or_else(|| {
                    format!("answer without a seq: {}", String::from_utf8_lossy(&body))
                })?)
            } else {
                None
            };
            tracker.acked(id, seq);
            Ok(())
        }
        Ok((status, body)) => Err(format!(
            "status {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )),
        Err(e) => Err(format!("{e:#}")),
    }
}

/// Sends the events `ids` from `senders` concurrent connections as fast as they are answered;
/// stops starting new ones at `deadline`. Ack latencies are kept when `keep_latency`.
pub async fn flood(
    target: &Target,
    tracker: &Arc<Tracker>,
    ids: Range<u64>,
    senders: usize,
    bodies: &Bodies,
    deadline: Instant,
    keep_latency: bool,
) -> LoadResult {
    flood_spread(
        std::slice::from_ref(target),
        tracker,
        ids,
        senders,
        bodies,
        deadline,
        keep_latency,
    )
    .await
}

/// [`flood`] over several targets (e.g. relays sharing one database): sender `i` posts to
/// `targets[i % targets.len()]`.
pub async fn flood_spread(
    targets: &[Target],
    tracker: &Arc<Tracker>,
    ids: Range<u64>,
    senders: usize,
    bodies: &Bodies,
    deadline: Instant,
    keep_latency: bool,
) -> LoadResult {
    assert!(!targets.is_empty(), "flood needs a target");
    let next = Arc::new(AtomicU64::new(ids.start));
    let total = Arc::new(Mutex::new(LoadResult::new()));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..senders {
        let (target, tracker, next, total, bodies) = (
            targets[i % targets.len()].clone(),
            tracker.clone(),
            next.clone(),
            total.clone(),
            bodies.clone(),
        );
        let end = ids.end;
        let lane = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            target.path.hash(&mut h);
            h.finish()
        };
        tasks.spawn(async move {
            let mut mine = LoadResult::new();
            let mut conn: Option<Conn> = None;
            let mut connect_failures = 0;
            while Instant::now() < deadline {
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => match Conn::open(target.addr).await {
                        Ok(c) => {
                            connect_failures = 0;
                            conn.insert(c)
                        }
                        Err(e) => {
                            mine.error(format!("{e:#}"));
                            connect_failures += 1;
                            if connect_failures >= 3 {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                let id = next.fetch_add(1, Ordering::Relaxed);
                if id >= end {
                    break;
                }
                let body = bodies.make(id);
                tracker.expect(id, &body);
                tracker.lane(id, lane);
                let t0 = Instant::now();
                mine.sent += 1;
                let answer = c.post(&target, body).await;
                let failed_io = answer.is_err();
                match settle(&target, &tracker, id, answer) {
                    Ok(()) => {
                        let now = Instant::now();
                        mine.acked += 1;
                        mine.last_ack = Some(now);
                        if keep_latency {
                            mine.ack_latency.push(now - t0);
                        }
                    }
                    Err(e) => mine.error(e),
                }
                if failed_io {
                    conn = None;
                }
            }
            total.lock().expect("load result").merge(mine);
        });
    }
    while tasks.join_next().await.is_some() {}
    let mut r = std::mem::replace(&mut *total.lock().expect("load result"), LoadResult::new());
    r.started = started;
    r
}

/// Sends the events `ids` one at a time from one connection; each waits for its answer and
/// for its arrival at the handler before the next starts. Stops at the first event that does
/// not arrive within `per_event`.
pub async fn serial(
    target: &Target,
    tracker: &Arc<Tracker>,
    ids: Range<u64>,
    bodies: &Bodies,
    per_event: Duration,
) -> LoadResult {
    let mut r = LoadResult::new();
    let mut conn: Option<Conn> = None;
    for id in ids {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::open(target.addr).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    r.error(format!("{e:#}"));
                    break;
                }
            },
        };
        let body = bodies.make(id);
        tracker.expect(id, &body);
        let t0 = Instant::now();
        r.sent += 1;
        let answer = c.post(target, body).await;
        if answer.is_err() {
            conn = None;
        }
        if let Err(e) = settle(target, tracker, id, answer) {
            r.error(e);
            continue;
        }
        let answered = Instant::now();
        r.acked += 1;
        r.last_ack = Some(answered);
        r.ack_latency.push(answered - t0);
        let deadline = tokio::time::Instant::from_std(t0 + per_event);
        if !tracker.wait(deadline, |t| t.received(id)).await {
            r.error(format!("event {id} not delivered within {per_event:?}"));
            break;
        }
        let at = tracker.received_at(id).expect("received");
        r.e2e_latency.push(at.saturating_duration_since(t0));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::seq_of;

    #[test]
    fn parses_seq_answers() {
        assert_eq!(seq_of(br#"{"seq":42}"#), Some(42));
        assert_eq!(seq_of(br#"{"seq": 7}"#), Some(7));
        assert_eq!(seq_of(br#"{"error":"x"}"#), None);
    }
}
