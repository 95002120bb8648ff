//! What the relay's SQLite store and the daemon's SQLite journal both do on disk.
//!
//! A crate of its own rather than a part of `meethook-store`, so that the daemon, which
//! needs only these helpers, links neither PostgreSQL nor the store's trait (a `postgres`
//! feature of the store would have left every caller to remember to turn it on).
//!
//! # Layout
//! - [`bodyfile`]: bodies from [`bodyfile::BODY_FILE_MIN`] up as files of their own, written
//!   while they arrive.
//! - [`dir`]: directories created durably ([`dir::create_dir_durable`]), [`dir::sync_dir`].
//! - [`wal`]: when a WAL is due a checkpoint (automatic checkpoints are off).

pub mod bodyfile;
pub mod dir;
pub mod wal;
