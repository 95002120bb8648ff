//! The journal's layout: the tables (`PRAGMA user_version` {SCHEMA_VERSION}) and the
//! migrations from every older layout, and the refusal of a newer one.

use rusqlite::Connection;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    channel TEXT NOT NULL,
    seq INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    journaled_at INTEGER NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    last_status INTEGER,
    event_type TEXT,
    bot_id TEXT,
    body_file INTEGER,
    pinned INTEGER NOT NULL DEFAULT 0,
    duplicate_of INTEGER,
    route TEXT,
    PRIMARY KEY (channel, seq)
);
-- Bodies of 1 MiB and more are files under journal-bodies/ (their `bodies` row is empty).
CREATE INDEX IF NOT EXISTS events_body_files ON events (body_file) WHERE body_file IS NOT NULL;
-- Headers and body apart from the delivery state: updating the state then rewrites a small
-- row, not a body of up to 16 MiB with its overflow pages.
CREATE TABLE IF NOT EXISTS bodies (
    channel TEXT NOT NULL,
    seq INTEGER NOT NULL,
    headers BLOB NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (channel, seq)
);
-- Only pending events are indexed: a handful at a time, so the index stays one hot page
-- instead of an index entry rewritten for every delivery.
DROP INDEX IF EXISTS events_state;
CREATE INDEX IF NOT EXISTS events_pending ON events (channel, seq) WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS attempts (
    channel TEXT NOT NULL,
    seq INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    latency_us INTEGER NOT NULL,
    status INTEGER,
    error TEXT,
    response_head BLOB,
    replay INTEGER NOT NULL DEFAULT 0,
    response_headers BLOB,
    truncated INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS attempts_seq ON attempts (channel, seq);
CREATE TABLE IF NOT EXISTS recordings (
    channel TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    state TEXT NOT NULL,
    bytes INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    sha256 TEXT,
    PRIMARY KEY (channel, seq, kind)
);
-- What makes an event a repeat (`svix:<svix-id>`, or `body:<sha-256>` for an unsigned
-- Meeting BaaS body) and the first event that had it: `events.duplicate_of` of a repeat.
CREATE TABLE IF NOT EXISTS dedupe (
    channel TEXT NOT NULL,
    key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (channel, key)
) WITHOUT ROWID;
-- Pruning an event forgets its key.
CREATE INDEX IF NOT EXISTS dedupe_seq ON dedupe (channel, seq);
";

/// Journal layout version (`PRAGMA user_version`): 2 keeps headers and bodies in `bodies`,
/// 3 big bodies in files (`events.body_file`), 4 adds `events.pinned`, 5 duplicates
/// (`events.duplicate_of`, `dedupe`) and artifact checksums (`recordings.sha256`), 6 the
/// handler's response headers and whether its body was cut (`attempts.response_headers`,
/// `truncated`), 7 the `[[route]]` of each event (`events.route`).
pub(super) const SCHEMA_VERSION: i64 = 7;

/// The error for a journal of a layout newer than this build's.
pub(super) fn too_new(version: i64) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
        Some(format!(
            "the journal has layout {version}, newer than this build's {SCHEMA_VERSION}: \
             it was written by a newer meethook; upgrade meethook"
        )),
    )
}

/// Creates the schema, or moves an older journal (version 1: bodies inside `events`; 2: no
/// `body_file`; 3: no `pinned`; 4: no duplicates; 5: no response headers; 6: no route) to it. Each step
/// adds only what is missing, so the steps compose.
pub(super) fn migrate(c: &mut Connection) -> rusqlite::Result<()> {
    let version: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(too_new(version));
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = c.transaction()?;
    let has = |column: &str| {
        tx.prepare("SELECT 1 FROM pragma_table_info('events') WHERE name = ?1")?
            .exists([column])
    };
    let old_layout = has("body")?;
    if has("seq")? && !has("body_file")? {
        tx.execute_batch("ALTER TABLE events ADD COLUMN body_file INTEGER")?;
    }
    if has("seq")? && !has("pinned")? {
        tx.execute_batch("ALTER TABLE events ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0")?;
    }
    if has("seq")? && !has("duplicate_of")? {
        tx.execute_batch("ALTER TABLE events ADD COLUMN duplicate_of INTEGER")?;
    }
    let recordings_without_sha = tx
        .prepare("SELECT 1 FROM pragma_table_info('recordings') WHERE name = 'path'")?
        .exists([])?
        && !tx
            .prepare("SELECT 1 FROM pragma_table_info('recordings') WHERE name = 'sha256'")?
            .exists([])?;
    if recordings_without_sha {
        tx.execute_batch("ALTER TABLE recordings ADD COLUMN sha256 TEXT")?;
    }
    let attempts_has = |column: &str| {
        tx.prepare("SELECT 1 FROM pragma_table_info('attempts') WHERE name = ?1")?
            .exists([column])
    };
    if attempts_has("seq")? && !attempts_has("response_headers")? {
        tx.execute_batch("ALTER TABLE attempts ADD COLUMN response_headers BLOB")?;
    }
    if attempts_has("seq")? && !attempts_has("truncated")? {
        tx.execute_batch("ALTER TABLE attempts ADD COLUMN truncated INTEGER NOT NULL DEFAULT 0")?;
    }
    // Version 7: the `[[route]]` each event goes to.
    if has("seq")? && !has("route")? {
        tx.execute_batch("ALTER TABLE events ADD COLUMN route TEXT")?;
    }
    // Creates what is missing (all of it for a new journal, `bodies` for a version-1 one).
    tx.execute_batch(SCHEMA)?;
    if old_layout {
        tx.execute_batch(
            "INSERT INTO bodies (channel, seq, headers, body)
                 SELECT channel, seq, headers, body FROM events;
             ALTER TABLE events DROP COLUMN headers;
             ALTER TABLE events DROP COLUMN body;",
        )?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use meethook_proto::frame::encode_headers;
    use rusqlite::{params, Connection};

    use super::SCHEMA_VERSION;
    use crate::journal::fixtures::{attempt, ev};
    use crate::journal::{Journal, State};

    #[test]
    fn a_version_1_journal_is_migrated_with_its_bodies() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = Connection::open(dir.path().join("journal.sqlite")).unwrap();
            // The layout before bodies moved to their own table.
            c.execute_batch(
                "CREATE TABLE events (
                     channel TEXT NOT NULL, seq INTEGER NOT NULL, received_at INTEGER NOT NULL,
                     journaled_at INTEGER NOT NULL, method TEXT NOT NULL, path TEXT NOT NULL,
                     headers BLOB NOT NULL, body BLOB NOT NULL,
                     state TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
                     last_status INTEGER, event_type TEXT, bot_id TEXT,
                     PRIMARY KEY (channel, seq));
                 CREATE INDEX events_pending ON events (channel, seq) WHERE state = 'pending';",
            )
            .unwrap();
            let e = ev(1);
            let mut h = BytesMut::new();
            encode_headers(&e.headers, &mut h);
            c.execute(
                "INSERT INTO events (channel, seq, received_at, journaled_at, method, path, headers, body)
                 VALUES ('c', 1, ?1, 0, 'POST', ?2, ?3, ?4)",
                params![e.received_at_ms, e.path, &h[..], &e.body[..]],
            )
            .unwrap();
        }
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.pending("c", 10).unwrap()[0].0, ev(1));
        assert_eq!(j.get("c", 1).unwrap().unwrap().event, ev(1));
        j.insert("c", &[ev(2)], 0).unwrap();
        assert_eq!(j.cursors("c").unwrap(), (2, 0));
        drop(j);
        // Opening again is a no-op.
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.get("c", 2).unwrap().unwrap().event, ev(2));
    }

    #[test]
    fn a_version_3_journal_gets_pins_even_when_first_opened_read_only() {
        let dir = tempfile::tempdir().unwrap();
        {
            let j = Journal::open(dir.path()).unwrap();
            j.insert("c", &[ev(1), ev(2)], 0).unwrap();
            j.record("c", 1, &attempt(1, 200), Some(State::Delivered))
                .unwrap();
        }
        {
            // Back to the layout before pins.
            let c = Connection::open(dir.path().join("journal.sqlite")).unwrap();
            c.execute_batch("ALTER TABLE events DROP COLUMN pinned; PRAGMA user_version = 3;")
                .unwrap();
        }
        let r = Journal::open_read_only(dir.path()).unwrap();
        let got = r.get("c", 1).unwrap().unwrap();
        assert_eq!((got.state, got.pinned), (State::Delivered, false));
        drop(r);
        let j = Journal::open_existing(dir.path()).unwrap();
        assert!(j.set_pinned("c", 1, true).unwrap());
        assert!(j.get("c", 1).unwrap().unwrap().pinned);
        assert_eq!(j.prune(None, i64::MAX, false, || true).unwrap().events, 0);
    }

    #[test]
    fn a_version_4_journal_gets_response_columns_and_migrating_twice_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        {
            let j = Journal::open(dir.path()).unwrap();
            j.insert("c", &[ev(1)], 0).unwrap();
            j.record("c", 1, &attempt(1, 500), None).unwrap();
        }
        {
            // Back to the layout before response headers.
            let c = Connection::open(dir.path().join("journal.sqlite")).unwrap();
            c.execute_batch(
                "ALTER TABLE attempts DROP COLUMN response_headers;
                 ALTER TABLE attempts DROP COLUMN truncated; PRAGMA user_version = 4;",
            )
            .unwrap();
        }
        let j = Journal::open_existing(dir.path()).unwrap();
        let a = j.attempts("c", 1).unwrap();
        assert_eq!((a.len(), a[0].truncated), (1, false));
        assert!(a[0].response_headers.is_empty());
        let mut with = attempt(2, 503);
        with.response_headers = vec![meethook_proto::Header::new("x-r", "v")];
        with.truncated = true;
        j.record("c", 1, &with, None).unwrap();
        drop(j);
        // A branch's step already applied, the version still old: each step adds only what
        // is missing.
        Connection::open(dir.path().join("journal.sqlite"))
            .unwrap()
            .pragma_update(None, "user_version", 4)
            .unwrap();
        let j = Journal::open_existing(dir.path()).unwrap();
        let a = j.attempts("c", 1).unwrap();
        assert!(a[1].truncated);
        assert_eq!(a[1].response_headers[0].name, "x-r");
    }

    #[test]
    fn a_journal_from_a_newer_meethook_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        Connection::open(dir.path().join("journal.sqlite"))
            .unwrap()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let err = Journal::open(dir.path()).err().expect("refused");
        assert!(err.to_string().contains("upgrade meethook"), "{err}");
    }
}
