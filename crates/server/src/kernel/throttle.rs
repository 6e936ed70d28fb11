//! Failed authentication, throttled per client address.
//!
//! Every 401 a client address earns spends one cell of its allowance (20 a minute by
//! default). Once it is spent, every request from that address is answered 429 with
//! `Retry-After` until the allowance refills, valid credentials or not, the way GitHub and
//! most identity providers lock out a guessing client: a guess must not be told apart from a
//! hit.
//!
//! The client address is the connection's peer, unless the peer is a trusted proxy
//! (`--trusted-proxies`): then it is the right-most address of `X-Forwarded-For` that is not
//! itself a trusted proxy. A refused sign-in (an ID token the identity provider issued that
//! fails a check) is the user's, not the caller's, and is not counted.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;

/// Marks a 401 that is not the caller's failure (a refused sign-in).
#[derive(Debug, Clone, Copy)]
pub struct NotTheCallers;

/// The throttle of one server.
pub struct Throttle {
    /// Failures allowed per client address per minute; `None`: no throttle.
    allowance: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Addresses refused until an instant, and how many there are (so a request takes no
    /// lock while none is).
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    blocked_count: AtomicUsize,
    trusted: Vec<IpNet>,
}

impl Throttle {
    /// `per_minute` failures per address (0: no throttle); `trusted` proxies, whose
    /// `X-Forwarded-For` is believed.
    pub fn new(per_minute: u32, trusted: Vec<IpNet>) -> Throttle {
        let allowance = NonZeroU32::new(per_minute)
            .map(|n| RateLimiter::keyed(Quota::per_minute(n).allow_burst(n)));
        Throttle {
            allowance,
            blocked: Mutex::new(HashMap::new()),
            blocked_count: AtomicUsize::new(0),
            trusted,
        }
    }

    /// The client address of a request (see the module docs); `None` when the request came
    /// without a connection (in-process).
    pub fn client<B>(&self, req: &Request<B>) -> Option<IpAddr> {
        let peer = req.extensions().get::<ConnectInfo<SocketAddr>>()?.0.ip();
        Some(client_address(peer, req.headers(), &self.trusted))
    }

    /// Seconds to wait if this address is locked out now.
    pub fn refused(&self, ip: IpAddr) -> Option<u64> {
        if self.blocked_count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        let until = *blocked.get(&ip)?;
        let now = Instant::now();
        if until <= now {
            blocked.remove(&ip);
            self.blocked_count.store(blocked.len(), Ordering::Relaxed);
            return None;
        }
        Some((until - now).as_secs().max(1))
    }

    /// Counts a response: a 401 spends the address's allowance. Returns the seconds to wait
    /// when this failure is one past it (it is then answered 429 too).
    pub fn answered(&self, ip: IpAddr, status: StatusCode, not_the_callers: bool) -> Option<u64> {
        if status != StatusCode::UNAUTHORIZED || not_the_callers {
            return None;
        }
        metrics::counter!("seatkeeper_auth_failures_total").increment(1);
        let allowance = self.allowance.as_ref()?;
        let mut refused = None;
        if let Err(not_until) = allowance.check_key(&ip) {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            let wait = wait.max(Duration::from_secs(1));
            let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
            blocked.insert(ip, Instant::now() + wait);
            // Old entries go when the map grows: it never holds more than the addresses
            // refused within the last minute or so.
            if blocked.len() > 1024 {
                let now = Instant::now();
                blocked.retain(|_, until| *until > now);
            }
            self.blocked_count.store(blocked.len(), Ordering::Relaxed);
            tracing::warn!(client = %ip, wait_s = wait.as_secs(), "authentication failures throttled");
            refused = Some(wait.as_secs().max(1));
        }
        if allowance.len() > 100_000 {
            allowance.retain_recent();
        }
        refused
    }
}

/// The client's address: the peer, or, behind trusted proxies, the right-most
/// `X-Forwarded-For` entry that is not a trusted proxy.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(text) = value.to_str() else {
            return client;
        };
        for hop in text.rsplit(',') {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                return client;
            };
            client = ip;
            if !is_trusted(&ip) {
                return ip;
            }
        }
    }
    client
}

/// Parses `--trusted-proxies`: addresses or CIDR blocks, comma-separated.
pub fn parse_trusted(text: &str) -> Result<Vec<IpNet>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("'{s}' is not an IP address or CIDR block"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().unwrap());
        h
    }

    #[test]
    fn forwarded_for_is_believed_from_trusted_proxies_only() {
        let trusted = parse_trusted("10.0.0.0/8, 127.0.0.1").unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // An untrusted peer is the client, whatever it claims.
        assert_eq!(
            client_address(ip("203.0.113.9"), &xff("1.2.3.4"), &trusted),
            ip("203.0.113.9")
        );
        // Behind the proxy: the right-most untrusted hop (the left ones are the client's say).
        assert_eq!(
            client_address(
                ip("10.1.1.1"),
                &xff("6.6.6.6, 198.51.100.7, 10.2.2.2"),
                &trusted
            ),
            ip("198.51.100.7")
        );
        // A garbled hop stops the walk at the last good one.
        assert_eq!(
            client_address(ip("127.0.0.1"), &xff("nonsense"), &trusted),
            ip("127.0.0.1")
        );
        assert!(parse_trusted("10.0.0.0/33").is_err());
        assert!(parse_trusted("").unwrap().is_empty());
    }

    #[test]
    fn failures_past_the_allowance_lock_the_address_out() {
        let t = Throttle::new(3, Vec::new());
        let (a, b) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        for _ in 0..3 {
            assert_eq!(t.refused(a), None);
            assert_eq!(t.answered(a, StatusCode::UNAUTHORIZED, false), None);
        }
        assert_eq!(t.refused(a), None, "three failures are allowed");
        assert!(t.answered(a, StatusCode::UNAUTHORIZED, false).is_some());
        assert!(t.refused(a).is_some_and(|s| (1..=60).contains(&s)));
        assert_eq!(t.refused(b), None, "per address");
        // Successes and refused sign-ins spend nothing.
        for _ in 0..10 {
            assert_eq!(t.answered(b, StatusCode::OK, false), None);
            assert_eq!(t.answered(b, StatusCode::UNAUTHORIZED, true), None);
        }
        assert_eq!(t.refused(b), None);
        assert_eq!(Throttle::new(0, Vec::new()).refused(a), None);
    }
}
