//! `meethook-bench`: measures the real `meethook relay` + `meethook listen` (child processes)
//! against a direct sender → handler baseline taken in the same run, and writes a markdown
//! report.
//!
//! # Layout
//! - `main.rs`: the flags, and the phases run one after another.
//! - [`plan`]: counts and sizes from the flags; [`ctx`]: what the phases share.
//! - Phases: [`latency`] (a, e), [`throughput`] (b, c, d), [`backlog`] (f), [`idle`] (g),
//!   [`pg`] (the PostgreSQL store), [`inspector`] (h, i: the inspector's stream and list
//!   API), [`order`] (`--order channel` against `--order bot --parallel 8`), [`hostile`] (a
//!   flood and slowloris against other channels' senders), [`peers`] (plain TCP tunnels,
//!   `--peers`).
//! - [`targets`]: the targets, judged from what the phases measured.
//! - [`body`]: bodies that carry their id, and the hash that checks them.
//! - [`handler`]: the recording handler (hyper server) and the per-run [`handler::Tracker`].
//! - [`load`]: the load generator (hyper clients, keep-alive, N concurrent senders).
//! - [`stack`]: a relay, a channel and a daemon to post through.
//! - [`procs`]: relay and daemon child processes, `/proc` readers.
//! - [`machine`] and [`probe`]: what the machine is and costs, for the report's header.
//! - [`stats`]: percentiles, medians, ratios.
//! - [`report`]: the markdown.
//!
//! Phases: latency and body sizes (a, e), throughput and CPU (b, c), memory (d, collected
//! along the way), backlog (f), idle listeners (g), PostgreSQL store (`pg`, with a URL),
//! inspector (h, i), keyed order (`order`), plain tunnels (`peers`, with `--peers`).

mod backlog;
mod body;
mod ctx;
mod handler;
mod hostile;
mod idle;
mod inspector;
mod latency;
mod load;
mod machine;
mod order;
mod peers;
mod pg;
mod plan;
mod probe;
mod procs;
mod report;
mod stack;
mod stats;
mod targets;
mod throughput;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;

use ctx::Ctx;
use machine::{load_average, machine_info, open_files_limit, CpuShare};
use plan::{parse_body_size, settings, Plan};
use report::{thousands, Report};

/// `meethook-bench` flags.
#[derive(Parser, Debug)]
#[command(
    name = "meethook-bench",
    about = "Benchmarks meethook relay + listen against a direct sender → handler baseline"
)]
pub(crate) struct Args {
    /// Directory holding the `meethook` binary to measure.
    #[arg(long, default_value = "target/release")]
    pub(crate) bin_dir: PathBuf,
    /// Also write the markdown report to this file.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Tiny counts, for a quick end-to-end check (exits non-zero on any loss or reordering).
    #[arg(long)]
    pub(crate) smoke: bool,
    /// Events per 1-sender latency run at 1 KiB [default: 2000; smoke: 200].
    #[arg(long)]
    pub(crate) latency_events: Option<u64>,
    /// Bigger bodies of the 1-sender runs, besides 1 KiB: any of 64KiB, 1MiB, 16MiB
    /// (comma-separated) [default: all three; smoke: 64KiB,1MiB].
    #[arg(long, value_delimiter = ',', value_parser = parse_body_size)]
    pub(crate) body_sizes: Option<Vec<usize>>,
    /// Events per throughput run [default: 50000; smoke: 200].
    #[arg(long)]
    pub(crate) events: Option<u64>,
    /// Concurrent senders of the throughput runs [default: 16,64,256; smoke: 4,16].
    #[arg(long, value_delimiter = ',')]
    pub(crate) concurrency: Option<Vec<usize>>,
    /// Rounds of the throughput runs; each figure is the median over them, its runs shown
    /// beside it [default: 3; smoke: 1].
    #[arg(long)]
    pub(crate) rounds: Option<usize>,
    /// Events posted while no listener runs [default: 1000000; smoke: 100].
    #[arg(long)]
    pub(crate) backlog: Option<u64>,
    /// Concurrent senders filling the backlog.
    #[arg(long, default_value_t = 64)]
    pub(crate) backlog_senders: usize,
    /// Idle websocket listeners [default: 10000; smoke: 20].
    #[arg(long)]
    pub(crate) idle: Option<usize>,
    /// Directory for the relay stores and daemon journals [default: the system temp dir].
    #[arg(long)]
    pub(crate) tmp: Option<PathBuf>,
    /// Skip phases: any of latency, throughput, backlog, idle, pg, inspector, order, hostile,
    /// peers (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = parse_phase)]
    pub(crate) skip: Vec<String>,
    /// Run only these phases (comma-separated names as for --skip); `peers` here implies
    /// --peers.
    #[arg(long, value_delimiter = ',', value_parser = parse_phase)]
    pub(crate) only: Vec<String>,
    /// Events of phase `order`'s runs with the 20 ms and with the 0 ms handler, rounded down
    /// to whole rounds of 8 bots [default: 480,8000; smoke: 80,400].
    #[arg(long, value_delimiter = ',')]
    pub(crate) order_events: Option<Vec<u64>>,
    /// PostgreSQL database for the `pg` phase (a schema is created in it and dropped at the
    /// end), e.g. postgres://postgres@127.0.0.1:5432/test; without it the phase is skipped.
    #[arg(long, env = "MEETHOOK_BENCH_POSTGRES_URL")]
    pub(crate) postgres: Option<String>,
    /// Also run the 1 KiB loads through plain TCP tunnels that store nothing (bore and
    /// rathole, whichever is installed: `cargo install bore-cli rathole`), side by side.
    #[arg(long)]
    pub(crate) peers: bool,
}

/// Phases in the order they run.
const PHASES: [&str; 9] = [
    "latency",
    "throughput",
    "backlog",
    "idle",
    "pg",
    "inspector",
    "order",
    "hostile",
    "peers",
];

fn parse_phase(s: &str) -> Result<String, String> {
    let s = s.trim();
    if PHASES.contains(&s) {
        Ok(s.to_string())
    } else {
        Err(format!("unknown phase {s:?}: use {}", PHASES.join(", ")))
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
    ctx.report.smoke = args.smoke;
    let started = Instant::now();
    let cpu_start = CpuShare::now();
    for name in PHASES {
        if name == "peers" && !plan.peers {
            ctx.report.facts.bore_missing = Some(
                "bore not measured: phase `peers` runs only with `--peers` (after `cargo install bore-cli rathole`)"
                    .into(),
            );
            continue;
        }
        if !plan.runs(name) {
            let why = if plan.skip.iter().any(|s| s == name) {
                format!("`--skip {name}`")
            } else {
                "not in `--only`".to_string()
            };
            match name {
                "pg" => ctx.report.pg_notes.push(format!("skipped ({why})")),
                "peers" => {
                    ctx.report.facts.bore_missing =
                        Some(format!("bore not measured: phase `peers` skipped ({why})"))
                }
                _ => {}
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
            "latency" => latency::phase(&mut ctx).await,
            "throughput" => throughput::phase(&mut ctx).await,
            "backlog" => backlog::phase(&mut ctx).await,
            "pg" => pg::phase(&mut ctx, plan.postgres.as_deref().unwrap_or_default()).await,
            "peers" => peers::phase_peers(&mut ctx).await,
            "inspector" => inspector::phase(&mut ctx).await,
            "order" => order::phase(&mut ctx).await,
            "hostile" => hostile::phase(&mut ctx).await,
            _ => idle::phase(&mut ctx).await,
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
