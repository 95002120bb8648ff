//! Writing one body file front to back: `O_DIRECT` from an aligned staging buffer where the
//! file system takes it, plain writes with early writeback where it does not.

use bytes::{BufMut, BytesMut};

use super::PIECE;

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
pub(super) struct FileWriter {
    pub(super) f: std::fs::File,
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
    pub(super) fn new(f: std::fs::File) -> FileWriter {
        let direct = direct_io(&f);
        FileWriter::with(f, direct)
    }

    /// A writer for `f`, staging for `O_DIRECT` when `direct` (already turned on).
    pub(super) fn with(f: std::fs::File, direct: bool) -> FileWriter {
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

    pub(super) fn write(&mut self, mut data: &[u8]) -> std::io::Result<()> {
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
    pub(super) fn start_writeback(&mut self) -> std::io::Result<()> {
        if self.stage.is_none() && self.done > self.started {
            start_writeback(&self.f, self.started, self.done - self.started)?;
            self.started = self.done;
        }
        Ok(())
    }

    /// Writes what is staged (its last block padded, then cut off by setting the length).
    pub(super) fn finish(&mut self) -> std::io::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
