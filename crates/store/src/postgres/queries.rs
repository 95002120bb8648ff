//! The [`Store`] verbs as SQL (an append only queues for the `writer` tasks).

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_postgres::Object;
use meethook_proto::frame::{decode_headers, Reader};
use meethook_proto::Event;
use tokio::sync::{oneshot, watch};
use tokio_postgres::Row;

use super::schema::{lock_key, LOCK_PRUNE};
use super::writer::AppendOp;
use super::{other, pg, PostgresStore, NOTIFY_GONE, OP_TIMEOUT};
use crate::{Bounds, Channel, NewEvent, Result, Store, StoreError};

/// Pruning may delete a lot at once.
const PRUNE_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs `f` on a pooled connection within `limit`; a connection that timed out is dropped
/// rather than returned to the pool.
macro_rules! with_client {
    ($store:expr, $limit:expr, |$c:ident| $body:expr) => {{
        #[allow(unused_mut)]
        let mut $c = $store.client().await?;
        let r = tokio::time::timeout($limit, async { $body }).await;
        match r {
            Ok(r) => r,
            Err(_) => {
                drop(Object::take($c));
                Err(other("PostgreSQL did not answer in time"))
            }
        }
    }};
}

const CHANNEL_COLS: &str = "id, token_hash, sender_secret, created_at, head_seq";

fn row_to_channel(r: &Row) -> Channel {
    Channel {
        id: r.get(0),
        token_hash: r.get(1),
        sender_secret: r.get(2),
        created_at_ms: r.get(3),
        head: r.get::<_, i64>(4) as u64,
    }
}

fn row_to_event(r: &Row) -> Result<Event> {
    let headers: Vec<u8> = r.get(4);
    let headers = decode_headers(&mut Reader::new(Bytes::from(headers)))
        .map_err(|e| other(format!("stored headers do not decode: {e}")))?;
    Ok(Event {
        seq: r.get::<_, i64>(0) as u64,
        received_at_ms: r.get(1),
        method: r.get(2),
        path: r.get(3),
        headers,
        body: Bytes::from(r.get::<_, Vec<u8>>(5)),
    })
}

fn to_i64(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_channel(&self, ch: Channel) -> Result<()> {
        let n = with_client!(self, OP_TIMEOUT, |c| {
            let st = c
                .prepare_cached(
                    "INSERT INTO channels (id, token_hash, sender_secret, created_at, head_seq)
                     VALUES ($1, $2, $3, $4, 0) ON CONFLICT (id) DO NOTHING",
                )
                .await
                .map_err(pg)?;
            c.execute(
                &st,
                &[&ch.id, &ch.token_hash, &ch.sender_secret, &ch.created_at_ms],
            )
            .await
            .map_err(pg)
        })?;
        if n == 0 {
            Err(StoreError::Conflict)
        } else {
            Ok(())
        }
    }

    async fn channel(&self, id: &str) -> Result<Option<Channel>> {
        with_client!(self, OP_TIMEOUT, |c| {
            let st = c
                .prepare_cached(&format!(
                    "SELECT {CHANNEL_COLS} FROM channels WHERE id = $1"
                ))
                .await
                .map_err(pg)?;
            let row = c.query_opt(&st, &[&id]).await.map_err(pg)?;
            Ok(row.as_ref().map(row_to_channel))
        })
    }

    async fn list_channels(&self) -> Result<Vec<Channel>> {
        with_client!(self, OP_TIMEOUT, |c| {
            let st = c
                .prepare_cached(&format!(
                    "SELECT {CHANNEL_COLS} FROM channels ORDER BY created_at, id"
                ))
                .await
                .map_err(pg)?;
            let rows = c.query(&st, &[]).await.map_err(pg)?;
            Ok(rows.iter().map(row_to_channel).collect())
        })
    }

    async fn delete_channel(&self, id: &str) -> Result<bool> {
        let found = with_client!(self, OP_TIMEOUT, |c| {
            let tx = c.transaction().await.map_err(pg)?;
            // The channel row first: its lock waits out appends in flight, and appends that
            // come after find no row, so no event outlives its channel.
            let n = tx
                .execute("DELETE FROM channels WHERE id = $1", &[&id])
                .await
                .map_err(pg)?;
            tx.execute("DELETE FROM events WHERE channel_id = $1", &[&id])
                .await
                .map_err(pg)?;
            tx.execute("DELETE FROM listeners WHERE channel_id = $1", &[&id])
                .await
                .map_err(pg)?;
            if n > 0 {
                tx.execute(&format!("SELECT pg_notify('{NOTIFY_GONE}', $1)"), &[&id])
                    .await
                    .map_err(pg)?;
            }
            tx.commit().await.map_err(pg)?;
            Ok(n > 0)
        })?;
        self.shared.notifier.forget(id);
        Ok(found)
    }

    async fn set_token_hash(&self, id: &str, token_hash: &str) -> Result<bool> {
        with_client!(self, OP_TIMEOUT, |c| {
            c.execute(
                "UPDATE channels SET token_hash = $2 WHERE id = $1",
                &[&id, &token_hash],
            )
            .await
            .map(|n| n > 0)
            .map_err(pg)
        })
    }

    async fn append(&self, channel: &str, event: NewEvent) -> Result<u64> {
        let (tx, rx) = oneshot::channel();
        self.appends
            .queue(channel)
            .send(AppendOp {
                channel: channel.to_string(),
                event,
                reply: tx,
            })
            .await
            .map_err(|_| other("store writer stopped"))?;
        rx.await.map_err(|_| other("store writer stopped"))?
    }

    async fn read_after(
        &self,
        channel: &str,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Event>> {
        let (after, limit, max_bytes) = (to_i64(after), to_i64(limit), to_i64(max_bytes).max(1));
        with_client!(self, OP_TIMEOUT, |c| {
            // The byte budget is applied in the server, so bodies past it are never sent: a
            // row is included while the bytes before it are under the budget (so always one).
            let st = c
                .prepare_cached(
                    "SELECT seq, received_at, method, path, headers, body FROM (
                         SELECT *, SUM(octet_length(headers) + octet_length(body))
                                   OVER (ORDER BY seq) AS upto
                         FROM (SELECT seq, received_at, method, path, headers, body FROM events
                               WHERE channel_id = $1 AND seq > $2 ORDER BY seq LIMIT $3) AS page
                     ) AS sized
                     WHERE upto - (octet_length(headers) + octet_length(body)) < $4
                     ORDER BY seq",
                )
                .await
                .map_err(pg)?;
            let rows = c
                .query(&st, &[&channel, &after, &limit, &max_bytes])
                .await
                .map_err(pg)?;
            rows.iter().map(row_to_event).collect()
        })
    }

    async fn bounds(&self, channel: &str) -> Result<Bounds> {
        let found = with_client!(self, OP_TIMEOUT, |c| {
            let st = c
                .prepare_cached(
                    "SELECT head_seq, (SELECT MIN(seq) FROM events WHERE channel_id = $1)
                     FROM channels WHERE id = $1",
                )
                .await
                .map_err(pg)?;
            let row = c.query_opt(&st, &[&channel]).await.map_err(pg)?;
            Ok(row.map(|r| Bounds {
                head: r.get::<_, i64>(0) as u64,
                oldest: r.get::<_, Option<i64>>(1).unwrap_or(0) as u64,
            }))
        })?;
        found.ok_or(StoreError::NotFound)
    }

    async fn ack(&self, channel: &str, listener: &str, seq: u64, now_ms: i64) -> Result<()> {
        let seq = to_i64(seq);
        with_client!(self, OP_TIMEOUT, |c| {
            // FOR KEY SHARE waits out a concurrent delete of the channel (then inserts nothing).
            let st = c
                .prepare_cached(
                    "INSERT INTO listeners (channel_id, listener_id, acked_seq, last_seen)
                     SELECT id, $2, $3, $4 FROM channels WHERE id = $1 FOR KEY SHARE
                     ON CONFLICT (channel_id, listener_id) DO UPDATE SET
                       acked_seq = GREATEST(listeners.acked_seq, excluded.acked_seq),
                       last_seen = excluded.last_seen",
                )
                .await
                .map_err(pg)?;
            c.execute(&st, &[&channel, &listener, &seq, &now_ms])
                .await
                .map(|_| ())
                .map_err(pg)
        })
    }

    async fn acked(&self, channel: &str, listener: &str) -> Result<u64> {
        with_client!(self, OP_TIMEOUT, |c| {
            let st = c
                .prepare_cached(
                    "SELECT acked_seq FROM listeners WHERE channel_id = $1 AND listener_id = $2",
                )
                .await
                .map_err(pg)?;
            let row = c.query_opt(&st, &[&channel, &listener]).await.map_err(pg)?;
            Ok(row.map_or(0, |r| r.get::<_, i64>(0) as u64))
        })
    }

    async fn prune(&self, retention: Duration, now_ms: i64) -> Result<u64> {
        let cutoff = now_ms.saturating_sub(to_i64(retention.as_millis()));
        with_client!(self, PRUNE_TIMEOUT, |c| {
            let tx = c.transaction().await.map_err(pg)?;
            // One relay prunes at a time; the others would only wait to find the work done.
            let mine: bool = tx
                .query_one(
                    &format!("SELECT pg_try_advisory_xact_lock({})", lock_key(LOCK_PRUNE)),
                    &[],
                )
                .await
                .map_err(pg)?
                .get(0);
            if !mine {
                return Ok(0);
            }
            let n = tx
                .execute(
                    "DELETE FROM events WHERE received_at < $1 AND seq <= COALESCE(
                       (SELECT MIN(l.acked_seq) FROM listeners l
                        WHERE l.channel_id = events.channel_id AND l.last_seen >= $1),
                       9223372036854775807)",
                    &[&cutoff],
                )
                .await
                .map_err(pg)?;
            tx.execute("DELETE FROM listeners WHERE last_seen < $1", &[&cutoff])
                .await
                .map_err(pg)?;
            tx.commit().await.map_err(pg)?;
            Ok(n)
        })
    }

    fn recent(
        &self,
        channel: &str,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Option<Vec<Event>> {
        self.shared
            .notifier
            .recent(channel, after, limit, max_bytes)
    }

    fn subscribe(&self, channel: &str) -> watch::Receiver<u64> {
        let rx = self.shared.notifier.subscribe(channel);
        // The other relays learn now that this one streams the channel.
        self.shared.nudge.notify_one();
        rx
    }

    fn nodes(&self) -> usize {
        self.shared.nodes.load(Ordering::Relaxed).max(1)
    }

    async fn ping(&self) -> Result<()> {
        with_client!(self, OP_TIMEOUT, |c| {
            c.simple_query("SELECT 1").await.map(|_| ()).map_err(pg)
        })
    }
}
