//! `listen` behind a corporate proxy: the relay websocket goes through `HTTP_PROXY` /
//! `HTTPS_PROXY` as an HTTP `CONNECT` tunnel, unless `NO_PROXY` exempts the relay.

use std::path::Path;
use std::process::Stdio;

use base64::Engine;
use meethook_testkit::{post, tempdir, ConnectProxy, ListenProcess, TestHandler, TestRelay};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::util::BIN;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_reaches_the_relay_through_the_proxy_unless_no_proxy_exempts_it() {
    let proxy = ConnectProxy::start().await;
    let relay = TestRelay::start().await;
    let (ch, token) = relay.channel(None).await;
    let handler = TestHandler::start().await;
    let port = relay.url().rsplit_once(':').unwrap().1.to_string();
    // A name only the proxy resolves: reaching it proves the tunnel.
    let via_name = format!("http://relay.invalid:{port}");
    let data = tempdir();
    let listen = |no_proxy: &str| {
        let mut cmd = ListenProcess::command(
            Path::new(BIN),
            &via_name,
            &ch,
            &token,
            &handler.url("/"),
            data.path(),
        );
        cmd.env("HTTP_PROXY", format!("http://user:p%40ss@{}", proxy.addr))
            .env_remove("http_proxy")
            .env("NO_PROXY", no_proxy)
            .env_remove("no_proxy")
            .stdout(Stdio::piped());
        cmd.spawn().unwrap()
    };
    let mut child = listen("example.com");
    post(&relay.hook(&ch), &[], "{}").await;
    handler.wait_delivered(1).await;
    let creds = base64::engine::general_purpose::STANDARD.encode("user:p@ss");
    assert_eq!(
        proxy.asked()[0],
        format!("relay.invalid:{port} Basic {creds}"),
        "CONNECT to the relay, with the URL's credentials"
    );
    child.kill().await.unwrap();
    // Exempted: no CONNECT, so the made-up name is looked up directly, and fails.
    let asked = proxy.asked().len();
    let mut child = listen("localhost,.invalid");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let reason = tokio::time::timeout(meethook_testkit::PATIENCE, async {
        loop {
            let l = lines.next_line().await.unwrap().expect("a line");
            let v: serde_json::Value = serde_json::from_str(&l).expect(&l);
            if v["kind"] == "reconnecting" {
                break v["reason"].as_str().unwrap().to_string();
            }
        }
    })
    .await
    .expect("a reconnecting line");
    assert!(
        reason.contains("relay.invalid") && !reason.contains("proxy"),
        "{reason}"
    );
    assert_eq!(
        proxy.asked().len(),
        asked,
        "NO_PROXY: the proxy is not asked"
    );
    child.kill().await.unwrap();
}
