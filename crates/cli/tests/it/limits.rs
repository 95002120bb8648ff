//! Every relay limit, hit on purpose, answered as documented.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use meethook_testkit::{client, post, request, TestRelay};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

const HELLO: &str =
    r#"{"type":"hello","version":1,"listener_id":"t","journaled":0,"delivered":0,"window":8}"#;

async fn ws_connect(
    relay: &TestRelay,
    ch: &str,
    token: &str,
) -> Result<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>, u16> {
    let mut req = format!("ws://{}/ws/{ch}", relay.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

/// Reads until EOF; panics if the server keeps the connection open.
async fn read_until_closed(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf))
        .await
        .expect("the relay closes the connection")
        .ok();
    String::from_utf8_lossy(&buf).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off() {
    let relay = TestRelay::start_with(|c| c.header_read_timeout = Duration::from_millis(300)).await;
    let mut s = TcpStream::connect(relay.addr).await.unwrap();
    s.write_all(b"POST /hooks/x HTTP/1.1\r\nhost: a\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut s).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_arriving_gets_408_and_nothing_is_stored() {
    let relay = TestRelay::start_with(|c| c.body_timeout = Duration::from_millis(300)).await;
    let (ch, _) = relay.channel(None).await;
    for len in [100usize, 2 << 20] {
        // Half the declared body (a big one goes to a body file as it arrives), then nothing.
        let mut s = TcpStream::connect(relay.addr).await.unwrap();
        let head = format!("POST /hooks/{ch} HTTP/1.1\r\nhost: a\r\ncontent-length: {len}\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&vec![b'x'; len / 2]).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
            .await
            .expect("the relay answers")
            .unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("did not arrive within"), "{answer}");
    }
    assert_eq!(relay.store.bounds(&ch).await.unwrap().head, 0);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431() {
    let relay = TestRelay::start_with(|c| c.max_header_size = 16 << 10).await;
    let (ch, _) = relay.channel(None).await;
    let mut s = TcpStream::connect(relay.addr).await.unwrap();
    let big = "a".repeat(64 << 10);
    let req = format!(
        "POST /hooks/{ch} HTTP/1.1\r\nhost: a\r\nx-big: {big}\r\ncontent-length: 0\r\n\r\n"
    );
    let _ = s.write_all(req.as_bytes()).await;
    let answer = read_until_closed(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_eq!(relay.store.bounds(&ch).await.unwrap().head, 0);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_get_503() {
    let relay = TestRelay::start_with(|c| c.max_connections = 2).await;
    let (ch, _) = relay.channel(None).await;
    // Two keep-alive connections hold both slots.
    let held = client();
    let hook = relay.hook(&ch);
    let (a, b) = tokio::join!(
        request(&held, "POST", &hook, &[], "1"),
        request(&held, "POST", &hook, &[], "2")
    );
    assert_eq!((a.unwrap().status, b.unwrap().status), (200, 200));
    let mut s = TcpStream::connect(relay.addr).await.unwrap();
    let _ = s
        .write_all(
            format!("POST /hooks/{ch} HTTP/1.1\r\nhost: a\r\ncontent-length: 1\r\n\r\nx")
                .as_bytes(),
        )
        .await;
    let answer = read_until_closed(&mut s).await;
    assert!(
        answer.starts_with("HTTP/1.1 503") && answer.contains("retry-after: 1"),
        "{answer}"
    );
    drop(held);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_rate_limit_answers_429_with_retry_after() {
    let relay = TestRelay::start_with(|c| {
        c.rate_limit = 0.5;
        c.rate_burst = 3.0;
    })
    .await;
    let (ch, _) = relay.channel(None).await;
    let (other, _) = relay.channel(None).await;
    for _ in 0..3 {
        assert_eq!(post(&relay.hook(&ch), &[], "x").await.status, 200);
    }
    let c = client();
    let req = http::Request::post(relay.hook(&ch))
        .body(http_body_util::Full::new(bytes::Bytes::from("x")))
        .unwrap();
    let r = c.request(req).await.unwrap();
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    assert_eq!(
        post(&relay.hook(&other), &[], "x").await.status,
        200,
        "other channels unaffected"
    );
    assert_eq!(
        relay.store.bounds(&ch).await.unwrap().head,
        3,
        "nothing stored for the 429"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_auth_failures_from_one_ip_get_429() {
    let relay = TestRelay::start_with(|c| c.auth_fail_limit = 3).await;
    let (ch, token) = relay.channel(None).await;
    for _ in 0..3 {
        assert_eq!(ws_connect(&relay, &ch, "mht_guess").await.err(), Some(401));
    }
    assert_eq!(ws_connect(&relay, &ch, "mht_guess").await.err(), Some(429));
    assert_eq!(
        ws_connect(&relay, &ch, &token).await.err(),
        Some(429),
        "blocked even with the right token"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_listener_frames_and_extra_listeners_are_refused() {
    let relay = TestRelay::start_with(|c| c.max_listeners = 1).await;
    let (ch, token) = relay.channel(None).await;
    let mut ws = ws_connect(&relay, &ch, &token).await.unwrap();
    assert_eq!(
        ws_connect(&relay, &ch, &token).await.err(),
        Some(503),
        "over --max-listeners"
    );
    // A 1 MiB frame from a listener exceeds the 64 KiB control-frame limit: dropped.
    let _ = ws.send(Message::text("x".repeat(1 << 20))).await;
    while let Some(Ok(_)) = ws.next().await {}
    // Its slot is free again and the relay still serves.
    let mut again = None;
    for _ in 0..100 {
        match ws_connect(&relay, &ch, &token).await {
            Ok(ws) => {
                again = Some(ws);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(
        again.is_some(),
        "slot released after the bad listener was dropped"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_helloless_listeners_are_dropped() {
    let relay = TestRelay::start_with(|c| {
        c.ping_interval = Duration::from_millis(100);
        c.liveness_timeout = Duration::from_millis(500);
    })
    .await;
    let (ch, token) = relay.channel(None).await;
    // No hello at all.
    let mut ws = ws_connect(&relay, &ch, &token).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(30), ws.next())
        .await
        .unwrap();
    assert!(
        matches!(first, Some(Ok(Message::Text(ref t))) if t.contains("hello")),
        "{first:?}"
    );
    // Hello, then never read (so never answer a ping).
    let mut ws = ws_connect(&relay, &ch, &token).await.unwrap();
    ws.send(Message::text(HELLO)).await.unwrap();
    // A fixed wait, on purpose: the listener stays silent past the ping deadline.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut closed = false;
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
        match m {
            Ok(Message::Close(_)) | Err(_) => {
                closed = true;
                break;
            }
            Ok(_) => {}
        }
    }
    assert!(
        closed || ws.next().await.is_none(),
        "silent listener dropped"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_stops_reading_is_dropped_even_mid_event() {
    let relay = TestRelay::start_with(|c| {
        c.liveness_timeout = Duration::from_secs(2);
        c.ping_interval = Duration::from_millis(500);
    })
    .await;
    let (ch, token) = relay.channel(None).await;
    let mut ws = ws_connect(&relay, &ch, &token).await.unwrap();
    ws.send(Message::text(HELLO)).await.unwrap();
    // 24 MiB of events, more than the socket buffers hold: the relay's writes block on a
    // listener that reads nothing (`ws` is never polled again).
    let body = vec![b'b'; 4 << 20];
    for _ in 0..6 {
        assert_eq!(post(&relay.hook(&ch), &[], body.clone()).await.status, 200);
    }
    let listeners = || {
        relay
            .metrics
            .listeners
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let mut waited = Duration::ZERO;
    while listeners() > 0 && waited < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
    assert_eq!(listeners(), 0, "the stalled listener is still held");
    // The relay still serves, and stops without waiting for the stalled socket.
    assert_eq!(post(&relay.hook(&ch), &[], "after").await.status, 200);
    relay.stop().await;
    drop(ws);
}
