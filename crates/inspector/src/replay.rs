//! `POST /api/events/{seq}/replay`: one journaled event (or an edited copy) sent again to
//! the handler, synchronously, with `meethook replay`'s rules (marked `meethook-replay: true`,
//! recorded as a replay attempt, the event's state untouched).

use base64::Engine;
use bytes::Bytes;
use meethook_daemon::forward::Backoff;
use meethook_daemon::journal::{Journal, Stored};
use meethook_daemon::replay::{OneReport, ReplayConfig, Speed};
use meethook_proto::{Event, Header};
use serde::Deserialize;

use crate::api::MASK;

/// The request's JSON.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplayRequest {
    /// Re-sign with the inspector's `--signing-secret`.
    #[serde(default)]
    pub(crate) resign: bool,
    /// The body to send instead of the stored one.
    pub(crate) body_base64: Option<String>,
    /// The headers to send instead of the stored ones (a `••••` value: the stored one).
    pub(crate) headers: Option<Vec<(String, String)>>,
    /// The handler URL instead of the listener's `--forward-to`.
    pub(crate) to: Option<String>,
    /// Point the artifact links of a final event at their saved copies, served here under
    /// `/artifacts/{seq}/{name}`.
    #[serde(default)]
    pub(crate) local_artifacts: bool,
}

/// What the warning says when an edited body goes out with its old signature.
pub(crate) const STALE_SIGNATURE: &str =
    "the edited body no longer matches its signature; replay with resign";

/// The event to send: the stored one with the request's edits; `Err` says what is wrong.
/// The bool is whether the body was changed.
pub(crate) fn edited(stored: &Stored, req: &ReplayRequest) -> Result<(Event, bool), String> {
    let mut ev = stored.event.clone();
    if let Some(b64) = &req.body_base64 {
        let body = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| format!("body_base64: not base64 ({e})"))?;
        ev.body = Bytes::from(body);
    }
    if let Some(headers) = &req.headers {
        let mut out = Vec::with_capacity(headers.len());
        // How many headers of each name were given so far: the Nth masked `cookie` stands
        // for the Nth stored one.
        let mut seen: Vec<String> = Vec::new();
        for (name, value) in headers {
            let name = name.trim();
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b':' && b != b'"')
            {
                return Err(format!("headers: {name:?} is not a header name"));
            }
            if value.contains(['\r', '\n']) {
                return Err(format!("headers: the value of {name} has a line break"));
            }
            let lower = name.to_ascii_lowercase();
            let nth = seen.iter().filter(|n| **n == lower).count();
            seen.push(lower);
            let value = if value == MASK {
                // The masked value the page showed: the stored one, unseen.
                let stored_value = stored
                    .event
                    .headers
                    .iter()
                    .filter(|h| h.name.eq_ignore_ascii_case(name))
                    .nth(nth);
                match stored_value {
                    Some(h) => h.value.clone(),
                    None => return Err(format!("headers: {name} is masked but not stored")),
                }
            } else {
                Bytes::copy_from_slice(value.as_bytes())
            };
            out.push(Header {
                name: name.to_string(),
                value,
            });
        }
        ev.headers = out;
    }
    let changed = ev.body != stored.event.body;
    Ok((ev, changed))
}

/// Whether the stored event carried a Svix / Standard Webhooks signature.
pub(crate) fn signed(stored: &Stored) -> bool {
    stored.event.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("svix-signature")
            || h.name.eq_ignore_ascii_case("webhook-signature")
    })
}

/// The replay's settings: one attempt, answered within `timeout`.
pub(crate) fn config(
    channel: &str,
    to: &str,
    timeout: std::time::Duration,
    resign: Option<meethook_proto::signature::SigningKey>,
    local_artifacts: Option<String>,
) -> ReplayConfig {
    ReplayConfig {
        channel: channel.to_string(),
        forward_to: to.to_string(),
        timeout,
        max_attempts: 1,
        backoff: Backoff::default(),
        speed: Speed::Max,
        resign,
        local_artifacts,
    }
}

/// A journal to record the attempt in: a writable one when it can be had, else `fallback`
/// (read-only: nothing recorded). The bool is whether the attempt is recorded.
pub(crate) fn recording_journal(dir: &std::path::Path, fallback: Journal) -> (Journal, bool) {
    match Journal::open_existing(dir) {
        Ok(j) => (j, true),
        Err(e) => {
            tracing::debug!(error = %e, "inspector: replaying without recording the attempt");
            (fallback, false)
        }
    }
}

/// The `replay` object of the answer.
pub(crate) fn outcome(
    seq: u64,
    to: &str,
    r: &OneReport,
    resigned: bool,
    recorded: bool,
) -> serde_json::Value {
    serde_json::json!({
        "seq": seq,
        "status": r.status,
        "error": r.error,
        "delivered": r.delivered,
        "to": to,
        "resigned": resigned,
        "recorded": recorded,
    })
}
