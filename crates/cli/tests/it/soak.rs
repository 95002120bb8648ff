//! The mixed-fault soak (`scripts/chaos --soak DURATION --seed N`): senders and a listener run
//! throughout while faults chosen at random from the seed start, overlap and end — relay and
//! daemon `kill -9`, websocket cuts, a handler that is down, slow or answers 5xx/429, full
//! disks, and (on PostgreSQL) the database going away. At the end every fault is undone and a
//! checker asks: every acknowledged event delivered, in order (per bot under `--order bot`),
//! byte-identical, with no more duplicates than daemon crashes × events in flight (and a few
//! dozen per power cut of the daemon's disk).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use meethook_testkit::fault::{verify, verify_by, Acked, Proxy, Report, Tmpfs};
use meethook_testkit::pg::Schema;
use meethook_testkit::powerfs::PowerFs;
use meethook_testkit::{
    client, create_channel, request, tempdir, ListenProcess, Received, RelayProcess, TestHandler,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Mutex as AsyncMutex;

use crate::util::BIN;

const ADMIN: &str = "admin-soak";
/// Senders posting throughout, and the bots their events belong to.
const SENDERS: usize = 8;
const BOTS: usize = 4;
/// Events in flight at once under `--order bot`.
const PARALLEL: usize = 4;
/// The checker gives up when no acknowledged event was delivered for this long.
const STALL: Duration = Duration::from_secs(120);
/// Repeats allowed per power cut of the daemon's disk (a few are seen; before the relay's ack
/// in `welcome` and the journal's timed checkpoints, 60 to 180).
const POWER_CUT_REPEATS: usize = 40;

/// The faults a soak chooses from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    RelayKill9,
    DaemonKill9,
    WebsocketCut,
    HandlerDown,
    HandlerSlow,
    Handler5xx,
    Handler429,
    RelayDiskFull,
    DaemonDiskFull,
    RelayPowerCut,
    DaemonPowerCut,
    PostgresGone,
}

/// The `meethook` binary the soak runs: `MEETHOOK_SOAK_BIN`, so a long soak can run a copy
/// that later builds do not replace, else this build's.
fn bin() -> PathBuf {
    std::env::var_os("MEETHOOK_SOAK_BIN").map_or_else(|| PathBuf::from(BIN), PathBuf::from)
}

/// What a soak run is given: `MEETHOOK_SOAK_SECS`, `MEETHOOK_SOAK_SEED`, `MEETHOOK_SOAK_STORE`.
struct Plan {
    seed: u64,
    duration: Duration,
    postgres: bool,
}

impl Plan {
    fn from_env() -> Plan {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let seed = var("MEETHOOK_SOAK_SEED")
            .map(|s| s.parse().expect("MEETHOOK_SOAK_SEED: a number"))
            .unwrap_or_else(|| meethook_testkit::fault::random() % 1_000_000);
        let secs = var("MEETHOOK_SOAK_SECS")
            .map(|s| s.parse().expect("MEETHOOK_SOAK_SECS: seconds"))
            .unwrap_or(60);
        let postgres = var("MEETHOOK_SOAK_STORE").is_some_and(|s| s == "postgres");
        Plan {
            seed,
            duration: Duration::from_secs(secs),
            postgres,
        }
    }
}

/// Prints how to repeat the run when the soak fails (a panic anywhere in the test).
struct RepeatHint(u64, u64);

impl Drop for RepeatHint {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "soak: FAILED with seed {}; repeat it with `scripts/chaos --soak {}s --seed {}`",
                self.0, self.1, self.0
            );
        }
    }
}

/// A data directory: on a tmpfs of its own where this process may mount one (so the disk
/// can fill up), else in a plain temporary directory; and, where FUSE can be mounted, behind
/// a [`PowerFs`] (so the power can be cut). The mount point stays the same across cuts.
struct Disk {
    path: PathBuf,
    power: Option<PowerFs>,
    tmpfs: Option<Tmpfs>,
    _plain: Option<tempfile::TempDir>,
}

impl Disk {
    fn new(power: bool) -> Disk {
        let tmpfs = Tmpfs::mount("512m");
        let plain = tmpfs.is_none().then(tempdir);
        let base = match (&tmpfs, &plain) {
            (Some(t), _) => t.path().to_path_buf(),
            (_, Some(p)) => p.path().to_path_buf(),
            _ => unreachable!("one of them"),
        };
        let power = if power {
            match PowerFs::mount_in(&base) {
                Ok(fs) => Some(fs),
                Err(why) => {
                    println!("soak: no power cuts ({why})");
                    None
                }
            }
        } else {
            None
        };
        let path = power.as_ref().map_or(base, |p| p.path().to_path_buf());
        Disk {
            path: path.join("data"),
            power,
            tmpfs,
            _plain: plain,
        }
    }

    fn can_fill(&self) -> bool {
        self.tmpfs.is_some()
    }

    fn can_cut(&self) -> bool {
        self.power.is_some()
    }

    /// Fills the disk with a file of zeros (beside the power-loss backing directory, not
    /// through it); removing the returned file frees it.
    fn fill(&self) -> Option<PathBuf> {
        let filler = self.tmpfs.as_ref()?.path().join("filler");
        let mut f = std::fs::File::create(&filler).ok()?;
        let chunk = vec![0u8; 1 << 20];
        use std::io::Write;
        while f.write_all(&chunk).is_ok() {}
        Some(filler)
    }

    /// The power cut: what was not fsync'd is gone, the last write torn. Every process
    /// using the disk must be dead.
    fn cut(&mut self) {
        if let Some(p) = &mut self.power {
            tokio::task::block_in_place(|| p.cut(true));
        }
    }
}

/// The processes and knobs the faults act on.
struct World {
    relay: AsyncMutex<Option<RelayProcess>>,
    relay_addr: String,
    relay_data: PathBuf,
    relay_disk: AsyncMutex<Disk>,
    relay_store: Vec<String>,
    daemon: AsyncMutex<Option<ListenProcess>>,
    daemon_data: PathBuf,
    daemon_disk: AsyncMutex<Disk>,
    daemon_args: Vec<String>,
    ws_proxy: Proxy,
    pg_proxy: Option<Proxy>,
    handler: AsyncMutex<TestHandler>,
    channel: String,
    token: String,
    daemon_kills: AtomicUsize,
    /// Power cuts of the daemon's machine: each may cost it its last outcomes.
    daemon_cuts: AtomicUsize,
    /// Handler stops: each may cut a request the handler already took (a visible repeat).
    handler_stops: AtomicUsize,
}

impl World {
    async fn start_relay(&self) -> RelayProcess {
        let extra: Vec<&str> = self.relay_store.iter().map(String::as_str).collect();
        RelayProcess::start_logged(&bin(), &self.relay_data, &self.relay_addr, ADMIN, &extra).await
    }

    async fn start_daemon(&self) -> ListenProcess {
        let handler = self.handler.lock().await.url("/hook");
        let extra: Vec<&str> = self.daemon_args.iter().map(String::as_str).collect();
        ListenProcess::start_with(
            &bin(),
            &format!("http://{}", self.ws_proxy.addr),
            &self.channel,
            &self.token,
            &handler,
            &self.daemon_data,
            &extra,
        )
    }

    /// Runs `fault` for a random while, then undoes it.
    async fn inject(&self, fault: Fault, rng: &mut StdRng) {
        let hold =
            |rng: &mut StdRng, lo: u64, hi: u64| Duration::from_millis(rng.random_range(lo..hi));
        match fault {
            Fault::RelayKill9 => {
                let mut relay = self.relay.lock().await;
                if let Some(mut r) = relay.take() {
                    r.proc.kill9().await;
                }
                tokio::time::sleep(hold(rng, 0, 1_000)).await;
                *relay = Some(self.start_relay().await);
            }
            Fault::DaemonKill9 => {
                let mut daemon = self.daemon.lock().await;
                if let Some(mut d) = daemon.take() {
                    d.proc.kill9().await;
                }
                self.daemon_kills.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(hold(rng, 0, 1_000)).await;
                *daemon = Some(self.start_daemon().await);
            }
            Fault::WebsocketCut => {
                self.ws_proxy.down();
                tokio::time::sleep(hold(rng, 0, 800)).await;
                self.ws_proxy.up();
            }
            Fault::PostgresGone => {
                let proxy = self.pg_proxy.as_ref().expect("a PostgreSQL proxy");
                proxy.down();
                tokio::time::sleep(hold(rng, 200, 3_000)).await;
                proxy.up();
            }
            Fault::HandlerDown => {
                self.handler_stops.fetch_add(1, Ordering::Relaxed);
                self.handler.lock().await.stop();
                tokio::time::sleep(hold(rng, 500, 5_000)).await;
                self.handler.lock().await.restart().await;
            }
            Fault::HandlerSlow => {
                let d = hold(rng, 20, 300);
                self.handler.lock().await.set_delay(d);
                tokio::time::sleep(hold(rng, 1_000, 5_000)).await;
                self.handler.lock().await.set_delay(Duration::ZERO);
            }
            Fault::Handler5xx => {
                let percent = rng.random_range(20..80);
                self.handler.lock().await.set_flaky(percent);
                tokio::time::sleep(hold(rng, 1_000, 5_000)).await;
                self.handler.lock().await.set_flaky(0);
            }
            Fault::Handler429 => {
                let n = rng.random_range(1..12);
                self.handler.lock().await.script(&vec![429; n]);
            }
            Fault::RelayDiskFull | Fault::DaemonDiskFull => {
                // Held while full: a power cut's roll-back needs the space.
                let disk = if fault == Fault::RelayDiskFull {
                    self.relay_disk.lock().await
                } else {
                    self.daemon_disk.lock().await
                };
                let filler = disk.fill();
                tokio::time::sleep(hold(rng, 500, 4_000)).await;
                if let Some(f) = filler {
                    std::fs::remove_file(f).expect("free the disk");
                }
            }
            Fault::RelayPowerCut => {
                let mut relay = self.relay.lock().await;
                if let Some(mut r) = relay.take() {
                    r.proc.kill9().await;
                }
                self.relay_disk.lock().await.cut();
                tokio::time::sleep(hold(rng, 0, 1_000)).await;
                *relay = Some(self.start_relay().await);
            }
            Fault::DaemonPowerCut => {
                let mut daemon = self.daemon.lock().await;
                if let Some(mut d) = daemon.take() {
                    d.proc.kill9().await;
                }
                self.daemon_cuts.fetch_add(1, Ordering::Relaxed);
                self.daemon_disk.lock().await.cut();
                tokio::time::sleep(hold(rng, 0, 1_000)).await;
                *daemon = Some(self.start_daemon().await);
            }
        }
    }
}

/// `n` senders posting unique Meeting BaaS-shaped bodies (bot `sender % BOTS`) until `stop`,
/// each retrying a body until it gets a 2xx, as a real platform does.
fn senders(url: String, stop: Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<Acked>> {
    (0..SENDERS)
        .map(|s| {
            let (url, stop) = (url.clone(), stop.clone());
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut c = client();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let body = Bytes::from(format!(
                        "{{\"event\":\"bot.status_change\",\"data\":{{\"bot_id\":\"bot-{}\",\
                         \"status\":{{\"code\":\"in_call_recording\"}},\"sender\":{s},\"n\":{i},\
                         \"pad\":\"{}\"}}}}",
                        s % BOTS,
                        "p".repeat(64 + (i as usize * 37) % 900)
                    ));
                    loop {
                        let headers = [("content-type", "application/json")];
                        match request(&c, "POST", &url, &headers, body.clone()).await {
                            Ok(r) if r.status == 200 => {
                                acked.push((r.seq().expect("seq"), body));
                                break;
                            }
                            // 503 (disk full), 429, or the relay being restarted: retry.
                            Ok(_) => {}
                            Err(_) => c = client(),
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(40 + (i * 13) % 120)).await;
                }
                acked
            })
        })
        .collect()
}

/// The promise after power cuts, which may cost the daemon its last outcomes: every
/// acknowledged event delivered byte-identical, and never one skipped: a delivery of a key
/// (a bot, or the channel) never passes an acknowledged event of that key not yet delivered.
/// Deliveries again (from where the journal stood) count as duplicates, not as disorder.
fn verify_no_skip(acked: &Acked, got: &[Received], key: impl Fn(&[u8]) -> String) -> Report {
    let mut pending: HashMap<String, BTreeSet<u64>> = HashMap::new();
    for (seq, body) in acked {
        pending.entry(key(body)).or_default().insert(*seq);
    }
    let bodies: HashMap<u64, &Bytes> = acked.iter().map(|(s, b)| (*s, b)).collect();
    let mut r = Report {
        acknowledged: acked.len(),
        ..Report::default()
    };
    let mut seen = HashSet::new();
    for d in got.iter().filter(|d| d.answered == 200) {
        r.delivered += 1;
        let seq = d.seq();
        let waiting = pending.entry(key(&d.body)).or_default();
        if waiting.first().is_some_and(|first| *first < seq) {
            r.out_of_order += 1;
        }
        waiting.remove(&seq);
        if !seen.insert(seq) {
            r.duplicates += 1;
        }
        if bodies.get(&seq).is_some_and(|b| **b != d.body) {
            r.corrupted += 1;
        }
    }
    r.lost = pending.values().map(BTreeSet::len).sum();
    r
}

/// The bot a soak body belongs to.
fn bot_of(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    v["data"]["bot_id"].as_str().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes long: run by `scripts/chaos --soak DURATION --seed N`"]
async fn soak() {
    let plan = Plan::from_env();
    let _hint = RepeatHint(plan.seed, plan.duration.as_secs());
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let by_bot = rng.random_bool(0.5);
    let schema = if plan.postgres {
        Some(
            Schema::create("soak", "the PostgreSQL soak")
                .await
                .expect("MEETHOOK_TEST_POSTGRES_URL for MEETHOOK_SOAK_STORE=postgres"),
        )
    } else {
        None
    };
    let pg_proxy = match &schema {
        Some(s) => Some(Proxy::start(vec![s.server_addr().await]).await),
        None => None,
    };
    let relay_store = match (&schema, &pg_proxy) {
        (Some(s), Some(p)) => vec!["--store".to_string(), s.url_via(p.addr)],
        _ => Vec::new(),
    };
    let daemon_args: Vec<String> = if by_bot {
        vec![
            "--order".into(),
            "bot".into(),
            "--parallel".into(),
            PARALLEL.to_string(),
        ]
    } else {
        Vec::new()
    };
    let relay_disk = Disk::new(!plan.postgres);
    let daemon_disk = Disk::new(true);
    let mut faults = vec![
        Fault::RelayKill9,
        Fault::DaemonKill9,
        Fault::WebsocketCut,
        Fault::HandlerDown,
        Fault::HandlerSlow,
        Fault::Handler5xx,
        Fault::Handler429,
    ];
    if relay_disk.can_fill() && !plan.postgres {
        faults.push(Fault::RelayDiskFull);
    }
    if daemon_disk.can_fill() {
        faults.push(Fault::DaemonDiskFull);
    }
    if relay_disk.can_cut() {
        faults.push(Fault::RelayPowerCut);
    }
    if daemon_disk.can_cut() {
        faults.push(Fault::DaemonPowerCut);
    }
    if plan.postgres {
        faults.push(Fault::PostgresGone);
    }
    println!(
        "soak: seed={} duration={}s store={} order={} faults={faults:?}",
        plan.seed,
        plan.duration.as_secs(),
        if plan.postgres { "postgres" } else { "sqlite" },
        if by_bot { "bot" } else { "channel" },
    );

    // A relay on a fixed port (restarts keep it), the channel, the handler, the listener.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let relay_addr = format!("127.0.0.1:{port}");
    let (relay_data, daemon_data) = (relay_disk.path.clone(), daemon_disk.path.clone());
    let first = RelayProcess::start_logged(
        &bin(),
        &relay_data,
        &relay_addr,
        ADMIN,
        &relay_store.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    let (channel, token) = create_channel(&first.url(), ADMIN).await;
    let ws_proxy = Proxy::start(vec![first.addr]).await;
    let world = Arc::new(World {
        relay: AsyncMutex::new(Some(first)),
        relay_addr: relay_addr.clone(),
        relay_data,
        relay_disk: AsyncMutex::new(relay_disk),
        relay_store,
        daemon: AsyncMutex::new(None),
        daemon_data,
        daemon_disk: AsyncMutex::new(daemon_disk),
        daemon_args,
        ws_proxy,
        pg_proxy,
        handler: AsyncMutex::new(TestHandler::start().await),
        channel: channel.clone(),
        token,
        daemon_kills: AtomicUsize::new(0),
        daemon_cuts: AtomicUsize::new(0),
        handler_stops: AtomicUsize::new(0),
    });
    *world.daemon.lock().await = Some(world.start_daemon().await);

    let stop = Arc::new(AtomicBool::new(false));
    let load = senders(format!("http://{relay_addr}/hooks/{channel}"), stop.clone());

    // Faults: one starts every 0.2–2 s, each on a task of its own, so they overlap; one kind
    // at a time (a second relay kill while the first restarts would test nothing new).
    let injected: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let busy: Arc<Mutex<Vec<Fault>>> = Arc::default();
    let mut tasks = Vec::new();
    let started = Instant::now();
    while started.elapsed() < plan.duration {
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..2_000))).await;
        let fault = faults[rng.random_range(0..faults.len())];
        if busy.lock().unwrap().contains(&fault) {
            continue;
        }
        busy.lock().unwrap().push(fault);
        *injected
            .lock()
            .unwrap()
            .entry(format!("{fault:?}"))
            .or_default() += 1;
        let (world, busy) = (world.clone(), busy.clone());
        let mut task_rng = StdRng::seed_from_u64(rng.random());
        tasks.push(tokio::spawn(async move {
            world.inject(fault, &mut task_rng).await;
            busy.lock().unwrap().retain(|f| *f != fault);
        }));
    }
    // Every fault ends by undoing itself; then the load stops and the checker waits.
    for t in tasks {
        t.await.expect("fault task");
    }
    stop.store(true, Ordering::Relaxed);
    let mut acked = Acked::new();
    for t in load {
        acked.extend(t.await.expect("sender task"));
    }
    let injected = injected.lock().unwrap().clone();
    println!(
        "soak: {} events acknowledged; faults injected: {injected:?}",
        acked.len()
    );
    assert!(acked.len() > 100, "the load ran: {}", acked.len());

    // Drain: wait while deliveries make progress.
    let want: std::collections::HashSet<u64> = acked.iter().map(|a| a.0).collect();
    let mut last_progress = Instant::now();
    let mut delivered_before = 0;
    let got = loop {
        let got = world.handler.lock().await.received();
        let delivered: std::collections::HashSet<u64> = got
            .iter()
            .filter(|r| r.answered == 200)
            .map(|r| r.seq())
            .collect();
        let missing: Vec<u64> = want.difference(&delivered).copied().collect();
        if missing.is_empty() {
            break got;
        }
        if delivered.len() > delivered_before {
            delivered_before = delivered.len();
            last_progress = Instant::now();
        }
        if last_progress.elapsed() > STALL {
            let mut missing = missing;
            missing.sort_unstable();
            panic!(
                "soak: no delivery for {STALL:?}; {} acknowledged events missing, first {:?}",
                missing.len(),
                &missing[..missing.len().min(20)]
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let kills = world.daemon_kills.load(Ordering::Relaxed);
    let stops = world.handler_stops.load(Ordering::Relaxed);
    let cuts = world.daemon_cuts.load(Ordering::Relaxed);
    // A power cut may cost the daemon its last outcomes: it delivers again from where its
    // journal stood, which the strict check would call disorder.
    let report = match (cuts > 0, by_bot) {
        (true, true) => verify_no_skip(&acked, &got, bot_of),
        (true, false) => verify_no_skip(&acked, &got, |_| String::new()),
        (false, true) => verify_by(&acked, &got, bot_of),
        (false, false) => verify(&acked, &got),
    };
    report.assert_promise("soak", injected.values().sum());
    let in_flight = if by_bot { PARALLEL } else { 1 };
    println!(
        "soak: {} duplicates; daemon crashes {kills}, handler stops {stops}, daemon power cuts {cuts}, {in_flight} in flight",
        report.duplicates
    );
    // A power cut repeats what was delivered after both the relay's last stored ack and the
    // journal's last sync (a quarter of a second of deliveries, at most a few dozen here).
    let allowed = (kills + stops) * in_flight + cuts * POWER_CUT_REPEATS;
    assert!(
        report.duplicates <= allowed,
        "soak: {} duplicates after {kills} daemon crashes, {stops} handler stops and {cuts} \
         daemon power cuts with {in_flight} in flight (at most {allowed})",
        report.duplicates
    );
    println!("soak: passed (seed {})", plan.seed);
    let daemon = world.daemon.lock().await.take();
    if let Some(mut d) = daemon {
        d.proc.kill9().await;
    }
    let relay = world.relay.lock().await.take();
    if let Some(mut r) = relay {
        r.proc.kill9().await;
    }
}
