//! The hand-over from the connection stage to the delivery stage: an event, its summary when
//! parsed, and for an event handed over before its journal insert committed, where that
//! insert's end will show (delivery records no outcome for an event not yet journaled).

use std::sync::Arc;

use meethook_proto::meeting::Summary;
use meethook_proto::Event;
use tokio::sync::watch;

/// An event on its way from the connection to delivery, with its summary once parsed
/// (`None`: not parsed yet) and, when handed over before its journal insert committed,
/// where that insert's outcome will show.
pub(crate) type Handoff = (Event, Option<Option<Summary>>, Option<Journaled>);

/// How an early-handed batch's journal insert ended (`None` while it runs).
pub(crate) type Journaled = watch::Receiver<Option<Insert>>;

/// The end of an early-handed batch's journal insert.
#[derive(Debug, Clone)]
pub(crate) enum Insert {
    /// Committed; for a batch handed over unparsed, each event's summary (ascending seqs).
    Committed(Arc<Vec<(u64, Option<Summary>)>>),
    /// Not stored: the relay sends the batch again.
    Failed,
}

/// Waits for an early-handed event's journal insert: the event's summary once committed,
/// `None` when the insert failed (or was dropped).
pub(crate) async fn committed(mut journaled: Journaled, seq: u64) -> Option<Option<Summary>> {
    let end = journaled.wait_for(Option::is_some).await.ok()?.clone();
    match end {
        Some(Insert::Committed(summaries)) => Some(
            summaries
                .binary_search_by_key(&seq, |(s, _)| *s)
                .ok()
                .and_then(|i| summaries[i].1.clone()),
        ),
        _ => None,
    }
}
