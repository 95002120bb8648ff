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
    /// A finished attempt; `next_retry` is set when another will follow. A retryable
    /// outcome without a next retry means retries ran out (`--max-attempts`): one line says
    /// both.
    Attempt {
        /// The attempt's outcome.
        outcome: &'a Outcome,
        /// 1-based attempt number.
        attempt: u32,
        /// When the next attempt goes, if any.
        next_retry: Option<Duration>,
    },
    /// Filtered out by `--events` / `--bot`: journaled and acked, not delivered.
    Skipped,
    /// Given up on by the user (`meethook events skip`): journaled and acked, not delivered.
    SkippedByUser {
        /// Attempts made before.
        attempts: u32,
    },
}

/// What waits behind an event whose next retry is scheduled, for its retry line.
#[derive(Debug, Clone, Copy)]
pub struct Blocked<'a> {
    /// Events this listener holds behind it (the relay may hold more).
    pub waiting_behind: usize,
    /// ` --data DIR` for the commands suggested, or empty when the default applies.
    pub data_arg: &'a str,
}

impl Printer {
    /// Prints one line about `ev` (with its parsed summary, when it has one).
    pub fn print(&self, ev: &Event, summary: Option<&Summary>, line: Line<'_>) {
        self.print_line(&render(ev, summary, line, self.json, None, None));
    }

    /// Prints the line of an attempt whose retry is scheduled, saying what waits behind it
    /// and how to move on.
    pub fn print_blocked(
        &self,
        ev: &Event,
        summary: Option<&Summary>,
        line: Line<'_>,
        blocked: Blocked<'_>,
    ) {
        self.print_line(&render(ev, summary, line, self.json, None, Some(blocked)));
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
    render(ev, summary, line, json, replay_of, None)
}

fn render(
    ev: &Event,
    summary: Option<&Summary>,
    line: Line<'_>,
    json: bool,
    replay_of: Option<&str>,
    blocked: Option<Blocked<'_>>,
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
            reason: None,
            attempt: None,
            status: None,
            error: None,
            latency_ms: None,
            retry_in_ms: None,
            waiting_behind: blocked.map(|b| b.waiting_behind),
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
                    (Verdict::Retry, None) => "gave_up",
                    (Verdict::Failed, None) => "failed",
                };
                l.attempt = Some(attempt);
                l.status = Some(outcome.status);
                l.error = Some(outcome.error.as_deref());
                // Tenths of a millisecond: enough to compare, without float noise (1.6000000000000001).
                l.latency_ms = Some((outcome.latency.as_secs_f64() * 1e4).round() / 10.0);
                l.retry_in_ms = next_retry.map(|d| d.as_millis() as u64);
            }
            Line::Skipped => l.reason = Some("filtered"),
            Line::SkippedByUser { attempts } => {
                l.reason = Some("user");
                l.attempt = Some(attempts);
            }
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
            let mut tail = match (outcome.verdict(), next_retry) {
                (Verdict::Delivered, _) => String::new(),
                (_, Some(d)) => {
                    format!("  retry #{} in {:.1}s", attempt + 1, d.as_secs_f64())
                }
                (Verdict::Retry, None) => format!("  gave up after {attempt} attempts"),
                (Verdict::Failed, None) => "  failed, moving on".into(),
            };
            if let (Some(b), Some(_)) = (blocked, next_retry) {
                let (seq, data) = (ev.seq, b.data_arg);
                tail.push_str(&format!(
                    " · {} waiting behind #{seq}: meethook events retry {seq}{data} | events skip {seq}{data}",
                    b.waiting_behind
                ));
            }
            format!("→ {answer} ({ms:.1} ms){tail}")
        }
        Line::Skipped => "→ skipped (filtered out)".into(),
        Line::SkippedByUser { attempts: 0 } => {
            "→ skipped by the user (meethook events skip)".into()
        }
        Line::SkippedByUser { attempts } => format!(
            "→ skipped by the user (meethook events skip) after {attempts} attempt{}",
            if attempts == 1 { "" } else { "s" }
        ),
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
    /// Why a skipped event was: `filtered` (`--events`/`--bot`) or `user` (`events skip`).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
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
    /// On a retry line: events this listener holds behind the failing one.
    #[serde(skip_serializing_if = "Option::is_none")]
    waiting_behind: Option<usize>,
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

    fn answered(status: u16) -> Outcome {
        Outcome {
            status: Some(status),
            error: None,
            latency: Duration::from_millis(3),
            response_head: Bytes::new(),
            retry_after: None,
            refused: false,
        }
    }

    fn gave_up(o: &Outcome) -> Line<'_> {
        Line::Attempt {
            outcome: o,
            attempt: 3,
            next_retry: None,
        }
    }

    #[test]
    fn a_give_up_is_one_line_with_the_answer() {
        let o = answered(500);
        let text = format_line(&ev("/a"), None, gave_up(&o), false, None);
        assert!(
            text.contains("→ 500 (3.0 ms)  gave up after 3 attempts"),
            "{text}"
        );
        assert!(!text.contains("moving on"), "{text}");
        let json = format_line(&ev("/a"), None, gave_up(&o), true, None);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            (v["result"].as_str(), v["status"].as_u64()),
            (Some("gave_up"), Some(500))
        );
        let failed = answered(400);
        let text = format_line(&ev("/a"), None, gave_up(&failed), false, None);
        assert!(text.contains("→ 400 (3.0 ms)  failed, moving on"), "{text}");
    }

    #[test]
    fn a_scheduled_retry_says_what_waits_behind_it_and_how_to_move_on() {
        let o = answered(500);
        let retrying = || Line::Attempt {
            outcome: &o,
            attempt: 3,
            next_retry: Some(Duration::from_secs(8)),
        };
        let blocked = Blocked {
            waiting_behind: 12,
            data_arg: " --data /tmp/d",
        };
        let text = render(&ev("/a"), None, retrying(), false, None, Some(blocked));
        assert!(
            text.ends_with(
                "→ 500 (3.0 ms)  retry #4 in 8.0s · 12 waiting behind #7: \
                 meethook events retry 7 --data /tmp/d | events skip 7 --data /tmp/d"
            ),
            "{text}"
        );
        let json = render(&ev("/a"), None, retrying(), true, None, Some(blocked));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            (v["result"].as_str(), v["waiting_behind"].as_u64()),
            (Some("retrying"), Some(12))
        );
        // Lines without a blocked event carry none of it.
        let plain = format_line(&ev("/a"), None, retrying(), true, None);
        assert!(!plain.contains("waiting_behind"), "{plain}");
        let user = format_line(
            &ev("/a"),
            None,
            Line::SkippedByUser { attempts: 4 },
            true,
            None,
        );
        let v: serde_json::Value = serde_json::from_str(&user).unwrap();
        assert_eq!(
            (v["result"].as_str(), v["reason"].as_str()),
            (Some("skipped"), Some("user"))
        );
    }

    #[test]
    fn json_lines_name_a_replay_and_its_channel() {
        let o = answered(500);
        let line = |replay_of| {
            let l = format_line(&ev("/a"), None, gave_up(&o), true, replay_of);
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
