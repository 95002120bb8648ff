//! The JSON the API answers with: list items, one event's detail, and the journal reads
//! behind them (blocking: called on the blocking pool).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine;
use meethook_daemon::journal::{Journal, JournalError, Query, Search, State, Stored};
use meethook_proto::meeting::Summary;
use serde::Serialize;
use serde_json::Value;

/// Header values shown as `••••` unless `?reveal=1`.
pub(crate) const SECRET_HEADERS: &[&str] = &[
    "x-meeting-baas-api-key",
    "x-mb-secret",
    "authorization",
    "cookie",
    "set-cookie",
    "svix-signature",
    "webhook-signature",
];

/// What a masked header value reads as.
pub(crate) const MASK: &str = "••••";

/// Longest page of `GET /api/events`.
pub(crate) const MAX_LIMIT: usize = 500;

/// Bytes of events a filtered page looks at before it answers with what it found (and
/// `next` where it stopped): a rare match in a big journal never makes one slow request.
const SCAN_BUDGET: usize = 16 << 20;

/// One row of the list, and the data of each `event: event` of the stream.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Item {
    /// Seq in its channel.
    pub seq: u64,
    /// The channel.
    pub channel: String,
    /// When the relay received it, ms since the Unix epoch.
    pub received_at: i64,
    /// The Meeting BaaS event type, when the body is a webhook.
    pub event: Option<String>,
    /// The bot id, when present.
    pub bot_id: Option<String>,
    /// Status code or error code from the body, when present.
    pub code: Option<String>,
    /// One line about the body (`bot 8d2f4c1a… in_call_recording`), empty when unknown.
    pub summary: String,
    /// `pending`, `retrying` (pending with attempts made), `delivered`, `failed`, `skipped`.
    pub state: String,
    /// Attempts `listen` made.
    pub attempts: u32,
    /// The handler's last status, when it answered.
    pub last_status: Option<u16>,
    /// The last attempt's time to answer, in ms (tenths kept).
    pub latency_ms: Option<f64>,
    /// The earlier event this one repeats (same svix-id, or same unsigned body).
    pub duplicate_of: Option<u64>,
    /// When a retrying event's next attempt goes, ms since the Unix epoch (known while the
    /// listener serving this inspector is running).
    pub next_attempt_at: Option<i64>,
    /// The `[[route]]` it goes to (`unrouted`: none took it); `None` without routes.
    pub route: Option<String>,
}

/// The state shown for a journal state: `retrying` for a pending event with attempts.
pub(crate) fn state_name(state: State, attempts: u32) -> &'static str {
    match state {
        State::Pending if attempts > 0 => "retrying",
        s => s.name(),
    }
}

/// A duration in ms, tenths kept.
pub(crate) fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

impl Item {
    /// The item of a journaled event; `latency` is its last `listen` attempt's.
    pub(crate) fn of(s: &Stored, latency: Option<std::time::Duration>) -> Item {
        let summary = Summary::parse(&s.event.body);
        Item {
            seq: s.event.seq,
            channel: s.channel.clone(),
            received_at: s.event.received_at_ms,
            event: summary
                .as_ref()
                .map(|m| m.event.clone())
                .or_else(|| s.event_type.clone()),
            bot_id: summary
                .as_ref()
                .and_then(|m| m.bot_id.clone())
                .or_else(|| s.bot_id.clone()),
            code: summary.as_ref().and_then(|m| m.code.clone()),
            summary: summary.map(|m| m.detail()).unwrap_or_default(),
            state: state_name(s.state, s.attempts).to_string(),
            attempts: s.attempts,
            last_status: s.last_status,
            latency_ms: latency.map(ms),
            duplicate_of: s.duplicate_of,
            next_attempt_at: None,
            route: s.route.clone(),
        }
    }
}

/// `GET /api/events` filters.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListParams {
    pub(crate) channel: Option<String>,
    pub(crate) event: Option<String>,
    pub(crate) bot: Option<String>,
    pub(crate) state: Option<State>,
    /// With `state`: `retrying` (attempts made) or `pending` (none yet).
    pub(crate) attempted: Option<bool>,
    pub(crate) search: Search,
    pub(crate) limit: usize,
    pub(crate) before: Option<u64>,
}

impl ListParams {
    /// Reads the query string; `Err` says which parameter is wrong.
    pub(crate) fn parse(query: &[(String, String)]) -> Result<ListParams, String> {
        let mut p = ListParams {
            limit: 50,
            ..ListParams::default()
        };
        for (k, v) in query {
            if v.is_empty() {
                continue;
            }
            match k.as_str() {
                "channel" => p.channel = Some(v.clone()),
                "event" => p.event = Some(v.clone()),
                "bot" => p.bot = Some(v.clone()),
                "state" => {
                    p.state = Some(match v.as_str() {
                        "retrying" => State::Pending,
                        s => State::parse(s).ok_or_else(|| {
                            format!(
                            "state {v:?}: expected pending, retrying, delivered, failed or skipped"
                        )
                        })?,
                    });
                    p.attempted = match v.as_str() {
                        "retrying" => Some(true),
                        "pending" => Some(false),
                        _ => None,
                    };
                }
                "header" => p.search.header = Some(v.parse()?),
                "where" => p.search.json = Some(v.parse()?),
                "q" => p.search.text = Some(v.clone()),
                "limit" => {
                    p.limit = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| format!("limit {v:?}: expected a number above 0"))?
                        .min(MAX_LIMIT)
                }
                "before" => {
                    p.before = Some(
                        v.parse()
                            .map_err(|_| format!("before {v:?}: expected a seq"))?,
                    )
                }
                _ => {}
            }
        }
        Ok(p)
    }
}

/// One page of the list, newest first; `next` is the `before` of the page after it.
#[derive(Debug, Serialize)]
pub(crate) struct Page {
    pub(crate) events: Vec<Item>,
    pub(crate) next: Option<u64>,
}

/// A journal reader for the inspector's own requests, apart from the daemon's connection
/// (a slow page never holds the delivery loop's lock).
pub(crate) struct Reader {
    dir: PathBuf,
    /// Kept once opened through a listener's WAL (it then sees every later commit). A
    /// journal opened with no WAL is read as immutable, so it is opened again each time.
    cached: Mutex<Option<Journal>>,
}

impl Reader {
    pub(crate) fn new(dir: &Path) -> Reader {
        Reader {
            dir: dir.to_path_buf(),
            cached: Mutex::new(None),
        }
    }

    /// A journal handle to read with.
    pub(crate) fn journal(&self) -> Result<Journal, JournalError> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(j) = cached.as_ref() {
            return Ok(j.clone());
        }
        let wal = self.dir.join("journal.sqlite-wal").exists();
        let j = Journal::open_read_only(&self.dir)?;
        if wal {
            *cached = Some(j.clone());
        }
        Ok(j)
    }
}

/// The channel to show when none is asked for: `preferred`, else the journal's only
/// channel, else the one with the newest event; `None` for an empty journal.
pub(crate) fn default_channel(
    j: &Journal,
    preferred: Option<&str>,
) -> Result<Option<String>, JournalError> {
    if let Some(c) = preferred {
        return Ok(Some(c.to_string()));
    }
    let channels = j.channels()?;
    if channels.len() <= 1 {
        return Ok(channels.into_iter().next().map(|(c, _)| c));
    }
    let newest = j.keys(&Query {
        limit: Some(1),
        ..Query::default()
    })?;
    Ok(newest.into_iter().next().map(|(c, _)| c))
}

/// The last `listen` attempt's latency of each event.
fn latency(
    j: &Journal,
    channel: &str,
    seq: u64,
) -> Result<Option<std::time::Duration>, JournalError> {
    Ok(j.attempts(channel, seq)?
        .into_iter()
        .rev()
        .find(|a| !a.replay)
        .map(|a| a.latency))
}

impl ListParams {
    /// The journal query of these filters in `channel` (paging aside).
    pub(crate) fn query(&self, channel: &str) -> Query {
        Query {
            channel: Some(channel.to_string()),
            bot_id: self.bot.clone(),
            event_type: self.event.clone(),
            state: self.state,
            attempted: self.attempted,
            search: self.search.clone(),
            ..Query::default()
        }
    }
}

/// One page of `channel`'s events matching `p`, newest first.
pub(crate) fn list(j: &Journal, channel: &str, p: &ListParams) -> Result<Page, JournalError> {
    let q = Query {
        seqs: match p.before {
            Some(0) | Some(1) => {
                return Ok(Page {
                    events: Vec::new(),
                    next: None,
                })
            }
            Some(b) => vec![1..=b - 1],
            None => Vec::new(),
        },
        ..p.query(channel)
    };
    // One more than asked: whether there is a next page.
    let scan = j.newest(&q, p.limit + 1, SCAN_BUDGET)?;
    let mut rows = scan.events;
    let more = rows.len() > p.limit;
    rows.truncate(p.limit);
    let mut events = Vec::with_capacity(rows.len());
    for s in &rows {
        events.push(Item::of(s, latency(j, channel, s.event.seq)?));
    }
    let next = match scan.stopped_at {
        // The budget ran out: go on below the last seq looked at.
        Some(seq) => Some(seq),
        None if more => events.last().map(|i| i.seq),
        None => None,
    };
    Ok(Page { events, next })
}

/// The items of the events matching `q`, in query order.
pub(crate) fn items(j: &Journal, q: &Query) -> Result<Vec<Item>, JournalError> {
    let rows = j.query(q)?;
    let mut out = Vec::with_capacity(rows.len());
    for s in &rows {
        out.push(Item::of(s, latency(j, &s.channel, s.event.seq)?));
    }
    Ok(out)
}

/// The list item of one event, if journaled.
pub(crate) fn item(j: &Journal, channel: &str, seq: u64) -> Result<Option<Item>, JournalError> {
    match j.get(channel, seq)? {
        Some(s) => Ok(Some(Item::of(&s, latency(j, channel, seq)?))),
        None => Ok(None),
    }
}

/// A header as shown: `[name, value]`, a secret's value masked unless `reveal`.
fn shown(h: &meethook_proto::Header, reveal: bool) -> [String; 2] {
    let value = if !reveal && is_secret(&h.name) {
        MASK.to_string()
    } else {
        String::from_utf8_lossy(&h.value).into_owned()
    };
    [h.name.clone(), value]
}

/// Whether a header's value is masked unless revealed.
pub(crate) fn is_secret(name: &str) -> bool {
    SECRET_HEADERS.contains(&name.to_ascii_lowercase().as_str())
}

/// `GET /api/events/{seq}`: the item, the request and every attempt.
pub(crate) fn detail(
    j: &Journal,
    channel: &str,
    seq: u64,
    reveal: bool,
) -> Result<Option<Value>, JournalError> {
    let Some(s) = j.get(channel, seq)? else {
        return Ok(None);
    };
    let attempts = j.attempts(channel, seq)?;
    let last = attempts.iter().rev().find(|a| !a.replay).map(|a| a.latency);
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut v = serde_json::to_value(Item::of(&s, last)).expect("an item serializes");
    let headers: Vec<[String; 2]> = s.event.headers.iter().map(|h| shown(h, reveal)).collect();
    let attempts: Vec<Value> = attempts
        .iter()
        .map(|a| {
            let response_headers: Vec<[String; 2]> = a
                .response_headers
                .iter()
                .map(|h| shown(h, reveal))
                .collect();
            serde_json::json!({
                "at": a.started_at_ms,
                "attempt": a.attempt,
                "status": a.status,
                "error": a.error,
                "duration_ms": ms(a.latency),
                "response_headers": response_headers,
                "response_body_base64": b64.encode(&a.response_head),
                "truncated": a.truncated,
                "replay": a.replay,
            })
        })
        .collect();
    let obj = v.as_object_mut().expect("an item is an object");
    obj.insert("method".into(), s.event.method.clone().into());
    obj.insert("path".into(), s.event.path.clone().into());
    obj.insert(
        "headers".into(),
        serde_json::to_value(headers).expect("strings"),
    );
    obj.insert("body_base64".into(), b64.encode(&s.event.body).into());
    obj.insert(
        "body".into(),
        match std::str::from_utf8(&s.event.body) {
            Ok(t) => t.into(),
            Err(_) => Value::Null,
        },
    );
    // `attempts` is the list here; the list item's count moves to `attempt_count`.
    obj.insert("attempt_count".into(), s.attempts.into());
    obj.insert("attempts".into(), attempts.into());
    obj.insert("pinned".into(), s.pinned.into());
    // Where a replay goes by default (the listener's --forward-to), for the page's curl.
    obj.insert("forward_to".into(), j.forward_to(channel)?.into());
    Ok(Some(v))
}
