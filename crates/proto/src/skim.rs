//! A quick look for the top-level `event` of a JSON object.
//!
//! serde_json reads every byte of a string it skips (about 2.5 GB/s here): a 16 MiB body
//! without an `event` cost the daemon 6 ms of CPU just to learn that it is not a Meeting BaaS
//! envelope. This pass jumps through strings with `memchr` and tracks only nesting, so it
//! does not validate: a body it takes for an envelope is parsed in full afterwards, and
//! anything it cannot follow is left to serde_json.

/// What [`event`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Skim {
    /// The object's top-level `event` is this string (the rest is not yet checked).
    Event(String),
    /// A JSON object that has no top-level `event` (or not JSON that could have one).
    NoEvent,
    /// Not followed here (no object, an `event` that is not a string, broken text): ask
    /// serde_json.
    Unsure,
}

/// The top-level `event` of the object in `b`, found without reading the values around it.
pub fn event(b: &[u8]) -> Skim {
    let mut i = ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return Skim::Unsure;
    }
    i += 1;
    loop {
        i = ws(b, i);
        match b.get(i) {
            Some(b'}') => return Skim::NoEvent,
            Some(b'"') => {}
            _ => return Skim::Unsure,
        }
        let Some(key_end) = string_end(b, i) else {
            return Skim::Unsure;
        };
        let key = &b[i..key_end];
        i = ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return Skim::Unsure;
        }
        i = ws(b, i + 1);
        let is_event = key == b"\"event\""
            || (key.contains(&b'\\')
                && serde_json::from_slice::<String>(key).is_ok_and(|k| k == "event"));
        if is_event {
            let value = (b.get(i) == Some(&b'"'))
                .then(|| string_end(b, i))
                .flatten()
                .and_then(|end| serde_json::from_slice::<String>(&b[i..end]).ok());
            return value.map_or(Skim::Unsure, Skim::Event);
        }
        let Some(end) = value_end(b, i) else {
            return Skim::Unsure;
        };
        i = ws(b, end);
        match b.get(i) {
            Some(b',') => i += 1,
            // A trailing comma or text after the object: serde_json rejects the body, and a
            // body without an `event` gets `None` either way.
            Some(b'}') => return Skim::NoEvent,
            _ => return Skim::Unsure,
        }
    }
}

/// The first index at or after `i` that is not JSON whitespace.
fn ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// Just past the closing quote of the string whose opening quote is at `start`.
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        i += memchr::memchr2(b'"', b'\\', b.get(i..)?)?;
        if b[i] == b'"' {
            return Some(i + 1);
        }
        // An escape: the byte after the backslash cannot end the string.
        i += 2;
    }
}

/// Just past the value that starts at `i`.
fn value_end(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                let k = j + b
                    .get(j..)?
                    .iter()
                    .position(|c| matches!(c, b'"' | b'{' | b'[' | b'}' | b']'))?;
                match b[k] {
                    b'"' => {
                        j = string_end(b, k)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    _ => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(k + 1);
                        }
                    }
                }
                j = k + 1;
            }
        }
        _ => {
            let rest = &b[i..];
            let n = rest
                .iter()
                .position(|c| matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .unwrap_or(rest.len());
            (n > 0).then_some(i + n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(s: &str) -> Skim {
        event(s.as_bytes())
    }

    #[test]
    fn finds_the_top_level_event_past_any_values() {
        assert_eq!(
            ev(r#"{"event":"complete"}"#),
            Skim::Event("complete".into())
        );
        let before = r#"{ "a" : [1, {"event":"no"}, "x\"]}{"], "b":{"c":[[]],"d":"}\\"},
            "n": -1.5e3, "t": true, "z": null, "event" : "bot.status_change", "data": {"#;
        assert_eq!(ev(before), Skim::Event("bot.status_change".into()));
        assert_eq!(ev(r#"{"ev\u0065nt":"x\ny"}"#), Skim::Event("x\ny".into()));
    }

    #[test]
    fn an_object_without_event_is_no_event() {
        assert_eq!(ev(r#"{}"#), Skim::NoEvent);
        assert_eq!(ev(r#" {"id":"1","pad":"event\\"} "#), Skim::NoEvent);
        assert_eq!(ev(r#"{"data":{"event":"nested"}}"#), Skim::NoEvent);
        assert_eq!(ev(r#"{"events":"x","Event":"y"}"#), Skim::NoEvent);
    }

    #[test]
    fn what_it_cannot_follow_goes_to_serde_json() {
        for s in [
            "",
            "[]",
            "\"event\"",
            r#"{"event":null}"#,
            r#"{"event":1}"#,
            r#"{"event":"unterminated"#,
            r#"{"a":"unterminated"#,
            r#"{"a":{"b":1}"#,
            r#"{"a" 1}"#,
            r#"{"a":}"#,
            r#"{"a":1 "b":2}"#,
            r#"{"a\"#,
        ] {
            assert_eq!(ev(s), Skim::Unsure, "{s:?}");
        }
    }

    #[test]
    fn agrees_with_serde_json_on_valid_objects() {
        #[derive(serde::Deserialize)]
        struct Name {
            event: Option<serde_json::Value>,
        }
        for s in [
            r#"{"x":{"y":["\"",{"event":"inner"}]},"event":"outer"}"#,
            r#"{"x":"\\","event":"after a backslash"}"#,
            r#"{"x":[],"y":{}}"#,
        ] {
            let want = serde_json::from_str::<Name>(s).unwrap().event;
            let got = match ev(s) {
                Skim::Event(e) => Some(serde_json::Value::String(e)),
                Skim::NoEvent => None,
                Skim::Unsure => panic!("unsure about {s}"),
            };
            assert_eq!(got, want, "{s}");
        }
    }

    fn json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        use serde_json::Value;
        let text = "[a-z\"\\\\{}\\[\\],: \n\u{1}é]{0,8}";
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(Value::from),
            text.prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec(
                    (
                        prop_oneof![Just("event".to_string()), text.prop_map(String::from)],
                        inner
                    ),
                    0..6
                )
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_serde_json_on_any_object(v in json(), pretty in proptest::prelude::any::<bool>()) {
            let s = if pretty { serde_json::to_string_pretty(&v) } else { serde_json::to_string(&v) }.unwrap();
            let want = match v.as_object().map(|o| o.get("event")) {
                Some(Some(serde_json::Value::String(e))) => Skim::Event(e.clone()),
                Some(None) => Skim::NoEvent,
                _ => Skim::Unsure,
            };
            proptest::prop_assert_eq!(event(s.as_bytes()), want, "{}", s);
        }

        #[test]
        fn never_panics_on_broken_text(v in json(), at in proptest::prelude::any::<usize>(), byte in proptest::prelude::any::<u8>(), cut in proptest::prelude::any::<usize>()) {
            let mut b = serde_json::to_vec(&v).unwrap();
            let i = at % b.len();
            b[i] = byte;
            b.truncate(cut % (b.len() + 1));
            let _ = event(&b);
        }
    }
}
