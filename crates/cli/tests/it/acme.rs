//! `meethook relay --acme` against Pebble, Let's Encrypt's test CA, with real TLS-ALPN-01
//! validation over loopback (pebble-challtestsrv answers Pebble's DNS queries with 127.0.0.1):
//! issuance, an HTTPS webhook, a wss listener that stays connected across a renewal while new
//! handshakes see the new certificate, and a restart served from the cache with the CA down.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meethook_testkit::{tempdir, Child, TestHandler};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::util::BIN;

const ADMIN: &str = "acme-admin";
/// Resolves to loopback for every client here without touching the machine's DNS.
const DOMAIN: &str = "localhost";
const PATIENCE: Duration = Duration::from_secs(60);

fn installed(bin: &str) -> bool {
    std::process::Command::new(bin)
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes a CA and a 127.0.0.1/localhost certificate for Pebble's own HTTPS: `(ca, cert, key)`.
fn pebble_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "pebble directory test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let paths = (
        dir.join("directory-ca.pem"),
        dir.join("pebble-cert.pem"),
        dir.join("pebble-key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

async fn wait_port(port: u16, what: &str) {
    let start = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(start.elapsed() < PATIENCE, "{what} did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Pebble and its DNS stand-in, killed on drop.
struct Pebble {
    _dns: Child,
    _ca: Child,
    acme: u16,
    mgmt: u16,
    log: PathBuf,
}

impl Pebble {
    /// Validates TLS-ALPN-01 against `relay_port` on 127.0.0.1.
    async fn start(dir: &Path, cert: &Path, key: &Path, relay_port: u16) -> Pebble {
        let (dns, dns_mgmt, acme, mgmt) = (free_port(), free_port(), free_port(), free_port());
        let log = dir.join("pebble.log");
        let logfile = || std::fs::File::create(&log).unwrap();
        let dns_child = tokio::process::Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{dns_mgmt}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn pebble-challtestsrv");
        wait_port(dns_mgmt, "pebble-challtestsrv").await;
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{acme}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt}"),
            "certificate": cert,
            "privateKey": key,
            "httpPort": free_port(),
            "tlsPort": relay_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            // An hour: `--acme-renew-before 3594s` then renews every ~6 s.
            "certificateValidityPeriod": 3600,
        }});
        let config_path = dir.join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let ca_child = tokio::process::Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            // Every order is validated afresh, renewals included.
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(logfile())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn pebble");
        wait_port(acme, "pebble").await;
        wait_port(mgmt, "pebble management").await;
        Pebble {
            _dns: Child { child: dns_child },
            _ca: Child { child: ca_child },
            acme,
            mgmt,
            log,
        }
    }

    fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.acme)
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

fn roots(pem: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut &pem[..]) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    // A resumed session shows the certificate of the session it resumes: full handshakes only.
    cfg.resumption = rustls::client::Resumption::disabled();
    Arc::new(cfg)
}

/// One HTTP/1.1 request over TLS to `localhost:port`: `(status, body, server's leaf DER)`.
async fn https(
    tls: &Arc<rustls::ClientConfig>,
    port: u16,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> Result<(u16, String, CertificateDer<'static>), String> {
    let io = async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let name = ServerName::try_from(DOMAIN).unwrap();
        let mut s = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await?;
        let leaf = s.get_ref().1.peer_certificates().unwrap()[0].clone();
        let auth = auth.map_or(String::new(), |a| format!("authorization: Bearer {a}\r\n"));
        let req = format!(
            "{method} {path} HTTP/1.1\r\nhost: {DOMAIN}:{port}\r\n{auth}content-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await?;
        let mut resp = Vec::new();
        // The relay closes after answering; a missing close_notify is no concern here.
        let _ = s.read_to_end(&mut resp).await;
        Ok::<_, std::io::Error>((String::from_utf8_lossy(&resp).into_owned(), leaf))
    };
    let (resp, leaf) = tokio::time::timeout(Duration::from_secs(10), io)
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .ok_or(format!("no HTTP answer: {resp:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(format!("bad status line: {head:?}"))?;
    Ok((status, body.to_string(), leaf))
}

/// `meethook relay --acme …`; waits for `listening on https://`.
async fn start_relay(args: &[String]) -> Child {
    let mut child = tokio::process::Command::new(BIN)
        .arg("relay")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn relay");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .expect("relay did not get a certificate in time")
        .unwrap()
        .expect("relay exited before listening");
    assert!(line.starts_with("listening on https://"), "{line:?}");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Child { child }
}

/// Reads one value from the relay's `/metrics`.
async fn metric(tls: &Arc<rustls::ClientConfig>, port: u16, name: &str) -> u64 {
    let (status, body, _) = https(tls, port, "GET", "/metrics", None, "").await.unwrap();
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_certificate_issued_renewed_and_reused_from_cache() {
    if !installed("pebble") || !installed("pebble-challtestsrv") {
        println!("skipped: pebble not installed (apt-get install pebble)");
        return;
    }
    let dir = tempdir();
    let (directory_ca, pebble_cert, pebble_key) = pebble_certs(dir.path());
    let port = free_port();
    let pebble = Pebble::start(dir.path(), &pebble_cert, &pebble_key, port).await;
    let data = dir.path().join("data");
    let args: Vec<String> = [
        "--acme",
        DOMAIN,
        "--acme-email",
        "ops@example.com",
        "--acme-directory",
        &pebble.directory(),
        "--acme-ca-cert",
        directory_ca.to_str().unwrap(),
        "--acme-renew-before",
        "3594s",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--admin-token",
        ADMIN,
        "--data",
        data.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    let mut relay = tokio::time::timeout(PATIENCE, start_relay(&args))
        .await
        .unwrap_or_else(|_| panic!("no certificate; pebble said:\n{}", pebble.log_tail()));

    // Pebble's issuing root, from its management API (served under the directory's test CA).
    let directory_tls = roots(&std::fs::read(&directory_ca).unwrap());
    let (status, root_pem, _) = https(&directory_tls, pebble.mgmt, "GET", "/roots/0", None, "")
        .await
        .unwrap();
    assert_eq!(status, 200, "{root_pem}");
    let root = dir.path().join("pebble-root.pem");
    std::fs::write(&root, &root_pem).unwrap();
    let tls = roots(root_pem.as_bytes());

    // Channel API and an HTTPS webhook under the issued certificate.
    let (status, body, first_leaf) = https(&tls, port, "POST", "/api/channels", Some(ADMIN), "")
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let (ch, token) = (v["id"].as_str().unwrap(), v["token"].as_str().unwrap());
    assert_eq!(
        v["webhook_url"].as_str().unwrap(),
        format!("https://{DOMAIN}/hooks/{ch}"),
        "--public-url defaults to https://DOMAIN"
    );
    let hook = format!("/hooks/{ch}");
    let (status, body, _) = https(&tls, port, "POST", &hook, None, "one").await.unwrap();
    assert_eq!((status, body.as_str()), (200, r#"{"seq":1}"#));

    // `meethook listen` over wss, trusting Pebble's root only.
    let handler = TestHandler::start().await;
    let listen_data = tempdir();
    let listen = tokio::process::Command::new(BIN)
        .args(["listen", "--inspect", "off", "--relay"])
        .arg(format!("https://{DOMAIN}:{port}"))
        .args(["--channel", ch, "--forward-to", &handler.url("/")])
        .args(["--max-backoff", "200ms", "--timeout", "5s", "--json"])
        .arg("--ca-cert")
        .arg(&root)
        .arg("--data")
        .arg(listen_data.path())
        .env("MEETHOOK_TOKEN", token)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn listen");
    let _listen = Child { child: listen };
    let got = handler.wait_delivered(1).await;
    assert_eq!(&got[0].body[..], b"one");
    let (_, _, connected_leaf) = https(&tls, port, "GET", "/healthz", None, "")
        .await
        .unwrap();
    assert_eq!(
        metric(&tls, port, "meethook_listener_streams_total").await,
        1
    );

    // Renewal: new handshakes get a new certificate …
    let start = Instant::now();
    let renewed_leaf = loop {
        let (_, _, leaf) = https(&tls, port, "GET", "/healthz", None, "")
            .await
            .unwrap();
        if leaf != connected_leaf {
            break leaf;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "no renewal; pebble said:\n{}",
            pebble.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_ne!(renewed_leaf, first_leaf);
    // … while the listener connected before it keeps its stream and gets new events.
    let (status, body, _) = https(&tls, port, "POST", &hook, None, "two").await.unwrap();
    assert_eq!((status, body.as_str()), (200, r#"{"seq":2}"#));
    let got = handler.wait_delivered(2).await;
    assert_eq!(&got[1].body[..], b"two");
    assert_eq!(
        metric(&tls, port, "meethook_listener_streams_total").await,
        1
    );
    assert_eq!(metric(&tls, port, "meethook_listeners").await, 1);

    // Restart with the CA gone: the cached certificate is served without asking it.
    relay.kill9().await;
    drop(pebble);
    let cached = std::fs::read_dir(data.join("acme"))
        .unwrap()
        .map(|d| d.unwrap().path().join(format!("{DOMAIN}.pem")))
        .find(|p| p.exists())
        .expect("certificate cached under DATA/acme");
    let cached_pem = std::fs::read(&cached).unwrap();
    let cached_leaf = rustls_pemfile::certs(&mut &cached_pem[..])
        .next()
        .unwrap()
        .unwrap();
    let started = Instant::now();
    let relay = start_relay(&args).await;
    assert!(started.elapsed() < Duration::from_secs(15));
    let (status, body, leaf) = https(&tls, port, "POST", &hook, None, "three")
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (200, r#"{"seq":3}"#));
    assert_eq!(leaf, cached_leaf, "served the cached certificate");
    let got = handler.wait_delivered(3).await;
    assert_eq!(&got[2].body[..], b"three");

    // SIGHUP (systemd's reload) re-reads the cache instead of ending the relay.
    let pid = relay.child.id().unwrap().to_string();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(hup.success());
    // A fixed wait, on purpose: no signal tells that SIGHUP was handled; the check below is that the process serves the same certificate.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _, leaf) = https(&tls, port, "GET", "/healthz", None, "")
        .await
        .unwrap();
    assert_eq!((status, leaf), (200, cached_leaf));
    drop(relay);
}

#[test]
fn acme_flags_conflict_with_tls_files_and_need_acme() {
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let out = std::process::Command::new(BIN)
            .arg("relay")
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let tls = ["--tls-cert", "c.pem", "--tls-key", "k.pem"];
    let (code, err) = run(&[&["--acme", "hooks.example.com"][..], &tls].concat(), &[]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--acme") && err.contains("--tls-cert"),
        "{err}"
    );
    let (code, err) = run(&tls, &[("MEETHOOK_ACME", "hooks.example.com")]);
    assert_eq!(code, Some(2), "{err}");
    let (code, err) = run(&["--acme-email", "ops@example.com"], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--acme"), "{err}");
}

#[test]
fn acme_directory_unreachable_exits_1_saying_what_to_check() {
    let dir = tempdir();
    let out = std::process::Command::new(BIN)
        .args([
            "relay",
            "--acme",
            "hooks.example.com",
            "--listen",
            "127.0.0.1:0",
        ])
        .args([
            "--acme-directory",
            &format!("https://127.0.0.1:{}/dir", free_port()),
        ])
        .arg("--data")
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("ACME account at https://127.0.0.1:") && err.contains("reachable"),
        "{err}"
    );
    assert!(
        out.stdout.is_empty(),
        "no `listening on` without a certificate"
    );
}
