//! Phase `backlog`, figure f: post while no listener runs, then start one and time the
//! drain.

use std::time::{Duration, Instant};

use crate::body::Bodies;
use crate::ctx::Ctx;
use crate::handler::{Handler, Tracker};
use crate::load;
use crate::procs::{self};
use crate::report::{fmt_bytes, fmt_rate, thousands};
use crate::stack::Stack;
use crate::stats::ratio;

/// Figure f: post while no listener runs, then start one and time the drain.
pub(crate) async fn phase(ctx: &mut Ctx) -> anyhow::Result<()> {
    let n = ctx.plan.backlog;
    let senders = ctx.plan.backlog_senders;
    let bodies = Bodies::new(1 << 10);
    let limit = ctx.plan.limit(n);
    let tracker = Tracker::new(n as usize);
    let mut stack = Stack::start(ctx, "backlog", None).await?;
    let posted = load::flood(
        &stack.target,
        &tracker,
        0..n,
        senders,
        &bodies,
        Instant::now() + limit,
        false,
    )
    .await;
    stack.check_alive()?;
    let ingest = posted.acked_per_sec();
    let direct_ingest = ctx
        .direct_rates
        .iter()
        .find(|(c, _)| *c == senders)
        .map(|(_, r)| *r);
    ctx.report.compare(
        "f",
        format!(
            "backlog fill: acknowledged events/s, {senders} senders, no listener ({} events)",
            thousands(n)
        ),
        fmt_rate(ingest),
        direct_ingest.map(fmt_rate).unwrap_or_else(|| "–".into()),
        direct_ingest.and_then(|d| ratio(ingest, d)),
    );

    let handler = Handler::start(tracker.clone(), true).await?;
    let relay_before = stack.relay.proc.rss()?;
    let listen_dir = ctx.dir("backlog-listen");
    let channel = stack.channel.clone();
    let t0 = Instant::now();
    let daemon = procs::start_listen(
        &ctx.meethook,
        &stack.relay,
        &channel,
        &handler.url(),
        &listen_dir,
    )?;
    stack.daemon = Some(daemon);
    let relay_pid = stack.relay.proc.pid();
    let daemon_pid = stack.daemon().pid();
    let sampling = tokio_util::sync::CancellationToken::new();
    let sampler = tokio::spawn({
        let stop = sampling.clone();
        async move {
            let (mut relay_max, mut daemon_max) = (0u64, 0u64);
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                if let Ok(kb) = procs::status_kb(relay_pid, "VmRSS") {
                    relay_max = relay_max.max(kb * 1024);
                }
                if let Ok(kb) = procs::status_kb(daemon_pid, "VmRSS") {
                    daemon_max = daemon_max.max(kb * 1024);
                }
            }
            (relay_max, daemon_max)
        }
    });
    let all_in = tracker
        .wait_unique(posted.acked, tokio::time::Instant::now() + limit)
        .await;
    sampling.cancel();
    let (relay_max, _) = sampler.await.unwrap_or_default();
    stack.check_alive()?;
    let daemon_peak = stack.daemon().peak_rss()?;
    stack.stop().await;
    let checks = tracker.checks(0..n, posted.sent, posted.acked, posted.errors);
    let timeout_note = (!all_in).then(|| format!("not all delivered within {limit:?}"));
    ctx.report.check(
        format!("meethook, backlog of {}", thousands(n)),
        checks,
        posted.first_error.clone().or(timeout_note),
    );
    let drain = match tracker.last_received_at() {
        Some(end) if checks.delivered > 0 => {
            checks.delivered as f64 / end.duration_since(t0).as_secs_f64()
        }
        _ => 0.0,
    };
    let direct = ctx.direct_serial_rate;
    ctx.report.compare(
        "f",
        format!(
            "backlog drain: delivered events/s from starting `listen` to the last delivery ({} events; direct: 1 sender, one at a time)",
            thousands(checks.delivered)
        ),
        fmt_rate(drain),
        direct.map(fmt_rate).unwrap_or_else(|| "–".into()),
        direct.and_then(|d| ratio(drain, d)),
    );
    ctx.report.figure(
        "f",
        "relay RSS during the drain (max of 100 ms samples; before the drain)",
        format!(
            "{} (before: {})",
            fmt_bytes(relay_max as f64),
            fmt_bytes(relay_before as f64)
        ),
    );
    ctx.report.figure(
        "f",
        "daemon peak RSS during the drain",
        fmt_bytes(daemon_peak as f64),
    );
    Ok(())
}
