//! What has not been made durable yet, and throwing exactly that away at a power cut.
//!
//! Files: an undo log per inode of every write and truncate since its last `fsync` or
//! `fdatasync` (offset, the bytes it overwrote, the length before). Directories: the
//! namespace changes (create, mkdir, unlink, rmdir, rename) not yet followed by an fsync of
//! every directory they touched. A removed or replaced entry waits in a trash directory until
//! its removal is durable, so a cut can bring it back.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// One unsynced write or truncate, undone by writing `old` back at `offset` and setting the
/// length back to `old_len`.
struct Undo {
    offset: u64,
    old: Vec<u8>,
    old_len: u64,
}

#[derive(Default)]
struct FileLog {
    undo: Vec<Undo>,
    /// The last write since the last sync (offset, bytes): what a torn cut keeps a prefix of.
    last: Option<(u64, Vec<u8>)>,
}

enum NsKind {
    /// A new name (file or directory) at this backing path.
    Created(PathBuf),
    /// `path` was removed; its inode waits at `trash`.
    Removed { path: PathBuf, trash: PathBuf },
    /// `from` became `to`; what `to` named before waits at `replaced`.
    Renamed {
        from: PathBuf,
        to: PathBuf,
        replaced: Option<PathBuf>,
    },
}

struct NsOp {
    /// Directories (inodes) whose fsync is still due before this change is durable.
    pending: Vec<u64>,
    kind: NsKind,
}

/// What a cut threw away.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Discarded {
    /// Unsynced writes and truncates undone.
    pub writes: usize,
    /// Files whose last unsynced write was kept torn (a prefix of it).
    pub torn: usize,
    /// Unsynced namespace changes undone (a new name gone, a removed one back).
    pub names: usize,
}

/// The unsynced state of one mount.
pub(super) struct Model {
    files: HashMap<u64, FileLog>,
    ops: Vec<NsOp>,
    trash: PathBuf,
    next_trash: u64,
}

impl Model {
    pub(super) fn new(trash: PathBuf) -> Model {
        Model {
            files: HashMap::new(),
            ops: Vec::new(),
            trash,
            next_trash: 0,
        }
    }

    /// Records what writing `data` at `offset` of `f` (inode `ino`) overwrites; call before
    /// the write.
    pub(super) fn before_write(
        &mut self,
        ino: u64,
        f: &std::fs::File,
        offset: u64,
        data: &[u8],
    ) -> io::Result<()> {
        let len = f.metadata()?.len();
        let end = (offset + data.len() as u64).min(len);
        let mut old = vec![0; end.saturating_sub(offset) as usize];
        f.read_exact_at(&mut old, offset)?;
        let log = self.files.entry(ino).or_default();
        log.undo.push(Undo {
            offset,
            old,
            old_len: len,
        });
        log.last = Some((offset, data.to_vec()));
        Ok(())
    }

    /// Records what setting the length of `f` to `new_len` loses; call before the truncate.
    pub(super) fn before_truncate(
        &mut self,
        ino: u64,
        f: &std::fs::File,
        new_len: u64,
    ) -> io::Result<()> {
        let len = f.metadata()?.len();
        let mut old = vec![0; len.saturating_sub(new_len) as usize];
        f.read_exact_at(&mut old, new_len)?;
        let log = self.files.entry(ino).or_default();
        log.undo.push(Undo {
            offset: new_len,
            old,
            old_len: len,
        });
        log.last = None;
        Ok(())
    }

    /// `fsync`/`fdatasync` of inode `ino`: its data is durable.
    pub(super) fn file_synced(&mut self, ino: u64) {
        self.files.remove(&ino);
    }

    /// A new name at `path` in directory `dir`.
    pub(super) fn created(&mut self, dir: u64, path: PathBuf) {
        self.ops.push(NsOp {
            pending: vec![dir],
            kind: NsKind::Created(path),
        });
    }

    /// Removes `path` (in directory `dir`) by moving it to the trash; returns where it went.
    pub(super) fn remove(&mut self, dir: u64, path: &Path) -> io::Result<PathBuf> {
        let trash = self.trash_path();
        std::fs::rename(path, &trash)?;
        self.ops.push(NsOp {
            pending: vec![dir],
            kind: NsKind::Removed {
                path: path.to_path_buf(),
                trash: trash.clone(),
            },
        });
        Ok(trash)
    }

    /// Renames `from` (in `from_dir`) to `to` (in `to_dir`), keeping what `to` named in the
    /// trash; returns where that went.
    pub(super) fn rename(
        &mut self,
        from_dir: u64,
        from: &Path,
        to_dir: u64,
        to: &Path,
    ) -> io::Result<Option<PathBuf>> {
        let replaced = if std::fs::symlink_metadata(to).is_ok() {
            let t = self.trash_path();
            std::fs::rename(to, &t)?;
            Some(t)
        } else {
            None
        };
        if let Err(e) = std::fs::rename(from, to) {
            if let Some(t) = &replaced {
                let _ = std::fs::rename(t, to);
            }
            return Err(e);
        }
        let mut pending = vec![from_dir];
        if to_dir != from_dir {
            pending.push(to_dir);
        }
        self.ops.push(NsOp {
            pending,
            kind: NsKind::Renamed {
                from: from.to_path_buf(),
                to: to.to_path_buf(),
                replaced: replaced.clone(),
            },
        });
        Ok(replaced)
    }

    /// An fsync of directory `dir`: the changes it was the last one due for are durable (a
    /// removed entry leaves the trash for good).
    pub(super) fn dir_synced(&mut self, dir: u64) {
        for op in &mut self.ops {
            op.pending.retain(|d| *d != dir);
        }
        for op in self.ops.iter().filter(|op| op.pending.is_empty()) {
            match &op.kind {
                NsKind::Removed { trash, .. }
                | NsKind::Renamed {
                    replaced: Some(trash),
                    ..
                } => remove_any(trash),
                _ => {}
            }
        }
        self.ops.retain(|op| !op.pending.is_empty());
    }

    fn trash_path(&mut self) -> PathBuf {
        self.next_trash += 1;
        self.trash.join(self.next_trash.to_string())
    }

    /// The power cut: every unsynced write is undone (with `tear`, the last one of each file
    /// keeps a random prefix), then every unsynced namespace change, newest first; the trash
    /// is emptied. `locate` gives an inode's backing path now.
    pub(super) fn cut(
        self,
        locate: impl Fn(u64) -> Option<PathBuf>,
        tear: bool,
    ) -> io::Result<Discarded> {
        let mut d = Discarded::default();
        for (ino, log) in self.files {
            let Some(path) = locate(ino) else { continue };
            let Ok(f) = std::fs::OpenOptions::new().write(true).open(&path) else {
                continue; // a directory or gone: nothing to undo
            };
            for u in log.undo.iter().rev() {
                f.write_all_at(&u.old, u.offset)?;
                f.set_len(u.old_len)?;
                d.writes += 1;
            }
            if let (true, Some((offset, data))) = (tear, log.last) {
                let keep = (crate::fault::random() % (data.len() as u64 + 1)) as usize;
                if keep > 0 {
                    f.write_all_at(&data[..keep], offset)?;
                    d.torn += 1;
                }
            }
        }
        for op in self.ops.into_iter().rev() {
            d.names += 1;
            match op.kind {
                NsKind::Created(path) => remove_any(&path),
                NsKind::Removed { path, trash } => {
                    let _ = std::fs::rename(trash, path);
                }
                NsKind::Renamed { from, to, replaced } => {
                    let _ = std::fs::rename(&to, from);
                    if let Some(t) = replaced {
                        let _ = std::fs::rename(t, to);
                    }
                }
            }
        }
        for e in std::fs::read_dir(&self.trash)? {
            remove_any(&e?.path());
        }
        Ok(d)
    }
}

/// Removes a file or a directory tree, if there.
fn remove_any(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            let _ = std::fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(path);
        }
        Err(_) => {}
    }
}
