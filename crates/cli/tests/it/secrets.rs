//! No token or sender secret ever reaches a log or an answer; data files are private.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use meethook_testkit::{client, post, request, tempdir, TestHandler};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::util::BIN;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_run_logs_no_secret_and_keeps_files_private() {
    let admin = "adm_5ecret_admin_token_do_not_log";
    let sender_secret = "mb_5ecret_sender_key_do_not_log";
    let data = tempdir();
    let jdata = tempdir();
    let mut relay = tokio::process::Command::new(BIN)
        .args(["relay", "--listen", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .env("MEETHOOK_ADMIN_TOKEN", admin)
        .env("MEETHOOK_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(relay.stdout.take().unwrap()).lines();
    let first = out.next_line().await.unwrap().unwrap();
    let base = first.strip_prefix("listening on ").unwrap().to_string();

    let auth = format!("Bearer {admin}");
    let c = client();
    let body = format!(r#"{{"sender_secret":"{sender_secret}"}}"#);
    let r = request(
        &c,
        "POST",
        &format!("{base}/api/channels"),
        &[("authorization", auth.as_str())],
        body,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let (ch, token) = (
        v["id"].as_str().unwrap().to_string(),
        v["token"].as_str().unwrap().to_string(),
    );
    assert!(
        !String::from_utf8_lossy(&r.body).contains(sender_secret),
        "secret not echoed"
    );

    let handler = TestHandler::start().await;
    let mut listen = tokio::process::Command::new(BIN)
        .args([
            "listen",
            "--inspect",
            "off",
            "--relay",
            &base,
            "--channel",
            &ch,
            "--forward-to",
            &handler.url("/"),
            "--data",
        ])
        .arg(jdata.path())
        .env("MEETHOOK_TOKEN", &token)
        .env("MEETHOOK_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let hook = format!("{base}/hooks/{ch}");
    assert_eq!(
        post(&hook, &[("x-meeting-baas-api-key", "wrong-guess")], "x")
            .await
            .status,
        401
    );
    assert_eq!(
        post(&hook, &[("x-meeting-baas-api-key", sender_secret)], "ok")
            .await
            .status,
        200
    );
    let wrong = request(
        &c,
        "GET",
        &format!("{base}/api/channels"),
        &[("authorization", "Bearer nope")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(wrong.status, 401);
    handler.wait_delivered(1).await;

    for p in [&relay, &listen] {
        let pid = p.id().unwrap().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
    }
    let mut logs = String::new();
    for child in [&mut relay, &mut listen] {
        let mut s = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut s)
            .await
            .unwrap();
        if let Some(mut o) = child.stdout.take() {
            o.read_to_string(&mut s).await.unwrap();
        }
        assert_eq!(
            child.wait().await.unwrap().code(),
            Some(0),
            "clean exit on SIGTERM"
        );
        logs.push_str(&s);
    }
    while let Ok(Some(l)) = out.next_line().await {
        logs.push_str(&l);
    }
    assert!(
        logs.contains("listener connected"),
        "logs were captured: {logs}"
    );
    for secret in [admin, sender_secret, token.as_str()] {
        assert!(
            !logs.contains(secret),
            "a secret appeared in the logs:\n{}",
            logs.replace(secret, "<SECRET>")
        );
    }

    // Store and journal files (and SQLite's side files) are readable by the owner only.
    for dir in [data.path(), jdata.path()] {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let mode = e.metadata().unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{} is mode {:o}", e.path().display(), mode);
        }
    }
}
