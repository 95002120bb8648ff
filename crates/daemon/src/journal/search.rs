//! The content filters of a [`super::Query`] ([`Search`]): a header, a condition on a JSON
//! path of the body, free text. SQL narrows the rows first where it can say for sure that a
//! row cannot match ([`Search::prefilter`]); [`Search::matches`] then decides on each row left.

use std::fmt;
use std::str::FromStr;

use meethook_proto::Event;
use serde_json::Value;

/// Filters on an event's headers and body; every one that is set must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Search {
    /// A header by name, and a piece of its value.
    pub header: Option<HeaderMatch>,
    /// A condition on a JSON path of the body.
    pub json: Option<JsonCond>,
    /// Text found in the body, a header name or a header value (ASCII case ignored).
    pub text: Option<String>,
}

/// `NAME` (the header is there), `NAME:VALUE` or `NAME=VALUE` (a header of that name whose
/// value contains VALUE); names and values compare with ASCII case ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderMatch {
    /// Lowercase header name.
    pub name: String,
    /// Lowercase piece of the value, when one is asked for.
    pub value: Option<String>,
}

impl FromStr for HeaderMatch {
    type Err = String;

    fn from_str(s: &str) -> Result<HeaderMatch, String> {
        let (name, value) = match s.find([':', '=']) {
            Some(i) => (&s[..i], Some(s[i + 1..].trim())),
            None => (s, None),
        };
        let name = name.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(format!(
                "header filter {s:?}: expected NAME, NAME:VALUE or NAME=VALUE \
                 (e.g. svix-id:msg_2x)"
            ));
        }
        Ok(HeaderMatch {
            name: name.to_ascii_lowercase(),
            value: value.filter(|v| !v.is_empty()).map(str::to_ascii_lowercase),
        })
    }
}

/// One step of a JSON path: an object key, or an array index (`speakers[0]`, `speakers.0`).
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// An object member.
    Key(String),
    /// An array element.
    Index(usize),
}

/// How a [`JsonCond`] compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`: the value equals (a string as is, a number numerically, others as JSON text).
    Eq,
    /// `!=`: the path is missing or its value is not equal.
    Ne,
    /// `exists`: the path is there (even as `null`).
    Exists,
    /// `contains` or `~`: a string containing the text (ASCII case ignored), an array with an
    /// element that contains it, or other JSON whose text contains it.
    Contains,
}

/// `PATH OP [VALUE]`: `data.status.code = in_call_recording`, `data.error exists`,
/// `data.transcript ~ hello`. A quoted value (`"a b"`) is taken without its quotes.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonCond {
    /// The path from the body's root.
    pub path: Vec<Step>,
    /// The comparison.
    pub op: Op,
    /// What is compared against (empty for `exists`).
    pub value: String,
}

impl fmt::Display for JsonCond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.path.iter().enumerate() {
            match s {
                Step::Key(k) if i == 0 => write!(f, "{k}")?,
                Step::Key(k) => write!(f, ".{k}")?,
                Step::Index(n) => write!(f, "[{n}]")?,
            }
        }
        match self.op {
            Op::Eq => write!(f, " = {}", self.value),
            Op::Ne => write!(f, " != {}", self.value),
            Op::Exists => write!(f, " exists"),
            Op::Contains => write!(f, " ~ {}", self.value),
        }
    }
}

impl FromStr for JsonCond {
    type Err = String;

    fn from_str(s: &str) -> Result<JsonCond, String> {
        let bad = |why: &str| {
            format!(
                "JSON condition {s:?}: {why}; expected PATH = VALUE, PATH != VALUE, \
                 PATH ~ TEXT, PATH contains TEXT or PATH exists \
                 (e.g. data.status.code = in_call_recording)"
            )
        };
        let t = s.trim();
        // The path ends at the first space or operator character.
        let end = t
            .find(|c: char| c.is_whitespace() || "=!~".contains(c))
            .unwrap_or(t.len());
        let (path_text, rest) = t.split_at(end);
        let path = parse_path(path_text).map_err(|e| bad(&e))?;
        let rest = rest.trim_start();
        let (op, value) = if let Some(v) = rest.strip_prefix("!=") {
            (Op::Ne, v)
        } else if let Some(v) = rest.strip_prefix("==").or_else(|| rest.strip_prefix('=')) {
            (Op::Eq, v)
        } else if let Some(v) = rest.strip_prefix('~') {
            (Op::Contains, v)
        } else if let Some(v) = rest.strip_prefix("contains") {
            (Op::Contains, v)
        } else if rest == "exists" {
            (Op::Exists, "")
        } else {
            return Err(bad("no operator"));
        };
        let value = value.trim();
        let value = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            Some(inner) => inner,
            None => value,
        };
        if op != Op::Exists && value.is_empty() {
            return Err(bad("no value"));
        }
        Ok(JsonCond {
            path,
            op,
            value: value.to_string(),
        })
    }
}

/// `data.speakers[0].name` (a leading `$.` is allowed) as steps.
fn parse_path(p: &str) -> Result<Vec<Step>, String> {
    let p = p.strip_prefix('$').unwrap_or(p);
    let p = p.strip_prefix('.').unwrap_or(p);
    if p.is_empty() {
        return Err("no path".into());
    }
    let mut steps = Vec::new();
    for part in p.split('.') {
        let (key, mut idx) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if key.is_empty() && idx.is_empty() {
            return Err(format!("empty step in path {p:?}"));
        }
        if !key.is_empty() {
            steps.push(match key.parse::<usize>() {
                Ok(n) => Step::Index(n),
                Err(_) => Step::Key(key.to_string()),
            });
        }
        while !idx.is_empty() {
            let close = idx
                .find(']')
                .ok_or_else(|| format!("unclosed [ in {p:?}"))?;
            let n = idx[1..close]
                .parse::<usize>()
                .map_err(|_| format!("[{}] is not an index in {p:?}", &idx[1..close]))?;
            steps.push(Step::Index(n));
            idx = &idx[close + 1..];
            if !idx.is_empty() && !idx.starts_with('[') {
                return Err(format!("unexpected {idx:?} in path {p:?}"));
            }
        }
    }
    Ok(steps)
}

impl JsonCond {
    /// Whether the JSON document `doc` meets the condition.
    pub fn eval(&self, doc: &Value) -> bool {
        let mut at = Some(doc);
        for step in &self.path {
            at = at.and_then(|v| match (step, v) {
                (Step::Key(k), Value::Object(m)) => m.get(k),
                (Step::Index(n), Value::Array(a)) => a.get(*n),
                // `speakers.0` written for an object with a key "0".
                (Step::Index(n), Value::Object(m)) => m.get(&n.to_string()),
                _ => None,
            });
        }
        match (self.op, at) {
            (Op::Exists, found) => found.is_some(),
            (Op::Eq, Some(v)) => equals(v, &self.value),
            (Op::Eq, None) => false,
            (Op::Ne, Some(v)) => !equals(v, &self.value),
            (Op::Ne, None) => true,
            (Op::Contains, Some(v)) => contains(v, &self.value.to_ascii_lowercase()),
            (Op::Contains, None) => false,
        }
    }
}

fn equals(v: &Value, want: &str) -> bool {
    match v {
        Value::String(s) => s == want,
        Value::Number(n) => match (n.as_f64(), want.parse::<f64>()) {
            (Some(a), Ok(b)) => a == b,
            _ => n.to_string() == want,
        },
        other => serde_json::to_string(other).is_ok_and(|t| t == want),
    }
}

/// `needle` is lowercase.
fn contains(v: &Value, needle: &str) -> bool {
    match v {
        Value::String(s) => s.to_ascii_lowercase().contains(needle),
        Value::Array(a) => a.iter().any(|e| contains(e, needle)),
        other => other.to_string().to_ascii_lowercase().contains(needle),
    }
}

/// Whether `hay` contains `needle` (lowercase), ASCII case ignored.
fn has(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || hay
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Whether `v` is sure to appear as written in any JSON text holding it as a string: none of
/// the characters JSON escapes are in it (a `\u` escape anywhere in the body is checked apart).
fn literal_in_json(v: &str) -> bool {
    !v.is_empty()
        && !v
            .chars()
            .any(|c| c == '"' || c == '\\' || c == '/' || c.is_control())
}

impl Search {
    /// Whether no filter is set.
    pub fn is_empty(&self) -> bool {
        self.header.is_none() && self.json.is_none() && self.text.is_none()
    }

    /// SQL conditions every matching row meets (over `bodies.headers`, `bodies.body`,
    /// `events.body_file`), each with its `?` parameters. Rows whose body is a file pass.
    pub(super) fn prefilter(&self) -> Vec<(&'static str, Vec<String>)> {
        let mut out = Vec::new();
        if let Some(t) = &self.text {
            out.push((
                "(body_file IS NOT NULL OR instr(lower(body), ?) > 0 \
                  OR instr(lower(headers), ?) > 0)",
                vec![t.to_ascii_lowercase(), t.to_ascii_lowercase()],
            ));
        }
        if let Some(h) = &self.header {
            out.push(("instr(lower(headers), ?) > 0", vec![h.name.clone()]));
            if let Some(v) = &h.value {
                out.push(("instr(lower(headers), ?) > 0", vec![v.clone()]));
            }
        }
        if let Some(c) = &self.json {
            // A text that must be in the body (unless escaped as \uXXXX, so such bodies pass).
            let must = match c.op {
                Op::Eq if c.value.parse::<f64>().is_err() && literal_in_json(&c.value) => {
                    Some((c.value.clone(), false))
                }
                Op::Contains if literal_in_json(&c.value) => {
                    Some((c.value.to_ascii_lowercase(), true))
                }
                Op::Exists => match c.path.last() {
                    Some(Step::Key(k)) if literal_in_json(k) => Some((format!("\"{k}\""), false)),
                    _ => None,
                },
                _ => None,
            };
            match must {
                Some((text, false)) => out.push((
                    "(body_file IS NOT NULL OR instr(body, '\\u') > 0 OR instr(body, ?) > 0)",
                    vec![text],
                )),
                Some((text, true)) => out.push((
                    "(body_file IS NOT NULL OR instr(body, '\\u') > 0 \
                      OR instr(lower(body), ?) > 0)",
                    vec![text],
                )),
                None => {}
            }
        }
        out
    }

    /// Whether `e` meets every filter set.
    pub fn matches(&self, e: &Event) -> bool {
        if let Some(h) = &self.header {
            let found = e.headers.iter().any(|x| {
                x.name.eq_ignore_ascii_case(&h.name)
                    && h.value.as_ref().is_none_or(|v| has(&x.value, v.as_bytes()))
            });
            if !found {
                return false;
            }
        }
        if let Some(t) = &self.text {
            let t = t.to_ascii_lowercase();
            let t = t.as_bytes();
            let found = has(&e.body, t)
                || e.headers
                    .iter()
                    .any(|x| has(x.name.as_bytes(), t) || has(&x.value, t));
            if !found {
                return false;
            }
        }
        if let Some(c) = &self.json {
            match serde_json::from_slice::<Value>(&e.body) {
                Ok(doc) if c.eval(&doc) => {}
                _ => return false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(s: &str) -> JsonCond {
        s.parse().unwrap()
    }

    #[test]
    fn conditions_parse_and_evaluate() {
        let doc: Value = serde_json::json!({
            "event": "bot.status_change",
            "data": {"status": {"code": "in_call_recording"}, "n": 52, "ok": true,
                     "speakers": [{"name": "Ann Lee"}, {"name": "Bo"}], "tags": ["a", "b c"]}
        });
        let yes = [
            "data.status.code = in_call_recording",
            "$.data.status.code == \"in_call_recording\"",
            "data.status.code != waiting_room",
            "data.missing != x",
            "data.n = 52",
            "data.n = 52.0",
            "data.ok = true",
            "data.speakers[0].name = Ann Lee",
            "data.speakers.1.name = Bo",
            "data.speakers[1].name exists",
            "data.status.code ~ CALL_rec",
            "data.status.code contains in_call",
            "data.tags ~ b",
            "data.speakers ~ ann",
            "event=bot.status_change",
        ];
        for s in yes {
            assert!(cond(s).eval(&doc), "{s}");
        }
        let no = [
            "data.status.code = in_call",
            "data.status.code != in_call_recording",
            "data.n = 53",
            "data.speakers[2].name exists",
            "data.missing exists",
            "data.missing = x",
            "data.tags ~ z",
        ];
        for s in no {
            assert!(!cond(s).eval(&doc), "{s}");
        }
        for bad in [
            "",
            "data.x",
            "data.x =",
            "data.x > 3",
            "a..b = 1",
            "a[x] = 1",
        ] {
            let e = bad.parse::<JsonCond>().unwrap_err();
            assert!(e.contains("expected PATH = VALUE"), "{bad}: {e}");
        }
        assert_eq!(cond("data.a[2].b=x").to_string(), "data.a[2].b = x");
    }

    #[test]
    fn headers_parse() {
        let h: HeaderMatch = "Svix-Id:msg_2X".parse().unwrap();
        assert_eq!(
            (h.name.as_str(), h.value.as_deref()),
            ("svix-id", Some("msg_2x"))
        );
        let h: HeaderMatch = "x-a=1".parse().unwrap();
        assert_eq!((h.name.as_str(), h.value.as_deref()), ("x-a", Some("1")));
        let h: HeaderMatch = "x-a".parse().unwrap();
        assert_eq!(h.value, None);
        assert!(":v".parse::<HeaderMatch>().is_err());
    }
}
