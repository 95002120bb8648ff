//! [`JournalError`]: what can go wrong opening, reading or writing the journal.

use std::path::PathBuf;

use super::schema::SCHEMA_VERSION;
use super::JOURNAL_FILE;

/// Errors from the journal. Each message holds its cause (no `source()` chain), so a
/// printed chain says it once.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// SQLite failed (disk full, permissions, corruption).
    #[error("journal {path}: {error}")]
    Sqlite {
        /// The journal file.
        path: PathBuf,
        /// What SQLite said.
        error: rusqlite::Error,
    },
    /// The journal directory or file could not be created.
    #[error("cannot create journal {path}: {error}{}", permission_hint(error))]
    Create {
        /// The directory or file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The journal directory or its body files could not be read or written.
    #[error("journal {path}: {error}{}", permission_hint(error))]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// A reader found no journal.
    #[error(
        "no journal at {}: run `meethook listen --data {}` first (or pass the --data it used)",
        .0.join(JOURNAL_FILE).display(),
        .0.display()
    )]
    Missing(PathBuf),
    /// The journal directory is a file.
    #[error(
        "--data {} is a file, not a directory: pass the journal's directory (where \
         `meethook listen --data DIR` keeps {JOURNAL_FILE})",
        .0.display()
    )]
    NotADirectory(PathBuf),
    /// A read-only open found an older layout it could not upgrade.
    #[error(
        "journal {path} has layout {version}, older than this build's {SCHEMA_VERSION}, and \
         upgrading it failed ({error}): run `meethook listen --data` on it once, as a user \
         who can write to it"
    )]
    Outdated {
        /// The journal file.
        path: PathBuf,
        /// Its layout.
        version: i64,
        /// Why the upgrade failed.
        error: Box<JournalError>,
    },
}

impl JournalError {
    /// Whether the disk (or the file system's quota) is full: space may come back.
    pub fn is_disk_full(&self) -> bool {
        match self {
            JournalError::Sqlite { error, .. } => matches!(
                error.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DiskFull)
            ),
            JournalError::Create { error, .. } | JournalError::Io { error, .. } => {
                error.kind() == std::io::ErrorKind::StorageFull
            }
            _ => false,
        }
    }
}

/// The fix for a permission error, appended to its message.
fn permission_hint(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        " (pass a --data directory you can write to)"
    } else {
        ""
    }
}
