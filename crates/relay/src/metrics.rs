//! Counters exposed at `/metrics` in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Process-wide relay counters.
#[derive(Default)]
pub struct Metrics {
    /// Webhooks stored and answered 200.
    pub webhooks_accepted: AtomicU64,
    /// Body bytes stored.
    pub webhook_bytes: AtomicU64,
    /// Webhooks to unknown channels.
    pub rejected_not_found: AtomicU64,
    /// Webhooks over `--max-body`.
    pub rejected_too_large: AtomicU64,
    /// Webhooks failing the sender-secret check.
    pub rejected_sender_auth: AtomicU64,
    /// Webhooks answered 429 by the channel rate limit.
    pub rejected_rate_limited: AtomicU64,
    /// Webhooks answered 503 because the store failed.
    pub rejected_unavailable: AtomicU64,
    /// Websocket or API requests with a missing or wrong token.
    pub auth_failures: AtomicU64,
    /// Event frames sent to listeners.
    pub events_streamed: AtomicU64,
    /// Of those, events whose body the listener already had as a preload.
    pub events_preloaded: AtomicU64,
    /// Ack frames received.
    pub acks: AtomicU64,
    /// Listener streams open now.
    pub listeners: AtomicI64,
    /// Listener streams opened since start.
    pub listener_streams: AtomicU64,
    /// Malformed frames received from listeners.
    pub bad_frames: AtomicU64,
}

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Renders the Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        counter(
            "meethook_webhooks_accepted_total",
            "Webhooks durably stored.",
            g(&self.webhooks_accepted),
        );
        counter(
            "meethook_webhook_bytes_total",
            "Body bytes stored.",
            g(&self.webhook_bytes),
        );
        counter(
            "meethook_webhooks_not_found_total",
            "Webhooks to unknown channels (404).",
            g(&self.rejected_not_found),
        );
        counter(
            "meethook_webhooks_too_large_total",
            "Webhooks over --max-body (413).",
            g(&self.rejected_too_large),
        );
        counter(
            "meethook_sender_auth_failures_total",
            "Webhooks failing the sender secret check (401).",
            g(&self.rejected_sender_auth),
        );
        counter(
            "meethook_webhooks_rate_limited_total",
            "Webhooks over the channel rate limit (429).",
            g(&self.rejected_rate_limited),
        );
        counter(
            "meethook_webhooks_unavailable_total",
            "Webhooks refused because the store failed (503).",
            g(&self.rejected_unavailable),
        );
        counter(
            "meethook_auth_failures_total",
            "Listener or API requests with a missing or wrong token.",
            g(&self.auth_failures),
        );
        counter(
            "meethook_events_streamed_total",
            "Event frames sent to listeners.",
            g(&self.events_streamed),
        );
        counter(
            "meethook_events_preloaded_total",
            "Event frames whose body was sent while it arrived (preload).",
            g(&self.events_preloaded),
        );
        counter(
            "meethook_acks_total",
            "Ack frames received from listeners.",
            g(&self.acks),
        );
        counter(
            "meethook_listener_streams_total",
            "Listener streams opened (reconnects included).",
            g(&self.listener_streams),
        );
        counter(
            "meethook_bad_frames_total",
            "Malformed frames received from listeners.",
            g(&self.bad_frames),
        );
        let _ = writeln!(
            out,
            "# HELP meethook_listeners Listener streams open.\n# TYPE meethook_listeners gauge\nmeethook_listeners {}",
            self.listeners.load(Ordering::Relaxed)
        );
        out
    }
}
