//! Test helpers shared by the integration tests.
//!
//! # Layout
//! - [`TestHandler`]: a local webhook handler that records every request and answers with a
//!   programmable status; it can be stopped and restarted on the same port.
//! - [`TestRelay`]: an in-process relay on an ephemeral port over a temporary store.
//! - [`TestDaemon`]: an in-process `listen` daemon.
//! - [`Setup`]: the common relay + channel + handler + journal directory, daemon on demand.
//! - [`post`]: send one webhook.
//! - [`wait_until`] / [`wait_for`]: poll a condition with a bounded deadline.
//! - [`RelayProcess`] / [`ListenProcess`]: the real binary as a child, for `kill -9` tests.
//! - [`fault`]: retrying load, a connection-cutting proxy, a tmpfs that fills up.
//! - [`pg`]: a throwaway PostgreSQL schema per test (`MEETHOOK_TEST_POSTGRES_URL`).

pub mod fault;
pub mod pg;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use meethook_daemon::{DaemonConfig, DaemonEvent, Observer, Observers};
use meethook_proto::clock::now_ms;
use meethook_relay::{auth, Metrics, RelayConfig};
use meethook_store::{Channel, SqliteStore, Store};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Upper bound on how long a test waits for something that should happen.
pub const PATIENCE: Duration = Duration::from_secs(90);

/// Polls `cond` every 20 ms until it holds; panics naming `what` after `patience`.
pub async fn wait_until(what: &str, patience: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + patience;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`wait_until`] with an async condition.
pub async fn wait_for<F: std::future::Future<Output = bool>>(
    what: &str,
    patience: Duration,
    mut cond: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + patience;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

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
    let answered = match fixed {
        Some(st) => st,
        None => state.script.lock().unwrap().pop_front().unwrap_or(200),
    };
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
    let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
    *resp.status_mut() = http::StatusCode::from_u16(answered).unwrap();
    Ok(resp)
}

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

/// An in-process relay over a temporary SQLite store.
pub struct TestRelay {
    /// Bound address.
    pub addr: SocketAddr,
    /// Admin token.
    pub admin_token: String,
    /// The store (shared with the relay).
    pub store: Arc<dyn Store>,
    /// The relay's counters.
    pub metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

impl TestRelay {
    /// Starts a relay with default settings.
    pub async fn start() -> TestRelay {
        Self::start_with(|_| {}).await
    }

    /// Starts a relay after letting `tweak` adjust its config.
    pub async fn start_with(tweak: impl FnOnce(&mut RelayConfig)) -> TestRelay {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Self::start_in(dir.path(), tweak).await;
        r._dir = Some(dir);
        r
    }

    /// Starts a relay whose store lives in `data`.
    pub async fn start_in(data: &Path, tweak: impl FnOnce(&mut RelayConfig)) -> TestRelay {
        let store = SqliteStore::open(data).expect("open store");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let admin_token = auth::new_token("adm_");
        let mut cfg = RelayConfig {
            public_url: format!("http://{addr}"),
            admin_token: Some(admin_token.clone()),
            rate_limit: 0.0,
            ..RelayConfig::default()
        };
        tweak(&mut cfg);
        let store: Arc<dyn Store> = Arc::new(store);
        let metrics = Arc::new(Metrics::default());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(meethook_relay::run_with_metrics(
            cfg,
            listener,
            store.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
        TestRelay {
            addr,
            admin_token,
            store,
            metrics,
            shutdown,
            task: Some(task),
            _dir: None,
        }
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates a channel directly in the store; returns `(id, token)`.
    pub async fn channel(&self, sender_secret: Option<&str>) -> (String, String) {
        let id = auth::new_channel_id();
        let token = auth::new_token("mht_");
        self.store
            .create_channel(Channel {
                id: id.clone(),
                token_hash: auth::hash_token(&token),
                sender_secret: sender_secret.map(str::to_string),
                created_at_ms: now_ms(),
                head: 0,
            })
            .await
            .unwrap();
        (id, token)
    }

    /// The webhook URL of `channel`.
    pub fn hook(&self, channel: &str) -> String {
        format!("{}/hooks/{channel}", self.url())
    }

    /// Shuts the relay down and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

/// An in-process `listen` daemon.
pub struct TestDaemon {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), meethook_daemon::DaemonError>>,
    /// Every event the daemon reported, in order.
    pub events: Arc<EventLog>,
}

/// The events a daemon reported, to wait on instead of polling with sleeps.
#[derive(Default)]
pub struct EventLog {
    seen: Mutex<Vec<DaemonEvent>>,
    count: tokio::sync::Notify,
}

impl Observer for EventLog {
    fn notify(&self, event: &DaemonEvent) {
        self.seen.lock().unwrap().push(event.clone());
        self.count.notify_waiters();
    }
}

impl EventLog {
    /// Every event so far.
    pub fn all(&self) -> Vec<DaemonEvent> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits (at most [`PATIENCE`]) for an event that `pred` accepts, and returns it.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&DaemonEvent) -> bool) -> DaemonEvent {
        let found = tokio::time::timeout(PATIENCE, async {
            loop {
                let notified = self.count.notified();
                if let Some(e) = self.seen.lock().unwrap().iter().find(|e| pred(e)) {
                    return e.clone();
                }
                notified.await;
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("the daemon never reported {what}"))
    }
}

impl TestDaemon {
    /// A daemon config for tests: quick retries and reconnects.
    pub fn config(
        relay: &str,
        channel: &str,
        token: &str,
        forward_to: &str,
        data: &Path,
    ) -> DaemonConfig {
        let mut cfg = DaemonConfig::new(relay, channel, token, forward_to);
        cfg.data = data.to_path_buf();
        cfg.backoff = meethook_daemon::forward::Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
        };
        cfg.reconnect = cfg.backoff;
        cfg.timeout = Duration::from_secs(5);
        cfg
    }

    /// Starts a daemon.
    pub fn start(cfg: DaemonConfig) -> TestDaemon {
        let shutdown = CancellationToken::new();
        let events = Arc::new(EventLog::default());
        let observers = Observers::new(vec![events.clone() as Arc<dyn Observer>]);
        let task = tokio::spawn(meethook_daemon::run(cfg, observers, shutdown.clone()));
        TestDaemon {
            shutdown,
            task,
            events,
        }
    }

    /// Shuts down gracefully and returns the daemon's result.
    pub async fn stop(self) -> Result<(), meethook_daemon::DaemonError> {
        self.shutdown.cancel();
        self.task.await.unwrap()
    }

    /// Waits for the daemon to exit by itself (a fatal error).
    pub async fn exited(self) -> Result<(), meethook_daemon::DaemonError> {
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("daemon did not exit")
            .unwrap()
    }
}

/// The common set-up: a relay, one channel on it, a recording handler and a directory for a
/// daemon's journal; [`Setup::daemon`] starts a daemon forwarding from the one to the other.
///
/// Tests usually take it apart after starting the daemon:
/// `let (relay, ch, _, handler, _dir) = s.into_parts();`.
pub struct Setup {
    /// The relay.
    pub relay: TestRelay,
    /// The channel's id.
    pub channel: String,
    /// The channel's token.
    pub token: String,
    /// The handler a daemon forwards to.
    pub handler: TestHandler,
    /// The daemon's journal directory.
    pub dir: tempfile::TempDir,
}

impl Setup {
    /// A default relay.
    pub async fn start() -> Setup {
        Self::on(TestRelay::start().await, None).await
    }

    /// A relay whose config `tweak` adjusts.
    pub async fn start_with(tweak: impl FnOnce(&mut RelayConfig)) -> Setup {
        Self::on(TestRelay::start_with(tweak).await, None).await
    }

    /// Around a relay already started; its channel checks `sender_secret` if given.
    pub async fn on(relay: TestRelay, sender_secret: Option<&str>) -> Setup {
        let (channel, token) = relay.channel(sender_secret).await;
        Setup {
            relay,
            channel,
            token,
            handler: TestHandler::start().await,
            dir: tempdir(),
        }
    }

    /// `(relay, channel, token, handler, journal dir)`.
    pub fn into_parts(self) -> (TestRelay, String, String, TestHandler, tempfile::TempDir) {
        (self.relay, self.channel, self.token, self.handler, self.dir)
    }

    /// A daemon config ([`TestDaemon::config`]) forwarding the channel to the handler's `path`.
    pub fn config(&self, path: &str) -> DaemonConfig {
        TestDaemon::config(
            &self.relay.url(),
            &self.channel,
            &self.token,
            &self.handler.url(path),
            self.dir.path(),
        )
    }

    /// Starts a daemon with [`Setup::config`].
    pub fn daemon(&self, path: &str) -> TestDaemon {
        self.daemon_with(path, |_| {})
    }

    /// Starts a daemon with [`Setup::config`] after `tweak` adjusted it.
    pub fn daemon_with(&self, path: &str, tweak: impl FnOnce(&mut DaemonConfig)) -> TestDaemon {
        let mut cfg = self.config(path);
        tweak(&mut cfg);
        TestDaemon::start(cfg)
    }
}

/// The set-up around a relay running elsewhere (a child process, a balancer) at `base`: a
/// channel made through its admin API, a handler, and a daemon forwarding the channel to the
/// handler's `/`. Returns `(channel, token, handler, journal dir, daemon)`.
pub async fn listening_to(
    base: &str,
    admin: &str,
) -> (String, String, TestHandler, tempfile::TempDir, TestDaemon) {
    let (ch, token) = create_channel(base, admin).await;
    let handler = TestHandler::start().await;
    let dir = tempdir();
    let cfg = TestDaemon::config(base, &ch, &token, &handler.url("/"), dir.path());
    (ch, token, handler, dir, TestDaemon::start(cfg))
}

/// The `meethook` binary as a child process, killed on drop.
pub struct Child {
    /// The process.
    pub child: tokio::process::Child,
}

impl Child {
    /// `kill -9`.
    pub async fn kill9(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// `meethook relay` as a child process.
pub struct RelayProcess {
    /// The child.
    pub proc: Child,
    /// Address it listens on.
    pub addr: SocketAddr,
    /// The last lines of its stderr when [`RelayProcess::start_logged`] started it.
    log: Option<Arc<Mutex<VecDeque<String>>>>,
}

impl RelayProcess {
    /// Starts `bin relay --data DATA --listen LISTEN` and waits for `listening on`.
    pub async fn start(bin: &Path, data: &Path, listen: &str, admin: &str) -> RelayProcess {
        Self::spawn(bin, data, listen, admin, &[], false).await
    }

    /// [`RelayProcess::start`] with `extra` arguments and `MEETHOOK_LOG=warn`; the last 100
    /// lines of its stderr are printed if the test fails.
    pub async fn start_logged(
        bin: &Path,
        data: &Path,
        listen: &str,
        admin: &str,
        extra: &[&str],
    ) -> RelayProcess {
        Self::spawn(bin, data, listen, admin, extra, true).await
    }

    async fn spawn(
        bin: &Path,
        data: &Path,
        listen: &str,
        admin: &str,
        extra: &[&str],
        logged: bool,
    ) -> RelayProcess {
        let mut cmd = tokio::process::Command::new(bin);
        cmd.args(["relay", "--listen", listen, "--admin-token", admin])
            .args(extra)
            .arg("--data")
            .arg(data)
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        if logged {
            cmd.env("MEETHOOK_LOG", "warn").stderr(Stdio::piped());
        } else {
            cmd.stderr(Stdio::inherit());
        }
        let mut child = cmd.spawn().expect("spawn relay");
        let log = child.stderr.take().map(|stderr| {
            let log = Arc::new(Mutex::new(VecDeque::new()));
            let mut errs = BufReader::new(stderr).lines();
            let tail = log.clone();
            tokio::spawn(async move {
                while let Ok(Some(l)) = errs.next_line().await {
                    let mut t = tail.lock().unwrap();
                    if t.len() >= 100 {
                        t.pop_front();
                    }
                    t.push_back(l);
                }
            });
            log
        });
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .expect("relay did not start")
            .unwrap();
        let Some(line) = line else {
            if let Some(log) = &log {
                tokio::time::sleep(Duration::from_millis(200)).await;
                panic!("relay exited before listening: {:?}", log.lock().unwrap());
            }
            panic!("relay exited before listening");
        };
        let addr = line
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        RelayProcess {
            proc: Child { child },
            addr,
            log,
        }
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The webhook URL of `channel`.
    pub fn hook(&self, channel: &str) -> String {
        format!("{}/hooks/{channel}", self.url())
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        if let (true, Some(log)) = (std::thread::panicking(), &self.log) {
            eprintln!("--- relay {} log tail ---", self.addr);
            for l in log.lock().unwrap().iter() {
                eprintln!("{l}");
            }
        }
    }
}

/// `meethook listen` as a child process.
pub struct ListenProcess {
    /// The child.
    pub proc: Child,
}

impl ListenProcess {
    /// Starts `bin listen …` with quick retry caps.
    pub fn start(
        bin: &Path,
        relay: &str,
        channel: &str,
        token: &str,
        forward_to: &str,
        data: &Path,
    ) -> ListenProcess {
        let child = tokio::process::Command::new(bin)
            .args([
                "listen",
                "--relay",
                relay,
                "--channel",
                channel,
                "--forward-to",
                forward_to,
                "--max-backoff",
                "200ms",
                "--timeout",
                "5s",
                "--json",
                "--inspect",
                "off",
                "--data",
            ])
            .arg(data)
            .env("MEETHOOK_TOKEN", token)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn listen");
        ListenProcess {
            proc: Child { child },
        }
    }
}

/// A fresh temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}
