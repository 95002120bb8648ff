//! Meeting BaaS events, parsed leniently for display only: forwarding never uses the parse.

use serde::Deserialize;

/// What a listener shows about one webhook body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Summary {
    /// `event` field (`bot.status_change`, `complete`, `bot.completed`, …).
    pub event: String,
    /// `data.bot_id` when present.
    pub bot_id: Option<String>,
    /// `data.status.code` for status changes, `data.error` / `data.error_code` for failures.
    pub code: Option<String>,
}

#[derive(Deserialize)]
struct Envelope {
    event: String,
    #[serde(default)]
    data: Option<Data>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(default)]
    bot_id: Option<String>,
    #[serde(default)]
    status: Option<Status>,
    #[serde(default)]
    error: Option<serde_json::Value>,
    #[serde(default)]
    error_code: Option<String>,
}

#[derive(Deserialize)]
struct Status {
    #[serde(default)]
    code: Option<String>,
}

impl Summary {
    /// Parses a body as a Meeting BaaS envelope; `None` when it is not one.
    pub fn parse(body: &[u8]) -> Option<Summary> {
        let env: Envelope = serde_json::from_slice(body).ok()?;
        let data = env.data;
        let (bot_id, code) = match data {
            Some(d) => {
                let code = d
                    .status
                    .and_then(|s| s.code)
                    .or(d.error_code)
                    .or_else(|| match d.error {
                        Some(serde_json::Value::String(s)) => Some(s),
                        _ => None,
                    });
                (d.bot_id, code)
            }
            None => (None, None),
        };
        Some(Summary {
            event: env.event,
            bot_id,
            code,
        })
    }

    /// `bot 8d2f4c1a… in_call_recording`, or just the code when there is no bot id.
    pub fn detail(&self) -> String {
        let mut out = String::new();
        if let Some(id) = &self.bot_id {
            let short: String = id.chars().take(8).collect();
            out.push_str("bot ");
            out.push_str(&short);
            if id.chars().count() > 8 {
                out.push('…');
            }
        }
        if let Some(code) = &self.code {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(code);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let v1 = Summary::parse(br#"{"event":"failed","data":{"bot_id":"b","error":"BotNotAccepted"}}"#)
            .unwrap();
        assert_eq!(v1.detail(), "bot b BotNotAccepted");
        let v2 = Summary::parse(
            br#"{"event":"bot.failed","data":{"bot_id":"b","error_code":"BOT_NOT_ACCEPTED"},"extra":null}"#,
        )
        .unwrap();
        assert_eq!(v2.code.as_deref(), Some("BOT_NOT_ACCEPTED"));
    }

    #[test]
    fn lenient() {
        assert!(Summary::parse(b"not json").is_none());
        assert!(Summary::parse(br#"{"no_event":1}"#).is_none());
        let odd = Summary::parse(br#"{"event":"new.kind","data":{"bot_id":5,"x":[]}}"#);
        // A bot_id of the wrong type makes the data unreadable, never a panic.
        assert!(odd.is_none() || odd.unwrap().event == "new.kind");
    }
}
