//! Phase `peers` (`--peers`): the same 1 KiB load through plain TCP tunnels that store
//! nothing (bore, rathole; `cargo install bore-cli rathole`), against the direct baseline of
//! the same phase, so meethook's figures above can be read beside them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::ctx::Ctx;
use crate::handler::{Handler, Tracker};
use crate::latency::serial_run;
use crate::load::Target;
use crate::procs::Proc;
use crate::report::{fmt_dur, fmt_rate, thousands};
use crate::stats::{dur_ratio, pct, ratio, sorted};
use crate::throughput::{checked_flood, direct_flood, per_thousand};

/// A running tunnel: its processes and the public address senders post to.
struct Tunnel {
    procs: Vec<Proc>,
    addr: SocketAddr,
}

impl Tunnel {
    /// `bore server` and `bore local` exposing `to` on a fresh loopback port.
    async fn bore(bin: &Path, to: SocketAddr, dir: &Path) -> anyhow::Result<Tunnel> {
        let port = free_port()?.to_string();
        let mut server = tokio::process::Command::new(bin);
        server.args([
            "server",
            "--bind-addr",
            "127.0.0.1",
            "--min-port",
            &port,
            "--max-port",
            &port,
        ]);
        let server = Proc::spawn(server, "bore server", dir.join("bore-server.log"))?;
        // bore's control port is fixed.
        wait_port("127.0.0.1:7835".parse()?).await?;
        let mut client = tokio::process::Command::new(bin);
        client.args(["local", &to.port().to_string(), "--local-host", "127.0.0.1"]);
        client.args(["--to", "127.0.0.1", "--port", &port]);
        let client = Proc::spawn(client, "bore local", dir.join("bore-local.log"))?;
        let t = Tunnel {
            procs: vec![server, client],
            addr: format!("127.0.0.1:{port}").parse()?,
        };
        t.ready().await?;
        Ok(t)
    }

    /// A rathole server and client exposing `to` on a fresh loopback port.
    async fn rathole(bin: &Path, to: SocketAddr, dir: &Path) -> anyhow::Result<Tunnel> {
        let (control, public) = (free_port()?, free_port()?);
        let server_cfg = dir.join("rathole-server.toml");
        std::fs::write(
            &server_cfg,
            format!(
                "[server]\nbind_addr = \"127.0.0.1:{control}\"\n\n[server.services.hook]\n\
                 token = \"bench\"\nbind_addr = \"127.0.0.1:{public}\"\n"
            ),
        )?;
        let client_cfg = dir.join("rathole-client.toml");
        std::fs::write(
            &client_cfg,
            format!(
                "[client]\nremote_addr = \"127.0.0.1:{control}\"\n\n[client.services.hook]\n\
                 token = \"bench\"\nlocal_addr = \"{to}\"\n"
            ),
        )?;
        let mut server = tokio::process::Command::new(bin);
        server.arg("--server").arg(&server_cfg);
        let server = Proc::spawn(server, "rathole server", dir.join("rathole-server.log"))?;
        wait_port(format!("127.0.0.1:{control}").parse()?).await?;
        let mut client = tokio::process::Command::new(bin);
        client.arg("--client").arg(&client_cfg);
        let client = Proc::spawn(client, "rathole client", dir.join("rathole-client.log"))?;
        let t = Tunnel {
            procs: vec![server, client],
            addr: format!("127.0.0.1:{public}").parse()?,
        };
        t.ready().await?;
        Ok(t)
    }

    /// Waits until a request goes through to the handler and back.
    async fn ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if probe(self.addr).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(anyhow!(
                    "tunnel at {} carried no request within 20 s",
                    self.addr
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// CPU of all its processes so far.
    fn cpu(&self) -> anyhow::Result<Duration> {
        self.procs.iter().map(|p| p.cpu()).sum()
    }

    async fn stop(self) {
        for p in self.procs {
            p.stop().await;
        }
    }
}

/// One request through `addr` answered 2xx (the handler answers anything).
async fn probe(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req =
            "POST /probe HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        s.write_all(req.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await.ok()?;
        Some(answer.starts_with(b"HTTP/1.1 2"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Some(true))
    )
}

async fn wait_port(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            return Err(anyhow!("nothing listens on {addr} after 10 s"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `name` on the PATH or in `~/.cargo/bin`.
fn find(name: &str) -> Option<PathBuf> {
    let cargo_bin = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin"));
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(cargo_bin)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Runs every installed tunnel through the 1-sender and throughput loads.
pub(crate) async fn phase_peers(ctx: &mut Ctx) -> anyhow::Result<()> {
    let peers = [("bore", "bore"), ("rathole", "rathole")];
    let found: Vec<(&str, PathBuf)> = peers
        .iter()
        .filter_map(|(name, bin)| find(bin).map(|p| (*name, p)))
        .collect();
    for (name, _) in peers
        .iter()
        .filter(|(n, _)| !found.iter().any(|(f, _)| f == n))
    {
        ctx.report.peer_notes.push(format!(
            "{name}: not installed (`cargo install bore-cli rathole`); skipped"
        ));
        if *name == "bore" {
            ctx.report.facts.bore_missing = Some(
                "bore not measured: not installed (`cargo install bore-cli`, then `--peers`)"
                    .into(),
            );
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    let count = ctx.plan.bodies[0].1;
    // The direct baseline of this phase.
    let direct_lat = {
        let handler = Handler::start(Tracker::new(0), false).await?;
        let target = Target {
            addr: handler.addr(),
            path: "/hook".into(),
            relay: false,
        };
        sorted(
            &serial_run(
                ctx,
                "peers phase: direct, 1 sender, 1 KiB",
                &handler,
                &target,
                1 << 10,
                count,
            )
            .await
            .e2e_latency,
        )
    };
    let mut direct_rate = Vec::new();
    for &c in &ctx.plan.concurrency.clone() {
        let d = direct_flood(
            ctx,
            c,
            1 << 10,
            &format!("peers phase: direct, {c} senders"),
        )
        .await?;
        direct_rate.push((c, d.rate));
    }
    for (name, bin) in found {
        let dir = ctx.dir(&format!("peer-{name}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let handler = Handler::start(Tracker::new(0), false).await?;
        let start = |to| async move {
            match name {
                "bore" => Tunnel::bore(&bin, to, &dir).await,
                _ => Tunnel::rathole(&bin, to, &dir).await,
            }
        };
        let tunnel = start(handler.addr())
            .await
            .with_context(|| format!("start {name}"))?;
        let target = Target {
            addr: tunnel.addr,
            path: "/hook".into(),
            relay: false,
        };
        let label = format!("{name}, 1 sender, 1 KiB");
        let lat = sorted(
            &serial_run(ctx, &label, &handler, &target, 1 << 10, count)
                .await
                .e2e_latency,
        );
        if name == "bore" && !lat.is_empty() {
            ctx.report.facts.bore_p50 = Some(pct(&lat, 0.5));
        }
        for (p, q) in [("p50", 0.5), ("p99", 0.99)] {
            ctx.report.peer(
                format!(
                    "{name}: e2e latency {p}, 1 sender, 1 KiB (n={})",
                    thousands(lat.len() as u64)
                ),
                fmt_dur(pct(&lat, q)),
                fmt_dur(pct(&direct_lat, q)),
                dur_ratio(pct(&lat, q), pct(&direct_lat, q)),
            );
        }
        for &(c, direct) in &direct_rate {
            let tracker = Tracker::new((ctx.plan.warmup + ctx.plan.events) as usize);
            handler.set_tracker(tracker.clone());
            let label = format!("{name}, {c} senders");
            let carried = || tunnel.cpu();
            let f = checked_flood(ctx, &target, &tracker, c, 1 << 10, &label, carried).await?;
            ctx.report.peer(
                format!("{name}: events/s, {c} senders, 1 KiB (acknowledged = delivered)"),
                fmt_rate(f.rate),
                fmt_rate(direct),
                ratio(f.rate, direct),
            );
            if ctx.plan.cpu_at.contains(&c) {
                let measured = f.delivered.saturating_sub(ctx.plan.warmup);
                let k = per_thousand(f.cpu, measured);
                if name == "bore" {
                    ctx.report.facts.bore_cpu_k.push((c, k));
                }
                ctx.report.peer(
                    format!("{name}: CPU ms per 1,000 events, {c} senders (server + client)"),
                    format!("{k:.0} ms"),
                    "–".to_string(),
                    None,
                );
            }
        }
        tunnel.stop().await;
    }
    Ok(())
}
