//! `listen --order`: which events must reach the handler one after the other. `channel`
//! (the default) orders them all; `bot` orders each bot's events and lets different bots go
//! at once; `event-key=PATH` does the same for the body's value at a JSON path.

use std::fmt;
use std::str::FromStr;

use meethook_proto::meeting::Summary;

/// What delivery keeps in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Order {
    /// Every event of the channel, one at a time.
    #[default]
    Channel,
    /// Each bot's events (`data.bot_id`) one at a time; events without one share a key.
    Bot,
    /// Events with the same value at this JSON path one at a time (`data.id`, `$.a.b`,
    /// `/a/b`); events without it share a key.
    EventKey(Vec<String>),
}

impl Order {
    /// Whether events of different keys may be delivered at once.
    pub fn is_keyed(&self) -> bool {
        !matches!(self, Order::Channel)
    }

    /// The key an event is ordered under: events with the same key go one at a time, in
    /// seq order. The empty key is the one shared by events without a value.
    pub fn key(&self, summary: Option<&Summary>, body: &[u8]) -> String {
        match self {
            Order::Channel => String::new(),
            Order::Bot => summary.and_then(|s| s.bot_id.clone()).unwrap_or_default(),
            Order::EventKey(path) => {
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
                    return String::new();
                };
                let found = path.iter().try_fold(&v, |v, seg| match v {
                    serde_json::Value::Array(a) => a.get(seg.parse::<usize>().ok()?),
                    _ => v.get(seg),
                });
                match found {
                    None | Some(serde_json::Value::Null) => String::new(),
                    Some(serde_json::Value::String(s)) => format!("s:{s}"),
                    Some(other) => format!("j:{other}"),
                }
            }
        }
    }
}

impl FromStr for Order {
    type Err = String;

    fn from_str(s: &str) -> Result<Order, String> {
        match s {
            "channel" => Ok(Order::Channel),
            "bot" => Ok(Order::Bot),
            _ => {
                let Some(path) = s.strip_prefix("event-key=") else {
                    return Err(format!(
                        "unknown order {s:?}: use channel, bot or event-key=JSONPATH \
                         (e.g. event-key=data.bot_id)"
                    ));
                };
                let segs: Vec<String> = if let Some(pointer) = path.strip_prefix('/') {
                    pointer
                        .split('/')
                        .map(|p| p.replace("~1", "/").replace("~0", "~"))
                        .collect()
                } else {
                    let p = path.strip_prefix("$.").unwrap_or(path);
                    p.split('.').map(str::to_string).collect()
                };
                if segs.iter().any(String::is_empty) {
                    return Err(format!(
                        "bad JSON path {path:?} in --order: use dotted names such as \
                         event-key=data.bot_id (or a JSON pointer, /data/bot_id)"
                    ));
                }
                Ok(Order::EventKey(segs))
            }
        }
    }
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Order::Channel => f.write_str("channel"),
            Order::Bot => f.write_str("bot"),
            Order::EventKey(p) => write!(f, "event-key={}", p.join(".")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_by_bot_and_by_json_path() {
        let s = Summary {
            event: "bot.status_change".into(),
            bot_id: Some("b1".into()),
            ..Summary::default()
        };
        assert_eq!(Order::Bot.key(Some(&s), b""), "b1");
        assert_eq!(Order::Bot.key(None, b"{}"), "", "no bot id: the shared key");
        let o: Order = "event-key=$.data.items.1".parse().unwrap();
        assert_eq!(o.key(None, br#"{"data":{"items":["a","b"]}}"#), "s:b");
        let o: Order = "event-key=/data/n".parse().unwrap();
        assert_eq!(o.key(None, br#"{"data":{"n":7}}"#), "j:7");
        assert_eq!(o.key(None, b"not json"), "");
        assert_eq!(o.to_string(), "event-key=data.n");
        let e = "event-key=a..b".parse::<Order>().unwrap_err();
        assert!(e.contains("bad JSON path"), "{e}");
        let e = "bots".parse::<Order>().unwrap_err();
        assert!(e.contains("use channel, bot or event-key"), "{e}");
    }
}
