//! Command-line definitions and dispatch.

mod channel;
mod control;
mod dev;
mod events;
mod listen;
mod relay;
mod replay;
mod trigger;

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
    #[command(subcommand)]
    command: Command,
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
    /// Inspect the local journal: list and show events, export and import them (NDJSON);
    /// retry or skip the event a running `listen` is stuck on.
    Events {
        #[command(subcommand)]
        command: events::Command,
    },
    /// Re-send journaled events to a handler, in their original order, marked
    /// `meethook-replay: true` (optionally re-signed).
    Replay(replay::Args),
}

impl Cli {
    /// Whether the command serves many connections at once (the relay): it gets a worker
    /// thread per core. The others do one thing at a time, and a single thread spares them
    /// a cross-thread wake-up per event.
    pub fn needs_threads(&self) -> bool {
        matches!(self.command, Command::Relay(_) | Command::Dev(_))
    }
}

/// Runs the parsed command.
pub async fn run(cli: Cli, shutdown: CancellationToken) -> anyhow::Result<()> {
    match cli.command {
        Command::Relay(a) => relay::run(a, shutdown).await,
        Command::Listen(a) => listen::run(a, shutdown).await,
        Command::Dev(a) => dev::run(a, shutdown).await,
        Command::Channel { command } => channel::run(command).await,
        Command::Trigger(a) => trigger::run(a, shutdown).await,
        Command::Events { command } => events::run(command).await,
        Command::Replay(a) => replay::run(a, shutdown).await,
    }
}

/// clap parser for `500ms` / `30s` / `7d`.
pub fn duration(s: &str) -> Result<Duration, String> {
    meethook_proto::units::parse_duration(s)
}

/// clap parser for `16MiB`.
pub fn size(s: &str) -> Result<usize, String> {
    meethook_proto::units::parse_size(s).map(|n| n as usize)
}
