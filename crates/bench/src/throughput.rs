//! Phase `throughput`, figures b, c and d: N concurrent senders, direct and through
//! meethook; also the checked floods that the `pg` and `peers` phases reuse.

use std::time::{Duration, Instant};

use crate::body::Bodies;
use crate::ctx::Ctx;
use crate::handler::{Handler, Tracker};
use crate::latency::PER_EVENT;
use crate::load;
use crate::load::Target;
use crate::procs::{self};
use crate::report::{fmt_bytes, fmt_rate};
use crate::stack::Stack;
use crate::stats::{median, ratio};

/// Figures b, c and d: N concurrent senders.
pub(crate) async fn phase(ctx: &mut Ctx) -> anyhow::Result<()> {
    let conc = ctx.plan.concurrency.clone();
    let rounds = ctx.plan.rounds;
    let mut relay_peak = 0u64;
    let mut daemon_peak = 0u64;
    let mut runs: Vec<(usize, Vec<Throughput>)> = conc.iter().map(|&c| (c, Vec::new())).collect();
    // Round after round of every concurrency, so a drift of the machine touches them all.
    for round in 1..=rounds {
        for (c, done) in &mut runs {
            let label = if rounds == 1 {
                String::new()
            } else {
                format!(", round {round}/{rounds}")
            };
            match throughput_at(ctx, *c, &label).await {
                Ok(t) => {
                    relay_peak = relay_peak.max(t.relay_peak);
                    daemon_peak = daemon_peak.max(t.daemon_peak);
                    done.push(t);
                }
                Err(e) => ctx
                    .report
                    .errors
                    .push(format!("throughput at {c} senders{label}: {e:#}")),
            }
        }
    }
    for (c, done) in &runs {
        report_throughput(ctx, *c, done);
    }
    let list = ctx
        .plan
        .concurrency
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join("/");
    ctx.report.figure(
        "d",
        format!("peak RSS relay, throughput runs (max over {list} senders, 1 KiB)"),
        fmt_bytes(relay_peak as f64),
    );
    ctx.report.figure(
        "d",
        format!("peak RSS daemon, throughput runs (max over {list} senders, 1 KiB)"),
        fmt_bytes(daemon_peak as f64),
    );
    Ok(())
}

/// What one throughput run at one concurrency measured.
struct Throughput {
    direct_rate: f64,
    acked_rate: f64,
    delivered_rate: f64,
    /// CPU ms per 1,000 events: relay, daemon, bench process, and the direct run's bench.
    cpu_k: (f64, f64, f64, f64),
    relay_peak: u64,
    daemon_peak: u64,
}

/// The median of `pick` over `runs`, formatted, with each run's value after it when there
/// are several.
fn with_runs(
    runs: &[Throughput],
    pick: impl Fn(&Throughput) -> f64,
    fmt: impl Fn(f64) -> String,
) -> (f64, String) {
    let m = median(runs.iter().map(&pick).collect());
    let mut cell = fmt(m);
    if runs.len() > 1 {
        let each: Vec<String> = runs.iter().map(|t| fmt(pick(t))).collect();
        cell.push_str(&format!(" ({})", each.join(" · ")));
    }
    (m, cell)
}

/// Figures b (and c at the CPU concurrencies) for `c` senders, from its runs.
fn report_throughput(ctx: &mut Ctx, c: usize, runs: &[Throughput]) {
    if runs.is_empty() {
        return;
    }
    let (direct, direct_cell) = with_runs(runs, |t| t.direct_rate, fmt_rate);
    ctx.direct_rates.push((c, direct));
    let (acked, acked_cell) = with_runs(runs, |t| t.acked_rate, fmt_rate);
    ctx.report.compare(
        "b",
        format!("acknowledged events/s at the relay (2xx), {c} senders, 1 KiB"),
        acked_cell,
        direct_cell.clone(),
        ratio(acked, direct),
    );
    let (delivered, delivered_cell) = with_runs(runs, |t| t.delivered_rate, fmt_rate);
    ctx.report.facts.delivered.push((c, delivered));
    ctx.report.compare(
        "b",
        format!("delivered events/s at the handler, {c} senders, in strict seq order"),
        delivered_cell,
        direct_cell,
        ratio(delivered, direct),
    );
    if ctx.plan.cpu_at.contains(&c) {
        let ms = |v: f64| format!("{v:.0} ms");
        let (both, both_cell) = with_runs(runs, |t| t.cpu_k.0 + t.cpu_k.1, ms);
        ctx.report.facts.cpu_k.push((c, both));
        let relay_k = median(runs.iter().map(|t| t.cpu_k.0).collect());
        let daemon_k = median(runs.iter().map(|t| t.cpu_k.1).collect());
        let (direct_k, direct_k_cell) = with_runs(runs, |t| t.cpu_k.3, ms);
        ctx.report.compare(
            "c",
            format!("CPU ms per 1,000 events, {c} senders: relay + daemon (direct: bench's sender + handler)"),
            both_cell,
            direct_k_cell,
            ratio(both, direct_k),
        );
        ctx.report.figure(
            "c",
            format!("CPU ms per 1,000 events, {c} senders, median of each: relay / daemon"),
            format!("{relay_k:.0} ms / {daemon_k:.0} ms"),
        );
        let (_, bench_cell) = with_runs(runs, |t| t.cpu_k.2, ms);
        ctx.report.figure(
            "c",
            format!("CPU ms per 1,000 events of the bench process (sender + handler) during the meethook run, {c} senders"),
            bench_cell,
        );
    }
}

/// What a checked flood came to.
pub(crate) struct Flood {
    /// Acknowledged events/s.
    pub rate: f64,
    /// CPU of whatever carried the load, during the flood.
    pub cpu: Duration,
    /// Events the handler got, warm-up included.
    pub delivered: u64,
}

/// The baseline: `c` senders posting `size`-byte bodies straight to the bench's handler, with
/// the same integrity checks as the meethook runs (reported under `label`).
pub(crate) async fn direct_flood(
    ctx: &mut Ctx,
    c: usize,
    size: usize,
    label: &str,
) -> anyhow::Result<Flood> {
    let tracker = Tracker::new((ctx.plan.warmup + ctx.plan.events) as usize);
    let handler = Handler::start(tracker.clone(), false).await?;
    let target = Target {
        addr: handler.addr(),
        path: "/hook".into(),
        relay: false,
    };
    let own = || procs::cpu_of(std::process::id());
    checked_flood(ctx, &target, &tracker, c, size, label, own).await
}

/// A serial warm-up, then `c` senders posting `size`-byte bodies to `target` (whose handler
/// records into `tracker`), checked under `label`; `cpu` reads the CPU time of whatever
/// carries the load.
pub(crate) async fn checked_flood(
    ctx: &mut Ctx,
    target: &Target,
    tracker: &std::sync::Arc<Tracker>,
    c: usize,
    size: usize,
    label: &str,
    cpu: impl Fn() -> anyhow::Result<Duration>,
) -> anyhow::Result<Flood> {
    let (n, warm) = (ctx.plan.events, ctx.plan.warmup);
    let bodies = Bodies::new(size);
    let limit = ctx.plan.limit(n);
    let w = load::serial(target, tracker, 0..warm, &bodies, PER_EVENT).await;
    let cpu0 = cpu()?;
    let d = load::flood(
        target,
        tracker,
        warm..warm + n,
        c,
        &bodies,
        Instant::now() + limit,
        false,
    )
    .await;
    let cpu1 = cpu()?;
    tracker
        .wait_unique(
            w.acked + d.acked,
            tokio::time::Instant::now() + ctx.plan.patience,
        )
        .await;
    let checks = tracker.checks(
        0..warm + n,
        w.sent + d.sent,
        w.acked + d.acked,
        w.errors + d.errors,
    );
    ctx.report.check(
        label.to_string(),
        checks,
        w.first_error.or(d.first_error.clone()),
    );
    Ok(Flood {
        rate: d.acked_per_sec(),
        cpu: cpu1 - cpu0,
        delivered: checks.delivered,
    })
}

/// One concurrency: direct, then meethook (`label` tells the round in the checks).
async fn throughput_at(ctx: &mut Ctx, c: usize, label: &str) -> anyhow::Result<Throughput> {
    let (n, warm) = (ctx.plan.events, ctx.plan.warmup);
    let bodies = Bodies::new(1 << 10);
    let limit = ctx.plan.limit(n);

    // Direct.
    let direct = direct_flood(ctx, c, 1 << 10, &format!("direct, {c} senders{label}")).await?;
    let direct_rate = direct.rate;
    let direct_cpu_per_k = per_thousand(direct.cpu, direct.delivered.saturating_sub(warm));

    // Through meethook.
    let tracker = Tracker::new((warm + n) as usize);
    let handler = Handler::start(tracker.clone(), true).await?;
    let mut stack = Stack::start(ctx, &format!("c{c}"), Some(&handler.url())).await?;
    let w = load::serial(&stack.target, &tracker, 0..warm, &bodies, PER_EVENT).await;
    let (r0, d0, b0) = (
        stack.relay.proc.cpu()?,
        stack.daemon().cpu()?,
        procs::cpu_of(std::process::id())?,
    );
    let m = load::flood(
        &stack.target,
        &tracker,
        warm..warm + n,
        c,
        &bodies,
        Instant::now() + limit,
        false,
    )
    .await;
    let all_in = tracker
        .wait_unique(w.acked + m.acked, tokio::time::Instant::now() + limit)
        .await;
    let (r1, d1, b1) = (
        stack.relay.proc.cpu()?,
        stack.daemon().cpu()?,
        procs::cpu_of(std::process::id())?,
    );
    stack.check_alive()?;
    let relay_peak = stack.relay.proc.peak_rss()?;
    let daemon_peak = stack.daemon().peak_rss()?;
    stack.stop().await;
    let checks = tracker.checks(
        0..warm + n,
        w.sent + m.sent,
        w.acked + m.acked,
        w.errors + m.errors,
    );
    let timeout_note = (!all_in).then(|| format!("not all delivered within {limit:?}"));
    ctx.report.check(
        format!("meethook, {c} senders{label}"),
        checks,
        w.first_error.or(m.first_error.clone()).or(timeout_note),
    );
    let delivered = measured(&tracker, warm..warm + n);
    let delivered_rate = match tracker.last_received_at() {
        Some(end) if delivered > 0 => {
            delivered as f64 / end.duration_since(m.started).as_secs_f64()
        }
        _ => 0.0,
    };
    Ok(Throughput {
        direct_rate,
        acked_rate: m.acked_per_sec(),
        delivered_rate,
        cpu_k: (
            per_thousand(r1 - r0, delivered),
            per_thousand(d1 - d0, delivered),
            per_thousand(b1 - b0, delivered),
            direct_cpu_per_k,
        ),
        relay_peak,
        daemon_peak,
    })
}

/// Events of `ids` that arrived.
pub(crate) fn measured(tracker: &Tracker, ids: std::ops::Range<u64>) -> u64 {
    ids.filter(|&id| tracker.received(id)).count() as u64
}

/// Milliseconds of CPU per 1,000 events.
pub(crate) fn per_thousand(cpu: Duration, events: u64) -> f64 {
    if events == 0 {
        return 0.0;
    }
    cpu.as_secs_f64() * 1e3 * 1000.0 / events as f64
}
