//! The [`Store`] verbs (appends and acks only queue for the `writer`).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use meethook_disk::bodyfile::{BodyFiles, WrittenBody, BODY_FILE_MIN};
use meethook_proto::frame::{decode_headers, Reader};
use meethook_proto::Event;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{oneshot, watch};

use super::prune::{delete_body_files, prune_events, sweep_body_files, ORPHAN_AGE};
use super::schema::{event_id, id_seq, HEAD, MAX_NUM, MAX_SEQ};
use super::writer::{writer_gone, Op};
use super::{unavailable, SqliteStore};
use crate::{Bounds, Channel, NewEvent, Result, Store, StoreError};

/// A channel's number, if the channel exists.
fn channel_num(c: &Connection, channel: &str) -> rusqlite::Result<Option<i64>> {
    c.prepare_cached("SELECT num FROM channels WHERE id = ?1")?
        .query_row(params![channel], |r| r.get(0))
        .optional()
}

fn row_to_channel(r: &rusqlite::Row<'_>) -> rusqlite::Result<Channel> {
    Ok(Channel {
        id: r.get(0)?,
        token_hash: r.get(1)?,
        sender_secret: r.get(2)?,
        created_at_ms: r.get(3)?,
        head: r.get::<_, i64>(4)? as u64,
    })
}

/// The columns [`row_to_channel`] reads, head last.
fn channel_cols() -> String {
    format!("id, token_hash, sender_secret, created_at, {HEAD}")
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_channel(&self, ch: Channel) -> Result<()> {
        self.write(move |c| {
            let num: i64 = c
                .query_row("SELECT COALESCE(MAX(num), 0) + 1 FROM channels", [], |r| {
                    r.get(0)
                })
                .map_err(unavailable)?;
            if num > MAX_NUM {
                return Err(StoreError::unavailable(std::io::Error::other(
                    "this store has as many channels as it can number; delete some first",
                )));
            }
            let n = c
                .execute(
                    "INSERT INTO channels (id, token_hash, sender_secret, created_at, head_seq, num)
                     VALUES (?1, ?2, ?3, ?4, 0, ?5) ON CONFLICT (id) DO NOTHING",
                    params![ch.id, ch.token_hash, ch.sender_secret, ch.created_at_ms, num],
                )
                .map_err(unavailable)?;
            if n == 0 {
                Err(StoreError::Conflict)
            } else {
                Ok(())
            }
        })
        .await
    }

    async fn channel(&self, id: &str) -> Result<Option<Channel>> {
        let id = id.to_string();
        self.read(move |c, _| {
            c.prepare_cached(&format!(
                "SELECT {} FROM channels WHERE id = ?1",
                channel_cols()
            ))?
            .query_row(params![id], row_to_channel)
            .optional()
        })
        .await
    }

    async fn list_channels(&self) -> Result<Vec<Channel>> {
        self.read(|c, _| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {} FROM channels ORDER BY created_at, id",
                channel_cols()
            ))?;
            let rows = st.query_map([], row_to_channel)?;
            rows.collect()
        })
        .await
    }

    async fn delete_channel(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        let notifier = self.inner.notifier.clone();
        let bodies = self.inner.bodies.clone();
        let (deleted, files) = self
            .write(move |c| {
                let tx = c.transaction().map_err(unavailable)?;
                let mut files = Vec::new();
                if let Some(num) = channel_num(&tx, &id).map_err(unavailable)? {
                    let (lo, hi) = (event_id(num, 0), event_id(num, MAX_SEQ));
                    tx.execute(
                        "DELETE FROM events WHERE id BETWEEN ?1 AND ?2",
                        params![lo, hi],
                    )
                    .map_err(unavailable)?;
                    files = delete_body_files(&tx, lo, hi).map_err(unavailable)?;
                }
                tx.execute("DELETE FROM listeners WHERE channel_id = ?1", params![id])
                    .map_err(unavailable)?;
                let n = tx
                    .execute("DELETE FROM channels WHERE id = ?1", params![id])
                    .map_err(unavailable)?;
                tx.commit().map_err(unavailable)?;
                notifier.forget(&id);
                Ok((n > 0, files))
            })
            .await?;
        // Off the writer thread, as in `prune`.
        let _ = tokio::task::spawn_blocking(move || bodies.remove(&files)).await;
        Ok(deleted)
    }

    async fn set_token_hash(&self, id: &str, token_hash: &str) -> Result<bool> {
        let (id, hash) = (id.to_string(), token_hash.to_string());
        self.write(move |c| {
            c.execute(
                "UPDATE channels SET token_hash = ?2 WHERE id = ?1",
                params![id, hash],
            )
            .map(|n| n > 0)
            .map_err(unavailable)
        })
        .await
    }

    async fn append(&self, channel: &str, event: NewEvent) -> Result<u64> {
        let body_file = if event.body.len() >= BODY_FILE_MIN {
            let (files, body) = (self.inner.bodies.clone(), event.body.clone());
            let n = tokio::task::spawn_blocking(move || files.write(&body, true))
                .await
                .map_err(StoreError::unavailable)?
                .map_err(StoreError::unavailable)?;
            Some(n)
        } else {
            None
        };
        self.append_op(channel, event, body_file).await
    }

    fn body_files(&self) -> Option<&BodyFiles> {
        Some(&self.inner.bodies)
    }

    async fn append_written(
        &self,
        channel: &str,
        event: NewEvent,
        file: WrittenBody,
    ) -> Result<u64> {
        self.append_op(channel, event, Some(file.keep())).await
    }
    async fn read_after(
        &self,
        channel: &str,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Event>> {
        let channel = channel.to_string();
        self.read(move |c, bodies| {
            let Some(num) = channel_num(c, &channel)? else {
                return Ok(Vec::new());
            };
            if after >= MAX_SEQ {
                return Ok(Vec::new());
            }
            let mut st = c.prepare_cached(
                "SELECT id, received_at, method, path, headers, body FROM events
                 WHERE id BETWEEN ?1 AND ?2 ORDER BY id LIMIT ?3",
            )?;
            let (lo, hi) = (event_id(num, after + 1), event_id(num, MAX_SEQ));
            let mut rows = st.query(params![lo, hi, limit as i64])?;
            let mut file_of = c.prepare_cached("SELECT file FROM body_files WHERE id = ?1")?;
            let mut out = Vec::new();
            let mut bytes = 0usize;
            while let Some(r) = rows.next()? {
                let headers: Vec<u8> = r.get(4)?;
                let mut body = Bytes::from(r.get::<_, Vec<u8>>(5)?);
                if body.is_empty() {
                    let id: i64 = r.get(0)?;
                    if let Some(n) = file_of
                        .query_row(params![id], |r| r.get::<_, i64>(0))
                        .optional()?
                    {
                        body = bodies
                            .read(n)
                            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                    }
                }
                bytes += body.len() + headers.len();
                let headers = decode_headers(&mut Reader::new(Bytes::from(headers)))
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                out.push(Event {
                    seq: id_seq(r.get(0)?),
                    received_at_ms: r.get(1)?,
                    method: r.get(2)?,
                    path: r.get(3)?,
                    headers,
                    body,
                });
                if bytes >= max_bytes {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }

    async fn bounds(&self, channel: &str) -> Result<Bounds> {
        let channel = channel.to_string();
        let found = self
            .read(move |c, _| {
                let found: Option<(i64, i64)> = c
                    .prepare_cached(&format!("SELECT {HEAD}, num FROM channels WHERE id = ?1"))?
                    .query_row(params![channel], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                let Some((head, num)) = found else {
                    return Ok(None);
                };
                let oldest: Option<i64> = c
                    .prepare_cached("SELECT MIN(id) FROM events WHERE id BETWEEN ?1 AND ?2")?
                    .query_row(params![event_id(num, 0), event_id(num, MAX_SEQ)], |r| {
                        r.get(0)
                    })?;
                Ok(Some(Bounds {
                    head: head as u64,
                    oldest: oldest.map_or(0, id_seq),
                }))
            })
            .await?;
        found.ok_or(StoreError::NotFound)
    }

    async fn ack(&self, channel: &str, listener: &str, seq: u64, now_ms: i64) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Ack {
            channel: channel.to_string(),
            listener: listener.to_string(),
            seq,
            now_ms,
            reply: tx,
        })?;
        rx.await.map_err(|_| writer_gone())?
    }

    async fn acked(&self, channel: &str, listener: &str) -> Result<u64> {
        let (channel, listener) = (channel.to_string(), listener.to_string());
        self.read(move |c, _| {
            let seq: Option<i64> = c
                .prepare_cached(
                    "SELECT acked_seq FROM listeners WHERE channel_id = ?1 AND listener_id = ?2",
                )?
                .query_row(params![channel, listener], |r| r.get(0))
                .optional()?;
            Ok(seq.unwrap_or(0) as u64)
        })
        .await
    }

    async fn prune(&self, retention: Duration, now_ms: i64) -> Result<u64> {
        let cutoff = now_ms - retention.as_millis() as i64;
        let (n, files) = self
            .write(move |c| {
                let tx = c.transaction().map_err(unavailable)?;
                let (n, files) = prune_events(&tx, cutoff).map_err(unavailable)?;
                tx.execute(
                    "DELETE FROM listeners WHERE last_seen < ?1",
                    params![cutoff],
                )
                .map_err(unavailable)?;
                tx.commit().map_err(unavailable)?;
                Ok((n, files))
            })
            .await?;
        // The file work stays off the writer thread: appends go on while thousands of
        // files are unlinked. The sweep takes files of appends that never committed while
        // this relay ran (a request dropped mid-write, a batch that failed before reaching
        // them); young ones may be in flight, and an upload cannot pause for 10 minutes.
        let swept = self
            .read(move |c, bodies| {
                bodies.remove(&files);
                Ok(sweep_body_files(c, bodies, ORPHAN_AGE))
            })
            .await;
        match swept {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not sweep body files"),
            Err(e) => tracing::warn!(error = %e, "could not sweep body files"),
        }
        Ok(n)
    }

    fn subscribe(&self, channel: &str) -> watch::Receiver<u64> {
        self.inner.notifier.subscribe(channel)
    }

    fn recent(
        &self,
        channel: &str,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Option<Vec<Event>> {
        self.inner.notifier.recent(channel, after, limit, max_bytes)
    }

    async fn ping(&self) -> Result<()> {
        self.read(|c, _| c.query_row("SELECT 1", [], |_| Ok(())))
            .await?;
        // The writer must be alive too: a no-op through its queue.
        self.write(|_| Ok(())).await
    }
}
