//! The core promise, end to end in-process: order, no loss, byte-identical bodies, headers.

use std::collections::HashSet;

use bytes::Bytes;
use meethook_testkit::{
    client, post, request, tempdir, Setup, TestDaemon, TestHandler, TestRelay, PATIENCE,
};

fn body_for(sender: usize, i: usize) -> String {
    format!(r#"{{"event":"bot.status_change","data":{{"bot_id":"s{sender}","n":{i}}}}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_are_delivered_in_seq_order_byte_identical() {
    let s = Setup::start().await;
    let daemon = s.daemon("/hook");
    let (relay, ch, _, handler, _dir) = s.into_parts();

    let mut tasks = Vec::new();
    for s in 0..8 {
        let url = format!("{}/meet/{s}?q=1", relay.hook(&ch));
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut seqs = Vec::new();
            for i in 0..50 {
                let r = request(
                    &c,
                    "POST",
                    &url,
                    &[
                        ("content-type", "application/json"),
                        ("x-dup", "one"),
                        ("x-dup", "two"),
                    ],
                    body_for(s, i),
                )
                .await
                .unwrap();
                assert_eq!(r.status, 200, "{:?}", r.body);
                seqs.push((r.seq().unwrap(), s, i));
            }
            seqs
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    let mut seqs: Vec<u64> = acked.iter().map(|a| a.0).collect();
    seqs.sort();
    assert_eq!(
        seqs,
        (1..=400).collect::<Vec<_>>(),
        "seqs are gap-free 1..400"
    );

    let got = handler.wait_delivered(400).await;
    assert_eq!(got.len(), 400, "no extra deliveries");
    for (k, r) in got.iter().enumerate() {
        assert_eq!(r.seq(), k as u64 + 1, "handler sees seq order");
        let (_, s, i) = acked.iter().find(|a| a.0 == r.seq()).unwrap();
        assert_eq!(r.body, Bytes::from(body_for(*s, *i)), "body byte-identical");
        assert_eq!(
            r.path,
            format!("/hook/meet/{s}?q=1"),
            "subpath and query appended"
        );
        assert_eq!(
            r.header_all("x-dup"),
            vec!["one", "two"],
            "repeated headers kept in order"
        );
        assert_eq!(r.header("meethook-channel").as_deref(), Some(ch.as_str()));
        assert_eq!(r.header("meethook-attempt").as_deref(), Some("1"));
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/json")
        );
        assert_eq!(r.method, "POST");
    }
    daemon.stop().await.unwrap();
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_posted_while_offline_arrive_in_order_once_listening() {
    let s = Setup::start().await;
    let cfg = s.config("/");
    let (relay, ch, _, handler, _dir) = s.into_parts();
    for i in 0..30 {
        let r = post(&relay.hook(&ch), &[], format!("offline {i}")).await;
        assert_eq!(r.seq(), Some(i + 1));
    }
    let daemon = TestDaemon::start(cfg.clone());
    let got = handler.wait_delivered(30).await;
    let bodies: Vec<_> = got.iter().map(|r| r.body.clone()).collect();
    let want: Vec<_> = (0..30)
        .map(|i| Bytes::from(format!("offline {i}")))
        .collect();
    assert_eq!(bodies, want);
    daemon.stop().await.unwrap();

    // A restarted daemon resumes after what it delivered: nothing twice, the new one arrives.
    post(&relay.hook(&ch), &[], "after restart").await;
    let daemon = TestDaemon::start(cfg);
    let got = handler.wait_delivered(31).await;
    assert_eq!(got.len(), 31);
    assert_eq!(got[30].body, Bytes::from("after restart"));
    assert_eq!(got[30].seq(), 31);
    daemon.stop().await.unwrap();
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_errors_then_closed_port_lose_nothing_and_keep_order() {
    let s = Setup::start().await;
    s.handler.script(&[503, 503, 429, 500, 503]);
    let daemon = s.daemon("/h");
    let (relay, ch, _, mut handler, _dir) = s.into_parts();
    for i in 0..10 {
        post(&relay.hook(&ch), &[], format!("e{i}")).await;
    }
    // First event retried through the scripted errors, then the rest flow.
    handler.wait_delivered(10).await;
    handler.stop();
    for i in 10..20 {
        post(&relay.hook(&ch), &[], format!("e{i}")).await;
    }
    // Port closed for a while: the daemon keeps retrying event 11.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    handler.restart().await;
    let got = handler.wait_delivered(20).await;
    let delivered: Vec<_> = got
        .iter()
        .filter(|r| r.answered == 200)
        .map(|r| (r.seq(), r.body.clone()))
        .collect();
    let want: Vec<_> = (0..20u64)
        .map(|i| (i + 1, Bytes::from(format!("e{i}"))))
        .collect();
    assert_eq!(delivered, want, "each event delivered once, in order");
    // Attempts are numbered: the first event needed six.
    let first: Vec<_> = got.iter().filter(|r| r.seq() == 1).collect();
    assert_eq!(first.len(), 6);
    assert_eq!(first[5].header("meethook-attempt").as_deref(), Some("6"));
    daemon.stop().await.unwrap();
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_retryable_answers_are_recorded_and_the_next_event_goes() {
    let s = Setup::start().await;
    s.handler.script(&[400]);
    let daemon = s.daemon("/");
    let (relay, ch, _, handler, _dir) = s.into_parts();
    post(&relay.hook(&ch), &[], "bad").await;
    post(&relay.hook(&ch), &[], "good").await;
    let got = handler.wait_until("two requests", |l| l.len() >= 2).await;
    assert_eq!(got[0].answered, 400);
    assert_eq!(got[1].body, Bytes::from("good"));
    assert_eq!(got.len(), 2, "a 400 is not retried");
    daemon.stop().await.unwrap();
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_listeners_each_get_every_event() {
    let relay = TestRelay::start().await;
    let (ch, token) = relay.channel(None).await;
    let (h1, h2) = (TestHandler::start().await, TestHandler::start().await);
    let (d1, d2) = (tempdir(), tempdir());
    let a = TestDaemon::start(TestDaemon::config(
        &relay.url(),
        &ch,
        &token,
        &h1.url("/"),
        d1.path(),
    ));
    let b = TestDaemon::start(TestDaemon::config(
        &relay.url(),
        &ch,
        &token,
        &h2.url("/"),
        d2.path(),
    ));
    for i in 0..25 {
        post(&relay.hook(&ch), &[], format!("{i}")).await;
    }
    for h in [&h1, &h2] {
        let got = h.wait_delivered(25).await;
        let seqs: Vec<u64> = got.iter().map(|r| r.seq()).collect();
        assert_eq!(seqs, (1..=25).collect::<Vec<_>>());
    }
    // Both streams are caught up: a big body goes to each as a preload (sent in two halves,
    // so both streams have taken up the upload before it is stored).
    let big: Vec<u8> = (0..(2 << 20) + 3).map(|i| (i % 249) as u8).collect();
    let upload = start_upload(&relay, &ch, &big).await;
    // A fixed wait, on purpose: the upload stays half-sent for a while.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    finish_upload(upload, &big).await;
    for h in [&h1, &h2] {
        let got = h.wait_delivered(26).await;
        assert!(got[25].body == big, "big body byte-identical");
    }
    assert_eq!(
        relay
            .metrics
            .events_preloaded
            .load(std::sync::atomic::Ordering::Relaxed),
        2,
        "one preload per listener"
    );
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_arrive_byte_identical_and_oversized_get_413() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_test_writer()
        .try_init();
    let s = Setup::start_with(|c| c.max_body = 8 << 20).await;
    let daemon = s.daemon("/");
    let (relay, ch, _, handler, _dir) = s.into_parts();
    // 5 MiB of every byte value, not valid UTF-8.
    let big: Vec<u8> = (0..5 * 1024 * 1024).map(|i| (i * 7 % 256) as u8).collect();
    let r = post(
        &relay.hook(&ch),
        &[("content-type", "application/octet-stream")],
        big.clone(),
    )
    .await;
    assert_eq!(r.status, 200);
    // One byte over: refused from the declared length. (The relay answers before reading the
    // body and closes, so a client still uploading may see a reset instead; send headers only.)
    let mut s = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    let head = format!(
        "POST /hooks/{ch} HTTP/1.1\r\nhost: a\r\ncontent-length: {}\r\n\r\n",
        (8 << 20) + 1
    );
    tokio::io::AsyncWriteExt::write_all(&mut s, head.as_bytes())
        .await
        .unwrap();
    let mut answer = vec![0u8; 12];
    tokio::io::AsyncReadExt::read_exact(&mut s, &mut answer)
        .await
        .unwrap();
    assert_eq!(&answer, b"HTTP/1.1 413");
    // Without a declared length (chunked), the limit applies while reading.
    let chunked = format!(
        "POST /hooks/{ch} HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n",
        (8 << 20) + 1
    );
    let mut s = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut s, chunked.as_bytes())
        .await
        .unwrap();
    let filler = vec![b'x'; (8 << 20) + 1];
    let _ = tokio::io::AsyncWriteExt::write_all(&mut s, &filler).await;
    let mut answer = vec![0u8; 12];
    tokio::io::AsyncReadExt::read_exact(&mut s, &mut answer)
        .await
        .unwrap();
    if answer != b"HTTP/1.1 413" {
        let mut rest = Vec::new();
        let read = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut rest);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), read).await;
        answer.extend_from_slice(&rest);
        panic!("expected 413, got {}", String::from_utf8_lossy(&answer));
    }
    let got = handler.wait_delivered(1).await;
    assert_eq!(got[0].body.len(), big.len());
    assert!(got[0].body == big, "5 MiB body byte-identical");
    assert_eq!(
        relay
            .metrics
            .rejected_too_large
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    assert_eq!(
        relay.store.bounds(&ch).await.unwrap().head,
        1,
        "nothing oversized stored"
    );
    daemon.stop().await.unwrap();
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seqs_are_unique_per_channel() {
    let relay = TestRelay::start().await;
    let (a, _) = relay.channel(None).await;
    let (b, _) = relay.channel(None).await;
    let mut seen = HashSet::new();
    for i in 0..5 {
        assert_eq!(post(&relay.hook(&a), &[], "x").await.seq(), Some(i + 1));
        assert_eq!(post(&relay.hook(&b), &[], "y").await.seq(), Some(i + 1));
        seen.insert(i);
    }
    assert_eq!(seen.len(), 5);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_relay_is_refused_rather_than_skipping_events() {
    let s = Setup::start().await;
    let daemon = s.daemon("/");
    let (relay, ch, token, handler, dir) = s.into_parts();
    for _ in 0..3 {
        post(&relay.hook(&ch), &[], "x").await;
    }
    handler.wait_delivered(3).await;
    daemon.stop().await.unwrap();
    relay.stop().await;

    // Same channel id and token on a relay with an empty store.
    let fresh = TestRelay::start().await;
    fresh
        .store
        .create_channel(meethook_store::Channel {
            id: ch.clone(),
            token_hash: meethook_relay::auth::hash_token(&token),
            sender_secret: None,
            created_at_ms: 0,
            head: 0,
        })
        .await
        .unwrap();
    let cfg = TestDaemon::config(&fresh.url(), &ch, &token, &handler.url("/"), dir.path());
    let err = TestDaemon::start(cfg)
        .exited()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("fresh --data"), "{err}");
    fresh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_events_are_journaled_and_acked_but_not_delivered() {
    let s = Setup::start().await;
    let daemon = s.daemon_with("/", |cfg| {
        cfg.filter.events = vec!["complete".into(), "bot.comp*".into()];
        cfg.filter.bots = vec!["8d2f".into()];
    });
    let (relay, ch, _, handler, dir) = s.into_parts();
    let bodies = [
        r#"{"event":"bot.status_change","data":{"bot_id":"8d2f-1","status":{"code":"joining_call"}}}"#,
        r#"{"event":"complete","data":{"bot_id":"ffff-2","mp4":"","speakers":[]}}"#,
        r#"{"event":"complete","data":{"bot_id":"8d2f-1","mp4":"","speakers":[]}}"#,
        r#"{"event":"bot.completed","data":{"bot_id":"8d2f-1"},"extra":null}"#,
        "not json at all",
    ];
    for b in bodies {
        post(&relay.hook(&ch), &[], b).await;
    }
    let got = handler.wait_delivered(2).await;
    // The last event is only "seen" once everything before it settled; wait for its journal state.
    let journal = meethook_daemon::journal::Journal::open(dir.path()).unwrap();
    let settled = || journal.cursors(&ch).unwrap() == (5, 5);
    meethook_testkit::wait_until("5 settled events", PATIENCE, settled).await;
    assert_eq!(
        journal.cursors(&ch).unwrap(),
        (5, 5),
        "all journaled and settled"
    );
    let seqs: Vec<u64> = handler.received().iter().map(|r| r.seq()).collect();
    assert_eq!(seqs, vec![3, 4], "only wanted events delivered");
    assert_eq!(got[0].body, bodies[2].as_bytes());
    daemon.stop().await.unwrap();
    relay.stop().await;
}

/// Files in `dir/sub`.
fn files_in(dir: &std::path::Path, sub: &str) -> usize {
    std::fs::read_dir(dir.join(sub)).map_or(0, |d| d.count())
}

/// Waits until `dir/sub` holds `n` files.
async fn wait_files(dir: &std::path::Path, sub: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while files_in(dir, sub) != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sub}: {} files, not {n}",
            files_in(dir, sub)
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_bodies_kept_as_files_arrive_in_order_byte_identical_across_restarts() {
    let rdir = tempdir();
    let relay = TestRelay::start_in(rdir.path(), |c| c.max_body = 4 << 20).await;
    let (ch, token) = relay.channel(None).await;
    let mut handler = TestHandler::start().await;
    // The first (big) event is refused twice: its retries run while its journal insert and
    // its summary's parse finish beside them.
    handler.script(&[503, 503]);
    let jdir = tempdir();
    let hook = handler.url("/");
    let cfg = |relay: &TestRelay| {
        let mut cfg = TestDaemon::config(&relay.url(), &ch, &token, &hook, jdir.path());
        cfg.backoff.initial = std::time::Duration::from_millis(10);
        cfg
    };
    let daemon = TestDaemon::start(cfg(&relay));
    // Bodies of 1 MiB and more are files on both sides; small ones stay in SQLite.
    let big_json = |n: usize| {
        let words = "word ".repeat((1 << 20) / 5 + n);
        Bytes::from(format!(
            r#"{{"event":"complete","data":{{"bot_id":"bot_{n}","transcript":"{words}"}}}}"#
        ))
    };
    let big_raw = |n: usize| {
        Bytes::from(
            (0..(3 << 20) + n)
                .map(|i| (i * 13 % 256) as u8)
                .collect::<Vec<u8>>(),
        )
    };
    let small = |n: usize| Bytes::from(body_for(0, n));
    let mut sent = vec![
        big_json(1),
        small(2),
        big_raw(3),
        small(4),
        big_json(5),
        small(6),
    ];
    for b in &sent {
        assert_eq!(post(&relay.hook(&ch), &[], b.clone()).await.status, 200);
    }
    handler.wait_delivered(6).await;
    assert_eq!(files_in(rdir.path(), "relay-bodies"), 3);
    // Delivery may finish before the journal's last file is written (early hand-off).
    wait_files(jdir.path(), "journal-bodies", 3).await;
    // Handler down: two more are journaled as pending, then everything restarts. The daemon
    // then reads the big one back from its journal file, the relay from its own.
    handler.stop();
    for b in [big_raw(7), small(8)] {
        assert_eq!(post(&relay.hook(&ch), &[], b.clone()).await.status, 200);
        sent.push(b);
    }
    wait_files(jdir.path(), "journal-bodies", 4).await;
    daemon.stop().await.unwrap();
    relay.stop().await;
    handler.restart().await;
    let relay = TestRelay::start_in(rdir.path(), |c| c.max_body = 4 << 20).await;
    let daemon = TestDaemon::start(cfg(&relay));
    let got = handler.wait_delivered(8).await;
    let delivered: Vec<_> = got.iter().filter(|r| r.answered == 200).collect();
    assert_eq!(
        delivered.iter().map(|r| r.seq()).collect::<Vec<_>>(),
        (1..=8).collect::<Vec<u64>>(),
        "in seq order, once each"
    );
    for (r, b) in delivered.iter().zip(&sent) {
        assert!(
            r.body == b,
            "seq {} byte-identical ({} bytes)",
            r.seq(),
            b.len()
        );
    }
    daemon.stop().await.unwrap();
    relay.stop().await;
}

/// Sender secret of the preload test's channel.
const SECRET: &str = "s3cret";

/// Starts a valid POST of `body` to channel `ch` (its key is ignored where the channel has no
/// sender secret) and sends its first half.
async fn start_upload(relay: &TestRelay, ch: &str, body: &[u8]) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    let head = format!(
        "POST /hooks/{ch} HTTP/1.1\r\nhost: a\r\nx-meeting-baas-api-key: {SECRET}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    tokio::io::AsyncWriteExt::write_all(&mut s, head.as_bytes())
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut s, &body[..body.len() / 2])
        .await
        .unwrap();
    s
}

/// Sends the second half of `body` on an upload from [`start_upload`]; asserts its 200.
async fn finish_upload(mut upload: tokio::net::TcpStream, body: &[u8]) {
    tokio::io::AsyncWriteExt::write_all(&mut upload, &body[body.len() / 2..])
        .await
        .unwrap();
    let mut answer = vec![0u8; 12];
    tokio::io::AsyncReadExt::read_exact(&mut upload, &mut answer)
        .await
        .unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_bodies_are_preloaded_while_they_arrive_and_delivered_only_once_stored() {
    use std::sync::atomic::Ordering::Relaxed;
    let relay = TestRelay::start_with(|c| c.max_body = 8 << 20).await;
    let s = Setup::on(relay, Some(SECRET)).await;
    let daemon = s.daemon("/");
    let (relay, ch, _, handler, _dir) = s.into_parts();
    let key = [("x-meeting-baas-api-key", SECRET)];
    // Once one event is through, the stream has read the hello (and takes preloads).
    assert_eq!(post(&relay.hook(&ch), &key, "first").await.status, 200);
    handler.wait_delivered(1).await;
    let big = |seed: usize| -> Vec<u8> {
        (0..(3 << 20) + seed)
            .map(|i| (i * 31 + seed) as u8)
            .collect()
    };

    // Half a body arrives; meanwhile a small event is stored and delivered, and the half
    // body is not: nothing reaches the handler before it is stored.
    let first = big(1);
    let upload = start_upload(&relay, &ch, &first).await;
    // A fixed wait, on purpose: the upload stays half-sent for a while.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(post(&relay.hook(&ch), &key, "small").await.status, 200);
    let got = handler.wait_delivered(2).await;
    assert_eq!(got[1].body, "small");
    // The rest: stored as seq 3, delivered whole from the preload.
    finish_upload(upload, &first).await;
    let got = handler.wait_delivered(3).await;
    assert!(got[2].body == first, "preloaded body byte-identical");
    assert_eq!(relay.metrics.events_preloaded.load(Relaxed), 1);

    // A whole body that fails its signature check was preloaded but is never stored, so
    // never delivered; nor is an upload cut off halfway. More uploads at once than a daemon
    // holds preloads for: the rest go whole, and the stream never breaks.
    let ts = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs())
    .to_string();
    let forged = post(
        &relay.hook(&ch),
        &[
            ("webhook-id", "msg_1"),
            ("webhook-timestamp", ts.as_str()),
            ("webhook-signature", "v1,bm90IGl0"),
        ],
        big(2),
    )
    .await;
    assert_eq!(forged.status, 401);
    let cut = start_upload(&relay, &ch, &big(3)).await;
    let crowd: Vec<_> = futures_util::future::join_all((10..20).map(|seed| {
        let (hook, body) = (relay.hook(&ch), big(seed));
        async move { post(&hook, &key, body).await.status }
    }))
    .await;
    assert!(crowd.iter().all(|&s| s == 200), "{crowd:?}");
    drop(cut);
    assert_eq!(post(&relay.hook(&ch), &key, "after").await.status, 200);
    let got = handler.wait_delivered(14).await;
    let mut bodies: Vec<&[u8]> = got[3..13].iter().map(|r| &r.body[..]).collect();
    let mut want: Vec<Vec<u8>> = (10..20).map(big).collect();
    bodies.sort();
    want.sort();
    assert!(
        bodies == want,
        "the concurrent bodies, each once, byte-identical"
    );
    assert_eq!(got[13].body, "after");
    // A fixed wait, on purpose: checks that nothing more arrives.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        handler.received().len(),
        14,
        "nothing refused or cut off was delivered"
    );
    // How many of the crowd went as preloads depends on timing; the first one did.
    assert!(relay.metrics.events_preloaded.load(Relaxed) >= 1);
    assert_eq!(relay.store.bounds(&ch).await.unwrap().head, 14);
    assert_eq!(
        relay.metrics.listener_streams.load(Relaxed),
        1,
        "the daemon never reconnected"
    );
    daemon.stop().await.unwrap();
    relay.stop().await;
}
