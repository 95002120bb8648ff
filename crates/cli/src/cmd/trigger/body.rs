//! What each event's body becomes: `--override`s, then placeholders, then `--artifacts-url`,
//! then one serialization, whose bytes are what is sent (and signed).

use anyhow::bail;
use serde_json::Value;

use super::scenarios::{Scenario, Step};
use super::template::render;

/// One `--override PATH=VALUE`.
#[derive(Debug, Clone)]
pub(super) struct Override {
    /// The keys (or array indexes) from the body's root.
    pub(super) path: Vec<String>,
    value: Value,
}

/// clap parser for `--override`: VALUE is JSON, else a string.
pub(super) fn parse_override(s: &str) -> Result<Override, String> {
    let (path, value) = s
        .split_once('=')
        .ok_or("expected PATH=VALUE, e.g. data.status.error_message=\"x\"")?;
    let path: Vec<String> = path.trim().split('.').map(str::to_string).collect();
    if path.iter().any(|p| p.is_empty()) {
        return Err(format!("bad path in `{s}`: expected keys joined by dots"));
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
    Ok(Override { path, value })
}

/// `keys` as a JSON pointer (RFC 6901), for [`Value::pointer_mut`].
fn pointer(keys: &[String]) -> String {
    keys.iter()
        .map(|k| format!("/{}", k.replace('~', "~0").replace('/', "~1")))
        .collect()
}

/// Applies the overrides; returns how many events each one touched.
fn apply_overrides(steps: &mut [Step], overrides: &[Override]) -> anyhow::Result<Vec<usize>> {
    let mut counts = Vec::new();
    for o in overrides {
        let at = pointer(&o.path);
        let mut hits = 0;
        for s in steps.iter_mut() {
            if let Some(slot) = s.body.pointer_mut(&at) {
                *slot = o.value.clone();
                hits += 1;
            }
        }
        if hits == 0 {
            let (last, parent) = o.path.split_last().expect("paths are not empty");
            let parent = pointer(parent);
            for s in steps.iter_mut() {
                if let Some(Value::Object(entries)) = s.body.pointer_mut(&parent) {
                    entries.insert(last.clone(), o.value.clone());
                    hits += 1;
                }
            }
        }
        if hits == 0 {
            bail!(
                "--override {}: no event in this scenario has `{}`",
                o.path.join("."),
                o.path[..o.path.len() - 1].join(".")
            );
        }
        counts.push(hits);
    }
    Ok(counts)
}

/// One event ready to send: when (ms after the origin) and its exact bytes.
pub(super) struct Ready {
    pub(super) at_ms: u64,
    pub(super) body: Vec<u8>,
}

/// Renders a scenario: overrides, then placeholders, then one serialization per event.
pub(super) fn prepare(
    scenario: Scenario,
    bot_id: &str,
    origin_ms: i64,
    overrides: &[Override],
    artifacts_url: Option<&str>,
) -> anyhow::Result<(Vec<Ready>, Vec<usize>)> {
    let mut steps = scenario.steps;
    let counts = apply_overrides(&mut steps, overrides)?;
    let mut at = 0u64;
    let mut out = Vec::with_capacity(steps.len());
    for mut s in steps {
        at += s.delay_ms;
        render(&mut s.body, bot_id, origin_ms + at as i64)?;
        if let Some(base) = artifacts_url {
            rehost_artifacts(&mut s.body, base.trim_end_matches('/'));
        }
        out.push(Ready {
            at_ms: at,
            body: serde_json::to_vec(&s.body)?,
        });
    }
    Ok((out, counts))
}

/// Moves every S3 link (`https://….amazonaws.com/…`) in `v` to `base`, path and query kept.
fn rehost_artifacts(v: &mut Value, base: &str) {
    match v {
        Value::String(s) => {
            if let Some(rest) = s.strip_prefix("https://") {
                let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                if host.ends_with(".amazonaws.com") {
                    *s = format!("{base}{path}");
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| rehost_artifacts(i, base)),
        Value::Object(entries) => entries.values_mut().for_each(|v| rehost_artifacts(v, base)),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::super::scenarios::load;
    use super::*;

    #[test]
    fn key_order_and_numbers_survive() {
        // `preserve_order` and `arbitrary_precision`: a body goes out as the file wrote it.
        let text = r#"{"z":1,"a":[1.5,-2,true,null,1.50],"m":{"y":"s","b":{}}}"#;
        let v: Value = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), text);
    }

    #[test]
    fn overrides() {
        let o = parse_override("data.status.error_message=tab crashed").unwrap();
        assert_eq!(o.value, Value::String("tab crashed".into()));
        let n = parse_override("data.status.start_time=5").unwrap();
        assert_eq!(n.value, serde_json::json!(5));
        assert!(parse_override("nope").is_err());
        assert!(parse_override("a..b=1").is_err());

        let mut steps = load("meeting-error").unwrap().steps;
        let counts = apply_overrides(&mut steps, std::slice::from_ref(&o)).unwrap();
        assert_eq!(
            counts,
            [1],
            "only the meeting_error event has an error_message"
        );
        // A path no event has is added where its parent exists…
        let add = parse_override(r#"data.extra={"k":1}"#).unwrap();
        let counts = apply_overrides(&mut steps, &[add]).unwrap();
        assert_eq!(counts, [steps.len()]);
        // …and refused when nothing has the parent either.
        let none = parse_override("data.nothing.here=1").unwrap();
        assert!(apply_overrides(&mut steps, &[none]).is_err());
        // Array indexes work.
        let mut steps = load("meeting-success").unwrap().steps;
        let w = parse_override("data.transcript.0.speaker=Zoe").unwrap();
        assert_eq!(apply_overrides(&mut steps, &[w]).unwrap(), [1]);
        // Keys holding `/` or `~` are keys, not pointer syntax.
        assert_eq!(pointer(&["a/b".into(), "~c".into()]), "/a~1b/~0c");
    }
}
