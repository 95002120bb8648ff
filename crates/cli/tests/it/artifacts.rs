//! Artifacts that outlive their links: `listen --save-recordings` keeps every artifact of a
//! `bot.completed` (resuming a transfer cut off half-way), and a week later, the links dead,
//! `replay --local-artifacts --resign` sends the event again pointing at the copies the
//! inspector serves: the handler downloads the saved bytes and the signature verifies.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use meethook_proto::meeting::Webhook;
use meethook_proto::signature::SigningKey;
use meethook_testkit::{client, request, tempdir, TestHandler, TestRelay, PATIENCE};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::util::{interrupt, json_lines, meethook, Listen, BIN};

const BOT: &str = "8d2f4c1a-5b6e-4f7a-9c3d-2e1f0a9b8c7d";
const SENDER: &str = "whsec_c2VuZGVyLXNlY3JldC1vZi10aGUtb3JpZ2luYWwtc2VuZGVy";
const LOCAL: &str = "whsec_bG9jYWwtaGFuZGxlci1zZWNyZXQtZm9yLXJlcGxheXM=";

/// A stand-in for S3: serves `files` by path, honours `Range: bytes=N-` (206), cuts the first
/// transfer of `cut` off half-way, and answers 403 (an expired link) once `alive` is false.
/// Counts the requests that asked for a range.
pub(crate) struct Files {
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) alive: Arc<AtomicBool>,
    ranged: Arc<AtomicUsize>,
}

pub(crate) async fn files(files: HashMap<String, Vec<u8>>, cut: &'static str) -> Files {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (alive, ranged) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicUsize::new(0)),
    );
    let files = Arc::new(files);
    let first_cut = Arc::new(AtomicBool::new(true));
    let (a, r) = (alive.clone(), ranged.clone());
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let (files, alive, ranged, first_cut) =
                (files.clone(), a.clone(), r.clone(), first_cut.clone());
            tokio::spawn(async move {
                let mut s = BufReader::new(s);
                let mut line = String::new();
                s.read_line(&mut line).await.unwrap_or(0);
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let path = path.split('?').next().unwrap_or("").to_string();
                let mut from = 0usize;
                loop {
                    let mut h = String::new();
                    if s.read_line(&mut h).await.unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("range: bytes=") {
                        from = v.trim().trim_end_matches('-').parse().unwrap_or(0);
                        ranged.fetch_add(1, Ordering::SeqCst);
                    }
                }
                let mut s = s.into_inner();
                let data = match files.get(&path) {
                    Some(d) if alive.load(Ordering::SeqCst) => d,
                    _ => {
                        let _ = s
                            .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
                            .await;
                        return;
                    }
                };
                let (status, body) = if from > 0 {
                    ("206 Partial Content", &data[from..])
                } else {
                    ("200 OK", &data[..])
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                s.write_all(head.as_bytes()).await.unwrap();
                if path.ends_with(cut) && from == 0 && first_cut.swap(false, Ordering::SeqCst) {
                    // Half, then the connection drops: the saver must resume from there.
                    s.write_all(&body[..body.len() / 2]).await.unwrap();
                    return;
                }
                let _ = s.write_all(body).await;
            });
        }
    });
    Files {
        addr,
        alive,
        ranged,
    }
}

fn sha_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// The header `name` of a received request.
fn header(r: &meethook_testkit::Received, name: &str) -> String {
    r.header(name).unwrap_or_else(|| panic!("no {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_week_later_replay_local_artifacts_resigned_serves_the_saved_bytes() {
    // Five artifacts, each its own bytes; the video is big enough to be cut mid-way.
    let names = [
        ("video", "video.mp4"),
        ("audio", "output.flac"),
        ("diarization", "diarization.jsonl"),
        ("raw_transcription", "raw_transcription.json"),
        ("transcription", "transcription.json"),
    ];
    let content: HashMap<String, Vec<u8>> = names
        .iter()
        .enumerate()
        .map(|(i, (_, file))| {
            let n = if i == 0 { 700 * 1024 } else { 3000 + i * 17 };
            let bytes = (0..n).map(|j| ((j * 7 + i * 31) % 251) as u8).collect();
            (format!("/{BOT}/{file}"), bytes)
        })
        .collect();
    let s3 = files(content.clone(), "video.mp4").await;

    // The meeting: a signed v2 scenario whose links point at the stand-in.
    let relay = TestRelay::start().await;
    let (ch, token) = relay.channel(None).await;
    let (code, out, err) = meethook(&[
        "trigger",
        "v2-meeting-success",
        "--to",
        &relay.hook(&ch),
        "--bot-id",
        BOT,
        "--signing-secret",
        SENDER,
        "--artifacts-url",
        &format!("http://{}", s3.addr),
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let handler = TestHandler::start().await;
    let data = tempdir();
    let rec = tempdir();
    let d = data.path().to_str().unwrap();
    let listen = Listen::start(
        &relay,
        &ch,
        &token,
        &handler.url("/h"),
        d,
        &["--save-recordings", rec.path().to_str().unwrap()],
    );
    listen
        .wait_line("#8 delivered", |l| l.contains("#8") && l.contains("→ 200"))
        .await;
    // Wait for the five saved artifacts, each with its checksum.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let shown = loop {
        let (code, out, err) = meethook(&["events", "show", "8", "--data", d, "--json"]).await;
        assert_eq!(code, 0, "{err}");
        let v = json_lines(&out).remove(0);
        let saved = v["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["saved"] == "saved")
            .count();
        if saved == 5 {
            break v;
        }
        assert!(tokio::time::Instant::now() < deadline, "not all saved: {v}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        s3.ranged.load(Ordering::SeqCst) >= 1,
        "the cut-off video was resumed with a Range request"
    );
    for a in shown["artifacts"].as_array().unwrap() {
        let file = names.iter().find(|(k, _)| *k == a["kind"]).unwrap().1;
        let want = &content[&format!("/{BOT}/{file}")];
        assert_eq!(a["sha256"], sha_hex(want), "{a}");
        assert_eq!(a["bytes"], want.len() as u64);
        let on_disk = std::fs::read(a["path"].as_str().unwrap()).unwrap();
        assert_eq!(&on_disk, want, "{}", a["kind"]);
    }
    drop(listen);

    // A week later: the links are dead. `events show` says which copies exist.
    s3.alive.store(false, Ordering::SeqCst);
    let (_, text, _) = meethook(&["events", "show", "8", "--data", d]).await;
    assert!(text.contains("artifacts:"), "{text}");
    assert_eq!(
        text.matches("replay --local-artifacts sends this copy")
            .count(),
        5,
        "{text}"
    );

    let mut inspect = tokio::process::Command::new(BIN)
        .args(["inspect", "--inspect", "127.0.0.1:0", "--data", d])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(inspect.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(PATIENCE, async {
        loop {
            let l = lines.next_line().await.unwrap().expect("an Inspector line");
            if let Some(rest) = l.strip_prefix("Inspector: ") {
                return rest.split_whitespace().next().unwrap().to_string();
            }
        }
    })
    .await
    .unwrap();

    let week_later = TestHandler::start().await;
    let (code, out, err) = meethook(&[
        "replay",
        "8",
        "--data",
        d,
        "--local-artifacts",
        &url,
        "--resign",
        LOCAL,
        "--to",
        &week_later.url("/h"),
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let got = week_later.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    // The signature verifies with the local secret (Standard Webhooks; the test vectors are
    // in proto::signature), over the rewritten body, with a fresh timestamp.
    let key = SigningKey::from_secret(LOCAL).unwrap();
    let (id, ts, sig) = (
        header(r, "svix-id"),
        header(r, "svix-timestamp"),
        header(r, "svix-signature"),
    );
    assert!(key.verify(&id, &ts, &r.body, &sig), "signature verifies");
    svix_verifies(LOCAL, &id, &ts, &sig, &r.body);
    // Only the five URL fields changed: the stored body with those strings swapped is the
    // received body, byte for byte.
    let (_, stored, _) =
        crate::util::meethook_bytes(&["events", "show", "8", "--data", d, "--raw"]).await;
    let stored_hook = Webhook::parse(&stored).unwrap();
    let mut expected = String::from_utf8(stored.clone()).unwrap();
    for a in stored_hook.artifacts() {
        let local = format!("{url}/artifacts/8/{}", a.name);
        expected = expected.replacen(
            &serde_json::to_string(a.url).unwrap(),
            &serde_json::to_string(&local).unwrap(),
            1,
        );
    }
    assert_eq!(String::from_utf8(r.body.to_vec()).unwrap(), expected);
    // The handler's downloads of every artifact return the saved bytes.
    let hook = Webhook::parse(&r.body).unwrap();
    let links = hook.artifacts();
    assert_eq!(links.len(), 5);
    for a in links {
        assert!(a.url.starts_with(&url), "{}", a.url);
        let resp = request(&client(), "GET", a.url, &[], "").await.unwrap();
        assert_eq!(resp.status, 200, "{}", a.url);
        let file = names.iter().find(|(k, _)| *k == a.name).unwrap().1;
        assert_eq!(
            &resp.body[..],
            &content[&format!("/{BOT}/{file}")][..],
            "{}",
            a.name
        );
    }
    // An artifact never saved is a plain 404 that says so.
    let missing = request(
        &client(),
        "GET",
        &format!("{url}/artifacts/3/video"),
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!(missing.status, 404);
    assert!(String::from_utf8_lossy(&missing.body).contains("--save-recordings"));
    interrupt(&inspect);
    let _ = inspect.wait().await;
    relay.stop().await;
}

/// Checks the signature with the `svix` Python library too, when it is installed
/// (`pip install svix`); says so when it is not.
fn svix_verifies(secret: &str, id: &str, ts: &str, sig: &str, body: &[u8]) {
    let script = "import sys, svix\n\
        from svix.webhooks import Webhook\n\
        body = sys.stdin.buffer.read()\n\
        Webhook(sys.argv[1]).verify(body, {'svix-id': sys.argv[2], 'svix-timestamp': sys.argv[3], 'svix-signature': sys.argv[4]})\n\
        print('ok')";
    let child = std::process::Command::new("python3")
        .args(["-c", script, secret, id, ts, sig])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("svix check skipped: no python3");
        return;
    };
    use std::io::Write;
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("No module named 'svix'") {
        eprintln!("svix check skipped: pip install svix to run it");
        return;
    }
    assert!(out.status.success(), "svix rejected the signature: {err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}
