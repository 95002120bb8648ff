//! `events export` and `events import`: the NDJSON format of the parent module's doc.

use std::io::{self, BufRead, Write};
use std::path::Path;

use anyhow::{bail, Context};
use base64::Engine;
use bytes::Bytes;
use meethook_daemon::journal::{ExportLine, Journal};
use meethook_proto::{Event, Header};

use super::{open, quiet_pipe, Filters, Where};

/// The base64 of export files: standard, padded.
pub(super) use meethook_daemon::journal::export_base64 as b64;

/// Writes the matching events to stdout, one NDJSON line each.
pub(super) fn export(at: &Where, filters: &Filters, limit: Option<usize>) -> anyhow::Result<()> {
    let journal = open(&at.data)?;
    let mut q = filters.query(at.channel.clone());
    q.limit = limit;
    let mut out = io::BufWriter::new(io::stdout().lock());
    let mut failure: Option<io::Error> = None;
    let mut n = 0u64;
    journal.each(&q, |s| {
        match ExportLine::of(&s, |_| false, b"").write(&mut out) {
            Ok(()) => {
                n += 1;
                true
            }
            Err(e) => {
                failure = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = failure {
        return quiet_pipe(Err(e));
    }
    quiet_pipe(out.flush())?;
    eprintln!("exported {n} event{}", if n == 1 { "" } else { "s" });
    Ok(())
}

/// Adds the events of an export file to the journal in `data`, skipping those it has.
pub(super) fn import(file: &Path, data: &Path, channel: Option<String>) -> anyhow::Result<()> {
    let reader: Box<dyn BufRead> = if file.as_os_str() == "-" {
        Box::new(io::stdin().lock())
    } else {
        let f =
            std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
        Box::new(io::BufReader::new(f))
    };
    let mut events: Vec<(String, Event)> = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let n = i + 1;
        let line = line.with_context(|| format!("reading {} line {n}", file.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{} line {n}", file.display());
        let rec: ExportLine = serde_json::from_str(&line)
            .with_context(|| format!("{}: not an `events export` line", at()))?;
        if rec.seq == 0 || rec.seq > i64::MAX as u64 {
            bail!("{}: seq must be between 1 and 2^63-1", at());
        }
        if rec.method.is_empty() || rec.channel.is_empty() && channel.is_none() {
            bail!("{}: empty method or channel", at());
        }
        let mut headers = Vec::with_capacity(rec.headers.len());
        for (name, value) in rec.headers {
            let value = b64()
                .decode(value)
                .with_context(|| format!("{}: header {name:?} is not base64", at()))?;
            headers.push(Header::new(name, value));
        }
        let body = b64()
            .decode(rec.body)
            .with_context(|| format!("{}: body is not base64", at()))?;
        let ev = Event {
            seq: rec.seq,
            received_at_ms: rec.received_at_ms,
            method: rec.method,
            path: rec.path,
            headers,
            body: Bytes::from(body),
        };
        events.push((channel.clone().unwrap_or(rec.channel), ev));
    }
    let journal = Journal::open(data)?;
    let (imported, skipped) = journal.import(&events, chrono::Utc::now().timestamp_millis())?;
    println!(
        "imported {imported} event{}, skipped {skipped} already in the journal ({})",
        if imported == 1 { "" } else { "s" },
        journal.path().display()
    );
    Ok(())
}
