//! Phase `hostile`: a relay with many channels and its default limits (not the bench's
//! `--rate-limit 0`), attacked by one sender flooding one channel past its rate limit and by
//! hundreds of slowloris connections. The other channels' senders' POST → 2xx latency under
//! attack is compared with the same senders without it, and every 2xx is read back from the
//! history API (gap-free seqs, byte-identical bodies).

//!
//! # Layout
//! - this file: the sizes, the phase's timeline and its report section.
//! - [`senders`]: the victims, the flooding sender, the slowloris connections.
//! - [`readback`]: each channel's history read back and compared with the 2xx answers.

mod readback;
mod senders;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use tokio_util::sync::CancellationToken;

use crate::ctx::Ctx;
use crate::handler::Checks;
use crate::machine::open_files_limit;
use crate::procs::{cpu_of, ChannelInfo, Relay};
use crate::report::{fmt_bytes, fmt_dur, fmt_rate, fmt_ratio, thousands, Report};
use crate::stats::{dur_ratio, pct, ratio, sorted};
use readback::{read_back, verify};
use senders::{flood, slowloris, victims_window, Acks, FloodLog, SlowStats, Window, BODY};

/// Channels created at once while setting up.
const CREATING_AT_ONCE: usize = 16;
/// Descriptors kept free for everything else when fitting the slowloris count to `ulimit -n`.
const FD_MARGIN: usize = 256;

/// Counts and durations of the phase (smaller with `--smoke`).
#[derive(Debug, Clone)]
pub(crate) struct Sizes {
    /// Channels created on the relay.
    pub(crate) channels: usize,
    /// Victim senders, one channel and one keep-alive connection each.
    pub(crate) victims: usize,
    /// Time between one victim's webhooks.
    pub(crate) pace: Duration,
    /// Connections of the flooding sender.
    pub(crate) flood_connections: usize,
    /// Slowloris connections held open.
    pub(crate) slowloris: usize,
    /// Time between two bytes of one slowloris connection.
    pub(crate) trickle: Duration,
    /// Each window without the attack (one before it, one after).
    pub(crate) quiet: Duration,
    /// The window under attack.
    pub(crate) attacked: Duration,
    /// Relay flags besides its defaults (smoke: a short header timeout and a low rate limit,
    /// so closes and 429s are seen in a short run).
    pub(crate) relay_flags: Vec<String>,
}

impl Sizes {
    pub(crate) fn new(smoke: bool) -> Sizes {
        if smoke {
            Sizes {
                channels: 50,
                victims: 5,
                pace: Duration::from_millis(100),
                flood_connections: 2,
                slowloris: 20,
                trickle: Duration::from_millis(300),
                quiet: Duration::from_secs(2),
                attacked: Duration::from_secs(3),
                relay_flags: [
                    "--header-timeout",
                    "1s",
                    "--rate-limit",
                    "200",
                    "--rate-burst",
                    "100",
                ]
                .map(String::from)
                .to_vec(),
            }
        } else {
            Sizes {
                channels: 1000,
                victims: 50,
                pace: Duration::from_millis(100),
                flood_connections: 8,
                slowloris: 500,
                trickle: Duration::from_secs(3),
                quiet: Duration::from_secs(15),
                attacked: Duration::from_secs(30),
                relay_flags: Vec::new(),
            }
        }
    }
}

/// The value `flag` has for this relay: from `extra` when given there, else the
/// `[default: …]` that `meethook relay --help` shows.
fn relay_setting(help: &str, extra: &[String], flag: &str) -> Option<String> {
    if let Some(i) = extra.iter().position(|f| f == flag) {
        return extra.get(i + 1).cloned();
    }
    let rest = &help[help.find(&format!("{flag} <"))?..];
    let v = &rest[rest.find("[default: ")? + "[default: ".len()..];
    Some(v[..v.find(']')?].to_string())
}

/// CPU time of the relay and of this process over a window.
struct Usage {
    relay: Duration,
    bench: Duration,
    wall: Duration,
}

async fn measured<T>(relay_pid: u32, work: impl std::future::Future<Output = T>) -> (T, Usage) {
    let me = std::process::id();
    let (r0, b0, t0) = (cpu_of(relay_pid), cpu_of(me), Instant::now());
    let out = work.await;
    let (r1, b1) = (cpu_of(relay_pid), cpu_of(me));
    let diff = |a: anyhow::Result<Duration>, b: anyhow::Result<Duration>| match (a, b) {
        (Ok(a), Ok(b)) => b.saturating_sub(a),
        _ => Duration::ZERO,
    };
    let usage = Usage {
        relay: diff(r0, r1),
        bench: diff(b0, b1),
        wall: t0.elapsed(),
    };
    (out, usage)
}

fn share(cpu: Duration, wall: Duration) -> String {
    format!(
        "{:.0} % of a core",
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9)
    )
}

/// The phase: relay, channels, the three windows, read-back, report.
pub(crate) async fn phase(ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut sz = ctx.plan.hostile.clone();
    let help = std::process::Command::new(&ctx.meethook)
        .args(["relay", "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let setting =
        |flag: &str| relay_setting(&help, &sz.relay_flags, flag).unwrap_or_else(|| "?".to_string());
    let (rate, burst) = (setting("--rate-limit"), setting("--rate-burst"));
    let (header_timeout, max_conns) = (setting("--header-timeout"), setting("--max-connections"));
    let mut notes = Vec::new();
    // Each slowloris and victim connection is a descriptor here and one in the relay (which
    // inherits this limit).
    if let Some(limit) = open_files_limit() {
        let room = (limit as usize).saturating_sub(sz.victims + sz.flood_connections + FD_MARGIN);
        if sz.slowloris > room {
            notes.push(format!(
                "slowloris connections cut from {} to {room}: `ulimit -n` is {limit} (scripts/bench raises it)",
                sz.slowloris
            ));
            sz.slowloris = room;
        }
    }
    if let Ok(max) = max_conns.parse::<usize>() {
        let needed = sz.slowloris + sz.victims + sz.flood_connections + 1;
        if needed > max {
            bail!("{needed} connections needed, the relay's --max-connections is {max}");
        }
    }

    let dir = ctx.dir("hostile-relay");
    let relay = Relay::start(&ctx.meethook, &dir, ctx.max_body(), &sz.relay_flags).await?;
    let addr = relay.addr;
    let pid = relay.proc.pid();
    let t = Instant::now();
    let channels = create_channels(&relay, sz.channels).await?;
    let created_in = t.elapsed();
    // Channel 0 is flooded; the victims' channels are spread over the rest.
    let victim_ch: Vec<ChannelInfo> = (0..sz.victims)
        .map(|i| channels[1 + i * (channels.len() - 1) / sz.victims.max(1)].clone())
        .collect();
    let paths: Vec<String> = victim_ch
        .iter()
        .map(|c| format!("/hooks/{}", c.id))
        .collect();
    let ids = Arc::new(AtomicU64::new(0));
    let mut acks: Vec<Acks> = vec![Vec::new(); sz.victims];

    // Warm-up (not counted in the latencies, but read back like the rest).
    let logs = victims_window(addr, &paths, &ids, sz.pace, sz.pace * 3).await;
    let warm = Window::of(logs, &mut acks);

    let (logs, quiet_before) =
        measured(pid, victims_window(addr, &paths, &ids, sz.pace, sz.quiet)).await;
    let before = Window::of(logs, &mut acks);
    let rss_quiet = relay.proc.rss().unwrap_or(0);

    // The attack: slowloris connections first (all open before measuring), then the flood.
    let stop = CancellationToken::new();
    let slow = Arc::new(Mutex::new(SlowStats::default()));
    let open = Arc::new(AtomicUsize::new(0));
    let mut slow_tasks = tokio::task::JoinSet::new();
    for i in 0..sz.slowloris {
        let stagger = sz.trickle.mul_f64(i as f64 / sz.slowloris.max(1) as f64);
        slow_tasks.spawn(slowloris(
            addr,
            sz.trickle,
            stagger,
            slow.clone(),
            open.clone(),
            stop.clone(),
        ));
    }
    let ramp = Instant::now();
    while open.load(Ordering::SeqCst) < sz.slowloris && ramp.elapsed() < sz.trickle * 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let open_at_start = open.load(Ordering::SeqCst);
    let flood_ch = channels[0].clone();
    let mut flood_tasks = tokio::task::JoinSet::new();
    for _ in 0..sz.flood_connections {
        flood_tasks.spawn(flood(
            addr,
            format!("/hooks/{}", flood_ch.id),
            ids.clone(),
            stop.clone(),
        ));
    }
    let mut open_min = open_at_start;
    let (logs, attacked) = measured(pid, async {
        let window = victims_window(addr, &paths, &ids, sz.pace, sz.attacked);
        tokio::pin!(window);
        let mut every = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                logs = &mut window => break logs,
                _ = every.tick() => open_min = open_min.min(open.load(Ordering::SeqCst)),
            }
        }
    })
    .await;
    let under = Window::of(logs, &mut acks);
    let rss_attacked = relay.proc.rss().unwrap_or(0);
    let open_at_end = open.load(Ordering::SeqCst);
    stop.cancel();
    let mut flood_log = FloodLog::default();
    while let Some(log) = flood_tasks.join_next().await {
        flood_log.merge(log.context("flood task")?);
    }
    while slow_tasks.join_next().await.is_some() {}

    let (logs, quiet_after) =
        measured(pid, victims_window(addr, &paths, &ids, sz.pace, sz.quiet)).await;
    let after = Window::of(logs, &mut acks);
    let mut relay = relay;
    relay.proc.check_alive()?;
    let peak = relay.proc.peak_rss().unwrap_or(0);

    // Integrity: every 2xx stored under its seq with its body; no gaps.
    let (mut victims_c, mut victims_extra) = (Checks::default(), 0);
    for (ch, a) in victim_ch.iter().zip(&acks) {
        let stored = read_back(addr, ch).await?;
        verify(a, &stored, &mut victims_c, &mut victims_extra);
    }
    let mut victims_error = None;
    for w in [&warm, &before, &under, &after] {
        victims_c.sent += w.sent;
        victims_c.acked += w.acked;
        victims_c.send_errors += w.errors;
        if victims_error.is_none() {
            victims_error = w.first_error.clone();
        }
    }
    let (mut flood_c, mut flood_extra) = (Checks::default(), 0);
    let stored = read_back(addr, &flood_ch).await?;
    verify(&flood_log.acks, &stored, &mut flood_c, &mut flood_extra);
    flood_c.sent = flood_log.ok() + flood_log.limited + flood_log.other;
    flood_c.acked = flood_log.ok();
    flood_c.send_errors = flood_log.other;
    relay.proc.stop().await;

    ctx.report.check(
        format!(
            "hostile phase: {} victim channels (read back from the history API)",
            sz.victims
        ),
        victims_c,
        victims_error,
    );
    ctx.report.check(
        "hostile phase: the flooded channel's 2xx (read back; its 429s are not errors)",
        flood_c,
        flood_log.first_other.clone(),
    );
    if victims_extra > victims_c.send_errors {
        ctx.report.errors.push(format!(
            "hostile phase: {victims_extra} victim events stored that no sender got a 2xx for"
        ));
    }
    if flood_extra > flood_log.other {
        ctx.report.errors.push(format!(
            "hostile phase: {flood_extra} events of the flooded channel stored without a 2xx (a 429 must store nothing)"
        ));
    }
    if flood_log.limited == 0 {
        notes.push("**the flood never got a 429**: it did not reach the rate limit".into());
    }
    if flood_log.bad_retry_after > 0 {
        ctx.report.errors.push(format!(
            "hostile phase: {} 429s without a Retry-After of at least 1 s",
            flood_log.bad_retry_after
        ));
    }

    // The report.
    let mut base = before.latency.clone();
    base.extend(&after.latency);
    let (base, hit) = (sorted(&base), sorted(&under.latency));
    let mut rows = Vec::new();
    for (name, p) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
        let (b, h) = (pct(&base, p), pct(&hit, p));
        rows.push(vec![
            format!("victims' POST → 2xx {name}"),
            fmt_dur(b),
            fmt_dur(h),
            dur_ratio(h, b).map(fmt_ratio).unwrap_or_else(|| "–".into()),
        ]);
    }
    let per_sec = |n: u64, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
    let quiet_wall = quiet_before.wall + quiet_after.wall;
    let (base_rate, hit_rate) = (
        per_sec(before.acked + after.acked, quiet_wall),
        per_sec(under.acked, attacked.wall),
    );
    rows.push(vec![
        "victims' 2xx/s, all victims together".into(),
        fmt_rate(base_rate),
        fmt_rate(hit_rate),
        ratio(hit_rate, base_rate)
            .map(fmt_ratio)
            .unwrap_or_else(|| "–".into()),
    ]);
    rows.push(vec![
        "relay CPU".into(),
        share(quiet_before.relay + quiet_after.relay, quiet_wall),
        share(attacked.relay, attacked.wall),
        "–".into(),
    ]);
    rows.push(vec![
        "bench process CPU (victims, attackers), for scale".into(),
        share(quiet_before.bench + quiet_after.bench, quiet_wall),
        share(attacked.bench, attacked.wall),
        "–".into(),
    ]);
    rows.push(vec![
        "relay RSS at the window's end".into(),
        fmt_bytes(rss_quiet as f64),
        fmt_bytes(rss_attacked as f64),
        format!("peak {}", fmt_bytes(peak as f64)),
    ]);
    ctx.report.hostile_rows = rows;

    notes.insert(
        0,
        format!(
            "relay: `meethook relay --listen 127.0.0.1:0 --max-body {}{}{}` (in force: `--rate-limit {rate} --rate-burst {burst} --header-timeout {header_timeout} --max-connections {max_conns}`), SQLite store; {} channels created through the API in {}",
            ctx.max_body(),
            if sz.relay_flags.is_empty() { "" } else { " " },
            sz.relay_flags.join(" "),
            thousands(channels.len() as u64),
            fmt_dur(created_in),
        ),
    );
    notes.push(format!(
        "victims: {} senders, each on its own channel and keep-alive connection, one {} webhook every {} (n = {} without the attack, {} under it); windows: {} without, {} under attack, {} without again (the baseline is both windows without)",
        sz.victims,
        crate::report::fmt_size(BODY),
        fmt_dur(sz.pace),
        thousands(base.len() as u64),
        thousands(hit.len() as u64),
        fmt_dur(sz.quiet),
        fmt_dur(sz.attacked),
        fmt_dur(sz.quiet),
    ));
    notes.push(format!(
        "baseline windows apart: p50 / p99 {} / {} before the attack, {} / {} after it",
        fmt_dur(pct(&sorted(&before.latency), 0.5)),
        fmt_dur(pct(&sorted(&before.latency), 0.99)),
        fmt_dur(pct(&sorted(&after.latency), 0.5)),
        fmt_dur(pct(&sorted(&after.latency), 0.99)),
    ));
    let flood_wall = match (flood_log.started, flood_log.ended) {
        (Some(a), Some(b)) => b - a,
        _ => Duration::ZERO,
    };
    let steady = match (flood_log.first_limited, flood_log.ended) {
        (Some(a), Some(b)) if b > a => {
            let after = flood_log.ok_at.iter().filter(|&&t| t > a).count();
            Some(per_sec(after as u64, b - a))
        }
        _ => None,
    };
    notes.push(format!(
        "flood: one sender on {} keep-alive connections, {} bodies as fast as answered, ignoring Retry-After, for {}: {} answers ({}), {} 2xx ({}; after the burst was used up {}) against the limit of {rate}/s with a burst of {burst}, {} 429 (all with Retry-After ≥ 1 s: {}), {} other",
        sz.flood_connections,
        crate::report::fmt_size(BODY),
        fmt_dur(flood_wall),
        thousands(flood_c.sent),
        fmt_rate(per_sec(flood_c.sent, flood_wall)),
        thousands(flood_log.ok()),
        fmt_rate(per_sec(flood_log.ok(), flood_wall)),
        steady.map(fmt_rate).unwrap_or_else(|| "–".into()),
        thousands(flood_log.limited),
        if flood_log.bad_retry_after == 0 { "yes" } else { "**no**" },
        flood_log.other,
    ));
    let st = slow.lock().expect("slow stats");
    let lives = sorted(&st.lifetimes);
    let mut how: Vec<String> = st
        .answers
        .iter()
        .map(|(k, v)| format!("{} {k}", thousands(*v)))
        .collect();
    how.sort();
    notes.push(format!(
        "slowloris: {} connections, each sending one byte of a request head every {} and never finishing it, reopened when the relay ends them; {} open when the attacked window started (lowest during it {}, {} at its end); {} connects, {} failed; the relay ended {} of them ({}) after {} (fastest) / {} (median) / {} (slowest) from connect (`--header-timeout {header_timeout}`)",
        sz.slowloris,
        fmt_dur(sz.trickle),
        open_at_start,
        open_min,
        open_at_end,
        thousands(st.opened),
        st.connect_errors,
        thousands(lives.len() as u64),
        if how.is_empty() { "–".into() } else { how.join(", ") },
        fmt_dur(pct(&lives, 0.0)),
        fmt_dur(pct(&lives, 0.5)),
        fmt_dur(pct(&lives, 1.0)),
    ));
    if let Some(limit) = open_files_limit() {
        notes.push(format!(
            "descriptors: `ulimit -n` {limit} (bench and relay alike), the relay's `--max-connections` {max_conns}; the attack holds {} connections",
            sz.slowloris + sz.victims + sz.flood_connections
        ));
    }
    ctx.report.hostile_notes = notes;
    Ok(())
}

/// `n` channels through the API, a few at a time.
async fn create_channels(relay: &Relay, n: usize) -> anyhow::Result<Vec<ChannelInfo>> {
    let next = AtomicUsize::new(0);
    let out = Mutex::new(vec![None; n]);
    let one = || async {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                return anyhow::Ok(());
            }
            let ch = relay.create_channel().await?;
            out.lock().expect("channels")[i] = Some(ch);
        }
    };
    futures_util::future::try_join_all((0..CREATING_AT_ONCE).map(|_| one())).await?;
    out.into_inner()
        .expect("channels")
        .into_iter()
        .map(|c| c.ok_or_else(|| anyhow!("a channel was not created")))
        .collect()
}

impl Report {
    /// The "Hostile senders" section (phase `hostile`), empty when the phase did not run.
    pub fn hostile_section(&self) -> String {
        if self.hostile_notes.is_empty() && self.hostile_rows.is_empty() {
            return String::new();
        }
        let mut s = String::from("## Hostile senders\n\n");
        s.push_str(
            "Phase `hostile` (`scripts/bench --skip latency,throughput,backlog,idle,pg,inspector` \
             runs it alone): one relay with its default limits and many channels; senders on \
             some channels post at a steady pace (the victims) while one sender floods another \
             channel past its rate limit and slowloris connections trickle request heads. The \
             victims' POST → 2xx latency under that attack against the same senders without \
             it, in the same run; afterwards every 2xx (victims' and flood's) is read back from \
             `GET /api/channels/{id}/events` (runs labelled `hostile phase: …` in the integrity \
             checks, where \"delivered\" means read back intact).\n\n",
        );
        for n in &self.hostile_notes {
            let _ = writeln!(s, "- {n}");
        }
        if !self.hostile_rows.is_empty() {
            s.push_str(
                "\n| figure | without the attack | under attack | under / without |\n|---|---:|---:|---:|\n",
            );
            for r in &self.hostile_rows {
                let _ = writeln!(s, "| {} |", r.join(" | "));
            }
        }
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_come_from_flags_then_help() {
        let help = "      --rate-limit <RATE_LIMIT>\n          Webhooks per second\n\n          [default: 1000]\n\n      --rate-burst <RATE_BURST>\n          before --rate-limit applies\n\n          [default: 2000]\n";
        assert_eq!(
            relay_setting(help, &[], "--rate-limit").as_deref(),
            Some("1000")
        );
        assert_eq!(
            relay_setting(help, &[], "--rate-burst").as_deref(),
            Some("2000")
        );
        let flags = ["--rate-limit".to_string(), "5".to_string()];
        assert_eq!(
            relay_setting(help, &flags, "--rate-limit").as_deref(),
            Some("5")
        );
        assert_eq!(relay_setting(help, &[], "--header-timeout"), None);
    }
}
