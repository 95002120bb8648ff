//! Large bodies as files of their own beside a SQLite database.
//!
//! Through SQLite a 16 MiB body is written twice (WAL, then checkpoint) page by page while
//! the database's one writer waits. As a file it is written once, in pieces, and the row
//! keeps only the file's number. The relay's store and the daemon's journal both use this.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

/// Bodies this large go to files (smaller ones stay in their rows).
pub const BODY_FILE_MIN: usize = 1 << 20;

/// A directory of body files, each named by its number in hex.
#[derive(Debug, Clone)]
pub struct BodyFiles {
    dir: PathBuf,
}

impl BodyFiles {
    /// Body files under `dir`, created (mode 0700) if missing.
    pub fn open(dir: PathBuf) -> std::io::Result<BodyFiles> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)?;
        }
        #[cfg(not(unix))]
        std::fs::create_dir_all(&dir)?;
        // The directory's own entry, durable before any file in it is relied on.
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
        Ok(BodyFiles { dir })
    }

    /// Body files under `dir` as it is, created by nothing: for readers of a journal that
    /// must not write to it.
    pub fn existing(dir: PathBuf) -> BodyFiles {
        BodyFiles { dir }
    }

    /// The size of file `n`, in bytes.
    pub fn size(&self, n: i64) -> std::io::Result<u64> {
        std::fs::metadata(self.path(n)).map(|m| m.len())
    }

    fn path(&self, n: i64) -> PathBuf {
        self.dir.join(format!("{n:016x}"))
    }

    /// Creates a new, empty body file (mode 0600): its handle, number and path.
    fn create(&self) -> std::io::Result<(std::fs::File, i64, PathBuf)> {
        let mut n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(1);
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        loop {
            let path = self.path(n);
            match opts.open(&path) {
                Ok(f) => return Ok((f, n, path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes `body` to a new file (mode 0600) and returns its number. With `durable` the
    /// data and the file's name are fsync'd before this returns; without, the file is as
    /// safe as a write to the OS cache (it survives `kill -9`).
    pub fn write(&self, body: &[u8], durable: bool) -> std::io::Result<i64> {
        let (f, n, path) = self.create()?;
        let mut w = FileWriter::new(f);
        let written = (|| {
            for piece in body.chunks(PIECE) {
                w.write(piece)?;
                if durable {
                    w.start_writeback()?;
                }
            }
            w.finish()?;
            if durable {
                w.f.sync_data()?;
                sync_dir(&self.dir)?;
            }
            Ok(())
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(n)
    }

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

    /// The body in file `n`.
    pub fn read(&self, n: i64) -> std::io::Result<Bytes> {
        let path = self.path(n);
        std::fs::read(&path).map(Bytes::from).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot read body file {}: {e} (restore the directory from the backup that \
                     holds its database)",
                    path.display()
                ),
            )
        })
    }

    /// Removes files `ns` (a failure only leaves a file for the next [`BodyFiles::sweep`]).
    pub fn remove(&self, ns: &[i64]) {
        for &n in ns {
            if let Err(e) = std::fs::remove_file(self.path(n)) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(error = %e, file = n, "could not remove a body file");
                }
            }
        }
    }

    /// Removes the files not in `known` and unchanged for `min_age`: written for a row that
    /// never committed (a crash, a full disk), or left when a removal failed. `min_age` spares
    /// the files of an insert still in flight. Returns how many went; a file it cannot look
    /// at or remove is logged and left (another process may have swept it first).
    pub fn sweep(&self, known: &HashSet<i64>, min_age: Duration) -> std::io::Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.dir)? {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name();
            let Some(n) = name.to_str().and_then(|s| i64::from_str_radix(s, 16).ok()) else {
                continue;
            };
            if known.contains(&n) {
                continue;
            }
            let old_enough = entry
                .metadata()
                .and_then(|m| m.modified())
                .map(|t| t.elapsed().unwrap_or(Duration::ZERO) >= min_age);
            let gone = old_enough.and_then(|old| {
                if old {
                    std::fs::remove_file(entry.path()).map(|()| true)
                } else {
                    Ok(false)
                }
            });
            match gone {
                Ok(true) => removed += 1,
                Ok(false) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(error = %e, path = %entry.path().display(), "could not sweep a body file");
                }
            }
        }
        Ok(removed)
    }
}

/// Pieces a body file is written in.
const PIECE: usize = 1 << 20;

/// Alignment of `O_DIRECT` offsets, lengths and buffers: a multiple of the logical block
/// size of the disks we meet.
const ALIGN: usize = 4096;

/// Staging buffers kept for the next body file (each `PIECE + ALIGN` bytes).
static STAGES: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
/// Most staging buffers kept between files.
const STAGES_KEPT: usize = 4;

/// Writes one body file front to back. Where the file system takes `O_DIRECT` the data goes
/// from an aligned staging buffer straight to the disk: no copy into never-touched page-cache
/// pages, which was about 30 % of the relay's and the daemon's CPU with 16 MiB bodies. Where
/// it does not (tmpfs, or an unaligned write refused), plain writes in 1 MiB pieces, each
/// piece's writeback started at once, so the final fsync waits for about one piece.
#[derive(Debug)]
struct FileWriter {
    f: std::fs::File,
    /// Bytes given to [`FileWriter::write`].
    len: u64,
    /// Bytes in the file so far (a multiple of [`ALIGN`] while direct).
    done: u64,
    /// Where the writeback not yet started begins (plain writes).
    started: u64,
    /// Direct only: the staging buffer and how many of its aligned bytes are filled.
    stage: Option<(Vec<u8>, usize)>,
}

impl FileWriter {
    fn new(f: std::fs::File) -> FileWriter {
        let direct = direct_io(&f);
        FileWriter::with(f, direct)
    }

    /// A writer for `f`, staging for `O_DIRECT` when `direct` (already turned on).
    fn with(f: std::fs::File, direct: bool) -> FileWriter {
        let stage = direct.then(|| {
            let buf = STAGES
                .lock()
                .ok()
                .and_then(|mut s| s.pop())
                .unwrap_or_else(|| vec![0; PIECE + ALIGN]);
            (buf, 0)
        });
        FileWriter {
            f,
            len: 0,
            done: 0,
            started: 0,
            stage,
        }
    }

    fn write(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        self.len += data.len() as u64;
        while !data.is_empty() {
            let Some((buf, filled)) = &mut self.stage else {
                std::os::unix::fs::FileExt::write_all_at(&self.f, data, self.done)?;
                self.done = self.len;
                return Ok(());
            };
            if *filled == 0 && data.len() >= ALIGN && data.as_ptr().align_offset(ALIGN) == 0 {
                // Aligned memory (an `aligned_buffer`) goes straight to the disk, uncopied.
                let n = data.len().min(PIECE) / ALIGN * ALIGN;
                if write_direct(&self.f, &data[..n], self.done)? {
                    self.done += n as u64;
                    data = &data[n..];
                } else {
                    self.plain()?;
                }
                continue;
            }
            let region = aligned(buf);
            let n = data.len().min(PIECE - *filled);
            region[*filled..*filled + n].copy_from_slice(&data[..n]);
            *filled += n;
            data = &data[n..];
            if *filled == PIECE {
                self.flush_stage(PIECE)?;
            }
        }
        Ok(())
    }

    /// Writes the staged bytes, padded to `padded`, at the end of what is written.
    fn flush_stage(&mut self, padded: usize) -> std::io::Result<()> {
        let Some((buf, filled)) = &mut self.stage else {
            return Ok(());
        };
        let region = &aligned(buf)[..padded];
        if write_direct(&self.f, region, self.done)? {
            self.done += *filled as u64;
            *filled = 0;
            return Ok(());
        }
        let staged = region[..*filled].to_vec();
        self.plain()?;
        std::os::unix::fs::FileExt::write_all_at(&self.f, &staged, self.done)?;
        self.done += staged.len() as u64;
        Ok(())
    }

    /// Leaves `O_DIRECT`; the staging buffer goes back to the pool.
    fn plain(&mut self) -> std::io::Result<()> {
        if let Some((buf, _)) = self.stage.take() {
            give_back(buf);
            let flags = rustix::fs::fcntl_getfl(&self.f)?;
            rustix::fs::fcntl_setfl(&self.f, flags - rustix::fs::OFlags::DIRECT)?;
        }
        Ok(())
    }

    /// Starts the writeback of what plain writes left in the cache (none with direct writes).
    fn start_writeback(&mut self) -> std::io::Result<()> {
        if self.stage.is_none() && self.done > self.started {
            start_writeback(&self.f, self.started, self.done - self.started)?;
            self.started = self.done;
        }
        Ok(())
    }

    /// Writes what is staged (its last block padded, then cut off by setting the length).
    fn finish(&mut self) -> std::io::Result<()> {
        if let Some((buf, filled)) = &mut self.stage {
            let filled = *filled;
            if filled > 0 {
                let padded = filled.next_multiple_of(ALIGN);
                aligned(buf)[filled..padded].fill(0);
                self.flush_stage(padded)?;
                // The padding goes, also when part of it was written before a fall back to
                // plain writes.
                self.f.set_len(self.len)?;
            }
        }
        self.plain()?;
        self.start_writeback()
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        if let Some((buf, _)) = self.stage.take() {
            give_back(buf);
        }
    }
}

/// Keeps a staging buffer for the next file, unless enough are kept already.
fn give_back(buf: Vec<u8>) {
    if let Ok(mut s) = STAGES.lock() {
        if s.len() < STAGES_KEPT {
            s.push(buf);
        }
    }
}

/// Writes aligned `region` at `at` through `O_DIRECT`: `false`, having written nothing,
/// where the file system wants another alignment (plain writes from then on).
fn write_direct(f: &std::fs::File, region: &[u8], at: u64) -> std::io::Result<bool> {
    match std::os::unix::fs::FileExt::write_all_at(f, region, at) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => Ok(false),
        Err(e) => Err(e),
    }
}

/// An empty buffer with room for at least `capacity` bytes that starts on an [`ALIGN`]
/// boundary, so that a body file is written straight from it.
pub fn aligned_buffer(capacity: usize) -> BytesMut {
    let mut b = BytesMut::with_capacity(capacity + ALIGN);
    let pad = b.as_ptr().align_offset(ALIGN).min(ALIGN);
    b.put_bytes(0, pad);
    drop(b.split_to(pad));
    b
}

/// Starts writeback of `len` bytes at `offset`. DONTNEED does that (and then lets the cache
/// drop them: whoever needs the body soon holds it in memory).
#[cfg_attr(not(target_os = "linux"), allow(unused_variables))]
fn start_writeback(f: &std::fs::File, offset: u64, len: u64) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    if let Some(len) = std::num::NonZeroU64::new(len) {
        rustix::fs::fadvise(f, offset, Some(len), rustix::fs::Advice::DontNeed)?;
    }
    Ok(())
}

/// The [`ALIGN`]ed `PIECE` bytes of a staging buffer.
fn aligned(buf: &mut [u8]) -> &mut [u8] {
    let off = buf.as_ptr().align_offset(ALIGN);
    &mut buf[off..off + PIECE]
}

/// Turns on `O_DIRECT` for `f` if its file system takes it.
fn direct_io(f: &std::fs::File) -> bool {
    #[cfg(target_os = "linux")]
    {
        let on = rustix::fs::fcntl_getfl(f)
            .and_then(|flags| rustix::fs::fcntl_setfl(f, flags | rustix::fs::OFlags::DIRECT));
        on.is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = f;
        false
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
}

impl Writer {
    /// Writes what is queued until nothing is, then (after the last piece) finishes and
    /// fsyncs the file.
    fn run(self) {
        let Ok(mut shared) = self.writing.lock() else {
            return;
        };
        loop {
            if shared.queue.is_empty() || shared.failed.is_some() {
                shared.running = false;
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
        let mut shared = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        if shared.running {
            // Not a clean end: whatever is queued will not be written.
            shared.running = false;
            shared
                .failed
                .get_or_insert_with(|| std::io::Error::other("a body file's writer stopped"));
        }
        drop(shared);
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

/// Makes the entries of `dir` durable (a new file's name, not only its data).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
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

    /// Every (direct, source, piece size) to try.
    fn combinations<'a>(
        sources: [(&'a [u8], &'static str); 2],
    ) -> impl Iterator<Item = (bool, (&'a [u8], &'static str), usize)> {
        [false, true].into_iter().flat_map(move |direct| {
            sources.into_iter().flat_map(move |source| {
                [PIECE / 3 + 7, PIECE, 3 * ALIGN]
                    .into_iter()
                    .map(move |piece| (direct, source, piece))
            })
        })
    }

    #[test]
    fn direct_and_plain_writes_give_the_same_bytes_at_any_length() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3 * PIECE + 5000).map(|i| (i % 241) as u8).collect();
        for len in [
            0,
            1,
            ALIGN - 1,
            ALIGN,
            ALIGN + 1,
            PIECE - 1,
            PIECE,
            PIECE + 1,
            data.len(),
        ] {
            // From aligned memory whole blocks skip the staging buffer: alone, and mixed
            // with staged bytes when a piece ends off a block boundary.
            let mut from_aligned = aligned_buffer(len);
            assert_eq!(from_aligned.as_ptr().align_offset(ALIGN), 0);
            from_aligned.extend_from_slice(&data[..len]);
            let sources = [(&data[..len], "any"), (&from_aligned[..], "aligned")];
            for (direct, (source, memory), piece) in combinations(sources) {
                let path = dir.path().join(format!("{len}-{direct}-{memory}-{piece}"));
                let f = std::fs::File::create(&path).unwrap();
                // Direct only where this file system takes it; plain otherwise.
                let direct = direct && direct_io(&f);
                let mut w = FileWriter::with(f, direct);
                for piece in source.chunks(piece) {
                    w.write(piece).unwrap();
                    w.start_writeback().unwrap();
                }
                w.finish().unwrap();
                w.f.sync_data().unwrap();
                drop(w);
                assert_eq!(
                    std::fs::read(&path).unwrap(),
                    &data[..len],
                    "{len} bytes, direct {direct}, {memory} memory, pieces of {piece}"
                );
            }
        }
    }

    #[test]
    fn bodies_round_trip_and_the_sweep_keeps_only_known_files() {
        let dir = tempfile::tempdir().unwrap();
        let files = BodyFiles::open(dir.path().join("b")).unwrap();
        let big: Vec<u8> = (0..(3 << 20) + 7).map(|i| (i % 251) as u8).collect();
        let a = files.write(&big, true).unwrap();
        let b = files.write(b"small", false).unwrap();
        assert_ne!(a, b);
        assert_eq!(files.read(a).unwrap(), &big[..]);
        assert_eq!(files.read(b).unwrap(), &b"small"[..]);
        std::fs::write(dir.path().join("b").join("not-a-body"), b"x").unwrap();
        assert_eq!(
            files
                .sweep(&HashSet::new(), Duration::from_secs(60))
                .unwrap(),
            0,
            "young files are spared"
        );
        assert_eq!(files.sweep(&HashSet::from([a]), Duration::ZERO).unwrap(), 1);
        assert!(files.read(b).is_err());
        assert!(dir.path().join("b").join("not-a-body").exists());
        files.remove(&[a, a]);
        let err = files.read(a).unwrap_err();
        assert!(err.to_string().contains(&format!("{a:016x}")), "{err}");
    }
}
