//! What the phases share: the binary, the work directory, the plan, the report.

use std::path::PathBuf;

use crate::plan::Plan;
use crate::report::Report;

/// What the phases share.
pub(crate) struct Ctx {
    pub(crate) meethook: PathBuf,
    /// Extra relay flags (see [`crate::procs::relay_bench_flags`]).
    pub(crate) relay_flags: Vec<String>,
    pub(crate) work: tempfile::TempDir,
    pub(crate) plan: Plan,
    pub(crate) report: Report,
    pub(crate) dirs: usize,
    /// Direct 1-sender events/s at 1 KiB (baseline of the backlog drain).
    pub(crate) direct_serial_rate: Option<f64>,
    /// Direct events/s per concurrency.
    pub(crate) direct_rates: Vec<(usize, f64)>,
}

impl Ctx {
    /// A fresh directory for one process.
    pub(crate) fn dir(&mut self, name: &str) -> PathBuf {
        self.dirs += 1;
        self.work.path().join(format!("{:02}-{name}", self.dirs))
    }

    pub(crate) fn max_body(&self) -> &'static str {
        "17MiB"
    }
}
