//! `meethook trigger`: sends a realistic Meeting BaaS event sequence to a URL, like
//! `stripe trigger`.
//!
//! Scenarios are JSON files in `crates/cli/scenarios/`, embedded in the binary:
//! `{"description", "api": "v1"|"v2", "steps": [{"delay_ms", "body"}]}`. Strings in a body may
//! hold placeholders, filled just before sending:
//! - `{{bot_id}}`: `--bot-id`, or a random UUID v4 per run;
//! - `{{uuid}}`: a fresh random UUID v4 at each occurrence;
//! - `{{iso}}` (`2025-06-11T10:00:03.120Z`), `{{iso_s}}` (`2025-06-11T10:00:03Z`),
//!   `{{amz_date}}` (`20250611T100003Z`), `{{epoch_ms}}`, `{{epoch_s}}`: the step's time, with an
//!   optional offset (`{{iso_s-62s}}`, `{{epoch_ms+500ms}}`). A string that is only an epoch
//!   placeholder becomes a JSON number.
//!
//! A step's time is the scenario's origin plus the step delays so far; the origin is now with
//! `--pace realtime` (events are sent at those times) and, with `--pace fast`, the timeline ends
//! now (as if the meeting just happened). Each body is serialized once and those exact bytes are
//! sent (and signed, for v2 with `--signing-secret`).
//!
//! # Layout
//! - `scenarios`: the embedded scenario files and their shape.
//! - `template`: the placeholders above, filled in a body's strings.
//! - `body`: `--override`, `--artifacts-url` and the bytes each event sends.

use std::time::Duration;

use anyhow::{anyhow, bail};
use bytes::Bytes;
use clap::builder::PossibleValuesParser;
use http::Method;
use meethook_proto::clock::now_ms;
use meethook_proto::meeting::Summary;
use tokio_util::sync::CancellationToken;

use crate::http_client::send;

mod body;
mod scenarios;
mod template;

use body::{parse_override, prepare, Override};
use scenarios::{load, Api, Delivery, SCENARIOS};

/// `User-Agent` of v1 events (the bot's own).
const V1_USER_AGENT: &str = "meetingbaas/1.0";
/// `User-Agent` of v2 events (Svix delivers them).
const V2_USER_AGENT: &str = "Svix-Webhooks/1.0 (meethook trigger)";

/// `User-Agent` of per-bot callbacks (sent by the platform itself, not Svix).
const CALLBACK_USER_AGENT: &str = "meetingbaas-callback/1.0 (meethook trigger)";

/// `meethook trigger` arguments.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  meethook trigger --list
  meethook trigger meeting-success --to http://127.0.0.1:8787/hooks/ch_abc --api-key mb_test
  meethook trigger v2-meeting-success --to http://localhost:3000/webhooks --signing-secret whsec_…
  meethook trigger meeting-error --to http://localhost:3000/hook \\
      --override data.status.error_message='\"tab crashed\"' --pace realtime")]
pub struct Args {
    /// Scenario to send (`--list` describes them).
    #[arg(value_name = "SCENARIO", value_parser = scenario_names(), required_unless_present_any = ["list", "emit_dir"])]
    scenario: Option<String>,
    /// Where to POST the events: a relay webhook URL or your handler.
    #[arg(long, value_name = "URL", required_unless_present_any = ["list", "emit_dir"])]
    to: Option<String>,
    /// Write the bodies instead of sending them: `DIR/{api}-{scenario}-{NN}.json`, for SCENARIO
    /// or, without one, every scenario (what scripts/test-sdk-types checks against the SDK).
    #[arg(long, value_name = "DIR", hide = true, conflicts_with_all = ["to", "list"])]
    emit_dir: Option<std::path::PathBuf>,
    /// List the scenarios with a one-line description, and exit.
    #[arg(long, exclusive = true)]
    list: bool,
    /// Bot id put in the events (default: a random UUID v4).
    #[arg(long, value_name = "UUID", value_parser = parse_uuid)]
    bot_id: Option<String>,
    /// v1: send this as `x-meeting-baas-api-key` (what a relay channel's --sender-secret checks).
    #[arg(long, value_name = "KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// v2: sign each event with this `whsec_…` secret (svix-id, svix-timestamp, svix-signature).
    #[arg(long, value_name = "SECRET", hide_env_values = true)]
    signing_secret: Option<String>,
    /// Per-bot callback scenarios: send this as `x-mb-secret` (default: a random one, printed).
    #[arg(long, value_name = "SECRET", hide_env_values = true)]
    callback_secret: Option<String>,
    /// `fast` sends back to back; `realtime` waits each step's delay, like a real bot.
    #[arg(long, value_enum, default_value_t = Pace::Fast)]
    pace: Pace,
    /// Set a JSON path in every event that has it (`data.status.error_message="x"`); when no
    /// event has it, add it where the parent object exists. VALUE is JSON, else a string.
    #[arg(long = "override", value_name = "PATH=VALUE", value_parser = parse_override)]
    overrides: Vec<Override>,
    /// Point the recording and transcript links at this base URL (a file server you run,
    /// e.g. http://127.0.0.1:9000) instead of Meeting BaaS's S3 hosts, to try
    /// `listen --save-recordings` offline: `…amazonaws.com/BOT/video.mp4?…` becomes
    /// `URL/BOT/video.mp4?…`.
    #[arg(long, value_name = "URL")]
    artifacts_url: Option<String>,
}

/// How fast steps follow each other.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Pace {
    /// Wait each step's delay.
    Realtime,
    /// No waiting.
    Fast,
}

fn scenario_names() -> PossibleValuesParser {
    PossibleValuesParser::new(SCENARIOS.iter().map(|(name, _)| *name))
}

/// clap parser for `--bot-id`: any UUID form, printed hyphenated and lower-case.
fn parse_uuid(s: &str) -> Result<String, String> {
    uuid::Uuid::try_parse(s)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| "expected a UUID like 8d2f4c1a-5b6e-4f7a-9c3d-2e1f0a9b8c7d".into())
}

/// A Svix-style message id: `msg_` + 27 alphanumerics.
fn new_msg_id() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    format!("msg_{}", Alphanumeric.sample_string(&mut rand::rng(), 27))
}

/// `1 event`, `8 events`.
fn events_word(n: usize) -> String {
    format!("{n} event{}", if n == 1 { "" } else { "s" })
}

fn print_list() -> anyhow::Result<()> {
    println!("Scenarios (meethook trigger SCENARIO --to URL):");
    for (name, _) in SCENARIOS {
        let s = load(name)?;
        let n = s.steps.len();
        let events = if n == 1 { "event " } else { "events" };
        println!("  {name:<25} {n:>2} {events}  {}", s.description);
    }
    Ok(())
}

/// `--emit-dir`: writes the bodies of one or every scenario, rendered as if sent now.
fn emit(dir: &std::path::Path, only: Option<&str>, bot_id: Option<&str>) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow!("cannot create --emit-dir {}: {e}", dir.display()))?;
    let bot_id = bot_id
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut files = 0;
    for (name, _) in SCENARIOS
        .iter()
        .filter(|(n, _)| only.is_none_or(|o| o == *n))
    {
        let scenario = load(name)?;
        let api = if scenario.api == Api::V1 { "v1" } else { "v2" };
        let total_ms: u64 = scenario.steps.iter().map(|s| s.delay_ms).sum();
        let (events, _) = prepare(scenario, &bot_id, now_ms() - total_ms as i64, &[], None)?;
        for (i, ev) in events.iter().enumerate() {
            let path = dir.join(format!("{api}-{name}-{:02}.json", i + 1));
            std::fs::write(&path, &ev.body)
                .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
            files += 1;
        }
    }
    println!("wrote {files} bodies to {}", dir.display());
    Ok(())
}

/// Runs `meethook trigger`.
pub async fn run(mut args: Args, shutdown: CancellationToken) -> anyhow::Result<()> {
    if args.list {
        return print_list();
    }
    if let Some(dir) = &args.emit_dir {
        return emit(dir, args.scenario.as_deref(), args.bot_id.as_deref());
    }
    let (Some(name), Some(to)) = (args.scenario.as_deref(), args.to.as_deref()) else {
        bail!("give a SCENARIO and --to URL, or --list");
    };
    if !(to.starts_with("http://") || to.starts_with("https://")) {
        bail!("--to must be an http:// or https:// URL, got `{to}`");
    }
    let scenario = load(name)?;
    let api = scenario.api;
    let callback_secret = (scenario.delivery == Delivery::Callback).then(|| {
        args.callback_secret.clone().unwrap_or_else(|| {
            use rand::distr::{Alphanumeric, SampleString};
            let s = Alphanumeric.sample_string(&mut rand::rng(), 32);
            println!("x-mb-secret: {s}  (pass --callback-secret to choose it)");
            s
        })
    });
    if callback_secret.is_some() {
        if args.signing_secret.is_some() {
            eprintln!("note: `{name}` is a per-bot callback: it carries x-mb-secret, not a Svix signature");
        }
    } else if let Some(secret) = &args.signing_secret {
        args.signing_secret = Some(super::signing_secret("--signing-secret", secret)?);
        if api == Api::V1 {
            eprintln!(
                "note: --signing-secret signs v2 events only; `{name}` is v1 (use --api-key)"
            );
        }
    } else if api == Api::V2 {
        eprintln!("note: sending v2 events unsigned; pass --signing-secret whsec_… to sign them");
    }
    if args.api_key.is_some() && api == Api::V2 {
        eprintln!(
            "note: --api-key applies to v1 events only; `{name}` is v2 (use --signing-secret)"
        );
    }
    let bot_id = args
        .bot_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let total_ms: u64 = scenario.steps.iter().map(|s| s.delay_ms).sum();
    let origin_ms = match args.pace {
        Pace::Realtime => now_ms(),
        Pace::Fast => now_ms() - total_ms as i64,
    };
    let (events, counts) = prepare(
        scenario,
        &bot_id,
        origin_ms,
        &args.overrides,
        args.artifacts_url.as_deref(),
    )?;
    for (o, n) in args.overrides.iter().zip(counts) {
        println!(
            "override {} in {n} event{}",
            o.path.join("."),
            if n == 1 { "" } else { "s" }
        );
    }
    let n = events.len();
    let pace = match args.pace {
        Pace::Realtime => format!("realtime, {:.1} s", total_ms as f64 / 1e3),
        Pace::Fast => "fast".to_string(),
    };
    let api_name = if api == Api::V1 { "v1" } else { "v2" };
    println!(
        "{name} → {to}  (bot {bot_id}, {}, {api_name}, {pace})",
        events_word(n)
    );

    let start = tokio::time::Instant::now();
    // A relay answers `{"seq": N}`: then the events are stored, not yet delivered.
    let mut seqs = Vec::with_capacity(n);
    for (i, ev) in events.into_iter().enumerate() {
        let step = i + 1;
        if args.pace == Pace::Realtime {
            let due = start + Duration::from_millis(ev.at_ms);
            let wait = due.saturating_duration_since(tokio::time::Instant::now());
            if wait >= Duration::from_secs(5) {
                println!("      … {:.1} s", wait.as_secs_f64());
            }
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                _ = shutdown.cancelled() => bail!("interrupted: sent {} of {n} events", step - 1),
            }
        } else if shutdown.is_cancelled() {
            bail!("interrupted: sent {} of {n} events", step - 1);
        }

        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        match api {
            Api::V1 => {
                headers.push(("user-agent".into(), V1_USER_AGENT.into()));
                if let Some(k) = &args.api_key {
                    headers.push(("x-meeting-baas-api-key".into(), k.clone()));
                }
            }
            Api::V2 if callback_secret.is_some() => {
                headers.push(("user-agent".into(), CALLBACK_USER_AGENT.into()));
                if let Some(secret) = &callback_secret {
                    headers.push(("x-mb-secret".into(), secret.clone()));
                }
            }
            Api::V2 => {
                headers.push(("user-agent".into(), V2_USER_AGENT.into()));
                let id = new_msg_id();
                let ts = (now_ms() / 1000).to_string();
                let sig = match &args.signing_secret {
                    Some(secret) => Some(
                        meethook_proto::signature::sign(secret, &id, &ts, &ev.body)
                            .ok_or_else(|| anyhow!("--signing-secret: cannot sign"))?,
                    ),
                    None => None,
                };
                headers.push(("svix-id".into(), id));
                headers.push(("svix-timestamp".into(), ts));
                if let Some(sig) = sig {
                    headers.push(("svix-signature".into(), format!("v1,{sig}")));
                }
            }
        }

        let summary = Summary::parse(&ev.body);
        let event = summary
            .as_ref()
            .map(|s| s.event.clone())
            .unwrap_or_default();
        let detail = summary.map(|s| s.detail()).unwrap_or_default();
        let sent = std::time::Instant::now();
        let answer = match send(Method::POST, to, None, &headers, Bytes::from(ev.body)).await {
            Ok(a) => a,
            Err(e) => {
                let msg = format!("{e:#}");
                if let Some(rest) = msg.strip_prefix(&format!("cannot reach {to}: ")) {
                    let cause = rest.split(" (is `").next().unwrap_or(rest);
                    bail!("cannot reach {to}: {cause}; is the relay/handler running?");
                }
                bail!("event {step}/{n} ({event}): {msg}");
            }
        };
        let ms = sent.elapsed().as_secs_f64() * 1e3;
        let seq = answer.json().get("seq").and_then(|s| s.as_u64());
        seqs.extend(seq);
        println!(
            "  {step:>2}/{n} {event:<20} {detail:<40} → {}{} ({ms:.1} ms)",
            answer.status,
            seq.map(|s| format!(" seq {s}")).unwrap_or_default()
        );
        if !(200..300).contains(&answer.status) {
            let why = answer.error_message();
            let mut why = why.split_whitespace().collect::<Vec<_>>().join(" ");
            if why.chars().count() > 160 {
                why = why.chars().take(160).collect::<String>() + "…";
            }
            let left = n - step;
            bail!(
                "event {step}/{n} ({event}) got HTTP {} from {to}{}{}; stopped ({left} event{} not sent)",
                answer.status,
                if why.is_empty() { "" } else { ": " },
                why,
                if left == 1 { "" } else { "s" }
            );
        }
    }
    match (seqs.first(), seqs.last()) {
        (Some(first), Some(last)) if seqs.len() == n => println!(
            "done: {} stored by the relay (seq {first}–{last}); its listeners deliver them",
            events_word(n)
        ),
        _ => println!("done: {} delivered", events_word(n)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use meethook_proto::meeting::{ApiVersion, MeetingEvent, Webhook};

    const BOT: &str = "8d2f4c1a-5b6e-4f7a-9c3d-2e1f0a9b8c7d";

    fn webhooks(name: &str) -> Vec<Webhook> {
        let (events, _) = prepare(load(name).unwrap(), BOT, 1_749_636_000_000, &[], None).unwrap();
        events
            .iter()
            .map(|e| Webhook::parse(&e.body).unwrap_or_else(|| panic!("{name}: not a webhook")))
            .collect()
    }

    fn codes(ws: &[Webhook]) -> Vec<String> {
        ws.iter()
            .map(|w| match &w.event {
                MeetingEvent::StatusChange(s) => s.status.code.as_str().to_string(),
                other => other.name().to_string(),
            })
            .collect()
    }

    #[test]
    fn every_scenario_loads_renders_and_types() {
        for (name, _) in SCENARIOS {
            let s = load(name).unwrap();
            assert!(!s.description.is_empty(), "{name}");
            let (events, _) = prepare(s, BOT, now_ms(), &[], None).unwrap();
            assert!(!events.is_empty(), "{name}");
            for e in &events {
                let text = std::str::from_utf8(&e.body).unwrap();
                assert!(!text.contains("{{"), "{name}: placeholder left in {text}");
                assert!(
                    text.starts_with(r#"{"event":"#),
                    "{name}: key order kept: {text}"
                );
                let w = Webhook::parse(&e.body).unwrap();
                assert!(w.event.is_typed(), "{name}: untyped {text}");
                let want = if s_api(name) == Api::V1 {
                    ApiVersion::V1
                } else {
                    ApiVersion::V2
                };
                assert_eq!(w.api_version(), want, "{name}: {text}");
                // The typed model keeps everything: typed → JSON equals the body.
                let body: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
                assert_eq!(serde_json::to_value(&w).unwrap(), body, "{name}");
            }
        }
    }

    fn s_api(name: &str) -> Api {
        load(name).unwrap().api
    }

    #[test]
    fn lifecycles() {
        assert_eq!(
            codes(&webhooks("meeting-success")),
            [
                "joining_call",
                "in_waiting_room",
                "in_call_not_recording",
                "in_call_recording",
                "recording_paused",
                "recording_resumed",
                "call_ended",
                "complete"
            ]
        );
        for (name, code, error) in [
            ("bot-rejected", "bot_rejected", "BotNotAccepted"),
            (
                "waiting-room-timeout",
                "waiting_room_timeout",
                "TimeoutWaitingToStart",
            ),
            (
                "invalid-meeting-url",
                "invalid_meeting_url",
                "InvalidMeetingUrl",
            ),
            ("bot-removed", "bot_removed", "BotRemoved"),
            ("meeting-error", "meeting_error", "InternalError"),
        ] {
            let ws = webhooks(name);
            let c = codes(&ws);
            assert_eq!(c[0], "joining_call", "{name}");
            assert_eq!(c[c.len() - 2], code, "{name}");
            let MeetingEvent::Failed(f) = &ws.last().unwrap().event else {
                panic!("{name} ends in failed");
            };
            assert_eq!(f.error, error, "{name}");
            assert_eq!(f.bot_id, BOT);
        }
        let ws = webhooks("meeting-error");
        let MeetingEvent::StatusChange(s) = &ws[ws.len() - 2].event else {
            panic!()
        };
        assert!(matches!(s.status.error_message, Some(Some(_))));
        assert!(s.status.error_type.is_some());

        let ws = webhooks("v2-meeting-success");
        assert!(matches!(
            ws.last().unwrap().event,
            MeetingEvent::BotCompleted(_)
        ));
        let ws = webhooks("v2-bot-failed");
        let MeetingEvent::BotFailed(f) = &ws.last().unwrap().event else {
            panic!()
        };
        assert_eq!(f.error_code, "BOT_NOT_ACCEPTED");
    }

    fn retries(ws: &[Webhook]) -> Vec<(u32, u32)> {
        ws.iter()
            .filter_map(|w| match &w.event {
                MeetingEvent::StatusChange(s) if s.status.code.as_str() == "retrying" => {
                    Some((s.status.attempt?, s.status.max?))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn new_scenarios_tell_their_story() {
        let ws = webhooks("v2-retrying-then-success");
        assert_eq!(retries(&ws), [(1, 3), (2, 3)]);
        assert!(matches!(
            ws.last().unwrap().event,
            MeetingEvent::BotCompleted(_)
        ));
        let lines: Vec<String> = ws.iter().map(|w| Summary::of(w).detail()).collect();
        assert!(
            lines.iter().any(|l| l.ends_with("retrying 2/3")),
            "{lines:?}"
        );
        let ws = webhooks("v2-retries-exhausted");
        assert_eq!(retries(&ws), [(1, 3), (2, 3), (3, 3)]);
        let MeetingEvent::BotFailed(f) = &ws.last().unwrap().event else {
            panic!()
        };
        assert_eq!(f.error_code, "CANNOT_JOIN_MEETING");
        let names: Vec<String> = webhooks("v2-calendar")
            .iter()
            .map(|w| w.event.name().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "calendar.connection_created",
                "calendar.events_synced",
                "calendar.event_created",
                "calendar.event_updated",
                "calendar.event_cancelled"
            ]
        );
        assert_eq!(
            load("v2-callback-completed").unwrap().delivery,
            Delivery::Callback
        );
        let ws = webhooks("cannot-join-meeting");
        let MeetingEvent::Failed(f) = &ws.last().unwrap().event else {
            panic!()
        };
        assert_eq!(f.error, "CannotJoinMeeting");
    }

    /// Events later than SDK 6.0.5 (which `scripts/test-sdk-types` cannot check with tsc),
    /// held against the field lists in the Meeting BaaS notes: `bot.chat_message` (6.1.0) and
    /// the `retrying` status (6.2.1). Plus the rule for every v2 body: an optional field is
    /// absent, never null.
    #[test]
    fn v2_bodies_match_the_field_lists_of_later_sdks() {
        use serde_json::Value;
        fn keys(v: &Value) -> Vec<&str> {
            let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
            k.sort_unstable();
            k
        }
        fn no_null_optionals(v: &Value, at: &str) {
            match v {
                Value::Object(m) => {
                    for (k, x) in m {
                        // Optional in the SDK: absent, never null.
                        let optional = matches!(
                            k.as_str(),
                            "display_name"
                                | "profile_picture"
                                | "start_time"
                                | "error_message"
                                | "attempt"
                                | "max"
                        );
                        assert!(!(optional && x.is_null()), "{at}.{k} is null");
                        no_null_optionals(x, k);
                    }
                }
                Value::Array(xs) => xs.iter().for_each(|x| no_null_optionals(x, at)),
                _ => {}
            }
        }
        let (mut chats, mut retrying) = (0, 0);
        for (name, _) in SCENARIOS {
            if s_api(name) != Api::V2 {
                continue;
            }
            let (events, _) = prepare(load(name).unwrap(), BOT, now_ms(), &[], None).unwrap();
            for e in &events {
                let v: Value = serde_json::from_slice(&e.body).unwrap();
                no_null_optionals(&v, "");
                let data = &v["data"];
                match v["event"].as_str().unwrap() {
                    "bot.chat_message" => {
                        chats += 1;
                        assert_eq!(keys(&v), ["data", "event", "extra"], "{name}");
                        assert_eq!(
                            keys(data),
                            [
                                "bot_id",
                                "event_id",
                                "message_id",
                                "sender_id",
                                "sender_name",
                                "sent_at",
                                "text"
                            ],
                            "{name}"
                        );
                        assert!(
                            data["sender_id"].is_u64() || data["sender_id"].is_null(),
                            "{name}"
                        );
                        assert!(data["event_id"].is_string() || data["event_id"].is_null());
                    }
                    "bot.status_change" if data["status"]["code"] == "retrying" => {
                        retrying += 1;
                        let st = &data["status"];
                        assert_eq!(keys(st), ["attempt", "code", "created_at", "max"], "{name}");
                        let (a, m) = (st["attempt"].as_u64().unwrap(), st["max"].as_u64().unwrap());
                        assert!(a >= 1 && a <= m, "{name}: attempt {a} of {m}");
                    }
                    "bot.completed" => {
                        let p = data["transcription_provider"].as_str().unwrap();
                        assert!(meethook_proto::meeting::is_known_provider(p), "{name}: {p}");
                    }
                    _ => {}
                }
            }
        }
        assert!(chats >= 1 && retrying >= 5, "the later events are covered");
    }

    #[test]
    fn complete_has_a_real_transcript_and_a_live_mp4_link() {
        let ws = webhooks("meeting-success");
        let MeetingEvent::Complete(c) = &ws.last().unwrap().event else {
            panic!()
        };
        assert!(c.speaker_count() >= 2);
        assert!(c.word_count().unwrap() >= 100);
        let detail = Summary::of(ws.last().unwrap()).detail();
        assert!(detail.contains("mp4 expires"), "{detail}");
        // Timestamps follow the step delays: in_call_recording's start_time is its own time.
        let MeetingEvent::StatusChange(rec) = &ws[3].event else {
            panic!()
        };
        let start = rec.status.start_time.as_ref().unwrap().as_i64().unwrap();
        assert_eq!(start, 1_749_636_000_000 + 2400 + 9000 + 1800);
        assert_eq!(
            rec.status.created_at.as_deref(),
            Some("2025-06-11T10:00:13.200Z")
        );
    }

    #[test]
    fn uuids() {
        assert!(parse_uuid("not-a-uuid").is_err());
        assert_eq!(parse_uuid(&BOT.to_uppercase()).unwrap(), BOT);
        let m = new_msg_id();
        assert!(m.starts_with("msg_") && m.len() == 31, "{m}");
    }
}
