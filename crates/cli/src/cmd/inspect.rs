//! The browser inspector: `--inspect` / `--inspect-token` of `listen` and `dev`, and
//! `meethook inspect`, which serves it over an existing journal.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use meethook_daemon::journal::Journal;
use meethook_inspector::{Config, Live};
use meethook_proto::signature::SigningKey;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Where the inspector is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inspect {
    /// Not at all.
    Off,
    /// On this address.
    At(SocketAddr),
}

/// clap parser for `--inspect`: `off`, a port, or HOST:PORT.
fn inspect_addr(s: &str) -> Result<Inspect, String> {
    if s.trim().eq_ignore_ascii_case("off") {
        return Ok(Inspect::Off);
    }
    super::listen_addr(s).map(Inspect::At)
}

/// The inspector's flags.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct InspectArgs {
    /// Serve the browser inspector on ADDR (a port or HOST:PORT), or `off`
    /// [default: 127.0.0.1:4040, else the next free port up to 4049].
    #[arg(long, env = "MEETHOOK_INSPECT", value_name = "ADDR|off", value_parser = inspect_addr)]
    pub inspect: Option<Inspect>,
    /// Token the inspector asks for (`Authorization: Bearer T`, or `?token=T` once); required
    /// when --inspect is not a loopback address.
    #[arg(long, env = "MEETHOOK_INSPECT_TOKEN", hide_env_values = true)]
    pub inspect_token: Option<String>,
    /// The `whsec_…` secret the inspector's "Replay re-signed" signs with (svix-*/webhook-*
    /// headers get a fresh timestamp and signature).
    #[arg(
        long,
        env = "MEETHOOK_SIGNING_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub signing_secret: Option<String>,
}

impl InspectArgs {
    /// Why these flags are unusable, if they are: an address other machines reach, with no
    /// token.
    pub fn check(&self) -> Result<(), String> {
        match self.inspect {
            Some(Inspect::At(a))
                if !meethook_inspector::is_loopback(&a) && self.inspect_token.is_none() =>
            {
                Err(format!(
                    "--inspect {a} is reachable from other machines: give it a token \
                     (--inspect-token T or MEETHOOK_INSPECT_TOKEN), or use 127.0.0.1"
                ))
            }
            _ => match &self.signing_secret {
                Some(s) => super::signing_secret("--signing-secret", s)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                None => Ok(()),
            },
        }
    }

    /// The bound listener; `Ok(None)` for `--inspect off`. The default address falls back
    /// to the next free port.
    async fn bind(&self) -> anyhow::Result<Option<TcpListener>> {
        match self.inspect {
            Some(Inspect::Off) => Ok(None),
            Some(Inspect::At(addr)) => TcpListener::bind(addr)
                .await
                .map(Some)
                .with_context(|| format!("cannot serve the inspector on {addr}")),
            None => match meethook_inspector::bind_default().await {
                Some(l) => Ok(Some(l)),
                None => bail!(
                    "ports {}-{} on 127.0.0.1 are all taken (--inspect ADDR picks another)",
                    meethook_inspector::DEFAULT_PORT,
                    meethook_inspector::LAST_PORT
                ),
            },
        }
    }

    fn config(&self, data: &Path) -> Config {
        let mut c = Config::new(data);
        c.token = self.inspect_token.clone();
        c.signing_secret = self.signing_secret.as_deref().and_then(|s| {
            let s = s.trim();
            let key = s.strip_prefix("whsec_").unwrap_or(s);
            SigningKey::from_secret(&format!("whsec_{key}"))
        });
        c
    }

    /// Starts the inspector beside a listener (`listen`, `dev`) and prints its URL; never
    /// fails it: when the address cannot be had, warns and returns `None`.
    pub async fn start_beside(
        &self,
        data: &Path,
        live: &Live,
        json: bool,
        shutdown: CancellationToken,
    ) -> Option<JoinHandle<()>> {
        let listener = match self.bind().await {
            Ok(Some(l)) => l,
            Ok(None) => return None,
            Err(e) => {
                eprintln!("warning: no inspector: {e:#}");
                return None;
            }
        };
        let url = url_of(&listener);
        if json {
            println!("{}", crate::output::json::inspector_line(&url));
        } else {
            eprintln!("Inspector: {url}");
        }
        let mut cfg = self.config(data);
        cfg.channel = Some(live.channel().to_string());
        let live = live.clone();
        Some(tokio::spawn(async move {
            if let Err(e) = meethook_inspector::run(cfg, listener, Some(live), shutdown).await {
                eprintln!("warning: inspector stopped: {e}");
            }
        }))
    }
}

fn url_of(l: &TcpListener) -> String {
    match l.local_addr() {
        Ok(a) => format!("http://{a}"),
        Err(_) => "http://?".into(),
    }
}

/// `meethook inspect` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory of the journal to show.
    #[arg(long, env = "MEETHOOK_DATA", default_value = "./meethook-data")]
    pub data: PathBuf,
    /// Channel shown by default [default: the journal's only one, or the one with the
    /// newest event].
    #[arg(long)]
    pub channel: Option<String>,
    #[command(flatten)]
    pub inspect: InspectArgs,
}

/// Serves the inspector over `args.data`'s journal until `shutdown`, read-only: retry and
/// skip answer 409.
pub async fn run(args: Args, shutdown: CancellationToken) -> anyhow::Result<()> {
    // Says what is wrong with --data before serving anything.
    Journal::open_read_only(&args.data)?;
    let Some(listener) = args.inspect.bind().await? else {
        bail!("--inspect off: nothing to serve");
    };
    let mut cfg = args.inspect.config(&args.data);
    cfg.channel = args.channel.clone();
    cfg.control = false;
    println!("Inspector: {} (Ctrl-C to stop)", url_of(&listener));
    meethook_inspector::run(cfg, listener, None, shutdown).await?;
    Ok(())
}
