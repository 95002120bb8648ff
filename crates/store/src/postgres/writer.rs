//! Group commit: writer tasks that each commit whatever appends are queued in one
//! transaction, and answer every caller after `COMMIT`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::BytesMut;
use deadpool_postgres::Object;
use meethook_proto::frame::{encode_headers, headers_len};
use meethook_proto::Event;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;

use super::{other, pg, Shared, NOTIFY_HEADS, OP_TIMEOUT};
use crate::{NewEvent, Result, StoreError};

/// Writer tasks committing appends; more overlap one batch's commit with the next.
const WRITERS: usize = 4;
/// Most appends one transaction takes.
const MAX_BATCH: usize = 512;
/// Most body bytes one transaction takes.
const MAX_BATCH_BYTES: usize = 16 << 20;
/// Appends waiting for a writer before `append` itself waits.
const QUEUE: usize = 4096;

/// One append waiting for a writer.
pub(super) struct AppendOp {
    pub(super) channel: String,
    pub(super) event: NewEvent,
    pub(super) reply: oneshot::Sender<Result<u64>>,
}

/// Starts the writer tasks; appends go to the returned queue.
pub(super) fn start(shared: &Arc<Shared>) -> mpsc::Sender<AppendOp> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    for _ in 0..WRITERS {
        tokio::spawn(writer(shared.clone(), rx.clone()));
    }
    tx
}

async fn writer(shared: Arc<Shared>, rx: Arc<tokio::sync::Mutex<mpsc::Receiver<AppendOp>>>) {
    loop {
        let batch = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            let mut bytes = first.event.body.len();
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(op) => {
                        bytes += op.event.body.len();
                        batch.push(op);
                    }
                    Err(_) => break,
                }
            }
            batch
        };
        commit_appends(&shared, batch).await;
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
    for (channel, mut events) in fresh {
        events.sort_by_key(|e| e.seq);
        shared.notifier.publish_events(channel, events);
    }
    for (op, r) in batch.into_iter().zip(results) {
        let _ = op.reply.send(r);
    }
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

/// One transaction: bump each channel's counter by its number of events (in id order),
/// insert the events with their seqs, NOTIFY the new heads, COMMIT.
async fn commit_once(shared: &Shared, ops: &[(&str, &NewEvent)]) -> Result<Vec<Result<u64>>> {
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for (ch, _) in ops {
        *counts.entry(ch).or_default() += 1;
    }
    let ids: Vec<&str> = counts.keys().copied().collect();
    let ns: Vec<i64> = counts.values().copied().collect();
    let mut client = shared.pool.get().await.map_err(StoreError::unavailable)?;
    let work = async {
        let tx = client.transaction().await.map_err(pg)?;
        if ids.len() > 1 {
            // Row locks in id order, so two batches never wait on each other in a cycle.
            let lock = tx
                .prepare_cached(
                    "SELECT id FROM channels WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
                )
                .await
                .map_err(pg)?;
            tx.execute(&lock, &[&ids]).await.map_err(pg)?;
        }
        let bump = tx
            .prepare_cached(
                "UPDATE channels AS c SET head_seq = c.head_seq + v.n
                 FROM unnest($1::text[], $2::bigint[]) AS v(id, n)
                 WHERE c.id = v.id RETURNING c.id, c.head_seq",
            )
            .await
            .map_err(pg)?;
        let rows = tx.query(&bump, &[&ids, &ns]).await.map_err(pg)?;
        // Next seq to hand out per channel, in queue order.
        let mut next: HashMap<String, i64> = HashMap::with_capacity(rows.len());
        for r in &rows {
            let id: String = r.get(0);
            let head: i64 = r.get(1);
            let n = counts.get(id.as_str()).copied().unwrap_or(0);
            next.insert(id, head - n + 1);
        }
        let mut results = Vec::with_capacity(ops.len());
        let (mut cols_ch, mut cols_seq, mut cols_at) = (Vec::new(), Vec::new(), Vec::new());
        let (mut cols_method, mut cols_path, mut cols_headers, mut cols_body) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (ch, ev) in ops {
            match next.get_mut(*ch) {
                None => results.push(Err(StoreError::NotFound)),
                Some(seq) => {
                    let mut h = BytesMut::with_capacity(headers_len(&ev.headers));
                    encode_headers(&ev.headers, &mut h);
                    cols_ch.push(*ch);
                    cols_seq.push(*seq);
                    cols_at.push(ev.received_at_ms);
                    cols_method.push(ev.method.as_str());
                    cols_path.push(ev.path.as_str());
                    cols_headers.push(h.freeze());
                    cols_body.push(&ev.body[..]);
                    results.push(Ok(*seq as u64));
                    *seq += 1;
                }
            }
        }
        if !cols_ch.is_empty() {
            let insert = tx
                .prepare_cached(
                    "INSERT INTO events (channel_id, seq, received_at, method, path, headers, body)
                     SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[],
                                          $5::text[], $6::bytea[], $7::bytea[])",
                )
                .await
                .map_err(pg)?;
            let headers: Vec<&[u8]> = cols_headers.iter().map(|h| &h[..]).collect();
            tx.execute(
                &insert,
                &[
                    &cols_ch,
                    &cols_seq,
                    &cols_at,
                    &cols_method,
                    &cols_path,
                    &headers,
                    &cols_body,
                ],
            )
            .await
            .map_err(pg)?;
            let payloads: Vec<String> = rows
                .iter()
                .map(|r| format!("{}:{}", r.get::<_, &str>(0), r.get::<_, i64>(1)))
                .collect();
            let notify = tx
                .prepare_cached(&format!(
                    "SELECT pg_notify('{NOTIFY_HEADS}', p) FROM unnest($1::text[]) AS p"
                ))
                .await
                .map_err(pg)?;
            tx.execute(&notify, &[&payloads]).await.map_err(pg)?;
        }
        // Acknowledged means committed: answers go out only after this returns.
        tx.commit().await.map_err(pg)?;
        Ok(results)
    };
    match tokio::time::timeout(OP_TIMEOUT, work).await {
        Ok(r) => r,
        Err(_) => {
            drop(Object::take(client));
            Err(other("PostgreSQL did not commit in time"))
        }
    }
}
