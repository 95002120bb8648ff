//! `bot.status_change` (v1 and v2): the status code, an open set, and the status data.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use super::in_place::read_in_place;
use super::Nullable;

macro_rules! status_codes {
    ($($variant:ident = $text:literal, $doc:literal;)*) => {
        /// `data.status.code` of a `bot.status_change`; unknown codes are kept as [`StatusCode::Other`].
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(from = "String", into = "String")]
        pub enum StatusCode {
            $(#[doc = $doc] $variant,)*
            /// A code this model does not know, verbatim.
            Other(String),
        }

        impl StatusCode {
            /// The code as sent (`in_call_recording`).
            pub fn as_str(&self) -> &str {
                match self {
                    $(StatusCode::$variant => $text,)*
                    StatusCode::Other(s) => s,
                }
            }
        }

        impl From<String> for StatusCode {
            fn from(s: String) -> StatusCode {
                match s.as_str() {
                    $($text => StatusCode::$variant,)*
                    _ => StatusCode::Other(s),
                }
            }
        }
    };
}

status_codes! {
    JoiningCall = "joining_call", "The bot is joining the meeting.";
    InWaitingRoom = "in_waiting_room", "The bot waits in the waiting room / lobby.";
    InCallNotRecording = "in_call_not_recording", "The bot is in the call, not recording yet.";
    InCallRecording = "in_call_recording", "The bot records (`start_time`: epoch ms in v1, s in v2).";
    RecordingPaused = "recording_paused", "Recording paused.";
    RecordingResumed = "recording_resumed", "Recording resumed.";
    CallEnded = "call_ended", "The call ended for the bot.";
    BotRejected = "bot_rejected", "The bot was refused entry.";
    BotRemoved = "bot_removed", "The bot was removed from the meeting.";
    WaitingRoomTimeout = "waiting_room_timeout", "Nobody admitted the bot in time.";
    InvalidMeetingUrl = "invalid_meeting_url", "The meeting URL is not a meeting.";
    MeetingError = "meeting_error", "A meeting error (`error_message`, `error_type`).";
    ApiRequestStop = "api_request_stop", "Stopped by an API request.";
    BotRemovedTooEarly = "bot_removed_too_early", "Removed before recording anything useful.";
    RecordingSucceeded = "recording_succeeded", "The recording was saved.";
    RecordingFailed = "recording_failed", "The recording failed (`error_message`).";
    Queued = "queued", "v2: the bot is queued.";
    PickupDelayed = "pickup_delayed", "v2: the bot's start is delayed.";
    InWaitingForHost = "in_waiting_for_host", "v2: the bot waits for the host to start the meeting.";
    Transcribing = "transcribing", "v2: the recording is being transcribed.";
    Completed = "completed", "v2: everything is done.";
    Failed = "failed", "v2: the bot failed.";
    AwaitingReconciliation = "awaiting_reconciliation", "v2 (SDK 6.2.0): the platform reconciles the bot's end state.";
    TranscriptionFailed = "transcription_failed", "v2 (SDK 6.2.0): transcription failed.";
    Retrying = "retrying", "v2 (SDK 6.2.1): joining failed, another attempt follows (`attempt`/`max`); not terminal.";
}

impl From<StatusCode> for String {
    fn from(c: StatusCode) -> String {
        match c {
            StatusCode::Other(s) => s,
            known => known.as_str().to_string(),
        }
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `data.status` of a `bot.status_change`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BotStatus {
    /// The status code.
    pub code: StatusCode,
    /// ISO-8601 time of the change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// When recording started (`in_call_recording`): epoch milliseconds in v1, seconds in v2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Number>,
    /// Error text (`meeting_error`, `recording_failed`); may be null in v2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Nullable<String>,
    /// Error kind (`meeting_error`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    /// `retrying`: which attempt follows, 1-based (SDK 6.2.1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// `retrying`: how many attempts there are in all (e.g. 5 for Zoom).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
    /// Fields this model does not know, kept as-is.
    #[serde(flatten)]
    pub unknown: Map<String, Value>,
}

read_in_place!(BotStatus, required: [code], plain: [created_at, start_time, error_type, attempt, max], present: [error_message]);

/// `bot.status_change` data (v1 and v2).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusChange {
    /// The bot's uuid.
    pub bot_id: String,
    /// v2: the calendar event id, or null.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Nullable<String>,
    /// The new status.
    pub status: BotStatus,
    /// Fields this model does not know, kept as-is.
    #[serde(flatten)]
    pub unknown: Map<String, Value>,
}

read_in_place!(StatusChange, required: [bot_id, status], plain: [], present: [event_id]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_codes_round_trip() {
        for c in [
            "joining_call",
            "in_call_recording",
            "meeting_error",
            "in_waiting_for_host",
            "pickup_delayed",
            "awaiting_reconciliation",
            "transcription_failed",
            "retrying",
        ] {
            let code = StatusCode::from(c.to_string());
            assert!(!matches!(code, StatusCode::Other(_)), "{c}");
            assert_eq!(code.as_str(), c);
            assert_eq!(String::from(code), c);
        }
    }
}
