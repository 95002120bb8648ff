//! Simulated power loss: the relay's store and body files, and the daemon's journal, on
//! `PowerFs`, which throws away whatever was not fsync'd when the "power" is cut (every
//! process `kill -9`'d first). Unlike `kill -9` alone, this catches a missing fsync, an fsync
//! of the wrong file, or a new file whose directory entry was never synced. Each test prints
//! a `chaos:` line (`scripts/chaos` collects them); `MEETHOOK_POWER_CUTS` sets the number of
//! cuts (default 20).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use meethook_testkit::fault::{collect, jitter, senders_between, verify, wait_all, Acked, Report};
use meethook_testkit::powerfs::{Discarded, PgCluster, PowerFs};
use meethook_testkit::{
    client, create_channel, post, request, wait_for, ListenProcess, Received, RelayProcess,
    TestDaemon, TestHandler, TestRelay, PATIENCE,
};

use crate::util::BIN;

const ADMIN: &str = "admin-test-token";

/// A mounted `PowerFs`, or `None` after printing why the test is skipped.
fn power_fs() -> Option<PowerFs> {
    match PowerFs::mount() {
        Ok(fs) => Some(fs),
        Err(why) => {
            println!("skipped: {why}");
            None
        }
    }
}

fn cuts() -> usize {
    std::env::var("MEETHOOK_POWER_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

async fn start_relay(data: &Path, listen: &str) -> RelayProcess {
    RelayProcess::start_logged(Path::new(BIN), data, listen, ADMIN, &[]).await
}

/// Cuts the power of `fs` (its processes must be dead), off the async threads.
fn cut(fs: &mut PowerFs, total: &mut Discarded) {
    let d = tokio::task::block_in_place(|| fs.cut(true));
    total.writes += d.writes;
    total.torn += d.torn;
    total.names += d.names;
}

/// Every event the relay holds for `ch`, oldest first.
async fn stored(base: &str, ch: &str, token: &str) -> Vec<(u64, Bytes)> {
    let c = client();
    let auth = format!("Bearer {token}");
    let mut all = Vec::new();
    loop {
        let after = all.last().map_or(0, |(s, _)| *s);
        let url = format!("{base}/api/channels/{ch}/events?after={after}&limit=50");
        let r = request(&c, "GET", &url, &[("authorization", auth.as_str())], "")
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let events = v["events"].as_array().unwrap();
        if events.is_empty() {
            return all;
        }
        for e in events {
            let body = e["body"].as_str().expect("bodies are UTF-8 here");
            all.push((e["seq"].as_u64().unwrap(), Bytes::from(body.to_owned())));
        }
    }
}

/// Every acknowledged webhook is stored under its seq with its exact bytes, and the stored
/// seqs are 1, 2, 3, … without a gap.
fn assert_stored(acked: &Acked, stored: &[(u64, Bytes)]) {
    for (i, (seq, _)) in stored.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1, "stored seqs are gap-free");
    }
    let by_seq: HashMap<u64, &Bytes> = stored.iter().map(|(s, b)| (*s, b)).collect();
    let missing = acked
        .iter()
        .filter(|(s, _)| !by_seq.contains_key(s))
        .count();
    let differ = acked
        .iter()
        .filter(|(s, b)| by_seq.get(s).is_some_and(|got| *got != b))
        .count();
    assert_eq!(
        (missing, differ),
        (0, 0),
        "acknowledged webhooks missing or changed after power cuts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_data_dir_made_on_a_fresh_disk_survives_a_power_cut() {
    let Some(mut fs) = power_fs() else { return };
    // The relay makes its data directory (and a parent) itself: their entries must be
    // durable before the first 200, or the whole store vanishes with the power.
    let data = fs.path().join("srv/relay");
    let mut relay = start_relay(&data, "127.0.0.1:0").await;
    let base = relay.url();
    let (ch, token) = create_channel(&base, ADMIN).await;
    let r = meethook_testkit::post(&relay.hook(&ch), &[], "first").await;
    assert_eq!(r.status, 200);
    relay.proc.kill9().await;
    let mut total = Discarded::default();
    cut(&mut fs, &mut total);
    let relay = start_relay(&data, &relay.addr.to_string()).await;
    assert_eq!(
        stored(&relay.url(), &ch, &token).await,
        vec![(1, Bytes::from("first"))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_journal_made_on_a_fresh_disk_survives_a_power_cut() {
    let Some(mut fs) = power_fs() else { return };
    let relay = TestRelay::start().await;
    let (ch, token) = relay.channel(None).await;
    let handler = TestHandler::start().await;
    let journal = fs.path().join("srv/listener");
    let mut daemon = ListenProcess::start(
        Path::new(BIN),
        &relay.url(),
        &ch,
        &token,
        &handler.url("/"),
        &journal,
    );
    assert_eq!(post(&relay.hook(&ch), &[], "one").await.status, 200);
    handler
        .wait_until("delivered", |log| log.iter().any(|r| r.answered == 200))
        .await;
    daemon.proc.kill9().await;
    let mut total = Discarded::default();
    cut(&mut fs, &mut total);
    // Gone with its directory, the journal would have the relay send everything again.
    assert!(
        journal.join("journal.sqlite").exists(),
        "the journal survives: {total:?}"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_power_cut_sends_nothing_again_that_the_relay_holds_an_ack_for() {
    let Some(mut fs) = power_fs() else { return };
    let relay = TestRelay::start().await;
    let handler = TestHandler::start().await;
    // In strict order, and per key in parallel (its ack is a low-water mark).
    for (i, order) in [&[][..], &["--order", "bot", "--parallel", "4"][..]]
        .into_iter()
        .enumerate()
    {
        let (ch, token) = relay.channel(None).await;
        let journal = fs.path().join(format!("listener-{i}"));
        let listen = || {
            ListenProcess::start_with(
                Path::new(BIN),
                &relay.url(),
                &ch,
                &token,
                &handler.url(&format!("/{i}")),
                &journal,
                order,
            )
        };
        let mine = |log: &[Received]| -> Vec<Received> {
            let path = format!("/{i}");
            log.iter().filter(|r| r.path == path).cloned().collect()
        };
        let mut daemon = listen();
        const N: usize = 200;
        for n in 0..N {
            let body = format!(
                "{{\"event\":\"bot.status_change\",\"data\":{{\"bot_id\":\"b{}\",\"n\":{n}}}}}",
                n % 8
            );
            assert_eq!(post(&relay.hook(&ch), &[], body).await.status, 200);
        }
        handler
            .wait_until("every event", |log| mine(log).len() >= N)
            .await;
        let id = meethook_daemon::journal::Journal::open_read_only(&journal)
            .and_then(|j| j.listener_id(&ch))
            .expect("the listener id");
        wait_for("the relay to store the last ack", PATIENCE, || async {
            relay.store.acked(&ch, &id).await.unwrap() == N as u64
        })
        .await;
        daemon.proc.kill9().await;
        let mut total = Discarded::default();
        cut(&mut fs, &mut total);
        println!("powerloss: the daemon's disk discarded {total:?}");

        daemon = listen();
        assert_eq!(
            post(&relay.hook(&ch), &[], "after the cut").await.status,
            200
        );
        let got = handler
            .wait_until("the event after the cut", |log| {
                mine(log).iter().any(|r| &r.body[..] == b"after the cut")
            })
            .await;
        let mut seqs: Vec<u64> = mine(&got).iter().map(|r| r.seq()).collect();
        seqs.sort_unstable();
        assert_eq!(
            seqs,
            (1..=N as u64 + 1).collect::<Vec<_>>(),
            "{order:?}: each event delivered once"
        );
        daemon.proc.kill9().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_power_cut_at_random_moments_under_load() {
    let Some(mut fs) = power_fs() else { return };
    let data = fs.path().join("relay");
    let mut relay = start_relay(&data, "127.0.0.1:0").await;
    let addr = relay.addr.to_string();
    let base = format!("http://{addr}");
    let (ch, token, handler, _jdir, daemon) = meethook_testkit::listening_to(&base, ADMIN).await;
    // A second listener of the same channel: every listener gets everything.
    let (handler2, jdir2) = (TestHandler::start().await, meethook_testkit::tempdir());
    let daemon2 = TestDaemon::start(TestDaemon::config(
        &base,
        &ch,
        &token,
        &handler2.url("/"),
        jdir2.path(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    // 1 KiB to 2 MiB: bodies of 1 MiB and more are body files of their own.
    let load = senders_between(
        format!("{base}/hooks/{ch}"),
        16,
        100_000,
        1 << 10..=2 << 20,
        stop.clone(),
    );
    let cuts = cuts();
    let mut total = Discarded::default();
    for _ in 0..cuts {
        tokio::time::sleep(jitter(100, 500)).await;
        relay.proc.kill9().await;
        cut(&mut fs, &mut total);
        relay = start_relay(&data, &addr).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = collect(load).await;
    assert!(acked.len() > 50, "load ran: {}", acked.len());
    assert!(
        acked.iter().any(|(_, b)| b.len() >= 1 << 20),
        "body files were used"
    );
    assert!(
        total.writes > 0,
        "cuts threw unsynced writes away: {total:?}"
    );
    println!("powerloss: relay discarded {total:?}");
    assert_stored(&acked, &stored(&base, &ch, &token).await);
    let report = verify(&acked, &wait_all(&handler, &acked).await);
    report.assert_promise("relay-power-cut", cuts);
    assert_eq!(report.duplicates, 0, "a relay power cut never duplicates");
    let second = verify(&acked, &wait_all(&handler2, &acked).await);
    assert_eq!(
        (
            second.lost,
            second.out_of_order,
            second.duplicates,
            second.corrupted
        ),
        (0, 0, 0, 0),
        "the second listener: {second:?}"
    );
    daemon.stop().await.unwrap();
    daemon2.stop().await.unwrap();
}

/// The promise after power cuts on the listener's machine: every acknowledged event
/// delivered with its exact bytes, and never a skip: each delivery is of a seq at most one
/// past the highest delivered so far (counted in `out_of_order` otherwise). A lost outcome
/// log makes the daemon deliver again from where its journal says; each such repeat is a
/// duplicate.
fn verify_replays(acked: &Acked, got: &[Received]) -> Report {
    let delivered: Vec<&Received> = got.iter().filter(|r| r.answered == 200).collect();
    let by_seq: HashMap<u64, &Bytes> = acked.iter().map(|(s, b)| (*s, b)).collect();
    let mut r = Report {
        acknowledged: acked.len(),
        delivered: delivered.len(),
        ..Report::default()
    };
    let mut max = 0;
    let mut seen = std::collections::HashSet::new();
    for d in delivered {
        let seq = d.seq();
        if seq > max + 1 {
            r.out_of_order += 1;
        }
        if !seen.insert(seq) {
            r.duplicates += 1;
        }
        max = max.max(seq);
        if by_seq.get(&seq).is_some_and(|b| **b != d.body) {
            r.corrupted += 1;
        }
    }
    r.lost = acked.iter().filter(|(s, _)| !seen.contains(s)).count();
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_power_cut_relay_and_daemon_at_random_moments() {
    let Some(mut fs) = power_fs() else { return };
    let (data, journal) = (fs.path().join("relay"), fs.path().join("listener"));
    let mut relay = start_relay(&data, "127.0.0.1:0").await;
    let addr = relay.addr.to_string();
    let base = format!("http://{addr}");
    let (ch, token) = create_channel(&base, ADMIN).await;
    let handler = TestHandler::start().await;
    let listen = || {
        ListenProcess::start(
            Path::new(BIN),
            &base,
            &ch,
            &token,
            &handler.url("/"),
            &journal,
        )
    };
    let mut daemon = listen();
    let stop = Arc::new(AtomicBool::new(false));
    let load = senders_between(
        format!("{base}/hooks/{ch}"),
        16,
        100_000,
        1 << 10..=2 << 20,
        stop.clone(),
    );
    let cuts = cuts();
    let mut total = Discarded::default();
    for _ in 0..cuts {
        tokio::time::sleep(jitter(100, 500)).await;
        relay.proc.kill9().await;
        daemon.proc.kill9().await;
        cut(&mut fs, &mut total);
        relay = start_relay(&data, &addr).await;
        daemon = listen();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = collect(load).await;
    assert!(acked.len() > 50, "load ran: {}", acked.len());
    println!("powerloss: machine discarded {total:?}");
    let stored = stored(&base, &ch, &token).await;
    assert_stored(&acked, &stored);
    // Everything stored reaches the handler, acknowledged or not (a sender whose 200 was
    // lost in a cut sent its body again: stored twice, both delivered).
    let all: Acked = stored;
    let got = wait_all(&handler, &all).await;
    let report = verify_replays(&acked, &got);
    report.assert_promise("machine-power-cut", cuts);
    assert_eq!(
        verify_replays(&all, &got).lost,
        0,
        "every stored event delivered"
    );
    daemon.proc.kill9().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_on_postgres_power_cut_at_random_moments_under_load() {
    let Some(mut fs) = power_fs() else { return };
    fs.open_to_all().unwrap();
    let pgdata = fs.path().join("pg");
    let mut pg = match tokio::task::block_in_place(|| PgCluster::init(&pgdata)) {
        Ok(pg) => pg,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let store = pg.url();
    let relay_dir = meethook_testkit::tempdir();
    let start = |listen: String| {
        let (dir, store) = (relay_dir.path().to_path_buf(), store.clone());
        async move {
            RelayProcess::start_logged(Path::new(BIN), &dir, &listen, ADMIN, &["--store", &store])
                .await
        }
    };
    let mut relay = start("127.0.0.1:0".into()).await;
    let addr = relay.addr.to_string();
    let base = format!("http://{addr}");
    let (ch, token, handler, _jdir, daemon) = meethook_testkit::listening_to(&base, ADMIN).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = senders_between(
        format!("{base}/hooks/{ch}"),
        16,
        100_000,
        1 << 10..=2 << 20,
        stop.clone(),
    );
    let cuts = cuts();
    let mut total = Discarded::default();
    for _ in 0..cuts {
        tokio::time::sleep(jitter(100, 500)).await;
        relay.proc.kill9().await;
        tokio::task::block_in_place(|| pg.kill9());
        cut(&mut fs, &mut total);
        tokio::task::block_in_place(|| pg.start());
        relay = start(addr.clone()).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = collect(load).await;
    // Each cut restarts PostgreSQL (crash recovery): far fewer events get through.
    assert!(acked.len() > 20, "load ran: {}", acked.len());
    assert!(
        total.writes > 0,
        "cuts threw unsynced writes away: {total:?}"
    );
    println!("powerloss: postgres discarded {total:?}");
    assert_stored(&acked, &stored(&base, &ch, &token).await);
    let got = wait_all(&handler, &acked).await;
    let report = verify(&acked, &got);
    report.assert_promise("relay-postgres-power-cut", cuts);
    assert_eq!(report.duplicates, 0, "a relay power cut never duplicates");
    daemon.stop().await.unwrap();
    drop(relay);
    tokio::task::block_in_place(|| pg.kill9());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_recording_survives_a_power_cut() {
    let Some(mut fs) = power_fs() else { return };
    static MP4: [u8; 300_000] = [7; 300_000];
    let (files, _) = crate::recordings::file_server(&MP4).await;
    let s = meethook_testkit::Setup::start().await;
    let rec_dir = fs.path().join("recordings");
    let daemon = s.daemon_with("/", |cfg| {
        cfg.save_recordings = Some(rec_dir.clone());
        cfg.max_recording_size = 1 << 20;
    });
    let (relay, ch, _, _handler, _jdir) = s.into_parts();
    let bot = "8d2f4c1a-0000-0000-0000-000000000001";
    let complete = format!(
        r#"{{"event":"complete","data":{{"bot_id":"{bot}","mp4":"http://{files}/bots/8d2f.mp4?X-Amz-Expires=7200&X-Amz-Signature=abc","speakers":["Alice"]}}}}"#
    );
    post(&relay.hook(&ch), &[], complete).await;
    daemon
        .events
        .wait_for("the recording saved", |e| {
            matches!(e, meethook_daemon::DaemonEvent::RecordingSaved { .. })
        })
        .await;
    daemon.stop().await.unwrap();
    let mut total = Discarded::default();
    cut(&mut fs, &mut total);
    // Reported saved means there after a power cut: its name synced, in a directory whose
    // own name is synced.
    let saved = rec_dir.join(format!("{bot}-1-video.mp4"));
    let kept = std::fs::read(&saved).map(|b| b == MP4);
    assert!(matches!(kept, Ok(true)), "{kept:?} after {total:?}");
    relay.stop().await;
}
