//! Phase `order`: a backlog of several bots' events drained by `meethook listen --order
//! channel` and by `--order bot --parallel N`, through a handler that holds each request
//! 20 ms and through one that answers at once; delivered events/s and their ratio.

use std::time::{Duration, Instant};

use anyhow::bail;

use crate::body::Bodies;
use crate::ctx::Ctx;
use crate::handler::{Handler, SeqOrder, Tracker};
use crate::load;
use crate::plan::BOTS;
use crate::procs;
use crate::report::{fmt_rate, fmt_ratio, thousands};
use crate::stack::Stack;
use crate::stats::{median, ratio};

/// The two modes compared: `listen` flags, and the most requests the handler may see at once.
fn modes() -> [(&'static str, Vec<String>, u64); 2] {
    let parallel = BOTS.to_string();
    [
        ("channel", vec!["--order".into(), "channel".into()], 1),
        (
            "bot",
            vec![
                "--order".into(),
                "bot".into(),
                "--parallel".into(),
                parallel,
            ],
            BOTS as u64,
        ),
    ]
}

/// What one drain measured.
struct Drain {
    rate: f64,
    most_at_once: u64,
}

pub(crate) async fn phase(ctx: &mut Ctx) -> anyhow::Result<()> {
    let runs = ctx.plan.order_events.clone();
    let rounds = ctx.plan.rounds;
    // Per handler delay, per mode: the drains of each round.
    let mut done: Vec<[Vec<Drain>; 2]> = runs.iter().map(|_| [Vec::new(), Vec::new()]).collect();
    // Round after round, the modes alternating, so a drift of the machine touches both.
    for round in 1..=rounds {
        for (i, &(delay, n)) in runs.iter().enumerate() {
            for (m, (mode, flags, most)) in modes().into_iter().enumerate() {
                let label = format!(
                    "order phase: --order {}, {} ms handler, {} events of {BOTS} bots{}",
                    flags[1..].join(" "),
                    delay.as_millis(),
                    thousands(n),
                    if rounds == 1 {
                        String::new()
                    } else {
                        format!(", round {round}/{rounds}")
                    }
                );
                match drain(ctx, mode, &flags, most, delay, n, &label).await {
                    Ok(d) => done[i][m].push(d),
                    Err(e) => ctx.report.errors.push(format!("{label}: {e:#}")),
                }
            }
        }
    }
    for (&(delay, n), [channel, bot]) in runs.iter().zip(&done) {
        if channel.is_empty() || bot.is_empty() {
            continue;
        }
        let rates = |v: &[Drain]| median(v.iter().map(|d| d.rate).collect());
        let cell = |v: &[Drain]| {
            let mut c = fmt_rate(rates(v));
            if v.len() > 1 {
                let each: Vec<String> = v.iter().map(|d| fmt_rate(d.rate)).collect();
                c.push_str(&format!(" ({})", each.join(" · ")));
            }
            c
        };
        let most = |v: &[Drain]| v.iter().map(|d| d.most_at_once).max().unwrap_or(0);
        let (ch, bo) = (rates(channel), rates(bot));
        ctx.report.facts.order.push((delay, ch, bo));
        ctx.report.order_rows.push(vec![
            format!("{} ms", delay.as_millis()),
            thousands(n),
            cell(channel),
            cell(bot),
            ratio(bo, ch).map(fmt_ratio).unwrap_or_else(|| "–".into()),
            format!("{} / {}", most(channel), most(bot)),
        ]);
    }
    ctx.report.order_notes.push(format!(
        "{BOTS} bots, 1 KiB bodies; `--parallel {BOTS}`; figures are medians over the rounds, each round's value in brackets"
    ));
    Ok(())
}

/// Posts `n` events of `BOTS` bots with no listener, then times `listen` with `flags`
/// draining them into a handler that holds each request `delay`; checked under `label`.
async fn drain(
    ctx: &mut Ctx,
    mode: &str,
    flags: &[String],
    most_allowed: u64,
    delay: Duration,
    n: u64,
    label: &str,
) -> anyhow::Result<Drain> {
    let bodies = Bodies::for_bots(1 << 10, BOTS as u64);
    // The slowest mode sends one request at a time.
    let limit = ctx.plan.limit(n) + delay * n as u32;
    let tracker = Tracker::new(n as usize);
    let mut stack = Stack::start(ctx, &format!("order-{mode}"), None).await?;
    let posted = load::flood(
        &stack.target,
        &tracker,
        0..n,
        BOTS,
        &bodies,
        Instant::now() + ctx.plan.limit(n),
        false,
    )
    .await;
    stack.check_alive()?;
    let check = match mode {
        "channel" => SeqOrder::Channel,
        _ => SeqOrder::Bots(BOTS as u64),
    };
    let handler = Handler::start_with(tracker.clone(), check, delay).await?;
    let dir = ctx.dir(&format!("order-{mode}-listen"));
    let t0 = Instant::now();
    let daemon = procs::start_listen_with(
        &ctx.meethook,
        &stack.relay,
        &stack.channel,
        &handler.url(),
        &dir,
        flags,
    )?;
    stack.daemon = Some(daemon);
    let all_in = tracker
        .wait_unique(posted.acked, tokio::time::Instant::now() + limit)
        .await;
    stack.check_alive()?;
    stack.stop().await;
    let checks = tracker.checks(0..n, posted.sent, posted.acked, posted.errors);
    let timeout_note = (!all_in).then(|| format!("not all delivered within {limit:?}"));
    ctx.report
        .check(label, checks, posted.first_error.clone().or(timeout_note));
    let most_at_once = handler.most_in_flight();
    if most_at_once > most_allowed {
        bail!("the handler held {most_at_once} requests at once; at most {most_allowed} allowed");
    }
    let rate = match tracker.last_received_at() {
        Some(end) if checks.delivered > 0 => {
            checks.delivered as f64 / end.duration_since(t0).as_secs_f64()
        }
        _ => 0.0,
    };
    Ok(Drain { rate, most_at_once })
}
