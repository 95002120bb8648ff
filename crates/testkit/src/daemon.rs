//! [`TestDaemon`]: an in-process `listen` daemon, and the [`EventLog`] of what it reported.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meethook_daemon::{DaemonConfig, DaemonEvent, Observer, Observers};
use tokio_util::sync::CancellationToken;

use crate::PATIENCE;

/// An in-process `listen` daemon.
pub struct TestDaemon {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), meethook_daemon::DaemonError>>,
    /// Every event the daemon reported, in order.
    pub events: Arc<EventLog>,
}

/// The events a daemon reported, to wait on instead of polling with sleeps.
#[derive(Default)]
pub struct EventLog {
    seen: Mutex<Vec<DaemonEvent>>,
    count: tokio::sync::Notify,
}

impl Observer for EventLog {
    fn notify(&self, event: &DaemonEvent) {
        self.seen.lock().unwrap().push(event.clone());
        self.count.notify_waiters();
    }
}

impl EventLog {
    /// Every event so far.
    pub fn all(&self) -> Vec<DaemonEvent> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits (at most [`PATIENCE`]) for an event that `pred` accepts, and returns it.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&DaemonEvent) -> bool) -> DaemonEvent {
        let found = tokio::time::timeout(PATIENCE, async {
            loop {
                let notified = self.count.notified();
                if let Some(e) = self.seen.lock().unwrap().iter().find(|e| pred(e)) {
                    return e.clone();
                }
                notified.await;
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("the daemon never reported {what}"))
    }
}

impl TestDaemon {
    /// A daemon config for tests: quick retries and reconnects.
    pub fn config(
        relay: &str,
        channel: &str,
        token: &str,
        forward_to: &str,
        data: &Path,
    ) -> DaemonConfig {
        let mut cfg = DaemonConfig::new(relay, channel, token, forward_to);
        cfg.data = data.to_path_buf();
        cfg.backoff = meethook_daemon::forward::Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
        };
        cfg.reconnect = cfg.backoff;
        cfg.timeout = Duration::from_secs(5);
        cfg
    }

    /// Starts a daemon.
    pub fn start(cfg: DaemonConfig) -> TestDaemon {
        let shutdown = CancellationToken::new();
        let events = Arc::new(EventLog::default());
        let observers = Observers::new(vec![events.clone() as Arc<dyn Observer>]);
        let task = tokio::spawn(meethook_daemon::run(cfg, observers, shutdown.clone()));
        TestDaemon {
            shutdown,
            task,
            events,
        }
    }

    /// Shuts down gracefully and returns the daemon's result.
    pub async fn stop(self) -> Result<(), meethook_daemon::DaemonError> {
        self.shutdown.cancel();
        self.task.await.unwrap()
    }

    /// Waits for the daemon to exit by itself (a fatal error).
    pub async fn exited(self) -> Result<(), meethook_daemon::DaemonError> {
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("daemon did not exit")
            .unwrap()
    }
}
