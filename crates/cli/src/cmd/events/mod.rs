//! `meethook events list|show|export|import|pin|unpin|prune`: the local journal, read,
//! carried around and pruned; `meethook events retry|skip`: moving a running `listen` past
//! a failing event.
//!
//! Export format (NDJSON, one event per line): `{"channel", "seq", "received_at_ms", "method",
//! "path", "headers": [[name, base64 value], …], "body": base64, "event", "bot_id"}`, the last
//! two derived from the body (for `jq`), ignored on import. Delivery state and attempts are not
//! exported, so export → import → export gives the same bytes.
//!
//! # Layout
//! - `list`: `events list`, the table and `--json` lines.
//! - `bots`: `events bots`, each Meeting BaaS bot's lifecycle.
//! - `show`: `events show`, one event in full, its body re-indented.
//! - `export`: `events export` and `events import`, the NDJSON format above.
//! - `prune`: `events pin|unpin|prune`, what the retention keeps.

use std::io;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use meethook_daemon::control::Request;
use meethook_daemon::journal::{HeaderMatch, Journal, JsonCond, Query, Search, State, Stored};
pub(super) use meethook_proto::human::human_size as size_text;

mod bots;
mod export;
mod list;
mod prune;
mod show;

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
    /// Only events with this header (`NAME`), or whose NAME header contains VALUE
    /// (`NAME:VALUE`, e.g. `svix-id:msg_2x`); case ignored.
    #[arg(long, value_name = "NAME[:VALUE]")]
    pub header: Option<HeaderMatch>,
    /// Only events whose JSON body meets a condition: `PATH = VALUE`, `PATH != VALUE`,
    /// `PATH ~ TEXT` (contains, case ignored) or `PATH exists`
    /// (e.g. `data.status.code = in_call_recording`).
    #[arg(long = "where", value_name = "COND")]
    pub cond: Option<JsonCond>,
    /// Only events whose body or headers contain this text (case ignored).
    #[arg(long, value_name = "TEXT")]
    pub text: Option<String>,
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
            search: Search {
                header: self.header.clone(),
                json: self.cond.clone(),
                text: self.text.clone(),
            },
            ..Query::default()
        }
    }

    fn is_empty(&self) -> bool {
        self.query(None).search.is_empty()
            && self.bot.is_none()
            && self.event.is_none()
            && !self.failed
            && self.since.is_none()
    }
}

/// `events` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// List journaled events as a table (or JSON lines), oldest first.
    #[command(after_help = "Examples:
  meethook events list
  meethook events list --bot 8d2f4c1a --json
  meethook events list --failed --since 1d
  meethook events list --where 'data.status.code = in_call_recording'
  meethook events list --header svix-id:msg_2x --text speaker")]
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
    /// Each Meeting BaaS bot seen: first/last event, current or final state, time per state,
    /// join retries, duplicates, artifacts saved, and events out of lifecycle order (flagged
    /// with `!`, never reordered).
    #[command(after_help = "Examples:
  meethook events bots
  meethook events bots --bot 8d2f4c1a
  meethook events bots --json | jq '.time_per_state'")]
    Bots {
        #[command(flatten)]
        at: Where,
        /// Only this bot (its id or first characters).
        #[arg(long, value_name = "ID")]
        bot: Option<String>,
        /// Print one JSON object per bot, its timeline included.
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

/// Runs `meethook events …`.
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
        } => list::list(&at, &filters, limit, json),
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
                (_, _, true) => show::Body::Raw,
                (_, true, _) => show::Body::Only,
                (true, _, _) => show::Body::Full,
                _ => show::Body::Screenful,
            };
            show::show(&at, seq, json, reveal, body)
        }
        Command::Bots { at, bot, json } => bots::bots(&at, bot.as_deref(), json),
        Command::Export { at, filters, limit } => export::export(&at, &filters, limit),
        Command::Import {
            file,
            data,
            channel,
        } => export::import(&file, &data, channel),
        Command::Pin { seq, at } => prune::pin(&at, seq, true),
        Command::Unpin { seq, at } => prune::pin(&at, seq, false),
        Command::Prune {
            data,
            channel,
            older_than,
            dry_run,
        } => prune::prune(&data, channel.as_deref(), older_than, dry_run),
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
pub(super) fn local(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// Local time to the millisecond.
pub(super) fn local_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S%.3f")
                .to_string()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// UTC RFC 3339 to the millisecond (`2025-06-11T10:00:03.120Z`), for JSON output.
pub(super) fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// Text safe to print on a terminal: control characters (escape sequences) become `�`.
pub(super) fn printable(s: &str, keep_newlines: bool) -> String {
    s.chars()
        .map(|c| match c {
            '\n' | '\t' if keep_newlines => c,
            c if c.is_control() => '\u{fffd}',
            c => c,
        })
        .collect()
}

/// Ends a stdout write quietly when the reader went away (`| head`).
pub(super) fn quiet_pipe(r: io::Result<()>) -> anyhow::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to stdout"),
    }
}

/// The state as `events list` and `show` print it: a failed or skipped event since
/// replayed with success says so (its state stays), a pinned one too.
pub(super) fn state_text(s: &Stored) -> String {
    let mut t = s.state.name().to_string();
    if let (State::Failed | State::Skipped, Some(status)) = (s.state, s.replayed) {
        t.push_str(&format!(" · replayed {status}"));
    }
    if s.pinned {
        t.push_str(" · pinned");
    }
    t
}

/// Finds `seq` in `at.channel`, or in the only channel that has it.
pub(super) fn find(journal: &Journal, at: &Where, seq: u64) -> anyhow::Result<Stored> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn printable_strips_escape_sequences() {
        assert_eq!(printable("a\x1b[2Jb\nc", false), "a\u{fffd}[2Jb\u{fffd}c");
        assert_eq!(printable("a\nb\tc", true), "a\nb\tc");
    }
}
