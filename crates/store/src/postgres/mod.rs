//! The shared store: PostgreSQL, for several relays on one database.
//!
//! - **Seqs.** A channel's row carries its counter. An append bumps it
//!   (`UPDATE channels SET head_seq = head_seq + n … RETURNING head_seq`) in the same transaction
//!   as the inserts, so seqs are gap-free whichever relay appends: the row lock orders writers
//!   on every node, and a rolled-back transaction gives its numbers back.
//! - **Group commit.** A few writer tasks each take whatever appends are queued and commit them
//!   in one transaction; callers hear back only after `COMMIT` returned. Channels are locked in
//!   id order, so concurrent batches (on any node) never deadlock.
//! - **Fan-out.** The append transaction also runs `NOTIFY meethook_heads, 'channel:head'`, which
//!   PostgreSQL delivers on commit to every relay's LISTEN connection; each relay publishes what
//!   it hears to its [`Notifier`]. A notification can be missed (while LISTEN reconnects), so each
//!   relay also re-reads the heads of the channels it streams on reconnect and every second:
//!   a lost notification delays an event by at most that, never loses it.
//! - **Failures.** Connection refused, a server restarting, a pool or statement timeout: all
//!   [`StoreError::Unavailable`] (the relay answers 503 and the sender retries). Connections
//!   come back by themselves.
//! - **Schema.** Migrations run on start inside a transaction holding an advisory lock, so
//!   relays starting together take turns; `meethook_schema` records the applied versions.
//!   Tables live in the connection's `search_path` schema (`options=-csearch_path=NAME`).
//! - **TLS.** `sslmode=require` (or libpq's `verify-ca`/`verify-full`) connects with rustls and
//!   verifies the server against the system's CAs or `sslrootcert=FILE`; `disable` and the
//!   default `prefer` connect in plain text.
//!
//! # Layout
//! - `connect`: the URL (libpq's TLS options too), TLS, the pool; [`PostgresStore::connect`].
//! - `schema`: migrations, run under an advisory lock.
//! - `writer`: the group-commit writer tasks behind [`Store::append`](crate::Store::append).
//! - `listen`: the LISTEN connection that publishes heads committed on any relay.
//! - `queries`: the other [`Store`](crate::Store) verbs, one statement or transaction each.

mod connect;
mod listen;
mod queries;
mod schema;
mod writer;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use tokio::sync::mpsc;

use crate::{Notifier, Result, StoreError};
use writer::AppendOp;

pub use connect::ConnectError;
pub use schema::SCHEMA_VERSION;
/// The client library, for tools and tests that need a raw connection.
pub use tokio_postgres;

/// NOTIFY channel carrying `channel:head` after each committed append.
const NOTIFY_HEADS: &str = "meethook_heads";
/// NOTIFY channel carrying the id of a deleted channel.
const NOTIFY_GONE: &str = "meethook_gone";
/// How long one store call may take before it counts as unavailable.
const OP_TIMEOUT: Duration = Duration::from_secs(15);

/// PostgreSQL-backed [`Store`](crate::Store) for several relays sharing one database.
pub struct PostgresStore {
    shared: Arc<Shared>,
    appends: mpsc::Sender<AppendOp>,
    target: String,
}

/// What the writer tasks, the LISTEN task and the store calls share.
struct Shared {
    pool: Pool,
    notifier: Notifier,
    /// Channels subscribed on this relay: the ones whose heads the poll re-reads.
    watched: Mutex<HashSet<String>>,
}

fn pg(e: tokio_postgres::Error) -> StoreError {
    StoreError::unavailable(e)
}

fn other(msg: impl Into<String>) -> StoreError {
    StoreError::unavailable(std::io::Error::other(msg.into()))
}

impl PostgresStore {
    /// `host:port` of the database server (for messages; no credentials).
    pub fn target(&self) -> &str {
        &self.target
    }

    async fn client(&self) -> Result<Object> {
        self.shared
            .pool
            .get()
            .await
            .map_err(StoreError::unavailable)
    }
}
