//! The outcome of each attempt, made crash-safe before the next send: appended to the
//! outcome log at once, written to the journal in batches behind delivery.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::forward::Backoff;
use crate::journal::{Journal, JournalError, Record};
use crate::outcomes::OutcomeLog;
use crate::DaemonError;

/// Outcomes on their way to the journal: in the outcome log at once (one `write`, before the
/// next send), in SQLite in batches written behind delivery on the blocking pool.
pub(super) struct Settler<'a> {
    /// Schedule of retries while the disk refuses an outcome.
    pub(super) backoff: Backoff,
    pub(super) channel: &'a str,
    pub(super) journal: &'a Journal,
    pub(super) log: OutcomeLog,
    pub(super) batch: Vec<Record>,
    pub(super) since: Instant,
    /// The batch being written to the journal, and the log file that holds it.
    pub(super) writing: Option<(Writing, usize)>,
}

pub(super) type Writing = tokio::task::JoinHandle<(Vec<Record>, Result<(), JournalError>)>;

/// Most outcomes written to the journal in one transaction.
pub(super) const FLUSH_BATCH: usize = 256;
/// How long the delivery loop waits for more events before writing outcomes to the journal.
pub(super) const FLUSH_IDLE: Duration = Duration::from_millis(50);
/// Longest an outcome waits for the journal while events keep coming.
pub(super) const FLUSH_AFTER: Duration = Duration::from_millis(200);

impl Settler<'_> {
    /// Makes an outcome survive a crash before the caller moves on; retries while the disk
    /// refuses it (nothing is acked meanwhile). `Ok(false)` when stopped first.
    pub(super) async fn settle(
        &mut self,
        r: Record,
        stop: &CancellationToken,
    ) -> Result<bool, DaemonError> {
        let mut failures = 0u32;
        while let Err(e) = self.log.append(&r) {
            failures += 1;
            tracing::error!(seq = r.seq, error = %e, "cannot record the delivery outcome; not acking until it works");
            tokio::select! {
                _ = stop.cancelled() => return Ok(false),
                _ = tokio::time::sleep(self.backoff.delay(failures, None)) => {}
            }
        }
        if self.batch.is_empty() {
            self.since = Instant::now();
        }
        self.batch.push(r);
        if self.batch.len() >= FLUSH_BATCH || self.since.elapsed() >= FLUSH_AFTER {
            return self.write_behind(stop).await;
        }
        Ok(true)
    }

    /// Hands the batch to the blocking pool and goes on: the outcome log holds it meanwhile.
    /// While the previous batch is still being written, the batch just keeps growing.
    async fn write_behind(&mut self, stop: &CancellationToken) -> Result<bool, DaemonError> {
        if self.writing.as_ref().is_some_and(|(h, _)| !h.is_finished()) {
            return Ok(true);
        }
        if !self.finish_writing(stop).await? {
            return Ok(false);
        }
        self.start_writing();
        Ok(true)
    }

    /// Starts writing the batch on the blocking pool, new outcomes going to the other file.
    /// If the other file cannot be emptied the batch stays (and keeps growing) where it is.
    fn start_writing(&mut self) {
        let file = match self.log.rotate() {
            Ok(file) => file,
            Err(e) => {
                tracing::warn!(error = %e, "cannot empty the outcome log; trying again later");
                return;
            }
        };
        let batch = std::mem::take(&mut self.batch);
        self.writing = Some((record_behind(self.journal, self.channel, batch), file));
    }

    /// Waits for the batch being written (writing it again if that failed), then empties
    /// its log file. `Ok(false)` when stopped first (the log still holds it).
    async fn finish_writing(&mut self, stop: &CancellationToken) -> Result<bool, DaemonError> {
        let Some((task, file)) = self.writing.take() else {
            return Ok(true);
        };
        let mut failures = 0u32;
        let (mut batch, mut r) = join_record(task).await?;
        // Disk full or similar: delivery waits, so nothing more is acked meanwhile.
        while let Err(e) = r {
            failures += 1;
            tracing::error!(error = %e, "cannot write delivery outcomes to the journal; retrying");
            tokio::select! {
                _ = stop.cancelled() => {
                    // Still pending: its log file must not be emptied or reused before the
                    // batch is written, so a later flush waits for this attempt.
                    self.writing = Some((record_behind(self.journal, self.channel, batch), file));
                    return Ok(false);
                }
                _ = tokio::time::sleep(self.backoff.delay(failures, None)) => {}
            }
            (batch, r) = join_record(record_behind(self.journal, self.channel, batch)).await?;
        }
        if let Err(e) = self.log.clear(file) {
            tracing::warn!(error = %e, "cannot empty the outcome log; it is applied again at start-up");
        }
        Ok(true)
    }

    /// Brings the journal up to date with every outcome so far, and empties the log.
    /// `Ok(false)` when stopped first (the log still holds what is missing).
    pub(super) async fn flush(&mut self, stop: &CancellationToken) -> Result<bool, DaemonError> {
        if !self.finish_writing(stop).await? {
            return Ok(false);
        }
        if !self.batch.is_empty() {
            self.start_writing();
        }
        self.finish_writing(stop).await
    }
}

/// Writes outcomes to the journal on the blocking pool; the task hands the batch back.
fn record_behind(journal: &Journal, channel: &str, batch: Vec<Record>) -> Writing {
    let (j, ch) = (journal.clone(), channel.to_string());
    tokio::task::spawn_blocking(move || {
        let r = j.record_many(&ch, &batch);
        (batch, r)
    })
}

async fn join_record(
    task: Writing,
) -> Result<(Vec<Record>, Result<(), JournalError>), DaemonError> {
    task.await
        .map_err(|e| DaemonError::Config(format!("journal task failed: {e}")))
}
