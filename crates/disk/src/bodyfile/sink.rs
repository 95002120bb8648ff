//! [`BodySink`]: a body file written while the body still arrives, by a task on the blocking
//! pool; the [`WrittenBody`] it leaves until a row refers to it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};

use super::file_writer::FileWriter;
use super::{aligned_buffer, sync_dir, BodyFiles, PIECE};

impl BodyFiles {
    /// Starts a durable body file written while the body still arrives: the upload and the
    /// disk work overlap, and what is left for the final fsync is about one piece. The sink
    /// also gathers the body, in a buffer sized for `expected` bytes (untouched pages cost
    /// no memory until the body reaches them) that the disk is written from directly.
    pub fn sink(&self, expected: usize) -> std::io::Result<BodySink> {
        let (f, n, path) = self.create()?;
        let writing = Writing {
            file: Some(FileWriter::new(f)),
            queue: Vec::new(),
            last: false,
            written: BytesMut::new(),
            failed: None,
            running: false,
            path,
        };
        Ok(BodySink {
            files: self.clone(),
            writing: Arc::new(Mutex::new(writing)),
            idle: Arc::new(tokio::sync::Notify::new()),
            filling: aligned_buffer(expected),
            n: Some(n),
        })
    }
}

/// A body file being written by [`BodyFiles::sink`] while the body arrives, and the body
/// gathered for the caller. One task on the blocking pool writes the whole pieces queued so
/// far and goes when the queue is empty: no thread waits for a slow upload, and the upload
/// never waits for the disk. Dropped unfinished, the file goes.
#[derive(Debug)]
pub struct BodySink {
    files: BodyFiles,
    writing: Arc<Mutex<Writing>>,
    /// Told each time the writer goes idle.
    idle: Arc<tokio::sync::Notify>,
    /// Received bytes not yet queued.
    filling: BytesMut,
    /// The file's number until it is finished (and its removal someone else's).
    n: Option<i64>,
}

/// What a [`BodySink`] shares with its writer.
#[derive(Debug)]
struct Writing {
    /// The file, unless the writer holds it.
    file: Option<FileWriter>,
    /// Pieces to write, in order.
    queue: Vec<BytesMut>,
    /// The last piece is queued: the writer then finishes the file and fsyncs it.
    last: bool,
    /// The pieces written so far, joined again (the same memory as `filling` came from).
    written: BytesMut,
    /// Why writing stopped.
    failed: Option<std::io::Error>,
    /// A writer task is on the blocking pool.
    running: bool,
    /// The file's path (its directory is fsync'd after the last piece).
    path: PathBuf,
}

impl BodySink {
    /// Appends the next bytes of the body; whole pieces are queued for the disk.
    pub async fn push(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.filling.extend_from_slice(bytes);
        if self.filling.len() >= PIECE {
            // Whole pieces keep the rest aligned.
            let piece = self.filling.split_to(self.filling.len() / PIECE * PIECE);
            self.queue(piece, false)?;
        }
        Ok(())
    }

    fn queue(&mut self, piece: BytesMut, last: bool) -> std::io::Result<()> {
        let mut w = self.writing.lock().map_err(|_| lock_lost())?;
        if let Some(e) = &w.failed {
            return Err(std::io::Error::new(e.kind(), e.to_string()));
        }
        w.queue.push(piece);
        w.last = last;
        if !w.running {
            w.running = true;
            let writer = Writer {
                writing: self.writing.clone(),
                idle: self.idle.clone(),
                clean: false,
            };
            tokio::task::spawn_blocking(move || writer.run());
        }
        Ok(())
    }

    /// Waits for the whole body to be written and fsync'd: the file, and the body.
    pub async fn finish(mut self) -> std::io::Result<(WrittenBody, Bytes)> {
        let tail = std::mem::take(&mut self.filling);
        self.queue(tail, true)?;
        loop {
            let idle = self.idle.notified();
            {
                let mut w = self.writing.lock().map_err(|_| lock_lost())?;
                if !w.running {
                    if let Some(e) = w.failed.take() {
                        return Err(e);
                    }
                    let body = std::mem::take(&mut w.written).freeze();
                    let file = WrittenBody {
                        files: self.files.clone(),
                        n: self.n.take(),
                    };
                    return Ok((file, body));
                }
            }
            idle.await;
        }
    }
}

/// The writer task of a [`BodySink`]. However it ends (done, panicked, or dropped unrun when
/// the runtime shuts down), it leaves the sink told: `finish` never waits for a writer
/// that is gone.
struct Writer {
    writing: Arc<Mutex<Writing>>,
    idle: Arc<tokio::sync::Notify>,
    /// `run` ended normally, having cleared `running` itself: by the time this writer is
    /// dropped, `running` may already belong to the next writer.
    clean: bool,
}

impl Writer {
    /// Writes what is queued until nothing is, then (after the last piece) finishes and
    /// fsyncs the file.
    fn run(mut self) {
        let Ok(mut shared) = self.writing.lock() else {
            return;
        };
        loop {
            if shared.queue.is_empty() || shared.failed.is_some() {
                shared.running = false;
                self.clean = true;
                return;
            }
            let Some(mut file) = shared.file.take() else {
                shared.failed = Some(std::io::Error::other("body file lost"));
                continue;
            };
            let (pieces, last, path) = (
                std::mem::take(&mut shared.queue),
                shared.last,
                shared.path.clone(),
            );
            drop(shared);
            let written = (|| {
                for p in &pieces {
                    file.write(p)?;
                }
                if !last {
                    return file.start_writeback();
                }
                file.finish()?;
                file.f.sync_data()?;
                if let Some(dir) = path.parent() {
                    sync_dir(dir)?;
                }
                // A sweep takes files no row refers to once unchanged for 10 minutes: an
                // upload that paused that long may have lost its file.
                std::fs::metadata(&path).map(|_| ())
            })();
            shared = match self.writing.lock() {
                Ok(s) => s,
                Err(_) => return,
            };
            shared.file = Some(file);
            for p in pieces {
                shared.written.unsplit(p);
            }
            if let Err(e) = written {
                shared.failed = Some(e);
                shared.queue.clear();
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.clean {
            // Not a clean end: whatever is queued will not be written.
            let mut shared = self.writing.lock().unwrap_or_else(|e| e.into_inner());
            shared.running = false;
            shared
                .failed
                .get_or_insert_with(|| std::io::Error::other("a body file's writer stopped"));
        }
        self.idle.notify_one();
    }
}

fn lock_lost() -> std::io::Error {
    std::io::Error::other("a body file's writer panicked")
}

impl Drop for BodySink {
    fn drop(&mut self) {
        if let Some(n) = self.n.take() {
            // A write still in flight goes to the removed file, harmlessly.
            let _ = std::fs::remove_file(self.files.path(n));
        }
    }
}

/// A durable body file no row refers to yet: removed when dropped, unless kept.
#[derive(Debug)]
pub struct WrittenBody {
    files: BodyFiles,
    n: Option<i64>,
}

impl WrittenBody {
    /// The file's number, now the caller's to refer to (or remove).
    pub fn keep(mut self) -> i64 {
        self.n.take().expect("kept once")
    }
}

impl Drop for WrittenBody {
    fn drop(&mut self) {
        if let Some(n) = self.n {
            self.files.remove(&[n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::path::Path;
    use std::time::Duration;

    use super::*;

    fn files_in(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    #[tokio::test]
    async fn a_sink_writes_the_pieces_and_its_file_goes_unless_kept() {
        let dir = tempfile::tempdir().unwrap();
        let files = BodyFiles::open(dir.path().join("b")).unwrap();
        let body: Vec<u8> = (0..(3 << 20) + 5).map(|i| (i % 253) as u8).collect();
        // Room for all of it, for part of it (the buffer grows, the pieces are joined by
        // copying), and for nothing.
        for expected in [body.len(), 1 << 20, 0] {
            let mut sink = files.sink(expected).unwrap();
            for piece in body.chunks(300_000) {
                sink.push(piece).await.unwrap();
            }
            let (file, gathered) = sink.finish().await.unwrap();
            assert_eq!(gathered, &body[..], "room for {expected}");
            let n = file.keep();
            assert_eq!(files.read(n).unwrap(), &body[..], "room for {expected}");
            files.remove(&[n]);
        }
        // The writer goes idle between pieces and is started again.
        let mut sink = files.sink(body.len()).unwrap();
        for piece in body.chunks(PIECE + 1000) {
            sink.push(piece).await.unwrap();
            while sink.writing.lock().unwrap().running {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let (file, gathered) = sink.finish().await.unwrap();
        assert_eq!(gathered, &body[..]);
        let n = file.keep();
        assert_eq!(files.read(n).unwrap(), &body[..]);

        // An upload cut short leaves no file, nor does a written body nobody keeps.
        let mut sink = files.sink(2 << 20).unwrap();
        sink.push(&[7u8; (1 << 20) + 1]).await.unwrap();
        drop(sink);
        let mut unkept = files.sink(5).unwrap();
        unkept.push(b"whole").await.unwrap();
        drop(unkept.finish().await.unwrap());
        assert_eq!(
            files_in(&dir.path().join("b")),
            1,
            "only the kept body is left"
        );

        // A write that fails (here: into a handle opened read-only) fails the upload.
        let mut failing = files.sink(2 << 20).unwrap();
        {
            let mut w = failing.writing.lock().unwrap();
            let read_only = std::fs::File::open(&w.path).unwrap();
            w.file = Some(FileWriter::with(read_only, false));
        }
        failing.push(&body[..2 << 20]).await.unwrap();
        assert!(failing.finish().await.is_err());
        assert_eq!(
            files_in(&dir.path().join("b")),
            1,
            "the failed body's file goes"
        );

        // A file swept while its upload paused fails the upload instead of being referred to.
        let mut swept = files.sink(4).unwrap();
        swept.push(b"slow").await.unwrap();
        files.sweep(&HashSet::from([n]), Duration::ZERO).unwrap();
        assert!(swept.finish().await.is_err());
        assert_eq!(files_in(&dir.path().join("b")), 1);
    }
}
