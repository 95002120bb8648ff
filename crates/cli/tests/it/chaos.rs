//! The fault-injection suite: real binaries and a recording handler, the promise checked after
//! every fault. Each test prints a `chaos:` line with its figures (`scripts/chaos` collects them).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use meethook_daemon::order::Order;
use meethook_testkit::fault::{collect, jitter, senders, verify, wait_all, Acked, CutProxy, Tmpfs};
use meethook_testkit::Received;
use meethook_testkit::{post, tempdir, ListenProcess, RelayProcess, Setup, TestHandler, TestRelay};

use crate::util::BIN;

const ADMIN: &str = "admin-test-token";

async fn start_relay(data: &Path, listen: &str) -> RelayProcess {
    RelayProcess::start(Path::new(BIN), data, listen, ADMIN).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_kill9_at_random_moments_under_load() {
    let data = tempdir();
    let mut relay = start_relay(data.path(), "127.0.0.1:0").await;
    let addr = relay.addr.to_string();
    let base = format!("http://{addr}");
    let (ch, _, handler, _jdir, daemon) = meethook_testkit::listening_to(&base, ADMIN).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = senders(format!("{base}/hooks/{ch}"), 4, 100_000, 512, stop.clone());
    let kills = 20;
    for _ in 0..kills {
        tokio::time::sleep(jitter(50, 300)).await;
        relay.proc.kill9().await;
        relay = start_relay(data.path(), &addr).await;
    }
    // A fixed wait, on purpose: load runs a little after the last fault.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = collect(load).await;
    assert!(acked.len() > 100, "load ran: {}", acked.len());
    let got = wait_all(&handler, &acked).await;
    let report = verify(&acked, &got);
    report.assert_promise("relay-kill9", kills);
    assert_eq!(
        report.duplicates, 0,
        "a relay crash never duplicates at the handler"
    );
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_kill9_at_random_moments_under_load() {
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
    let load = senders(relay.hook(&ch), 4, 150, 256, stop);
    let kills = 20;
    for _ in 0..kills {
        tokio::time::sleep(jitter(50, 250)).await;
        daemon.proc.kill9().await;
        daemon = listen();
    }
    let acked = collect(load).await;
    assert_eq!(acked.len(), 600);
    let got = wait_all(&handler, &acked).await;
    let report = verify(&acked, &got);
    report.assert_promise("daemon-kill9", kills);
    assert!(
        report.duplicates <= kills,
        "at most one visible duplicate per crash"
    );
    daemon.proc.kill9().await;
    relay.stop().await;
}

/// Copies `from` into `to`, subdirectories (the body files) included.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let e = entry.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir(&dest).unwrap();
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_restarted_on_a_copy_of_its_data_dir() {
    let first = tempdir();
    let mut relay = start_relay(first.path(), "127.0.0.1:0").await;
    let addr = relay.addr.to_string();
    let base = format!("http://{addr}");
    let (ch, _, handler, _jdir, daemon) = meethook_testkit::listening_to(&base, ADMIN).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = senders(format!("{base}/hooks/{ch}"), 2, 100_000, 512, stop.clone());
    let moves = 3;
    let mut dirs = vec![first];
    for _ in 0..moves {
        tokio::time::sleep(jitter(200, 400)).await;
        relay.proc.kill9().await;
        // The copy is a crash image: database, WAL and shared-memory files as they were.
        let next = tempdir();
        copy_dir(dirs.last().unwrap().path(), next.path());
        relay = start_relay(next.path(), &addr).await;
        dirs.push(next);
    }
    // A fixed wait, on purpose: load runs a little after the last fault.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = collect(load).await;
    let got = wait_all(&handler, &acked).await;
    verify(&acked, &got).assert_promise("relay-moved-to-data-copy", moves);
    daemon.stop().await.unwrap();
}

/// Checks the promise after `cuts` websocket cuts: every planned cut happened, nothing was
/// lost, reordered, corrupted or duplicated.
fn verify_cuts(acked: &Acked, got: &[Received], proxy: &CutProxy, cuts: u32, fault: &str) {
    let report = verify(acked, got);
    report.assert_promise(fault, proxy.cut.load(Ordering::Relaxed) as usize);
    assert_eq!(
        proxy.cut.load(Ordering::Relaxed),
        cuts,
        "every planned cut happened"
    );
    assert_eq!(report.duplicates, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_cut_mid_frame() {
    let s = Setup::start().await;
    let cuts = 15;
    let proxy = CutProxy::start(s.relay.addr, cuts).await;
    let daemon = s.daemon_with("/", |c| c.relay = format!("http://{}", proxy.addr));
    let (relay, ch, _, handler, _dir) = s.into_parts();
    // 64 KiB bodies: most cuts land inside an event frame.
    let load = senders(
        relay.hook(&ch),
        2,
        150,
        64 << 10,
        Arc::new(AtomicBool::new(false)),
    );
    let acked = collect(load).await;
    let got = wait_all(&handler, &acked).await;
    verify_cuts(&acked, &got, &proxy, cuts, "websocket-cut");
    daemon.stop().await.unwrap();
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_cut_mid_preload() {
    let s = Setup::start_with(|c| c.max_body = 4 << 20).await;
    let cuts = 4;
    let proxy = CutProxy::start(s.relay.addr, cuts).await;
    let daemon = s.daemon_with("/", |cfg| {
        cfg.relay = format!("http://{}", proxy.addr);
        cfg.reconnect.max = Duration::from_millis(200);
    });
    let (relay, ch, _, handler, _dir) = s.into_parts();
    // 1.5 MiB bodies, each sent once the one before is delivered, so the daemon is caught up
    // and gets them as preloads while they arrive (a fixed pause was not enough on a loaded
    // machine): the cuts land inside preload pieces, and after each reconnect the daemon
    // must forget what it held and take those events whole.
    let hook = relay.hook(&ch);
    let c = meethook_testkit::client();
    let mut acked: Acked = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut after_cuts = 0;
    for i in 0.. {
        let head = format!("{{\"n\":{i},\"pad\":\"");
        let body = Bytes::from(format!(
            "{head}{}\"}}",
            "p".repeat((3 << 19) - head.len() - 2)
        ));
        let r = meethook_testkit::request(&c, "POST", &hook, &[], body.clone())
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        let seq = serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["seq"]
            .as_u64()
            .unwrap();
        acked.push((seq, body));
        if proxy.cut.load(Ordering::Relaxed) >= cuts {
            after_cuts += 1;
        }
        if after_cuts >= 4 || tokio::time::Instant::now() > deadline {
            break;
        }
        handler
            .wait_until("the event just sent", |log| {
                log.iter().any(|r| r.seq() == seq && r.answered == 200)
            })
            .await;
    }
    let got = wait_all(&handler, &acked).await;
    verify_cuts(&acked, &got, &proxy, cuts, "preload-cut");
    assert!(
        relay.metrics.events_preloaded.load(Ordering::Relaxed) > 0,
        "some bodies went as preloads"
    );
    daemon.stop().await.unwrap();
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_down_for_a_long_time() {
    let s = Setup::start().await;
    let daemon = s.daemon("/");
    let (relay, ch, _, mut handler, _dir) = s.into_parts();
    // Errors first, then the port closed; backoff is capped at 200 ms, so 2 s down is ~10 retries.
    handler.script(&[503; 15]);
    let load = senders(
        relay.hook(&ch),
        2,
        50,
        256,
        Arc::new(AtomicBool::new(false)),
    );
    // Fixed waits, on purpose: errors for a while, then the port closed for 2 s.
    tokio::time::sleep(Duration::from_millis(300)).await;
    handler.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    handler.restart().await;
    let acked = collect(load).await;
    let got = wait_all(&handler, &acked).await;
    let failures = got.iter().filter(|r| r.answered != 200).count();
    verify(&acked, &got).assert_promise("handler-down", failures);
    daemon.stop().await.unwrap();
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_disk_full_answers_503_and_recovers() {
    let Some(disk) = Tmpfs::mount("3m") else {
        println!("chaos: fault=relay-disk-full skipped (mounting a tmpfs needs root)");
        return;
    };
    let s = Setup::on(TestRelay::start_in(disk.path(), |_| {}).await, None).await;
    let daemon = s.daemon("/");
    let (relay, ch, _, handler, _dir) = s.into_parts();
    let body = vec![b'x'; 64 << 10];
    let mut refused = 0;
    let mut acked = Vec::new();
    for _ in 0..200 {
        let r = post(&relay.hook(&ch), &[], body.clone()).await;
        match r.status {
            200 => acked.push((r.seq().unwrap(), bytes::Bytes::from(body.clone()))),
            503 => {
                refused += 1;
                if refused >= 3 {
                    break;
                }
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert!(refused >= 3, "the disk filled up");
    // Space comes back: the same relay accepts again, and nothing acknowledged was lost.
    disk.resize("64m");
    for _ in 0..5 {
        let r = post(&relay.hook(&ch), &[], body.clone()).await;
        assert_eq!(r.status, 200, "accepting again after space returns");
        acked.push((r.seq().unwrap(), bytes::Bytes::from(body.clone())));
    }
    let got = wait_all(&handler, &acked).await;
    let report = verify(&acked, &got);
    report.assert_promise("relay-disk-full", refused);
    let seqs: Vec<u64> = acked.iter().map(|a| a.0).collect();
    assert_eq!(
        seqs,
        (1..=acked.len() as u64).collect::<Vec<_>>(),
        "no seq burned by a refused write"
    );
    daemon.stop().await.unwrap();
    relay.stop().await;
}

/// A listener whose journal lives on a tmpfs of `size`: one sender posts `n` bodies of
/// `body` bytes, delivery stalls once the disk is full (after at least `first`), the disk
/// grows, and everything arrives. Returns the disk (stopped daemon's journal) and channel,
/// or `None` when a tmpfs cannot be mounted.
async fn daemon_disk_full(
    fault: &str,
    size: &str,
    n: usize,
    body: usize,
    first: usize,
    order: meethook_daemon::order::Order,
) -> Option<(Tmpfs, String)> {
    let Some(disk) = Tmpfs::mount(size) else {
        println!("chaos: fault={fault} skipped (mounting a tmpfs needs root)");
        return None;
    };
    let s = Setup::start().await;
    let daemon = s.daemon_with("/", |c| {
        c.data = disk.path().to_path_buf();
        c.order = order;
        c.parallel = 4;
    });
    let (relay, ch, _, handler, _dir) = s.into_parts();
    let load = senders(
        relay.hook(&ch),
        1,
        n,
        body,
        Arc::new(AtomicBool::new(false)),
    );
    let acked = collect(load).await;
    handler
        .wait_until("the journal to fill", |log| log.len() >= first)
        .await;
    // A fixed wait, on purpose: checks that delivery stays stalled on the full disk.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = handler.received().len();
    assert!(
        before < n,
        "delivery stalled on a full journal ({before} delivered)"
    );
    disk.resize("64m");
    let got = wait_all(&handler, &acked).await;
    verify(&acked, &got).assert_promise(fault, 1);
    daemon.stop().await.unwrap();
    relay.stop().await;
    Some((disk, ch))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_disk_full_stops_acking_and_recovers() {
    // 40 × 64 KiB cannot fit in 1 MiB: the journal fills and the daemon stops taking events.
    daemon_disk_full("daemon-disk-full", "1m", 40, 64 << 10, 1, Order::Channel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_disk_full_on_big_bodies_redelivers_in_order_and_settles_all() {
    // 1.5 MiB bodies are body files, handed to delivery before their insert commits; the
    // third file does not fit, so an event is delivered whose insert then fails.
    for (fault, order) in [
        ("daemon-disk-full-big", Order::Channel),
        // Keyed: an event whose insert failed holds its key until it is resent (it used to
        // let the next events of its key go first).
        ("daemon-disk-full-big-order-bot", Order::Bot),
    ] {
        let Some((disk, ch)) = daemon_disk_full(fault, "4m", 6, 1536 << 10, 2, order).await else {
            return;
        };
        // Every event settled in the journal: none left pending to be delivered again later.
        let journal = meethook_daemon::journal::Journal::open(disk.path()).unwrap();
        assert_eq!(journal.pending(&ch, 100).unwrap().len(), 0);
        // One body file per event: a failed insert leaves none behind (each resend's files
        // used to stay, until they filled the disk again).
        let files = std::fs::read_dir(disk.path().join("journal-bodies"))
            .unwrap()
            .count();
        assert_eq!(files, 6, "{fault}: body files");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_restarted_on_a_full_disk_waits_for_space() {
    let fault = "daemon-restart-disk-full";
    let Some(disk) = Tmpfs::mount("16m") else {
        println!("chaos: fault={fault} skipped (mounting a tmpfs needs root)");
        return;
    };
    let relay = TestRelay::start().await;
    let (ch, token) = relay.channel(None).await;
    let handler = TestHandler::start().await;
    let data = disk.path().join("journal");
    let listen = || {
        ListenProcess::start(
            Path::new(BIN),
            &relay.url(),
            &ch,
            &token,
            &handler.url("/"),
            &data,
        )
    };
    let mut daemon = listen();
    let stop = Arc::new(AtomicBool::new(false));
    let mut acked = collect(senders(relay.hook(&ch), 1, 20, 256, stop.clone())).await;
    wait_all(&handler, &acked).await;
    // Killed with outcomes in its log, then started again while the disk is full.
    daemon.proc.kill9().await;
    let filler = disk.path().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        while f.write_all(&[0u8; 64 << 10]).is_ok() {}
    }
    acked.extend(collect(senders(relay.hook(&ch), 1, 20, 256, stop)).await);
    let mut daemon = listen();
    // A fixed wait, on purpose: the daemon must still be running (waiting for space).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        daemon.proc.child.try_wait().unwrap().is_none(),
        "the daemon exited on a full disk instead of waiting for space"
    );
    std::fs::remove_file(&filler).unwrap();
    let got = wait_all(&handler, &acked).await;
    verify(&acked, &got).assert_promise(fault, 1);
    daemon.proc.kill9().await;
    relay.stop().await;
}
