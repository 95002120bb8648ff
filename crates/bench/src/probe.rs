//! Machine probes printed with the report: the costs that set this machine's floor for
//! meethook's figures (a wake-up between two threads, first touches of memory), so that
//! runs on different machines, or on one VM on different days, can be read side by side.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// A wake-up round trip's cost: its median wall time, and the CPU both threads spent per
/// trip (`None` where the kernel keeps no per-thread run time).
#[derive(Debug, Clone, Copy)]
pub struct WakeUp {
    /// Median wall time of one round trip.
    pub wall: Duration,
    /// Mean CPU time of both threads per round trip.
    pub cpu: Option<Duration>,
}

/// Round trips of one byte between two threads over a socket pair: two wake-ups, what
/// every handler exchange pays at least twice. `cpus` pins the two threads (the same CPU
/// twice, or two CPUs); `None` leaves placement to the scheduler. On a VM whose idle vCPUs
/// halt, a wake-up across CPUs can cost tens of µs of CPU where one on the same CPU costs a
/// few, and the scheduler's placement decides which an unpinned trip pays.
pub fn wakeup_round_trip(trips: u32, cpus: Option<(usize, usize)>) -> Option<WakeUp> {
    let (mut a, mut b) = UnixStream::pair().ok()?;
    let echo = std::thread::spawn(move || {
        if let Some((_, cpu)) = cpus {
            pin_to(cpu)?;
        }
        let start = thread_run_time();
        let mut byte = [0u8; 1];
        while b.read_exact(&mut byte).is_ok() {
            if b.write_all(&byte).is_err() {
                break;
            }
        }
        Some(run_time_since(start))
    });
    // Measured on a thread of its own, so pinning leaves the caller's affinity alone.
    let main = std::thread::spawn(move || {
        if let Some((cpu, _)) = cpus {
            pin_to(cpu)?;
        }
        let start = thread_run_time();
        let mut times = Vec::with_capacity(trips as usize);
        let mut byte = [7u8; 1];
        for _ in 0..trips {
            let t = Instant::now();
            a.write_all(&byte).ok()?;
            a.read_exact(&mut byte).ok()?;
            times.push(t.elapsed());
        }
        Some((median(times), run_time_since(start)))
    });
    let (wall, mine) = main.join().ok()??;
    let theirs = echo.join().ok()??;
    Some(WakeUp {
        wall,
        cpu: mine.zip(theirs).map(|(m, t)| (m + t) / trips.max(1)),
    })
}

/// Pins this thread to one CPU; `None` if the CPU can't be used.
fn pin_to(cpu: usize) -> Option<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).ok()
}

/// This thread's time on a CPU since `start` (a [`thread_run_time`] reading).
fn run_time_since(start: Option<Duration>) -> Option<Duration> {
    thread_run_time()
        .zip(start)
        .map(|(end, start)| end.saturating_sub(start))
}

/// This thread's time on a CPU so far (`/proc/thread-self/schedstat`, in ns).
fn thread_run_time() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = s.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Median time to copy 16 MiB into memory never touched before, and into memory just used.
pub fn copy_16mib() -> (Duration, Duration) {
    const N: usize = 16 << 20;
    let src: Vec<u8> = (0..N).map(|i| (i * 31) as u8).collect();
    // Kept alive together, so the allocator cannot hand the same pages back.
    let mut held = Vec::new();
    let (mut fresh, mut reused) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let mut dst: Vec<u8> = Vec::with_capacity(N);
        let t = Instant::now();
        dst.extend_from_slice(&src);
        fresh.push(t.elapsed());
        dst.clear();
        let t = Instant::now();
        dst.extend_from_slice(&src);
        reused.push(t.elapsed());
        held.push(dst);
    }
    std::hint::black_box(&held);
    (median(fresh), median(reused))
}

/// Median time to append 1 KiB to a file in `dir` and `fdatasync` it (`trips` times): what
/// the relay pays at least once before each 2xx, on the disk its data directory is on.
pub fn append_fdatasync(dir: &std::path::Path, trips: u32) -> Option<Duration> {
    let path = dir.join(format!("fsync-probe-{}", std::process::id()));
    let mut f = std::fs::File::create(&path).ok()?;
    let block = [0x5au8; 1024];
    let mut times = Vec::with_capacity(trips as usize);
    for _ in 0..trips {
        let t = Instant::now();
        f.write_all(&block).ok()?;
        f.sync_data().ok()?;
        times.push(t.elapsed());
    }
    drop(f);
    let _ = std::fs::remove_file(&path);
    (!times.is_empty()).then(|| median(times))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_measure_something() {
        let w = wakeup_round_trip(50, None).expect("unpinned probe runs");
        assert!(w.wall > Duration::ZERO);
        assert!(w.cpu.is_none_or(|c| c > Duration::ZERO));
        // Pinned to the first CPU twice: always possible.
        assert!(wakeup_round_trip(50, Some((0, 0))).is_some());
        let (fresh, reused) = copy_16mib();
        assert!(fresh > Duration::ZERO && reused > Duration::ZERO);
        let dir = tempfile::tempdir().unwrap();
        assert!(append_fdatasync(dir.path(), 5).is_some_and(|d| d > Duration::ZERO));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "probe file removed"
        );
    }
}
