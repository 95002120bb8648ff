//! The tables, the layout of an event's row id, and the migrations to them.

use rusqlite::Connection;

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
pub(super) const HEAD: &str = "MAX(head_seq, COALESCE((SELECT MAX(e.id) FROM events e
     WHERE e.id BETWEEN num << 40 AND (num << 40) | 1099511627775), 0) & 1099511627775)";

/// Bits of an event id that hold its seq.
const SEQ_BITS: u32 = 40;
/// Largest seq a channel can reach (about 10^12).
pub(super) const MAX_SEQ: u64 = (1 << SEQ_BITS) - 1;
/// Largest channel number (ids stay positive 63-bit integers).
pub(super) const MAX_NUM: i64 = (1 << (63 - SEQ_BITS)) - 1;

/// The row id of seq `seq` of channel number `num` (seqs past [`MAX_SEQ`] clamp to it).
pub(super) fn event_id(num: i64, seq: u64) -> i64 {
    (num << SEQ_BITS) | seq.min(MAX_SEQ) as i64
}

/// The seq held in an event's row id.
pub(super) fn id_seq(id: i64) -> u64 {
    id as u64 & MAX_SEQ
}

pub(super) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
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
