//! The embedded scenarios: `crates/cli/scenarios/*.json`, parsed into steps.

use anyhow::{anyhow, Context};
use serde::Deserialize;
use serde_json::Value;

/// Every scenario: name and embedded JSON, in `--list` order.
pub(super) const SCENARIOS: &[(&str, &str)] = &[
    (
        "meeting-success",
        include_str!("../../../scenarios/meeting-success.json"),
    ),
    (
        "bot-rejected",
        include_str!("../../../scenarios/bot-rejected.json"),
    ),
    (
        "waiting-room-timeout",
        include_str!("../../../scenarios/waiting-room-timeout.json"),
    ),
    (
        "invalid-meeting-url",
        include_str!("../../../scenarios/invalid-meeting-url.json"),
    ),
    (
        "bot-removed",
        include_str!("../../../scenarios/bot-removed.json"),
    ),
    (
        "meeting-error",
        include_str!("../../../scenarios/meeting-error.json"),
    ),
    (
        "cannot-join-meeting",
        include_str!("../../../scenarios/cannot-join-meeting.json"),
    ),
    (
        "calendar-sync",
        include_str!("../../../scenarios/calendar-sync.json"),
    ),
    (
        "v2-meeting-success",
        include_str!("../../../scenarios/v2-meeting-success.json"),
    ),
    (
        "v2-bot-failed",
        include_str!("../../../scenarios/v2-bot-failed.json"),
    ),
    (
        "v2-retrying-then-success",
        include_str!("../../../scenarios/v2-retrying-then-success.json"),
    ),
    (
        "v2-retries-exhausted",
        include_str!("../../../scenarios/v2-retries-exhausted.json"),
    ),
    (
        "v2-calendar",
        include_str!("../../../scenarios/v2-calendar.json"),
    ),
    (
        "v2-callback-completed",
        include_str!("../../../scenarios/v2-callback-completed.json"),
    ),
];

/// API generation of a scenario: decides the headers.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum Api {
    V1,
    V2,
}

/// How v2 events reach the receiver: decides the v2 headers.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub(super) enum Delivery {
    /// Account webhooks through Svix (`svix-*` headers).
    #[default]
    Webhook,
    /// A per-bot callback: the raw secret in `x-mb-secret`.
    Callback,
}

/// One scenario file.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct Scenario {
    pub(super) description: String,
    pub(super) api: Api,
    #[serde(default)]
    pub(super) delivery: Delivery,
    pub(super) steps: Vec<Step>,
}

/// One event of a scenario: sent `delay_ms` after the previous one.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct Step {
    pub(super) delay_ms: u64,
    /// Keeps the file's key order (`serde_json`'s `preserve_order`).
    pub(super) body: Value,
}

/// The scenario called `name`.
pub(super) fn load(name: &str) -> anyhow::Result<Scenario> {
    let (_, text) = SCENARIOS
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| anyhow!("unknown scenario `{name}`; known: {}", names().join(", ")))?;
    serde_json::from_str(text).with_context(|| format!("embedded scenario `{name}` is invalid"))
}

/// Every scenario name, in `--list` order.
pub(super) fn names() -> Vec<&'static str> {
    SCENARIOS.iter().map(|(n, _)| *n).collect()
}
