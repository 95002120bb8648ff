//! HTTP routing and handlers: webhook ingress, websocket upgrade, channel API, health, metrics.

// An early answer is the error path of these helpers; boxing it would buy nothing.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use meethook_disk::bodyfile::{BodySink, WrittenBody, BODY_FILE_MIN};
use meethook_proto::clock::now_ms;
use meethook_proto::Header;
use meethook_store::{Channel, NewEvent, StoreError};
use serde::Deserialize;
use serde_json::json;

use crate::auth;
use crate::metrics::Metrics;
use crate::preload;
use crate::State;

pub(crate) type Resp = Response<Full<Bytes>>;

fn json_resp(status: StatusCode, v: serde_json::Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub(crate) fn error(status: StatusCode, msg: impl Into<String>) -> Resp {
    json_resp(status, json!({ "error": msg.into() }))
}

/// The one place a store error becomes an HTTP answer.
fn store_error(m: &Metrics, e: StoreError) -> Resp {
    match e {
        StoreError::NotFound => error(StatusCode::NOT_FOUND, "unknown channel"),
        StoreError::Conflict => error(StatusCode::CONFLICT, "channel already exists"),
        StoreError::Unavailable(err) => {
            Metrics::inc(&m.rejected_unavailable);
            tracing::error!(error = %err, "store unavailable");
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage unavailable; retry later",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
    }
}

/// Routes one request.
pub(crate) async fn handle(
    st: Arc<State>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Resp, Infallible> {
    let path = req.uri().path().to_string();
    let segs: Vec<&str> = path.trim_start_matches('/').splitn(3, '/').collect();
    let ip = peer.ip();
    let guarded = !matches!(segs.as_slice(), ["healthz"] | ["metrics"]);
    if guarded {
        if let Err(wait) = st.auth_failures.check(ip, st.store.nodes()) {
            return Ok(too_many(
                wait,
                "too many failed authentications from this address",
            ));
        }
    }
    let resp = match (req.method(), segs.as_slice()) {
        (_, ["hooks", channel, ..]) if !channel.is_empty() => {
            let channel = channel.to_string();
            webhook(&st, channel, req).await
        }
        (&Method::GET, ["ws", channel]) => {
            let channel = channel.to_string();
            crate::stream::upgrade(&st, channel, peer, req).await
        }
        (&Method::GET, ["healthz"]) => match st.store.ping().await {
            Ok(()) => json_resp(StatusCode::OK, json!({"status": "ok"})),
            Err(e) => store_error(&st.metrics, e),
        },
        (&Method::GET, ["metrics"]) => {
            let mut text = st.metrics.render();
            text.push_str(&format!(
                "# HELP meethook_relay_nodes Relays sharing this relay's store (limits are split \
                 between them).\n# TYPE meethook_relay_nodes gauge\nmeethook_relay_nodes {}\n",
                st.store.nodes()
            ));
            let mut r = Response::new(Full::new(Bytes::from(text)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        (_, ["api", "channels", ..]) => api(&st, req).await,
        _ => error(StatusCode::NOT_FOUND, "no such route"),
    };
    if resp.status() == StatusCode::UNAUTHORIZED {
        st.auth_failures.failed(ip);
    }
    Ok(resp)
}

/// 429 with a `Retry-After` in whole seconds (at least 1).
fn too_many(wait: std::time::Duration, msg: &str) -> Resp {
    let mut r = error(StatusCode::TOO_MANY_REQUESTS, msg);
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    r
}

/// Splits `/hooks/{channel}[/{path…}]` (+ query) into the channel and what the handler's URL
/// gets appended (`/path…?query`); `None` when it is not a webhook path.
pub fn hook_target<'a>(path: &'a str, query: Option<&str>) -> Option<(&'a str, String)> {
    let rest = path.strip_prefix("/hooks/")?;
    let (channel, sub) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if channel.is_empty() {
        return None;
    }
    let mut sub = sub.to_string();
    if let Some(q) = query {
        sub.push('?');
        sub.push_str(q);
    }
    Some((channel, sub))
}

/// `POST|PUT /hooks/{channel}[/{path…}]`: store, then answer `{"seq": N}`.
async fn webhook(st: &State, channel: String, req: Request<Incoming>) -> Resp {
    let m = &st.metrics;
    if req.method() != Method::POST && req.method() != Method::PUT {
        let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "webhooks are POST or PUT");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST, PUT"));
        return r;
    }
    let ch = match st.channels.get(&*st.store, &channel).await {
        Ok(Some(ch)) => ch,
        Ok(None) => {
            Metrics::inc(&m.rejected_not_found);
            return error(
                StatusCode::NOT_FOUND,
                format!("unknown channel {channel:?}: create it with `meethook channel create`"),
            );
        }
        Err(e) => return store_error(m, e),
    };
    if let Err(wait) = st.rate.check(&channel, st.store.nodes()) {
        Metrics::inc(&m.rejected_rate_limited);
        return too_many(
            wait,
            "channel rate limit exceeded; retry after the given delay",
        );
    }
    let too_large = || {
        Metrics::inc(&m.rejected_too_large);
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "body larger than the relay's --max-body ({} bytes)",
                st.cfg.max_body
            ),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > st.cfg.max_body as u64) {
        return too_large();
    }
    // Whatever the headers settle is settled before the body is stored: a refused body is
    // read and dropped (no body file, no fsync), and then refused, since many clients only
    // read the answer once they have sent the whole request.
    let mut signed = false;
    if let Some(secret) = &ch.sender_secret {
        match auth::check_sender_heads(secret, req.headers(), now_ms() / 1000) {
            Ok(heads) => signed = heads == auth::SenderHeads::Signed,
            Err(why) => {
                discard_body(st, req.into_body()).await;
                return reject_sender(m, &channel, why);
            }
        }
    }
    let (parts, body) = req.into_parts();
    // Listeners that take preloads get a big body's pieces while it arrives.
    let preload = declared
        .filter(|&n| n >= BODY_FILE_MIN as u64)
        .and_then(|n| st.preloads.start(&channel, n));
    let (body, written) = match read_body(st, body, declared, preload.as_ref()).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => return too_large(),
        Err(BodyError::Timeout) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {:?}; send it again",
                    st.cfg.body_timeout
                ),
            )
        }
        Err(BodyError::Read(e)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("could not read the request body: {e}"),
            )
        }
        Err(BodyError::Store(e)) => return store_error(m, StoreError::unavailable(e)),
    };
    if let Some(secret) = ch.sender_secret.as_deref().filter(|_| signed) {
        let checked = auth::check_sender(secret, &parts.headers, &body, now_ms() / 1000);
        if let Err(why) = checked {
            return reject_sender(m, &channel, why);
        }
    }
    let path = match hook_target(parts.uri.path(), parts.uri.query()) {
        Some((_, sub)) => sub,
        None => return error(StatusCode::NOT_FOUND, "no such route"),
    };
    let headers = parts
        .headers
        .iter()
        .map(|(n, v)| Header::new(n.as_str(), Bytes::copy_from_slice(v.as_bytes())))
        .collect();
    if let Some(p) = &preload {
        p.received(&body);
    }
    let len = body.len() as u64;
    let ev = NewEvent {
        received_at_ms: now_ms(),
        method: parts.method.as_str().to_string(),
        path,
        headers,
        body,
    };
    let stored = match written {
        Some(file) => st.store.append_written(&channel, ev, file).await,
        None => st.store.append(&channel, ev).await,
    };
    match stored {
        Ok(seq) => {
            if let Some(p) = preload {
                p.stored(seq);
            }
            Metrics::inc(&m.webhooks_accepted);
            m.webhook_bytes
                .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
            json_resp(StatusCode::OK, json!({ "seq": seq }))
        }
        Err(e) => store_error(m, e),
    }
}

/// Why a webhook's body could not be taken.
enum BodyError {
    TooLarge,
    Timeout,
    Read(Box<dyn std::error::Error + Send + Sync>),
    Store(std::io::Error),
}

/// Reads and drops a refused request's body: at most `--max-body`, within the body timeout.
async fn discard_body(st: &State, body: Incoming) {
    let mut body = Limited::new(body, st.cfg.max_body);
    let deadline = tokio::time::Instant::now() + st.cfg.body_timeout;
    while let Ok(Some(Ok(_))) = tokio::time::timeout_at(deadline, body.frame()).await {}
}

/// The 401 for a webhook that failed its channel's sender check.
fn reject_sender(m: &Metrics, channel: &str, why: auth::SenderRejection) -> Resp {
    Metrics::inc(&m.rejected_sender_auth);
    tracing::warn!(%channel, reason = ?why, "webhook failed the sender check");
    error(
        StatusCode::UNAUTHORIZED,
        "sender check failed: this channel requires its sender secret \
         (x-meeting-baas-api-key, x-mb-secret or a valid webhook signature)",
    )
}

/// Reads a webhook's body (at most `--max-body`). A big one, where the store keeps such
/// bodies as files, is also written to its file while it arrives, so its 200 waits for
/// about one piece's fsync instead of writing the whole body after the upload.
async fn read_body(
    st: &State,
    body: Incoming,
    declared: Option<u64>,
    preload: Option<&preload::Sending>,
) -> Result<(Bytes, Option<WrittenBody>), BodyError> {
    let files = st.store.body_files();
    let mut body = Limited::new(body, st.cfg.max_body);
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    // A big body goes to its file while it arrives, gathered into one buffer on the way, so
    // nothing is left to copy between its fsync and its 200.
    let mut sink: Option<BodySink> = None;
    let big =
        |len: usize| declared.is_some_and(|n| n >= BODY_FILE_MIN as u64) || len >= BODY_FILE_MIN;
    let deadline = tokio::time::Instant::now() + st.cfg.body_timeout;
    loop {
        let Some(frame) = tokio::time::timeout_at(deadline, body.frame())
            .await
            .map_err(|_| BodyError::Timeout)?
        else {
            break;
        };
        let frame = frame.map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                BodyError::TooLarge
            } else {
                BodyError::Read(e)
            }
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        len += data.len();
        if let Some(p) = preload {
            p.push(&data);
        }
        if let Some(s) = &mut sink {
            s.push(&data).await.map_err(BodyError::Store)?;
            continue;
        }
        chunks.push(data);
        if let Some(files) = files.filter(|_| big(len)) {
            // Room for the declared length (or, unannounced, twice what came so far): pages
            // are only taken as the body fills them.
            let expected = declared
                .map_or(2 * len, |n| n as usize)
                .min(st.cfg.max_body);
            let mut s = files.sink(expected).map_err(BodyError::Store)?;
            for c in chunks.drain(..) {
                s.push(&c).await.map_err(BodyError::Store)?;
            }
            sink = Some(s);
        }
    }
    let (body, written) = match sink {
        Some(s) => {
            let (file, body) = s.finish().await.map_err(BodyError::Store)?;
            (body, Some(file))
        }
        None if chunks.len() <= 1 => (chunks.pop().unwrap_or_default(), None),
        None => {
            let mut all = BytesMut::with_capacity(len);
            for c in chunks {
                all.extend_from_slice(&c);
            }
            (all.freeze(), None)
        }
    };
    // The store decides by the final length; a body that stayed small needs no file.
    let written = written.filter(|_| body.len() >= BODY_FILE_MIN);
    Ok((body, written))
}

fn admin_ok(st: &State, req: &Request<Incoming>) -> Result<(), Resp> {
    let Some(expected) = &st.cfg.admin_token else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "the channel API is disabled: start the relay with --admin-token",
        ));
    };
    match auth::bearer(req.headers().get(header::AUTHORIZATION)) {
        Some(t) if auth::secret_eq(t.as_bytes(), expected.as_bytes()) => Ok(()),
        _ => {
            Metrics::inc(&st.metrics.auth_failures);
            Err(error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong admin token (Authorization: Bearer <--admin-token>)",
            ))
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateChannel {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    sender_secret: Option<String>,
}

fn valid_channel_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn channel_json(st: &State, ch: &Channel) -> serde_json::Value {
    json!({
        "id": ch.id,
        "webhook_url": webhook_url(&st.cfg.public_url, &ch.id),
        "created_at_ms": ch.created_at_ms,
        "head": ch.head,
        "sender_secret": ch.sender_secret.is_some(),
    })
}

/// The URL senders post to for `channel`.
pub fn webhook_url(public_url: &str, channel: &str) -> String {
    format!("{}/hooks/{channel}", public_url.trim_end_matches('/'))
}

async fn api(st: &State, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (req.method().clone(), &segs[2..]) {
        (Method::GET, [id, "events"]) => {
            let id = id.to_string();
            return history(st, &id, req).await;
        }
        (Method::POST, []) | (Method::GET, []) | (Method::DELETE, [_]) => {}
        _ => return error(StatusCode::NOT_FOUND, "no such route"),
    }
    if let Err(r) = admin_ok(st, &req) {
        return r;
    }
    match (req.method().clone(), &segs[2..]) {
        (Method::POST, []) => {
            let body = match Limited::new(req.into_body(), 64 << 10).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return error(StatusCode::BAD_REQUEST, "request body too large"),
            };
            let spec: CreateChannel = if body.iter().all(u8::is_ascii_whitespace) {
                CreateChannel::default()
            } else {
                match serde_json::from_slice(&body) {
                    Ok(s) => s,
                    Err(e) => {
                        return error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}"))
                    }
                }
            };
            let id = spec.id.unwrap_or_else(auth::new_channel_id);
            if !valid_channel_id(&id) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "channel id must be 1-64 characters of [A-Za-z0-9_-]",
                );
            }
            let token = auth::new_token("mht_");
            let ch = Channel {
                id: id.clone(),
                token_hash: auth::hash_token(&token),
                sender_secret: spec.sender_secret.filter(|s| !s.is_empty()),
                created_at_ms: now_ms(),
                head: 0,
            };
            match st.store.create_channel(ch).await {
                Ok(()) => {
                    tracing::info!(channel = %id, "channel created");
                    json_resp(
                        StatusCode::CREATED,
                        json!({
                            "id": id,
                            "webhook_url": webhook_url(&st.cfg.public_url, &id),
                            "token": token,
                        }),
                    )
                }
                Err(e) => store_error(&st.metrics, e),
            }
        }
        (Method::GET, []) => match st.store.list_channels().await {
            Ok(chs) => json_resp(
                StatusCode::OK,
                json!({ "channels": chs.iter().map(|c| channel_json(st, c)).collect::<Vec<_>>() }),
            ),
            Err(e) => store_error(&st.metrics, e),
        },
        (Method::DELETE, [id]) => match st.store.delete_channel(id).await {
            Ok(true) => {
                st.channels.forget(id);
                tracing::info!(channel = %id, "channel deleted");
                Response::builder()
                    .status(StatusCode::NO_CONTENT)
                    .body(Full::new(Bytes::new()))
                    .expect("static response")
            }
            Ok(false) => error(StatusCode::NOT_FOUND, "unknown channel"),
            Err(e) => store_error(&st.metrics, e),
        },
        _ => error(StatusCode::NOT_FOUND, "no such route"),
    }
}

/// Checks a channel token; `Err` is the answer to send.
pub(crate) async fn channel_auth(
    st: &State,
    channel: &str,
    headers: &http::HeaderMap,
) -> Result<Channel, Resp> {
    let ch = match st.channels.get(&*st.store, channel).await {
        Ok(Some(ch)) => ch,
        Ok(None) => return Err(error(StatusCode::NOT_FOUND, "unknown channel")),
        Err(e) => return Err(store_error(&st.metrics, e)),
    };
    match auth::bearer(headers.get(header::AUTHORIZATION)) {
        Some(t) if auth::token_matches(t, &ch.token_hash) => Ok(ch),
        _ => {
            Metrics::inc(&st.metrics.auth_failures);
            Err(error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong channel token (Authorization: Bearer <token from `meethook channel create`>)",
            ))
        }
    }
}

/// `GET /api/channels/{id}/events?after=N&limit=M` with the channel token.
async fn history(st: &State, id: &str, req: Request<Incoming>) -> Resp {
    if let Err(r) = channel_auth(st, id, req.headers()).await {
        return r;
    }
    let mut after = 0u64;
    let mut limit = 100usize;
    for pair in req.uri().query().unwrap_or("").split('&') {
        match pair.split_once('=') {
            Some(("after", v)) => match v.parse() {
                Ok(n) => after = n,
                Err(_) => return error(StatusCode::BAD_REQUEST, "after must be a number"),
            },
            Some(("limit", v)) => match v.parse::<usize>() {
                Ok(n) => limit = n.clamp(1, 1000),
                Err(_) => return error(StatusCode::BAD_REQUEST, "limit must be a number"),
            },
            _ => {}
        }
    }
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    match st.store.read_after(id, after, limit, 64 << 20).await {
        Ok(events) => {
            let list: Vec<_> = events
                .iter()
                .map(|e| {
                    json!({
                        "seq": e.seq,
                        "received_at_ms": e.received_at_ms,
                        "method": e.method,
                        "path": e.path,
                        "headers": e.headers.iter().map(|h| {
                            json!([h.name, String::from_utf8_lossy(&h.value)])
                        }).collect::<Vec<_>>(),
                        "body": std::str::from_utf8(&e.body).ok(),
                        "body_base64": b64.encode(&e.body),
                    })
                })
                .collect();
            json_resp(StatusCode::OK, json!({ "events": list }))
        }
        Err(e) => store_error(&st.metrics, e),
    }
}

#[cfg(test)]
mod tests {
    use super::hook_target;
    use proptest::prelude::*;

    #[test]
    fn hook_paths() {
        assert_eq!(hook_target("/hooks/c", None), Some(("c", String::new())));
        assert_eq!(
            hook_target("/hooks/c/a/b", Some("x=1")),
            Some(("c", "/a/b?x=1".into()))
        );
        assert_eq!(hook_target("/hooks/c/", None), Some(("c", "/".into())));
        assert_eq!(hook_target("/hooks/", None), None);
        assert_eq!(hook_target("/ws/c", None), None);
    }

    proptest! {
        #[test]
        fn any_path_splits_without_panic_and_reassembles(path in ".*", q in proptest::option::of(".*")) {
            if let Some((ch, sub)) = hook_target(&path, q.as_deref()) {
                prop_assert!(!ch.is_empty() && !ch.contains('/'));
                let sub_path = match &q {
                    Some(q) => sub.strip_suffix(&format!("?{q}")).unwrap().to_string(),
                    None => sub.clone(),
                };
                prop_assert_eq!(format!("/hooks/{ch}{sub_path}"), path.clone());
            }
        }
    }
}
