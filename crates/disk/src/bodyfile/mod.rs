//! Large bodies as files of their own beside a SQLite database.
//!
//! Through SQLite a 16 MiB body is written twice (WAL, then checkpoint) page by page while
//! the database's one writer waits. As a file it is written once, in pieces, and the row
//! keeps only the file's number. The relay's store and the daemon's journal both use this.
//!
//! # Layout
//! - here: [`BodyFiles`], the directory: naming, writing a whole body, reading, removing,
//!   sweeping.
//! - `file_writer`: how one file's bytes reach the disk (`O_DIRECT` from an aligned staging
//!   buffer, or plain writes whose writeback starts piece by piece); [`aligned_buffer`].
//! - `sink`: [`BodySink`], a file written while its body still arrives, and the
//!   [`WrittenBody`] it leaves.

mod file_writer;
mod sink;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;

use crate::dir::sync_dir;
use file_writer::FileWriter;

pub use file_writer::aligned_buffer;
pub use sink::{BodySink, WrittenBody};

/// Bodies this large go to files (smaller ones stay in their rows).
pub const BODY_FILE_MIN: usize = 1 << 20;

/// A directory of body files, each named by its number in hex.
#[derive(Debug, Clone)]
pub struct BodyFiles {
    dir: PathBuf,
}

impl BodyFiles {
    /// Body files under `dir`, created (mode 0700) if missing, its entry durable before any
    /// file in it is relied on.
    pub fn open(dir: PathBuf) -> std::io::Result<BodyFiles> {
        crate::dir::create_dir_durable(&dir, 0o700)?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
