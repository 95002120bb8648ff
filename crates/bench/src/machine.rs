//! The machine a run is on, for the report: CPU, memory, kernel, filesystem, load, and
//! how much CPU other processes took during the run.

use std::path::Path;

use crate::probe;
use crate::procs::{self};
use crate::report::{fmt_bytes, fmt_dur};

pub(crate) fn machine_info(meethook: &Path, work: &Path) -> Vec<(String, String)> {
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
        (
            "probe: append 1 KiB + fdatasync on the data directories' disk (median of 200; the relay pays at least one before each 2xx)".into(),
            probe::append_fdatasync(work, 200).map_or_else(|| "n/a".into(), fmt_dur),
        ),
        ("probe: 16 MiB copy into never-touched / just-used memory (median of 3)".into(), {
            let (fresh, reused) = probe::copy_16mib();
            format!("{} / {}", fmt_dur(fresh), fmt_dur(reused))
        }),
    ]
}

/// Machine-wide busy CPU time and this process's own (children included), in clock ticks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuShare {
    busy: u64,
    total: u64,
    own: u64,
}

impl CpuShare {
    pub(crate) fn now() -> Option<CpuShare> {
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
    pub(crate) fn others_until(&self, end: &CpuShare) -> String {
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
pub(crate) fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The 1/5/15-minute load averages: other work on the machine skews every figure.
pub(crate) fn load_average() -> String {
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
