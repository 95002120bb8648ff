//! `meethook replay`: re-sends journaled events to a handler, in seq order, one at a time,
//! marked `meethook-replay: true`; the work is `meethook_daemon::replay`.

use std::io::{IsTerminal, Write};
use std::ops::RangeInclusive;
use std::time::Duration;

use anyhow::{bail, Context};
use meethook_daemon::deliver::Backoff;
use meethook_daemon::journal::Query;
use meethook_daemon::output::{format_line, Line};
use meethook_daemon::replay::{ReplayConfig, Signer, Speed, Step};
use meethook_proto::meeting::Summary;
use meethook_proto::Event;
use tokio_util::sync::CancellationToken;

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
    /// Your handler, e.g. http://localhost:3000/hook (`--to` works too).
    #[arg(
        long = "forward-to",
        visible_alias = "to",
        value_name = "URL",
        env = "MEETHOOK_FORWARD_TO"
    )]
    forward_to: String,
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
    /// Per-request timeout to the handler.
    #[arg(long, default_value = "30s", value_parser = super::duration)]
    timeout: Duration,
    /// Attempts per event before giving up on it (0 = retry forever).
    #[arg(long, default_value_t = 5)]
    max_attempts: u32,
    /// Longest wait between retries to the handler.
    #[arg(long, default_value = "30s", value_parser = super::duration)]
    max_backoff: Duration,
    /// Print one JSON object per line instead of text.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, shutdown: CancellationToken) -> anyhow::Result<()> {
    let resign = match &args.resign {
        Some(secret) => {
            if meethook_relay::auth::sign(secret, "msg_check", "0", b"").is_none() {
                bail!("--resign: `whsec_` must be followed by base64 (the secret your handler verifies with)");
            }
            let secret = secret.clone();
            Some(Signer::new(move |id, ts, body| {
                meethook_relay::auth::sign(&secret, id, ts, body)
            }))
        }
        None => None,
    };
    let (journal, channel, seqs) = {
        let args_at = args.at.clone();
        let q = query(&args);
        let singles: Vec<u64> = args
            .seqs
            .iter()
            .filter(|r| r.start() == r.end())
            .map(|r| *r.start())
            .collect();
        tokio::task::spawn_blocking(move || select(&args_at, q, &singles))
            .await
            .context("journal task")??
    };
    let cfg = ReplayConfig {
        channel: channel.clone(),
        forward_to: args.forward_to.clone(),
        timeout: args.timeout,
        max_attempts: args.max_attempts,
        backoff: Backoff {
            initial: Backoff::default().initial.min(args.max_backoff),
            max: args.max_backoff,
        },
        speed: args.speed,
        resign,
    };
    let n = seqs.len();
    eprintln!(
        "meethook replay: {n} event{} of channel {channel} → {}  (speed {}{})",
        if n == 1 { "" } else { "s" },
        args.forward_to,
        args.speed,
        if cfg.resign.is_some() {
            ", re-signed"
        } else {
            ""
        }
    );
    let mut out = Output {
        json: args.json,
        channel: channel.clone(),
        bar: Bar::new(n, std::io::stderr().is_terminal()),
    };
    out.bar.draw();
    let report =
        meethook_daemon::replay::run(&cfg, &journal, &seqs, |step| out.step(step), &shutdown)
            .await?;
    out.bar.clear();
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

/// The channel and the seqs to replay, in seq order.
fn select(
    at: &Where,
    mut q: Query,
    singles: &[u64],
) -> anyhow::Result<(meethook_daemon::journal::Journal, String, Vec<u64>)> {
    let journal = events::open(&at.data)?;
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

/// Lines on stdout and the progress bar on stderr.
struct Output {
    json: bool,
    channel: String,
    bar: Bar,
}

impl Output {
    fn step(&mut self, step: Step<'_>) {
        match step {
            Step::Waiting { event, delay } => {
                if delay >= Duration::from_secs(2) && !self.json {
                    self.line(format!(
                        "      … {:.1} s until #{} (--speed)",
                        delay.as_secs_f64(),
                        event.seq
                    ));
                }
            }
            Step::Attempt {
                event,
                outcome,
                attempt,
                next_retry,
            } => {
                let line = Line::Attempt {
                    outcome,
                    attempt,
                    next_retry,
                };
                self.event_line(event, line);
            }
            Step::Settled { done, .. } => {
                self.bar.done = done;
                self.bar.draw();
            }
        }
    }

    fn event_line(&mut self, event: &Event, line: Line<'_>) {
        let summary = Summary::parse(&event.body);
        let json = self.json;
        let l = format_line(event, summary.as_ref(), line, json, Some(&self.channel));
        self.line(l);
    }

    fn line(&mut self, l: String) {
        self.bar.clear();
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{l}");
        let _ = stdout.flush();
        drop(stdout);
        self.bar.draw();
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
