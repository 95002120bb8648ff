//! `meethook dev`: relay and listener in one process on the embedded store.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use meethook_daemon::{DaemonConfig, Route};
use meethook_proto::clock::now_ms;
use meethook_relay::auth;
use meethook_relay::{defaults, RelayConfig};
use meethook_store::{Channel, SqliteStore, Store, StoreError};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// `meethook dev` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Your handler, e.g. http://localhost:3000/hook (with `[[route]]`s in meethook.toml:
    /// the handler of events no route takes; without it they are journaled as unrouted).
    #[arg(long, env = "MEETHOOK_FORWARD_TO", value_parser = super::handler_url)]
    pub forward_to: Option<String>,
    /// HTTP address of the embedded relay.
    #[arg(long, env = "MEETHOOK_LISTEN", default_value = defaults::LISTEN, value_parser = super::listen_addr)]
    pub listen: SocketAddr,
    /// Directory for the store and the journal.
    #[arg(long, env = "MEETHOOK_DATA", default_value = "./meethook-data")]
    pub data: PathBuf,
    /// Base of the webhook URL printed, when senders reach this machine by another URL
    /// (a tunnel such as `cloudflared` or `ngrok`) [default: from --listen].
    #[arg(long, env = "MEETHOOK_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Channel id to use.
    #[arg(long, default_value = "dev")]
    pub channel: String,
    #[command(flatten)]
    pub delivery: super::listen::DeliveryArgs,
}

pub async fn run(
    args: Args,
    routes: Vec<Route>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let store = SqliteStore::open(&args.data)
        .with_context(|| format!("cannot open the store in {}", args.data.display()))?;
    // A fresh token each start: the embedded listener is the only one that needs it.
    let token = auth::new_token("mht_");
    let hash = auth::hash_token(&token);
    let ch = Channel {
        id: args.channel.clone(),
        token_hash: hash.clone(),
        sender_secret: None,
        created_at_ms: now_ms(),
        head: 0,
    };
    match store.create_channel(ch).await {
        Ok(()) | Err(StoreError::Conflict) => {}
        Err(e) => return Err(e).context("creating the dev channel"),
    }
    store.set_token_hash(&args.channel, &hash).await?;
    let listener = super::relay::bind(args.listen).await?;
    let bound = listener.local_addr()?;
    let public_url = match &args.public_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => super::relay::default_public_url("http", bound),
    };
    let webhook = format!("{public_url}/hooks/{}", args.channel);
    let mut cfg = DaemonConfig::new(
        "",
        &args.channel,
        &token,
        args.forward_to.as_deref().unwrap_or_default(),
    );
    cfg.data = args.data.clone();
    args.delivery.apply(&mut cfg);
    cfg.routes = routes;
    let targets = super::listen::targets(&cfg);
    let relay_cfg = RelayConfig {
        public_url,
        ..RelayConfig::default()
    };
    if args.delivery.json {
        // stdout carries only JSON lines: the start-up facts are the first object.
        let started = serde_json::json!({
            "kind": "started",
            "listening": format!("http://{bound}"),
            "webhook_url": webhook,
            "forward_to": targets,
            "data": args.data,
        });
        println!("{started}");
    } else {
        println!("listening on http://{bound}");
        println!("Webhook URL: {webhook}");
        println!("Forwarding to {targets} (Ctrl-C to stop)");
    }
    let store: Arc<dyn Store> = Arc::new(store);
    let relay = tokio::spawn(meethook_relay::run(
        relay_cfg,
        listener,
        store,
        shutdown.clone(),
    ));
    cfg.relay = format!("http://{bound}");
    let daemon = args.delivery.run_daemon(cfg, shutdown.clone()).await;
    shutdown.cancel();
    relay.await.context("relay task")??;
    daemon?;
    Ok(())
}
