//! `--json`: one object per line, the same schema for `listen`, `dev` and `replay`. Every
//! object has `time` and `kind`; the kinds and their fields are listed in
//! `docs/operations.md` ("JSON lines").

use meethook_daemon::observe::{AttemptResult, DaemonEvent, EventInfo, SkipReason};
use serde::Serialize;
use serde_json::{json, Value};

use super::Source;

/// The JSON line for `event`, if it has one. Received, attempt-started, delivered, gave-up
/// and replayed events have none: the attempt line says each of them.
pub fn line(event: &DaemonEvent, source: &Source) -> Option<String> {
    if quiet(event) {
        return None;
    }
    // Only for a line that is written: reading the local time costs more than the rest.
    let time = chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let v = match event {
        DaemonEvent::AttemptFinished { event, report } => {
            let result = match report.result() {
                AttemptResult::Delivered => "delivered",
                AttemptResult::Retrying => "retrying",
                AttemptResult::GaveUp => "gave_up",
                AttemptResult::Failed => "failed",
            };
            let mut l = EventLine::new(&time, "attempt", event, source, result);
            l.attempt = Some(report.attempt);
            l.status = Some(report.status);
            l.error = Some(report.error.as_deref());
            // Tenths of a millisecond: enough to compare, without float noise.
            l.latency_ms = Some((report.latency.as_secs_f64() * 1e4).round() / 10.0);
            l.retry_in_ms = report.next_retry.map(|d| d.as_millis() as u64);
            if matches!(source, Source::Live { .. }) && report.next_retry.is_some() {
                l.waiting_behind = Some(report.waiting_behind);
            }
            return Some(serde_json::to_string(&l).expect("a JSON line"));
        }
        DaemonEvent::Skipped {
            event,
            reason,
            attempts,
        } => {
            let mut l = EventLine::new(&time, "skipped", event, source, "skipped");
            match reason {
                SkipReason::Filtered => l.reason = Some("filtered"),
                SkipReason::Duplicate { of } => {
                    l.reason = Some("duplicate");
                    l.duplicate_of = Some(*of);
                }
                SkipReason::Unrouted => l.reason = Some("unrouted"),
                SkipReason::AckedBefore => l.reason = Some("acked_before"),
                SkipReason::User => {
                    l.reason = Some("user");
                    l.attempt = Some(*attempts);
                }
            }
            return Some(serde_json::to_string(&l).expect("a JSON line"));
        }
        DaemonEvent::Duplicate { seq, of } => {
            json!({"time": time, "kind": "duplicate", "seq": seq, "duplicate_of": of})
        }
        DaemonEvent::RecordingSaved {
            seq,
            kind,
            path,
            bytes,
        } => json!({"time": time, "kind": "recording", "seq": seq, "recording": kind,
                    "result": "saved", "path": path, "bytes": bytes, "error": null}),
        DaemonEvent::RecordingFailed {
            seq,
            kind,
            path,
            bytes,
            error,
        } => json!({"time": time, "kind": "recording", "seq": seq, "recording": kind,
                    "result": "failed", "path": path, "bytes": bytes, "error": error}),
        DaemonEvent::RecordingProgress {
            seq,
            path,
            bytes,
            total,
        } => json!({"time": time, "kind": "recording_progress", "seq": seq, "path": path,
                    "bytes": bytes, "total": total}),
        DaemonEvent::Connected {
            relay,
            channel,
            head,
            journaled,
        } => json!({"time": time, "kind": "connected", "relay": relay, "channel": channel,
                    "head": head, "journaled": journaled}),
        DaemonEvent::Reconnecting { reason, retry_in } => {
            json!({"time": time, "kind": "reconnecting", "reason": reason,
                   "retry_in_ms": retry_in.as_millis() as u64})
        }
        DaemonEvent::Missed { first, last } => {
            json!({"time": time, "kind": "missed", "first": first, "last": last})
        }
        DaemonEvent::CaughtUp { seq } => json!({"time": time, "kind": "caught_up", "seq": seq}),
        DaemonEvent::Ready {
            relay,
            channel,
            seq,
        } => json!({"time": time, "kind": "ready", "relay": relay, "channel": channel,
                    "seq": seq}),
        DaemonEvent::JournalPruned { events, bytes } => {
            json!({"time": time, "kind": "pruned", "events": events, "bytes": bytes})
        }
        DaemonEvent::Waiting { seq, delay } => json!({"time": time, "kind": "waiting",
                    "seq": seq, "delay_ms": delay.as_millis() as u64}),
        _ => return None,
    };
    Some(Value::to_string(&v))
}

/// Events with no line of their own: the attempt line says each of them.
pub(super) fn quiet(event: &DaemonEvent) -> bool {
    matches!(
        event,
        DaemonEvent::Received { .. }
            | DaemonEvent::AttemptStarted { .. }
            | DaemonEvent::Delivered { .. }
            | DaemonEvent::GaveUp { .. }
            | DaemonEvent::Replayed { .. }
    )
}

/// The `inspector` line: where the browser inspector is served.
pub fn inspector_line(url: &str) -> String {
    let time = chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    json!({"time": time, "kind": "inspector", "url": url}).to_string()
}

/// An `attempt` or `skipped` line. Fields an attempt has (`status`, `error`: null when
/// absent) are left out of skipped lines.
#[derive(Serialize)]
struct EventLine<'a> {
    time: &'a str,
    kind: &'static str,
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replay: Option<bool>,
    method: &'a str,
    path: &'a str,
    event: Option<&'a str>,
    bot_id: Option<&'a str>,
    code: Option<&'a str>,
    /// The `[[route]]` it goes to (absent without routes, and for `--forward-to`).
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<&'a str>,
    result: &'static str,
    /// Why a skipped event was: `filtered` (`--events`/`--bot`), `user` (`events skip`) or
    /// `unrouted` (no route and no `--forward-to`).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt: Option<u32>,
    /// A `--dedupe` skip: the event it repeats.
    #[serde(skip_serializing_if = "Option::is_none")]
    duplicate_of: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Option<u16>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_in_ms: Option<u64>,
    /// On a live retry line: events this listener holds behind the failing one.
    #[serde(skip_serializing_if = "Option::is_none")]
    waiting_behind: Option<usize>,
}

impl<'a> EventLine<'a> {
    fn new(
        time: &'a str,
        kind: &'static str,
        ev: &'a EventInfo,
        source: &'a Source,
        result: &'static str,
    ) -> EventLine<'a> {
        let replay_of = match source {
            Source::Replay { channel } => Some(channel.as_str()),
            Source::Live { .. } => None,
        };
        let s = ev.summary.as_ref();
        EventLine {
            time,
            kind,
            seq: ev.seq,
            channel: replay_of,
            replay: replay_of.map(|_| true),
            method: &ev.method,
            path: &ev.path,
            event: s.map(|s| s.event.as_str()),
            bot_id: s.and_then(|s| s.bot_id.as_deref()),
            code: s.and_then(|s| s.code.as_deref()),
            route: ev.route.as_deref(),
            result,
            reason: None,
            attempt: None,
            duplicate_of: None,
            status: None,
            error: None,
            latency_ms: None,
            retry_in_ms: None,
            waiting_behind: None,
        }
    }
}
