//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`.
//!
//! All writes go through one writer thread that drains its queue and commits whatever is
//! waiting in one transaction (group commit): many concurrent webhooks share one fsync.
//! Reads use a small pool of read-only connections, which WAL lets run beside the writer.
//!
//! Bodies of [`BODY_FILE_MIN`] bytes or more live in files of their own under
//! `DIR/relay-bodies` ([`BodyFiles`]), fsync'd before the commit that refers to them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use meethook_proto::frame::{decode_headers, encode_headers, headers_len, Reader};
use meethook_proto::Event;
use rusqlite::config::DbConfig;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::{oneshot, watch};

use crate::{Bounds, Channel, NewEvent, Notifier, Result, Store, StoreError};
use meethook_disk::bodyfile::{BodyFiles, WrittenBody, BODY_FILE_MIN};
use meethook_disk::wal::{note_wal_pages, CheckpointClock};

/// Schema version stored in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 4;

/// Version 4 (3 updated `head_seq` at every commit; 2 had no `body_files`). An event's row id
/// packs its channel's number and its seq (`num << 40 | seq`): one b-tree, no secondary
/// index, so a group commit writes only the newest leaf or two, and a channel's events are
/// one contiguous id range. A channel's head is its newest event's seq; `head_seq` keeps it
/// only for when pruning deleted that event (see [`HEAD`]).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS channels (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL,
    sender_secret TEXT,
    created_at INTEGER NOT NULL,
    head_seq INTEGER NOT NULL DEFAULT 0,
    num INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS channels_num ON channels (num);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    received_at INTEGER NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    headers BLOB NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS body_files (
    id INTEGER PRIMARY KEY,
    file INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS listeners (
    channel_id TEXT NOT NULL,
    listener_id TEXT NOT NULL,
    acked_seq INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    PRIMARY KEY (channel_id, listener_id)
);
";

/// From version 1 (events keyed by channel id and seq, with an index on arrival time), before
/// [`SCHEMA`] creates the new tables: numbers the channels and sets the old events aside.
const MIGRATE_1_SET_ASIDE: &str = "
ALTER TABLE channels ADD COLUMN num INTEGER;
UPDATE channels SET num = rowid;
ALTER TABLE events RENAME TO events_v1;
";

/// From version 1, after [`SCHEMA`]: moves the old events into the new `events`.
const MIGRATE_1_MOVE: &str = "
INSERT INTO events (id, received_at, method, path, headers, body)
    SELECT (c.num << 40) | e.seq, e.received_at, e.method, e.path, e.headers, e.body
    FROM events_v1 e JOIN channels c ON c.id = e.channel_id ORDER BY c.num, e.seq;
DROP TABLE events_v1;
";

/// SQL for a channel's head (columns `num`, `head_seq` of `channels`): the seq of its newest
/// event, or `head_seq` where pruning left none. Not updating `head_seq` at every commit
/// saves each group commit a page write.
const HEAD: &str = "MAX(head_seq, COALESCE((SELECT MAX(e.id) FROM events e
     WHERE e.id BETWEEN num << 40 AND (num << 40) | 1099511627775), 0) & 1099511627775)";

/// Bits of an event id that hold its seq.
const SEQ_BITS: u32 = 40;
/// Largest seq a channel can reach (about 10^12).
const MAX_SEQ: u64 = (1 << SEQ_BITS) - 1;
/// Largest channel number (ids stay positive 63-bit integers).
const MAX_NUM: i64 = (1 << (63 - SEQ_BITS)) - 1;

/// The row id of seq `seq` of channel number `num` (seqs past [`MAX_SEQ`] clamp to it).
fn event_id(num: i64, seq: u64) -> i64 {
    (num << SEQ_BITS) | seq.min(MAX_SEQ) as i64
}

/// The seq held in an event's row id.
fn id_seq(id: i64) -> u64 {
    id as u64 & MAX_SEQ
}

/// A channel's number, if the channel exists.
fn channel_num(c: &Connection, channel: &str) -> rusqlite::Result<Option<i64>> {
    c.prepare_cached("SELECT num FROM channels WHERE id = ?1")?
        .query_row(params![channel], |r| r.get(0))
        .optional()
}

/// Most operations one group commit takes from the queue.
const MAX_BATCH: usize = 1024;
/// Most body bytes one group commit takes from the queue.
const MAX_BATCH_BYTES: usize = 64 << 20;
/// Longest a commit waits for more ops once one is queued (only when the previous commit
/// held more than one: a lone sender never waits).
const GATHER: Duration = Duration::from_micros(100);
/// Age past which a body file no row refers to is removed by a prune.
const ORPHAN_AGE: Duration = Duration::from_secs(600);
/// Read connections kept open.
const READ_POOL: usize = 8;

type Reply<T> = oneshot::Sender<Result<T>>;
type ControlFn = Box<dyn FnOnce(&mut Connection) + Send>;

enum Op {
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

/// SQLite-backed [`Store`].
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// Held (flock) while the store is open: the writer's in-memory heads and the body-file
    /// sweep assume no other relay writes this directory.
    _lock: std::fs::File,
    bodies: BodyFiles,
    writer: Mutex<mpsc::Sender<Op>>,
    readers: Mutex<Vec<Connection>>,
    notifier: Arc<Notifier>,
}

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::unavailable(e)
}

/// Creates `dir` (mode 0700) and the database file (mode 0600) if missing.
fn prepare_files(dir: &Path, file: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(file)?;
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)?;
    Ok(())
}

/// Locks the store file against a second relay on the same directory.
fn lock_store(path: &Path) -> Result<std::fs::File> {
    let f = std::fs::File::open(path).map_err(StoreError::unavailable)?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::unavailable(std::io::Error::other(format!(
            "another meethook relay is using {} (it is locked); stop it, or give this relay its own --data \
             (several relays share PostgreSQL: --store postgres://…)",
            path.display()
        )))),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::unavailable(e)),
    }
}

/// Removes body files no row refers to, unchanged for `min_age` (see [`BodyFiles::sweep`]).
fn sweep_body_files(
    conn: &Connection,
    bodies: &BodyFiles,
    min_age: Duration,
) -> std::io::Result<usize> {
    let known: std::collections::HashSet<i64> = conn
        .prepare_cached("SELECT file FROM body_files")
        .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
        .map_err(std::io::Error::other)?;
    bodies.sweep(&known, min_age)
}

fn open_conn(path: &Path, write: bool) -> rusqlite::Result<Connection> {
    let flags = if write {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
    } else {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // A stable plan per statement: without it (the bundled build enables STAT4) every new
    // value bound to `seq > ?` re-prepares the cached statement.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    if write {
        // 4 KiB pages: each commit writes whole pages to the WAL, and small events are the
        // common case (big bodies are files). 8 KiB cost about 4 % more CPU per small event.
        // Only a new database takes it; an existing one keeps its page size.
        conn.pragma_update(None, "page_size", 4096)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a commit returns only after the WAL is fsync'd.
        conn.pragma_update(None, "synchronous", "FULL")?;
        // The writer checkpoints itself, after answering (see `writer_loop`).
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.wal_hook(Some(note_wal_pages));
    }
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `DIR/relay.sqlite`.
    pub fn open(dir: &Path) -> std::result::Result<SqliteStore, StoreError> {
        let path = dir.join("relay.sqlite");
        prepare_files(dir, &path).map_err(StoreError::unavailable)?;
        let lock = lock_store(&path)?;
        let mut conn = open_conn(&path, true).map_err(unavailable)?;
        migrate(&mut conn).map_err(unavailable)?;
        let bodies = BodyFiles::open(dir.join("relay-bodies")).map_err(StoreError::unavailable)?;
        // At open the lock is held: no append of this directory is in flight.
        let swept =
            sweep_body_files(&conn, &bodies, Duration::ZERO).map_err(StoreError::unavailable)?;
        if swept > 0 {
            tracing::info!(
                files = swept,
                "removed body files of appends that never committed"
            );
        }
        let notifier = Arc::new(Notifier::default());
        let (tx, rx) = mpsc::channel();
        let n = notifier.clone();
        std::thread::Builder::new()
            .name("meethook-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, &n))
            .map_err(StoreError::unavailable)?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                _lock: lock,
                bodies,
                writer: Mutex::new(tx),
                readers: Mutex::new(Vec::new()),
                notifier,
            }),
        })
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Queues an append for the writer's next group commit; `body_file` holds the body when
    /// it is one of the store's files (removed again when the event is not stored).
    async fn append_op(
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

    fn send(&self, op: Op) -> Result<()> {
        self.inner
            .writer
            .lock()
            .expect("writer lock")
            .send(op)
            .map_err(|_| StoreError::unavailable(std::io::Error::other("store writer stopped")))
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Control(Box::new(move |c| {
            let _ = tx.send(f(c));
        })))?;
        rx.await.map_err(|_| writer_gone())?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &BodyFiles) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let conn = inner.readers.lock().expect("reader pool").pop();
            let conn = match conn {
                Some(c) => c,
                None => open_conn(&inner.path, false).map_err(unavailable)?,
            };
            let out = f(&conn, &inner.bodies).map_err(unavailable);
            let mut pool = inner.readers.lock().expect("reader pool");
            if pool.len() < READ_POOL {
                pool.push(conn);
            }
            out
        })
        .await
        .map_err(StoreError::unavailable)?
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

fn writer_gone() -> StoreError {
    StoreError::unavailable(std::io::Error::other("store writer stopped"))
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if v > SCHEMA_VERSION {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(format!(
                "relay.sqlite has layout {v}, newer than this build's {SCHEMA_VERSION}: \
                 it was written by a newer meethook; upgrade meethook"
            )),
        ));
    }
    if v < SCHEMA_VERSION {
        let tx = conn.transaction()?;
        if v == 1 {
            tx.execute_batch(MIGRATE_1_SET_ASIDE)?;
        }
        tx.execute_batch(SCHEMA)?;
        if v == 1 {
            tx.execute_batch(MIGRATE_1_MOVE)?;
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()?;
    }
    Ok(())
}

/// Each channel's number and head as the writer last committed them: an append then costs
/// one insert, and a batch one head update per channel. The writer is the only one to change
/// heads; it forgets them all before any other write and after a failed commit.
type Heads = HashMap<String, (i64, u64)>;

fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<Op>, notifier: &Notifier) {
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

/// Deletes, channel by channel, the oldest events received before `cutoff` that every
/// listener seen since `cutoff` has acked. Arrival order is seq order, so each channel's walk
/// stops at its first younger (or unacked) event.
/// Returns how many went and the body files to remove once the deletion is committed.
fn prune_events(tx: &rusqlite::Transaction<'_>, cutoff: i64) -> rusqlite::Result<(u64, Vec<i64>)> {
    // Heads first: a channel whose every event goes keeps its head in `head_seq`.
    tx.execute(&format!("UPDATE channels SET head_seq = {HEAD}"), [])?;
    let channels: Vec<(i64, Option<i64>)> = tx
        .prepare(
            "SELECT c.num, (SELECT MIN(l.acked_seq) FROM listeners l
                            WHERE l.channel_id = c.id AND l.last_seen >= ?1)
             FROM channels c",
        )?
        .query_map(params![cutoff], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut walk =
        tx.prepare("SELECT id, received_at FROM events WHERE id BETWEEN ?1 AND ?2 ORDER BY id")?;
    let mut delete = tx.prepare("DELETE FROM events WHERE id BETWEEN ?1 AND ?2")?;
    let mut files = Vec::new();
    let mut pruned = 0;
    for (num, acked) in channels {
        let upto = acked.map_or(MAX_SEQ, |a| a.max(0) as u64);
        if upto == 0 {
            continue;
        }
        let (lo, hi) = (event_id(num, 0), event_id(num, upto));
        let mut last = None;
        let mut rows = walk.query(params![lo, hi])?;
        while let Some(r) = rows.next()? {
            if r.get::<_, i64>(1)? >= cutoff {
                break;
            }
            last = Some(r.get::<_, i64>(0)?);
        }
        drop(rows);
        if let Some(last) = last {
            pruned += delete.execute(params![lo, last])? as u64;
            files.extend(delete_body_files(tx, lo, last)?);
        }
    }
    Ok((pruned, files))
}

/// Deletes the `body_files` rows of event ids `lo..=hi`; returns their files.
fn delete_body_files(c: &Connection, lo: i64, hi: i64) -> rusqlite::Result<Vec<i64>> {
    c.prepare_cached("DELETE FROM body_files WHERE id BETWEEN ?1 AND ?2 RETURNING file")?
        .query_map(params![lo, hi], |r| r.get(0))?
        .collect()
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
