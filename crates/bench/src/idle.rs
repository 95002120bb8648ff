//! Phase `idle`, figure g: relay memory per idle listener, the listeners being many
//! websocket streams that said hello, got their welcome and then wait.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, Semaphore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use anyhow::bail;

use crate::ctx::Ctx;
use crate::handler::Checks;
use crate::procs::{self, ChannelInfo};
use crate::report::{fmt_bytes, fmt_dur, fmt_rate, thousands};
use crate::stack::Stack;

/// Handshakes in progress at once.
const OPENING_AT_ONCE: usize = 128;
/// Time allowed for connect + hello + welcome.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);

/// Open idle streams; they are closed when this is dropped.
pub struct IdleListeners {
    /// Streams that got their welcome.
    pub opened: usize,
    /// Streams that did not.
    pub failed: usize,
    /// The first failure.
    pub first_error: Option<String>,
    /// Time to open all of them.
    pub took: Duration,
    stop: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
}

impl IdleListeners {
    /// Opens `count` streams to `/ws/{channel}`, each with its own listener id.
    pub async fn open(addr: SocketAddr, channel: &ChannelInfo, count: usize) -> IdleListeners {
        let stop = CancellationToken::new();
        let gate = Arc::new(Semaphore::new(OPENING_AT_ONCE));
        let (tx, mut rx) = mpsc::unbounded_channel::<Result<(), String>>();
        let mut tasks = tokio::task::JoinSet::new();
        let started = Instant::now();
        let url = format!("ws://{addr}/ws/{}", channel.id);
        let run = std::process::id();
        for i in 0..count {
            let (gate, tx, stop, url) = (gate.clone(), tx.clone(), stop.clone(), url.clone());
            let token = channel.token.clone();
            tasks.spawn(async move {
                let permit = gate.acquire_owned().await;
                let listener_id = format!("lst_bench_{run}_{i}");
                let opened =
                    tokio::time::timeout(OPEN_TIMEOUT, handshake(&url, &token, &listener_id))
                        .await
                        .unwrap_or_else(|_| Err(format!("no welcome within {OPEN_TIMEOUT:?}")));
                drop(permit);
                let mut ws = match opened {
                    Ok(ws) => {
                        let _ = tx.send(Ok(()));
                        ws
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                // Keep reading so pings are answered, until told to stop.
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        m = ws.next() => match m {
                            Some(Ok(_)) => {}
                            _ => return,
                        },
                    }
                }
                let _ = ws.close(None).await;
            });
        }
        drop(tx);
        let (mut opened, mut failed, mut first_error) = (0, 0, None);
        while let Some(r) = rx.recv().await {
            match r {
                Ok(()) => opened += 1,
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert(e);
                }
            }
            if opened + failed == count {
                break;
            }
        }
        IdleListeners {
            opened,
            failed,
            first_error,
            took: started.elapsed(),
            stop,
            tasks,
        }
    }

    /// Closes every stream and waits (briefly) for them to finish.
    pub async fn close(mut self) {
        self.stop.cancel();
        let tasks = std::mem::take(&mut self.tasks);
        let _ = tokio::time::timeout(Duration::from_secs(30), tasks.join_all()).await;
    }
}

impl Drop for IdleListeners {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn handshake(url: &str, token: &str, listener_id: &str) -> Result<Ws, String> {
    let mut req = url.into_client_request().map_err(|e| e.to_string())?;
    req.headers_mut().insert(
        http::header::AUTHORIZATION,
        format!("Bearer {token}")
            .parse()
            .map_err(|e: http::header::InvalidHeaderValue| e.to_string())?,
    );
    // Small buffers: these streams carry one frame each way.
    let cfg = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(cfg), true)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let hello = serde_json::json!({
        "type": "hello",
        "version": 1,
        "listener_id": listener_id,
        "journaled": 0,
        "delivered": 0,
        "window": 64,
    });
    ws.send(Message::text(hello.to_string()))
        .await
        .map_err(|e| format!("send hello: {e}"))?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let v: serde_json::Value =
                    serde_json::from_str(&t).map_err(|e| format!("bad frame {t:?}: {e}"))?;
                return match v.get("type").and_then(|t| t.as_str()) {
                    Some("welcome") => Ok(ws),
                    _ => Err(format!("expected welcome, got {t}")),
                };
            }
            Some(Ok(Message::Close(c))) => return Err(format!("closed before welcome: {c:?}")),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("before welcome: {e}")),
            None => return Err("closed before welcome".into()),
        }
    }
}

/// Figure g: relay memory per idle listener.
pub(crate) async fn phase(ctx: &mut Ctx) -> anyhow::Result<()> {
    let k = ctx.plan.idle;
    let mut stack = Stack::start(ctx, "idle", None).await?;
    let channel = stack.channel.clone();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = stack.relay.proc.rss()?;
    let own_before = procs::status_kb(0, "VmRSS")? * 1024;
    let listeners = IdleListeners::open(stack.relay.addr, &channel, k).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stack.check_alive()?;
    let after = stack.relay.proc.rss()?;
    let own_after = procs::status_kb(0, "VmRSS")? * 1024;
    let (opened, failed, took) = (listeners.opened, listeners.failed, listeners.took);
    let first_error = listeners.first_error.clone();
    listeners.close().await;
    stack.stop().await;
    ctx.report.check(
        format!("idle listeners ({} opened)", thousands(opened as u64)),
        Checks {
            sent: k as u64,
            acked: opened as u64,
            send_errors: failed as u64,
            ..Checks::default()
        },
        first_error,
    );
    let per_stream = |before: u64, after: u64| {
        if opened > 0 {
            (after as f64 - before as f64) / opened as f64
        } else {
            0.0
        }
    };
    let per = per_stream(before, after);
    let own = per_stream(own_before, own_after);
    ctx.report.figure(
        "g",
        format!(
            "relay RSS per idle listener ({} listeners: hello → welcome, then idle)",
            thousands(opened as u64)
        ),
        format!(
            "{} ({} → {})",
            fmt_bytes(per),
            fmt_bytes(before as f64),
            fmt_bytes(after as f64)
        ),
    );
    ctx.report.figure(
        "g",
        "for scale: bench process RSS per open client stream (tokio-tungstenite, 4 KiB read buffer, one task each)",
        fmt_bytes(own),
    );
    ctx.report.figure(
        "g",
        format!(
            "time to open {} listeners (128 handshakes at a time)",
            thousands(opened as u64)
        ),
        format!(
            "{} ({})",
            fmt_dur(took),
            fmt_rate(opened as f64 / took.as_secs_f64().max(1e-9))
        ),
    );
    if failed > 0 {
        bail!("{failed} of {k} idle listeners did not get their welcome");
    }
    Ok(())
}
