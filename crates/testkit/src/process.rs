//! The real `meethook` binary as a child process ([`RelayProcess`], [`ListenProcess`]), for
//! `kill -9` tests.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::PATIENCE;

/// The `meethook` binary as a child process, killed on drop.
pub struct Child {
    /// The process.
    pub child: tokio::process::Child,
}

impl Child {
    /// `kill -9`.
    pub async fn kill9(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// `meethook relay` as a child process.
pub struct RelayProcess {
    /// The child.
    pub proc: Child,
    /// Address it listens on.
    pub addr: SocketAddr,
    /// The last lines of its stderr when [`RelayProcess::start_logged`] started it.
    log: Option<Arc<Mutex<VecDeque<String>>>>,
}

impl RelayProcess {
    /// Starts `bin relay --data DATA --listen LISTEN` and waits for `listening on`.
    pub async fn start(bin: &Path, data: &Path, listen: &str, admin: &str) -> RelayProcess {
        Self::spawn(bin, data, listen, admin, &[], false).await
    }

    /// [`RelayProcess::start`] with `extra` arguments and `MEETHOOK_LOG=warn`; the last 100
    /// lines of its stderr are printed if the test fails.
    pub async fn start_logged(
        bin: &Path,
        data: &Path,
        listen: &str,
        admin: &str,
        extra: &[&str],
    ) -> RelayProcess {
        Self::spawn(bin, data, listen, admin, extra, true).await
    }

    async fn spawn(
        bin: &Path,
        data: &Path,
        listen: &str,
        admin: &str,
        extra: &[&str],
        logged: bool,
    ) -> RelayProcess {
        let mut cmd = tokio::process::Command::new(bin);
        cmd.args(["relay", "--listen", listen, "--admin-token", admin])
            .args(extra)
            .arg("--data")
            .arg(data)
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        if logged {
            cmd.env("MEETHOOK_LOG", "warn").stderr(Stdio::piped());
        } else {
            cmd.stderr(Stdio::inherit());
        }
        let mut child = cmd.spawn().expect("spawn relay");
        let log = child.stderr.take().map(|stderr| {
            let log = Arc::new(Mutex::new(VecDeque::new()));
            let mut errs = BufReader::new(stderr).lines();
            let tail = log.clone();
            tokio::spawn(async move {
                while let Ok(Some(l)) = errs.next_line().await {
                    let mut t = tail.lock().unwrap();
                    if t.len() >= 100 {
                        t.pop_front();
                    }
                    t.push_back(l);
                }
            });
            log
        });
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .expect("relay did not start")
            .unwrap();
        let Some(line) = line else {
            if let Some(log) = &log {
                tokio::time::sleep(Duration::from_millis(200)).await;
                panic!("relay exited before listening: {:?}", log.lock().unwrap());
            }
            panic!("relay exited before listening");
        };
        let addr = line
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        RelayProcess {
            proc: Child { child },
            addr,
            log,
        }
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The webhook URL of `channel`.
    pub fn hook(&self, channel: &str) -> String {
        format!("{}/hooks/{channel}", self.url())
    }

    /// The last lines of its stderr so far (empty unless started with `start_logged`).
    pub fn log_tail(&self) -> Vec<String> {
        self.log
            .as_ref()
            .map(|l| l.lock().unwrap().iter().cloned().collect())
            .unwrap_or_default()
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        if let (true, Some(log)) = (std::thread::panicking(), &self.log) {
            eprintln!("--- relay {} log tail ---", self.addr);
            for l in log.lock().unwrap().iter() {
                eprintln!("{l}");
            }
        }
    }
}

/// `meethook listen` as a child process.
pub struct ListenProcess {
    /// The child.
    pub proc: Child,
}

impl ListenProcess {
    /// Starts `bin listen …` with quick retry caps.
    pub fn start(
        bin: &Path,
        relay: &str,
        channel: &str,
        token: &str,
        forward_to: &str,
        data: &Path,
    ) -> ListenProcess {
        Self::start_with(bin, relay, channel, token, forward_to, data, &[])
    }

    /// [`ListenProcess::start`] with `extra` flags (`--order bot`, …).
    pub fn start_with(
        bin: &Path,
        relay: &str,
        channel: &str,
        token: &str,
        forward_to: &str,
        data: &Path,
        extra: &[&str],
    ) -> ListenProcess {
        let mut cmd = Self::command(bin, relay, channel, token, forward_to, data);
        let child = cmd.args(extra).spawn().expect("spawn listen");
        ListenProcess {
            proc: Child { child },
        }
    }

    /// The command [`ListenProcess::start`] runs, to add flags or environment to
    /// (stdout is dropped, stderr inherited).
    pub fn command(
        bin: &Path,
        relay: &str,
        channel: &str,
        token: &str,
        forward_to: &str,
        data: &Path,
    ) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(bin);
        cmd.args([
            "listen",
            "--relay",
            relay,
            "--channel",
            channel,
            "--forward-to",
            forward_to,
            "--max-backoff",
            "200ms",
            "--timeout",
            "5s",
            "--json",
            "--inspect",
            "off",
            "--data",
        ])
        .arg(data)
        .env("MEETHOOK_TOKEN", token)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
        cmd
    }
}
