//! The model's promises on a real mount: what was synced survives a cut, what was not is
//! gone; SQLite in WAL mode works on it and keeps exactly its synced commits.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::PowerFs;

/// A mount, or `None` (with the reason printed) where FUSE is not available.
fn mount() -> Option<PowerFs> {
    match PowerFs::mount() {
        Ok(fs) => Some(fs),
        Err(why) => {
            println!("skipped: {why}");
            None
        }
    }
}

fn sync_dir(p: &Path) {
    std::fs::File::open(p).unwrap().sync_all().unwrap();
}

fn write_synced(p: &Path, data: &[u8]) {
    let mut f = std::fs::File::create(p).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn a_new_file_needs_its_directory_synced() {
    let Some(mut fs) = mount() else { return };
    let root = fs.path().to_path_buf();
    write_synced(&root.join("kept"), b"kept");
    sync_dir(&root);
    write_synced(&root.join("lost"), b"data synced, name not");
    let d = fs.cut(false);
    assert_eq!(std::fs::read(root.join("kept")).unwrap(), b"kept");
    assert!(!root.join("lost").exists(), "{d:?}");
    assert_eq!(d.names, 1);
}

#[test]
fn unsynced_writes_and_truncates_are_undone() {
    let Some(mut fs) = mount() else { return };
    let root = fs.path().to_path_buf();
    write_synced(&root.join("f"), b"0123456789");
    sync_dir(&root);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(root.join("f"))
        .unwrap();
    f.write_all_at(b"ab", 2).unwrap();
    f.write_all_at(b"tail", 10).unwrap();
    f.set_len(5).unwrap();
    f.write_all_at(b"xyz", 20).unwrap();
    drop(f);
    let d = fs.cut(false);
    assert_eq!(std::fs::read(root.join("f")).unwrap(), b"0123456789");
    assert_eq!(d.writes, 4);
    // fdatasync is enough for data.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(root.join("f"))
        .unwrap();
    f.write_all_at(b"AB", 0).unwrap();
    f.sync_data().unwrap();
    f.write_all_at(b"CD", 2).unwrap();
    drop(f);
    fs.cut(false);
    assert_eq!(std::fs::read(root.join("f")).unwrap(), b"AB23456789");
}

#[test]
fn removals_and_renames_need_their_directories_synced() {
    let Some(mut fs) = mount() else { return };
    let root = fs.path().to_path_buf();
    std::fs::create_dir(root.join("d")).unwrap();
    sync_dir(&root);
    let d = root.join("d");
    write_synced(&d.join("a"), b"a");
    write_synced(&d.join("b"), b"b");
    sync_dir(&d);
    std::fs::remove_file(d.join("a")).unwrap();
    std::fs::rename(d.join("b"), d.join("c")).unwrap();
    assert_eq!(std::fs::read(d.join("c")).unwrap(), b"b");
    fs.cut(false);
    assert_eq!(std::fs::read(d.join("a")).unwrap(), b"a");
    assert_eq!(std::fs::read(d.join("b")).unwrap(), b"b");
    assert!(!d.join("c").exists());
    // A rename over an existing name (the atomic-replace idiom), then synced.
    write_synced(&d.join("tmp"), b"new");
    std::fs::rename(d.join("tmp"), d.join("a")).unwrap();
    std::fs::remove_file(d.join("b")).unwrap();
    sync_dir(&d);
    std::fs::rename(d.join("a"), d.join("z")).unwrap();
    fs.cut(false);
    assert_eq!(std::fs::read(d.join("a")).unwrap(), b"new");
    assert!(!d.join("b").exists() && !d.join("tmp").exists() && !d.join("z").exists());
    let left: Vec<_> = std::fs::read_dir(fs.base().join("trash"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "the trash is emptied");
}

#[test]
fn a_new_directory_vanishes_with_its_synced_files_unless_its_parent_is_synced() {
    let Some(mut fs) = mount() else { return };
    let root = fs.path().to_path_buf();
    std::fs::create_dir_all(root.join("a/b")).unwrap();
    write_synced(&root.join("a/b/f"), b"f");
    sync_dir(&root.join("a/b"));
    sync_dir(&root.join("a"));
    fs.cut(false);
    assert!(
        !root.join("a").exists(),
        "a's own entry in the root was never synced"
    );
    std::fs::create_dir_all(root.join("a/b")).unwrap();
    write_synced(&root.join("a/b/f"), b"f");
    for p in ["a/b", "a", ""] {
        sync_dir(&root.join(p));
    }
    fs.cut(false);
    assert_eq!(std::fs::read(root.join("a/b/f")).unwrap(), b"f");
}

#[test]
fn a_torn_cut_keeps_a_prefix_of_the_last_write() {
    let Some(mut fs) = mount() else { return };
    let root = fs.path().to_path_buf();
    write_synced(&root.join("f"), b"base");
    sync_dir(&root);
    let new: Vec<u8> = (0..64 << 10).map(|i| (i % 251) as u8).collect();
    let mut torn = 0;
    for _ in 0..5 {
        let f = std::fs::OpenOptions::new()
            .append(true)
            .open(root.join("f"))
            .unwrap();
        (&f).write_all(b"first").unwrap();
        (&f).write_all(&new).unwrap();
        drop(f);
        fs.cut(true);
        let got = std::fs::read(root.join("f")).unwrap();
        assert_eq!(&got[..4], b"base");
        // Only the kernel's last write can be torn in: what is there beyond the synced
        // length is that write's prefix, and the holes before it read as zeros.
        let want: Vec<u8> = b"first".iter().chain(&new).copied().collect();
        if got.len() > 4 {
            let kept = &got[4..];
            assert!(kept.len() <= want.len());
            let wrong = kept
                .iter()
                .zip(&want)
                .filter(|(k, w)| **k != 0 && k != w)
                .count();
            assert_eq!(wrong, 0, "kept bytes are the written ones");
            torn += 1;
        }
        std::fs::OpenOptions::new()
            .write(true)
            .open(root.join("f"))
            .unwrap()
            .set_len(4)
            .unwrap();
        std::fs::File::open(root.join("f"))
            .unwrap()
            .sync_all()
            .unwrap();
    }
    assert!(torn > 0, "a random prefix is mostly not empty");
}

fn sqlite(path: &Path, synchronous: &str) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).unwrap();
    // Closing then leaves the WAL as a killed process would (no checkpoint, no delete).
    c.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )
    .unwrap();
    c.pragma_update(None, "journal_mode", "WAL").unwrap();
    c.pragma_update(None, "synchronous", synchronous).unwrap();
    c.execute_batch("CREATE TABLE IF NOT EXISTS t (n INTEGER PRIMARY KEY, v BLOB)")
        .unwrap();
    c
}

fn count(path: &Path) -> i64 {
    let c = rusqlite::Connection::open(path).unwrap();
    c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap_or(-1)
}

#[test]
fn sqlite_wal_keeps_its_synced_commits_and_loses_unsynced_ones() {
    let Some(mut fs) = mount() else { return };
    let db = fs.path().join("db.sqlite");
    // synchronous=FULL: every commit fsyncs the WAL; the WAL's creation syncs the directory.
    let c = sqlite(&db, "FULL");
    for i in 0..50 {
        c.execute("INSERT INTO t (v) VALUES (?1)", [vec![i as u8; 3000]])
            .unwrap();
    }
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    for i in 0..20 {
        c.execute("INSERT INTO t (v) VALUES (?1)", [vec![i as u8; 3000]])
            .unwrap();
    }
    drop(c);
    fs.cut(true);
    assert_eq!(count(&db), 70);
    // synchronous=OFF never syncs: commits after the last sync are lost.
    let c = sqlite(&db, "OFF");
    for i in 0..20 {
        c.execute("INSERT INTO t (v) VALUES (?1)", [vec![i as u8; 3000]])
            .unwrap();
    }
    assert_eq!(count(&db), 90);
    drop(c);
    fs.cut(true);
    assert_eq!(count(&db), 70, "what SQLite never synced is gone");
}

#[test]
fn a_unix_socket_binds_and_answers_on_it() {
    use std::io::Read;
    let Some(fs) = mount() else { return };
    let path = fs.path().join("control.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let mut client = std::os::unix::net::UnixStream::connect(&path).unwrap();
    client.write_all(b"ping").unwrap();
    let (mut server, _) = listener.accept().unwrap();
    let mut got = [0; 4];
    server.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
}
