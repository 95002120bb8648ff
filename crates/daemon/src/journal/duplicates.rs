//! Events that repeat an earlier one. Meeting BaaS delivers at least once: Svix retries after
//! a timeout, and `resend-webhook` sends a final event again with the identical payload. A
//! repeat is an event with the `svix-id` of an earlier one, or, unsigned, the same body bytes
//! (so the same `event`) within [`UNSIGNED_WINDOW_MS`]; its `events.duplicate_of` names the
//! first. The journal keeps every repeat: only `listen --dedupe` holds one back from the
//! handler.

use meethook_proto::Event;
use rusqlite::{params, OptionalExtension};
use sha2::{Digest, Sha256};

use super::{sql_seq, Journal, JournalError};

/// How far apart two unsigned events with the same body may arrive to count as one event
/// sent twice (status events carry their own time, so equal bytes are a repeat anyway).
pub const UNSIGNED_WINDOW_MS: i64 = 60 * 60 * 1000;

/// What makes `ev` a repeat of another: its `svix-id` (`true`: any time apart), else for a
/// Meeting BaaS body (one with an `event`) its SHA-256 (`false`: within the window).
pub(super) fn key(ev: &Event) -> Option<(String, bool)> {
    if let Some(id) = ev
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("svix-id"))
        .and_then(|h| std::str::from_utf8(&h.value).ok())
    {
        return Some((format!("svix:{}", id.trim()), true));
    }
    if !meethook_proto::meeting::Webhook::names_event(&ev.body) {
        return None;
    }
    let digest = Sha256::digest(&ev.body);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Some((format!("body:{hex}"), false))
}

/// Marks `ev` (just inserted) as a repeat when its key was seen, else remembers the key.
pub(super) fn mark(
    tx: &rusqlite::Transaction<'_>,
    channel: &str,
    ev: &Event,
    (key, any_time): &(String, bool),
) -> rusqlite::Result<()> {
    let seen: Option<(i64, i64)> = tx
        .prepare_cached("SELECT seq, received_at FROM dedupe WHERE channel = ?1 AND key = ?2")?
        .query_row(params![channel, key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    match seen {
        Some((seq, _)) if seq == sql_seq(ev.seq) => {}
        Some((seq, at))
            if seq < sql_seq(ev.seq)
                && (*any_time || ev.received_at_ms - at <= UNSIGNED_WINDOW_MS) =>
        {
            tx.prepare_cached(
                "UPDATE events SET duplicate_of = ?3 WHERE channel = ?1 AND seq = ?2 AND duplicate_of IS NULL",
            )?
            .execute(params![channel, sql_seq(ev.seq), seq])?;
        }
        _ => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO dedupe (channel, key, seq, received_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![channel, key, sql_seq(ev.seq), ev.received_at_ms])?;
        }
    }
    Ok(())
}

impl Journal {
    /// The repeats among `seqs` of `channel`: each with the seq it repeats.
    pub fn duplicates(
        &self,
        channel: &str,
        seqs: std::ops::RangeInclusive<u64>,
    ) -> Result<Vec<(u64, u64)>, JournalError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT seq, duplicate_of FROM events WHERE channel = ?1 AND seq BETWEEN ?2 AND ?3
                 AND duplicate_of IS NOT NULL ORDER BY seq",
            )?;
            let rows = st.query_map(
                params![channel, sql_seq(*seqs.start()), sql_seq(*seqs.end())],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )?;
            rows.collect()
        })
    }

    /// For a repeat, the event it repeats and how long after it this one arrived (ms).
    pub fn duplicate_of(
        &self,
        channel: &str,
        seq: u64,
    ) -> Result<Option<(u64, i64)>, JournalError> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT d.duplicate_of, d.received_at - o.received_at FROM events d
                 JOIN events o ON o.channel = d.channel AND o.seq = d.duplicate_of
                 WHERE d.channel = ?1 AND d.seq = ?2",
            )?
            .query_row(params![channel, sql_seq(seq)], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)?))
            })
            .optional()
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use meethook_proto::{Event, Header};

    use super::UNSIGNED_WINDOW_MS;
    use crate::journal::fixtures::ev;
    use crate::journal::Journal;

    fn with(seq: u64, at: i64, svix: Option<&str>, body: &str) -> Event {
        let mut e = ev(seq);
        e.received_at_ms = at;
        e.headers = svix
            .map(|id| vec![Header::new("svix-id", Bytes::from(id.to_string()))])
            .unwrap_or_default();
        e.body = Bytes::from(body.to_string());
        e
    }

    #[test]
    fn same_svix_id_or_same_unsigned_body_within_the_window_is_a_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let a = r#"{"event":"bot.completed","data":{"bot_id":"b"}}"#;
        let b = r#"{"event":"complete","data":{"bot_id":"b"}}"#;
        j.insert(
            "c",
            &[
                with(1, 0, Some("msg_1"), a),
                with(2, 5, Some("msg_2"), a),
                // Svix retried msg_1 (same id, any time later): a repeat of #1.
                with(3, 10 * UNSIGNED_WINDOW_MS, Some("msg_1"), a),
                with(4, 0, None, b),
                with(5, UNSIGNED_WINDOW_MS, None, b),
                // Same unsigned bytes, but long after: a new event (and the new first).
                with(6, 3 * UNSIGNED_WINDOW_MS, None, b),
                with(7, 3 * UNSIGNED_WINDOW_MS + 1, None, b),
                // Not a Meeting BaaS body: never a repeat by its bytes.
                with(8, 0, None, "ping"),
                with(9, 0, None, "ping"),
            ],
            0,
        )
        .unwrap();
        // The same seq sent again (a reconnect) is not its own repeat.
        j.insert("c", &[with(3, 0, Some("msg_1"), a)], 0).unwrap();
        assert_eq!(j.duplicates("c", 1..=9).unwrap(), [(3, 1), (5, 4), (7, 6)]);
        assert_eq!(
            j.duplicate_of("c", 3).unwrap(),
            Some((1, 10 * UNSIGNED_WINDOW_MS))
        );
        assert_eq!(j.duplicate_of("c", 2).unwrap(), None);
        assert_eq!(j.get("c", 5).unwrap().unwrap().duplicate_of, Some(4));
        // Other channels are apart.
        j.insert("d", &[with(1, 0, Some("msg_1"), a)], 0).unwrap();
        assert_eq!(j.duplicates("d", 1..=1).unwrap(), []);
    }
}
