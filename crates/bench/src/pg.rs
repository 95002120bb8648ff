//! Phase `pg`: the relay on the PostgreSQL store (`meethook relay --store postgres://…`), one
//! relay and two relays sharing the database, against the direct baseline and the relay on
//! SQLite, all in the same phase. The schema is created for the phase (with `psql`) and dropped
//! at its end.

use std::time::Instant;

use anyhow::{bail, Context};

use crate::body::Bodies;
use crate::ctx::Ctx;
use crate::handler::{Checks, Handler, Tracker};
use crate::latency::serial_run;
use crate::load::{self, LoadResult, Target};
use crate::procs::Relay;
use crate::report::{fmt_dur, fmt_rate, fmt_size, thousands};
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
    let out = std::process::Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
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
    Ok(())
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

async fn measure(ctx: &mut Ctx, store: &str) -> anyhow::Result<()> {
    let on_pg = vec!["--store".to_string(), store.to_string()];

    // Acknowledged events/s: direct, then SQLite, PostgreSQL × 1 and × 2.
    let label = format!("pg phase: direct, {SENDERS} senders");
    let direct = crate::throughput::direct_flood(ctx, SENDERS, SIZE, &label)
        .await?
        .rate;
    let sqlite = ack_run(ctx, "SQLite, 1 relay", &[], 1).await?;
    let pg1 = ack_run(ctx, "PostgreSQL, 1 relay", &on_pg, 1).await?;
    let pg2 = ack_run(ctx, "PostgreSQL, 2 relays on one database", &on_pg, 2).await?;
    let what = |stores: &str| {
        format!(
            "acknowledged events/s at the relay (2xx), {stores}, {SENDERS} senders, {}",
            fmt_size(SIZE)
        )
    };
    ctx.report.pg(
        what("1 relay on PostgreSQL"),
        fmt_rate(pg1),
        fmt_rate(direct),
        ratio(pg1, direct),
        fmt_rate(sqlite),
        ratio(pg1, sqlite),
    );
    ctx.report.pg(
        what(&format!(
            "2 relays on the same PostgreSQL database ({} senders each; SQLite column: 1 relay)",
            SENDERS / 2
        )),
        fmt_rate(pg2),
        fmt_rate(direct),
        ratio(pg2, direct),
        fmt_rate(sqlite),
        ratio(pg2, sqlite),
    );
    ctx.report.pg(
        what("1 relay on SQLite (the comparison column)"),
        fmt_rate(sqlite),
        fmt_rate(direct),
        ratio(sqlite, direct),
        "–",
        None,
    );

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

/// `relays` relays started with `extra` flags, one channel, `SENDERS` senders spread over the
/// relays, no listener; acknowledged events/s. Checks the seqs the relays answered.
async fn ack_run(
    ctx: &mut Ctx,
    label: &str,
    extra: &[String],
    relays: usize,
) -> anyhow::Result<f64> {
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
    let channel = started[0].create_channel().await?;
    let targets: Vec<Target> = started
        .iter()
        .map(|r| Target {
            addr: r.addr,
            path: format!("/hooks/{}", channel.id),
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
    for r in &mut started {
        r.proc.check_alive()?;
    }
    for r in started {
        r.proc.stop().await;
    }
    let (dups, gaps) = tracker.acked_seq_faults(0..warm + n);
    let first_error = w.first_error.clone().or(m.first_error.clone());
    ctx.report.check(
        format!("pg phase: {label}, {SENDERS} senders, no listener (answers only)"),
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
    Ok(m.acked_per_sec())
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
