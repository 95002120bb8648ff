//! Group commit: writer tasks, each owning a share of the channels, commit whatever appends
//! are queued for their channels in one statement, and answer every caller after `COMMIT`.
//!
//! - **One writer per channel.** A channel's appends always go to the same writer (a hash of
//!   its id), so a relay never has two transactions of one channel in flight that would wait
//!   on each other's row lock: a hot channel's batch is everything queued for it.
//! - **One round trip.** The batch is one statement in its own implicit transaction: it locks
//!   the channel rows in id order, bumps their counters, inserts the events with their seqs,
//!   and returns each channel's first seq. The row locks are held for that statement and its
//!   commit only.
//! - **NOTIFY after the commit.** A transaction that notifies takes a lock on the whole
//!   server's notification queue from its commit until its WAL is flushed: every appending
//!   transaction in the cluster would wait for every other's fsync. So the heads go out from a
//!   separate task, coalesced, in a transaction with `synchronous_commit = off` (a notification
//!   is a hint: the heads poll covers a lost one).

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use deadpool_postgres::Object;
use meethook_proto::frame::{encode_headers, headers_len};
use meethook_proto::Event;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;

use super::{other, pg, Shared, NOTIFY_HEADS, OP_TIMEOUT};
use crate::{NewEvent, Result, StoreError};

/// Most appends one transaction takes.
const MAX_BATCH: usize = 512;
/// Most body bytes one transaction takes.
const MAX_BATCH_BYTES: usize = 16 << 20;
/// Appends waiting for one writer before `append` itself waits.
const QUEUE: usize = 2048;
/// Longest wait for more appends before a batch goes (only right after a batch of several).
const GATHER: Duration = Duration::from_millis(2);

/// One append waiting for a writer.
pub(super) struct AppendOp {
    pub(super) channel: String,
    pub(super) event: NewEvent,
    pub(super) reply: oneshot::Sender<Result<u64>>,
}

/// The writers' queues; a channel's appends always go to the same one.
pub(super) struct Appends {
    queues: Vec<mpsc::Sender<AppendOp>>,
}

impl Appends {
    /// The queue of `channel`'s writer.
    pub(super) fn queue(&self, channel: &str) -> &mpsc::Sender<AppendOp> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        channel.hash(&mut h);
        &self.queues[(h.finish() % self.queues.len() as u64) as usize]
    }
}

/// Starts `writers` writer tasks and the NOTIFY task.
pub(super) fn start(shared: &Arc<Shared>, writers: usize) -> Appends {
    let queues = (0..writers.max(1))
        .map(|_| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(writer(shared.clone(), rx));
            tx
        })
        .collect();
    tokio::spawn(notify_loop(Arc::downgrade(shared)));
    Appends { queues }
}

async fn writer(shared: Arc<Shared>, mut rx: mpsc::Receiver<AppendOp>) {
    // Appends of the previous batch, and when it was answered.
    let (mut prev, mut done) = (0, Instant::now());
    while let Some(first) = rx.recv().await {
        let mut bytes = first.event.body.len();
        let mut batch = vec![first];
        let full =
            |batch: &Vec<AppendOp>, bytes| batch.len() >= MAX_BATCH || bytes >= MAX_BATCH_BYTES;
        // The callers just answered come back with their next append: a batch sent without
        // them would take the channel's row (and a WAL flush) for a few, and leave them for
        // the next turn. Wait a little for as many as last time, unless this writer was idle.
        let gather = (done.elapsed() < GATHER).then(|| Instant::now() + GATHER);
        while !full(&batch, bytes) {
            let op = match rx.try_recv() {
                Ok(op) => op,
                Err(_) => match gather {
                    Some(until) if batch.len() < prev => {
                        match tokio::time::timeout_at(until.into(), rx.recv()).await {
                            Ok(Some(op)) => op,
                            _ => break,
                        }
                    }
                    _ => break,
                },
            };
            bytes += op.event.body.len();
            batch.push(op);
        }
        prev = batch.len();
        commit_appends(&shared, batch).await;
        done = Instant::now();
    }
}

/// Commits a batch and answers every caller; a statement error that is not about the
/// connection retries the appends one by one, so one bad event cannot sink the others.
async fn commit_appends(shared: &Shared, batch: Vec<AppendOp>) {
    let ops: Vec<(&str, &NewEvent)> = batch
        .iter()
        .map(|op| (op.channel.as_str(), &op.event))
        .collect();
    let results = match commit_with_retry(shared, &ops).await {
        Ok(r) => r,
        Err(e) if ops.len() > 1 && statement_error(&e) => {
            let mut out = Vec::with_capacity(ops.len());
            for op in &ops {
                out.push(
                    match commit_with_retry(shared, std::slice::from_ref(op)).await {
                        Ok(mut r) => r.pop().expect("one result per op"),
                        Err(e) => Err(e),
                    },
                );
            }
            out
        }
        Err(e) => {
            tracing::error!(error = %e, appends = ops.len(), "PostgreSQL commit failed; batch rejected");
            let msg = e.to_string();
            ops.iter().map(|_| Err(other(msg.clone()))).collect()
        }
    };
    // Local streams get these from memory (a gap-free run at a time; see Notifier).
    let mut fresh: HashMap<&str, Vec<Event>> = HashMap::new();
    for (op, r) in batch.iter().zip(&results) {
        if let Ok(seq) = r {
            fresh.entry(op.channel.as_str()).or_default().push(Event {
                seq: *seq,
                received_at_ms: op.event.received_at_ms,
                method: op.event.method.clone(),
                path: op.event.path.clone(),
                headers: op.event.headers.clone(),
                body: op.event.body.clone(),
            });
        }
    }
    let mut heads = Vec::with_capacity(fresh.len());
    for (channel, mut events) in fresh {
        events.sort_by_key(|e| e.seq);
        heads.push((channel.to_string(), events.last().map_or(0, |e| e.seq)));
        shared.notifier.publish_events(channel, events);
    }
    for (op, r) in batch.into_iter().zip(results) {
        let _ = op.reply.send(r);
    }
    shared.tell_others(heads);
}

/// Whether a batch failed on what one event could cause (bad data, a constraint, a size
/// limit), so retrying the events one by one helps, rather than on the server or connection.
fn statement_error(e: &StoreError) -> bool {
    match e {
        StoreError::Unavailable(inner) => inner
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(|e| e.code())
            .is_some_and(|c| matches!(&c.code()[..2], "22" | "23" | "54")),
        _ => false,
    }
}

/// Deadlocks and serialization failures: try again.
fn is_transient(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
    )
}

async fn commit_with_retry(shared: &Shared, ops: &[(&str, &NewEvent)]) -> Result<Vec<Result<u64>>> {
    let mut tries = 0;
    loop {
        match commit_once(shared, ops).await {
            Err(StoreError::Unavailable(e))
                if tries < 3
                    && e.downcast_ref::<tokio_postgres::Error>()
                        .is_some_and(is_transient) =>
            {
                tries += 1;
            }
            r => return r,
        }
    }
}

/// The whole append, one statement and so one implicit transaction: lock the batch's channel
/// rows in id order (two batches, on any relay, never wait on each other in a cycle), bump
/// each counter by its number of events, insert the events numbered in queue order, return
/// each channel's seq before the batch. A channel that does not exist returns no row.
const APPEND: &str = "
WITH v AS (
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bytea[],
                         $6::bytea[])
        WITH ORDINALITY AS v(ch, received_at, method, path, headers, body, ord)
),
bump AS (
    UPDATE channels AS c SET head_seq = c.head_seq + n.n
    FROM (SELECT id FROM channels WHERE id = ANY($7::text[]) ORDER BY id FOR NO KEY UPDATE) AS l,
         unnest($7::text[], $8::bigint[]) AS n(id, n)
    WHERE c.id = l.id AND n.id = l.id
    RETURNING c.id, c.head_seq - n.n AS base
),
ins AS (
    INSERT INTO events (channel_id, seq, received_at, method, path, headers, body)
    SELECT v.ch, bump.base + row_number() OVER (PARTITION BY v.ch ORDER BY v.ord),
           v.received_at, v.method, v.path, v.headers, v.body
    FROM v JOIN bump ON bump.id = v.ch
)
SELECT id, base FROM bump";

/// One batch in one statement (see [`APPEND`]); `Ok` only once it committed.
async fn commit_once(shared: &Shared, ops: &[(&str, &NewEvent)]) -> Result<Vec<Result<u64>>> {
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for (ch, _) in ops {
        *counts.entry(ch).or_default() += 1;
    }
    let ids: Vec<&str> = counts.keys().copied().collect();
    let ns: Vec<i64> = counts.values().copied().collect();
    let headers: Vec<BytesMut> = ops
        .iter()
        .map(|(_, ev)| {
            let mut h = BytesMut::with_capacity(headers_len(&ev.headers));
            encode_headers(&ev.headers, &mut h);
            h
        })
        .collect();
    let headers: Vec<&[u8]> = headers.iter().map(|h| &h[..]).collect();
    let chs: Vec<&str> = ops.iter().map(|(ch, _)| *ch).collect();
    let at: Vec<i64> = ops.iter().map(|(_, ev)| ev.received_at_ms).collect();
    let methods: Vec<&str> = ops.iter().map(|(_, ev)| ev.method.as_str()).collect();
    let paths: Vec<&str> = ops.iter().map(|(_, ev)| ev.path.as_str()).collect();
    let bodies: Vec<&[u8]> = ops.iter().map(|(_, ev)| &ev.body[..]).collect();

    let client = shared.pool.get().await.map_err(StoreError::unavailable)?;
    let work = async {
        let st = client.prepare_cached(APPEND).await.map_err(pg)?;
        // Outside a transaction block the statement commits on its own; its answer comes
        // after the commit (synchronous_commit is on): acknowledged means committed.
        let rows = client
            .query(
                &st,
                &[&chs, &at, &methods, &paths, &headers, &bodies, &ids, &ns],
            )
            .await
            .map_err(pg)?;
        let mut next: HashMap<String, i64> = rows
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) + 1))
            .collect();
        Ok(ops
            .iter()
            .map(|(ch, _)| match next.get_mut(*ch) {
                None => Err(StoreError::NotFound),
                Some(seq) => {
                    *seq += 1;
                    Ok((*seq - 1) as u64)
                }
            })
            .collect())
    };
    match tokio::time::timeout(OP_TIMEOUT, work).await {
        Ok(r) => r,
        Err(_) => {
            drop(Object::take(client));
            Err(other("PostgreSQL did not commit in time"))
        }
    }
}

/// Sends the heads the writers committed to the other relays, coalesced: while one NOTIFY is
/// on its way, newer heads wait and go out together in the next.
async fn notify_loop(shared: Weak<Shared>) {
    loop {
        let wake = match shared.upgrade() {
            Some(s) => s.heads_out.wake.clone(),
            None => return,
        };
        wake.notified().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let heads = std::mem::take(&mut *shared.heads_out.heads.lock().expect("heads lock"));
        if heads.is_empty() {
            continue;
        }
        let payloads: Vec<String> = heads.iter().map(|(c, h)| format!("{c}:{h}")).collect();
        if let Err(e) = notify(&shared, &payloads).await {
            // The other relays' heads poll picks these up within a second.
            tracing::debug!(error = %e, "NOTIFY of new heads failed");
        }
    }
}

async fn notify(shared: &Shared, payloads: &[String]) -> Result<()> {
    let client = shared.pool.get().await.map_err(StoreError::unavailable)?;
    let work = async {
        let st = client
            .prepare_cached(&format!(
                "SELECT pg_notify('{NOTIFY_HEADS}', p) FROM unnest($1::text[]) AS p"
            ))
            .await
            .map_err(pg)?;
        // Pipelined: one round trip. The notification lock is held only until this commit,
        // which does not wait for the disk.
        // Each future sends its request when first polled, and join! polls them in order.
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&payloads];
        let (a, b, c) = tokio::join!(
            client.batch_execute("BEGIN; SET LOCAL synchronous_commit = off"),
            client.execute(&st, &params),
            client.batch_execute("COMMIT"),
        );
        a.and(b.map(|_| ())).and(c).map_err(pg)
    };
    match tokio::time::timeout(OP_TIMEOUT, work).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            // A failed statement may leave the session in an aborted transaction block.
            drop(Object::take(client));
            Err(e)
        }
        Err(_) => {
            drop(Object::take(client));
            Err(other("PostgreSQL did not answer in time"))
        }
    }
}
