//! Open sets of values the platform documents outside the status codes: `bot.failed` error
//! codes (the 6.2.0 Google Meet login codes among them), transcription providers, recording end
//! reasons, and event names known but not typed. Each is recognised for display only; an
//! unknown value is kept and shown as sent.

use serde_json::{Map, Value};

/// What a known `bot.failed` `error_code` means, in a few words; `None` for other codes.
pub fn error_code_meaning(code: &str) -> Option<&'static str> {
    Some(match code {
        "BOT_NOT_ACCEPTED" => "nobody admitted the bot",
        "TIMEOUT_WAITING_TO_START" => "the meeting never started",
        "CANNOT_JOIN_MEETING" => "the bot could not join",
        "INSUFFICIENT_TOKENS" => "the account is out of tokens",
        "TRANSCRIPTION_FAILED" => "transcription failed",
        "MEET_LOGIN_UNAVAILABLE" => "no Google sign-in available for Meet",
        "MEET_LOGIN_REQUIRED" => "Meet requires a signed-in bot",
        "MEET_LOGIN_FAILED_SAML_REJECTED" => "Google sign-in rejected by SAML",
        "MEET_LOGIN_FAILED_TIMEOUT" => "Google sign-in timed out",
        _ => return None,
    })
}

/// Transcription providers the platform names (`transcription_provider`): `gladia`, and since
/// SDK 6.2.0 `deepgram` and `assemblyai`.
pub const TRANSCRIPTION_PROVIDERS: &[&str] = &["gladia", "deepgram", "assemblyai"];

/// Whether `provider` is one of [`TRANSCRIPTION_PROVIDERS`].
pub fn is_known_provider(provider: &str) -> bool {
    TRANSCRIPTION_PROVIDERS.contains(&provider)
}

/// Why a recording ended, as the platform's seed docs list the values. No published source
/// names the field that carries one, so a value is recognised wherever it turns up as a
/// string in fields this model does not type ([`EndReason::find`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The bot was removed from the meeting.
    BotRemoved,
    /// Everyone left (or nobody came).
    NoAttendees,
    /// Nobody spoke for too long.
    NoSpeaker,
    /// The recording reached its time limit.
    RecordingTimeout,
    /// Stopped by an API request.
    ApiRequest,
    /// A meeting error ended it.
    MeetingError,
}

impl EndReason {
    /// Every end reason, in the docs' order.
    pub const ALL: [EndReason; 6] = [
        EndReason::BotRemoved,
        EndReason::NoAttendees,
        EndReason::NoSpeaker,
        EndReason::RecordingTimeout,
        EndReason::ApiRequest,
        EndReason::MeetingError,
    ];

    /// The value as sent (`no_attendees`).
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::BotRemoved => "bot_removed",
            EndReason::NoAttendees => "no_attendees",
            EndReason::NoSpeaker => "no_speaker",
            EndReason::RecordingTimeout => "recording_timeout",
            EndReason::ApiRequest => "api_request",
            EndReason::MeetingError => "meeting_error",
        }
    }

    /// In a few words, for summaries.
    pub fn meaning(self) -> &'static str {
        match self {
            EndReason::BotRemoved => "bot removed",
            EndReason::NoAttendees => "no attendees left",
            EndReason::NoSpeaker => "nobody spoke",
            EndReason::RecordingTimeout => "recording time limit",
            EndReason::ApiRequest => "stopped by API request",
            EndReason::MeetingError => "meeting error",
        }
    }

    /// The end reason `s` names, if any.
    pub fn parse(s: &str) -> Option<EndReason> {
        EndReason::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The first untyped field (of `unknown`) whose string value is an end reason: the key
    /// and the reason. Only untyped fields are looked at, so a status code `bot_removed` is
    /// not mistaken for one.
    pub fn find(unknown: &Map<String, Value>) -> Option<(&str, EndReason)> {
        unknown
            .iter()
            .find_map(|(k, v)| Some((k.as_str(), EndReason::parse(v.as_str()?)?)))
    }
}

/// Events the platform documents whose data the SDK does not type: kept as
/// [`super::MeetingEvent::Other`], but shown as known (`calendar.connection_error`).
pub const KNOWN_UNTYPED_EVENTS: &[&str] = &["calendar.connection_error"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_reasons_round_trip_and_are_found_in_untyped_fields_only() {
        for r in EndReason::ALL {
            assert_eq!(EndReason::parse(r.as_str()), Some(r));
        }
        assert_eq!(EndReason::parse("teleported"), None);
        let m: Map<String, Value> =
            serde_json::from_str(r#"{"n":1,"why":"no_speaker","x":"no_attendees"}"#).unwrap();
        assert_eq!(EndReason::find(&m), Some(("why", EndReason::NoSpeaker)));
        assert_eq!(EndReason::find(&Map::new()), None);
    }

    #[test]
    fn codes_and_providers() {
        assert!(error_code_meaning("MEET_LOGIN_REQUIRED").is_some());
        assert!(error_code_meaning("SOMETHING_NEW").is_none());
        assert!(is_known_provider("deepgram") && is_known_provider("assemblyai"));
        assert!(!is_known_provider("whisper"));
    }
}
