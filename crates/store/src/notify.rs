//! In-process wake-ups for stream tasks when a channel's head moves, and the channel's most
//! recent committed events, so live streams send them from memory instead of reading them
//! back from the store.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use meethook_proto::Event;
use tokio::sync::watch;

/// Most events kept in memory per channel.
const TAIL_EVENTS: usize = 512;
/// Most body and header bytes kept in memory per channel (the newest event is always kept).
const TAIL_BYTES: usize = 8 << 20;

/// One `watch` per channel carrying its latest head seq, and its recent events.
#[derive(Default)]
pub struct Notifier {
    channels: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    head: watch::Sender<u64>,
    /// Committed events with consecutive seqs, oldest first.
    tail: VecDeque<Event>,
    tail_bytes: usize,
}

impl Entry {
    fn new() -> Entry {
        Entry {
            head: watch::channel(0).0,
            tail: VecDeque::new(),
            tail_bytes: 0,
        }
    }
}

/// Moves a head watch up to `head` (never down), waking its receivers only then.
fn raise(tx: &watch::Sender<u64>, head: u64) {
    tx.send_if_modified(|h| {
        let higher = head > *h;
        if higher {
            *h = head;
        }
        higher
    });
}

fn size(ev: &Event) -> usize {
    ev.body.len()
        + ev.headers
            .iter()
            .map(|h| h.name.len() + h.value.len())
            .sum::<usize>()
}

impl Notifier {
    /// A receiver for `channel`'s head.
    pub fn subscribe(&self, channel: &str) -> watch::Receiver<u64> {
        let mut map = self.channels.lock().expect("notifier lock");
        map.entry(channel.to_string())
            .or_insert_with(Entry::new)
            .head
            .subscribe()
    }

    /// Announces that `channel`'s head is now at least `head`.
    pub fn publish(&self, channel: &str, head: u64) {
        let map = self.channels.lock().expect("notifier lock");
        if let Some(e) = map.get(channel) {
            raise(&e.head, head);
        }
    }

    /// Keeps `events` (committed, ascending seqs) as `channel`'s recent events, then
    /// announces the new head. Only channels someone subscribed to keep events.
    pub fn publish_events(&self, channel: &str, events: impl IntoIterator<Item = Event>) {
        let mut map = self.channels.lock().expect("notifier lock");
        let Some(e) = map.get_mut(channel) else {
            return;
        };
        let mut head = 0;
        // Nobody streams this channel now: keep no events for it.
        let keep = e.head.receiver_count() > 0;
        if !keep {
            e.tail.clear();
            e.tail_bytes = 0;
        }
        for ev in events {
            if !keep {
                head = head.max(ev.seq);
                continue;
            }
            // Only a gap-free run is useful (another relay may commit seqs in between).
            if e.tail.back().is_some_and(|b| b.seq + 1 != ev.seq) {
                e.tail.clear();
                e.tail_bytes = 0;
            }
            head = head.max(ev.seq);
            e.tail_bytes += size(&ev);
            e.tail.push_back(ev);
            while e.tail.len() > 1 && (e.tail.len() > TAIL_EVENTS || e.tail_bytes > TAIL_BYTES) {
                let old = e.tail.pop_front().expect("non-empty tail");
                e.tail_bytes -= size(&old);
            }
        }
        raise(&e.head, head);
    }

    /// Events of `channel` after seq `after` from memory, with [`crate::Store::read_after`]'s
    /// limits; `None` when memory does not hold them (read the store instead).
    pub fn recent(
        &self,
        channel: &str,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Option<Vec<Event>> {
        let map = self.channels.lock().expect("notifier lock");
        let e = map.get(channel)?;
        if after >= *e.head.borrow() && e.tail.back().is_some_and(|b| b.seq >= after) {
            return Some(Vec::new());
        }
        let first = e.tail.front()?.seq;
        let last = e.tail.back()?.seq;
        if after + 1 < first || after >= last {
            return None;
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        for ev in e.tail.iter().skip((after + 1 - first) as usize) {
            if out.len() >= limit || (!out.is_empty() && bytes >= max_bytes) {
                break;
            }
            bytes += size(ev);
            out.push(ev.clone());
        }
        Some(out)
    }

    /// Forgets every channel's recent events (they are read from the store until new ones
    /// are published).
    pub fn clear_tails(&self) {
        for e in self.channels.lock().expect("notifier lock").values_mut() {
            e.tail.clear();
            e.tail_bytes = 0;
        }
    }

    /// Forgets the channels nobody subscribes to any more and returns the ones somebody does
    /// (so state follows the streams open now, not every channel ever streamed).
    pub fn sweep(&self) -> Vec<String> {
        let mut map = self.channels.lock().expect("notifier lock");
        map.retain(|_, e| e.head.receiver_count() > 0);
        map.keys().cloned().collect()
    }

    /// Drops a deleted channel's watch (its receivers see the sender close).
    pub fn forget(&self, channel: &str) {
        self.channels.lock().expect("notifier lock").remove(channel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn ev(seq: u64, len: usize) -> Event {
        Event {
            seq,
            received_at_ms: 0,
            method: "POST".into(),
            path: String::new(),
            headers: Vec::new(),
            body: Bytes::from(vec![b'x'; len]),
        }
    }

    fn seqs(v: &[Event]) -> Vec<u64> {
        v.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn recent_serves_a_gap_free_run_and_defers_to_the_store_otherwise() {
        let n = Notifier::default();
        let _rx = n.subscribe("c");
        n.publish_events("c", (1..=5).map(|s| ev(s, 10)));
        assert_eq!(
            seqs(&n.recent("c", 0, 10, 1 << 20).unwrap()),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(seqs(&n.recent("c", 2, 2, 1 << 20).unwrap()), [3, 4]);
        // The byte budget stops after the event that crosses it (always at least one).
        assert_eq!(seqs(&n.recent("c", 0, 10, 15).unwrap()), [1, 2]);
        assert_eq!(seqs(&n.recent("c", 0, 10, 1).unwrap()), [1]);
        // Caught up: nothing to read, and no need to ask the store.
        assert!(n.recent("c", 5, 10, 1 << 20).unwrap().is_empty());
        // A gap (another relay's commit) restarts the run; older seqs come from the store.
        n.publish_events("c", [ev(8, 10)]);
        assert!(n.recent("c", 5, 10, 1 << 20).is_none());
        assert_eq!(seqs(&n.recent("c", 7, 10, 1 << 20).unwrap()), [8]);
        assert!(n.recent("other", 0, 10, 1 << 20).is_none());
        n.clear_tails();
        assert!(n.recent("c", 7, 10, 1 << 20).is_none());
    }

    #[test]
    fn nothing_is_kept_for_a_channel_nobody_streams() {
        let n = Notifier::default();
        let rx = n.subscribe("c");
        drop(rx);
        n.publish_events("c", (1..=3).map(|s| ev(s, 10)));
        assert!(n.recent("c", 0, 10, 1 << 20).is_none());
        let rx = n.subscribe("c");
        assert_eq!(*rx.borrow(), 3, "the head still moves");
    }

    #[test]
    fn a_sweep_forgets_channels_nobody_streams() {
        let n = Notifier::default();
        let kept = n.subscribe("kept");
        let gone = n.subscribe("gone");
        n.publish_events("gone", [ev(1, 10)]);
        drop(gone);
        assert_eq!(n.sweep(), ["kept"]);
        n.publish_events("gone", [ev(2, 10)]);
        assert!(
            n.recent("gone", 1, 10, 1 << 20).is_none(),
            "nothing kept once swept"
        );
        n.publish("kept", 4);
        assert_eq!(*kept.borrow(), 4, "a streamed channel is still woken");
    }

    #[test]
    fn the_tail_is_bounded_but_keeps_the_newest_event() {
        let n = Notifier::default();
        let _rx = n.subscribe("c");
        n.publish_events("c", (1..=(TAIL_EVENTS as u64 + 10)).map(|s| ev(s, 1)));
        assert!(
            n.recent("c", 0, 10, 1 << 20).is_none(),
            "the oldest were dropped"
        );
        let got = n.recent("c", 10, usize::MAX, usize::MAX).unwrap();
        assert_eq!(got.len(), TAIL_EVENTS);
        n.publish_events("c", [ev(TAIL_EVENTS as u64 + 11, TAIL_BYTES + 1)]);
        let got = n.recent("c", TAIL_EVENTS as u64 + 10, 10, 1 << 20).unwrap();
        assert_eq!(got.len(), 1, "an oversized newest event is still kept");
    }
}
