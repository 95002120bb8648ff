//! What one run measures: counts and sizes from the flags (smaller with `--smoke`), and
//! the settings lines of the report.

use std::time::Duration;

use crate::report::{fmt_size, thousands};
use crate::{pg, Args};

/// Counts for one run of the harness.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Body size and events per 1-sender run; the first is 1 KiB (figure a).
    pub(crate) bodies: Vec<(usize, u64)>,
    pub(crate) events: u64,
    pub(crate) concurrency: Vec<usize>,
    /// Rounds of the throughput phase (all concurrencies in turn, each round).
    pub(crate) rounds: usize,
    /// Concurrencies whose runs also report CPU per event (figure c; the peers too).
    pub(crate) cpu_at: Vec<usize>,
    pub(crate) backlog: u64,
    pub(crate) backlog_senders: usize,
    pub(crate) idle: usize,
    /// Warm-up events before each measured run.
    pub(crate) warmup: u64,
    /// Base of every wait's time limit.
    pub(crate) patience: Duration,
    pub(crate) skip: Vec<String>,
    /// Database of the `pg` phase.
    pub(crate) postgres: Option<String>,
    /// Run the `peers` phase.
    pub(crate) peers: bool,
    /// Phases to run, when limited (`--only`).
    pub(crate) only: Vec<String>,
    /// Events of each `order` run, per handler delay.
    pub(crate) order_events: Vec<(Duration, u64)>,
    /// Counts and durations of the `hostile` phase.
    pub(crate) hostile: crate::hostile::Sizes,
}

/// Parses a `--body-sizes` entry.
pub(crate) fn parse_body_size(s: &str) -> Result<usize, String> {
    match s.trim() {
        "64KiB" => Ok(64 << 10),
        "1MiB" => Ok(1 << 20),
        "16MiB" => Ok(16 << 20),
        other => Err(format!(
            "unknown body size {other:?}: use 64KiB, 1MiB or 16MiB"
        )),
    }
}

impl Plan {
    pub(crate) fn from_args(a: &Args) -> Plan {
        let s = a.smoke;
        let latency_events = a.latency_events.unwrap_or(if s { 200 } else { 2000 });
        let mut bodies = if s {
            vec![(1 << 10, latency_events), (64 << 10, 20), (1 << 20, 5)]
        } else {
            vec![
                (1 << 10, latency_events),
                (64 << 10, 500),
                (1 << 20, 100),
                (16 << 20, 20),
            ]
        };
        if let Some(keep) = &a.body_sizes {
            let counts: &[(usize, u64)] = &[(64 << 10, 500), (1 << 20, 100), (16 << 20, 20)];
            bodies.truncate(1);
            bodies.extend(
                counts
                    .iter()
                    .filter(|(n, _)| keep.contains(n))
                    .map(|&(n, c)| (n, if s { c.min(5) } else { c })),
            );
        }
        // Smoke keeps the full run's concurrencies so every target row is computed.
        let concurrency = a.concurrency.clone().unwrap_or_else(|| vec![16, 64, 256]);
        let mut cpu_at: Vec<usize> = concurrency
            .iter()
            .copied()
            .filter(|c| CPU_AT.contains(c))
            .collect();
        if cpu_at.is_empty() {
            cpu_at.extend(concurrency.first().copied());
        }
        let given = a.order_events.clone().unwrap_or_default();
        let order_events = [(ORDER_SLOW, 480, 80), (Duration::ZERO, 8_000, 400)]
            .into_iter()
            .enumerate()
            .map(|(i, (d, full, smoke))| {
                let n = given
                    .get(i)
                    .copied()
                    .unwrap_or(if s { smoke } else { full });
                // At least one event per bot, and whole rounds of bots.
                (d, n.max(BOTS as u64) / BOTS as u64 * BOTS as u64)
            })
            .collect();
        Plan {
            bodies,
            events: a.events.unwrap_or(if s { 500 } else { 50_000 }),
            concurrency,
            rounds: a.rounds.unwrap_or(if s { 1 } else { 3 }).max(1),
            cpu_at,
            backlog: a.backlog.unwrap_or(if s { 100 } else { DEFAULT_BACKLOG }),
            backlog_senders: a.backlog_senders.max(1),
            idle: a.idle.unwrap_or(if s { 20 } else { DEFAULT_IDLE }),
            warmup: if s { 3 } else { 10 },
            patience: Duration::from_secs(if s { 20 } else { 60 }),
            skip: a.skip.clone(),
            postgres: a.postgres.clone().filter(|u| !u.trim().is_empty()),
            peers: a.peers || a.only.iter().any(|p| p == "peers"),
            only: a.only.clone(),
            order_events,
            hostile: crate::hostile::Sizes::new(s),
        }
    }

    /// Time limit for something that handles `n` events.
    pub(crate) fn limit(&self, n: u64) -> Duration {
        self.patience + Duration::from_millis(2 * n)
    }

    pub(crate) fn runs(&self, phase: &str) -> bool {
        !self.skip.iter().any(|s| s == phase)
            && (self.only.is_empty() || self.only.iter().any(|s| s == phase))
    }

    /// The concurrency of single-concurrency figures (the inspector's).
    pub(crate) fn main_concurrency(&self) -> usize {
        self.cpu_at.first().copied().unwrap_or(1)
    }
}

/// Concurrencies whose CPU per event the targets compare with bore's.
pub(crate) const CPU_AT: [usize; 2] = [16, 64];
/// Bots of phase `order`.
pub(crate) const BOTS: usize = 8;
/// The slow handler of phase `order`.
pub(crate) const ORDER_SLOW: Duration = Duration::from_millis(20);

/// Default backlog size (figure f).
const DEFAULT_BACKLOG: u64 = 1_000_000;
/// Default number of idle listeners (figure g).
const DEFAULT_IDLE: usize = 10_000;

pub(crate) fn settings(p: &Plan, smoke: bool, relay_flags: &[String]) -> Vec<String> {
    let bodies: Vec<String> = p
        .bodies
        .iter()
        .map(|(s, n)| format!("{} × {}", fmt_size(*s), thousands(*n)))
        .collect();
    let mut v = vec![
        format!(
            "mode: {}",
            if smoke {
                "**smoke** (tiny counts: figures are not meaningful)"
            } else {
                "full"
            }
        ),
        format!(
            "counts: 1-sender runs {} (+{} warm-up each); throughput {} events per run at {} senders, {} round{} (figures b and c: median over the rounds, each round's value in brackets); backlog {} events ({} senders); idle listeners {}",
            bodies.join(", "),
            p.warmup,
            thousands(p.events),
            p.concurrency
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(" / "),
            p.rounds,
            if p.rounds == 1 { "" } else { "s" },
            thousands(p.backlog),
            p.backlog_senders,
            thousands(p.idle as u64),
        ),
        format!(
            "relay: `meethook relay --listen 127.0.0.1:0 --max-body 17MiB{}{}` (fsync on every commit, group commit); daemon: `meethook listen --json` (stdout to /dev/null), default window",
            if relay_flags.is_empty() { "" } else { " " },
            relay_flags.join(" ")
        ),
    ];
    if !smoke && (p.backlog != DEFAULT_BACKLOG || p.idle != DEFAULT_IDLE) {
        v.push(format!(
            "sizes set on the command line: backlog {} (default {}), idle listeners {} (default {})",
            thousands(p.backlog),
            thousands(DEFAULT_BACKLOG),
            thousands(p.idle as u64),
            thousands(DEFAULT_IDLE as u64),
        ));
    }
    if let Some(url) = &p.postgres {
        v.push(format!(
            "PostgreSQL (phase `pg`): `{}`, {} senders",
            pg::redact(url),
            pg::SENDERS
        ));
    }
    if p.runs("order") {
        let runs: Vec<String> = p
            .order_events
            .iter()
            .map(|(d, n)| {
                format!(
                    "{} events with a {} ms handler",
                    thousands(*n),
                    d.as_millis()
                )
            })
            .collect();
        v.push(format!(
            "order (phase `order`): a backlog of {BOTS} bots' events drained by `meethook listen --order channel` and by `--order bot --parallel {BOTS}`, {}; {} round{}",
            runs.join(", "),
            p.rounds,
            if p.rounds == 1 { "" } else { "s" },
        ));
    }
    if !p.skip.is_empty() {
        v.push(format!("skipped phases: {}", p.skip.join(", ")));
    }
    if !p.only.is_empty() {
        v.push(format!("only phases: {}", p.only.join(", ")));
    }
    v
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::Args;

    #[test]
    fn smoke_plan_is_small() {
        let a = Args::parse_from(["meethook-bench", "--smoke"]);
        let p = Plan::from_args(&a);
        assert_eq!(p.concurrency, [16, 64, 256]);
        assert_eq!(p.cpu_at, CPU_AT);
        assert!(p.backlog <= 100 && p.idle <= 20 && p.events <= 500);
        assert!(p
            .order_events
            .iter()
            .all(|(_, n)| *n <= 400 && n % BOTS as u64 == 0));
        assert!(p.bodies.iter().all(|(s, _)| *s <= 1 << 20));
        let a = Args::parse_from([
            "meethook-bench",
            "--smoke",
            "--postgres",
            "postgres://u@h/db",
            "--skip",
            "pg,idle",
        ]);
        let p = Plan::from_args(&a);
        assert_eq!(p.postgres.as_deref(), Some("postgres://u@h/db"));
        assert!(!p.runs("pg") && !p.runs("idle") && p.runs("latency"));
        let a = Args::parse_from(["meethook-bench", "--only", "order", "--order-events", "20"]);
        let p = Plan::from_args(&a);
        assert!(p.runs("order") && !p.runs("latency") && !p.peers);
        assert_eq!(p.order_events[0], (ORDER_SLOW, 16), "whole rounds of bots");
        assert_eq!(p.order_events[1].1, 8_000);
    }
}
