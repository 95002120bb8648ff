//! `events bots`: each Meeting BaaS bot the journal saw, from the daemon's per-bot query (the
//! same one behind the inspector's meeting view).

use std::io::{self, Write};

use anyhow::bail;
use meethook_daemon::bots::{self, Bot};

use super::{describe_channels, local, open, printable, quiet_pipe, Where};

/// `2 min 5 s`, `40 s`, `1 h 02 min`.
fn span(ms: i64) -> String {
    let s = (ms.max(0) + 500) / 1000;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
    }
}

/// The lines `events bots` prints about one bot.
fn describe(b: &Bot) -> Vec<String> {
    let short: String = b.bot_id.chars().take(8).collect();
    let state = if b.finished {
        format!("{} (final)", b.state)
    } else {
        b.state.clone()
    };
    let mut lines = vec![format!(
        "{:<9} {:<20} #{}–#{}  {} → {}  {} event{}",
        printable(&short, false),
        printable(&state, false),
        b.first_seq,
        b.last_seq,
        local(b.first_at),
        local(b.last_at),
        b.events,
        if b.events == 1 { "" } else { "s" }
    )];
    if !b.time_per_state.is_empty() {
        let times: Vec<String> = b
            .time_per_state
            .iter()
            .map(|t| format!("{} {}", printable(&t.state, false), span(t.ms)))
            .collect();
        lines.push(format!("          time: {}", times.join(" · ")));
    }
    let mut facts = Vec::new();
    if b.retries > 0 {
        facts.push(format!(
            "{} join retr{} (last {})",
            b.retries,
            if b.retries == 1 { "y" } else { "ies" },
            b.last_retry.as_deref().unwrap_or("?")
        ));
    }
    if b.duplicates > 0 {
        facts.push(format!(
            "{} duplicate{}",
            b.duplicates,
            if b.duplicates == 1 { "" } else { "s" }
        ));
    }
    if !b.artifacts.is_empty() {
        let expired = b
            .artifacts
            .iter()
            .filter(|a| a.saved.as_deref() != Some("saved") && a.expired == Some(true))
            .count();
        let mut t = format!(
            "artifacts {}/{} saved",
            b.artifacts_saved,
            b.artifacts.len()
        );
        if expired > 0 {
            t.push_str(&format!(", {expired} unsaved with an expired link"));
        }
        facts.push(t);
    }
    if !facts.is_empty() {
        lines.push(format!("          {}", facts.join(" · ")));
    }
    for s in b.statuses.iter().filter(|s| s.out_of_order_after.is_some()) {
        lines.push(format!(
            "          ! #{} {} arrived after {} (out of lifecycle order; kept where it arrived)",
            s.seq,
            printable(&s.code, false),
            printable(s.out_of_order_after.as_deref().unwrap_or(""), false)
        ));
    }
    lines
}

/// Prints every bot of the channel, most recent first (or one JSON object per bot).
pub(super) fn bots(at: &Where, bot: Option<&str>, json: bool) -> anyhow::Result<()> {
    let journal = open(&at.data)?;
    let chans = journal.channels()?;
    let channel = match (&at.channel, chans.as_slice()) {
        (Some(c), _) if chans.iter().any(|(id, _)| id == c) => c.clone(),
        (Some(c), _) => bail!(
            "no channel {c:?} in the journal in {} (it has: {})",
            at.data.display(),
            describe_channels(&chans)
        ),
        (None, [(only, _)]) => only.clone(),
        (None, []) => {
            eprintln!("no events journaled yet");
            return Ok(());
        }
        (None, _) => bail!(
            "the journal in {} holds several channels: pick one with --channel ({})",
            at.data.display(),
            describe_channels(&chans)
        ),
    };
    let now = meethook_proto::clock::now_ms();
    let list = match bot {
        Some(b) => match bots::one(&journal, &channel, b, now)? {
            Some(one) => vec![one],
            None => bail!("no bot {b:?} in channel {channel} (meethook events bots lists them)"),
        },
        None => bots::list(&journal, &channel, now)?,
    };
    if list.is_empty() && !json {
        eprintln!("no Meeting BaaS bots in channel {channel}");
        return Ok(());
    }
    let mut out = io::stdout().lock();
    let r: io::Result<()> = (|| {
        for b in &list {
            if json {
                let text = serde_json::to_string(b).map_err(io::Error::other)?;
                writeln!(out, "{text}")?;
            } else {
                for l in describe(b) {
                    writeln!(out, "{l}")?;
                }
            }
        }
        out.flush()
    })();
    quiet_pipe(r)
}

#[cfg(test)]
mod tests {
    use super::span;

    #[test]
    fn spans() {
        assert_eq!(span(40_000), "40 s");
        assert_eq!(span(125_000), "2 min 05 s");
        assert_eq!(span(3_725_000), "1 h 02 min");
    }
}
