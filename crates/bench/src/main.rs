//! `meethook-bench`: measures the real `meethook relay` + `meethook listen` (child processes)
//! against a direct sender → handler baseline taken in the same run, and writes a markdown
//! report.
//!
//! # Layout
//! - [`body`]: bodies that carry their id, and the hash that checks them.
//! - [`handler`]: the recording handler (hyper server) and the per-run [`handler::Tracker`].
//! - [`load`]: the load generator (hyper clients, keep-alive, N concurrent senders).
//! - [`procs`]: relay and daemon child processes, `/proc` readers.
//! - [`idle`]: idle websocket listeners.
//! - [`pg`]: the PostgreSQL store phase.
//! - [`report`]: the markdown.
//!
//! Phases: latency and body sizes (a, e), throughput and CPU (b, c), memory (d, collected
//! along the way), backlog (f), idle listeners (g), PostgreSQL store (`pg`, with a URL).

mod body;
mod handler;
mod idle;
mod load;
mod peers;
mod pg;
mod probe;
mod procs;
mod report;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;

use body::Bodies;
use handler::{Checks, Handler, Tracker};
use load::{LoadResult, Target};
use procs::{Proc, Relay};
use report::{fmt_bytes, fmt_dur, fmt_rate, fmt_size, thousands, Report};

/// `meethook-bench` flags.
#[derive(Parser, Debug)]
#[command(
    name = "meethook-bench",
    about = "Benchmarks meethook relay + listen against a direct sender → handler baseline"
)]
struct Args {
    /// Directory holding the `meethook` binary to measure.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Also write the markdown report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Tiny counts, for a quick end-to-end check (exits non-zero on any loss or reordering).
    #[arg(long)]
    smoke: bool,
    /// Events per 1-sender latency run at 1 KiB [default: 2000; smoke: 200].
    #[arg(long)]
    latency_events: Option<u64>,
    /// Bigger bodies of the 1-sender runs, besides 1 KiB: any of 64KiB, 1MiB, 16MiB
    /// (comma-separated) [default: all three; smoke: 64KiB,1MiB].
    #[arg(long, value_delimiter = ',', value_parser = parse_body_size)]
    body_sizes: Option<Vec<usize>>,
    /// Events per throughput run [default: 50000; smoke: 200].
    #[arg(long)]
    events: Option<u64>,
    /// Concurrent senders of the throughput runs [default: 16,64,256; smoke: 4,16].
    #[arg(long, value_delimiter = ',')]
    concurrency: Option<Vec<usize>>,
    /// Rounds of the throughput runs; each figure is the median over them, its runs shown
    /// beside it [default: 3; smoke: 1].
    #[arg(long)]
    rounds: Option<usize>,
    /// Events posted while no listener runs [default: 1000000; smoke: 100].
    #[arg(long)]
    backlog: Option<u64>,
    /// Concurrent senders filling the backlog.
    #[arg(long, default_value_t = 64)]
    backlog_senders: usize,
    /// Idle websocket listeners [default: 10000; smoke: 20].
    #[arg(long)]
    idle: Option<usize>,
    /// Directory for the relay stores and daemon journals [default: the system temp dir].
    #[arg(long)]
    tmp: Option<PathBuf>,
    /// Skip phases: any of latency, throughput, backlog, idle, pg (comma-separated).
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// PostgreSQL database for the `pg` phase (a schema is created in it and dropped at the
    /// end), e.g. postgres://postgres@127.0.0.1:5432/test; without it the phase is skipped.
    #[arg(long, env = "MEETHOOK_BENCH_POSTGRES_URL")]
    postgres: Option<String>,
    /// Also run the 1 KiB loads through plain TCP tunnels that store nothing (bore and
    /// rathole, whichever is installed: `cargo install bore-cli rathole`), side by side.
    #[arg(long)]
    peers: bool,
}

/// Counts for one run of the harness.
#[derive(Debug, Clone)]
struct Plan {
    /// Body size and events per 1-sender run; the first is 1 KiB (figure a).
    bodies: Vec<(usize, u64)>,
    events: u64,
    concurrency: Vec<usize>,
    /// Rounds of the throughput phase (all concurrencies in turn, each round).
    rounds: usize,
    /// Concurrency whose run also measures CPU (figure c).
    cpu_at: usize,
    backlog: u64,
    backlog_senders: usize,
    idle: usize,
    /// Warm-up events before each measured run.
    warmup: u64,
    /// Base of every wait's time limit.
    patience: Duration,
    skip: Vec<String>,
    /// Database of the `pg` phase.
    postgres: Option<String>,
    /// Run the `peers` phase.
    peers: bool,
}

/// Parses a `--body-sizes` entry.
fn parse_body_size(s: &str) -> Result<usize, String> {
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
    fn from_args(a: &Args) -> Plan {
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
        let concurrency =
            a.concurrency
                .clone()
                .unwrap_or_else(|| if s { vec![4, 16] } else { vec![16, 64, 256] });
        let cpu_at = if concurrency.contains(&16) {
            16
        } else {
            concurrency.first().copied().unwrap_or(1)
        };
        Plan {
            bodies,
            events: a.events.unwrap_or(if s { 200 } else { 50_000 }),
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
            peers: a.peers,
        }
    }

    /// Time limit for something that handles `n` events.
    fn limit(&self, n: u64) -> Duration {
        self.patience + Duration::from_millis(2 * n)
    }

    fn runs(&self, phase: &str) -> bool {
        !self.skip.iter().any(|s| s == phase)
    }
}

/// What the phases share.
struct Ctx {
    meethook: PathBuf,
    /// Extra relay flags (see [`procs::relay_bench_flags`]).
    relay_flags: Vec<String>,
    work: tempfile::TempDir,
    plan: Plan,
    report: Report,
    dirs: usize,
    /// Direct 1-sender events/s at 1 KiB (baseline of the backlog drain).
    direct_serial_rate: Option<f64>,
    /// Direct events/s per concurrency.
    direct_rates: Vec<(usize, f64)>,
}

impl Ctx {
    /// A fresh directory for one process.
    fn dir(&mut self, name: &str) -> PathBuf {
        self.dirs += 1;
        self.work.path().join(format!("{:02}-{name}", self.dirs))
    }

    fn max_body(&self) -> &'static str {
        "17MiB"
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    rt.block_on(async {
        tokio::select! {
            r = run(args) => match r {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => {
                    eprintln!("meethook-bench: some events were lost, duplicated, reordered or corrupted, or a phase failed (see the report)");
                    ExitCode::from(1)
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(2)
                }
            },
            _ = tokio::signal::ctrl_c() => {
                // Returning drops the phases, which kills their child processes.
                eprintln!("interrupted");
                ExitCode::from(130)
            }
        }
    })
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let mut plan = Plan::from_args(&args);
    let mut fd_note = None;
    if let Some(limit) = open_files_limit() {
        // Each idle listener is one descriptor here and one in the relay (which inherits it).
        let room = limit.saturating_sub(512) as usize;
        if plan.idle > room {
            fd_note = Some(format!(
                "idle listeners cut from {} to {room}: `ulimit -n` is {limit} (scripts/bench raises it)",
                thousands(plan.idle as u64)
            ));
            eprintln!("meethook-bench: {}", fd_note.as_deref().unwrap_or(""));
            plan.idle = room;
        }
    }
    let meethook = args.bin_dir.join("meethook");
    if !meethook.is_file() {
        bail!(
            "no meethook binary at {} (build it with `cargo build --release --bin meethook`, or pass --bin-dir)",
            meethook.display()
        );
    }
    let base = args.tmp.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base)?;
    let work = tempfile::Builder::new()
        .prefix("meethook-bench-")
        .tempdir_in(&base)
        .with_context(|| format!("create a work directory in {}", base.display()))?;
    let machine = machine_info(&meethook, work.path());
    let relay_flags = procs::relay_bench_flags(&meethook);
    let mut ctx = Ctx {
        relay_flags: relay_flags.clone(),
        meethook,
        work,
        plan: plan.clone(),
        report: Report::default(),
        dirs: 0,
        direct_serial_rate: None,
        direct_rates: Vec::new(),
    };
    ctx.report.settings = settings(&plan, args.smoke, &relay_flags);
    ctx.report.settings.extend(fd_note);
    let started = Instant::now();
    let cpu_start = CpuShare::now();
    for name in ["latency", "throughput", "backlog", "idle", "pg", "peers"] {
        if name == "peers" && !plan.peers {
            continue;
        }
        if !plan.runs(name) {
            if name == "pg" {
                ctx.report.pg_notes.push("skipped (`--skip pg`)".into());
            }
            continue;
        }
        if name == "pg" && plan.postgres.is_none() {
            ctx.report.pg_notes.push(
                "skipped: no database given (`--postgres URL` or `MEETHOOK_BENCH_POSTGRES_URL`)"
                    .into(),
            );
            continue;
        }
        eprintln!("[{:>6.1}s] phase {name}", started.elapsed().as_secs_f64());
        let r = match name {
            "latency" => phase_latency(&mut ctx).await,
            "throughput" => phase_throughput(&mut ctx).await,
            "backlog" => phase_backlog(&mut ctx).await,
            "pg" => pg::phase(&mut ctx, plan.postgres.as_deref().unwrap_or_default()).await,
            "peers" => peers::phase_peers(&mut ctx).await,
            _ => phase_idle(&mut ctx).await,
        };
        if let Err(e) = r {
            eprintln!("phase {name} failed: {e:#}");
            ctx.report.errors.push(format!("phase {name}: {e:#}"));
        }
    }
    let mut machine = machine;
    machine.push(("load average at the end".into(), load_average()));
    if let (Some(a), Some(b)) = (cpu_start, CpuShare::now()) {
        machine.push((
            "CPU used by other processes during the run".into(),
            a.others_until(&b),
        ));
    }
    machine.push((
        "harness wall time".into(),
        format!("{:.0} s", started.elapsed().as_secs_f64()),
    ));
    let text = ctx.report.render(&machine);
    println!("{text}");
    if let Some(out) = &args.out {
        report::write(out, &text).with_context(|| format!("write {}", out.display()))?;
        eprintln!("wrote {}", out.display());
    }
    Ok(ctx.report.ok())
}

fn settings(p: &Plan, smoke: bool, relay_flags: &[String]) -> Vec<String> {
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
    if !p.skip.is_empty() {
        v.push(format!("skipped phases: {}", p.skip.join(", ")));
    }
    v
}

/// Default backlog size (figure f).
const DEFAULT_BACKLOG: u64 = 1_000_000;
/// Default number of idle listeners (figure g).
const DEFAULT_IDLE: usize = 10_000;

fn machine_info(meethook: &Path, work: &Path) -> Vec<(String, String)> {
    let sh = |cmd: &str, args: &[&str]| -> Option<String> {
        let o = std::process::Command::new(cmd).args(args).output().ok()?;
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let nproc = sh("nproc", &[]).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into())
    });
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "?".into());
    let mem = procs::status_kb_file("/proc/meminfo", "MemTotal")
        .map(|kb| fmt_bytes((kb * 1024) as f64))
        .unwrap_or_else(|| "?".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let commit = sh("git", &["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "?".into());
    let dirty = sh("git", &["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|s| !s.is_empty());
    let version = sh(&meethook.to_string_lossy(), &["--version"]).unwrap_or_else(|| "?".into());
    vec![
        (
            "date".into(),
            chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        ),
        (
            "git commit".into(),
            format!(
                "{commit}{}",
                if dirty {
                    " (with uncommitted changes)"
                } else {
                    ""
                }
            ),
        ),
        ("nproc".into(), nproc),
        ("cpu".into(), cpu),
        ("memory".into(), mem),
        ("kernel".into(), kernel),
        (
            "binary".into(),
            format!("`{}` ({version})", meethook.display()),
        ),
        ("data directories".into(), filesystem_of(work)),
        ("load average at the start".into(), load_average()),
        ("clock ticks".into(), procs::clock_ticks().to_string()),
        (
            "probe: wake-up round trip between two threads (1 byte over a socket pair, 2,000 trips; median wall time, CPU of both threads per trip): same CPU; across two CPUs; unpinned".into(),
            {
                let show = |w: Option<probe::WakeUp>| {
                    w.map_or_else(
                        || "n/a".to_string(),
                        |w| {
                            let cpu = w.cpu.map_or_else(|| "?".into(), fmt_dur);
                            format!("{} wall, {cpu} CPU", fmt_dur(w.wall))
                        },
                    )
                };
                let two = std::thread::available_parallelism().is_ok_and(|n| n.get() > 1);
                format!(
                    "{}; {}; {}",
                    show(probe::wakeup_round_trip(2000, Some((0, 0)))),
                    if two {
                        show(probe::wakeup_round_trip(2000, Some((0, 1))))
                    } else {
                        "n/a (one CPU)".into()
                    },
                    show(probe::wakeup_round_trip(2000, None)),
                )
            },
        ),
        ("probe: 16 MiB copy into never-touched / just-used memory (median of 3)".into(), {
            let (fresh, reused) = probe::copy_16mib();
            format!("{} / {}", fmt_dur(fresh), fmt_dur(reused))
        }),
    ]
}

/// Machine-wide busy CPU time and this process's own (children included), in clock ticks.
#[derive(Debug, Clone, Copy)]
struct CpuShare {
    busy: u64,
    total: u64,
    own: u64,
}

impl CpuShare {
    fn now() -> Option<CpuShare> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is inside user)
        let busy = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| cpu.get(i)).sum();
        let total = cpu.iter().take(8).sum();
        let me = std::fs::read_to_string("/proc/self/stat").ok()?;
        let f: Vec<u64> = me
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        // After the state field: utime, stime, cutime, cstime are fields 14-17.
        let own = f.get(10..14)?.iter().sum();
        Some(CpuShare { busy, total, own })
    }

    /// What everything but this run (the bench and the processes it started) used.
    fn others_until(&self, end: &CpuShare) -> String {
        let total = end.total.saturating_sub(self.total).max(1);
        let others = end
            .busy
            .saturating_sub(self.busy)
            .saturating_sub(end.own.saturating_sub(self.own));
        format!(
            "{:.0}% of the machine's CPU time (figures are skewed when this is high)",
            100.0 * others as f64 / total as f64
        )
    }
}

/// The soft limit on open files (`ulimit -n`), from `/proc/self/limits`.
fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The 1/5/15-minute load averages: other work on the machine skews every figure.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

/// `ext4 on /dev/vda` for the filesystem holding `path`.
fn filesystem_of(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let best = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && path.starts_with(f[1])).then(|| (f[1].len(), f[2], f[0]))
        })
        .max_by_key(|(len, _, _)| *len);
    match best {
        Some((_, fs, dev)) => format!(
            "{} on {fs} ({dev}){}",
            path.parent().unwrap_or(&path).display(),
            if fs == "tmpfs" {
                " — tmpfs: fsync is free here, relay figures are optimistic"
            } else {
                ""
            }
        ),
        None => path.display().to_string(),
    }
}

/// Time allowed for one event of a 1-sender run.
const PER_EVENT: Duration = Duration::from_secs(60);

/// Nearest-rank percentile.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(v: &[Duration]) -> Vec<Duration> {
    let mut v = v.to_vec();
    v.sort();
    v
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite()).then(|| a / b)
}

fn dur_ratio(a: Duration, b: Duration) -> Option<f64> {
    ratio(a.as_secs_f64(), b.as_secs_f64())
}

/// The relay, a channel and a daemon forwarding to `handler`.
struct Stack {
    relay: Relay,
    daemon: Option<Proc>,
    target: Target,
    channel: procs::ChannelInfo,
}

impl Stack {
    async fn start(ctx: &mut Ctx, name: &str, forward_to: Option<&str>) -> anyhow::Result<Stack> {
        Stack::start_on(ctx, name, forward_to, &[]).await
    }

    /// [`Stack::start`] with `extra` relay flags (e.g. `--store postgres://…`).
    async fn start_on(
        ctx: &mut Ctx,
        name: &str,
        forward_to: Option<&str>,
        extra: &[String],
    ) -> anyhow::Result<Stack> {
        let relay_dir = ctx.dir(&format!("{name}-relay"));
        let mut flags = ctx.relay_flags.clone();
        flags.extend(extra.iter().cloned());
        let relay = Relay::start(&ctx.meethook, &relay_dir, ctx.max_body(), &flags).await?;
        let channel = relay.create_channel().await?;
        let daemon = match forward_to {
            Some(url) => {
                let dir = ctx.dir(&format!("{name}-listen"));
                Some(procs::start_listen(
                    &ctx.meethook,
                    &relay,
                    &channel,
                    url,
                    &dir,
                )?)
            }
            None => None,
        };
        let target = Target {
            addr: relay.addr,
            path: format!("/hooks/{}", channel.id),
            relay: true,
        };
        Ok(Stack {
            relay,
            daemon,
            target,
            channel,
        })
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        self.relay.proc.check_alive()?;
        if let Some(d) = &mut self.daemon {
            d.check_alive()?;
        }
        Ok(())
    }

    fn daemon(&self) -> &Proc {
        self.daemon.as_ref().expect("a daemon")
    }

    async fn stop(self) {
        if let Some(d) = self.daemon {
            d.stop().await;
        }
        self.relay.proc.stop().await;
    }
}

/// One 1-sender run of `count` events of `size` bytes (after warm-up), checked.
async fn serial_run(
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
async fn phase_latency(ctx: &mut Ctx) -> anyhow::Result<()> {
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

/// Figures b, c and d: N concurrent senders.
async fn phase_throughput(ctx: &mut Ctx) -> anyhow::Result<()> {
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

/// The median of `v` (the mean of the middle two for an even count); 0 when empty.
fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
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

/// Figures b (and c at the CPU concurrency) for `c` senders, from its runs.
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
    ctx.report.compare(
        "b",
        format!("delivered events/s at the handler, {c} senders, in strict seq order"),
        delivered_cell,
        direct_cell,
        ratio(delivered, direct),
    );
    if c == ctx.plan.cpu_at {
        let ms = |v: f64| format!("{v:.0} ms");
        let (both, both_cell) = with_runs(runs, |t| t.cpu_k.0 + t.cpu_k.1, ms);
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
fn measured(tracker: &Tracker, ids: std::ops::Range<u64>) -> u64 {
    ids.filter(|&id| tracker.received(id)).count() as u64
}

/// Milliseconds of CPU per 1,000 events.
fn per_thousand(cpu: Duration, events: u64) -> f64 {
    if events == 0 {
        return 0.0;
    }
    cpu.as_secs_f64() * 1e3 * 1000.0 / events as f64
}

/// Figure f: post while no listener runs, then start one and time the drain.
async fn phase_backlog(ctx: &mut Ctx) -> anyhow::Result<()> {
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

/// Figure g: relay memory per idle listener.
async fn phase_idle(ctx: &mut Ctx) -> anyhow::Result<()> {
    let k = ctx.plan.idle;
    let mut stack = Stack::start(ctx, "idle", None).await?;
    let channel = stack.channel.clone();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = stack.relay.proc.rss()?;
    let own_before = procs::status_kb(0, "VmRSS")? * 1024;
    let listeners = idle::IdleListeners::open(stack.relay.addr, &channel, k).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stack.check_alive()?;
    let after = stack.relay.proc.rss()?;
    let own_after = procs::status_kb(0, "VmRSS")? * 1024;
    let (opened, failed, took) = (listeners.opened, listeners.failed, listeners.took);
    let first_error = listeners.first_error.clone();
    listeners.close().await;
    stack.stop().await;
    ctx.report.check(
        format!("idle listeners ({} opened)", thousands(opened as u64)),
        Checks {
            sent: k as u64,
            acked: opened as u64,
            send_errors: failed as u64,
            ..Checks::default()
        },
        first_error,
    );
    let per_stream = |before: u64, after: u64| {
        if opened > 0 {
            (after as f64 - before as f64) / opened as f64
        } else {
            0.0
        }
    };
    let per = per_stream(before, after);
    let own = per_stream(own_before, own_after);
    ctx.report.figure(
        "g",
        format!(
            "relay RSS per idle listener ({} listeners: hello → welcome, then idle)",
            thousands(opened as u64)
        ),
        format!(
            "{} ({} → {})",
            fmt_bytes(per),
            fmt_bytes(before as f64),
            fmt_bytes(after as f64)
        ),
    );
    ctx.report.figure(
        "g",
        "for scale: bench process RSS per open client stream (tokio-tungstenite, 4 KiB read buffer, one task each)",
        fmt_bytes(own),
    );
    ctx.report.figure(
        "g",
        format!(
            "time to open {} listeners (128 handshakes at a time)",
            thousands(opened as u64)
        ),
        format!(
            "{} ({})",
            fmt_dur(took),
            fmt_rate(opened as f64 / took.as_secs_f64().max(1e-9))
        ),
    );
    if failed > 0 {
        bail!("{failed} of {k} idle listeners did not get their welcome");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_take_the_middle() {
        assert_eq!(median(vec![]), 0.0);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=1000).map(Duration::from_millis).collect();
        assert_eq!(pct(&v, 0.5), Duration::from_millis(500));
        assert_eq!(pct(&v, 0.99), Duration::from_millis(990));
        assert_eq!(pct(&v, 0.999), Duration::from_millis(999));
        assert_eq!(pct(&v[..1], 0.999), Duration::from_millis(1));
    }

    #[test]
    fn smoke_plan_is_small() {
        let a = Args::parse_from(["meethook-bench", "--smoke"]);
        let p = Plan::from_args(&a);
        assert_eq!(p.concurrency.len(), 2);
        assert!(p.backlog <= 100 && p.idle <= 20 && p.events <= 200);
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
    }
}
