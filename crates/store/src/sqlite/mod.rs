//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`.
//!
//! All writes go through one writer thread that drains its queue and commits whatever is
//! waiting in one transaction (group commit): many concurrent webhooks share one fsync.
//! Reads use a small pool of read-only connections, which WAL lets run beside the writer.
//!
//! Bodies of [`BODY_FILE_MIN`](meethook_disk::bodyfile::BODY_FILE_MIN) bytes or more live in
//! files of their own under `DIR/relay-bodies` ([`BodyFiles`]), fsync'd before the commit that
//! refers to them.
//!
//! # Layout
//! - `open`: the directory, its lock, the connections; [`SqliteStore::open`].
//! - `schema`: the tables, how an event's row id packs channel and seq, migrations.
//! - `writer`: the writer thread's group commit, and the calls that queue work for it.
//! - `queries`: the [`Store`](crate::Store) verbs.
//! - `prune`: deleting old events with their body files; sweeping orphaned body files.

mod open;
mod prune;
mod queries;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use meethook_disk::bodyfile::BodyFiles;
use rusqlite::Connection;

use crate::{Notifier, Result, StoreError};
use open::open_conn;
use writer::Op;

/// Read connections kept open.
const READ_POOL: usize = 8;

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

impl SqliteStore {
    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
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
