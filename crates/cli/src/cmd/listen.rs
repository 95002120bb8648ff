//! `meethook listen`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use meethook_daemon::forward::Backoff;
use meethook_daemon::{DaemonConfig, Filter, Observer, Observers, Route};
use meethook_inspector::Live;

use crate::output::{self, Lines, Source, Stdout};
use tokio_util::sync::CancellationToken;

/// `meethook listen` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Relay URL (`http(s)://` or `ws(s)://`).
    #[arg(long, env = "MEETHOOK_RELAY", value_parser = super::relay_url)]
    pub relay: String,
    /// Channel id.
    #[arg(long, env = "MEETHOOK_CHANNEL")]
    pub channel: String,
    /// Channel token (from `meethook channel create`).
    #[arg(long, env = "MEETHOOK_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Your handler, e.g. http://localhost:3000/hook (with `[[route]]`s in meethook.toml:
    /// the handler of events no route takes; without it they are journaled as unrouted).
    #[arg(long, env = "MEETHOOK_FORWARD_TO", value_parser = super::handler_url)]
    pub forward_to: Option<String>,
    /// Directory of the local journal.
    #[arg(long, env = "MEETHOOK_DATA", default_value = "./meethook-data")]
    pub data: PathBuf,
    #[command(flatten)]
    pub delivery: DeliveryArgs,
    /// Extra CA certificate (PEM) to trust for wss:// relays.
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
}

/// Delivery flags shared by `listen` and `dev`.
#[derive(clap::Args, Debug, Clone)]
pub struct DeliveryArgs {
    /// Per-request timeout to the handler.
    #[arg(long, default_value = "30s", value_parser = super::positive_duration)]
    pub timeout: Duration,
    /// Attempts per event before giving up (0 = retry forever).
    #[arg(long, default_value_t = 0)]
    pub max_attempts: u32,
    /// Longest wait between retries to the handler.
    #[arg(long, default_value = "30s", value_parser = super::positive_duration)]
    pub max_backoff: Duration,
    /// Print one JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Deliver only these event types, e.g. `bot.status_change,complete` or `bot.*`;
    /// others are journaled, acked and shown as skipped.
    #[arg(long, value_delimiter = ',')]
    pub events: Vec<String>,
    /// Deliver only events of these bots (an id or its first characters; repeatable).
    #[arg(long = "bot", value_delimiter = ',')]
    pub bots: Vec<String>,
    /// Download the recordings of final events (`complete`, `bot.completed`) into this
    /// directory as soon as they arrive, before their links expire.
    #[arg(long, value_name = "DIR")]
    pub save_recordings: Option<std::path::PathBuf>,
    /// Largest recording saved by --save-recordings.
    #[arg(long, default_value = "4GiB", value_parser = super::size)]
    pub max_recording_size: usize,
    /// What goes to the handler one at a time: `channel` (every event, in seq order), `bot`
    /// (each bot's events in order; different bots at once, up to --parallel; events without
    /// a bot id share one turn) or `event-key=JSONPATH` (the same by a body field, e.g.
    /// `event-key=data.customer_id`).
    #[arg(long, default_value = "channel", value_parser = clap::value_parser!(meethook_daemon::Order))]
    pub order: meethook_daemon::Order,
    /// Most events sent at once under `--order bot|event-key=…` (ignored with `channel`).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub parallel: u16,
    /// How long delivered, failed and skipped events stay in the local journal (pruned at
    /// start and hourly; 0 = forever). Pending and pinned (`meethook events pin`) events stay.
    #[arg(long, value_name = "DUR", default_value = "7d", value_parser = super::duration)]
    pub retention: Duration,
    /// Journal and acknowledge, but do not forward, an event repeating one received at most
    /// DUR before (same svix-id, or the same unsigned body): Svix retries and resend-webhook
    /// produce such repeats. Off by default: every event is forwarded, repeats marked.
    #[arg(long, value_name = "DUR", value_parser = super::duration)]
    pub dedupe: Option<Duration>,
    #[command(flatten)]
    pub inspect: super::inspect::InspectArgs,
}

impl DeliveryArgs {
    /// Applies these flags to a daemon config.
    pub fn apply(&self, cfg: &mut DaemonConfig) {
        cfg.timeout = self.timeout;
        cfg.max_attempts = self.max_attempts;
        cfg.filter = Filter {
            events: self.events.clone(),
            bots: self.bots.clone(),
        };
        cfg.save_recordings = self.save_recordings.clone();
        cfg.max_recording_size = self.max_recording_size as u64;
        cfg.retention = self.retention;
        cfg.dedupe = self.dedupe;
        cfg.order = self.order.clone();
        cfg.parallel = usize::from(self.parallel);
        cfg.backoff = Backoff {
            initial: Backoff::default().initial.min(self.max_backoff),
            max: self.max_backoff,
        };
    }
}

pub async fn run(
    args: Args,
    routes: Vec<Route>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let forward_to = args.forward_to.unwrap_or_default();
    let mut cfg = DaemonConfig::new(&args.relay, &args.channel, &args.token, &forward_to);
    cfg.data = args.data;
    cfg.ca_cert = args.ca_cert;
    args.delivery.apply(&mut cfg);
    cfg.routes = routes;
    if !args.delivery.json {
        eprintln!(
            "meethook listen: channel {} on {} → {}",
            cfg.channel,
            cfg.relay,
            targets(&cfg)
        );
    }
    args.delivery.run_daemon(cfg, shutdown).await
}

/// Where events go, for the start-up line: the routes, then `--forward-to`.
pub fn targets(cfg: &DaemonConfig) -> String {
    let mut t: Vec<String> = cfg
        .routes
        .iter()
        .map(|r| format!("{} ({})", r.forward_to, r.name))
        .collect();
    if !cfg.forward_to.is_empty() {
        t.push(cfg.forward_to.clone());
    }
    t.join(", ")
}

/// Why `forward_to` and `routes` leave events nowhere to go, if they do.
pub fn check_targets(forward_to: Option<&String>, routes: &[Route]) -> Result<(), String> {
    if forward_to.is_none() && routes.is_empty() {
        return Err(
            "--forward-to is required (your handler, e.g. \
                    --forward-to http://localhost:3000/hook), or [[route]] tables in meethook.toml"
                .into(),
        );
    }
    Ok(())
}

impl DeliveryArgs {
    /// Runs the daemon with `cfg`, printing its events as these flags say (`--json`).
    pub async fn run_daemon(
        &self,
        cfg: DaemonConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let out = Stdout::new();
        let source = Source::Live {
            data_arg: output::data_arg(&cfg.data),
        };
        let lines: Arc<dyn Observer> = Arc::new(Lines::new(self.json, source, out.clone()));
        // The inspector follows the daemon as one more observer (it only ever `send`s).
        let live = Live::new(&cfg.channel);
        let inspecting = shutdown.child_token();
        let inspector = self
            .inspect
            .start_beside(&cfg.data, &live, self.json, inspecting.clone())
            .await;
        let mut observers = vec![lines];
        if inspector.is_some() {
            observers.push(live.observer());
        }
        let flushing = CancellationToken::new();
        let flusher = tokio::spawn(out.clone().flush_loop(flushing.clone()));
        let r = meethook_daemon::run(cfg, Observers::new(observers), shutdown).await;
        // Lines of an attempt that was in flight at the stop are still written.
        flushing.cancel();
        let _ = flusher.await;
        out.flush();
        inspecting.cancel();
        if let Some(task) = inspector {
            let _ = task.await;
        }
        Ok(r?)
    }
}
