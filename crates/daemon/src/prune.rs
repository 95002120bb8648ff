//! `listen --retention`: the journal forgets settled events of its channel past the
//! retention, at start and then hourly, in small batches on the blocking pool.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::journal::Journal;
use crate::observe::{DaemonEvent, Observers};
use crate::{blocking, now_ms};

/// Time between two prunes.
const EVERY: Duration = Duration::from_secs(3600);

/// Prunes `channel`'s events older than `retention` until `stop` is cancelled.
pub(crate) async fn prune_loop(
    journal: Journal,
    channel: String,
    retention: Duration,
    observers: Observers,
    stop: CancellationToken,
) {
    let retention_ms = retention.as_millis().min(i64::MAX as u128) as i64;
    loop {
        let cutoff = now_ms().saturating_sub(retention_ms);
        let (ch, s) = (channel.clone(), stop.clone());
        let pruned = blocking(&journal, move |j| {
            j.prune(Some(&ch), cutoff, false, || !s.is_cancelled())
        })
        .await;
        match pruned {
            Ok(p) if p.events > 0 => observers.emit(DaemonEvent::JournalPruned {
                events: p.events,
                bytes: p.bytes,
            }),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot prune the journal; trying again later"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}
