//! [`TestRelay`]: an in-process relay on an ephemeral port over a temporary SQLite store.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use meethook_proto::clock::now_ms;
use meethook_relay::{auth, Metrics, RelayConfig};
use meethook_store::{Channel, SqliteStore, Store};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// An in-process relay over a temporary SQLite store.
pub struct TestRelay {
    /// Bound address.
    pub addr: SocketAddr,
    /// Admin token.
    pub admin_token: String,
    /// The store (shared with the relay).
    pub store: Arc<dyn Store>,
    /// The relay's counters.
    pub metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

impl TestRelay {
    /// Starts a relay with default settings.
    pub async fn start() -> TestRelay {
        Self::start_with(|_| {}).await
    }

    /// Starts a relay after letting `tweak` adjust its config.
    pub async fn start_with(tweak: impl FnOnce(&mut RelayConfig)) -> TestRelay {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Self::start_in(dir.path(), tweak).await;
        r._dir = Some(dir);
        r
    }

    /// Starts a relay whose store lives in `data`.
    pub async fn start_in(data: &Path, tweak: impl FnOnce(&mut RelayConfig)) -> TestRelay {
        let store = SqliteStore::open(data).expect("open store");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let admin_token = auth::new_token("adm_");
        let mut cfg = RelayConfig {
            public_url: format!("http://{addr}"),
            admin_token: Some(admin_token.clone()),
            rate_limit: 0.0,
            ..RelayConfig::default()
        };
        tweak(&mut cfg);
        let store: Arc<dyn Store> = Arc::new(store);
        let metrics = Arc::new(Metrics::default());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(meethook_relay::run_with_metrics(
            cfg,
            listener,
            store.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
        TestRelay {
            addr,
            admin_token,
            store,
            metrics,
            shutdown,
            task: Some(task),
            _dir: None,
        }
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates a channel directly in the store; returns `(id, token)`.
    pub async fn channel(&self, sender_secret: Option<&str>) -> (String, String) {
        let id = auth::new_channel_id();
        let token = auth::new_token("mht_");
        self.store
            .create_channel(Channel {
                id: id.clone(),
                token_hash: auth::hash_token(&token),
                sender_secret: sender_secret.map(str::to_string),
                created_at_ms: now_ms(),
                head: 0,
            })
            .await
            .unwrap();
        (id, token)
    }

    /// The webhook URL of `channel`.
    pub fn hook(&self, channel: &str) -> String {
        format!("{}/hooks/{channel}", self.url())
    }

    /// Shuts the relay down and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}
