//! Safe by default: which requests the inspector answers at all.
//!
//! - DNS rebinding: a page on `evil.example` whose name is made to resolve to 127.0.0.1 sends
//!   `Host: evil.example`; only the served address and the loopback names are answered.
//! - CSRF: a state-changing request (POST) from a browser carries its page's `Origin`; a
//!   foreign one is refused, and a POST must be `content-type: application/json` (which a
//!   cross-site form cannot send without a CORS preflight, which is never granted).
//! - A non-loopback address needs a token: `Authorization: Bearer T`, or `?token=T` once,
//!   after which a cookie carries it.

use std::net::{IpAddr, SocketAddr};

/// The cookie that carries the token after a `?token=`.
pub(crate) const COOKIE: &str = "meethook_inspect";

/// What the guard knows about the server.
#[derive(Debug, Clone)]
pub(crate) struct Guard {
    pub(crate) served: SocketAddr,
    pub(crate) token: Option<String>,
}

/// How a request stands with the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Auth {
    /// No token needed, or a good one in a header or the cookie.
    Ok,
    /// A good `?token=`: answer, and set the cookie.
    SetCookie,
    /// Missing or wrong.
    Refused,
}

/// `host[:port]` split; the host keeps its brackets (`[::1]`).
fn split_host(h: &str) -> Option<(&str, Option<u16>)> {
    let h = h.trim();
    if h.is_empty() {
        return None;
    }
    if h.starts_with('[') {
        let end = h.find(']')?;
        let (host, rest) = h.split_at(end + 1);
        return match rest.strip_prefix(':') {
            Some(p) => Some((host, Some(p.parse().ok()?))),
            None if rest.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match h.rsplit_once(':') {
        Some((host, p)) => Some((host, Some(p.parse().ok()?))),
        None => Some((h, None)),
    }
}

/// Constant-time equality of two tokens.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Guard {
    /// Whether a `Host` header names this server: a loopback name (any port: an SSH
    /// forward changes it) or the served address.
    pub(crate) fn host_ok(&self, host: Option<&str>) -> bool {
        let Some((name, port)) = host.and_then(split_host) else {
            return false;
        };
        let name = name.to_ascii_lowercase();
        if matches!(name.as_str(), "localhost" | "127.0.0.1" | "[::1]") {
            return true;
        }
        if port.is_some_and(|p| p != self.served.port()) {
            return false;
        }
        let ip: Option<IpAddr> = name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok();
        match ip {
            // Bound to every address: any of this machine's addresses, spelled as an IP.
            Some(_) if self.served.ip().is_unspecified() => true,
            Some(ip) => ip == self.served.ip(),
            None => false,
        }
    }

    /// Whether a POST's `Origin` may change state: none (not a browser) or this server.
    pub(crate) fn origin_ok(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(o) => match o
                .strip_prefix("http://")
                .or_else(|| o.strip_prefix("https://"))
            {
                Some(rest) if !rest.contains('/') => self.host_ok(Some(rest)),
                _ => false,
            },
        }
    }

    /// How a request stands with the token, from its `Authorization` and `Cookie` headers
    /// and its `?token=`.
    pub(crate) fn auth(
        &self,
        authorization: Option<&str>,
        cookie: Option<&str>,
        query_token: Option<&str>,
    ) -> Auth {
        let Some(token) = &self.token else {
            return Auth::Ok;
        };
        let bearer = authorization.and_then(|a| a.strip_prefix("Bearer "));
        if bearer.is_some_and(|b| same(b.trim(), token)) {
            return Auth::Ok;
        }
        let from_cookie = cookie.into_iter().flat_map(|c| c.split(';')).any(|kv| {
            kv.trim()
                .strip_prefix(COOKIE)
                .and_then(|r| r.strip_prefix('='))
                .is_some_and(|v| same(v, token))
        });
        if from_cookie {
            return Auth::Ok;
        }
        if query_token.is_some_and(|q| same(q, token)) {
            return Auth::SetCookie;
        }
        Auth::Refused
    }
}

/// Whether an address serves only this machine.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(addr: &str) -> Guard {
        Guard {
            served: addr.parse().unwrap(),
            token: None,
        }
    }

    #[test]
    fn hosts() {
        let g = guard("127.0.0.1:4040");
        for ok in [
            "127.0.0.1:4040",
            "localhost:4040",
            "LOCALHOST",
            "[::1]:9000",
            "127.0.0.1",
        ] {
            assert!(g.host_ok(Some(ok)), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:4040",
            "10.0.0.1:4040",
            "",
            "localhost:x",
            "[::1",
        ] {
            assert!(!g.host_ok(Some(bad)), "{bad}");
        }
        assert!(!g.host_ok(None));
        let any = guard("0.0.0.0:4041");
        assert!(any.host_ok(Some("192.168.1.5:4041")));
        assert!(!any.host_ok(Some("192.168.1.5:80")));
        assert!(!any.host_ok(Some("evil.example:4041")));
        let one = guard("192.168.1.5:4040");
        assert!(one.host_ok(Some("192.168.1.5:4040")));
        assert!(!one.host_ok(Some("192.168.1.6:4040")));
    }

    #[test]
    fn origins() {
        let g = guard("127.0.0.1:4040");
        assert!(g.origin_ok(None));
        assert!(g.origin_ok(Some("http://127.0.0.1:4040")));
        assert!(g.origin_ok(Some("http://localhost:4040")));
        assert!(!g.origin_ok(Some("null")));
        assert!(!g.origin_ok(Some("http://evil.example")));
        assert!(!g.origin_ok(Some("http://localhost:4040/x")));
    }

    #[test]
    fn tokens() {
        let open = guard("127.0.0.1:4040");
        assert_eq!(open.auth(None, None, None), Auth::Ok);
        let g = Guard {
            token: Some("s3cret".into()),
            ..guard("0.0.0.0:4040")
        };
        assert_eq!(g.auth(None, None, None), Auth::Refused);
        assert_eq!(g.auth(Some("Bearer s3cret"), None, None), Auth::Ok);
        assert_eq!(g.auth(Some("Bearer nope"), None, None), Auth::Refused);
        assert_eq!(
            g.auth(None, Some("a=b; meethook_inspect=s3cret"), None),
            Auth::Ok
        );
        assert_eq!(
            g.auth(None, Some("meethook_inspect=s3"), None),
            Auth::Refused
        );
        assert_eq!(g.auth(None, None, Some("s3cret")), Auth::SetCookie);
        assert_eq!(g.auth(None, None, Some("s3cre")), Auth::Refused);
    }
}
