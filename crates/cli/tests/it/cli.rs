//! The binary's surface: exit codes, messages, graceful shutdown, `channel` and `dev`.

use std::path::Path;
use std::process::{Command, Stdio};

use meethook_testkit::{post, tempdir, RelayProcess, TestHandler};

use crate::util::{dev, interrupt, run, BIN};

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

/// `listen` with every required flag, the given ones replacing the defaults.
fn listen_with(extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "listen",
        "--inspect",
        "off",
        "--channel",
        "c",
        "--token",
        "t",
    ];
    if !extra.contains(&"--relay") {
        args.extend(["--relay", "http://127.0.0.1:9"]);
    }
    if !extra.contains(&"--forward-to") {
        args.extend(["--forward-to", "http://127.0.0.1:9/hook"]);
    }
    args.extend(extra);
    run(&args)
}

#[test]
fn overflowing_or_zero_units_exit_2_without_a_panic() {
    for (args, needle) in [
        (&["--timeout", "99999999999999999999d"][..], "too long"),
        (
            &["--timeout", "150000000000000d150000000000000d"][..],
            "too long",
        ),
        (&["--timeout", "0s"][..], "zero"),
        (&["--max-backoff", "0ms"][..], "zero"),
        (
            &["--max-recording-size", "99999999999999999999GiB"][..],
            "too large",
        ),
    ] {
        let (code, out, err) = listen_with(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(
            !err.contains("panicked") && out.is_empty(),
            "{args:?}: {err}"
        );
    }
    let (code, _, err) = run(&["events", "list", "--since", "99999999999999999999d"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("too long"), "{err}");
    let (code, _, err) = run(&["relay", "--max-body", "0"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(&["relay", "--ping-interval", "0s"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn bad_urls_are_refused_before_anything_starts() {
    for url in [
        "localhost:3000/hook",
        "ftp://example.com/x",
        "http://:3000/x",
    ] {
        let (code, out, err) = listen_with(&["--forward-to", url]);
        assert_eq!(code, 2, "{url}: {err}");
        assert!(
            err.contains("--forward-to") && err.contains("http://localhost:3000/hook"),
            "{url}: {err}"
        );
        assert!(
            out.is_empty() && !err.contains("meethook listen:"),
            "{url}: {err}"
        );
    }
    let (code, _, err) = run(&["dev", "--forward-to", "localhost:3000"]);
    assert_eq!(code, 2, "{err}");
    for url in ["127.0.0.1:8787", "http://:8787", "gopher://relay"] {
        let (code, _, err) = listen_with(&["--relay", url]);
        assert_eq!(code, 2, "{url}: {err}");
        assert!(err.contains("--relay"), "{url}: {err}");
    }
    let (code, _, err) = run(&[
        "channel",
        "list",
        "--relay",
        "relay.example",
        "--admin-token",
        "a",
    ]);
    assert_eq!(code, 2, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_to_a_plain_relay_says_so() {
    let data = tempdir();
    let relay = RelayProcess::start(Path::new(BIN), data.path(), "127.0.0.1:0", "adm").await;
    let url = format!("https://{}", relay.addr);
    let (code, _, err) = run(&["channel", "list", "--relay", &url, "--admin-token", "adm"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("does not speak TLS") && !err.contains("--ca-cert"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_listen_takes_a_port_or_a_host_name() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    // A free port, then released: `--listen PORT` and `--listen localhost:PORT` bind it.
    for form in ["{port}", "localhost:{port}"] {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data = tempdir();
        let listen = form.replace("{port}", &port.to_string());
        let mut child = tokio::process::Command::new(BIN)
            .args(["relay", "--listen", &listen, "--data"])
            .arg(data.path())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next_line().await.unwrap().expect("relay starts");
        assert_eq!(
            first,
            format!("listening on http://127.0.0.1:{port}"),
            "{listen}"
        );
    }
}

#[test]
fn runtime_failures_exit_1_saying_what_to_do() {
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

/// `stderr`'s `error: …` line split at `: ` (message, then each cause), checked to hold no
/// part twice: a cause both interpolated and chained as `source()` would show twice.
fn assert_each_part_once(stderr: &str) {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    let parts: Vec<&str> = line.split(": ").collect();
    for (i, p) in parts.iter().enumerate() {
        assert!(!parts[..i].contains(p), "{p:?} twice in {stderr}");
    }
}

#[test]
fn each_cause_of_an_error_is_printed_once() {
    // A journal that SQLite cannot read.
    let dir = tempdir();
    let data = dir.path().to_str().unwrap();
    std::fs::write(dir.path().join("journal.sqlite"), vec![0x5a; 8192]).unwrap();
    for args in [
        &["events", "list", "--data", data][..],
        &["events", "show", "1", "--data", data],
        &["events", "export", "--data", data],
        &["events", "pin", "1", "--data", data],
        &["replay", "1", "--data", data, "--to", "http://127.0.0.1:9/"],
    ] {
        let (code, _, err) = run(args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert_eq!(
            err.matches("file is not a database").count(),
            1,
            "{args:?}: {err}"
        );
        assert_eq!(err.matches("journal.sqlite").count(), 1, "{args:?}: {err}");
        assert_each_part_once(&err);
    }

    // A control socket path too long for a Unix socket (an I/O error, not "none running").
    let long = dir.path().join("d".repeat(120));
    std::fs::create_dir(&long).unwrap();
    let long = long.to_str().unwrap();
    let (code, _, err) = run(&["events", "retry", "1", "--data", long, "--channel", "c"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.matches("control socket").count(), 1, "{err}");
    assert_each_part_once(&err);
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
    let mut child = dev(&handler.url("/hook"), data.path(), &["--inspect", "off"]);
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
    interrupt(&child);
    assert_eq!(child.wait().await.unwrap().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_json_prints_only_json_lines() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let handler = TestHandler::start().await;
    let data = tempdir();
    let mut child = dev(
        &handler.url("/hook"),
        data.path(),
        &["--json", "--inspect", "off"],
    );
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next_line().await.unwrap().expect("a start-up line");
    let started: serde_json::Value = serde_json::from_str(&first).expect(&first);
    assert_eq!(started["kind"], "started", "{first}");
    let webhook = started["webhook_url"].as_str().unwrap().to_string();
    assert!(webhook.ends_with("/hooks/dev"), "{first}");
    // `ready` comes once the in-process listener is connected and caught up.
    let ready = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            let line = lines.next_line().await.unwrap().expect("a ready line");
            let v: serde_json::Value = serde_json::from_str(&line).expect(&line);
            if v["kind"] == "ready" {
                break v;
            }
        }
    })
    .await
    .expect("a ready line within 30 s");
    assert_eq!(
        (ready["channel"].as_str(), ready["seq"].as_u64()),
        (Some("dev"), Some(0))
    );
    assert_eq!(post(&webhook, &[], "{}").await.seq(), Some(1));
    handler.wait_delivered(1).await;
    // Every line is JSON (connection news too); the attempt line says it was delivered.
    let v = loop {
        let line = lines.next_line().await.unwrap().expect("a delivery line");
        let v: serde_json::Value = serde_json::from_str(&line).expect(&line);
        assert!(v["kind"].is_string() && v["time"].is_string(), "{line}");
        if v["kind"] == "attempt" {
            break v;
        }
    };
    assert_eq!(
        (v["seq"].as_u64(), v["result"].as_str()),
        (Some(1), Some("delivered"))
    );
    interrupt(&child);
    assert_eq!(child.wait().await.unwrap().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_all_interfaces_relay_hands_out_a_reachable_url() {
    let data = tempdir();
    let relay = RelayProcess::start(Path::new(BIN), data.path(), "0.0.0.0:0", "adm").await;
    let url = format!("http://127.0.0.1:{}", relay.addr.port());
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
    let webhook = v["webhook_url"].as_str().unwrap();
    assert!(!webhook.contains("0.0.0.0"), "{webhook}");
    assert!(
        webhook.contains(&format!(":{}/hooks/", relay.addr.port())),
        "{webhook}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_json_says_ready_once_caught_up_and_only_once() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let handler = TestHandler::start().await;
    let relay_data = tempdir();
    let mut relay =
        RelayProcess::start(Path::new(BIN), relay_data.path(), "127.0.0.1:0", "adm").await;
    let url = relay.url();
    let (channel, token) = meethook_testkit::create_channel(&url, "adm").await;
    // A backlog the listener must journal before it is ready.
    for i in 1..=3u64 {
        let body = format!("{{\"n\":{i}}}");
        assert_eq!(post(&relay.hook(&channel), &[], body).await.seq(), Some(i));
    }
    let data = tempdir();
    let mut cmd = meethook_testkit::ListenProcess::command(
        Path::new(BIN),
        &url,
        &channel,
        &token,
        &handler.url("/hook"),
        data.path(),
    );
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut kinds = Vec::new();
    let ready = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            let line = lines.next_line().await.unwrap().expect("a ready line");
            let v: serde_json::Value = serde_json::from_str(&line).expect(&line);
            kinds.push(v["kind"].as_str().unwrap().to_string());
            if v["kind"] == "ready" {
                break v;
            }
        }
    })
    .await
    .expect("a ready line within 30 s");
    assert!(kinds.contains(&"connected".to_string()), "{kinds:?}");
    assert_eq!(ready["seq"].as_u64(), Some(3), "{ready}");
    assert_eq!(ready["channel"].as_str(), Some(channel.as_str()));
    handler.wait_delivered(3).await;

    // A relay restart: connected and caught_up again, but no second `ready`.
    relay.proc.kill9().await;
    let relay = RelayProcess::start(
        Path::new(BIN),
        relay_data.path(),
        &relay.addr.to_string(),
        "adm",
    )
    .await;
    assert_eq!(post(&relay.hook(&channel), &[], "{}").await.seq(), Some(4));
    handler.wait_delivered(4).await;
    let mut after = Vec::new();
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(std::time::Duration::from_secs(2), lines.next_line()).await
    {
        let v: serde_json::Value = serde_json::from_str(&line).expect(&line);
        after.push(v["kind"].as_str().unwrap().to_string());
    }
    assert!(after.contains(&"connected".to_string()), "{after:?}");
    assert!(!after.contains(&"ready".to_string()), "{after:?}");
    let _ = child.start_kill();
}

#[test]
fn completions_complete_commands_and_flags_in_bash() {
    let (code, script, err) = run(&["completions", "bash"]);
    assert_eq!(code, 0, "{err}");
    // Source the script in a real bash and ask it what `meethook li<TAB>` and
    // `meethook listen --forw<TAB>` become.
    let probe = format!(
        "{script}\n\
         COMP_WORDS=(meethook li); COMP_CWORD=1; _meethook meethook li meethook; echo \"${{COMPREPLY[*]}}\"\n\
         COMP_WORDS=(meethook listen --forw); COMP_CWORD=2; _meethook meethook --forw listen; echo \"${{COMPREPLY[*]}}\""
    );
    let out = Command::new("bash").arg("-c").arg(probe).output().unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["listen", "--forward-to"], "{out}");
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let (code, script, err) = run(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(script.contains("forward-to"), "{shell}: {script}");
    }
    let (code, _, err) = run(&["completions", "nushell"]);
    assert_eq!(code, 2);
    assert!(err.contains("bash") && err.contains("zsh"), "{err}");
}

#[test]
fn man_prints_a_page_and_writes_one_per_subcommand() {
    let (code, page, err) = run(&["man"]);
    assert_eq!(code, 0, "{err}");
    assert!(page.contains(".TH meethook 1"), "{page}");
    let dir = tempdir();
    let out = dir.path().join("man1");
    let (code, said, err) = run(&["man", "--dir", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(said.contains("man pages"), "{said}");
    let listen = std::fs::read_to_string(out.join("meethook-listen.1")).unwrap();
    assert!(listen.contains("forward\\-to"), "{listen}");
    assert!(out.join("meethook-events-retry.1").is_file());
}
