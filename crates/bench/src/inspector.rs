//! Phase `inspector`: (h) delivery with an inspector stream subscriber attached against
//! none, in the same run; (i) `GET /api/events` latency over a 100,000-event journal
//! (`meethook inspect`).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::body::Bodies;
use crate::ctx::Ctx;
use crate::handler::{Handler, Tracker};
use crate::latency::PER_EVENT;
use crate::load;
use crate::procs::{self, Proc};
use crate::report::{fmt_dur, fmt_rate, thousands};
use crate::stack::Stack;
use crate::stats::{median, pct, ratio, sorted};
use crate::throughput::measured;

/// Events in the journal of figure i.
const JOURNAL_EVENTS: u64 = 100_000;
/// Requests per list figure.
const SAMPLES: usize = 50;

pub(crate) async fn phase(ctx: &mut Ctx) -> anyhow::Result<()> {
    let c = ctx.plan.main_concurrency();
    let (mut none, mut with, mut items) = (Vec::new(), Vec::new(), Vec::new());
    // Alternating, so a drift of the machine touches both.
    for round in 1..=ctx.plan.rounds {
        for subscribed in [false, true] {
            let label = format!(
                "inspector phase: {c} senders, {} subscriber, round {round}",
                if subscribed { "a stream" } else { "no" }
            );
            match delivery(ctx, c, subscribed, &label).await {
                Ok((rate, seen)) if subscribed => {
                    with.push(rate);
                    items.push(seen);
                }
                Ok((rate, _)) => none.push(rate),
                Err(e) => ctx.report.errors.push(format!("{label}: {e:#}")),
            }
        }
    }
    if !none.is_empty() && !with.is_empty() {
        let cell = |v: &[f64]| {
            let each: Vec<String> = v.iter().map(|r| fmt_rate(*r)).collect();
            format!("{} ({})", fmt_rate(median(v.to_vec())), each.join(" · "))
        };
        let (a, b) = (median(with.clone()), median(none.clone()));
        ctx.report.inspector(
            "h",
            format!(
                "delivered events/s, {c} senders, 1 KiB: an inspector stream subscriber \
                 (`GET /api/stream`) attached vs none (ratio: with / without)"
            ),
            cell(&with),
            cell(&none),
            ratio(a, b),
        );
        let seen: Vec<String> = items.iter().map(|n| thousands(*n)).collect();
        ctx.report.inspector_notes.push(format!(
            "h: the subscriber read {} stream items per round (new events and state changes)",
            seen.join(" · ")
        ));
    }
    if let Err(e) = list_latency(ctx).await {
        ctx.report
            .errors
            .push(format!("inspector phase: list latency: {e:#}"));
    }
    Ok(())
}

/// A free loopback port (bound, then released for the child to take).
fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Waits until something accepts on `addr`.
async fn wait_listening(addr: SocketAddr, proc: &mut Proc) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).await.is_err() {
        proc.check_alive()?;
        if Instant::now() > deadline {
            bail!("nothing listens on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// A `GET /api/stream` reader counting `event: event` messages until dropped.
async fn subscribe(addr: SocketAddr, seen: Arc<AtomicU64>) -> anyhow::Result<()> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(format!("GET /api/stream HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let needle = b"event: event\n";
    let mut carry: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        carry.extend_from_slice(&buf[..n]);
        let found = carry.windows(needle.len()).filter(|w| w == needle).count();
        seen.fetch_add(found as u64, Ordering::Relaxed);
        // Keep a tail shorter than the needle: a match split across reads is counted once.
        let keep = carry.len().min(needle.len() - 1);
        carry.drain(..carry.len() - keep);
    }
}

/// One run of `c` senders through a relay and a `listen` serving its inspector, with or
/// without a stream subscriber: the delivered rate and the items the subscriber read.
async fn delivery(
    ctx: &mut Ctx,
    c: usize,
    subscribed: bool,
    label: &str,
) -> anyhow::Result<(f64, u64)> {
    let (n, warm) = (ctx.plan.events, ctx.plan.warmup);
    let bodies = Bodies::new(1 << 10);
    let limit = ctx.plan.limit(n);
    let tracker = Tracker::new((warm + n) as usize);
    let handler = Handler::start(tracker.clone(), true).await?;
    let mut stack = Stack::start(ctx, &format!("inspector-c{c}"), None).await?;
    let inspect = free_port()?;
    let dir = ctx.dir(&format!("inspector-c{c}-listen"));
    let mut daemon = procs::start_listen_with(
        &ctx.meethook,
        &stack.relay,
        &stack.channel,
        &handler.url(),
        &dir,
        &["--inspect".into(), inspect.to_string()],
    )?;
    wait_listening(inspect, &mut daemon).await?;
    stack.daemon = Some(daemon);
    let seen = Arc::new(AtomicU64::new(0));
    let reader = subscribed.then(|| tokio::spawn(subscribe(inspect, seen.clone())));
    let w = load::serial(&stack.target, &tracker, 0..warm, &bodies, PER_EVENT).await;
    let m = load::flood(
        &stack.target,
        &tracker,
        warm..warm + n,
        c,
        &bodies,
        Instant::now() + limit,
        false,
    )
    .await;
    let all_in = tracker
        .wait_unique(w.acked + m.acked, tokio::time::Instant::now() + limit)
        .await;
    stack.check_alive()?;
    if let Some(r) = reader {
        if r.is_finished() {
            r.await?.context("the stream subscriber stopped")?;
            bail!("the stream ended during the run");
        }
        r.abort();
    }
    stack.stop().await;
    let checks = tracker.checks(
        0..warm + n,
        w.sent + m.sent,
        w.acked + m.acked,
        w.errors + m.errors,
    );
    let timeout_note = (!all_in).then(|| format!("not all delivered within {limit:?}"));
    ctx.report.check(
        label.to_string(),
        checks,
        w.first_error.or(m.first_error.clone()).or(timeout_note),
    );
    let delivered = measured(&tracker, warm..warm + n);
    let rate = match tracker.last_received_at() {
        Some(end) if delivered > 0 => {
            delivered as f64 / end.duration_since(m.started).as_secs_f64()
        }
        _ => 0.0,
    };
    Ok((rate, seen.load(Ordering::Relaxed)))
}

/// Writes an `events export` file of `n` Meeting BaaS status changes of 50 bots (every 97th a
/// `complete`), each with an `svix-id`.
fn export_file(path: &Path, n: u64) -> anyhow::Result<()> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let codes = [
        "joining_call",
        "in_waiting_room",
        "in_call_not_recording",
        "in_call_recording",
        "call_ended",
    ];
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let t0 = 1_760_000_000_000i64;
    for seq in 1..=n {
        let bot = format!("{:08x}-0000-4000-8000-{:012x}", seq % 50, seq % 50);
        let body = if seq % 97 == 0 {
            format!(
                r#"{{"event":"complete","data":{{"bot_id":"{bot}","mp4":"https://s3.example/{seq}.mp4","speakers":["Ana","Bo"],"transcript":[{{"speaker":"Ana","words":[{{"start":0.1,"end":0.5,"word":"hello"}}]}}]}}}}"#
            )
        } else {
            format!(
                r#"{{"event":"bot.status_change","data":{{"bot_id":"{bot}","status":{{"code":"{}","created_at":"2025-06-11T10:00:00.000Z"}}}}}}"#,
                codes[(seq % 5) as usize]
            )
        };
        let headers = [
            ("content-type", "application/json".to_string()),
            ("svix-id", format!("msg_{seq:08}")),
            ("x-meeting-baas-api-key", "mb_bench".to_string()),
        ];
        let line = serde_json::json!({
            "channel": "bench",
            "seq": seq,
            "received_at_ms": t0 + seq as i64 * 100,
            "method": "POST",
            "path": "/webhook",
            "headers": headers.iter().map(|(k, v)| [k.to_string(), b64.encode(v)]).collect::<Vec<_>>(),
            "body": b64.encode(body),
        });
        writeln!(f, "{line}")?;
    }
    f.flush()?;
    Ok(())
}

/// One HTTP/1.1 GET on a fresh connection: the time to the whole answer and its status.
async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(Duration, u16, Vec<u8>)> {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    let took = started.elapsed();
    let status = std::str::from_utf8(out.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((took, status, out))
}

/// Figure i: `GET /api/events` over a journal of [`JOURNAL_EVENTS`] events.
async fn list_latency(ctx: &mut Ctx) -> anyhow::Result<()> {
    let dir = ctx.dir("inspector-journal");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("events.ndjson");
    export_file(&file, JOURNAL_EVENTS)?;
    let data = dir.join("journal");
    let started = Instant::now();
    let out = tokio::process::Command::new(&ctx.meethook)
        .arg("events")
        .arg("import")
        .arg(&file)
        .arg("--data")
        .arg(&data)
        .output()
        .await?;
    if !out.status.success() {
        bail!("events import: {}", String::from_utf8_lossy(&out.stderr));
    }
    let imported = started.elapsed();
    let addr = free_port()?;
    let mut cmd = tokio::process::Command::new(&ctx.meethook);
    cmd.arg("inspect")
        .arg("--data")
        .arg(&data)
        .arg("--inspect")
        .arg(addr.to_string())
        .stdout(std::process::Stdio::null())
        .stdin(std::process::Stdio::null());
    let mut inspect = Proc::spawn(cmd, "meethook inspect", dir.join("inspect.log"))?;
    wait_listening(addr, &mut inspect).await?;
    let pages = [
        ("first page (50 newest)", "/api/events".to_string()),
        (
            "a deep page (before=1000)",
            "/api/events?before=1000".into(),
        ),
        (
            "event type filter (event=complete)",
            "/api/events?event=complete".into(),
        ),
        (
            "JSON path filter (data.status.code = in_call_recording)",
            "/api/events?where=data.status.code%20%3D%20in_call_recording".into(),
        ),
        (
            "JSON path filter, deep (same, before=1000)",
            "/api/events?where=data.status.code%20%3D%20in_call_recording&before=1000".into(),
        ),
        (
            "header filter (svix-id:msg_00012345), one match",
            "/api/events?header=svix-id:msg_00012345".into(),
        ),
        (
            "free text (q=hello: the `complete` bodies)",
            "/api/events?q=hello".into(),
        ),
    ];
    for (what, path) in pages {
        let mut times = Vec::with_capacity(SAMPLES);
        let mut listed = 0;
        for _ in 0..SAMPLES {
            let (took, status, body) = get(addr, &path).await?;
            if status != 200 {
                bail!("GET {path}: {status}: {}", String::from_utf8_lossy(&body));
            }
            listed = String::from_utf8_lossy(&body).matches("\"seq\":").count();
            times.push(took);
        }
        let s = sorted(&times);
        ctx.report.inspector(
            "i",
            format!("GET {path}: {what}, {} events listed (n={SAMPLES})", listed),
            format!(
                "p50 {} · p99 {}",
                fmt_dur(pct(&s, 0.5)),
                fmt_dur(pct(&s, 0.99))
            ),
            "–",
            None,
        );
    }
    inspect.stop().await;
    ctx.report.inspector_notes.push(format!(
        "i: a journal of {} events (`meethook events import`, {:.1} s), served by `meethook \
         inspect` (no listener); one request at a time on a fresh connection, from connect to \
         the whole answer",
        thousands(JOURNAL_EVENTS),
        imported.as_secs_f64()
    ));
    Ok(())
}
