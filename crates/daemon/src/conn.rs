//! The relay connection: connect (ws or wss), hello, journal incoming events, send acks,
//! ping, and reconnect forever with backoff.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, SinkExt, StreamExt};
use meethook_proto::frame::{decode_binary, Binary, MAX_FRAME_OVERHEAD, MAX_PRELOADS};
use meethook_proto::meeting::Summary;
use meethook_proto::{ClientFrame, ErrorCode, Event, ServerFrame, PROTOCOL_VERSION};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use crate::filter::Filter;
use crate::forward::Backoff;
use crate::handoff::{Handoff, Insert};
use crate::journal::{Journal, JournalError};
use crate::observe::{DaemonEvent, Observers};
use crate::proxy;
use crate::recordings::Recorder;
use crate::{blocking, now_ms, DaemonError};
use meethook_disk::bodyfile::{aligned_buffer, BODY_FILE_MIN};

/// Anything a websocket can run over (TCP or TLS over TCP).
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Ws = WebSocketStream<Box<dyn Io>>;

/// Most frames journaled in one transaction.
const JOURNAL_BATCH: usize = 256;
/// How long a delivered seq may wait to be acked with the ones after it (acks are
/// cumulative: one frame can cover many events).
const ACK_DELAY: Duration = Duration::from_millis(5);
/// Time allowed to connect and complete the handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How one connection ended.
enum End {
    /// Give up for good (bad token, unknown channel, version mismatch).
    Fatal(DaemonError),
    /// Try again after a backoff.
    Retry(String),
    /// The daemon is shutting down.
    Shutdown,
}

/// The websocket URL for `relay` (http/https/ws/wss base) and `channel`.
pub fn ws_url(relay: &str, channel: &str) -> Result<String, DaemonError> {
    let relay = relay.trim_end_matches('/');
    let (scheme, rest) = relay.split_once("://").ok_or_else(|| {
        DaemonError::Config(format!(
            "--relay {relay:?} needs a scheme, e.g. http://127.0.0.1:8787"
        ))
    })?;
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err(DaemonError::Config(format!(
            "--relay {relay:?} has no host, e.g. http://127.0.0.1:8787"
        )));
    }
    let scheme = match scheme {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        s => {
            return Err(DaemonError::Config(format!(
                "--relay scheme {s:?} not supported: use http(s):// or ws(s)://"
            )))
        }
    };
    Ok(format!("{scheme}://{rest}/ws/{channel}"))
}

/// What the connection stage is told.
#[derive(Debug, Clone)]
pub(crate) struct ConnSettings {
    /// Relay base URL (`http(s)://` or `ws(s)://`).
    pub relay: String,
    /// Channel id.
    pub channel: String,
    /// Channel token.
    pub token: String,
    /// Reconnect schedule towards the relay.
    pub reconnect: Backoff,
    /// Unacked events the relay may send ahead.
    pub window: u32,
    /// Largest event body accepted from the relay.
    pub max_frame: usize,
    /// How often to ping the relay.
    pub ping_interval: Duration,
    /// Drop the connection when the relay is silent this long.
    pub liveness_timeout: Duration,
    /// Extra CA certificate (PEM) to trust for `wss://`.
    pub ca_cert: Option<PathBuf>,
    /// `--events` / `--bot`: filtered events get no early hand-off and no recording.
    pub filter: Filter,
    /// `--dedupe`: delivery reads whether an event is a repeat from the journal, so no
    /// event is handed over before its insert committed.
    pub dedupe: bool,
    /// Set from each `welcome`: the relay's ack for this listener, which delivery trusts
    /// over a journal that lost its last outcomes to a power cut.
    pub relay_acked: Arc<watch::Sender<Option<u64>>>,
}

/// Runs connections until `stop` is cancelled or a fatal error.
pub(crate) async fn run(
    cfg: ConnSettings,
    journal: Journal,
    recorder: Option<Arc<Recorder>>,
    events_tx: mpsc::UnboundedSender<Handoff>,
    mut delivered_rx: watch::Receiver<u64>,
    observers: Observers,
    stop: CancellationToken,
) -> Result<(), DaemonError> {
    let url = ws_url(&cfg.relay, &cfg.channel)?;
    let tls = if url.starts_with("wss://") {
        Some(tls_config(cfg.ca_cert.as_ref())?)
    } else {
        None
    };
    let listener_id = blocking(&journal, {
        let ch = cfg.channel.clone();
        move |j| j.listener_id(&ch)
    })
    .await?;
    let mut failures = 0u32;
    let mut ready = false;
    loop {
        let started = Instant::now();
        let end = once(
            &cfg,
            &mut ready,
            &url,
            tls.clone(),
            &journal,
            &listener_id,
            recorder.as_ref(),
            &events_tx,
            &mut delivered_rx,
            &observers,
            &stop,
        )
        .await;
        match end {
            End::Shutdown => return Ok(()),
            End::Fatal(e) => return Err(e),
            End::Retry(why) => {
                if started.elapsed() > Duration::from_secs(30) {
                    failures = 0;
                }
                failures += 1;
                let delay = cfg.reconnect.delay(failures, None);
                tracing::debug!("{why}; reconnecting in {:.1}s", delay.as_secs_f64());
                observers.emit(DaemonEvent::Reconnecting {
                    reason: why,
                    retry_in: delay,
                });
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

fn tls_config(ca: Option<&PathBuf>) -> Result<tokio_rustls::TlsConnector, DaemonError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca {
        let pem = std::fs::read(path).map_err(|e| {
            DaemonError::Config(format!("cannot read --ca-cert {}: {e}", path.display()))
        })?;
        let mut n = 0;
        for cert in rustls_pemfile::certs(&mut &pem[..]) {
            let cert = cert.map_err(|e| {
                DaemonError::Config(format!("bad PEM in --ca-cert {}: {e}", path.display()))
            })?;
            roots.add(cert).map_err(|e| {
                DaemonError::Config(format!(
                    "bad certificate in --ca-cert {}: {e}",
                    path.display()
                ))
            })?;
            n += 1;
        }
        if n == 0 {
            return Err(DaemonError::Config(format!(
                "--ca-cert {} holds no PEM certificate",
                path.display()
            )));
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| DaemonError::Config(format!("TLS setup: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

async fn connect(
    cfg: &ConnSettings,
    url: &str,
    tls: Option<tokio_rustls::TlsConnector>,
) -> Result<Ws, End> {
    let mut req = url
        .into_client_request()
        .map_err(|e| End::Fatal(DaemonError::Config(format!("bad relay URL {url}: {e}"))))?;
    let auth = format!("Bearer {}", cfg.token).parse().map_err(|_| {
        End::Fatal(DaemonError::Config(
            "--token has characters not allowed in a header".into(),
        ))
    })?;
    req.headers_mut().insert("authorization", auth);
    let uri = req.uri().clone();
    let host = uri
        .host()
        .unwrap_or("")
        .trim_matches(|c| c == '[' || c == ']')
        .to_string();
    let port = uri
        .port_u16()
        .unwrap_or(if tls.is_some() { 443 } else { 80 });
    let unreachable = |e: &dyn std::fmt::Display| {
        End::Retry(format!(
            "relay unreachable at {}: {e} (is `meethook relay` running?)",
            cfg.relay
        ))
    };
    let proxy =
        proxy::for_host(tls.is_some(), &host).map_err(|e| End::Fatal(DaemonError::Config(e)))?;
    let tcp = match &proxy {
        None => TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| unreachable(&e))?,
        Some(p) => p
            .connect(&host, port)
            .await
            .map_err(|e| End::Retry(format!("relay {} unreachable: {e}", cfg.relay)))?,
    };
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = match tls {
        None => Box::new(tcp),
        Some(connector) => {
            let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| {
                End::Fatal(DaemonError::Config(format!("bad relay host {host:?}: {e}")))
            })?;
            let stream = connector.connect(name, tcp).await.map_err(|e| {
                End::Retry(if speaks_plain_http(&e) {
                    format!(
                        "TLS handshake with {} failed: the relay does not speak TLS on this \
                         port; use http:// (or serve TLS with `meethook relay --tls-cert` or `--acme`)",
                        cfg.relay
                    )
                } else {
                    format!(
                        "TLS handshake with {} failed: {e} (pass --ca-cert if the relay uses a private CA)",
                        cfg.relay
                    )
                })
            })?;
            Box::new(stream)
        }
    };
    let wscfg = WebSocketConfig::default()
        .max_message_size(Some(cfg.max_frame + MAX_FRAME_OVERHEAD))
        .max_frame_size(Some(cfg.max_frame + MAX_FRAME_OVERHEAD));
    match tokio_tungstenite::client_async_with_config(req, io, Some(wscfg)).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(resp)) => {
            let status = resp.status();
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).to_string())
                .unwrap_or_default();
            Err(match status.as_u16() {
                401 => End::Fatal(DaemonError::Rejected(format!(
                    "the relay rejected the token for channel {:?} (401): check --token / MEETHOOK_TOKEN",
                    cfg.channel
                ))),
                404 => End::Fatal(DaemonError::Rejected(format!(
                    "the relay has no channel {:?} (404): create it with `meethook channel create`",
                    cfg.channel
                ))),
                _ => End::Retry(format!("relay answered {status} to the websocket upgrade: {body}")),
            })
        }
        Err(e) => Err(unreachable(&e)),
    }
}

/// Bodies the relay sends while they still arrive there, until an event frame refers to
/// them (see `meethook_relay`'s preloads). Nothing here is delivered or journaled before
/// that: the relay refers to a body only once it is stored.
#[derive(Default)]
struct Preloads {
    /// Id, declared length and the bytes so far.
    bodies: Vec<(u64, u64, BytesMut)>,
}

impl Preloads {
    /// Adds a piece; an error for pieces out of order, too big or too many.
    fn piece(
        &mut self,
        id: u64,
        len: u64,
        offset: u64,
        data: &[u8],
        max: usize,
    ) -> Result<(), String> {
        if len > max as u64 {
            return Err(format!(
                "preload {id} of {len} bytes is larger than this listener accepts"
            ));
        }
        let i = match self.bodies.iter().position(|b| b.0 == id) {
            Some(i) => i,
            None if self.bodies.len() >= MAX_PRELOADS => {
                return Err(format!("more than {MAX_PRELOADS} preloads at once"))
            }
            None => {
                // Aligned: the journal writes the body file straight from it.
                self.bodies.push((id, len, aligned_buffer(len as usize)));
                self.bodies.len() - 1
            }
        };
        let (_, declared, body) = &mut self.bodies[i];
        if *declared != len || offset != body.len() as u64 || offset + data.len() as u64 > len {
            return Err(format!(
                "preload {id}: piece at {offset} of {} bytes does not follow the {} bytes held (of {len})",
                data.len(),
                body.len()
            ));
        }
        body.extend_from_slice(data);
        Ok(())
    }

    /// The whole body of preload `id`, forgotten here.
    fn take(&mut self, id: u64) -> Option<Bytes> {
        let i = self
            .bodies
            .iter()
            .position(|b| b.0 == id && b.2.len() as u64 == b.1)?;
        Some(self.bodies.swap_remove(i).2.freeze())
    }

    fn forget(&mut self, id: u64) {
        self.bodies.retain(|b| b.0 != id);
    }
}

#[allow(clippy::too_many_arguments)]
async fn once(
    cfg: &ConnSettings,
    ready: &mut bool,
    url: &str,
    tls: Option<tokio_rustls::TlsConnector>,
    journal: &Journal,
    listener_id: &str,
    recorder: Option<&Arc<Recorder>>,
    events_tx: &mpsc::UnboundedSender<Handoff>,
    delivered_rx: &mut watch::Receiver<u64>,
    observers: &Observers,
    stop: &CancellationToken,
) -> End {
    let mut ws = tokio::select! {
        _ = stop.cancelled() => return End::Shutdown,
        r = tokio::time::timeout(CONNECT_TIMEOUT, connect(cfg, url, tls)) => match r {
            Ok(Ok(ws)) => ws,
            Ok(Err(end)) => return end,
            Err(_) => return End::Retry(format!("relay at {} did not answer within {CONNECT_TIMEOUT:?}", cfg.relay)),
        },
    };
    let ch = cfg.channel.clone();
    let (journaled, delivered) = match blocking(journal, move |j| j.cursors(&ch)).await {
        Ok(c) => c,
        Err(e) => return End::Fatal(e),
    };
    let hello = ClientFrame::Hello {
        version: PROTOCOL_VERSION,
        listener_id: listener_id.to_string(),
        journaled,
        delivered,
        window: cfg.window,
        preload: true,
    };
    if let Err(e) = ws.send(Message::text(hello.to_json())).await {
        return End::Retry(format!("relay connection lost during handshake: {e}"));
    }
    let welcome = match tokio::time::timeout(CONNECT_TIMEOUT, ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => ServerFrame::from_json(&t),
        Ok(Some(Ok(other))) => {
            return End::Retry(format!("unexpected first frame from relay: {other:?}"))
        }
        Ok(Some(Err(e))) => {
            return End::Retry(format!("relay connection lost during handshake: {e}"))
        }
        Ok(None) => return End::Retry("relay closed the connection during handshake".into()),
        Err(_) => return End::Retry("relay sent no welcome".into()),
    };
    // The relay's head at connect time, until everything up to it is journaled.
    let mut catch_up = match welcome {
        Ok(ServerFrame::Welcome { head, .. }) if head < journaled => {
            return End::Fatal(DaemonError::Rejected(format!(
                "the relay's channel {:?} is at seq {head} but this journal already holds seq {journaled}: \
                 the relay's store was reset or this is another relay; use a fresh --data directory",
                cfg.channel
            )));
        }
        Ok(ServerFrame::Welcome {
            head,
            oldest,
            acked,
            ..
        }) => {
            if acked > delivered {
                tracing::info!(
                    delivered, acked,
                    "the relay holds acks this journal lost (a power cut?): events up to the relay's are not sent again"
                );
            }
            cfg.relay_acked
                .send_modify(|a| *a = Some(a.unwrap_or(0).max(acked)));
            tracing::debug!(
                relay = %cfg.relay, channel = %cfg.channel, head, journaled, delivered,
                "connected to relay"
            );
            observers.emit(DaemonEvent::Connected {
                relay: cfg.relay.clone(),
                channel: cfg.channel.clone(),
                head,
                journaled,
            });
            if oldest > journaled + 1 && head > journaled {
                observers.emit(DaemonEvent::Missed {
                    first: journaled + 1,
                    last: oldest - 1,
                });
            }
            Some(head)
        }
        Ok(ServerFrame::Error { code, message }) => return server_error(code, message),
        Err(e) => return End::Retry(format!("bad welcome from relay: {e}")),
    };
    let mut last_journaled = journaled;
    let mut caught_up = |last_journaled: u64| {
        if catch_up.is_some_and(|head| last_journaled >= head) {
            catch_up = None;
            observers.emit(DaemonEvent::CaughtUp {
                seq: last_journaled,
            });
            if !*ready {
                *ready = true;
                observers.emit(DaemonEvent::Ready {
                    relay: cfg.relay.clone(),
                    channel: cfg.channel.clone(),
                    seq: last_journaled,
                });
            }
        }
    };
    caught_up(last_journaled);
    let mut last_acked = delivered;
    let mut preloads = Preloads::default();
    let ack_every = u64::from((cfg.window / 4).max(1));
    let mut ack_due: Option<tokio::time::Instant> = None;
    // An ack the relay has not seen may be waiting from before the reconnect.
    delivered_rx.mark_changed();
    let mut last_rx = Instant::now();
    let mut ping = tokio::time::interval(cfg.ping_interval);
    ping.reset();
    loop {
        tokio::select! {
            msg = ws.next() => {
                last_rx = Instant::now();
                let mut batch: Vec<Event> = Vec::new();
                let mut next = Some(msg);
                while let Some(msg) = next.take() {
                    match msg {
                        Some(Ok(Message::Binary(b))) => {
                            let ev = match decode_binary(b) {
                                Ok(Binary::Event(ev)) => Some(ev),
                                Ok(Binary::Preloaded { id, mut event }) => match preloads.take(id) {
                                    Some(body) => {
                                        event.body = body;
                                        Some(event)
                                    }
                                    None => return End::Retry(format!("the relay referred to preload {id}, which it did not send whole")),
                                },
                                Ok(Binary::Preload { id, len, offset, data }) => {
                                    if let Err(why) = preloads.piece(id, len, offset, &data, cfg.max_frame) {
                                        return End::Retry(format!("bad preload from relay: {why}"));
                                    }
                                    None
                                }
                                Ok(Binary::PreloadDrop { id }) => {
                                    preloads.forget(id);
                                    None
                                }
                                Err(e) => return End::Retry(format!("malformed event frame from relay: {e}")),
                            };
                            if let Some(ev) = ev.filter(|ev| ev.seq > last_journaled) {
                                last_journaled = ev.seq;
                                batch.push(ev);
                            }
                        }
                        Some(Ok(Message::Text(t))) => match ServerFrame::from_json(&t) {
                            Ok(ServerFrame::Error { code, message }) => return server_error(code, message),
                            Ok(f) => return End::Retry(format!("unexpected frame from relay: {f:?}")),
                            Err(e) => return End::Retry(format!("malformed frame from relay: {e}")),
                        },
                        Some(Ok(Message::Close(_))) | None => {
                            if !batch.is_empty() {
                                if let Err(end) = journal_batch(journal, cfg, batch, recorder, events_tx, observers).await {
                                    return end;
                                }
                            }
                            return End::Retry("relay closed the connection".into());
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return End::Retry(format!("relay connection lost: {e}")),
                    }
                    if batch.len() < JOURNAL_BATCH {
                        next = ws.next().now_or_never();
                    }
                }
                if !batch.is_empty() {
                    if let Err(end) = journal_batch(journal, cfg, batch, recorder, events_tx, observers).await {
                        return end;
                    }
                    caught_up(last_journaled);
                }
            }
            r = delivered_rx.changed() => {
                if r.is_err() {
                    return End::Shutdown;
                }
                let seq = *delivered_rx.borrow_and_update();
                if seq > last_acked && seq <= last_journaled {
                    // Ack at once when a quarter of the relay's window waits, else soon.
                    if seq - last_acked >= ack_every {
                        ack_due = Some(tokio::time::Instant::now());
                    } else if ack_due.is_none() {
                        ack_due = Some(tokio::time::Instant::now() + ACK_DELAY);
                    }
                }
            }
            _ = tokio::time::sleep_until(ack_due.unwrap_or_else(tokio::time::Instant::now)), if ack_due.is_some() => {
                ack_due = None;
                let seq = (*delivered_rx.borrow()).min(last_journaled);
                if seq > last_acked {
                    last_acked = seq;
                    if let Err(e) = ws.send(Message::text(ClientFrame::Ack { seq }.to_json())).await {
                        return End::Retry(format!("relay connection lost: {e}"));
                    }
                }
            }
            _ = ping.tick() => {
                if last_rx.elapsed() > cfg.liveness_timeout {
                    return End::Retry(format!("relay silent for {:?}", cfg.liveness_timeout));
                }
                if let Err(e) = ws.send(Message::Ping(Default::default())).await {
                    return End::Retry(format!("relay connection lost: {e}"));
                }
            }
            _ = stop.cancelled() => {
                let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                return End::Shutdown;
            }
        }
    }
}

async fn journal_batch(
    journal: &Journal,
    cfg: &ConnSettings,
    batch: Vec<Event>,
    recorder: Option<&Arc<Recorder>>,
    events_tx: &mpsc::UnboundedSender<Handoff>,
    observers: &Observers,
) -> Result<(), End> {
    let ch = cfg.channel.clone();
    // Delivery need not wait for the journal: an event handed over now has its outcome
    // recorded only once its insert commits, and the relay gets no ack before this returns
    // (the caller sends the acks). So the handler's work overlaps the journal's, and the
    // next batch gathers what arrives meanwhile.
    // Small batches are parsed here, once, for both. A batch with a big body goes as soon as
    // the insert holds the journal, not after its files and parse (delivery parses beside
    // the first send); other batches of 1 MiB or more go after the insert, which parses
    // them beside its SQLite work.
    // With a filter, delivery needs the summary first; after a failed insert (a full disk)
    // no early hand-off, or each resend would be delivered again.
    let big = batch.iter().any(|e| e.body.len() >= BODY_FILE_MIN);
    // Parsed here only while that is quick: this thread is also the one delivering.
    let total: usize = batch.iter().map(|e| e.body.len()).sum();
    let parsed: Option<Vec<Option<Summary>>> =
        (total < BODY_FILE_MIN).then(|| batch.iter().map(|e| Summary::parse(&e.body)).collect());
    let early = !cfg.filter.is_active() && !cfg.dedupe && !journal.failing();
    let (journaled_tx, journaled_rx) = watch::channel(None);
    let mut handed = false;
    if early {
        if let Some(summaries) = &parsed {
            for (ev, s) in batch.iter().zip(summaries) {
                observers.emit(DaemonEvent::Received {
                    seq: ev.seq,
                    received_at_ms: ev.received_at_ms,
                    summary: s.clone(),
                });
                let _ = events_tx.send((ev.clone(), Some(s.clone()), Some(journaled_rx.clone())));
            }
            handed = true;
        }
    }
    let handing_big = (early && big).then(|| batch.clone());
    let (locked_tx, locked_rx) = oneshot::channel();
    let j = journal.clone();
    // On the blocking pool: delivery (on the runtime's one thread) goes on meanwhile.
    let insert = tokio::task::spawn_blocking(move || {
        let summaries = j.insert_then(&ch, &batch, parsed, now_ms(), || {
            let _ = locked_tx.send(());
        })?;
        let repeats = match (batch.first(), batch.last()) {
            (Some(first), Some(last)) => j.duplicates(&ch, first.seq..=last.seq)?,
            _ => Vec::new(),
        };
        Ok::<_, JournalError>((batch, summaries, repeats))
    });
    if let Some(events) = handing_big {
        if locked_rx.await.is_ok() {
            for ev in events {
                observers.emit(DaemonEvent::Received {
                    seq: ev.seq,
                    received_at_ms: ev.received_at_ms,
                    summary: None,
                });
                let _ = events_tx.send((ev, None, Some(journaled_rx.clone())));
            }
            handed = true;
        }
    }
    let journaled = match insert.await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(format!("journal task failed: {e}")),
    };
    // A big batch was handed over unparsed: its summaries go with the news.
    journaled_tx.send_replace(Some(match &journaled {
        Ok((batch, summaries, _)) if big => Insert::Committed(Arc::new(
            batch
                .iter()
                .map(|e| e.seq)
                .zip(summaries.iter().cloned())
                .collect(),
        )),
        Ok(_) => Insert::Committed(Arc::default()),
        Err(_) => Insert::Failed,
    }));
    match journaled {
        Ok((batch, summaries, repeats)) => {
            for (seq, of) in repeats {
                observers.emit(DaemonEvent::Duplicate { seq, of });
            }
            // Recordings expire: start downloading as soon as the event is safe in the journal.
            if let Some(r) = recorder {
                for (ev, s) in batch.iter().zip(&summaries) {
                    // Not for events `--events`/`--bot` skip: they are not wanted at all.
                    if cfg.filter.wants(s.as_ref()) {
                        r.spawn_for(ev, s.as_ref());
                    }
                }
            }
            // Bounded by the relay's window: it sends no more than that ahead of our acks.
            if !handed {
                for (ev, summary) in batch.into_iter().zip(summaries) {
                    observers.emit(DaemonEvent::Received {
                        seq: ev.seq,
                        received_at_ms: ev.received_at_ms,
                        summary: summary.clone(),
                    });
                    let _ = events_tx.send((ev, Some(summary), None));
                }
            }
            Ok(())
        }
        // Disk full or similar: drop the connection; the relay keeps the events, and we
        // try again after a backoff.
        Err(e) => Err(End::Retry(format!("cannot journal events: {e}"))),
    }
}

fn server_error(code: ErrorCode, message: String) -> End {
    match code {
        ErrorCode::UnsupportedVersion | ErrorCode::ChannelGone => {
            End::Fatal(DaemonError::Rejected(format!("relay: {message}")))
        }
        _ => End::Retry(format!("relay: {message}")),
    }
}

/// Whether a TLS handshake failed because the server answered in plain HTTP (or closed
/// without a TLS record): an `https://` URL pointed at a plain-HTTP port.
pub fn speaks_plain_http(e: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)) =
        e.downcast_ref::<rustls::Error>()
    {
        return true;
    }
    // `io::Error::source` skips the error it wraps (often another io::Error): look inside.
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        if io.kind() == std::io::ErrorKind::UnexpectedEof
            || io.get_ref().is_some_and(|inner| speaks_plain_http(inner))
        {
            return true;
        }
    }
    e.source().is_some_and(speaks_plain_http)
}
