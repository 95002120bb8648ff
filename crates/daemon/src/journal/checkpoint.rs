//! Keeping the WAL bounded: checkpoints on a thread of their own after commits, or on the
//! committing thread once the WAL has grown past [`wal::WAL_HIGH_PAGES`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meethook_disk::wal::{self, CheckpointClock};
use rusqlite::Connection;

use super::Journal;

/// Under steady commits, the longest a commit waits for a checkpoint, which syncs it: commits
/// are not synced themselves (`synchronous=NORMAL`), so this bounds what a power cut takes
/// while the daemon is busy, and with it what the handler gets again beyond the relay's ack.
const SYNC_AGE: Duration = Duration::from_millis(250);

/// Checkpoints run on a thread of their own, with their own connection, so a commit never
/// waits for the copy into the database file and its fsync (SQLite's automatic way).
pub(super) struct Checkpoints {
    path: PathBuf,
    /// The checkpoint thread's queue, started at the first checkpoint.
    wake: Mutex<Option<std::sync::mpsc::SyncSender<()>>>,
    running: Arc<AtomicBool>,
    clock: Arc<CheckpointClock>,
    /// When the last checkpoint was asked for, in ms since `born`.
    last_ms: AtomicU64,
    born: Instant,
}

impl Checkpoints {
    pub(super) fn new(path: PathBuf) -> Checkpoints {
        Checkpoints {
            path,
            wake: Mutex::new(None),
            running: Arc::default(),
            clock: Arc::default(),
            last_ms: AtomicU64::new(0),
            born: Instant::now(),
        }
    }

    /// Called on the thread that just committed: starts a checkpoint when the WAL grew.
    fn after_commit(&self) {
        if self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let now_ms = self.born.elapsed().as_millis() as u64;
        let aged = now_ms.saturating_sub(self.last_ms.load(Ordering::Relaxed))
            >= SYNC_AGE.as_millis() as u64;
        if !self.clock.due() && !aged {
            self.running.store(false, Ordering::Release);
            return;
        }
        self.last_ms.store(now_ms, Ordering::Relaxed);
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
    /// Starts a checkpoint when one is due. Past [`wal::WAL_HIGH_PAGES`] it checkpoints
    /// here, holding the journal: under steady commits the checkpoint thread never catches
    /// up with the end of the WAL, so the WAL would never start over, only grow.
    pub(super) fn after_commit(&self) {
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
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use meethook_proto::Event;

    use crate::journal::fixtures::ev;
    use crate::journal::Journal;

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
}
