//! The markdown report: machine header, the figures table, the integrity checks.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use meethook_proto::human::human_size;

use crate::handler::Checks;
use crate::targets::Facts;

/// One line of the figures table.
pub struct Row {
    /// Figure letter (a-g).
    pub fig: &'static str,
    /// What is measured.
    pub what: String,
    /// Through meethook.
    pub meethook: String,
    /// The direct baseline, when one applies.
    pub direct: String,
    /// meethook / direct.
    pub ratio: String,
}

/// One line of the PostgreSQL table (phase `pg`).
pub struct PgRow {
    /// What is measured.
    pub what: String,
    /// Through meethook (store named in `what`).
    pub meethook: String,
    /// The direct baseline of the same phase.
    pub direct: String,
    /// meethook / direct.
    pub ratio: String,
    /// The same figure with the relay on SQLite, same load, same phase.
    pub sqlite: String,
    /// PostgreSQL / SQLite.
    pub vs_sqlite: String,
}

/// One line of the plain-tunnel table (phase `peers`).
pub struct PeerRow {
    /// Tunnel and what is measured.
    pub what: String,
    /// Through the tunnel.
    pub tunnel: String,
    /// The direct baseline of the same phase.
    pub direct: String,
    /// tunnel / direct.
    pub ratio: String,
}

/// Everything the run found.
#[derive(Default)]
pub struct Report {
    /// The figures.
    pub rows: Vec<Row>,
    /// The PostgreSQL figures (phase `pg`).
    pub pg_rows: Vec<PgRow>,
    /// Remarks of the PostgreSQL section (server, schema, why it was skipped).
    pub pg_notes: Vec<String>,
    /// The PostgreSQL cost table: one line per acknowledged-events/s run.
    pub pg_costs: Vec<Vec<String>>,
    /// The plain-tunnel figures (phase `peers`).
    pub peer_rows: Vec<PeerRow>,
    /// Remarks of the plain-tunnel section; empty when the phase did not run.
    pub peer_notes: Vec<String>,
    /// The inspector figures (phase `inspector`).
    pub inspector_rows: Vec<Row>,
    /// Remarks of the inspector section; empty when the phase did not run.
    pub inspector_notes: Vec<String>,
    /// The keyed-order figures (phase `order`): one line per handler delay.
    pub order_rows: Vec<Vec<String>>,
    /// Remarks of the keyed-order section; empty when the phase did not run.
    pub order_notes: Vec<String>,
    /// What the targets table is judged from.
    pub facts: Facts,
    /// Smoke mode (the targets table says its verdicts mean nothing).
    pub smoke: bool,
    /// The hostile-senders figures (phase `hostile`): figure, without, under, ratio.
    pub hostile_rows: Vec<Vec<String>>,
    /// Remarks of the hostile-senders section; empty when the phase did not run.
    pub hostile_notes: Vec<String>,
    /// Integrity counts per run.
    pub checks: Vec<(String, Checks, Option<String>)>,
    /// Phases that failed outright.
    pub errors: Vec<String>,
    /// Settings and remarks printed under the header.
    pub settings: Vec<String>,
}

impl Report {
    /// Adds a figure with no baseline.
    pub fn figure(
        &mut self,
        fig: &'static str,
        what: impl Into<String>,
        meethook: impl Into<String>,
    ) {
        self.rows.push(Row {
            fig,
            what: what.into(),
            meethook: meethook.into(),
            direct: "–".into(),
            ratio: "–".into(),
        });
    }

    /// Adds a figure with its baseline and ratio.
    pub fn compare(
        &mut self,
        fig: &'static str,
        what: impl Into<String>,
        meethook: impl Into<String>,
        direct: impl Into<String>,
        ratio: Option<f64>,
    ) {
        self.rows.push(Row {
            fig,
            what: what.into(),
            meethook: meethook.into(),
            direct: direct.into(),
            ratio: ratio.map(fmt_ratio).unwrap_or_else(|| "–".into()),
        });
    }

    /// Adds a PostgreSQL figure with its direct baseline and its SQLite comparison.
    pub fn pg(
        &mut self,
        what: impl Into<String>,
        meethook: impl Into<String>,
        direct: impl Into<String>,
        ratio: Option<f64>,
        sqlite: impl Into<String>,
        vs_sqlite: Option<f64>,
    ) {
        let r = |x: Option<f64>| x.map(fmt_ratio).unwrap_or_else(|| "–".into());
        self.pg_rows.push(PgRow {
            what: what.into(),
            meethook: meethook.into(),
            direct: direct.into(),
            ratio: r(ratio),
            sqlite: sqlite.into(),
            vs_sqlite: r(vs_sqlite),
        });
    }

    /// Adds a plain-tunnel figure with its direct baseline.
    pub fn peer(
        &mut self,
        what: impl Into<String>,
        tunnel: impl Into<String>,
        direct: impl Into<String>,
        ratio: Option<f64>,
    ) {
        self.peer_rows.push(PeerRow {
            what: what.into(),
            tunnel: tunnel.into(),
            direct: direct.into(),
            ratio: ratio.map(fmt_ratio).unwrap_or_else(|| "–".into()),
        });
    }

    /// Adds an inspector figure (phase `inspector`).
    pub fn inspector(
        &mut self,
        fig: &'static str,
        what: impl Into<String>,
        meethook: impl Into<String>,
        baseline: impl Into<String>,
        ratio: Option<f64>,
    ) {
        self.inspector_rows.push(Row {
            fig,
            what: what.into(),
            meethook: meethook.into(),
            direct: baseline.into(),
            ratio: ratio.map(fmt_ratio).unwrap_or_else(|| "–".into()),
        });
    }

    /// The "Inspector" section (phase `inspector`), empty when the phase did not run.
    pub fn inspector_section(&self) -> String {
        if self.inspector_notes.is_empty() && self.inspector_rows.is_empty() {
            return String::new();
        }
        let mut s = String::from("## Inspector\n\n");
        s.push_str(
            "Phase `inspector` (`scripts/bench --only inspector` runs \
             it alone): (h) the same load through `meethook listen --inspect ADDR` with a client \
             reading its `GET /api/stream` against none, alternating, in the same run; (i) the \
             list API's answer time over a big journal.\n\n",
        );
        for n in &self.inspector_notes {
            let _ = writeln!(s, "- {n}");
        }
        if !self.inspector_rows.is_empty() {
            s.push_str(
                "\n| fig | figure | measured | baseline | ratio |\n|---|---|---:|---:|---:|\n",
            );
            for r in &self.inspector_rows {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} |",
                    r.fig, r.what, r.meethook, r.direct, r.ratio
                );
            }
        }
        s.push('\n');
        s
    }

    /// The "Keyed order" section (phase `order`), empty when the phase did not run.
    pub fn order_section(&self) -> String {
        if self.order_notes.is_empty() && self.order_rows.is_empty() {
            return String::new();
        }
        let mut s = String::from("## Keyed order\n\n");
        s.push_str(
            "Phase `order` (`scripts/bench-order` or `scripts/bench --only order` runs it \
             alone): events of several bots are posted while no listener runs, then \
             `meethook listen` drains them into a handler that holds each request for a set \
             time; delivered events/s from starting `listen` to the last arrival at the \
             handler, `--order channel` against `--order bot --parallel N`, alternating, in \
             the same run. Each bot's events are checked to arrive in seq order (runs \
             labelled `order phase: …` in the integrity checks).\n\n",
        );
        for n in &self.order_notes {
            let _ = writeln!(s, "- {n}");
        }
        if !self.order_rows.is_empty() {
            s.push_str(
                "\n| handler | events | `--order channel` | `--order bot --parallel 8` | bot / channel | most requests at the handler at once (channel / bot) |\n|---|---:|---:|---:|---:|---:|\n",
            );
            for r in &self.order_rows {
                let _ = writeln!(s, "| {} |", r.join(" | "));
            }
        }
        s.push('\n');
        s
    }

    /// The "Plain tunnels" section (phase `peers`), empty when the phase did not run.
    pub fn peer_section(&self) -> String {
        if self.peer_notes.is_empty() && self.peer_rows.is_empty() {
            return String::new();
        }
        let mut s = String::from(
            "## Plain tunnels (nothing stored)

",
        );
        s.push_str(
            "Phase `peers` (`--peers`): the same 1 KiB load through TCP tunnels that store \
             nothing and forward to the same handler, against the direct baseline of this \
             phase. Compare their ratios with meethook's in the table above.\n\n",
        );
        for n in &self.peer_notes {
            let _ = writeln!(s, "- {n}");
        }
        if !self.peer_rows.is_empty() {
            s.push_str("\n| figure | tunnel | direct | tunnel / direct |\n|---|---:|---:|---:|\n");
            for r in &self.peer_rows {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} |",
                    r.what, r.tunnel, r.direct, r.ratio
                );
            }
        }
        s.push('\n');
        s
    }

    /// The "PostgreSQL store" section (phase `pg`), starting with its `##` heading.
    pub fn pg_section(&self) -> String {
        let mut s = String::from("## PostgreSQL store\n\n");
        s.push_str(
            "Phase `pg`: the relay on PostgreSQL (`meethook relay --store postgres://…`) against the \
             direct baseline and against the relay on SQLite, all measured in this phase of the \
             same run. Runs are labelled `pg phase: …` in the integrity checks.\n\n",
        );
        for n in &self.pg_notes {
            let _ = writeln!(s, "- {n}");
        }
        if !self.pg_rows.is_empty() {
            s.push_str(
                "\n| figure | meethook | direct | meethook / direct | relay on SQLite, same load | PostgreSQL / SQLite |\n",
            );
            s.push_str("|---|---:|---:|---:|---:|---:|\n");
            for r in &self.pg_rows {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} |",
                    r.what, r.meethook, r.direct, r.ratio, r.sqlite, r.vs_sqlite
                );
            }
        }
        if !self.pg_costs.is_empty() {
            s.push_str(
                "\nCost per acknowledged event of the same runs: CPU of the relays (total, then each), \
                 of the PostgreSQL server's processes, and the server's commits and WAL syncs \
                 (`pg_stat_database`, `pg_stat_wal`; server-wide, so other clients of the server \
                 count too).\n\n| run | acknowledged/s | vs 1 relay, same store | relay CPU per event | PostgreSQL CPU per event | commits per event | WAL syncs per event |\n|---|---:|---:|---:|---:|---:|---:|\n",
            );
            for r in &self.pg_costs {
                let _ = writeln!(s, "| {} |", r.join(" | "));
            }
        }
        s
    }

    /// Records a run's integrity counts.
    pub fn check(&mut self, run: impl Into<String>, c: Checks, first_error: Option<String>) {
        self.checks.push((run.into(), c, first_error));
    }

    /// Whether every run was clean and no phase failed.
    pub fn ok(&self) -> bool {
        self.errors.is_empty() && self.checks.iter().all(|(_, c, _)| c.clean())
    }

    /// The whole report as markdown.
    pub fn render(&self, machine: &[(String, String)]) -> String {
        let mut s = String::new();
        s.push_str("# meethook benchmarks\n\n");
        s.push_str(
            "Generated by `scripts/bench` (crate `crates/bench`, binary `meethook-bench`). \
             One run measures everything against a direct baseline taken in the same run; \
             all traffic is on 127.0.0.1.\n\n",
        );
        s.push_str(&self.facts.section(self.smoke));
        s.push_str("## Machine and figures\n\n");
        for (k, v) in machine {
            let _ = writeln!(s, "- {k}: {v}");
        }
        for v in &self.settings {
            let _ = writeln!(s, "- {v}");
        }
        s.push('\n');
        s.push_str("| fig | figure | meethook | direct | meethook / direct |\n");
        s.push_str("|---|---|---:|---:|---:|\n");
        for r in &self.rows {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                r.fig, r.what, r.meethook, r.direct, r.ratio
            );
        }
        s.push('\n');
        s.push_str(&self.pg_section());
        s.push('\n');
        s.push_str(&self.peer_section());
        s.push_str(&self.inspector_section());
        s.push_str(&self.order_section());
        s.push_str(&self.hostile_section());
        s.push_str("\n## Integrity checks\n\n");
        s.push_str(
            "Every delivery is checked at the handler: body byte-identical to what was sent \
             (64-bit hash of the whole body, keyed by the id embedded in it), each event once, \
             `meethook-seq` exactly the previous one plus 1 (under `--order bot`: above the \
             previous one of the same bot) and equal to the seq the relay answered for that \
             body.\n\n",
        );
        s.push_str(
            "| run | sent | acked | delivered | lost | out of order | duplicates | corrupt | seq mismatch | send errors |\n",
        );
        s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for (run, c, _) in &self.checks {
            let _ = writeln!(
                s,
                "| {run} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                c.sent,
                c.acked,
                c.delivered,
                c.lost,
                c.out_of_order,
                c.dups,
                c.corrupt,
                c.seq_mismatch,
                c.send_errors
            );
        }
        let failures: Vec<_> = self
            .checks
            .iter()
            .filter_map(|(run, _, e)| e.as_ref().map(|e| format!("{run}: {e}")))
            .chain(self.errors.iter().cloned())
            .collect();
        if failures.is_empty() {
            s.push_str("\nResult: **clean** (nothing lost, duplicated, reordered or corrupted).\n");
        } else {
            s.push_str("\nResult: **problems**\n\n");
            for f in failures {
                let _ = writeln!(s, "- {}", f.replace('\n', " "));
            }
        }
        s.push_str(METHOD);
        s
    }
}

const METHOD: &str = "
## How it is measured

- **Load generator**: hyper 1.x HTTP/1 clients, one keep-alive connection per sender; each
  sender posts its next event as soon as the previous one is answered (closed loop).
- **Handler**: a hyper server in the bench process that answers `200` with an empty body right
  after reading the request and checking it.
- **Direct**: sender → handler, no meethook in between.
- **meethook**: sender → `meethook relay` (child process, SQLite store in a temp dir, fsync
  before the `200 {\"seq\":N}`) → websocket → `meethook listen --json` (child process, own
  journal in a temp dir) → handler. Fresh relay, daemon and directories for each run.
- **e2e latency** (a, e): one sender; from starting the POST until the handler has read the
  whole body; the sender waits for that delivery before it sends the next event. A few
  warm-up events per run are not counted.
- **Throughput** (b): `acked/s` = 2xx answers from the relay ÷ time from the first POST to the
  last answer; `delivered/s` = events at the handler ÷ time from the first POST to the last
  delivery (the daemon delivers one event at a time, in seq order). The throughput runs are
  repeated in rounds (`--rounds`, every concurrency once per round, the direct run before each
  meethook run); figures b and c give the median, then each round's value in brackets. On a
  small shared VM one run of these can differ from the next by 20 % or more.
- **CPU** (c): utime + stime from `/proc/PID/stat` of relay and daemon, before the first POST
  and after the last delivery. The direct column is the bench process itself (load generator
  + handler) during the direct run, for scale.
- **Memory** (d, f, g): `VmHWM` (peak) and `VmRSS` from `/proc/PID/status`.
- **Backlog** (f): events are posted while no listener runs; then `meethook listen` starts and
  the drain rate is events ÷ time from starting it to the last delivery. Its baseline is the
  direct one-sender rate (one request at a time, like the daemon).
- **Idle listeners** (g): websocket streams that sent a valid `hello` and got their `welcome`;
  relay RSS after minus before, divided by the number of streams.
- **Hostile senders** (phase `hostile`): a relay with its default limits (not `--rate-limit 0`)
  and 1,000 channels; 50 victims each post 1 KiB every 100 ms on their own channel and
  connection (a slow answer delays that victim's next post), and their POST → 2xx
  latency is taken in a window without attack, one under attack and one without again (the
  baseline is both quiet windows). The attack: one sender on 8 connections posting to one more
  channel as fast as it is answered, ignoring `Retry-After`, and 500 connections each writing one byte of a
  request head every 3 s, reopened when the relay ends them. CPU from `/proc/PID/stat` over
  each window; afterwards each victim channel and the flooded one are read back through the
  history API with the channel token and compared with the 2xx answers (seq and body hash).
- **PostgreSQL** (phase `pg`, with `--postgres URL` or `MEETHOOK_BENCH_POSTGRES_URL`): a fresh
  schema is created for the phase and dropped at its end; relays get
  `--store URL?options=-csearch_path%3D<schema>`. Acknowledged events/s: 64 senders, 1 KiB, no
  listener (like the backlog fill), over one hot channel and over 64 channels (sender `i` posts
  to channel `i mod 64`): 1, 2 and 3 relays on the same database (sender `i` posts to relay
  `i mod N`) and 1 relay on SQLite; these runs check the relays' answers per channel
  (duplicates / out of order count repeated / missing seqs). CPU per event: utime + stime of
  each relay over the measured part, and of every `postgres` process of the server (the
  exited backends through the postmaster's cutime + cstime), divided by the acknowledged
  events; commits and WAL syncs per event from `pg_stat_database.xact_commit` (all databases)
  and `pg_stat_wal.wal_sync`, read with `psql` before and after (server-wide: another client
  of the same server counts too). The capacity model multiplies these out for relays on cores
  of their own. e2e latency: 1 sender, 1 KiB, relay
  + `meethook listen` → handler, with the full order and byte-identity checks, on PostgreSQL and
  on SQLite. Each figure's direct baseline is taken in the same phase.
- **Keyed order** (phase `order`): 8 senders post a backlog of 1 KiB events, event `i` a
  `bot.status_change` of bot `i mod 8`, while no listener runs; then `meethook listen
  --order channel` (one request at a time) or `--order bot --parallel 8` (each bot's events
  one at a time, up to 8 bots at once) starts, and delivered events/s is events ÷ time from
  starting it to the last arrival at the handler. The handler holds each request 20 ms (a
  handler that does some work) or answers at once. The handler checks each bot's seqs
  increase (channel order: each seq is the previous plus 1), and counts the requests it
  holds at once: more than 1 under `--order channel` or more than 8 under `--parallel 8` is
  a failure. Fresh relay and daemon per run; the modes alternate within each round.
- **Targets** (top of the report): ratios of figures above. CPU per event: relay + daemon
  (figure c) against bore's server + client (phase `peers`, same senders, same handler);
  e2e p50: figure a against bore's 1-sender run; order: phase `order`; 256 against 64
  senders: figure b's delivered events/s. bore's figures come from one run each, meethook's
  throughput figures are medians over the rounds.
- The bench process, the relay and the daemon share the same cores; on a small machine the
  bench's own sender and handler take a noticeable share of the CPU.
- **Comparing machines**: every delivery is a round trip to the handler, and each event
  crosses several processes and threads, so the wake-up probe in the header sets much of the
  floor: on a VM whose idle vCPUs halt, a wake-up across CPUs can cost tens of µs of CPU
  where one on the same CPU costs a few, and where the scheduler puts two threads decides
  which one pays (the unpinned probe shows it). Compare runs on different machines only
  beside that probe and the direct figures; with `--peers`, bore's and rathole's CPU per
  1,000 events is a yardstick measured in the same run.
";

/// Writes `text` to `path`, creating its directory.
pub fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text)?;
    Ok(())
}

/// `1.23 ms`, `456 µs`, `2.10 s`.
pub fn fmt_dur(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1e-3 {
        format!("{:.0} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

/// `12,345/s`.
pub fn fmt_rate(per_sec: f64) -> String {
    if per_sec < 100.0 {
        format!("{per_sec:.1}/s")
    } else {
        format!("{}/s", thousands(per_sec.round() as u64))
    }
}

/// `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1.5 KiB`, `23.4 MiB`, `-3.0 MiB`: a measured amount (an RSS difference may be negative).
pub fn fmt_bytes(b: f64) -> String {
    let size = human_size(b.abs().round() as u64);
    if b < 0.0 {
        format!("-{size}")
    } else {
        size
    }
}

/// `1 KiB`, `64 KiB`, `1 MiB`.
pub fn fmt_size(b: usize) -> String {
    if b >= 1 << 20 && b % (1 << 20) == 0 {
        format!("{} MiB", b >> 20)
    } else if b >= 1 << 10 && b % (1 << 10) == 0 {
        format!("{} KiB", b >> 10)
    } else {
        format!("{b} B")
    }
}

/// `3.10×`.
pub fn fmt_ratio(r: f64) -> String {
    if !r.is_finite() {
        "–".into()
    } else if r >= 100.0 {
        format!("{r:.0}×")
    } else if r >= 10.0 {
        format!("{r:.1}×")
    } else {
        format!("{r:.2}×")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
        assert_eq!(fmt_size(16 << 20), "16 MiB");
        assert_eq!(fmt_size(1024), "1 KiB");
        assert_eq!(fmt_dur(Duration::from_micros(250)), "250 µs");
        assert_eq!(fmt_dur(Duration::from_micros(2500)), "2.50 ms");
        assert_eq!(fmt_ratio(2.5), "2.50×");
    }
}
