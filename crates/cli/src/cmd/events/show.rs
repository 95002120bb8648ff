//! `events show`: one event's request, headers, body and delivery attempts.

use std::io::{self, Write};

use base64::Engine;
use meethook_proto::meeting::Summary;
use meethook_proto::Header;
use serde::Serialize;

use super::{find, local_ms, open, printable, quiet_pipe, rfc3339, size_text, state_text, Where};

/// `events show --json`.
#[derive(Serialize)]
struct ShowJson<'a> {
    channel: &'a str,
    seq: u64,
    received_at: String,
    journaled_at: String,
    method: &'a str,
    path: &'a str,
    headers: Vec<(&'a str, String)>,
    /// The body as text when it is UTF-8 (JSON bodies stay as sent).
    body: Option<String>,
    /// The body in base64 when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    body_base64: Option<String>,
    event: Option<&'a str>,
    bot_id: Option<&'a str>,
    state: &'static str,
    /// The status of the latest replay answered 2xx.
    replayed: Option<u16>,
    pinned: bool,
    /// The earlier event this one repeats (same svix-id, or same unsigned body).
    duplicate_of: Option<u64>,
    attempts: Vec<AttemptJson>,
    recordings: Vec<RecordingJson>,
    /// A final event's artifact links, each with its saved copy and whether the link expired.
    artifacts: Vec<meethook_daemon::bots::Artifact>,
}

#[derive(Serialize)]
struct RecordingJson {
    kind: String,
    path: String,
    state: String,
    bytes: u64,
    error: Option<String>,
}

#[derive(Serialize)]
struct AttemptJson {
    attempt: u32,
    replay: bool,
    started_at: String,
    status: Option<u16>,
    error: Option<String>,
    latency_ms: f64,
    response_head: String,
    /// The handler's answer was longer than the journal keeps (64 KiB).
    truncated: bool,
}

/// Headers whose values are credentials: hidden by `events show` unless `--reveal`.
const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "x-meeting-baas-api-key",
    "x-mb-secret",
    "x-spoke-api-key",
];

/// A header value for display: hidden when it is a credential and `reveal` is off.
fn header_value(h: &Header, reveal: bool) -> String {
    let secret = CREDENTIAL_HEADERS
        .iter()
        .any(|n| h.name.eq_ignore_ascii_case(n));
    if secret && !reveal {
        format!("[hidden, {} bytes; --reveal shows it]", h.value.len())
    } else {
        String::from_utf8_lossy(&h.value).into_owned()
    }
}

/// How much of the body `events show` prints.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Body {
    /// About a screenful, with a note when cut.
    Screenful,
    /// All of it.
    Full,
    /// Only the body, whole (`--body-only`).
    Only,
    /// Only the body's exact bytes (`--raw`).
    Raw,
}

/// Body bytes `events show` prints without `--full`.
const SCREEN_BYTES: usize = 4096;
/// Body lines `events show` prints without `--full`.
const SCREEN_LINES: usize = 60;

/// `text` cut to about a screenful, and what it was cut at, if it was.
fn screenful(text: &str) -> (&str, Option<String>) {
    let mut end = text.len().min(SCREEN_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    if let Some((i, _)) = text[..end].match_indices('\n').nth(SCREEN_LINES - 1) {
        if i + 1 < text.len() {
            return (&text[..i], Some(format!("{SCREEN_LINES} lines")));
        }
    }
    let cut = (end < text.len()).then(|| size_text(SCREEN_BYTES as u64));
    (&text[..end], cut)
}

/// Prints event `seq`: as text, or as one JSON object with `json`.
pub(super) fn show(
    at: &Where,
    seq: u64,
    json: bool,
    reveal: bool,
    body: Body,
) -> anyhow::Result<()> {
    let journal = open(&at.data)?;
    let s = find(&journal, at, seq)?;
    if body == Body::Raw || body == Body::Only && pretty_json(&s.event.body).is_none() {
        return quiet_pipe(io::stdout().lock().write_all(&s.event.body));
    }
    if body == Body::Only {
        let p = pretty_json(&s.event.body).expect("checked above");
        return quiet_pipe(writeln!(io::stdout().lock(), "{p}"));
    }
    let attempts = journal.attempts(&s.channel, seq)?;
    let recordings = journal.recordings(&s.channel, seq)?;
    let ev = &s.event;
    let artifacts = meethook_proto::meeting::Webhook::parse(&ev.body)
        .map(|h| {
            meethook_daemon::bots::artifacts_of(
                &h,
                seq,
                &recordings,
                meethook_proto::clock::now_ms(),
            )
        })
        .unwrap_or_default();
    let mut out = io::stdout().lock();
    if json {
        let body_text = std::str::from_utf8(&ev.body).ok().map(str::to_string);
        let v = ShowJson {
            channel: &s.channel,
            seq,
            received_at: rfc3339(ev.received_at_ms),
            journaled_at: rfc3339(s.journaled_at_ms),
            method: &ev.method,
            path: &ev.path,
            headers: ev
                .headers
                .iter()
                .map(|h| (h.name.as_str(), header_value(h, reveal)))
                .collect(),
            body_base64: body_text
                .is_none()
                .then(|| super::export::b64().encode(&ev.body)),
            body: body_text,
            event: s.event_type.as_deref(),
            bot_id: s.bot_id.as_deref(),
            state: s.state.name(),
            replayed: s.replayed,
            pinned: s.pinned,
            duplicate_of: s.duplicate_of,
            attempts: attempts
                .iter()
                .map(|a| AttemptJson {
                    attempt: a.attempt,
                    replay: a.replay,
                    started_at: rfc3339(a.started_at_ms),
                    status: a.status,
                    error: a.error.clone(),
                    latency_ms: (a.latency.as_secs_f64() * 1e4).round() / 10.0,
                    response_head: String::from_utf8_lossy(&a.response_head).into(),
                    truncated: a.truncated,
                })
                .collect(),
            recordings: recordings
                .iter()
                .map(|r| RecordingJson {
                    kind: r.kind.clone(),
                    path: r.path.clone(),
                    state: r.state.clone(),
                    bytes: r.bytes,
                    error: r.error.clone(),
                })
                .collect(),
            artifacts: artifacts.clone(),
        };
        let text = serde_json::to_string(&v)?;
        return quiet_pipe(writeln!(out, "{text}"));
    }

    let summary = Summary::parse(&ev.body);
    let r: io::Result<()> = (|| {
        writeln!(
            out,
            "event #{seq} of channel {}",
            printable(&s.channel, false)
        )?;
        writeln!(
            out,
            "received   {} (journaled {})",
            local_ms(ev.received_at_ms),
            local_ms(s.journaled_at_ms)
        )?;
        let last = s
            .last_status
            .map(|x| format!(", last status {x}"))
            .unwrap_or_default();
        let tries = match s.attempts {
            1 => "1 attempt".to_string(),
            n => format!("{n} attempts"),
        };
        let state = state_text(&s);
        let (name, extra) = state.split_at(s.state.name().len());
        writeln!(out, "state      {name} ({tries}{last}){extra}")?;
        if let Some(of) = s.duplicate_of {
            writeln!(
                out,
                "duplicate  of #{of} (same svix-id, or the same unsigned body)"
            )?;
        }
        if let Some(sum) = &summary {
            writeln!(
                out,
                "summary    {}  {}",
                printable(&sum.event, false),
                sum.detail()
            )?;
        }
        if let Some(b) = &s.bot_id {
            writeln!(out, "bot        {}", printable(b, false))?;
        }
        writeln!(out)?;
        let path = if ev.path.is_empty() { "/" } else { &ev.path };
        writeln!(
            out,
            "{} {}",
            printable(&ev.method, false),
            printable(path, false)
        )?;
        for h in &ev.headers {
            writeln!(
                out,
                "{}: {}",
                printable(&h.name, false),
                printable(&header_value(h, reveal), false)
            )?;
        }
        writeln!(out)?;
        let text = match pretty_json(&ev.body) {
            Some(p) => Some(p),
            None if ev.body.is_empty() => {
                writeln!(out, "(empty body)")?;
                None
            }
            None => match std::str::from_utf8(&ev.body) {
                Ok(t) => Some(printable(t, true)),
                Err(_) => {
                    writeln!(
                        out,
                        "({} bytes, not UTF-8; --raw prints them, `meethook events export` has them in base64)",
                        ev.body.len()
                    )?;
                    None
                }
            },
        };
        if let Some(text) = text {
            let (shown, cut) = match body {
                Body::Screenful => screenful(&text),
                _ => (text.as_str(), None),
            };
            writeln!(out, "{shown}")?;
            if let Some(at) = cut {
                writeln!(
                    out,
                    "… {} body cut at {at}: --full shows all, --body-only prints just the body \
                     (pretty), --raw prints the exact bytes",
                    size_text(ev.body.len() as u64)
                )?;
            }
        }
        writeln!(out)?;
        if attempts.is_empty() {
            writeln!(out, "no delivery attempts")?;
        } else {
            writeln!(out, "attempts ({}):", attempts.len())?;
        }
        for a in &attempts {
            let label = if a.replay {
                format!("replay #{}", a.attempt)
            } else {
                format!("#{}", a.attempt)
            };
            let answer = match (a.status, &a.error) {
                (Some(st), _) => st.to_string(),
                (None, Some(e)) => printable(e, false),
                (None, None) => "no answer".into(),
            };
            // One line: the first 200 bytes of what was kept (the inspector shows it all).
            let shown = &a.response_head[..a.response_head.len().min(200)];
            let head = String::from_utf8_lossy(shown);
            let cut = if a.truncated || shown.len() < a.response_head.len() {
                " (cut)"
            } else {
                ""
            };
            let head = if head.is_empty() {
                String::new()
            } else {
                format!("  response {head:?}{cut}")
            };
            writeln!(
                out,
                "  {label:<10} {}  → {answer} ({:.1} ms){head}",
                local_ms(a.started_at_ms),
                a.latency.as_secs_f64() * 1e3
            )?;
        }
        for r in recordings
            .iter()
            .filter(|r| !artifacts.iter().any(|a| a.kind == r.kind))
        {
            let how = match (&r.error, r.state.as_str()) {
                (Some(e), _) => format!("failed: {}", printable(e, false)),
                (None, "saved") => format!("saved, {} bytes", r.bytes),
                (None, st) => st.to_string(),
            };
            writeln!(out, "recording {:<6} {}  ({how})", r.kind, r.path)?;
        }
        if !artifacts.is_empty() {
            writeln!(out, "artifacts:")?;
        }
        for a in &artifacts {
            writeln!(out, "  {:<17} {}", a.kind, artifact_text(a))?;
        }
        out.flush()
    })();
    quiet_pipe(r)
}

/// What `events show` says of one artifact: its saved copy, or plainly that there is none
/// and whether its link still works.
fn artifact_text(a: &meethook_daemon::bots::Artifact) -> String {
    let until = a.expires_at.map(super::local).unwrap_or_default();
    match (a.saved.as_deref(), a.expired) {
        (Some("saved"), _) => format!(
            "saved → {} ({}{}); replay --local-artifacts sends this copy",
            printable(a.path.as_deref().unwrap_or(""), false),
            size_text(a.bytes.unwrap_or(0)),
            a.sha256
                .as_deref()
                .map(|s| format!(", sha256 {}", &s[..s.len().min(16)]))
                .unwrap_or_default()
        ),
        (saved, Some(true)) => format!(
            "NOT SAVED{} and the link expired at {until}: the file is gone from Meeting BaaS \
             (listen --save-recordings keeps copies)",
            saved.map(|s| format!(" ({s})")).unwrap_or_default()
        ),
        (saved, Some(false)) => format!(
            "not saved{}; the link works until {until}: {}",
            saved.map(|s| format!(" ({s})")).unwrap_or_default(),
            printable(&a.url, false)
        ),
        (saved, None) => format!(
            "not saved{}; the link does not say when it expires (hours after the meeting): {}",
            saved.map(|s| format!(" ({s})")).unwrap_or_default(),
            printable(&a.url, false)
        ),
    }
}

/// Re-indents a JSON body, keeping its key order and number spelling (`serde_json`'s
/// `preserve_order` and `arbitrary_precision`); `None` if not JSON.
fn pretty_json(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    serde_json::to_string_pretty(&v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_json_keeps_order_and_numbers() {
        let p = pretty_json(br#"{"z":1.50,"a":[],"m":{"k":"a,b:{c}\"}"},"l":[1, {}]}"#).unwrap();
        assert_eq!(
            p,
            "{\n  \"z\": 1.50,\n  \"a\": [],\n  \"m\": {\n    \"k\": \"a,b:{c}\\\"}\"\n  },\n  \"l\": [\n    1,\n    {}\n  ]\n}"
        );
        assert!(pretty_json(b"{nope").is_none());
        assert!(pretty_json(b"").is_none());
        assert_eq!(pretty_json(b" 42 ").as_deref(), Some("42"));
    }

    #[test]
    fn screenful_cuts_at_4_kib_or_60_lines() {
        assert_eq!(screenful("short\n"), ("short\n", None));
        let long = "é".repeat(3000);
        let (shown, cut) = screenful(&long);
        assert_eq!((shown.len(), cut.as_deref()), (4096, Some("4 KiB")));
        let lines = "x\n".repeat(100);
        let (shown, cut) = screenful(&lines);
        assert_eq!(
            (shown.lines().count(), cut.as_deref()),
            (60, Some("60 lines"))
        );
        assert_eq!(screenful(&"x\n".repeat(60)).1, None, "exactly 60 lines");
        assert_eq!(size_text(3 << 20), "3.0 MiB");
        assert_eq!(size_text(1536), "1.5 KiB");
        assert_eq!(size_text(12), "12 B");
    }
}
