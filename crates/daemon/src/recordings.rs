//! `listen --save-recordings DIR`: every artifact of a final event (v2 `bot.completed`: video,
//! audio, diarization, raw transcription, transcription; v1 `complete`: its mp4 and audio) is
//! downloaded the moment the event is journaled (presigned links expire within hours), in
//! the background, streamed to disk, size-capped, resumed with HTTP Range when a transfer is
//! cut off (and at the next start), and noted in the journal with its SHA-256. Delivery never
//! waits for a download.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use meethook_proto::human::human_size as human;
use meethook_proto::meeting::{Summary, Webhook};
use meethook_proto::Event;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use crate::journal::Journal;
use crate::observe::{DaemonEvent, Observers};
use crate::{now_ms, DaemonError};

/// Downloads running at once; more wait their turn.
const PARALLEL: usize = 2;
/// Longest silence from the server during a download.
const STALL: Duration = Duration::from_secs(60);
/// Requests per artifact when transfers are cut off (each resumes where the last stopped).
const TRIES: u32 = 4;

/// How one request for an artifact ended badly.
enum Fetch {
    /// The transfer stopped part-way (bytes so far): the next request resumes it.
    CutOff(u64, String),
    /// Refused, too big, or a local error: not worth resuming.
    Failed(u64, String),
}

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// Starts and tracks recording downloads for one channel.
pub struct Recorder {
    dir: PathBuf,
    max_bytes: u64,
    channel: String,
    observers: Observers,
    journal: Journal,
    client: Client<Https, Empty<Bytes>>,
    slots: Arc<Semaphore>,
}

impl Recorder {
    /// Saves into `dir` (created if missing), at most `max_bytes` per file.
    pub fn new(
        dir: &Path,
        max_bytes: u64,
        channel: &str,
        observers: Observers,
        journal: Journal,
    ) -> Result<Arc<Recorder>, DaemonError> {
        // Durable, like each file's name below: "saved" must survive a power cut.
        meethook_disk::dir::create_dir_durable(dir, 0o777).map_err(|e| {
            DaemonError::Config(format!(
                "cannot create --save-recordings {}: {e}",
                dir.display()
            ))
        })?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| DaemonError::Config(format!("loading system root certificates: {e}")))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Arc::new(Recorder {
            dir: dir.to_path_buf(),
            max_bytes,
            channel: channel.to_string(),
            observers,
            journal,
            client: Client::builder(TokioExecutor::new()).build(https),
            slots: Arc::new(Semaphore::new(PARALLEL)),
        }))
    }

    /// Starts downloads for whatever recordings `ev` carries (only final events have any;
    /// `summary` spares parsing the others).
    pub fn spawn_for(self: &Arc<Self>, ev: &Event, summary: Option<&Summary>) {
        if !summary.is_some_and(|s| matches!(s.event.as_str(), "complete" | "bot.completed")) {
            return;
        }
        let Some(hook) = Webhook::parse(&ev.body) else {
            return;
        };
        let bot = hook.event.bot_id().unwrap_or("bot").to_string();
        for a in hook.artifacts() {
            let (kind, url) = (a.name, a.url);
            let file = self.dir.join(file_name(&bot, ev.seq, kind, url));
            let (me, url, seq) = (self.clone(), url.to_string(), ev.seq);
            tokio::spawn(async move { me.download(seq, kind, &url, &file).await });
        }
    }

    /// Restarts downloads a previous run did not finish.
    pub async fn resume(self: &Arc<Self>) {
        let (j, ch) = (self.journal.clone(), self.channel.clone());
        let found = tokio::task::spawn_blocking(move || {
            let seqs = j.interrupted_recordings(&ch)?;
            seqs.into_iter()
                .filter_map(|s| j.get(&ch, s).transpose())
                .collect::<Result<Vec<_>, _>>()
        })
        .await;
        if let Ok(Ok(stored)) = found {
            for s in stored {
                tracing::info!(
                    seq = s.event.seq,
                    "resuming an interrupted recording download"
                );
                self.spawn_for(&s.event, Summary::parse(&s.event.body).as_ref());
            }
        }
    }

    async fn download(&self, seq: u64, kind: &'static str, url: &str, file: &Path) {
        // A restart resumes an event's unfinished artifacts: the saved ones stay as they are
        // (their links may be dead by now).
        let (j, ch) = (self.journal.clone(), self.channel.clone());
        if let Ok(Ok(rows)) = tokio::task::spawn_blocking(move || j.recordings(&ch, seq)).await {
            if rows
                .iter()
                .any(|r| r.kind == kind && r.state == "saved" && Path::new(&r.path).exists())
            {
                return;
            }
        }
        let path = file.display().to_string();
        self.note(move |j, ch| j.recording_started(ch, seq, kind, &path, now_ms()))
            .await;
        let _slot = self.slots.acquire().await;
        let result = self.fetch(seq, url, file).await;
        let (bytes, error, sha256) = match result {
            Ok((n, sha)) => (n, None, Some(sha)),
            Err((n, e)) => (n, Some(e), None),
        };
        // Noted in the journal first: whoever hears of it can read it there.
        let noted = error.clone();
        self.note(move |j, ch| {
            j.recording_finished(
                ch,
                seq,
                kind,
                bytes,
                noted.as_deref(),
                sha256.as_deref(),
                now_ms(),
            )
        })
        .await;
        let path = file.display().to_string();
        self.observers.emit(match error {
            None => DaemonEvent::RecordingSaved {
                seq,
                kind,
                path,
                bytes,
            },
            Some(error) => DaemonEvent::RecordingFailed {
                seq,
                kind,
                path,
                bytes,
                error,
            },
        });
    }

    /// Downloads `url` into `file`, resuming a cut-off transfer with HTTP Range up to
    /// [`TRIES`] times; the byte count and SHA-256, or the bytes kept and the error.
    async fn fetch(
        &self,
        seq: u64,
        url: &str,
        file: &Path,
    ) -> Result<(u64, String), (u64, String)> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self.fetch_once(seq, url, file).await {
                Err(Fetch::CutOff(n, e)) if tries < TRIES => {
                    tracing::info!(seq, bytes = n, error = %e, "artifact download cut off; resuming");
                }
                Err(Fetch::CutOff(n, e) | Fetch::Failed(n, e)) => return Err((n, e)),
                Ok(done) => return Ok(done),
            }
        }
    }

    /// One request for `url`: from the start, or with `Range` from what `file`'s `.part`
    /// already holds. The `.part` survives a cut-off transfer (for the next request or the
    /// next start), not a refusal.
    async fn fetch_once(&self, seq: u64, url: &str, file: &Path) -> Result<(u64, String), Fetch> {
        let failed = |e: String| Fetch::Failed(0, e);
        let uri: http::Uri = url.parse().map_err(|_| failed("not a valid URL".into()))?;
        let host = uri.host().unwrap_or("?").to_string();
        let part = file.with_extension(format!(
            "{}part",
            file.extension()
                .map(|e| format!("{}.", e.to_string_lossy()))
                .unwrap_or_default()
        ));
        let have = tokio::fs::metadata(&part)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        let mut req = http::Request::get(uri);
        if have > 0 {
            req = req.header(http::header::RANGE, format!("bytes={have}-"));
        }
        let req = req.body(Empty::new()).map_err(|e| failed(e.to_string()))?;
        let resp = tokio::time::timeout(STALL, self.client.request(req))
            .await
            .map_err(|_| Fetch::CutOff(have, format!("{host} did not answer")))?
            .map_err(|e| Fetch::CutOff(have, format!("cannot fetch from {host}: {e}")))?;
        let resumed = have > 0 && resp.status() == http::StatusCode::PARTIAL_CONTENT;
        if !resp.status().is_success() {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(failed(format!(
                "{host} answered {} (has the link expired?)",
                resp.status()
            )));
        }
        let start = if resumed { have } else { 0 };
        let total = resp
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|n| n + start);
        if total.is_some_and(|t| t > self.max_bytes) {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(failed(format!(
                "{} is over --max-recording-size",
                human(total.unwrap_or(0))
            )));
        }
        // The bytes kept from before count toward the checksum: hash them first.
        let mut sha = Sha256::new();
        let mut out = if resumed {
            let mut old = tokio::fs::File::open(&part)
                .await
                .map_err(|e| failed(format!("{}: {e}", part.display())))?;
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = old
                    .read(&mut buf)
                    .await
                    .map_err(|e| failed(e.to_string()))?;
                if n == 0 {
                    break;
                }
                sha.update(&buf[..n]);
            }
            tokio::fs::OpenOptions::new().append(true).open(&part).await
        } else {
            tokio::fs::File::create(&part).await
        }
        .map_err(|e| failed(format!("{}: {e}", part.display())))?;
        let mut body = resp.into_body();
        let mut written = start;
        let mut next_report = Instant::now() + Duration::from_secs(5);
        let res = loop {
            let frame = match tokio::time::timeout(STALL, body.frame()).await {
                Err(_) => break Err(Fetch::CutOff(written, format!("{host} stalled"))),
                Ok(None) => break Ok(()),
                Ok(Some(Err(e))) => {
                    break Err(Fetch::CutOff(
                        written,
                        format!("download from {host} broke off: {e}"),
                    ))
                }
                Ok(Some(Ok(f))) => f,
            };
            let Some(data) = frame.data_ref() else {
                continue;
            };
            written += data.len() as u64;
            if written > self.max_bytes {
                break Err(Fetch::Failed(
                    written,
                    "over --max-recording-size".to_string(),
                ));
            }
            sha.update(data);
            if let Err(e) = out.write_all(data).await {
                break Err(Fetch::Failed(
                    written,
                    format!("writing {}: {e}", part.display()),
                ));
            }
            if Instant::now() >= next_report {
                next_report += Duration::from_secs(5);
                self.observers.emit(DaemonEvent::RecordingProgress {
                    seq,
                    path: file.display().to_string(),
                    bytes: written,
                    total,
                });
            }
        };
        let res = match res {
            // A body shorter than announced was cut off, whatever hyper said.
            Ok(()) if total.is_some_and(|t| t != written) => Err(Fetch::CutOff(
                written,
                format!(
                    "download from {host} ended at {} of {}",
                    human(written),
                    human(total.unwrap_or(0))
                ),
            )),
            Ok(()) => out
                .sync_all()
                .await
                .map_err(|e| Fetch::Failed(written, e.to_string())),
            Err(e) => Err(e),
        };
        drop(out);
        match res {
            Ok(()) => {
                tokio::fs::rename(&part, file)
                    .await
                    .map_err(|e| Fetch::Failed(written, e.to_string()))?;
                // The new name, durable before the file is reported saved.
                let dir = match file.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                tokio::task::spawn_blocking(move || meethook_disk::dir::sync_dir(&dir))
                    .await
                    .map_err(|e| Fetch::Failed(written, e.to_string()))?
                    .map_err(|e| Fetch::Failed(written, e.to_string()))?;
                let hex: String = sha.finalize().iter().map(|b| format!("{b:02x}")).collect();
                Ok((written, hex))
            }
            Err(Fetch::Failed(n, e)) => {
                let _ = tokio::fs::remove_file(&part).await;
                Err(Fetch::Failed(n, e))
            }
            Err(cut) => Err(cut),
        }
    }

    async fn note(
        &self,
        f: impl FnOnce(&Journal, &str) -> Result<(), crate::journal::JournalError> + Send + 'static,
    ) {
        let (j, ch) = (self.journal.clone(), self.channel.clone());
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || f(&j, &ch)).await {
            tracing::warn!(error = %e, "cannot note the recording in the journal");
        }
    }
}

/// `{bot}-{seq}-{kind}.{ext}`, the extension taken from the URL's path when it has a short one.
fn file_name(bot: &str, seq: u64, kind: &str, url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let ext = path
        .rsplit('/')
        .next()
        .and_then(|last| last.rsplit_once('.'))
        .map(|(_, e)| e)
        .filter(|e| !e.is_empty() && e.len() <= 5 && e.chars().all(|c| c.is_ascii_alphanumeric()))
        .unwrap_or(match kind {
            "video" => "mp4",
            "diarization" => "jsonl",
            "raw_transcription" | "transcription" => "json",
            _ => "audio",
        });
    let bot: String = bot
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    format!("{bot}-{seq}-{kind}.{ext}")
}

#[cfg(test)]
mod tests {
    use super::file_name;

    #[test]
    fn file_names_are_safe_and_keep_the_extension() {
        assert_eq!(
            file_name(
                "8d2f-1",
                12,
                "video",
                "https://s3/x/8d2f.mp4?X-Amz-Expires=7200"
            ),
            "8d2f-1-12-video.mp4"
        );
        assert_eq!(
            file_name("../../etc", 1, "audio", "https://h/output.flac"),
            "etc-1-audio.flac"
        );
        assert_eq!(
            file_name("b", 2, "video", "https://h/download"),
            "b-2-video.mp4"
        );
    }
}
