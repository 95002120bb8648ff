//! Directories whose entries survive a power cut, not only a crash.

use std::path::Path;

/// Creates `dir` and its missing parents (with `mode` on Unix, less the umask) and makes
/// each new one durable: every directory this call created is fsync'd, and so is the parent
/// it was created in. Without the parent's fsync a power cut can take a new directory away
/// with every file in it, however well those files were synced.
pub fn create_dir_durable(dir: &Path, mode: u32) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut p = dir;
    while std::fs::symlink_metadata(p).is_err() {
        missing.push(p);
        match p.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => p = parent,
            _ => break,
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(dir)?;
    }
    #[cfg(not(unix))]
    {
        let _ = mode;
        std::fs::create_dir_all(dir)?;
    }
    // Outermost first: each parent's entry is durable before its child's.
    for new in missing.iter().rev() {
        sync_dir(new)?;
        sync_dir(parent_of(new))?;
    }
    Ok(())
}

/// The directory `path` is in (`.` for a bare name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes the entries of `dir` durable (a new file's name, not only its data).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_missing_parents_and_leaves_existing_ones() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b/c");
        create_dir_durable(&d, 0o700).unwrap();
        assert!(d.is_dir());
        create_dir_durable(&d, 0o700).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(t.path().join("a"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        std::fs::write(t.path().join("f"), b"x").unwrap();
        assert!(create_dir_durable(&t.path().join("f"), 0o700).is_err());
    }
}
