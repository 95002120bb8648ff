//! [`PowerFs`]: a FUSE file system for power-loss tests. It passes everything through to a
//! backing directory but remembers what has not been made durable (file data until
//! `fsync`/`fdatasync` of that file; a new, removed or renamed name until an fsync of its
//! directory) and on [`PowerFs::cut`] throws exactly that away, optionally keeping a torn
//! prefix of each file's last unsynced write.
//!
//! # Layout
//! - here: mounting, unmounting (lazily, every step under a timeout, so a stuck mount never
//!   blocks the machine), the cut.
//! - `fs`: the pass-through file system.
//! - `model`: the unsynced state and its rollback.
//! - `pg`: [`PgCluster`], a PostgreSQL cluster of the test's own, to put on a mount.
//!
//! The FUSE session runs on a thread of the test process, mounted with `auto_unmount` (the
//! mount goes away even if the test process is killed). Processes using the mount must be
//! dead before a cut: they would keep it busy.

mod fs;
mod model;
mod pg;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use model::Discarded;
pub use pg::PgCluster;

use fs::State;

/// Longest wait for an unmount or the FUSE thread to end.
const STEP: Duration = Duration::from_secs(15);

struct Mounted {
    session: fuser::BackgroundSession,
    state: Arc<Mutex<State>>,
    /// The mount's device number: its FUSE connection, to abort if unmounting hangs.
    dev: u64,
}

/// A mounted power-loss file system (see the module docs).
pub struct PowerFs {
    mounted: Option<Mounted>,
    mountpoint: PathBuf,
    backing: PathBuf,
    trash: PathBuf,
    /// Holds the backing directory, the trash and the mount point.
    _dir: tempfile::TempDir,
}

impl PowerFs {
    /// Mounts a new, empty one. `Err` says why FUSE cannot be had here (no `/dev/fuse`, or
    /// mounting is not permitted); tests print it as their skip reason. Any other failure
    /// (no `fusermount3`: install `fuse3`) panics.
    pub fn mount() -> Result<PowerFs, String> {
        Self::mount_in(&std::env::temp_dir())
    }

    /// [`PowerFs::mount`] with its backing directory under `parent` (a tmpfs that can fill
    /// up, say).
    pub fn mount_in(parent: &Path) -> Result<PowerFs, String> {
        if !Path::new("/dev/fuse").exists() {
            return Err("no /dev/fuse".into());
        }
        let dir = tempfile::tempdir_in(parent).map_err(|e| e.to_string())?;
        let (mountpoint, backing, trash) = (
            dir.path().join("mnt"),
            dir.path().join("backing"),
            dir.path().join("trash"),
        );
        for d in [&mountpoint, &backing, &trash] {
            std::fs::create_dir(d).map_err(|e| e.to_string())?;
        }
        let mut fs = PowerFs {
            mounted: None,
            mountpoint,
            backing,
            trash,
            _dir: dir,
        };
        fs.start()?;
        Ok(fs)
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// The directory holding the mount point, the backing directory and the trash.
    pub fn base(&self) -> &Path {
        self._dir.path()
    }

    /// Lets other users reach the mount point (PostgreSQL runs as its own user).
    pub fn open_to_all(&self) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        for d in [self.base(), self.path()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
        }
        Ok(())
    }

    fn start(&mut self) -> Result<(), String> {
        let state = Arc::new(Mutex::new(State::new(
            self.backing.clone(),
            self.trash.clone(),
        )));
        let fs = fs::PowerFs {
            state: state.clone(),
        };
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("meethook-powerfs".into()),
            fuser::MountOption::AutoUnmount,
            fuser::MountOption::DefaultPermissions,
        ];
        // Other users too (PostgreSQL runs as its own user); `auto_unmount` needs it anyway.
        config.acl = fuser::SessionACL::All;
        let session = match fuser::spawn_mount(fs, &self.mountpoint, &config) {
            Ok(s) => s,
            Err(e) if refused(&e) => return Err(format!("FUSE mount not permitted: {e}")),
            Err(e) => panic!("cannot mount FUSE: {e} (is fuse3, with fusermount3, installed?)"),
        };
        let dev = std::os::unix::fs::MetadataExt::dev(
            &std::fs::metadata(&self.mountpoint).map_err(|e| e.to_string())?,
        );
        self.mounted = Some(Mounted {
            session,
            state,
            dev,
        });
        Ok(())
    }

    /// Unmounts (lazily) and waits for the FUSE thread; the state it leaves, if any.
    fn stop(&mut self) -> Option<State> {
        let m = self.mounted.take()?;
        let _ = run_bounded(
            std::process::Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.mountpoint),
        );
        let (tx, rx) = std::sync::mpsc::channel();
        let session = m.session;
        std::thread::spawn(move || {
            let _ = tx.send(session.umount_and_join());
        });
        if rx.recv_timeout(STEP).is_err() {
            // Still served: something holds the mount. Abort the connection so that nothing
            // blocks on it, then give the thread a last chance.
            let minor = ((m.dev >> 12) & 0xfff00) | (m.dev & 0xff);
            let _ = std::fs::write(format!("/sys/fs/fuse/connections/{minor}/abort"), "1");
            let _ = rx.recv_timeout(STEP);
        }
        let state = Arc::try_unwrap(m.state).ok()?;
        Some(state.into_inner().unwrap_or_else(|e| e.into_inner()))
    }

    /// The power cut: unmounts, throws away what was not durable (with `tear`, each file's
    /// last unsynced write keeps a random prefix), mounts again. Every process using the mount
    /// must be dead (`kill -9` and waited for) first.
    pub fn cut(&mut self, tear: bool) -> Discarded {
        let state = self
            .stop()
            .expect("the FUSE thread ended and released its state");
        let (model, paths) = state.into_parts();
        let discarded = model
            .cut(|ino| paths.get(&ino).cloned(), tear)
            .expect("roll back the backing directory");
        self.start().expect("mount again after a cut");
        discarded
    }
}

impl Drop for PowerFs {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether a mount failed for lack of permission (a container without the capability, a
/// user without access to `/dev/fuse`).
fn refused(e: &std::io::Error) -> bool {
    let text = e.to_string();
    e.kind() == std::io::ErrorKind::PermissionDenied
        || text.contains("not permitted")
        || text.contains("ermission denied")
}

/// Runs `cmd` for at most [`STEP`].
fn run_bounded(cmd: &mut std::process::Command) -> std::io::Result<()> {
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let deadline = std::time::Instant::now() + STEP;
    while child.try_wait()?.is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
