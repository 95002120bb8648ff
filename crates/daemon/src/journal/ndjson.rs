//! The NDJSON line of `meethook events export` and `import`, and of the inspector's
//! `GET /api/export`: one event a line, its header values and body in base64, with the
//! Meeting BaaS `event` and `bot_id` derived from the body for readers (ignored on import).

use std::io::{self, Write};

use base64::Engine;
use meethook_proto::meeting::Summary;
use serde::{Deserialize, Serialize};

use super::Stored;

/// The base64 of export lines: standard, padded.
pub fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// One line of an export file.
#[derive(Debug, Serialize, Deserialize)]
pub struct ExportLine {
    /// The channel the event came on.
    pub channel: String,
    /// Its seq in the channel.
    pub seq: u64,
    /// When the relay received it, ms since the epoch.
    pub received_at_ms: i64,
    /// The request's method.
    pub method: String,
    /// The request's sub-path and query.
    pub path: String,
    /// `[name, base64 value]`, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body, base64.
    pub body: String,
    /// Derived from the body, for readers; ignored on import.
    #[serde(default)]
    pub event: Option<String>,
    /// Derived from the body, for readers; ignored on import.
    #[serde(default)]
    pub bot_id: Option<String>,
}

impl ExportLine {
    /// The line of `s`; a header whose name `mask` accepts gets `mask_value` for its value.
    pub fn of(s: &Stored, mask: impl Fn(&str) -> bool, mask_value: &[u8]) -> ExportLine {
        let summary = Summary::parse(&s.event.body);
        ExportLine {
            channel: s.channel.clone(),
            seq: s.event.seq,
            received_at_ms: s.event.received_at_ms,
            method: s.event.method.clone(),
            path: s.event.path.clone(),
            headers: s
                .event
                .headers
                .iter()
                .map(|h| {
                    let v: &[u8] = if mask(&h.name) { mask_value } else { &h.value };
                    (h.name.clone(), b64().encode(v))
                })
                .collect(),
            body: b64().encode(&s.event.body),
            event: summary.as_ref().map(|x| x.event.clone()),
            bot_id: summary.and_then(|x| x.bot_id),
        }
    }

    /// Writes the line and its newline.
    pub fn write(&self, out: &mut impl Write) -> io::Result<()> {
        serde_json::to_writer(&mut *out, self).map_err(io::Error::other)?;
        out.write_all(b"\n")
    }
}
