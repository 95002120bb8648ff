//! When a SQLite WAL is due a checkpoint, for the relay's store and the daemon's journal.
//!
//! Both turn SQLite's automatic checkpoints off (they would run inside a commit) and start
//! their own after it, once the WAL grew by [`CHECKPOINT_PAGES`]. A WAL keeps its length
//! after a checkpoint until a later commit finds it all copied and starts it over, so
//! "longer than N pages" alone would call for a checkpoint after every commit.

use std::sync::atomic::{AtomicI32, Ordering};

/// WAL growth, in pages, between checkpoints (SQLite's automatic threshold).
pub const CHECKPOINT_PAGES: i32 = 1000;
/// WAL length, in pages, past which every commit calls for a checkpoint until the WAL
/// starts over (a reader may be holding it back).
pub const WAL_HIGH_PAGES: i32 = 4 * CHECKPOINT_PAGES;

thread_local! {
    /// Pages in the WAL after this thread's last commit (set by [`note_wal_pages`]).
    static WAL_PAGES: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
}

/// WAL hook for `Connection::wal_hook`: records the WAL's length after each commit.
pub fn note_wal_pages(_: &rusqlite::hooks::Wal, pages: std::ffi::c_int) -> rusqlite::Result<()> {
    WAL_PAGES.set(pages);
    Ok(())
}

/// Pages in the WAL after this thread's last commit.
pub fn wal_pages() -> i32 {
    WAL_PAGES.get()
}

/// Tracks one database's WAL across commits (made on any thread).
#[derive(Debug)]
pub struct CheckpointClock {
    /// WAL length that calls for the next checkpoint.
    next_at: AtomicI32,
}

impl Default for CheckpointClock {
    fn default() -> Self {
        CheckpointClock {
            next_at: AtomicI32::new(CHECKPOINT_PAGES),
        }
    }
}

impl CheckpointClock {
    /// Called right after a commit, on its thread: whether to checkpoint now. Once it says
    /// yes, the next yes waits for [`CHECKPOINT_PAGES`] more (or for the WAL to start over),
    /// unless the WAL is past [`WAL_HIGH_PAGES`].
    pub fn due(&self) -> bool {
        let pages = wal_pages();
        let mut at = self.next_at.load(Ordering::Relaxed);
        if pages < at - CHECKPOINT_PAGES {
            // Shorter than at the last checkpoint: the log started over.
            at = CHECKPOINT_PAGES;
            self.next_at.store(at, Ordering::Relaxed);
        }
        if pages < at && pages < WAL_HIGH_PAGES {
            return false;
        }
        self.next_at
            .store(pages.saturating_add(CHECKPOINT_PAGES), Ordering::Relaxed);
        true
    }

    /// Lets a checkpoint that could not start be asked for again at the next commit.
    pub fn retry(&self) {
        self.next_at.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after_commit(clock: &CheckpointClock, pages: i32) -> bool {
        WAL_PAGES.set(pages);
        clock.due()
    }

    #[test]
    fn checkpoints_follow_growth_not_length() {
        let c = CheckpointClock::default();
        assert!(!after_commit(&c, 10));
        assert!(after_commit(&c, 1000));
        // Still long (the checkpoint could not restart it): not again at every commit.
        assert!(!after_commit(&c, 1010));
        assert!(!after_commit(&c, 1999));
        assert!(after_commit(&c, 2000));
        // Started over: counted from its start again.
        assert!(!after_commit(&c, 5));
        assert!(!after_commit(&c, 999));
        assert!(after_commit(&c, 1000));
        c.retry();
        assert!(after_commit(&c, 1001));
        // Very long: at every commit, until it starts over.
        assert!(after_commit(&c, 4000));
        assert!(after_commit(&c, 4001));
        assert!(!after_commit(&c, 3));
    }
}
