//! Websocket frames between relay and daemon.
//!
//! Control frames are JSON text messages tagged by `type`; events travel as binary messages
//! (see [`encode_event`]) so bodies and header values keep their exact bytes without base64.
//! New variants may be added; existing ones never change meaning.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::event::{Event, Header};

/// The protocol version this build speaks; sent in the first frame by both sides.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest binary event frame a peer accepts, on top of the body limit.
pub const MAX_FRAME_OVERHEAD: usize = 1 << 20;

/// First byte of a binary event frame.
const EVENT_TAG: u8 = 0x01;
/// Most preloads a daemon holds at once; the relay never has more open on one stream.
pub const MAX_PRELOADS: usize = 8;

/// First byte of a preload frame: part of a body still arriving at the relay.
const PRELOAD_TAG: u8 = 0x02;
/// First byte of an event frame whose body was preloaded.
const PRELOADED_EVENT_TAG: u8 = 0x03;
/// First byte of a frame that ends a preload that will not be referred to.
const PRELOAD_DROP_TAG: u8 = 0x04;

/// Frames the daemon sends to the relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// First frame: who is listening and where it has got to.
    Hello {
        /// Protocol version the daemon speaks.
        version: u32,
        /// Stable id of this listener (kept in its journal); the relay tracks acks per listener.
        listener_id: String,
        /// Highest seq already in the daemon's journal; streaming resumes after it.
        journaled: u64,
        /// Highest seq delivered (or given up) in order; everything up to it is acknowledged.
        delivered: u64,
        /// Most unacknowledged events the relay may have in flight to this listener.
        window: u32,
        /// The daemon takes preload frames: big bodies sent while they still arrive at the
        /// relay, their event frame referring to them once stored.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        preload: bool,
    },
    /// Every event up to and including `seq` is delivered (cumulative).
    Ack {
        /// Highest delivered seq.
        seq: u64,
    },
}

/// Frames the relay sends to the daemon (besides binary event frames).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// Answer to `hello`: the stream starts after it.
    Welcome {
        /// Protocol version the relay speaks.
        version: u32,
        /// Channel id.
        channel: String,
        /// Highest seq stored for the channel right now.
        head: u64,
        /// Oldest seq still stored (0 when none); events below it were pruned.
        oldest: u64,
        /// Highest seq this listener has acked, as the relay stored it: the daemon delivered
        /// everything up to it, even where a power cut took that from its journal (0 from
        /// relays before this field).
        #[serde(default)]
        acked: u64,
    },
    /// A typed refusal; the relay closes the socket after it.
    Error {
        /// Machine-readable reason.
        code: ErrorCode,
        /// What a person should do about it.
        message: String,
    },
}

/// Why the relay refused or ended a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The daemon speaks a protocol version the relay does not.
    UnsupportedVersion,
    /// A frame could not be decoded or came out of order.
    BadFrame,
    /// The channel was deleted while the stream was open.
    ChannelGone,
    /// The relay's store failed; the daemon should reconnect later.
    StoreUnavailable,
    /// The relay is shutting down; reconnect.
    ShuttingDown,
    /// A reason this build does not know (from a newer peer).
    #[serde(other)]
    Unknown,
}

/// A frame that could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The JSON of a control frame is malformed or of an unknown type.
    #[error("malformed control frame: {0}")]
    Json(String),
    /// A binary frame ended before its declared contents.
    #[error("truncated event frame (needed {needed} more bytes)")]
    Truncated {
        /// Bytes missing.
        needed: usize,
    },
    /// A binary frame does not start with a known tag.
    #[error("unknown binary frame tag {0:#04x}")]
    UnknownTag(u8),
    /// A text field (method, path, header name) is not UTF-8.
    #[error("{0} is not valid UTF-8")]
    NotUtf8(&'static str),
}

impl ClientFrame {
    /// JSON text of the frame.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("client frames always serialize")
    }
    /// Parses a JSON text frame.
    pub fn from_json(s: &str) -> Result<Self, DecodeError> {
        serde_json::from_str(s).map_err(|e| DecodeError::Json(e.to_string()))
    }
}

impl ServerFrame {
    /// JSON text of the frame.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server frames always serialize")
    }
    /// Parses a JSON text frame.
    pub fn from_json(s: &str) -> Result<Self, DecodeError> {
        serde_json::from_str(s).map_err(|e| DecodeError::Json(e.to_string()))
    }
}

/// Encodes headers as `u16 count, (u16 name_len, name, u32 value_len, value)*`.
pub fn encode_headers(headers: &[Header], out: &mut BytesMut) {
    out.put_u16(headers.len().min(u16::MAX as usize) as u16);
    for h in headers.iter().take(u16::MAX as usize) {
        out.put_u16(h.name.len() as u16);
        out.put_slice(h.name.as_bytes());
        out.put_u32(h.value.len() as u32);
        out.put_slice(&h.value);
    }
}

/// Length of [`encode_headers`]' output.
pub fn headers_len(headers: &[Header]) -> usize {
    2 + headers
        .iter()
        .map(|h| 2 + h.name.len() + 4 + h.value.len())
        .sum::<usize>()
}

/// Decodes what [`encode_headers`] wrote; values share `buf`'s memory.
pub fn decode_headers(buf: &mut Reader) -> Result<Vec<Header>, DecodeError> {
    let count = buf.u16()? as usize;
    let mut headers = Vec::with_capacity(count.min(256));
    for _ in 0..count {
        let n = buf.u16()? as usize;
        let name = buf.str(n, "header name")?;
        let v = buf.u32()? as usize;
        let value = buf.bytes(v)?;
        headers.push(Header { name, value });
    }
    Ok(headers)
}

/// Encodes an event as a binary frame:
/// `0x01, u64 seq, i64 received_at_ms, u8 method_len, method, u16 path_len, path, headers, body`.
pub fn encode_event(ev: &Event) -> Bytes {
    let mut out = BytesMut::with_capacity(event_head_len(ev) + ev.body.len());
    put_event_head(ev, &mut out);
    out.put_slice(&ev.body);
    out.freeze()
}

/// An event frame without its body: what [`encode_event`] puts before `ev.body`. A big body
/// can then be written after it as it is, not copied into one frame first.
pub fn encode_event_head(ev: &Event) -> Bytes {
    let mut out = BytesMut::with_capacity(event_head_len(ev));
    put_event_head(ev, &mut out);
    out.freeze()
}

fn event_head_len(ev: &Event) -> usize {
    1 + 8 + 8 + 1 + ev.method.len() + 2 + ev.path.len() + headers_len(&ev.headers)
}

fn put_event_head(ev: &Event, out: &mut BytesMut) {
    out.put_u8(EVENT_TAG);
    out.put_u64(ev.seq);
    out.put_i64(ev.received_at_ms);
    out.put_u8(ev.method.len().min(255) as u8);
    out.put_slice(&ev.method.as_bytes()[..ev.method.len().min(255)]);
    let path = &ev.path.as_bytes()[..ev.path.len().min(u16::MAX as usize)];
    out.put_u16(path.len() as u16);
    out.put_slice(path);
    encode_headers(&ev.headers, out);
}

/// Decodes a binary event frame; the body shares `frame`'s memory (no copy).
pub fn decode_event(frame: Bytes) -> Result<Event, DecodeError> {
    let mut r = Reader::new(frame);
    let tag = r.u8()?;
    if tag != EVENT_TAG {
        return Err(DecodeError::UnknownTag(tag));
    }
    decode_event_rest(&mut r)
}

fn decode_event_rest(r: &mut Reader) -> Result<Event, DecodeError> {
    let seq = r.u64()?;
    let received_at_ms = r.u64()? as i64;
    let m = r.u8()? as usize;
    let method = r.str(m, "method")?;
    let p = r.u16()? as usize;
    let path = r.str(p, "path")?;
    let headers = decode_headers(r)?;
    let body = r.rest();
    Ok(Event {
        seq,
        received_at_ms,
        method,
        path,
        headers,
        body,
    })
}

/// A binary frame from the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binary {
    /// A whole event.
    Event(Event),
    /// Bytes `offset..` of preload `id`, a body of `len` bytes still arriving at the relay.
    Preload {
        /// The preload's number (unique within the relay process).
        id: u64,
        /// The whole body's length.
        len: u64,
        /// Where `data` starts in the body.
        offset: u64,
        /// The bytes.
        data: Bytes,
    },
    /// An event whose body is preload `id` (its `body` is empty here).
    Preloaded {
        /// The preload holding the body.
        id: u64,
        /// The event without its body.
        event: Event,
    },
    /// Preload `id` will not be referred to: forget it.
    PreloadDrop {
        /// The preload.
        id: u64,
    },
}

/// The head of a preload piece, `0x02, u64 id, u64 len, u64 offset`: the piece's data follows
/// it in the same message (written after it as it is, not copied into one frame first).
pub fn encode_preload_head(id: u64, len: u64, offset: u64) -> [u8; 25] {
    let mut out = [0u8; 25];
    out[0] = PRELOAD_TAG;
    out[1..9].copy_from_slice(&id.to_be_bytes());
    out[9..17].copy_from_slice(&len.to_be_bytes());
    out[17..25].copy_from_slice(&offset.to_be_bytes());
    out
}

/// Encodes an event whose body is preload `id`: `0x03, u64 id`, then an event frame without
/// its tag and body.
pub fn encode_preloaded(id: u64, ev: &Event) -> Bytes {
    let mut head = BytesMut::with_capacity(9 + event_head_len(ev));
    head.put_u8(PRELOADED_EVENT_TAG);
    head.put_u64(id);
    put_event_head(ev, &mut head);
    // Drop the event tag put_event_head wrote.
    let mut out = head.split_to(9);
    out.extend_from_slice(&head[1..]);
    out.freeze()
}

/// Encodes the end of preload `id`: `0x04, u64 id`.
pub fn encode_preload_drop(id: u64) -> Bytes {
    let mut out = BytesMut::with_capacity(9);
    out.put_u8(PRELOAD_DROP_TAG);
    out.put_u64(id);
    out.freeze()
}

/// Decodes any binary frame from the relay; bodies share `frame`'s memory.
pub fn decode_binary(frame: Bytes) -> Result<Binary, DecodeError> {
    let mut r = Reader::new(frame);
    match r.u8()? {
        EVENT_TAG => Ok(Binary::Event(decode_event_rest(&mut r)?)),
        PRELOAD_TAG => {
            let (id, len, offset) = (r.u64()?, r.u64()?, r.u64()?);
            Ok(Binary::Preload {
                id,
                len,
                offset,
                data: r.rest(),
            })
        }
        PRELOADED_EVENT_TAG => {
            let id = r.u64()?;
            let event = decode_event_rest(&mut r)?;
            Ok(Binary::Preloaded { id, event })
        }
        PRELOAD_DROP_TAG => Ok(Binary::PreloadDrop { id: r.u64()? }),
        tag => Err(DecodeError::UnknownTag(tag)),
    }
}

/// A bounds-checked cursor over a frame's bytes.
pub struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: Bytes) -> Self {
        Reader { buf, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        let left = self.buf.len() - self.pos;
        if n > left {
            return Err(DecodeError::Truncated { needed: n - left });
        }
        let b = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(b)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes(b[..].try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        Ok(u64::from_be_bytes(b[..].try_into().expect("8 bytes")))
    }
    fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        self.take(n)
    }
    fn str(&mut self, n: usize, what: &'static str) -> Result<String, DecodeError> {
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::NotUtf8(what))
    }
    fn rest(&mut self) -> Bytes {
        let b = self.buf.slice(self.pos..);
        self.pos = self.buf.len();
        b
    }
    /// True when every byte was consumed.
    pub fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        Event {
            seq: 42,
            received_at_ms: 1_749_636_003_120,
            method: "POST".into(),
            path: "/sub?x=1".into(),
            headers: vec![
                Header::new("content-type", "application/json"),
                Header::new("x-dup", "a"),
                Header::new("x-dup", "b"),
                Header::new("x-bin", Bytes::from_static(&[0xff, 0x00, 0x80])),
            ],
            body: Bytes::from_static(b"{\"event\":\"complete\"}\x00\xff"),
        }
    }

    #[test]
    fn event_round_trips_byte_exact() {
        let ev = sample();
        let enc = encode_event(&ev);
        assert_eq!(decode_event(enc.clone()).unwrap(), ev);
        // Stable layout: tag, seq, then the timestamp.
        assert_eq!(&enc[..9], &[1, 0, 0, 0, 0, 0, 0, 0, 42]);
    }

    #[test]
    fn the_head_is_the_frame_up_to_its_body() {
        let ev = sample();
        let mut parts = encode_event_head(&ev).to_vec();
        parts.extend_from_slice(&ev.body);
        assert_eq!(parts, encode_event(&ev).to_vec());
    }

    #[test]
    fn event_golden_bytes() {
        let ev = Event {
            seq: 1,
            received_at_ms: 2,
            method: "PUT".into(),
            path: "/a".into(),
            headers: vec![Header::new("k", "v")],
            body: Bytes::from_static(b"hi"),
        };
        let hex: String = encode_event(&ev)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "01\
             0000000000000001\
             0000000000000002\
             03505554\
             00022f61\
             0001\
             00016b\
             0000000176\
             6869"
        );
    }

    #[test]
    fn truncated_frames_are_typed_errors() {
        let enc = encode_event(&sample());
        for cut in 0..enc.len() - sample().body.len() {
            let err = decode_event(enc.slice(..cut)).unwrap_err();
            assert!(
                matches!(err, DecodeError::Truncated { .. }),
                "cut {cut}: {err:?}"
            );
        }
        assert_eq!(
            decode_event(Bytes::from_static(&[7, 1, 2])).unwrap_err(),
            DecodeError::UnknownTag(7)
        );
    }

    #[test]
    fn preload_frames_round_trip() {
        let ev = sample();
        assert_eq!(
            decode_binary(encode_event(&ev)).unwrap(),
            Binary::Event(ev.clone())
        );
        let mut part = encode_preload_head(7, 100, 40).to_vec();
        part.extend_from_slice(b"abc");
        assert_eq!(
            decode_binary(Bytes::from(part)).unwrap(),
            Binary::Preload {
                id: 7,
                len: 100,
                offset: 40,
                data: Bytes::from_static(b"abc")
            }
        );
        let bare = Event {
            body: Bytes::new(),
            ..ev.clone()
        };
        let frame = encode_preloaded(9, &ev);
        assert_eq!(
            decode_binary(frame.clone()).unwrap(),
            Binary::Preloaded { id: 9, event: bare }
        );
        // The body never travels in it.
        assert_eq!(frame.len(), 9 + encode_event_head(&ev).len() - 1);
        assert_eq!(
            decode_binary(encode_preload_drop(3)).unwrap(),
            Binary::PreloadDrop { id: 3 }
        );
        assert!(matches!(
            decode_binary(Bytes::from_static(&[0x02, 0, 0])),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn hello_carries_preload_only_when_set() {
        let with = ClientFrame::Hello {
            version: 1,
            listener_id: "l".into(),
            journaled: 0,
            delivered: 0,
            window: 1,
            preload: true,
        };
        assert!(with.to_json().ends_with(r#","preload":true}"#));
        assert_eq!(ClientFrame::from_json(&with.to_json()).unwrap(), with);
        // An older daemon's hello has no such field.
        let old = r#"{"type":"hello","version":1,"listener_id":"l","journaled":0,"delivered":0,"window":1}"#;
        assert!(matches!(
            ClientFrame::from_json(old).unwrap(),
            ClientFrame::Hello { preload: false, .. }
        ));
    }

    #[test]
    fn control_frames_golden_json() {
        let hello = ClientFrame::Hello {
            version: 1,
            listener_id: "l1".into(),
            journaled: 10,
            delivered: 8,
            window: 64,
            preload: false,
        };
        assert_eq!(
            hello.to_json(),
            r#"{"type":"hello","version":1,"listener_id":"l1","journaled":10,"delivered":8,"window":64}"#
        );
        assert_eq!(ClientFrame::from_json(&hello.to_json()).unwrap(), hello);
        let ack = ClientFrame::Ack { seq: 7 };
        assert_eq!(ack.to_json(), r#"{"type":"ack","seq":7}"#);
        let welcome = ServerFrame::Welcome {
            version: 1,
            channel: "c".into(),
            head: 3,
            oldest: 1,
            acked: 2,
        };
        assert_eq!(
            welcome.to_json(),
            r#"{"type":"welcome","version":1,"channel":"c","head":3,"oldest":1,"acked":2}"#
        );
        // A relay from before `acked` is read as having no ack for this listener.
        let old = r#"{"type":"welcome","version":1,"channel":"c","head":3,"oldest":1}"#;
        assert!(matches!(
            ServerFrame::from_json(old),
            Ok(ServerFrame::Welcome { acked: 0, .. })
        ));
        let err = ServerFrame::Error {
            code: ErrorCode::UnsupportedVersion,
            message: "m".into(),
        };
        assert_eq!(
            err.to_json(),
            r#"{"type":"error","code":"unsupported_version","message":"m"}"#
        );
        assert_eq!(ServerFrame::from_json(&err.to_json()).unwrap(), err);
    }

    #[test]
    fn unknown_error_codes_and_bad_json_are_handled() {
        let f = ServerFrame::from_json(r#"{"type":"error","code":"from_the_future","message":""}"#)
            .unwrap();
        assert!(matches!(
            f,
            ServerFrame::Error {
                code: ErrorCode::Unknown,
                ..
            }
        ));
        assert!(ClientFrame::from_json("{").is_err());
        assert!(ClientFrame::from_json(r#"{"type":"nope"}"#).is_err());
    }
}
