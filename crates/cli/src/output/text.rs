//! The line a person reads for each daemon event: `12:04:01.660  #1  bot.status_change …  → 200 (1.6 ms)`.

use meethook_daemon::observe::{AttemptResult, DaemonEvent, EventInfo, SkipReason};
use meethook_proto::human::human_size as human;

use super::Source;

/// A line, and where it goes.
pub enum Text {
    /// With the event lines, on stdout.
    Out(String),
    /// Beside the logs, on stderr.
    Err(String),
}

/// The text for `event`, if a person should see it.
pub fn line(event: &DaemonEvent, source: &Source) -> Option<Text> {
    // Said by other lines, or not worth one.
    if super::json::quiet(event)
        || matches!(
            event,
            DaemonEvent::CaughtUp { .. } | DaemonEvent::Ready { .. }
        )
    {
        return None;
    }
    let now = chrono::Local::now().format("%H:%M:%S%.3f");
    let out = match event {
        DaemonEvent::AttemptFinished { event, report } => {
            let answer = match (report.status, &report.error) {
                (Some(s), _) => s.to_string(),
                (None, Some(e)) => e.clone(),
                (None, None) => "no answer".into(),
            };
            let ms = report.latency.as_secs_f64() * 1e3;
            let mut tail = match (report.result(), report.next_retry) {
                (AttemptResult::Retrying, Some(d)) => {
                    format!("  retry #{} in {:.1}s", report.attempt + 1, d.as_secs_f64())
                }
                (AttemptResult::GaveUp, _) => {
                    format!("  gave up after {} attempts", report.attempt)
                }
                (AttemptResult::Failed, _) => "  failed, moving on".into(),
                _ => String::new(),
            };
            if let (Source::Live { data_arg }, Some(_)) = (source, report.next_retry) {
                let seq = event.seq;
                tail.push_str(&format!(
                    " · {} waiting behind #{seq}: meethook events retry {seq}{data_arg} | events skip {seq}{data_arg}",
                    report.waiting_behind
                ));
            }
            event_line(&now, event, &format!("→ {answer} ({ms:.1} ms){tail}"))
        }
        DaemonEvent::Skipped {
            event,
            reason,
            attempts,
        } => {
            let what = match (reason, attempts) {
                (SkipReason::Filtered, _) => "→ skipped (filtered out)".to_string(),
                (SkipReason::Unrouted, _) => {
                    "→ unrouted (no [[route]] matches and no --forward-to): journaled, not sent"
                        .to_string()
                }
                (SkipReason::User, 0) => "→ skipped by the user (meethook events skip)".into(),
                (SkipReason::AckedBefore, _) => {
                    "→ not sent again: delivered before a crash (the relay holds its ack)".into()
                }
                (SkipReason::Duplicate { of }, _) => {
                    format!("→ not forwarded: duplicate of #{of} (--dedupe)")
                }
                (SkipReason::User, n) => format!(
                    "→ skipped by the user (meethook events skip) after {n} attempt{}",
                    if *n == 1 { "" } else { "s" }
                ),
            };
            event_line(&now, event, &what)
        }
        DaemonEvent::Duplicate { seq, of } => format!("{now}  #{seq:<5} duplicate of #{of}"),
        DaemonEvent::RecordingSaved {
            seq, path, bytes, ..
        } => format!(
            "{now}  #{seq:<5} recording saved → {path} ({})",
            human(*bytes)
        ),
        DaemonEvent::RecordingFailed {
            seq, kind, error, ..
        } => format!("{now}  #{seq:<5} recording not saved ({kind} of #{seq}): {error}"),
        DaemonEvent::Waiting { seq, delay } => {
            if delay.as_secs_f64() < 2.0 {
                return None;
            }
            format!(
                "      … {:.1} s until #{seq} (--speed)",
                delay.as_secs_f64()
            )
        }
        DaemonEvent::Connected {
            relay,
            channel,
            head,
            journaled,
        } => {
            let behind = head.saturating_sub(*journaled);
            let catching_up = if behind > 0 {
                format!(", {behind} to catch up")
            } else {
                String::new()
            };
            return Some(Text::Err(format!(
                "{now}  connected to {relay} (channel {channel}, relay at #{head}{catching_up})"
            )));
        }
        DaemonEvent::Reconnecting { reason, retry_in } => {
            return Some(Text::Err(format!(
                "{now}  {reason}; reconnecting in {:.1}s",
                retry_in.as_secs_f64()
            )))
        }
        DaemonEvent::Missed { first, last } => {
            return Some(Text::Err(format!(
                "{now}  events #{first}–#{last} were pruned by the relay before this listener \
                 received them (the relay's --retention)"
            )))
        }
        DaemonEvent::RecordingProgress {
            path, bytes, total, ..
        } => {
            let done = match total {
                Some(t) => format!("{}% of {}", bytes * 100 / (*t).max(1), human(*t)),
                None => format!("{} so far", human(*bytes)),
            };
            return Some(Text::Err(format!("{now}  recording {path}: {done}")));
        }
        DaemonEvent::JournalPruned { events, bytes } => {
            return Some(Text::Err(format!(
                "{now}  pruned {events} journal event{} ({}) older than --retention",
                if *events == 1 { "" } else { "s" },
                human(*bytes)
            )))
        }
        _ => return None,
    };
    Some(Text::Out(out))
}

/// `12:04:01.660  #7     bot.status_change    bot 8d2f4c1a… joining_call  → 200 (1.6 ms)`.
fn event_line(now: &impl std::fmt::Display, event: &EventInfo, result: &str) -> String {
    let what = match &event.summary {
        Some(s) => {
            let d = s.detail();
            if d.is_empty() {
                s.event.clone()
            } else {
                format!("{:<20} {d}", s.event)
            }
        }
        // A sender's path may hold control characters: never written raw to a terminal.
        None => format!(
            "{} {}",
            event.method,
            if event.path.is_empty() {
                "/"
            } else {
                &event.path
            }
        )
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect(),
    };
    match event.route.as_deref() {
        Some(route) if route != meethook_daemon::route::UNROUTED => {
            format!("{now}  #{:<5} {what}  [{route}] {result}", event.seq)
        }
        _ => format!("{now}  #{:<5} {what}  {result}", event.seq),
    }
}
