//! Per-channel rate limits and per-IP limits on failed authentication.
//!
//! Both are cluster-wide: relays sharing a store ([`Store::nodes`](meethook_store::Store::nodes))
//! each enforce their share (the rate, burst and failure count divided by the number of relays),
//! so senders spread over the relays by a balancer get the configured budget in total. A sender
//! that reaches only one of N relays gets 1/N of it.

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

    /// Takes one token for `key` from this relay's share, one of `nodes` relays' (at least one
    /// token of burst each); `Err(wait)` says when the next one is available.
    pub fn check(&self, key: &str, nodes: usize) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let share = nodes.max(1) as f64;
        let (rate, burst) = (self.rate / share, (self.burst / share).max(1.0));
        let now = Instant::now();
        let mut map = self.buckets.lock().expect("rate lock");
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            // Full buckets are the same as no bucket: forget them.
            map.retain(|_, (t, at)| *t + at.elapsed().as_secs_f64() * rate < burst);
        }
        let (tokens, at) = map.entry(key.to_string()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / rate))
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

    /// `Err(wait)` when `ip` used up this relay's share (one of `nodes` relays', rounded up)
    /// of its failures for this window.
    pub fn check(&self, ip: IpAddr, nodes: usize) -> Result<(), Duration> {
        if self.limit == 0 {
            return Ok(());
        }
        let share = self.limit.div_ceil(nodes.max(1) as u32);
        let map = self.by_ip.lock().expect("auth lock");
        match map.get(&ip) {
            Some((n, start)) if *n >= share && start.elapsed() < self.window => {
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
        assert!(r.check("a", 1).is_ok());
        assert!(r.check("a", 1).is_ok());
        assert!(r.check("a", 1).is_ok());
        let wait = r.check("a", 1).unwrap_err();
        assert!(wait <= Duration::from_millis(100));
        assert!(r.check("b", 1).is_ok(), "channels are independent");
        assert!(RateLimiter::new(0.0, 1.0).check("a", 1).is_ok());
    }

    #[test]
    fn each_of_several_relays_takes_its_share() {
        let r = RateLimiter::new(0.001, 6.0);
        let taken = (0..10).filter(|_| r.check("a", 3).is_ok()).count();
        assert_eq!(taken, 2, "a third of the burst");
        let f = AuthFailures::new(5);
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        for _ in 0..3 {
            assert!(f.check(ip, 2).is_ok());
            f.failed(ip);
        }
        assert!(f.check(ip, 2).is_err(), "half of 5, rounded up");
        assert!(f.check(ip, 1).is_ok(), "alone, the whole limit");
    }

    #[test]
    fn failures_block_an_ip_for_the_window() {
        let f = AuthFailures::new(2);
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        assert!(f.check(ip, 1).is_ok());
        f.failed(ip);
        f.failed(ip);
        assert!(f.check(ip, 1).is_err());
        assert!(f.check("127.0.0.8".parse().unwrap(), 1).is_ok());
    }
}
