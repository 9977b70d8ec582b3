//! The server-side request forgery guard: which addresses a capture may reach.
//!
//! Three pieces:
//! - [`classify_ip`]: a pure table of address ranges we refuse (loopback, private, link-local
//!   and metadata, carrier-grade NAT, multicast, unspecified, broadcast, documentation and
//!   reserved ranges, IPv6 unique-local/link-local/site-local, and IPv4 embedded in IPv6 via
//!   the mapped, compatible, NAT64 and 6to4 forms; Teredo is refused outright).
//! - [`TargetPolicy`]: the policy (refuse those ranges, or allow them for development), with
//!   an explicit allow-list of socket addresses so tests can open exactly one hole.
//! - [`resolve_checked`]: resolve a host name and check *every* address the resolver returns;
//!   a name with any forbidden address is refused as a whole.
//!
//! The same check runs twice: once before a capture is queued (so a forbidden URL never
//! touches a browser) and again inside the forwarding proxy ([`crate::proxy`]) for every
//! request the browser makes, including redirects and subresources. The proxy connects to
//! the address it checked, so a DNS answer that changes between the two (rebinding) cannot
//! steer the browser anywhere the policy refuses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::{Host, Url};

use crate::error::CaptureError;

/// Why an address is refused, or `None` when it is a public unicast address.
pub fn classify_ip(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    let bits = u32::from(ip);
    let in_net = |net: [u8; 4], len: u32| {
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        bits & mask == u32::from(Ipv4Addr::from(net)) & mask
    };
    if ip.is_unspecified() {
        return Some("unspecified address");
    }
    if ip.is_broadcast() {
        return Some("broadcast address");
    }
    if in_net([0, 0, 0, 0], 8) {
        return Some("\"this network\" address (0.0.0.0/8)");
    }
    if o[0] == 127 {
        return Some("loopback address");
    }
    if in_net([169, 254, 0, 0], 16) {
        return Some("link-local address (includes cloud metadata 169.254.169.254)");
    }
    if in_net([10, 0, 0, 0], 8) || in_net([172, 16, 0, 0], 12) || in_net([192, 168, 0, 0], 16) {
        return Some("private address");
    }
    if in_net([100, 64, 0, 0], 10) {
        return Some("carrier-grade NAT address");
    }
    if in_net([192, 0, 0, 0], 24) {
        return Some("IETF protocol assignment address");
    }
    if in_net([192, 0, 2, 0], 24) || in_net([198, 51, 100, 0], 24) || in_net([203, 0, 113, 0], 24) {
        return Some("documentation address");
    }
    if in_net([192, 88, 99, 0], 24) {
        return Some("6to4 relay anycast address");
    }
    if in_net([198, 18, 0, 0], 15) {
        return Some("benchmarking address");
    }
    if in_net([224, 0, 0, 0], 4) {
        return Some("multicast address");
    }
    if in_net([240, 0, 0, 0], 4) {
        return Some("reserved address");
    }
    None
}

fn classify_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified address");
    }
    if ip.is_loopback() {
        return Some("loopback address");
    }
    // ::ffff:a.b.c.d (IPv4-mapped) and ::a.b.c.d (deprecated IPv4-compatible).
    if s[..5] == [0, 0, 0, 0, 0] && (s[5] == 0xffff || s[5] == 0) {
        if s[5] == 0xffff {
            return classify_v4(embedded_v4(s[6], s[7]))
                .map(|_| "IPv4-mapped form of a forbidden IPv4 address");
        }
        // ::a.b.c.d, deprecated since RFC 4291 and never a legitimate destination.
        return Some("IPv4-compatible IPv6 address (deprecated)");
    }
    // 64:ff9b::/96 well-known NAT64 prefix: judge the embedded IPv4 address.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return classify_v4(embedded_v4(s[6], s[7]))
            .map(|_| "NAT64 form of a forbidden IPv4 address");
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
        return Some("local-use NAT64 address (64:ff9b:1::/48)");
    }
    if s[..4] == [0x100, 0, 0, 0] {
        return Some("discard-only address (100::/64)");
    }
    if s[0] == 0x2001 && s[1] == 0 {
        return Some("Teredo address (embeds another address)");
    }
    if s[0] == 0x2001 && s[1] == 0x0db8 {
        return Some("documentation address");
    }
    if s[0] == 0x2002 {
        return classify_v4(embedded_v4(s[1], s[2]))
            .map(|_| "6to4 form of a forbidden IPv4 address");
    }
    if s[0] & 0xfe00 == 0xfc00 {
        return Some("unique-local address");
    }
    if s[0] & 0xffc0 == 0xfe80 {
        return Some("link-local address");
    }
    if s[0] & 0xffc0 == 0xfec0 {
        return Some("site-local address");
    }
    if s[0] & 0xff00 == 0xff00 {
        return Some("multicast address");
    }
    None
}

/// The IPv4 address held in two IPv6 segments (high, low).
fn embedded_v4(high: u16, low: u16) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(high) << 16) | u32::from(low))
}

/// Which addresses captures may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetPolicy {
    allow_private: bool,
    allowed: Vec<SocketAddr>,
}

impl TargetPolicy {
    /// Refuse every range [`classify_ip`] names (production default).
    pub fn strict() -> Self {
        Self::default()
    }

    /// Allow every address (development and tests against fixtures on 127.0.0.1).
    pub fn allow_private() -> Self {
        Self {
            allow_private: true,
            allowed: Vec::new(),
        }
    }

    /// Also allow exactly these socket addresses (IP and port), even when they are private.
    pub fn with_allowed(mut self, addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.allowed.extend(addrs);
        self
    }

    /// Whether private targets are allowed.
    pub fn allows_private(&self) -> bool {
        self.allow_private
    }

    /// `Err(reason)` when the policy refuses this address.
    pub fn check(&self, addr: SocketAddr) -> Result<(), &'static str> {
        if self.allow_private || self.allowed.contains(&addr) {
            return Ok(());
        }
        // An allow-list entry written as IPv4 also covers its IPv4-mapped IPv6 form.
        if let IpAddr::V6(v6) = addr.ip() {
            if let Some(v4) = v6.to_ipv4_mapped() {
                if self
                    .allowed
                    .contains(&SocketAddr::new(IpAddr::V4(v4), addr.port()))
                {
                    return Ok(());
                }
            }
        }
        match classify_ip(addr.ip()) {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }
}

/// Why a host could not be turned into addresses we may connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveFailure {
    /// The policy refuses (one of) the addresses.
    Forbidden(String),
    /// The name does not resolve.
    Dns,
}

/// Resolve `host` (a domain, an IPv4 literal or a bracket-less IPv6 literal) and check every
/// address against the policy. Names under the special-use `.invalid` TLD (RFC 6761 §6.4)
/// never resolve and are answered without asking a DNS server.
pub async fn resolve_checked(
    host: &Host<String>,
    port: u16,
    policy: &TargetPolicy,
) -> Result<Vec<SocketAddr>, ResolveFailure> {
    let addrs: Vec<SocketAddr> = match host {
        Host::Ipv4(ip) => vec![SocketAddr::new(IpAddr::V4(*ip), port)],
        Host::Ipv6(ip) => vec![SocketAddr::new(IpAddr::V6(*ip), port)],
        Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if name == "invalid" || name.ends_with(".invalid") || name.is_empty() {
                return Err(ResolveFailure::Dns);
            }
            let found: Vec<SocketAddr> = match tokio::net::lookup_host((name.as_str(), port)).await
            {
                Ok(it) => it.collect(),
                Err(_) => return Err(ResolveFailure::Dns),
            };
            found
        }
    };
    if addrs.is_empty() {
        return Err(ResolveFailure::Dns);
    }
    for a in &addrs {
        if let Err(reason) = policy.check(*a) {
            return Err(ResolveFailure::Forbidden(format!(
                "{host} resolves to {} ({reason})",
                a.ip()
            )));
        }
    }
    Ok(addrs)
}

/// Check a URL before any browser sees it: http(s) only, and every resolved address allowed.
pub async fn check_url(url: &Url, policy: &TargetPolicy) -> Result<Vec<SocketAddr>, CaptureError> {
    let forbidden = |reason: String| CaptureError::ForbiddenTarget {
        target: url.as_str().to_owned(),
        reason,
    };
    if !matches!(url.scheme(), "http" | "https") {
        return Err(forbidden(format!(
            "only http and https URLs can be captured, not {}:",
            url.scheme()
        )));
    }
    let host = url
        .host()
        .ok_or_else(|| forbidden("the URL has no host".into()))?
        .to_owned();
    let port = url
        .port_or_known_default()
        .ok_or_else(|| forbidden("the URL has no port".into()))?;
    resolve_checked(&host, port, policy)
        .await
        .map_err(|f| match f {
            ResolveFailure::Forbidden(reason) => forbidden(reason),
            ResolveFailure::Dns => CaptureError::DnsFailure {
                host: host.to_string(),
            },
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_table() {
        let forbidden = [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.0.1",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::8.8.8.8",
            "64:ff9b::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2002:a00:1::",
            "2001::1",
            "2001:db8::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "100::1",
        ];
        for a in forbidden {
            let ip: IpAddr = a.parse().unwrap();
            assert!(classify_ip(ip).is_some(), "{a} should be forbidden");
        }
        let allowed = [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.1.1",
            "192.169.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:808:808::1",
        ];
        for a in allowed {
            let ip: IpAddr = a.parse().unwrap();
            assert_eq!(classify_ip(ip), None, "{a} should be allowed");
        }
    }

    #[test]
    fn policy_allow_list_is_exact() {
        let open: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let p = TargetPolicy::strict().with_allowed([open]);
        assert!(p.check(open).is_ok());
        assert!(p.check("[::ffff:127.0.0.1]:8080".parse().unwrap()).is_ok());
        assert!(p.check("127.0.0.1:8081".parse().unwrap()).is_err());
        assert!(p.check("10.0.0.1:8080".parse().unwrap()).is_err());
        assert!(TargetPolicy::allow_private()
            .check("127.0.0.1:1".parse().unwrap())
            .is_ok());
    }

    #[tokio::test]
    async fn urls_are_checked_without_a_browser() {
        let p = TargetPolicy::strict();
        let cases = [
            (
                "http://169.254.169.254/latest/meta-data/",
                "FORBIDDEN_TARGET",
            ),
            ("http://[::1]/", "FORBIDDEN_TARGET"),
            ("http://0.0.0.0/", "FORBIDDEN_TARGET"),
            ("http://127.0.0.1:9/", "FORBIDDEN_TARGET"),
            ("http://10.0.0.1/", "FORBIDDEN_TARGET"),
            ("http://[::ffff:127.0.0.1]/", "FORBIDDEN_TARGET"),
            ("http://0x7f.1/", "FORBIDDEN_TARGET"),
            ("http://2130706433/", "FORBIDDEN_TARGET"),
            ("file:///etc/passwd", "FORBIDDEN_TARGET"),
            ("ftp://example.com/", "FORBIDDEN_TARGET"),
            ("http://localhost/", "FORBIDDEN_TARGET"),
            ("http://no-such-host.invalid/", "DNS_FAILURE"),
        ];
        for (u, code) in cases {
            let url = Url::parse(u).unwrap();
            let err = check_url(&url, &p).await.expect_err(u);
            assert_eq!(err.code(), code, "{u}: {err}");
        }
    }
}
