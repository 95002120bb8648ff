//! `listen --order bot --parallel N`: each bot's events in order, bots at once, at most N
//! sends at a time, nothing lost, at most N duplicates per daemon crash; `--order channel`
//! still one at a time.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use meethook_testkit::fault::{jitter, verify, verify_by, wait_all, Acked};
use meethook_testkit::{post, tempdir, ListenProcess, TestHandler, TestRelay};

use crate::util::BIN;

const BOTS: usize = 8;

/// The bot id in a body (`""` for none).
fn bot(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    v["data"]["bot_id"].as_str().unwrap_or_default().to_string()
}

/// `BOTS` senders, each posting its bot's `each` status changes in turn; what was acked.
async fn send_bots(url: &str, each: usize) -> Acked {
    let tasks: Vec<_> = (0..BOTS)
        .map(|b| {
            let url = url.to_string();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..each {
                    let body = format!(
                        r#"{{"event":"bot.status_change","data":{{"bot_id":"bot-{b}","status":{{"code":"in_call_recording"}},"n":{i}}}}}"#
                    );
                    let p = post(&url, &[("content-type", "application/json")], body.clone()).await;
                    acked.push((p.seq().expect("acked"), Bytes::from(body)));
                }
                acked
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

/// A relay, a slow and flaky handler, and `listen` with `extra` flags, as a child.
async fn start(
    extra: &'static [&'static str],
) -> (
    TestRelay,
    String,
    TestHandler,
    impl Fn(&Path) -> ListenProcess,
) {
    let relay = TestRelay::start().await;
    let (ch, token) = relay.channel(None).await;
    let handler = TestHandler::start().await;
    handler.set_delay(Duration::from_millis(20));
    handler.set_flaky(10);
    let (url, hook, ch2) = (relay.url(), handler.url("/"), ch.clone());
    let listen = move |data: &Path| {
        ListenProcess::start_with(Path::new(BIN), &url, &ch2, &token, &hook, data, extra)
    };
    (relay, ch, handler, listen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_bot_delivers_each_bot_in_order_and_bots_at_once() {
    let (relay, ch, handler, listen) = start(&["--order", "bot", "--parallel", "4"]).await;
    let data = tempdir();
    let daemon = listen(data.path());
    let acked = send_bots(&relay.hook(&ch), 50).await;
    assert_eq!(acked.len(), BOTS * 50);
    let got = wait_all(&handler, &acked).await;
    let report = verify_by(&acked, &got, bot);
    report.assert_promise("order-bot-flaky", 0);
    assert_eq!(report.duplicates, 0, "no crash, no duplicate");
    // Within each bot, no attempt of an event before the one ahead of it was delivered.
    for b in 0..BOTS {
        let mine: Vec<u64> = got
            .iter()
            .filter(|r| bot(&r.body) == format!("bot-{b}"))
            .map(|r| r.seq())
            .collect();
        assert!(mine.is_sorted(), "bot-{b} went out of order: {mine:?}");
    }
    let most = handler.max_in_flight();
    assert!(
        (2..=4).contains(&most),
        "bots are delivered at once, at most --parallel 4: {most} at once"
    );
    assert!(
        verify(&acked, &got).out_of_order > 0,
        "across bots, seqs are not in channel order"
    );
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_channel_stays_one_at_a_time() {
    let (relay, ch, handler, listen) = start(&["--order", "channel", "--parallel", "4"]).await;
    let data = tempdir();
    let daemon = listen(data.path());
    let acked = send_bots(&relay.hook(&ch), 10).await;
    let got = wait_all(&handler, &acked).await;
    let report = verify(&acked, &got);
    report.assert_promise("order-channel-flaky", 0);
    let seqs: Vec<u64> = got.iter().map(|r| r.seq()).collect();
    assert!(seqs.is_sorted(), "channel order: {seqs:?}");
    assert_eq!(handler.max_in_flight(), 1, "one request at a time");
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_bot_kill9_duplicates_at_most_parallel_per_crash() {
    const N: usize = 4;
    let (relay, ch, handler, listen) = start(&["--order", "bot", "--parallel", "4"]).await;
    let data = tempdir();
    let mut daemon = listen(data.path());
    let hook = relay.hook(&ch);
    let load = tokio::spawn(async move { send_bots(&hook, 50).await });
    let kills = 6;
    for _ in 0..kills {
        tokio::time::sleep(jitter(300, 700)).await;
        daemon.proc.kill9().await;
        daemon = listen(data.path());
    }
    let acked = load.await.unwrap();
    let got = wait_all(&handler, &acked).await;
    let report = verify_by(&acked, &got, bot);
    report.assert_promise("order-bot-daemon-kill9", kills);
    assert!(
        report.duplicates <= N * kills,
        "at most --parallel duplicates per crash: {report:?}"
    );
    daemon.proc.kill9().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_send_each_event_to_the_first_match_and_journal_the_rest_as_unrouted() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let handler = TestHandler::start().await;
    let data = tempdir();
    let file = data.path().join("meethook.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[dev]
json = true
inspect = "off"
max_backoff = "200ms"

[[route]]
name = "calendar"
path = "/calendar"
forward_to = "{cal}"

[[route]]
name = "bots"
events = ["bot.*"]
forward_to = "{bots}"
order = "bot"
parallel = 4
"#,
            cal = handler.url("/cal"),
            bots = handler.url("/bots"),
        ),
    )
    .unwrap();
    let mut child = crate::util::dev_with(data.path(), &["--config", file.to_str().unwrap()]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next_line().await.unwrap().expect("a start-up line");
    let started: serde_json::Value = serde_json::from_str(&first).expect(&first);
    let webhook = started["webhook_url"].as_str().unwrap().to_string();
    // The calendar handler fails at first: the bots route goes on meanwhile.
    handler.answer_seq(1, Some(503));
    let calendar = r#"{"event":"calendar.updated","data":{"calendar_id":"c1"}}"#;
    assert_eq!(
        post(&format!("{webhook}/calendar"), &[], calendar)
            .await
            .seq(),
        Some(1)
    );
    let bot_event = |b: u32| {
        format!(
            r#"{{"event":"bot.status_change","data":{{"bot_id":"bot-{b}","status":{{"code":"joining_call"}}}}}}"#
        )
    };
    for b in 0..3 {
        post(&webhook, &[], bot_event(b)).await;
    }
    let other = r#"{"event":"complete","data":{"bot_id":"bot-0"}}"#;
    assert_eq!(post(&webhook, &[], other).await.seq(), Some(5));
    handler
        .wait_until("the bot events while the calendar fails", |log| {
            log.iter()
                .filter(|r| r.path == "/bots" && r.answered == 200)
                .count()
                == 3
        })
        .await;
    handler.answer_seq(1, None);
    let got = handler
        .wait_until("the calendar event", |log| {
            log.iter()
                .any(|r| r.path == "/cal/calendar" && r.answered == 200)
        })
        .await;
    assert!(
        got.iter().all(|r| r.seq() != 5),
        "unrouted: journaled, not sent"
    );
    // The live lines and `events list` name each event's route.
    let mut routes = std::collections::BTreeMap::new();
    let read = async {
        while routes.len() < 5 {
            let l = lines.next_line().await.unwrap().expect("a line");
            let v: serde_json::Value = serde_json::from_str(&l).expect(&l);
            if matches!(v["result"].as_str(), Some("delivered" | "skipped")) {
                let route = v["route"].as_str().map(str::to_string);
                routes.insert(v["seq"].as_u64().unwrap(), route);
            }
        }
    };
    tokio::time::timeout(meethook_testkit::PATIENCE, read)
        .await
        .expect("a settled line for each event");
    assert_eq!(routes[&1].as_deref(), Some("calendar"));
    assert_eq!(routes[&2].as_deref(), Some("bots"));
    assert_eq!(routes[&5].as_deref(), Some("unrouted"));
    crate::util::interrupt(&child);
    assert_eq!(child.wait().await.unwrap().code(), Some(0));
    let (code, out, err) = crate::util::meethook(&[
        "events",
        "list",
        "--json",
        "--data",
        data.path().to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let rows = crate::util::json_lines(&out);
    let of = |seq: u64| {
        let r = rows.iter().find(|r| r["seq"] == seq).unwrap();
        (
            r["route"].as_str().unwrap().to_string(),
            r["state"].as_str().unwrap().to_string(),
        )
    };
    assert_eq!(of(1), ("calendar".into(), "delivered".into()));
    assert_eq!(of(3), ("bots".into(), "delivered".into()));
    assert_eq!(of(5), ("unrouted".into(), "skipped".into()));
}
