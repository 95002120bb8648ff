//! v1 API data: `complete` (with its transcript), `failed`, `transcription_complete`,
//! `calendar.sync_events`.

use serde::Serialize;
use serde_json::{Map, Value};

use super::in_place::read_in_place;
use super::Nullable;

/// One word of a v1 transcript.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Word {
    /// Start, seconds from the start of the recording.
    pub start: f64,
    /// End, seconds from the start of the recording.
    pub end: f64,
    /// The word.
    pub word: String,
    /// Fields this model does not know, kept as-is.
    #[serde(flatten)]
    pub unknown: Map<String, Value>,
}

read_in_place!(Word, required: [start, end, word], plain: [], present: []);

/// One speaker turn of a v1 transcript.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TranscriptSegment {
    /// Speaker name.
    pub speaker: String,
    /// Start of the turn, seconds (some pages show it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<f64>,
    /// Start of the turn, seconds (some pages show it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<f64>,
    /// End of the turn, seconds (some pages show it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<f64>,
    /// The words.
    pub words: Vec<Word>,
    /// Fields this model does not know, kept as-is.
    #[serde(flatten)]
    pub unknown: Map<String, Value>,
}

read_in_place!(TranscriptSegment, required: [speaker], plain: [offset, start_time, end_time, words], present: []);

/// v1 `complete` data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Complete {
    /// The bot's uuid.
    pub bot_id: String,
    /// Pre-signed URL of the recording (valid ~2 h).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mp4: Option<String>,
    /// Speaker names.
    pub speakers: Vec<String>,
    /// Word-level transcript, when transcription ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transcript: Option<Vec<TranscriptSegment>>,
    /// Pre-signed URL of the audio, on some pages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio: Option<String>,
    /// Event uuid (or null), on some pages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_uuid: Nullable<String>,
    /// The user's `extra` object from bot creation (`Some(Null)` when sent as null).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
    /// Fields this model does not know, kept as-is.
    #[serde(flatten)]
    pub unknown: Map<String, Value>,
}

read_in_place!(Complete, required: [bot_id], plain: [mp4, speakers, transcript, audio], present: [event_uuid, extra]);

impl Complete {
    /// Number of speakers: `speakers`, or the distinct transcript speakers when that is empty.
    pub fn speaker_count(&self) -> usize {
        if !self.speakers.is_empty() {
            return self.speakers.len();
        }
        let mut names: Vec<&str> = self
            .transcript
            .iter()
            .flatten()
            .map(|s| s.speaker.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        names.len()
    }

    /// Number of transcript words, `None` without a transcript.
    pub fn word_count(&self) -> Option<usize> {
        self.transcript
            .as_ref()
            .map(|t| t.iter().map(|s| s.words.len()).sum())
    }
}

/// v1 `failed` data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failed {
    /// The bot's uuid.
    pub bot_id: String,
    /// Error code, an open set: `BotNotAccepted`, `TimeoutWaitingToStart`, `InternalError`, …
    pub error: String,
    /// Error text, on some pages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Event uuid (or null), on some pages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_uuid: Nullable<String>,
    /// The user's `extra` object from bot creation (`Some(Null)` when sent as null).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
    /// Fields this model does not know, kept as-is.
    #[serde(flatten)]
    pub unknown: Map<String, Value>,
}

read_in_place!(Failed, required: [bot_id, error], plain: [message], present: [event_uuid, extra]);

/// v1 `transcription_complete` data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TranscriptionComplete {
    /// The bot's uuid.
    pub bot_id: String,
    /// Fields this model does not know, kept as-is.
    #[serde(flatten)]
    pub unknown: Map<String, Value>,
}

read_in_place!(TranscriptionComplete, required: [bot_id], plain: [], present: []);

/// v1 `calendar.sync_events` data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CalendarSync {
    /// The calendar's uuid.
    pub calendar_id: String,
    /// When the calendar was last updated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_updated_ts: Option<String>,
    /// The calendar events that changed.
    pub affected_event_uuids: Vec<String>,
    /// Fields this model does not know, kept as-is.
    #[serde(flatten)]
    pub unknown: Map<String, Value>,
}

read_in_place!(CalendarSync, required: [calendar_id], plain: [last_updated_ts, affected_event_uuids], present: []);
