//! Phase `pg`: the relay on the PostgreSQL store (`meethook relay --store postgres://…`), one
//! relay and two relays sharing the database, against the direct baseline and the relay on
//! SQLite, all in the same phase. The schema is created for the phase (with `psql`) and dropped
//! at its end.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::body::Bodies;
use crate::ctx::Ctx;
use crate::handler::{Checks, Handler, Tracker};
use crate::latency::serial_run;
use crate::load::{self, LoadResult, Target};
use crate::procs::Relay;
use crate::report::{fmt_dur, fmt_rate, fmt_ratio, fmt_size, thousands};
use crate::stack::Stack;
use crate::stats::{dur_ratio, pct, ratio, sorted};

/// Concurrent senders of the acknowledged-events/s runs.
pub const SENDERS: usize = 64;
/// Body size of every run of the phase.
const SIZE: usize = 1 << 10;

/// A schema of its own in the benchmark database; dropped on [`PgSchema::drop_now`] or drop.
pub struct PgSchema {
    base: String,
    name: String,
    dropped: bool,
}

impl PgSchema {
    /// `CREATE SCHEMA mh_bench_…` in the database at `base`.
    pub fn create(base: &str) -> anyhow::Result<PgSchema> {
        let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let name = format!("mh_bench_{}_{:x}", std::process::id(), nanos & 0xffff_ffff);
        psql(base, &format!("CREATE SCHEMA {name}"))
            .with_context(|| format!("create schema {name} at {}", redact(base)))?;
        Ok(PgSchema {
            base: base.to_string(),
            name,
            dropped: false,
        })
    }

    /// The `--store` URL selecting this schema.
    pub fn url(&self) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-csearch_path%3D{}", self.base, self.name)
    }

    /// `DROP SCHEMA … CASCADE`.
    pub fn drop_now(&mut self) -> anyhow::Result<()> {
        self.dropped = true;
        psql(
            &self.base,
            &format!(
                "SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS {} CASCADE",
                self.name
            ),
        )
        .with_context(|| format!("drop schema {}", self.name))
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        if !self.dropped {
            if let Err(e) = self.drop_now() {
                eprintln!("meethook-bench: {e:#}");
            }
        }
    }
}

/// Runs `sql` with `psql` (the bench has no PostgreSQL client of its own).
fn psql(url: &str, sql: &str) -> anyhow::Result<()> {
    psql_value(url, sql).map(|_| ())
}

/// Runs `sql` with `psql` and returns what it printed (unaligned, tuples only).
fn psql_value(url: &str, sql: &str) -> anyhow::Result<String> {
    let out = std::process::Command::new("psql")
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(std::process::Stdio::null())
        .output()
        .context("run psql (the pg phase needs the PostgreSQL client `psql` on PATH)")?;
    if !out.status.success() {
        bail!(
            "psql failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The URL with its password (if any) replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..auth_end].rfind('@') {
        Some(at) => match rest[..at].split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***{}", &rest[at..]),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// The phase: a fresh schema, the measurements, the schema dropped.
pub async fn phase(ctx: &mut Ctx, base: &str) -> anyhow::Result<()> {
    let mut schema = PgSchema::create(base)?;
    ctx.report.pg_notes.push(format!(
        "server `{}`; schema `{}` created for this phase and dropped at its end",
        redact(base),
        schema.name
    ));
    ctx.report.pg_notes.push(format!(
        "counts: acknowledged-events/s runs {} events (+{} warm-up) at {SENDERS} senders, {} bodies, no listener; latency runs {} events (+{} warm-up) at 1 sender",
        thousands(ctx.plan.events),
        ctx.plan.warmup,
        fmt_size(SIZE),
        thousands(latency_events(ctx)),
        ctx.plan.warmup,
    ));
    let r = measure(ctx, &schema.url()).await;
    let dropped = schema.drop_now();
    r?;
    dropped
}

fn latency_events(ctx: &Ctx) -> u64 {
    ctx.plan.bodies.first().map(|b| b.1).unwrap_or(200)
}

/// Channels of the spread runs.
const CHANNELS: usize = 64;
/// Relay counts of the PostgreSQL runs.
const RELAYS: [usize; 3] = [1, 2, 3];

/// How the senders of an acknowledged-events/s run pick their channel.
#[derive(Clone, Copy)]
enum Shape {
    /// Every sender posts to the same channel.
    Hot,
    /// Sender `i` posts to channel `i mod CHANNELS`.
    Spread,
}

impl Shape {
    fn channels(self) -> usize {
        match self {
            Shape::Hot => 1,
            Shape::Spread => CHANNELS,
        }
    }

    fn name(self) -> String {
        match self {
            Shape::Hot => "one hot channel".into(),
            Shape::Spread => format!("{CHANNELS} channels"),
        }
    }
}

/// What one acknowledged-events/s run measured.
struct AckRun {
    rate: f64,
    acked: u64,
    /// CPU of each relay during the measured part.
    relay_cpu: Vec<Duration>,
    /// The PostgreSQL server's CPU and counters over the run (PostgreSQL runs only).
    server: Option<ServerUse>,
}

async fn measure(ctx: &mut Ctx, store: &str) -> anyhow::Result<()> {
    let on_pg = vec!["--store".to_string(), store.to_string()];
    let base = store.to_string();

    // Acknowledged events/s: direct, then per shape SQLite and PostgreSQL × 1, 2, 3.
    let label = format!("pg phase: direct, {SENDERS} senders");
    let direct = crate::throughput::direct_flood(ctx, SENDERS, SIZE, &label)
        .await?
        .rate;
    for shape in [Shape::Hot, Shape::Spread] {
        let sqlite = ack_run(ctx, "SQLite, 1 relay", &[], 1, shape, None).await?;
        let mut pg = Vec::new();
        for n in RELAYS {
            let label = format!("PostgreSQL, {n} relay{}", if n > 1 { "s" } else { "" });
            pg.push(ack_run(ctx, &label, &on_pg, n, shape, Some(&base)).await?);
        }
        let what = |stores: &str| {
            format!(
                "acknowledged events/s at the relay (2xx), {stores}, {SENDERS} senders over {}, {}",
                shape.name(),
                fmt_size(SIZE)
            )
        };
        for (n, r) in RELAYS.iter().zip(&pg) {
            ctx.report.pg(
                what(&format!(
                    "{n} relay{} on PostgreSQL{}",
                    if *n > 1 { "s" } else { "" },
                    if *n > 1 {
                        format!(" ({} of 1 relay)", fmt_ratio(r.rate / pg[0].rate))
                    } else {
                        String::new()
                    }
                )),
                fmt_rate(r.rate),
                fmt_rate(direct),
                ratio(r.rate, direct),
                fmt_rate(sqlite.rate),
                ratio(r.rate, sqlite.rate),
            );
        }
        ctx.report.pg(
            what("1 relay on SQLite (the comparison column)"),
            fmt_rate(sqlite.rate),
            fmt_rate(direct),
            ratio(sqlite.rate, direct),
            "–",
            None,
        );
        ctx.report
            .pg_costs
            .push(cost_row(&shape.name(), "SQLite", 1, &sqlite, sqlite.rate));
        for (n, r) in RELAYS.iter().zip(&pg) {
            ctx.report
                .pg_costs
                .push(cost_row(&shape.name(), "PostgreSQL", *n, r, pg[0].rate));
        }
        if let Shape::Spread = shape {
            model(ctx, &pg);
        }
    }

    // e2e latency, 1 sender: direct, SQLite + listen, PostgreSQL + listen.
    let n = latency_events(ctx);
    let direct = {
        let handler = Handler::start(Tracker::new(0), false).await?;
        let target = Target {
            addr: handler.addr(),
            path: "/hook".into(),
            relay: false,
        };
        let label = format!("pg phase: direct, 1 sender, {}", fmt_size(SIZE));
        serial_run(ctx, &label, &handler, &target, SIZE, n).await
    };
    let sqlite = latency_run(ctx, "SQLite", &[], n).await?;
    let pg = latency_run(ctx, "PostgreSQL", &on_pg, n).await?;
    let (d, s, p) = (
        sorted(&direct.e2e_latency),
        sorted(&sqlite.e2e_latency),
        sorted(&pg.e2e_latency),
    );
    for (name, q) in [("p50", 0.5), ("p99", 0.99)] {
        let (dv, sv, pv) = (pct(&d, q), pct(&s, q), pct(&p, q));
        ctx.report.pg(
            format!(
                "e2e latency {name}, 1 sender, {}, relay on PostgreSQL + `meethook listen` (n={})",
                fmt_size(SIZE),
                thousands(p.len() as u64)
            ),
            fmt_dur(pv),
            fmt_dur(dv),
            dur_ratio(pv, dv),
            fmt_dur(sv),
            dur_ratio(pv, sv),
        );
    }
    let (d, s, p) = (
        sorted(&direct.ack_latency),
        sorted(&sqlite.ack_latency),
        sorted(&pg.ack_latency),
    );
    let (dv, sv, pv) = (pct(&d, 0.5), pct(&s, 0.5), pct(&p, 0.5));
    ctx.report.pg(
        "POST → answer p50, same runs (relay: 200 after COMMIT / fsync; direct: handler's 200)",
        fmt_dur(pv),
        fmt_dur(dv),
        dur_ratio(pv, dv),
        fmt_dur(sv),
        dur_ratio(pv, sv),
    );
    Ok(())
}

/// A line of the cost table: CPU per acknowledged event of each process, and the server's
/// commits and WAL syncs per event.
fn cost_row(shape: &str, store: &str, relays: usize, r: &AckRun, one: f64) -> Vec<String> {
    let per = |d: Duration| format!("{:.0} µs", d.as_secs_f64() * 1e6 / r.acked.max(1) as f64);
    let relays_cpu: Vec<String> = r.relay_cpu.iter().map(|d| per(*d)).collect();
    let total: Duration = r.relay_cpu.iter().sum();
    let (server, commits, syncs) = match &r.server {
        Some(s) => (
            per(s.cpu),
            format!("{:.3}", s.commits as f64 / r.acked.max(1) as f64),
            format!("{:.3}", s.wal_syncs as f64 / r.acked.max(1) as f64),
        ),
        None => ("–".into(), "–".into(), "–".into()),
    };
    vec![
        format!(
            "{shape}, {relays} relay{} on {store}",
            if relays > 1 { "s" } else { "" }
        ),
        fmt_rate(r.rate),
        fmt_ratio(r.rate / one),
        format!("{} ({})", per(total), relays_cpu.join(" · ")),
        server,
        commits,
        syncs,
    ]
}

/// The capacity model: from the 64-channel runs' CPU per event (relays, server), what 1, 2, 4
/// and 8 relays reach when each relay has cores of its own and the server has its own: the
/// relays' CPU per event as with 1 relay, the server's as with 1 relay and as with the most
/// relays measured (more relays cost the server more per event: smaller batches, lock waits).
fn model(ctx: &mut Ctx, pg: &[AckRun]) {
    let (Some(first), Some(last)) = (pg.first(), pg.last()) else {
        return;
    };
    let per = |d: Duration, r: &AckRun| d.as_secs_f64() / r.acked.max(1) as f64;
    let relay = per(first.relay_cpu.iter().sum::<Duration>(), first);
    let (Some(s1), Some(sn)) = (&first.server, &last.server) else {
        return;
    };
    let (db1, dbn) = (per(s1.cpu, first), per(sn.cpu, last));
    let commits = |s: &ServerUse, r: &AckRun| s.commits as f64 / r.acked.max(1) as f64;
    let rows: Vec<String> = [1, 2, 4, 8]
        .iter()
        .map(|n| {
            let relays = *n as f64 * MODEL_RELAY_CORES / relay;
            let (lo, hi) = (MODEL_DB_CORES / dbn, MODEL_DB_CORES / db1);
            let bound = if relays <= lo {
                String::from("relay-bound")
            } else if relays <= hi {
                format!("relay-bound, or PostgreSQL-bound at {}", fmt_rate(lo))
            } else {
                format!("PostgreSQL-bound, {} to {}", fmt_rate(lo), fmt_rate(hi))
            };
            format!(
                "{n} relay{}: {} ({bound})",
                if *n > 1 { "s" } else { "" },
                fmt_rate(relays.min(hi))
            )
        })
        .collect();
    ctx.report.pg_notes.push(format!(
        "capacity model, 64 channels: each relay on {MODEL_RELAY_CORES} cores of its own at \
         {:.0} µs of CPU per event (the 1-relay run), PostgreSQL on {MODEL_DB_CORES} cores at \
         {:.0} µs per event (1 relay, {:.3} commits per event) to {:.0} µs ({} relays, {:.3} \
         commits per event); N relays reach min(N × {MODEL_RELAY_CORES} / relay CPU, \
         {MODEL_DB_CORES} / PostgreSQL CPU): {}",
        relay * 1e6,
        db1 * 1e6,
        commits(s1, first),
        dbn * 1e6,
        RELAYS[RELAYS.len() - 1],
        commits(sn, last),
        rows.join("; ")
    ));
}

/// Cores per relay in the capacity model.
const MODEL_RELAY_CORES: f64 = 2.0;
/// Cores of the PostgreSQL server in the capacity model.
const MODEL_DB_CORES: f64 = 8.0;

/// `relays` relays started with `extra` flags, `shape`'s channels, `SENDERS` senders spread
/// over the relays and channels (sender `i` posts to relay `i mod relays`, channel
/// `i mod channels`), no listener; acknowledged events/s and CPU. With `server` (the database
/// URL), the PostgreSQL server's CPU and counters too. Checks the seqs the relays answered.
async fn ack_run(
    ctx: &mut Ctx,
    label: &str,
    extra: &[String],
    relays: usize,
    shape: Shape,
    server: Option<&str>,
) -> anyhow::Result<AckRun> {
    let (n, warm) = (ctx.plan.events, ctx.plan.warmup);
    let limit = ctx.plan.limit(n);
    let bodies = Bodies::new(SIZE);
    let mut flags = ctx.relay_flags.clone();
    flags.extend(extra.iter().cloned());
    let mut started = Vec::new();
    for i in 0..relays {
        let dir = ctx.dir(&format!("pg-acks-{relays}-{i}"));
        started.push(Relay::start(&ctx.meethook, &dir, ctx.max_body(), &flags).await?);
    }
    let mut channels = Vec::new();
    for _ in 0..shape.channels() {
        channels.push(started[0].create_channel().await?);
    }
    let targets: Vec<Target> = (0..SENDERS.max(relays))
        .map(|i| Target {
            addr: started[i % relays].addr,
            path: format!("/hooks/{}", channels[i % channels.len()].id),
            relay: true,
        })
        .collect();
    let tracker = Tracker::new((warm + n) as usize);
    // Warm-up: one sender per relay.
    let w = load::flood_spread(
        &targets,
        &tracker,
        0..warm,
        relays,
        &bodies,
        Instant::now() + limit,
        false,
    )
    .await;
    let cpu0: Vec<Duration> = started
        .iter()
        .map(|r| r.proc.cpu().unwrap_or_default())
        .collect();
    let server0 = server.map(ServerUse::now).transpose()?;
    let m = load::flood_spread(
        &targets,
        &tracker,
        warm..warm + n,
        SENDERS,
        &bodies,
        Instant::now() + limit,
        false,
    )
    .await;
    let relay_cpu: Vec<Duration> = started
        .iter()
        .zip(&cpu0)
        .map(|(r, c0)| r.proc.cpu().unwrap_or_default().saturating_sub(*c0))
        .collect();
    for r in &mut started {
        r.proc.check_alive()?;
    }
    for r in started {
        r.proc.stop().await;
    }
    let server = match (server, server0) {
        (Some(url), Some(s0)) => {
            // Backends report their counters as they exit.
            tokio::time::sleep(Duration::from_millis(500)).await;
            Some(ServerUse::now(url)?.since(&s0))
        }
        _ => None,
    };
    let (dups, gaps) = tracker.acked_seq_faults(0..warm + n);
    let first_error = w.first_error.clone().or(m.first_error.clone());
    ctx.report.check(
        format!(
            "pg phase: {label}, {SENDERS} senders over {}, no listener (answers only)",
            shape.name()
        ),
        Checks {
            sent: w.sent + m.sent,
            acked: w.acked + m.acked,
            send_errors: w.errors + m.errors,
            dups,
            out_of_order: gaps,
            ..Checks::default()
        },
        first_error,
    );
    Ok(AckRun {
        rate: m.acked_per_sec(),
        acked: m.acked,
        relay_cpu,
        server,
    })
}

/// The PostgreSQL server's CPU (every `postgres` process, and the exited ones through the
/// postmaster's children's time) and its commit and WAL-sync counters. Server-wide: other
/// clients of the same server count too.
struct ServerUse {
    cpu: Duration,
    commits: u64,
    wal_syncs: u64,
}

impl ServerUse {
    fn now(url: &str) -> anyhow::Result<ServerUse> {
        let counters = psql_value(
            url,
            "SELECT (SELECT sum(xact_commit) FROM pg_stat_database) || ' ' || wal_sync FROM pg_stat_wal",
        )?;
        let mut f = counters
            .split_whitespace()
            .map(|x| x.parse::<u64>().unwrap_or(0));
        Ok(ServerUse {
            cpu: server_cpu(),
            commits: f.next().unwrap_or(0),
            wal_syncs: f.next().unwrap_or(0),
        })
    }

    fn since(&self, before: &ServerUse) -> ServerUse {
        ServerUse {
            cpu: self.cpu.saturating_sub(before.cpu),
            commits: self.commits.saturating_sub(before.commits),
            wal_syncs: self.wal_syncs.saturating_sub(before.wal_syncs),
        }
    }
}

/// utime + stime of every process named `postgres`, plus cutime + cstime of the postmaster
/// (the backends that exited). Zero where `/proc` shows none (a server on another host).
fn server_cpu() -> Duration {
    let mut ticks = 0u64;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    for e in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if !head.ends_with("(postgres") {
            continue;
        }
        // Fields after the name: state ppid … utime(12) stime(13) cutime(14) cstime(15).
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        if f.len() < 14 {
            continue;
        }
        ticks += f[11] + f[12];
        let parent = std::fs::read_to_string(format!("/proc/{}/comm", f[1])).unwrap_or_default();
        if parent.trim() != "postgres" {
            ticks += f[13] + f[14];
        }
    }
    Duration::from_secs_f64(ticks as f64 / crate::procs::clock_ticks() as f64)
}

/// One relay (with `extra` flags) + `meethook listen` → handler, 1 sender, checked.
async fn latency_run(
    ctx: &mut Ctx,
    store: &str,
    extra: &[String],
    n: u64,
) -> anyhow::Result<LoadResult> {
    let handler = Handler::start(Tracker::new(0), true).await?;
    let name = format!("pg-latency-{}", store.to_lowercase());
    let mut stack = Stack::start_on(ctx, &name, Some(&handler.url()), extra).await?;
    let label = format!(
        "pg phase: meethook on {store}, 1 sender, {}",
        fmt_size(SIZE)
    );
    let target = stack.target.clone();
    let r = serial_run(ctx, &label, &handler, &target, SIZE, n).await;
    stack.check_alive()?;
    stack.stop().await;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db?x=1"),
            "postgres://u:***@h:5432/db?x=1"
        );
        assert_eq!(
            redact("postgres://postgres@127.0.0.1:5432/test"),
            "postgres://postgres@127.0.0.1:5432/test"
        );
    }
}
