//! HTTPS/WSS end to end with certificates from a test CA, and reload without dropping listeners.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use meethook_relay::tls::Tls;
use meethook_testkit::{tempdir, Setup};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// Writes `ca.pem`, `cert.pem`, `key.pem` for 127.0.0.1/localhost signed by a fresh CA.
fn make_certs(dir: &Path, tag: &str) -> (PathBuf, PathBuf, PathBuf) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("meethook test CA {tag}"));
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let paths = (
        dir.join(format!("ca-{tag}.pem")),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

/// POSTs over HTTPS trusting only `ca`; `Err` when the handshake fails.
async fn https_post(url: &str, ca: &Path, body: impl Into<Bytes>) -> Result<u16, String> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for c in rustls_pemfile::certs(&mut &pem[..]) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let conn = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(cfg)
        .https_only()
        .enable_http1()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(conn);
    let req = http::Request::post(url)
        .body(Full::new(body.into()))
        .unwrap();
    let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    Ok(status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_end_to_end_and_certificate_reload_keeps_listeners() {
    let certs = tempdir();
    let (ca1, cert, key) = make_certs(certs.path(), "one");
    let tls = Arc::new(Tls::load(&cert, &key).unwrap());
    let t = tls.clone();
    let s = Setup::start_with(move |c| c.tls = Some(t)).await;
    let base = format!("https://{}", s.relay.addr);
    let hook = format!("{base}/hooks/{}", s.channel);

    // Without the CA the daemon cannot verify the relay and keeps retrying; with it, it works.
    let daemon = s.daemon_with("/", |cfg| {
        cfg.relay = base.clone();
        cfg.ca_cert = Some(ca1.clone());
    });
    let (relay, ch, _, handler, _dir) = s.into_parts();
    assert_eq!(https_post(&hook, &ca1, "over tls").await.unwrap(), 200);
    let got = handler.wait_delivered(1).await;
    assert_eq!(got[0].body, Bytes::from("over tls"));
    // A big body (a body file, written to the socket past tungstenite) arrives byte-identical.
    let big: Bytes = (0..(1 << 20) + 4099u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect::<Vec<u8>>()
        .into();
    assert_eq!(https_post(&hook, &ca1, big.clone()).await.unwrap(), 200);
    let got = handler.wait_delivered(2).await;
    assert!(got[1].body == big, "big body byte-identical over wss");

    // Plain HTTP to the TLS port is not served.
    assert!(meethook_testkit::request(
        &meethook_testkit::client(),
        "POST",
        &relay.hook(&ch),
        &[],
        "x"
    )
    .await
    .map(|r| r.status != 200)
    .unwrap_or(true));

    // New certificate from another CA; reload as SIGHUP would.
    let (ca2, _, _) = make_certs(certs.path(), "two");
    tls.reload().unwrap();
    assert!(
        https_post(&hook, &ca1, "old ca").await.is_err(),
        "new handshakes use the new certificate"
    );
    assert_eq!(https_post(&hook, &ca2, "after reload").await.unwrap(), 200);
    // The listener trusts only the old CA: it can only receive this over its existing connection.
    let got = handler.wait_delivered(3).await;
    assert_eq!(got[2].body, Bytes::from("after reload"));
    assert_eq!(
        relay
            .metrics
            .listeners
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    // A broken file keeps the current certificate.
    std::fs::write(&cert, "not a pem").unwrap();
    assert!(tls.reload().is_err());
    assert_eq!(https_post(&hook, &ca2, "still served").await.unwrap(), 200);
    daemon.stop().await.unwrap();
    relay.stop().await;
}
