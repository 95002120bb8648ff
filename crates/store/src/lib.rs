//! Durable storage for the relay: channels, events with gap-free per-channel seqs, listener acks.
//!
//! # Layout
//! - [`Store`]: the one trait of domain verbs the relay uses; backends implement it.
//! - [`sqlite`]: the embedded default (WAL, group commit on a writer thread).
//! - [`postgres`]: several relays sharing one PostgreSQL database (LISTEN/NOTIFY fan-out).
//! - [`Notifier`] (`notify`): wakes stream tasks when a channel's head moves (notification,
//!   not polling), and keeps a short tail of recent events in memory.
//!
//! Big bodies as files and WAL checkpoints, shared with the daemon's journal, are in
//! `meethook-disk`.
//!
//! A backend must answer [`Store::append`] only after the event is durable, and must hand out
//! seqs 1, 2, 3… per channel with no gaps, whatever the concurrency.

mod notify;
pub mod postgres;
pub mod sqlite;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use meethook_disk::bodyfile;
use meethook_proto::{Event, Header};
use tokio::sync::watch;

pub use notify::Notifier;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// A channel as stored (the token only as its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// Channel id, used in `/hooks/{id}` and `/ws/{id}`.
    pub id: String,
    /// Hex SHA-256 of the channel token.
    pub token_hash: String,
    /// Secret a sender must present, when the channel has one (needed in clear for HMAC checks).
    pub sender_secret: Option<String>,
    /// Creation time, ms since the epoch.
    pub created_at_ms: i64,
    /// Highest seq handed out so far (0 when none).
    pub head: u64,
}

/// A webhook to append; the store assigns its seq.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// When the relay accepted it, ms since the epoch.
    pub received_at_ms: i64,
    /// HTTP method.
    pub method: String,
    /// Sub-path and query after `/hooks/{channel}`.
    pub path: String,
    /// Headers in the order received.
    pub headers: Vec<Header>,
    /// Raw body.
    pub body: Bytes,
}

/// What can go wrong in a store; the relay maps each to an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The channel does not exist.
    #[error("no such channel")]
    NotFound,
    /// A channel with that id already exists.
    #[error("channel already exists")]
    Conflict,
    /// The store cannot write or read right now (disk full, I/O error, database down).
    /// The cause is in the message, not chained: printed with its chain it showed twice.
    #[error("store unavailable: {0}")]
    Unavailable(Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// Wraps a backend error as [`StoreError::Unavailable`].
    pub fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Unavailable(Box::new(e))
    }
}

/// Result alias for store calls.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Where a channel's stored history starts and ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Oldest seq still stored (0 when the history is empty).
    pub oldest: u64,
    /// Highest seq handed out.
    pub head: u64,
}

/// The storage verbs the relay needs. Implementations must be cancel safe: a dropped future
/// may or may not have taken effect, but never half of it.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates a channel; [`StoreError::Conflict`] when the id is taken.
    async fn create_channel(&self, channel: Channel) -> Result<()>;
    /// Looks a channel up.
    async fn channel(&self, id: &str) -> Result<Option<Channel>>;
    /// All channels, oldest first.
    async fn list_channels(&self) -> Result<Vec<Channel>>;
    /// Deletes a channel with its history; false when it did not exist.
    async fn delete_channel(&self, id: &str) -> Result<bool>;
    /// Replaces a channel's token hash; false when the channel does not exist.
    async fn set_token_hash(&self, id: &str, token_hash: &str) -> Result<bool>;
    /// Durably stores an event and returns its seq (the next gap-free one of its channel).
    async fn append(&self, channel: &str, event: NewEvent) -> Result<u64>;
    /// Where this store keeps big bodies (from [`bodyfile::BODY_FILE_MIN`]) as files, if it
    /// does: the relay then writes such a body while it arrives, for [`Store::append_written`].
    fn body_files(&self) -> Option<&bodyfile::BodyFiles> {
        None
    }
    /// [`Store::append`] of an event whose body is already in `file`, one of
    /// [`Store::body_files`].
    async fn append_written(
        &self,
        channel: &str,
        event: NewEvent,
        file: bodyfile::WrittenBody,
    ) -> Result<u64> {
        drop(file);
        self.append(channel, event).await
    }
    /// Events with seq > `after`, oldest first, at most `limit` of them and about `max_bytes`
    /// of body (always at least one when there is one).
    async fn read_after(
        &self,
        channel: &str,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Event>>;
    /// Oldest stored and highest assigned seq of a channel.
    async fn bounds(&self, channel: &str) -> Result<Bounds>;
    /// Records that `listener` has delivered everything up to `seq` (never moves backwards),
    /// and that it was seen at `now_ms`.
    async fn ack(&self, channel: &str, listener: &str, seq: u64, now_ms: i64) -> Result<()>;
    /// The highest seq `listener` has acked on `channel` (0 when it never has).
    async fn acked(&self, channel: &str, listener: &str) -> Result<u64>;
    /// Deletes events older than `retention` that every listener seen within `retention` has
    /// acked; returns how many went.
    async fn prune(&self, retention: Duration, now_ms: i64) -> Result<u64>;
    /// A receiver whose value is the channel's latest known head; it changes on every append.
    fn subscribe(&self, channel: &str) -> watch::Receiver<u64>;
    /// Like [`Store::read_after`], from memory: recent events this process committed, for a
    /// stream that keeps up. `None` when memory does not hold them.
    fn recent(
        &self,
        channel: &str,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Option<Vec<Event>> {
        let _ = (channel, after, limit, max_bytes);
        None
    }
    /// How many relays share this store, this one included (1 for a store of its own): each
    /// takes its share of cluster-wide limits.
    fn nodes(&self) -> usize {
        1
    }
    /// Succeeds when the store answers.
    async fn ping(&self) -> Result<()>;
}
