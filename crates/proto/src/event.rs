//! A webhook as stored and streamed: raw bytes, never re-encoded.

use bytes::Bytes;

/// One HTTP header as received: lower-case name, raw value bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name (HTTP/1 names are case-insensitive; hyper gives them lower-cased).
    pub name: String,
    /// Raw value bytes; not necessarily UTF-8.
    pub value: Bytes,
}

impl Header {
    /// Builds a header from a name and value.
    pub fn new(name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// One accepted webhook with its channel sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Gap-free per-channel sequence number, starting at 1.
    pub seq: u64,
    /// When the relay accepted it, milliseconds since the Unix epoch.
    pub received_at_ms: i64,
    /// Original HTTP method (`POST`, `PUT`).
    pub method: String,
    /// The sub-path and query after `/hooks/{channel}` (`""`, `/sub`, `/sub?x=1`).
    pub path: String,
    /// Every header in the order received, repeated names included.
    pub headers: Vec<Header>,
    /// The body exactly as received.
    pub body: Bytes,
}

impl Event {
    /// First value of a header by (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| &h.value[..])
    }
}
