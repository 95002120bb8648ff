//! `meethook events` and `meethook replay`, run as the real binary against a journal filled
//! by a real relay and daemon.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use meethook_daemon::journal::{Attempt, Journal, Query, State};
use meethook_testkit::{post, tempdir, Setup, TestDaemon, TestHandler, TestRelay, PATIENCE};
use sha2::Sha256;

use crate::util::{is_about, json_lines, meethook, meethook_bytes, Listen};

const BOT_A: &str = "8d2f4c1a-5b6e-4f7a-9c3d-2e1f0a9b8c7d";
const BOT_B: &str = "b0b0b0b0-2222-4333-8444-555555555555";
/// What the sender signed with originally.
const SENDER_SECRET: &str = "whsec_c2VuZGVyLXNlY3JldC1vZi10aGUtb3JpZ2luYWwtc2VuZGVy";
/// What the local handler verifies with.
const LOCAL_SECRET: &str = "whsec_bG9jYWwtaGFuZGxlci1zZWNyZXQtZm9yLXJlcGxheXM=";
const N: u64 = 20;

fn sign(secret: &str, id: &str, ts: &str, body: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    b64.encode(mac.finalize().into_bytes())
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn bot_of(i: u64) -> &'static str {
    if matches!(i % 4, 0) {
        BOT_B
    } else {
        BOT_A
    }
}

/// Event `i`: Meeting BaaS v1 status changes (a `complete` every 10th), one plain-text body;
/// every third one signed (yesterday) by the sender, the others with an API key. All carry
/// a repeated header.
fn event(i: u64) -> (Vec<(String, String)>, Vec<u8>) {
    let codes = ["joining_call", "in_waiting_room", "in_call_recording"];
    let body = if i == 7 {
        "plain text, not JSON".to_string()
    } else if matches!(i % 10, 0) {
        format!(
            r#"{{"event":"complete","data":{{"bot_id":"{}","mp4":"https://s3.example/x.mp4","speakers":["Ana","Bo"]}}}}"#,
            bot_of(i)
        )
    } else {
        format!(
            r#"{{"event":"bot.status_change","data":{{"bot_id":"{}","status":{{"code":"{}","created_at":"2025-06-11T10:00:{i:02}.000Z"}}}}}}"#,
            bot_of(i),
            codes[i as usize % 3]
        )
    };
    let mut h: Vec<(String, String)> = vec![
        (
            "content-type".into(),
            if i == 7 {
                "text/plain"
            } else {
                "application/json"
            }
            .into(),
        ),
        ("x-multi".into(), "a".into()),
        ("x-multi".into(), "b".into()),
    ];
    if matches!(i % 3, 0) {
        let (id, ts) = (format!("msg_orig_{i}"), (now_secs() - 86_400).to_string());
        let sig = sign(SENDER_SECRET, &id, &ts, body.as_bytes());
        h.push(("svix-id".into(), id));
        h.push(("svix-timestamp".into(), ts));
        h.push(("svix-signature".into(), format!("v1,{sig}")));
    } else {
        h.push(("x-meeting-baas-api-key".into(), "mb_key".into()));
    }
    (h, body.into_bytes())
}

/// Sends the 20 events through a relay and a daemon journaling into `data`; waits until the
/// journal has them all delivered. Returns the channel id.
async fn fill_journal(data: &Path) -> String {
    let s = Setup::start().await;
    let daemon = s.daemon_with("/hook", |c| c.data = data.to_path_buf());
    let (relay, ch, _, handler, _dir) = s.into_parts();
    for i in 1..=N {
        let (h, body) = event(i);
        let h: Vec<(&str, &str)> = h.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let r = post(&format!("{}/meetings?i={i}", relay.hook(&ch)), &h, body).await;
        assert_eq!((r.status, r.seq()), (200, Some(i)));
    }
    handler.wait_delivered(N as usize).await;
    let journal = Journal::open(data).unwrap();
    let delivered = Query {
        channel: Some(ch.clone()),
        state: Some(State::Delivered),
        ..Query::default()
    };
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while journal.count(&delivered).unwrap() < N {
        assert!(
            tokio::time::Instant::now() < deadline,
            "journal never recorded the deliveries"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    daemon.stop().await.unwrap();
    relay.stop().await;
    ch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_show_read_the_journal() {
    let dir = tempdir();
    let data = dir.path().to_str().unwrap();
    let ch = fill_journal(dir.path()).await;

    let (code, out, err) = meethook(&["events", "list", "--data", data]).await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1 + N as usize, "{out}");
    assert!(lines[0].contains("SEQ") && lines[0].contains("SUMMARY"));
    assert!(
        !lines[0].contains("CHANNEL"),
        "one channel: no channel column"
    );
    assert!(
        lines[2].contains("bot.status_change")
            && lines[2].contains("8d2f4c1a")
            && lines[2].contains("in_call_recording")
            && lines[2].contains("delivered")
            && lines[2].contains("200"),
        "{}",
        lines[2]
    );
    assert!(lines[7].contains("POST /meetings?i=7"), "{}", lines[7]);

    // --json and --bot (full id or its first characters), --event.
    for bot in [BOT_B, "b0b0b0b0"] {
        let (code, out, _) =
            meethook(&["events", "list", "--data", data, "--json", "--bot", bot]).await;
        assert_eq!(code, 0);
        let v = json_lines(&out);
        let seqs: Vec<u64> = v.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, vec![4, 8, 12, 16, 20]);
        assert!(v
            .iter()
            .all(|l| l["bot_id"] == BOT_B && l["channel"] == ch.as_str()));
        assert_eq!(v[4]["event"], "complete");
        assert_eq!(v[0]["state"], "delivered");
    }
    let (_, out, _) = meethook(&[
        "events", "list", "--data", data, "--json", "--event", "complete",
    ])
    .await;
    let seqs: Vec<u64> = json_lines(&out)
        .iter()
        .map(|l| l["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![10, 20]);
    // --where (a JSON path), --header, --text; the same filters as the inspector's.
    let list = |args: &'static [&'static str]| {
        let mut a = vec!["events", "list", "--data", data, "--json"];
        a.extend_from_slice(args);
        async move {
            let (code, out, err) = meethook(&a).await;
            assert_eq!(code, 0, "{args:?}: {err}");
            json_lines(&out)
                .iter()
                .map(|l| l["seq"].as_u64().unwrap())
                .collect::<Vec<u64>>()
        }
    };
    assert_eq!(
        list(&["--where", "data.status.code = in_call_recording"]).await,
        vec![2, 5, 8, 11, 14, 17]
    );
    assert_eq!(list(&["--where", "data.speakers ~ bo"]).await, vec![10, 20]);
    assert_eq!(list(&["--header", "svix-id:MSG_ORIG_9"]).await, vec![9]);
    assert_eq!(list(&["--text", "NOT json"]).await, vec![7]);
    assert_eq!(
        list(&["--text", "in_waiting", "--bot", BOT_B]).await,
        vec![4, 16]
    );
    let (code, _, err) = meethook(&["events", "list", "--data", data, "--where", "data.x"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("expected PATH = VALUE"), "{err}");
    let (code, out, err) = meethook(&["events", "list", "--data", data, "--failed"]).await;
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    assert!(err.contains("no events match"), "{err}");
    let (_, out, err) = meethook(&["events", "list", "--data", data, "--limit", "3"]).await;
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(out.contains(" 18  ") && out.contains(" 20  "), "{out}");
    assert!(err.contains("the last 3 of 20"), "{err}");

    // show: request line, every header in order, the body pretty-printed, the attempts.
    let (code, out, err) = meethook(&["events", "show", "3", "--data", data]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("event #3 of channel {ch}")), "{out}");
    assert!(out.contains("POST /meetings?i=3"), "{out}");
    let a = out.find("x-multi: a").expect("first x-multi");
    let b = out.find("x-multi: b").expect("second x-multi");
    let s = out.find("svix-signature: v1,").expect("svix-signature");
    assert!(a < b && b < s, "headers in order:\n{out}");
    assert!(
        out.contains("\"event\": \"bot.status_change\",\n  \"data\": {"),
        "{out}"
    );
    assert!(
        out.contains("attempts (1):") && out.contains("→ 200"),
        "{out}"
    );
    assert!(out.contains("response \"ok\""), "{out}");
    let (_, out, _) = meethook(&["events", "show", "7", "--data", data]).await;
    assert!(out.contains("\nplain text, not JSON\n"), "{out}");
    // Credentials are hidden unless asked for.
    assert!(
        out.contains("x-meeting-baas-api-key: [hidden, 6 bytes; --reveal shows it]"),
        "{out}"
    );
    assert!(!out.contains("mb_key"), "{out}");
    let (_, out, _) = meethook(&["events", "show", "7", "--data", data, "--reveal"]).await;
    assert!(out.contains("x-meeting-baas-api-key: mb_key"), "{out}");
    let (code, out, _) = meethook(&["events", "show", "10", "--data", data, "--json"]).await;
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["seq"], 10);
    assert_eq!(v["event"], "complete");
    assert_eq!(v["attempts"][0]["status"], 200);
    assert_eq!(v["attempts"][0]["replay"], false);
    let (_, body) = event(10);
    assert_eq!(v["body"].as_str().unwrap().as_bytes(), &body[..]);

    let (code, _, err) = meethook(&["events", "show", "99", "--data", data]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no event #99"), "{err}");

    // No journal: exit 1 saying what to do.
    let empty = tempdir();
    let e = empty.path().to_str().unwrap();
    for args in [
        vec!["events", "list", "--data", e],
        vec!["events", "show", "1", "--data", e],
        vec![
            "replay",
            "--all",
            "--to",
            "http://127.0.0.1:9/",
            "--data",
            e,
        ],
    ] {
        let (code, _, err) = meethook(&args).await;
        assert_eq!(code, 1, "{args:?}");
        assert!(
            err.contains(&format!(
                "no journal at {e}/journal.sqlite: run `meethook listen --data {e}` first \
                 (or pass the --data it used)"
            )),
            "{err}"
        );
    }
    assert!(
        !empty.path().join("journal.sqlite").exists(),
        "reading created no journal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_resends_everything_in_order_marked_as_replay() {
    let dir = tempdir();
    let data = dir.path().to_str().unwrap();
    fill_journal(dir.path()).await;

    let handler = TestHandler::start().await;
    let (code, out, err) = meethook(&[
        "replay",
        "--all",
        "--data",
        data,
        "--to",
        &handler.url("/replayed"),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("replayed 20 events: all delivered"), "{err}");
    assert_eq!(
        out.lines().count(),
        N as usize,
        "one line per event:\n{out}"
    );
    assert!(out.lines().all(|l| l.contains("→ 200")), "{out}");
    let got = handler.received();
    assert_eq!(got.len(), N as usize);
    for (i, r) in (1..=N).zip(&got) {
        let (_, body) = event(i);
        assert_eq!(&r.body[..], &body[..], "body of #{i}");
        assert_eq!(r.seq(), i);
        assert_eq!(r.header("meethook-replay").as_deref(), Some("true"));
        assert_eq!(r.header("meethook-attempt").as_deref(), Some("1"));
        assert_eq!(r.header_all("x-multi"), vec!["a", "b"]);
        assert_eq!(r.path, format!("/replayed/meetings?i={i}"));
        assert_eq!(r.method, "POST");
    }

    // Recorded as replay attempts; the events' state is untouched.
    let (_, out, _) = meethook(&["events", "show", "5", "--data", data]).await;
    assert!(
        out.contains("attempts (2):") && out.contains("replay #1"),
        "{out}"
    );
    assert!(out.contains("state      delivered (1 attempt"), "{out}");

    // A selection, at the original pace: seqs in seq order, whatever order they were given in.
    let paced = TestHandler::start().await;
    let (code, _, err) = meethook(&[
        "replay",
        "12",
        "3-4",
        "--speed",
        "original",
        "--data",
        data,
        "--forward-to",
        &paced.url("/"),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let seqs: Vec<u64> = paced.received().iter().map(|r| r.seq()).collect();
    assert_eq!(seqs, vec![3, 4, 12]);

    // --json lines.
    let bots = TestHandler::start().await;
    let (code, out, _) = meethook(&[
        "replay",
        "--bot",
        "b0b0",
        "--json",
        "--data",
        data,
        "--to",
        &bots.url("/"),
    ])
    .await;
    assert_eq!(code, 0);
    let v = json_lines(&out);
    assert_eq!(v.len(), 5);
    assert!(v
        .iter()
        .all(|l| l["result"] == "delivered" && l["replay"] == true && l["bot_id"] == BOT_B));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resign_gives_each_replay_a_fresh_valid_signature() {
    let dir = tempdir();
    let data = dir.path().to_str().unwrap();
    fill_journal(dir.path()).await;
    let handler = TestHandler::start().await;
    let before = now_secs();
    let (code, _, err) = meethook(&[
        "replay",
        "--all",
        "--resign",
        LOCAL_SECRET,
        "--data",
        data,
        "--to",
        &handler.url("/"),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("re-signed"), "{err}");
    let got = handler.received();
    assert_eq!(got.len(), N as usize);
    for (i, r) in (1..=N).zip(&got) {
        let id = r.header("svix-id").expect("svix-id");
        let expected_id = if matches!(i % 3, 0) {
            format!("msg_orig_{i}")
        } else {
            format!("msg_replay_{i}")
        };
        assert_eq!(id, expected_id);
        let ts = r.header("svix-timestamp").unwrap();
        let t: i64 = ts.parse().unwrap();
        assert!(
            t >= before - 1 && t <= now_secs() + 1,
            "fresh timestamp {t}"
        );
        let sigs = r.header_all("svix-signature");
        assert_eq!(sigs.len(), 1, "one signature header");
        assert_eq!(
            sigs[0],
            format!("v1,{}", sign(LOCAL_SECRET, &id, &ts, &r.body)),
            "#{i} verifies with the local secret"
        );
        let (_, body) = event(i);
        assert_eq!(&r.body[..], &body[..], "body untouched");
        assert_eq!(r.header_all("svix-timestamp").len(), 1);
    }

    let (code, _, err) = meethook(&[
        "replay",
        "1",
        "--resign",
        "whsec_***",
        "--data",
        data,
        "--to",
        "http://127.0.0.1:9/",
    ])
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("--resign"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_import_export_is_byte_identical() {
    let dir = tempdir();
    let data = dir.path().to_str().unwrap();
    let ch = fill_journal(dir.path()).await;

    let (code, first, err) = meethook_bytes(&["events", "export", "--data", data]).await;
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    let text = String::from_utf8(first.clone()).unwrap();
    assert_eq!(text.lines().count(), N as usize);
    let line: serde_json::Value = serde_json::from_str(text.lines().nth(9).unwrap()).unwrap();
    assert_eq!(line["seq"], 10);
    assert_eq!(line["event"], "complete");
    assert_eq!(line["channel"], ch.as_str());
    let file = dir.path().join("events.ndjson");
    std::fs::write(&file, &first).unwrap();
    let f = file.to_str().unwrap();

    let fresh = tempdir();
    let fd = fresh.path().join("nested");
    let fd = fd.to_str().unwrap();
    let (code, out, err) = meethook(&["events", "import", f, "--data", fd]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("imported 20 events, skipped 0"), "{out}");
    let (code, second, _) = meethook_bytes(&["events", "export", "--data", fd]).await;
    assert_eq!(code, 0);
    assert!(first == second, "export → import → export changed bytes");
    let (_, out, _) = meethook(&["events", "import", f, "--data", fd]).await;
    assert!(out.contains("imported 0 events, skipped 20"), "{out}");
    let (_, out, _) = meethook(&["events", "list", "--data", fd, "--json"]).await;
    assert!(json_lines(&out).iter().all(|l| l["state"] == "delivered"));

    // Filters apply to export too.
    let (_, out, _) = meethook(&["events", "export", "--data", data, "--bot", BOT_B]).await;
    assert_eq!(out.lines().count(), 5);
    let (_, out, _) = meethook(&[
        "events",
        "export",
        "--data",
        data,
        "--where",
        "event = complete",
    ])
    .await;
    assert_eq!(out.lines().count(), 2);

    // A second channel in the same journal.
    let (code, out, _) =
        meethook(&["events", "import", f, "--data", fd, "--channel", "archive"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("imported 20 events"), "{out}");
    let (_, out, _) = meethook(&["events", "list", "--data", fd, "--limit", "0"]).await;
    assert!(out.lines().next().unwrap().starts_with("CHANNEL"), "{out}");
    assert_eq!(out.lines().count(), 1 + 2 * N as usize);
    let (code, _, err) = meethook(&["events", "show", "3", "--data", fd]).await;
    assert_eq!(code, 1);
    assert!(err.contains("--channel"), "{err}");
    let (code, out, _) =
        meethook(&["events", "show", "3", "--data", fd, "--channel", "archive"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("event #3 of channel archive"), "{out}");
    let (code, _, err) = meethook(&[
        "replay",
        "--all",
        "--data",
        fd,
        "--to",
        "http://127.0.0.1:9/",
    ])
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("pass --channel"), "{err}");

    let bad = dir.path().join("bad.ndjson");
    std::fs::write(&bad, "{\"seq\": 1}\n").unwrap();
    let (code, _, err) = meethook(&["events", "import", bad.to_str().unwrap(), "--data", fd]).await;
    assert_eq!(code, 1);
    assert!(err.contains("line 1"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_follows_the_delivery_rules_and_exits_1_on_failures() {
    let dir = tempdir();
    let data = dir.path().to_str().unwrap();
    fill_journal(dir.path()).await;
    let handler = TestHandler::start().await;
    let url = handler.url("/");

    // 400: failed, move on; exit 1 saying how many.
    handler.script(&[400]);
    let (code, out, err) = meethook(&["replay", "1", "2", "--data", data, "--to", &url]).await;
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("1 of 2 replayed events failed"), "{err}");
    assert!(
        out.contains("→ 400") && out.contains("failed, moving on"),
        "{out}"
    );
    let seqs: Vec<(u64, u16)> = handler
        .received()
        .iter()
        .map(|r| (r.seq(), r.answered))
        .collect();
    assert_eq!(seqs, vec![(1, 400), (2, 200)]);

    // 503 then 429: retried (same event, next attempt), then delivered.
    handler.script(&[503, 429]);
    let (code, out, err) = meethook(&[
        "replay",
        "3",
        "--max-backoff",
        "50ms",
        "--data",
        data,
        "--to",
        &url,
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("retry #2") && out.contains("retry #3"),
        "{out}"
    );
    let last: Vec<(u64, String)> = handler.received()[2..]
        .iter()
        .map(|r| (r.seq(), r.header("meethook-attempt").unwrap()))
        .collect();
    assert_eq!(
        last,
        vec![(3, "1".into()), (3, "2".into()), (3, "3".into())]
    );

    // Retries run out: --max-attempts.
    handler.script(&[500, 500]);
    let (code, out, err) = meethook(&[
        "replay",
        "4",
        "--max-attempts",
        "2",
        "--max-backoff",
        "50ms",
        "--data",
        data,
        "--to",
        &url,
    ])
    .await;
    assert_eq!(code, 1);
    assert!(out.contains("gave up after 2 attempts"), "{out}");
    assert!(err.contains("1 of 1 replayed events failed"), "{err}");

    // Nothing to replay.
    let (code, _, err) = meethook(&["replay", "--bot", "nope", "--data", data, "--to", &url]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no events match"), "{err}");
    let (code, _, err) = meethook(&["replay", "99", "--data", data, "--to", &url]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no event #99"), "{err}");
    // No selection at all is a usage error.
    let (code, _, err) = meethook(&["replay", "--data", data, "--to", &url]).await;
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = meethook(&["replay", "--all", "3", "--data", data, "--to", &url]).await;
    assert_eq!(code, 2, "{err}");
}

/// Every file under `dir`: (path, size, modified), sorted.
fn snapshot(dir: &Path) -> Vec<(String, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        if m.is_dir() {
            out.extend(snapshot(&e.path()));
        }
        out.push((
            e.path().display().to_string(),
            m.len(),
            m.modified().unwrap(),
        ));
    }
    out.sort();
    out
}

#[cfg(unix)]
fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_commands_open_the_journal_read_only() {
    let dir = tempdir();
    let data = dir.path().to_str().unwrap();
    fill_journal(dir.path()).await;
    // Read-only for a normal user; root ignores modes, so the snapshot is what proves it.
    #[cfg(unix)]
    {
        chmod(&dir.path().join("journal.sqlite"), 0o444);
        chmod(dir.path(), 0o555);
    }
    let before = snapshot(dir.path());
    for args in [
        vec!["events", "list", "--data", data],
        vec!["events", "list", "--data", data, "--json", "--failed"],
        vec!["events", "show", "3", "--data", data],
        vec!["events", "show", "3", "--data", data, "--json"],
        vec!["events", "export", "--data", data],
        vec![
            "events",
            "prune",
            "--dry-run",
            "--older-than",
            "0",
            "--data",
            data,
        ],
    ] {
        let (code, _, err) = meethook(&args).await;
        assert_eq!(code, 0, "{args:?}: {err}");
    }
    assert_eq!(snapshot(dir.path()), before, "no file created or changed");
    #[cfg(unix)]
    chmod(dir.path(), 0o755);

    // No directory: said once, with the fix, and nothing created.
    let missing = dir.path().join("nope").join("deeper");
    let m = missing.to_str().unwrap();
    for args in [
        vec!["events", "list", "--data", m],
        vec!["events", "export", "--data", m],
        vec!["events", "pin", "1", "--data", m],
        vec!["events", "prune", "--data", m],
        vec!["replay", "1", "--data", m],
    ] {
        let (code, _, err) = meethook(&args).await;
        assert_eq!(code, 1, "{args:?}");
        assert_eq!(
            err.trim(),
            format!(
                "error: no journal at {m}/journal.sqlite: run `meethook listen --data {m}` first \
                 (or pass the --data it used)"
            ),
            "{args:?}"
        );
    }
    assert!(!dir.path().join("nope").exists());

    // A file as --data: said once, for readers and for `listen` alike.
    let file = dir.path().join("journal.sqlite");
    let f = file.to_str().unwrap();
    for args in [
        vec!["events", "list", "--data", f],
        vec!["events", "import", "/dev/null", "--data", f],
        vec![
            "listen",
            "--inspect",
            "off",
            "--relay",
            "http://127.0.0.1:9",
            "--channel",
            "c",
            "--token",
            "t",
            "--forward-to",
            "http://127.0.0.1:9/",
            "--data",
            f,
        ],
    ] {
        let (code, _, err) = meethook(&args).await;
        assert_eq!(code, 1, "{args:?}");
        let line = err.lines().last().unwrap();
        assert_eq!(
            line,
            format!(
                "error: --data {f} is a file, not a directory: pass the journal's directory \
                 (where `meethook listen --data DIR` keeps journal.sqlite)"
            ),
            "{args:?}: {err}"
        );
    }
}

/// An `events export` line holding `body`, under channel `c`.
fn export_line(seq: u64, body: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    serde_json::json!({
        "channel": "c", "seq": seq, "received_at_ms": 1_750_000_000_000i64, "method": "POST",
        "path": "/hook", "headers": [["content-type", b64.encode("application/json")]],
        "body": b64.encode(body),
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_prints_a_screenful_of_a_big_body() {
    let dir = tempdir();
    let data = dir.path().to_str().unwrap();
    let words: Vec<String> = (0..224_000).map(|i| format!("word {i:06}")).collect();
    let big = format!(
        r#"{{"event":"complete","data":{{"bot_id":"b","transcript":{}}}}}"#,
        serde_json::to_string(&words).unwrap()
    )
    .into_bytes();
    assert!(
        (3 << 20) - big.len() < 50_000,
        "about 3.0 MiB: {}",
        big.len()
    );
    let text_line = vec![b'z'; 10_000];
    let binary: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    let file = dir.path().join("in.ndjson");
    let lines = [
        export_line(1, &big),
        export_line(2, &text_line),
        export_line(3, &binary),
    ];
    std::fs::write(&file, lines.join("\n")).unwrap();
    let (code, _, err) =
        meethook(&["events", "import", file.to_str().unwrap(), "--data", data]).await;
    assert_eq!(code, 0, "{err}");

    let note =
        "body cut at 60 lines: --full shows all, --body-only prints just the body (pretty), \
                --raw prints the exact bytes";
    let (code, out, err) = meethook(&["events", "show", "1", "--data", data]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("… 3.0 MiB {note}")), "{out}");
    assert!(out.len() < 8 << 10, "{} bytes shown", out.len());
    assert!(out.contains("\"word 000054\","), "{out}");
    assert!(!out.contains("word 000055"), "{out}");

    let (_, out, _) = meethook(&["events", "show", "1", "--data", data, "--full"]).await;
    assert!(!out.contains("body cut"));
    assert!(out.contains("\"word 223999\""));
    assert!(out.starts_with("event #1 of channel c"), "the whole show");

    let (_, only, _) = meethook(&["events", "show", "1", "--data", data, "--body-only"]).await;
    assert!(only.starts_with("{\n  \"event\": \"complete\""), "pretty");
    assert_eq!(
        only.lines().count(),
        224_000 + 8,
        "every line, nothing else"
    );

    for seq in ["1", "2", "3"] {
        let (code, raw, _) =
            meethook_bytes(&["events", "show", seq, "--data", data, "--raw"]).await;
        assert_eq!(code, 0);
        let want: &[u8] = match seq {
            "1" => &big,
            "2" => &text_line,
            _ => &binary,
        };
        assert!(raw == want, "#{seq}: the exact bytes");
    }
    let (_, only, _) =
        meethook_bytes(&["events", "show", "3", "--data", data, "--body-only"]).await;
    assert!(only == binary, "not JSON: as stored");

    // One long line: cut at 4 KiB.
    let (_, out, _) = meethook(&["events", "show", "2", "--data", data]).await;
    assert!(out.contains("… 9.8 KiB body cut at 4 KiB: --full"), "{out}");
    assert!(out.contains(&"z".repeat(4096)) && !out.contains(&"z".repeat(4097)));

    // --json is whole.
    let (_, out, _) = meethook(&["events", "show", "1", "--data", data, "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["body"].as_str().unwrap().as_bytes(), &big[..]);
    let (code, _, _) = meethook(&["events", "show", "1", "--data", data, "--json", "--raw"]).await;
    assert_eq!(code, 2, "--json and --raw conflict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_defaults_to_the_listen_handler_and_list_shows_the_replay() {
    let dir = tempdir();
    let data = dir.path().to_str().unwrap();
    let ch = fill_journal(dir.path()).await;
    let live = TestHandler::start().await;
    {
        let j = Journal::open(dir.path()).unwrap();
        let used = j
            .forward_to(&ch)
            .unwrap()
            .expect("listen recorded its --forward-to");
        assert!(used.ends_with("/hook"), "{used}");
        // #2 failed; the handler it went to is now `live`.
        let failed = Attempt {
            attempt: 2,
            started_at_ms: 1,
            latency: Duration::from_millis(1),
            status: Some(400),
            error: None,
            response_head: Default::default(),
            response_headers: Vec::new(),
            truncated: false,
            replay: false,
        };
        j.record(&ch, 2, &failed, Some(State::Failed)).unwrap();
        j.set_forward_to(&ch, &live.url("/live")).unwrap();
    }
    let (code, _, err) = meethook(&["replay", "2", "--data", data]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!(
            "→ {} (the --forward-to of `listen`)",
            live.url("/live")
        )),
        "{err}"
    );
    let got = live.received();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].seq(), got[0].path.as_str()),
        (2, "/live/meetings?i=2")
    );

    let (_, out, _) = meethook(&["events", "list", "--data", data]).await;
    let line = out.lines().nth(2).unwrap();
    assert!(
        line.contains(" 2  ") && line.contains("failed · replayed 200"),
        "{out}"
    );
    // Columns stay aligned: each row's tries end under TRIES (counted in characters).
    let header: Vec<char> = out.lines().next().unwrap().chars().collect();
    let tries_end = (0..header.len())
        .find(|&i| header[i..].starts_with(&['T', 'R', 'I', 'E', 'S']))
        .unwrap()
        + 5;
    for row in out.lines().skip(1).take(3) {
        let row: Vec<char> = row.chars().collect();
        assert!(
            row[tries_end - 1].is_ascii_digit() && row[tries_end] == ' ',
            "{out}"
        );
    }
    let (_, out, _) = meethook(&["events", "list", "--data", data, "--json"]).await;
    let v = json_lines(&out);
    assert_eq!(
        (v[1]["state"].as_str(), v[1]["replayed"].as_u64()),
        (Some("failed"), Some(200))
    );
    assert!(v[0]["replayed"].is_null());
    let (_, out, _) = meethook(&["events", "show", "2", "--data", data]).await;
    assert!(
        out.contains("state      failed (2 attempts, last status 400) · replayed 200"),
        "{out}"
    );

    // A journal with no recorded handler (imported): --to is needed.
    let (_, export, _) = meethook_bytes(&["events", "export", "--data", data]).await;
    let file = dir.path().join("x.ndjson");
    std::fs::write(&file, export).unwrap();
    let fresh = tempdir();
    let fd = fresh.path().to_str().unwrap();
    let (code, _, _) = meethook(&[
        "events",
        "import",
        file.to_str().unwrap(),
        "--data",
        fd,
        "--channel",
        "archive",
    ])
    .await;
    assert_eq!(code, 0);
    let (code, _, err) = meethook(&["replay", "--all", "--data", fd]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "the journal in {fd} has no handler URL for channel archive (journaled by an older \
             meethook, or imported): pass --to URL"
        )),
        "{err}"
    );
}

fn list_seqs(out: &str) -> Vec<u64> {
    json_lines(out)
        .iter()
        .map(|l| l["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_events_survive_events_prune() {
    let dir = tempdir();
    let data = dir.path().to_str().unwrap();
    fill_journal(dir.path()).await;

    let (code, out, err) = meethook(&["events", "pin", "3", "--data", data]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("pinned #3 of channel"), "{out}");
    let (code, _, err) = meethook(&["events", "pin", "99", "--data", data]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no event #99"), "{err}");

    let (code, out, _) = meethook(&["events", "prune", "--data", data]).await;
    assert_eq!(code, 0);
    assert!(
        out.starts_with("pruned 0 events (0 B) received before"),
        "{out}"
    );
    let (_, out, _) = meethook(&[
        "events",
        "prune",
        "--data",
        data,
        "--older-than",
        "0",
        "--dry-run",
    ])
    .await;
    assert!(out.starts_with("would prune 18 events ("), "{out}");
    let (_, out, _) = meethook(&["events", "list", "--data", data, "--json"]).await;
    assert_eq!(
        list_seqs(&out).len(),
        N as usize,
        "a dry run removes nothing"
    );

    let (_, out, _) = meethook(&["events", "prune", "--data", data, "--older-than", "0"]).await;
    assert!(out.starts_with("pruned 18 events ("), "{out}");
    let (_, out, _) = meethook(&["events", "list", "--data", data, "--json"]).await;
    assert_eq!(
        list_seqs(&out),
        vec![3, N],
        "the pinned one and the newest stay"
    );
    assert_eq!(json_lines(&out)[0]["pinned"], true);
    let (_, out, _) = meethook(&["events", "list", "--data", data]).await;
    assert!(out.contains("delivered · pinned"), "{out}");
    let (code, _, _) = meethook(&["events", "show", "5", "--data", data]).await;
    assert_eq!(code, 1, "gone");

    let (code, out, _) = meethook(&["events", "unpin", "3", "--data", data]).await;
    assert_eq!(code, 0);
    assert!(out.contains("unpinned #3"), "{out}");
    let (_, out, _) = meethook(&["events", "prune", "--data", data, "--older-than", "0"]).await;
    assert!(out.starts_with("pruned 1 event ("), "{out}");
    let (_, out, _) = meethook(&["events", "list", "--data", data, "--json"]).await;
    assert_eq!(list_seqs(&out), vec![N]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_prunes_its_journal_past_the_retention() {
    let (relay, ch, token, handler, dir) = Setup::start().await.into_parts();
    let data = dir.path().to_str().unwrap();
    let config =
        || TestDaemon::config(&relay.url(), &ch, &token, &handler.url("/hook"), dir.path());
    let send = |i: u64| {
        let url = relay.hook(&ch);
        async move {
            let (h, body) = event(i);
            let h: Vec<(&str, &str)> = h.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            post(&url, &h, body).await
        }
    };
    let daemon = TestDaemon::start(config());
    for i in 1..=5 {
        assert_eq!(send(i).await.seq(), Some(i));
    }
    handler.wait_delivered(5).await;
    let journal = Journal::open(dir.path()).unwrap();
    let seqs = || {
        journal
            .keys(&Query::default())
            .unwrap()
            .into_iter()
            .map(|(_, s)| s)
            .collect::<Vec<u64>>()
    };
    let wait_for = |want: Vec<u64>, what: &'static str| {
        let seqs = &seqs;
        async move {
            let deadline = tokio::time::Instant::now() + PATIENCE;
            while seqs() != want {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{what}: {:?}",
                    seqs()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let delivered = Query {
        state: Some(State::Delivered),
        ..Query::default()
    };
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while journal.count(&delivered).unwrap() < 5 {
        assert!(tokio::time::Instant::now() < deadline, "never journaled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    daemon.stop().await.unwrap();
    assert_eq!(seqs(), vec![1, 2, 3, 4, 5], "7 days: nothing pruned");
    let (code, _, err) = meethook(&["events", "pin", "2", "--data", data]).await;
    assert_eq!(code, 0, "{err}");

    let mut cfg = config();
    cfg.retention = Duration::from_millis(1);
    let daemon = TestDaemon::start(cfg);
    wait_for(
        vec![2, 5],
        "pruned at start but for the pinned and the newest",
    )
    .await;
    // It resumes where it was: the next event is delivered, nothing again.
    assert_eq!(send(6).await.seq(), Some(6));
    let got = handler.wait_delivered(6).await;
    assert_eq!(
        got.iter().map(|r| r.seq()).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
    daemon.stop().await.unwrap();
    relay.stop().await;
}

/// Waits until `events list --json` shows these (seq, state) pairs.
async fn wait_states(data: &str, want: &[(u64, &str)]) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (code, out, err) = meethook(&["events", "list", "--data", data, "--json"]).await;
        assert_eq!(code, 0, "{err}");
        let got: Vec<(u64, String)> = json_lines(&out)
            .iter()
            .map(|l| {
                (
                    l["seq"].as_u64().unwrap(),
                    l["state"].as_str().unwrap().into(),
                )
            })
            .collect();
        let all = want
            .iter()
            .all(|(s, st)| got.iter().any(|(g, gst)| g == s && gst == st));
        if all {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "journal never showed {want:?}: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn delivered_seqs(h: &TestHandler) -> Vec<u64> {
    h.received()
        .iter()
        .filter(|r| r.answered == 200)
        .map(|r| r.seq())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_skip_moves_a_listen_past_a_failing_event() {
    let (relay, ch, token, handler, dir) = Setup::start().await.into_parts();
    handler.answer_seq(2, Some(500));
    let data = dir.path().to_str().unwrap();
    let listen = Listen::start(
        &relay,
        &ch,
        &token,
        &handler.url("/"),
        data,
        &["--max-backoff", "10m"],
    );
    for i in 1..=5 {
        assert_eq!(
            post(&relay.hook(&ch), &[], format!("e{i}")).await.seq(),
            Some(i)
        );
    }
    // #2 keeps failing; its retry line says what waits behind it and how to move on.
    let line = listen
        .wait_line("with 3 waiting behind #2", |l| {
            l.contains("3 waiting behind #2")
        })
        .await;
    assert!(
        line.contains("→ 500")
            && line.contains("retry #")
            && line.contains(&format!(
                "meethook events retry 2 --data {data} | events skip 2 --data {data}"
            )),
        "{line}"
    );
    assert_eq!(delivered_seqs(&handler), vec![1], "3..5 wait behind #2");
    assert!(
        listen
            .lines_of(1)
            .iter()
            .all(|l| !l.contains("waiting behind")),
        "a healthy line says nothing of it"
    );

    // Nothing to retry yet behind #2; a later event can be marked to be skipped.
    let (code, _, err) = meethook(&["events", "retry", "4", "--data", data]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("#4 has not been sent yet: it is queued behind #2"),
        "{err}"
    );
    let (code, out, err) = meethook(&["events", "skip", "4", "--data", data]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("#4 will be skipped when its turn comes"),
        "{out}"
    );
    let (code, out, err) = meethook(&["events", "skip", "2", "--data", data]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("skipped #2"), "{out}");

    handler
        .wait_until("#5", |l| l.iter().any(|r| r.seq() == 5))
        .await;
    assert_eq!(
        delivered_seqs(&handler),
        vec![1, 3, 5],
        "in order, 2 and 4 skipped"
    );
    wait_states(
        data,
        &[
            (1, "delivered"),
            (2, "skipped"),
            (3, "delivered"),
            (4, "skipped"),
            (5, "delivered"),
        ],
    )
    .await;
    listen
        .wait_line("#2 skipped by the user", |l| {
            // After one attempt, or more where the cli calls above outlasted the first
            // retry's pause (a loaded machine).
            is_about(l, 2) && l.contains("skipped by the user (meethook events skip) after ")
        })
        .await;
    listen
        .wait_line("#4 skipped by the user", |l| {
            is_about(l, 4) && l.ends_with("→ skipped by the user (meethook events skip)")
        })
        .await;
    let (_, out, _) = meethook(&["events", "show", "2", "--data", data]).await;
    assert!(out.contains("skipped") && out.contains("→ 500"), "{out}");

    // Settled or unknown events: exit 1 saying so.
    let (code, _, err) = meethook(&["events", "retry", "2", "--data", data]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "#2 was skipped already: nothing to retry; `meethook replay 2` sends it again"
        ),
        "{err}"
    );
    let (code, _, err) = meethook(&["events", "skip", "3", "--data", data]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("#3 was delivered already: nothing to skip"),
        "{err}"
    );
    let (code, _, err) = meethook(&["events", "retry", "99", "--data", data]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no event #99"), "{err}");
    let (code, _, err) =
        meethook(&["events", "retry", "2", "--data", data, "--channel", "nope"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no running `meethook listen` uses"), "{err}");

    // A killed daemon leaves its socket behind: nobody answers on it.
    drop(listen);
    assert!(dir.path().join(format!("control-{ch}.sock")).exists());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (code, _, err) = meethook(&["events", "retry", "2", "--data", data]).await;
        if code == 1 && err.contains("no running") {
            assert!(
                err.contains(&format!(
                    "no running `meethook listen` uses {data}: start it, or use `meethook replay 2"
                )),
                "{err}"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{err}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And one that never ran.
    let empty = tempdir();
    let e = empty.path().to_str().unwrap();
    let (code, _, err) = meethook(&["events", "skip", "1", "--data", e]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("no running `meethook listen` uses {e}")),
        "{err}"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_retry_and_a_handler_back_on_its_port_cut_a_long_backoff() {
    let s = Setup::start().await;
    s.handler.answer_seq(1, Some(500));
    // Ten minutes between attempts: only the control request (or the probe) explains a
    // delivery within the test's patience.
    let daemon = s.daemon_with("/", |cfg| {
        cfg.backoff = meethook_daemon::forward::Backoff {
            initial: Duration::from_secs(600),
            max: Duration::from_secs(600),
        };
    });
    let (relay, ch, _, mut handler, dir) = s.into_parts();
    let data = dir.path().to_str().unwrap();
    post(&relay.hook(&ch), &[], "e1").await;
    post(&relay.hook(&ch), &[], "e2").await;
    handler.wait_until("#1 failing", |l| !l.is_empty()).await;
    handler.answer_seq(1, None);
    let (code, out, err) = meethook(&["events", "retry", "1", "--data", data]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "retrying #1 now");
    handler.wait_delivered(2).await;
    assert_eq!(delivered_seqs(&handler), vec![1, 2]);
    let attempts: Vec<String> = handler.received()[..2]
        .iter()
        .map(|r| r.header("meethook-attempt").unwrap())
        .collect();
    assert_eq!(attempts, vec!["1", "2"]);

    // The handler goes away: refused connections; it comes back on the same port.
    handler.stop();
    post(&relay.hook(&ch), &[], "e3").await;
    post(&relay.hook(&ch), &[], "e4").await;
    // Its first attempt is refused (the journal shows it), then the port opens again.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, out, _) = meethook(&["events", "show", "3", "--data", data, "--json"]).await;
        let refused = serde_json::from_str::<serde_json::Value>(&out)
            .ok()
            .and_then(|v| v["attempts"][0]["error"].as_str().map(str::to_string));
        if let Some(e) = refused {
            assert!(e.starts_with("cannot connect"), "{e}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no refused attempt: {out}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    handler.restart().await;
    handler.wait_delivered(4).await;
    assert_eq!(delivered_seqs(&handler), vec![1, 2, 3, 4]);

    // A second listen on another channel in the same --data: requests name the channel.
    let (ch2, token2) = relay.channel(None).await;
    let other = TestDaemon::start(TestDaemon::config(
        &relay.url(),
        &ch2,
        &token2,
        &handler.url("/"),
        dir.path(),
    ));
    let sock2 = dir.path().join(format!("control-{ch2}.sock"));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !sock2.exists() {
        assert!(tokio::time::Instant::now() < deadline, "no second socket");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, _, err) = meethook(&["events", "retry", "1", "--data", data]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("several `meethook listen`s use") && err.contains("pass --channel ID"),
        "{err}"
    );
    let (code, _, err) =
        meethook(&["events", "retry", "1", "--data", data, "--channel", &ch]).await;
    assert_eq!(code, 1);
    assert!(err.contains("#1 was delivered already"), "{err}");
    other.stop().await.unwrap();
    daemon.stop().await.unwrap();
    assert!(
        !dir.path().join(format!("control-{ch}.sock")).exists(),
        "a clean exit removes the control socket"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_give_up_is_one_line() {
    let (relay, ch, token, handler, dir) = Setup::start().await.into_parts();
    handler.answer_seq(1, Some(500));
    let data = dir.path().to_str().unwrap();
    let listen = Listen::start(
        &relay,
        &ch,
        &token,
        &handler.url("/"),
        data,
        &["--max-attempts", "2", "--max-backoff", "50ms"],
    );
    post(&relay.hook(&ch), &[], "e1").await;
    post(&relay.hook(&ch), &[], "e2").await;
    handler.wait_delivered(1).await;
    listen.wait_line("for #2", |l| is_about(l, 2)).await;
    let lines = listen.lines_of(1);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].contains("→ 500") && lines[0].contains("retry #2"),
        "{lines:?}"
    );
    assert!(
        lines[1].contains("→ 500") && lines[1].ends_with("gave up after 2 attempts"),
        "{lines:?}"
    );
    relay.stop().await;
}

/// Meeting BaaS delivers at least once: the same signed `bot.completed` arrives twice (a Svix
/// retry after a timeout). Every copy is journaled; the repeat is marked `duplicate of #1` in
/// the live line and `events list`; `--dedupe` acknowledges it without forwarding it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_signed_event_is_marked_and_dedupe_holds_it_back() {
    let relay = TestRelay::start().await;
    let ts = now_secs().to_string();
    let body = format!(
        r#"{{"event":"bot.completed","data":{{"bot_id":"{BOT_A}","event_id":null}},"extra":null}}"#
    );
    let sig = format!(
        "v1,{}",
        sign(SENDER_SECRET, "msg_2Jk5", &ts, body.as_bytes())
    );
    let other = body.replace("bot.completed", "bot.failed");
    let sig2 = format!(
        "v1,{}",
        sign(SENDER_SECRET, "msg_9Zz1", &ts, other.as_bytes())
    );
    // Without --dedupe; with it; with it under a keyed order (a path of its own).
    let modes: [&[&str]; 3] = [
        &[],
        &["--dedupe", "1h"],
        &["--dedupe", "1h", "--order", "bot", "--parallel", "4"],
    ];
    for extra in modes {
        let dedupe = !extra.is_empty();
        let (ch, token) = relay.channel(None).await;
        let first = [
            ("svix-id", "msg_2Jk5"),
            ("svix-timestamp", ts.as_str()),
            ("svix-signature", sig.as_str()),
        ];
        let second = [
            ("svix-id", "msg_9Zz1"),
            ("svix-timestamp", ts.as_str()),
            ("svix-signature", sig2.as_str()),
        ];
        assert_eq!(
            post(&relay.hook(&ch), &first, body.clone()).await.seq(),
            Some(1)
        );
        assert_eq!(
            post(&relay.hook(&ch), &first, body.clone()).await.seq(),
            Some(2)
        );
        assert_eq!(
            post(&relay.hook(&ch), &second, other.clone()).await.seq(),
            Some(3)
        );
        let handler = TestHandler::start().await;
        let dir = tempdir();
        let data = dir.path().to_str().unwrap().to_string();
        let listen = Listen::start(&relay, &ch, &token, &handler.url("/h"), &data, extra);
        listen
            .wait_line("#2 marked as a duplicate", |l| {
                is_about(l, 2) && l.ends_with("duplicate of #1")
            })
            .await;
        if dedupe {
            wait_states(&data, &[(1, "delivered"), (2, "skipped"), (3, "delivered")]).await;
            let line = listen
                .wait_line("#2 not forwarded", |l| {
                    is_about(l, 2) && l.contains("not forwarded")
                })
                .await;
            assert!(line.contains("duplicate of #1 (--dedupe)"), "{line}");
            assert_eq!(
                delivered_seqs(&handler),
                [1, 3],
                "the repeat never reached the handler"
            );
        } else {
            wait_states(
                &data,
                &[(1, "delivered"), (2, "delivered"), (3, "delivered")],
            )
            .await;
            assert_eq!(
                delivered_seqs(&handler),
                [1, 2, 3],
                "without --dedupe every copy goes"
            );
            // Byte for byte the same as the first, signature included.
            let got = handler.received();
            assert_eq!(got[0].body, got[1].body);
            assert_eq!(
                got[0].header("svix-signature"),
                got[1].header("svix-signature")
            );
        }
        let (code, out, err) = meethook(&["events", "list", "--data", &data]).await;
        assert_eq!(code, 0, "{err}");
        let row = out
            .lines()
            .find(|l| l.trim_start().starts_with("2 "))
            .unwrap();
        assert!(row.contains("duplicate of #1"), "{out}");
        let row3 = out
            .lines()
            .find(|l| l.trim_start().starts_with("3 "))
            .unwrap();
        assert!(
            !row3.contains("duplicate"),
            "a new svix-id is a new event: {out}"
        );
        let (_, out, _) = meethook(&["events", "list", "--data", &data, "--json"]).await;
        let dups: Vec<Option<u64>> = json_lines(&out)
            .iter()
            .map(|l| l["duplicate_of"].as_u64())
            .collect();
        assert_eq!(dups, [None, Some(1), None]);
    }
    relay.stop().await;
}

/// `events bots`: a bot that retried its join, then completed, with an `in_call_recording`
/// that arrived after `call_ended` (flagged, not reordered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_bots_shows_each_bots_lifecycle() {
    let relay = TestRelay::start().await;
    let (ch, token) = relay.channel(None).await;
    let (code, out, err) = meethook(&[
        "trigger",
        "v2-retrying-then-success",
        "--to",
        &relay.hook(&ch),
        "--bot-id",
        BOT_A,
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let late = format!(
        r#"{{"event":"bot.status_change","data":{{"bot_id":"{BOT_B}","status":{{"code":"in_call_recording","created_at":"x"}}}}}}"#
    );
    let ended = late.replace("in_call_recording", "call_ended");
    assert_eq!(post(&relay.hook(&ch), &[], ended).await.seq(), Some(11));
    assert_eq!(post(&relay.hook(&ch), &[], late).await.seq(), Some(12));
    let handler = TestHandler::start().await;
    let dir = tempdir();
    let data = dir.path().to_str().unwrap().to_string();
    let listen = Listen::start(&relay, &ch, &token, &handler.url("/h"), &data, &[]);
    listen
        .wait_line("#12 delivered", |l| is_about(l, 12) && l.contains("→ 200"))
        .await;
    wait_states(&data, &[(12, "delivered")]).await;

    let (code, out, err) = meethook(&["events", "bots", "--data", &data]).await;
    assert_eq!(code, 0, "{err}");
    let a = out.find("8d2f4c1a").unwrap_or_else(|| panic!("{out}"));
    let b = out.find("b0b0b0b0").unwrap();
    assert!(b < a, "most recent bot first:\n{out}");
    assert!(out.contains("completed (final)"), "{out}");
    assert!(out.contains("2 join retries (last 2/3)"), "{out}");
    assert!(out.contains("time: joining"), "{out}");
    assert!(
        out.contains("! #12 in_call_recording arrived after call_ended"),
        "{out}"
    );

    let (code, out, err) =
        meethook(&["events", "bots", "--data", &data, "--json", "--bot", "8d2f"]).await;
    assert_eq!(code, 0, "{err}");
    let bots = json_lines(&out);
    assert_eq!(bots.len(), 1);
    let bot = &bots[0];
    assert_eq!(bot["bot_id"], BOT_A);
    assert_eq!(
        (bot["state"].as_str(), bot["finished"].as_bool()),
        (Some("completed"), Some(true))
    );
    assert_eq!(
        (bot["first_seq"].as_u64(), bot["last_seq"].as_u64()),
        (Some(1), Some(10))
    );
    assert_eq!(bot["retries"], 2);
    assert_eq!(
        bot["artifacts"].as_array().unwrap().len(),
        5,
        "every link of bot.completed"
    );
    assert_eq!(bot["artifacts_saved"], 0);
    let states: Vec<&str> = bot["time_per_state"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert_eq!(states[0], "joining");
    assert_eq!(bot["out_of_order"], 0);
    let (code, _, err) = meethook(&["events", "bots", "--data", &data, "--bot", "ffff"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no bot \"ffff\""), "{err}");
    relay.stop().await;
}
