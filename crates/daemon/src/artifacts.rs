//! Artifacts that outlive their links: a final event's presigned URLs (`video`, `audio`,
//! `diarization`, `raw_transcription`, `transcription`; v1 `mp4`) expire within hours, the
//! copies `--save-recordings` made do not. `replay --local-artifacts` points those URL fields
//! at the copies, served by `listen`/`dev`/`inspect` under the inspector's address
//! (`/artifacts/{seq}/{name}`), by splicing bytes: the rest of the body is not re-encoded.

use std::borrow::Cow;
use std::collections::HashMap;

use bytes::Bytes;
use meethook_proto::meeting::Webhook;
use meethook_proto::Event;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::journal::Recording;

/// Where the inspector at `base` (`http://127.0.0.1:4040`) serves artifact `name` of `seq`.
pub fn local_url(base: &str, seq: u64, name: &str) -> String {
    format!("{}/artifacts/{seq}/{name}", base.trim_end_matches('/'))
}

/// `body` with each `data.<field>` string in `new` replaced by its value, every other byte
/// kept; `None` when `body` is not a JSON object with a `data` object. A field that is absent
/// or not a string is left alone.
pub fn splice(body: &[u8], new: &[(&str, &str)]) -> Option<Vec<u8>> {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        data: HashMap<Cow<'a, str>, &'a RawValue>,
    }
    let env: Envelope<'_> = serde_json::from_slice(body).ok()?;
    let base = body.as_ptr() as usize;
    let mut cuts: Vec<(usize, usize, String)> = new
        .iter()
        .filter_map(|(field, url)| {
            let raw = env.data.get(*field)?.get();
            if !raw.starts_with('"') {
                return None;
            }
            let start = raw.as_ptr() as usize - base;
            let text = serde_json::to_string(url).ok()?;
            Some((start, start + raw.len(), text))
        })
        .collect();
    cuts.sort_by_key(|c| c.0);
    let mut out = Vec::with_capacity(body.len());
    let mut at = 0;
    for (start, end, text) in cuts {
        out.extend_from_slice(&body[at..start]);
        out.extend_from_slice(text.as_bytes());
        at = end;
    }
    out.extend_from_slice(&body[at..]);
    Some(out)
}

/// `ev` with the URL of every artifact saved in `saved` pointing at the inspector at `base`;
/// also the names of the artifacts rewritten and of those left with their original link.
pub fn with_local_copies(
    ev: &Event,
    saved: &[Recording],
    base: &str,
) -> (Event, Vec<String>, Vec<String>) {
    let Some(hook) = Webhook::parse(&ev.body) else {
        return (ev.clone(), Vec::new(), Vec::new());
    };
    let (mut local, mut left) = (Vec::new(), Vec::new());
    let mut new: Vec<(&str, String)> = Vec::new();
    for a in hook.artifacts() {
        if saved.iter().any(|r| r.kind == a.name && r.state == "saved") {
            new.push((a.field, local_url(base, ev.seq, a.name)));
            local.push(a.name.to_string());
        } else {
            left.push(a.name.to_string());
        }
    }
    let pairs: Vec<(&str, &str)> = new.iter().map(|(f, u)| (*f, u.as_str())).collect();
    let mut out = ev.clone();
    if let Some(body) = (!pairs.is_empty())
        .then(|| splice(&ev.body, &pairs))
        .flatten()
    {
        out.body = Bytes::from(body);
    }
    (out, local, left)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_url_fields_change_byte_for_byte() {
        // Odd spacing, key order, escapes and number spellings elsewhere must survive.
        let body = br#"{"event":"bot.completed", "data":{"bot_id":"b","video":"https:\/\/s3\/v.mp4?X=1\u0026Y=2","n":1.50,"audio" : "https://s3/a.flac","diarization":null,"transcription":"https://s3/t.json"},"extra":{"video":"keep"}}"#;
        let out = splice(
            body,
            &[
                ("video", "http://127.0.0.1:4040/artifacts/7/video"),
                ("audio", "http://127.0.0.1:4040/artifacts/7/audio"),
                ("diarization", "http://x/never"),
            ],
        )
        .unwrap();
        let want = br#"{"event":"bot.completed", "data":{"bot_id":"b","video":"http://127.0.0.1:4040/artifacts/7/video","n":1.50,"audio" : "http://127.0.0.1:4040/artifacts/7/audio","diarization":null,"transcription":"https://s3/t.json"},"extra":{"video":"keep"}}"#;
        assert_eq!(
            String::from_utf8(out).unwrap(),
            String::from_utf8(want.to_vec()).unwrap()
        );
        assert!(splice(b"not json", &[("video", "x")]).is_none());
        assert!(splice(br#"{"event":"x"}"#, &[("video", "x")]).is_none());
    }

    #[test]
    fn saved_copies_replace_their_links_and_the_others_stay() {
        let mut ev = crate::journal::fixtures::ev(9);
        ev.body = Bytes::from_static(
            br#"{"event":"complete","data":{"bot_id":"b","mp4":"https://s3/x.mp4","speakers":[],"audio":"https://s3/a.wav"}}"#,
        );
        let saved = vec![Recording {
            kind: "video".into(),
            path: "/d/b-9-video.mp4".into(),
            state: "saved".into(),
            bytes: 3,
            error: None,
            sha256: None,
        }];
        let (out, local, left) = with_local_copies(&ev, &saved, "http://h:1/");
        assert_eq!(
            &out.body[..],
            br#"{"event":"complete","data":{"bot_id":"b","mp4":"http://h:1/artifacts/9/video","speakers":[],"audio":"https://s3/a.wav"}}"#
        );
        assert_eq!(
            (local, left),
            (vec!["video".to_string()], vec!["audio".to_string()])
        );
    }
}
