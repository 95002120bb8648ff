//! The inspector's API over a real journal, and against a running daemon.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use meethook_daemon::journal::{Attempt, Journal, State};
use meethook_daemon::observe::DaemonEvent;
use meethook_daemon::{Observer, Observers};
use meethook_inspector::{Config, Live};
use meethook_proto::{Event, Header};
use meethook_testkit::{client, post, request, EventLog, Posted, Setup, PATIENCE};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A running inspector; stopped when dropped.
struct Served {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Served {
    async fn start(cfg: Config, live: Option<Live>) -> Served {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(meethook_inspector::run(cfg, listener, live, stop.clone()));
        Served { addr, stop }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn get(&self, path: &str) -> Value {
        let r = self.req("GET", path, &[]).await;
        assert_eq!(r.status, 200, "{path}: {:?}", r.body);
        serde_json::from_slice(&r.body).unwrap()
    }

    async fn req(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Posted {
        request(&client(), method, &self.url(path), headers, "{}")
            .await
            .unwrap()
    }
}

fn webhook(seq: u64, event: &str, bot: &str) -> Event {
    let body = format!(
        r#"{{"event":"{event}","data":{{"bot_id":"{bot}","status":{{"code":"in_call_recording"}}}}}}"#
    );
    Event {
        seq,
        received_at_ms: 1_700_000_000_000 + seq as i64,
        method: "POST".into(),
        path: "/hook?x=1".into(),
        headers: vec![
            Header::new("content-type", "application/json"),
            Header::new("x-meeting-baas-api-key", "mb-key-123"),
            Header::new("Authorization", "Bearer abc"),
            Header::new("x-trace", "t1"),
        ],
        body: Bytes::from(body),
    }
}

fn attempt(n: u32, status: u16) -> Attempt {
    Attempt {
        attempt: n,
        started_at_ms: 1_700_000_000_500,
        latency: Duration::from_micros(2500),
        status: Some(status),
        error: None,
        response_head: Bytes::from_static(b"nope"),
        response_headers: vec![
            Header::new("content-type", "text/plain"),
            Header::new("set-cookie", "sid=1"),
        ],
        truncated: false,
        replay: false,
    }
}

/// 3,000 events in channel `c`: every 3rd `complete` of bot `bbbb…`, the others status
/// changes of bot `aaaa…`; every 100th failed with a 400.
fn journal(dir: &std::path::Path) -> Journal {
    let j = Journal::open(dir).unwrap();
    let evs: Vec<Event> = (1..=3000)
        .map(|i| {
            if i % 3 == 0 {
                webhook(i, "complete", "bbbb-2222")
            } else {
                webhook(i, "bot.status_change", "aaaa-1111")
            }
        })
        .collect();
    for chunk in evs.chunks(500) {
        j.insert("c", chunk, 1).unwrap();
    }
    for i in (100..=3000).step_by(100) {
        j.record("c", i, &attempt(1, 400), Some(State::Failed))
            .unwrap();
    }
    j.record("c", 2999, &attempt(1, 200), Some(State::Delivered))
        .unwrap();
    j
}

fn seqs(v: &Value) -> Vec<u64> {
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn lists_filters_and_pages_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let _j = journal(dir.path());
    let s = Served::start(Config::new(dir.path()), None).await;
    assert_eq!(s.get("/api/health").await, serde_json::json!({"ok": true}));

    let page = s.get("/api/events").await;
    assert_eq!(seqs(&page), (2951..=3000).rev().collect::<Vec<_>>());
    assert_eq!(page["next"], 2951);
    let first = &page["events"][1];
    assert_eq!(first["seq"], 2999);
    assert_eq!(first["channel"], "c");
    assert_eq!(first["received_at"], 1_700_000_002_999i64);
    assert_eq!(first["event"], "bot.status_change");
    assert_eq!(first["bot_id"], "aaaa-1111");
    assert_eq!(first["code"], "in_call_recording");
    assert_eq!(first["summary"], "bot aaaa-111… in_call_recording");
    assert_eq!(first["state"], "delivered");
    assert_eq!(first["attempts"], 1);
    assert_eq!(first["last_status"], 200);
    assert_eq!(first["latency_ms"], 2.5);
    assert_eq!(page["events"][0]["state"], "failed");
    assert_eq!(page["events"][2]["latency_ms"], Value::Null);

    let older = s.get("/api/events?before=2951&limit=10").await;
    assert_eq!(seqs(&older), (2941..=2950).rev().collect::<Vec<_>>());
    let last = s.get("/api/events?before=3&limit=10").await;
    assert_eq!((seqs(&last), &last["next"]), (vec![2, 1], &Value::Null));

    let failed = s.get("/api/events?state=failed&limit=5").await;
    assert_eq!(seqs(&failed), vec![3000, 2900, 2800, 2700, 2600]);
    let complete = s.get("/api/events?event=complete&bot=bbbb&limit=3").await;
    assert_eq!(seqs(&complete), vec![3000, 2997, 2994]);
    let glob = s.get("/api/events?event=bot.*&limit=3&before=3000").await;
    assert_eq!(seqs(&glob), vec![2999, 2998, 2996]);
    assert!(seqs(&s.get("/api/events?bot=zzzz").await).is_empty());
    assert!(seqs(&s.get("/api/events?channel=other").await).is_empty());
    let bad = s.req("GET", "/api/events?state=nope", &[]).await;
    assert_eq!(bad.status, 400);

    // Paging through everything sees each event once.
    let mut all = Vec::new();
    let mut path = "/api/events?limit=500".to_string();
    loop {
        let p = s.get(&path).await;
        all.extend(seqs(&p));
        match p["next"].as_u64() {
            Some(n) => path = format!("/api/events?limit=500&before={n}"),
            None => break,
        }
    }
    assert_eq!(all, (1..=3000).rev().collect::<Vec<_>>());
}

/// Every page of `path` (which has a `?`), followed through `next`; the pages' seqs and how
/// many pages came back empty with a `next` (a scan that ran out of budget).
async fn all_pages(s: &Served, path: &str) -> (Vec<u64>, usize) {
    let (mut all, mut empty) = (Vec::new(), 0);
    let mut at = path.to_string();
    loop {
        let p = s.get(&at).await;
        let got = seqs(&p);
        match p["next"].as_u64() {
            Some(n) => {
                empty += usize::from(got.is_empty());
                at = format!("{path}&before={n}");
            }
            None => {
                all.extend(got);
                break;
            }
        }
        all.extend(got);
    }
    (all, empty)
}

#[tokio::test]
async fn header_json_path_and_text_filters_page_through_a_big_journal() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    let codes = ["joining_call", "in_waiting_room", "in_call_recording"];
    // 20,000 status changes (every 50th mentions speaker Ann), one `complete` at seq 7.
    let evs: Vec<Event> = (1..=20_000u64)
        .map(|i| {
            let event = if i == 7 { "complete" } else { "bot.status_change" };
            let extra = if i % 50 == 0 { r#","speaker":"Ann""# } else { "" };
            let body = format!(
                r#"{{"event":"{event}","data":{{"bot_id":"aaaa-1111","status":{{"code":"{}"}}{extra}}}}}"#,
                codes[(i % 3) as usize]
            );
            Event {
                seq: i,
                received_at_ms: 1_700_000_000_000 + i as i64,
                method: "POST".into(),
                path: "/hook".into(),
                headers: vec![Header::new("Svix-Id", format!("msg_{i}"))],
                body: Bytes::from(body),
            }
        })
        .collect();
    for chunk in evs.chunks(5000) {
        j.insert("c", chunk, 1).unwrap();
    }
    j.record("c", 4, &attempt(1, 500), None).unwrap();
    let s = Served::start(Config::new(dir.path()), None).await;

    let rec = s
        .get("/api/events?where=data.status.code%20%3D%20in_call_recording&limit=3")
        .await;
    assert_eq!(seqs(&rec), vec![20_000, 19_997, 19_994]);
    assert_eq!(rec["next"], 19_994);
    let one = s.get("/api/events?header=svix-id:MSG_19999").await;
    assert_eq!(seqs(&one), vec![19_999]);
    let (some, _) = all_pages(&s, "/api/events?header=svix-id%3Dmsg_123&limit=500").await;
    let want: Vec<u64> = (1..=20_000u64)
        .rev()
        .filter(|i| i.to_string().starts_with("123"))
        .collect();
    assert_eq!(some, want, "a piece of the value");
    assert_eq!(
        seqs(&s.get("/api/events?q=ANN&limit=3").await),
        vec![20_000, 19_950, 19_900]
    );
    let both = "/api/events?q=ann&where=data.status.code%20~%20waiting&limit=7";
    let (got, _) = all_pages(&s, both).await;
    let want: Vec<u64> = (1..=20_000u64)
        .rev()
        .filter(|i| i % 50 == 0 && i % 3 == 1)
        .collect();
    assert_eq!(got, want, "every match once, newest first");

    // No SQL shortcut for `!=`: the one match is far down, found over several bounded reads.
    let (got, empty) = all_pages(&s, "/api/events?where=event%20!%3D%20bot.status_change").await;
    assert_eq!(got, vec![7]);
    assert!(
        empty >= 1,
        "the first read stopped at its budget with a next"
    );

    // Retrying (attempts made, not settled) is not pending.
    assert_eq!(seqs(&s.get("/api/events?state=retrying").await), vec![4]);
    let pending = s.get("/api/events?state=pending&before=6").await;
    assert_eq!(seqs(&pending), vec![5, 3, 2, 1]);

    for bad in ["where=data.x", "where=data.x%20%3E%203", "header=%3Av"] {
        let r = s.req("GET", &format!("/api/events?{bad}"), &[]).await;
        assert_eq!(r.status, 400, "{bad}");
        let msg = String::from_utf8_lossy(&r.body).to_string();
        assert!(msg.contains("expected"), "{bad}: {msg}");
    }
}

#[tokio::test]
async fn detail_masks_secrets_unless_revealed() {
    let dir = tempfile::tempdir().unwrap();
    let _j = journal(dir.path());
    let s = Served::start(Config::new(dir.path()), None).await;
    let d = s.get("/api/events/100").await;
    assert_eq!(d["method"], "POST");
    assert_eq!(d["path"], "/hook?x=1");
    assert_eq!(d["state"], "failed");
    assert_eq!(
        d["headers"],
        serde_json::json!([
            ["content-type", "application/json"],
            ["x-meeting-baas-api-key", "••••"],
            ["Authorization", "••••"],
            ["x-trace", "t1"]
        ])
    );
    assert!(d["body"]
        .as_str()
        .unwrap()
        .contains("\"bot.status_change\""));
    assert!(d["body_base64"]
        .as_str()
        .unwrap()
        .starts_with("eyJldmVudCI6"));
    let a = &d["attempts"][0];
    assert_eq!(
        (&a["attempt"], &a["status"], &a["duration_ms"], &a["replay"]),
        (
            &Value::from(1),
            &Value::from(400),
            &Value::from(2.5),
            &Value::from(false)
        )
    );
    assert_eq!(a["response_body_base64"], "bm9wZQ==");
    assert_eq!(a["truncated"], false);
    assert_eq!(
        a["response_headers"],
        serde_json::json!([["content-type", "text/plain"], ["set-cookie", "••••"]])
    );
    let shown = s.get("/api/events/100?reveal=1").await;
    assert_eq!(shown["attempts"][0]["response_headers"][1][1], "sid=1");
    assert_eq!(shown["headers"][1][1], "mb-key-123");
    assert_eq!(shown["headers"][2][1], "Bearer abc");
    assert_eq!(s.req("GET", "/api/events/9999", &[]).await.status, 404);
}

#[tokio::test]
async fn foreign_hosts_origins_and_content_types_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _j = journal(dir.path());
    let s = Served::start(Config::new(dir.path()), None).await;
    let port = s.addr.port().to_string();
    let r = s
        .req("GET", "/api/events", &[("host", "evil.example")])
        .await;
    assert_eq!(r.status, 403, "DNS rebinding");
    let r = s.req("GET", "/", &[("host", "evil.example:80")]).await;
    assert_eq!(r.status, 403);
    let local = format!("localhost:{port}");
    assert_eq!(s.req("GET", "/", &[("host", &local)]).await.status, 200);
    let json = ("content-type", "application/json");
    let r = s
        .req(
            "POST",
            "/api/events/100/retry",
            &[json, ("origin", "http://evil.example")],
        )
        .await;
    assert_eq!(r.status, 403, "foreign origin");
    let r = s
        .req(
            "POST",
            "/api/events/100/skip",
            &[("content-type", "text/plain")],
        )
        .await;
    assert_eq!(r.status, 403, "a form post");
    let r = s.req("POST", "/api/events/100/skip", &[]).await;
    assert_eq!(r.status, 403, "no content type");
    // Same origin, JSON: reaches the control step, and no daemon runs here.
    let origin = format!("http://127.0.0.1:{port}");
    let r = s
        .req(
            "POST",
            "/api/events/100/retry",
            &[json, ("origin", &origin)],
        )
        .await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("no running `meethook listen` uses"),
        "{v}"
    );
    assert_eq!(s.req("GET", "/api/events/100/retry", &[]).await.status, 405);
}

#[tokio::test]
async fn a_token_is_asked_for_then_kept_in_a_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let _j = journal(dir.path());
    let mut cfg = Config::new(dir.path());
    cfg.token = Some("t0k".into());
    let s = Served::start(cfg, None).await;
    assert_eq!(s.req("GET", "/api/health", &[]).await.status, 401);
    let r = s
        .req("GET", "/api/health", &[("authorization", "Bearer t0k")])
        .await;
    assert_eq!(r.status, 200);
    let resp = client()
        .request(
            http::Request::get(s.url("/?token=t0k"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("meethook_inspect=t0k;"), "{cookie}");
    let kv = cookie.split(';').next().unwrap();
    assert_eq!(
        s.req("GET", "/api/health", &[("cookie", kv)]).await.status,
        200
    );
}

/// Reads a stream until an `event: event` whose data `pred` accepts.
async fn next_item(
    body: &mut hyper::body::Incoming,
    buf: &mut String,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    tokio::time::timeout(PATIENCE, async {
        loop {
            while let Some(end) = buf.find("\n\n") {
                let msg: String = buf.drain(..end + 2).collect();
                if let Some(data) = msg.strip_prefix("event: event\ndata: ").map(str::trim_end) {
                    let v: Value = serde_json::from_str(data).unwrap();
                    if pred(&v) {
                        return v;
                    }
                }
            }
            let frame = body.frame().await.expect("the stream goes on").unwrap();
            if let Ok(data) = frame.into_data() {
                buf.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    })
    .await
    .expect("the stream sent the item")
}

#[tokio::test]
async fn the_stream_sends_new_events_and_their_state_changes() {
    let setup = Setup::start().await;
    let live = Live::new(&setup.channel);
    let log = Arc::new(EventLog::default());
    let observers = Observers::new(vec![live.observer(), log.clone() as Arc<dyn Observer>]);
    let stop = CancellationToken::new();
    let daemon = tokio::spawn(meethook_daemon::run(
        setup.config("/hook"),
        observers,
        stop.clone(),
    ));
    log.wait_for("connected", |e| matches!(e, DaemonEvent::Connected { .. }))
        .await;
    let mut cfg = Config::new(setup.dir.path());
    cfg.channel = Some(setup.channel.clone());
    let s = Served::start(cfg, Some(live)).await;
    let resp = client()
        .request(
            http::Request::get(s.url("/api/stream"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut buf = String::new();
    // The hello first: subscribed before the event is posted.
    tokio::time::timeout(PATIENCE, async {
        while !buf.contains("event: hello") {
            let f = body.frame().await.unwrap().unwrap();
            buf.push_str(std::str::from_utf8(&f.into_data().unwrap()).unwrap());
        }
    })
    .await
    .unwrap();
    buf.clear();
    let hook = setup.relay.hook(&setup.channel);
    let posted = post(
        &hook,
        &[],
        r#"{"event":"bot.status_change","data":{"bot_id":"8d2f4c1a-1111","status":{"code":"joining_call"}}}"#,
    )
    .await;
    assert_eq!(posted.seq(), Some(1));
    let first = next_item(&mut body, &mut buf, |v| v["seq"] == 1).await;
    assert_eq!(first["event"], "bot.status_change");
    assert_eq!(first["summary"], "bot 8d2f4c1a… joining_call");
    assert_eq!(first["channel"], setup.channel.as_str());
    let done = next_item(&mut body, &mut buf, |v| {
        v["seq"] == 1 && v["state"] == "delivered"
    })
    .await;
    assert_eq!(
        (&done["attempts"], &done["last_status"]),
        (&Value::from(1), &Value::from(200))
    );
    assert!(done["latency_ms"].as_f64().is_some());
    stop.cancel();
    daemon.await.unwrap().unwrap();
}

#[tokio::test]
async fn attempts_keep_the_answer_cut_at_64_kib_and_the_next_attempt_time() {
    use base64::Engine;
    let setup = Setup::start().await;
    let live = Live::new(&setup.channel);
    let log = Arc::new(EventLog::default());
    let observers = Observers::new(vec![live.observer(), log.clone() as Arc<dyn Observer>]);
    let stop = CancellationToken::new();
    let mut dcfg = setup.config("/hook");
    // Far enough for the check below to see the next attempt still ahead.
    let hour = Duration::from_secs(3600);
    dcfg.backoff = meethook_daemon::forward::Backoff {
        initial: hour,
        max: hour,
    };
    let daemon = tokio::spawn(meethook_daemon::run(dcfg, observers, stop.clone()));
    log.wait_for("connected", |e| matches!(e, DaemonEvent::Connected { .. }))
        .await;
    let mut cfg = Config::new(setup.dir.path());
    cfg.channel = Some(setup.channel.clone());
    let s = Served::start(cfg, Some(live)).await;
    // The hub is subscribed once a stream client is.
    let _stream = subscribe(&s).await;
    let answer: Vec<u8> = (0..100_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    setup.handler.answer_seq(1, Some(503));
    setup.handler.answer_body(1, answer.clone());
    let posted = post(&setup.relay.hook(&setup.channel), &[], r#"{"event":"x"}"#).await;
    assert_eq!(posted.seq(), Some(1));
    log.wait_for(
        "a retry",
        |e| matches!(e, DaemonEvent::AttemptFinished { report, .. } if report.next_retry.is_some()),
    )
    .await;
    let d = loop {
        let d = s.get("/api/events/1").await;
        if d["attempts"].as_array().is_some_and(|a| !a.is_empty()) {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(d["state"], "retrying");
    let a = &d["attempts"][0];
    assert_eq!(
        (&a["status"], &a["truncated"]),
        (&Value::from(503), &Value::from(true))
    );
    let kept = base64::engine::general_purpose::STANDARD
        .decode(a["response_body_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(kept, answer[..64 << 10], "the first 64 KiB, as sent");
    let headers = a["response_headers"].as_array().unwrap();
    assert!(
        headers.contains(&serde_json::json!(["x-handler", "meethook-testkit"])),
        "{headers:?}"
    );
    let next = d["next_attempt_at"]
        .as_i64()
        .expect("the next attempt's time");
    // An hour ahead, less the 20 % jitter.
    assert!(next > a["at"].as_i64().unwrap() + 2_800_000, "{next}");
    let listed = s.get("/api/events?state=retrying").await;
    assert_eq!(listed["events"][0]["next_attempt_at"], next);
    assert!(seqs(&s.get("/api/events?state=pending").await).is_empty());
    stop.cancel();
    daemon.await.unwrap().unwrap();
}

/// Opens `/api/stream` and reads up to its hello.
async fn subscribe(s: &Served) -> (hyper::body::Incoming, String) {
    let resp = client()
        .request(
            http::Request::get(s.url("/api/stream"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = resp.into_body();
    let mut buf = String::new();
    tokio::time::timeout(PATIENCE, async {
        while !buf.contains("event: hello") {
            let f = body.frame().await.unwrap().unwrap();
            buf.push_str(std::str::from_utf8(&f.into_data().unwrap()).unwrap());
        }
    })
    .await
    .unwrap();
    buf.clear();
    (body, buf)
}

#[tokio::test]
async fn without_a_daemon_the_stream_follows_what_another_writer_journals() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    j.insert("c", &[webhook(1, "bot.status_change", "aaaa-1111")], 1)
        .unwrap();
    let mut cfg = Config::new(dir.path());
    cfg.control = false;
    let s = Served::start(cfg, None).await;
    let (mut body, mut buf) = subscribe(&s).await;
    // Written by another journal handle, as a `listen` in another process would.
    j.insert("c", &[webhook(2, "complete", "bbbb-2222")], 1)
        .unwrap();
    let new = next_item(&mut body, &mut buf, |v| v["seq"] == 2).await;
    assert_eq!(
        (&new["event"], &new["state"]),
        (&Value::from("complete"), &Value::from("pending"))
    );
    j.record("c", 1, &attempt(1, 503), None).unwrap();
    let retrying = next_item(&mut body, &mut buf, |v| v["seq"] == 1).await;
    assert_eq!(
        (&retrying["state"], &retrying["attempts"]),
        (&Value::from("retrying"), &Value::from(1))
    );
    j.record("c", 1, &attempt(2, 200), Some(State::Delivered))
        .unwrap();
    let done = next_item(&mut body, &mut buf, |v| v["seq"] == 1).await;
    assert_eq!(
        (&done["state"], &done["last_status"]),
        (&Value::from("delivered"), &Value::from(200))
    );
}

#[tokio::test]
async fn pin_unpin_and_export_of_the_current_filter() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let _j = journal(dir.path());
    let s = Served::start(Config::new(dir.path()), None).await;
    let origin = format!("http://{}", s.addr);
    let (st, v) = s.post_json("/api/events/5/pin", "{}").await;
    assert_eq!(
        (st, &v),
        (200, &serde_json::json!({"seq": 5, "pinned": true}))
    );
    assert_eq!(s.get("/api/events/5").await["pinned"], true);
    let pinned = Journal::open_read_only(dir.path())
        .unwrap()
        .get("c", 5)
        .unwrap()
        .unwrap();
    assert!(pinned.pinned, "in the journal: `events prune` keeps it");
    let (st, _) = s.post_json("/api/events/5/unpin", "{}").await;
    assert_eq!(st, 200);
    assert_eq!(s.get("/api/events/5").await["pinned"], false);
    assert_eq!(s.post_json("/api/events/99999/pin", "{}").await.0, 404);
    let foreign = s
        .req(
            "POST",
            "/api/events/5/pin",
            &[
                ("content-type", "application/json"),
                ("origin", "http://evil.example"),
            ],
        )
        .await;
    assert_eq!(foreign.status, 403, "{origin}");

    let r = s
        .req("GET", "/api/export?event=complete&state=failed", &[])
        .await;
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        got,
        (300..=3000).step_by(300).collect::<Vec<u64>>(),
        "oldest first, every one"
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    let header = |l: &Value, i: usize| {
        String::from_utf8(b64.decode(l["headers"][i][1].as_str().unwrap()).unwrap()).unwrap()
    };
    assert_eq!(header(&lines[0], 1), "••••", "the API key masked");
    assert_eq!(header(&lines[0], 3), "t1");
    assert_eq!(lines[0]["event"], "complete");
    let shown = s
        .req(
            "GET",
            "/api/export?event=complete&state=failed&reveal=1",
            &[],
        )
        .await;
    let first: Value =
        serde_json::from_str(String::from_utf8_lossy(&shown.body).lines().next().unwrap()).unwrap();
    assert_eq!(header(&first, 1), "mb-key-123");
    let all = s.req("GET", "/api/export", &[]).await;
    assert_eq!(
        String::from_utf8_lossy(&all.body).lines().count(),
        3000,
        "no paging"
    );
}

#[tokio::test]
async fn retry_and_skip_reach_the_running_daemon() {
    let setup = Setup::start().await;
    let daemon = setup.daemon("/hook");
    setup.handler.answer_seq(1, Some(503));
    post(&setup.relay.hook(&setup.channel), &[], r#"{"event":"x"}"#).await;
    daemon
        .events
        .wait_for("a retry", |e| {
            matches!(e, DaemonEvent::AttemptFinished { report, .. } if report.next_retry.is_some())
        })
        .await;
    let mut cfg = Config::new(setup.dir.path());
    cfg.channel = Some(setup.channel.clone());
    let s = Served::start(cfg, None).await;
    let json = ("content-type", "application/json");
    let r = s.req("POST", "/api/events/1/retry", &[json]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = s.req("POST", "/api/events/1/skip", &[json]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    daemon
        .events
        .wait_for(
            "the skip",
            |e| matches!(e, DaemonEvent::Skipped { event, .. } if event.seq == 1),
        )
        .await;
    daemon.stop().await.unwrap();
    // No daemon now: 409 with the cli's words.
    let r = s.req("POST", "/api/events/1/retry", &[json]).await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    let mut ro = Config::new(setup.dir.path());
    ro.control = false;
    let s = Served::start(ro, None).await;
    let r = s.req("POST", "/api/events/1/skip", &[json]).await;
    assert_eq!(r.status, 409);
    let page = s.get("/api/events").await;
    assert_eq!(page["events"][0]["state"], "skipped");
}

impl Served {
    /// A same-origin JSON POST with this body.
    async fn post_json(&self, path: &str, body: &str) -> (u16, Value) {
        let origin = format!("http://{}", self.addr);
        let r = request(
            &client(),
            "POST",
            &self.url(path),
            &[("content-type", "application/json"), ("origin", &origin)],
            body.to_string(),
        )
        .await
        .unwrap();
        let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        (r.status, v)
    }
}

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[tokio::test]
async fn replay_sends_stored_edited_and_re_signed_events() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let handler = meethook_testkit::TestHandler::start().await;
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    let mut signed = webhook(1, "bot.status_change", "aaaa-1111");
    signed.headers.push(Header::new("svix-id", "msg_1"));
    signed.headers.push(Header::new("svix-timestamp", "100"));
    signed.headers.push(Header::new("svix-signature", "v1,old"));
    j.insert("c", &[signed.clone(), webhook(2, "complete", "bbbb")], 1)
        .unwrap();
    j.set_forward_to("c", &handler.url("/hook")).unwrap();
    let s = Served::start(Config::new(dir.path()), None).await;

    // As stored: the same bytes, marked as a replay, recorded as a replay attempt.
    let (st, v) = s.post_json("/api/events/1/replay", "{}").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["replay"]["seq"], 1);
    assert_eq!(v["replay"]["delivered"], true);
    assert_eq!(v["replay"]["status"], 200);
    assert_eq!(v["replay"]["error"], Value::Null);
    assert_eq!(v["replay"]["recorded"], true);
    assert!(v.get("warning").is_none(), "{v}");
    let got = handler.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, signed.body);
    assert_eq!(got[0].header("meethook-replay").as_deref(), Some("true"));
    assert_eq!(got[0].header("svix-signature").as_deref(), Some("v1,old"));
    let d = s.get("/api/events/1").await;
    assert_eq!(d["attempts"][0]["replay"], true);
    assert_eq!(d["state"], "pending", "a replay never changes the state");

    // Re-signing needs the secret.
    let (st, v) = s
        .post_json("/api/events/1/replay", r#"{"resign":true}"#)
        .await;
    assert_eq!(st, 400);
    assert!(
        v["error"].as_str().unwrap().contains("--signing-secret"),
        "{v}"
    );

    // An edited body with the old signature: sent, with a warning; a masked header value
    // stands for the stored one.
    let body = r#"{"event":"bot.status_change","data":{"bot_id":"x"}}"#;
    let req = serde_json::json!({
        "body_base64": b64.encode(body),
        "headers": [["content-type", "application/json"], ["x-meeting-baas-api-key", "••••"],
                    ["x-extra", "yes"], ["svix-id", "msg_1"], ["svix-timestamp", "100"],
                    ["svix-signature", "••••"]],
    });
    let (st, v) = s.post_json("/api/events/1/replay", &req.to_string()).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["warning"],
        "the edited body no longer matches its signature; replay with resign"
    );
    let got = handler.received();
    let last = got.last().unwrap();
    assert_eq!(last.body, body.as_bytes());
    assert_eq!(
        last.header("x-meeting-baas-api-key").as_deref(),
        Some("mb-key-123")
    );
    assert_eq!(last.header("x-extra").as_deref(), Some("yes"));
    assert_eq!(
        last.header("x-trace"),
        None,
        "the headers given replace the stored ones"
    );

    // With the secret: a fresh signature over the edited body, no warning.
    let mut cfg = Config::new(dir.path());
    cfg.signing_secret = meethook_proto::signature::SigningKey::from_secret(SECRET);
    let s2 = Served::start(cfg, None).await;
    let req = serde_json::json!({"resign": true, "body_base64": b64.encode(body)});
    let (st, v) = s2.post_json("/api/events/1/replay", &req.to_string()).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["replay"]["resigned"], true);
    assert!(v.get("warning").is_none(), "{v}");
    let got = handler.received();
    let last = got.last().unwrap();
    let ts = last.header("svix-timestamp").unwrap();
    assert_ne!(ts, "100");
    let key = meethook_proto::signature::SigningKey::from_secret(SECRET).unwrap();
    assert!(key.verify(
        "msg_1",
        &ts,
        body.as_bytes(),
        &last.header("svix-signature").unwrap()
    ));

    // A handler that refuses it, `to` elsewhere, unknown seqs and bad requests.
    handler.script(&[500]);
    let (st, v) = s.post_json("/api/events/2/replay", "{}").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (&v["replay"]["delivered"], &v["replay"]["status"]),
        (&Value::from(false), &Value::from(500))
    );
    let to = handler.url("/other");
    let (st, v) = s
        .post_json(
            "/api/events/2/replay",
            &serde_json::json!({"to": to}).to_string(),
        )
        .await;
    assert_eq!((st, &v["replay"]["to"]), (200, &Value::from(to)));
    assert!(handler
        .received()
        .last()
        .unwrap()
        .path
        .starts_with("/other"));
    let (st, _) = s.post_json("/api/events/9/replay", "{}").await;
    assert_eq!(st, 404);
    let (st, _) = s
        .post_json("/api/events/2/replay", r#"{"body_base64":"%%"}"#)
        .await;
    assert_eq!(st, 400);
    let (st, _) = s
        .post_json("/api/events/2/replay", r#"{"to":"ftp://x"}"#)
        .await;
    assert_eq!(st, 400);
    let (st, _) = s.post_json("/api/events/2/replay", "[").await;
    assert_eq!(st, 400);
    let r = s.req("POST", "/api/events/2/replay", &[]).await;
    assert_eq!(r.status, 403, "JSON content type only");
    let attempts = j.attempts("c", 2).unwrap();
    assert_eq!(attempts.len(), 2);
    assert!(attempts.iter().all(|a| a.replay));
}

fn raw(seq: u64, at: i64, body: &str, id: Option<&str>) -> Event {
    let mut headers = vec![Header::new("content-type", "application/json")];
    if let Some(id) = id {
        headers.push(Header::new("svix-id", id.to_string()));
    }
    Event {
        seq,
        received_at_ms: at,
        method: "POST".into(),
        path: "/".into(),
        headers,
        body: Bytes::from(body.to_string()),
    }
}

fn status(bot: &str, code: &str) -> String {
    format!(
        r#"{{"event":"bot.status_change","data":{{"bot_id":"{bot}","event_id":null,"status":{{"code":"{code}"}}}},"extra":null}}"#
    )
}

#[tokio::test]
async fn bots_and_a_bot_timeline() {
    const BOT: &str = "8d2f4c1a-5b6e-4f7a-9c3d-2e1f0a9b8c7d";
    let t0 = 1_749_636_000_000i64;
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    let evs = vec![
        raw(1, t0, &status(BOT, "joining_call"), Some("m1")),
        raw(2, t0 + 5_000, &status(BOT, "in_call_recording"), Some("m2")),
        raw(3, t0 + 6_000, &status(BOT, "in_call_recording"), Some("m2")),
        raw(
            4,
            t0 + 7_000,
            include_str!("../../proto/fixtures/events/v2-chat-message.json"),
            Some("m3"),
        ),
        raw(5, t0 + 65_000, &status("zzzz-9", "joining_call"), None),
        raw(6, t0 + 65_000, &status(BOT, "call_ended"), Some("m4")),
        raw(
            7,
            t0 + 70_000,
            include_str!("../../proto/fixtures/events/v2-bot-completed.json"),
            Some("m5"),
        ),
        raw(
            8,
            t0 + 80_000,
            r#"{"event":"failed","data":{"bot_id":"zzzz-9","error":"BotRemoved"}}"#,
            None,
        ),
    ];
    j.insert("c", &evs, 1).unwrap();
    let s = Served::start(Config::new(dir.path()), None).await;
    let list = s.get("/api/bots").await;
    let bots = list["bots"].as_array().unwrap();
    assert_eq!(bots.len(), 2, "{list}");
    assert_eq!(bots[0]["bot_id"], "zzzz-9");
    assert_eq!(bots[0]["state"], "failed");
    assert_eq!(bots[0]["events"], 2);
    let b = &bots[1];
    assert_eq!(b["bot_id"], BOT);
    assert_eq!(
        (&b["first_seq"], &b["last_seq"], &b["events"]),
        (&Value::from(1), &Value::from(7), &Value::from(6))
    );
    assert_eq!(b["state"], "completed");
    assert_eq!(b["last_event"], "bot.completed");
    assert_eq!(b["last_code"], "call_ended");
    assert_eq!(
        (&b["first_at"], &b["last_at"]),
        (&Value::from(t0), &Value::from(t0 + 70_000))
    );

    // By a prefix of its id.
    let t = s.get("/api/bots/8d2f4c1a").await;
    assert_eq!(t["bot_id"], BOT);
    assert_eq!(t["state"], "completed");
    let st = t["statuses"].as_array().unwrap();
    let codes: Vec<&str> = st.iter().map(|v| v["code"].as_str().unwrap()).collect();
    assert_eq!(
        codes,
        [
            "joining_call",
            "in_call_recording",
            "in_call_recording",
            "call_ended",
            "bot.completed"
        ]
    );
    assert_eq!(st[0]["duration_ms"], 5_000);
    assert_eq!(
        st[1]["duration_ms"], 60_000,
        "the redelivery does not end it"
    );
    assert_eq!(st[2]["retry"], true);
    assert_eq!(st[2]["duration_ms"], Value::Null);
    assert_eq!(st[3]["duration_ms"], 5_000);
    assert_eq!(st[4]["final"], true);
    assert_eq!(st[4]["duration_ms"], Value::Null);
    assert_eq!(st[1]["state"], "in_call");
    assert_eq!(t["chat"][0]["text"], "Can the bot share the notes after?");
    assert_eq!(t["chat"][0]["sender"], "Maya Chen");
    let arts = t["artifacts"].as_array().unwrap();
    // Every link of the final event: video, audio, diarization, transcription.
    assert_eq!(arts.len(), 4);
    assert_eq!(arts[0]["kind"], "video");
    assert_eq!(arts[0]["expires_at"], 1_749_652_270_000i64);
    assert_eq!(arts[0]["expired"], true);
    assert_eq!(t["events"].as_array().unwrap().len(), 6);
    assert_eq!(s.req("GET", "/api/bots/nope", &[]).await.status, 404);
    assert_eq!(s.req("POST", "/api/bots", &[]).await.status, 403);
}

#[tokio::test]
async fn delivery_pauses_and_resumes() {
    let setup = Setup::start().await;
    let daemon = setup.daemon("/hook");
    let hook = setup.relay.hook(&setup.channel);
    post(&hook, &[], r#"{"event":"x"}"#).await;
    setup.handler.wait_delivered(1).await;
    let mut cfg = Config::new(setup.dir.path());
    cfg.channel = Some(setup.channel.clone());
    let s = Served::start(cfg, None).await;
    let (st, v) = s.post_json("/api/delivery/pause", "{}").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (&v["ok"], &v["paused"]),
        (&Value::from(true), &Value::from(true))
    );
    assert!(v["message"].as_str().unwrap().starts_with("paused"), "{v}");
    post(&hook, &[], r#"{"event":"y"}"#).await;
    post(&hook, &[], r#"{"event":"z"}"#).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        setup.handler.received().len(),
        1,
        "nothing taken up while paused"
    );
    let status = s.get("/api/delivery").await;
    assert_eq!(status["paused"], true, "{status}");
    assert!(
        status["message"].as_str().unwrap().starts_with("paused"),
        "{status}"
    );
    let (st, v) = s.post_json("/api/delivery/resume", "{}").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["paused"], false);
    let got = setup.handler.wait_delivered(3).await;
    assert_eq!(
        got.iter().map(|r| r.seq()).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(s.get("/api/delivery").await["paused"], false);
    daemon.stop().await.unwrap();
    let (st, v) = s.post_json("/api/delivery/pause", "{}").await;
    assert_eq!(st, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("no running"), "{v}");
}

#[tokio::test]
async fn the_page_has_the_replay_diff_and_meeting_tools() {
    let dir = tempfile::tempdir().unwrap();
    let s = Served::start(Config::new(dir.path()), None).await;
    let r = s.req("GET", "/", &[]).await;
    assert_eq!(r.status, 200);
    let page = String::from_utf8(r.body.to_vec()).unwrap();
    for id in [
        "id=\"rows\"",
        "id=\"detail\"",
        "id=\"pause\"",
        "id:\"replay\"",
        "id:\"replay-resigned\"",
        "id:\"edit-replay\"",
        "id:\"copy-curl\"",
        "id:\"copy-body\"",
        "id:\"diff\"",
        "id:\"timeline\"",
        "/api/bots/",
        "--data-binary @-",
    ] {
        assert!(page.contains(id), "{id}");
    }
}

#[tokio::test]
async fn a_pause_lets_the_event_waiting_to_retry_finish() {
    let setup = Setup::start().await;
    let daemon = setup.daemon("/hook");
    setup.handler.script(&[503]);
    let hook = setup.relay.hook(&setup.channel);
    post(&hook, &[], r#"{"event":"x"}"#).await;
    daemon
        .events
        .wait_for("a retry", |e| {
            matches!(e, DaemonEvent::AttemptFinished { report, .. } if report.next_retry.is_some())
        })
        .await;
    let mut cfg = Config::new(setup.dir.path());
    cfg.channel = Some(setup.channel.clone());
    let s = Served::start(cfg, None).await;
    let (st, v) = s.post_json("/api/delivery/pause", "{}").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (&v["paused"], &v["blocked"]),
        (&Value::from(true), &Value::from(1))
    );
    assert!(v["message"].as_str().unwrap().contains("#1 goes on"), "{v}");
    post(&hook, &[], r#"{"event":"y"}"#).await;
    let got = setup.handler.wait_delivered(1).await;
    assert_eq!(got.last().unwrap().seq(), 1, "the retry still goes");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        setup.handler.received().iter().all(|r| r.seq() == 1),
        "#2 waits for the resume"
    );
    let (st, _) = s.post_json("/api/delivery/resume", "{}").await;
    assert_eq!(st, 200);
    setup.handler.wait_delivered(2).await;
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn replay_with_local_artifacts_points_at_the_saved_copies_served_here() {
    let handler = meethook_testkit::TestHandler::start().await;
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    let body = r#"{"event":"bot.completed","data":{"bot_id":"b","event_id":null,"video":"https://s3.example/v.mp4?X-Amz-Expires=14400","audio":"https://s3.example/a.flac"},"extra":null}"#;
    j.insert("c", &[raw(1, 1_700_000_000_000, body, Some("msg_1"))], 1)
        .unwrap();
    j.set_forward_to("c", &handler.url("/hook")).unwrap();
    let video = dir.path().join("b-1-video.mp4");
    std::fs::write(&video, b"the saved video bytes").unwrap();
    j.recording_started("c", 1, "video", video.to_str().unwrap(), 0)
        .unwrap();
    j.recording_finished("c", 1, "video", 21, None, Some("abc123"), 0)
        .unwrap();
    let s = Served::start(Config::new(dir.path()), None).await;

    let (st, v) = s
        .post_json("/api/events/1/replay", r#"{"local_artifacts":true}"#)
        .await;
    assert_eq!(st, 200, "{v}");
    let got = handler.received();
    let local = s.url("/artifacts/1/video");
    // Only the saved link changed; the audio, never saved, keeps its original link.
    assert_eq!(
        std::str::from_utf8(&got[0].body).unwrap(),
        body.replace("https://s3.example/v.mp4?X-Amz-Expires=14400", &local)
    );
    let r = request(&client(), "GET", &local, &[], "").await.unwrap();
    assert_eq!(
        (r.status, &r.body[..]),
        (200, &b"the saved video bytes"[..])
    );
    let r = s.req("GET", "/artifacts/1/audio", &[]).await;
    assert_eq!(r.status, 404);
    assert!(String::from_utf8_lossy(&r.body).contains("--save-recordings"));
    // Without the option, the stored bytes go as they are.
    let (st, _) = s.post_json("/api/events/1/replay", "{}").await;
    assert_eq!(st, 200);
    assert_eq!(
        std::str::from_utf8(&handler.received()[1].body).unwrap(),
        body
    );
}
