//! The read model behind `meethook events`, `replay` (and the inspector): [`Query`] filters
//! (channel, seqs, bot, event type, state, since, limit, and the header, JSON-path and text
//! filters of [`Search`]), the [`Stored`] rows they return with whether a replay was
//! answered, counts, keys, streaming, pages newest first, one event and its attempts.

use std::time::Duration;

use bytes::Bytes;
use meethook_disk::bodyfile::BodyFiles;
use meethook_proto::frame::{decode_headers, Reader};
use meethook_proto::Event;
use rusqlite::types::{Type, ValueRef};
use rusqlite::{params, OptionalExtension};

use super::search::Search;
use super::{sql_seq, Attempt, Journal, JournalError, State};

/// The event in a row's first six columns; the sixth is the body, or its file's number.
pub(super) fn row_event(r: &rusqlite::Row<'_>, bodies: &BodyFiles) -> rusqlite::Result<Event> {
    let headers: Vec<u8> = r.get(4)?;
    let headers = decode_headers(&mut Reader::new(Bytes::from(headers))).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Blob, Box::new(e))
    })?;
    Ok(Event {
        seq: r.get::<_, i64>(0)? as u64,
        received_at_ms: r.get(1)?,
        method: r.get(2)?,
        path: r.get(3)?,
        headers,
        body: match r.get_ref(5)? {
            ValueRef::Integer(n) => bodies.read(n).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(5, Type::Integer, Box::new(e))
            })?,
            _ => Bytes::from(r.get::<_, Vec<u8>>(5)?),
        },
    })
}

impl State {
    /// The state stored as `s`, if it is one.
    pub fn parse(s: &str) -> Option<State> {
        [
            State::Pending,
            State::Delivered,
            State::Failed,
            State::Skipped,
        ]
        .into_iter()
        .find(|st| st.name() == s)
    }
}

/// A journaled event with its delivery record, as the query methods return it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The channel it came on.
    pub channel: String,
    /// The event as received.
    pub event: Event,
    /// When this journal stored it (or imported it), ms since the epoch.
    pub journaled_at_ms: i64,
    /// Where its delivery by `listen` stands (replays never change it).
    pub state: State,
    /// Delivery attempts made by `listen`.
    pub attempts: u32,
    /// The handler's last status to `listen`, when it answered.
    pub last_status: Option<u16>,
    /// The Meeting BaaS `event`, when the body is one.
    pub event_type: Option<String>,
    /// The Meeting BaaS `data.bot_id`, when present.
    pub bot_id: Option<String>,
    /// Kept by `meethook events pin`: never pruned.
    pub pinned: bool,
    /// The handler's status to the latest replay it answered 2xx, if any.
    pub replayed: Option<u16>,
    /// The earlier event this one repeats (same `svix-id`, or same unsigned body).
    pub duplicate_of: Option<u64>,
    /// The `[[route]]` `listen` delivers it to (`None`: `--forward-to`, or not yet known).
    pub route: Option<String>,
}

/// Which events a query selects: every field that is set must match.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Only this channel; all channels when `None`.
    pub channel: Option<String>,
    /// Only these seqs (inclusive ranges); any seq when empty.
    pub seqs: Vec<std::ops::RangeInclusive<u64>>,
    /// Only events whose bot id starts with this (a full id or the short one `events list` shows).
    pub bot_id: Option<String>,
    /// Only this Meeting BaaS event type (`complete`, `bot.status_change`), or those starting
    /// with a prefix when it ends in `*` (`bot.*`), as `listen --events` reads it.
    pub event_type: Option<String>,
    /// Only events in this state.
    pub state: Option<State>,
    /// Only events `listen` made attempts on (`true`: a pending one is then retrying) or
    /// made none on (`false`).
    pub attempted: Option<bool>,
    /// Only events the relay received at or after this time, ms since the epoch.
    pub since_ms: Option<i64>,
    /// Only events whose headers and body match these.
    pub search: Search,
    /// Only the last N matching events (still returned oldest first).
    pub limit: Option<usize>,
}

/// What [`Journal::newest`] found.
#[derive(Debug, Default)]
pub struct Scan {
    /// The matching events, newest first.
    pub events: Vec<Stored>,
    /// When the budget ran out before enough events matched: the last seq examined (older
    /// ones are still to be looked at).
    pub stopped_at: Option<u64>,
}

impl Query {
    /// ` WHERE …` and its parameters.
    fn filter(&self) -> (String, Vec<rusqlite::types::Value>) {
        use rusqlite::types::Value;
        let mut conds: Vec<String> = Vec::new();
        let mut params: Vec<Value> = Vec::new();
        let mut param = |conds: &mut Vec<String>, sql: &str, v: Value| {
            params.push(v);
            conds.push(sql.replace('?', &format!("?{}", params.len())));
        };
        if let Some(c) = &self.channel {
            param(&mut conds, "channel = ?", Value::Text(c.clone()));
        }
        if !self.seqs.is_empty() {
            // Integers only, so safe to inline, with no limit on the number of parameters.
            let ranges: Vec<String> = self
                .seqs
                .iter()
                .map(|r| match (sql_seq(*r.start()), sql_seq(*r.end())) {
                    (a, b) if a == b => format!("seq = {a}"),
                    (a, b) => format!("seq BETWEEN {a} AND {b}"),
                })
                .collect();
            conds.push(format!("({})", ranges.join(" OR ")));
        }
        if let Some(b) = &self.bot_id {
            param(
                &mut conds,
                "substr(bot_id, 1, length(?)) = ?",
                Value::Text(b.clone()),
            );
        }
        if let Some(e) = &self.event_type {
            match e.strip_suffix('*') {
                Some(prefix) => param(
                    &mut conds,
                    "substr(event_type, 1, length(?)) = ?",
                    Value::Text(prefix.to_string()),
                ),
                None => param(&mut conds, "event_type = ?", Value::Text(e.clone())),
            }
        }
        if let Some(s) = self.state {
            param(&mut conds, "state = ?", Value::Text(s.name().into()));
        }
        if let Some(a) = self.attempted {
            conds.push(if a { "attempts > 0" } else { "attempts = 0" }.into());
        }
        if let Some(t) = self.since_ms {
            param(&mut conds, "received_at >= ?", Value::Integer(t));
        }
        for (sql, values) in self.search.prefilter() {
            // One value per `?`, in order.
            let mut parts = sql.split('?');
            let mut numbered = parts.next().unwrap_or_default().to_string();
            for (v, part) in values.into_iter().zip(parts) {
                params.push(Value::Text(v));
                numbered.push_str(&format!("?{}{part}", params.len()));
            }
            conds.push(numbered);
        }
        let sql = if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        };
        (sql, params)
    }

    /// Result order: seq within one channel, arrival across channels.
    fn order(&self, desc: bool) -> String {
        let d = if desc { " DESC" } else { "" };
        if self.channel.is_some() {
            format!(" ORDER BY seq{d}")
        } else {
            format!(" ORDER BY received_at{d}, channel{d}, seq{d}")
        }
    }

    /// The tables read: the bodies' too when asked or searched.
    fn from(&self, bodies: bool) -> &'static str {
        if bodies || !self.search.is_empty() {
            "events JOIN bodies USING (channel, seq)"
        } else {
            "events"
        }
    }

    /// `SELECT columns FROM events WHERE … ORDER BY …`, keeping the last `limit` rows
    /// (unless searching: the search's last check is made on the rows read);
    /// `bodies` joins the headers and body in.
    fn select(&self, columns: &str, bodies: bool) -> String {
        let (filter, _) = self.filter();
        let from = self.from(bodies);
        match self.limit.filter(|_| self.search.is_empty()) {
            Some(n) => format!(
                "SELECT * FROM (SELECT {columns} FROM {from}{filter}{} LIMIT {n}){}",
                self.order(true),
                self.order(false)
            ),
            None => format!("SELECT {columns} FROM {from}{filter}{}", self.order(false)),
        }
    }
}

/// The columns [`row_stored`] reads, in order (the first six are [`row_event`]'s).
const STORED_COLUMNS: &str = "seq, received_at, method, path, headers, \
     COALESCE(body_file, body), channel, \
     journaled_at, state, attempts, last_status, event_type, bot_id, pinned, \
     (SELECT a.status FROM attempts a WHERE a.channel = events.channel AND a.seq = events.seq \
      AND a.replay = 1 AND a.status BETWEEN 200 AND 299 ORDER BY a.rowid DESC LIMIT 1), \
     duplicate_of, route";

fn row_stored(r: &rusqlite::Row<'_>, bodies: &BodyFiles) -> rusqlite::Result<Stored> {
    let state: String = r.get(8)?;
    Ok(Stored {
        event: row_event(r, bodies)?,
        channel: r.get(6)?,
        journaled_at_ms: r.get(7)?,
        state: State::parse(&state).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                8,
                rusqlite::types::Type::Text,
                format!("unknown state {state:?}").into(),
            )
        })?,
        attempts: r.get::<_, i64>(9)? as u32,
        last_status: r.get(10)?,
        event_type: r.get(11)?,
        bot_id: r.get(12)?,
        pinned: r.get(13)?,
        replayed: r.get(14)?,
        duplicate_of: r.get::<_, Option<i64>>(15)?.map(|s| s as u64),
        route: r.get(16)?,
    })
}

impl Journal {
    /// Each channel in the journal with its number of events, by channel id.
    pub fn channels(&self) -> Result<Vec<(String, u64)>, JournalError> {
        self.with(|c| {
            c.prepare("SELECT channel, COUNT(*) FROM events GROUP BY channel ORDER BY channel")?
                .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
                .collect()
        })
    }

    /// How many events match `q`, ignoring its `limit`.
    pub fn count(&self, q: &Query) -> Result<u64, JournalError> {
        if !q.search.is_empty() {
            let mut n = 0;
            let all = Query {
                limit: None,
                ..q.clone()
            };
            self.each(&all, |_| {
                n += 1;
                true
            })?;
            return Ok(n);
        }
        let (filter, params) = q.filter();
        self.with(|c| {
            c.query_row(
                &format!("SELECT COUNT(*) FROM events{filter}"),
                rusqlite::params_from_iter(params),
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
        })
    }

    /// `(channel, seq)` of the events matching `q`, in query order, without their bodies.
    pub fn keys(&self, q: &Query) -> Result<Vec<(String, u64)>, JournalError> {
        if !q.search.is_empty() {
            return Ok(self
                .query(q)?
                .into_iter()
                .map(|s| (s.channel, s.event.seq))
                .collect());
        }
        let sql = q.select("channel, seq, received_at", false);
        let (_, params) = q.filter();
        self.with(|c| {
            c.prepare(&sql)?
                .query_map(rusqlite::params_from_iter(params), |r| {
                    Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
                })?
                .collect()
        })
    }

    /// Calls `f` with each event matching `q`, in query order, until it returns `false`.
    /// Rows are read one at a time, so a whole journal can be streamed (`events export`).
    pub fn each(&self, q: &Query, mut f: impl FnMut(Stored) -> bool) -> Result<(), JournalError> {
        if let (Some(n), false) = (q.limit, q.search.is_empty()) {
            // The last N that match: found newest first, handed out oldest first.
            for s in self.newest(q, n, usize::MAX)?.events.into_iter().rev() {
                if !f(s) {
                    break;
                }
            }
            return Ok(());
        }
        let sql = q.select(STORED_COLUMNS, true);
        let (_, params) = q.filter();
        self.with(|c| {
            let mut st = c.prepare(&sql)?;
            let mut rows = st.query(rusqlite::params_from_iter(params))?;
            while let Some(r) = rows.next()? {
                let s = row_stored(r, &self.bodies)?;
                if q.search.matches(&s.event) && !f(s) {
                    break;
                }
            }
            Ok(())
        })
    }

    /// Up to `n` events matching `q` (its `limit` aside), newest first. A search in one
    /// channel reads it in windows of seqs, newest first, and stops once `budget` bytes were
    /// looked at (each row counted as at least 1 KiB, in SQL or after), saying where; order
    /// is by seq when `q` names a channel.
    pub fn newest(&self, q: &Query, n: usize, budget: usize) -> Result<Scan, JournalError> {
        let Some(channel) = q.channel.as_deref().filter(|_| !q.search.is_empty()) else {
            return Ok(Scan {
                events: self.newest_in(q, n, &mut 0)?,
                stopped_at: None,
            });
        };
        // Where the channel's seqs end, and where the query's do.
        let top = self.cursors(channel)?.0;
        let top = match q.seqs.iter().map(|r| *r.end()).max() {
            Some(end) => end.min(top),
            None => top,
        };
        let window = (budget / 1024).clamp(1, 8192) as u64;
        let mut scan = Scan::default();
        let mut spent = 0usize;
        let mut hi = top;
        while hi >= 1 && scan.events.len() < n {
            let lo = hi.saturating_sub(window - 1).max(1);
            let seqs: Vec<_> = if q.seqs.is_empty() {
                vec![lo..=hi]
            } else {
                q.seqs
                    .iter()
                    .map(|r| (*r.start()).max(lo)..=(*r.end()).min(hi))
                    .filter(|r| !r.is_empty())
                    .collect()
            };
            if !seqs.is_empty() {
                let part = Query { seqs, ..q.clone() };
                let got = self.newest_in(&part, n - scan.events.len(), &mut spent)?;
                scan.events.extend(got);
            }
            spent = spent.saturating_add((hi - lo + 1) as usize * 1024);
            if lo == 1 {
                break;
            }
            if spent >= budget && scan.events.len() < n {
                scan.stopped_at = Some(lo);
                break;
            }
            hi = lo - 1;
        }
        Ok(scan)
    }

    /// Up to `n` events matching `q`, newest first, in one query; `spent` adds the body
    /// bytes of the rows read.
    fn newest_in(
        &self,
        q: &Query,
        n: usize,
        spent: &mut usize,
    ) -> Result<Vec<Stored>, JournalError> {
        let (filter, params) = q.filter();
        let limit = if q.search.is_empty() {
            format!(" LIMIT {n}")
        } else {
            String::new()
        };
        let sql = format!(
            "SELECT {STORED_COLUMNS} FROM {}{filter}{}{limit}",
            q.from(true),
            q.order(true)
        );
        self.with(|c| {
            let mut st = c.prepare(&sql)?;
            let mut rows = st.query(rusqlite::params_from_iter(params))?;
            let mut events = Vec::new();
            while events.len() < n {
                let Some(r) = rows.next()? else { break };
                let s = row_stored(r, &self.bodies)?;
                *spent = spent.saturating_add(s.event.body.len());
                if q.search.matches(&s.event) {
                    events.push(s);
                }
            }
            Ok(events)
        })
    }

    /// The events matching `q`, in query order.
    pub fn query(&self, q: &Query) -> Result<Vec<Stored>, JournalError> {
        let mut out = Vec::new();
        self.each(q, |s| {
            out.push(s);
            true
        })?;
        Ok(out)
    }

    /// One event, if journaled.
    pub fn get(&self, channel: &str, seq: u64) -> Result<Option<Stored>, JournalError> {
        self.with(|c| {
            c.prepare_cached(&format!(
                "SELECT {STORED_COLUMNS} FROM events JOIN bodies USING (channel, seq)
                 WHERE channel = ?1 AND seq = ?2"
            ))?
            .query_row(params![channel, sql_seq(seq)], |r| {
                row_stored(r, &self.bodies)
            })
            .optional()
        })
    }

    /// Every attempt recorded for one event, `listen`'s and replays', in the order made.
    pub fn attempts(&self, channel: &str, seq: u64) -> Result<Vec<Attempt>, JournalError> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT attempt, started_at, latency_us, status, error, response_head, replay,
                   response_headers, truncated
                 FROM attempts WHERE channel = ?1 AND seq = ?2 ORDER BY rowid",
            )?
            .query_map(params![channel, sql_seq(seq)], |r| {
                Ok(Attempt {
                    attempt: r.get::<_, i64>(0)? as u32,
                    started_at_ms: r.get(1)?,
                    latency: Duration::from_micros(r.get::<_, i64>(2)?.max(0) as u64),
                    status: r.get(3)?,
                    error: r.get(4)?,
                    response_head: Bytes::from(r.get::<_, Option<Vec<u8>>>(5)?.unwrap_or_default()),
                    replay: r.get(6)?,
                    response_headers: match r.get::<_, Option<Vec<u8>>>(7)? {
                        Some(b) => {
                            decode_headers(&mut Reader::new(Bytes::from(b))).map_err(|e| {
                                rusqlite::Error::FromSqlConversionFailure(
                                    7,
                                    Type::Blob,
                                    Box::new(e),
                                )
                            })?
                        }
                        None => Vec::new(),
                    },
                    truncated: r.get(8)?,
                })
            })?
            .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use meethook_proto::Event;

    use crate::journal::fixtures::mb;
    use crate::journal::{Attempt, Journal, Query, State, Stored};

    fn attempt(n: u32, status: u16, replay: bool) -> Attempt {
        Attempt {
            attempt: n,
            started_at_ms: 5,
            latency: Duration::from_micros(1500),
            status: Some(status),
            error: None,
            response_head: Bytes::from_static(b"nope"),
            response_headers: vec![meethook_proto::Header::new("x-r", "1")],
            truncated: true,
            replay,
        }
    }

    fn seqs(v: &[Stored]) -> Vec<u64> {
        v.iter().map(|s| s.event.seq).collect()
    }

    #[test]
    fn queries_filter_order_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let evs: Vec<Event> = (1..=6)
            .map(|i| {
                let bot = if i % 2 == 0 { "bbbb-2" } else { "aaaa-1" };
                let event = if i == 6 {
                    "complete"
                } else {
                    "bot.status_change"
                };
                mb(i, bot, event, 1000 * i as i64)
            })
            .collect();
        j.insert("c1", &evs, 7).unwrap();
        j.insert("c2", &[mb(1, "aaaa-1", "complete", 3500)], 7)
            .unwrap();
        j.record("c1", 2, &attempt(1, 400, false), Some(State::Failed))
            .unwrap();
        j.record("c1", 2, &attempt(1, 200, true), None).unwrap();

        assert_eq!(
            j.channels().unwrap(),
            vec![("c1".to_string(), 6), ("c2".to_string(), 1)]
        );
        let c1 = |q: Query| Query {
            channel: Some("c1".into()),
            ..q
        };
        let all = j.query(&c1(Query::default())).unwrap();
        assert_eq!(seqs(&all), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(all[0].event, evs[0]);
        assert_eq!(all[0].state, State::Pending);
        assert_eq!(all[0].bot_id.as_deref(), Some("aaaa-1"));
        assert_eq!(all[5].event_type.as_deref(), Some("complete"));

        let bot = |b: &str| {
            c1(Query {
                bot_id: Some(b.into()),
                ..Query::default()
            })
        };
        assert_eq!(seqs(&j.query(&bot("bbbb")).unwrap()), vec![2, 4, 6]);
        assert_eq!(seqs(&j.query(&bot("aaaa-1")).unwrap()), vec![1, 3, 5]);
        assert!(j.query(&bot("aaaa-1x")).unwrap().is_empty());
        assert!(j.query(&bot("%")).unwrap().is_empty(), "no LIKE wildcards");

        let failed = j
            .query(&c1(Query {
                state: Some(State::Failed),
                ..Query::default()
            }))
            .unwrap();
        assert_eq!(seqs(&failed), vec![2]);
        assert_eq!(failed[0].last_status, Some(400));
        assert_eq!(
            failed[0].attempts, 1,
            "the replay attempt left the row alone"
        );
        assert_eq!(failed[0].replayed, Some(200), "but shows as replayed");
        assert_eq!(all[0].replayed, None);

        let q = c1(Query {
            seqs: vec![1..=1, 4..=5, 9..=20],
            ..Query::default()
        });
        assert_eq!(seqs(&j.query(&q).unwrap()), vec![1, 4, 5]);
        let q = c1(Query {
            since_ms: Some(3000),
            limit: Some(2),
            ..Query::default()
        });
        assert_eq!(
            seqs(&j.query(&q).unwrap()),
            vec![5, 6],
            "the last two, oldest first"
        );
        assert_eq!(j.count(&q).unwrap(), 4, "count ignores the limit");

        // Across channels: by arrival time.
        let keys = j
            .keys(&Query {
                event_type: Some("complete".into()),
                ..Query::default()
            })
            .unwrap();
        assert_eq!(keys, vec![("c2".into(), 1), ("c1".into(), 6)]);
        let glob = |e: &str| {
            c1(Query {
                event_type: Some(e.into()),
                ..Query::default()
            })
        };
        assert_eq!(seqs(&j.query(&glob("bot.*")).unwrap()), vec![1, 2, 3, 4, 5]);
        assert_eq!(seqs(&j.query(&glob("*")).unwrap()), vec![1, 2, 3, 4, 5, 6]);
        assert!(
            j.query(&glob("bot.")).unwrap().is_empty(),
            "no glob, no prefix"
        );

        let mut n = 0;
        j.each(&Query::default(), |_| {
            n += 1;
            n < 3
        })
        .unwrap();
        assert_eq!(n, 3, "each stops when told");

        let a = j.attempts("c1", 2).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!((a[0].status, a[0].replay), (Some(400), false));
        assert_eq!((a[1].status, a[1].replay), (Some(200), true));
        assert_eq!(a[1].latency, Duration::from_micros(1500));
        assert_eq!(&a[1].response_head[..], b"nope");
        assert_eq!(a[1].response_headers[0].name, "x-r");
        assert!(a[1].truncated);
        assert!(j.get("c1", 7).unwrap().is_none());
        assert_eq!(j.get("c2", 1).unwrap().unwrap().event.received_at_ms, 3500);
    }

    #[test]
    fn searches_by_header_json_path_and_text_in_tables_and_body_files() {
        use crate::journal::{HeaderMatch, Search};
        use meethook_proto::Header;

        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let mut evs: Vec<Event> = (1..=8)
            .map(|i| {
                let code = if i % 2 == 0 { "in_call_recording" } else { "joining_call" };
                let mut e = mb(i, "aaaa-1", "bot.status_change", 1000 * i as i64);
                e.body = Bytes::from(format!(
                    r#"{{"event":"bot.status_change","data":{{"bot_id":"aaaa-1","status":{{"code":"{code}"}},"n":{i}}}}}"#
                ));
                e.headers.push(Header::new("Svix-Id", format!("msg_{i}")));
                e
            })
            .collect();
        // A body file (1 MiB and more): SQL cannot look inside, the check after it does.
        let pad = "x".repeat(1 << 20);
        evs[7].body = Bytes::from(format!(
            r#"{{"event":"bot.status_change","data":{{"status":{{"code":"in_call_recording"}},"pad":"{pad}"}}}}"#
        ));
        // An escaped value: found although its text is not in the body as typed.
        evs[2].body = Bytes::from_static(
            br#"{"event":"bot.status_change","data":{"status":{"code":"in_call_\u0072ecording"}}}"#,
        );
        j.insert("c", &evs, 0).unwrap();
        let find = |search: Search| {
            let q = Query {
                channel: Some("c".into()),
                search,
                ..Query::default()
            };
            (seqs(&j.query(&q).unwrap()), j.count(&q).unwrap())
        };
        let json = |s: &str| Search {
            json: Some(s.parse().unwrap()),
            ..Search::default()
        };
        let rec = vec![2, 3, 4, 6, 8];
        assert_eq!(
            find(json("data.status.code = in_call_recording")),
            (rec.clone(), 5)
        );
        assert_eq!(
            find(json("data.status.code != in_call_recording")),
            (vec![1, 5, 7], 3)
        );
        assert_eq!(find(json("data.status.code ~ RECORD")), (rec, 5));
        assert_eq!(find(json("data.pad exists")).0, vec![8]);
        assert_eq!(find(json("data.n = 5")).0, vec![5]);
        let header = |s: &str| Search {
            header: Some(s.parse::<HeaderMatch>().unwrap()),
            ..Search::default()
        };
        assert_eq!(find(header("svix-id:MSG_7")).0, vec![7]);
        assert_eq!(find(header("svix-id")).0, vec![1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(find(header("x-none")).0.is_empty());
        let text = |s: &str| Search {
            text: Some(s.into()),
            ..Search::default()
        };
        assert_eq!(find(text("JOINING")).0, vec![1, 5, 7]);
        assert_eq!(find(text("msg_4")).0, vec![4], "header values too");
        assert_eq!(find(text("xxxxxxxx")).0, vec![8], "inside a body file");

        // The last N that match, and pages newest first within a budget.
        let q = Query {
            channel: Some("c".into()),
            search: json("data.status.code = in_call_recording"),
            limit: Some(2),
            ..Query::default()
        };
        assert_eq!(seqs(&j.query(&q).unwrap()), vec![6, 8]);
        let scan = j.newest(&q, 2, usize::MAX).unwrap();
        assert_eq!((seqs(&scan.events), scan.stopped_at), (vec![8, 6], None));
        let q = Query {
            search: json("data.status.code = joining_call"),
            ..q
        };
        let scan = j.newest(&q, 10, 1).unwrap();
        // The body file passes SQL: it is the one row looked at, and does not match.
        assert_eq!((seqs(&scan.events), scan.stopped_at), (vec![], Some(8)));
        let scan = j.newest(&q, 10, usize::MAX).unwrap();
        assert_eq!((seqs(&scan.events), scan.stopped_at), (vec![7, 5, 1], None));
    }
}
