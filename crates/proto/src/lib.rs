//! Wire protocol and event types shared by the relay and the daemon, and the pure helpers
//! (signatures, units, the clock) more than one crate needs. No async runtime.
//!
//! # Layout
//! - [`frame`]: the websocket frames (JSON control frames, binary event frames) and their codec.
//! - [`event`]: a stored webhook as it travels: seq, method, path, headers, raw body.
//! - [`meeting`]: lenient Meeting BaaS event parsing and one-line summaries.
//! - [`signature`]: Standard Webhooks / Svix signing and verifying (`whsec_` keys).
//! - [`units`]: `500ms` / `7d` durations and `16MiB` sizes as the CLI accepts them.
//! - [`human`]: sizes as people read them (`1.5 MiB`).
//! - `skim`: a quick look for a JSON body's top-level `event` without parsing it all.
//! - [`clock`]: `now_ms`, the wall clock as events and channels store it.

pub mod clock;
pub mod event;
pub mod frame;
pub mod human;
pub mod meeting;
pub mod signature;
mod skim;
pub mod units;

pub use event::{Event, Header};
pub use frame::{ClientFrame, DecodeError, ErrorCode, ServerFrame, PROTOCOL_VERSION};
