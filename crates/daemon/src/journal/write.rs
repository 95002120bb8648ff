//! The live write path: events journaled as they arrive (big bodies as files), the pending
//! ones handed to delivery, outcomes recorded (and recovered from the outcome log), history
//! imported; with the types it writes ([`State`], [`Attempt`], [`Record`]).

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use meethook_disk::bodyfile::{BodyFiles, BODY_FILE_MIN};
use meethook_proto::frame::{encode_headers, headers_len};
use meethook_proto::meeting::Summary;
use meethook_proto::Event;
use rusqlite::params;

use super::query::row_event;
use super::{sql_seq, Journal, JournalError};

/// Body bytes in one insert above which summaries are parsed beside the SQLite write.
const PARSE_APART: usize = 1 << 20;

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
    /// The handler's response body, up to 64 KiB (`forward::RESPONSE_CAPTURE`).
    pub response_head: Bytes,
    /// The handler's response headers, in order.
    pub response_headers: Vec<meethook_proto::Header>,
    /// Whether the response body was longer than `response_head`.
    pub truncated: bool,
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
    /// The `[[route]]` it goes to, when it took one (not kept by the outcome log).
    pub route: Option<std::sync::Arc<str>>,
}

/// The attempt's response headers as stored (`NULL` when there are none).
fn response_headers(a: &Attempt) -> Option<Vec<u8>> {
    if a.response_headers.is_empty() {
        return None;
    }
    let mut b = BytesMut::with_capacity(headers_len(&a.response_headers));
    encode_headers(&a.response_headers, &mut b);
    Some(b.to_vec())
}

impl Journal {
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
        // Hashed before taking the journal: a big body's SHA-256 holds up no one.
        let keys: Vec<_> = events.iter().map(super::duplicates::key).collect();
        let mut written = Vec::new();
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
                insert_rows(&tx, &self.bodies, rows, now_ms, State::Pending, &mut written)?;
                for (e, key) in events.iter().zip(&keys) {
                    if let Some(key) = key {
                        super::duplicates::mark(&tx, channel, e, key)?;
                    }
                }
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
        if summaries.is_err() {
            // Rolled back: their files would fill the disk a little more at every resend.
            self.bodies.remove(&written);
        }
        let summaries = summaries?;
        self.after_commit();
        Ok(summaries)
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
                route: None,
            }],
        )
    }

    /// Records several outcomes in one transaction (the delivery loop batches them).
    pub fn record_many(&self, channel: &str, records: &[Record]) -> Result<(), JournalError> {
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO attempts (channel, seq, attempt, started_at, latency_us, status, error, response_head, replay,
                       response_headers, truncated)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )?;
                let mut update = tx.prepare_cached(
                    "UPDATE events SET attempts = COALESCE(?3, attempts), last_status = COALESCE(?4, last_status),
                       state = COALESCE(?5, state), route = COALESCE(?6, route) WHERE channel = ?1 AND seq = ?2",
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
                            response_headers(a),
                            a.truncated,
                        ])?;
                    }
                    if !replay {
                        update.execute(params![
                            channel,
                            r.seq as i64,
                            r.attempt.as_ref().map(|a| a.attempt),
                            r.attempt.as_ref().and_then(|a| a.status),
                            r.state.map(State::name),
                            r.route.as_deref(),
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

    /// Adds `(channel, event)` pairs as history, in one transaction: state `delivered` (so
    /// `listen` never forwards them), no attempts. A `(channel, seq)` already journaled is
    /// left as it is. Returns `(imported, skipped)`.
    pub fn import(
        &self,
        events: &[(String, Event)],
        now_ms: i64,
    ) -> Result<(usize, usize), JournalError> {
        let mut written = Vec::new();
        let r = self.with(|c| {
            let tx = c.transaction()?;
            let summaries: Vec<_> = events
                .iter()
                .map(|(_, e)| Summary::parse(&e.body))
                .collect();
            let rows = events
                .iter()
                .zip(&summaries)
                .map(|((ch, e), s)| (ch.as_str(), e, s.as_ref()));
            let imported = insert_rows(
                &tx,
                &self.bodies,
                rows,
                now_ms,
                State::Delivered,
                &mut written,
            )?;
            tx.commit()?;
            Ok((imported, events.len() - imported))
        });
        if r.is_err() {
            self.bodies.remove(&written);
        }
        r
    }
}

/// Inserts events in `state`, ignoring `(channel, seq)` pairs already there; returns how many
/// were new. The body files it writes for them go into `written`: the caller removes them if
/// the transaction does not commit.
fn insert_rows<'a>(
    tx: &rusqlite::Transaction<'_>,
    bodies: &BodyFiles,
    events: impl Iterator<Item = (&'a str, &'a Event, Option<&'a Summary>)>,
    now_ms: i64,
    state: State,
    written: &mut Vec<i64>,
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
            written.push(n);
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
            written.retain(|n| Some(*n) != file);
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
mod tests {
    use bytes::Bytes;
    use meethook_disk::bodyfile::BODY_FILE_MIN;
    use meethook_proto::Event;

    use super::PARSE_APART;
    use crate::journal::fixtures::{attempt, ev, mb};
    use crate::journal::{Journal, Query, State};

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
