//! `kill -9` of the relay and of the daemon, as real child processes, under load.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use meethook_testkit::{
    client, request, tempdir, ListenProcess, RelayProcess, TestDaemon, TestHandler, TestRelay,
};

const BIN: &str = env!("CARGO_BIN_EXE_meethook");

/// A random delay in `lo..hi` ms (seeded by the OS through `RandomState`).
fn jitter(lo: u64, hi: u64) -> Duration {
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    Duration::from_millis(lo + r % (hi - lo))
}

/// Senders that post unique bodies until `stop`, retrying each until it gets a 2xx; returns
/// what was acknowledged as (seq, body).
fn spawn_senders(
    url: String,
    n: usize,
    max_each: usize,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<(u64, Bytes)>>> {
    (0..n)
        .map(|s| {
            let (url, stop) = (url.clone(), stop.clone());
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut c = client();
                for i in 0..max_each {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let body = Bytes::from(format!("{{\"sender\":{s},\"n\":{i}}}"));
                    loop {
                        match request(
                            &c,
                            "POST",
                            &url,
                            &[("content-type", "application/json")],
                            body.clone(),
                        )
                        .await
                        {
                            Ok(r) if r.status == 200 => {
                                acked.push((r.seq().unwrap(), body));
                                break;
                            }
                            // Relay down or store refused: retry, as a real sender would.
                            _ => {
                                c = client();
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                }
                acked
            })
        })
        .collect()
}

async fn create_channel(relay: &str, admin: &str) -> (String, String) {
    let auth = format!("Bearer {admin}");
    let r = request(
        &client(),
        "POST",
        &format!("{relay}/api/channels"),
        &[("authorization", auth.as_str())],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    (
        v["id"].as_str().unwrap().into(),
        v["token"].as_str().unwrap().into(),
    )
}

async fn start_relay(data: &Path, listen: &str) -> RelayProcess {
    RelayProcess::start(Path::new(BIN), data, listen, "admin-test-token").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_kill9_under_load_loses_no_acknowledged_event() {
    let data = tempdir();
    let mut relay = start_relay(data.path(), "127.0.0.1:0").await;
    let addr = relay.addr.to_string();
    let base = format!("http://{addr}");
    let (ch, token) = create_channel(&base, "admin-test-token").await;
    let handler = TestHandler::start().await;
    let jdir = tempdir();
    let daemon = TestDaemon::start(TestDaemon::config(
        &base,
        &ch,
        &token,
        &handler.url("/"),
        jdir.path(),
    ));

    let stop = Arc::new(AtomicBool::new(false));
    let senders = spawn_senders(format!("{base}/hooks/{ch}"), 4, 10_000, stop.clone());
    let kills = 8;
    for _ in 0..kills {
        tokio::time::sleep(jitter(100, 400)).await;
        relay.proc.kill9().await;
        relay = start_relay(data.path(), &addr).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for s in senders {
        acked.extend(s.await.unwrap());
    }
    assert!(acked.len() > 50, "load ran: {} acknowledged", acked.len());
    let max_seq = acked.iter().map(|a| a.0).max().unwrap();
    let got = handler
        .wait_until("every acknowledged event", |log| {
            log.iter().any(|r| r.seq() >= max_seq)
        })
        .await;
    let by_seq: HashMap<u64, Bytes> = got.iter().map(|r| (r.seq(), r.body.clone())).collect();
    for (seq, body) in &acked {
        assert_eq!(
            by_seq.get(seq),
            Some(body),
            "acknowledged seq {seq} delivered with its body"
        );
    }
    let seqs: Vec<u64> = got.iter().map(|r| r.seq()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "strict seq order, no duplicates: {seqs:?}"
    );
    println!(
        "relay kill -9 x{kills}: {} acknowledged, {} delivered, 0 lost",
        acked.len(),
        got.len()
    );
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_kill9_loses_nothing_and_duplicates_only_the_inflight_event() {
    let relay = TestRelay::start().await;
    let (ch, token) = relay.channel(None).await;
    let handler = TestHandler::start().await;
    let jdir = tempdir();
    let listen = || {
        ListenProcess::start(
            Path::new(BIN),
            &relay.url(),
            &ch,
            &token,
            &handler.url("/"),
            jdir.path(),
        )
    };
    let mut daemon = listen();

    let stop = Arc::new(AtomicBool::new(false));
    let senders = spawn_senders(relay.hook(&ch), 4, 75, stop.clone());
    let kills = 8;
    for _ in 0..kills {
        tokio::time::sleep(jitter(100, 300)).await;
        daemon.proc.kill9().await;
        daemon = listen();
    }
    let mut acked = Vec::new();
    for s in senders {
        acked.extend(s.await.unwrap());
    }
    let n = acked.len() as u64;
    assert_eq!(n, 300);
    let got = handler
        .wait_until("all 300 events", |log| log.iter().any(|r| r.seq() == n))
        .await;
    let seqs: Vec<u64> = got.iter().map(|r| r.seq()).collect();
    let mut dedup = seqs.clone();
    dedup.dedup();
    assert_eq!(
        dedup,
        (1..=n).collect::<Vec<_>>(),
        "in order, nothing lost; a copy only right after itself"
    );
    let dups = seqs.len() - dedup.len();
    assert!(dups <= kills, "{dups} duplicates from {kills} kills");
    let bodies: HashMap<u64, Bytes> = acked.into_iter().collect();
    for r in &got {
        assert_eq!(
            Some(&r.body),
            bodies.get(&r.seq()),
            "copy carries the same seq and bytes"
        );
    }
    println!("daemon kill -9 x{kills}: {n} events, {dups} visible duplicates, 0 lost");
    daemon.proc.kill9().await;
    relay.stop().await;
}
