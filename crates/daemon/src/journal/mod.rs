//! The daemon's local journal: every event received, its delivery state and every attempt.
//!
//! One SQLite file (`DIR/journal.sqlite`, WAL). Events are journaled as they arrive; the relay
//! keeps them until they are acked, so a journal write lost to a crash is simply streamed again.
//!
//! # Layout
//!
//! - `mod.rs`: the [`Journal`] handle, its connection and its opens (read-write, existing
//!   only, read-only).
//! - `schema.rs`: the tables, their layout version and the migrations from older ones.
//! - `checkpoint.rs`: the checkpoint thread that keeps the WAL bounded.
//! - `write.rs`: the live write path: inserts (big bodies as files), pending events,
//!   outcome records and their recovery from the outcome log, imports.
//! - `query.rs`: the read model: [`Query`] filters, [`Stored`] events, attempts.
//! - `search.rs`: the header, JSON-path and free-text filters ([`Search`]).
//! - `ndjson.rs`: the line format of `events export` ([`ExportLine`]).
//! - `recordings.rs`: recording downloads.
//! - `prune.rs`: pruning in batches, and pins.
//! - `meta.rs`: per-channel facts (listener id, handler URL).
//! - `error.rs`: [`JournalError`].
//! - `fixtures.rs` (tests only): the events and attempts the tests share.

mod checkpoint;
mod duplicates;
mod error;
#[cfg(test)]
pub(crate) mod fixtures;
mod meta;
mod ndjson;
mod prune;
mod query;
mod recordings;
mod schema;
mod search;
mod write;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meethook_disk::bodyfile::BodyFiles;
use meethook_disk::dir::{create_dir_durable, sync_dir};
use meethook_disk::wal;
use rusqlite::config::DbConfig;
use rusqlite::Connection;

use checkpoint::Checkpoints;
pub use duplicates::UNSIGNED_WINDOW_MS;
pub use error::JournalError;
pub use ndjson::{b64 as export_base64, ExportLine};
pub use prune::Pruned;
pub use query::{Query, Scan, Stored};
pub use recordings::Recording;
use schema::{migrate, too_new, SCHEMA_VERSION};
pub use search::{HeaderMatch, JsonCond, Op, Search, Step};
pub use write::{Attempt, Record, State};

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

/// Age past which a body file no event refers to is removed at open.
const ORPHAN_AGE: Duration = Duration::from_secs(600);

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
        // Durable names: after a power cut a journal that vanished whole would have the
        // relay send every event again.
        create_dir_durable(dir, 0o700).map_err(io_err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            // Only a new file is opened here: closing a descriptor of a journal this process
            // has open would drop SQLite's locks on it, and another process could then
            // checkpoint and delete the WAL under this process's connections.
            let created = std::fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o600)
                .open(dir.join(JOURNAL_FILE));
            match created {
                Ok(_) => sync_dir(dir).map_err(io_err)?,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(error) => {
                    return Err(JournalError::Create {
                        path: dir.join(JOURNAL_FILE),
                        error,
                    })
                }
            }
        }
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
}

/// A seq as stored (SQLite integers are signed).
fn sql_seq(seq: u64) -> i64 {
    seq.min(i64::MAX as u64) as i64
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::journal::fixtures::ev;
    use crate::journal::Journal;

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
}
