//! Webhook bodies that carry their id, and the hash used to check they arrive byte-identical.

use bytes::{BufMut, Bytes, BytesMut};

/// Digits of the zero-padded id at the start of every body.
const ID_DIGITS: usize = 12;
/// `{"id":"` before the id.
const PREFIX: &[u8] = b"{\"id\":\"";
/// Between the id and the filler.
const MIDDLE: &[u8] = b"\",\"pad\":\"";
/// After the filler.
const SUFFIX: &[u8] = b"\"}";
/// Bytes of a body that are not filler.
const FRAME: usize = PREFIX.len() + ID_DIGITS + MIDDLE.len() + SUFFIX.len();
/// Smallest body [`Bodies`] can build.
pub const MIN_BODY: usize = FRAME + 1;

/// Builds bodies of one size: `{"id":"000000000042","pad":"<pseudo-random filler>"}` (JSON).
#[derive(Clone)]
pub struct Bodies {
    filler: Bytes,
    size: usize,
    /// Bots the bodies are about (0: none).
    bots: u64,
}

impl Bodies {
    /// Bodies of exactly `size` bytes (at least [`MIN_BODY`]).
    pub fn new(size: usize) -> Bodies {
        assert!(size >= MIN_BODY, "bodies are at least {MIN_BODY} bytes");
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut x = 0x2545_F491_4F6C_DD1D_u64 ^ size as u64;
        let filler = (0..size - FRAME)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ALPHABET[(x >> 58) as usize]
            })
            .collect::<Vec<u8>>();
        Bodies {
            filler: filler.into(),
            size,
            bots: 0,
        }
    }

    /// Bodies that are also Meeting BaaS status changes of bot `bot-{id % bots}`
    /// (`"event":"bot.status_change","data":{"bot_id":…}`), so `listen --order bot` keys them.
    pub fn for_bots(size: usize, bots: u64) -> Bodies {
        let b = Bodies {
            bots: bots.max(1),
            ..Bodies::new(size)
        };
        assert!(
            b.about(b.bots - 1).len() < b.filler.len(),
            "a {size}-byte body has no room for its bot"
        );
        b
    }

    /// What a body says about its bot: in place of [`MIDDLE`], between the id and the filler.
    fn about(&self, id: u64) -> String {
        format!(
            "\",\"event\":\"bot.status_change\",\"data\":{{\"bot_id\":\"bot-{}\",\"status\":{{\"code\":\"in_call_recording\"}}}},\"pad\":\"",
            id % self.bots
        )
    }

    /// The body of event `id`.
    pub fn make(&self, id: u64) -> Bytes {
        let mut b = BytesMut::with_capacity(self.size);
        b.put_slice(PREFIX);
        b.put_slice(format!("{id:0width$}", width = ID_DIGITS).as_bytes());
        if self.bots > 0 {
            let about = self.about(id);
            b.put_slice(about.as_bytes());
            // Shorter filler, so every body keeps its size.
            b.put_slice(&self.filler[about.len() - MIDDLE.len()..]);
        } else {
            b.put_slice(MIDDLE);
            b.put_slice(&self.filler);
        }
        b.put_slice(SUFFIX);
        b.freeze()
    }
}

/// The id a body says it carries, if it looks like one of ours.
pub fn id_of(body: &[u8]) -> Option<u64> {
    let digits = body.get(PREFIX.len()..PREFIX.len() + ID_DIGITS)?;
    if !body.starts_with(PREFIX) || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// A fast 64-bit hash of `b` (never 0, so 0 can mean "unset").
pub fn hash(b: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = 0x9e37_79b9_7f4a_7c15_u64 ^ (b.len() as u64).wrapping_mul(K);
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let v = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h = (h.rotate_left(5) ^ v).wrapping_mul(K);
    }
    for &byte in chunks.remainder() {
        h = (h.rotate_left(5) ^ u64::from(byte)).wrapping_mul(K);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_their_size_and_id() {
        for size in [MIN_BODY, 1024, 65_536] {
            let b = Bodies::new(size);
            let body = b.make(42);
            assert_eq!(body.len(), size);
            assert_eq!(id_of(&body), Some(42));
            assert!(serde_json::from_slice::<serde_json::Value>(&body).is_ok());
        }
    }

    #[test]
    fn bot_bodies_name_their_bot() {
        let b = Bodies::for_bots(1024, 8);
        for id in [0, 7, 8, 123_456] {
            let body = b.make(id);
            assert_eq!(body.len(), 1024);
            assert_eq!(id_of(&body), Some(id));
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["event"], "bot.status_change");
            assert_eq!(v["data"]["bot_id"], format!("bot-{}", id % 8));
        }
    }

    #[test]
    fn hash_sees_one_flipped_bit() {
        let body = Bodies::new(4096).make(7);
        let mut other = body.to_vec();
        other[2000] ^= 1;
        assert_ne!(hash(&body), hash(&other));
        assert_ne!(hash(&body), hash(&Bodies::new(4096).make(8)));
        assert_ne!(hash(&body), 0);
    }
}
