//! The control endpoint: how `meethook events retry|skip SEQ` reach a running daemon.
//!
//! One unix socket per channel under `--data` (`control-CHANNEL.sock`, mode 0600; several
//! `listen`s may share a directory, one per channel). A client writes one JSON [`Request`]
//! line and reads one JSON [`Answer`] line. The ops are meant as the first verbs of an HTTP
//! API to come (`POST events/{seq}/retry|skip`, `GET status`).
//!
//! The delivery loop acts on a request only between attempts (never while one is in
//! flight): the endpoint hands it over through a channel that the loop reads between
//! events and while it waits to retry.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::journal::{Journal, Query, State};
use crate::outcomes::file_stem;

/// One request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Send the event waiting for its next retry now.
    Retry {
        /// The event.
        seq: u64,
    },
    /// Give up on an event: recorded as skipped, and the ones behind it go on.
    Skip {
        /// The event.
        seq: u64,
    },
    /// What the daemon is doing.
    Status,
    /// Stop taking up new events (the one in flight, or waiting to retry, goes on until it
    /// is settled) until [`Request::Resume`].
    Pause,
    /// Take up events again after a [`Request::Pause`].
    Resume,
}

/// One answer line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// Whether the request was carried out.
    pub ok: bool,
    /// What happened, or why nothing did, for people.
    pub message: String,
    /// The daemon's channel.
    pub channel: String,
    /// The event held back by failing attempts, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<u64>,
    /// Events the daemon holds behind the one it is delivering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_behind: Option<u64>,
    /// Whether delivery is paused (`Pause`); absent from daemons that cannot pause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
}

/// The control socket of `channel`'s daemon in `data`.
pub fn socket_path(data: &Path, channel: &str) -> PathBuf {
    data.join(format!("control-{}.sock", file_stem(channel)))
}

/// What to tell someone whose `retry`/`skip` of `seq` found no daemon running on `data`
/// (`seq` may be a placeholder such as `SEQ`).
pub fn not_running_message(data: &Path, seq: &str) -> String {
    let d = data.display();
    format!(
        "no running `meethook listen` uses {d}: start it, or use `meethook replay {seq} --data {d}` \
         to re-send a stored event"
    )
}

/// Whether `path` is named like a control socket.
pub fn is_socket_name(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("control-") && n.ends_with(".sock"))
}

/// Why the control endpoint or a request to it failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// A live daemon answers on the socket already.
    #[error(
        "another `meethook listen` uses this --data for channel {channel:?} (its control socket \
         {} answers): stop it first, or use another --data",
        path.display()
    )]
    InUse {
        /// The socket.
        path: PathBuf,
        /// The channel.
        channel: String,
    },
    /// No daemon listens on the socket.
    #[error("no daemon answers on {}", path.display())]
    NotRunning {
        /// The socket.
        path: PathBuf,
    },
    /// Reading, writing or binding the socket failed. The cause is in the message, not
    /// chained (no `source()`), so a printed chain says it once.
    #[error("control socket {}: {error}", path.display())]
    Io {
        /// The socket.
        path: PathBuf,
        /// The cause.
        error: std::io::Error,
    },
    /// The other side sent something that is not a protocol line.
    #[error("control socket {}: bad answer: {why}", path.display())]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
}

/// Sends one request to the daemon on `path` and waits up to `timeout` for its answer
/// (blocking). The daemon answers between attempts, so an attempt in flight delays it.
pub fn ask(path: &Path, req: &Request, timeout: Duration) -> Result<Answer, ControlError> {
    let io = |error| ControlError::Io {
        path: path.to_path_buf(),
        error,
    };
    let mut stream = match std::os::unix::net::UnixStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ControlError::NotRunning {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(io(e)),
    };
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut line = serde_json::to_string(req).expect("a request serializes");
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(std::io::Read::take(stream, LINE_MAX))
        .read_line(&mut answer)
        .map_err(io)?;
    serde_json::from_str(&answer).map_err(|e| ControlError::Protocol {
        path: path.to_path_buf(),
        why: if answer.is_empty() {
            "the daemon closed the connection".into()
        } else {
            e.to_string()
        },
    })
}

/// Longest request or answer line.
const LINE_MAX: u64 = 64 << 10;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A request handed to the delivery loop, with where its reply goes.
pub(crate) struct Ask {
    /// What is asked.
    pub(crate) request: Request,
    /// Where the loop replies.
    pub(crate) reply: oneshot::Sender<Reply>,
}

/// What the delivery loop did about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Did {
    /// The blocked event is sent again now.
    Retrying,
    /// The blocked event is given up on (recorded as skipped).
    Skipped,
    /// The event is skipped when its turn comes.
    Marked,
    /// The event waits its turn: nothing to retry yet.
    Queued,
    /// The event is settled already (the journal has its state now).
    Settled,
    /// A status request: nothing done.
    Nothing,
    /// Delivery pauses (or was paused already).
    Paused,
    /// Delivery goes on (or was not paused).
    Resumed,
}

/// The delivery loop's reply.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reply {
    pub(crate) did: Did,
    pub(crate) blocked: Option<u64>,
    pub(crate) waiting_behind: u64,
    /// Whether delivery is paused, after the request.
    pub(crate) paused: bool,
}

/// The bound control socket; removed when dropped.
pub(crate) struct Endpoint {
    path: PathBuf,
    listener: UnixListener,
}

impl Endpoint {
    /// Binds `channel`'s socket in `data`, replacing one left by a killed daemon; refuses
    /// when a live daemon answers on it.
    pub(crate) fn bind(data: &Path, channel: &str) -> Result<Endpoint, ControlError> {
        let path = socket_path(data, channel);
        let io = |error| ControlError::Io {
            path: path.clone(),
            error,
        };
        match std::os::unix::net::UnixStream::connect(&path) {
            Ok(_) => {
                return Err(ControlError::InUse {
                    path,
                    channel: channel.to_string(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // Stale: nobody accepts on it any more.
            Err(_) => std::fs::remove_file(&path)
                .or_else(not_found_ok)
                .map_err(io)?,
        }
        let listener = UnixListener::bind(&path).map_err(io)?;
        let endpoint = Endpoint { path, listener };
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&endpoint.path, std::fs::Permissions::from_mode(0o600))
                .map_err(|error| ControlError::Io {
                    path: endpoint.path.clone(),
                    error,
                })?;
        }
        Ok(endpoint)
    }

    /// Answers requests until `stop`, asking the delivery loop through `loop_tx`.
    pub(crate) async fn serve(
        self,
        journal: Journal,
        channel: String,
        loop_tx: mpsc::Sender<Ask>,
        stop: CancellationToken,
    ) {
        loop {
            let stream = tokio::select! {
                _ = stop.cancelled() => return,
                r = self.listener.accept() => match r {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let (journal, channel, loop_tx) = (journal.clone(), channel.clone(), loop_tx.clone());
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = client(stream, &journal, &channel, &loop_tx) => {}
                }
            });
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn not_found_ok(e: std::io::Error) -> std::io::Result<()> {
    match e.kind() {
        std::io::ErrorKind::NotFound => Ok(()),
        _ => Err(e),
    }
}

/// One client: one request line, one answer line.
async fn client(stream: UnixStream, journal: &Journal, channel: &str, loop_tx: &mpsc::Sender<Ask>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(tokio::io::AsyncReadExt::take(read, LINE_MAX));
    let read = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await;
    if !matches!(read, Ok(Ok(n)) if n > 0) {
        return;
    }
    let answer = match serde_json::from_str::<Request>(&line) {
        Ok(req) => answer(req, journal, channel, loop_tx).await,
        Err(e) => refused(channel, format!("not a control request: {e}")),
    };
    let mut out = serde_json::to_string(&answer).expect("an answer serializes");
    out.push('\n');
    let _ = write.write_all(out.as_bytes()).await;
}

fn refused(channel: &str, message: String) -> Answer {
    Answer {
        ok: false,
        message,
        channel: channel.to_string(),
        blocked: None,
        waiting_behind: None,
        paused: None,
    }
}

/// The journal's state of `seq`, if it holds it (without reading its body).
fn state_of(journal: &Journal, channel: &str, seq: u64) -> Result<Option<State>, String> {
    for state in [
        State::Pending,
        State::Delivered,
        State::Failed,
        State::Skipped,
    ] {
        let q = Query {
            channel: Some(channel.to_string()),
            seqs: vec![seq..=seq],
            state: Some(state),
            ..Query::default()
        };
        if journal.count(&q).map_err(|e| e.to_string())? > 0 {
            return Ok(Some(state));
        }
    }
    Ok(None)
}

async fn lookup(journal: &Journal, channel: &str, seq: u64) -> Result<Option<State>, String> {
    let (j, ch) = (journal.clone(), channel.to_string());
    tokio::task::spawn_blocking(move || state_of(&j, &ch, seq))
        .await
        .map_err(|e| e.to_string())?
}

/// Carries out one request and says how it went.
async fn answer(
    req: Request,
    journal: &Journal,
    channel: &str,
    loop_tx: &mpsc::Sender<Ask>,
) -> Answer {
    let seq = match req {
        Request::Retry { seq } | Request::Skip { seq } => Some(seq),
        Request::Status | Request::Pause | Request::Resume => None,
    };
    if let Some(seq) = seq {
        match lookup(journal, channel, seq).await {
            Err(e) => return refused(channel, format!("cannot read the journal: {e}")),
            Ok(None) => {
                return refused(
                    channel,
                    format!("no event #{seq} in the journal of channel {channel} (yet)"),
                )
            }
            Ok(Some(State::Pending)) => {}
            Ok(Some(state)) => return refused(channel, settled(req, seq, state)),
        }
    }
    let (reply_tx, reply_rx) = oneshot::channel();
    let ask = Ask {
        request: req,
        reply: reply_tx,
    };
    let reply = match loop_tx.send(ask).await {
        Ok(()) => reply_rx.await.ok(),
        Err(_) => None,
    };
    let Some(reply) = reply else {
        return refused(channel, "the daemon is shutting down".into());
    };
    let mut a = Answer {
        ok: true,
        message: String::new(),
        channel: channel.to_string(),
        blocked: reply.blocked,
        waiting_behind: Some(reply.waiting_behind),
        paused: Some(reply.paused),
    };
    let behind = |b: Option<u64>| match b {
        Some(b) => format!(
            "it is queued behind #{b}, which keeps failing \
             (`meethook events retry {b}` or `meethook events skip {b}` moves on)"
        ),
        None => "it is queued and goes in its turn".into(),
    };
    a.message = match (req, reply.did) {
        (Request::Retry { seq }, Did::Retrying) => format!("retrying #{seq} now"),
        (Request::Skip { seq }, Did::Skipped) => format!(
            "skipped #{seq}; {} event{} waiting behind it go on",
            reply.waiting_behind,
            if reply.waiting_behind == 1 { "" } else { "s" }
        ),
        (Request::Skip { seq }, Did::Marked) => format!(
            "#{seq} will be skipped when its turn comes ({})",
            behind(reply.blocked)
        ),
        (Request::Retry { seq }, Did::Queued) => {
            a.ok = false;
            format!("#{seq} has not been sent yet: {}", behind(reply.blocked))
        }
        (Request::Retry { seq } | Request::Skip { seq }, Did::Settled) => {
            a.ok = false;
            match lookup(journal, channel, seq).await {
                Ok(Some(state)) if state != State::Pending => settled(req, seq, state),
                _ => format!("#{seq} is settled already"),
            }
        }
        (Request::Pause, _) => match reply.blocked {
            Some(b) => format!(
                "paused: #{b} goes on until it is settled, then no new event is taken up \
                 ({} waiting)",
                reply.waiting_behind
            ),
            None => format!(
                "paused: no new event is taken up ({} waiting)",
                reply.waiting_behind
            ),
        },
        (Request::Resume, _) => format!("delivering again; {} waiting", reply.waiting_behind),
        (_, _) if reply.paused => format!("paused; {} waiting", reply.waiting_behind),
        (_, _) => match reply.blocked {
            Some(b) => format!(
                "#{b} keeps failing; {} waiting behind it",
                reply.waiting_behind
            ),
            None => format!("delivering; {} waiting", reply.waiting_behind),
        },
    };
    a
}

/// Why nothing is done about a settled event.
fn settled(req: Request, seq: u64, state: State) -> String {
    let what = match state {
        State::Delivered => "was delivered already",
        State::Failed => "failed already (given up on)",
        State::Skipped => "was skipped already",
        State::Pending => "is pending",
    };
    let verb = match req {
        Request::Skip { .. } => "skip",
        _ => "retry",
    };
    format!("#{seq} {what}: nothing to {verb}; `meethook replay {seq}` sends it again")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_are_one_small_json_object_each() {
        let retry: Request = serde_json::from_str(r#"{"op":"retry","seq":5}"#).unwrap();
        assert_eq!(retry, Request::Retry { seq: 5 });
        let skip: Request = serde_json::from_str(r#"{"op":"skip","seq":2}"#).unwrap();
        assert_eq!(skip, Request::Skip { seq: 2 });
        assert_eq!(
            serde_json::to_string(&Request::Status).unwrap(),
            r#"{"op":"status"}"#
        );
        assert_eq!(
            serde_json::to_string(&Request::Skip { seq: 9 }).unwrap(),
            r#"{"op":"skip","seq":9}"#
        );
        assert_eq!(
            serde_json::to_string(&Request::Pause).unwrap(),
            r#"{"op":"pause"}"#
        );
        let resume: Request = serde_json::from_str(r#"{"op":"resume"}"#).unwrap();
        assert_eq!(resume, Request::Resume);
        for bad in [
            r#"{"op":"retry"}"#,
            r#"{"op":"nuke","seq":1}"#,
            r#"{"seq":1}"#,
            r#"{"op":"retry","seq":-1}"#,
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
        let a = Answer {
            ok: false,
            message: "m".into(),
            channel: "ch_1".into(),
            blocked: None,
            waiting_behind: Some(3),
            paused: None,
        };
        let text = serde_json::to_string(&a).unwrap();
        assert_eq!(
            text,
            r#"{"ok":false,"message":"m","channel":"ch_1","waiting_behind":3}"#
        );
        assert_eq!(serde_json::from_str::<Answer>(&text).unwrap(), a);
    }

    #[test]
    fn settled_events_point_at_replay() {
        let m = settled(Request::Retry { seq: 4 }, 4, State::Delivered);
        assert_eq!(
            m,
            "#4 was delivered already: nothing to retry; `meethook replay 4` sends it again"
        );
        assert!(settled(Request::Skip { seq: 4 }, 4, State::Failed).contains("nothing to skip"));
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_a_live_one_refused_and_drop_removes_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(dir.path(), "ch_1");
        assert_eq!(path, dir.path().join("control-ch_1.sock"));
        assert!(is_socket_name(&path));
        // A socket file nobody listens on, as a killed daemon leaves it.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let live = Endpoint::bind(dir.path(), "ch_1").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let err = Endpoint::bind(dir.path(), "ch_1").err().expect("in use");
        assert!(
            err.to_string()
                .contains("another `meethook listen` uses this --data"),
            "{err}"
        );
        // Another channel in the same directory has a socket of its own.
        let other = Endpoint::bind(dir.path(), "ch_2").unwrap();
        drop((live, other));
        assert!(!path.exists());
        let err = ask(&path, &Request::Status, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, ControlError::NotRunning { .. }), "{err}");
    }
}
