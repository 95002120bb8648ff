//! The defaults of [`RelayConfig`](crate::RelayConfig) that are also `meethook relay` flags,
//! written as `--help` shows them: `RelayConfig::default()` parses these, and the flags take
//! them as their clap defaults, so the two cannot drift apart.

/// `--listen`: where the relay listens (and, as `http://…`, the default public URL).
pub const LISTEN: &str = "127.0.0.1:8787";
/// `--max-body`: larger webhook bodies get 413.
pub const MAX_BODY: &str = "16MiB";
/// `--header-timeout`: time a client has to send its request headers.
pub const HEADER_TIMEOUT: &str = "10s";
/// `--max-header-size`: the largest request head.
pub const MAX_HEADER_SIZE: &str = "64KiB";
/// `--max-connections`: most HTTP connections at once.
pub const MAX_CONNECTIONS: usize = 4096;
/// `--max-listeners`: most listener streams at once.
pub const MAX_LISTENERS: usize = 50_000;
/// `--rate-limit`: webhooks per second per channel.
pub const RATE_LIMIT: f64 = 1000.0;
/// `--rate-burst`: webhooks a channel may send in a burst.
pub const RATE_BURST: f64 = 2000.0;
/// `--auth-fail-limit`: failed authentications per minute per client IP.
pub const AUTH_FAIL_LIMIT: u32 = 30;
/// `--retention`: how long delivered events stay in history.
pub const RETENTION: &str = "7d";
/// `--prune-interval`: how often expired events are pruned.
pub const PRUNE_INTERVAL: &str = "1m";
/// `--ping-interval`: how often listeners are pinged.
pub const PING_INTERVAL: &str = "15s";
/// `--liveness-timeout`: a listener silent this long is dropped.
pub const LIVENESS_TIMEOUT: &str = "45s";

/// `--store-writers`: PostgreSQL writer tasks, from the machine (two per core, 2 to 16).
pub fn store_writers() -> usize {
    meethook_store::postgres::PgOptions::default().writers
}
/// `--store-pool-size`: PostgreSQL connections per relay, from the machine (twice the
/// writers, at least 16).
pub fn store_pool_size() -> usize {
    meethook_store::postgres::PgOptions::default().pool_size
}
