//! The browser inspector as the cli serves it: `dev`/`listen --inspect`, `meethook inspect`.

use std::process::Stdio;

use bytes::Bytes;
use meethook_daemon::journal::Journal;
use meethook_proto::Event;
use meethook_testkit::{client, request, tempdir, TestHandler, PATIENCE};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};

use crate::util::{dev, interrupt, meethook_bytes, run, BIN};

/// Reads lines until one starts with `prefix`; returns its rest and the lines read before.
async fn line_starting<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut Lines<R>,
    prefix: &str,
) -> (String, Vec<String>) {
    let mut before = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if let Some(rest) = l.strip_prefix(prefix) {
                return (rest.to_string(), before);
            }
            before.push(l);
        }
        panic!("no line starting with {prefix:?} in {before:?}");
    })
    .await
    .unwrap_or_else(|_| panic!("no line starting with {prefix:?} in time"))
}

async fn get(url: &str) -> (u16, String) {
    let r = request(&client(), "GET", url, &[], "").await.unwrap();
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_prints_the_inspector_url_and_serves_the_page() {
    let handler = TestHandler::start().await;
    let data = tempdir();
    let mut child = dev(
        &handler.url("/hook"),
        data.path(),
        &["--inspect", "127.0.0.1:0"],
    );
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    let (url, _) = line_starting(&mut err, "Inspector: ").await;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let (status, page) = get(&url).await;
    assert_eq!(status, 200);
    assert!(page.contains("<title>meethook inspector</title>"), "{page}");
    assert!(
        page.contains("EventSource('/api/stream')")
            || page.contains("EventSource(\"/api/stream\")")
    );
    let (status, body) = get(&format!("{url}/api/health")).await;
    assert_eq!((status, body.as_str()), (200, r#"{"ok":true}"#));
    interrupt(&child);
    assert_eq!(child.wait().await.unwrap().code(), Some(0));

    // --json: the URL is a JSON line of its own kind.
    let mut child = dev(
        &handler.url("/hook"),
        data.path(),
        &["--json", "--inspect", "127.0.0.1:0"],
    );
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let (_, _) = line_starting(&mut out, "{\"kind\":\"started\"").await;
    let line = out.next_line().await.unwrap().unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).expect(&line);
    assert_eq!(v["kind"], "inspector", "{line}");
    assert!(v["time"].is_string());
    let url = v["url"].as_str().unwrap();
    assert_eq!(get(&format!("{url}/api/health")).await.0, 200);
    interrupt(&child);
    assert_eq!(child.wait().await.unwrap().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_off_serves_nothing() {
    let handler = TestHandler::start().await;
    let data = tempdir();
    let mut child = dev(&handler.url("/hook"), data.path(), &["--inspect", "off"]);
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    // Connected: start-up is over, and no inspector line came before.
    let mut before = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        while let Some(l) = err.next_line().await.unwrap() {
            if l.contains("connected to") {
                return;
            }
            before.push(l);
        }
    })
    .await
    .expect("dev connects");
    assert!(
        before.iter().all(|l| !l.contains("Inspector")),
        "{before:?}"
    );
    interrupt(&child);
    assert_eq!(child.wait().await.unwrap().code(), Some(0));
}

#[test]
fn a_non_loopback_inspector_needs_a_token() {
    for cmd in [
        vec!["dev", "--forward-to", "http://127.0.0.1:9/hook"],
        vec![
            "listen",
            "--relay",
            "http://127.0.0.1:9",
            "--channel",
            "c",
            "--token",
            "t",
            "--forward-to",
            "http://127.0.0.1:9/hook",
        ],
        vec!["inspect"],
    ] {
        let mut args = cmd.clone();
        args.extend(["--inspect", "0.0.0.0:0"]);
        let (code, _, err) = run(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("--inspect-token"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_serves_an_existing_journal_read_only() {
    let data = tempdir();
    {
        let j = Journal::open(data.path()).unwrap();
        let ev = Event {
            seq: 1,
            received_at_ms: 1_700_000_000_000,
            method: "POST".into(),
            path: String::new(),
            headers: vec![meethook_proto::Header::new("x-mb-secret", "s3cret")],
            body: Bytes::from_static(br#"{"event":"complete","data":{"bot_id":"b1"}}"#),
        };
        j.insert("ch", &[ev], 1).unwrap();
    }
    let mut child = tokio::process::Command::new(BIN)
        .args(["inspect", "--inspect", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let (rest, _) = line_starting(&mut out, "Inspector: ").await;
    let url = rest.split_whitespace().next().unwrap().to_string();
    let (status, body) = get(&format!("{url}/api/events")).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["events"][0]["seq"], 1);
    assert_eq!(v["events"][0]["channel"], "ch");
    assert_eq!(v["events"][0]["event"], "complete");
    let r = request(
        &client(),
        "POST",
        &format!("{url}/api/events/1/retry"),
        &[("content-type", "application/json")],
        "{}",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 409);
    assert!(String::from_utf8_lossy(&r.body).contains("no running `meethook listen`"));
    // Export: the bytes of `events export` for the same filter, once revealed.
    let d = data.path().to_str().unwrap();
    let (code, cli, _) = meethook_bytes(&[
        "events",
        "export",
        "--data",
        d,
        "--where",
        "data.bot_id = b1",
    ])
    .await;
    assert_eq!(code, 0);
    let filter = "where=data.bot_id%20%3D%20b1";
    let shown = request(
        &client(),
        "GET",
        &format!("{url}/api/export?{filter}&reveal=1"),
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!(shown.body, cli, "{}", String::from_utf8_lossy(&cli));
    let masked = request(
        &client(),
        "GET",
        &format!("{url}/api/export?{filter}"),
        &[],
        "",
    )
    .await
    .unwrap();
    assert!(
        !String::from_utf8_lossy(&masked.body).contains("czNjcmV0"),
        "the secret's base64"
    );
    assert_eq!(String::from_utf8_lossy(&masked.body).lines().count(), 1);
    interrupt(&child);
    assert_eq!(child.wait().await.unwrap().code(), Some(0));

    let (code, _, err) = run(&["inspect", "--data", "/nonexistent/meethook"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no journal at"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_replays_re_signed_with_the_signing_secret() {
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let handler = TestHandler::start().await;
    let data = tempdir();
    let body = br#"{"event":"complete","data":{"bot_id":"b1"}}"#;
    {
        let j = Journal::open(data.path()).unwrap();
        let ev = Event {
            seq: 1,
            received_at_ms: 1_700_000_000_000,
            method: "POST".into(),
            path: String::new(),
            headers: vec![meethook_proto::Header::new("svix-id", "msg_1")],
            body: Bytes::from_static(body),
        };
        j.insert("ch", &[ev], 1).unwrap();
    }
    let mut child = tokio::process::Command::new(BIN)
        .args(["inspect", "--inspect", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .env("MEETHOOK_SIGNING_SECRET", SECRET)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let (rest, _) = line_starting(&mut out, "Inspector: ").await;
    let url = rest.split_whitespace().next().unwrap().to_string();
    let req = serde_json::json!({"resign": true, "to": handler.url("/hook")});
    let r = request(
        &client(),
        "POST",
        &format!("{url}/api/events/1/replay"),
        &[("content-type", "application/json")],
        req.to_string(),
    )
    .await
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(r.status, 200, "{v}");
    assert_eq!(v["replay"]["delivered"], true, "{v}");
    let got = handler.received();
    let ts = got[0].header("svix-timestamp").unwrap();
    let key = meethook_proto::signature::SigningKey::from_secret(SECRET).unwrap();
    assert!(key.verify(
        "msg_1",
        &ts,
        body,
        &got[0].header("svix-signature").unwrap()
    ));
    interrupt(&child);
    assert_eq!(child.wait().await.unwrap().code(), Some(0));

    let (code, _, err) = run(&["inspect", "--signing-secret", "whsec_%%%"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--signing-secret"), "{err}");
}
