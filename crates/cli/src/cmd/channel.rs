//! `meethook channel create|list|delete`.

use anyhow::bail;
use bytes::Bytes;
use http::Method;
use serde_json::json;

use crate::http_client::send;

/// Where the relay is and how to authenticate to its API.
#[derive(clap::Args, Debug)]
pub struct Api {
    /// Relay URL, e.g. http://127.0.0.1:8787.
    #[arg(long, env = "MEETHOOK_RELAY", value_parser = super::relay_url)]
    relay: String,
    /// The relay's --admin-token.
    #[arg(long, env = "MEETHOOK_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
}

impl Api {
    fn url(&self, path: &str) -> String {
        let base = self.relay.trim_end_matches('/');
        let base = base
            .strip_prefix("ws://")
            .map(|r| format!("http://{r}"))
            .or_else(|| base.strip_prefix("wss://").map(|r| format!("https://{r}")))
            .unwrap_or_else(|| base.to_string());
        format!("{base}{path}")
    }
}

/// Channel subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Create a channel; prints its webhook URL and listener token (shown once).
    Create {
        #[command(flatten)]
        api: Api,
        /// Require senders to present this secret (API key header or webhook signature).
        #[arg(long, hide_env_values = true)]
        sender_secret: Option<String>,
        /// Choose the channel id instead of a random one.
        #[arg(long)]
        id: Option<String>,
        /// Print one JSON object: {"id", "webhook_url", "token"}.
        #[arg(long)]
        json: bool,
    },
    /// List channels.
    List {
        #[command(flatten)]
        api: Api,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a channel and its history.
    Delete {
        #[command(flatten)]
        api: Api,
        /// Channel id.
        id: String,
    },
}

fn check(status: u16, expected: u16, a: &crate::http_client::Answer) -> anyhow::Result<()> {
    if status == expected {
        return Ok(());
    }
    let msg = a.error_message();
    match status {
        401 => bail!("relay refused the admin token (401): {msg}"),
        _ => bail!("relay answered {status}: {msg}"),
    }
}

pub async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Create {
            api,
            sender_secret,
            id,
            json,
        } => {
            let body = json!({ "sender_secret": sender_secret, "id": id });
            let a = send(
                Method::POST,
                &api.url("/api/channels"),
                Some(&api.admin_token),
                &[("content-type".into(), "application/json".into())],
                Bytes::from(body.to_string()),
            )
            .await?;
            check(a.status, 201, &a)?;
            let v = a.json();
            if json {
                println!("{v}");
            } else {
                let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
                println!("channel {} created", s("id"));
                println!("  webhook URL: {}", s("webhook_url"));
                println!(
                    "  token:       {}   (shown once; keep it secret)",
                    s("token")
                );
                println!();
                println!("listen with:");
                println!(
                    "  meethook listen --relay {} --channel {} --token {} --forward-to http://localhost:3000/hook",
                    api.relay, s("id"), s("token")
                );
            }
        }
        Command::List { api, json } => {
            let a = send(
                Method::GET,
                &api.url("/api/channels"),
                Some(&api.admin_token),
                &[],
                Bytes::new(),
            )
            .await?;
            check(a.status, 200, &a)?;
            let v = a.json();
            if json {
                println!("{v}");
            } else {
                let chans = v["channels"].as_array().cloned().unwrap_or_default();
                if chans.is_empty() {
                    println!("no channels (create one with `meethook channel create`)");
                }
                println!("{:<24} {:>8}  {:<6}  WEBHOOK URL", "ID", "EVENTS", "SECRET");
                for c in chans {
                    println!(
                        "{:<24} {:>8}  {:<6}  {}",
                        c["id"].as_str().unwrap_or(""),
                        c["head"].as_u64().unwrap_or(0),
                        if c["sender_secret"].as_bool() == Some(true) {
                            "yes"
                        } else {
                            "no"
                        },
                        c["webhook_url"].as_str().unwrap_or("")
                    );
                }
            }
        }
        Command::Delete { api, id } => {
            let a = send(
                Method::DELETE,
                &api.url(&format!("/api/channels/{id}")),
                Some(&api.admin_token),
                &[],
                Bytes::new(),
            )
            .await?;
            if a.status == 404 {
                bail!("the relay has no channel {id:?}");
            }
            check(a.status, 204, &a)?;
            println!("channel {id} deleted");
        }
    }
    Ok(())
}
