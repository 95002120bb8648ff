//! The daemon's local journal: every event received, its delivery state and every attempt.
//!
//! One SQLite file (`DIR/journal.sqlite`, WAL). Events are journaled as they arrive; the relay
//! keeps them until they are acked, so a journal write lost to a crash is simply streamed again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use meethook_proto::frame::{decode_headers, encode_headers, headers_len, Reader};
use meethook_proto::meeting::Summary;
use meethook_proto::Event;
use rusqlite::{params, Connection, OptionalExtension};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    channel TEXT NOT NULL,
    seq INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    journaled_at INTEGER NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    headers BLOB NOT NULL,
    body BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    last_status INTEGER,
    event_type TEXT,
    bot_id TEXT,
    PRIMARY KEY (channel, seq)
);
CREATE INDEX IF NOT EXISTS events_state ON events (channel, state, seq);
CREATE TABLE IF NOT EXISTS attempts (
    channel TEXT NOT NULL,
    seq INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    latency_us INTEGER NOT NULL,
    status INTEGER,
    error TEXT,
    response_head BLOB,
    replay INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS attempts_seq ON attempts (channel, seq);
";

/// Where an event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not yet delivered.
    Pending,
    /// The handler answered 2xx.
    Delivered,
    /// Given up on (non-retryable answer, or `--max-attempts` reached).
    Failed,
    /// Journaled and acked but not delivered: filtered out by `listen --events/--bot`.
    Skipped,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Delivered => "delivered",
            State::Failed => "failed",
            State::Skipped => "skipped",
        }
    }
}

/// One delivery attempt, as recorded.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// 1-based attempt number.
    pub attempt: u32,
    /// When it started, ms since the epoch.
    pub started_at_ms: i64,
    /// Time to the handler's answer (or the error).
    pub latency: Duration,
    /// The handler's status, when it answered.
    pub status: Option<u16>,
    /// The connection error or timeout, when it did not.
    pub error: Option<String>,
    /// The first KiB of the handler's response body.
    pub response_head: Bytes,
    /// Whether this was a replay.
    pub replay: bool,
}

/// Errors from the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// SQLite failed (disk full, permissions, corruption).
    #[error("journal {path}: {source}")]
    Sqlite {
        /// The journal file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The journal directory could not be created.
    #[error("cannot create journal directory {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The journal of one `--data` directory (several channels may share it).
#[derive(Clone)]
pub struct Journal {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl Journal {
    /// Opens (creating if needed) `DIR/journal.sqlite`.
    pub fn open(dir: &Path) -> Result<Journal, JournalError> {
        let path = dir.join("journal.sqlite");
        let io_err = |source| JournalError::Io {
            path: dir.to_path_buf(),
            source,
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err)?;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&path)
                .map_err(io_err)?;
        }
        #[cfg(not(unix))]
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let j = Journal {
            conn: Arc::new(Mutex::new(Connection::open(&path).map_err(|source| {
                JournalError::Sqlite {
                    path: path.clone(),
                    source,
                }
            })?)),
            path,
        };
        j.with(|c| {
            c.busy_timeout(Duration::from_secs(10))?;
            c.pragma_update(None, "journal_mode", "WAL")?;
            // NORMAL: survives kill -9 (the WAL is in the OS cache); the relay keeps every
            // unacked event, so only a power cut can cost a visible duplicate.
            c.pragma_update(None, "synchronous", "NORMAL")?;
            c.execute_batch(SCHEMA)
        })?;
        Ok(j)
    }

    /// The journal file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, JournalError> {
        let mut c = self.conn.lock().expect("journal lock");
        f(&mut c).map_err(|source| JournalError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    /// This listener's stable id for `channel`, created on first use.
    pub fn listener_id(&self, channel: &str) -> Result<String, JournalError> {
        let key = format!("listener_id:{channel}");
        self.with(|c| {
            let found: Option<String> = c
                .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                    r.get(0)
                })
                .optional()?;
            if let Some(id) = found {
                return Ok(id);
            }
            let id = format!("lst_{:032x}", rand::random::<u128>());
            c.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)",
                params![key, id],
            )?;
            Ok(id)
        })
    }

    /// `(journaled, delivered)`: the highest seq journaled, and the highest seq such that it
    /// and everything before it is no longer pending.
    pub fn cursors(&self, channel: &str) -> Result<(u64, u64), JournalError> {
        self.with(|c| {
            let max: Option<i64> = c.query_row(
                "SELECT MAX(seq) FROM events WHERE channel = ?1",
                params![channel],
                |r| r.get(0),
            )?;
            let first_pending: Option<i64> = c.query_row(
                "SELECT MIN(seq) FROM events WHERE channel = ?1 AND state = 'pending'",
                params![channel],
                |r| r.get(0),
            )?;
            let journaled = max.unwrap_or(0) as u64;
            let delivered = match first_pending {
                Some(p) => (p as u64).saturating_sub(1),
                None => journaled,
            };
            Ok((journaled, delivered))
        })
    }

    /// Journals events (already-journaled seqs are ignored) in one transaction.
    pub fn insert(&self, channel: &str, events: &[Event], now_ms: i64) -> Result<(), JournalError> {
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT OR IGNORE INTO events
                     (channel, seq, received_at, journaled_at, method, path, headers, body, event_type, bot_id)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )?;
                for ev in events {
                    let mut h = BytesMut::with_capacity(headers_len(&ev.headers));
                    encode_headers(&ev.headers, &mut h);
                    let summary = Summary::parse(&ev.body);
                    st.execute(params![
                        channel,
                        ev.seq as i64,
                        ev.received_at_ms,
                        now_ms,
                        ev.method,
                        ev.path,
                        &h[..],
                        &ev.body[..],
                        summary.as_ref().map(|s| s.event.clone()),
                        summary.and_then(|s| s.bot_id),
                    ])?;
                }
            }
            tx.commit()
        })
    }

    /// The lowest pending event of `channel`.
    pub fn first_pending(&self, channel: &str) -> Result<Option<(Event, u32)>, JournalError> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT seq, received_at, method, path, headers, body, attempts FROM events
                 WHERE channel = ?1 AND state = 'pending' ORDER BY seq LIMIT 1",
            )?
            .query_row(params![channel], |r| {
                let ev = row_event(r)?;
                Ok((ev, r.get::<_, i64>(6)? as u32))
            })
            .optional()
        })
    }

    /// Records an attempt and, when final, the event's new state, in one transaction.
    pub fn record(
        &self,
        channel: &str,
        seq: u64,
        a: &Attempt,
        new_state: Option<State>,
    ) -> Result<(), JournalError> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.prepare_cached(
                "INSERT INTO attempts (channel, seq, attempt, started_at, latency_us, status, error, response_head, replay)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                channel,
                seq as i64,
                a.attempt,
                a.started_at_ms,
                a.latency.as_micros() as i64,
                a.status,
                a.error,
                &a.response_head[..],
                a.replay,
            ])?;
            if !a.replay {
                tx.prepare_cached(
                    "UPDATE events SET attempts = ?3, last_status = ?4,
                       state = COALESCE(?5, state) WHERE channel = ?1 AND seq = ?2",
                )?
                .execute(params![
                    channel,
                    seq as i64,
                    a.attempt,
                    a.status,
                    new_state.map(State::as_str),
                ])?;
            }
            tx.commit()
        })
    }
}

fn row_event(r: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    let headers: Vec<u8> = r.get(4)?;
    let headers = decode_headers(&mut Reader::new(Bytes::from(headers))).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Blob, Box::new(e))
    })?;
    Ok(Event {
        seq: r.get::<_, i64>(0)? as u64,
        received_at_ms: r.get(1)?,
        method: r.get(2)?,
        path: r.get(3)?,
        headers,
        body: Bytes::from(r.get::<_, Vec<u8>>(5)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use meethook_proto::Header;

    fn ev(seq: u64) -> Event {
        Event {
            seq,
            received_at_ms: 1,
            method: "POST".into(),
            path: "/x".into(),
            headers: vec![Header::new("a", "1"), Header::new("a", "2")],
            body: Bytes::from(format!("body {seq}")),
        }
    }

    fn attempt(n: u32, status: u16) -> Attempt {
        Attempt {
            attempt: n,
            started_at_ms: 0,
            latency: Duration::from_millis(1),
            status: Some(status),
            error: None,
            response_head: Bytes::new(),
            replay: false,
        }
    }

    #[test]
    fn cursors_follow_delivery_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let id = j.listener_id("c").unwrap();
        assert_eq!(j.cursors("c").unwrap(), (0, 0));
        j.insert("c", &[ev(1), ev(2), ev(3)], 0).unwrap();
        j.insert("c", &[ev(3)], 0).unwrap(); // duplicate ignored
        assert_eq!(j.cursors("c").unwrap(), (3, 0));
        let (first, attempts) = j.first_pending("c").unwrap().unwrap();
        assert_eq!((first.clone(), attempts), (ev(1), 0));
        j.record("c", 1, &attempt(1, 503), None).unwrap();
        assert_eq!(j.cursors("c").unwrap(), (3, 0));
        j.record("c", 1, &attempt(2, 200), Some(State::Delivered))
            .unwrap();
        j.record("c", 2, &attempt(1, 400), Some(State::Failed))
            .unwrap();
        assert_eq!(j.cursors("c").unwrap(), (3, 2));
        drop(j);
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.listener_id("c").unwrap(), id);
        assert_eq!(j.cursors("c").unwrap(), (3, 2));
        assert_eq!(j.first_pending("c").unwrap().unwrap().0, ev(3));
        assert_eq!(j.cursors("other").unwrap(), (0, 0));
    }
}
