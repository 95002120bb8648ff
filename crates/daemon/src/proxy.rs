//! `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` for the relay websocket: an HTTP `CONNECT`
//! tunnel through the proxy, then TLS (for `wss://`) and the websocket inside it, as
//! corporate networks require. Loopback hosts (`localhost`, `127.0.0.0/8`, `::1`) never go
//! through a proxy.

use std::net::IpAddr;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest proxy answer head read.
const HEAD_MAX: usize = 16 * 1024;

/// An HTTP proxy from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Proxy {
    /// The proxy URL as given, for messages (password left out).
    pub shown: String,
    host: String,
    port: u16,
    /// `Proxy-Authorization` value, from the URL's user and password.
    auth: Option<String>,
}

/// The first set variable of `names`.
fn var(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
}

/// The proxy for a connection to `host` (`tls`: `wss://`), from `HTTPS_PROXY` or
/// `HTTP_PROXY` (either case) unless `NO_PROXY` or loopback exempts it.
pub(crate) fn for_host(tls: bool, host: &str) -> Result<Option<Proxy>, String> {
    let names: &[&str] = if tls {
        &["HTTPS_PROXY", "https_proxy"]
    } else {
        &["HTTP_PROXY", "http_proxy"]
    };
    let Some(url) = var(names) else {
        return Ok(None);
    };
    if is_loopback(host) || exempt(&var(&["NO_PROXY", "no_proxy"]).unwrap_or_default(), host) {
        return Ok(None);
    }
    parse(&url).map(Some)
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.to_ascii_lowercase().ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether `NO_PROXY` (`*`, or comma-separated hosts, `.suffixes` and domains whose
/// subdomains it also covers; a `:port` is ignored) exempts `host`.
fn exempt(no_proxy: &str, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    no_proxy.split(',').map(str::trim).any(|entry| {
        let entry = entry.to_ascii_lowercase();
        let entry = match entry.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !h.contains(':') => h,
            _ => entry.as_str(),
        };
        let entry = entry.trim_start_matches("*.");
        let domain = entry.trim_start_matches('.');
        entry == "*"
            || (!domain.is_empty() && (host == domain || host.ends_with(&format!(".{domain}"))))
    })
}

/// A proxy URL: `http://[user:password@]host[:port]`, or `host:port`.
fn parse(url: &str) -> Result<Proxy, String> {
    let bad = |why: &str| {
        format!(
            "proxy URL {url:?} from HTTP(S)_PROXY: {why} (expected e.g. http://proxy.example:3128)"
        )
    };
    let rest = match url.split_once("://") {
        Some(("http" | "HTTP", rest)) => rest,
        Some((scheme, _)) => return Err(bad(&format!("{scheme}:// proxies are not supported"))),
        None => url,
    };
    let rest = rest.split(['/', '?']).next().unwrap_or_default();
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, p.parse().map_err(|_| bad("bad port"))?),
        _ => (hostport, 80),
    };
    let host = host.trim_matches(|c| c == '[' || c == ']');
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let auth = userinfo.map(|u| {
        let decoded = percent_decode(u);
        let b64 = base64::engine::general_purpose::STANDARD.encode(decoded);
        format!("Basic {b64}")
    });
    Ok(Proxy {
        shown: format!("http://{hostport}"),
        host: host.to_string(),
        port,
        auth,
    })
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = || std::str::from_utf8(b.get(i + 1..i + 3)?).ok();
        match (b[i], hex().and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

impl Proxy {
    /// A TCP stream to `host:port` tunnelled through the proxy (`CONNECT`); the error says
    /// what went wrong, naming the proxy.
    pub(crate) async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, String> {
        let mut tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| {
                format!(
                    "proxy {} unreachable: {e} (check HTTPS_PROXY/HTTP_PROXY)",
                    self.shown
                )
            })?;
        let _ = tcp.set_nodelay(true);
        let target = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(a) = &self.auth {
            req.push_str(&format!("Proxy-Authorization: {a}\r\n"));
        }
        req.push_str("\r\n");
        let io = |e: std::io::Error| format!("proxy {}: {e}", self.shown);
        tcp.write_all(req.as_bytes()).await.map_err(io)?;
        // Byte by byte up to the blank line: what follows it belongs to the tunnel.
        let mut head = Vec::with_capacity(256);
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() >= HEAD_MAX {
                return Err(format!("proxy {}: answer head too long", self.shown));
            }
            let b = tcp.read_u8().await.map_err(io)?;
            head.push(b);
        }
        let line = String::from_utf8_lossy(&head);
        let status = line.lines().next().unwrap_or_default().to_string();
        match status.split_whitespace().nth(1) {
            Some(code) if code.starts_with('2') => Ok(tcp),
            Some("407") => Err(format!(
                "proxy {} wants credentials ({status}): put them in the URL, http://user:password@host:port",
                self.shown
            )),
            _ => Err(format!("proxy {} refused CONNECT {target}: {status}", self.shown)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_exemptions_and_credentials() {
        let p = parse("http://u%40x:p%3Aw@proxy.corp:3128/").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("proxy.corp", 3128));
        let creds = base64::engine::general_purpose::STANDARD.encode("u@x:p:w");
        assert_eq!(p.auth, Some(format!("Basic {creds}")));
        assert_eq!(p.shown, "http://proxy.corp:3128", "no password in messages");
        assert_eq!(parse("proxy:8080").unwrap().port, 8080);
        assert!(parse("socks5://p:1080")
            .unwrap_err()
            .contains("not supported"));
        assert!(exempt("example.com, .corp:443", "relay.corp"));
        assert!(exempt("example.com", "hooks.example.com"));
        assert!(!exempt("example.com", "notexample.com"));
        assert!(exempt("*", "anything"));
        assert!(!exempt("", "anything"));
        assert!(is_loopback("127.0.0.2") && is_loopback("::1") && is_loopback("localhost"));
        assert!(!is_loopback("relay.example"));
    }
}
