//! `meethook.toml`: keys for the flags, flags > env > file > defaults, where the file is
//! found, errors naming the key and the file, `meethook config check`.

use std::path::Path;
use std::process::Command;

use meethook_testkit::{post, tempdir, TestHandler};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::util::{dev, interrupt, BIN};

/// Runs the binary in `cwd` with `env`; `(exit code, stdout, stderr)`.
fn run_in(cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env_remove("MEETHOOK_DATA")
        .env_remove("MEETHOOK_CONFIG")
        .env_remove("MEETHOOK_FORWARD_TO")
        .env("XDG_CONFIG_HOME", cwd.join("no-user-config"))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The line of `key` in the `[section]` of `config check`'s output.
fn line_of<'a>(out: &'a str, section: &str, key: &str) -> &'a str {
    let start = out.find(&format!("[{section}]")).expect(section);
    out[start..]
        .lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in [{section}]:\n{out}"))
}

#[test]
fn config_check_shows_env_over_file_over_defaults_with_secrets_masked() {
    let dir = tempdir();
    std::fs::write(
        dir.path().join("meethook.toml"),
        r#"
token = "tok-very-secret"
data = "from-file"
[listen]
order = "bot"
parallel = 3
events = ["bot.*", "complete"]
[relay]
store = "postgres://u:pw-secret@db/x"
"#,
    )
    .unwrap();
    let (code, out, err) = run_in(
        dir.path(),
        &[("MEETHOOK_DATA", "from-env")],
        &["config", "check"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("# config file: meethook.toml"), "{out}");
    assert_eq!(
        line_of(&out, "listen", "data"),
        r#"data = "from-env"  # env MEETHOOK_DATA"#
    );
    assert_eq!(line_of(&out, "listen", "order"), r#"order = "bot"  # file"#);
    assert_eq!(line_of(&out, "listen", "parallel"), "parallel = 3  # file");
    assert_eq!(
        line_of(&out, "listen", "events"),
        r#"events = ["bot.*", "complete"]  # file"#
    );
    assert_eq!(
        line_of(&out, "dev", "order"),
        r#"order = "channel"  # default"#
    );
    assert_eq!(line_of(&out, "listen", "token"), r#"token = "***"  # file"#);
    assert!(
        !out.contains("tok-very-secret") && !out.contains("pw-secret"),
        "{out}"
    );
}

#[test]
fn unknown_keys_and_bad_values_name_the_key_and_the_file() {
    let dir = tempdir();
    let file = dir.path().join("custom.toml");
    let cases = [
        ("forward_too = \"http://x\"\n", "unknown key `forward_too`"),
        (
            "[listen]\nadmin_token = \"a\"\n",
            "unknown key `[listen] admin_token`",
        ),
        ("[listen]\ntimeout = \"soon\"\n", "`timeout` = \"soon\""),
        ("order = \"by-bot\"\n", "use channel, bot or event-key"),
        ("[[route]]\nforward = \"x\"\n", "[[route]] number 1"),
    ];
    for (text, want) in cases {
        std::fs::write(&file, text).unwrap();
        let path = file.to_str().unwrap();
        let (code, _, err) = run_in(dir.path(), &[], &["--config", path, "config", "check"]);
        assert_eq!(code, 2, "{text}: {err}");
        assert!(err.contains(want) && err.contains(path), "{text}: {err}");
    }
    let (code, _, err) = run_in(
        dir.path(),
        &[],
        &["config", "check", "--config", "nope.toml"],
    );
    assert_eq!(code, 2);
    assert!(err.contains("nope.toml does not exist"), "{err}");
}

#[test]
fn the_user_config_dir_is_used_without_a_local_file() {
    let dir = tempdir();
    let user = dir.path().join("xdg");
    std::fs::create_dir_all(user.join("meethook")).unwrap();
    std::fs::write(user.join("meethook/meethook.toml"), "max_attempts = 4\n").unwrap();
    let xdg = user.to_str().unwrap();
    let (code, out, err) = run_in(
        dir.path(),
        &[("XDG_CONFIG_HOME", xdg)],
        &["config", "check"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("xdg/meethook/meethook.toml"), "{out}");
    assert_eq!(
        line_of(&out, "listen", "max_attempts"),
        "max_attempts = 4  # file"
    );
    // A file in the working directory wins over it.
    std::fs::write(dir.path().join("meethook.toml"), "max_attempts = 5\n").unwrap();
    let (_, out, _) = run_in(
        dir.path(),
        &[("XDG_CONFIG_HOME", xdg)],
        &["config", "check"],
    );
    assert_eq!(
        line_of(&out, "listen", "max_attempts"),
        "max_attempts = 5  # file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_takes_its_settings_from_the_file_and_flags_win() {
    let handler = TestHandler::start().await;
    let data = tempdir();
    let file = data.path().join("m.toml");
    // `json` comes from the file; `forward_to` there loses to the flag.
    std::fs::write(
        &file,
        "[dev]\njson = true\nforward_to = \"http://127.0.0.1:1/from-file\"\ninspect = \"off\"\n",
    )
    .unwrap();
    let mut child = dev(
        &handler.url("/from-flag"),
        data.path(),
        &["--config", file.to_str().unwrap()],
    );
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next_line().await.unwrap().expect("a start-up line");
    let started: serde_json::Value = serde_json::from_str(&first).expect(&first);
    let webhook = started["webhook_url"].as_str().unwrap();
    assert_eq!(post(webhook, &[], "{}").await.seq(), Some(1));
    let got = handler.wait_delivered(1).await;
    assert_eq!(got[0].path, "/from-flag");
    interrupt(&child);
    assert_eq!(child.wait().await.unwrap().code(), Some(0));
}
