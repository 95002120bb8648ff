//! `GET /artifacts/{seq}/{name}`: a final event's artifact as `listen --save-recordings`
//! saved it, for `replay --local-artifacts` (the replayed body's links point here) and for a
//! person whose link expired.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio_util::io::ReaderStream;

use crate::http::{channel_of, error, journal_error, read, Resp, State};

/// The base URL artifacts are served under, for links a handler follows (a wildcard
/// address is reached through loopback).
pub(crate) fn base_url(served: &SocketAddr) -> String {
    let mut addr = *served;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    format!("http://{addr}")
}

/// The content type of an artifact, from its kind and file name.
fn content_type(kind: &str, path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "mp4" => "video/mp4",
        "flac" => "audio/flac",
        "wav" => "audio/wav",
        "mp3" => "audio/mpeg",
        "json" => "application/json",
        "jsonl" => "application/x-ndjson",
        _ if kind == "video" => "video/mp4",
        _ => "application/octet-stream",
    }
}

/// Streams the saved file of artifact `name` of event `seq`.
pub(crate) async fn serve(
    st: &Arc<State>,
    query: &[(String, String)],
    seq: &str,
    name: &str,
) -> Resp {
    let Ok(seq) = seq.parse::<u64>() else {
        return error(StatusCode::NOT_FOUND, "no such event");
    };
    let channel = match channel_of(st, query).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                format!("no event {seq} in the journal"),
            )
        }
        Err(e) => return journal_error(e),
    };
    let recordings = match read(st, move |j| j.recordings(&channel, seq)).await {
        Ok(r) => r,
        Err(e) => return journal_error(e),
    };
    let Some(r) = recordings.iter().find(|r| r.kind == name) else {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "no saved {name} for event {seq}: run listen with --save-recordings to keep \
                 artifacts before their links expire"
            ),
        );
    };
    if r.state != "saved" {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "the {name} of event {seq} was not saved ({})",
                r.error.as_deref().unwrap_or(&r.state)
            ),
        );
    }
    let file = match tokio::fs::File::open(&r.path).await {
        Ok(f) => f,
        Err(e) => {
            return error(
                StatusCode::GONE,
                format!(
                    "the saved {name} of event {seq} is gone from {}: {e}",
                    r.path
                ),
            )
        }
    };
    let len = file.metadata().await.map(|m| m.len()).ok();
    // A read error ends the body early; the content-length tells the client it is short.
    let frames = ReaderStream::new(file)
        .take_while(|r| std::future::ready(r.is_ok()))
        .map(|r: std::io::Result<Bytes>| Ok(Frame::data(r.unwrap_or_default())));
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(name, &r.path)),
    );
    if let Some(n) = len {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    if let Some(sum) = r
        .sha256
        .as_deref()
        .and_then(|s| HeaderValue::from_str(s).ok())
    {
        h.insert("meethook-sha256", sum);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_and_types() {
        assert_eq!(
            base_url(&"0.0.0.0:4040".parse().unwrap()),
            "http://127.0.0.1:4040"
        );
        assert_eq!(
            base_url(&"127.0.0.1:4041".parse().unwrap()),
            "http://127.0.0.1:4041"
        );
        assert_eq!(content_type("video", "/d/b-1-video.mp4"), "video/mp4");
        assert_eq!(
            content_type("diarization", "/d/x.jsonl"),
            "application/x-ndjson"
        );
        assert_eq!(content_type("video", "/d/x"), "video/mp4");
    }
}
