//! Scenario placeholders (`{{bot_id}}`, `{{iso_s-62s}}`, `{{epoch_ms+500ms}}`, …), filled in the
//! strings of a body: the syntax is in the parent module's doc.

use anyhow::{anyhow, bail};
use serde_json::Value;

/// What a placeholder becomes.
enum Filled {
    Str(String),
    Num(i64),
}

impl Filled {
    fn text(self) -> String {
        match self {
            Filled::Str(s) => s,
            Filled::Num(n) => n.to_string(),
        }
    }
}

/// Fills one placeholder (the text between `{{` and `}}`) for a step at `at_ms`.
fn fill(token: &str, bot_id: &str, at_ms: i64) -> anyhow::Result<Filled> {
    let split = token.find(['+', '-']).unwrap_or(token.len());
    let (kind, offset) = token.split_at(split);
    let offset_ms = if offset.is_empty() {
        0
    } else {
        let (sign, rest) = offset.split_at(1);
        let (digits, unit_ms) = if let Some(d) = rest.strip_suffix("ms") {
            (d, 1)
        } else if let Some(d) = rest.strip_suffix('s') {
            (d, 1000)
        } else {
            bail!("placeholder {{{{{token}}}}}: offset must end in ms or s");
        };
        let n: i64 = digits
            .parse()
            .map_err(|_| anyhow!("placeholder {{{{{token}}}}}: bad offset"))?;
        if sign == "-" {
            -n * unit_ms
        } else {
            n * unit_ms
        }
    };
    let t = at_ms + offset_ms;
    let time = |fmt: &str| -> anyhow::Result<Filled> {
        let dt = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(t)
            .ok_or_else(|| anyhow!("placeholder {{{{{token}}}}}: time out of range"))?;
        Ok(Filled::Str(dt.format(fmt).to_string()))
    };
    let plain = |f: Filled| -> anyhow::Result<Filled> {
        if offset.is_empty() {
            Ok(f)
        } else {
            bail!("placeholder {{{{{token}}}}} takes no offset")
        }
    };
    match kind {
        "bot_id" => plain(Filled::Str(bot_id.to_string())),
        "uuid" => plain(Filled::Str(uuid::Uuid::new_v4().to_string())),
        "iso" => time("%Y-%m-%dT%H:%M:%S%.3fZ"),
        "iso_s" => time("%Y-%m-%dT%H:%M:%SZ"),
        "amz_date" => time("%Y%m%dT%H%M%SZ"),
        "epoch_ms" => Ok(Filled::Num(t)),
        "epoch_s" => Ok(Filled::Num(t.div_euclid(1000))),
        _ => bail!("unknown placeholder {{{{{token}}}}}"),
    }
}

/// Fills every placeholder in the strings of `v` for a step at `at_ms`. A string that is one
/// epoch placeholder becomes a number.
pub(super) fn render(v: &mut Value, bot_id: &str, at_ms: i64) -> anyhow::Result<()> {
    match v {
        Value::Array(items) => items.iter_mut().try_for_each(|i| render(i, bot_id, at_ms)),
        Value::Object(entries) => entries
            .values_mut()
            .try_for_each(|v| render(v, bot_id, at_ms)),
        Value::String(s) if s.contains("{{") => {
            let whole = s
                .strip_prefix("{{")
                .and_then(|r| r.strip_suffix("}}"))
                .filter(|t| !t.contains("{{") && !t.contains("}}"));
            if let Some(token) = whole {
                *v = match fill(token, bot_id, at_ms)? {
                    Filled::Num(n) => Value::from(n),
                    Filled::Str(text) => Value::String(text),
                };
                return Ok(());
            }
            let mut out = String::with_capacity(s.len());
            let mut rest = s.as_str();
            while let Some(open) = rest.find("{{") {
                out.push_str(&rest[..open]);
                let after = &rest[open + 2..];
                let close = after
                    .find("}}")
                    .ok_or_else(|| anyhow!("unclosed placeholder in `{s}`"))?;
                out.push_str(&fill(&after[..close], bot_id, at_ms)?.text());
                rest = &after[close + 2..];
            }
            out.push_str(rest);
            *s = out;
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOT: &str = "8d2f4c1a-5b6e-4f7a-9c3d-2e1f0a9b8c7d";

    #[test]
    fn placeholders() {
        let t = 1_749_636_003_120;
        let mut v: Value = serde_json::from_str(
            r#"{"a":"{{epoch_ms}}","b":"{{epoch_s-3s}}","c":"x-{{iso}}-{{iso_s+500ms}}","d":"{{amz_date}}","e":"{{bot_id}}/{{bot_id}}","f":"{{uuid}}"}"#,
        )
        .unwrap();
        render(&mut v, BOT, t).unwrap();
        assert_eq!(v["a"], 1_749_636_003_120i64);
        assert_eq!(v["b"], 1_749_636_000i64);
        assert_eq!(v["c"], "x-2025-06-11T10:00:03.120Z-2025-06-11T10:00:03Z");
        assert_eq!(v["d"], "20250611T100003Z");
        assert_eq!(v["e"], format!("{BOT}/{BOT}"));
        let u = uuid::Uuid::parse_str(v["f"].as_str().unwrap()).unwrap();
        assert_eq!(u.get_version_num(), 4);
        for bad in ["{{nope}}", "{{bot_id+1s}}", "{{iso+1h}}", "x {{iso"] {
            let mut v = Value::String(bad.into());
            assert!(render(&mut v, BOT, t).is_err(), "{bad}");
        }
    }
}
