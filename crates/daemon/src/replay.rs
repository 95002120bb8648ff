//! `meethook replay`: re-sends journaled events to a handler, in seq order, one at a time,
//! with the delivery rules of `listen`, each marked `meethook-replay: true`.
//!
//! A replay records its attempts in the journal (`replay = 1`; not in one opened read-only)
//! but never changes an event's state: what `listen` delivered stays delivered. With a signing key ([`ReplayConfig::resign`]), Standard Webhooks /
//! Svix headers get a fresh timestamp and signature at every attempt, so a handler that
//! verifies signatures (and rejects old timestamps) accepts the replay.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use meethook_proto::meeting::Summary;
use meethook_proto::signature::{SigningKey, PREFIXES};
use meethook_proto::{Event, Header};
use tokio_util::sync::CancellationToken;

use crate::forward::{Backoff, Forwarder, Verdict};
use crate::journal::{Attempt, Journal};
use crate::observe::{AttemptReport, DaemonEvent, EventInfo, Observers};
use crate::{blocking, now_ms, DaemonError};

/// How fast events follow each other.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// Keep the original spacing between events (from when the relay received them), divided
    /// by this factor: `1.0` is the original pace, `10.0` ten times faster.
    Scaled(f64),
    /// Each event as soon as the previous one is settled.
    Max,
}

impl FromStr for Speed {
    type Err = String;

    /// `original`, `max`, or a factor such as `10` or `2.5x`.
    fn from_str(s: &str) -> Result<Speed, String> {
        match s.trim() {
            "original" => Ok(Speed::Scaled(1.0)),
            "max" => Ok(Speed::Max),
            n => match n.trim_end_matches(['x', 'X']).parse::<f64>() {
                Ok(f) if f.is_finite() && f > 0.0 => Ok(Speed::Scaled(f)),
                _ => Err(format!(
                    "invalid speed {s:?}: use `original`, `max` or a factor such as 10"
                )),
            },
        }
    }
}

impl Speed {
    /// The wait between sending two events the relay received at these times (ms).
    pub fn gap(self, prev_received_ms: i64, received_ms: i64) -> Duration {
        match self {
            Speed::Max => Duration::ZERO,
            Speed::Scaled(factor) => {
                let ms = (received_ms - prev_received_ms).max(0) as f64 / factor;
                Duration::try_from_secs_f64(ms / 1e3).unwrap_or(Duration::MAX)
            }
        }
    }
}

impl fmt::Display for Speed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Speed::Max => f.write_str("max"),
            Speed::Scaled(x) if *x == 1.0 => f.write_str("original"),
            Speed::Scaled(x) => write!(f, "{x}x"),
        }
    }
}

/// Everything a replay is told.
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    /// The channel whose events are replayed (its `meethook-channel` header).
    pub channel: String,
    /// The handler URL.
    pub forward_to: String,
    /// Per-request timeout to the handler.
    pub timeout: Duration,
    /// Attempts per event before giving up (0 = forever).
    pub max_attempts: u32,
    /// Retry schedule towards the handler.
    pub backoff: Backoff,
    /// Pacing between events.
    pub speed: Speed,
    /// Re-sign each event with a fresh timestamp, when set.
    pub resign: Option<SigningKey>,
    /// `--local-artifacts`: the inspector's base URL (`http://127.0.0.1:4040`); the artifact
    /// links of a final event whose files `--save-recordings` saved point there instead
    /// (see [`crate::artifacts`]). Re-signing, when asked, covers the rewritten body.
    pub local_artifacts: Option<String>,
}

/// How a replay went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Events asked for.
    pub total: usize,
    /// Events the handler answered 2xx.
    pub delivered: usize,
    /// Events given up on.
    pub failed: usize,
    /// Asked-for seqs the journal does not hold (any more).
    pub missing: Vec<u64>,
    /// Stopped by the shutdown token before the end.
    pub interrupted: bool,
}

/// Replays `seqs` of `cfg.channel` from `journal`, in the order given (callers pass seq
/// order), reporting each step to `observers` with the same events as live delivery (and
/// [`DaemonEvent::Waiting`], [`DaemonEvent::Replayed`]). Returns early, with `interrupted`
/// set, when `stop` is cancelled.
pub async fn run(
    cfg: &ReplayConfig,
    journal: &Journal,
    seqs: &[u64],
    observers: &Observers,
    stop: &CancellationToken,
) -> Result<Report, DaemonError> {
    let fwd = Forwarder::new(&cfg.forward_to, &cfg.channel, cfg.timeout)?;
    let mut report = Report {
        total: seqs.len(),
        ..Report::default()
    };
    // (received_at of the previous event, when it was first sent).
    let mut previous: Option<(i64, tokio::time::Instant)> = None;
    for (i, &seq) in seqs.iter().enumerate() {
        let ch = cfg.channel.clone();
        let Some(stored) = blocking(journal, move |j| j.get(&ch, seq)).await? else {
            report.missing.push(seq);
            continue;
        };
        let ev = stored.event;
        if let Some((prev_at, prev_sent)) = previous {
            let due = prev_sent + cfg.speed.gap(prev_at, ev.received_at_ms);
            let wait = due.saturating_duration_since(tokio::time::Instant::now());
            if !wait.is_zero() {
                observers.emit(DaemonEvent::Waiting {
                    seq: ev.seq,
                    delay: wait,
                });
                tokio::select! {
                    _ = stop.cancelled() => return Ok(interrupted(report)),
                    _ = tokio::time::sleep_until(due) => {}
                }
            }
        }
        previous = Some((ev.received_at_ms, tokio::time::Instant::now()));
        let Some(one) = send(cfg, &fwd, journal, &ev, observers, stop).await else {
            return Ok(interrupted(report));
        };
        let delivered = one.delivered;
        if delivered {
            report.delivered += 1;
        } else {
            report.failed += 1;
        }
        observers.emit(DaemonEvent::Replayed {
            seq,
            delivered,
            done: i + 1,
            total: seqs.len(),
        });
    }
    Ok(report)
}

/// How the replay of one event went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OneReport {
    /// Whether the handler answered 2xx.
    pub delivered: bool,
    /// Attempts made.
    pub attempts: u32,
    /// The handler's status to the last attempt, when it answered.
    pub status: Option<u16>,
    /// Why the last attempt failed, when it did without a status.
    pub error: Option<String>,
}

/// Replays one event held in memory (possibly edited: its body and headers are sent as
/// they are, re-signed when `cfg.resign` is set) with the rules of [`run`], recording each
/// attempt against `ev.seq` of `cfg.channel` as a replay attempt (not in a read-only
/// journal). `None` when `stop` was cancelled first.
pub async fn replay_event(
    cfg: &ReplayConfig,
    journal: &Journal,
    ev: &Event,
    observers: &Observers,
    stop: &CancellationToken,
) -> Result<Option<OneReport>, DaemonError> {
    let fwd = Forwarder::new(&cfg.forward_to, &cfg.channel, cfg.timeout)?;
    Ok(send(cfg, &fwd, journal, ev, observers, stop).await)
}

/// Sends `ev` until it is settled; `None` when `stop` was cancelled first.
async fn send(
    cfg: &ReplayConfig,
    fwd: &Forwarder,
    journal: &Journal,
    ev: &Event,
    observers: &Observers,
    stop: &CancellationToken,
) -> Option<OneReport> {
    let seq = ev.seq;
    let local;
    let ev = match &cfg.local_artifacts {
        Some(base) => {
            let (ch, base) = (cfg.channel.clone(), base.clone());
            let copy = ev.clone();
            let rewritten = blocking(journal, move |j| {
                let saved = j.recordings(&ch, seq)?;
                Ok(crate::artifacts::with_local_copies(&copy, &saved, &base))
            })
            .await;
            match rewritten {
                Ok((e, _, left)) => {
                    if !left.is_empty() {
                        tracing::warn!(seq, artifacts = ?left, "no saved copy: the original links go out");
                    }
                    local = e;
                    &local
                }
                Err(e) => {
                    tracing::warn!(seq, error = %e, "cannot read the saved artifacts; replaying the original links");
                    ev
                }
            }
        }
        None => ev,
    };
    let info = EventInfo::of(ev, Summary::parse(&ev.body));
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let started_at_ms = now_ms();
        observers.emit(DaemonEvent::AttemptStarted {
            seq,
            attempt: attempts,
        });
        let sent = match &cfg.resign {
            Some(signer) => resign(ev, signer, started_at_ms / 1000),
            None => ev.clone(),
        };
        let outcome = tokio::select! {
            _ = stop.cancelled() => return None,
            o = fwd.send(&sent, attempts, true) => o,
        };
        let verdict = outcome.verdict();
        let out_of_attempts = cfg.max_attempts > 0 && attempts >= cfg.max_attempts;
        let settled = match verdict {
            Verdict::Delivered => Some(true),
            Verdict::Failed => Some(false),
            Verdict::Retry if out_of_attempts => Some(false),
            Verdict::Retry => None,
        };
        let next_retry = settled
            .is_none()
            .then(|| cfg.backoff.delay(attempts, outcome.retry_after));
        let attempt = Attempt {
            attempt: attempts,
            started_at_ms,
            latency: outcome.latency,
            status: outcome.status,
            error: outcome.error.clone(),
            response_head: outcome.response_head.clone(),
            response_headers: outcome.response_headers.clone(),
            truncated: outcome.truncated,
            replay: true,
        };
        let ch = cfg.channel.clone();
        // A replay attempt is history only: losing its record must not stop the replay
        // (nor does a read-only journal, which the caller has said it cannot record to).
        if !journal.read_only() {
            if let Err(e) = blocking(journal, move |j| j.record(&ch, seq, &attempt, None)).await {
                tracing::warn!(seq, error = %e, "cannot record the replay attempt");
            }
        }
        observers.emit(DaemonEvent::AttemptFinished {
            event: info.clone(),
            report: AttemptReport::of(&outcome, attempts, next_retry, 0),
        });
        if let Some(d) = settled {
            let event = info.clone();
            observers.emit(if d {
                DaemonEvent::Delivered { event, attempts }
            } else {
                DaemonEvent::GaveUp { event, attempts }
            });
            return Some(OneReport {
                delivered: d,
                attempts,
                status: outcome.status,
                error: outcome.error.clone(),
            });
        }
        let delay = next_retry.expect("a retry always has a delay");
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

fn interrupted(mut r: Report) -> Report {
    r.interrupted = true;
    r
}

/// `ev` re-signed at `now_secs`: for each of the `webhook-*` / `svix-*` header sets that has
/// an id, the timestamp becomes `now_secs` and the signature a fresh `v1,…` over the stored
/// body (in place, so header order is kept; missing ones are appended). An event with no
/// such id gets `svix-id: msg_replay_<seq>`, `svix-timestamp` and `svix-signature`.
pub fn resign(ev: &Event, key: &SigningKey, now_secs: i64) -> Event {
    let mut out = ev.clone();
    let ts = now_secs.to_string();
    let mut signed_any = false;
    for prefix in PREFIXES {
        let id_name = format!("{prefix}-id");
        let Some(id) = ev
            .header(&id_name)
            .and_then(|v| std::str::from_utf8(v).ok())
        else {
            continue;
        };
        let sig = key.sign(id, &ts, &ev.body);
        set_header(&mut out.headers, &format!("{prefix}-timestamp"), &ts);
        set_header(
            &mut out.headers,
            &format!("{prefix}-signature"),
            &format!("v1,{sig}"),
        );
        signed_any = true;
    }
    if !signed_any {
        let id = format!("msg_replay_{}", ev.seq);
        let sig = key.sign(&id, &ts, &ev.body);
        out.headers.push(Header::new("svix-id", id));
        out.headers.push(Header::new("svix-timestamp", ts));
        out.headers
            .push(Header::new("svix-signature", format!("v1,{sig}")));
    }
    out
}

/// Replaces the first `name` header's value (dropping repeats), or appends one.
fn set_header(headers: &mut Vec<Header>, name: &str, value: &str) {
    let mut seen = false;
    headers.retain_mut(|h| {
        if !h.name.eq_ignore_ascii_case(name) {
            return true;
        }
        if seen {
            return false;
        }
        seen = true;
        h.value = Bytes::copy_from_slice(value.as_bytes());
        true
    });
    if !seen {
        headers.push(Header::new(name.to_string(), value.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()
    }

    /// `v1,` and the signature of an event of [`ev`] (body `{}`).
    fn v1(id: &str, ts: &str) -> String {
        format!("v1,{}", key().sign(id, ts, b"{}"))
    }

    fn ev(headers: &[(&str, &str)]) -> Event {
        Event {
            seq: 7,
            received_at_ms: 0,
            method: "POST".into(),
            path: String::new(),
            headers: headers
                .iter()
                .map(|(n, v)| Header::new(n.to_string(), v.to_string()))
                .collect(),
            body: Bytes::from_static(b"{}"),
        }
    }

    fn names_values(e: &Event) -> Vec<(String, String)> {
        e.headers
            .iter()
            .map(|h| {
                (
                    h.name.clone(),
                    String::from_utf8_lossy(&h.value).into_owned(),
                )
            })
            .collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn resign_replaces_timestamp_and_signature_in_place() {
        let e = ev(&[
            ("content-type", "application/json"),
            ("svix-id", "msg_1"),
            ("svix-timestamp", "100"),
            ("svix-signature", "v1,old v1,older"),
            ("x-after", "1"),
        ]);
        let r = resign(&e, &key(), 5000);
        assert_eq!(
            names_values(&r),
            pairs(&[
                ("content-type", "application/json"),
                ("svix-id", "msg_1"),
                ("svix-timestamp", "5000"),
                ("svix-signature", &*v1("msg_1", "5000")),
                ("x-after", "1"),
            ])
        );
        assert_eq!(r.body, e.body);
    }

    #[test]
    fn resign_handles_standard_webhooks_missing_signatures_and_unsigned_events() {
        let e = ev(&[("webhook-id", "m2"), ("webhook-timestamp", "1")]);
        assert_eq!(
            names_values(&resign(&e, &key(), 9)),
            pairs(&[
                ("webhook-id", "m2"),
                ("webhook-timestamp", "9"),
                ("webhook-signature", &*v1("m2", "9")),
            ])
        );
        let e = ev(&[("content-type", "application/json")]);
        assert_eq!(
            names_values(&resign(&e, &key(), 9)),
            pairs(&[
                ("content-type", "application/json"),
                ("svix-id", "msg_replay_7"),
                ("svix-timestamp", "9"),
                ("svix-signature", &*v1("msg_replay_7", "9")),
            ])
        );
    }

    #[test]
    fn speeds_parse() {
        assert_eq!("original".parse::<Speed>(), Ok(Speed::Scaled(1.0)));
        assert_eq!("max".parse::<Speed>(), Ok(Speed::Max));
        assert_eq!("10".parse::<Speed>(), Ok(Speed::Scaled(10.0)));
        assert_eq!("2.5x".parse::<Speed>(), Ok(Speed::Scaled(2.5)));
        for bad in ["0", "-1", "fast", "", "inf", "NaN"] {
            assert!(bad.parse::<Speed>().is_err(), "{bad}");
        }
        assert_eq!(Speed::Scaled(10.0).to_string(), "10x");
        assert_eq!(Speed::Scaled(1.0).to_string(), "original");
        assert_eq!(Speed::Max.gap(0, 5000), Duration::ZERO);
        assert_eq!(
            Speed::Scaled(1.0).gap(1000, 3500),
            Duration::from_millis(2500)
        );
        assert_eq!(
            Speed::Scaled(10.0).gap(1000, 3500),
            Duration::from_millis(250)
        );
        assert_eq!(
            Speed::Scaled(1.0).gap(3500, 1000),
            Duration::ZERO,
            "out of order"
        );
    }
}
