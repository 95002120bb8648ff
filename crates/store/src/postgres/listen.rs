//! The LISTEN connection: heads committed on any relay reach this one's [`Notifier`]. It also
//! keeps this relay's row in `relays` fresh and counts the others.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Config, Notification};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::connect::reason;
use super::{Shared, NODE_TTL, NOTIFY_GONE, NOTIFY_HEADS, NOTIFY_INTEREST, OP_TIMEOUT};

/// How often the heads of streamed channels are re-read, in case a notification was missed,
/// and this relay's `relays` row refreshed.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait between LISTEN reconnects.
const MAX_RECONNECT: Duration = Duration::from_secs(5);

/// Keeps one LISTEN connection up for as long as the store lives.
pub(super) async fn listen_loop(cfg: Config, tls: MakeRustlsConnect, shared: Weak<Shared>) {
    let mut delay = Duration::from_millis(100);
    loop {
        let started = Instant::now();
        match listen_session(&cfg, &tls, &shared).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "PostgreSQL LISTEN connection lost; reconnecting")
            }
        }
        if shared.strong_count() == 0 {
            return;
        }
        if started.elapsed() > Duration::from_secs(30) {
            delay = Duration::from_millis(100);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_RECONNECT);
    }
}

/// Refreshes `node`'s row in `relays` with the channels it streams (`watching`), forgets
/// relays silent for [`NODE_TTL`], and returns how many relays share the database (this one
/// included) and the channels the others stream. The clock is the server's.
pub(super) async fn heartbeat(
    client: &tokio_postgres::Client,
    node: &str,
    watching: &[String],
) -> std::result::Result<(usize, HashSet<String>), tokio_postgres::Error> {
    let st = client
        .prepare(
            "WITH now AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ms),
             up AS (INSERT INTO relays (id, seen_at, watching) SELECT $1, ms, $3 FROM now
                    ON CONFLICT (id) DO UPDATE
                    SET seen_at = excluded.seen_at, watching = excluded.watching),
             gone AS (DELETE FROM relays USING now WHERE seen_at < ms - $2 AND id <> $1),
             others AS (SELECT watching FROM relays, now WHERE seen_at >= ms - $2 AND id <> $1)
             SELECT (SELECT count(*) FROM others),
                    ARRAY(SELECT DISTINCT unnest(watching) FROM others)",
        )
        .await?;
    let ttl = NODE_TTL.as_millis() as i64;
    let row = client.query_one(&st, &[&node, &ttl, &watching]).await?;
    let others: i64 = row.get(0);
    let interest: Vec<String> = row.get(1);
    Ok((others as usize + 1, interest.into_iter().collect()))
}

/// One LISTEN connection: publishes notified heads; on connect and every [`POLL_INTERVAL`],
/// beats the heart and re-reads the heads of the channels streamed here (forgetting the ones
/// no longer streamed). `Ok` when the store is gone, `Err` when the connection is.
async fn listen_session(
    cfg: &Config,
    tls: &MakeRustlsConnect,
    shared: &Weak<Shared>,
) -> std::result::Result<(), String> {
    let (client, mut conn) = tokio::time::timeout(OP_TIMEOUT, cfg.connect(tls.clone()))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| reason(&e))?;
    let (tx, mut rx) = mpsc::unbounded_channel::<std::result::Result<Notification, String>>();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if tx.send(Ok(n)).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    let _ = tx.send(Err(reason(&e)));
                    return;
                }
                None => {
                    let _ = tx.send(Err("connection closed".into()));
                    return;
                }
            }
        }
    });
    let _driver = AbortOnDrop(driver);
    let setup = async {
        client
            .batch_execute(&format!(
                "LISTEN {NOTIFY_HEADS}; LISTEN {NOTIFY_GONE}; LISTEN {NOTIFY_INTEREST}"
            ))
            .await?;
        client
            .prepare("SELECT id, head_seq FROM channels WHERE id = ANY($1)")
            .await
    };
    let poll = tokio::time::timeout(OP_TIMEOUT, setup)
        .await
        .map_err(|_| "LISTEN timed out".to_string())?
        .map_err(|e| reason(&e))?;
    // Notifications may have been missed while disconnected (a channel deleted and created
    // again elsewhere): events kept in memory can no longer be trusted.
    if let Some(shared) = shared.upgrade() {
        shared.notifier.clear_tails();
    }
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let nudge = match shared.upgrade() {
        Some(s) => s.nudge.clone(),
        None => return Ok(()),
    };
    // What `relays.watching` said last: a channel new in it is announced.
    let mut announced: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            n = rx.recv() => {
                let n = n.unwrap_or_else(|| Err("connection closed".into()))?;
                let Some(shared) = shared.upgrade() else { return Ok(()) };
                on_notification(&shared, &n);
            }
            // The first tick is immediate: heads are re-read right after (re)connecting.
            _ = async {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = nudge.notified() => {}
                }
            } => {
                let Some(shared) = shared.upgrade() else { return Ok(()) };
                let ids = shared.notifier.sweep();
                let beat = async {
                    let r = heartbeat(&client, &shared.node, &ids).await?;
                    if ids.iter().any(|c| !announced.contains(c)) {
                        client
                            .batch_execute(&format!("NOTIFY {NOTIFY_INTEREST}"))
                            .await?;
                    }
                    Ok::<_, tokio_postgres::Error>(r)
                };
                let (nodes, interest) = tokio::time::timeout(OP_TIMEOUT, beat)
                    .await
                    .map_err(|_| "heartbeat timed out".to_string())?
                    .map_err(|e| reason(&e))?;
                announced = ids.iter().cloned().collect();
                shared.nodes.store(nodes, Ordering::Relaxed);
                *shared.remote_interest.lock().expect("interest lock") = interest;
                if ids.is_empty() {
                    continue;
                }
                let rows = tokio::time::timeout(OP_TIMEOUT, client.query(&poll, &[&ids]))
                    .await
                    .map_err(|_| "head poll timed out".to_string())?
                    .map_err(|e| reason(&e))?;
                for r in rows {
                    shared.notifier.publish(r.get::<_, &str>(0), r.get::<_, i64>(1) as u64);
                }
            }
        }
    }
}

fn on_notification(shared: &Shared, n: &Notification) {
    match n.channel() {
        NOTIFY_HEADS => {
            if let Some((channel, head)) = n.payload().rsplit_once(':') {
                if let Ok(head) = head.parse::<u64>() {
                    shared.notifier.publish(channel, head);
                }
            }
        }
        NOTIFY_INTEREST => shared.nudge.notify_one(),
        NOTIFY_GONE => {
            shared.notifier.forget(n.payload());
        }
        _ => {}
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
