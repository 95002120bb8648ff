//! The binary's surface: exit codes, messages, graceful shutdown, `channel` and `dev`.

use std::path::Path;
use std::process::{Command, Stdio};

use meethook_testkit::{post, tempdir, RelayProcess, TestHandler};

const BIN: &str = env!("CARGO_BIN_EXE_meethook");

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn bad_arguments_exit_2_naming_the_problem() {
    let (code, _, err) = run(&["relay", "--max-body", "lots"]);
    assert_eq!(code, 2);
    assert!(err.contains("--max-body") && err.contains("16MiB"), "{err}");
    let (code, _, err) = run(&["listen", "--relay", "http://x"]);
    assert_eq!(code, 2);
    assert!(err.contains("--channel"), "{err}");
    let (code, _, _) = run(&["no-such-command"]);
    assert_eq!(code, 2);
    let (code, out, _) = run(&["listen", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("--forward-to"));
}

#[test]
fn runtime_failures_exit_1_saying_what_to_do() {
    let dir = tempdir();
    let data = dir.path().to_str().unwrap();
    let (code, _, err) = run(&[
        "listen",
        "--relay",
        "http://127.0.0.1:9",
        "--channel",
        "c",
        "--token",
        "t",
        "--forward-to",
        "localhost:3000",
        "--data",
        data,
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--forward-to") && err.contains("http://"),
        "{err}"
    );
    let (code, _, err) = run(&[
        "channel",
        "list",
        "--relay",
        "http://127.0.0.1:9",
        "--admin-token",
        "x",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("meethook relay"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_commands_and_sigterm() {
    let data = tempdir();
    let mut relay = RelayProcess::start(Path::new(BIN), data.path(), "127.0.0.1:0", "adm").await;
    let url = format!("http://{}", relay.addr);
    let (code, out, err) = run(&[
        "channel",
        "create",
        "--relay",
        &url,
        "--admin-token",
        "adm",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let id = v["id"].as_str().unwrap();
    assert!(v["token"].as_str().unwrap().starts_with("mht_"));
    assert_eq!(v["webhook_url"], format!("{url}/hooks/{id}"));
    let (code, _, err) = run(&["channel", "list", "--relay", &url, "--admin-token", "wrong"]);
    assert_eq!(code, 1);
    assert!(err.contains("401"), "{err}");
    let (code, out, _) = run(&["channel", "list", "--relay", &url, "--admin-token", "adm"]);
    assert_eq!(code, 0);
    assert!(out.contains(id));
    let (code, out, _) = run(&[
        "channel",
        "delete",
        id,
        "--relay",
        &url,
        "--admin-token",
        "adm",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("deleted"));
    let (code, _, _) = run(&[
        "channel",
        "delete",
        id,
        "--relay",
        &url,
        "--admin-token",
        "adm",
    ]);
    assert_eq!(code, 1);

    // SIGTERM: stop accepting, finish, exit 0.
    let pid = relay.proc.child.id().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = relay.proc.child.wait().await.unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_prints_the_webhook_url_and_forwards() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let handler = TestHandler::start().await;
    let data = tempdir();
    let mut child = tokio::process::Command::new(BIN)
        .args([
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--forward-to",
            &handler.url("/hook"),
            "--data",
        ])
        .arg(data.path())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut webhook = None;
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some(u) = line.strip_prefix("Webhook URL: ") {
            webhook = Some(u.to_string());
            break;
        }
    }
    let webhook = webhook.expect("dev prints the webhook URL");
    let body = r#"{"event":"bot.status_change","data":{"bot_id":"8d2f4c1a-1111","status":{"code":"joining_call"}}}"#;
    assert_eq!(post(&webhook, &[], body).await.seq(), Some(1));
    let got = handler.wait_delivered(1).await;
    assert_eq!(got[0].body, body.as_bytes());
    // The delivery line names the seq, event and bot.
    let line = loop {
        let l = lines.next_line().await.unwrap().expect("a delivery line");
        if l.contains("#1") {
            break l;
        }
    };
    assert!(
        line.contains("#1") && line.contains("bot.status_change") && line.contains("joining_call"),
        "{line}"
    );
    let pid = child.id().unwrap().to_string();
    Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert_eq!(child.wait().await.unwrap().code(), Some(0));
}
