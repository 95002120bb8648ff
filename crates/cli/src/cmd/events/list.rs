//! `events list`: matching events as a table, or as JSON lines.

use std::io::{self, Write};

use anyhow::bail;
use meethook_daemon::journal::Stored;
use meethook_proto::meeting::Summary;
use serde::Serialize;

use super::{
    describe_channels, local, open, printable, quiet_pipe, rfc3339, state_text, Filters, Where,
};

/// The event's one-line summary, without the bot (shown in its own column).
fn summary_text(s: &Stored, summary: Option<&Summary>) -> String {
    let text = match summary {
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
    };
    match s.duplicate_of {
        Some(of) => format!("duplicate of #{of} · {text}"),
        None => text,
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
    /// The earlier event this one repeats (same svix-id, or same unsigned body).
    duplicate_of: Option<u64>,
    /// The `[[route]]` it goes to (`unrouted`: none took it); null without routes.
    route: Option<&'a str>,
    summary: String,
}

/// Prints the last `limit` matching events (0 = all).
pub(super) fn list(at: &Where, filters: &Filters, limit: usize, json: bool) -> anyhow::Result<()> {
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
    // A ROUTE column once any event went by a `[[route]]`.
    let route_width = rows
        .iter()
        .filter_map(|s| s.route.as_deref())
        .map(|r| r.chars().count() + 1)
        .fold(0, |w, r| w.max(r.max(6)));
    let route_of = |s: &Stored| match (route_width, s.route.as_deref()) {
        (0, _) => String::new(),
        (_, r) => format!("{:<route_width$}", printable(r.unwrap_or("-"), false)),
    };
    let r: io::Result<()> = (|| {
        if !json {
            if show_channel {
                write!(out, "{:<22} ", "CHANNEL")?;
            }
            let route = if route_width > 0 {
                format!("{:<route_width$}", "ROUTE")
            } else {
                String::new()
            };
            writeln!(
                out,
                "{:>6}  {:<19}  {:<18} {:<9} {:<state_width$} {route}{:>5} {:>4}  SUMMARY",
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
                    duplicate_of: s.duplicate_of,
                    route: s.route.as_deref(),
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
                "{:>6}  {:<19}  {:<18} {:<9} {:<state_width$} {}{:>5} {:>4}  {}",
                s.event.seq,
                local(s.event.received_at_ms),
                event,
                bot,
                state,
                route_of(s),
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
