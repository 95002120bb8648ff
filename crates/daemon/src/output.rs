//! What `meethook listen` prints: one readable line per event, or JSON lines with `--json`.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

use meethook_proto::meeting::Summary;
use meethook_proto::Event;
use serde::Serialize;

use crate::deliver::{Outcome, Verdict};

/// Prints delivery lines to stdout.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    /// One JSON object per line instead of text.
    pub json: bool,
    /// Gather lines and let [`flush_lines`] write them (for a pipe or a file, not a terminal).
    pub buffered: bool,
}

/// What happened to an attempt, for printing.
pub enum Line<'a> {
    /// A finished attempt; `next_retry` is set when another will follow.
    Attempt {
        /// The attempt's outcome.
        outcome: &'a Outcome,
        /// 1-based attempt number.
        attempt: u32,
        /// When the next attempt goes, if any.
        next_retry: Option<Duration>,
    },
    /// Retries ran out (`--max-attempts`).
    GaveUp {
        /// Attempts made.
        attempts: u32,
    },
    /// Filtered out by `--events` / `--bot`: journaled and acked, not delivered.
    Skipped,
}

impl Printer {
    /// Prints one line about `ev` (with its parsed summary, when it has one).
    pub fn print(&self, ev: &Event, summary: Option<&Summary>, line: Line<'_>) {
        self.print_line(&format_line(ev, summary, line, self.json, None));
    }

    /// Prints a formatted line through the same buffer as event lines, so that lines from
    /// other tasks (recording downloads) come out in the order they happened.
    pub fn print_line(&self, out: &str) {
        if !self.buffered {
            let _ = writeln!(std::io::stdout().lock(), "{out}");
            return;
        }
        let mut pending = PENDING.lock().expect("output buffer");
        if pending.is_empty() {
            WAKE.notify_one();
        }
        pending.extend_from_slice(out.as_bytes());
        pending.push(b'\n');
        if pending.len() >= BUFFER_MAX {
            write_out(&mut pending);
        }
    }
}

/// One line about `ev`: text, or with `json` one JSON object. A replay names its channel
/// (`replay_of`) and marks its JSON lines `"replay": true`.
pub fn format_line(
    ev: &Event,
    summary: Option<&Summary>,
    line: Line<'_>,
    json: bool,
    replay_of: Option<&str>,
) -> String {
    let now = chrono::Local::now();
    if json {
        let mut l = JsonLine {
            time: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            seq: ev.seq,
            channel: replay_of,
            replay: replay_of.map(|_| true),
            method: &ev.method,
            path: &ev.path,
            event: summary.map(|s| s.event.as_str()),
            bot_id: summary.and_then(|s| s.bot_id.as_deref()),
            code: summary.and_then(|s| s.code.as_deref()),
            result: "skipped",
            attempt: None,
            status: None,
            error: None,
            latency_ms: None,
            retry_in_ms: None,
        };
        match line {
            Line::Attempt {
                outcome,
                attempt,
                next_retry,
            } => {
                l.result = match (outcome.verdict(), next_retry) {
                    (Verdict::Delivered, _) => "delivered",
                    (_, Some(_)) => "retrying",
                    (Verdict::Failed, None) | (Verdict::Retry, None) => "failed",
                };
                l.attempt = Some(attempt);
                l.status = Some(outcome.status);
                l.error = Some(outcome.error.as_deref());
                l.latency_ms = Some(outcome.latency.as_secs_f64() * 1e3);
                l.retry_in_ms = next_retry.map(|d| d.as_millis() as u64);
            }
            Line::GaveUp { attempts } => {
                l.result = "gave_up";
                l.attempt = Some(attempts);
            }
            Line::Skipped => {}
        }
        return serde_json::to_string(&l).expect("a JSON line");
    }
    let what = match summary {
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
            ev.method,
            if ev.path.is_empty() { "/" } else { &ev.path }
        )
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect(),
    };
    let result = match line {
        Line::Attempt {
            outcome,
            attempt,
            next_retry,
        } => {
            let answer = match (outcome.status, &outcome.error) {
                (Some(s), _) => s.to_string(),
                (None, Some(e)) => e.clone(),
                (None, None) => "no answer".into(),
            };
            let ms = outcome.latency.as_secs_f64() * 1e3;
            let tail = match (outcome.verdict(), next_retry) {
                (Verdict::Delivered, _) => String::new(),
                (_, Some(d)) => {
                    format!("  retry #{} in {:.1}s", attempt + 1, d.as_secs_f64())
                }
                (_, None) => "  failed, moving on".into(),
            };
            format!("→ {answer} ({ms:.1} ms){tail}")
        }
        Line::GaveUp { attempts } => format!("→ gave up after {attempts} attempts"),
        Line::Skipped => "→ skipped (filtered out)".into(),
    };
    format!(
        "{}  #{:<5} {what}  {result}",
        now.format("%H:%M:%S%.3f"),
        ev.seq
    )
}

/// One `--json` line. Fields an attempt has (`status`, `error`: null when absent) are left
/// out of other lines.
#[derive(Serialize)]
struct JsonLine<'a> {
    time: String,
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
    result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Option<u16>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_in_ms: Option<u64>,
}

/// Lines waiting for [`flush_lines`] when stdout is not a terminal.
static PENDING: Mutex<Vec<u8>> = Mutex::new(Vec::new());
/// Wakes [`flush_lines`] when the buffer gets its first line.
static WAKE: Notify = Notify::const_new();
/// Buffered output written at once when it reaches this size.
const BUFFER_MAX: usize = 64 << 10;
/// Longest a buffered line waits.
const BUFFER_DELAY: Duration = Duration::from_millis(20);

fn write_out(pending: &mut Vec<u8>) {
    let _ = std::io::stdout().lock().write_all(pending);
    pending.clear();
}

/// Writes buffered lines out within [`BUFFER_DELAY`] of the first one, until `stop` (call
/// [`flush_now`] for what is left). A pipe or file then gets one write per burst instead of
/// one per event.
pub async fn flush_lines(stop: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            _ = WAKE.notified() => {}
            _ = stop.cancelled() => break,
        }
        tokio::select! {
            _ = tokio::time::sleep(BUFFER_DELAY) => {}
            _ = stop.cancelled() => break,
        }
        flush_now();
    }
}

/// Writes the buffered lines now.
pub fn flush_now() {
    write_out(&mut PENDING.lock().expect("output buffer"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn ev(path: &str) -> Event {
        Event {
            seq: 7,
            received_at_ms: 0,
            method: "POST".into(),
            path: path.into(),
            headers: vec![],
            body: Bytes::from_static(b"{}"),
        }
    }

    #[test]
    fn text_lines_never_carry_control_characters() {
        let l = format_line(&ev("/x\x1b[2J\ry"), None, Line::Skipped, false, None);
        assert!(!l.chars().any(char::is_control), "{l:?}");
        assert!(l.contains("#7") && l.contains("POST /x") && l.contains("skipped"));
    }

    #[test]
    fn json_lines_name_a_replay_and_its_channel() {
        let line = |replay_of| {
            let l = format_line(
                &ev("/a"),
                None,
                Line::GaveUp { attempts: 3 },
                true,
                replay_of,
            );
            serde_json::from_str::<serde_json::Value>(&l).unwrap()
        };
        let live = line(None);
        assert_eq!(
            (live["result"].as_str(), live["attempt"].as_u64()),
            (Some("gave_up"), Some(3))
        );
        assert!(live.get("replay").is_none() && live.get("channel").is_none());
        let replay = line(Some("ch_1"));
        assert_eq!(replay["replay"], true);
        assert_eq!(replay["channel"], "ch_1");
        assert_eq!(replay["path"], "/a");
    }
}
