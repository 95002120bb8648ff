//! Events and attempts the journal's tests share.

use std::time::Duration;

use bytes::Bytes;
use meethook_proto::{Event, Header};

use super::Attempt;

/// An event with a small body and repeated headers.
pub(crate) fn ev(seq: u64) -> Event {
    Event {
        seq,
        received_at_ms: 1,
        method: "POST".into(),
        path: "/x".into(),
        headers: vec![Header::new("a", "1"), Header::new("a", "2")],
        body: Bytes::from(format!("body {seq}")),
    }
}

/// A Meeting BaaS event of `bot`, received at `at`.
pub(super) fn mb(seq: u64, bot: &str, event: &str, at: i64) -> Event {
    let body = format!(
        r#"{{"event":"{event}","data":{{"bot_id":"{bot}","status":{{"code":"joining_call"}}}}}}"#
    );
    Event {
        seq,
        received_at_ms: at,
        method: "POST".into(),
        path: String::new(),
        headers: vec![Header::new("x", format!("{seq}"))],
        body: Bytes::from(body),
    }
}

/// An attempt of `listen`'s answered with `status`.
pub(super) fn attempt(n: u32, status: u16) -> Attempt {
    Attempt {
        attempt: n,
        started_at_ms: 0,
        latency: Duration::from_millis(1),
        status: Some(status),
        error: None,
        response_head: Bytes::new(),
        response_headers: Vec::new(),
        truncated: false,
        replay: false,
    }
}
