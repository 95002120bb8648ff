//! The real `meethook relay` and `meethook listen` as child processes, and what `/proc` says
//! about them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;

/// How long a child may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A child process, killed on drop; its stderr goes to a log file.
pub struct Proc {
    child: tokio::process::Child,
    pid: u32,
    name: &'static str,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd` as `name`, its stderr to `log`.
    pub fn spawn(
        mut cmd: tokio::process::Command,
        name: &'static str,
        log: PathBuf,
    ) -> anyhow::Result<Proc> {
        let err =
            std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        cmd.stderr(Stdio::from(err)).kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("spawn {name}"))?;
        let pid = child.id().ok_or_else(|| anyhow!("{name} exited at once"))?;
        Ok(Proc {
            child,
            pid,
            name,
            log,
        })
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `Err` (with the end of its log) when the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!(
                "{} exited ({status}); end of its log {}:\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log)
            ),
            Err(e) => bail!("{}: {e}", self.name),
        }
    }

    /// User + system CPU time so far.
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        cpu_of(self.pid)
    }

    /// Peak resident set size (`VmHWM`), bytes.
    pub fn peak_rss(&self) -> anyhow::Result<u64> {
        status_kb(self.pid, "VmHWM").map(|kb| kb * 1024)
    }

    /// Resident set size now (`VmRSS`), bytes.
    pub fn rss(&self) -> anyhow::Result<u64> {
        status_kb(self.pid, "VmRSS").map(|kb| kb * 1024)
    }

    /// Kills the process (`SIGKILL`) and reaps it.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Clock ticks per second for `/proc/PID/stat` (`getconf CLK_TCK`, else 100).
pub fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t: &u64| t > 0)
            .unwrap_or(100)
    })
}

/// User + system CPU time of `pid` (`/proc/PID/stat` utime + stime).
pub fn cpu_of(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("odd /proc/{pid}/stat"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        f.get(i - 3)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("no field {i} in /proc/{pid}/stat"))
    };
    let total = ticks(14)? + ticks(15)?;
    Ok(Duration::from_secs_f64(total as f64 / clock_ticks() as f64))
}

/// A `kB` line of `/proc/PID/status` (`pid` 0: this process).
pub fn status_kb(pid: u32, key: &str) -> anyhow::Result<u64> {
    let path = if pid == 0 {
        "/proc/self/status".to_string()
    } else {
        format!("/proc/{pid}/status")
    };
    status_kb_file(&path, key).ok_or_else(|| anyhow!("no {key} in {path}"))
}

/// A `Key:   123 kB` line of a `/proc` file such as `/proc/meminfo`.
pub fn status_kb_file(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix(key)?
            .strip_prefix(':')?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    })
}

/// A running `meethook relay`.
pub struct Relay {
    /// The process.
    pub proc: Proc,
    /// Where it listens.
    pub addr: SocketAddr,
    admin_token: String,
}

/// A channel created through the API.
#[derive(Debug, Clone)]
pub struct ChannelInfo {
    /// Channel id.
    pub id: String,
    /// Its listener token.
    pub token: String,
}

/// Extra `meethook relay` flags this binary needs for a benchmark: the per-channel rate
/// limit (when the binary has one) is turned off so capacity, not policy, is measured.
pub fn relay_bench_flags(bin: &Path) -> Vec<String> {
    let help = std::process::Command::new(bin)
        .args(["relay", "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut flags = Vec::new();
    if help.contains("--rate-limit") {
        flags.extend(["--rate-limit".to_string(), "0".to_string()]);
    }
    flags
}

impl Relay {
    /// Starts `meethook relay` on 127.0.0.1 with its store in `data`, plus `extra` flags.
    pub async fn start(
        bin: &Path,
        data: &Path,
        max_body: &str,
        extra: &[String],
    ) -> anyhow::Result<Relay> {
        std::fs::create_dir_all(data)?;
        let admin_token = format!(
            "bench-admin-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        );
        let mut cmd = tokio::process::Command::new(bin);
        cmd.args(["relay", "--listen", "127.0.0.1:0", "--max-body", max_body])
            .arg("--admin-token")
            .arg(&admin_token)
            .arg("--data")
            .arg(data.join("store"))
            .args(extra)
            .stdout(Stdio::piped())
            .stdin(Stdio::null());
        let mut proc = Proc::spawn(cmd, "relay", data.join("relay.log"))?;
        let stdout = proc.child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(START_TIMEOUT, lines.next_line()).await;
        let line = match first {
            Ok(Ok(Some(line))) => line,
            _ => {
                proc.check_alive()?;
                bail!("relay did not print its address within {START_TIMEOUT:?}");
            }
        };
        let addr = line
            .strip_prefix("listening on http://")
            .ok_or_else(|| anyhow!("unexpected first line from the relay: {line:?}"))?
            .trim()
            .parse()
            .with_context(|| format!("relay address in {line:?}"))?;
        // Keep draining stdout so the relay never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Relay {
            proc,
            addr,
            admin_token,
        })
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `POST /api/channels` with the admin token.
    pub async fn create_channel(&self) -> anyhow::Result<ChannelInfo> {
        let stream = TcpStream::connect(self.addr).await?;
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = http::Request::post("/api/channels")
            .header(http::header::HOST, self.addr.to_string())
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.admin_token),
            )
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(b"{}")))?;
        let resp = tx.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        if status != 201 {
            bail!(
                "creating a channel answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        let field = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_str())
                .map(str::to_string)
                .ok_or_else(|| anyhow!("no {k:?} in {v}"))
        };
        Ok(ChannelInfo {
            id: field("id")?,
            token: field("token")?,
        })
    }
}

/// Starts `meethook listen` for `channel` forwarding to `forward_to`, journal in `data`.
pub fn start_listen(
    bin: &Path,
    relay: &Relay,
    channel: &ChannelInfo,
    forward_to: &str,
    data: &Path,
) -> anyhow::Result<Proc> {
    start_listen_with(bin, relay, channel, forward_to, data, &[])
}

/// [`start_listen`] with `extra` flags (e.g. `--inspect ADDR`).
pub fn start_listen_with(
    bin: &Path,
    relay: &Relay,
    channel: &ChannelInfo,
    forward_to: &str,
    data: &Path,
    extra: &[String],
) -> anyhow::Result<Proc> {
    std::fs::create_dir_all(data)?;
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("listen")
        .arg("--relay")
        .arg(relay.url())
        .arg("--channel")
        .arg(&channel.id)
        .arg("--token")
        .arg(&channel.token)
        .arg("--forward-to")
        .arg(forward_to)
        .arg("--data")
        .arg(data.join("journal"))
        .arg("--json")
        .args(extra)
        .stdout(Stdio::null())
        .stdin(Stdio::null());
    Proc::spawn(cmd, "listen daemon", data.join("listen.log"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_proc_files() {
        assert!(status_kb(0, "VmRSS").unwrap() > 0);
        assert!(status_kb(0, "VmHWM").unwrap() > 0);
        assert!(cpu_of(std::process::id()).is_ok());
        assert!(clock_ticks() > 0);
    }
}
