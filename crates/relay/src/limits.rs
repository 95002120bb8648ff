//! Per-channel rate limits and per-IP limits on failed authentication.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Maps stop growing past this many keys; the stalest are dropped first.
const MAX_KEYS: usize = 100_000;

/// A token bucket per channel: `rate` webhooks per second, bursts up to `burst`.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `rate` per second (0 disables), `burst` at most at once.
    pub fn new(rate: f64, burst: f64) -> Self {
        RateLimiter {
            rate,
            burst: burst.max(1.0),
            buckets: Mutex::default(),
        }
    }

    /// Takes one token for `key`; `Err(wait)` says when the next one is available.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut map = self.buckets.lock().expect("rate lock");
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            // Full buckets are the same as no bucket: forget them.
            let burst = self.burst;
            let rate = self.rate;
            map.retain(|_, (t, at)| *t + at.elapsed().as_secs_f64() * rate < burst);
        }
        let (tokens, at) = map.entry(key.to_string()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate))
        }
    }
}

/// Counts failed authentications per client IP in fixed one-minute windows.
pub struct AuthFailures {
    limit: u32,
    window: Duration,
    by_ip: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl AuthFailures {
    /// At most `limit` failures per minute per IP (0 disables).
    pub fn new(limit: u32) -> Self {
        AuthFailures {
            limit,
            window: Duration::from_secs(60),
            by_ip: Mutex::default(),
        }
    }

    /// `Err(wait)` when `ip` used up its failures for this window.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        if self.limit == 0 {
            return Ok(());
        }
        let map = self.by_ip.lock().expect("auth lock");
        match map.get(&ip) {
            Some((n, start)) if *n >= self.limit && start.elapsed() < self.window => {
                Err(self.window - start.elapsed())
            }
            _ => Ok(()),
        }
    }

    /// Records one failure from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        if self.limit == 0 {
            return;
        }
        let mut map = self.by_ip.lock().expect("auth lock");
        if map.len() >= MAX_KEYS && !map.contains_key(&ip) {
            let w = self.window;
            map.retain(|_, (_, start)| start.elapsed() < w);
        }
        let e = map.entry(ip).or_insert((0, Instant::now()));
        if e.1.elapsed() >= self.window {
            *e = (0, Instant::now());
        }
        e.0 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_limits() {
        let r = RateLimiter::new(10.0, 3.0);
        assert!(r.check("a").is_ok());
        assert!(r.check("a").is_ok());
        assert!(r.check("a").is_ok());
        let wait = r.check("a").unwrap_err();
        assert!(wait <= Duration::from_millis(100));
        assert!(r.check("b").is_ok(), "channels are independent");
        assert!(RateLimiter::new(0.0, 1.0).check("a").is_ok());
    }

    #[test]
    fn failures_block_an_ip_for_the_window() {
        let f = AuthFailures::new(2);
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        assert!(f.check(ip).is_ok());
        f.failed(ip);
        f.failed(ip);
        assert!(f.check(ip).is_err());
        assert!(f.check("127.0.0.8".parse().unwrap()).is_ok());
    }
}
