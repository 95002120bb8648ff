//! A relay, a channel and a daemon: what a meethook run posts through.

use crate::ctx::Ctx;
use crate::load::Target;
use crate::procs::{self, Proc, Relay};

/// The relay, a channel and a daemon forwarding to `handler`.
pub(crate) struct Stack {
    pub(crate) relay: Relay,
    pub(crate) daemon: Option<Proc>,
    pub(crate) target: Target,
    pub(crate) channel: procs::ChannelInfo,
}

impl Stack {
    pub(crate) async fn start(
        ctx: &mut Ctx,
        name: &str,
        forward_to: Option<&str>,
    ) -> anyhow::Result<Stack> {
        Stack::start_on(ctx, name, forward_to, &[]).await
    }

    /// [`Stack::start`] with `extra` relay flags (e.g. `--store postgres://…`).
    pub(crate) async fn start_on(
        ctx: &mut Ctx,
        name: &str,
        forward_to: Option<&str>,
        extra: &[String],
    ) -> anyhow::Result<Stack> {
        let relay_dir = ctx.dir(&format!("{name}-relay"));
        let mut flags = ctx.relay_flags.clone();
        flags.extend(extra.iter().cloned());
        let relay = Relay::start(&ctx.meethook, &relay_dir, ctx.max_body(), &flags).await?;
        let channel = relay.create_channel().await?;
        let daemon = match forward_to {
            Some(url) => {
                let dir = ctx.dir(&format!("{name}-listen"));
                Some(procs::start_listen(
                    &ctx.meethook,
                    &relay,
                    &channel,
                    url,
                    &dir,
                )?)
            }
            None => None,
        };
        let target = Target {
            addr: relay.addr,
            path: format!("/hooks/{}", channel.id),
            relay: true,
        };
        Ok(Stack {
            relay,
            daemon,
            target,
            channel,
        })
    }

    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        self.relay.proc.check_alive()?;
        if let Some(d) = &mut self.daemon {
            d.check_alive()?;
        }
        Ok(())
    }

    pub(crate) fn daemon(&self) -> &Proc {
        self.daemon.as_ref().expect("a daemon")
    }

    pub(crate) async fn stop(self) {
        if let Some(d) = self.daemon {
            d.stop().await;
        }
        self.relay.proc.stop().await;
    }
}
