//! `listen --save-recordings`: the recording is saved, and delivery never waits for it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use meethook_daemon::DaemonEvent;
use meethook_testkit::{post, tempdir, Setup};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::util::BIN;

/// A file server that sends `data` slowly (16 pieces, 100 ms apart); `done` is set at the end.
async fn slow_server(data: Arc<Vec<u8>>, done: Arc<AtomicBool>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (data, done) = (data.clone(), done.clone());
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: video/mp4\r\ncontent-length: {}\r\n\r\n",
                    data.len()
                );
                s.write_all(head.as_bytes()).await.unwrap();
                for piece in data.chunks(data.len().div_ceil(16)) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if s.write_all(piece).await.is_err() {
                        return;
                    }
                }
                done.store(true, Ordering::SeqCst);
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_are_saved_in_the_background() {
    let mp4: Arc<Vec<u8>> = Arc::new((0..512 * 1024).map(|i| (i % 251) as u8).collect());
    let done = Arc::new(AtomicBool::new(false));
    let files = slow_server(mp4.clone(), done.clone()).await;
    let s = Setup::start().await;
    let rec_dir = tempdir();
    let daemon = s.daemon_with("/", |cfg| {
        cfg.save_recordings = Some(rec_dir.path().to_path_buf());
        cfg.max_recording_size = 1 << 20;
    });
    let (relay, ch, _, handler, jdir) = s.into_parts();

    let complete = format!(
        r#"{{"event":"complete","data":{{"bot_id":"8d2f4c1a-0000-0000-0000-000000000001","mp4":"http://{files}/bots/8d2f.mp4?X-Amz-Expires=7200&X-Amz-Signature=abc","speakers":["Alice"]}}}}"#
    );
    post(&relay.hook(&ch), &[], complete).await;
    for i in 0..5 {
        post(&relay.hook(&ch), &[], format!("after {i}")).await;
    }
    handler.wait_delivered(6).await;
    assert!(
        !done.load(Ordering::SeqCst),
        "later events were delivered while the download ran"
    );

    let saved = rec_dir
        .path()
        .join("8d2f4c1a-0000-0000-0000-000000000001-1-video.mp4");
    let saved_event = daemon
        .events
        .wait_for("the recording saved", |e| {
            matches!(e, DaemonEvent::RecordingSaved { .. })
        })
        .await;
    let DaemonEvent::RecordingSaved {
        seq,
        kind,
        path,
        bytes,
    } = saved_event
    else {
        unreachable!()
    };
    assert_eq!((seq, kind, bytes), (1, "video", mp4.len() as u64));
    assert_eq!(std::path::Path::new(&path), saved);
    assert_eq!(
        std::fs::read(&saved).expect("recording saved"),
        *mp4,
        "byte-identical"
    );
    let journal = meethook_daemon::journal::Journal::open(jdir.path()).unwrap();
    // The journal says so before the daemon reports it.
    let recs = journal.recordings(&ch, 1).unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(
        (recs[0].state.as_str(), recs[0].bytes),
        ("saved", mp4.len() as u64)
    );
    daemon.stop().await.unwrap();

    // `events show` names the file.
    let out = std::process::Command::new(BIN)
        .args(["events", "show", "1", "--data"])
        .arg(jdir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("artifacts:") && text.contains("-1-video.mp4") && text.contains("saved →"),
        "{text}"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_over_the_cap_are_refused_and_removed() {
    let big: Arc<Vec<u8>> = Arc::new(vec![7u8; 256 * 1024]);
    let files = slow_server(big, Arc::new(AtomicBool::new(false))).await;
    let s = Setup::start().await;
    let rec_dir = tempdir();
    let daemon = s.daemon_with("/", |cfg| {
        cfg.save_recordings = Some(rec_dir.path().to_path_buf());
        cfg.max_recording_size = 64 * 1024;
    });
    let (relay, ch, _, handler, jdir) = s.into_parts();
    let v2 = format!(
        r#"{{"event":"bot.completed","data":{{"bot_id":"b2","event_id":null,"video":"http://{files}/v.mp4","audio":null}},"extra":null}}"#
    );
    post(&relay.hook(&ch), &[], v2).await;
    handler.wait_delivered(1).await;
    let journal = meethook_daemon::journal::Journal::open(jdir.path()).unwrap();
    daemon
        .events
        .wait_for("the recording failed", |e| {
            matches!(e, DaemonEvent::RecordingFailed { .. })
        })
        .await;
    let recs = journal.recordings(&ch, 1).unwrap();
    assert_eq!(recs[0].state, "failed");
    assert!(recs[0]
        .error
        .as_deref()
        .unwrap_or("")
        .contains("max-recording-size"));
    assert_eq!(
        std::fs::read_dir(rec_dir.path()).unwrap().count(),
        0,
        "no partial file left"
    );
    daemon.stop().await.unwrap();
    relay.stop().await;
}

/// A file server that answers every GET with `data` at once; counts the requests.
pub(crate) async fn file_server(data: &'static [u8]) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", data.len());
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(data).await;
            });
        }
    });
    (addr, hits)
}

/// `trigger meeting-success --artifacts-url` through a relay to a daemon; waits until all 8
/// events are settled. Returns the journal dir, the recordings dir and the server's hits.
async fn trigger_with_local_artifacts(
    events: Vec<String>,
) -> (tempfile::TempDir, tempfile::TempDir, Arc<AtomicUsize>) {
    const MP4: &[u8] = b"not really an mp4, but served locally";
    let (files, hits) = file_server(MP4).await;
    let s = Setup::start().await;
    let rec_dir = tempdir();
    let daemon = s.daemon_with("/", |cfg| {
        cfg.save_recordings = Some(rec_dir.path().to_path_buf());
        cfg.filter.events = events;
    });
    let (relay, ch, _, _handler, jdir) = s.into_parts();
    let out = tokio::process::Command::new(BIN)
        .args(["trigger", "meeting-success", "--to", &relay.hook(&ch)])
        .args(["--artifacts-url", &format!("http://{files}")])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let journal = meethook_daemon::journal::Journal::open(jdir.path()).unwrap();
    for _ in 0..500 {
        if journal.cursors(&ch).unwrap().1 >= 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(journal.cursors(&ch).unwrap().1, 8, "all 8 events settled");
    if rec_dir.path().read_dir().unwrap().count() == 0 && hits.load(Ordering::SeqCst) > 0 {
        // A download started: give it the moment it needs to land.
        for _ in 0..250 {
            if rec_dir.path().read_dir().unwrap().count() > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    daemon.stop().await.unwrap();
    relay.stop().await;
    (jdir, rec_dir, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_recordings_can_come_from_a_local_server() {
    let (_j, rec_dir, hits) = trigger_with_local_artifacts(Vec::new()).await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "the mp4 link points at the local server"
    );
    let saved: Vec<_> = rec_dir
        .path()
        .read_dir()
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(saved.len(), 1, "{saved:?}");
    assert!(
        saved[0].to_string_lossy().ends_with("-8-video.mp4"),
        "{saved:?}"
    );
    assert_eq!(
        std::fs::read(&saved[0]).unwrap(),
        b"not really an mp4, but served locally"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_out_events_are_not_recorded() {
    // Only status changes are wanted: `complete` is skipped, so its recording is not fetched.
    let (_j, rec_dir, hits) = trigger_with_local_artifacts(vec!["bot.*".into()]).await;
    // A fixed wait, on purpose: checks that nothing is fetched later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    assert_eq!(rec_dir.path().read_dir().unwrap().count(), 0);
}

/// A restart resumes the artifacts a stop cut short, and leaves the saved ones alone: their
/// links may be dead by then, and a copy must not turn into a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_what_was_cut_short_and_keeps_what_was_saved() {
    let video = vec![5u8; 4096];
    let s3 = crate::artifacts::files(
        [("/v.mp4".to_string(), video.clone())]
            .into_iter()
            .collect(),
        "never",
    )
    .await;
    let s = Setup::start().await;
    let rec_dir = tempdir();
    let tweak = |cfg: &mut meethook_daemon::DaemonConfig| {
        cfg.save_recordings = Some(rec_dir.path().to_path_buf());
    };
    let daemon = s.daemon_with("/", tweak);
    let body = format!(
        r#"{{"event":"bot.completed","data":{{"bot_id":"b1","event_id":null,"video":"http://{0}/v.mp4","audio":"http://{0}/a.flac"}},"extra":null}}"#,
        s3.addr
    );
    post(&s.relay.hook(&s.channel), &[], body).await;
    daemon
        .events
        .wait_for("the audio fails (no such file)", |e| {
            matches!(e, DaemonEvent::RecordingFailed { kind: "audio", .. })
        })
        .await;
    daemon
        .events
        .wait_for("the video is saved", |e| {
            matches!(e, DaemonEvent::RecordingSaved { kind: "video", .. })
        })
        .await;
    daemon.stop().await.unwrap();
    // As if the stop had cut the audio short; and now every link is dead.
    let journal = meethook_daemon::journal::Journal::open(s.dir.path()).unwrap();
    journal
        .recording_started(&s.channel, 1, "audio", "/nowhere/a.flac", 0)
        .unwrap();
    s3.alive.store(false, Ordering::SeqCst);
    let daemon = s.daemon_with("/", tweak);
    daemon
        .events
        .wait_for("the audio is tried again", |e| {
            matches!(e, DaemonEvent::RecordingFailed { kind: "audio", .. })
        })
        .await;
    let recs = journal.recordings(&s.channel, 1).unwrap();
    let state = |k: &str| recs.iter().find(|r| r.kind == k).map(|r| r.state.clone());
    assert_eq!(state("video").as_deref(), Some("saved"), "{recs:?}");
    assert_eq!(state("audio").as_deref(), Some("failed"), "{recs:?}");
    daemon.stop().await.unwrap();
}
