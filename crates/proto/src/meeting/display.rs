//! What a listener prints about a body: [`Summary`] and its one-line [`Summary::detail`].
//!
//! It lives in proto, not in the cli, because both the cli (`listen`, `events`, `trigger`) and
//! the browser inspector print it: one wording everywhere.

use serde_json::Number;

use super::time::{hh_mm_utc, presigned_url_expiry};
use super::{error_code_meaning, EndReason, MeetingEvent, Webhook, KNOWN_UNTYPED_EVENTS};

/// `1204` → `1,204`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let head = match digits.len() % 3 {
        0 => 3,
        r => r,
    };
    let mut out = digits[..head].to_string();
    for group in digits.as_bytes()[head..].chunks(3) {
        out.push(',');
        out.push_str(std::str::from_utf8(group).unwrap_or_default());
    }
    out
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{} {}", thousands(n), if n == 1 { one } else { many })
}

fn duration_text(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        _ => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
    }
}

/// Cuts `s` to `max` characters with an ellipsis.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// What a listener shows about one webhook body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Summary {
    /// `event` field (`bot.status_change`, `complete`, `bot.completed`, …).
    pub event: String,
    /// `data.bot_id` when present.
    pub bot_id: Option<String>,
    /// `data.status.code` for status changes, `data.error` / `data.error_code` for failures.
    pub code: Option<String>,
    /// Shown right after the code: a `retrying` status's `attempt/max` (`2/5`).
    pub progress: Option<String>,
    /// A word put before the code in [`Summary::detail`] (`complete`, `failed`), if any.
    pub label: Option<String>,
    /// Extra facts shown after the code, ` · `-separated (`2 speakers`, `1,204 words`, …).
    pub facts: Vec<String>,
}

impl Summary {
    /// Parses a body as a Meeting BaaS envelope; `None` when it is not one.
    pub fn parse(body: &[u8]) -> Option<Summary> {
        Webhook::parse(body).map(|w| Summary::of(&w))
    }

    /// The summary of a typed webhook.
    pub fn of(w: &Webhook) -> Summary {
        let mut s = Summary {
            event: w.event.name().to_string(),
            bot_id: w.event.bot_id().map(str::to_string),
            ..Summary::default()
        };
        match &w.event {
            MeetingEvent::StatusChange(d) => {
                s.code = Some(d.status.code.as_str().to_string());
                s.progress = match (d.status.attempt, d.status.max) {
                    (Some(a), Some(m)) => Some(format!("{a}/{m}")),
                    (Some(a), None) => Some(format!("{a}")),
                    _ => None,
                };
                let msg = d.status.error_message.clone().flatten();
                match (&d.status.error_type, msg) {
                    (Some(t), Some(m)) => s.facts.push(format!("{t}: {}", clip(&m, 80))),
                    (Some(t), None) => s.facts.push(t.clone()),
                    (None, Some(m)) => s.facts.push(clip(&m, 80)),
                    (None, None) => {}
                }
            }
            MeetingEvent::Complete(d) => {
                s.label = Some("complete".into());
                s.facts
                    .push(plural(d.speaker_count(), "speaker", "speakers"));
                if let Some(n) = d.word_count() {
                    s.facts.push(plural(n, "word", "words"));
                }
                let expiry = d.mp4.as_deref().and_then(presigned_url_expiry);
                if let Some(t) = expiry.and_then(hh_mm_utc) {
                    s.facts.push(format!("mp4 expires {t}"));
                }
            }
            MeetingEvent::Failed(d) => {
                s.label = Some("failed".into());
                s.code = Some(d.error.clone());
                if let Some(m) = &d.message {
                    s.facts.push(clip(m, 80));
                }
            }
            MeetingEvent::TranscriptionComplete(_) => {
                s.label = Some("transcription_complete".into());
            }
            MeetingEvent::CalendarSyncEvents(d) => {
                s.label = Some(format!("calendar {}", short_id(&d.calendar_id)));
                s.facts.push(format!(
                    "{} changed",
                    plural(d.affected_event_uuids.len(), "event", "events")
                ));
            }
            MeetingEvent::BotCompleted(d) => {
                s.label = Some("completed".into());
                s.facts
                    .push(plural(d.speakers.len(), "speaker", "speakers"));
                if let Some(secs) = d.duration_seconds.as_ref().and_then(Number::as_f64) {
                    s.facts.push(duration_text(secs));
                }
                if let Some(t) = d
                    .video
                    .as_ref()
                    .and_then(|v| v.as_deref())
                    .and_then(presigned_url_expiry)
                    .and_then(hh_mm_utc)
                {
                    s.facts.push(format!("video expires {t}"));
                }
                if let Some(Some(p)) = &d.transcription_provider {
                    s.facts.push(format!("transcribed by {}", clip(p, 24)));
                }
            }
            MeetingEvent::BotFailed(d) => {
                s.label = Some("failed".into());
                s.code = Some(d.error_code.clone());
                match (&d.error_message, error_code_meaning(&d.error_code)) {
                    (Some(Some(m)), _) => s.facts.push(clip(m, 80)),
                    (_, Some(meaning)) => s.facts.push(meaning.to_string()),
                    _ => {}
                }
            }
            MeetingEvent::ChatMessage(d) => {
                s.label = Some("chat".into());
                let who = d.sender_name.as_deref().unwrap_or("?");
                s.facts.push(format!("{who}: {}", clip(&d.text, 60)));
            }
            MeetingEvent::Calendar { data, .. } => {
                if let Some(id) = &data.calendar_id {
                    s.label = Some(format!("calendar {}", short_id(id)));
                }
            }
            MeetingEvent::Other { data, .. } => {
                // Same lenient reading as for any body: status code, else an error code.
                let d = data.as_ref();
                let get = |path: &[&str]| -> Option<String> {
                    let mut v = d?;
                    for k in path {
                        v = v.get(k)?;
                    }
                    v.as_str().map(str::to_string)
                };
                s.code = get(&["status", "code"])
                    .or_else(|| get(&["error_code"]))
                    .or_else(|| get(&["error"]));
                if KNOWN_UNTYPED_EVENTS.contains(&s.event.as_str()) {
                    if let Some(id) = get(&["calendar_id"]) {
                        s.label = Some(format!("calendar {}", short_id(&id)));
                    }
                    let what = s
                        .event
                        .rsplit('.')
                        .next()
                        .unwrap_or_default()
                        .replace('_', " ");
                    s.facts.push(what);
                    if let Some(m) = get(&["message"]).or_else(|| get(&["error_message"])) {
                        s.facts.push(clip(&m, 80));
                    }
                }
            }
        }
        let untyped = match &w.event {
            MeetingEvent::StatusChange(d) => {
                EndReason::find(&d.status.unknown).or_else(|| EndReason::find(&d.unknown))
            }
            MeetingEvent::Complete(d) => EndReason::find(&d.unknown),
            MeetingEvent::Failed(d) => EndReason::find(&d.unknown),
            MeetingEvent::BotCompleted(d) => EndReason::find(&d.unknown),
            MeetingEvent::BotFailed(d) => EndReason::find(&d.unknown),
            _ => None,
        };
        if let Some((_, reason)) = untyped {
            s.facts.push(format!("ended: {}", reason.meaning()));
        }
        s
    }

    /// A one-liner: `bot 8d2f4c1a… in_call_recording`,
    /// `bot 8d2f4c1a… complete · 2 speakers · 1,204 words · mp4 expires 12:04 UTC`,
    /// `bot 8d2f4c1a… failed BotNotAccepted`; empty when there is nothing to say. Control
    /// characters from the body (newlines, escapes) are shown as spaces: it stays one line.
    pub fn detail(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if let Some(id) = &self.bot_id {
            parts.push(format!("bot {}", short_id(id)));
        }
        parts.extend(self.label.iter().cloned());
        parts.extend(self.code.iter().cloned());
        parts.extend(self.progress.iter().cloned());
        let mut out = parts.join(" ");
        for f in &self.facts {
            if !out.is_empty() {
                out.push_str(" · ");
            }
            out.push_str(f);
        }
        if out.chars().any(char::is_control) {
            out = out
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
        }
        out
    }
}

/// The first 8 characters of an id, with `…` when it was longer.
fn short_id(id: &str) -> String {
    let mut short: String = id.chars().take(8).collect();
    if id.chars().count() > 8 {
        short.push('…');
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const BOT: &str = "8d2f4c1a-5b6e-4f7a-9c3d-2e1f0a9b8c7d";

    #[test]
    fn status_change() {
        let s = Summary::parse(
            br#"{"event":"bot.status_change","data":{"bot_id":"8d2f4c1a-0000","status":{"code":"in_call_recording","start_time":1}}}"#,
        )
        .unwrap();
        assert_eq!(s.event, "bot.status_change");
        assert_eq!(s.code.as_deref(), Some("in_call_recording"));
        assert_eq!(s.detail(), "bot 8d2f4c1a… in_call_recording");
    }

    #[test]
    fn failures_v1_and_v2() {
        let v1 =
            Summary::parse(br#"{"event":"failed","data":{"bot_id":"b","error":"BotNotAccepted"}}"#)
                .unwrap();
        assert_eq!(v1.code.as_deref(), Some("BotNotAccepted"));
        assert_eq!(v1.detail(), "bot b failed BotNotAccepted");
        let v2 = Summary::parse(
            br#"{"event":"bot.failed","data":{"bot_id":"b","error_code":"BOT_NOT_ACCEPTED"},"extra":null}"#,
        )
        .unwrap();
        assert_eq!(v2.code.as_deref(), Some("BOT_NOT_ACCEPTED"));
        assert_eq!(
            v2.detail(),
            "bot b failed BOT_NOT_ACCEPTED · nobody admitted the bot"
        );
    }

    #[test]
    fn lenient() {
        assert!(Summary::parse(b"not json").is_none());
        assert!(Summary::parse(br#"{"no_event":1}"#).is_none());
        assert!(Summary::parse(br#"{"event":5}"#).is_none());
        assert!(Summary::parse(br#"[1]"#).is_none());
        let odd = Summary::parse(br#"{"event":"new.kind","data":{"bot_id":5,"x":[]}}"#).unwrap();
        assert_eq!(odd.event, "new.kind");
        assert_eq!(odd.bot_id, None);
        // A known event whose data does not fit still summarizes, from the raw data.
        let w = Webhook::parse(br#"{"event":"failed","data":{"bot_id":"b","error":{"code":"X"}}}"#)
            .unwrap();
        assert!(!w.event.is_typed());
        assert_eq!(Summary::of(&w).detail(), "bot b");
        let w = Webhook::parse(br#"{"event":"bot.status_change"}"#).unwrap();
        assert_eq!(
            w.event,
            MeetingEvent::Other {
                event: "bot.status_change".into(),
                data: None
            }
        );
        assert_eq!(Summary::of(&w).detail(), "");
    }

    #[test]
    fn detail_is_one_line() {
        let s = Summary::parse(
            br#"{"event":"bot.chat_message","data":{"bot_id":"b","sender_name":"x\u001b[31m","text":"a\nb\rc"}}"#,
        )
        .unwrap();
        assert_eq!(s.detail(), "bot b chat · x [31m: a b c");
    }

    #[test]
    fn complete_detail_counts_and_expiry() {
        let body = serde_json::json!({
            "event": "complete",
            "data": {
                "bot_id": BOT,
                "mp4": "https://bucket.s3.eu-west-3.amazonaws.com/x.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20250611T100400Z&X-Amz-Expires=7200&X-Amz-Signature=ab",
                "speakers": ["Alice", "Bob"],
                "transcript": [
                    {"speaker": "Alice", "words": [{"start": 0.5, "end": 0.9, "word": "Hi"}]},
                    {"speaker": "Bob", "words": [{"start": 1.5, "end": 1.9, "word": "Hello"}, {"start": 2.0, "end": 2.2, "word": "there"}]}
                ]
            }
        });
        let s = Summary::parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(
            s.detail(),
            "bot 8d2f4c1a… complete · 2 speakers · 3 words · mp4 expires 12:04 UTC"
        );
        assert_eq!(s.code, None);
        // Without X-Amz-Date the expiry is omitted; without a transcript so is the word count.
        let s = Summary::parse(
            br#"{"event":"complete","data":{"bot_id":"b","mp4":"https://x/y.mp4?X-Amz-Expires=7200","speakers":["A"]}}"#,
        )
        .unwrap();
        assert_eq!(s.detail(), "bot b complete · 1 speaker");
    }

    #[test]
    fn meeting_error_detail() {
        let s = Summary::parse(
            br#"{"event":"bot.status_change","data":{"bot_id":"b","status":{"code":"meeting_error","created_at":"2025-06-11T10:07:41.002Z","error_message":"Connection lost","error_type":"NetworkError"}}}"#,
        )
        .unwrap();
        assert_eq!(
            s.detail(),
            "bot b meeting_error · NetworkError: Connection lost"
        );
    }

    #[test]
    fn v2_details() {
        let s = Summary::parse(
            br#"{"event":"bot.completed","data":{"bot_id":"b","event_id":null,"speakers":[{"name":"A","id":null}],"duration_seconds":3725,"video":"https://x/v.mp4?X-Amz-Date=20250115T110000Z&X-Amz-Expires=14400"},"extra":null}"#,
        )
        .unwrap();
        assert_eq!(
            s.detail(),
            "bot b completed · 1 speaker · 1 h 02 min · video expires 15:00 UTC"
        );
        let s = Summary::parse(
            br#"{"event":"bot.chat_message","data":{"bot_id":"b","sender_name":"Alice","text":"hi bot"},"extra":null}"#,
        )
        .unwrap();
        assert_eq!(s.detail(), "bot b chat · Alice: hi bot");
        let s = Summary::parse(
            br#"{"event":"calendar.sync_events","data":{"calendar_id":"0c1d2e3f-aaaa","last_updated_ts":"2025-06-11T10:00:00Z","affected_event_uuids":["a","b"]}}"#,
        )
        .unwrap();
        assert_eq!(s.detail(), "calendar 0c1d2e3f… · 2 events changed");
    }

    #[test]
    fn sdk_6_2_statuses_codes_and_providers() {
        let s = Summary::parse(
            br#"{"event":"bot.status_change","data":{"bot_id":"b","event_id":null,"status":{"code":"retrying","created_at":"2025-06-11T10:00:00Z","attempt":2,"max":5}},"extra":null}"#,
        )
        .unwrap();
        assert_eq!(s.code.as_deref(), Some("retrying"));
        assert_eq!(s.detail(), "bot b retrying 2/5");
        for code in [
            "pickup_delayed",
            "awaiting_reconciliation",
            "transcription_failed",
        ] {
            let body = format!(
                r#"{{"event":"bot.status_change","data":{{"bot_id":"b","event_id":null,"status":{{"code":"{code}","created_at":"x"}}}},"extra":null}}"#
            );
            let w = Webhook::parse(body.as_bytes()).unwrap();
            let MeetingEvent::StatusChange(sc) = &w.event else {
                panic!("{code}")
            };
            assert!(
                !matches!(sc.status.code, crate::meeting::StatusCode::Other(_)),
                "{code}"
            );
        }
        let s = Summary::parse(
            br#"{"event":"bot.failed","data":{"bot_id":"b","event_id":null,"error_code":"MEET_LOGIN_REQUIRED","sent_at":"x"},"extra":null}"#,
        )
        .unwrap();
        assert_eq!(
            s.detail(),
            "bot b failed MEET_LOGIN_REQUIRED · Meet requires a signed-in bot"
        );
        let s = Summary::parse(
            br#"{"event":"bot.completed","data":{"bot_id":"b","event_id":null,"speakers":[],"transcription_provider":"deepgram"},"extra":null}"#,
        )
        .unwrap();
        assert_eq!(
            s.detail(),
            "bot b completed · 0 speakers · transcribed by deepgram"
        );
    }

    #[test]
    fn chat_sender_id_is_a_number_or_null() {
        for (id, typed) in [("7", true), ("null", true), ("\"7\"", false)] {
            let body = format!(
                r#"{{"event":"bot.chat_message","data":{{"bot_id":"b","event_id":null,"message_id":"m","sender_name":"A","sender_id":{id},"text":"hi","sent_at":"x"}},"extra":null}}"#
            );
            let w = Webhook::parse(body.as_bytes()).unwrap();
            assert_eq!(w.event.is_typed(), typed, "{id}");
            // Typed or not, it is shown.
            assert_eq!(Summary::of(&w).bot_id.as_deref(), Some("b"));
        }
    }

    #[test]
    fn known_untyped_events_and_end_reasons() {
        let w = Webhook::parse(
            br#"{"event":"calendar.connection_error","data":{"calendar_id":"0c1d2e3f-aaaa","message":"token revoked"}}"#,
        )
        .unwrap();
        assert!(!w.event.is_typed() && w.event.is_known());
        assert_eq!(
            Summary::of(&w).detail(),
            "calendar 0c1d2e3f… · connection error · token revoked"
        );
        let w = Webhook::parse(br#"{"event":"calendar.brand_new","data":{}}"#).unwrap();
        assert!(
            w.event.is_typed(),
            "other calendar.* events type as Calendar"
        );
        // An end reason in a field the model does not type is recognised, whatever the key.
        let s = Summary::parse(
            br#"{"event":"bot.status_change","data":{"bot_id":"b","status":{"code":"call_ended","created_at":"x","reason":"no_attendees"}}}"#,
        )
        .unwrap();
        assert_eq!(s.detail(), "bot b call_ended · ended: no attendees left");
        let s = Summary::parse(
            br#"{"event":"bot.status_change","data":{"bot_id":"b","status":{"code":"bot_removed","created_at":"x"}}}"#,
        )
        .unwrap();
        assert_eq!(
            s.detail(),
            "bot b bot_removed",
            "a status code is not an end reason"
        );
    }

    #[test]
    fn number_formatting() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1204), "1,204");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(duration_text(42.0), "42 s");
        assert_eq!(duration_text(3600.0), "1 h 00 min");
        assert_eq!(clip("abcdef", 4), "abc…");
    }

    #[test]
    fn big_transcript_parses() {
        // ~2 MB of transcript: the summary still counts every word.
        let words: Vec<Value> = (0..40_000)
            .map(|i| serde_json::json!({"start": i as f64 * 0.5, "end": i as f64 * 0.5 + 0.4, "word": "word"}))
            .collect();
        let body = serde_json::json!({"event": "complete", "data": {"bot_id": BOT, "speakers": ["A"], "transcript": [{"speaker": "A", "words": words}]}});
        let bytes = serde_json::to_vec(&body).unwrap();
        let s = Summary::parse(&bytes).unwrap();
        assert_eq!(
            s.facts,
            vec!["1 speaker".to_string(), "40,000 words".to_string()]
        );
    }
}
