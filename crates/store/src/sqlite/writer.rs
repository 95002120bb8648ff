//! Group commit: the writer thread, which commits whatever is queued in one transaction and
//! answers every caller after the commit, and the calls that queue work for it.

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use meethook_disk::bodyfile::BODY_FILE_MIN;
use meethook_disk::wal::CheckpointClock;
use meethook_proto::frame::{encode_headers, headers_len};
use meethook_proto::Event;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use super::schema::{event_id, HEAD, MAX_SEQ};
use super::SqliteStore;
use crate::{NewEvent, Notifier, Result, StoreError};

/// Most operations one group commit takes from the queue.
const MAX_BATCH: usize = 1024;
/// Most body bytes one group commit takes from the queue.
const MAX_BATCH_BYTES: usize = 64 << 20;
/// Longest a commit waits for more ops once one is queued (only when the previous commit
/// held more than one: a lone sender never waits).
const GATHER: Duration = Duration::from_micros(100);

pub(super) type Reply<T> = oneshot::Sender<Result<T>>;
type ControlFn = Box<dyn FnOnce(&mut Connection) + Send>;

pub(super) enum Op {
    Append {
        channel: String,
        event: NewEvent,
        /// The body's file under `bodies/`, already durable, when it has one.
        body_file: Option<i64>,
        reply: Reply<u64>,
    },
    Ack {
        channel: String,
        listener: String,
        seq: u64,
        now_ms: i64,
        reply: Reply<()>,
    },
    /// Anything else, run in a transaction of its own.
    Control(ControlFn),
}

impl SqliteStore {
    /// Queues an append for the writer's next group commit; `body_file` holds the body when
    /// it is one of the store's files (removed again when the event is not stored).
    pub(super) async fn append_op(
        &self,
        channel: &str,
        event: NewEvent,
        body_file: Option<i64>,
    ) -> Result<u64> {
        let (tx, rx) = oneshot::channel();
        let sent = self.send(Op::Append {
            channel: channel.to_string(),
            event,
            body_file,
            reply: tx,
        });
        let res = match sent {
            Ok(()) => rx.await.map_err(|_| writer_gone()).and_then(|r| r),
            Err(e) => Err(e),
        };
        // Not stored: the file goes too (a lost reply leaves it to the sweep at start).
        if let (Err(_), Some(n)) = (&res, body_file) {
            self.inner.bodies.remove(&[n]);
        }
        res
    }

    pub(super) fn send(&self, op: Op) -> Result<()> {
        self.inner
            .writer
            .lock()
            .expect("writer lock")
            .send(op)
            .map_err(|_| StoreError::unavailable(std::io::Error::other("store writer stopped")))
    }

    pub(super) async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Control(Box::new(move |c| {
            let _ = tx.send(f(c));
        })))?;
        rx.await.map_err(|_| writer_gone())?
    }
}

/// Checkpoints once the WAL grew, after the commit's answers are out: inside the commit
/// (SQLite's automatic way) the copy and its fsync would delay that batch's 200s. A short
/// WAL is rewritten in place, which keeps each commit's fsync from also growing the file.
fn checkpoint_if_due(conn: &Connection, clock: &CheckpointClock) {
    if !clock.due() {
        return;
    }
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        tracing::warn!(error = %e, "WAL checkpoint failed; retrying after the next commits");
        clock.retry();
    }
}

pub(super) fn writer_gone() -> StoreError {
    StoreError::unavailable(std::io::Error::other("store writer stopped"))
}

/// Each channel's number and head as the writer last committed them: an append then costs
/// one insert, and a batch one head update per channel. The writer is the only one to change
/// heads; it forgets them all before any other write and after a failed commit.
type Heads = HashMap<String, (i64, u64)>;

pub(super) fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<Op>, notifier: &Notifier) {
    let clock = CheckpointClock::default();
    let mut heads = Heads::new();
    let mut pending: Option<Op> = None;
    // Ops in the previous commit: with several concurrent senders, waiting a moment for as
    // many again saves fsyncs (a sender arriving just after a commit started would otherwise
    // make the next commit a nearly empty one).
    let mut last_batch = 0usize;
    loop {
        let first = match pending.take() {
            Some(op) => op,
            None => match rx.recv() {
                Ok(op) => op,
                Err(_) => return,
            },
        };
        if let Op::Control(f) = first {
            heads.clear();
            f(&mut conn);
            checkpoint_if_due(&conn, &clock);
            continue;
        }
        let mut bytes = match &first {
            Op::Append { event, .. } => inline_len(event.body.len()),
            _ => 0,
        };
        let mut batch = vec![first];
        let gather_until = Instant::now() + GATHER;
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            let next = if last_batch > 1 && batch.len() < last_batch {
                rx.recv_timeout(gather_until.saturating_duration_since(Instant::now()))
                    .map_err(|_| ())
            } else {
                rx.try_recv().map_err(|_| ())
            };
            match next {
                Ok(Op::Control(f)) => {
                    pending = Some(Op::Control(f));
                    break;
                }
                Ok(op) => {
                    if let Op::Append { event, .. } = &op {
                        bytes += inline_len(event.body.len());
                    }
                    batch.push(op);
                }
                Err(_) => break,
            }
        }
        last_batch = batch
            .iter()
            .filter(|op| matches!(op, Op::Append { .. }))
            .count();
        commit_batch(&mut conn, batch, notifier, &mut heads);
        checkpoint_if_due(&conn, &clock);
    }
}

/// Body bytes an append adds to its commit (none when the body is a file).
fn inline_len(len: usize) -> usize {
    if len >= BODY_FILE_MIN {
        0
    } else {
        len
    }
}

/// Outcome of one op inside a batch, replied only after the commit.
enum Done {
    Append(Reply<u64>, Result<u64>, String, Option<Event>),
    Ack(Reply<()>, Result<()>),
}

fn commit_batch(conn: &mut Connection, batch: Vec<Op>, notifier: &Notifier, heads: &mut Heads) {
    let mut done = Vec::with_capacity(batch.len());
    let result = (|| -> rusqlite::Result<()> {
        let tx = conn.transaction()?;
        {
            let mut lookup =
                tx.prepare_cached(&format!("SELECT num, {HEAD} FROM channels WHERE id = ?1"))?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO events (id, received_at, method, path, headers, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut file =
                tx.prepare_cached("INSERT INTO body_files (id, file) VALUES (?1, ?2)")?;
            let mut ack = tx.prepare_cached(
                "INSERT INTO listeners (channel_id, listener_id, acked_seq, last_seen)
                 SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM channels WHERE id = ?1)
                 ON CONFLICT (channel_id, listener_id) DO UPDATE SET
                   acked_seq = MAX(acked_seq, excluded.acked_seq), last_seen = excluded.last_seen",
            )?;
            for op in batch {
                match op {
                    Op::Append {
                        channel,
                        event,
                        body_file,
                        reply,
                    } => {
                        let head = match heads.get_mut(&channel) {
                            Some(h) => Some(h),
                            None => {
                                let found: Option<(i64, i64)> = lookup
                                    .query_row(params![channel], |r| Ok((r.get(0)?, r.get(1)?)))
                                    .optional()?;
                                found.map(|(num, head)| {
                                    heads.entry(channel.clone()).or_insert((num, head as u64))
                                })
                            }
                        };
                        let (res, stored) = match head {
                            None => (Err(StoreError::NotFound), None),
                            Some((num, head)) => {
                                let (num, seq) = (*num, *head + 1);
                                if seq > MAX_SEQ {
                                    // About 10^12 events on one channel: refuse the batch
                                    // rather than leave a gap.
                                    return Err(rusqlite::Error::IntegralValueOutOfRange(
                                        0, seq as i64,
                                    ));
                                }
                                *head = seq;
                                let mut h = BytesMut::with_capacity(headers_len(&event.headers));
                                encode_headers(&event.headers, &mut h);
                                let id = event_id(num, seq);
                                let inline = match body_file {
                                    Some(n) => {
                                        file.execute(params![id, n])?;
                                        &[][..]
                                    }
                                    None => &event.body[..],
                                };
                                insert.execute(params![
                                    id,
                                    event.received_at_ms,
                                    event.method,
                                    event.path,
                                    &h[..],
                                    inline,
                                ])?;
                                let stored = Event {
                                    seq,
                                    received_at_ms: event.received_at_ms,
                                    method: event.method,
                                    path: event.path,
                                    headers: event.headers,
                                    body: event.body,
                                };
                                (Ok(seq), Some(stored))
                            }
                        };
                        done.push(Done::Append(reply, res, channel, stored));
                    }
                    Op::Ack {
                        channel,
                        listener,
                        seq,
                        now_ms,
                        reply,
                    } => {
                        ack.execute(params![channel, listener, seq as i64, now_ms])?;
                        done.push(Done::Ack(reply, Ok(())));
                    }
                    Op::Control(_) => unreachable!("control ops never join a batch"),
                }
            }
        }
        tx.commit()
    })();
    if result.is_err() {
        // The heads moved in the rolled-back transaction.
        heads.clear();
    }
    match result {
        Ok(()) => {
            // Seqs ascend within a batch, so each channel's events are in order.
            let mut fresh: HashMap<String, Vec<Event>> = HashMap::new();
            for d in done {
                match d {
                    Done::Append(reply, res, channel, stored) => {
                        if let Some(ev) = stored {
                            fresh.entry(channel).or_default().push(ev);
                        }
                        let _ = reply.send(res);
                    }
                    Done::Ack(reply, res) => {
                        let _ = reply.send(res);
                    }
                }
            }
            for (channel, events) in fresh {
                notifier.publish_events(&channel, events);
            }
        }
        Err(e) => {
            // Nothing in the batch was stored; every sender gets the error (503, retry).
            tracing::error!(error = %e, "store commit failed; batch rejected");
            let msg = e.to_string();
            for d in done {
                let err = || StoreError::unavailable(std::io::Error::other(msg.clone()));
                match d {
                    Done::Append(reply, ..) => {
                        let _ = reply.send(Err(err()));
                    }
                    Done::Ack(reply, _) => {
                        let _ = reply.send(Err(err()));
                    }
                }
            }
            // Ops not yet reached when the error struck were dropped with their closures;
            // their senders see a closed reply channel, which maps to the same 503.
        }
    }
}
