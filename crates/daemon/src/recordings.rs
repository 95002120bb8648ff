//! `listen --save-recordings DIR`: a final event's recordings are downloaded the moment it is
//! journaled (pre-signed links expire within hours), in the background, streamed to disk and
//! size-capped. Delivery never waits for a download.

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
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

use crate::journal::Journal;
use crate::observe::{DaemonEvent, Observers};
use crate::{now_ms, DaemonError};

/// Downloads running at once; more wait their turn.
const PARALLEL: usize = 2;
/// Longest silence from the server during a download.
const STALL: Duration = Duration::from_secs(60);

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
        std::fs::create_dir_all(dir).map_err(|e| {
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
        for (kind, url) in hook.recording_urls() {
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
        let path = file.display().to_string();
        self.note(move |j, ch| j.recording_started(ch, seq, kind, &path, now_ms()))
            .await;
        let _slot = self.slots.acquire().await;
        let result = self.fetch(seq, url, file).await;
        let (bytes, error) = match &result {
            Ok(n) => (*n, None),
            Err((n, e)) => (*n, Some(e.clone())),
        };
        // Noted in the journal first: whoever hears of it can read it there.
        let noted = error.clone();
        self.note(move |j, ch| {
            j.recording_finished(ch, seq, kind, bytes, noted.as_deref(), None, now_ms())
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

    /// Streams `url` into `file` (via a `.part` file); the byte count and the error if any.
    async fn fetch(&self, seq: u64, url: &str, file: &Path) -> Result<u64, (u64, String)> {
        let uri: http::Uri = url
            .parse()
            .map_err(|_| (0, "not a valid URL".to_string()))?;
        let host = uri.host().unwrap_or("?").to_string();
        let req = http::Request::get(uri)
            .body(Empty::new())
            .map_err(|e| (0, e.to_string()))?;
        let resp = tokio::time::timeout(STALL, self.client.request(req))
            .await
            .map_err(|_| (0, format!("{host} did not answer")))?
            .map_err(|e| (0, format!("cannot fetch from {host}: {e}")))?;
        if !resp.status().is_success() {
            return Err((
                0,
                format!("{host} answered {} (has the link expired?)", resp.status()),
            ));
        }
        let total = resp
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if total.is_some_and(|t| t > self.max_bytes) {
            return Err((
                0,
                format!("{} is over --max-recording-size", human(total.unwrap_or(0))),
            ));
        }
        let part = file.with_extension("part");
        let mut out = tokio::fs::File::create(&part)
            .await
            .map_err(|e| (0, format!("{}: {e}", part.display())))?;
        let mut body = resp.into_body();
        let mut written = 0u64;
        let mut next_report = Instant::now() + Duration::from_secs(5);
        let res = loop {
            let frame = match tokio::time::timeout(STALL, body.frame()).await {
                Err(_) => break Err(format!("{host} stalled")),
                Ok(None) => break Ok(()),
                Ok(Some(Err(e))) => break Err(format!("download from {host} broke off: {e}")),
                Ok(Some(Ok(f))) => f,
            };
            let Some(data) = frame.data_ref() else {
                continue;
            };
            written += data.len() as u64;
            if written > self.max_bytes {
                break Err("over --max-recording-size".to_string());
            }
            if let Err(e) = out.write_all(data).await {
                break Err(format!("writing {}: {e}", part.display()));
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
            Ok(()) => out.sync_all().await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        drop(out);
        match res {
            Ok(()) => {
                tokio::fs::rename(&part, file)
                    .await
                    .map_err(|e| (written, e.to_string()))?;
                Ok(written)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&part).await;
                Err((written, e))
            }
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
        .unwrap_or(if kind == "video" { "mp4" } else { "audio" });
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
