//! Hostile input: no decoder panics on any bytes; every failure is a typed error.

use bytes::Bytes;
use meethook_proto::frame::{decode_event, encode_event};
use meethook_proto::meeting::Summary;
use meethook_proto::{ClientFrame, Event, Header, ServerFrame};
use proptest::prelude::*;

fn event() -> impl Strategy<Value = Event> {
    (
        any::<u64>(),
        any::<i64>(),
        "[A-Z]{1,10}",
        "(/[a-z0-9?=&%-]{0,20}){0,4}",
        proptest::collection::vec(
            (
                "[a-z0-9-]{1,20}",
                proptest::collection::vec(any::<u8>(), 0..64),
            ),
            0..12,
        ),
        proptest::collection::vec(any::<u8>(), 0..4096),
    )
        .prop_map(|(seq, at, method, path, headers, body)| Event {
            seq,
            received_at_ms: at,
            method,
            path,
            headers: headers
                .into_iter()
                .map(|(n, v)| Header::new(n, v))
                .collect(),
            body: Bytes::from(body),
        })
}

proptest! {
    #[test]
    fn event_frames_round_trip(ev in event()) {
        prop_assert_eq!(decode_event(encode_event(&ev)).unwrap(), ev);
    }

    #[test]
    fn any_bytes_decode_to_an_event_or_a_typed_error(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode_event(Bytes::from(bytes));
    }

    #[test]
    fn mutated_frames_never_panic(ev in event(), at in any::<usize>(), byte in any::<u8>(), cut in any::<usize>()) {
        let mut b = encode_event(&ev).to_vec();
        let i = at % b.len();
        b[i] = byte;
        b.truncate(cut % (b.len() + 1));
        let _ = decode_event(Bytes::from(b));
    }

    #[test]
    fn any_text_is_a_control_frame_or_a_typed_error(s in ".*") {
        let _ = ClientFrame::from_json(&s);
        let _ = ServerFrame::from_json(&s);
    }

    #[test]
    fn any_body_summarizes_or_is_ignored(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Some(s) = Summary::parse(&bytes) {
            let _ = s.detail();
        }
    }

    #[test]
    fn json_shaped_bodies_never_panic(
        event in "(bot\\.status_change|complete|failed|bot\\.completed|bot\\.failed|[a-z.]{0,12})",
        bot in proptest::option::of("[a-f0-9-]{0,40}"),
        code in proptest::option::of(".{0,20}"),
        junk in "[\\[\\]{}\",:0-9a-z]{0,40}",
    ) {
        let body = serde_json::json!({
            "event": event,
            "data": {"bot_id": bot, "status": {"code": code}, "error": junk, "mp4": junk, "transcript": junk},
        });
        if let Some(s) = Summary::parse(body.to_string().as_bytes()) {
            let _ = s.detail();
        }
    }
}
