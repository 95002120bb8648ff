//! Answers to `meethook events retry|skip SEQ` inside the delivery stage: what the request
//! does depends on where delivery stands.

use std::collections::BTreeSet;

use tokio_util::sync::CancellationToken;

use super::settle::Settler;
use crate::control::{Ask, Did, Reply, Request};
use crate::DaemonError;

/// What the delivery loop does after answering a control request.
pub(super) enum Act {
    /// Nothing changes.
    Stay,
    /// Send the blocked event now.
    RetryNow,
    /// Give up on the blocked event.
    Skip,
}

/// Where the delivery loop stands, for answering control requests.
pub(super) struct Spot {
    /// The event waiting for its next retry, if any.
    pub(super) blocked: Option<u64>,
    /// The last event taken up (settled unless it is the blocked one).
    pub(super) last: u64,
    /// Events held behind it.
    pub(super) behind: usize,
}

/// Whether delivery is paused (`Pause` until `Resume`): no new event is taken up.
#[derive(Debug, Default)]
pub(super) struct Paused(pub(super) bool);

/// Answers a control request. `Ok(None)` when stopped first.
pub(super) async fn control_answer(
    ask: Ask,
    at: Spot,
    marks: &mut BTreeSet<u64>,
    paused: &mut Paused,
    settler: &mut Settler<'_>,
    stop: &CancellationToken,
) -> Result<Option<Act>, DaemonError> {
    let (did, act) = match ask.request {
        Request::Status => (Did::Nothing, Act::Stay),
        Request::Pause => {
            paused.0 = true;
            (Did::Paused, Act::Stay)
        }
        Request::Resume => {
            paused.0 = false;
            (Did::Resumed, Act::Stay)
        }
        Request::Retry { seq } if at.blocked == Some(seq) => (Did::Retrying, Act::RetryNow),
        Request::Skip { seq } if at.blocked == Some(seq) => (Did::Skipped, Act::Skip),
        Request::Retry { seq } | Request::Skip { seq } if seq <= at.last => {
            // Settled here: the journal must say how before the endpoint reads it.
            if !settler.flush(stop).await? {
                return Ok(None);
            }
            (Did::Settled, Act::Stay)
        }
        Request::Retry { .. } => (Did::Queued, Act::Stay),
        Request::Skip { seq } => {
            marks.insert(seq);
            (Did::Marked, Act::Stay)
        }
    };
    let reply = Reply {
        did,
        blocked: at.blocked,
        waiting_behind: at.behind as u64,
        paused: paused.0,
    };
    let _ = ask.reply.send(reply);
    Ok(Some(act))
}
