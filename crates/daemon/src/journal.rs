//! The daemon's local journal: every event received, its delivery state and every attempt.
//!
//! One SQLite file (`DIR/journal.sqlite`, WAL). Events are journaled as they arrive; the relay
//! keeps them until they are acked, so a journal write lost to a crash is simply streamed again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use meethook_disk::bodyfile::{BodyFiles, BODY_FILE_MIN};
use meethook_disk::wal::{self, CheckpointClock};
use meethook_proto::frame::{decode_headers, encode_headers, headers_len, Reader};
use meethook_proto::meeting::Summary;
use meethook_proto::Event;
use rusqlite::config::DbConfig;
use rusqlite::types::{Type, ValueRef};
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
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    last_status INTEGER,
    event_type TEXT,
    bot_id TEXT,
    body_file INTEGER,
    pinned INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (channel, seq)
);
-- Bodies of 1 MiB and more are files under journal-bodies/ (their `bodies` row is empty).
CREATE INDEX IF NOT EXISTS events_body_files ON events (body_file) WHERE body_file IS NOT NULL;
-- Headers and body apart from the delivery state: updating the state then rewrites a small
-- row, not a body of up to 16 MiB with its overflow pages.
CREATE TABLE IF NOT EXISTS bodies (
    channel TEXT NOT NULL,
    seq INTEGER NOT NULL,
    headers BLOB NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (channel, seq)
);
-- Only pending events are indexed: a handful at a time, so the index stays one hot page
-- instead of an index entry rewritten for every delivery.
DROP INDEX IF EXISTS events_state;
CREATE INDEX IF NOT EXISTS events_pending ON events (channel, seq) WHERE state = 'pending';
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
CREATE TABLE IF NOT EXISTS recordings (
    channel TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    state TEXT NOT NULL,
    bytes INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    PRIMARY KEY (channel, seq, kind)
);
";

/// Journal layout version (`PRAGMA user_version`): 2 keeps headers and bodies in `bodies`,
/// 3 big bodies in files (`events.body_file`), 4 adds `events.pinned`.
const SCHEMA_VERSION: i64 = 4;

/// The error for a journal of a layout newer than this build's.
fn too_new(version: i64) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
        Some(format!(
            "the journal has layout {version}, newer than this build's {SCHEMA_VERSION}: \
             it was written by a newer meethook; upgrade meethook"
        )),
    )
}

/// Creates the schema, or moves an older journal (version 1: bodies inside `events`; 2: no
/// `body_file`; 3: no `pinned`) to it.
fn migrate(c: &mut Connection) -> rusqlite::Result<()> {
    let version: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(too_new(version));
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = c.transaction()?;
    let has = |column: &str| {
        tx.prepare("SELECT 1 FROM pragma_table_info('events') WHERE name = ?1")?
            .exists([column])
    };
    let old_layout = has("body")?;
    if has("seq")? && !has("body_file")? {
        tx.execute_batch("ALTER TABLE events ADD COLUMN body_file INTEGER")?;
    }
    if has("seq")? && !has("pinned")? {
        tx.execute_batch("ALTER TABLE events ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0")?;
    }
    // Creates what is missing (all of it for a new journal, `bodies` for a version-1 one).
    tx.execute_batch(SCHEMA)?;
    if old_layout {
        tx.execute_batch(
            "INSERT INTO bodies (channel, seq, headers, body)
                 SELECT channel, seq, headers, body FROM events;
             ALTER TABLE events DROP COLUMN headers;
             ALTER TABLE events DROP COLUMN body;",
        )?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()
}

/// Where an event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not yet delivered.
    Pending,
    /// The handler answered 2xx.
    Delivered,
    /// Given up on (non-retryable answer, or `--max-attempts` reached).
    Failed,
    /// Journaled and acked but not delivered: filtered out by `listen --events/--bot`, or
    /// given up on with `meethook events skip`.
    Skipped,
}

impl State {
    /// The state as stored and shown (`pending`, `delivered`, `failed`, `skipped`).
    pub fn name(self) -> &'static str {
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

/// One outcome to record: an attempt (absent for a skipped event) and the final state, if any.
#[derive(Debug, Clone)]
pub struct Record {
    /// The event's seq.
    pub seq: u64,
    /// The attempt made, if one was.
    pub attempt: Option<Attempt>,
    /// The event's new state when it is settled.
    pub state: Option<State>,
}

/// A recording saved (or being saved) by `listen --save-recordings`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    /// `video` or `audio`.
    pub kind: String,
    /// Where it is (or will be) on disk.
    pub path: String,
    /// `downloading`, `saved` or `failed`.
    pub state: String,
    /// Bytes written.
    pub bytes: u64,
    /// Why it failed.
    pub error: Option<String>,
}

/// Errors from the journal. Each message holds its cause (no `source()` chain), so a
/// printed chain says it once.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// SQLite failed (disk full, permissions, corruption).
    #[error("journal {path}: {error}")]
    Sqlite {
        /// The journal file.
        path: PathBuf,
        /// What SQLite said.
        error: rusqlite::Error,
    },
    /// The journal directory or file could not be created.
    #[error("cannot create journal {path}: {error}{}", permission_hint(error))]
    Create {
        /// The directory or file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The journal directory or its body files could not be read or written.
    #[error("journal {path}: {error}{}", permission_hint(error))]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// A reader found no journal.
    #[error(
        "no journal at {}: run `meethook listen --data {}` first (or pass the --data it used)",
        .0.join(JOURNAL_FILE).display(),
        .0.display()
    )]
    Missing(PathBuf),
    /// The journal directory is a file.
    #[error(
        "--data {} is a file, not a directory: pass the journal's directory (where \
         `meethook listen --data DIR` keeps {JOURNAL_FILE})",
        .0.display()
    )]
    NotADirectory(PathBuf),
    /// A read-only open found an older layout it could not upgrade.
    #[error(
        "journal {path} has layout {version}, older than this build's {SCHEMA_VERSION}, and \
         upgrading it failed ({error}): run `meethook listen --data` on it once, as a user \
         who can write to it"
    )]
    Outdated {
        /// The journal file.
        path: PathBuf,
        /// Its layout.
        version: i64,
        /// Why the upgrade failed.
        error: Box<JournalError>,
    },
}

/// The fix for a permission error, appended to its message.
fn permission_hint(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        " (pass a --data directory you can write to)"
    } else {
        ""
    }
}

/// The journal's file name in its directory.
const JOURNAL_FILE: &str = "journal.sqlite";

/// `dir/journal.sqlite` when it exists; what is wrong with `dir` otherwise.
fn existing(dir: &Path) -> Result<PathBuf, JournalError> {
    let io = |error| JournalError::Io {
        path: dir.to_path_buf(),
        error,
    };
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => return Err(JournalError::NotADirectory(dir.to_path_buf())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(JournalError::Missing(dir.to_path_buf()))
        }
        Err(e) => return Err(io(e)),
    }
    let path = dir.join(JOURNAL_FILE);
    match std::fs::metadata(&path) {
        Ok(_) => Ok(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(JournalError::Missing(dir.to_path_buf()))
        }
        Err(e) => Err(io(e)),
    }
}

/// A read-only connection that creates, changes and locks nothing it can avoid.
fn read_only_connection(path: &Path) -> rusqlite::Result<Connection> {
    use rusqlite::OpenFlags;
    // No `-wal` file: no connection is open (the last one to close removes it), so the file
    // is read as immutable, with no lock and no `-shm`/`-wal` created (which a read-only
    // directory would refuse). A listener starting meanwhile only appends to its new WAL.
    // With one, a listener may be writing: read through its WAL, as SQLite readers do.
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let immutable = if Path::new(&wal).exists() {
        ""
    } else {
        "&immutable=1"
    };
    let uri = format!("file:{}?mode=ro{immutable}", uri_path(path));
    let c = Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    c.busy_timeout(Duration::from_secs(10))?;
    Ok(c)
}

/// `path` for a `file:` URI: bytes outside the unreserved set percent-encoded.
fn uri_path(path: &Path) -> String {
    #[cfg(unix)]
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()).to_vec();
    #[cfg(not(unix))]
    let bytes = path.to_string_lossy().replace('\\', "/").into_bytes();
    let mut out = String::with_capacity(bytes.len());
    for b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The journal of one `--data` directory (several channels may share it).
#[derive(Clone)]
pub struct Journal {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    bodies: BodyFiles,
    /// Whether the last insert failed (a full disk): no early hand-off until one succeeds.
    failing: Arc<AtomicBool>,
    checkpoints: Arc<Checkpoints>,
    read_only: bool,
}

/// Body bytes in one insert above which summaries are parsed beside the SQLite write.
const PARSE_APART: usize = 1 << 20;
/// Age past which a body file no event refers to is removed at open.
const ORPHAN_AGE: Duration = Duration::from_secs(600);

/// Checkpoints run on a thread of their own, with their own connection, so a commit never
/// waits for the copy into the database file and its fsync (SQLite's automatic way).
struct Checkpoints {
    path: PathBuf,
    /// The checkpoint thread's queue, started at the first checkpoint.
    wake: Mutex<Option<std::sync::mpsc::SyncSender<()>>>,
    running: Arc<AtomicBool>,
    clock: Arc<CheckpointClock>,
}

impl Checkpoints {
    fn new(path: PathBuf) -> Checkpoints {
        Checkpoints {
            path,
            wake: Mutex::new(None),
            running: Arc::default(),
            clock: Arc::default(),
        }
    }

    /// Called on the thread that just committed: starts a checkpoint when the WAL grew.
    fn after_commit(&self) {
        if self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        if !self.clock.due() {
            self.running.store(false, Ordering::Release);
            return;
        }
        let mut wake = self.wake.lock().unwrap_or_else(|e| e.into_inner());
        if wake.is_none() {
            *wake = self.spawn();
        }
        if wake.as_ref().is_none_or(|w| w.try_send(()).is_err()) {
            *wake = None;
            self.running.store(false, Ordering::Release);
            self.clock.retry();
        }
    }

    /// The checkpoint thread; it ends when the journal is dropped (its queue closes).
    fn spawn(&self) -> Option<std::sync::mpsc::SyncSender<()>> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let (path, running, clock) = (self.path.clone(), self.running.clone(), self.clock.clone());
        std::thread::Builder::new()
            .name("meethook-checkpoint".into())
            .spawn(move || {
                /// Lets the next commit ask again, even after a panic here.
                struct Done<'a>(&'a AtomicBool);
                impl Drop for Done<'_> {
                    fn drop(&mut self) {
                        self.0.store(false, Ordering::Release);
                    }
                }
                let mut conn: Option<Connection> = None;
                for () in rx {
                    let _done = Done(&running);
                    if let Err(e) = checkpoint(&mut conn, &path) {
                        conn = None;
                        clock.retry();
                        tracing::warn!(error = %e, "journal checkpoint failed; retrying later");
                    }
                }
            })
            .ok()?;
        Some(tx)
    }
}

/// One checkpoint on the checkpoint thread's own connection (opened on first use).
fn checkpoint(conn: &mut Option<Connection>, path: &Path) -> rusqlite::Result<()> {
    if conn.is_none() {
        let c = Connection::open(path)?;
        c.busy_timeout(Duration::from_secs(10))?;
        *conn = Some(c);
    }
    let c = conn.as_ref().expect("just opened");
    c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
}

impl Journal {
    /// Opens (creating if needed) `DIR/journal.sqlite`.
    pub fn open(dir: &Path) -> Result<Journal, JournalError> {
        if dir.exists() && !dir.is_dir() {
            return Err(JournalError::NotADirectory(dir.to_path_buf()));
        }
        let io_err = |error| JournalError::Create {
            path: dir.to_path_buf(),
            error,
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err)?;
            // Only a new file is opened here: closing a descriptor of a journal this process
            // has open would drop SQLite's locks on it, and another process could then
            // checkpoint and delete the WAL under this process's connections.
            let created = std::fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o600)
                .open(dir.join(JOURNAL_FILE));
            match created {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(error) => {
                    return Err(JournalError::Create {
                        path: dir.join(JOURNAL_FILE),
                        error,
                    })
                }
            }
        }
        #[cfg(not(unix))]
        std::fs::create_dir_all(dir).map_err(io_err)?;
        Journal::open_existing(dir)
    }

    /// Opens an existing `DIR/journal.sqlite` to read and write (upgrading its layout if
    /// older); creates no directory and no journal.
    pub fn open_existing(dir: &Path) -> Result<Journal, JournalError> {
        use rusqlite::OpenFlags;
        let path = existing(dir)?;
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|error| JournalError::Sqlite {
            path: path.clone(),
            error,
        })?;
        let bodies =
            BodyFiles::open(dir.join("journal-bodies")).map_err(|error| JournalError::Io {
                path: dir.join("journal-bodies"),
                error,
            })?;
        let j = Journal::with_connection(conn, path, bodies, false);
        j.with(|c| {
            c.busy_timeout(Duration::from_secs(10))?;
            // Stable plans: with STAT4 (bundled build) rebinding a range bound re-prepares.
            c.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
            c.pragma_update(None, "journal_mode", "WAL")?;
            // NORMAL: survives kill -9 (the WAL is in the OS cache); the relay keeps every
            // unacked event, so only a power cut can cost a visible duplicate.
            c.pragma_update(None, "synchronous", "NORMAL")?;
            c.pragma_update(None, "wal_autocheckpoint", 0)?;
            c.wal_hook(Some(wal::note_wal_pages));
            migrate(c)
        })?;
        let known = j.with(|c| {
            c.prepare("SELECT body_file FROM events WHERE body_file IS NOT NULL")?
                .query_map([], |r| r.get(0))?
                .collect()
        })?;
        // Several `listen`s may share the directory: spare files young enough to belong to
        // an insert still in flight.
        j.bodies
            .sweep(&known, ORPHAN_AGE)
            .map_err(|error| JournalError::Io {
                path: dir.join("journal-bodies"),
                error,
            })?;
        Ok(j)
    }

    /// Opens an existing `DIR/journal.sqlite` only to read it (`events list`, `show`,
    /// `export`): creates no file or directory and writes nothing, except once to upgrade an
    /// older layout when the journal lets it.
    pub fn open_read_only(dir: &Path) -> Result<Journal, JournalError> {
        let path = existing(dir)?;
        let sqlite = |error| JournalError::Sqlite {
            path: path.clone(),
            error,
        };
        let mut conn = read_only_connection(&path).map_err(sqlite)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sqlite)?;
        if version > SCHEMA_VERSION {
            return Err(sqlite(too_new(version)));
        }
        if version < SCHEMA_VERSION {
            drop(conn);
            if let Err(e) = Journal::open_existing(dir) {
                return Err(JournalError::Outdated {
                    path,
                    version,
                    error: Box::new(e),
                });
            }
            conn = read_only_connection(&path).map_err(sqlite)?;
        }
        let bodies = BodyFiles::existing(dir.join("journal-bodies"));
        Ok(Journal::with_connection(conn, path, bodies, true))
    }

    fn with_connection(
        conn: Connection,
        path: PathBuf,
        bodies: BodyFiles,
        read_only: bool,
    ) -> Journal {
        Journal {
            conn: Arc::new(Mutex::new(conn)),
            checkpoints: Arc::new(Checkpoints::new(path.clone())),
            path,
            bodies,
            failing: Arc::default(),
            read_only,
        }
    }

    /// Whether it was opened with [`Journal::open_read_only`].
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The journal file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, JournalError> {
        // A panic while holding the lock leaves SQLite consistent (an open transaction rolls
        // back when dropped): go on rather than fail every later call.
        let mut c = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut c).map_err(|error| JournalError::Sqlite {
            path: self.path.clone(),
            error,
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

    /// Journals events (already-journaled seqs are ignored) in one transaction; returns each
    /// event's summary, parsed once here (outside the lock) for the caller to reuse.
    pub fn insert(
        &self,
        channel: &str,
        events: &[Event],
        now_ms: i64,
    ) -> Result<Vec<Option<Summary>>, JournalError> {
        self.insert_then(channel, events, None, now_ms, || {})
    }

    /// [`Journal::insert`] with the events' summaries when the caller has them already,
    /// calling `locked` once it holds the journal: whatever is written after that (delivery
    /// outcomes) lands after these events.
    pub fn insert_then(
        &self,
        channel: &str,
        events: &[Event],
        summaries: Option<Vec<Option<Summary>>>,
        now_ms: i64,
        locked: impl FnOnce(),
    ) -> Result<Vec<Option<Summary>>, JournalError> {
        let parse =
            || -> Vec<Option<Summary>> { events.iter().map(|e| Summary::parse(&e.body)).collect() };
        let big = events.iter().map(|e| e.body.len()).sum::<usize>() >= PARSE_APART;
        let summaries = std::thread::scope(|scope| {
            // Big bodies are parsed on another thread while SQLite copies them; their two
            // parsed columns are filled in before the commit.
            let (early, parsed) = match summaries {
                Some(s) => (Some(s), None),
                None if big => (None, Some(scope.spawn(parse))),
                None => (Some(parse()), None),
            };
            self.with(|c| {
                locked();
                let tx = c.transaction()?;
                let rows = events.iter().enumerate().map(|(i, e)| {
                    let s = early.as_ref().and_then(|s| s[i].as_ref());
                    (channel, e, s)
                });
                insert_rows(&tx, &self.bodies, rows, now_ms, State::Pending)?;
                let summaries = match (early, parsed) {
                    (Some(summaries), _) => summaries,
                    (None, parsed) => {
                        // A parser panic costs the summaries, not the journal (its lock stays
                        // sound).
                        let summaries = parsed
                            .and_then(|p| p.join().ok())
                            .unwrap_or_else(|| vec![None; events.len()]);
                        let mut st = tx.prepare_cached(
                            "UPDATE events SET event_type = ?3, bot_id = ?4 WHERE channel = ?1 AND seq = ?2",
                        )?;
                        for (e, s) in events.iter().zip(&summaries) {
                            if let Some(s) = s {
                                st.execute(params![channel, sql_seq(e.seq), s.event, s.bot_id])?;
                            }
                        }
                        summaries
                    }
                };
                tx.commit()?;
                Ok(summaries)
            })
        });
        self.failing.store(summaries.is_err(), Ordering::Relaxed);
        let summaries = summaries?;
        self.after_commit();
        Ok(summaries)
    }

    /// Starts a checkpoint when one is due. Past [`wal::WAL_HIGH_PAGES`] it checkpoints
    /// here, holding the journal: under steady commits the checkpoint thread never catches
    /// up with the end of the WAL, so the WAL would never start over, only grow.
    fn after_commit(&self) {
        if wal::wal_pages() < wal::WAL_HIGH_PAGES {
            self.checkpoints.after_commit();
            return;
        }
        // RESTART: waits for a checkpoint the thread may be running (a passive one would
        // just give up) and for readers, so that the next commit starts the WAL over.
        let r = self.with(|c| c.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(())));
        if let Err(e) = r {
            tracing::warn!(error = %e, "journal checkpoint failed; retrying later");
        }
    }

    /// Whether the last insert failed (until one succeeds).
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// The lowest pending events of `channel` (with their attempt counts), in seq order.
    pub fn pending(&self, channel: &str, limit: usize) -> Result<Vec<(Event, u32)>, JournalError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT seq, received_at, method, path, headers, COALESCE(body_file, body), attempts
                 FROM events JOIN bodies USING (channel, seq)
                 WHERE channel = ?1 AND state = 'pending' ORDER BY seq LIMIT ?2",
            )?;
            let rows = st.query_map(params![channel, limit as i64], |r| {
                Ok((row_event(r, &self.bodies)?, r.get::<_, i64>(6)? as u32))
            })?;
            rows.collect()
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
        self.record_many(
            channel,
            &[Record {
                seq,
                attempt: Some(a.clone()),
                state: new_state,
            }],
        )
    }

    /// Records several outcomes in one transaction (the delivery loop batches them).
    pub fn record_many(&self, channel: &str, records: &[Record]) -> Result<(), JournalError> {
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO attempts (channel, seq, attempt, started_at, latency_us, status, error, response_head, replay)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?;
                let mut update = tx.prepare_cached(
                    "UPDATE events SET attempts = COALESCE(?3, attempts), last_status = COALESCE(?4, last_status),
                       state = COALESCE(?5, state) WHERE channel = ?1 AND seq = ?2",
                )?;
                for r in records {
                    let replay = r.attempt.as_ref().is_some_and(|a| a.replay);
                    if let Some(a) = &r.attempt {
                        insert.execute(params![
                            channel,
                            r.seq as i64,
                            a.attempt,
                            a.started_at_ms,
                            a.latency.as_micros() as i64,
                            a.status,
                            a.error,
                            &a.response_head[..],
                            a.replay,
                        ])?;
                    }
                    if !replay {
                        update.execute(params![
                            channel,
                            r.seq as i64,
                            r.attempt.as_ref().map(|a| a.attempt),
                            r.attempt.as_ref().and_then(|a| a.status),
                            r.state.map(State::name),
                        ])?;
                    }
                }
            }
            tx.commit()
        })?;
        self.after_commit();
        Ok(())
    }

    /// Applies outcomes recovered from the outcome log, skipping attempts already recorded
    /// (the log may hold records the journal got just before the daemon stopped).
    pub(crate) fn recover(&self, channel: &str, records: &[Record]) -> Result<(), JournalError> {
        let missing: Vec<Record> = self.with(|c| {
            let mut seen = c.prepare_cached(
                "SELECT 1 FROM attempts WHERE channel = ?1 AND seq = ?2 AND attempt = ?3 AND replay = 0",
            )?;
            let mut out = Vec::new();
            for r in records {
                let known = match &r.attempt {
                    Some(a) => seen.exists(params![channel, sql_seq(r.seq), a.attempt])?,
                    None => false,
                };
                let mut r = r.clone();
                if known {
                    r.attempt = None;
                }
                out.push(r);
            }
            Ok(out)
        })?;
        self.record_many(channel, &missing)
    }

    /// Notes that a recording download started (or restarted) into `path`.
    pub fn recording_started(
        &self,
        channel: &str,
        seq: u64,
        kind: &str,
        path: &str,
        now_ms: i64,
    ) -> Result<(), JournalError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO recordings (channel, seq, kind, path, state, started_at) VALUES (?1, ?2, ?3, ?4, 'downloading', ?5)
                 ON CONFLICT (channel, seq, kind) DO UPDATE SET path = excluded.path, state = 'downloading',
                   bytes = 0, error = NULL, started_at = excluded.started_at, finished_at = NULL",
                params![channel, seq as i64, kind, path, now_ms],
            )
            .map(|_| ())
        })
    }

    /// Notes how a recording download ended (`error` = `None` when saved).
    pub fn recording_finished(
        &self,
        channel: &str,
        seq: u64,
        kind: &str,
        bytes: u64,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<(), JournalError> {
        self.with(|c| {
            c.execute(
                "UPDATE recordings SET state = ?4, bytes = ?5, error = ?6, finished_at = ?7
                 WHERE channel = ?1 AND seq = ?2 AND kind = ?3",
                params![
                    channel,
                    seq as i64,
                    kind,
                    if error.is_none() { "saved" } else { "failed" },
                    bytes as i64,
                    error,
                    now_ms
                ],
            )
            .map(|_| ())
        })
    }

    /// Recordings of one event.
    pub fn recordings(&self, channel: &str, seq: u64) -> Result<Vec<Recording>, JournalError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT kind, path, state, bytes, error FROM recordings WHERE channel = ?1 AND seq = ?2 ORDER BY kind",
            )?;
            let rows = st.query_map(params![channel, seq as i64], |r| {
                Ok(Recording {
                    kind: r.get(0)?,
                    path: r.get(1)?,
                    state: r.get(2)?,
                    bytes: r.get::<_, i64>(3)? as u64,
                    error: r.get(4)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Events whose recording download was cut short (the daemon stopped), for a restart.
    pub fn interrupted_recordings(&self, channel: &str) -> Result<Vec<u64>, JournalError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT DISTINCT seq FROM recordings WHERE channel = ?1 AND state = 'downloading' ORDER BY seq",
            )?;
            let rows = st.query_map(params![channel], |r| Ok(r.get::<_, i64>(0)? as u64))?;
            rows.collect()
        })
    }
}

/// The event in a row's first six columns; the sixth is the body, or its file's number.
fn row_event(r: &rusqlite::Row<'_>, bodies: &BodyFiles) -> rusqlite::Result<Event> {
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
        body: match r.get_ref(5)? {
            ValueRef::Integer(n) => bodies.read(n).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(5, Type::Integer, Box::new(e))
            })?,
            _ => Bytes::from(r.get::<_, Vec<u8>>(5)?),
        },
    })
}

// ---- Queries for `meethook events` and `meethook replay` ----

impl State {
    /// The state stored as `s`, if it is one.
    pub fn parse(s: &str) -> Option<State> {
        [
            State::Pending,
            State::Delivered,
            State::Failed,
            State::Skipped,
        ]
        .into_iter()
        .find(|st| st.name() == s)
    }
}

/// A journaled event with its delivery record, as the query methods return it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The channel it came on.
    pub channel: String,
    /// The event as received.
    pub event: Event,
    /// When this journal stored it (or imported it), ms since the epoch.
    pub journaled_at_ms: i64,
    /// Where its delivery by `listen` stands (replays never change it).
    pub state: State,
    /// Delivery attempts made by `listen`.
    pub attempts: u32,
    /// The handler's last status to `listen`, when it answered.
    pub last_status: Option<u16>,
    /// The Meeting BaaS `event`, when the body is one.
    pub event_type: Option<String>,
    /// The Meeting BaaS `data.bot_id`, when present.
    pub bot_id: Option<String>,
    /// Kept by `meethook events pin`: never pruned.
    pub pinned: bool,
    /// The handler's status to the latest replay it answered 2xx, if any.
    pub replayed: Option<u16>,
}

/// Which events a query selects: every field that is set must match.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Only this channel; all channels when `None`.
    pub channel: Option<String>,
    /// Only these seqs (inclusive ranges); any seq when empty.
    pub seqs: Vec<std::ops::RangeInclusive<u64>>,
    /// Only events whose bot id starts with this (a full id or the short one `events list` shows).
    pub bot_id: Option<String>,
    /// Only this Meeting BaaS event type (`complete`, `bot.status_change`).
    pub event_type: Option<String>,
    /// Only events in this state.
    pub state: Option<State>,
    /// Only events the relay received at or after this time, ms since the epoch.
    pub since_ms: Option<i64>,
    /// Only the last N matching events (still returned oldest first).
    pub limit: Option<usize>,
}

impl Query {
    /// ` WHERE …` and its parameters.
    fn filter(&self) -> (String, Vec<rusqlite::types::Value>) {
        use rusqlite::types::Value;
        let mut conds: Vec<String> = Vec::new();
        let mut params: Vec<Value> = Vec::new();
        let mut param = |conds: &mut Vec<String>, sql: &str, v: Value| {
            params.push(v);
            conds.push(sql.replace('?', &format!("?{}", params.len())));
        };
        if let Some(c) = &self.channel {
            param(&mut conds, "channel = ?", Value::Text(c.clone()));
        }
        if !self.seqs.is_empty() {
            // Integers only, so safe to inline, with no limit on the number of parameters.
            let ranges: Vec<String> = self
                .seqs
                .iter()
                .map(|r| match (sql_seq(*r.start()), sql_seq(*r.end())) {
                    (a, b) if a == b => format!("seq = {a}"),
                    (a, b) => format!("seq BETWEEN {a} AND {b}"),
                })
                .collect();
            conds.push(format!("({})", ranges.join(" OR ")));
        }
        if let Some(b) = &self.bot_id {
            param(
                &mut conds,
                "substr(bot_id, 1, length(?)) = ?",
                Value::Text(b.clone()),
            );
        }
        if let Some(e) = &self.event_type {
            param(&mut conds, "event_type = ?", Value::Text(e.clone()));
        }
        if let Some(s) = self.state {
            param(&mut conds, "state = ?", Value::Text(s.name().into()));
        }
        if let Some(t) = self.since_ms {
            param(&mut conds, "received_at >= ?", Value::Integer(t));
        }
        let sql = if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        };
        (sql, params)
    }

    /// Result order: seq within one channel, arrival across channels.
    fn order(&self, desc: bool) -> String {
        let d = if desc { " DESC" } else { "" };
        if self.channel.is_some() {
            format!(" ORDER BY seq{d}")
        } else {
            format!(" ORDER BY received_at{d}, channel{d}, seq{d}")
        }
    }

    /// `SELECT columns FROM events WHERE … ORDER BY …`, keeping the last `limit` rows;
    /// `bodies` joins the headers and body in.
    fn select(&self, columns: &str, bodies: bool) -> String {
        let (filter, _) = self.filter();
        let from = if bodies {
            "events JOIN bodies USING (channel, seq)"
        } else {
            "events"
        };
        match self.limit {
            Some(n) => format!(
                "SELECT * FROM (SELECT {columns} FROM {from}{filter}{} LIMIT {n}){}",
                self.order(true),
                self.order(false)
            ),
            None => format!("SELECT {columns} FROM {from}{filter}{}", self.order(false)),
        }
    }
}

fn sql_seq(seq: u64) -> i64 {
    seq.min(i64::MAX as u64) as i64
}

/// The columns [`row_stored`] reads, in order (the first six are [`row_event`]'s).
const STORED_COLUMNS: &str = "seq, received_at, method, path, headers, \
     COALESCE(body_file, body), channel, \
     journaled_at, state, attempts, last_status, event_type, bot_id, pinned, \
     (SELECT a.status FROM attempts a WHERE a.channel = events.channel AND a.seq = events.seq \
      AND a.replay = 1 AND a.status BETWEEN 200 AND 299 ORDER BY a.rowid DESC LIMIT 1)";

fn row_stored(r: &rusqlite::Row<'_>, bodies: &BodyFiles) -> rusqlite::Result<Stored> {
    let state: String = r.get(8)?;
    Ok(Stored {
        event: row_event(r, bodies)?,
        channel: r.get(6)?,
        journaled_at_ms: r.get(7)?,
        state: State::parse(&state).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                8,
                rusqlite::types::Type::Text,
                format!("unknown state {state:?}").into(),
            )
        })?,
        attempts: r.get::<_, i64>(9)? as u32,
        last_status: r.get(10)?,
        event_type: r.get(11)?,
        bot_id: r.get(12)?,
        pinned: r.get(13)?,
        replayed: r.get(14)?,
    })
}

impl Journal {
    /// Each channel in the journal with its number of events, by channel id.
    pub fn channels(&self) -> Result<Vec<(String, u64)>, JournalError> {
        self.with(|c| {
            c.prepare("SELECT channel, COUNT(*) FROM events GROUP BY channel ORDER BY channel")?
                .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
                .collect()
        })
    }

    /// How many events match `q`, ignoring its `limit`.
    pub fn count(&self, q: &Query) -> Result<u64, JournalError> {
        let (filter, params) = q.filter();
        self.with(|c| {
            c.query_row(
                &format!("SELECT COUNT(*) FROM events{filter}"),
                rusqlite::params_from_iter(params),
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
        })
    }

    /// `(channel, seq)` of the events matching `q`, in query order, without their bodies.
    pub fn keys(&self, q: &Query) -> Result<Vec<(String, u64)>, JournalError> {
        let sql = q.select("channel, seq, received_at", false);
        let (_, params) = q.filter();
        self.with(|c| {
            c.prepare(&sql)?
                .query_map(rusqlite::params_from_iter(params), |r| {
                    Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
                })?
                .collect()
        })
    }

    /// Calls `f` with each event matching `q`, in query order, until it returns `false`.
    /// Rows are read one at a time, so a whole journal can be streamed (`events export`).
    pub fn each(&self, q: &Query, mut f: impl FnMut(Stored) -> bool) -> Result<(), JournalError> {
        let sql = q.select(STORED_COLUMNS, true);
        let (_, params) = q.filter();
        self.with(|c| {
            let mut st = c.prepare(&sql)?;
            let mut rows = st.query(rusqlite::params_from_iter(params))?;
            while let Some(r) = rows.next()? {
                if !f(row_stored(r, &self.bodies)?) {
                    break;
                }
            }
            Ok(())
        })
    }

    /// The events matching `q`, in query order.
    pub fn query(&self, q: &Query) -> Result<Vec<Stored>, JournalError> {
        let mut out = Vec::new();
        self.each(q, |s| {
            out.push(s);
            true
        })?;
        Ok(out)
    }

    /// One event, if journaled.
    pub fn get(&self, channel: &str, seq: u64) -> Result<Option<Stored>, JournalError> {
        self.with(|c| {
            c.prepare_cached(&format!(
                "SELECT {STORED_COLUMNS} FROM events JOIN bodies USING (channel, seq)
                 WHERE channel = ?1 AND seq = ?2"
            ))?
            .query_row(params![channel, sql_seq(seq)], |r| {
                row_stored(r, &self.bodies)
            })
            .optional()
        })
    }

    /// Every attempt recorded for one event, `listen`'s and replays', in the order made.
    pub fn attempts(&self, channel: &str, seq: u64) -> Result<Vec<Attempt>, JournalError> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT attempt, started_at, latency_us, status, error, response_head, replay
                 FROM attempts WHERE channel = ?1 AND seq = ?2 ORDER BY rowid",
            )?
            .query_map(params![channel, sql_seq(seq)], |r| {
                Ok(Attempt {
                    attempt: r.get::<_, i64>(0)? as u32,
                    started_at_ms: r.get(1)?,
                    latency: Duration::from_micros(r.get::<_, i64>(2)?.max(0) as u64),
                    status: r.get(3)?,
                    error: r.get(4)?,
                    response_head: Bytes::from(r.get::<_, Option<Vec<u8>>>(5)?.unwrap_or_default()),
                    replay: r.get(6)?,
                })
            })?
            .collect()
        })
    }

    /// Adds `(channel, event)` pairs as history, in one transaction: state `delivered` (so
    /// `listen` never forwards them), no attempts. A `(channel, seq)` already journaled is
    /// left as it is. Returns `(imported, skipped)`.
    pub fn import(
        &self,
        events: &[(String, Event)],
        now_ms: i64,
    ) -> Result<(usize, usize), JournalError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let summaries: Vec<_> = events
                .iter()
                .map(|(_, e)| Summary::parse(&e.body))
                .collect();
            let rows = events
                .iter()
                .zip(&summaries)
                .map(|((ch, e), s)| (ch.as_str(), e, s.as_ref()));
            let imported = insert_rows(&tx, &self.bodies, rows, now_ms, State::Delivered)?;
            tx.commit()?;
            Ok((imported, events.len() - imported))
        })
    }
}

/// What a prune removed (or, dry, would remove).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Events.
    pub events: u64,
    /// Their headers and bodies (body files included), in bytes.
    pub bytes: u64,
}

/// Most events one prune transaction removes: delivery gets the journal between batches.
const PRUNE_BATCH: usize = 256;

/// The next batch of prunable events after `(?1, ?2)`: final, unpinned, received before ?3,
/// below their channel's first pending event and below its newest (which the cursors need).
const PRUNABLE: &str = "
    SELECT e.channel, e.seq, e.body_file, COALESCE(length(b.headers) + length(b.body), 0)
    FROM events e LEFT JOIN bodies b ON b.channel = e.channel AND b.seq = e.seq
    WHERE (e.channel, e.seq) > (?1, ?2) AND (?4 IS NULL OR e.channel = ?4)
      AND e.state != 'pending' AND e.pinned = 0 AND e.received_at < ?3
      AND e.seq < (SELECT MAX(m.seq) FROM events m WHERE m.channel = e.channel)
      AND e.seq < COALESCE((SELECT MIN(p.seq) FROM events p
                            WHERE p.channel = e.channel AND p.state = 'pending'), 9223372036854775807)
    ORDER BY e.channel, e.seq LIMIT ?5";

impl Journal {
    /// Deletes delivered, failed and skipped events received before `cutoff_ms` (of
    /// `channel`, or all), with their attempts, recordings and body files, in small
    /// transactions while `go_on()` says so. Never touched: pending events and any after a
    /// channel's first pending one, each channel's newest event, pinned events. With
    /// `dry_run`, only counts.
    pub fn prune(
        &self,
        channel: Option<&str>,
        cutoff_ms: i64,
        dry_run: bool,
        mut go_on: impl FnMut() -> bool,
    ) -> Result<Pruned, JournalError> {
        let mut total = Pruned::default();
        let mut after = (String::new(), -1i64);
        loop {
            let rows: Vec<(String, i64, Option<i64>, i64)> = self.with(|c| {
                let tx = c.transaction()?;
                let rows: Vec<(String, i64, Option<i64>, i64)> = tx
                    .prepare_cached(PRUNABLE)?
                    .query_map(
                        params![after.0, after.1, cutoff_ms, channel, PRUNE_BATCH as i64],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                    )?
                    .collect::<rusqlite::Result<_>>()?;
                if !dry_run && !rows.is_empty() {
                    for table in ["events", "bodies", "attempts", "recordings"] {
                        let mut st = tx.prepare_cached(&format!(
                            "DELETE FROM {table} WHERE channel = ?1 AND seq = ?2"
                        ))?;
                        for (ch, seq, _, _) in &rows {
                            st.execute(params![ch, seq])?;
                        }
                    }
                    tx.commit()?;
                }
                Ok(rows)
            })?;
            let files: Vec<i64> = rows.iter().filter_map(|r| r.2).collect();
            total.events += rows.len() as u64;
            total.bytes += rows.iter().map(|r| r.3.max(0) as u64).sum::<u64>()
                + files
                    .iter()
                    .map(|&n| self.bodies.size(n).unwrap_or(0))
                    .sum::<u64>();
            if !dry_run {
                // After the commit: a crash in between leaves files the sweep at open removes.
                self.bodies.remove(&files);
            }
            match rows.last() {
                Some((ch, seq, _, _)) if rows.len() == PRUNE_BATCH && go_on() => {
                    after = (ch.clone(), *seq);
                    // Lets a waiting delivery write take the journal before the next batch.
                    std::thread::sleep(Duration::from_millis(2));
                }
                _ => return Ok(total),
            }
        }
    }

    /// Pins (or unpins) one event, so that no prune removes it; `false` if not journaled.
    pub fn set_pinned(&self, channel: &str, seq: u64, pinned: bool) -> Result<bool, JournalError> {
        self.with(|c| {
            c.execute(
                "UPDATE events SET pinned = ?3 WHERE channel = ?1 AND seq = ?2",
                params![channel, sql_seq(seq), pinned],
            )
            .map(|n| n > 0)
        })
    }

    /// Remembers the handler URL `listen` delivers `channel` to (`replay`'s default `--to`).
    pub fn set_forward_to(&self, channel: &str, url: &str) -> Result<(), JournalError> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                params![format!("forward_to:{channel}"), url],
            )
            .map(|_| ())
        })
    }

    /// The handler URL `listen` last delivered `channel` to, when one was recorded.
    pub fn forward_to(&self, channel: &str) -> Result<Option<String>, JournalError> {
        self.with(|c| {
            c.query_row(
                "SELECT value FROM meta WHERE key = ?1",
                params![format!("forward_to:{channel}")],
                |r| r.get(0),
            )
            .optional()
        })
    }
}

/// Inserts events in `state`, ignoring `(channel, seq)` pairs already there; returns how many
/// were new.
fn insert_rows<'a>(
    tx: &rusqlite::Transaction<'_>,
    bodies: &BodyFiles,
    events: impl Iterator<Item = (&'a str, &'a Event, Option<&'a Summary>)>,
    now_ms: i64,
    state: State,
) -> rusqlite::Result<usize> {
    let mut st = tx.prepare_cached(
        "INSERT OR IGNORE INTO events
         (channel, seq, received_at, journaled_at, method, path, event_type, bot_id, state, body_file)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    let mut body_st = tx.prepare_cached(
        "INSERT OR IGNORE INTO bodies (channel, seq, headers, body) VALUES (?1, ?2, ?3, ?4)",
    )?;
    let mut added = 0;
    for (channel, ev, summary) in events {
        // fsync'd, unlike the journal's commits: a checkpoint makes the row durable, and a
        // row must never outlive its body. Big events are delivered while this runs.
        let file = if ev.body.len() >= BODY_FILE_MIN {
            let n = bodies
                .write(&ev.body, true)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            Some(n)
        } else {
            None
        };
        let new = st.execute(params![
            channel,
            sql_seq(ev.seq),
            ev.received_at_ms,
            now_ms,
            ev.method,
            ev.path,
            summary.map(|s| s.event.as_str()),
            summary.and_then(|s| s.bot_id.as_deref()),
            state.name(),
            file,
        ])?;
        if new == 0 {
            bodies.remove(file.as_slice());
            continue;
        }
        let mut h = BytesMut::with_capacity(headers_len(&ev.headers));
        encode_headers(&ev.headers, &mut h);
        let inline = if file.is_some() {
            &[][..]
        } else {
            &ev.body[..]
        };
        body_st.execute(params![channel, sql_seq(ev.seq), &h[..], inline])?;
        added += new;
    }
    Ok(added)
}

#[cfg(test)]
mod query_tests {
    use super::*;
    use meethook_proto::Header;

    fn mb(seq: u64, bot: &str, event: &str, at: i64) -> Event {
        let body = format!(
            r#"{{"event":"{event}","data":{{"bot_id":"{bot}","status":{{"code":"joining_call"}}}}}}"#
        );
        Event {
            seq,
            received_at_ms: at,
            method: "POST".into(),
            path: String::new(),
            headers: vec![Header::new("x", format!("{seq}"))],
            body: Bytes::from(body),
        }
    }

    fn attempt(n: u32, status: u16, replay: bool) -> Attempt {
        Attempt {
            attempt: n,
            started_at_ms: 5,
            latency: Duration::from_micros(1500),
            status: Some(status),
            error: None,
            response_head: Bytes::from_static(b"nope"),
            replay,
        }
    }

    fn seqs(v: &[Stored]) -> Vec<u64> {
        v.iter().map(|s| s.event.seq).collect()
    }

    #[test]
    fn queries_filter_order_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let evs: Vec<Event> = (1..=6)
            .map(|i| {
                let bot = if i % 2 == 0 { "bbbb-2" } else { "aaaa-1" };
                let event = if i == 6 {
                    "complete"
                } else {
                    "bot.status_change"
                };
                mb(i, bot, event, 1000 * i as i64)
            })
            .collect();
        j.insert("c1", &evs, 7).unwrap();
        j.insert("c2", &[mb(1, "aaaa-1", "complete", 3500)], 7)
            .unwrap();
        j.record("c1", 2, &attempt(1, 400, false), Some(State::Failed))
            .unwrap();
        j.record("c1", 2, &attempt(1, 200, true), None).unwrap();

        assert_eq!(
            j.channels().unwrap(),
            vec![("c1".to_string(), 6), ("c2".to_string(), 1)]
        );
        let c1 = |q: Query| Query {
            channel: Some("c1".into()),
            ..q
        };
        let all = j.query(&c1(Query::default())).unwrap();
        assert_eq!(seqs(&all), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(all[0].event, evs[0]);
        assert_eq!(all[0].state, State::Pending);
        assert_eq!(all[0].bot_id.as_deref(), Some("aaaa-1"));
        assert_eq!(all[5].event_type.as_deref(), Some("complete"));

        let bot = |b: &str| {
            c1(Query {
                bot_id: Some(b.into()),
                ..Query::default()
            })
        };
        assert_eq!(seqs(&j.query(&bot("bbbb")).unwrap()), vec![2, 4, 6]);
        assert_eq!(seqs(&j.query(&bot("aaaa-1")).unwrap()), vec![1, 3, 5]);
        assert!(j.query(&bot("aaaa-1x")).unwrap().is_empty());
        assert!(j.query(&bot("%")).unwrap().is_empty(), "no LIKE wildcards");

        let failed = j
            .query(&c1(Query {
                state: Some(State::Failed),
                ..Query::default()
            }))
            .unwrap();
        assert_eq!(seqs(&failed), vec![2]);
        assert_eq!(failed[0].last_status, Some(400));
        assert_eq!(
            failed[0].attempts, 1,
            "the replay attempt left the row alone"
        );
        assert_eq!(failed[0].replayed, Some(200), "but shows as replayed");
        assert_eq!(all[0].replayed, None);

        let q = c1(Query {
            seqs: vec![1..=1, 4..=5, 9..=20],
            ..Query::default()
        });
        assert_eq!(seqs(&j.query(&q).unwrap()), vec![1, 4, 5]);
        let q = c1(Query {
            since_ms: Some(3000),
            limit: Some(2),
            ..Query::default()
        });
        assert_eq!(
            seqs(&j.query(&q).unwrap()),
            vec![5, 6],
            "the last two, oldest first"
        );
        assert_eq!(j.count(&q).unwrap(), 4, "count ignores the limit");

        // Across channels: by arrival time.
        let keys = j
            .keys(&Query {
                event_type: Some("complete".into()),
                ..Query::default()
            })
            .unwrap();
        assert_eq!(keys, vec![("c2".into(), 1), ("c1".into(), 6)]);

        let mut n = 0;
        j.each(&Query::default(), |_| {
            n += 1;
            n < 3
        })
        .unwrap();
        assert_eq!(n, 3, "each stops when told");

        let a = j.attempts("c1", 2).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!((a[0].status, a[0].replay), (Some(400), false));
        assert_eq!((a[1].status, a[1].replay), (Some(200), true));
        assert_eq!(a[1].latency, Duration::from_micros(1500));
        assert_eq!(&a[1].response_head[..], b"nope");
        assert!(j.get("c1", 7).unwrap().is_none());
        assert_eq!(j.get("c2", 1).unwrap().unwrap().event.received_at_ms, 3500);
    }

    #[test]
    fn import_keeps_existing_events_and_marks_history_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        j.insert("c", &[mb(1, "b", "complete", 1)], 0).unwrap();
        let batch: Vec<(String, Event)> = (1..=3)
            .map(|i| ("c".to_string(), mb(i, "z", "failed", i as i64)))
            .collect();
        assert_eq!(j.import(&batch, 9).unwrap(), (2, 1));
        assert_eq!(j.import(&batch, 9).unwrap(), (0, 3));
        let got = j.get("c", 1).unwrap().unwrap();
        assert_eq!(got.bot_id.as_deref(), Some("b"), "not overwritten");
        assert_eq!(got.state, State::Pending);
        let imported = j.get("c", 3).unwrap().unwrap();
        assert_eq!(
            (imported.state, imported.journaled_at_ms),
            (State::Delivered, 9)
        );
        assert_eq!(imported.event, batch[2].1);
        assert_eq!(State::parse("skipped"), Some(State::Skipped));
        assert_eq!(State::parse("nope"), None);
    }
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
    fn the_wal_stays_bounded_under_steady_inserts() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        // About 30,000 WAL pages written with no pause for a checkpoint to catch up in.
        let body = Bytes::from(vec![b'x'; 3000]);
        for first in (1..=15_000u64).step_by(10) {
            let evs: Vec<Event> = (first..first + 10)
                .map(|seq| Event {
                    body: body.clone(),
                    ..ev(seq)
                })
                .collect();
            j.insert("c", &evs, 0).unwrap();
        }
        let wal = std::fs::metadata(dir.path().join("journal.sqlite-wal")).unwrap();
        assert!(
            wal.len() < 40 << 20,
            "WAL grew to {} MiB: checkpoints never let it start over",
            wal.len() >> 20
        );
        assert_eq!(j.cursors("c").unwrap(), (15_000, 0));
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
        let pending = j.pending("c", 10).unwrap();
        assert_eq!(
            pending.iter().map(|p| p.0.seq).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!((pending[0].0.clone(), pending[0].1), (ev(1), 0));
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
        assert_eq!(j.pending("c", 1).unwrap()[0].0, ev(3));
        assert_eq!(j.cursors("other").unwrap(), (0, 0));
    }

    #[test]
    fn a_version_1_journal_is_migrated_with_its_bodies() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = Connection::open(dir.path().join("journal.sqlite")).unwrap();
            // The layout before bodies moved to their own table.
            c.execute_batch(
                "CREATE TABLE events (
                     channel TEXT NOT NULL, seq INTEGER NOT NULL, received_at INTEGER NOT NULL,
                     journaled_at INTEGER NOT NULL, method TEXT NOT NULL, path TEXT NOT NULL,
                     headers BLOB NOT NULL, body BLOB NOT NULL,
                     state TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
                     last_status INTEGER, event_type TEXT, bot_id TEXT,
                     PRIMARY KEY (channel, seq));
                 CREATE INDEX events_pending ON events (channel, seq) WHERE state = 'pending';",
            )
            .unwrap();
            let e = ev(1);
            let mut h = BytesMut::new();
            encode_headers(&e.headers, &mut h);
            c.execute(
                "INSERT INTO events (channel, seq, received_at, journaled_at, method, path, headers, body)
                 VALUES ('c', 1, ?1, 0, 'POST', ?2, ?3, ?4)",
                params![e.received_at_ms, e.path, &h[..], &e.body[..]],
            )
            .unwrap();
        }
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.pending("c", 10).unwrap()[0].0, ev(1));
        assert_eq!(j.get("c", 1).unwrap().unwrap().event, ev(1));
        j.insert("c", &[ev(2)], 0).unwrap();
        assert_eq!(j.cursors("c").unwrap(), (2, 0));
        drop(j);
        // Opening again is a no-op.
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.get("c", 2).unwrap().unwrap().event, ev(2));
    }

    #[test]
    fn big_bodies_get_their_summary_columns_too() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let transcript = "word ".repeat(300_000);
        let body = format!(
            r#"{{"event":"complete","data":{{"bot_id":"bot_big","transcript":"{transcript}"}}}}"#
        );
        let mut big = ev(1);
        big.body = Bytes::from(body);
        assert!(big.body.len() > PARSE_APART);
        let summaries = j.insert("c", &[big.clone(), ev(2)], 0).unwrap();
        assert_eq!(summaries[0].as_ref().unwrap().event, "complete");
        assert!(summaries[1].is_none());
        let stored = j.get("c", 1).unwrap().unwrap();
        assert_eq!(stored.event, big);
        assert_eq!(stored.event_type.as_deref(), Some("complete"));
        assert_eq!(stored.bot_id.as_deref(), Some("bot_big"));
        assert_eq!(j.get("c", 2).unwrap().unwrap().event_type, None);
    }

    #[test]
    fn big_bodies_are_files_read_back_byte_identical() {
        let dir = tempfile::tempdir().unwrap();
        let files = || {
            std::fs::read_dir(dir.path().join("journal-bodies"))
                .unwrap()
                .count()
        };
        let mut big = ev(1);
        big.body = Bytes::from(
            (0..BODY_FILE_MIN + 5)
                .map(|i| (i % 241) as u8)
                .collect::<Vec<_>>(),
        );
        {
            let j = Journal::open(dir.path()).unwrap();
            j.insert("c", &[big.clone(), ev(2)], 0).unwrap();
            assert_eq!(files(), 1, "only the big body is a file");
            // Journaled again (a reconnect's overlap): no second file.
            j.insert("c", &[big.clone()], 0).unwrap();
            assert_eq!(files(), 1);
        }
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(files(), 1, "a referenced file survives the sweep at open");
        let pending: Vec<Event> = j
            .pending("c", 10)
            .unwrap()
            .into_iter()
            .map(|(e, _)| e)
            .collect();
        assert_eq!(pending, vec![big.clone(), ev(2)]);
        assert_eq!(j.get("c", 1).unwrap().unwrap().event, big);
        let all = j.query(&Query::default()).unwrap();
        assert_eq!(all[0].event.body, big.body);
        // Imported (`events import`) big bodies become files too.
        let mut other = big.clone();
        other.seq = 7;
        j.import(&[("d".to_string(), other.clone())], 0).unwrap();
        assert_eq!(files(), 2);
        assert_eq!(j.get("d", 7).unwrap().unwrap().event, other);
    }

    fn files_in(dir: &Path) -> Vec<(String, u64, std::time::SystemTime)> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let m = e.metadata().unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    m.len(),
                    m.modified().unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn prune_keeps_pending_newest_pinned_and_recent_events() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let mut evs: Vec<Event> = (1..=8).map(ev).collect();
        evs[1].body = Bytes::from(vec![b'x'; BODY_FILE_MIN]);
        j.insert("c", &evs, 0).unwrap();
        for seq in 1..=5 {
            j.record("c", seq, &attempt(1, 200), Some(State::Delivered))
                .unwrap();
        }
        // 6 pending: 7 (settled after it) and 8 stay whatever their state.
        j.record("c", 7, &attempt(1, 400), Some(State::Failed))
            .unwrap();
        j.recording_started("c", 3, "video", "/x.mp4", 0).unwrap();
        assert!(j.set_pinned("c", 4, true).unwrap());
        assert!(!j.set_pinned("c", 99, true).unwrap());
        // Another channel: only its newest is kept.
        j.insert("d", &[ev(1), ev(2)], 0).unwrap();
        for seq in 1..=2 {
            j.record("d", seq, &attempt(1, 200), Some(State::Delivered))
                .unwrap();
        }
        let seqs = |ch: &str| -> Vec<u64> {
            j.keys(&Query {
                channel: Some(ch.into()),
                ..Query::default()
            })
            .unwrap()
            .into_iter()
            .map(|(_, s)| s)
            .collect()
        };
        let body_files = || {
            std::fs::read_dir(dir.path().join("journal-bodies"))
                .unwrap()
                .count()
        };

        // Nothing is older than the cutoff.
        assert_eq!(j.prune(None, 1, false, || true).unwrap(), Pruned::default());
        let dry = j.prune(Some("c"), 2, true, || true).unwrap();
        assert_eq!(dry.events, 4, "1, 2, 3, 5");
        assert!(dry.bytes > BODY_FILE_MIN as u64, "{dry:?}");
        assert_eq!(seqs("c").len(), 8, "a dry run deletes nothing");
        assert_eq!(j.prune(Some("c"), 2, false, || true).unwrap(), dry);
        assert_eq!(seqs("c"), vec![4, 6, 7, 8]);
        assert_eq!(body_files(), 0, "the big body's file went with it");
        assert!(j.attempts("c", 1).unwrap().is_empty());
        assert!(j.recordings("c", 3).unwrap().is_empty());
        assert!(j.get("c", 4).unwrap().unwrap().pinned);
        assert_eq!(j.cursors("c").unwrap(), (8, 5), "cursors unchanged");
        assert_eq!(seqs("d"), vec![1, 2]);
        assert_eq!(j.prune(None, 2, false, || true).unwrap().events, 1);
        assert_eq!(seqs("d"), vec![2]);
        assert_eq!(j.cursors("d").unwrap(), (2, 2));
        assert!(j.set_pinned("c", 4, false).unwrap());
        assert_eq!(j.prune(None, 2, false, || true).unwrap().events, 1);
        assert_eq!(seqs("c"), vec![6, 7, 8]);
    }

    #[test]
    fn prune_works_in_batches_until_told_to_stop() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let n = PRUNE_BATCH as u64 * 2 + 10;
        let evs: Vec<Event> = (1..=n).map(ev).collect();
        j.import(
            &evs.iter()
                .map(|e| ("c".to_string(), e.clone()))
                .collect::<Vec<_>>(),
            0,
        )
        .unwrap();
        let mut batches = 0;
        let first = j
            .prune(None, 2, false, || {
                batches += 1;
                false
            })
            .unwrap();
        assert_eq!((first.events, batches), (PRUNE_BATCH as u64, 1));
        assert_eq!(
            j.prune(None, 2, false, || true).unwrap().events,
            n - 1 - PRUNE_BATCH as u64
        );
    }

    #[test]
    fn forward_to_is_remembered_per_channel() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.forward_to("c").unwrap(), None);
        j.set_forward_to("c", "http://a/").unwrap();
        j.set_forward_to("c", "http://b/").unwrap();
        j.set_forward_to("d", "http://d/").unwrap();
        assert_eq!(j.forward_to("c").unwrap().as_deref(), Some("http://b/"));
        assert_eq!(j.forward_to("d").unwrap().as_deref(), Some("http://d/"));
    }

    #[test]
    fn read_only_opens_create_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data dir?#%");
        let missing = Journal::open_read_only(&data).err().expect("missing");
        assert!(
            missing.to_string().starts_with(&format!(
                "no journal at {}: run `meethook listen --data {}` first",
                data.join("journal.sqlite").display(),
                data.display()
            )),
            "{missing}"
        );
        assert!(!data.exists(), "nothing created");
        {
            let j = Journal::open(&data).unwrap();
            j.insert("c", &[ev(1)], 0).unwrap();
        }
        let before = files_in(&data);
        let j = Journal::open_read_only(&data).unwrap();
        assert_eq!(j.get("c", 1).unwrap().unwrap().event, ev(1));
        assert!(j.insert("c", &[ev(2)], 0).is_err(), "read-only");
        drop(j);
        assert_eq!(files_in(&data), before, "no file created or modified");

        // With a writer open (its WAL present), a reader sees its commits.
        let w = Journal::open(&data).unwrap();
        w.insert("c", &[ev(2)], 0).unwrap();
        let r = Journal::open_read_only(&data).unwrap();
        assert_eq!(r.cursors("c").unwrap(), (2, 0));

        let file = data.join("journal.sqlite");
        for open in [
            Journal::open_read_only,
            Journal::open_existing,
            Journal::open,
        ] {
            let e = open(&file).err().expect("a file is no directory");
            assert_eq!(
                e.to_string(),
                format!(
                    "--data {} is a file, not a directory: pass the journal's directory (where \
                     `meethook listen --data DIR` keeps journal.sqlite)",
                    file.display()
                )
            );
        }
    }

    #[test]
    fn a_version_3_journal_gets_pins_even_when_first_opened_read_only() {
        let dir = tempfile::tempdir().unwrap();
        {
            let j = Journal::open(dir.path()).unwrap();
            j.insert("c", &[ev(1), ev(2)], 0).unwrap();
            j.record("c", 1, &attempt(1, 200), Some(State::Delivered))
                .unwrap();
        }
        {
            // Back to the layout before pins.
            let c = Connection::open(dir.path().join("journal.sqlite")).unwrap();
            c.execute_batch("ALTER TABLE events DROP COLUMN pinned; PRAGMA user_version = 3;")
                .unwrap();
        }
        let r = Journal::open_read_only(dir.path()).unwrap();
        let got = r.get("c", 1).unwrap().unwrap();
        assert_eq!((got.state, got.pinned), (State::Delivered, false));
        drop(r);
        let j = Journal::open_existing(dir.path()).unwrap();
        assert!(j.set_pinned("c", 1, true).unwrap());
        assert!(j.get("c", 1).unwrap().unwrap().pinned);
        assert_eq!(j.prune(None, i64::MAX, false, || true).unwrap().events, 0);
    }

    #[test]
    fn a_journal_from_a_newer_meethook_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        Connection::open(dir.path().join("journal.sqlite"))
            .unwrap()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let err = Journal::open(dir.path()).err().expect("refused");
        assert!(err.to_string().contains("upgrade meethook"), "{err}");
    }
}
