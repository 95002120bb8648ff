//! The FUSE file system: every operation passes through to a backing directory, and the
//! [`Model`] hears of each write, truncate, sync and name change first.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use super::model::Model;

/// How long the kernel may cache names and attributes: every change goes through this file
/// system, so the kernel's own updates keep its cache right.
const TTL: Duration = Duration::from_secs(1);

/// Inodes (ours, never reused within a mount) to backing paths, open files, and the model.
pub(super) struct State {
    model: Model,
    paths: HashMap<u64, PathBuf>,
    inodes: HashMap<PathBuf, u64>,
    next_ino: u64,
    files: HashMap<u64, (u64, File)>,
    next_fh: u64,
}

impl State {
    pub(super) fn new(root: PathBuf, trash: PathBuf) -> State {
        State {
            model: Model::new(trash),
            paths: HashMap::from([(INodeNo::ROOT.0, root.clone())]),
            inodes: HashMap::from([(root, INodeNo::ROOT.0)]),
            next_ino: INodeNo::ROOT.0 + 1,
            files: HashMap::new(),
            next_fh: 1,
        }
    }

    /// The model and where each inode is in the backing directory now.
    pub(super) fn into_parts(self) -> (Model, HashMap<u64, PathBuf>) {
        (self.model, self.paths)
    }

    fn path(&self, ino: u64) -> Option<PathBuf> {
        self.paths.get(&ino).cloned()
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        self.paths
            .get(&parent.0)
            .map(|p| p.join(name))
            .ok_or(Errno::ENOENT)
    }

    fn ino_of(&mut self, path: &PathBuf) -> u64 {
        if let Some(i) = self.inodes.get(path) {
            return *i;
        }
        let i = self.next_ino;
        self.next_ino += 1;
        self.paths.insert(i, path.clone());
        self.inodes.insert(path.clone(), i);
        i
    }

    /// The attributes of `path` under our inode number for it.
    fn attr(&mut self, path: &PathBuf) -> Result<FileAttr, Errno> {
        let m = std::fs::symlink_metadata(path).map_err(Errno::from)?;
        let ino = self.ino_of(path);
        Ok(attr_of(ino, &m))
    }

    /// `from` (and everything under it) is now at `to`; `to`'s old inode went to `trash`.
    fn moved(&mut self, from: &Path, to: &Path) {
        let under: Vec<(PathBuf, u64)> = self
            .inodes
            .iter()
            .filter(|(p, _)| p.starts_with(from))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        for (p, i) in under {
            self.inodes.remove(&p);
            // (`join("")` would add a trailing slash: "not a directory" for a file.)
            let rest = p.strip_prefix(from).unwrap();
            let np = if rest.as_os_str().is_empty() {
                to.to_path_buf()
            } else {
                to.join(rest)
            };
            self.paths.insert(i, np.clone());
            self.inodes.insert(np, i);
        }
    }

    fn open_fh(&mut self, ino: u64, f: File) -> FileHandle {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.files.insert(fh, (ino, f));
        FileHandle(fh)
    }
}

fn kind_of(t: std::fs::FileType) -> FileType {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        FileType::Directory
    } else if t.is_symlink() {
        FileType::Symlink
    } else if t.is_socket() {
        FileType::Socket
    } else {
        FileType::RegularFile
    }
}

fn attr_of(ino: u64, m: &std::fs::Metadata) -> FileAttr {
    let t = |s: i64, ns: i64| UNIX_EPOCH + Duration::new(s.max(0) as u64, ns as u32);
    let kind = kind_of(m.file_type());
    FileAttr {
        ino: INodeNo(ino),
        size: m.len(),
        blocks: m.blocks(),
        atime: t(m.atime(), m.atime_nsec()),
        mtime: t(m.mtime(), m.mtime_nsec()),
        ctime: t(m.ctime(), m.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind,
        perm: (m.mode() & 0o7777) as u16,
        nlink: m.nlink() as u32,
        uid: m.uid(),
        gid: m.gid(),
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

/// The FUSE side; the [`State`] is shared with the mount's owner, who rolls it back after a
/// cut.
pub(super) struct PowerFs {
    pub(super) state: Arc<Mutex<State>>,
}

impl PowerFs {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn io(e: std::io::Error) -> Errno {
    Errno::from(e)
}

/// Opens a backing file for reading and writing whatever the caller asked (the kernel checks
/// permissions; `O_APPEND` is the kernel's business: it sends the offset).
fn open_backing(path: &PathBuf) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
}

fn set_owner(path: &PathBuf, req: &Request) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(req.uid()), Some(req.gid()))
}

fn to_time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl Filesystem for PowerFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut s = self.lock();
        match s.child(parent, name).and_then(|p| s.attr(&p)) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let path = self.lock().path(ino.0);
        match path.ok_or(Errno::ENOENT).and_then(|p| {
            let m = std::fs::symlink_metadata(&p).map_err(io)?;
            Ok(attr_of(ino.0, &m))
        }) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _ = req;
        let mut s = self.lock();
        let result = (|| {
            let path = s.path(ino.0).ok_or(Errno::ENOENT)?;
            if let Some(mode) = mode {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777))
                    .map_err(io)?;
            }
            if uid.is_some() || gid.is_some() {
                std::os::unix::fs::lchown(&path, uid, gid).map_err(io)?;
            }
            if let Some(size) = size {
                let f = match fh.and_then(|h| s.files.get(&h.0)) {
                    Some((_, f)) => f.try_clone().map_err(io)?,
                    None => open_backing(&path).map_err(io)?,
                };
                s.model.before_truncate(ino.0, &f, size).map_err(io)?;
                f.set_len(size).map_err(io)?;
            }
            if atime.is_some() || mtime.is_some() {
                let f = File::open(&path).map_err(io)?;
                let mut times = std::fs::FileTimes::new();
                if let Some(t) = atime {
                    times = times.set_accessed(to_time(t));
                }
                if let Some(t) = mtime {
                    times = times.set_modified(to_time(t));
                }
                f.set_times(times).map_err(io)?;
            }
            let m = std::fs::symlink_metadata(&path).map_err(io)?;
            Ok(attr_of(ino.0, &m))
        })();
        match result {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut s = self.lock();
        let result = (|| {
            let path = s.child(parent, name)?;
            std::fs::create_dir(&path).map_err(io)?;
            s.model.created(parent.0, path.clone());
            std::fs::set_permissions(
                &path,
                std::fs::Permissions::from_mode(mode & !umask & 0o7777),
            )
            .map_err(io)?;
            set_owner(&path, req).map_err(io)?;
            s.attr(&path)
        })();
        match result {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    /// Unix sockets only (a `bind()` here): the daemon's control socket.
    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFSOCK {
            return reply.error(Errno::ENOSYS);
        }
        let mut s = self.lock();
        let result = (|| {
            let path = s.child(parent, name)?;
            // Binding makes the socket file; the socket itself is the kernel's, on our inode.
            drop(std::os::unix::net::UnixListener::bind(&path).map_err(io)?);
            s.model.created(parent.0, path.clone());
            set_owner(&path, req).map_err(io)?;
            s.attr(&path)
        })();
        match result {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, false, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, true, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut s = self.lock();
        let result = (|| {
            let from = s.child(parent, name)?;
            let to = s.child(newparent, newname)?;
            if flags.contains(RenameFlags::RENAME_EXCHANGE) {
                return Err(Errno::EINVAL);
            }
            let to_exists = std::fs::symlink_metadata(&to).is_ok();
            if flags.contains(RenameFlags::RENAME_NOREPLACE) && to_exists {
                return Err(Errno::EEXIST);
            }
            if to_exists && std::fs::symlink_metadata(&to).map_err(io)?.is_dir() {
                // Replacing a directory: only an empty one, as rename(2) says.
                if std::fs::read_dir(&to).map_err(io)?.next().is_some() {
                    return Err(Errno::ENOTEMPTY);
                }
            }
            let replaced = s
                .model
                .rename(parent.0, &from, newparent.0, &to)
                .map_err(io)?;
            if let Some(t) = replaced {
                s.moved(&to, &t);
            }
            s.moved(&from, &to);
            Ok(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut s = self.lock();
        let result = (|| {
            let path = s.path(ino.0).ok_or(Errno::ENOENT)?;
            let f = open_backing(&path).map_err(io)?;
            if flags.0 & libc::O_TRUNC != 0 {
                s.model.before_truncate(ino.0, &f, 0).map_err(io)?;
                f.set_len(0).map_err(io)?;
            }
            Ok(s.open_fh(ino.0, f))
        })();
        match result {
            Ok(fh) => reply.opened(fh, FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let s = self.lock();
        let Some((_, f)) = s.files.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let mut buf = vec![0; size as usize];
        let mut n = 0;
        while n < buf.len() {
            match f.read_at(&mut buf[n..], offset + n as u64) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return reply.error(io(e)),
            }
        }
        reply.data(&buf[..n]);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut s = self.lock();
        let State { model, files, .. } = &mut *s;
        let Some((ino, f)) = files.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let result = model
            .before_write(*ino, f, offset, data)
            .and_then(|()| f.write_all_at(data, offset));
        match result {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(io(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.lock().files.remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // The backing file is not synced: durability is what the model says, and a real
        // fsync of every test write would only slow the tests down.
        self.lock().model.file_synced(ino.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.lock().path(ino.0) {
            Some(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut s = self.lock();
        let Some(dir) = s.path(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let mut entries = match std::fs::read_dir(&dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .filter_map(|e| Some((e.file_name(), kind_of(e.file_type().ok()?))))
                .collect::<Vec<_>>(),
            Err(e) => return reply.error(io(e)),
        };
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut all = vec![
            (ino.0, FileType::Directory, OsStr::new(".").to_os_string()),
            (ino.0, FileType::Directory, OsStr::new("..").to_os_string()),
        ];
        for (name, kind) in entries {
            let i = s.ino_of(&dir.join(&name));
            all.push((i, kind, name));
        }
        for (n, (i, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(i), n as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.lock().model.dir_synced(ino.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(1 << 28, 1 << 27, 1 << 27, 1 << 24, 1 << 23, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut s = self.lock();
        let result = (|| {
            let path = s.child(parent, name)?;
            let existed = std::fs::symlink_metadata(&path).is_ok();
            if existed && flags & libc::O_EXCL != 0 {
                return Err(Errno::EEXIST);
            }
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io)?;
            if !existed {
                s.model.created(parent.0, path.clone());
                f.set_permissions(std::fs::Permissions::from_mode(mode & !umask & 0o7777))
                    .map_err(io)?;
                set_owner(&path, req).map_err(io)?;
            }
            let a = s.attr(&path)?;
            if existed && flags & libc::O_TRUNC != 0 {
                s.model.before_truncate(a.ino.0, &f, 0).map_err(io)?;
                f.set_len(0).map_err(io)?;
            }
            let fh = s.open_fh(a.ino.0, f);
            let a = s.attr(&path)?;
            Ok((a, fh))
        })();
        match result {
            Ok((a, fh)) => reply.created(&TTL, &a, Generation(0), fh, FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }
}

impl PowerFs {
    fn remove(&self, parent: INodeNo, name: &OsStr, dir: bool, reply: ReplyEmpty) {
        let mut s = self.lock();
        let result = (|| {
            let path = s.child(parent, name)?;
            let m = std::fs::symlink_metadata(&path).map_err(io)?;
            match (dir, m.is_dir()) {
                (true, false) => return Err(Errno::ENOTDIR),
                (false, true) => return Err(Errno::EISDIR),
                (true, true) if std::fs::read_dir(&path).map_err(io)?.next().is_some() => {
                    return Err(Errno::ENOTEMPTY);
                }
                _ => {}
            }
            let trash = s.model.remove(parent.0, &path).map_err(io)?;
            s.moved(&path, &trash);
            Ok(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}
