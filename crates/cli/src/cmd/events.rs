//! `meethook events list|show|export|import|pin|unpin|prune`: the local journal, read,
//! carried around and pruned; `meethook events retry|skip`: moving a running `listen` past
//! a failing event.
//!
//! Export format (NDJSON, one event per line): `{"channel", "seq", "received_at_ms", "method",
//! "path", "headers": [[name, base64 value], …], "body": base64, "event", "bot_id"}`, the last
//! two derived from the body (for `jq`), ignored on import. Delivery state and attempts are not
//! exported, so export → import → export gives the same bytes.

use std::io::{self, BufRead, Write};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use base64::Engine;
use bytes::Bytes;
use meethook_daemon::control::Request;
use meethook_daemon::journal::{Journal, Query, State, Stored};
use meethook_proto::human::human_size as size_text;
use meethook_proto::meeting::Summary;
use meethook_proto::{Event, Header};
use serde::{Deserialize, Serialize};

/// Which journal, and which channel in it.
#[derive(clap::Args, Debug, Clone)]
pub struct Where {
    /// Directory of the local journal (the `--data` of `meethook listen` or `meethook dev`).
    #[arg(long, env = "MEETHOOK_DATA", default_value = "./meethook-data")]
    pub data: PathBuf,
    /// Channel id; needed only when the journal holds several channels and it is ambiguous.
    #[arg(long, value_name = "ID")]
    pub channel: Option<String>,
}

/// Filters shared by `events list`, `events export` and `replay`.
#[derive(clap::Args, Debug, Clone)]
pub struct Filters {
    /// Only events of this bot (its full id or first characters, as `events list` shows).
    #[arg(long, value_name = "ID")]
    pub bot: Option<String>,
    /// Only this Meeting BaaS event type (`complete`, `failed`, `bot.status_change`, …).
    #[arg(long, value_name = "TYPE")]
    pub event: Option<String>,
    /// Only events whose delivery failed.
    #[arg(long)]
    pub failed: bool,
    /// Only events received since: a duration back from now (`2h`, `1d`), an RFC 3339 time
    /// (`2025-06-11T10:00:00Z`) or a local date (`2025-06-11`).
    #[arg(long, value_name = "DUR|TIME", value_parser = since)]
    pub since: Option<i64>,
}

impl Filters {
    /// The journal query these filters make, for `channel`.
    pub fn query(&self, channel: Option<String>) -> Query {
        Query {
            channel,
            bot_id: self.bot.clone(),
            event_type: self.event.clone(),
            state: self.failed.then_some(State::Failed),
            since_ms: self.since,
            ..Query::default()
        }
    }

    fn is_empty(&self) -> bool {
        self.bot.is_none() && self.event.is_none() && !self.failed && self.since.is_none()
    }
}

/// `events` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// List journaled events as a table (or JSON lines), oldest first.
    #[command(after_help = "Examples:
  meethook events list
  meethook events list --bot 8d2f4c1a --json
  meethook events list --failed --since 1d")]
    List {
        #[command(flatten)]
        at: Where,
        #[command(flatten)]
        filters: Filters,
        /// Show only the last N matching events (0 = all).
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: usize,
        /// Print one JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show one event: request line, every header, the body and every delivery attempt.
    Show {
        /// The event's seq (the `#N` that `listen` and `events list` print).
        seq: u64,
        #[command(flatten)]
        at: Where,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Show credential headers (`x-meeting-baas-api-key`, `x-mb-secret`, `authorization`, …)
        /// instead of hiding their values.
        #[arg(long)]
        reveal: bool,
        /// Show the whole body, however long (by default about a screenful: 4 KiB or 60 lines).
        #[arg(long, conflicts_with_all = ["json", "body_only", "raw"])]
        full: bool,
        /// Print only the body, whole: re-indented when it is JSON, as stored otherwise.
        #[arg(long, conflicts_with_all = ["json", "raw"])]
        body_only: bool,
        /// Print only the body's exact bytes (binary safe, for `> file`).
        #[arg(long, conflicts_with = "json")]
        raw: bool,
    },
    /// Write events as NDJSON to stdout (bodies and header values in base64).
    Export {
        #[command(flatten)]
        at: Where,
        #[command(flatten)]
        filters: Filters,
        /// Only the last N matching events.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Add events from an `events export` file to the journal, as delivered history.
    ///
    /// An event whose (channel, seq) is already journaled is skipped, never overwritten.
    /// Imported events are never forwarded by `listen`; import them under a channel id of
    /// their own (`--channel`) rather than one a `listen` is receiving.
    Import {
        /// The NDJSON file (`-` for stdin).
        file: PathBuf,
        /// Directory of the journal to import into (created if needed).
        #[arg(long, env = "MEETHOOK_DATA", default_value = "./meethook-data")]
        data: PathBuf,
        /// Put every event under this channel id instead of the one in the file.
        #[arg(long, value_name = "ID")]
        channel: Option<String>,
    },
    /// Keep an event for good: `listen --retention` and `events prune` never remove it.
    Pin {
        /// The event's seq.
        seq: u64,
        #[command(flatten)]
        at: Where,
    },
    /// Make a running `listen`/`dev` retry the event it keeps failing on now, without
    /// waiting for its backoff.
    #[command(after_help = "Example (the retry line of `listen` names the seq):
  meethook events retry 5")]
    Retry {
        /// The event's seq.
        seq: u64,
        #[command(flatten)]
        at: Where,
    },
    /// Let `listen --retention` and `events prune` remove a pinned event again.
    Unpin {
        /// The event's seq.
        seq: u64,
        #[command(flatten)]
        at: Where,
    },
    /// Make a running `listen`/`dev` give up on an event: recorded as skipped, the events
    /// behind it go on. A later event is skipped when its turn comes.
    #[command(after_help = "Example:
  meethook events skip 5
  meethook replay 5 --to http://localhost:3000/hook   # send it again later")]
    Skip {
        /// The event's seq.
        seq: u64,
        #[command(flatten)]
        at: Where,
    },
    /// Remove settled events older than --older-than now (`listen` does it past --retention).
    ///
    /// Delivered, failed and skipped events go, with their attempts and body files. Kept whatever their age: pending events (and those after a channel's first pending
    /// one), each channel's newest event (the listener resumes from it) and pinned events.
    #[command(after_help = "Examples:
  meethook events prune --dry-run
  meethook events prune --older-than 1d")]
    Prune {
        /// Directory of the journal.
        #[arg(long, env = "MEETHOOK_DATA", default_value = "./meethook-data")]
        data: PathBuf,
        /// Only this channel's events (default: every channel in the journal).
        #[arg(long, value_name = "ID")]
        channel: Option<String>,
        /// Age from which an event goes (`0` = every settled event).
        #[arg(long, value_name = "DUR", default_value = "7d", value_parser = super::duration)]
        older_than: Duration,
        /// Only say what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
}

pub async fn run(cmd: Command) -> anyhow::Result<()> {
    // The journal is SQLite: blocking calls, run off the async threads.
    tokio::task::spawn_blocking(move || run_blocking(cmd))
        .await
        .context("events task")?
}

fn run_blocking(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::List {
            at,
            filters,
            limit,
            json,
        } => list(&at, &filters, limit, json),
        Command::Show {
            seq,
            at,
            json,
            reveal,
            full,
            body_only,
            raw,
        } => {
            let body = match (full || json, body_only, raw) {
                (_, _, true) => Body::Raw,
                (_, true, _) => Body::Only,
                (true, _, _) => Body::Full,
                _ => Body::Screenful,
            };
            show(&at, seq, json, reveal, body)
        }
        Command::Export { at, filters, limit } => export(&at, &filters, limit),
        Command::Import {
            file,
            data,
            channel,
        } => import(&file, &data, channel),
        Command::Pin { seq, at } => pin(&at, seq, true),
        Command::Unpin { seq, at } => pin(&at, seq, false),
        Command::Prune {
            data,
            channel,
            older_than,
            dry_run,
        } => prune(&data, channel.as_deref(), older_than, dry_run),
        Command::Retry { seq, at } => super::control::run(&at, Request::Retry { seq }),
        Command::Skip { seq, at } => super::control::run(&at, Request::Skip { seq }),
    }
}

/// Opens the journal in `data`, which must exist, read-only. Its errors name the path and
/// the fix, so they get no context added.
pub fn open(data: &Path) -> anyhow::Result<Journal> {
    Ok(Journal::open_read_only(data)?)
}

/// Opens the journal in `data`, which must exist, to change it.
pub fn open_writable(data: &Path) -> anyhow::Result<Journal> {
    Ok(Journal::open_existing(data)?)
}

/// clap parser for `--since`: ms since the epoch.
pub fn since(s: &str) -> Result<i64, String> {
    let now = chrono::Utc::now().timestamp_millis();
    let as_duration = meethook_proto::units::parse_duration(s);
    if let Ok(d) = as_duration {
        // At most 100 years (parse_duration's bound): no overflow.
        return Ok(now - d.as_millis() as i64);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s.trim()) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d") {
        use chrono::TimeZone;
        let midnight = d.and_hms_opt(0, 0, 0).expect("midnight exists");
        if let Some(t) = chrono::Local.from_local_datetime(&midnight).earliest() {
            return Ok(t.timestamp_millis());
        }
    }
    // Shaped like a duration (`99999d`): its own error says more than the list of forms.
    if let Err(e) = as_duration {
        if s.trim().ends_with(['s', 'm', 'h', 'd']) {
            return Err(e);
        }
    }
    Err(format!(
        "invalid time {s:?}: use a duration back from now (30m, 2h, 1d), \
         an RFC 3339 time (2025-06-11T10:00:00Z) or a date (2025-06-11)"
    ))
}

/// clap parser for a seq or an inclusive range of seqs: `5`, `3-7`.
pub fn seq_range(s: &str) -> Result<RangeInclusive<u64>, String> {
    let bad = || format!("invalid seq {s:?}: use a number (5) or a range (3-7)");
    let (a, b) = s
        .split_once('-')
        .or_else(|| s.split_once(".."))
        .unwrap_or((s, s));
    let a: u64 = a.trim().parse().map_err(|_| bad())?;
    let b: u64 = b.trim().parse().map_err(|_| bad())?;
    if a == 0 || b < a {
        return Err(bad());
    }
    Ok(a..=b)
}

/// `channel (N events), …` for messages.
pub fn describe_channels(chans: &[(String, u64)]) -> String {
    chans
        .iter()
        .map(|(c, n)| format!("{c} ({n} event{})", if *n == 1 { "" } else { "s" }))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Local time with the date, to the second (`2025-06-11 10:00:03`).
fn local(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// Local time to the millisecond.
fn local_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S%.3f")
                .to_string()
        })
        .unwrap_or_else(|| ms.to_string())
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// Text safe to print on a terminal: control characters (escape sequences) become `�`.
fn printable(s: &str, keep_newlines: bool) -> String {
    s.chars()
        .map(|c| match c {
            '\n' | '\t' if keep_newlines => c,
            c if c.is_control() => '\u{fffd}',
            c => c,
        })
        .collect()
}

/// The event's one-line summary, without the bot (shown in its own column).
fn summary_text(s: &Stored, summary: Option<&Summary>) -> String {
    match summary {
        Some(sum) => {
            let d = sum.detail();
            match d.strip_prefix("bot ") {
                Some(rest) if sum.bot_id.is_some() => {
                    rest.split_once(' ').map(|(_, r)| r).unwrap_or("").into()
                }
                _ => d,
            }
        }
        None => {
            let path = if s.event.path.is_empty() {
                "/"
            } else {
                &s.event.path
            };
            printable(&format!("{} {path}", s.event.method), false)
        }
    }
}

/// Ends a stdout write quietly when the reader went away (`| head`).
fn quiet_pipe(r: io::Result<()>) -> anyhow::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to stdout"),
    }
}

/// One `events list --json` line.
#[derive(Serialize)]
struct ListLine<'a> {
    channel: &'a str,
    seq: u64,
    received_at: String,
    method: &'a str,
    path: &'a str,
    event: Option<&'a str>,
    bot_id: Option<&'a str>,
    code: Option<&'a str>,
    state: &'static str,
    attempts: u32,
    last_status: Option<u16>,
    /// The status of the latest replay answered 2xx.
    replayed: Option<u16>,
    pinned: bool,
    summary: String,
}

/// The state as `events list` and `show` print it: a failed or skipped event since
/// replayed with success says so (its state stays), a pinned one too.
fn state_text(s: &Stored) -> String {
    let mut t = s.state.name().to_string();
    if let (State::Failed | State::Skipped, Some(status)) = (s.state, s.replayed) {
        t.push_str(&format!(" · replayed {status}"));
    }
    if s.pinned {
        t.push_str(" · pinned");
    }
    t
}

fn list(at: &Where, filters: &Filters, limit: usize, json: bool) -> anyhow::Result<()> {
    let journal = open(&at.data)?;
    let chans = journal.channels()?;
    if let Some(c) = &at.channel {
        if !chans.iter().any(|(id, _)| id == c) {
            bail!(
                "no channel {c:?} in the journal in {} (it has: {})",
                at.data.display(),
                if chans.is_empty() {
                    "no events yet".into()
                } else {
                    describe_channels(&chans)
                }
            );
        }
    }
    let show_channel = at.channel.is_none() && chans.len() > 1;
    let mut q = filters.query(at.channel.clone());
    q.limit = (limit > 0).then_some(limit);
    let total = journal.count(&q)?;
    let rows = journal.query(&q)?;
    let mut out = io::stdout().lock();
    if rows.is_empty() && !json {
        eprintln!(
            "{}",
            if chans.is_empty() {
                "no events journaled yet".to_string()
            } else if filters.is_empty() {
                "no events".to_string()
            } else {
                "no events match".to_string()
            }
        );
        return Ok(());
    }
    let states: Vec<String> = rows.iter().map(state_text).collect();
    let state_width = states.iter().map(|t| t.chars().count()).fold(9, usize::max);
    let r: io::Result<()> = (|| {
        if !json {
            if show_channel {
                write!(out, "{:<22} ", "CHANNEL")?;
            }
            writeln!(
                out,
                "{:>6}  {:<19}  {:<18} {:<9} {:<state_width$} {:>5} {:>4}  SUMMARY",
                "SEQ", "TIME", "EVENT", "BOT", "STATE", "TRIES", "LAST"
            )?;
        }
        for (s, state) in rows.iter().zip(&states) {
            let summary = Summary::parse(&s.event.body);
            if json {
                let line = ListLine {
                    channel: &s.channel,
                    seq: s.event.seq,
                    received_at: rfc3339(s.event.received_at_ms),
                    method: &s.event.method,
                    path: &s.event.path,
                    event: s.event_type.as_deref(),
                    bot_id: s.bot_id.as_deref(),
                    code: summary.as_ref().and_then(|x| x.code.as_deref()),
                    state: s.state.name(),
                    attempts: s.attempts,
                    last_status: s.last_status,
                    replayed: s.replayed,
                    pinned: s.pinned,
                    summary: summary.as_ref().map(|x| x.detail()).unwrap_or_default(),
                };
                let text = serde_json::to_string(&line).map_err(io::Error::other)?;
                writeln!(out, "{text}")?;
                continue;
            }
            if show_channel {
                write!(out, "{:<22} ", printable(&s.channel, false))?;
            }
            let bot: String = s
                .bot_id
                .as_deref()
                .map(|b| printable(&b.chars().take(8).collect::<String>(), false))
                .unwrap_or_else(|| "-".into());
            let event = s
                .event_type
                .as_deref()
                .map(|e| printable(e, false))
                .unwrap_or_else(|| "-".into());
            let last = s
                .last_status
                .map(|x| x.to_string())
                .unwrap_or_else(|| "-".into());
            writeln!(
                out,
                "{:>6}  {:<19}  {:<18} {:<9} {:<state_width$} {:>5} {:>4}  {}",
                s.event.seq,
                local(s.event.received_at_ms),
                event,
                bot,
                state,
                s.attempts,
                last,
                summary_text(s, summary.as_ref())
            )?;
        }
        out.flush()
    })();
    quiet_pipe(r)?;
    if !json && (rows.len() as u64) < total {
        eprintln!(
            "(the last {} of {total} events; --limit 0 shows them all)",
            rows.len()
        );
    }
    Ok(())
}

/// Finds `seq` in `at.channel`, or in the only channel that has it.
fn find(journal: &Journal, at: &Where, seq: u64) -> anyhow::Result<Stored> {
    let d = at.data.display();
    if let Some(c) = &at.channel {
        return journal
            .get(c, seq)?
            .ok_or_else(|| anyhow!("no event #{seq} in channel {c} (journal in {d})"));
    }
    let q = Query {
        seqs: vec![seq..=seq],
        ..Query::default()
    };
    let keys = journal.keys(&q)?;
    match keys.as_slice() {
        [] => {
            bail!("no event #{seq} in the journal in {d} (see `meethook events list --data {d}`)")
        }
        [(c, _)] => journal
            .get(c, seq)?
            .ok_or_else(|| anyhow!("event #{seq} vanished from the journal")),
        several => {
            let chans: Vec<&str> = several.iter().map(|(c, _)| c.as_str()).collect();
            bail!(
                "event #{seq} exists in several channels ({}): pass --channel ID",
                chans.join(", ")
            )
        }
    }
}

/// `events show --json`.
#[derive(Serialize)]
struct ShowJson<'a> {
    channel: &'a str,
    seq: u64,
    received_at: String,
    journaled_at: String,
    method: &'a str,
    path: &'a str,
    headers: Vec<(&'a str, String)>,
    /// The body as text when it is UTF-8 (JSON bodies stay as sent).
    body: Option<String>,
    /// The body in base64 when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    body_base64: Option<String>,
    event: Option<&'a str>,
    bot_id: Option<&'a str>,
    state: &'static str,
    /// The status of the latest replay answered 2xx.
    replayed: Option<u16>,
    pinned: bool,
    attempts: Vec<AttemptJson>,
    recordings: Vec<RecordingJson>,
}

#[derive(Serialize)]
struct RecordingJson {
    kind: String,
    path: String,
    state: String,
    bytes: u64,
    error: Option<String>,
}

#[derive(Serialize)]
struct AttemptJson {
    attempt: u32,
    replay: bool,
    started_at: String,
    status: Option<u16>,
    error: Option<String>,
    latency_ms: f64,
    response_head: String,
}

/// Headers whose values are credentials: hidden by `events show` unless `--reveal`.
const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "x-meeting-baas-api-key",
    "x-mb-secret",
    "x-spoke-api-key",
];

/// A header value for display: hidden when it is a credential and `reveal` is off.
fn header_value(h: &Header, reveal: bool) -> String {
    let secret = CREDENTIAL_HEADERS
        .iter()
        .any(|n| h.name.eq_ignore_ascii_case(n));
    if secret && !reveal {
        format!("[hidden, {} bytes; --reveal shows it]", h.value.len())
    } else {
        String::from_utf8_lossy(&h.value).into_owned()
    }
}

/// How much of the body `events show` prints.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Body {
    /// About a screenful, with a note when cut.
    Screenful,
    /// All of it.
    Full,
    /// Only the body, whole (`--body-only`).
    Only,
    /// Only the body's exact bytes (`--raw`).
    Raw,
}

/// Body bytes `events show` prints without `--full`.
const SCREEN_BYTES: usize = 4096;
/// Body lines `events show` prints without `--full`.
const SCREEN_LINES: usize = 60;

/// `text` cut to about a screenful, and what it was cut at, if it was.
fn screenful(text: &str) -> (&str, Option<String>) {
    let mut end = text.len().min(SCREEN_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    if let Some((i, _)) = text[..end].match_indices('\n').nth(SCREEN_LINES - 1) {
        if i + 1 < text.len() {
            return (&text[..i], Some(format!("{SCREEN_LINES} lines")));
        }
    }
    let cut = (end < text.len()).then(|| size_text(SCREEN_BYTES as u64));
    (&text[..end], cut)
}

fn show(at: &Where, seq: u64, json: bool, reveal: bool, body: Body) -> anyhow::Result<()> {
    let journal = open(&at.data)?;
    let s = find(&journal, at, seq)?;
    if body == Body::Raw || body == Body::Only && pretty_json(&s.event.body).is_none() {
        return quiet_pipe(io::stdout().lock().write_all(&s.event.body));
    }
    if body == Body::Only {
        let p = pretty_json(&s.event.body).expect("checked above");
        return quiet_pipe(writeln!(io::stdout().lock(), "{p}"));
    }
    let attempts = journal.attempts(&s.channel, seq)?;
    let recordings = journal.recordings(&s.channel, seq)?;
    let ev = &s.event;
    let mut out = io::stdout().lock();
    if json {
        let body_text = std::str::from_utf8(&ev.body).ok().map(str::to_string);
        let v = ShowJson {
            channel: &s.channel,
            seq,
            received_at: rfc3339(ev.received_at_ms),
            journaled_at: rfc3339(s.journaled_at_ms),
            method: &ev.method,
            path: &ev.path,
            headers: ev
                .headers
                .iter()
                .map(|h| (h.name.as_str(), header_value(h, reveal)))
                .collect(),
            body_base64: body_text.is_none().then(|| b64().encode(&ev.body)),
            body: body_text,
            event: s.event_type.as_deref(),
            bot_id: s.bot_id.as_deref(),
            state: s.state.name(),
            replayed: s.replayed,
            pinned: s.pinned,
            attempts: attempts
                .iter()
                .map(|a| AttemptJson {
                    attempt: a.attempt,
                    replay: a.replay,
                    started_at: rfc3339(a.started_at_ms),
                    status: a.status,
                    error: a.error.clone(),
                    latency_ms: (a.latency.as_secs_f64() * 1e4).round() / 10.0,
                    response_head: String::from_utf8_lossy(&a.response_head).into(),
                })
                .collect(),
            recordings: recordings
                .iter()
                .map(|r| RecordingJson {
                    kind: r.kind.clone(),
                    path: r.path.clone(),
                    state: r.state.clone(),
                    bytes: r.bytes,
                    error: r.error.clone(),
                })
                .collect(),
        };
        let text = serde_json::to_string(&v)?;
        return quiet_pipe(writeln!(out, "{text}"));
    }

    let summary = Summary::parse(&ev.body);
    let r: io::Result<()> = (|| {
        writeln!(
            out,
            "event #{seq} of channel {}",
            printable(&s.channel, false)
        )?;
        writeln!(
            out,
            "received   {} (journaled {})",
            local_ms(ev.received_at_ms),
            local_ms(s.journaled_at_ms)
        )?;
        let last = s
            .last_status
            .map(|x| format!(", last status {x}"))
            .unwrap_or_default();
        let tries = match s.attempts {
            1 => "1 attempt".to_string(),
            n => format!("{n} attempts"),
        };
        let state = state_text(&s);
        let (name, extra) = state.split_at(s.state.name().len());
        writeln!(out, "state      {name} ({tries}{last}){extra}")?;
        if let Some(sum) = &summary {
            writeln!(
                out,
                "summary    {}  {}",
                printable(&sum.event, false),
                sum.detail()
            )?;
        }
        if let Some(b) = &s.bot_id {
            writeln!(out, "bot        {}", printable(b, false))?;
        }
        writeln!(out)?;
        let path = if ev.path.is_empty() { "/" } else { &ev.path };
        writeln!(
            out,
            "{} {}",
            printable(&ev.method, false),
            printable(path, false)
        )?;
        for h in &ev.headers {
            writeln!(
                out,
                "{}: {}",
                printable(&h.name, false),
                printable(&header_value(h, reveal), false)
            )?;
        }
        writeln!(out)?;
        let text = match pretty_json(&ev.body) {
            Some(p) => Some(p),
            None if ev.body.is_empty() => {
                writeln!(out, "(empty body)")?;
                None
            }
            None => match std::str::from_utf8(&ev.body) {
                Ok(t) => Some(printable(t, true)),
                Err(_) => {
                    writeln!(
                        out,
                        "({} bytes, not UTF-8; --raw prints them, `meethook events export` has them in base64)",
                        ev.body.len()
                    )?;
                    None
                }
            },
        };
        if let Some(text) = text {
            let (shown, cut) = match body {
                Body::Screenful => screenful(&text),
                _ => (text.as_str(), None),
            };
            writeln!(out, "{shown}")?;
            if let Some(at) = cut {
                writeln!(
                    out,
                    "… {} body cut at {at}: --full shows all, --body-only prints just the body \
                     (pretty), --raw prints the exact bytes",
                    size_text(ev.body.len() as u64)
                )?;
            }
        }
        writeln!(out)?;
        if attempts.is_empty() {
            writeln!(out, "no delivery attempts")?;
        } else {
            writeln!(out, "attempts ({}):", attempts.len())?;
        }
        for a in &attempts {
            let label = if a.replay {
                format!("replay #{}", a.attempt)
            } else {
                format!("#{}", a.attempt)
            };
            let answer = match (a.status, &a.error) {
                (Some(st), _) => st.to_string(),
                (None, Some(e)) => printable(e, false),
                (None, None) => "no answer".into(),
            };
            let head = String::from_utf8_lossy(&a.response_head);
            let head = if head.is_empty() {
                String::new()
            } else {
                format!("  response {head:?}")
            };
            writeln!(
                out,
                "  {label:<10} {}  → {answer} ({:.1} ms){head}",
                local_ms(a.started_at_ms),
                a.latency.as_secs_f64() * 1e3
            )?;
        }
        for r in &recordings {
            let how = match (&r.error, r.state.as_str()) {
                (Some(e), _) => format!("failed: {}", printable(e, false)),
                (None, "saved") => format!("saved, {} bytes", r.bytes),
                (None, st) => st.to_string(),
            };
            writeln!(out, "recording {:<6} {}  ({how})", r.kind, r.path)?;
        }
        out.flush()
    })();
    quiet_pipe(r)
}

/// Re-indents a JSON body, keeping its key order and number spelling; `None` if not JSON.
pub fn pretty_json(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    serde_json::from_str::<serde::de::IgnoredAny>(text).ok()?;
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        for _ in 0..depth {
            out.push_str("  ");
        }
    };
    let mut out = String::with_capacity(text.len() + text.len() / 2);
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_str {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
            continue;
        }
        match c {
            ' ' | '\t' | '\n' | '\r' => {}
            '"' => {
                in_str = true;
                out.push(c);
            }
            '{' | '[' => {
                while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
                    chars.next();
                }
                let close = if c == '{' { '}' } else { ']' };
                out.push(c);
                if chars.peek() == Some(&close) {
                    chars.next();
                    out.push(close);
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c => out.push(c),
        }
    }
    Some(out)
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// One line of an export file.
#[derive(Serialize, Deserialize)]
struct Record {
    channel: String,
    seq: u64,
    received_at_ms: i64,
    method: String,
    path: String,
    /// `[name, base64 value]`, in the order received.
    headers: Vec<(String, String)>,
    /// base64.
    body: String,
    /// Derived from the body, for readers; ignored on import.
    #[serde(default)]
    event: Option<String>,
    /// Derived from the body, for readers; ignored on import.
    #[serde(default)]
    bot_id: Option<String>,
}

fn export(at: &Where, filters: &Filters, limit: Option<usize>) -> anyhow::Result<()> {
    let journal = open(&at.data)?;
    let mut q = filters.query(at.channel.clone());
    q.limit = limit;
    let mut out = io::BufWriter::new(io::stdout().lock());
    let mut failure: Option<io::Error> = None;
    let mut n = 0u64;
    journal.each(&q, |s| {
        let summary = Summary::parse(&s.event.body);
        let rec = Record {
            channel: s.channel,
            seq: s.event.seq,
            received_at_ms: s.event.received_at_ms,
            method: s.event.method,
            path: s.event.path,
            headers: s
                .event
                .headers
                .iter()
                .map(|h| (h.name.clone(), b64().encode(&h.value)))
                .collect(),
            body: b64().encode(&s.event.body),
            event: summary.as_ref().map(|x| x.event.clone()),
            bot_id: summary.and_then(|x| x.bot_id),
        };
        let written = serde_json::to_writer(&mut out, &rec)
            .map_err(io::Error::other)
            .and_then(|()| out.write_all(b"\n"));
        match written {
            Ok(()) => {
                n += 1;
                true
            }
            Err(e) => {
                failure = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = failure {
        return quiet_pipe(Err(e));
    }
    quiet_pipe(out.flush())?;
    eprintln!("exported {n} event{}", if n == 1 { "" } else { "s" });
    Ok(())
}

fn import(file: &Path, data: &Path, channel: Option<String>) -> anyhow::Result<()> {
    let reader: Box<dyn BufRead> = if file.as_os_str() == "-" {
        Box::new(io::stdin().lock())
    } else {
        let f =
            std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
        Box::new(io::BufReader::new(f))
    };
    let mut events: Vec<(String, Event)> = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let n = i + 1;
        let line = line.with_context(|| format!("reading {} line {n}", file.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{} line {n}", file.display());
        let rec: Record = serde_json::from_str(&line)
            .with_context(|| format!("{}: not an `events export` line", at()))?;
        if rec.seq == 0 || rec.seq > i64::MAX as u64 {
            bail!("{}: seq must be between 1 and 2^63-1", at());
        }
        if rec.method.is_empty() || rec.channel.is_empty() && channel.is_none() {
            bail!("{}: empty method or channel", at());
        }
        let mut headers = Vec::with_capacity(rec.headers.len());
        for (name, value) in rec.headers {
            let value = b64()
                .decode(value)
                .with_context(|| format!("{}: header {name:?} is not base64", at()))?;
            headers.push(Header::new(name, value));
        }
        let body = b64()
            .decode(rec.body)
            .with_context(|| format!("{}: body is not base64", at()))?;
        let ev = Event {
            seq: rec.seq,
            received_at_ms: rec.received_at_ms,
            method: rec.method,
            path: rec.path,
            headers,
            body: Bytes::from(body),
        };
        events.push((channel.clone().unwrap_or(rec.channel), ev));
    }
    let journal = Journal::open(data)?;
    let (imported, skipped) = journal.import(&events, chrono::Utc::now().timestamp_millis())?;
    println!(
        "imported {imported} event{}, skipped {skipped} already in the journal ({})",
        if imported == 1 { "" } else { "s" },
        journal.path().display()
    );
    Ok(())
}

fn pin(at: &Where, seq: u64, pinned: bool) -> anyhow::Result<()> {
    let journal = open_writable(&at.data)?;
    let s = find(&journal, at, seq)?;
    if !journal.set_pinned(&s.channel, seq, pinned)? {
        bail!("event #{seq} left the journal meanwhile");
    }
    let ch = printable(&s.channel, false);
    if pinned {
        println!("pinned #{seq} of channel {ch}: kept until `meethook events unpin {seq}`");
    } else {
        println!("unpinned #{seq} of channel {ch}: it goes once older than the retention");
    }
    Ok(())
}

fn prune(
    data: &Path,
    channel: Option<&str>,
    older_than: Duration,
    dry_run: bool,
) -> anyhow::Result<()> {
    let journal = if dry_run {
        open(data)?
    } else {
        open_writable(data)?
    };
    let age_ms = older_than.as_millis().min(i64::MAX as u128) as i64;
    let cutoff = chrono::Utc::now().timestamp_millis().saturating_sub(age_ms);
    let p = journal.prune(channel, cutoff, dry_run, || true)?;
    println!(
        "{} {} event{} ({}) received before {} from {}",
        if dry_run { "would prune" } else { "pruned" },
        p.events,
        if p.events == 1 { "" } else { "s" },
        size_text(p.bytes),
        local(cutoff),
        journal.path().display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_json_keeps_order_and_numbers() {
        let p = pretty_json(br#"{"z":1.50,"a":[],"m":{"k":"a,b:{c}\"}"},"l":[1, {}]}"#).unwrap();
        assert_eq!(
            p,
            "{\n  \"z\": 1.50,\n  \"a\": [],\n  \"m\": {\n    \"k\": \"a,b:{c}\\\"}\"\n  },\n  \"l\": [\n    1,\n    {}\n  ]\n}"
        );
        assert!(pretty_json(b"{nope").is_none());
        assert!(pretty_json(b"").is_none());
        assert_eq!(pretty_json(b" 42 ").as_deref(), Some("42"));
    }

    #[test]
    fn seq_ranges_and_since() {
        assert_eq!(seq_range("5"), Ok(5..=5));
        assert_eq!(seq_range("3-7"), Ok(3..=7));
        assert_eq!(seq_range("3..7"), Ok(3..=7));
        for bad in ["0", "7-3", "x", "-1", "1-"] {
            assert!(seq_range(bad).is_err(), "{bad}");
        }
        let now = chrono::Utc::now().timestamp_millis();
        let t = since("2h").unwrap();
        assert!((now - 7_200_000 - t).abs() < 5_000);
        assert_eq!(since("1970-01-01T00:00:01Z"), Ok(1000));
        assert!(since("2025-06-11").is_ok());
        assert!(since("yesterday").is_err());
    }

    #[test]
    fn screenful_cuts_at_4_kib_or_60_lines() {
        assert_eq!(screenful("short\n"), ("short\n", None));
        let long = "é".repeat(3000);
        let (shown, cut) = screenful(&long);
        assert_eq!((shown.len(), cut.as_deref()), (4096, Some("4 KiB")));
        let lines = "x\n".repeat(100);
        let (shown, cut) = screenful(&lines);
        assert_eq!(
            (shown.lines().count(), cut.as_deref()),
            (60, Some("60 lines"))
        );
        assert_eq!(screenful(&"x\n".repeat(60)).1, None, "exactly 60 lines");
        assert_eq!(size_text(3 << 20), "3.0 MiB");
        assert_eq!(size_text(1536), "1.5 KiB");
        assert_eq!(size_text(12), "12 B");
    }

    #[test]
    fn printable_strips_escape_sequences() {
        assert_eq!(printable("a\x1b[2Jb\nc", false), "a\u{fffd}[2Jb\u{fffd}c");
        assert_eq!(printable("a\nb\tc", true), "a\nb\tc");
    }
}
