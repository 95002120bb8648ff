//! A small HTTP(S) client for the CLI's calls to a relay's API.

use std::time::Duration;

use anyhow::{anyhow, Context};
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// An answer: status and body.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body bytes.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (null when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The relay's `{"error": …}` message, or the raw body.
    pub fn error_message(&self) -> String {
        match self.json().get("error").and_then(|e| e.as_str()) {
            Some(m) => m.to_string(),
            None => String::from_utf8_lossy(&self.body).trim().to_string(),
        }
    }
}

/// Sends one request with optional bearer token, headers and body.
pub async fn send(
    method: Method,
    url: &str,
    bearer: Option<&str>,
    headers: &[(String, String)],
    body: Bytes,
) -> anyhow::Result<Answer> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .context("loading the system's root certificates")?
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let mut req = Request::builder().method(method).uri(url);
    if let Some(t) = bearer {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req
        .body(Full::new(body))
        .map_err(|e| anyhow!("invalid request to {url}: {e}"))?;
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .map_err(|_| anyhow!("{url} did not answer within 30s"))?
        .map_err(|e| {
            if url.starts_with("https://") && meethook_daemon::speaks_plain_http(&e) {
                return anyhow!(
                    "cannot reach {url}: the server does not speak TLS on this port; use http://"
                );
            }
            let mut s: &dyn std::error::Error = &e;
            while let Some(src) = s.source() {
                s = src;
            }
            anyhow!("cannot reach {url}: {s} (is `meethook relay` running there?)")
        })?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| anyhow!("reading the answer from {url}: {e}"))?
        .to_bytes();
    Ok(Answer { status, body })
}
