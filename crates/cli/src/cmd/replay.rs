//! `meethook replay`: re-sends journaled events to a handler, in seq order, one at a time,
//! marked `meethook-replay: true`; the work is `meethook_daemon::replay`.

use std::io::{IsTerminal, Write};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use meethook_daemon::forward::Backoff;
use meethook_daemon::journal::{Journal, JournalError, Query};
use meethook_daemon::observe::{DaemonEvent, Observer, Observers};
use meethook_daemon::replay::{ReplayConfig, Speed};
use meethook_proto::signature::SigningKey;
use tokio_util::sync::CancellationToken;

use crate::output::{Lines, Source, Stdout};

use super::events::{self, describe_channels, Filters, Where};

/// `meethook replay` flags.
#[derive(clap::Args, Debug)]
#[command(
    group(
        clap::ArgGroup::new("select")
            .required(true)
            .multiple(true)
            .args(["seqs", "bot", "event", "failed", "since", "all"])
    ),
    after_help = "Examples:
  meethook replay 12                  (to the --forward-to `listen` used)
  meethook replay 12 --to http://localhost:3000/hook
  meethook replay 3-7 10 --to http://localhost:3000/hook
  meethook replay --bot 8d2f4c1a --since 1d --speed original --to http://localhost:3000/hook
  meethook replay --all --resign whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw --to http://localhost:3000/hook"
)]
pub struct Args {
    /// Events to replay by seq: `5`, `3-7` (several allowed).
    #[arg(value_name = "SEQ", value_parser = events::seq_range)]
    seqs: Vec<RangeInclusive<u64>>,
    #[command(flatten)]
    filters: Filters,
    /// Every event of the channel.
    #[arg(long, conflicts_with_all = ["seqs", "bot", "event", "failed", "since"])]
    all: bool,
    #[command(flatten)]
    at: Where,
    /// Your handler, e.g. http://localhost:3000/hook (`--to` works too); by default the
    /// --forward-to of the `meethook listen` (or `dev`) that journaled the channel.
    #[arg(
        long = "forward-to",
        visible_alias = "to",
        value_name = "URL",
        env = "MEETHOOK_FORWARD_TO",
        value_parser = super::handler_url
    )]
    forward_to: Option<String>,
    /// `original` keeps the time between events as they arrived, `10` is ten times faster,
    /// `max` sends each event as soon as the previous one is settled.
    #[arg(long, default_value = "max", value_name = "original|N|max")]
    speed: Speed,
    /// Re-sign with this `whsec_…` secret: svix-*/webhook-* headers get a fresh timestamp and
    /// signature over the stored body; events without them get svix-* headers.
    #[arg(
        long,
        value_name = "SECRET",
        env = "MEETHOOK_RESIGN_SECRET",
        hide_env_values = true
    )]
    resign: Option<String>,
    /// Point the artifact links of final events (video, audio, diarization, transcripts; v1
    /// mp4) at the copies `listen --save-recordings` saved, served by the inspector of
    /// `listen`/`dev`/`inspect` at this address (`/artifacts/{seq}/{name}`): links expire
    /// within hours, the copies do not. Only those URL fields change, byte for byte.
    #[arg(
        long,
        value_name = "INSPECTOR_URL",
        num_args = 0..=1,
        default_missing_value = "http://127.0.0.1:4040"
    )]
    local_artifacts: Option<String>,
    /// Per-request timeout to the handler.
    #[arg(long, default_value = "30s", value_parser = super::positive_duration)]
    timeout: Duration,
    /// Attempts per event before giving up on it (0 = retry forever).
    #[arg(long, default_value_t = 5)]
    max_attempts: u32,
    /// Longest wait between retries to the handler.
    #[arg(long, default_value = "30s", value_parser = super::positive_duration)]
    max_backoff: Duration,
    /// Print one JSON object per line instead of text.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, shutdown: CancellationToken) -> anyhow::Result<()> {
    let resign = match &args.resign {
        Some(secret) => {
            let secret = super::signing_secret("--resign", secret)?;
            Some(SigningKey::from_secret(&secret).expect("signing_secret checked the base64"))
        }
        None => None,
    };
    let (journal, channel, seqs, forward_to) = {
        let args_at = args.at.clone();
        let q = query(&args);
        let singles: Vec<u64> = args
            .seqs
            .iter()
            .filter(|r| r.start() == r.end())
            .map(|r| *r.start())
            .collect();
        let to = args.forward_to.clone();
        tokio::task::spawn_blocking(move || {
            let (journal, channel, seqs) = select(&args_at, q, &singles)?;
            let to = handler(&journal, &args_at, &channel, to)?;
            anyhow::Ok((journal, channel, seqs, to))
        })
        .await
        .context("journal task")??
    };
    let (forward_to, whose) = forward_to;
    let cfg = ReplayConfig {
        channel: channel.clone(),
        forward_to: forward_to.clone(),
        timeout: args.timeout,
        max_attempts: args.max_attempts,
        backoff: Backoff {
            initial: Backoff::default().initial.min(args.max_backoff),
            max: args.max_backoff,
        },
        speed: args.speed,
        resign,
        local_artifacts: args.local_artifacts.clone(),
    };
    let n = seqs.len();
    eprintln!(
        "meethook replay: {n} event{} of channel {channel} → {forward_to}{whose}  (speed {}{})",
        if n == 1 { "" } else { "s" },
        args.speed,
        if cfg.resign.is_some() {
            ", re-signed"
        } else {
            ""
        }
    );
    let stdout = Stdout::new();
    let source = Source::Replay {
        channel: channel.clone(),
    };
    let out = Arc::new(Output {
        lines: Lines::new(args.json, source, stdout.clone()),
        stdout: stdout.clone(),
        bar: Mutex::new(Bar::new(n, std::io::stderr().is_terminal())),
    });
    out.bar.lock().expect("bar").draw();
    let observers = Observers::new(vec![out.clone() as Arc<dyn Observer>]);
    let report = meethook_daemon::replay::run(&cfg, &journal, &seqs, &observers, &shutdown).await;
    stdout.flush();
    out.bar.lock().expect("bar").clear();
    let report = report?;
    let settled = report.delivered + report.failed;
    if report.interrupted {
        bail!(
            "interrupted: {settled} of {n} events replayed ({} delivered, {} failed)",
            report.delivered,
            report.failed
        );
    }
    if !report.missing.is_empty() {
        eprintln!(
            "note: {} event(s) left the journal during the replay",
            report.missing.len()
        );
    }
    if report.failed > 0 {
        bail!(
            "{} of {n} replayed events failed ({} delivered); `meethook events show SEQ --data {}` has each attempt",
            report.failed,
            report.delivered,
            args.at.data.display()
        );
    }
    eprintln!(
        "replayed {} event{}: all delivered",
        report.delivered,
        if report.delivered == 1 { "" } else { "s" }
    );
    Ok(())
}

fn query(args: &Args) -> Query {
    let mut q = args.filters.query(args.at.channel.clone());
    q.seqs = args.seqs.clone();
    q
}

/// The handler URL (`--to`, or the one `listen` journaled for `channel`) and how it was
/// chosen, for the start line.
fn handler(
    journal: &Journal,
    at: &Where,
    channel: &str,
    to: Option<String>,
) -> anyhow::Result<(String, &'static str)> {
    if let Some(url) = to {
        return Ok((url, ""));
    }
    match journal.forward_to(channel)? {
        Some(url) => Ok((url, " (the --forward-to of `listen`)")),
        None => bail!(
            "the journal in {} has no handler URL for channel {channel} (journaled by an older \
             meethook, or imported): pass --to URL",
            at.data.display()
        ),
    }
}

/// Opens the journal to record the replay's attempts; read-only (recording nothing) when
/// it cannot be written to.
fn open(at: &Where) -> anyhow::Result<Journal> {
    match Journal::open_existing(&at.data) {
        Ok(j) => Ok(j),
        Err(e @ (JournalError::Missing(_) | JournalError::NotADirectory(_))) => Err(e.into()),
        Err(e) => {
            let j = events::open(&at.data)?;
            eprintln!("note: {e}; replaying without recording the attempts");
            Ok(j)
        }
    }
}

/// The channel and the seqs to replay, in seq order.
fn select(
    at: &Where,
    mut q: Query,
    singles: &[u64],
) -> anyhow::Result<(Journal, String, Vec<u64>)> {
    let journal = open(at)?;
    let d = at.data.display();
    let chans = journal.channels()?;
    if chans.is_empty() {
        bail!("the journal in {d} holds no events yet");
    }
    let channel = match &at.channel {
        Some(c) if chans.iter().any(|(id, _)| id == c) => c.clone(),
        Some(c) => bail!(
            "no channel {c:?} in the journal in {d} (it has: {})",
            describe_channels(&chans)
        ),
        None => {
            let keys = journal.keys(&q)?;
            let mut matched: Vec<&str> = keys.iter().map(|(c, _)| c.as_str()).collect();
            matched.sort_unstable();
            matched.dedup();
            match matched.as_slice() {
                [] if !singles.is_empty() => bail!(
                    "no event {} in the journal in {d} (it has: {}); see `meethook events list --data {d}`",
                    singles.iter().map(|s| format!("#{s}")).collect::<Vec<_>>().join(", "),
                    describe_channels(&chans)
                ),
                [] => bail!(
                    "no events match in the journal in {d} (it has: {}); see `meethook events list --data {d}`",
                    describe_channels(&chans)
                ),
                [one] => one.to_string(),
                several => bail!(
                    "events of several channels match ({}): pass --channel ID",
                    several.join(", ")
                ),
            }
        }
    };
    q.channel = Some(channel.clone());
    let mut seqs: Vec<u64> = journal.keys(&q)?.into_iter().map(|(_, s)| s).collect();
    seqs.sort_unstable();
    let missing: Vec<String> = singles
        .iter()
        .filter(|s| seqs.binary_search(s).is_err())
        .map(|s| format!("#{s}"))
        .collect();
    if !missing.is_empty() {
        bail!(
            "no event {} in channel {channel} (see `meethook events list --data {d}`)",
            missing.join(", ")
        );
    }
    if seqs.is_empty() {
        bail!("no events of channel {channel} match; see `meethook events list --data {d}`");
    }
    Ok((journal, channel, seqs))
}

/// Lines on stdout and the progress bar on stderr, kept apart: the bar is cleared before a
/// line and drawn again after it.
struct Output {
    lines: Lines,
    stdout: Arc<Stdout>,
    bar: Mutex<Bar>,
}

impl Observer for Output {
    fn notify(&self, event: &DaemonEvent) {
        let mut bar = self.bar.lock().expect("bar");
        match event {
            DaemonEvent::Replayed { done, .. } => {
                bar.done = *done;
                bar.draw();
            }
            DaemonEvent::AttemptFinished { .. }
            | DaemonEvent::Skipped { .. }
            | DaemonEvent::Waiting { .. } => {
                bar.clear();
                self.lines.notify(event);
                self.stdout.flush();
                let _ = std::io::stdout().flush();
                bar.draw();
            }
            _ => self.lines.notify(event),
        }
    }
}

/// A one-line progress bar on stderr, drawn only on a terminal.
struct Bar {
    on: bool,
    total: usize,
    done: usize,
    drawn: bool,
}

impl Bar {
    fn new(total: usize, on: bool) -> Bar {
        Bar {
            on,
            total,
            done: 0,
            drawn: false,
        }
    }

    fn draw(&mut self) {
        if !self.on {
            return;
        }
        const WIDTH: usize = 30;
        let filled = (self.done * WIDTH).checked_div(self.total).unwrap_or(WIDTH);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K[{}{}] {}/{} replayed",
            "#".repeat(filled),
            "-".repeat(WIDTH - filled),
            self.done,
            self.total
        );
        let _ = err.flush();
        self.drawn = true;
    }

    fn clear(&mut self) {
        if self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.drawn = false;
        }
    }
}
