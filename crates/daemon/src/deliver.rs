//! Forwarding one event to the local handler, and the retry rules of the contract.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use meethook_proto::Event;
use rand::Rng;

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

/// First bytes of a handler's answer kept in the journal.
const RESPONSE_HEAD: usize = 1024;
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
    /// First KiB of the answer's body.
    pub response_head: Bytes,
    /// `Retry-After`, when the handler sent one.
    pub retry_after: Option<Duration>,
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
}

/// Sends events to the handler over a keep-alive HTTP/1 client.
#[derive(Clone)]
pub struct Forwarder {
    client: Client<HttpConnector, Full<Bytes>>,
    base: Uri,
    /// `target("")`, built once: most events have no sub-path.
    root: Uri,
    /// The `host` header, built once (the client would format it for every request).
    host: HeaderValue,
    channel: HeaderValue,
    timeout: Duration,
}

/// `--forward-to` was not a usable URL.
#[derive(Debug, thiserror::Error)]
#[error("invalid --forward-to {url:?}: {why} (expected e.g. http://localhost:3000/hook)")]
pub struct BadTarget {
    url: String,
    why: String,
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
        if uri.host().is_none() {
            return Err(bad("no host"));
        }
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(conn);
        // As the client would write it: the default port left out.
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        let host = match authority.port_u16() {
            Some(p) if p != 80 => format!("{}:{p}", authority.host()),
            _ => authority.host().to_string(),
        };
        let host = HeaderValue::from_str(&host).map_err(|_| bad("bad host"))?;
        let mut f = Forwarder {
            client,
            root: uri.clone(),
            base: uri,
            host,
            channel: HeaderValue::from_str(channel).map_err(|_| bad("bad channel id"))?,
            timeout,
        };
        f.root = f.build_target("");
        Ok(f)
    }

    /// The URL an event with sub-path `path` (`/sub?x=1`) goes to.
    pub fn target(&self, path: &str) -> Uri {
        if path.is_empty() {
            return self.root.clone();
        }
        self.build_target(path)
    }

    fn build_target(&self, path: &str) -> Uri {
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
        let method = Method::from_bytes(ev.method.as_bytes()).unwrap_or(Method::POST);
        let mut req = Request::builder()
            .method(method)
            .uri(self.target(&ev.path))
            .body(Full::new(ev.body.clone()))
            .expect("valid request parts");
        let h = req.headers_mut();
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
        h.insert(header::HOST, self.host.clone());
        h.insert("meethook-seq", HeaderValue::from(ev.seq));
        h.insert("meethook-channel", self.channel.clone());
        h.insert("meethook-attempt", HeaderValue::from(attempt));
        if replay {
            h.insert("meethook-replay", HeaderValue::from_static("true"));
        }
        let fut = async {
            let resp = self.client.request(req).await.map_err(describe)?;
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(parse_retry_after);
            let mut body = resp.into_body();
            let mut head = BytesMut::new();
            let mut read = 0usize;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                if let Some(d) = frame.data_ref() {
                    read += d.len();
                    let room = RESPONSE_HEAD.saturating_sub(head.len());
                    head.extend_from_slice(&d[..d.len().min(room)]);
                }
                if read > RESPONSE_MAX {
                    break;
                }
            }
            Ok::<_, String>((status, retry_after, head.freeze()))
        };
        let (status, error, response_head, retry_after) =
            match tokio::time::timeout(self.timeout, fut).await {
                Ok(Ok((s, ra, head))) => (Some(s), None, head, ra),
                Ok(Err(e)) => (None, Some(e), Bytes::new(), None),
                Err(_) => (
                    None,
                    Some(format!("timed out after {:?}", self.timeout)),
                    Bytes::new(),
                    None,
                ),
            };
        Outcome {
            status,
            error,
            latency: started.elapsed(),
            response_head,
            retry_after,
        }
    }
}

/// The innermost cause of a client error ("connection refused", not "client error").
fn describe(e: hyper_util::client::legacy::Error) -> String {
    let mut s: &dyn std::error::Error = &e;
    while let Some(src) = s.source() {
        s = src;
    }
    if e.is_connect() {
        format!("cannot connect: {s}")
    } else {
        s.to_string()
    }
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
            retry_after: None,
        }
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
