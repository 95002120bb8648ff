//! Meeting BaaS events, parsed leniently for display only: forwarding never uses the parse.
//!
//! - [`Webhook`] is the typed model of one webhook body (v1 and v2 API). Unknown events become
//!   [`MeetingEvent::Other`], unknown fields are kept in each struct's `unknown` map, codes are
//!   open (unknown status codes become [`StatusCode::Other`], error codes are plain strings).
//!   A known event whose data does not fit its type also becomes [`MeetingEvent::Other`]:
//!   a body with an `event` string is never rejected.
//! - [`Summary`] is what a listener prints about a body: event, bot id, code and a one-liner.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Number, Value};

/// A field that may be absent (`None`), present and null (`Some(None)`) or set (`Some(Some(v))`).
pub type Nullable<T> = Option<Option<T>>;

/// Reads a map key as one of `.0` (no allocation), or as an owned unknown key.
struct FieldKey(&'static [&'static str]);

impl<'de> de::DeserializeSeed<'de> for FieldKey {
    type Value = Result<&'static str, String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for FieldKey {
    type Value = Result<&'static str, String>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(self
            .0
            .iter()
            .find(|k| **k == s)
            .copied()
            .ok_or_else(|| s.to_string()))
    }
}

/// Implements `Deserialize` for a struct with an `unknown` map: known keys are read in place,
/// every other key is kept in `unknown`. This is what `#[serde(flatten)]` does, without
/// buffering the whole object first (a `complete` can carry megabytes of transcript).
/// - `required`: must be present;
/// - `plain`: optional, `null` reads as absent (`Option` → `None`, `Vec` must not be null);
/// - `present`: optional, `null` is kept apart from absence (`Nullable<T>`, `Option<Value>`).
macro_rules! read_in_place {
    ($ty:ident, required: [$($req:ident),*], plain: [$($plain:ident),*], present: [$($pres:ident),*]) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(concat!("an object (", stringify!($ty), ")"))
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$ty, A::Error> {
                        const FIELDS: &[&str] =
                            &[$(stringify!($req),)* $(stringify!($plain),)* $(stringify!($pres),)*];
                        $(let mut $req = None;)*
                        $(let mut $plain = Default::default();)*
                        $(let mut $pres = None;)*
                        let mut unknown = Map::new();
                        while let Some(key) = map.next_key_seed(FieldKey(FIELDS))? {
                            match key {
                                $(Ok(stringify!($req)) => $req = Some(map.next_value()?),)*
                                $(Ok(stringify!($plain)) => $plain = map.next_value()?,)*
                                $(Ok(stringify!($pres)) => $pres = Some(map.next_value()?),)*
                                Ok(other) => return Err(de::Error::unknown_field(other, FIELDS)),
                                Err(key) => {
                                    let v = map.next_value::<Value>()?;
                                    unknown.insert(key, v);
                                }
                            }
                        }
                        Ok($ty {
                            $($req: $req.ok_or_else(|| de::Error::missing_field(stringify!($req)))?,)*
                            $($plain,)*
                            $($pres,)*
                            unknown,
                        })
                    }
                }
                d.deserialize_map(V)
            }
        }
    };
}

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
    /// Fields this model does not know, kept as-is.
    #[serde(flatten)]
    pub unknown: Map<String, Value>,
}

read_in_place!(BotStatus, required: [code], plain: [created_at, start_time, error_type], present: [error_message]);

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
    /// Sender's platform id, or null.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender_id: Nullable<Value>,
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

/// Which API generation a body looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    /// v1: `{event, data}`, `x-meeting-baas-api-key`.
    V1,
    /// v2: `{event, data, extra}`, Svix-signed.
    V2,
}

/// The typed `event` + `data` of a webhook.
#[derive(Debug, Clone, PartialEq)]
pub enum MeetingEvent {
    /// `bot.status_change` (v1 and v2).
    StatusChange(StatusChange),
    /// v1 `complete`.
    Complete(Complete),
    /// v1 `failed`.
    Failed(Failed),
    /// v1 `transcription_complete`.
    TranscriptionComplete(TranscriptionComplete),
    /// v1 `calendar.sync_events`.
    CalendarSyncEvents(CalendarSync),
    /// v2 `bot.completed`.
    BotCompleted(BotCompleted),
    /// v2 `bot.failed`.
    BotFailed(BotFailed),
    /// v2 `bot.chat_message`.
    ChatMessage(ChatMessage),
    /// v2 `calendar.*` other than `calendar.sync_events`.
    Calendar {
        /// The full event name (`calendar.event_created`).
        event: String,
        /// The data.
        data: CalendarChange,
    },
    /// An unknown event, or a known one whose data does not fit its type.
    Other {
        /// The event name.
        event: String,
        /// The data as sent (`None` when absent).
        data: Option<Value>,
    },
}

impl MeetingEvent {
    /// Types `data` by the event name; falls back to [`MeetingEvent::Other`], never fails.
    pub fn from_parts(event: String, data: Option<Value>) -> MeetingEvent {
        use serde::de::DeserializeSeed as _;
        let known = matches!(
            event.as_str(),
            "bot.status_change"
                | "complete"
                | "failed"
                | "transcription_complete"
                | "bot.completed"
                | "bot.failed"
                | "bot.chat_message"
        ) || event.starts_with("calendar.");
        if let (true, Some(d)) = (known, &data) {
            if let Ok(typed) = TypedData(&event).deserialize(d) {
                return typed;
            }
        }
        MeetingEvent::Other { event, data }
    }

    /// The event name as sent.
    pub fn name(&self) -> &str {
        match self {
            MeetingEvent::StatusChange(_) => "bot.status_change",
            MeetingEvent::Complete(_) => "complete",
            MeetingEvent::Failed(_) => "failed",
            MeetingEvent::TranscriptionComplete(_) => "transcription_complete",
            MeetingEvent::CalendarSyncEvents(_) => "calendar.sync_events",
            MeetingEvent::BotCompleted(_) => "bot.completed",
            MeetingEvent::BotFailed(_) => "bot.failed",
            MeetingEvent::ChatMessage(_) => "bot.chat_message",
            MeetingEvent::Calendar { event, .. } | MeetingEvent::Other { event, .. } => event,
        }
    }

    /// `data.bot_id`, when the event is about a bot.
    pub fn bot_id(&self) -> Option<&str> {
        match self {
            MeetingEvent::StatusChange(d) => Some(&d.bot_id),
            MeetingEvent::Complete(d) => Some(&d.bot_id),
            MeetingEvent::Failed(d) => Some(&d.bot_id),
            MeetingEvent::TranscriptionComplete(d) => Some(&d.bot_id),
            MeetingEvent::BotCompleted(d) => Some(&d.bot_id),
            MeetingEvent::BotFailed(d) => Some(&d.bot_id),
            MeetingEvent::ChatMessage(d) => Some(&d.bot_id),
            MeetingEvent::CalendarSyncEvents(_) | MeetingEvent::Calendar { .. } => None,
            MeetingEvent::Other { data, .. } => data.as_ref()?.get("bot_id")?.as_str(),
        }
    }

    /// Whether the data was typed (not [`MeetingEvent::Other`]).
    pub fn is_typed(&self) -> bool {
        !matches!(self, MeetingEvent::Other { .. })
    }
}

/// One Meeting BaaS webhook body, typed: `{"event", "data", "extra"?}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    /// The event and its data.
    pub event: MeetingEvent,
    /// v2 top-level `extra` (the user's object from bot creation): `Some(Null)` when null,
    /// `None` when absent (v1).
    pub extra: Option<Value>,
    /// Other top-level fields, kept as-is.
    pub unknown: Map<String, Value>,
}

impl Webhook {
    /// The recording URLs a final event carries, each with its kind: v1 `complete` → `video`
    /// (its `mp4`) and `audio` when present, v2 `bot.completed` → `video`, `audio`.
    pub fn recording_urls(&self) -> Vec<(&'static str, &str)> {
        let mut out = Vec::new();
        match &self.event {
            MeetingEvent::Complete(c) => {
                if let Some(u) = c.mp4.as_deref().filter(|u| !u.is_empty()) {
                    out.push(("video", u));
                }
                if let Some(u) = c.audio.as_deref().filter(|u| !u.is_empty()) {
                    out.push(("audio", u));
                }
            }
            MeetingEvent::BotCompleted(c) => {
                if let Some(Some(u)) = &c.video {
                    out.push(("video", u.as_str()));
                }
                if let Some(Some(u)) = &c.audio {
                    out.push(("audio", u.as_str()));
                }
            }
            _ => {}
        }
        out.retain(|(_, u)| u.starts_with("http://") || u.starts_with("https://"));
        out
    }

    /// Parses a body; `None` when it is not JSON or has no string `event`.
    pub fn parse(body: &[u8]) -> Option<Webhook> {
        use serde::de::Deserializer as _;
        /// Just the event name; the rest is skipped without being built.
        #[derive(Deserialize)]
        struct Name {
            #[serde(default)]
            event: Option<String>,
        }
        // Fast path (a large `complete` carries megabytes of transcript): learn the event name
        // in a skimming pass, then type `data` as it streams by. Data that does not fit its
        // event's type (rare) fails that; the slow path reads it as a `Value`, then `Other`.
        let event = match crate::skim::event(body) {
            // No `event` at all: not a Meeting BaaS body; spare a full pass over it.
            crate::skim::Skim::NoEvent => return None,
            crate::skim::Skim::Event(event) => Some(event),
            crate::skim::Skim::Unsure => match serde_json::from_slice::<Name>(body) {
                Ok(Name { event: None }) => return None,
                Ok(Name { event }) => event,
                Err(_) => None,
            },
        };
        if let Some(event) = event {
            let mut de = serde_json::Deserializer::from_slice(body);
            let fast = (&mut de)
                .deserialize_map(EnvelopeVisitor {
                    known: Some(&event),
                })
                .and_then(|w| de.end().map(|()| w));
            if let Ok(w) = fast {
                return Some(w);
            }
        }
        serde_json::from_slice(body).ok()
    }

    /// The API generation this body looks like.
    pub fn api_version(&self) -> ApiVersion {
        let v2 = match &self.event {
            MeetingEvent::BotCompleted(_)
            | MeetingEvent::BotFailed(_)
            | MeetingEvent::ChatMessage(_)
            | MeetingEvent::Calendar { .. } => true,
            MeetingEvent::StatusChange(s) => self.extra.is_some() || s.event_id.is_some(),
            MeetingEvent::Complete(_)
            | MeetingEvent::Failed(_)
            | MeetingEvent::TranscriptionComplete(_)
            | MeetingEvent::CalendarSyncEvents(_) => false,
            MeetingEvent::Other { .. } => self.extra.is_some(),
        };
        if v2 {
            ApiVersion::V2
        } else {
            ApiVersion::V1
        }
    }
}

impl Serialize for Webhook {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("event", self.event.name())?;
        match &self.event {
            MeetingEvent::StatusChange(d) => m.serialize_entry("data", d)?,
            MeetingEvent::Complete(d) => m.serialize_entry("data", d)?,
            MeetingEvent::Failed(d) => m.serialize_entry("data", d)?,
            MeetingEvent::TranscriptionComplete(d) => m.serialize_entry("data", d)?,
            MeetingEvent::CalendarSyncEvents(d) => m.serialize_entry("data", d)?,
            MeetingEvent::BotCompleted(d) => m.serialize_entry("data", d)?,
            MeetingEvent::BotFailed(d) => m.serialize_entry("data", d)?,
            MeetingEvent::ChatMessage(d) => m.serialize_entry("data", d)?,
            MeetingEvent::Calendar { data, .. } => m.serialize_entry("data", data)?,
            MeetingEvent::Other { data, .. } => {
                if let Some(d) = data {
                    m.serialize_entry("data", d)?;
                }
            }
        }
        if let Some(extra) = &self.extra {
            m.serialize_entry("extra", extra)?;
        }
        for (k, v) in &self.unknown {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// Types `data` while it streams by, for an already-known event name. Fails on data that does
/// not fit, so that [`Webhook::parse`] can retry through a `Value` and fall back to `Other`.
struct TypedData<'a>(&'a str);

impl<'de> de::DeserializeSeed<'de> for TypedData<'_> {
    type Value = MeetingEvent;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<MeetingEvent, D::Error> {
        Ok(match self.0 {
            "bot.status_change" => MeetingEvent::StatusChange(Deserialize::deserialize(d)?),
            "complete" => MeetingEvent::Complete(Deserialize::deserialize(d)?),
            "failed" => MeetingEvent::Failed(Deserialize::deserialize(d)?),
            "transcription_complete" => {
                MeetingEvent::TranscriptionComplete(Deserialize::deserialize(d)?)
            }
            "calendar.sync_events" => {
                MeetingEvent::CalendarSyncEvents(Deserialize::deserialize(d)?)
            }
            "bot.completed" => MeetingEvent::BotCompleted(Deserialize::deserialize(d)?),
            "bot.failed" => MeetingEvent::BotFailed(Deserialize::deserialize(d)?),
            "bot.chat_message" => MeetingEvent::ChatMessage(Deserialize::deserialize(d)?),
            e if e.starts_with("calendar.") => MeetingEvent::Calendar {
                event: e.to_string(),
                data: Deserialize::deserialize(d)?,
            },
            e => MeetingEvent::Other {
                event: e.to_string(),
                data: Some(Value::deserialize(d)?),
            },
        })
    }
}

/// Reads a webhook object. With `known` (the event name, read beforehand), `data` is typed in
/// place (fast, but fails on data that does not fit); without, `data` goes through a `Value`
/// and never fails.
struct EnvelopeVisitor<'a> {
    known: Option<&'a str>,
}

impl<'de> Visitor<'de> for EnvelopeVisitor<'_> {
    type Value = Webhook;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Meeting BaaS webhook object with an `event` string")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Webhook, A::Error> {
        let mut event: Option<Value> = None;
        let mut data: Option<Value> = None;
        let mut typed: Option<MeetingEvent> = None;
        let mut extra = None;
        let mut unknown = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "event" => event = Some(map.next_value()?),
                "data" => match self.known {
                    Some(_) if typed.is_some() => return Err(de::Error::duplicate_field("data")),
                    Some(name) => typed = Some(map.next_value_seed(TypedData(name))?),
                    None => data = Some(map.next_value::<Value>()?),
                },
                "extra" => extra = Some(map.next_value::<Value>()?),
                _ => {
                    let v = map.next_value::<Value>()?;
                    unknown.insert(key, v);
                }
            }
        }
        let event = match event {
            Some(Value::String(s)) => s,
            Some(_) => return Err(de::Error::custom("`event` is not a string")),
            None => return Err(de::Error::missing_field("event")),
        };
        if self.known.is_some_and(|k| k != event) {
            return Err(de::Error::custom("`event` changed between passes"));
        }
        let event = match typed {
            Some(t) => t,
            None => MeetingEvent::from_parts(event, data),
        };
        Ok(Webhook {
            event,
            extra,
            unknown,
        })
    }
}

impl<'de> Deserialize<'de> for Webhook {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Webhook, D::Error> {
        d.deserialize_map(EnvelopeVisitor { known: None })
    }
}

/// When a pre-signed S3 URL expires, in Unix seconds: `X-Amz-Date` + `X-Amz-Expires`.
/// `None` when the URL lacks either.
pub fn presigned_url_expiry(url: &str) -> Option<i64> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or(query);
    let mut date = None;
    let mut expires = None;
    for pair in query.split('&') {
        let Some((k, v)) = pair.split_once('=') else {
            continue;
        };
        if k.eq_ignore_ascii_case("X-Amz-Date") {
            date = Some(v);
        } else if k.eq_ignore_ascii_case("X-Amz-Expires") {
            expires = v.parse::<i64>().ok();
        }
    }
    parse_amz_date(date?)?.checked_add(expires?)
}

/// `20250611T100003Z` → Unix seconds.
fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, se) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `HH:MM UTC` of Unix seconds.
fn hh_mm_utc(secs: i64) -> String {
    let day = secs.rem_euclid(86_400);
    format!("{:02}:{:02} UTC", day / 3600, day % 3600 / 60)
}

/// `1204` → `1,204`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let head = match digits.len() % 3 {
        0 => 3,
        r => r,
    };
    let mut out = digits[..head].to_string();
    for group in digits.as_bytes()[head..].chunks(3) {
        out.push(',');
        out.push_str(std::str::from_utf8(group).unwrap_or_default());
    }
    out
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{} {}", thousands(n), if n == 1 { one } else { many })
}

fn duration_text(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        _ => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
    }
}

/// Cuts `s` to `max` characters with an ellipsis.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// What a listener shows about one webhook body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Summary {
    /// `event` field (`bot.status_change`, `complete`, `bot.completed`, …).
    pub event: String,
    /// `data.bot_id` when present.
    pub bot_id: Option<String>,
    /// `data.status.code` for status changes, `data.error` / `data.error_code` for failures.
    pub code: Option<String>,
    /// A word put before the code in [`Summary::detail`] (`complete`, `failed`), if any.
    pub label: Option<String>,
    /// Extra facts shown after the code, ` · `-separated (`2 speakers`, `1,204 words`, …).
    pub facts: Vec<String>,
}

impl Summary {
    /// Parses a body as a Meeting BaaS envelope; `None` when it is not one.
    pub fn parse(body: &[u8]) -> Option<Summary> {
        Webhook::parse(body).map(|w| Summary::of(&w))
    }

    /// The summary of a typed webhook.
    pub fn of(w: &Webhook) -> Summary {
        let mut s = Summary {
            event: w.event.name().to_string(),
            bot_id: w.event.bot_id().map(str::to_string),
            ..Summary::default()
        };
        match &w.event {
            MeetingEvent::StatusChange(d) => {
                s.code = Some(d.status.code.as_str().to_string());
                let msg = d.status.error_message.clone().flatten();
                match (&d.status.error_type, msg) {
                    (Some(t), Some(m)) => s.facts.push(format!("{t}: {}", clip(&m, 80))),
                    (Some(t), None) => s.facts.push(t.clone()),
                    (None, Some(m)) => s.facts.push(clip(&m, 80)),
                    (None, None) => {}
                }
            }
            MeetingEvent::Complete(d) => {
                s.label = Some("complete".into());
                s.facts
                    .push(plural(d.speaker_count(), "speaker", "speakers"));
                if let Some(n) = d.word_count() {
                    s.facts.push(plural(n, "word", "words"));
                }
                if let Some(t) = d.mp4.as_deref().and_then(presigned_url_expiry) {
                    s.facts.push(format!("mp4 expires {}", hh_mm_utc(t)));
                }
            }
            MeetingEvent::Failed(d) => {
                s.label = Some("failed".into());
                s.code = Some(d.error.clone());
                if let Some(m) = &d.message {
                    s.facts.push(clip(m, 80));
                }
            }
            MeetingEvent::TranscriptionComplete(_) => {
                s.label = Some("transcription_complete".into());
            }
            MeetingEvent::CalendarSyncEvents(d) => {
                s.label = Some(format!("calendar {}", short_id(&d.calendar_id)));
                s.facts.push(format!(
                    "{} changed",
                    plural(d.affected_event_uuids.len(), "event", "events")
                ));
            }
            MeetingEvent::BotCompleted(d) => {
                s.label = Some("completed".into());
                s.facts
                    .push(plural(d.speakers.len(), "speaker", "speakers"));
                if let Some(secs) = d.duration_seconds.as_ref().and_then(Number::as_f64) {
                    s.facts.push(duration_text(secs));
                }
                if let Some(t) = d
                    .video
                    .as_ref()
                    .and_then(|v| v.as_deref())
                    .and_then(presigned_url_expiry)
                {
                    s.facts.push(format!("video expires {}", hh_mm_utc(t)));
                }
            }
            MeetingEvent::BotFailed(d) => {
                s.label = Some("failed".into());
                s.code = Some(d.error_code.clone());
                if let Some(Some(m)) = &d.error_message {
                    s.facts.push(clip(m, 80));
                }
            }
            MeetingEvent::ChatMessage(d) => {
                s.label = Some("chat".into());
                let who = d.sender_name.as_deref().unwrap_or("?");
                s.facts.push(format!("{who}: {}", clip(&d.text, 60)));
            }
            MeetingEvent::Calendar { data, .. } => {
                if let Some(id) = &data.calendar_id {
                    s.label = Some(format!("calendar {}", short_id(id)));
                }
            }
            MeetingEvent::Other { data, .. } => {
                // Same lenient reading as for any body: status code, else an error code.
                let d = data.as_ref();
                let get = |path: &[&str]| -> Option<String> {
                    let mut v = d?;
                    for k in path {
                        v = v.get(k)?;
                    }
                    v.as_str().map(str::to_string)
                };
                s.code = get(&["status", "code"])
                    .or_else(|| get(&["error_code"]))
                    .or_else(|| get(&["error"]));
            }
        }
        s
    }

    /// A one-liner: `bot 8d2f4c1a… in_call_recording`,
    /// `bot 8d2f4c1a… complete · 2 speakers · 1,204 words · mp4 expires 12:04 UTC`,
    /// `bot 8d2f4c1a… failed BotNotAccepted`; empty when there is nothing to say. Control
    /// characters from the body (newlines, escapes) are shown as spaces: it stays one line.
    pub fn detail(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if let Some(id) = &self.bot_id {
            parts.push(format!("bot {}", short_id(id)));
        }
        parts.extend(self.label.iter().cloned());
        parts.extend(self.code.iter().cloned());
        let mut out = parts.join(" ");
        for f in &self.facts {
            if !out.is_empty() {
                out.push_str(" · ");
            }
            out.push_str(f);
        }
        if out.chars().any(char::is_control) {
            out = out
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
        }
        out
    }
}

/// The first 8 characters of an id, with `…` when it was longer.
fn short_id(id: &str) -> String {
    let mut short: String = id.chars().take(8).collect();
    if id.chars().count() > 8 {
        short.push('…');
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOT: &str = "8d2f4c1a-5b6e-4f7a-9c3d-2e1f0a9b8c7d";

    #[test]
    fn status_change() {
        let s = Summary::parse(
            br#"{"event":"bot.status_change","data":{"bot_id":"8d2f4c1a-0000","status":{"code":"in_call_recording","start_time":1}}}"#,
        )
        .unwrap();
        assert_eq!(s.event, "bot.status_change");
        assert_eq!(s.code.as_deref(), Some("in_call_recording"));
        assert_eq!(s.detail(), "bot 8d2f4c1a… in_call_recording");
    }

    #[test]
    fn failures_v1_and_v2() {
        let v1 =
            Summary::parse(br#"{"event":"failed","data":{"bot_id":"b","error":"BotNotAccepted"}}"#)
                .unwrap();
        assert_eq!(v1.code.as_deref(), Some("BotNotAccepted"));
        assert_eq!(v1.detail(), "bot b failed BotNotAccepted");
        let v2 = Summary::parse(
            br#"{"event":"bot.failed","data":{"bot_id":"b","error_code":"BOT_NOT_ACCEPTED"},"extra":null}"#,
        )
        .unwrap();
        assert_eq!(v2.code.as_deref(), Some("BOT_NOT_ACCEPTED"));
        assert_eq!(v2.detail(), "bot b failed BOT_NOT_ACCEPTED");
    }

    #[test]
    fn lenient() {
        assert!(Summary::parse(b"not json").is_none());
        assert!(Summary::parse(br#"{"no_event":1}"#).is_none());
        assert!(Summary::parse(br#"{"event":5}"#).is_none());
        assert!(Summary::parse(br#"[1]"#).is_none());
        let odd = Summary::parse(br#"{"event":"new.kind","data":{"bot_id":5,"x":[]}}"#).unwrap();
        assert_eq!(odd.event, "new.kind");
        assert_eq!(odd.bot_id, None);
        // A known event whose data does not fit still summarizes, from the raw data.
        let w = Webhook::parse(br#"{"event":"failed","data":{"bot_id":"b","error":{"code":"X"}}}"#)
            .unwrap();
        assert!(!w.event.is_typed());
        assert_eq!(Summary::of(&w).detail(), "bot b");
        let w = Webhook::parse(br#"{"event":"bot.status_change"}"#).unwrap();
        assert_eq!(
            w.event,
            MeetingEvent::Other {
                event: "bot.status_change".into(),
                data: None
            }
        );
        assert_eq!(Summary::of(&w).detail(), "");
    }

    #[test]
    fn unknown_codes_fields_and_events_are_kept() {
        let body = br#"{"event":"bot.status_change","data":{"bot_id":"b","new_field":[1,2],"status":{"code":"teleported","created_at":"2025-06-11T10:00:00Z","why":"x"}},"top":true}"#;
        let w = Webhook::parse(body).unwrap();
        let MeetingEvent::StatusChange(sc) = &w.event else {
            panic!("typed: {w:?}")
        };
        assert_eq!(sc.status.code, StatusCode::Other("teleported".into()));
        assert_eq!(sc.unknown["new_field"], serde_json::json!([1, 2]));
        assert_eq!(sc.status.unknown["why"], "x");
        assert_eq!(w.unknown["top"], true);
        let back: Value = serde_json::to_value(&w).unwrap();
        assert_eq!(back, serde_json::from_slice::<Value>(body).unwrap());

        let body =
            br#"{"event":"bot.teleported","data":{"bot_id":"b","where":"mars"},"extra":null}"#;
        let w = Webhook::parse(body).unwrap();
        assert!(!w.event.is_typed());
        assert_eq!(w.event.bot_id(), Some("b"));
        assert_eq!(w.api_version(), ApiVersion::V2);
        assert_eq!(
            serde_json::to_value(&w).unwrap(),
            serde_json::from_slice::<Value>(body).unwrap()
        );
    }

    #[test]
    fn key_order_and_odd_shapes() {
        let a = Webhook::parse(br#"{"event":"failed","data":{"bot_id":"b","error":"BotRemoved"}}"#);
        let b = Webhook::parse(br#"{"data":{"error":"BotRemoved","bot_id":"b"},"event":"failed"}"#);
        assert_eq!(a, b);
        assert!(a.unwrap().event.is_typed());
        // Data that does not fit: the fast path fails, the slow path keeps it as Other.
        let w = Webhook::parse(br#"{"event":"complete","data":{"bot_id":"b","transcript":[{"speaker":"A","words":[{"start":"x"}]}]}}"#)
            .unwrap();
        assert!(
            matches!(&w.event, MeetingEvent::Other { event, data: Some(_) } if event == "complete")
        );
        let w = Webhook::parse(br#"{"event":"complete","data":null}"#).unwrap();
        assert_eq!(
            w.event,
            MeetingEvent::Other {
                event: "complete".into(),
                data: Some(Value::Null)
            }
        );
        // Trailing garbage or duplicate data is not a webhook / is read leniently, never a panic.
        assert!(Webhook::parse(br#"{"event":"failed","data":{}} x"#).is_none());
        let w = Webhook::parse(br#"{"event":"x","data":1,"data":2}"#).unwrap();
        assert_eq!(w.event.name(), "x");
        // Unknown word fields survive too.
        let w = Webhook::parse(br#"{"event":"complete","data":{"bot_id":"b","transcript":[{"speaker":"A","words":[{"start":1.5,"end":2.5,"word":"hi","confidence":0.9}]}]}}"#)
            .unwrap();
        let MeetingEvent::Complete(c) = &w.event else {
            panic!("{w:?}")
        };
        let word = &c.transcript.as_ref().unwrap()[0].words[0];
        assert_eq!(word.unknown["confidence"], 0.9);
    }

    #[test]
    fn detail_is_one_line() {
        let s = Summary::parse(
            br#"{"event":"bot.chat_message","data":{"bot_id":"b","sender_name":"x\u001b[31m","text":"a\nb\rc"}}"#,
        )
        .unwrap();
        assert_eq!(s.detail(), "bot b chat · x [31m: a b c");
    }

    #[test]
    fn known_codes_round_trip() {
        for c in [
            "joining_call",
            "in_call_recording",
            "meeting_error",
            "in_waiting_for_host",
        ] {
            let code = StatusCode::from(c.to_string());
            assert!(!matches!(code, StatusCode::Other(_)), "{c}");
            assert_eq!(code.as_str(), c);
            assert_eq!(String::from(code), c);
        }
    }

    #[test]
    fn complete_detail_counts_and_expiry() {
        let body = serde_json::json!({
            "event": "complete",
            "data": {
                "bot_id": BOT,
                "mp4": "https://bucket.s3.eu-west-3.amazonaws.com/x.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20250611T100400Z&X-Amz-Expires=7200&X-Amz-Signature=ab",
                "speakers": ["Alice", "Bob"],
                "transcript": [
                    {"speaker": "Alice", "words": [{"start": 0.5, "end": 0.9, "word": "Hi"}]},
                    {"speaker": "Bob", "words": [{"start": 1.5, "end": 1.9, "word": "Hello"}, {"start": 2.0, "end": 2.2, "word": "there"}]}
                ]
            }
        });
        let s = Summary::parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(
            s.detail(),
            "bot 8d2f4c1a… complete · 2 speakers · 3 words · mp4 expires 12:04 UTC"
        );
        assert_eq!(s.code, None);
        // Without X-Amz-Date the expiry is omitted; without a transcript so is the word count.
        let s = Summary::parse(
            br#"{"event":"complete","data":{"bot_id":"b","mp4":"https://x/y.mp4?X-Amz-Expires=7200","speakers":["A"]}}"#,
        )
        .unwrap();
        assert_eq!(s.detail(), "bot b complete · 1 speaker");
    }

    #[test]
    fn meeting_error_detail() {
        let s = Summary::parse(
            br#"{"event":"bot.status_change","data":{"bot_id":"b","status":{"code":"meeting_error","created_at":"2025-06-11T10:07:41.002Z","error_message":"Connection lost","error_type":"NetworkError"}}}"#,
        )
        .unwrap();
        assert_eq!(
            s.detail(),
            "bot b meeting_error · NetworkError: Connection lost"
        );
    }

    #[test]
    fn v2_details() {
        let s = Summary::parse(
            br#"{"event":"bot.completed","data":{"bot_id":"b","event_id":null,"speakers":[{"name":"A","id":null}],"duration_seconds":3725,"video":"https://x/v.mp4?X-Amz-Date=20250115T110000Z&X-Amz-Expires=14400"},"extra":null}"#,
        )
        .unwrap();
        assert_eq!(
            s.detail(),
            "bot b completed · 1 speaker · 1 h 02 min · video expires 15:00 UTC"
        );
        let s = Summary::parse(
            br#"{"event":"bot.chat_message","data":{"bot_id":"b","sender_name":"Alice","text":"hi bot"},"extra":null}"#,
        )
        .unwrap();
        assert_eq!(s.detail(), "bot b chat · Alice: hi bot");
        let s = Summary::parse(
            br#"{"event":"calendar.sync_events","data":{"calendar_id":"0c1d2e3f-aaaa","last_updated_ts":"2025-06-11T10:00:00Z","affected_event_uuids":["a","b"]}}"#,
        )
        .unwrap();
        assert_eq!(s.detail(), "calendar 0c1d2e3f… · 2 events changed");
    }

    #[test]
    fn presigned_expiry() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20250611T100003Z"), Some(1_749_636_003));
        assert_eq!(parse_amz_date("2025-06-11"), None);
        assert_eq!(parse_amz_date("20251311T100003Z"), None);
        assert_eq!(
            presigned_url_expiry("https://h/p?X-Amz-Expires=60&X-Amz-Date=20250611T100003Z"),
            Some(1_749_636_063)
        );
        assert_eq!(presigned_url_expiry("https://h/p"), None);
        let huge = format!(
            "https://h/p?X-Amz-Date=20250611T100003Z&X-Amz-Expires={}",
            i64::MAX
        );
        assert_eq!(presigned_url_expiry(&huge), None);
        assert_eq!(presigned_url_expiry("https://h/p?X-Amz-Expires=60"), None);
        assert_eq!(hh_mm_utc(1_749_636_063 + 7200), "12:01 UTC");
    }

    #[test]
    fn number_formatting() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1204), "1,204");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(duration_text(42.0), "42 s");
        assert_eq!(duration_text(3600.0), "1 h 00 min");
        assert_eq!(clip("abcdef", 4), "abc…");
    }

    #[test]
    fn api_versions() {
        let v1 = Webhook::parse(br#"{"event":"bot.status_change","data":{"bot_id":"b","status":{"code":"joining_call"}}}"#).unwrap();
        assert_eq!(v1.api_version(), ApiVersion::V1);
        let v2 = Webhook::parse(br#"{"event":"bot.status_change","data":{"bot_id":"b","event_id":null,"status":{"code":"queued"}},"extra":null}"#).unwrap();
        assert_eq!(v2.api_version(), ApiVersion::V2);
        assert_eq!(v2.extra, Some(Value::Null));
    }

    #[test]
    fn big_transcript_parses() {
        // ~2 MB of transcript: the summary still counts every word.
        let words: Vec<Value> = (0..40_000)
            .map(|i| serde_json::json!({"start": i as f64 * 0.5, "end": i as f64 * 0.5 + 0.4, "word": "word"}))
            .collect();
        let body = serde_json::json!({"event": "complete", "data": {"bot_id": BOT, "speakers": ["A"], "transcript": [{"speaker": "A", "words": words}]}});
        let bytes = serde_json::to_vec(&body).unwrap();
        let s = Summary::parse(&bytes).unwrap();
        assert_eq!(
            s.facts,
            vec!["1 speaker".to_string(), "40,000 words".to_string()]
        );
    }
}
