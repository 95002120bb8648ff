//! [`TestHandler`]: a local webhook handler that records every request ([`Received`]) and
//! answers with a programmable status; it can be stopped and restarted on the same port.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::PATIENCE;

/// One request the handler received.
#[derive(Debug, Clone)]
pub struct Received {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body bytes.
    pub body: Bytes,
    /// Status the handler answered.
    pub answered: u16,
}

impl Received {
    /// All values of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).to_string())
            .collect()
    }
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<String> {
        self.header_all(name).into_iter().next()
    }
    /// The `meethook-seq` header.
    pub fn seq(&self) -> u64 {
        self.header("meethook-seq")
            .and_then(|s| s.parse().ok())
            .expect("meethook-seq header")
    }
}

#[derive(Default)]
struct HandlerState {
    log: Mutex<Vec<Received>>,
    /// Statuses to answer next, front first; 200 when empty.
    script: Mutex<VecDeque<u16>>,
    /// Statuses for every request carrying these `meethook-seq`s (before the script).
    by_seq: Mutex<Vec<(u64, u16)>>,
    /// Response bodies for these `meethook-seq`s (`ok` otherwise).
    bodies: Mutex<Vec<(u64, Bytes)>>,
    /// Time taken before answering each request, in ms.
    delay_ms: AtomicU64,
    /// Percentage of requests answered 503 at random (when nothing else decides).
    flaky_percent: AtomicU64,
    /// Requests being answered now, and the most there ever were at once.
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    notify: Notify,
}

/// A recording webhook handler on 127.0.0.1.
pub struct TestHandler {
    addr: SocketAddr,
    state: Arc<HandlerState>,
    stop: Option<CancellationToken>,
}

impl TestHandler {
    /// Starts on an ephemeral port.
    pub async fn start() -> TestHandler {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind handler");
        let mut h = TestHandler {
            addr: listener.local_addr().unwrap(),
            state: Arc::default(),
            stop: None,
        };
        h.serve(listener);
        h
    }

    fn serve(&mut self, listener: TcpListener) {
        let stop = CancellationToken::new();
        self.stop = Some(stop.clone());
        let state = self.state.clone();
        tokio::spawn(async move {
            loop {
                let (io, _) = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                };
                let state = state.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| record(state.clone(), req));
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(io), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = stop.cancelled() => {}
                    }
                });
            }
        });
    }

    /// The handler's URL with `path` appended (`/hook`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answer the next requests with these statuses, then 200 again.
    pub fn script(&self, statuses: &[u16]) {
        self.state.script.lock().unwrap().extend(statuses);
    }

    /// Answer every request for event `seq` with `status` (`None`: back to normal).
    pub fn answer_seq(&self, seq: u64, status: Option<u16>) {
        let mut by_seq = self.state.by_seq.lock().unwrap();
        by_seq.retain(|(s, _)| *s != seq);
        by_seq.extend(status.map(|st| (seq, st)));
    }

    /// Answer every request for event `seq` with this body (instead of `ok`).
    pub fn answer_body(&self, seq: u64, body: impl Into<Bytes>) {
        let mut bodies = self.state.bodies.lock().unwrap();
        bodies.retain(|(s, _)| *s != seq);
        bodies.push((seq, body.into()));
    }

    /// Take `delay` before answering each request (a slow handler).
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.state.delay_ms.store(ms, Ordering::Relaxed);
    }

    /// Answer `percent` % of requests 503 at random (a flaky handler; scripted and
    /// per-seq statuses still win).
    pub fn set_flaky(&self, percent: u64) {
        self.state.flaky_percent.store(percent, Ordering::Relaxed);
    }

    /// The most requests this handler was answering at the same moment.
    pub fn max_in_flight(&self) -> u64 {
        self.state.max_in_flight.load(Ordering::Relaxed)
    }

    /// Closes the port (connections are refused) until [`TestHandler::restart`].
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            s.cancel();
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) {
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("rebind handler on {}: {e}", self.addr),
            }
        };
        self.serve(listener);
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.log.lock().unwrap().clone()
    }

    /// Waits until `pred` holds over the received requests, or panics after [`PATIENCE`].
    pub async fn wait_until(
        &self,
        what: &str,
        pred: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let notified = self.state.notify.notified();
            {
                let log = self.state.log.lock().unwrap();
                if pred(&log) {
                    return log.clone();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let log = self.state.log.lock().unwrap();
                panic!(
                    "timed out waiting for {what}; handler got {} requests",
                    log.len()
                );
            }
        }
    }

    /// Waits until `n` requests were answered 2xx.
    pub async fn wait_delivered(&self, n: usize) -> Vec<Received> {
        self.wait_until(&format!("{n} deliveries"), |log| {
            log.iter()
                .filter(|r| (200..300).contains(&r.answered))
                .count()
                >= n
        })
        .await
    }
}

impl Drop for TestHandler {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn record(
    state: Arc<HandlerState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    // A request cut short is not a delivery: as a real handler, it never sees it.
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"incomplete body")));
        *resp.status_mut() = http::StatusCode::BAD_REQUEST;
        return Ok(resp);
    };
    let seq: Option<u64> = parts
        .headers
        .get("meethook-seq")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let fixed = state
        .by_seq
        .lock()
        .unwrap()
        .iter()
        .find(|(s, _)| Some(*s) == seq)
        .map(|(_, st)| *st);
    let now = state.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
    state.max_in_flight.fetch_max(now, Ordering::Relaxed);
    let delay = state.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    state.in_flight.fetch_sub(1, Ordering::Relaxed);
    let flaky = state.flaky_percent.load(Ordering::Relaxed);
    let scripted = match fixed {
        Some(st) => Some(st),
        None => state.script.lock().unwrap().pop_front(),
    };
    let answered = scripted.unwrap_or_else(|| {
        if flaky > 0 && crate::fault::random() % 100 < flaky {
            503
        } else {
            200
        }
    });
    let r = Received {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect(),
        body,
        answered,
    };
    state.log.lock().unwrap().push(r);
    state.notify.notify_waiters();
    let body = state
        .bodies
        .lock()
        .unwrap()
        .iter()
        .find(|(s, _)| Some(*s) == seq)
        .map(|(_, b)| b.clone())
        .unwrap_or_else(|| Bytes::from_static(b"ok"));
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = http::StatusCode::from_u16(answered).unwrap();
    resp.headers_mut().insert(
        "x-handler",
        http::HeaderValue::from_static("meethook-testkit"),
    );
    Ok(resp)
}
