//! `meethook trigger`: sends a realistic Meeting BaaS event sequence to a URL, like
//! `stripe trigger`.
//!
//! Scenarios are JSON files in `crates/cli/scenarios/`, embedded in the binary:
//! `{"description", "api": "v1"|"v2", "steps": [{"delay_ms", "body"}]}`. Strings in a body may
//! hold placeholders, filled just before sending:
//! - `{{bot_id}}`: `--bot-id`, or a random UUID v4 per run;
//! - `{{uuid}}`: a fresh random UUID v4 at each occurrence;
//! - `{{iso}}` (`2025-06-11T10:00:03.120Z`), `{{iso_s}}` (`2025-06-11T10:00:03Z`),
//!   `{{amz_date}}` (`20250611T100003Z`), `{{epoch_ms}}`, `{{epoch_s}}`: the step's time, with an
//!   optional offset (`{{iso_s-62s}}`, `{{epoch_ms+500ms}}`). A string that is only an epoch
//!   placeholder becomes a JSON number.
//!
//! A step's time is the scenario's origin plus the step delays so far; the origin is now with
//! `--pace realtime` (events are sent at those times) and, with `--pace fast`, the timeline ends
//! now (as if the meeting just happened). Each body is serialized once and those exact bytes are
//! sent (and signed, for v2 with `--signing-secret`).

use std::fmt;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use clap::builder::PossibleValuesParser;
use http::Method;
use meethook_proto::clock::now_ms;
use meethook_proto::meeting::Summary;
use rand::RngCore;
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio_util::sync::CancellationToken;

use crate::http_client::send;

/// Every scenario: name and embedded JSON, in `--list` order.
const SCENARIOS: &[(&str, &str)] = &[
    (
        "meeting-success",
        include_str!("../../scenarios/meeting-success.json"),
    ),
    (
        "bot-rejected",
        include_str!("../../scenarios/bot-rejected.json"),
    ),
    (
        "waiting-room-timeout",
        include_str!("../../scenarios/waiting-room-timeout.json"),
    ),
    (
        "invalid-meeting-url",
        include_str!("../../scenarios/invalid-meeting-url.json"),
    ),
    (
        "bot-removed",
        include_str!("../../scenarios/bot-removed.json"),
    ),
    (
        "meeting-error",
        include_str!("../../scenarios/meeting-error.json"),
    ),
    (
        "calendar-sync",
        include_str!("../../scenarios/calendar-sync.json"),
    ),
    (
        "v2-meeting-success",
        include_str!("../../scenarios/v2-meeting-success.json"),
    ),
    (
        "v2-bot-failed",
        include_str!("../../scenarios/v2-bot-failed.json"),
    ),
];

/// `User-Agent` of v1 events (the bot's own).
const V1_USER_AGENT: &str = "meetingbaas/1.0";
/// `User-Agent` of v2 events (Svix delivers them).
const V2_USER_AGENT: &str = "Svix-Webhooks/1.0 (meethook trigger)";

/// `meethook trigger` arguments.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  meethook trigger --list
  meethook trigger meeting-success --to http://127.0.0.1:8787/hooks/ch_abc --api-key mb_test
  meethook trigger v2-meeting-success --to http://localhost:3000/webhooks --signing-secret whsec_…
  meethook trigger meeting-error --to http://localhost:3000/hook \\
      --override data.status.error_message='\"tab crashed\"' --pace realtime")]
pub struct Args {
    /// Scenario to send (`--list` describes them).
    #[arg(value_name = "SCENARIO", value_parser = scenario_names(), required_unless_present = "list")]
    scenario: Option<String>,
    /// Where to POST the events: a relay webhook URL or your handler.
    #[arg(long, value_name = "URL", required_unless_present = "list")]
    to: Option<String>,
    /// List the scenarios with a one-line description, and exit.
    #[arg(long, exclusive = true)]
    list: bool,
    /// Bot id put in the events (default: a random UUID v4).
    #[arg(long, value_name = "UUID", value_parser = parse_uuid)]
    bot_id: Option<String>,
    /// v1: send this as `x-meeting-baas-api-key` (what a relay channel's --sender-secret checks).
    #[arg(long, value_name = "KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// v2: sign each event with this `whsec_…` secret (svix-id, svix-timestamp, svix-signature).
    #[arg(long, value_name = "SECRET", hide_env_values = true)]
    signing_secret: Option<String>,
    /// `fast` sends back to back; `realtime` waits each step's delay, like a real bot.
    #[arg(long, value_enum, default_value_t = Pace::Fast)]
    pace: Pace,
    /// Set a JSON path in every event that has it (`data.status.error_message="x"`); when no
    /// event has it, add it where the parent object exists. VALUE is JSON, else a string.
    #[arg(long = "override", value_name = "PATH=VALUE", value_parser = parse_override)]
    overrides: Vec<Override>,
    /// Point the recording and transcript links at this base URL (a file server you run,
    /// e.g. http://127.0.0.1:9000) instead of Meeting BaaS's S3 hosts, to try
    /// `listen --save-recordings` offline: `…amazonaws.com/BOT/video.mp4?…` becomes
    /// `URL/BOT/video.mp4?…`.
    #[arg(long, value_name = "URL")]
    artifacts_url: Option<String>,
}

/// How fast steps follow each other.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Pace {
    /// Wait each step's delay.
    Realtime,
    /// No waiting.
    Fast,
}

fn scenario_names() -> PossibleValuesParser {
    PossibleValuesParser::new(SCENARIOS.iter().map(|(name, _)| *name))
}

fn parse_uuid(s: &str) -> Result<String, String> {
    let ok = s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    if ok {
        Ok(s.to_ascii_lowercase())
    } else {
        Err("expected a UUID like 8d2f4c1a-5b6e-4f7a-9c3d-2e1f0a9b8c7d".into())
    }
}

/// One `--override PATH=VALUE`.
#[derive(Debug, Clone)]
struct Override {
    path: Vec<String>,
    value: J,
}

fn parse_override(s: &str) -> Result<Override, String> {
    let (path, value) = s
        .split_once('=')
        .ok_or("expected PATH=VALUE, e.g. data.status.error_message=\"x\"")?;
    let path: Vec<String> = path.trim().split('.').map(str::to_string).collect();
    if path.iter().any(|p| p.is_empty()) {
        return Err(format!("bad path in `{s}`: expected keys joined by dots"));
    }
    let value = serde_json::from_str::<J>(value).unwrap_or_else(|_| J::Str(value.to_string()));
    Ok(Override { path, value })
}

/// JSON that keeps object keys in file order (`event` before `data`), unlike `serde_json::Value`
/// without its `preserve_order` feature.
#[derive(Debug, Clone, PartialEq)]
enum J {
    Null,
    Bool(bool),
    Num(serde_json::Number),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl Serialize for J {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            J::Null => s.serialize_unit(),
            J::Bool(b) => s.serialize_bool(*b),
            J::Num(n) => n.serialize(s),
            J::Str(v) => s.serialize_str(v),
            J::Arr(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for i in items {
                    seq.serialize_element(i)?;
                }
                seq.end()
            }
            J::Obj(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for J {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<J, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = J;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E>(self) -> Result<J, E> {
                Ok(J::Null)
            }
            fn visit_none<E>(self) -> Result<J, E> {
                Ok(J::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<J, E> {
                Ok(J::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<J, E> {
                Ok(J::Num(n.into()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<J, E> {
                Ok(J::Num(n.into()))
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<J, E> {
                serde_json::Number::from_f64(n)
                    .map(J::Num)
                    .ok_or_else(|| E::custom("not a finite number"))
            }
            fn visit_str<E>(self, s: &str) -> Result<J, E> {
                Ok(J::Str(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<J, E> {
                Ok(J::Str(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<J, A::Error> {
                let mut items = Vec::new();
                while let Some(i) = seq.next_element()? {
                    items.push(i);
                }
                Ok(J::Arr(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<J, A::Error> {
                let mut entries = Vec::new();
                while let Some(e) = map.next_entry::<String, J>()? {
                    entries.push(e);
                }
                Ok(J::Obj(entries))
            }
        }
        d.deserialize_any(V)
    }
}

impl J {
    fn get_mut(&mut self, path: &[String]) -> Option<&mut J> {
        let Some((first, rest)) = path.split_first() else {
            return Some(self);
        };
        let next = match self {
            J::Obj(entries) => entries.iter_mut().find(|(k, _)| k == first).map(|(_, v)| v),
            J::Arr(items) => first.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
            _ => None,
        }?;
        next.get_mut(rest)
    }
}

/// API generation of a scenario: decides the headers.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Api {
    V1,
    V2,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Scenario {
    description: String,
    api: Api,
    steps: Vec<Step>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Step {
    delay_ms: u64,
    body: J,
}

fn load(name: &str) -> anyhow::Result<Scenario> {
    let (_, text) = SCENARIOS
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| anyhow!("unknown scenario `{name}`; known: {}", names().join(", ")))?;
    serde_json::from_str(text).with_context(|| format!("embedded scenario `{name}` is invalid"))
}

fn names() -> Vec<&'static str> {
    SCENARIOS.iter().map(|(n, _)| *n).collect()
}

/// A random UUID v4, lower-case.
fn new_uuid() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A Svix-style message id: `msg_` + 27 alphanumerics.
fn new_msg_id() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    format!("msg_{}", Alphanumeric.sample_string(&mut rand::rng(), 27))
}

/// What a placeholder becomes.
enum Filled {
    Str(String),
    Num(i64),
}

impl Filled {
    fn text(self) -> String {
        match self {
            Filled::Str(s) => s,
            Filled::Num(n) => n.to_string(),
        }
    }
}

/// Fills one placeholder (the text between `{{` and `}}`) for a step at `at_ms`.
fn fill(token: &str, bot_id: &str, at_ms: i64) -> anyhow::Result<Filled> {
    let split = token.find(['+', '-']).unwrap_or(token.len());
    let (kind, offset) = token.split_at(split);
    let offset_ms = if offset.is_empty() {
        0
    } else {
        let (sign, rest) = offset.split_at(1);
        let (digits, unit_ms) = if let Some(d) = rest.strip_suffix("ms") {
            (d, 1)
        } else if let Some(d) = rest.strip_suffix('s') {
            (d, 1000)
        } else {
            bail!("placeholder {{{{{token}}}}}: offset must end in ms or s");
        };
        let n: i64 = digits
            .parse()
            .map_err(|_| anyhow!("placeholder {{{{{token}}}}}: bad offset"))?;
        if sign == "-" {
            -n * unit_ms
        } else {
            n * unit_ms
        }
    };
    let t = at_ms + offset_ms;
    let time = |fmt: &str| -> anyhow::Result<Filled> {
        let dt = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(t)
            .ok_or_else(|| anyhow!("placeholder {{{{{token}}}}}: time out of range"))?;
        Ok(Filled::Str(dt.format(fmt).to_string()))
    };
    let plain = |f: Filled| -> anyhow::Result<Filled> {
        if offset.is_empty() {
            Ok(f)
        } else {
            bail!("placeholder {{{{{token}}}}} takes no offset")
        }
    };
    match kind {
        "bot_id" => plain(Filled::Str(bot_id.to_string())),
        "uuid" => plain(Filled::Str(new_uuid())),
        "iso" => time("%Y-%m-%dT%H:%M:%S%.3fZ"),
        "iso_s" => time("%Y-%m-%dT%H:%M:%SZ"),
        "amz_date" => time("%Y%m%dT%H%M%SZ"),
        "epoch_ms" => Ok(Filled::Num(t)),
        "epoch_s" => Ok(Filled::Num(t.div_euclid(1000))),
        _ => bail!("unknown placeholder {{{{{token}}}}}"),
    }
}

/// Fills every placeholder in `j` for a step at `at_ms`.
fn render(j: &mut J, bot_id: &str, at_ms: i64) -> anyhow::Result<()> {
    match j {
        J::Arr(items) => items.iter_mut().try_for_each(|i| render(i, bot_id, at_ms)),
        J::Obj(entries) => entries
            .iter_mut()
            .try_for_each(|(_, v)| render(v, bot_id, at_ms)),
        J::Str(s) if s.contains("{{") => {
            let whole = s
                .strip_prefix("{{")
                .and_then(|r| r.strip_suffix("}}"))
                .filter(|t| !t.contains("{{") && !t.contains("}}"));
            if let Some(token) = whole {
                *j = match fill(token, bot_id, at_ms)? {
                    Filled::Num(n) => J::Num(n.into()),
                    Filled::Str(v) => J::Str(v),
                };
                return Ok(());
            }
            let mut out = String::with_capacity(s.len());
            let mut rest = s.as_str();
            while let Some(open) = rest.find("{{") {
                out.push_str(&rest[..open]);
                let after = &rest[open + 2..];
                let close = after
                    .find("}}")
                    .ok_or_else(|| anyhow!("unclosed placeholder in `{s}`"))?;
                out.push_str(&fill(&after[..close], bot_id, at_ms)?.text());
                rest = &after[close + 2..];
            }
            out.push_str(rest);
            *s = out;
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Applies the overrides; returns how many events each one touched.
fn apply_overrides(steps: &mut [Step], overrides: &[Override]) -> anyhow::Result<Vec<usize>> {
    let mut counts = Vec::new();
    for o in overrides {
        let mut hits = 0;
        for s in steps.iter_mut() {
            if let Some(slot) = s.body.get_mut(&o.path) {
                *slot = o.value.clone();
                hits += 1;
            }
        }
        if hits == 0 {
            let (last, parent) = o.path.split_last().expect("paths are not empty");
            for s in steps.iter_mut() {
                if let Some(J::Obj(entries)) = s.body.get_mut(parent) {
                    entries.push((last.clone(), o.value.clone()));
                    hits += 1;
                }
            }
        }
        if hits == 0 {
            bail!(
                "--override {}: no event in this scenario has `{}`",
                o.path.join("."),
                o.path[..o.path.len() - 1].join(".")
            );
        }
        counts.push(hits);
    }
    Ok(counts)
}

/// One event ready to send: when (ms after the origin) and its exact bytes.
struct Ready {
    at_ms: u64,
    body: Vec<u8>,
}

/// Renders a scenario: overrides, then placeholders, then one serialization per event.
fn prepare(
    scenario: Scenario,
    bot_id: &str,
    origin_ms: i64,
    overrides: &[Override],
    artifacts_url: Option<&str>,
) -> anyhow::Result<(Vec<Ready>, Vec<usize>)> {
    let mut steps = scenario.steps;
    let counts = apply_overrides(&mut steps, overrides)?;
    let mut at = 0u64;
    let mut out = Vec::with_capacity(steps.len());
    for mut s in steps {
        at += s.delay_ms;
        render(&mut s.body, bot_id, origin_ms + at as i64)?;
        if let Some(base) = artifacts_url {
            rehost_artifacts(&mut s.body, base.trim_end_matches('/'));
        }
        out.push(Ready {
            at_ms: at,
            body: serde_json::to_vec(&s.body)?,
        });
    }
    Ok((out, counts))
}

/// Moves every S3 link (`https://….amazonaws.com/…`) in `v` to `base`, path and query kept.
fn rehost_artifacts(j: &mut J, base: &str) {
    match j {
        J::Str(s) => {
            if let Some(rest) = s.strip_prefix("https://") {
                let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                if host.ends_with(".amazonaws.com") {
                    *s = format!("{base}{path}");
                }
            }
        }
        J::Arr(items) => items.iter_mut().for_each(|i| rehost_artifacts(i, base)),
        J::Obj(entries) => entries
            .iter_mut()
            .for_each(|(_, v)| rehost_artifacts(v, base)),
        J::Null | J::Bool(_) | J::Num(_) => {}
    }
}

/// `1 event`, `8 events`.
fn events_word(n: usize) -> String {
    format!("{n} event{}", if n == 1 { "" } else { "s" })
}

fn print_list() -> anyhow::Result<()> {
    println!("Scenarios (meethook trigger SCENARIO --to URL):");
    for (name, _) in SCENARIOS {
        let s = load(name)?;
        let n = s.steps.len();
        let events = if n == 1 { "event " } else { "events" };
        println!("  {name:<22} {n:>2} {events}  {}", s.description);
    }
    Ok(())
}

/// Runs `meethook trigger`.
pub async fn run(mut args: Args, shutdown: CancellationToken) -> anyhow::Result<()> {
    if args.list {
        return print_list();
    }
    let (Some(name), Some(to)) = (args.scenario.as_deref(), args.to.as_deref()) else {
        bail!("give a SCENARIO and --to URL, or --list");
    };
    if !(to.starts_with("http://") || to.starts_with("https://")) {
        bail!("--to must be an http:// or https:// URL, got `{to}`");
    }
    let scenario = load(name)?;
    let api = scenario.api;
    if let Some(secret) = &args.signing_secret {
        args.signing_secret = Some(super::signing_secret("--signing-secret", secret)?);
        if api == Api::V1 {
            eprintln!(
                "note: --signing-secret signs v2 events only; `{name}` is v1 (use --api-key)"
            );
        }
    } else if api == Api::V2 {
        eprintln!("note: sending v2 events unsigned; pass --signing-secret whsec_… to sign them");
    }
    if args.api_key.is_some() && api == Api::V2 {
        eprintln!(
            "note: --api-key applies to v1 events only; `{name}` is v2 (use --signing-secret)"
        );
    }
    let bot_id = args.bot_id.clone().unwrap_or_else(new_uuid);
    let total_ms: u64 = scenario.steps.iter().map(|s| s.delay_ms).sum();
    let origin_ms = match args.pace {
        Pace::Realtime => now_ms(),
        Pace::Fast => now_ms() - total_ms as i64,
    };
    let (events, counts) = prepare(
        scenario,
        &bot_id,
        origin_ms,
        &args.overrides,
        args.artifacts_url.as_deref(),
    )?;
    for (o, n) in args.overrides.iter().zip(counts) {
        println!(
            "override {} in {n} event{}",
            o.path.join("."),
            if n == 1 { "" } else { "s" }
        );
    }
    let n = events.len();
    let pace = match args.pace {
        Pace::Realtime => format!("realtime, {:.1} s", total_ms as f64 / 1e3),
        Pace::Fast => "fast".to_string(),
    };
    let api_name = if api == Api::V1 { "v1" } else { "v2" };
    println!(
        "{name} → {to}  (bot {bot_id}, {}, {api_name}, {pace})",
        events_word(n)
    );

    let start = tokio::time::Instant::now();
    // A relay answers `{"seq": N}`: then the events are stored, not yet delivered.
    let mut seqs = Vec::with_capacity(n);
    for (i, ev) in events.into_iter().enumerate() {
        let step = i + 1;
        if args.pace == Pace::Realtime {
            let due = start + Duration::from_millis(ev.at_ms);
            let wait = due.saturating_duration_since(tokio::time::Instant::now());
            if wait >= Duration::from_secs(5) {
                println!("      … {:.1} s", wait.as_secs_f64());
            }
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                _ = shutdown.cancelled() => bail!("interrupted: sent {} of {n} events", step - 1),
            }
        } else if shutdown.is_cancelled() {
            bail!("interrupted: sent {} of {n} events", step - 1);
        }

        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        match api {
            Api::V1 => {
                headers.push(("user-agent".into(), V1_USER_AGENT.into()));
                if let Some(k) = &args.api_key {
                    headers.push(("x-meeting-baas-api-key".into(), k.clone()));
                }
            }
            Api::V2 => {
                headers.push(("user-agent".into(), V2_USER_AGENT.into()));
                let id = new_msg_id();
                let ts = (now_ms() / 1000).to_string();
                let sig = match &args.signing_secret {
                    Some(secret) => Some(
                        meethook_proto::signature::sign(secret, &id, &ts, &ev.body)
                            .ok_or_else(|| anyhow!("--signing-secret: cannot sign"))?,
                    ),
                    None => None,
                };
                headers.push(("svix-id".into(), id));
                headers.push(("svix-timestamp".into(), ts));
                if let Some(sig) = sig {
                    headers.push(("svix-signature".into(), format!("v1,{sig}")));
                }
            }
        }

        let summary = Summary::parse(&ev.body);
        let event = summary
            .as_ref()
            .map(|s| s.event.clone())
            .unwrap_or_default();
        let detail = summary.map(|s| s.detail()).unwrap_or_default();
        let sent = std::time::Instant::now();
        let answer = match send(Method::POST, to, None, &headers, Bytes::from(ev.body)).await {
            Ok(a) => a,
            Err(e) => {
                let msg = format!("{e:#}");
                if let Some(rest) = msg.strip_prefix(&format!("cannot reach {to}: ")) {
                    let cause = rest.split(" (is `").next().unwrap_or(rest);
                    bail!("cannot reach {to}: {cause}; is the relay/handler running?");
                }
                bail!("event {step}/{n} ({event}): {msg}");
            }
        };
        let ms = sent.elapsed().as_secs_f64() * 1e3;
        let seq = answer.json().get("seq").and_then(|s| s.as_u64());
        seqs.extend(seq);
        println!(
            "  {step:>2}/{n} {event:<20} {detail:<40} → {}{} ({ms:.1} ms)",
            answer.status,
            seq.map(|s| format!(" seq {s}")).unwrap_or_default()
        );
        if !(200..300).contains(&answer.status) {
            let why = answer.error_message();
            let mut why = why.split_whitespace().collect::<Vec<_>>().join(" ");
            if why.chars().count() > 160 {
                why = why.chars().take(160).collect::<String>() + "…";
            }
            let left = n - step;
            bail!(
                "event {step}/{n} ({event}) got HTTP {} from {to}{}{}; stopped ({left} event{} not sent)",
                answer.status,
                if why.is_empty() { "" } else { ": " },
                why,
                if left == 1 { "" } else { "s" }
            );
        }
    }
    match (seqs.first(), seqs.last()) {
        (Some(first), Some(last)) if seqs.len() == n => println!(
            "done: {} stored by the relay (seq {first}–{last}); its listeners deliver them",
            events_word(n)
        ),
        _ => println!("done: {} delivered", events_word(n)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use meethook_proto::meeting::{ApiVersion, MeetingEvent, Webhook};

    const BOT: &str = "8d2f4c1a-5b6e-4f7a-9c3d-2e1f0a9b8c7d";

    fn webhooks(name: &str) -> Vec<Webhook> {
        let (events, _) = prepare(load(name).unwrap(), BOT, 1_749_636_000_000, &[], None).unwrap();
        events
            .iter()
            .map(|e| Webhook::parse(&e.body).unwrap_or_else(|| panic!("{name}: not a webhook")))
            .collect()
    }

    fn codes(ws: &[Webhook]) -> Vec<String> {
        ws.iter()
            .map(|w| match &w.event {
                MeetingEvent::StatusChange(s) => s.status.code.as_str().to_string(),
                other => other.name().to_string(),
            })
            .collect()
    }

    #[test]
    fn every_scenario_loads_renders_and_types() {
        for (name, _) in SCENARIOS {
            let s = load(name).unwrap();
            assert!(!s.description.is_empty(), "{name}");
            let (events, _) = prepare(s, BOT, now_ms(), &[], None).unwrap();
            assert!(!events.is_empty(), "{name}");
            for e in &events {
                let text = std::str::from_utf8(&e.body).unwrap();
                assert!(!text.contains("{{"), "{name}: placeholder left in {text}");
                assert!(
                    text.starts_with(r#"{"event":"#),
                    "{name}: key order kept: {text}"
                );
                let w = Webhook::parse(&e.body).unwrap();
                assert!(w.event.is_typed(), "{name}: untyped {text}");
                let want = if s_api(name) == Api::V1 {
                    ApiVersion::V1
                } else {
                    ApiVersion::V2
                };
                assert_eq!(w.api_version(), want, "{name}: {text}");
                // The typed model keeps everything: typed → JSON equals the body.
                let body: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
                assert_eq!(serde_json::to_value(&w).unwrap(), body, "{name}");
            }
        }
    }

    fn s_api(name: &str) -> Api {
        load(name).unwrap().api
    }

    #[test]
    fn lifecycles() {
        assert_eq!(
            codes(&webhooks("meeting-success")),
            [
                "joining_call",
                "in_waiting_room",
                "in_call_not_recording",
                "in_call_recording",
                "recording_paused",
                "recording_resumed",
                "call_ended",
                "complete"
            ]
        );
        for (name, code, error) in [
            ("bot-rejected", "bot_rejected", "BotNotAccepted"),
            (
                "waiting-room-timeout",
                "waiting_room_timeout",
                "TimeoutWaitingToStart",
            ),
            (
                "invalid-meeting-url",
                "invalid_meeting_url",
                "InvalidMeetingUrl",
            ),
            ("bot-removed", "bot_removed", "BotRemoved"),
            ("meeting-error", "meeting_error", "InternalError"),
        ] {
            let ws = webhooks(name);
            let c = codes(&ws);
            assert_eq!(c[0], "joining_call", "{name}");
            assert_eq!(c[c.len() - 2], code, "{name}");
            let MeetingEvent::Failed(f) = &ws.last().unwrap().event else {
                panic!("{name} ends in failed");
            };
            assert_eq!(f.error, error, "{name}");
            assert_eq!(f.bot_id, BOT);
        }
        let ws = webhooks("meeting-error");
        let MeetingEvent::StatusChange(s) = &ws[ws.len() - 2].event else {
            panic!()
        };
        assert!(matches!(s.status.error_message, Some(Some(_))));
        assert!(s.status.error_type.is_some());

        let ws = webhooks("v2-meeting-success");
        assert!(matches!(
            ws.last().unwrap().event,
            MeetingEvent::BotCompleted(_)
        ));
        let ws = webhooks("v2-bot-failed");
        let MeetingEvent::BotFailed(f) = &ws.last().unwrap().event else {
            panic!()
        };
        assert_eq!(f.error_code, "BOT_NOT_ACCEPTED");
    }

    #[test]
    fn complete_has_a_real_transcript_and_a_live_mp4_link() {
        let ws = webhooks("meeting-success");
        let MeetingEvent::Complete(c) = &ws.last().unwrap().event else {
            panic!()
        };
        assert!(c.speaker_count() >= 2);
        assert!(c.word_count().unwrap() >= 100);
        let detail = Summary::of(ws.last().unwrap()).detail();
        assert!(detail.contains("mp4 expires"), "{detail}");
        // Timestamps follow the step delays: in_call_recording's start_time is its own time.
        let MeetingEvent::StatusChange(rec) = &ws[3].event else {
            panic!()
        };
        let start = rec.status.start_time.as_ref().unwrap().as_i64().unwrap();
        assert_eq!(start, 1_749_636_000_000 + 2400 + 9000 + 1800);
        assert_eq!(
            rec.status.created_at.as_deref(),
            Some("2025-06-11T10:00:13.200Z")
        );
    }

    #[test]
    fn placeholders() {
        let t = 1_749_636_003_120;
        let mut j: J = serde_json::from_str(
            r#"{"a":"{{epoch_ms}}","b":"{{epoch_s-3s}}","c":"x-{{iso}}-{{iso_s+500ms}}","d":"{{amz_date}}","e":"{{bot_id}}/{{bot_id}}","f":"{{uuid}}"}"#,
        )
        .unwrap();
        render(&mut j, BOT, t).unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&serde_json::to_vec(&j).unwrap()).unwrap();
        assert_eq!(v["a"], 1_749_636_003_120i64);
        assert_eq!(v["b"], 1_749_636_000i64);
        assert_eq!(v["c"], "x-2025-06-11T10:00:03.120Z-2025-06-11T10:00:03Z");
        assert_eq!(v["d"], "20250611T100003Z");
        assert_eq!(v["e"], format!("{BOT}/{BOT}"));
        assert!(parse_uuid(v["f"].as_str().unwrap()).is_ok());
        for bad in ["{{nope}}", "{{bot_id+1s}}", "{{iso+1h}}", "x {{iso"] {
            let mut j = J::Str(bad.into());
            assert!(render(&mut j, BOT, t).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_order_and_numbers_survive() {
        let text = r#"{"z":1,"a":[1.5,-2,true,null],"m":{"y":"s","b":{}}}"#;
        let j: J = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_string(&j).unwrap(), text);
    }

    #[test]
    fn overrides() {
        let o = parse_override("data.status.error_message=tab crashed").unwrap();
        assert_eq!(o.value, J::Str("tab crashed".into()));
        let n = parse_override("data.status.start_time=5").unwrap();
        assert_eq!(n.value, J::Num(5.into()));
        assert!(parse_override("nope").is_err());
        assert!(parse_override("a..b=1").is_err());

        let mut steps = load("meeting-error").unwrap().steps;
        let counts = apply_overrides(&mut steps, std::slice::from_ref(&o)).unwrap();
        assert_eq!(
            counts,
            [1],
            "only the meeting_error event has an error_message"
        );
        // A path no event has is added where its parent exists…
        let add = parse_override(r#"data.extra={"k":1}"#).unwrap();
        let counts = apply_overrides(&mut steps, &[add]).unwrap();
        assert_eq!(counts, [steps.len()]);
        // …and refused when nothing has the parent either.
        let none = parse_override("data.nothing.here=1").unwrap();
        assert!(apply_overrides(&mut steps, &[none]).is_err());
        // Array indexes work.
        let mut steps = load("meeting-success").unwrap().steps;
        let w = parse_override("data.transcript.0.speaker=Zoe").unwrap();
        assert_eq!(apply_overrides(&mut steps, &[w]).unwrap(), [1]);
    }

    #[test]
    fn uuids() {
        let u = new_uuid();
        assert!(parse_uuid(&u).is_ok(), "{u}");
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, new_uuid());
        assert!(parse_uuid("not-a-uuid").is_err());
        assert_eq!(parse_uuid(&BOT.to_uppercase()).unwrap(), BOT);
        let m = new_msg_id();
        assert!(m.starts_with("msg_") && m.len() == 31, "{m}");
    }
}
