//! Meeting BaaS events, parsed leniently for display only: forwarding never uses the parse.
//!
//! - [`Webhook`] is the typed model of one webhook body (v1 and v2 API). Unknown events become
//!   [`MeetingEvent::Other`], unknown fields are kept in each struct's `unknown` map, codes are
//!   open (unknown status codes become [`StatusCode::Other`], error codes are plain strings).
//!   A known event whose data does not fit its type also becomes [`MeetingEvent::Other`]:
//!   a body with an `event` string is never rejected.
//! - [`Summary`] is what a listener prints about a body: event, bot id, code and a one-liner.
//!
//! # Layout
//! - `webhook`: the envelope, [`Webhook`] and [`MeetingEvent`], and how a body is read.
//! - `status`: `bot.status_change` data and [`StatusCode`] (v1 and v2).
//! - `v1`, `v2`: the other events' data, per API generation.
//! - `in_place`: the serde plumbing that reads those structs without buffering.
//! - `codes`: error codes, providers, recording end reasons, known-but-untyped events.
//! - `time`: pre-signed URL expiry.
//! - `display`: [`Summary`] and its one-line text, shared by the cli and the browser inspector.

mod codes;
mod display;
mod in_place;
mod status;
mod time;
mod v1;
mod v2;
mod webhook;

pub use codes::{
    error_code_meaning, is_known_provider, EndReason, KNOWN_UNTYPED_EVENTS, TRANSCRIPTION_PROVIDERS,
};
pub use display::Summary;
pub use status::{BotStatus, StatusChange, StatusCode};
pub use time::presigned_url_expiry;
pub use v1::{CalendarSync, Complete, Failed, TranscriptSegment, TranscriptionComplete, Word};
pub use v2::{BotCompleted, BotFailed, CalendarChange, ChatMessage, Participant};
pub use webhook::{ApiVersion, Artifact, MeetingEvent, Webhook};

/// A field that may be absent (`None`), present and null (`Some(None)`) or set (`Some(Some(v))`).
pub type Nullable<T> = Option<Option<T>>;
