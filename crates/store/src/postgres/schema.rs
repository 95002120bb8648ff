//! The schema and its migrations.

use super::connect::reason;

/// Schema version this build expects; older databases are migrated on start.
pub const SCHEMA_VERSION: i32 = 2;

/// Migration `i` brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE channels (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL,
    sender_secret TEXT,
    created_at BIGINT NOT NULL,
    head_seq BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE events (
    channel_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    headers BYTEA NOT NULL,
    body BYTEA NOT NULL,
    PRIMARY KEY (channel_id, seq)
);
CREATE INDEX events_received_at ON events (received_at);
CREATE TABLE listeners (
    channel_id TEXT NOT NULL,
    listener_id TEXT NOT NULL,
    acked_seq BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    PRIMARY KEY (channel_id, listener_id)
);
",
    "
CREATE TABLE relays (
    id TEXT PRIMARY KEY,
    seen_at BIGINT NOT NULL,
    watching TEXT[] NOT NULL DEFAULT '{}'
);
",
];

/// First key of the advisory locks (`'mhk'`); the second is a hash of the schema name.
const LOCK_SPACE: i32 = 0x006d_686b;
/// Second-key salt of the migration lock.
const LOCK_MIGRATE: &str = "migrate";
/// Second-key salt of the prune lock.
pub(super) const LOCK_PRUNE: &str = "prune";

/// Lock-key expression for the current schema (relays on other schemas do not wait).
pub(super) fn lock_key(salt: &str) -> String {
    format!("{LOCK_SPACE}, hashtext(COALESCE(current_schema(), '') || ':{salt}')")
}

pub(super) async fn migrate(
    client: &mut tokio_postgres::Client,
) -> std::result::Result<(), String> {
    let err = |e: tokio_postgres::Error| format!("cannot apply the schema: {}", reason(&e));
    let tx = client.transaction().await.map_err(err)?;
    // Relays starting together take turns; the loser finds the work done.
    tx.execute(
        &format!("SELECT pg_advisory_xact_lock({})", lock_key(LOCK_MIGRATE)),
        &[],
    )
    .await
    .map_err(err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS meethook_schema (
             version INTEGER PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(err)?;
    let current: i32 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM meethook_schema", &[])
        .await
        .map_err(err)?
        .get(0);
    if current > SCHEMA_VERSION {
        return Err(format!(
            "the database holds meethook schema version {current}, newer than this build's \
             {SCHEMA_VERSION}: upgrade meethook on this relay"
        ));
    }
    for version in current + 1..=SCHEMA_VERSION {
        tx.batch_execute(MIGRATIONS[(version - 1) as usize])
            .await
            .map_err(err)?;
        tx.execute(
            "INSERT INTO meethook_schema (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(err)?;
        tracing::info!(version, "PostgreSQL schema migrated");
    }
    tx.commit().await.map_err(err)
}
