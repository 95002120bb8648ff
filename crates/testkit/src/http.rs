//! HTTP from the test's side: a client, one request, one webhook, a channel made through
//! the admin API.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

/// What a webhook POST came back with.
#[derive(Debug)]
pub struct Posted {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: Bytes,
}

impl Posted {
    /// The `seq` of a `200 {"seq": N}` answer.
    pub fn seq(&self) -> Option<u64> {
        let s = std::str::from_utf8(&self.body).ok()?;
        let n = s.split("\"seq\":").nth(1)?;
        n.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok()
    }
}

/// A shared keep-alive client for tests.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// Sends one request; `Err` on connection failure.
pub async fn request(
    client: &Client<HttpConnector, Full<Bytes>>,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Posted, String> {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(body.into()))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Posted { status, body })
}

/// Creates a channel through a relay's API; returns `(id, token)`.
pub async fn create_channel(relay: &str, admin: &str) -> (String, String) {
    let auth = format!("Bearer {admin}");
    let url = format!("{relay}/api/channels");
    let r = request(
        &client(),
        "POST",
        &url,
        &[("authorization", auth.as_str())],
        "",
    )
    .await
    .expect("channel API reachable");
    assert_eq!(r.status, 201, "{:?}", r.body);
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON answer");
    let field = |k: &str| v[k].as_str().expect("id and token").to_string();
    (field("id"), field("token"))
}

/// POSTs a webhook with a fresh client.
pub async fn post(url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Posted {
    request(&client(), "POST", url, headers, body)
        .await
        .expect("post webhook")
}
