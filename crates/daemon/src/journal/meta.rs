//! Per-channel facts kept in the `meta` table: the listener's id and the handler URL.

use rusqlite::{params, OptionalExtension};

use super::{Journal, JournalError};

impl Journal {
    /// This listener's stable id for `channel`, created on first use.
    pub fn listener_id(&self, channel: &str) -> Result<String, JournalError> {
        let key = format!("listener_id:{channel}");
        self.with(|c| {
            let found: Option<String> = c
                .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                    r.get(0)
                })
                .optional()?;
            if let Some(id) = found {
                return Ok(id);
            }
            let id = format!("lst_{:032x}", rand::random::<u128>());
            // Synced, unlike the journal's other commits: the relay keeps this listener's
            // acks under the id, and after a power cut they are what spares the handler
            // repeats of everything the journal lost.
            c.pragma_update(None, "synchronous", "FULL")?;
            let inserted = c.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)",
                params![key, id],
            );
            c.pragma_update(None, "synchronous", "NORMAL")?;
            inserted?;
            Ok(id)
        })
    }

    /// `(journaled, delivered)`: the highest seq journaled, and the highest seq such that it
    /// Remembers the handler URL `listen` delivers `channel` to (`replay`'s default `--to`).
    pub fn set_forward_to(&self, channel: &str, url: &str) -> Result<(), JournalError> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                params![format!("forward_to:{channel}"), url],
            )
            .map(|_| ())
        })
    }

    /// The handler URL `listen` last delivered `channel` to, when one was recorded.
    pub fn forward_to(&self, channel: &str) -> Result<Option<String>, JournalError> {
        self.with(|c| {
            c.query_row(
                "SELECT value FROM meta WHERE key = ?1",
                params![format!("forward_to:{channel}")],
                |r| r.get(0),
            )
            .optional()
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::journal::Journal;

    #[test]
    fn forward_to_is_remembered_per_channel() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.forward_to("c").unwrap(), None);
        j.set_forward_to("c", "http://a/").unwrap();
        j.set_forward_to("c", "http://b/").unwrap();
        j.set_forward_to("d", "http://d/").unwrap();
        assert_eq!(j.forward_to("c").unwrap().as_deref(), Some("http://b/"));
        assert_eq!(j.forward_to("d").unwrap().as_deref(), Some("http://d/"));
    }
}
