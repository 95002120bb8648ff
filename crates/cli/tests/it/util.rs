//! Helpers shared by the test modules: the binary and ways to run it.

use std::process::Command;

use meethook_testkit::PATIENCE;

/// The `meethook` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_meethook");

/// Runs the binary and waits; `(exit code, stdout, stderr)`.
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Runs the binary with a bounded wait; `(exit code, stdout, stderr)`.
pub async fn meethook(args: &[&str]) -> (i32, String, String) {
    let out = meethook_bytes(args).await;
    (
        out.0,
        String::from_utf8_lossy(&out.1).into_owned(),
        String::from_utf8_lossy(&out.2).into_owned(),
    )
}

/// [`meethook`] with stdout and stderr as bytes.
pub async fn meethook_bytes(args: &[&str]) -> (i32, Vec<u8>, Vec<u8>) {
    let out = tokio::time::timeout(
        PATIENCE,
        tokio::process::Command::new(BIN)
            .args(args)
            .env_remove("MEETHOOK_DATA")
            .env_remove("MEETHOOK_FORWARD_TO")
            .env_remove("MEETHOOK_RESIGN_SECRET")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("meethook {args:?} did not finish"))
    .unwrap();
    (out.status.code().unwrap_or(-1), out.stdout, out.stderr)
}

/// Bytes as text, invalid UTF-8 replaced.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Each line of `out` parsed as JSON.
pub fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// `meethook dev` on an ephemeral port, forwarding to `forward_to`, journaling in `data`,
/// with `extra` flags; stdout and stderr piped, killed on drop.
pub fn dev(forward_to: &str, data: &std::path::Path, extra: &[&str]) -> tokio::process::Child {
    let mut args = vec!["--forward-to", forward_to];
    args.extend_from_slice(extra);
    dev_with(data, &args)
}

/// `meethook dev` on an ephemeral port journaling in `data`, with `extra` flags only (no
/// `--forward-to`: routes from a config file); stdout and stderr piped, killed on drop.
pub fn dev_with(data: &std::path::Path, extra: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(BIN)
        .args(["dev", "--listen", "127.0.0.1:0"])
        .arg("--data")
        .arg(data)
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Ctrl-C to a child (a graceful stop).
pub fn interrupt(child: &tokio::process::Child) {
    let pid = child.id().unwrap().to_string();
    Command::new("kill").args(["-INT", &pid]).status().unwrap();
}

/// `meethook listen` as a child whose stdout lines are collected.
pub struct Listen {
    _child: tokio::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Listen {
    /// Starts `meethook listen` (inspector off) with `extra` flags.
    pub fn start(
        relay: &meethook_testkit::TestRelay,
        ch: &str,
        token: &str,
        to: &str,
        data: &str,
        extra: &[&str],
    ) -> Self {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(BIN)
            .args([
                "listen",
                "--inspect",
                "off",
                "--relay",
                &relay.url(),
                "--channel",
                ch,
            ])
            .args(["--forward-to", to, "--data", data, "--timeout", "5s"])
            .args(extra)
            .env("MEETHOOK_TOKEN", token)
            .env_remove("MEETHOOK_DATA")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let seen = lines.clone();
        tokio::spawn(async move {
            while let Ok(Some(l)) = out.next_line().await {
                seen.lock().unwrap().push(l);
            }
        });
        Listen {
            _child: child,
            lines,
        }
    }

    /// Waits (up to PATIENCE) for a printed line matching `pred`, and returns it.
    pub async fn wait_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(l) = self.lines.lock().unwrap().iter().find(|l| pred(l)) {
                return l.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no line {what}; got:\n{}",
                self.lines.lock().unwrap().join("\n")
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The lines printed about event `seq`.
    pub fn lines_of(&self, seq: u64) -> Vec<String> {
        let lines = self.lines.lock().unwrap();
        lines.iter().filter(|l| is_about(l, seq)).cloned().collect()
    }
}

/// Whether a `listen` line is about event `seq` (`10:00:00.000  #5     …`).
pub fn is_about(line: &str, seq: u64) -> bool {
    line.split_whitespace().nth(1) == Some(&format!("#{seq}"))
}
