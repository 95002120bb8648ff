//! Pruning (`listen --retention`, `meethook events prune`) in small batches, and pins
//! (`meethook events pin`), which keep an event from any prune.

use std::time::Duration;

use rusqlite::params;

use super::{sql_seq, Journal, JournalError};

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
                    for table in ["events", "bodies", "attempts", "recordings", "dedupe"] {
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
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use meethook_disk::bodyfile::BODY_FILE_MIN;
    use meethook_proto::Event;

    use super::{Pruned, PRUNE_BATCH};
    use crate::journal::fixtures::{attempt, ev};
    use crate::journal::{Journal, Query, State};

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
}
