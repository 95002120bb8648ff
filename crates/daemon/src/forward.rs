//! Forwarding one event to the local handler, and the retry rules of the contract.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use meethook_proto::{Event, Header};
use rand::Rng;
use tokio::net::TcpStream;

/// Headers that describe one hop, never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// First bytes of a handler's answer kept in the journal (the rest is marked as cut).
pub const RESPONSE_CAPTURE: usize = 64 << 10;
/// Most of a handler's answer read (the rest is dropped, the connection with it).
const RESPONSE_MAX: usize = 1 << 20;

/// What one attempt came to.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Handler's status, if it answered.
    pub status: Option<u16>,
    /// Connection error or timeout, if it did not.
    pub error: Option<String>,
    /// Time to the answer.
    pub latency: Duration,
    /// The answer's body, up to [`RESPONSE_CAPTURE`] bytes.
    pub response_head: Bytes,
    /// The answer's headers, in order.
    pub response_headers: Vec<Header>,
    /// Whether the body was longer than what `response_head` keeps.
    pub truncated: bool,
    /// `Retry-After`, when the handler sent one.
    pub retry_after: Option<Duration>,
    /// The connection was refused: nothing listens on the handler's port (yet).
    pub refused: bool,
}

/// What was kept of a handler's answer.
#[derive(Debug, Default)]
struct Answer {
    headers: Vec<Header>,
    body: Bytes,
    truncated: bool,
}

/// How to treat an [`Outcome`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx.
    Delivered,
    /// Connection error, timeout, 408, 425, 429, 5xx.
    Retry,
    /// Any other status: recorded, and the next event goes.
    Failed,
}

impl Outcome {
    /// Applies the contract's rules.
    pub fn verdict(&self) -> Verdict {
        match self.status {
            None => Verdict::Retry,
            Some(s) if (200..300).contains(&s) => Verdict::Delivered,
            Some(408 | 425 | 429) => Verdict::Retry,
            Some(s) if s >= 500 => Verdict::Retry,
            Some(_) => Verdict::Failed,
        }
    }
}

/// Longest wait before retrying a handler whose port refused the connection: it is
/// probably restarting, and [`Forwarder::probe`] notices it back sooner still.
pub const REFUSED_MAX: Duration = Duration::from_secs(2);

/// Capped exponential backoff with ±20 % jitter; a `Retry-After` wins when longer.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Wait after the first failure.
    pub initial: Duration,
    /// Longest wait between attempts (not counting a longer `Retry-After`).
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// Wait before attempt `failures + 1`, after `failures` failed ones.
    pub fn delay(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .initial
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
            .min(self.max);
        let jitter = rand::rng().random_range(0.8..1.2);
        let d = exp.mul_f64(jitter);
        // Honour Retry-After, but never beyond an hour.
        match retry_after {
            Some(ra) => d.max(ra.min(Duration::from_secs(3600))),
            None => d,
        }
    }

    /// Wait before attempt `failures + 1` after `outcome`: at most [`REFUSED_MAX`] when
    /// the connection was refused.
    pub fn after(&self, failures: u32, outcome: &Outcome) -> Duration {
        let d = self.delay(failures, outcome.retry_after);
        if outcome.refused {
            d.min(REFUSED_MAX)
        } else {
            d
        }
    }
}

/// Sends events to the handler over one keep-alive HTTP/1 connection, driven by the
/// sending task itself: no connection task and no pool between an event and its socket.
#[derive(Clone)]
pub struct Forwarder {
    base: Uri,
    /// Where to connect: the URL's host (no brackets) and port.
    addr: (String, u16),
    /// `target("")` in origin form, built once: most events have no sub-path.
    root: Uri,
    /// The `host` header, built once.
    host: HeaderValue,
    channel: HeaderValue,
    timeout: Duration,
    /// Connections between events (taken while one is sent; a concurrent send opens
    /// another; up to [`IDLE_KEPT`] are kept, for `--parallel`).
    idle: Arc<Mutex<Vec<Conn>>>,
}

/// Idle handler connections kept for the next sends (parallel delivery uses several).
const IDLE_KEPT: usize = 64;

/// A handler connection: the request side and the connection future that does its I/O.
struct Conn {
    tx: http1::SendRequest<Full<Bytes>>,
    io: Pin<Box<http1::Connection<TokioIo<TcpStream>, Full<Bytes>>>>,
}

impl Conn {
    /// Runs `f` while doing the connection's I/O; an error when the connection ends first.
    async fn drive<F: Future>(
        io: &mut Pin<Box<http1::Connection<TokioIo<TcpStream>, Full<Bytes>>>>,
        f: F,
    ) -> Result<F::Output, String> {
        let mut f = std::pin::pin!(f);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = f.as_mut().poll(cx) {
                return Poll::Ready(Ok(out));
            }
            let ended = match io.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) => "connection closed by the handler".to_string(),
                Poll::Ready(Err(e)) => innermost(&e),
            };
            // The request may have its answer (or error) now that the connection ended.
            match f.as_mut().poll(cx) {
                Poll::Ready(out) => Poll::Ready(Ok(out)),
                Poll::Pending => Poll::Ready(Err(ended)),
            }
        })
        .await
    }

    /// Whether the connection still takes requests (a FIN from the handler is read here).
    fn usable(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        matches!(self.io.as_mut().poll(&mut cx), Poll::Pending) && self.tx.is_ready()
    }
}

/// `--forward-to` was not a usable URL.
#[derive(Debug, thiserror::Error)]
#[error("invalid --forward-to {url:?}: {why} (expected e.g. http://localhost:3000/hook)")]
pub struct BadTarget {
    url: String,
    why: String,
}

impl BadTarget {
    /// What is wrong with the URL, without the URL itself.
    pub fn reason(&self) -> &str {
        &self.why
    }
}

impl Forwarder {
    /// A forwarder to `base` (an `http://` URL) for events of `channel`.
    pub fn new(base: &str, channel: &str, timeout: Duration) -> Result<Forwarder, BadTarget> {
        let bad = |why: &str| BadTarget {
            url: base.to_string(),
            why: why.to_string(),
        };
        let uri: Uri = base.parse().map_err(|_| bad("not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(bad("https handlers are not supported yet; use http")),
            _ => return Err(bad("it must start with http://")),
        }
        let authority = uri
            .authority()
            .filter(|a| !a.host().is_empty())
            .ok_or_else(|| bad("no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        // As clients write it: the default port left out.
        let host = match authority.port_u16() {
            Some(p) if p != 80 => format!("{}:{p}", authority.host()),
            _ => authority.host().to_string(),
        };
        let host = HeaderValue::from_str(&host).map_err(|_| bad("bad host"))?;
        let name = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let mut f = Forwarder {
            addr: (name.to_string(), port),
            root: uri.clone(),
            base: uri,
            host,
            channel: HeaderValue::from_str(channel).map_err(|_| bad("bad channel id"))?,
            timeout,
            idle: Arc::default(),
        };
        f.root = origin_form(&f.target(""));
        Ok(f)
    }

    /// The URL an event with sub-path `path` (`/sub?x=1`) goes to.
    pub fn target(&self, path: &str) -> Uri {
        let base_path = self.base.path().trim_end_matches('/');
        let (sub, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let mut pq = format!("{base_path}{sub}");
        if pq.is_empty() {
            pq.push('/');
        }
        match (query, self.base.query()) {
            (Some(q), _) => {
                pq.push('?');
                pq.push_str(q);
            }
            (None, Some(q)) => {
                pq.push('?');
                pq.push_str(q);
            }
            _ => {}
        }
        let mut parts = self.base.clone().into_parts();
        parts.path_and_query = pq.parse().ok();
        Uri::from_parts(parts).unwrap_or_else(|_| self.base.clone())
    }

    /// One attempt: the original method, headers (minus hop-by-hop) and body, plus
    /// `meethook-seq`, `meethook-channel`, `meethook-attempt` (and `meethook-replay`).
    pub async fn send(&self, ev: &Event, attempt: u32, replay: bool) -> Outcome {
        let started = Instant::now();
        let exchange = async {
            let kept = self.idle.lock().expect("idle connection").pop();
            let conn = kept.and_then(|mut c| c.usable().then_some(c));
            let fresh = conn.is_none();
            match self.exchange(conn, ev, attempt, replay).await {
                // A kept connection that closed before the request was written to it: once
                // more on a new one (the handler cannot have seen it).
                Err(Failure::Unsent(_)) if !fresh => self.exchange(None, ev, attempt, replay).await,
                r => r,
            }
        };
        let mut refused = false;
        let (status, error, answer, retry_after) =
            match tokio::time::timeout(self.timeout, exchange).await {
                Ok(Ok((s, ra, answer))) => (Some(s), None, answer, ra),
                Ok(Err(f)) => {
                    refused = matches!(f, Failure::Refused(_));
                    (None, Some(f.message()), Answer::default(), None)
                }
                Err(_) => (
                    None,
                    Some(format!("timed out after {:?}", self.timeout)),
                    Answer::default(),
                    None,
                ),
            };
        Outcome {
            status,
            error,
            latency: started.elapsed(),
            response_head: answer.body,
            response_headers: answer.headers,
            truncated: answer.truncated,
            retry_after,
            refused,
        }
    }

    /// Whether the handler's port accepts a connection now (tried for at most `within`).
    /// The connection is kept for the next attempt.
    pub async fn probe(&self, within: Duration) -> bool {
        match tokio::time::timeout(within, self.connect()).await {
            Ok(Ok(conn)) => {
                self.keep(conn);
                true
            }
            _ => false,
        }
    }

    /// Sends one request on `conn` (or a new connection) and reads the answer; the
    /// connection is kept for the next one when it can take it.
    async fn exchange(
        &self,
        conn: Option<Conn>,
        ev: &Event,
        attempt: u32,
        replay: bool,
    ) -> Result<(u16, Option<Duration>, Answer), Failure> {
        let mut conn = match conn {
            Some(c) => c,
            None => self.connect().await?,
        };
        let req = self.request(ev, attempt, replay);
        let Conn { tx, io } = &mut conn;
        let resp = Conn::drive(io, tx.try_send_request(req))
            .await
            .map_err(Failure::Other)?
            .map_err(|mut e| {
                // hyper hands the request back only when none of it was written.
                if e.take_message().is_some() {
                    Failure::Unsent(innermost(e.error()))
                } else {
                    Failure::Other(innermost(e.error()))
                }
            })?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(parse_retry_after);
        let headers = resp
            .headers()
            .iter()
            .map(|(n, v)| Header::new(n.as_str(), v.as_bytes().to_vec()))
            .collect();
        let mut body = resp.into_body();
        let mut head = BytesMut::new();
        let mut read = 0usize;
        let mut whole = true;
        while let Some(frame) = Conn::drive(io, body.frame())
            .await
            .map_err(Failure::Other)?
        {
            let Ok(frame) = frame else {
                whole = false;
                break;
            };
            if let Some(d) = frame.data_ref() {
                read += d.len();
                let room = RESPONSE_CAPTURE.saturating_sub(head.len());
                head.extend_from_slice(&d[..d.len().min(room)]);
            }
            if read > RESPONSE_MAX {
                whole = false;
                break;
            }
        }
        if whole && conn.usable() {
            self.keep(conn);
        }
        let answer = Answer {
            headers,
            truncated: read > head.len(),
            body: head.freeze(),
        };
        Ok((status, retry_after, answer))
    }

    /// Keeps `conn` for a later send, unless enough are kept already.
    fn keep(&self, conn: Conn) {
        let mut idle = self.idle.lock().expect("idle connection");
        if idle.len() < IDLE_KEPT {
            idle.push(conn);
        }
    }

    async fn connect(&self) -> Result<Conn, Failure> {
        let cannot = |e: &dyn std::fmt::Display| Failure::Other(format!("cannot connect: {e}"));
        let stream = TcpStream::connect((self.addr.0.as_str(), self.addr.1))
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    Failure::Refused(format!("cannot connect: {e}"))
                }
                _ => cannot(&e),
            })?;
        let _ = stream.set_nodelay(true);
        let (tx, io) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| cannot(&innermost(&e)))?;
        Ok(Conn {
            tx,
            io: Box::pin(io),
        })
    }

    /// The request for one attempt at `ev`.
    fn request(&self, ev: &Event, attempt: u32, replay: bool) -> Request<Full<Bytes>> {
        let method = Method::from_bytes(ev.method.as_bytes()).unwrap_or(Method::POST);
        let uri = if ev.path.is_empty() {
            self.root.clone()
        } else {
            origin_form(&self.target(&ev.path))
        };
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Full::new(ev.body.clone()))
            .expect("valid request parts");
        let h = req.headers_mut();
        h.insert(header::HOST, self.host.clone());
        for hd in &ev.headers {
            if HOP_BY_HOP.contains(&hd.name.as_str()) || hd.name.starts_with("meethook-") {
                continue;
            }
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(hd.name.as_bytes()),
                HeaderValue::from_bytes(&hd.value),
            ) {
                h.append(n, v);
            }
        }
        h.insert("meethook-seq", HeaderValue::from(ev.seq));
        h.insert("meethook-channel", self.channel.clone());
        h.insert("meethook-attempt", HeaderValue::from(attempt));
        if replay {
            h.insert("meethook-replay", HeaderValue::from_static("true"));
        }
        req
    }
}

/// Why an attempt got no answer.
enum Failure {
    /// The request was not written: the connection had closed first.
    Unsent(String),
    /// Nothing listens on the handler's port.
    Refused(String),
    /// Anything else (other connect errors included).
    Other(String),
}

impl Failure {
    fn message(self) -> String {
        match self {
            Failure::Unsent(m) | Failure::Refused(m) | Failure::Other(m) => m,
        }
    }
}

/// `uri` as a request line writes it to a server: path and query only.
fn origin_form(uri: &Uri) -> Uri {
    uri.path_and_query()
        .map(|pq| Uri::from(pq.clone()))
        .unwrap_or_else(|| Uri::from_static("/"))
}

/// The innermost cause of a client error ("connection reset by peer", not "error").
fn innermost(e: &hyper::Error) -> String {
    let mut s: &dyn std::error::Error = e;
    while let Some(src) = s.source() {
        s = src;
    }
    s.to_string()
}

fn parse_retry_after(v: &HeaderValue) -> Option<Duration> {
    let s = v.to_str().ok()?.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(s).ok()?;
    let delta = when.timestamp_millis() - chrono::Utc::now().timestamp_millis();
    Some(Duration::from_millis(delta.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(status: Option<u16>) -> Outcome {
        Outcome {
            status,
            error: None,
            latency: Duration::ZERO,
            response_head: Bytes::new(),
            response_headers: Vec::new(),
            truncated: false,
            retry_after: None,
            refused: false,
        }
    }

    /// A handler on loopback that answers 200 and counts its connections; with `close` it
    /// closes each connection after its answer.
    async fn handler(close: bool) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let conns = Arc::new(AtomicUsize::new(0));
        let counted = conns.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let svc = hyper::service::service_fn(
                    move |req: Request<hyper::body::Incoming>| async move {
                        let seq = req.headers()["meethook-seq"].clone();
                        let body = req.into_body().collect().await?.to_bytes();
                        let mut resp = http::Response::new(Full::new(body));
                        resp.headers_mut().insert("seq", seq);
                        if close {
                            resp.headers_mut()
                                .insert(header::CONNECTION, HeaderValue::from_static("close"));
                        }
                        Ok::<_, hyper::Error>(resp)
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc),
                );
            }
        });
        (url, conns)
    }

    fn event(seq: u64) -> Event {
        Event {
            seq,
            received_at_ms: 0,
            method: "POST".into(),
            path: String::new(),
            headers: vec![],
            body: Bytes::from(format!("event {seq}")),
        }
    }

    #[tokio::test]
    async fn one_kept_connection_carries_every_event_and_a_closed_one_is_replaced() {
        use std::sync::atomic::Ordering;
        for close in [false, true] {
            let (url, conns) = handler(close).await;
            let f = Forwarder::new(&url, "c", Duration::from_secs(5)).unwrap();
            for seq in 1..=5 {
                let out = f.send(&event(seq), 1, false).await;
                assert_eq!(
                    (out.status, out.error),
                    (Some(200), None),
                    "close={close} seq={seq}"
                );
                assert_eq!(out.response_head, format!("event {seq}"));
            }
            let expected = if close { 5 } else { 1 };
            assert_eq!(conns.load(Ordering::SeqCst), expected, "close={close}");
        }
    }

    #[tokio::test]
    async fn a_handler_that_drops_kept_connections_still_gets_every_event_once() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        // Answers as if keeping the connection, then closes it without a word.
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                log.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            }
        });
        let f = Forwarder::new(&url, "c", Duration::from_secs(5)).unwrap();
        for seq in 1..=4 {
            let out = f.send(&event(seq), 1, false).await;
            assert_eq!((out.status, out.error), (Some(200), None), "seq={seq}");
            // Events come apart: the handler's close arrives while the connection is idle.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let seen = seen.lock().unwrap();
        let requests: Vec<_> = seen.iter().filter(|r| r.starts_with("POST")).collect();
        assert_eq!(
            requests.len(),
            4,
            "each event reached the handler once: {seen:?}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_handler_is_an_error_that_says_so() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        drop(listener);
        let f = Forwarder::new(&url, "c", Duration::from_secs(5)).unwrap();
        let out = f.send(&event(1), 1, false).await;
        assert_eq!(out.status, None);
        assert_eq!(out.verdict(), Verdict::Retry);
        let err = out.error.unwrap();
        assert!(err.starts_with("cannot connect: "), "{err}");
        assert!(out.refused, "nothing listens: refused");
        assert!(!f.probe(Duration::from_millis(250)).await);
    }

    #[tokio::test]
    async fn a_probe_that_gets_through_hands_its_connection_to_the_next_send() {
        use std::sync::atomic::Ordering;
        let (url, conns) = handler(false).await;
        let f = Forwarder::new(&url, "c", Duration::from_secs(5)).unwrap();
        assert!(f.probe(Duration::from_secs(5)).await);
        let out = f.send(&event(1), 2, false).await;
        assert_eq!((out.status, out.refused), (Some(200), false));
        assert_eq!(
            conns.load(Ordering::SeqCst),
            1,
            "the probe's connection was used"
        );
    }

    #[test]
    fn a_refused_connection_is_retried_within_two_seconds() {
        let b = Backoff {
            initial: Duration::from_secs(60),
            max: Duration::from_secs(600),
        };
        let mut o = outcome(None);
        assert!(
            b.after(3, &o) >= Duration::from_secs(60),
            "timeouts keep the backoff"
        );
        o.refused = true;
        assert!(b.after(3, &o) <= REFUSED_MAX);
        let answered = outcome(Some(503));
        assert!(
            b.after(3, &answered) >= Duration::from_secs(60),
            "5xx keep the backoff"
        );
    }

    #[test]
    fn verdicts_follow_the_contract() {
        assert_eq!(outcome(Some(200)).verdict(), Verdict::Delivered);
        assert_eq!(outcome(Some(204)).verdict(), Verdict::Delivered);
        for s in [408, 425, 429, 500, 502, 503] {
            assert_eq!(outcome(Some(s)).verdict(), Verdict::Retry, "{s}");
        }
        for s in [301, 400, 401, 404, 410, 422] {
            assert_eq!(outcome(Some(s)).verdict(), Verdict::Failed, "{s}");
        }
        assert_eq!(outcome(None).verdict(), Verdict::Retry);
    }

    #[test]
    fn backoff_is_capped_with_jitter_and_honours_retry_after() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let d1 = b.delay(1, None);
        assert!(d1 >= Duration::from_millis(80) && d1 <= Duration::from_millis(120));
        let d10 = b.delay(10, None);
        assert!(d10 >= Duration::from_millis(800) && d10 <= Duration::from_millis(1200));
        assert!(b.delay(1, Some(Duration::from_secs(5))) >= Duration::from_secs(5));
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("7")),
            Some(Duration::from_secs(7))
        );
    }

    #[test]
    fn targets_append_the_subpath_and_query() {
        let f = Forwarder::new("http://localhost:3000/hook", "c", Duration::from_secs(1)).unwrap();
        assert_eq!(f.target("").to_string(), "http://localhost:3000/hook");
        assert_eq!(
            f.target("/a/b?x=1").to_string(),
            "http://localhost:3000/hook/a/b?x=1"
        );
        let root = Forwarder::new("http://127.0.0.1:9", "c", Duration::from_secs(1)).unwrap();
        assert_eq!(root.target("").to_string(), "http://127.0.0.1:9/");
        assert_eq!(root.target("?q").to_string(), "http://127.0.0.1:9/?q");
        assert!(Forwarder::new("localhost:3000", "c", Duration::from_secs(1)).is_err());
        assert!(Forwarder::new("ftp://x", "c", Duration::from_secs(1)).is_err());
    }
}
