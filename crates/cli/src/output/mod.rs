//! Everything `listen`, `dev` and `replay` print: the daemon reports typed events, and these
//! observers turn them into lines for a person (coloured nowhere, aligned) or, with `--json`,
//! into one JSON object per line (the schema is in `docs/operations.md`).
//!
//! # Layout
//! - [`Lines`]: the observer that prints; event lines on stdout, connection news on stderr
//!   (on stdout as JSON with `--json`).
//! - `text`: the line a person reads for each event.
//! - `json`: the `--json` objects.
//! - [`Stdout`]: stdout, written at once on a terminal and in bursts to a pipe or file.

pub(crate) mod json;
mod text;

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meethook_daemon::observe::{DaemonEvent, Observer};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Buffered output is written at once when it reaches this size.
const BUFFER_MAX: usize = 64 << 10;
/// Longest a buffered line waits.
const BUFFER_DELAY: Duration = Duration::from_millis(20);

/// Standard output for event lines: unbuffered on a terminal; to a pipe or a file, lines
/// are gathered and written within [`BUFFER_DELAY`], one write per burst instead of one per
/// event (which costs a daemon under load real CPU).
pub struct Stdout {
    buffered: bool,
    pending: Mutex<Vec<u8>>,
    wake: Notify,
}

impl Stdout {
    /// Stdout, buffered unless it is a terminal.
    pub fn new() -> Arc<Stdout> {
        Arc::new(Stdout {
            buffered: !std::io::stdout().is_terminal(),
            pending: Mutex::new(Vec::new()),
            wake: Notify::new(),
        })
    }

    /// Writes one line (now, or within [`BUFFER_DELAY`] while [`Stdout::flush_loop`] runs).
    pub fn line(&self, line: &str) {
        if !self.buffered {
            let _ = writeln!(std::io::stdout().lock(), "{line}");
            return;
        }
        let mut pending = self.pending.lock().expect("output buffer");
        if pending.is_empty() {
            self.wake.notify_one();
        }
        pending.extend_from_slice(line.as_bytes());
        pending.push(b'\n');
        if pending.len() >= BUFFER_MAX {
            write_out(&mut pending);
        }
    }

    /// Writes buffered lines within [`BUFFER_DELAY`] of the first one, until `stop`; then
    /// what is left.
    pub async fn flush_loop(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = stop.cancelled() => break,
            }
            tokio::select! {
                _ = tokio::time::sleep(BUFFER_DELAY) => {}
                _ = stop.cancelled() => break,
            }
            self.flush();
        }
        self.flush();
    }

    /// Writes the buffered lines now.
    pub fn flush(&self) {
        write_out(&mut self.pending.lock().expect("output buffer"));
    }
}

fn write_out(pending: &mut Vec<u8>) {
    if !pending.is_empty() {
        let _ = std::io::stdout().lock().write_all(pending);
        pending.clear();
    }
}

/// Which command the lines are for.
#[derive(Debug, Clone)]
pub enum Source {
    /// `listen` / `dev`: a retry line suggests `events retry|skip`, with this ` --data DIR`
    /// (empty when the default applies).
    Live {
        /// ` --data DIR` or empty.
        data_arg: String,
    },
    /// `replay` of this channel: JSON lines say `"replay": true` and name the channel.
    Replay {
        /// The replayed channel.
        channel: String,
    },
}

/// The observer that prints: text lines, or JSON lines with `--json`.
pub struct Lines {
    json: bool,
    source: Source,
    out: Arc<Stdout>,
}

impl Lines {
    /// Lines for `source` on `out`.
    pub fn new(json: bool, source: Source, out: Arc<Stdout>) -> Lines {
        Lines { json, source, out }
    }
}

impl Observer for Lines {
    fn notify(&self, event: &DaemonEvent) {
        if self.json {
            if let Some(line) = json::line(event, &self.source) {
                self.out.line(&line);
            }
            return;
        }
        match text::line(event, &self.source) {
            Some(text::Text::Out(line)) => self.out.line(&line),
            // News about the connection and housekeeping: beside the logs, not in the stream
            // of event lines a script may read.
            Some(text::Text::Err(line)) => eprintln!("{line}"),
            None => {}
        }
    }
}

/// ` --data DIR` for the commands a retry line suggests, empty when their default applies.
pub fn data_arg(data: &Path) -> String {
    let default = std::env::var_os("MEETHOOK_DATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("./meethook-data"));
    let plain = |p: &Path| p.strip_prefix(".").unwrap_or(p).to_path_buf();
    if plain(data) == plain(&default) {
        String::new()
    } else {
        format!(" --data {}", data.display())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use meethook_daemon::forward::Verdict;
    use meethook_daemon::observe::{AttemptReport, DaemonEvent, EventInfo, SkipReason};

    use super::{json, text, Source};

    fn info(path: &str) -> Arc<EventInfo> {
        Arc::new(EventInfo {
            seq: 7,
            received_at_ms: 0,
            method: "POST".into(),
            path: path.into(),
            summary: None,
            route: None,
        })
    }

    fn attempt(status: u16, verdict: Verdict, next_retry: Option<u64>) -> DaemonEvent {
        DaemonEvent::AttemptFinished {
            event: info("/a"),
            report: AttemptReport {
                attempt: 3,
                status: Some(status),
                error: None,
                latency: Duration::from_millis(3),
                verdict,
                next_retry: next_retry.map(Duration::from_secs),
                waiting_behind: 12,
            },
        }
    }

    fn live() -> Source {
        Source::Live {
            data_arg: " --data /tmp/d".into(),
        }
    }

    fn out(e: &DaemonEvent, source: &Source) -> String {
        match text::line(e, source) {
            Some(text::Text::Out(l)) => l,
            _ => panic!("no stdout line for {e:?}"),
        }
    }

    fn json(e: &DaemonEvent, source: &Source) -> serde_json::Value {
        serde_json::from_str(&json::line(e, source).expect("a JSON line")).unwrap()
    }

    #[test]
    fn text_lines_never_carry_control_characters() {
        let e = DaemonEvent::Skipped {
            event: info("/x\x1b[2J\ry"),
            reason: SkipReason::Filtered,
            attempts: 0,
        };
        let l = out(&e, &live());
        assert!(!l.chars().any(char::is_control), "{l:?}");
        assert!(l.contains("#7") && l.contains("POST /x") && l.contains("skipped"));
    }

    #[test]
    fn a_give_up_is_one_line_with_the_answer() {
        let gave_up = attempt(500, Verdict::Retry, None);
        let text = out(&gave_up, &live());
        assert!(
            text.contains("→ 500 (3.0 ms)  gave up after 3 attempts"),
            "{text}"
        );
        assert!(
            !text.contains("moving on") && !text.contains("waiting"),
            "{text}"
        );
        let v = json(&gave_up, &live());
        assert_eq!(
            (
                v["kind"].as_str(),
                v["result"].as_str(),
                v["status"].as_u64()
            ),
            (Some("attempt"), Some("gave_up"), Some(500))
        );
        let failed = out(&attempt(400, Verdict::Failed, None), &live());
        assert!(
            failed.contains("→ 400 (3.0 ms)  failed, moving on"),
            "{failed}"
        );
    }

    #[test]
    fn a_scheduled_retry_says_what_waits_behind_it_and_how_to_move_on() {
        let retrying = attempt(500, Verdict::Retry, Some(8));
        let text = out(&retrying, &live());
        assert!(
            text.ends_with(
                "→ 500 (3.0 ms)  retry #4 in 8.0s · 12 waiting behind #7: \
                 meethook events retry 7 --data /tmp/d | events skip 7 --data /tmp/d"
            ),
            "{text}"
        );
        let v = json(&retrying, &live());
        assert_eq!(
            (v["result"].as_str(), v["waiting_behind"].as_u64()),
            (Some("retrying"), Some(12))
        );
        // A replay suggests no control commands.
        let replay = Source::Replay {
            channel: "ch_1".into(),
        };
        assert!(!out(&retrying, &replay).contains("waiting"));
        assert!(json(&retrying, &replay).get("waiting_behind").is_none());
        let user = DaemonEvent::Skipped {
            event: info("/a"),
            reason: SkipReason::User,
            attempts: 4,
        };
        let v = json(&user, &live());
        assert_eq!(
            (
                v["kind"].as_str(),
                v["result"].as_str(),
                v["reason"].as_str()
            ),
            (Some("skipped"), Some("skipped"), Some("user"))
        );
    }

    #[test]
    fn json_lines_name_a_replay_and_its_channel() {
        let gave_up = attempt(500, Verdict::Retry, None);
        let live = json(&gave_up, &live());
        assert_eq!(live["attempt"].as_u64(), Some(3));
        assert!(live.get("replay").is_none() && live.get("channel").is_none());
        let replay = json(
            &gave_up,
            &Source::Replay {
                channel: "ch_1".into(),
            },
        );
        assert_eq!(replay["replay"], true);
        assert_eq!(replay["channel"], "ch_1");
        assert_eq!(replay["path"], "/a");
    }

    #[test]
    fn connection_news_goes_to_stderr_as_text_and_stdout_as_json() {
        let e = DaemonEvent::Reconnecting {
            reason:
                "relay unreachable at http://127.0.0.1:9: refused (is `meethook relay` running?)"
                    .into(),
            retry_in: Duration::from_millis(200),
        };
        match text::line(&e, &live()) {
            Some(text::Text::Err(l)) => assert!(l.ends_with("; reconnecting in 0.2s"), "{l}"),
            _ => panic!("a stderr line"),
        }
        let v = json(&e, &live());
        assert_eq!(
            (v["kind"].as_str(), v["retry_in_ms"].as_u64()),
            (Some("reconnecting"), Some(200))
        );
    }
}
