//! `meethook trigger` end to end: the real binary posts scenarios to a recording handler on
//! loopback; the test checks lifecycles, headers, bodies (typed parse) and Svix signatures,
//! verified independently with the Standard Webhooks algorithm.

use std::process::Output;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use meethook_proto::meeting::{MeetingEvent, Webhook};
use meethook_testkit::{Received, TestHandler};
use sha2::Sha256;

use crate::util::{text, BIN};

const BOT: &str = "8d2f4c1a-5b6e-4f7a-9c3d-2e1f0a9b8c7d";

async fn meethook(args: &[&str]) -> Output {
    tokio::process::Command::new(BIN)
        .args(args)
        .env("MEETHOOK_LOG", "warn")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run meethook")
}

fn typed(r: &Received) -> Webhook {
    let w = Webhook::parse(&r.body).unwrap_or_else(|| panic!("not a webhook: {}", text(&r.body)));
    assert!(w.event.is_typed(), "typed parse: {}", text(&r.body));
    w
}

/// Status codes of status changes, event names of the rest.
fn lifecycle(got: &[Received]) -> Vec<String> {
    got.iter()
        .map(|r| match typed(r).event {
            MeetingEvent::StatusChange(s) => s.status.code.as_str().to_string(),
            other => other.name().to_string(),
        })
        .collect()
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Standard Webhooks verification, written independently of meethook's signer.
fn standard_webhook_check(secret: &str, r: &Received) -> Result<(), String> {
    let id = r.header("svix-id").ok_or("no svix-id")?;
    let ts = r.header("svix-timestamp").ok_or("no svix-timestamp")?;
    let sigs = r.header("svix-signature").ok_or("no svix-signature")?;
    let ts_num: i64 = ts
        .parse()
        .map_err(|_| format!("timestamp {ts} is not a number"))?;
    if (now_secs() - ts_num).abs() > 300 {
        return Err(format!("timestamp {ts} is not within 5 min of now"));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&r.body);
    let expected = format!("v1,{}", b64.encode(mac.finalize().into_bytes()));
    if sigs.split(' ').any(|s| s == expected) {
        Ok(())
    } else {
        Err(format!(
            "signature {sigs} does not verify (expected {expected}) for {}",
            text(&r.body)
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meeting_success_lifecycle_headers_and_bodies() {
    let handler = TestHandler::start().await;
    let out = meethook(&[
        "trigger",
        "meeting-success",
        "--to",
        &handler.url("/hook"),
        "--bot-id",
        BOT,
        "--api-key",
        "mb_test_key",
    ])
    .await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let got = handler.wait_delivered(8).await;
    assert_eq!(got.len(), 8, "no extra requests");
    assert_eq!(
        lifecycle(&got),
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
    for r in &got {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/hook");
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/json")
        );
        assert_eq!(r.header("user-agent").as_deref(), Some("meetingbaas/1.0"));
        assert_eq!(
            r.header("x-meeting-baas-api-key").as_deref(),
            Some("mb_test_key")
        );
        assert_eq!(r.header("svix-signature"), None, "v1 is not signed");
        assert_eq!(typed(r).event.bot_id(), Some(BOT));
        assert!(r.body.starts_with(br#"{"event":"#), "envelope order kept");
    }
    // in_call_recording carries start_time in epoch ms, close to now.
    let MeetingEvent::StatusChange(rec) = typed(&got[3]).event else {
        panic!()
    };
    let start_ms = rec.status.start_time.unwrap().as_i64().unwrap();
    assert!(
        (now_secs() * 1000 - start_ms).abs() < 10 * 60 * 1000,
        "start_time {start_ms}"
    );
    // complete carries a multi-speaker transcript.
    let MeetingEvent::Complete(c) = typed(&got[7]).event else {
        panic!()
    };
    assert!(c.speaker_count() >= 2);
    assert!(c.word_count().unwrap() >= 100);
    assert!(c.mp4.unwrap().contains("X-Amz-Expires="));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("done: 8 events delivered"), "{stdout}");
    assert!(stdout.contains("complete ·"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_events_are_svix_signed() {
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(b"meethook-trigger-test-secret-32b")
    );
    let handler = TestHandler::start().await;
    let out = meethook(&[
        "trigger",
        "v2-meeting-success",
        "--to",
        &handler.url("/v2"),
        "--signing-secret",
        &secret,
    ])
    .await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let got = handler.received();
    assert!(got.len() >= 3, "got {}", got.len());
    let mut ids = std::collections::HashSet::new();
    for r in &got {
        standard_webhook_check(&secret, r).unwrap();
        assert!(
            ids.insert(r.header("svix-id").unwrap()),
            "svix-id unique per message"
        );
        assert_eq!(r.header("x-meeting-baas-api-key"), None);
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/json")
        );
        let w = typed(r);
        assert!(w.extra.is_some(), "v2 envelope has extra");
    }
    let codes = lifecycle(&got);
    assert_eq!(codes.first().map(String::as_str), Some("joining_call"));
    assert_eq!(codes.last().map(String::as_str), Some("bot.completed"));
    let rec = got
        .iter()
        .find_map(|r| match typed(r).event {
            MeetingEvent::StatusChange(s) if s.status.code.as_str() == "in_call_recording" => {
                Some(s)
            }
            _ => None,
        })
        .expect("in_call_recording");
    let start_s = rec.status.start_time.unwrap().as_i64().unwrap();
    assert!(
        (now_secs() - start_s).abs() < 10 * 60,
        "v2 start_time is in seconds: {start_s}"
    );

    // A tampered body or another secret does not verify.
    let mut bad = got[0].clone();
    bad.body = bytes::Bytes::from(text(&bad.body).replace("joining_call", "in_call_recording"));
    assert!(standard_webhook_check(&secret, &bad).is_err());
    let other = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(b"another-secret")
    );
    assert!(standard_webhook_check(&other, &got[0]).is_err());

    // Without the whsec_ prefix the key is still base64, as Svix's libraries read it: the
    // note says so and the signatures verify with the prefixed secret.
    let bare = secret.strip_prefix("whsec_").unwrap();
    let handler = TestHandler::start().await;
    let url = handler.url("/v2");
    let args = [
        "trigger",
        "v2-meeting-success",
        "--to",
        &url,
        "--signing-secret",
    ];
    let out = meethook(&[&args[..], &[bare]].concat()).await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no whsec_ prefix"),
        "{}",
        text(&out.stderr)
    );
    for r in &handler.received() {
        standard_webhook_check(&secret, r).unwrap();
    }
    // Not base64 at all: refused, nothing sent.
    let handler = TestHandler::start().await;
    let url = handler.url("/v2");
    let args = [
        "trigger",
        "v2-meeting-success",
        "--to",
        &url,
        "--signing-secret",
    ];
    let out = meethook(&[&args[..], &["my secret!"]].concat()).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("expected whsec_"),
        "{}",
        text(&out.stderr)
    );
    assert!(handler.received().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_ends_right_and_every_body_types() {
    let handler = TestHandler::start().await;
    let ends = [
        ("meeting-success", "complete", None),
        ("bot-rejected", "failed", Some("BotNotAccepted")),
        (
            "waiting-room-timeout",
            "failed",
            Some("TimeoutWaitingToStart"),
        ),
        ("invalid-meeting-url", "failed", Some("InvalidMeetingUrl")),
        ("bot-removed", "failed", Some("BotRemoved")),
        ("meeting-error", "failed", Some("InternalError")),
        ("calendar-sync", "calendar.sync_events", None),
        ("v2-meeting-success", "bot.completed", None),
        ("v2-bot-failed", "bot.failed", Some("BOT_NOT_ACCEPTED")),
        ("cannot-join-meeting", "failed", Some("CannotJoinMeeting")),
        ("v2-retrying-then-success", "bot.completed", None),
        (
            "v2-retries-exhausted",
            "bot.failed",
            Some("CANNOT_JOIN_MEETING"),
        ),
        ("v2-calendar", "calendar.event_cancelled", None),
        ("v2-callback-completed", "bot.completed", None),
    ];
    let list = meethook(&["trigger", "--list"]).await;
    let listed = text(&list.stdout);
    for (name, _, _) in ends {
        assert!(listed.contains(name), "{name} in --list");
        let path = format!("/s/{name}");
        let out = meethook(&["trigger", name, "--to", &handler.url(&path)]).await;
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
    }
    let all = handler.received();
    for (name, last, code) in ends {
        let path = format!("/s/{name}");
        let got: Vec<Received> = all.iter().filter(|r| r.path == path).cloned().collect();
        assert!(!got.is_empty(), "{name}");
        let hooks: Vec<Webhook> = got.iter().map(typed).collect();
        let end = hooks.last().unwrap();
        assert_eq!(end.event.name(), last, "{name}");
        let error = match &end.event {
            MeetingEvent::Failed(f) => Some(f.error.as_str()),
            MeetingEvent::BotFailed(f) => Some(f.error_code.as_str()),
            _ => None,
        };
        assert_eq!(error, code, "{name}");
        // One bot per run: every bot event names the same bot.
        let bots: std::collections::HashSet<_> =
            hooks.iter().filter_map(|w| w.event.bot_id()).collect();
        assert!(bots.len() <= 1, "{name}: {bots:?}");
    }
    // meeting-error carries the error details on its meeting_error status.
    let me: Vec<Received> = all
        .iter()
        .filter(|r| r.path == "/s/meeting-error")
        .cloned()
        .collect();
    let MeetingEvent::StatusChange(s) = typed(&me[me.len() - 2]).event else {
        panic!()
    };
    assert_eq!(s.status.code.as_str(), "meeting_error");
    assert!(matches!(s.status.error_message, Some(Some(_))));
    assert!(s.status.error_type.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_unknown_scenario() {
    let out = meethook(&["trigger", "--list"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for name in [
        "meeting-success",
        "bot-rejected",
        "waiting-room-timeout",
        "invalid-meeting-url",
        "bot-removed",
        "meeting-error",
        "v2-meeting-success",
        "v2-bot-failed",
        "cannot-join-meeting",
        "v2-retrying-then-success",
        "v2-retries-exhausted",
        "v2-calendar",
        "v2-callback-completed",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} listed:\n{stdout}"));
        assert!(
            line.len() > name.len() + 20,
            "{name} has a description: {line}"
        );
    }

    let out = meethook(&["trigger", "no-such-meeting", "--to", "http://127.0.0.1:9/x"]).await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("no-such-meeting"), "{stderr}");
    assert!(
        stderr.contains("meeting-success") && stderr.contains("bot-rejected"),
        "{stderr}"
    );

    let out = meethook(&["trigger", "meeting-success"]).await;
    assert!(!out.status.success(), "--to is required");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_2xx_and_unreachable_exit_1() {
    let handler = TestHandler::start().await;
    handler.script(&[200, 401]);
    let out = meethook(&["trigger", "bot-rejected", "--to", &handler.url("/hook")]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("401") && stderr.contains("2/4"), "{stderr}");
    assert_eq!(handler.received().len(), 2, "stops at the first refusal");

    // A port nothing listens on (bound, then closed).
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/hook");
    let out = meethook(&["trigger", "meeting-success", "--to", &url]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&format!("cannot reach {url}")), "{stderr}");
    assert!(stderr.contains("is the relay/handler running?"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_reach_the_wire() {
    let handler = TestHandler::start().await;
    let out = meethook(&[
        "trigger",
        "meeting-error",
        "--to",
        &handler.url("/hook"),
        "--override",
        "data.status.error_message=the tab crashed",
        "--override",
        "data.status.error_type=\"PageCrash\"",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got = handler.received();
    let errors: Vec<(String, String)> = got
        .iter()
        .filter_map(|r| match typed(r).event {
            MeetingEvent::StatusChange(s) => {
                Some((s.status.error_message.flatten()?, s.status.error_type?))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        errors,
        [("the tab crashed".to_string(), "PageCrash".to_string())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_url_is_stored_not_delivered() {
    let relay = meethook_testkit::TestRelay::start().await;
    let (ch, _) = relay.channel(None).await;
    let out = meethook(&["trigger", "bot-rejected", "--to", &relay.hook(&ch)]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("done: 4 events stored by the relay (seq 1–4)"),
        "{stdout}"
    );
    assert!(!stdout.contains("delivered"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_bot_callback_carries_x_mb_secret_and_no_svix_headers() {
    let handler = TestHandler::start().await;
    let out = meethook(&[
        "trigger",
        "v2-callback-completed",
        "--to",
        &handler.url("/cb"),
        "--callback-secret",
        "mb-raw-secret-1",
    ])
    .await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let got = handler.received();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].header("x-mb-secret").as_deref(),
        Some("mb-raw-secret-1")
    );
    assert_eq!(got[0].header("svix-id"), None);
    assert_eq!(got[0].header("svix-signature"), None);
    assert_eq!(typed(&got[0]).event.name(), "bot.completed");
    // Without --callback-secret a random one is sent and printed.
    let handler = TestHandler::start().await;
    let out = meethook(&[
        "trigger",
        "v2-callback-completed",
        "--to",
        &handler.url("/cb"),
    ])
    .await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let sent = handler.received()[0].header("x-mb-secret").unwrap();
    assert!(text(&out.stdout).contains(&format!("x-mb-secret: {sent}")));
}
