//! The targets (issue 20), judged from figures measured in the same run: meethook
//! against bore, `--order bot --parallel 8` against `--order channel`, 256 senders against 64.

use std::fmt::Write as _;
use std::time::Duration;

use crate::plan::{BOTS, CPU_AT, ORDER_SLOW};
use crate::report::{fmt_dur, fmt_rate, fmt_ratio};
use crate::stats::{dur_ratio, ratio};

/// What the targets are judged from; each phase fills in its part.
#[derive(Debug, Default)]
pub struct Facts {
    /// Relay + daemon CPU ms per 1,000 events per concurrency (median over the rounds).
    pub cpu_k: Vec<(usize, f64)>,
    /// bore server + client CPU ms per 1,000 events per concurrency.
    pub bore_cpu_k: Vec<(usize, f64)>,
    /// meethook e2e latency p50, 1 sender, 1 KiB.
    pub p50: Option<Duration>,
    /// bore's e2e latency p50, 1 sender, 1 KiB.
    pub bore_p50: Option<Duration>,
    /// Why bore was not measured, when it was not asked for or not installed.
    pub bore_missing: Option<String>,
    /// meethook delivered events/s per concurrency (median over the rounds).
    pub delivered: Vec<(usize, f64)>,
    /// Phase `order`: handler delay, `--order channel` and `--order bot --parallel 8`
    /// delivered events/s (medians over the rounds).
    pub order: Vec<(Duration, f64, f64)>,
}

/// One row of the targets table.
struct Target {
    what: String,
    /// The figures the ratio comes from, or why it could not be computed.
    measured: Result<String, String>,
    ratio: Option<f64>,
    goal: Goal,
}

/// A bound on a ratio.
#[derive(Clone, Copy)]
enum Goal {
    AtMost(f64),
    AtLeast(f64),
}

impl Goal {
    fn met(self, r: f64) -> bool {
        match self {
            Goal::AtMost(g) => r <= g,
            Goal::AtLeast(g) => r >= g,
        }
    }

    fn text(self) -> String {
        match self {
            Goal::AtMost(g) => format!("≤ {}", fmt_ratio(g)),
            Goal::AtLeast(g) => format!("≥ {}", fmt_ratio(g)),
        }
    }
}

fn at(v: &[(usize, f64)], c: usize) -> Option<f64> {
    v.iter().find(|(k, _)| *k == c).map(|(_, x)| *x)
}

impl Facts {
    /// Why a meethook-vs-bore row has no ratio: `ours` (meethook's side), and bore's side
    /// when it is missing too.
    fn missing(&self, ours: Option<String>, no_bore: bool) -> String {
        let bore = no_bore.then(|| {
            self.bore_missing
                .clone()
                .unwrap_or_else(|| "bore not measured: its run failed (see Result below)".into())
        });
        ours.into_iter().chain(bore).collect::<Vec<_>>().join("; ")
    }

    fn rows(&self) -> Vec<Target> {
        let mut rows = Vec::new();
        for c in CPU_AT {
            let measured = match (at(&self.cpu_k, c), at(&self.bore_cpu_k, c)) {
                (Some(m), Some(b)) => Ok((
                    format!("{m:.0} ms vs bore {b:.0} ms per 1,000 events"),
                    ratio(m, b),
                )),
                (m, b) => Err(self.missing(
                    m.is_none().then(|| format!(
                        "meethook not measured: no {c}-sender throughput run (phase `throughput` skipped or failed, or `--concurrency` without {c})"
                    )),
                    b.is_none(),
                )),
            };
            rows.push(Target {
                what: format!(
                    "CPU per event, {c} senders, 1 KiB: relay + daemon vs bore (server + client)"
                ),
                ratio: measured.as_ref().ok().and_then(|m| m.1),
                measured: measured.map(|m| m.0),
                goal: Goal::AtMost(2.0),
            });
        }
        let measured = match (self.p50, self.bore_p50) {
            (Some(m), Some(b)) => Ok((
                format!("{} vs bore {}", fmt_dur(m), fmt_dur(b)),
                dur_ratio(m, b),
            )),
            (m, b) => Err(self.missing(
                m.is_none()
                    .then(|| "meethook not measured: phase `latency` skipped or failed".into()),
                b.is_none(),
            )),
        };
        rows.push(Target {
            what: "e2e latency p50, 1 sender, 1 KiB: meethook vs bore".into(),
            ratio: measured.as_ref().ok().and_then(|m| m.1),
            measured: measured.map(|m| m.0),
            goal: Goal::AtMost(4.0),
        });
        for (delay, goal) in [
            (ORDER_SLOW, Goal::AtLeast(6.0)),
            (Duration::ZERO, Goal::AtLeast(1.0)),
        ] {
            let found = self.order.iter().find(|(d, _, _)| *d == delay);
            rows.push(Target {
                what: format!(
                    "delivered events/s, {BOTS} bots, {} ms handler: `--order bot --parallel {BOTS}` vs `--order channel`",
                    delay.as_millis()
                ),
                measured: found
                    .map(|(_, ch, bot)| format!("{} vs {}", fmt_rate(*bot), fmt_rate(*ch)))
                    .ok_or_else(|| "not measured: phase `order` skipped or failed".to_string()),
                ratio: found.and_then(|(_, ch, bot)| ratio(*bot, *ch)),
                goal,
            });
        }
        let measured = match (at(&self.delivered, 256), at(&self.delivered, 64)) {
            (Some(a), Some(b)) => Ok(format!("{} vs {}", fmt_rate(a), fmt_rate(b))),
            _ => Err("not measured: no 256- and 64-sender throughput runs (phase `throughput` skipped or failed, or `--concurrency` without them)".to_string()),
        };
        rows.push(Target {
            what: "delivered events/s, 1 KiB: 256 senders vs 64 senders".into(),
            ratio: at(&self.delivered, 256)
                .zip(at(&self.delivered, 64))
                .and_then(|(a, b)| ratio(a, b)),
            measured,
            goal: Goal::AtLeast(1.0),
        });
        rows
    }

    /// The "Targets" section.
    pub fn section(&self, smoke: bool) -> String {
        let mut s = String::from("## Targets\n\n");
        s.push_str(
            "Issue 20's targets, each a ratio of two figures measured in this run (bore's in \
             phase `peers`, with `--peers`; the order figures in phase `order`).\n\n",
        );
        if smoke {
            s.push_str("Smoke mode: tiny counts, so met / missed below says nothing.\n\n");
        }
        s.push_str("| target | measured | ratio | goal | status |\n|---|---|---:|---:|---|\n");
        for t in self.rows() {
            let (measured, status) = match (&t.measured, t.ratio) {
                (Ok(m), Some(r)) => (
                    m.clone(),
                    if t.goal.met(r) { "met" } else { "**missed**" }.to_string(),
                ),
                (Ok(m), None) => (m.clone(), "not measured (a zero figure)".into()),
                (Err(why), _) => (why.clone(), "not measured".into()),
            };
            let _ = writeln!(
                s,
                "| {} | {measured} | {} | {} | {status} |",
                t.what,
                t.ratio.map(fmt_ratio).unwrap_or_else(|| "–".into()),
                t.goal.text(),
            );
        }
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_each_target_and_names_what_is_missing() {
        let f = Facts {
            cpu_k: vec![(16, 60.0), (64, 50.0)],
            bore_cpu_k: vec![(16, 20.0), (64, 30.0)],
            p50: Some(Duration::from_micros(400)),
            bore_p50: Some(Duration::from_micros(100)),
            delivered: vec![(64, 10_000.0), (256, 9_000.0)],
            order: vec![(ORDER_SLOW, 50.0, 350.0)],
            ..Facts::default()
        };
        let s = f.section(false);
        let line = |what: &str| {
            s.lines()
                .find(|l| l.contains(what))
                .unwrap_or_else(|| panic!("no {what:?} in\n{s}"))
                .to_string()
        };
        assert!(line("16 senders, 1 KiB: relay").ends_with("| 3.00× | ≤ 2.00× | **missed** |"));
        assert!(line("64 senders, 1 KiB: relay").ends_with("| 1.67× | ≤ 2.00× | met |"));
        assert!(line("e2e latency p50").ends_with("| 4.00× | ≤ 4.00× | met |"));
        assert!(line("20 ms handler").ends_with("| 7.00× | ≥ 6.00× | met |"));
        assert!(line(", 0 ms handler").contains("not measured: phase `order`"));
        assert!(line("256 senders vs 64").ends_with("| 0.90× | ≥ 1.00× | **missed** |"));

        let f = Facts {
            cpu_k: vec![(16, 60.0)],
            bore_missing: Some("bore not measured: run with `--peers`".into()),
            ..Facts::default()
        };
        let s = f.section(true);
        assert_eq!(
            s.matches("bore not measured: run with `--peers`").count(),
            3,
            "{s}"
        );
        assert!(s.contains("no 64-sender throughput run"), "{s}");
        assert!(!s.contains("| met |") && !s.contains("**missed**"), "{s}");
    }
}
