//! `GET /api/bots` and `GET /api/bots/{bot_id}`: the meeting view's data, from the daemon's
//! per-bot query ([`meethook_daemon::bots`], also behind `meethook events bots`).

use meethook_daemon::bots;
use meethook_daemon::journal::{Journal, JournalError};
use serde_json::Value;

/// Every bot of `channel`, most recently heard from first (without their timelines).
pub(crate) fn list(j: &Journal, channel: &str, now_ms: i64) -> Result<Vec<Value>, JournalError> {
    Ok(bots::list(j, channel, now_ms)?
        .into_iter()
        .map(|b| {
            let mut v = serde_json::to_value(b).expect("a bot is JSON");
            if let Some(o) = v.as_object_mut() {
                for timeline in ["statuses", "chat", "events_list"] {
                    o.remove(timeline);
                }
            }
            v
        })
        .collect())
}

/// One bot's timeline; `None` when no event of `channel` is about it. `bot` may be a prefix
/// of one bot's id. `events` is the list of its events here (their count in [`list`]).
pub(crate) fn timeline(
    j: &Journal,
    channel: &str,
    bot: &str,
    now_ms: i64,
) -> Result<Option<Value>, JournalError> {
    Ok(bots::one(j, channel, bot, now_ms)?.map(|b| {
        let mut v = serde_json::to_value(b).expect("a bot is JSON");
        if let Some(o) = v.as_object_mut() {
            if let Some(list) = o.remove("events_list") {
                o.insert("events".into(), list);
            }
        }
        v
    }))
}
