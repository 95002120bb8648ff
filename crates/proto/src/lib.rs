//! Wire protocol and event types shared by the relay and the daemon.
//!
//! # Layout
//! - [`frame`]: the websocket frames (JSON control frames, binary event frames) and their codec.
//! - [`event`]: a stored webhook as it travels: seq, method, path, headers, raw body.
//! - [`meeting`]: lenient Meeting BaaS event parsing and one-line summaries.
//! - [`units`]: `500ms` / `7d` durations and `16MiB` sizes as the CLI accepts them.

pub mod event;
pub mod frame;
pub mod meeting;
mod skim;
pub mod units;

pub use event::{Event, Header};
pub use frame::{ClientFrame, DecodeError, ErrorCode, ServerFrame, PROTOCOL_VERSION};
