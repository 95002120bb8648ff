//! Fault injection: load that retries like a real sender, TCP proxies that cut connections
//! mid-stream or go down on demand, and a size-limited tmpfs that fills up on demand.

use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use http_body_util::Full;
use hyper_util::client::legacy::{connect::HttpConnector, Client};

use crate::{client, request, Posted, PATIENCE};

/// A random number from the OS-seeded hasher (no extra dependency, good enough for timing).
pub fn random() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// A random delay in `lo..hi` milliseconds.
pub fn jitter(lo: u64, hi: u64) -> Duration {
    Duration::from_millis(lo + random() % (hi - lo).max(1))
}

/// A TCP proxy to the first upstream that accepts (a load balancer with failover, or a plain
/// proxy in front of PostgreSQL), or with [`Proxy::round_robin`] to the next one in turn; it
/// can be taken down (connections cut, new ones closed at once) and brought back.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    /// Listens on an ephemeral loopback port.
    pub async fn start(upstreams: Vec<SocketAddr>) -> Proxy {
        Self::spawn(upstreams, false).await
    }

    /// A round-robin balancer: each connection goes to the upstream after the previous
    /// connection's, or the next one after it that accepts.
    pub async fn round_robin(upstreams: Vec<SocketAddr>) -> Proxy {
        Self::spawn(upstreams, true).await
    }

    async fn spawn(upstreams: Vec<SocketAddr>, rotate: bool) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let (up2, cut2) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            let mut turn = 0;
            while let Ok((mut down, _)) = listener.accept().await {
                // Subscribed first: a `down()` after the check still cuts this connection.
                let mut gone = cut2.subscribe();
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection close
                }
                let mut order = upstreams.clone();
                if rotate {
                    order.rotate_left(turn % upstreams.len());
                    turn += 1;
                }
                tokio::spawn(async move {
                    for u in order {
                        if let Ok(mut upstream) = TcpStream::connect(u).await {
                            let _ = upstream.set_nodelay(true);
                            let _ = down.set_nodelay(true);
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut down, &mut upstream) => {}
                                _ = gone.changed() => {}
                            }
                            return;
                        }
                    }
                });
            }
        });
        Proxy { addr, up, cut }
    }

    /// Cuts every connection and refuses new ones.
    pub fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.send_modify(|g| *g += 1);
    }

    /// Accepts connections again.
    pub fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// What one sender got acknowledged: `(seq, body)`.
pub type Acked = Vec<(u64, Bytes)>;

/// `n` senders posting unique bodies of about `size` bytes to `url` until `stop` or `max_each`
/// each, retrying a body until it gets a 2xx (as a real platform would).
pub fn senders(
    url: String,
    n: usize,
    max_each: usize,
    size: usize,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Acked>> {
    senders_between(url, n, max_each, size..=size, stop)
}

/// [`senders`] whose bodies have random sizes in `sizes`, spread evenly over the powers of
/// two in between (as many of 1-2 KiB as of 1-2 MiB).
pub fn senders_between(
    url: String,
    n: usize,
    max_each: usize,
    sizes: std::ops::RangeInclusive<usize>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Acked>> {
    let (min, max) = (*sizes.start(), *sizes.end());
    let size = move || {
        if min >= max {
            return min;
        }
        let steps = (max / min.max(1)).ilog2() as u64 + 1;
        let lo = min << (random() % steps);
        (lo + random() as usize % lo.max(1)).min(max)
    };
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
                    let head = format!("{{\"sender\":{s},\"n\":{i},\"pad\":\"");
                    let pad = "p".repeat(size().saturating_sub(head.len() + 2));
                    let body = Bytes::from(format!("{head}{pad}\"}}"));
                    let urls = std::slice::from_ref(&url);
                    let seq =
                        post_until_acked(&mut c, urls, 0, &body, |_, _, c| *c = client()).await;
                    acked.push((seq, body));
                }
                acked
            })
        })
        .collect()
}

/// `n` senders, each posting `max_each` unique bodies `pace` apart, sender `s`'s `i`-th to
/// `urls[(s + i) % len]`; a failure (connection error, 503, …) retries the same body on the
/// next URL, as a sender behind a load balancer would. 503s are counted in `unavailable`; any
/// other answer but 200 panics, as does a body not acknowledged within [`PATIENCE`].
pub fn spray(
    urls: Vec<String>,
    n: usize,
    max_each: usize,
    pace: Duration,
    unavailable: Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<Acked>> {
    (0..n)
        .map(|s| {
            let (urls, unavailable) = (urls.clone(), unavailable.clone());
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut c = client();
                let deadline = tokio::time::Instant::now() + PATIENCE;
                for i in 0..max_each {
                    tokio::time::sleep(pace).await;
                    let body = Bytes::from(format!(
                        "{{\"sender\":{s},\"n\":{i},\"pad\":\"{}\"}}",
                        "p".repeat(200)
                    ));
                    let failed = |url: &str, r: Result<Posted, String>, c: &mut _| {
                        match r {
                            Ok(r) if r.status == 503 => {
                                unavailable.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) => panic!("{url}: unexpected {} {:?}", r.status, r.body),
                            Err(_) => *c = client(),
                        }
                        assert!(
                            tokio::time::Instant::now() < deadline,
                            "sender {s} could not get event {i} acknowledged"
                        );
                    };
                    let seq = post_until_acked(&mut c, &urls, s + i, &body, failed).await;
                    acked.push((seq, body));
                }
                acked
            })
        })
        .collect()
}

/// POSTs `body` as JSON to `urls[at]`, then on each failure (told to `failed`, which may
/// renew the client) to the next URL 20 ms later, until one answers 200; returns the seq.
async fn post_until_acked(
    c: &mut Client<HttpConnector, Full<Bytes>>,
    urls: &[String],
    mut at: usize,
    body: &Bytes,
    mut failed: impl FnMut(&str, Result<Posted, String>, &mut Client<HttpConnector, Full<Bytes>>),
) -> u64 {
    loop {
        let url = &urls[at % urls.len()];
        let r = request(
            c,
            "POST",
            url,
            &[("content-type", "application/json")],
            body.clone(),
        )
        .await;
        match r {
            Ok(r) if r.status == 200 => return r.seq().expect("seq"),
            r => failed(url, r, c),
        }
        at += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (at most the handler's patience) until it has delivered every acknowledged seq.
pub async fn wait_all(handler: &crate::TestHandler, acked: &Acked) -> Vec<crate::Received> {
    let want: std::collections::HashSet<u64> = acked.iter().map(|a| a.0).collect();
    handler
        .wait_until("every acknowledged event", |log| {
            let got: std::collections::HashSet<u64> = log
                .iter()
                .filter(|r| r.answered == 200)
                .map(|r| r.seq())
                .collect();
            want.is_subset(&got)
        })
        .await
}

/// Joins sender tasks.
pub async fn collect(tasks: Vec<tokio::task::JoinHandle<Acked>>) -> Acked {
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("sender task"));
    }
    all
}

/// A TCP proxy that cuts each of its first `cuts` connections after a random number of bytes
/// from upstream (so mid-frame), then forwards faithfully.
pub struct CutProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Connections cut so far.
    pub cut: Arc<AtomicU32>,
}

impl CutProxy {
    /// Proxies to `upstream`.
    pub async fn start(upstream: SocketAddr, cuts: u32) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicU32::new(0));
        let counter = cut.clone();
        tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let Ok(up) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let budget = if counter.load(Ordering::Relaxed) < cuts {
                    Some(1024 + random() as usize % (256 << 10))
                } else {
                    None
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let (mut dr, mut dw) = down.into_split();
                    let (mut ur, mut uw) = up.into_split();
                    let upward = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut dr, &mut uw).await;
                    });
                    let mut left = budget;
                    let mut buf = vec![0u8; 16 << 10];
                    loop {
                        let n = match ur.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let n = match left {
                            Some(l) if n >= l => {
                                let _ = dw.write_all(&buf[..l]).await;
                                counter.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            Some(l) => {
                                left = Some(l - n);
                                n
                            }
                            None => n,
                        };
                        if dw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    upward.abort();
                });
            }
        });
        CutProxy { addr, cut }
    }
}

/// A size-limited tmpfs mounted for one test (needs root; `None` where mounting is refused).
pub struct Tmpfs {
    /// The mount point.
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `"2m"`).
    pub fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then(|| Tmpfs {
            path: dir.path().to_path_buf(),
            _dir: dir,
        })
    }

    /// Changes the size (the "disk" fills or gets space back).
    pub fn resize(&self, size: &str) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount tmpfs");
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// What a fault run came to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Events acknowledged to senders.
    pub acknowledged: usize,
    /// Deliveries the handler answered 2xx.
    pub delivered: usize,
    /// Acknowledged events never delivered (must be 0).
    pub lost: usize,
    /// Deliveries that went backwards in seq (must be 0).
    pub out_of_order: usize,
    /// Deliveries of a seq already delivered just before (allowed after a daemon crash).
    pub duplicates: usize,
    /// Deliveries whose body differs from what was acknowledged for that seq (must be 0).
    pub corrupted: usize,
}

/// Checks deliveries against acknowledgements.
pub fn verify(acked: &Acked, got: &[crate::Received]) -> Report {
    let delivered: Vec<&crate::Received> = got
        .iter()
        .filter(|r| (200..300).contains(&r.answered))
        .collect();
    let by_seq: std::collections::HashMap<u64, &Bytes> =
        acked.iter().map(|(s, b)| (*s, b)).collect();
    let mut r = Report {
        acknowledged: acked.len(),
        delivered: delivered.len(),
        ..Report::default()
    };
    let mut last = 0u64;
    let mut seen = std::collections::HashSet::new();
    for d in &delivered {
        let seq = d.seq();
        if seq == last {
            r.duplicates += 1;
        } else if seq < last {
            r.out_of_order += 1;
        }
        last = last.max(seq);
        seen.insert(seq);
        if by_seq.get(&seq).is_some_and(|b| **b != d.body) {
            r.corrupted += 1;
        }
    }
    r.lost = acked.iter().filter(|(s, _)| !seen.contains(s)).count();
    r
}

/// [`verify`] for each key on its own (`key` of a body: its bot, say), summed: the order
/// checked is the order within each key.
pub fn verify_by(acked: &Acked, got: &[crate::Received], key: impl Fn(&[u8]) -> String) -> Report {
    let keys: std::collections::BTreeSet<String> = acked.iter().map(|(_, b)| key(b)).collect();
    let mut total = Report::default();
    for k in keys {
        let acked: Acked = acked.iter().filter(|(_, b)| key(b) == k).cloned().collect();
        let got: Vec<crate::Received> = got.iter().filter(|r| key(&r.body) == k).cloned().collect();
        let r = verify(&acked, &got);
        total.acknowledged += r.acknowledged;
        total.delivered += r.delivered;
        total.lost += r.lost;
        total.out_of_order += r.out_of_order;
        total.duplicates += r.duplicates;
        total.corrupted += r.corrupted;
    }
    total
}

impl Report {
    /// Prints the figures line and asserts the promise.
    pub fn assert_promise(&self, fault: &str, injected: usize) {
        println!(
            "chaos: fault={fault} injected={injected} acknowledged={} delivered={} lost={} out_of_order={} duplicates={} corrupted={}",
            self.acknowledged, self.delivered, self.lost, self.out_of_order, self.duplicates, self.corrupted
        );
        assert_eq!(
            (self.lost, self.out_of_order, self.corrupted),
            (0, 0, 0),
            "{fault}: {self:?}"
        );
    }
}
