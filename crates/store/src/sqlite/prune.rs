//! Removing events: pruning old ones, deleting a channel's body files, sweeping body files
//! no row refers to.

use std::time::Duration;

use meethook_disk::bodyfile::BodyFiles;
use rusqlite::{params, Connection};

use super::schema::{event_id, HEAD, MAX_SEQ};

/// Age past which a body file no row refers to is removed by a prune.
pub(super) const ORPHAN_AGE: Duration = Duration::from_secs(600);

/// Removes body files no row refers to, unchanged for `min_age` (see [`BodyFiles::sweep`]).
pub(super) fn sweep_body_files(
    conn: &Connection,
    bodies: &BodyFiles,
    min_age: Duration,
) -> std::io::Result<usize> {
    let known: std::collections::HashSet<i64> = conn
        .prepare_cached("SELECT file FROM body_files")
        .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
        .map_err(std::io::Error::other)?;
    bodies.sweep(&known, min_age)
}

/// Deletes, channel by channel, the oldest events received before `cutoff` that every
/// listener seen since `cutoff` has acked. Arrival order is seq order, so each channel's walk
/// stops at its first younger (or unacked) event.
/// Returns how many went and the body files to remove once the deletion is committed.
pub(super) fn prune_events(
    tx: &rusqlite::Transaction<'_>,
    cutoff: i64,
) -> rusqlite::Result<(u64, Vec<i64>)> {
    // Heads first: a channel whose every event goes keeps its head in `head_seq`.
    tx.execute(&format!("UPDATE channels SET head_seq = {HEAD}"), [])?;
    let channels: Vec<(i64, Option<i64>)> = tx
        .prepare(
            "SELECT c.num, (SELECT MIN(l.acked_seq) FROM listeners l
                            WHERE l.channel_id = c.id AND l.last_seen >= ?1)
             FROM channels c",
        )?
        .query_map(params![cutoff], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut walk =
        tx.prepare("SELECT id, received_at FROM events WHERE id BETWEEN ?1 AND ?2 ORDER BY id")?;
    let mut delete = tx.prepare("DELETE FROM events WHERE id BETWEEN ?1 AND ?2")?;
    let mut files = Vec::new();
    let mut pruned = 0;
    for (num, acked) in channels {
        let upto = acked.map_or(MAX_SEQ, |a| a.max(0) as u64);
        if upto == 0 {
            continue;
        }
        let (lo, hi) = (event_id(num, 0), event_id(num, upto));
        let mut last = None;
        let mut rows = walk.query(params![lo, hi])?;
        while let Some(r) = rows.next()? {
            if r.get::<_, i64>(1)? >= cutoff {
                break;
            }
            last = Some(r.get::<_, i64>(0)?);
        }
        drop(rows);
        if let Some(last) = last {
            pruned += delete.execute(params![lo, last])? as u64;
            files.extend(delete_body_files(tx, lo, last)?);
        }
    }
    Ok((pruned, files))
}

/// Deletes the `body_files` rows of event ids `lo..=hi`; returns their files.
pub(super) fn delete_body_files(c: &Connection, lo: i64, hi: i64) -> rusqlite::Result<Vec<i64>> {
    c.prepare_cached("DELETE FROM body_files WHERE id BETWEEN ?1 AND ?2 RETURNING file")?
        .query_map(params![lo, hi], |r| r.get(0))?
        .collect()
}
