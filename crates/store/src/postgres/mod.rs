//! The shared store: PostgreSQL, for several relays on one database.
//!
//! - **Seqs.** A channel's row carries its counter. An append bumps it
//!   (`UPDATE channels SET head_seq = head_seq + n … RETURNING head_seq`) in the same statement
//!   as the inserts, so seqs are gap-free whichever relay appends: the row lock orders writers
//!   on every node, and a rolled-back transaction gives its numbers back.
//! - **Group commit.** Writer tasks each own a share of the channels (by a hash of the id) and
//!   commit whatever appends are queued for them in one statement, its own transaction;
//!   callers hear back only after `COMMIT` returned. A channel's appends on one relay are never
//!   split between two transactions waiting on each other's row lock, and channels are locked
//!   in id order, so concurrent batches (on any node) never deadlock. See `writer`.
//! - **Fan-out.** After an append commits, a task sends `NOTIFY meethook_heads, 'channel:head'`
//!   (coalesced, in a transaction of its own that does not wait for the disk) for the channels
//!   another relay streams, which PostgreSQL delivers to every relay's LISTEN connection; each
//!   relay publishes what it hears to its [`Notifier`]. Which channels a relay streams is in its
//!   `relays.watching`, refreshed every second and at once (`NOTIFY meethook_interest`) when it
//!   starts streaming a new one. A notification can be missed (a relay died before sending it, LISTEN
//!   reconnecting), so each relay also re-reads the heads of the channels it streams on
//!   reconnect and every second: a lost notification delays an event by at most that, never
//!   loses it. A relay watches only channels someone streams from it.
//! - **Nodes.** Each relay keeps a row in `relays` fresh (every second; gone after
//!   [`NODE_TTL`] without), so every relay knows how many share the database: cluster-wide
//!   limits are split between them ([`Store::nodes`](crate::Store::nodes)), and a relay sends
//!   no NOTIFY that nobody would hear.
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
//! - `writer`: the group-commit writer tasks behind [`Store::append`](crate::Store::append), and
//!   the NOTIFY task.
//! - `listen`: the LISTEN connection that publishes heads committed on any relay, and the
//!   node heartbeat.
//! - `queries`: the other [`Store`](crate::Store) verbs, one statement or transaction each.

mod connect;
mod listen;
mod queries;
mod schema;
mod writer;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Object, Pool};

use crate::{Notifier, Result, StoreError};
use writer::Appends;

pub use connect::ConnectError;
pub use schema::SCHEMA_VERSION;
/// The client library, for tools and tests that need a raw connection.
pub use tokio_postgres;

/// NOTIFY channel carrying `channel:head` after each committed append.
const NOTIFY_HEADS: &str = "meethook_heads";
/// NOTIFY channel carrying the id of a deleted channel.
const NOTIFY_GONE: &str = "meethook_gone";
/// NOTIFY channel telling the relays that one of them streams a channel it did not before.
const NOTIFY_INTEREST: &str = "meethook_interest";
/// How long one store call may take before it counts as unavailable.
const OP_TIMEOUT: Duration = Duration::from_secs(15);
/// A relay whose `relays` row is older than this no longer counts as a node.
pub const NODE_TTL: Duration = Duration::from_secs(10);

/// Sizes of a [`PostgresStore`]: its connection pool and its writer tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgOptions {
    /// Pooled connections (writers, reads, acks, NOTIFY); at least `writers + 2` are used.
    pub pool_size: usize,
    /// Writer tasks, each committing the appends of its share of the channels.
    pub writers: usize,
}

impl Default for PgOptions {
    /// From the machine: two writers per core (2 to 16), and a pool of twice that (at least
    /// 16), so a batch of every writer and as many reads can be in flight at once.
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let writers = (2 * cores).clamp(2, 16);
        PgOptions {
            pool_size: (2 * writers).max(16),
            writers,
        }
    }
}

/// PostgreSQL-backed [`Store`](crate::Store) for several relays sharing one database.
pub struct PostgresStore {
    shared: Arc<Shared>,
    appends: Appends,
    target: String,
}

/// What the writer tasks, the LISTEN task and the store calls share.
struct Shared {
    pool: Pool,
    notifier: Notifier,
    /// This relay's id in `relays`.
    node: String,
    /// Relays sharing the database (this one included), from `relays`.
    nodes: AtomicUsize,
    /// Heads committed here that the NOTIFY task has yet to send.
    heads_out: HeadsOut,
    /// Channels the other relays stream (from their `relays.watching`): the only heads they
    /// need to hear about.
    remote_interest: Mutex<HashSet<String>>,
    /// Runs the LISTEN task's heartbeat now (a channel newly streamed here or elsewhere).
    nudge: Arc<tokio::sync::Notify>,
}

#[derive(Default)]
struct HeadsOut {
    heads: Mutex<HashMap<String, u64>>,
    wake: Arc<tokio::sync::Notify>,
}

impl Shared {
    /// Hands committed heads to the NOTIFY task, those of channels another relay streams.
    fn tell_others(&self, heads: Vec<(String, u64)>) {
        if heads.is_empty() || self.nodes.load(Ordering::Relaxed) <= 1 {
            return;
        }
        let wanted = self.remote_interest.lock().expect("interest lock");
        let mut out = self.heads_out.heads.lock().expect("heads lock");
        for (ch, head) in heads {
            if wanted.contains(&ch) {
                let h = out.entry(ch).or_default();
                *h = (*h).max(head);
            }
        }
        if !out.is_empty() {
            self.heads_out.wake.notify_one();
        }
    }
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
