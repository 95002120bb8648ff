//! v2 API data: `bot.completed`, `bot.failed`, `bot.chat_message`, `calendar.*`.

use serde::Serialize;
use serde_json::{Map, Number, Value};

use super::in_place::read_in_place;
use super::Nullable;

/// A v2 participant or speaker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Participant {
    /// Name.
    pub name: String,
    /// Platform id, or null.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Nullable<Value>,
    /// Display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Picture URL, or null.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_picture: Nullable<String>,
    /// Fields this model does not know, kept as-is.
    #[serde(flatten)]
    pub unknown: Map<String, Value>,
}

read_in_place!(Participant, required: [name], plain: [display_name], present: [id, profile_picture]);

/// v2 `bot.completed` data; artifacts are URLs (valid ~4 h) or null.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BotCompleted {
    /// The bot's uuid.
    pub bot_id: String,
    /// The calendar event id, or null.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Nullable<String>,
    /// Everyone seen in the meeting.
    pub participants: Vec<Participant>,
    /// Everyone who spoke.
    pub speakers: Vec<Participant>,
    /// Length of the recording.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<Number>,
    /// When the bot joined (ISO-8601).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub joined_at: Option<String>,
    /// When the bot left (ISO-8601).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exited_at: Option<String>,
    /// Whether the data was already deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_deleted: Option<bool>,
    /// Video URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video: Nullable<String>,
    /// Audio URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio: Nullable<String>,
    /// Diarization URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diarization: Nullable<String>,
    /// Raw transcription URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_transcription: Nullable<String>,
    /// Transcription URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transcription: Nullable<String>,
    /// Transcription provider (`gladia`, …), or null.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transcription_provider: Nullable<String>,
    /// Provider job ids, or null.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transcription_ids: Nullable<Vec<String>>,
    /// When the webhook was sent (ISO-8601).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<String>,
    /// Fields this model does not know, kept as-is.
    #[serde(flatten)]
    pub unknown: Map<String, Value>,
}

read_in_place!(BotCompleted, required: [bot_id], plain: [participants, speakers, duration_seconds, joined_at, exited_at, data_deleted, sent_at], present: [event_id, video, audio, diarization, raw_transcription, transcription, transcription_provider, transcription_ids]);

/// v2 `bot.failed` data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BotFailed {
    /// The bot's uuid.
    pub bot_id: String,
    /// The calendar event id, or null.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Nullable<String>,
    /// Error code, an open set: `BOT_NOT_ACCEPTED`, `TIMEOUT_WAITING_TO_START`, …
    pub error_code: String,
    /// Error text, or null.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Nullable<String>,
    /// When the webhook was sent (ISO-8601).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<String>,
    /// Fields this model does not know, kept as-is.
    #[serde(flatten)]
    pub unknown: Map<String, Value>,
}

read_in_place!(BotFailed, required: [bot_id, error_code], plain: [sent_at], present: [event_id, error_message]);

/// v2 `bot.chat_message` data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatMessage {
    /// The bot's uuid.
    pub bot_id: String,
    /// The calendar event id, or null.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Nullable<String>,
    /// Message id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// Sender's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender_name: Option<String>,
    /// The sender's sequential participant id (a number), or null.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender_id: Nullable<Number>,
    /// The message.
    pub text: String,
    /// When it was sent (ISO-8601).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<String>,
    /// Fields this model does not know, kept as-is.
    #[serde(flatten)]
    pub unknown: Map<String, Value>,
}

read_in_place!(ChatMessage, required: [bot_id, text], plain: [message_id, sender_name, sent_at], present: [event_id, sender_id]);

/// v2 `calendar.*` data (connection and event changes); only the calendar id is typed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CalendarChange {
    /// The calendar's id, when present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calendar_id: Option<String>,
    /// Every other field, kept as-is.
    #[serde(flatten)]
    pub unknown: Map<String, Value>,
}

read_in_place!(CalendarChange, required: [], plain: [calendar_id], present: []);
