//! In-process wake-ups for stream tasks when a channel's head moves.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

/// One `watch` per channel carrying its latest head seq.
#[derive(Default)]
pub struct Notifier {
    channels: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl Notifier {
    /// A receiver for `channel`'s head.
    pub fn subscribe(&self, channel: &str) -> watch::Receiver<u64> {
        let mut map = self.channels.lock().expect("notifier lock");
        map.entry(channel.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Announces that `channel`'s head is now at least `head`.
    pub fn publish(&self, channel: &str, head: u64) {
        let map = self.channels.lock().expect("notifier lock");
        if let Some(tx) = map.get(channel) {
            tx.send_if_modified(|h| {
                if head > *h {
                    *h = head;
                    true
                } else {
                    false
                }
            });
        }
    }

    /// Drops a deleted channel's watch (its receivers see the sender close).
    pub fn forget(&self, channel: &str) {
        self.channels.lock().expect("notifier lock").remove(channel);
    }
}
