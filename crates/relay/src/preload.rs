//! Preloads: a big body sent to the channel's listeners while it still arrives.
//!
//! A 16 MiB body reaches the relay about as fast as the disk takes it (the 200 waits for its
//! fsync), and then crossed the websocket only after that. With a preload, the listener
//! streams that asked for it (`hello.preload`) get the body's pieces as they arrive, and the
//! event frame, once stored, only refers to them. The daemon delivers nothing before that
//! frame, so nothing unstored reaches a handler; an upload that fails is dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::watch;

/// The preloads of every channel with a listener that takes them.
#[derive(Default)]
pub(crate) struct Preloads {
    channels: Mutex<HashMap<String, Listening>>,
    next_id: AtomicU64,
}

/// One channel's preload-taking listeners and the uploads in progress.
struct Listening {
    streams: usize,
    uploads: Vec<Arc<Upload>>,
    /// Bumped on every change, waking the channel's streams.
    changed: watch::Sender<u64>,
}

/// One body on its way in.
pub(crate) struct Upload {
    /// Number in preload frames (unique in this process).
    pub id: u64,
    /// The declared length.
    pub len: u64,
    state: Mutex<UploadState>,
}

#[derive(Default)]
struct UploadState {
    pieces: Vec<Bytes>,
    received: u64,
    /// The whole body as the store got it (same memory), once read.
    body: Option<Bytes>,
    /// The seq it was stored as.
    seq: Option<u64>,
    failed: bool,
}

/// Where an upload stands, for a stream.
pub(crate) enum Progress {
    /// Pieces from the stream's offset on (maybe none yet).
    Pieces(Vec<Bytes>),
    /// It will never be stored (or never be referred to): drop it.
    Failed,
}

impl Upload {
    /// The pieces from the `from`th on, or the news that it failed.
    pub fn pieces_from(&self, from: usize) -> Progress {
        let s = self.state.lock().expect("upload lock");
        if s.failed {
            return Progress::Failed;
        }
        Progress::Pieces(s.pieces.get(from..).unwrap_or_default().to_vec())
    }

    /// Whether event `seq` with `body` is this upload, fully received: stored as `seq`, or
    /// the same memory, or (read back from the store before the seq was known here) the
    /// same bytes, which make the same delivery.
    pub fn is_event(&self, seq: u64, body: &Bytes) -> bool {
        let s = self.state.lock().expect("upload lock");
        let Some(b) = s.body.as_ref().filter(|b| b.len() == body.len()) else {
            return false;
        };
        match s.seq {
            Some(stored) => stored == seq,
            None => b.as_ptr() == body.as_ptr() || b[..] == body[..],
        }
    }

    /// Whether it will never be stored.
    pub fn failed(&self) -> bool {
        self.state.lock().expect("upload lock").failed
    }

    /// The seq it was stored as, once known.
    pub fn seq(&self) -> Option<u64> {
        self.state.lock().expect("upload lock").seq
    }
}

impl Preloads {
    /// A stream of `channel` that takes preloads: wakes on every change to its uploads.
    pub fn listen(self: &Arc<Self>, channel: &str) -> Listener {
        let mut map = self.channels.lock().expect("preloads lock");
        let l = map.entry(channel.to_string()).or_insert_with(|| Listening {
            streams: 0,
            uploads: Vec::new(),
            changed: watch::channel(0).0,
        });
        l.streams += 1;
        Listener {
            preloads: self.clone(),
            channel: channel.to_string(),
            changed: l.changed.subscribe(),
        }
    }

    /// Starts an upload of `len` bytes to `channel` when a stream would take it.
    pub fn start(self: &Arc<Self>, channel: &str, len: u64) -> Option<Sending> {
        let mut map = self.channels.lock().expect("preloads lock");
        let l = map.get_mut(channel)?;
        let up = Arc::new(Upload {
            id: self.next_id.fetch_add(1, Ordering::Relaxed) + 1,
            len,
            state: Mutex::new(UploadState::default()),
        });
        l.uploads.push(up.clone());
        l.changed.send_modify(|v| *v += 1);
        Some(Sending {
            preloads: self.clone(),
            channel: channel.to_string(),
            upload: up,
            ended: false,
        })
    }

    fn bump(&self, channel: &str) {
        if let Some(l) = self.channels.lock().expect("preloads lock").get(channel) {
            l.changed.send_modify(|v| *v += 1);
        }
    }
}

/// A stream's view of its channel's preloads; leaving is dropping it.
pub(crate) struct Listener {
    preloads: Arc<Preloads>,
    channel: String,
    /// Changes to the channel's uploads.
    pub changed: watch::Receiver<u64>,
}

impl Listener {
    /// The uploads in progress now.
    pub fn uploads(&self) -> Vec<Arc<Upload>> {
        let map = self.preloads.channels.lock().expect("preloads lock");
        map.get(&self.channel)
            .map(|l| l.uploads.clone())
            .unwrap_or_default()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let mut map = self.preloads.channels.lock().expect("preloads lock");
        if let Some(l) = map.get_mut(&self.channel) {
            l.streams -= 1;
            if l.streams == 0 {
                map.remove(&self.channel);
            }
        }
    }
}

/// The webhook side of an upload: pieces in, then stored or failed (failed when dropped
/// before [`Sending::stored`]).
pub(crate) struct Sending {
    preloads: Arc<Preloads>,
    channel: String,
    upload: Arc<Upload>,
    ended: bool,
}

impl Sending {
    /// A piece arrived.
    pub fn push(&self, piece: &Bytes) {
        {
            let mut s = self.upload.state.lock().expect("upload lock");
            s.received += piece.len() as u64;
            s.pieces.push(piece.clone());
            if s.received > self.upload.len {
                // More than declared: hyper refuses such a body; never refer to it.
                s.failed = true;
            }
        }
        self.preloads.bump(&self.channel);
    }

    /// The whole body, before it is handed to the store: its event is recognised by it.
    pub fn received(&self, body: &Bytes) {
        let mut s = self.upload.state.lock().expect("upload lock");
        if body.len() as u64 != self.upload.len || s.received != self.upload.len {
            s.failed = true;
            return;
        }
        // The same pieces as slices of the whole body: hyper's buffers can go now.
        let mut at = 0;
        for p in &mut s.pieces {
            let end = at + p.len();
            *p = body.slice(at..end);
            at = end;
        }
        s.body = Some(body.clone());
    }

    /// Stored as `seq`.
    pub fn stored(mut self, seq: u64) {
        self.upload.state.lock().expect("upload lock").seq = Some(seq);
        self.ended = true;
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        if !self.ended {
            self.upload.state.lock().expect("upload lock").failed = true;
        }
        let mut map = self.preloads.channels.lock().expect("preloads lock");
        if let Some(l) = map.get_mut(&self.channel) {
            l.uploads.retain(|u| !Arc::ptr_eq(u, &self.upload));
            l.changed.send_modify(|v| *v += 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_matching_and_the_end_of_an_upload() {
        let p = Arc::new(Preloads::default());
        assert!(p.start("c", 6).is_none(), "nobody listens");
        let l = p.listen("c");
        let s = p.start("c", 6).expect("a listener takes it");
        s.push(&Bytes::from_static(b"abc"));
        s.push(&Bytes::from_static(b"def"));
        let up = l.uploads().pop().unwrap();
        let Progress::Pieces(after) = up.pieces_from(1) else {
            panic!("failed")
        };
        assert_eq!(after, vec![Bytes::from_static(b"def")]);
        let body = Bytes::from_static(b"abcdef");
        s.received(&body);
        assert!(up.is_event(1, &body));
        assert!(
            up.is_event(1, &Bytes::copy_from_slice(b"abcdef")),
            "same bytes"
        );
        assert!(!up.is_event(1, &Bytes::from_static(b"abcdeF")));
        s.stored(9);
        assert_eq!(up.seq(), Some(9));
        assert!(up.is_event(9, &body));
        assert!(!up.is_event(8, &body), "stored as another seq");
        assert!(l.uploads().is_empty(), "ended uploads leave the registry");

        // Dropped before being stored: failed.
        let s = p.start("c", 3).unwrap();
        let up = l.uploads().pop().unwrap();
        drop(s);
        assert!(matches!(up.pieces_from(0), Progress::Failed));
        drop(l);
        assert!(p.channels.lock().unwrap().is_empty(), "nothing kept");
    }
}
