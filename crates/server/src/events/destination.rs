//! Where webhooks may be delivered: not to this host, the private network, link-local or
//! cloud metadata addresses (server-side request forgery), unless the operator allows
//! private destinations (`--allow-private-webhooks`).
//!
//! The check runs twice: when an endpoint is registered (its host resolved, every address
//! checked), and at every delivery against the addresses the connection will actually use
//! ([`GuardedResolver`] hands the HTTP client only addresses that pass; an address literal in
//! the URL is checked before sending). A name that resolved to a public address at
//! registration and to a private one later (DNS rebinding) is refused at delivery.
//! Redirects are never followed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether webhooks may reach private destinations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Destinations {
    /// Public addresses only (the default).
    #[default]
    PublicOnly,
    /// Any address (`--allow-private-webhooks`: receivers on the same host or network).
    AnyAddress,
}

/// Why a destination is refused, for the caller's message.
pub fn refusal(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refusal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return refusal_v4(v4);
            }
            let s = v6.segments();
            if v6.is_loopback() {
                Some("a loopback address")
            } else if v6.is_unspecified() {
                Some("the unspecified address")
            } else if v6.is_multicast() {
                Some("a multicast address")
            } else if s[0] & 0xfe00 == 0xfc00 {
                // fc00::/7, unique local (includes AWS's fd00:ec2::254 metadata address).
                Some("a private (unique local) address")
            } else if s[0] & 0xffc0 == 0xfe80 {
                Some("a link-local address")
            } else if s[0] & 0xffc0 == 0xfec0 {
                Some("a site-local address")
            } else if s[0] == 0x2001 && s[1] == 0x0db8 {
                Some("a documentation address")
            } else {
                None
            }
        }
    }
}

fn refusal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_loopback() {
        Some("a loopback address")
    } else if o[0] == 0 {
        Some("an address of this network (0.0.0.0/8)")
    } else if ip.is_private() {
        Some("a private address")
    } else if ip.is_link_local() {
        // 169.254.0.0/16 holds the cloud metadata service (169.254.169.254).
        Some("a link-local or metadata address")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("a shared (carrier-grade NAT) address")
    } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
        Some("an IETF protocol assignment address")
    } else if ip.is_documentation() {
        Some("a documentation address")
    } else if o[0] == 198 && (o[1] & 0xfe) == 18 {
        Some("a benchmarking address")
    } else if ip.is_multicast() || o[0] >= 240 {
        Some("a multicast, reserved or broadcast address")
    } else {
        None
    }
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible or NAT64
/// (`64:ff9b::/96`) IPv6 address.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = v6.segments();
    let tail = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|x| *x == 0) {
        return Some(tail());
    }
    // ::a.b.c.d (deprecated IPv4-compatible), but not :: or ::1.
    if s[..6].iter().all(|x| *x == 0) && (s[6] != 0 || s[7] > 1) {
        return Some(tail());
    }
    None
}

/// Checks a webhook URL's host under a policy: an address literal directly, a name by
/// resolving it (every address must pass). Returns the reason it is refused.
pub async fn check_url(url: &url::Url, policy: Destinations) -> Result<(), String> {
    if policy == Destinations::AnyAddress {
        return Ok(());
    }
    let host = match url.host() {
        Some(url::Host::Ipv4(ip)) => return check_ip(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => return check_ip(IpAddr::V6(ip)),
        Some(url::Host::Domain(d)) => d.to_string(),
        None => return Err("the URL has no host".into()),
    };
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("its host {host} does not resolve ({e})"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("its host {host} resolves to no address"));
    }
    for a in addrs {
        check_ip(a.ip()).map_err(|why| format!("its host {host} resolves to {why}"))?;
    }
    Ok(())
}

fn check_ip(ip: IpAddr) -> Result<(), String> {
    match refusal(ip) {
        Some(why) => Err(format!("{ip}, {why}")),
        None => Ok(()),
    }
}

/// The webhook client's resolver under [`Destinations::PublicOnly`]: resolves with the
/// system resolver and passes on only the addresses that may be reached; a name left with
/// none fails to connect, naming why.
#[derive(Debug, Default)]
pub struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match refusal(a.ip()) {
                    Some(why) => {
                        refused = Some(format!("{} ({why})", a.ip()));
                        false
                    }
                    None => true,
                })
                .collect();
            if allowed.is_empty() {
                let why = refused.unwrap_or_else(|| "no address".into());
                return Err(format!("webhook host {host} resolves to {why}: refused").into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// A client builder that enforces the policy on every connection it makes.
pub fn guard(builder: reqwest::ClientBuilder, policy: Destinations) -> reqwest::ClientBuilder {
    match policy {
        Destinations::AnyAddress => builder,
        Destinations::PublicOnly => builder.dns_resolver(Arc::new(GuardedResolver)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(s: &str) -> bool {
        refusal(s.parse().unwrap()).is_some()
    }

    #[test]
    fn private_and_special_addresses_are_refused() {
        for a in [
            "127.0.0.1",
            "127.8.9.10",
            "10.0.0.5",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "fc00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "64:ff9b::a9fe:a9fe",
            "::7f00:1",
        ] {
            assert!(refused(a), "{a} should be refused");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for a in [
            "93.184.216.34",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!refused(a), "{a} should pass");
        }
    }

    #[tokio::test]
    async fn urls_are_checked_by_their_resolved_addresses() {
        let check = |u: &str| {
            let u = url::Url::parse(u).unwrap();
            async move { check_url(&u, Destinations::PublicOnly).await }
        };
        assert!(check("http://127.0.0.1:9/hook").await.is_err());
        assert!(check("http://[::1]/hook").await.is_err());
        assert!(
            check("http://169.254.169.254/latest/meta-data")
                .await
                .is_err()
        );
        // A name is resolved: localhost is loopback wherever this runs.
        let err = check("http://localhost:8080/hook").await.unwrap_err();
        assert!(err.contains("localhost"), "{err}");
        assert!(check("https://93.184.216.34/hook").await.is_ok());
        let any = url::Url::parse("http://127.0.0.1/").unwrap();
        assert!(check_url(&any, Destinations::AnyAddress).await.is_ok());
    }
}
