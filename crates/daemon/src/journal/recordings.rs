//! What the journal keeps of `listen --save-recordings`: each download's path, state and
//! size, and which ones a stop cut short.

use rusqlite::params;

use super::{Journal, JournalError};

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
    /// SHA-256 of the saved file, hex.
    pub sha256: Option<String>,
}

impl Journal {
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
                   bytes = 0, error = NULL, started_at = excluded.started_at, finished_at = NULL, sha256 = NULL",
                params![channel, seq as i64, kind, path, now_ms],
            )
            .map(|_| ())
        })
    }

    /// Notes how a recording download ended (`error` = `None` when saved, with the file's
    /// SHA-256).
    #[allow(clippy::too_many_arguments)]
    pub fn recording_finished(
        &self,
        channel: &str,
        seq: u64,
        kind: &str,
        bytes: u64,
        error: Option<&str>,
        sha256: Option<&str>,
        now_ms: i64,
    ) -> Result<(), JournalError> {
        self.with(|c| {
            c.execute(
                "UPDATE recordings SET state = ?4, bytes = ?5, error = ?6, finished_at = ?7, sha256 = ?8
                 WHERE channel = ?1 AND seq = ?2 AND kind = ?3",
                params![
                    channel,
                    seq as i64,
                    kind,
                    if error.is_none() { "saved" } else { "failed" },
                    bytes as i64,
                    error,
                    now_ms,
                    sha256
                ],
            )
            .map(|_| ())
        })
    }

    /// Recordings of one event.
    pub fn recordings(&self, channel: &str, seq: u64) -> Result<Vec<Recording>, JournalError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT kind, path, state, bytes, error, sha256 FROM recordings WHERE channel = ?1 AND seq = ?2 ORDER BY kind",
            )?;
            let rows = st.query_map(params![channel, seq as i64], |r| {
                Ok(Recording {
                    kind: r.get(0)?,
                    path: r.get(1)?,
                    state: r.get(2)?,
                    bytes: r.get::<_, i64>(3)? as u64,
                    error: r.get(4)?,
                    sha256: r.get(5)?,
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
