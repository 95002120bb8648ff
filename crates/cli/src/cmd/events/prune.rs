//! `events pin|unpin|prune`: what the retention keeps, and removing the rest by hand.

use std::path::Path;
use std::time::Duration;

use anyhow::bail;

use super::{find, local, open, open_writable, printable, size_text, Where};

/// Pins (or unpins) one event.
pub(super) fn pin(at: &Where, seq: u64, pinned: bool) -> anyhow::Result<()> {
    let journal = open_writable(&at.data)?;
    let s = find(&journal, at, seq)?;
    if !journal.set_pinned(&s.channel, seq, pinned)? {
        bail!("event #{seq} left the journal meanwhile");
    }
    let ch = printable(&s.channel, false);
    if pinned {
        println!("pinned #{seq} of channel {ch}: kept until `meethook events unpin {seq}`");
    } else {
        println!("unpinned #{seq} of channel {ch}: it goes once older than the retention");
    }
    Ok(())
}

/// Removes settled events older than `older_than`, or says what would go.
pub(super) fn prune(
    data: &Path,
    channel: Option<&str>,
    older_than: Duration,
    dry_run: bool,
) -> anyhow::Result<()> {
    let journal = if dry_run {
        open(data)?
    } else {
        open_writable(data)?
    };
    let age_ms = older_than.as_millis().min(i64::MAX as u128) as i64;
    let cutoff = chrono::Utc::now().timestamp_millis().saturating_sub(age_ms);
    let p = journal.prune(channel, cutoff, dry_run, || true)?;
    println!(
        "{} {} event{} ({}) received before {} from {}",
        if dry_run { "would prune" } else { "pruned" },
        p.events,
        if p.events == 1 { "" } else { "s" },
        size_text(p.bytes),
        local(cutoff),
        journal.path().display()
    );
    Ok(())
}
