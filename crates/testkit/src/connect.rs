//! [`ConnectProxy`]: an HTTP `CONNECT` proxy on loopback, as corporate networks run, that
//! resolves every requested host to 127.0.0.1 (so a daemon that reaches a made-up host name
//! went through it) and records what it was asked for.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A loopback `CONNECT` proxy; stops when dropped.
pub struct ConnectProxy {
    /// Where clients connect (`HTTP_PROXY=http://ADDR`).
    pub addr: SocketAddr,
    asked: Arc<Mutex<Vec<String>>>,
    stop: CancellationToken,
}

impl ConnectProxy {
    /// Starts on an ephemeral loopback port.
    pub async fn start() -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let proxy = ConnectProxy {
            addr: listener.local_addr().unwrap(),
            asked: Arc::default(),
            stop: CancellationToken::new(),
        };
        let (asked, stop) = (proxy.asked.clone(), proxy.stop.clone());
        tokio::spawn(async move {
            loop {
                let (client, _) = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                };
                let (asked, stop) = (asked.clone(), stop.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = tunnel(client, asked) => {}
                        _ = stop.cancelled() => {}
                    }
                });
            }
        });
        proxy
    }

    /// Every `CONNECT` target asked for so far (`host:port`), with its
    /// `Proxy-Authorization` when one came (`host:port auth`).
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Reads one `CONNECT` head, connects to 127.0.0.1 on the asked port, answers 200 and
/// copies both ways.
async fn tunnel(mut client: TcpStream, asked: Arc<Mutex<Vec<String>>>) {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        match client.read_u8().await {
            Ok(b) if head.len() < 16 * 1024 => head.push(b),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.lines();
    let target = match lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()[..]
    {
        ["CONNECT", target, _] => target.to_string(),
        _ => {
            let _ = client
                .write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
                .await;
            return;
        }
    };
    let auth = lines
        .find_map(|l| l.strip_prefix("Proxy-Authorization: "))
        .map(|a| format!(" {a}"))
        .unwrap_or_default();
    asked.lock().unwrap().push(format!("{target}{auth}"));
    let port: Option<u16> = target.rsplit_once(':').and_then(|(_, p)| p.parse().ok());
    let upstream = match port {
        Some(p) => TcpStream::connect(("127.0.0.1", p)).await.ok(),
        None => None,
    };
    let Some(mut upstream) = upstream else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
        return;
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_ok()
    {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }
}
