//! Phase `hostile`'s integrity check: each channel's history read back and compared with the
//! 2xx answers.

use std::collections::HashMap;
use std::net::SocketAddr;

use anyhow::{anyhow, bail};
use base64::Engine;
use bytes::Bytes;
use http::{header, Request};
use http_body_util::Full;

use super::senders::Acks;
use crate::body;
use crate::handler::Checks;
use crate::load::Conn;
use crate::procs::ChannelInfo;

/// History page size (the API's most).
const PAGE: usize = 1000;

/// Every stored event of `ch`, oldest first: `(seq, body hash)`.
pub(super) async fn read_back(addr: SocketAddr, ch: &ChannelInfo) -> anyhow::Result<Acks> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut conn = Conn::open(addr).await?;
    let mut out = Vec::new();
    loop {
        let after = out.last().map_or(0, |(s, _)| *s);
        let req = Request::get(format!(
            "/api/channels/{}/events?after={after}&limit={PAGE}",
            ch.id
        ))
        .header(header::HOST, addr.to_string())
        .header(header::AUTHORIZATION, format!("Bearer {}", ch.token))
        .body(Full::new(Bytes::new()))?;
        let (head, body) = conn.send(req).await?;
        if !head.status.is_success() {
            bail!(
                "history of {} answered {}: {}",
                ch.id,
                head.status,
                String::from_utf8_lossy(&body)
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        let events = v["events"]
            .as_array()
            .ok_or_else(|| anyhow!("no events in the history answer"))?;
        if events.is_empty() {
            return Ok(out);
        }
        for e in events {
            let seq = e["seq"]
                .as_u64()
                .ok_or_else(|| anyhow!("event without seq"))?;
            let body = b64.decode(e["body_base64"].as_str().unwrap_or_default())?;
            out.push((seq, body::hash(&body)));
        }
    }
}

/// Compares the 2xx'd `acks` of one channel with what it stored; `stored_only` counts
/// stored events nobody got a 2xx for.
pub(super) fn verify(acks: &Acks, stored: &Acks, c: &mut Checks, stored_only: &mut u64) {
    let mut prev = 0;
    let mut by_seq = HashMap::new();
    for &(seq, hash) in stored {
        if seq <= prev {
            c.dups += 1;
        } else {
            c.out_of_order += seq - prev - 1;
            prev = seq;
        }
        by_seq.insert(seq, hash);
    }
    let mut seen = HashMap::new();
    for &(seq, hash) in acks {
        if seen.insert(seq, ()).is_some() {
            c.dups += 1;
            continue;
        }
        match by_seq.get(&seq) {
            Some(&h) if h == hash => c.delivered += 1,
            Some(_) => c.corrupt += 1,
            None => c.lost += 1,
        }
    }
    *stored_only += by_seq.keys().filter(|s| !seen.contains_key(*s)).count() as u64;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_counts_gaps_losses_and_corruption() {
        let stored = vec![(1, 11), (2, 22), (4, 44), (5, 50)];
        let acks = vec![(1, 11), (2, 22), (3, 33), (4, 44), (5, 55)];
        let (mut c, mut extra) = (Checks::default(), 0);
        verify(&acks, &stored, &mut c, &mut extra);
        assert_eq!(
            (c.delivered, c.lost, c.corrupt, c.out_of_order),
            (3, 1, 1, 1)
        );
        let (mut c, mut extra) = (Checks::default(), 0);
        verify(&acks[..2].to_vec(), &stored, &mut c, &mut extra);
        assert_eq!((c.delivered, extra), (2, 2), "stored without a 2xx");
    }
}
