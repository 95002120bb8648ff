//! Routing and answers: the page, the JSON API, the stream, retry and skip.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use meethook_daemon::control::{self, ControlError};
use meethook_daemon::journal::{ExportLine, JournalError};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, ListParams, Reader};
use crate::guard::{Auth, Guard, COOKIE};
use crate::live::{Out, Schedule};
use crate::Config;

/// The page, embedded at build time.
const PAGE: &str = include_str!("../assets/index.html");

/// How often the stream sends a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub(crate) type Body = BoxBody<Bytes, Infallible>;
pub(crate) type Resp = Response<Body>;

/// Everything a request may need.
pub(crate) struct State {
    pub(crate) config: Config,
    pub(crate) guard: Guard,
    pub(crate) reader: Arc<Reader>,
    pub(crate) out: broadcast::Sender<Out>,
    /// The next attempt of each retrying event, as the live hub heard it.
    pub(crate) schedule: Schedule,
    /// Whether a daemon feeds the stream.
    pub(crate) live: bool,
    pub(crate) stop: CancellationToken,
}

/// Serves one connection on `tasks`.
pub(crate) fn serve_conn(
    state: &Arc<State>,
    tasks: &TaskTracker,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    let st = state.clone();
    let svc = hyper::service::service_fn(move |req| handle(st.clone(), req));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(TokioIo::new(stream), svc);
    let stop = state.stop.clone();
    tasks.spawn(async move {
        let mut conn = std::pin::pin!(conn);
        let res = tokio::select! {
            r = conn.as_mut() => r,
            _ = stop.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = res {
            tracing::debug!(%peer, error = %e, "inspector: connection ended with an error");
        }
    });
}

fn full(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn json_resp(status: StatusCode, v: &impl serde::Serialize) -> Resp {
    full(
        status,
        "application/json",
        serde_json::to_vec(v).expect("JSON serializes"),
    )
}

pub(crate) fn error(status: StatusCode, msg: impl Into<String>) -> Resp {
    json_resp(status, &json!({ "error": msg.into() }))
}

/// `%XX` and `+` decoded; invalid escapes kept as written.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query string's pairs, decoded.
fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

fn header_str(req: &Request<Incoming>, name: header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Routes one request, after the guard's checks.
pub(crate) async fn handle(st: Arc<State>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let host = header_str(&req, header::HOST)
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    if !st.guard.host_ok(host.as_deref()) {
        return Ok(error(
            StatusCode::FORBIDDEN,
            "unknown Host: open the inspector at its own address (e.g. http://127.0.0.1:4040)",
        ));
    }
    let query = query_pairs(req.uri().query());
    let auth = st.guard.auth(
        header_str(&req, header::AUTHORIZATION),
        header_str(&req, header::COOKIE),
        param(&query, "token"),
    );
    if auth == Auth::Refused {
        return Ok(error(
            StatusCode::UNAUTHORIZED,
            "this inspector needs its token: open it with ?token=TOKEN once, or send \
             Authorization: Bearer TOKEN",
        ));
    }
    if req.method() == Method::POST {
        if !st.guard.origin_ok(header_str(&req, header::ORIGIN)) {
            return Ok(error(StatusCode::FORBIDDEN, "cross-origin request refused"));
        }
        let json = header_str(&req, header::CONTENT_TYPE)
            .and_then(|c| c.split(';').next())
            .is_some_and(|c| c.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Ok(error(
                StatusCode::FORBIDDEN,
                "a POST must be content-type: application/json",
            ));
        }
    }
    let path = req.uri().path().to_string();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mut resp = match (req.method().clone(), segs.as_slice()) {
        (Method::GET, [""]) => page(),
        (Method::GET, ["api", "health"]) => json_resp(StatusCode::OK, &json!({"ok": true})),
        (Method::GET, ["api", "channels"]) => channels(&st).await,
        (Method::GET, ["api", "events"]) => list(&st, &query).await,
        (Method::GET, ["api", "events", seq]) => match seq.parse::<u64>() {
            Ok(seq) => detail(&st, &query, seq).await,
            Err(_) => error(StatusCode::NOT_FOUND, "no such event"),
        },
        (Method::POST, ["api", "events", seq, op @ ("retry" | "skip")]) => {
            match seq.parse::<u64>() {
                Ok(seq) => {
                    let req = if *op == "retry" {
                        control::Request::Retry { seq }
                    } else {
                        control::Request::Skip { seq }
                    };
                    act(&st, &query, req).await
                }
                Err(_) => error(StatusCode::NOT_FOUND, "no such event"),
            }
        }
        (Method::POST, ["api", "events", seq, op @ ("pin" | "unpin")]) => {
            match seq.parse::<u64>() {
                Ok(seq) => pin(&st, &query, seq, *op == "pin").await,
                Err(_) => error(StatusCode::NOT_FOUND, "no such event"),
            }
        }
        (Method::GET, ["api", "export"]) => export(&st, &query).await,
        (Method::POST, ["api", "events", seq, "replay"]) => match seq.parse::<u64>() {
            Ok(seq) => replay(&st, &query, seq, req.into_body()).await,
            Err(_) => error(StatusCode::NOT_FOUND, "no such event"),
        },
        (Method::GET, ["artifacts", seq, name]) => {
            crate::artifacts::serve(&st, &query, seq, name).await
        }
        (Method::GET, ["api", "bots"]) => bots(&st, &query, None).await,
        (Method::GET, ["api", "bots", bot]) => bots(&st, &query, Some(decode(bot))).await,
        (Method::POST, ["api", "delivery", op @ ("pause" | "resume")]) => {
            let req = if *op == "pause" {
                control::Request::Pause
            } else {
                control::Request::Resume
            };
            act(&st, &query, req).await
        }
        (Method::GET, ["api", "delivery"]) => act(&st, &query, control::Request::Status).await,
        (Method::GET, ["api", "stream"]) => stream(&st),
        (_, [""] | ["api", "health" | "channels" | "events" | "stream" | "bots" | "export"])
        | (_, ["api", "bots", _] | ["api", "delivery"] | ["api", "delivery", "pause" | "resume"])
        | (_, ["api", "events", _])
        | (_, ["api", "events", _, "retry" | "skip" | "replay" | "pin" | "unpin"]) => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    };
    if auth == Auth::SetCookie {
        if let Some(token) = &st.guard.token {
            let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
        }
    }
    Ok(resp)
}

fn page() -> Resp {
    let mut r = full(StatusCode::OK, "text/html; charset=utf-8", PAGE);
    let h = r.headers_mut();
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self' 'unsafe-inline'; \
             style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    r
}

/// Runs a journal read on the blocking pool.
pub(crate) async fn read<T: Send + 'static>(
    st: &Arc<State>,
    f: impl FnOnce(&meethook_daemon::journal::Journal) -> Result<T, JournalError> + Send + 'static,
) -> Result<T, JournalError> {
    let reader = st.reader.clone();
    match tokio::task::spawn_blocking(move || f(&reader.journal()?)).await {
        Ok(r) => r,
        Err(e) => Err(JournalError::Io {
            path: st.config.data.clone(),
            error: std::io::Error::other(e.to_string()),
        }),
    }
}

pub(crate) fn journal_error(e: JournalError) -> Resp {
    tracing::debug!(error = %e, "inspector: journal read failed");
    error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// The channel a request is about: `?channel=`, else the default.
pub(crate) async fn channel_of(
    st: &Arc<State>,
    query: &[(String, String)],
) -> Result<Option<String>, JournalError> {
    if let Some(c) = param(query, "channel") {
        return Ok(Some(c.to_string()));
    }
    let preferred = st.config.channel.clone();
    read(st, move |j| api::default_channel(j, preferred.as_deref())).await
}

async fn channels(st: &Arc<State>) -> Resp {
    let preferred = st.config.channel.clone();
    let r = read(st, move |j| {
        let list = j.channels()?;
        let default = api::default_channel(j, preferred.as_deref())?;
        Ok((list, default))
    })
    .await;
    match r {
        Ok((list, default)) => {
            let list: Vec<Value> = list
                .into_iter()
                .map(|(id, n)| json!({"id": id, "events": n}))
                .collect();
            json_resp(
                StatusCode::OK,
                &json!({"channels": list, "default": default, "live": st.live}),
            )
        }
        Err(JournalError::Missing(_)) => json_resp(
            StatusCode::OK,
            &json!({"channels": [], "default": st.config.channel, "live": st.live}),
        ),
        Err(e) => journal_error(e),
    }
}

async fn list(st: &Arc<State>, query: &[(String, String)]) -> Resp {
    let params = match ListParams::parse(query) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let empty = || json_resp(StatusCode::OK, &json!({"events": [], "next": null}));
    let channel = match channel_of(st, query).await {
        Ok(Some(c)) => c,
        Ok(None) | Err(JournalError::Missing(_)) => return empty(),
        Err(e) => return journal_error(e),
    };
    match read(st, move |j| api::list(j, &channel, &params)).await {
        Ok(mut page) => {
            let schedule = st.schedule.lock().unwrap_or_else(|e| e.into_inner());
            for it in page.events.iter_mut().filter(|i| i.state == "retrying") {
                it.next_attempt_at = schedule.get(&it.seq).copied();
            }
            drop(schedule);
            json_resp(StatusCode::OK, &page)
        }
        Err(JournalError::Missing(_)) => empty(),
        Err(e) => journal_error(e),
    }
}

async fn detail(st: &Arc<State>, query: &[(String, String)], seq: u64) -> Resp {
    let reveal = matches!(param(query, "reveal"), Some("1" | "true"));
    let not_found = || {
        error(
            StatusCode::NOT_FOUND,
            format!("no event {seq} in the journal"),
        )
    };
    let channel = match channel_of(st, query).await {
        Ok(Some(c)) => c,
        Ok(None) | Err(JournalError::Missing(_)) => return not_found(),
        Err(e) => return journal_error(e),
    };
    match read(st, move |j| api::detail(j, &channel, seq, reveal)).await {
        Ok(Some(mut v)) => {
            if v["state"] == "retrying" {
                let schedule = st.schedule.lock().unwrap_or_else(|e| e.into_inner());
                v["next_attempt_at"] = schedule.get(&seq).copied().into();
            }
            json_resp(StatusCode::OK, &v)
        }
        Ok(None) | Err(JournalError::Missing(_)) => not_found(),
        Err(e) => journal_error(e),
    }
}

/// `POST /api/events/{seq}/pin|unpin`: keeps the event past the retention (or lets it go),
/// as `meethook events pin|unpin` does.
async fn pin(st: &Arc<State>, query: &[(String, String)], seq: u64, pinned: bool) -> Resp {
    let not_found = || {
        error(
            StatusCode::NOT_FOUND,
            format!("no event {seq} in the journal"),
        )
    };
    let channel = match channel_of(st, query).await {
        Ok(Some(c)) => c,
        Ok(None) | Err(JournalError::Missing(_)) => return not_found(),
        Err(e) => return journal_error(e),
    };
    let data = st.config.data.clone();
    let done = tokio::task::spawn_blocking(move || {
        meethook_daemon::journal::Journal::open_existing(&data)?.set_pinned(&channel, seq, pinned)
    })
    .await;
    match done {
        Ok(Ok(true)) => json_resp(StatusCode::OK, &json!({"seq": seq, "pinned": pinned})),
        Ok(Ok(false)) | Ok(Err(JournalError::Missing(_))) => not_found(),
        Ok(Err(e)) => journal_error(e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `GET /api/export?…filters…`: the matching events as `meethook events export` writes
/// them (oldest first, every one: paging aside), secret header values masked unless
/// `?reveal=1`; streamed as they are read.
async fn export(st: &Arc<State>, query: &[(String, String)]) -> Resp {
    let params = match ListParams::parse(query) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let reveal = matches!(param(query, "reveal"), Some("1" | "true"));
    let channel = match channel_of(st, query).await {
        Ok(Some(c)) => c,
        Ok(None) | Err(JournalError::Missing(_)) => {
            return full(StatusCode::OK, "application/x-ndjson", "")
        }
        Err(e) => return journal_error(e),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let reader = st.reader.clone();
    let name = format!("attachment; filename=\"meethook-{channel}.ndjson\"");
    tokio::task::spawn_blocking(move || {
        let q = params.query(&channel);
        let mut buf = Vec::with_capacity(64 << 10);
        let sent = reader.journal().and_then(|j| {
            j.each(&q, |s| {
                let line =
                    ExportLine::of(&s, |n| !reveal && api::is_secret(n), api::MASK.as_bytes());
                if line.write(&mut buf).is_err() {
                    return false;
                }
                // Batches of about 64 KiB; a closed download stops the read.
                buf.len() < 64 << 10
                    || tx
                        .blocking_send(Bytes::from(std::mem::take(&mut buf)))
                        .is_ok()
            })
        });
        if let Err(e) = sent {
            tracing::debug!(error = %e, "inspector: export read failed");
        } else if !buf.is_empty() {
            let _ = tx.blocking_send(Bytes::from(buf));
        }
    });
    let mut r = Response::new(Feed(rx).boxed());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&name) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

/// `POST …/retry|skip`: the request to the daemon's control socket, its answer back.
async fn act(st: &Arc<State>, query: &[(String, String)], req: control::Request) -> Resp {
    let not_running = || {
        let msg = match req {
            control::Request::Retry { seq } | control::Request::Skip { seq } => {
                control::not_running_message(&st.config.data, &seq.to_string())
            }
            _ => format!(
                "no running `meethook listen` uses {}: there is no delivery to pause, resume \
                 or ask about",
                st.config.data.display()
            ),
        };
        error(StatusCode::CONFLICT, msg)
    };
    if !st.config.control {
        return not_running();
    }
    let channel = match channel_of(st, query).await {
        Ok(Some(c)) => c,
        Ok(None) | Err(JournalError::Missing(_)) => return not_running(),
        Err(e) => return journal_error(e),
    };
    let path = control::socket_path(&st.config.data, &channel);
    let timeout = st.config.control_timeout;
    let answer = tokio::task::spawn_blocking(move || control::ask(&path, &req, timeout)).await;
    match answer {
        Ok(Ok(a)) if a.ok => json_resp(StatusCode::OK, &a),
        Ok(Ok(a)) => {
            let mut v = serde_json::to_value(&a).expect("an answer serializes");
            v["error"] = a.message.clone().into();
            json_resp(StatusCode::CONFLICT, &v)
        }
        Ok(Err(ControlError::NotRunning { .. })) => not_running(),
        Ok(Err(e)) => error(StatusCode::BAD_GATEWAY, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `GET /api/bots` (every bot of the channel) and `GET /api/bots/{bot_id}` (one bot's
/// timeline).
async fn bots(st: &Arc<State>, query: &[(String, String)], bot: Option<String>) -> Resp {
    let channel = match channel_of(st, query).await {
        Ok(Some(c)) => c,
        Ok(None) | Err(JournalError::Missing(_)) => {
            return match bot {
                None => json_resp(StatusCode::OK, &json!({"bots": []})),
                Some(b) => error(StatusCode::NOT_FOUND, format!("no bot {b} in the journal")),
            }
        }
        Err(e) => return journal_error(e),
    };
    match bot {
        None => match read(st, move |j| {
            crate::bots::list(j, &channel, meethook_proto::clock::now_ms())
        })
        .await
        {
            Ok(list) => json_resp(StatusCode::OK, &json!({ "bots": list })),
            Err(JournalError::Missing(_)) => json_resp(StatusCode::OK, &json!({"bots": []})),
            Err(e) => journal_error(e),
        },
        Some(b) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            let id = b.clone();
            match read(st, move |j| crate::bots::timeline(j, &channel, &id, now)).await {
                Ok(Some(v)) => json_resp(StatusCode::OK, &v),
                Ok(None) | Err(JournalError::Missing(_)) => {
                    error(StatusCode::NOT_FOUND, format!("no bot {b} in the journal"))
                }
                Err(e) => journal_error(e),
            }
        }
    }
}

/// Longest request body read (an edited event's body, base64, and its headers).
const MAX_REQUEST: usize = 16 << 20;

/// The JSON of a POST's body; `{}` when empty.
async fn json_body<T: serde::de::DeserializeOwned + Default>(body: Incoming) -> Result<T, Resp> {
    let limited = http_body_util::Limited::new(body, MAX_REQUEST);
    let bytes = match limited.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("cannot read the request body: {e}"),
            ))
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("request JSON: {e}")))
}

/// `POST /api/events/{seq}/replay`: sends the event (or its edited copy) to the handler
/// once, synchronously, and answers 200 with how it went (`delivered` false when the
/// handler refused it or could not be reached).
async fn replay(st: &Arc<State>, query: &[(String, String)], seq: u64, body: Incoming) -> Resp {
    let req: crate::replay::ReplayRequest = match json_body(body).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let signer = if req.resign {
        match &st.config.signing_secret {
            Some(k) => Some(k.clone()),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "a re-signed replay needs the signing secret: start meethook with \
                     --signing-secret whsec_… (or MEETHOOK_SIGNING_SECRET)",
                )
            }
        }
    } else {
        None
    };
    let not_found = || {
        error(
            StatusCode::NOT_FOUND,
            format!("no event {seq} in the journal"),
        )
    };
    let channel = match channel_of(st, query).await {
        Ok(Some(c)) => c,
        Ok(None) | Err(JournalError::Missing(_)) => return not_found(),
        Err(e) => return journal_error(e),
    };
    let ch = channel.clone();
    let data = st.config.data.clone();
    let found = read(st, move |j| {
        let Some(stored) = j.get(&ch, seq)? else {
            return Ok(None);
        };
        let to = j.forward_to(&ch)?;
        let (journal, recorded) = crate::replay::recording_journal(&data, j.clone());
        Ok(Some((stored, to, journal, recorded)))
    })
    .await;
    let (stored, forward_to, journal, recorded) = match found {
        Ok(Some(f)) => f,
        Ok(None) | Err(JournalError::Missing(_)) => return not_found(),
        Err(e) => return journal_error(e),
    };
    let Some(to) = req
        .to
        .clone()
        .filter(|t| !t.trim().is_empty())
        .or(forward_to)
    else {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "the journal has no handler URL for channel {channel} (journaled by an older \
                 meethook, or imported): give \"to\""
            ),
        );
    };
    let (ev, changed) = match crate::replay::edited(&stored, &req) {
        Ok(e) => e,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    let resigned = signer.is_some();
    let local = req
        .local_artifacts
        .then(|| crate::artifacts::base_url(&st.guard.served));
    let cfg = crate::replay::config(&channel, &to, st.config.replay_timeout, signer, local);
    let observers = meethook_daemon::Observers::new(Vec::new());
    let r = meethook_daemon::replay::replay_event(&cfg, &journal, &ev, &observers, &st.stop).await;
    match r {
        Ok(Some(one)) => {
            let mut v = json!({
                "replay": crate::replay::outcome(seq, &to, &one, resigned, recorded),
            });
            if changed && !resigned && crate::replay::signed(&stored) {
                v["warning"] = crate::replay::STALE_SIGNATURE.into();
            }
            json_resp(StatusCode::OK, &v)
        }
        Ok(None) => error(StatusCode::SERVICE_UNAVAILABLE, "the inspector is stopping"),
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// A body fed by a channel: the stream's events as they come.
struct Feed(mpsc::Receiver<Bytes>);

impl hyper::body::Body for Feed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// `GET /api/stream`: `event: hello` first, then `event: event` per change and
/// `event: reload` when this client fell behind; a comment every [`KEEP_ALIVE`].
fn stream(st: &Arc<State>) -> Resp {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let mut sub = st.out.subscribe();
    let stop = st.stop.clone();
    let hello = format!(
        "retry: 2000\nevent: hello\ndata: {}\n\n",
        json!({"live": st.live, "channel": st.config.channel})
    );
    tokio::spawn(async move {
        if tx.send(Bytes::from(hello)).await.is_err() {
            return;
        }
        let mut ping = tokio::time::interval(KEEP_ALIVE);
        ping.tick().await;
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => return,
                _ = tx.closed() => return,
                _ = ping.tick() => Bytes::from_static(b": keep-alive\n\n"),
                r = sub.recv() => match r {
                    Ok(Out::Item(item)) => Bytes::from(format!("event: event\ndata: {item}\n\n")),
                    Ok(Out::Reload) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        Bytes::from_static(b"event: reload\ndata: {}\n\n")
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            if tx.send(msg).await.is_err() {
                return;
            }
        }
    });
    let mut r = Response::new(Feed(rx).boxed());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode() {
        let q = query_pairs(Some("event=bot.%2A&bot=a+b&x&state=&bad=%zz%4"));
        assert_eq!(param(&q, "event"), Some("bot.*"));
        assert_eq!(param(&q, "bot"), Some("a b"));
        assert_eq!(param(&q, "x"), None);
        assert_eq!(param(&q, "state"), None);
        assert_eq!(param(&q, "bad"), Some("%zz%4"));
    }
}
