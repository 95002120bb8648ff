//! [`PgCluster`]: a throwaway PostgreSQL cluster (`initdb` from `/usr/lib/postgresql/*/bin`)
//! whose data directory can sit on a [`super::PowerFs`], started on a free loopback port, and
//! killed whole (`kill -9` of its process group) for a power cut.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::PATIENCE;

/// A PostgreSQL cluster of the test's own.
pub struct PgCluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// Who runs it: PostgreSQL refuses root, so as root the `postgres` user's ids.
    user: Option<(u32, u32)>,
    server: Option<std::process::Child>,
    /// The server's stderr (off the mount), shown when it fails to start.
    log: tempfile::NamedTempFile,
}

/// The newest `/usr/lib/postgresql/*/bin` with `initdb` in it.
fn pg_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|b| b.join("initdb").exists())
        .collect();
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
}

/// The uid and gid of `name`, from `id`.
fn ids_of(name: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = std::process::Command::new("id")
            .args([flag, name])
            .output()
            .ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

impl PgCluster {
    /// `initdb` in `data` (created, owned by the user that runs the server); `Err` says
    /// why there is no cluster here (no PostgreSQL installed, no `postgres` user as root).
    pub fn init(data: &Path) -> Result<PgCluster, String> {
        let bin = pg_bin().ok_or("no /usr/lib/postgresql/*/bin/initdb")?;
        let root = is_root();
        let user = if root {
            Some(ids_of("postgres").ok_or("running as root and no postgres user")?)
        } else {
            None
        };
        std::fs::create_dir(data).map_err(|e| e.to_string())?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(data, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
        }
        // Its name durable, as an administrator's mkdir would be long before a power cut
        // (initdb syncs what is inside).
        if let Some(parent) = data.parent() {
            std::fs::File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(|e| e.to_string())?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let mut pg = PgCluster {
            bin,
            data: data.to_path_buf(),
            port,
            user,
            server: None,
            log: tempfile::NamedTempFile::new().map_err(|e| e.to_string())?,
        };
        let out = pg
            .command("initdb")
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "-D",
            ])
            .arg(data)
            .output()
            .map_err(|e| e.to_string())?;
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.start();
        Ok(pg)
    }

    fn command(&self, program: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        cmd.current_dir("/")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        cmd
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&mut self) {
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(&self.data)
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "unix_socket_directories="])
            .args(["-c", "fsync=on", "-c", "full_page_writes=on"])
            .args(["-c", "max_connections=60"])
            .stderr(self.log.reopen().expect("postgres log"))
            .spawn()
            .expect("start postgres");
        self.server = Some(child);
        let deadline = Instant::now() + PATIENCE;
        loop {
            let ready = self
                .command("pg_isready")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            if let Some(Ok(Some(status))) = self.server.as_mut().map(|c| c.try_wait()) {
                let log = std::fs::read_to_string(self.log.path()).unwrap_or_default();
                panic!("postgres exited at start: {status}\n{log}");
            }
            assert!(Instant::now() < deadline, "postgres did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `kill -9` of the postmaster and every backend at once (backends lead sessions of
    /// their own, so not through a process group), and waits until all are gone.
    pub fn kill9(&mut self) {
        let Some(mut child) = self.server.take() else {
            return;
        };
        let pm = child.id() as i32;
        // Stopped, the postmaster forks no new backend while they are listed.
        signal("STOP", &[pm]);
        let backends = children_of(pm);
        let mut all = backends.clone();
        all.push(pm);
        signal("KILL", &all);
        let _ = child.wait();
        let deadline = Instant::now() + Duration::from_secs(15);
        while !backends.iter().all(|&b| gone(b)) {
            assert!(
                Instant::now() < deadline,
                "postgres backends outlived kill -9"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `postgres://…` for the `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The processes whose parent is `pid`.
fn children_of(pid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| stat(*p).is_some_and(|(_, ppid)| ppid == pid))
        .collect()
}

/// State letter and parent pid of `pid` from `/proc/PID/stat`.
fn stat(pid: i32) -> Option<(char, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = s[s.rfind(')')? + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    Some((state, rest.next()?.parse().ok()?))
}

/// Whether `pid` is gone or a zombie (its files closed).
fn gone(pid: i32) -> bool {
    stat(pid).is_none_or(|(state, _)| matches!(state, 'Z' | 'X'))
}

/// `kill -s SIG PIDS…`.
fn signal(sig: &str, pids: &[i32]) {
    let _ = std::process::Command::new("kill")
        .args(["-s", sig])
        .args(pids.iter().map(|p| p.to_string()))
        .stderr(std::process::Stdio::null())
        .status();
}

/// Whether this process runs as root (`/proc/self` belongs to the effective user).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
