//! Golden tests: every fixture in `fixtures/events/` parses into the typed model, serializes
//! back to the same JSON, and matches its pinned `fixtures/golden/` file (typed form + summary).
//!
//! Regenerate the pins after an intended change with `MEETHOOK_UPDATE_GOLDEN=1 cargo test`.

use std::path::{Path, PathBuf};

use meethook_proto::meeting::{ApiVersion, MeetingEvent, Summary, Webhook};
use serde_json::{json, Value};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn variant(e: &MeetingEvent) -> &'static str {
    match e {
        MeetingEvent::StatusChange(_) => "StatusChange",
        MeetingEvent::Complete(_) => "Complete",
        MeetingEvent::Failed(_) => "Failed",
        MeetingEvent::TranscriptionComplete(_) => "TranscriptionComplete",
        MeetingEvent::CalendarSyncEvents(_) => "CalendarSyncEvents",
        MeetingEvent::BotCompleted(_) => "BotCompleted",
        MeetingEvent::BotFailed(_) => "BotFailed",
        MeetingEvent::ChatMessage(_) => "ChatMessage",
        MeetingEvent::Calendar { .. } => "Calendar",
        MeetingEvent::Other { .. } => "Other",
    }
}

/// What each fixture must type as (the file name says what it is).
const EXPECTED: &[(&str, &str)] = &[
    ("unknown-event", "Other"),
    ("v1-calendar-sync-events", "CalendarSyncEvents"),
    ("v1-complete", "Complete"),
    ("v1-failed", "Failed"),
    ("v1-failed-sdk-style", "Failed"),
    ("v1-status-in-call-recording", "StatusChange"),
    ("v1-status-joining-call", "StatusChange"),
    ("v1-status-meeting-error", "StatusChange"),
    ("v1-status-unknown-code", "StatusChange"),
    ("v1-transcription-complete", "TranscriptionComplete"),
    ("v2-bot-completed", "BotCompleted"),
    ("v2-bot-failed", "BotFailed"),
    ("v2-bot-failed-meet-login", "BotFailed"),
    ("v2-calendar-connection-error", "Other"),
    ("v2-calendar-event-created", "Calendar"),
    ("v2-chat-message", "ChatMessage"),
    ("v2-status-in-call-recording", "StatusChange"),
    ("v2-status-retrying", "StatusChange"),
];

fn golden_of(w: &Webhook) -> Value {
    let s = Summary::of(w);
    json!({
        "variant": variant(&w.event),
        "api": match w.api_version() { ApiVersion::V1 => "v1", ApiVersion::V2 => "v2" },
        "summary": {
            "event": s.event,
            "bot_id": s.bot_id,
            "code": s.code,
            "detail": s.detail(),
        },
        "typed": serde_json::to_value(w).unwrap(),
    })
}

#[test]
fn every_fixture_types_round_trips_and_matches_its_golden_file() {
    let update = std::env::var_os("MEETHOOK_UPDATE_GOLDEN").is_some();
    let mut names: Vec<String> = std::fs::read_dir(fixtures().join("events"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected: Vec<&str> = EXPECTED.iter().map(|e| e.0).collect();
    expected.sort();
    assert_eq!(names, expected, "every fixture has an expected variant");

    let mut failures = Vec::new();
    for (name, want) in EXPECTED {
        let body = std::fs::read(fixtures().join("events").join(format!("{name}.json"))).unwrap();
        let w = Webhook::parse(&body).unwrap_or_else(|| panic!("{name}: does not parse"));
        assert_eq!(variant(&w.event), *want, "{name}: {w:?}");

        // The streaming fast path and the generic `Deserialize` (through a `Value`) agree.
        let slow: Webhook = serde_json::from_slice(&body).unwrap();
        assert_eq!(slow, w, "{name}: fast and slow paths");
        let via_value: Webhook =
            serde_json::from_value(serde_json::from_slice::<Value>(&body).unwrap()).unwrap();
        assert_eq!(via_value, w, "{name}: from a Value");

        // Typed → JSON loses nothing: unknown fields, nulls and codes survive.
        let input: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            serde_json::to_value(&w).unwrap(),
            input,
            "{name}: round trip"
        );
        // And the typed form parses back to the same typed value.
        let again = Webhook::parse(&serde_json::to_vec(&w).unwrap()).unwrap();
        assert_eq!(again, w, "{name}: typed → json → typed");

        let got = golden_of(&w);
        let path = fixtures().join("golden").join(format!("{name}.json"));
        if update {
            let mut text = serde_json::to_string_pretty(&got).unwrap();
            text.push('\n');
            std::fs::write(&path, text).unwrap();
            continue;
        }
        let pinned: Value = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).unwrap(),
            Err(e) => {
                failures.push(format!("{name}: no golden file {} ({e})", path.display()));
                continue;
            }
        };
        if pinned != got {
            failures.push(format!(
                "{name}: differs from {}\n got: {}",
                path.display(),
                serde_json::to_string_pretty(&got).unwrap()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n(set MEETHOOK_UPDATE_GOLDEN=1 to re-pin after an intended change)",
        failures.join("\n")
    );
}

#[test]
fn summaries_of_the_fixtures() {
    let detail = |name: &str| {
        let body = std::fs::read(fixtures().join("events").join(format!("{name}.json"))).unwrap();
        Summary::parse(&body).unwrap().detail()
    };
    assert_eq!(
        detail("v1-complete"),
        "bot 8d2f4c1a… complete · 2 speakers · 4 words · mp4 expires 12:31 UTC"
    );
    assert_eq!(detail("v1-failed"), "bot 8d2f4c1a… failed BotNotAccepted");
    assert_eq!(
        detail("v1-status-in-call-recording"),
        "bot 8d2f4c1a… in_call_recording"
    );
    assert_eq!(
        detail("v2-bot-failed"),
        "bot 8d2f4c1a… failed TIMEOUT_WAITING_TO_START · No one admitted the bot within 600 seconds"
    );
    assert_eq!(detail("unknown-event"), "bot 8d2f4c1a…");
}
