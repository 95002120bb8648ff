//! The lifecycle as data: the journal's events grouped by Meeting BaaS bot. One query for
//! `meethook events bots` and the inspector's meeting view (`GET /api/bots`, `/api/bots/{id}`):
//! each bot's current or final state, the time spent in each state, its join retries
//! (`retrying 2/5`), duplicates, saved artifacts, and events that arrived out of lifecycle
//! order (the platform does not guarantee order: they are flagged, never reordered).

use std::collections::{BTreeMap, HashSet};

use meethook_proto::meeting::{presigned_url_expiry, MeetingEvent, Summary, Webhook};
use serde::Serialize;

use crate::journal::{Journal, JournalError, Query, Recording, Stored};

/// The state a bot is in after an event with this type and code: `joining`, `in_call`,
/// `ended`, `transcribing`, `completed`, `failed`, or an unknown code as sent.
pub fn state_of(event: &str, code: Option<&str>) -> Option<String> {
    let s = match event {
        "complete" | "bot.completed" => "completed",
        "failed" | "bot.failed" => "failed",
        _ => match code? {
            "queued"
            | "pickup_delayed"
            | "joining_call"
            | "in_waiting_room"
            | "in_waiting_for_host"
            | "retrying" => "joining",
            "in_call_not_recording"
            | "in_call_recording"
            | "recording_paused"
            | "recording_resumed" => "in_call",
            "call_ended" | "bot_removed" | "api_request_stop" | "recording_succeeded" => "ended",
            "transcribing" | "awaiting_reconciliation" => "transcribing",
            "completed" => "completed",
            "failed"
            | "bot_rejected"
            | "waiting_room_timeout"
            | "invalid_meeting_url"
            | "meeting_error"
            | "bot_removed_too_early"
            | "recording_failed"
            | "transcription_failed" => "failed",
            other => other,
        },
    };
    Some(s.to_string())
}

/// Where a status stands in a bot's life (higher is later); `None` for codes with no place
/// (unknown ones), which are never out of order.
fn lifecycle_rank(event: &str, code: Option<&str>) -> Option<u8> {
    if is_final(event) {
        return Some(8);
    }
    Some(match code? {
        "queued" | "pickup_delayed" => 0,
        "joining_call" | "retrying" => 1,
        "in_waiting_room" | "in_waiting_for_host" => 2,
        "in_call_not_recording" => 3,
        "in_call_recording" | "recording_paused" | "recording_resumed" => 4,
        "call_ended"
        | "bot_removed"
        | "api_request_stop"
        | "bot_removed_too_early"
        | "bot_rejected"
        | "waiting_room_timeout"
        | "invalid_meeting_url"
        | "meeting_error"
        | "recording_succeeded"
        | "recording_failed" => 5,
        "transcribing" | "awaiting_reconciliation" | "transcription_failed" => 6,
        "completed" | "failed" => 7,
        _ => return None,
    })
}

/// Whether an event ends a bot's life (its artifacts come with it).
fn is_final(event: &str) -> bool {
    matches!(
        event,
        "complete" | "failed" | "bot.completed" | "bot.failed"
    )
}

/// The `svix-id` / `webhook-id` of an event: the same one twice is a redelivery (for journals
/// written before duplicates were marked).
fn message_id(s: &Stored) -> Option<String> {
    ["svix-id", "webhook-id"].iter().find_map(|n| {
        s.event
            .header(n)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    })
}

/// Time spent in one state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateTime {
    /// The state (`joining`, `in_call`, …).
    pub state: String,
    /// Milliseconds, from receive times.
    pub ms: i64,
}

/// One status (or final event) of a bot's timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    /// Its seq.
    pub seq: u64,
    /// The event type.
    pub event: String,
    /// The status code, or the event type for a final event.
    pub code: String,
    /// `attempt/max` of a `retrying` status.
    pub progress: Option<String>,
    /// The bot's state after it.
    pub state: Option<String>,
    /// When the relay received it, ms since the epoch.
    pub at: i64,
    /// The status's own `created_at`, when it has one.
    pub created_at: Option<String>,
    /// A redelivery of an earlier event (same svix-id or unsigned body).
    pub retry: bool,
    /// The event it repeats, when it is one.
    pub duplicate_of: Option<u64>,
    /// Whether it ends the bot's life.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// Time until the next status that is not a redelivery.
    pub duration_ms: Option<i64>,
    /// Arrived after a later lifecycle step (e.g. `in_call_recording` after `call_ended`):
    /// the status it came after.
    pub out_of_order_after: Option<String>,
}

/// One artifact of a bot's final event, and whether a copy was saved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Artifact {
    /// `video`, `audio`, `diarization`, `raw_transcription`, `transcription`.
    pub kind: String,
    /// The link as sent.
    pub url: String,
    /// When the link expires, ms since the epoch, when the link says.
    pub expires_at: Option<i64>,
    /// Whether it has expired by now.
    pub expired: Option<bool>,
    /// The final event's seq.
    pub seq: u64,
    /// Where `--save-recordings` put it, when it did: `saved`, `downloading` or `failed`.
    pub saved: Option<String>,
    /// The local file.
    pub path: Option<String>,
    /// Bytes saved.
    pub bytes: Option<u64>,
    /// SHA-256 of the saved file, hex.
    pub sha256: Option<String>,
}

/// A chat message sent in the meeting.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Chat {
    /// Its seq.
    pub seq: u64,
    /// When the relay received it.
    pub at: i64,
    /// Who sent it.
    pub sender: Option<String>,
    /// The text.
    pub text: String,
    /// When the webhook was sent.
    pub sent_at: Option<String>,
}

/// Any event about the bot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRef {
    /// Its seq.
    pub seq: u64,
    /// The event type.
    pub event: String,
    /// The status or error code.
    pub code: Option<String>,
    /// When the relay received it.
    pub at: i64,
    /// A redelivery of an earlier event.
    pub retry: bool,
}

/// Everything known about one bot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bot {
    /// The bot's id.
    pub bot_id: String,
    /// The channel.
    pub channel: String,
    /// Current or final state (`unknown` before any status).
    pub state: String,
    /// Whether the state is final (a `complete`/`failed` event came).
    pub finished: bool,
    /// First event's seq.
    pub first_seq: u64,
    /// Last event's seq.
    pub last_seq: u64,
    /// First event's receive time.
    pub first_at: i64,
    /// Last event's receive time.
    pub last_at: i64,
    /// Events about the bot.
    pub events: u64,
    /// The last event's type.
    pub last_event: Option<String>,
    /// The last status or error code seen.
    pub last_code: Option<String>,
    /// Join retries (`retrying` statuses): how many, and the last `attempt/max`.
    pub retries: u32,
    /// The last `retrying` status's `attempt/max`.
    pub last_retry: Option<String>,
    /// Redeliveries of earlier events.
    pub duplicates: u32,
    /// Events flagged out of lifecycle order.
    pub out_of_order: u32,
    /// Time spent per state, in the order first entered.
    pub time_per_state: Vec<StateTime>,
    /// Artifacts of the final event.
    pub artifacts: Vec<Artifact>,
    /// How many of them have a saved copy.
    pub artifacts_saved: u32,
    /// Statuses and final events, in seq order.
    pub statuses: Vec<Status>,
    /// Chat messages.
    pub chat: Vec<Chat>,
    /// Every event about the bot.
    #[serde(rename = "events_list")]
    pub event_refs: Vec<EventRef>,
}

/// Builds one bot from its events (seq order).
fn build(
    j: &Journal,
    channel: &str,
    id: &str,
    rows: &[&Stored],
    now_ms: i64,
) -> Result<Bot, JournalError> {
    let mut seen_ids = HashSet::new();
    let mut b = Bot {
        bot_id: id.to_string(),
        channel: channel.to_string(),
        state: "unknown".into(),
        finished: false,
        first_seq: rows.first().map_or(0, |s| s.event.seq),
        last_seq: rows.last().map_or(0, |s| s.event.seq),
        first_at: rows.first().map_or(0, |s| s.event.received_at_ms),
        last_at: rows.last().map_or(0, |s| s.event.received_at_ms),
        events: rows.len() as u64,
        last_event: None,
        last_code: None,
        retries: 0,
        last_retry: None,
        duplicates: 0,
        out_of_order: 0,
        time_per_state: Vec::new(),
        artifacts: Vec::new(),
        artifacts_saved: 0,
        statuses: Vec::new(),
        chat: Vec::new(),
        event_refs: Vec::new(),
    };
    // The latest lifecycle step so far: (rank, code).
    let mut reached: Option<(u8, String)> = None;
    for s in rows {
        let at = s.event.received_at_ms;
        let hook = Webhook::parse(&s.event.body);
        let summary = hook.as_ref().map(Summary::of);
        let event = summary
            .as_ref()
            .map(|m| m.event.clone())
            .or_else(|| s.event_type.clone())
            .unwrap_or_default();
        let code = summary.as_ref().and_then(|m| m.code.clone());
        let by_id = message_id(s).is_some_and(|m| !seen_ids.insert(m));
        let retry = by_id || s.duplicate_of.is_some();
        if retry {
            b.duplicates += 1;
        }
        b.event_refs.push(EventRef {
            seq: s.event.seq,
            event: event.clone(),
            code: code.clone(),
            at,
            retry,
        });
        b.last_event = Some(event.clone());
        if code.is_some() {
            b.last_code = code.clone();
        }
        let typed = hook.as_ref().map(|h| &h.event);
        if let Some(MeetingEvent::ChatMessage(c)) = typed {
            b.chat.push(Chat {
                seq: s.event.seq,
                at,
                sender: c.sender_name.clone(),
                text: c.text.clone(),
                sent_at: c.sent_at.clone(),
            });
            continue;
        }
        let status = matches!(typed, Some(MeetingEvent::StatusChange(_)));
        if !status && !is_final(&event) {
            continue;
        }
        let progress = summary.as_ref().and_then(|m| m.progress.clone());
        let mut out_of_order_after = None;
        if !retry {
            if let Some(st) = state_of(&event, code.as_deref()) {
                b.state = st;
            }
            if let Some(rank) = lifecycle_rank(&event, code.as_deref()) {
                let here = code.clone().unwrap_or_else(|| event.clone());
                match &reached {
                    // A join retry starts the join over, unless the bot was already recording.
                    Some((top, _)) if here == "retrying" && *top < 4 => {
                        reached = Some((rank, here));
                    }
                    Some((top, after)) if rank < *top => {
                        out_of_order_after = Some(after.clone());
                        b.out_of_order += 1;
                    }
                    _ => reached = Some((rank, here)),
                }
            }
            if code.as_deref() == Some("retrying") {
                b.retries += 1;
                b.last_retry = progress.clone();
            }
        }
        let created_at = match typed {
            Some(MeetingEvent::StatusChange(c)) => c.status.created_at.clone(),
            _ => None,
        };
        b.statuses.push(Status {
            seq: s.event.seq,
            event: event.clone(),
            code: code.clone().unwrap_or_else(|| event.clone()),
            progress,
            state: state_of(&event, code.as_deref()),
            at,
            created_at,
            retry,
            duplicate_of: s.duplicate_of,
            is_final: is_final(&event),
            duration_ms: None,
            out_of_order_after,
        });
        if is_final(&event) && !retry {
            b.finished = true;
            if let Some(h) = &hook {
                let saved = j.recordings(channel, s.event.seq)?;
                b.artifacts = artifacts_of(h, s.event.seq, &saved, now_ms);
            }
        }
    }
    // The time spent in each status: until the next one that is not a redelivery.
    let times: Vec<(usize, i64)> = b
        .statuses
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.retry)
        .map(|(i, v)| (i, v.at))
        .collect();
    for w in times.windows(2) {
        let ms = (w[1].1 - w[0].1).max(0);
        let st = &mut b.statuses[w[0].0];
        st.duration_ms = Some(ms);
        if let Some(state) = st.state.clone() {
            match b.time_per_state.iter_mut().find(|t| t.state == state) {
                Some(t) => t.ms += ms,
                None => b.time_per_state.push(StateTime { state, ms }),
            }
        }
    }
    b.artifacts_saved = b
        .artifacts
        .iter()
        .filter(|a| a.saved.as_deref() == Some("saved"))
        .count() as u32;
    Ok(b)
}

/// The artifacts of a final event, each with its saved copy if any.
pub fn artifacts_of(h: &Webhook, seq: u64, saved: &[Recording], now_ms: i64) -> Vec<Artifact> {
    h.artifacts()
        .into_iter()
        .map(|a| {
            let expires = presigned_url_expiry(a.url).map(|e| e * 1000);
            let copy = saved.iter().find(|r| r.kind == a.name);
            Artifact {
                kind: a.name.to_string(),
                url: a.url.to_string(),
                expires_at: expires,
                expired: expires.map(|e| e <= now_ms),
                seq,
                saved: copy.map(|r| r.state.clone()),
                path: copy.map(|r| r.path.clone()),
                bytes: copy.map(|r| r.bytes),
                sha256: copy.and_then(|r| r.sha256.clone()),
            }
        })
        .collect()
}

/// Every bot of `channel`, most recently heard from first.
pub fn list(j: &Journal, channel: &str, now_ms: i64) -> Result<Vec<Bot>, JournalError> {
    let rows = j.query(&Query {
        channel: Some(channel.to_string()),
        ..Query::default()
    })?;
    let mut by_bot: BTreeMap<String, Vec<&Stored>> = BTreeMap::new();
    for s in &rows {
        if let Some(b) = &s.bot_id {
            by_bot.entry(b.clone()).or_default().push(s);
        }
    }
    let mut out = by_bot
        .iter()
        .map(|(id, rows)| build(j, channel, id, rows, now_ms))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_by_key(|b| std::cmp::Reverse(b.last_seq));
    Ok(out)
}

/// One bot; `None` when no event of `channel` is about it. `bot` may be a prefix of one bot's
/// id.
pub fn one(
    j: &Journal,
    channel: &str,
    bot: &str,
    now_ms: i64,
) -> Result<Option<Bot>, JournalError> {
    let rows = j.query(&Query {
        channel: Some(channel.to_string()),
        bot_id: Some(bot.to_string()),
        ..Query::default()
    })?;
    let ids: HashSet<&str> = rows.iter().filter_map(|s| s.bot_id.as_deref()).collect();
    let id = if ids.contains(bot) {
        bot.to_string()
    } else if ids.len() == 1 {
        ids.into_iter().next().expect("one").to_string()
    } else {
        return Ok(None);
    };
    let rows: Vec<&Stored> = rows
        .iter()
        .filter(|s| s.bot_id.as_deref() == Some(id.as_str()))
        .collect();
    if rows.is_empty() {
        return Ok(None);
    }
    build(j, channel, &id, &rows, now_ms).map(Some)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::journal::fixtures::ev;

    fn status(seq: u64, at: i64, code: &str, more: &str) -> meethook_proto::Event {
        let mut e = ev(seq);
        e.received_at_ms = at;
        e.headers.clear();
        e.body = Bytes::from(format!(
            r#"{{"event":"bot.status_change","data":{{"bot_id":"bot-1","event_id":null,"status":{{"code":"{code}","created_at":"x"{more}}}}},"extra":null}}"#
        ));
        e
    }

    #[test]
    fn states_times_retries_and_the_order_check() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let mut done = ev(8);
        done.received_at_ms = 100_000;
        done.headers.clear();
        done.body = Bytes::from(
            r#"{"event":"bot.completed","data":{"bot_id":"bot-1","event_id":null,"speakers":[],"video":"https://h/v.mp4?X-Amz-Date=20250611T100000Z&X-Amz-Expires=14400","audio":null,"transcription":"https://h/t.json"},"extra":null}"#,
        );
        j.insert(
            "c",
            &[
                status(1, 0, "joining_call", ""),
                status(2, 1_000, "retrying", r#","attempt":1,"max":3"#),
                status(3, 3_000, "in_waiting_room", ""),
                status(4, 4_000, "in_call_recording", r#","start_time":1"#),
                status(5, 64_000, "call_ended", ""),
                // Sent before call_ended, arrived after it: flagged, not reordered.
                status(6, 65_000, "recording_paused", ""),
                status(7, 70_000, "transcribing", ""),
                done,
            ],
            0,
        )
        .unwrap();
        j.recording_started("c", 8, "video", "/v.mp4", 0).unwrap();
        j.recording_finished("c", 8, "video", 10, None, Some("ab"), 0)
            .unwrap();
        let bots = list(&j, "c", 0).unwrap();
        assert_eq!(bots.len(), 1);
        let b = &bots[0];
        assert_eq!((b.state.as_str(), b.finished), ("completed", true));
        assert_eq!((b.retries, b.last_retry.as_deref()), (1, Some("1/3")));
        assert_eq!(b.out_of_order, 1);
        let flagged: Vec<_> = b
            .statuses
            .iter()
            .filter_map(|s| Some((s.seq, s.out_of_order_after.as_deref()?)))
            .collect();
        assert_eq!(flagged, [(6, "call_ended")]);
        let seqs: Vec<u64> = b.statuses.iter().map(|s| s.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5, 6, 7, 8], "kept in arrival order");
        let times: Vec<(&str, i64)> = b
            .time_per_state
            .iter()
            .map(|t| (t.state.as_str(), t.ms))
            .collect();
        assert_eq!(
            times,
            [
                ("joining", 4_000),
                ("in_call", 65_000),
                ("ended", 1_000),
                ("transcribing", 30_000)
            ]
        );
        let kinds: Vec<(&str, Option<&str>)> = b
            .artifacts
            .iter()
            .map(|a| (a.kind.as_str(), a.saved.as_deref()))
            .collect();
        assert_eq!(kinds, [("video", Some("saved")), ("transcription", None)]);
        assert_eq!(b.artifacts_saved, 1);
        assert_eq!(b.artifacts[0].sha256.as_deref(), Some("ab"));
        assert!(one(&j, "c", "bot", 0).unwrap().is_some(), "by prefix");
        assert!(one(&j, "c", "nope", 0).unwrap().is_none());
    }
}
