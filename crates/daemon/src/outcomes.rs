//! The outcome log: one small fixed-size record per delivery outcome, appended with a single
//! `write` before the next event is sent.
//!
//! Recording each outcome in SQLite before the next send costs a commit per event (tens of
//! µs, most of a delivery cycle). The log makes the outcome safe against `kill -9` for about
//! one µs instead; the full rows (response head, error text) go to the journal in batches.
//! Two files take turns: while one file's batch is written to the journal in the background,
//! new outcomes go to the other; a file is emptied once its batch is in the journal. At
//! start-up, records the journal missed are applied to it.
//!
//! Record layout (little-endian, 40 bytes): seq u64 · started_at_ms i64 · latency_us u32 ·
//! attempt u32 · status u16 (0 = none) · state u8 · flags u8 · reserved u32 · crc32 u32 of
//! the 36 bytes before it. A torn or garbled tail (power loss) fails the CRC and is ignored.
//!
//! The file is also the listener's lock: one `meethook listen` per channel and `--data`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;

use crate::journal::{Attempt, Record, State};

const RECORD: usize = 40;
const FLAG_ATTEMPT: u8 = 1;

/// An exclusively locked outcome log (two files) for one channel of one journal directory.
pub(crate) struct OutcomeLog {
    files: [File; 2],
    paths: [PathBuf; 2],
    /// The file new outcomes go to.
    active: usize,
    /// Records in each file since it was last emptied.
    lens: [usize; 2],
}

/// Why the log could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LogError {
    /// Another process holds the lock.
    #[error(
        "another `meethook listen` is delivering channel {channel:?} from this --data directory \
         ({path}); stop it, or give this one its own --data"
    )]
    Locked {
        /// The channel.
        channel: String,
        /// The log file.
        path: PathBuf,
    },
    /// An I/O error, its cause in the message (not chained: a printed chain says it once).
    #[error("outcome log {path}: {error}")]
    Io {
        /// The log file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
}

impl LogError {
    /// Whether the disk is full: space may come back.
    pub(crate) fn is_disk_full(&self) -> bool {
        matches!(self, LogError::Io { error, .. } if error.kind() == std::io::ErrorKind::StorageFull)
    }
}

/// `channel` as a part of a file name: itself when it is `[A-Za-z0-9_-]` (as channel ids
/// are), hex-encoded otherwise.
pub(crate) fn file_stem(channel: &str) -> String {
    let safe = !channel.is_empty()
        && channel.len() <= 64
        && channel
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if safe {
        channel.to_string()
    } else {
        let hex: String = channel.bytes().map(|b| format!("{b:02x}")).collect();
        format!("x{hex}")
    }
}

/// The log files' names for `channel`. The first is also the lock.
fn file_names(channel: &str) -> [String; 2] {
    let stem = file_stem(channel);
    [
        format!("outcomes-{stem}.log"),
        format!("outcomes-{stem}.1.log"),
    ]
}

fn state_code(s: Option<State>) -> u8 {
    match s {
        None => 0,
        Some(State::Delivered) => 1,
        Some(State::Failed) => 2,
        Some(State::Skipped) => 3,
        Some(State::Pending) => 4,
    }
}

fn state_from(code: u8) -> Option<Option<State>> {
    Some(match code {
        0 => None,
        1 => Some(State::Delivered),
        2 => Some(State::Failed),
        3 => Some(State::Skipped),
        4 => Some(State::Pending),
        _ => return None,
    })
}

fn encode(r: &Record) -> [u8; RECORD] {
    let mut b = [0u8; RECORD];
    b[0..8].copy_from_slice(&r.seq.to_le_bytes());
    let mut flags = 0;
    if let Some(a) = &r.attempt {
        flags |= FLAG_ATTEMPT;
        b[8..16].copy_from_slice(&a.started_at_ms.to_le_bytes());
        let us = u32::try_from(a.latency.as_micros()).unwrap_or(u32::MAX);
        b[16..20].copy_from_slice(&us.to_le_bytes());
        b[20..24].copy_from_slice(&a.attempt.to_le_bytes());
        b[24..26].copy_from_slice(&a.status.unwrap_or(0).to_le_bytes());
    }
    b[26] = state_code(r.state);
    b[27] = flags;
    let crc = crc32fast::hash(&b[..36]);
    b[36..40].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode(b: &[u8]) -> Option<Record> {
    let crc = u32::from_le_bytes(b[36..40].try_into().ok()?);
    if crc32fast::hash(&b[..36]) != crc {
        return None;
    }
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
    let state = state_from(b[26])?;
    let attempt = (b[27] & FLAG_ATTEMPT != 0).then(|| {
        let status = u16::from_le_bytes([b[24], b[25]]);
        Attempt {
            attempt: u32_at(20),
            started_at_ms: u64_at(8) as i64,
            latency: Duration::from_micros(u64::from(u32_at(16))),
            status: (status != 0).then_some(status),
            error: (status == 0).then(|| "(error text lost when the daemon stopped)".to_string()),
            response_head: Bytes::new(),
            response_headers: Vec::new(),
            truncated: false,
            replay: false,
        }
    });
    Some(Record {
        seq: u64_at(0),
        attempt,
        state,
        route: None,
    })
}

impl OutcomeLog {
    /// Opens and locks the log of `channel` in `dir`; returns it with the records it holds
    /// (outcomes the journal may not have yet), in the order they were made.
    pub(crate) fn open(dir: &Path, channel: &str) -> Result<(OutcomeLog, Vec<Record>), LogError> {
        let [a, b] = file_names(channel).map(|n| dir.join(n));
        let (fa, ra) = open_file(&a)?;
        match fa.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LogError::Locked {
                    channel: channel.to_string(),
                    path: a,
                })
            }
            Err(std::fs::TryLockError::Error(error)) => {
                return Err(LogError::Io { path: a, error })
            }
        }
        let (fb, rb) = open_file(&b)?;
        let lens = [ra.len(), rb.len()];
        let mut records: Vec<Record> = ra.into_iter().chain(rb).collect();
        // Either file may be the older one; an event's attempts are numbered in order.
        records.sort_by_key(|r| (r.seq, r.attempt.as_ref().map_or(0, |a| a.attempt)));
        let log = OutcomeLog {
            files: [fa, fb],
            paths: [a, b],
            active: 0,
            lens,
        };
        Ok((log, records))
    }

    /// Appends one outcome. After it returns the outcome survives the process being killed.
    pub(crate) fn append(&mut self, r: &Record) -> Result<(), LogError> {
        let i = self.active;
        if let Err(error) = self.files[i].write_all(&encode(r)) {
            // A short write (disk full) may have left part of the record: cut it off, so
            // the next record starts where a reader expects one.
            let _ = self.files[i].set_len((self.lens[i] * RECORD) as u64);
            return Err(LogError::Io {
                path: self.paths[i].clone(),
                error,
            });
        }
        self.lens[i] += 1;
        Ok(())
    }

    /// Sends new outcomes to the other file and returns the file that holds the outcomes so
    /// far. The other file's outcomes must already be in the journal: it is emptied first
    /// if an earlier [`OutcomeLog::clear`] failed.
    pub(crate) fn rotate(&mut self) -> Result<usize, LogError> {
        self.clear(1 - self.active)?;
        self.active = 1 - self.active;
        Ok(1 - self.active)
    }

    /// Empties file `i` once the journal holds everything in it.
    pub(crate) fn clear(&mut self, i: usize) -> Result<(), LogError> {
        if self.lens[i] == 0 {
            return Ok(());
        }
        self.files[i].set_len(0).map_err(|error| LogError::Io {
            path: self.paths[i].clone(),
            error,
        })?;
        self.lens[i] = 0;
        Ok(())
    }
}

/// Opens one log file for appending and reads the valid records it holds.
fn open_file(path: &Path) -> Result<(File, Vec<Record>), LogError> {
    let io = |error| LogError::Io {
        path: path.to_path_buf(),
        error,
    };
    let mut opts = OpenOptions::new();
    opts.read(true).append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut file = opts.open(path).map_err(io)?;
    let mut raw = Vec::new();
    file.read_to_end(&mut raw).map_err(io)?;
    let records: Vec<Record> = raw.chunks_exact(RECORD).map_while(decode).collect();
    // Drop a torn or garbled tail, so records appended from now on can be read back.
    let valid = (records.len() * RECORD) as u64;
    if raw.len() as u64 != valid {
        file.set_len(valid).map_err(io)?;
    }
    Ok((file, records))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, status: Option<u16>, state: Option<State>) -> Record {
        Record {
            seq,
            attempt: Some(Attempt {
                attempt: 3,
                started_at_ms: 1_700_000_000_123,
                latency: Duration::from_micros(1234),
                status,
                error: None,
                response_head: Bytes::from_static(b"ok"),
                response_headers: Vec::new(),
                truncated: false,
                replay: false,
            }),
            state,
            route: None,
        }
    }

    #[test]
    fn records_survive_reopen_and_a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, old) = OutcomeLog::open(dir.path(), "ch_1").unwrap();
            assert!(old.is_empty());
            log.append(&rec(1, Some(200), Some(State::Delivered)))
                .unwrap();
            log.append(&rec(2, None, None)).unwrap();
            log.append(&Record {
                seq: 3,
                attempt: None,
                state: Some(State::Skipped),
                route: None,
            })
            .unwrap();
            // Later outcomes in the other file come back in order too.
            assert_eq!(log.rotate().unwrap(), 0);
            log.append(&rec(5, Some(200), Some(State::Delivered)))
                .unwrap();
        }
        // A half-written fourth record, as after a power cut.
        let path = dir.path().join("outcomes-ch_1.log");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&encode(&rec(4, Some(200), Some(State::Delivered)))[..20])
            .unwrap();
        drop(f);
        let (mut log, got) = OutcomeLog::open(dir.path(), "ch_1").unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(got[3].seq, 5);
        // The torn tail was cut off: a record appended now reads back after a reopen.
        log.append(&rec(6, Some(200), Some(State::Delivered)))
            .unwrap();
        drop(log);
        let (mut log, got) = OutcomeLog::open(dir.path(), "ch_1").unwrap();
        assert_eq!(
            got.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [1, 2, 3, 5, 6]
        );
        let a = got[0].attempt.as_ref().unwrap();
        assert_eq!((got[0].seq, got[0].state), (1, Some(State::Delivered)));
        assert_eq!(
            (a.attempt, a.status, a.started_at_ms),
            (3, Some(200), 1_700_000_000_123)
        );
        assert_eq!(a.latency, Duration::from_micros(1234));
        let retry = got[1].attempt.as_ref().unwrap();
        assert_eq!((got[1].state, retry.status), (None, None));
        assert!(
            retry.error.is_some(),
            "a failed attempt keeps a placeholder error"
        );
        assert!(got[2].attempt.is_none());
        assert_eq!(got[2].state, Some(State::Skipped));
        log.clear(0).unwrap();
        log.clear(1).unwrap();
        drop(log);
        let (_, got) = OutcomeLog::open(dir.path(), "ch_1").unwrap();
        assert!(got.is_empty());
    }

    #[test]
    fn a_second_listener_on_the_same_channel_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_held, _) = OutcomeLog::open(dir.path(), "ch_1").unwrap();
        let err = OutcomeLog::open(dir.path(), "ch_1").err().expect("locked");
        assert!(
            err.to_string().contains("another `meethook listen`"),
            "{err}"
        );
        // Another channel in the same directory is fine.
        OutcomeLog::open(dir.path(), "ch_2").unwrap();
    }

    #[test]
    fn unusual_channel_ids_get_a_safe_file_name() {
        assert_eq!(file_names("ch_abc-1")[0], "outcomes-ch_abc-1.log");
        assert_eq!(file_names("../x")[1], "outcomes-x2e2e2f78.1.log");
    }
}
