//! [`Setup`]: the common relay + channel + handler + journal directory, a daemon on demand;
//! [`listening_to`]: the same around a relay running elsewhere.

use meethook_daemon::DaemonConfig;
use meethook_relay::RelayConfig;

use crate::{create_channel, tempdir, TestDaemon, TestHandler, TestRelay};

/// The common set-up: a relay, one channel on it, a recording handler and a directory for a
/// daemon's journal; [`Setup::daemon`] starts a daemon forwarding from the one to the other.
///
/// Tests usually take it apart after starting the daemon:
/// `let (relay, ch, _, handler, _dir) = s.into_parts();`.
pub struct Setup {
    /// The relay.
    pub relay: TestRelay,
    /// The channel's id.
    pub channel: String,
    /// The channel's token.
    pub token: String,
    /// The handler a daemon forwards to.
    pub handler: TestHandler,
    /// The daemon's journal directory.
    pub dir: tempfile::TempDir,
}

impl Setup {
    /// A default relay.
    pub async fn start() -> Setup {
        Self::on(TestRelay::start().await, None).await
    }

    /// A relay whose config `tweak` adjusts.
    pub async fn start_with(tweak: impl FnOnce(&mut RelayConfig)) -> Setup {
        Self::on(TestRelay::start_with(tweak).await, None).await
    }

    /// Around a relay already started; its channel checks `sender_secret` if given.
    pub async fn on(relay: TestRelay, sender_secret: Option<&str>) -> Setup {
        let (channel, token) = relay.channel(sender_secret).await;
        Setup {
            relay,
            channel,
            token,
            handler: TestHandler::start().await,
            dir: tempdir(),
        }
    }

    /// `(relay, channel, token, handler, journal dir)`.
    pub fn into_parts(self) -> (TestRelay, String, String, TestHandler, tempfile::TempDir) {
        (self.relay, self.channel, self.token, self.handler, self.dir)
    }

    /// A daemon config ([`TestDaemon::config`]) forwarding the channel to the handler's `path`.
    pub fn config(&self, path: &str) -> DaemonConfig {
        TestDaemon::config(
            &self.relay.url(),
            &self.channel,
            &self.token,
            &self.handler.url(path),
            self.dir.path(),
        )
    }

    /// Starts a daemon with [`Setup::config`].
    pub fn daemon(&self, path: &str) -> TestDaemon {
        self.daemon_with(path, |_| {})
    }

    /// Starts a daemon with [`Setup::config`] after `tweak` adjusted it.
    pub fn daemon_with(&self, path: &str, tweak: impl FnOnce(&mut DaemonConfig)) -> TestDaemon {
        let mut cfg = self.config(path);
        tweak(&mut cfg);
        TestDaemon::start(cfg)
    }
}

/// The set-up around a relay running elsewhere (a child process, a balancer) at `base`: a
/// channel made through its admin API, a handler, and a daemon forwarding the channel to the
/// handler's `/`. Returns `(channel, token, handler, journal dir, daemon)`.
pub async fn listening_to(
    base: &str,
    admin: &str,
) -> (String, String, TestHandler, tempfile::TempDir, TestDaemon) {
    let (ch, token) = create_channel(base, admin).await;
    let handler = TestHandler::start().await;
    let dir = tempdir();
    let cfg = TestDaemon::config(base, &ch, &token, &handler.url("/"), dir.path());
    (ch, token, handler, dir, TestDaemon::start(cfg))
}
