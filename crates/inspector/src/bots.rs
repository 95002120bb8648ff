//! `GET /api/bots` and `GET /api/bots/{bot_id}`: the journal's events grouped by Meeting
//! BaaS bot, each bot's state, and one bot's timeline (status changes with the time spent in
//! each, chat messages, the final event's recordings).

use std::collections::{BTreeMap, HashSet};

use meethook_daemon::journal::{Journal, JournalError, Query, Stored};
use meethook_proto::meeting::{presigned_url_expiry, MeetingEvent, Summary, Webhook};
use serde_json::{json, Value};

/// The state a bot is in after an event with this type and code.
pub(crate) fn state_of(event: &str, code: Option<&str>) -> Option<String> {
    let s = match event {
        "complete" | "bot.completed" => "completed",
        "failed" | "bot.failed" => "failed",
        _ => match code? {
            "queued"
            | "pickup_delayed"
            | "joining_call"
            | "in_waiting_room"
            | "in_waiting_for_host" => "joining",
            "in_call_not_recording"
            | "in_call_recording"
            | "recording_paused"
            | "recording_resumed" => "in_call",
            "call_ended" | "bot_removed" | "api_request_stop" | "recording_succeeded" => "ended",
            "transcribing" => "transcribing",
            "completed" => "completed",
            "failed"
            | "bot_rejected"
            | "waiting_room_timeout"
            | "invalid_meeting_url"
            | "meeting_error"
            | "bot_removed_too_early"
            | "recording_failed" => "failed",
            other => other,
        },
    };
    Some(s.to_string())
}

/// Whether an event ends a bot's life (its recordings come with it).
fn is_final(event: &str) -> bool {
    matches!(
        event,
        "complete" | "failed" | "bot.completed" | "bot.failed"
    )
}

/// The `svix-id` / `webhook-id` of an event: the same one twice is a redelivery.
fn message_id(s: &Stored) -> Option<String> {
    ["svix-id", "webhook-id"].iter().find_map(|n| {
        s.event
            .header(n)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    })
}

#[derive(Default)]
struct Row {
    first_seq: u64,
    last_seq: u64,
    events: u64,
    last_event: Option<String>,
    last_code: Option<String>,
    state: Option<String>,
    first_at: i64,
    last_at: i64,
}

/// Every bot of `channel`, most recently heard from first.
pub(crate) fn list(j: &Journal, channel: &str) -> Result<Vec<Value>, JournalError> {
    let mut bots: BTreeMap<String, Row> = BTreeMap::new();
    j.each(
        &Query {
            channel: Some(channel.to_string()),
            ..Query::default()
        },
        |s| {
            let summary = Summary::parse(&s.event.body);
            let Some(bot) = summary
                .as_ref()
                .and_then(|m| m.bot_id.clone())
                .or_else(|| s.bot_id.clone())
            else {
                return true;
            };
            let event = summary
                .as_ref()
                .map(|m| m.event.clone())
                .or_else(|| s.event_type.clone());
            let code = summary.as_ref().and_then(|m| m.code.clone());
            let at = s.event.received_at_ms;
            let r = bots.entry(bot).or_insert_with(|| Row {
                first_seq: s.event.seq,
                first_at: at,
                ..Row::default()
            });
            r.events += 1;
            r.last_seq = s.event.seq;
            r.last_at = at;
            if let Some(st) = event.as_deref().and_then(|e| state_of(e, code.as_deref())) {
                r.state = Some(st);
            }
            if code.is_some() {
                r.last_code = code;
            }
            r.last_event = event;
            true
        },
    )?;
    let mut out: Vec<(u64, Value)> = bots
        .into_iter()
        .map(|(bot, r)| {
            (
                r.last_seq,
                json!({
                    "bot_id": bot,
                    "first_seq": r.first_seq,
                    "last_seq": r.last_seq,
                    "events": r.events,
                    "last_event": r.last_event,
                    "last_code": r.last_code,
                    "state": r.state.unwrap_or_else(|| "unknown".into()),
                    "first_at": r.first_at,
                    "last_at": r.last_at,
                }),
            )
        })
        .collect();
    out.sort_by_key(|b| std::cmp::Reverse(b.0));
    Ok(out.into_iter().map(|(_, v)| v).collect())
}

/// One bot's timeline; `None` when no event of `channel` is about it. `bot` may be a prefix
/// of one bot's id.
pub(crate) fn timeline(
    j: &Journal,
    channel: &str,
    bot: &str,
    now_ms: i64,
) -> Result<Option<Value>, JournalError> {
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
    let mut seen_ids = HashSet::new();
    let mut statuses: Vec<Value> = Vec::new();
    let mut chat = Vec::new();
    let mut artifacts = Vec::new();
    let mut events = Vec::new();
    let mut state = None;
    for s in &rows {
        let at = s.event.received_at_ms;
        let hook = Webhook::parse(&s.event.body);
        let summary = hook.as_ref().map(Summary::of);
        let event = summary
            .as_ref()
            .map(|m| m.event.clone())
            .or_else(|| s.event_type.clone())
            .unwrap_or_default();
        let code = summary.as_ref().and_then(|m| m.code.clone());
        // A message id seen before: the sender delivered the same message again (a v2 /
        // Svix retry), not a new change.
        let retry = message_id(s).is_some_and(|m| !seen_ids.insert(m));
        events.push(
            json!({"seq": s.event.seq, "event": event, "code": code, "at": at, "retry": retry}),
        );
        if let Some(MeetingEvent::ChatMessage(c)) = hook.as_ref().map(|h| &h.event) {
            chat.push(json!({
                "seq": s.event.seq,
                "at": at,
                "sender": c.sender_name,
                "text": c.text,
                "sent_at": c.sent_at,
            }));
            continue;
        }
        let status_event = matches!(
            hook.as_ref().map(|h| &h.event),
            Some(MeetingEvent::StatusChange(_))
        );
        if !status_event && !is_final(&event) {
            continue;
        }
        if !retry {
            if let Some(st) = state_of(&event, code.as_deref()) {
                state = Some(st);
            }
        }
        let created_at = match hook.as_ref().map(|h| &h.event) {
            Some(MeetingEvent::StatusChange(c)) => c.status.created_at.clone(),
            _ => None,
        };
        statuses.push(json!({
            "seq": s.event.seq,
            "event": event,
            "code": code.clone().unwrap_or_else(|| event.clone()),
            "state": state_of(&event, code.as_deref()),
            "at": at,
            "created_at": created_at,
            "retry": retry,
            "final": is_final(&event),
            "duration_ms": Value::Null,
        }));
        if is_final(&event) {
            if let Some(h) = &hook {
                artifacts = h
                    .recording_urls()
                    .into_iter()
                    .map(|(kind, url)| {
                        let expires = presigned_url_expiry(url);
                        json!({
                            "kind": kind,
                            "url": url,
                            "expires_at": expires.map(|e| e * 1000),
                            "expired": expires.map(|e| e * 1000 <= now_ms),
                            "seq": s.event.seq,
                        })
                    })
                    .collect();
            }
        }
    }
    // The time spent in each status: until the next one that is not a redelivery.
    let times: Vec<(usize, i64)> = statuses
        .iter()
        .enumerate()
        .filter(|(_, v)| v["retry"] != true)
        .map(|(i, v)| (i, v["at"].as_i64().unwrap_or(0)))
        .collect();
    for w in times.windows(2) {
        statuses[w[0].0]["duration_ms"] = (w[1].1 - w[0].1).max(0).into();
    }
    let first = rows.first().expect("not empty");
    let last = rows.last().expect("not empty");
    Ok(Some(json!({
        "bot_id": id,
        "channel": channel,
        "state": state.unwrap_or_else(|| "unknown".into()),
        "first_seq": first.event.seq,
        "last_seq": last.event.seq,
        "first_at": first.event.received_at_ms,
        "last_at": last.event.received_at_ms,
        "statuses": statuses,
        "chat": chat,
        "artifacts": artifacts,
        "events": events,
    })))
}
