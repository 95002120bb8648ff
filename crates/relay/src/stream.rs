//! One listener's websocket stream: hello/welcome, events in seq order under a bounded window
//! of unacknowledged frames, cumulative acks, pings with a liveness deadline.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use meethook_proto::clock::now_ms;
use meethook_proto::frame::{
    encode_event, encode_event_head, encode_preload_drop, encode_preload_head, encode_preloaded,
    MAX_PRELOADS,
};
use meethook_proto::Event;
use meethook_proto::{ClientFrame, ErrorCode, ServerFrame, PROTOCOL_VERSION};
use meethook_store::StoreError;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::http::{channel_auth, error, Resp};
use crate::metrics::Metrics;
use crate::preload;
use crate::State;

/// Largest frame a listener may send (hello and acks are tiny).
const MAX_CLIENT_FRAME: usize = 64 << 10;
/// How long the error frame and close at a stream's end may take.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a new stream may take to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Most events read from the store per batch.
const READ_BATCH: usize = 256;
/// How often acks are written to the store (they are cumulative, so coalescing is safe).
const ACK_FLUSH: Duration = Duration::from_secs(1);
/// Bodies from this size are written to the socket as they are (see [`send_big`]).
const WRITE_THROUGH_MIN: usize = 256 << 10;
/// How often a connected listener's `last_seen` is refreshed even without new acks.
const SEEN_REFRESH: Duration = Duration::from_secs(60);

/// Checks the token, then answers 101 and spawns the stream task.
pub(crate) async fn upgrade(
    st: &Arc<State>,
    channel: String,
    peer: SocketAddr,
    mut req: Request<Incoming>,
) -> Resp {
    // Authenticate before anything about the upgrade is considered.
    if let Err(r) = channel_auth(st, &channel, req.headers()).await {
        return r;
    }
    let h = req.headers();
    let is_upgrade = h
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = h.get(header::SEC_WEBSOCKET_KEY).filter(|_| is_upgrade) else {
        return error(
            StatusCode::BAD_REQUEST,
            "this endpoint speaks websocket: connect with `meethook listen`",
        );
    };
    let Ok(slot) = st.listener_slots.clone().try_acquire_owned() else {
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this relay has as many listeners as --max-listeners allows; retry later",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return r;
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    let st2 = st.clone();
    st.tasks.spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "websocket upgrade failed");
                return;
            }
        };
        // Limits what a listener may send: only small control frames.
        let cfg = WebSocketConfig::default()
            .max_message_size(Some(MAX_CLIENT_FRAME))
            .max_frame_size(Some(MAX_CLIENT_FRAME))
            // A small read buffer keeps an idle listener cheap (the default is 128 KiB).
            .read_buffer_size(4 << 10);
        let ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(cfg)).await;
        st2.metrics.listeners.fetch_add(1, Ordering::Relaxed);
        Metrics::inc(&st2.metrics.listener_streams);
        let span = tracing::info_span!("listener", %channel, %peer);
        let _e = span.enter();
        drop(_e);
        match serve(&st2, &channel, ws).await {
            Ok(()) => tracing::info!(%channel, %peer, "listener disconnected"),
            // The store failing a stream (a missing body file, a database outage) needs the
            // operator; the listener only learns the store is unavailable.
            Err(e @ StreamEnd::Store(_)) => {
                tracing::error!(%channel, %peer, reason = %e, "listener stream ended")
            }
            Err(e) => tracing::info!(%channel, %peer, reason = %e, "listener stream ended"),
        }
        st2.metrics.listeners.fetch_sub(1, Ordering::Relaxed);
        drop(slot);
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let rh = r.headers_mut();
    rh.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    rh.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    rh.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    r
}

/// Why a stream ended early. Causes are in the messages, not chained (no `source()`), so a
/// printed chain says each once.
#[derive(Debug, thiserror::Error)]
enum StreamEnd {
    #[error("websocket error: {0}")]
    Ws(tokio_tungstenite::tungstenite::Error),
    #[error("bad frame: {0}")]
    BadFrame(String),
    #[error("no hello within {0:?}")]
    NoHello(Duration),
    #[error("unsupported protocol version {0}")]
    Version(u32),
    #[error("store: {0}")]
    Store(StoreError),
    #[error("listener silent for {0:?}")]
    Silent(Duration),
    #[error("listener read nothing for {0:?} while events were written to it")]
    Stalled(Duration),
    #[error("relay shutting down while events were written")]
    ShutdownMidWrite,
    #[error("channel deleted")]
    ChannelGone,
    #[error("relay shutting down")]
    Shutdown,
}

impl From<tokio_tungstenite::tungstenite::Error> for StreamEnd {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        StreamEnd::Ws(e)
    }
}

impl From<StoreError> for StreamEnd {
    fn from(e: StoreError) -> Self {
        StreamEnd::Store(e)
    }
}

impl StreamEnd {
    fn frame(&self) -> Option<ServerFrame> {
        let (code, message) = match self {
            StreamEnd::BadFrame(m) => (ErrorCode::BadFrame, m.clone()),
            StreamEnd::NoHello(_) => (ErrorCode::BadFrame, "expected a hello frame first".into()),
            StreamEnd::Version(v) => (
                ErrorCode::UnsupportedVersion,
                format!(
                    "this relay speaks protocol version {PROTOCOL_VERSION}, not {v}: \
                     upgrade meethook on the older side"
                ),
            ),
            StreamEnd::Store(_) => (
                ErrorCode::StoreUnavailable,
                "the relay's store is unavailable; reconnect later".into(),
            ),
            StreamEnd::ChannelGone => (ErrorCode::ChannelGone, "the channel was deleted".into()),
            StreamEnd::Shutdown => (ErrorCode::ShuttingDown, "relay shutting down".into()),
            StreamEnd::Ws(_)
            | StreamEnd::Silent(_)
            | StreamEnd::Stalled(_)
            | StreamEnd::ShutdownMidWrite => return None,
        };
        Some(ServerFrame::Error { code, message })
    }
}

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

async fn serve(st: &State, channel: &str, mut ws: Ws) -> Result<(), StreamEnd> {
    let result = stream_events(st, channel, &mut ws).await;
    // Nothing more is written after a write failed or stopped: it may have stopped mid-frame.
    let mid_write = |e: &&StreamEnd| {
        matches!(
            e,
            StreamEnd::Ws(_) | StreamEnd::Stalled(_) | StreamEnd::ShutdownMidWrite
        )
    };
    if let Some(e) = result.as_ref().err().filter(|e| !mid_write(e)) {
        let goodbye = async {
            if let Some(f) = e.frame() {
                let _ = ws.send(Message::text(f.to_json())).await;
            }
            let _ = ws
                .close(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: "".into(),
                }))
                .await;
        };
        // A listener that reads nothing does not hold the relay (or its shutdown) here.
        let _ = tokio::time::timeout(GOODBYE_TIMEOUT, goodbye).await;
    }
    result
}

/// Sends a big event as one binary message written straight to the socket: its frame head,
/// then the body from the store's own buffer. Through tungstenite, a 16 MiB body was copied
/// twice more (into one frame, then into the write buffer), each copy into fresh memory.
async fn send_big(ws: &mut Ws, ev: &Event) -> Result<(), StreamEnd> {
    write_raw(ws, &[(&encode_event_head(ev), &ev.body)]).await
}

/// Writes binary messages, each a head and a payload, straight to the socket in as few
/// writes as it takes: tungstenite would copy every payload into its write buffer first.
async fn write_raw(ws: &mut Ws, messages: &[(&[u8], &[u8])]) -> Result<(), StreamEnd> {
    // Whatever tungstenite holds goes first: frames must not interleave.
    ws.flush().await?;
    let ws_head = FrameHeader {
        opcode: OpCode::Data(Data::Binary),
        ..FrameHeader::default()
    };
    let mut heads = Vec::with_capacity(messages.len());
    for (head, payload) in messages {
        let len = (head.len() + payload.len()) as u64;
        let mut start = Vec::with_capacity(ws_head.len(len) + head.len());
        ws_head.format(len, &mut start)?;
        start.extend_from_slice(head);
        heads.push(start);
    }
    let mut slices: Vec<std::io::IoSlice> = heads
        .iter()
        .zip(messages)
        .flat_map(|(start, (_, payload))| {
            [std::io::IoSlice::new(start), std::io::IoSlice::new(payload)]
        })
        .collect();
    let mut rest = &mut slices[..];
    let io = ws.get_mut();
    let sent = async {
        while !rest.is_empty() {
            let n = io.write_vectored(rest).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            std::io::IoSlice::advance_slices(&mut rest, n);
        }
        io.flush().await
    };
    sent.await.map_err(|e| StreamEnd::Ws(e.into()))
}

/// What a listener's hello says: its id, journaled and delivered cursors, window, and
/// whether it takes preloads.
type Hello = (String, u64, u64, u32, bool);

/// A stream's preloads: the channel's uploads, and how far each was sent on this stream.
struct Preloading {
    listener: preload::Listener,
    sending: Vec<Sent>,
    /// The newest upload taken up: older ones are not taken up (again).
    newest: u64,
}

/// How much of an upload went out on this stream.
struct Sent {
    up: Arc<preload::Upload>,
    pieces: usize,
    bytes: u64,
}

impl Preloading {
    /// Sends what arrived of the uploads being sent, taking up new ones (at most
    /// [`MAX_PRELOADS`] at a time, as the daemon holds no more) only when `caught_up`: a
    /// listener behind gets their events whole from the store. Then retires what is done.
    async fn send(&mut self, ws: &mut Ws, sent: u64, caught_up: bool) -> Result<(), StreamEnd> {
        self.listener.changed.borrow_and_update();
        if caught_up {
            for up in self.listener.uploads() {
                if up.id <= self.newest {
                    continue;
                }
                if self.sending.len() >= MAX_PRELOADS {
                    break;
                }
                self.newest = up.id;
                self.sending.push(Sent {
                    up,
                    pieces: 0,
                    bytes: 0,
                });
            }
        }
        let mut pieces = Vec::new();
        for s in &mut self.sending {
            if let preload::Progress::Pieces(new) = s.up.pieces_from(s.pieces) {
                for p in new {
                    let head = encode_preload_head(s.up.id, s.up.len, s.bytes);
                    s.pieces += 1;
                    s.bytes += p.len() as u64;
                    pieces.push((head, p));
                }
            }
        }
        if !pieces.is_empty() {
            let messages: Vec<(&[u8], &[u8])> =
                pieces.iter().map(|(h, p)| (&h[..], &p[..])).collect();
            write_raw(ws, &messages).await?;
        }
        self.retire(ws, sent).await
    }

    /// Ends the uploads that failed, and those stored at or before `sent` (their event went
    /// out whole), then flushes.
    async fn retire(&mut self, ws: &mut Ws, sent: u64) -> Result<(), StreamEnd> {
        let mut i = 0;
        while i < self.sending.len() {
            let up = &self.sending[i].up;
            let done = up.failed() || up.seq().is_some_and(|s| s <= sent);
            if done {
                ws.feed(Message::Binary(encode_preload_drop(up.id))).await?;
                self.sending.swap_remove(i);
            } else {
                i += 1;
            }
        }
        ws.flush().await?;
        Ok(())
    }

    /// Whether an upload is being sent or the channel's uploads changed since the last
    /// [`Preloading::send`].
    fn busy(&self) -> bool {
        !self.sending.is_empty() || self.listener.changed.has_changed().unwrap_or(false)
    }

    /// The preload holding `ev`'s body, when all of it was sent on this stream (it is then
    /// forgotten here: the daemon forgets it once used).
    fn take(&mut self, ev: &Event) -> Option<u64> {
        let i = self
            .sending
            .iter()
            .position(|s| s.bytes == s.up.len && s.up.is_event(ev.seq, &ev.body))?;
        Some(self.sending.swap_remove(i).up.id)
    }
}

async fn read_hello(ws: &mut Ws, limit: Duration) -> Result<Hello, StreamEnd> {
    let msg = tokio::time::timeout(limit, ws.next())
        .await
        .map_err(|_| StreamEnd::NoHello(limit))?;
    let text = match msg {
        Some(Ok(Message::Text(t))) => t,
        Some(Ok(_)) | None => return Err(StreamEnd::NoHello(limit)),
        Some(Err(e)) => return Err(e.into()),
    };
    match ClientFrame::from_json(&text) {
        Ok(ClientFrame::Hello {
            version,
            listener_id,
            journaled,
            delivered,
            window,
            preload,
        }) => {
            if version != PROTOCOL_VERSION {
                return Err(StreamEnd::Version(version));
            }
            if listener_id.is_empty() || listener_id.len() > 128 || delivered > journaled {
                return Err(StreamEnd::BadFrame("invalid hello".into()));
            }
            Ok((listener_id, journaled, delivered, window, preload))
        }
        Ok(_) => Err(StreamEnd::NoHello(limit)),
        Err(e) => Err(StreamEnd::BadFrame(e.to_string())),
    }
}

async fn stream_events(st: &State, channel: &str, ws: &mut Ws) -> Result<(), StreamEnd> {
    let hello_limit = HELLO_TIMEOUT.min(st.cfg.liveness_timeout);
    let (listener, journaled, delivered, window, preload) = tokio::select! {
        r = read_hello(ws, hello_limit) => r?,
        _ = st.shutdown.cancelled() => return Err(StreamEnd::Shutdown),
    };
    // Subscribe before reading bounds so no append slips between the two.
    let mut head_rx = st.store.subscribe(channel);
    let bounds = st.store.bounds(channel).await?;
    // Read before this hello's ack, which never lowers it.
    let acked = st.store.acked(channel, &listener).await?.max(delivered);
    st.store
        .ack(channel, &listener, delivered, now_ms())
        .await?;
    ws.send(Message::text(
        ServerFrame::Welcome {
            version: PROTOCOL_VERSION,
            channel: channel.to_string(),
            head: bounds.head,
            oldest: bounds.oldest,
            acked,
        }
        .to_json(),
    ))
    .await?;
    tracing::info!(
        channel,
        listener,
        journaled,
        delivered,
        head = bounds.head,
        "listener connected"
    );

    let window = u64::from(window.clamp(1, st.cfg.max_window));
    let mut sent = journaled; // highest seq sent (or already in the listener's journal)
    let mut acked = delivered;
    let mut stored_ack = delivered;
    let mut inflight_bytes: std::collections::VecDeque<(u64, usize)> = Default::default();
    let mut more = true; // maybe events after `sent` in the store
    let mut last_rx = Instant::now();
    let mut ping = tokio::time::interval(st.cfg.ping_interval);
    ping.reset();
    let mut flush = tokio::time::interval(ACK_FLUSH);
    let mut last_seen_write = Instant::now();
    let mut preloads = preload.then(|| Preloading {
        listener: st.preloads.listen(channel),
        sending: Vec::new(),
        newest: 0,
    });
    let result = loop {
        let bytes_in_flight: usize = inflight_bytes.iter().map(|(_, b)| b).sum();
        if more && sent - acked.min(sent) < window && bytes_in_flight < st.cfg.max_inflight_bytes {
            head_rx.borrow_and_update();
            let room = (window - (sent - acked.min(sent))) as usize;
            let limit = room.min(READ_BATCH);
            let budget = st.cfg.max_inflight_bytes - bytes_in_flight;
            let events = match st.store.recent(channel, sent, limit, budget) {
                Some(events) => events,
                None => st.store.read_after(channel, sent, limit, budget).await?,
            };
            more = events.len() == limit;
            let sent_before = sent;
            for ev in &events {
                inflight_bytes.push_back((ev.seq, ev.body.len()));
                sent = ev.seq;
            }
            let sending = async {
                if let Some(p) = preloads.as_mut().filter(|p| p.busy()) {
                    // Pieces that arrived meanwhile go first, so a stored body's event can
                    // refer to them.
                    p.send(ws, sent_before, false).await?;
                }
                for ev in &events {
                    if let Some(id) = preloads.as_mut().and_then(|p| p.take(ev)) {
                        ws.feed(Message::Binary(encode_preloaded(id, ev))).await?;
                        Metrics::inc(&st.metrics.events_preloaded);
                    } else if ev.body.len() >= WRITE_THROUGH_MIN {
                        send_big(ws, ev).await?;
                    } else {
                        ws.feed(Message::Binary(encode_event(ev))).await?;
                    }
                }
                // Preloads whose event just went out whole end here.
                if let Some(p) = preloads.as_mut().filter(|p| !p.sending.is_empty()) {
                    p.retire(ws, sent).await?;
                }
                ws.flush().await?;
                Ok::<(), StreamEnd>(())
            };
            // A listener that stops reading holds these writes: it is dropped after the
            // liveness timeout, and a shutdown does not wait for it.
            let stall = st.cfg.liveness_timeout;
            if !events.is_empty() {
                tokio::select! {
                    r = tokio::time::timeout(stall, sending) => r.unwrap_or(Err(StreamEnd::Stalled(stall)))?,
                    _ = st.shutdown.cancelled() => break Err(StreamEnd::ShutdownMidWrite),
                }
                st.metrics
                    .events_streamed
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
            }
            if more {
                continue;
            }
        }
        tokio::select! {
            msg = ws.next() => {
                last_rx = Instant::now();
                match msg {
                    None | Some(Ok(Message::Close(_))) => break Ok(()),
                    Some(Err(e)) => break Err(e.into()),
                    Some(Ok(Message::Text(t))) => match ClientFrame::from_json(&t) {
                        Ok(ClientFrame::Ack { seq }) => {
                            Metrics::inc(&st.metrics.acks);
                            if seq > sent {
                                break Err(StreamEnd::BadFrame(format!("ack {seq} for an event never sent (last sent {sent})")));
                            }
                            acked = acked.max(seq);
                            while inflight_bytes.front().is_some_and(|(s, _)| *s <= acked) {
                                inflight_bytes.pop_front();
                            }
                            more = true;
                        }
                        Ok(ClientFrame::Hello { .. }) => break Err(StreamEnd::BadFrame("second hello".into())),
                        Err(e) => {
                            Metrics::inc(&st.metrics.bad_frames);
                            break Err(StreamEnd::BadFrame(e.to_string()));
                        }
                    },
                    Some(Ok(Message::Binary(_))) => {
                        Metrics::inc(&st.metrics.bad_frames);
                        break Err(StreamEnd::BadFrame("listeners send no binary frames".into()));
                    }
                    Some(Ok(_)) => {} // ping/pong: tungstenite answers pings itself
                }
            }
            r = head_rx.changed(), if !more => {
                if r.is_err() {
                    break Err(StreamEnd::ChannelGone);
                }
                more = true;
            }
            r = async { preloads.as_mut().expect("preloading").listener.changed.changed().await },
                if preloads.as_ref().is_some_and(|p| !more || !p.sending.is_empty()) => {
                let Some(p) = preloads.as_mut().filter(|_| r.is_ok()) else {
                    preloads = None;
                    continue;
                };
                let stall = st.cfg.liveness_timeout;
                tokio::select! {
                    r = tokio::time::timeout(stall, p.send(ws, sent, !more)) => r.unwrap_or(Err(StreamEnd::Stalled(stall)))?,
                    _ = st.shutdown.cancelled() => break Err(StreamEnd::ShutdownMidWrite),
                }
            }
            _ = ping.tick() => {
                if last_rx.elapsed() > st.cfg.liveness_timeout {
                    break Err(StreamEnd::Silent(st.cfg.liveness_timeout));
                }
                ws.send(Message::Ping(Bytes::new())).await?;
            }
            _ = flush.tick() => {
                // Also refresh last_seen now and then, so a listener stuck on a down handler
                // for longer than --retention still holds back pruning.
                if acked > stored_ack || last_seen_write.elapsed() >= SEEN_REFRESH {
                    st.store.ack(channel, &listener, acked, now_ms()).await?;
                    stored_ack = acked;
                    last_seen_write = Instant::now();
                }
            }
            _ = st.shutdown.cancelled() => break Err(StreamEnd::Shutdown),
        }
    };
    if acked > stored_ack {
        let _ = st.store.ack(channel, &listener, acked, now_ms()).await;
    }
    result
}
