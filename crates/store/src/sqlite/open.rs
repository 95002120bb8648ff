//! Opening the store: the directory and database file, the lock against a second relay,
//! connections.

use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use meethook_disk::bodyfile::BodyFiles;
use meethook_disk::dir::{create_dir_durable, sync_dir};
use meethook_disk::wal::note_wal_pages;
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

use super::prune::sweep_body_files;
use super::schema::migrate;
use super::writer::writer_loop;
use super::{unavailable, Inner, SqliteStore};
use crate::{Notifier, Result, StoreError};

/// Creates `dir` (mode 0700) and the database file (mode 0600) if missing, both names
/// durable: a power cut must not take the store away after its first acknowledgement.
fn prepare_files(dir: &Path, file: &Path) -> std::io::Result<()> {
    create_dir_durable(dir, 0o700)?;
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(file)?;
    // SQLite syncs the directory for the WAL it creates, not for the database file.
    sync_dir(dir)
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

pub(super) fn open_conn(path: &Path, write: bool) -> rusqlite::Result<Connection> {
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
}
