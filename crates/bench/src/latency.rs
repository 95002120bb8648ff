//! Phase `latency`, figures a and e: 1 sender, end-to-end latency per body size, direct
//! and through meethook.

use std::time::Duration;

use crate::body::Bodies;
use crate::ctx::Ctx;
use crate::handler::{Handler, Tracker};
use crate::load;
use crate::load::{LoadResult, Target};
use crate::report::{fmt_bytes, fmt_dur, fmt_size, thousands};
use crate::stack::Stack;
use crate::stats::{dur_ratio, pct, sorted};

/// Time allowed for one event of a 1-sender run.
pub(crate) const PER_EVENT: Duration = Duration::from_secs(60);

/// One 1-sender run of `count` events of `size` bytes (after warm-up), checked.
pub(crate) async fn serial_run(
    ctx: &mut Ctx,
    label: &str,
    handler: &Handler,
    target: &Target,
    size: usize,
    count: u64,
) -> LoadResult {
    let warm = ctx.plan.warmup;
    let bodies = Bodies::new(size);
    let tracker = Tracker::new((warm + count) as usize);
    handler.set_tracker(tracker.clone());
    let w = load::serial(target, &tracker, 0..warm, &bodies, PER_EVENT).await;
    let r = if w.errors == 0 {
        load::serial(target, &tracker, warm..warm + count, &bodies, PER_EVENT).await
    } else {
        load::serial(target, &tracker, 0..0, &bodies, PER_EVENT).await
    };
    let checks = tracker.checks(
        0..warm + count,
        w.sent + r.sent,
        w.acked + r.acked,
        w.errors + r.errors,
    );
    let err = w.first_error.clone().or(r.first_error.clone());
    ctx.report.check(label, checks, err);
    r
}

/// Figures a and e: 1 sender, e2e latency per body size, direct and through meethook.
pub(crate) async fn phase(ctx: &mut Ctx) -> anyhow::Result<()> {
    let bodies = ctx.plan.bodies.clone();
    let mut direct = Vec::new();
    {
        let handler = Handler::start(Tracker::new(0), false).await?;
        let target = Target {
            addr: handler.addr(),
            path: "/hook".into(),
            relay: false,
        };
        for &(size, count) in &bodies {
            let label = format!("direct, 1 sender, {}", fmt_size(size));
            direct.push(serial_run(ctx, &label, &handler, &target, size, count).await);
        }
    }
    let handler = Handler::start(Tracker::new(0), true).await?;
    let mut stack = Stack::start(ctx, "latency", Some(&handler.url())).await?;
    let mut via = Vec::new();
    for &(size, count) in &bodies {
        let label = format!("meethook, 1 sender, {}", fmt_size(size));
        via.push(serial_run(ctx, &label, &handler, &stack.target.clone(), size, count).await);
        stack.check_alive()?;
    }
    let relay_peak = stack.relay.proc.peak_rss()?;
    let daemon_peak = stack.daemon().peak_rss()?;
    stack.stop().await;

    let d0 = &direct[0];
    ctx.direct_serial_rate = Some(d0.acked_per_sec());
    let (m, d) = (sorted(&via[0].e2e_latency), sorted(&d0.e2e_latency));
    let size0 = fmt_size(bodies[0].0);
    ctx.report.facts.p50 = (!m.is_empty()).then(|| pct(&m, 0.5));
    for (name, p) in [("p50", 0.5), ("p99", 0.99), ("p999", 0.999)] {
        let (mv, dv) = (pct(&m, p), pct(&d, p));
        ctx.report.compare(
            "a",
            format!(
                "e2e latency {name}, 1 sender, {size0} (n={})",
                thousands(m.len() as u64)
            ),
            fmt_dur(mv),
            fmt_dur(dv),
            dur_ratio(mv, dv),
        );
    }
    let (ma, da) = (sorted(&via[0].ack_latency), sorted(&d0.ack_latency));
    for (name, p) in [("p50", 0.5), ("p99", 0.99)] {
        let (mv, dv) = (pct(&ma, p), pct(&da, p));
        ctx.report.compare(
            "a",
            format!("POST → answer {name} (relay: 200 after fsync; direct: handler's 200)"),
            fmt_dur(mv),
            fmt_dur(dv),
            dur_ratio(mv, dv),
        );
    }
    for (i, &(size, _)) in bodies.iter().enumerate().skip(1) {
        let (m, d) = (sorted(&via[i].e2e_latency), sorted(&direct[i].e2e_latency));
        let (m50, d50) = (pct(&m, 0.5), pct(&d, 0.5));
        let ack50 = pct(&sorted(&via[i].ack_latency), 0.5);
        ctx.report.compare(
            "e",
            format!(
                "e2e latency p50 / p99, 1 sender, {} (n={}; relay's 200 p50 in brackets; ratio of p50)",
                fmt_size(size),
                m.len()
            ),
            format!(
                "{} / {} ({})",
                fmt_dur(m50),
                fmt_dur(pct(&m, 0.99)),
                fmt_dur(ack50)
            ),
            format!("{} / {}", fmt_dur(d50), fmt_dur(pct(&d, 0.99))),
            dur_ratio(m50, d50),
        );
    }
    ctx.report.figure(
        "d",
        format!(
            "peak RSS relay, 1-sender runs (bodies up to {})",
            fmt_size(bodies.last().map(|b| b.0).unwrap_or(0))
        ),
        fmt_bytes(relay_peak as f64),
    );
    ctx.report.figure(
        "d",
        format!(
            "peak RSS daemon, 1-sender runs (bodies up to {})",
            fmt_size(bodies.last().map(|b| b.0).unwrap_or(0))
        ),
        fmt_bytes(daemon_peak as f64),
    );
    Ok(())
}
