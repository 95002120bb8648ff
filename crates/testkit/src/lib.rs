//! Test helpers shared by the integration tests. Everything is re-exported at the crate root
//! (`meethook_testkit::TestRelay`, …).
//!
//! # Layout
//! - `handler`: [`TestHandler`], a local webhook handler that records every request
//!   ([`Received`]) and answers with a programmable status; it can be stopped and restarted on
//!   the same port.
//! - `relay`: [`TestRelay`], an in-process relay on an ephemeral port over a temporary store.
//! - `daemon`: [`TestDaemon`], an in-process `listen` daemon, and its [`EventLog`].
//! - `setup`: [`Setup`], the common relay + channel + handler + journal directory, daemon on
//!   demand; [`listening_to`], the same around a relay running elsewhere.
//! - `http`: [`client`], [`request`], [`post`] (send one webhook), [`create_channel`].
//! - `wait`: [`wait_until`] / [`wait_for`], poll a condition with a bounded deadline.
//! - `process`: [`RelayProcess`] / [`ListenProcess`], the real binary as a child, for
//!   `kill -9` tests.
//! - `connect`: [`ConnectProxy`], an HTTP `CONNECT` proxy on loopback (`HTTPS_PROXY` tests).
//! - [`fault`]: retrying load, a connection-cutting proxy, a tmpfs that fills up.
//! - [`powerfs`]: [`powerfs::PowerFs`], a FUSE file system that loses what was not fsync'd
//!   when told the power is cut.
//! - [`pg`]: a throwaway PostgreSQL schema per test (`MEETHOOK_TEST_POSTGRES_URL`).
//! - Here: [`PATIENCE`] and [`tempdir`].

pub mod fault;
pub mod pg;
pub mod powerfs;

mod connect;
mod daemon;
mod handler;
mod http;
mod process;
mod relay;
mod setup;
mod wait;

use std::time::Duration;

pub use self::http::{client, create_channel, post, request, Posted};
pub use connect::ConnectProxy;
pub use daemon::{EventLog, TestDaemon};
pub use handler::{Received, TestHandler};
pub use process::{Child, ListenProcess, RelayProcess};
pub use relay::TestRelay;
pub use setup::{listening_to, Setup};
pub use wait::{wait_for, wait_until};

/// Upper bound on how long a test waits for something that should happen.
pub const PATIENCE: Duration = Duration::from_secs(90);

/// A fresh temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}
