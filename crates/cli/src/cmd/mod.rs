//! Command-line definitions and dispatch.

mod channel;
mod config;
mod control;
mod dev;
mod docs;
mod events;
mod inspect;
mod listen;
mod relay;
mod replay;
mod trigger;

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// Durable, ordered, byte-exact webhook forwarding to localhost.
#[derive(Parser, Debug)]
#[command(name = "meethook", version, about, long_about = None)]
pub struct Cli {
    /// Log more (or set MEETHOOK_LOG, e.g. MEETHOOK_LOG=debug).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Config file (keys named like the flags; see docs/operations.md) [default:
    /// ./meethook.toml, else meethook/meethook.toml in the user config dir].
    #[arg(long, global = true, env = "MEETHOOK_CONFIG", value_name = "PATH")]
    pub config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
    /// The `[[route]]`s of the config file.
    #[arg(skip)]
    pub routes: Vec<meethook_daemon::Route>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the public relay: accepts webhooks, stores them, streams them to listeners.
    Relay(relay::Args),
    /// Receive a channel's events and deliver them, in order, to a local handler.
    Listen(listen::Args),
    /// Relay and listener in one process on the embedded store: the one-command start.
    Dev(dev::Args),
    /// Create, list and delete channels on a relay.
    Channel {
        #[command(subcommand)]
        command: channel::Command,
    },
    /// Send a realistic Meeting BaaS event sequence (a scenario) to a URL; `--list` names them.
    Trigger(trigger::Args),
    /// Inspect the local journal: list and show events, export and import them (NDJSON),
    /// pin them, prune it; retry or skip the event a running `listen` is stuck on.
    Events {
        #[command(subcommand)]
        command: events::Command,
    },
    /// Re-send journaled events to a handler, in their original order, marked
    /// `meethook-replay: true` (optionally re-signed).
    Replay(replay::Args),
    /// Serve the browser inspector over an existing journal, without connecting anywhere
    /// (read-only: retry and skip need a running `listen`).
    Inspect(inspect::Args),
    /// The config file: `meethook config check` validates it and prints the effective
    /// configuration, secrets masked.
    Config {
        #[command(subcommand)]
        command: config::Command,
    },
    /// Print a shell completion script: `meethook completions bash > ~/.local/share/bash-completion/completions/meethook`.
    Completions(docs::CompletionsArgs),
    /// Print the man page (`meethook man | man -l -`), or write every page with `--dir DIR`.
    Man(docs::ManArgs),
}

impl Cli {
    /// Whether the command serves many connections at once (the relay): it gets a worker
    /// thread per core. The others do one thing at a time, and a single thread spares them
    /// a cross-thread wake-up per event.
    pub fn needs_threads(&self) -> bool {
        matches!(self.command, Command::Relay(_) | Command::Dev(_))
    }

    /// Why the flags are unusable together, if they are (clap's own checks are per flag).
    pub fn check(&self) -> Result<(), String> {
        match &self.command {
            Command::Listen(a) => a
                .delivery
                .inspect
                .check()
                .and(listen::check_targets(a.forward_to.as_ref(), &self.routes)),
            Command::Dev(a) => a
                .delivery
                .inspect
                .check()
                .and(listen::check_targets(a.forward_to.as_ref(), &self.routes)),
            Command::Inspect(a) => a.inspect.check(),
            _ => Ok(()),
        }
    }
}

/// Runs the parsed command, with the config file's routes.
pub async fn run(
    cli: Cli,
    file: Option<crate::config::ConfigFile>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    match cli.command {
        Command::Config { command } => config::run(command, file.as_ref()),
        Command::Relay(a) => relay::run(a, shutdown).await,
        Command::Listen(a) => listen::run(a, cli.routes, shutdown).await,
        Command::Dev(a) => dev::run(a, cli.routes, shutdown).await,
        Command::Channel { command } => channel::run(command).await,
        Command::Trigger(a) => trigger::run(a, shutdown).await,
        Command::Events { command } => events::run(command).await,
        Command::Replay(a) => replay::run(a, shutdown).await,
        Command::Inspect(a) => inspect::run(a, shutdown).await,
        Command::Completions(a) => docs::completions(a),
        Command::Man(a) => docs::man(a),
    }
}

/// clap parser for `500ms` / `30s` / `7d` (zero allowed).
pub fn duration(s: &str) -> Result<Duration, String> {
    meethook_proto::units::parse_duration(s)
}

/// clap parser for a timeout or an interval: a duration above zero.
pub fn positive_duration(s: &str) -> Result<Duration, String> {
    meethook_proto::units::parse_positive_duration(s)
}

/// clap parser for `--listen`: `8787`, `localhost:8787`, `0.0.0.0:8787` or `[::1]:8787`.
pub fn listen_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bad =
        || format!("{s:?} is not an address: use a port (8787) or HOST:PORT (127.0.0.1:8787)");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())?;
    // A name (`localhost`): its first IPv4 address, else its first address.
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{host:?} has no address"))
}

/// clap parser for a handler URL (`--forward-to`): `http://host[:port][/path]`.
pub fn handler_url(s: &str) -> Result<String, String> {
    match meethook_daemon::forward::Forwarder::new(s, "check", Duration::from_secs(1)) {
        Ok(_) => Ok(s.to_string()),
        Err(e) => Err(format!(
            "{} (expected e.g. http://localhost:3000/hook)",
            e.reason()
        )),
    }
}

/// clap parser for a relay URL (`--relay`): `http(s)://` or `ws(s)://` and a host.
pub fn relay_url(s: &str) -> Result<String, String> {
    match meethook_daemon::ws_url(s, "check") {
        Ok(_) => Ok(s.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// clap parser for a limit such as `16MiB`: a size above zero.
pub fn size(s: &str) -> Result<usize, String> {
    let n = meethook_proto::units::parse_size(s)?;
    if n == 0 {
        return Err(format!("{s:?} is zero: use a size above 0, e.g. 16MiB"));
    }
    usize::try_from(n).map_err(|_| format!("size {s:?} is too large for this machine"))
}

/// A Standard Webhooks / Svix signing secret as `whsec_<base64>`. Svix's libraries take the
/// base64 key with or without the prefix; so does this, saying what it assumed. Anything
/// else is refused rather than used as raw bytes (a signature the handler would reject).
pub fn signing_secret(flag: &str, secret: &str) -> anyhow::Result<String> {
    let secret = secret.trim();
    let key = secret.strip_prefix("whsec_").unwrap_or(secret);
    if key.is_empty() || meethook_proto::signature::decode_key(key).is_none() {
        anyhow::bail!(
            "{flag}: expected whsec_ followed by base64 (the signing secret your handler \
             verifies with, e.g. from the Meeting BaaS or Svix dashboard)"
        );
    }
    if key.len() == secret.len() {
        eprintln!(
            "note: {flag} has no whsec_ prefix: using it as the base64 key whsec_{key}, as \
             Svix and Standard Webhooks libraries do"
        );
    }
    Ok(format!("whsec_{key}"))
}
