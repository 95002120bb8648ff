//! The envelope: [`Webhook`] (`{"event", "data", "extra"?}`) and [`MeetingEvent`], the typed
//! `event` + `data`, read in one streaming pass when the data fits and leniently otherwise.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::{
    BotCompleted, BotFailed, CalendarChange, CalendarSync, ChatMessage, Complete, Failed,
    StatusChange, TranscriptionComplete,
};

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
        ) || (event.starts_with("calendar.")
            && !super::KNOWN_UNTYPED_EVENTS.contains(&event.as_str()));
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

    /// Whether the platform documents this event (typed or in [`super::KNOWN_UNTYPED_EVENTS`]).
    pub fn is_known(&self) -> bool {
        self.is_typed() || super::KNOWN_UNTYPED_EVENTS.contains(&self.name())
    }

    /// Whether the data was typed (not [`MeetingEvent::Other`]).
    pub fn is_typed(&self) -> bool {
        !matches!(self, MeetingEvent::Other { .. })
    }
}

/// One artifact link of a final event ([`Webhook::artifacts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Artifact<'a> {
    /// Its name in files and in `/artifacts/{seq}/{name}` (`video`, `diarization`, …).
    pub name: &'static str,
    /// The key under `data` that holds it (`mp4` for a v1 video).
    pub field: &'static str,
    /// The link as sent.
    pub url: &'a str,
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
    /// The artifact links a final event carries, each optional: v1 `complete` → `video` (its
    /// `mp4`) and `audio`; v2 `bot.completed` → `video`, `audio`, `diarization`,
    /// `raw_transcription`, `transcription`. Only `http(s)` links are returned.
    pub fn artifacts(&self) -> Vec<Artifact<'_>> {
        fn push<'a>(
            out: &mut Vec<Artifact<'a>>,
            name: &'static str,
            field: &'static str,
            url: Option<&'a str>,
        ) {
            if let Some(url) = url.filter(|u| u.starts_with("http://") || u.starts_with("https://"))
            {
                out.push(Artifact { name, field, url });
            }
        }
        let mut out = Vec::new();
        match &self.event {
            MeetingEvent::Complete(c) => {
                push(&mut out, "video", "mp4", c.mp4.as_deref());
                push(&mut out, "audio", "audio", c.audio.as_deref());
            }
            MeetingEvent::BotCompleted(c) => {
                for (field, v) in [
                    ("video", &c.video),
                    ("audio", &c.audio),
                    ("diarization", &c.diarization),
                    ("raw_transcription", &c.raw_transcription),
                    ("transcription", &c.transcription),
                ] {
                    push(
                        &mut out,
                        field,
                        field,
                        v.as_ref().and_then(|v| v.as_deref()),
                    );
                }
            }
            _ => {}
        }
        out
    }

    /// The recording links (`video`, `audio`) of [`Webhook::artifacts`], each with its name.
    pub fn recording_urls(&self) -> Vec<(&'static str, &str)> {
        self.artifacts()
            .into_iter()
            .filter(|a| matches!(a.name, "video" | "audio"))
            .map(|a| (a.name, a.url))
            .collect()
    }

    /// Whether `body` is JSON with a string `event` (what [`Webhook::parse`] accepts), most
    /// often by a quick look at its first keys rather than a full parse.
    pub fn names_event(body: &[u8]) -> bool {
        match crate::skim::event(body) {
            crate::skim::Skim::Event(_) => true,
            crate::skim::Skim::NoEvent => false,
            crate::skim::Skim::Unsure => Webhook::parse(body).is_some(),
        }
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
            e if e.starts_with("calendar.") && !super::KNOWN_UNTYPED_EVENTS.contains(&e) => {
                MeetingEvent::Calendar {
                    event: e.to_string(),
                    data: Deserialize::deserialize(d)?,
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meeting::StatusCode;

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
    fn api_versions() {
        let v1 = Webhook::parse(br#"{"event":"bot.status_change","data":{"bot_id":"b","status":{"code":"joining_call"}}}"#).unwrap();
        assert_eq!(v1.api_version(), ApiVersion::V1);
        let v2 = Webhook::parse(br#"{"event":"bot.status_change","data":{"bot_id":"b","event_id":null,"status":{"code":"queued"}},"extra":null}"#).unwrap();
        assert_eq!(v2.api_version(), ApiVersion::V2);
        assert_eq!(v2.extra, Some(Value::Null));
    }
}
