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
///
/// The answer comes from [`V4_RULES`] and [`V6_RULES`], the IANA IPv4 and IPv6
/// Special-Purpose Address Registries written out as data (plus multicast, the deprecated
/// site-local and IPv4-compatible forms, and every IPv6 range outside global unicast
/// `2000::/3`). An IPv6 address that carries an IPv4 address (IPv4-mapped, NAT64
/// `64:ff9b::/96`, 6to4 `2002::/16`) is judged by the IPv4 address it carries.
pub fn classify_ip(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// What a registry entry means for a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Never reachable: the reason, in general terms.
    Refuse(&'static str),
    /// Globally reachable: allowed (listed so the table is the whole registry).
    Allow,
    /// Carries an IPv4 address in the given bits (32 bits starting at bit offset): judged
    /// by that address.
    Embedded { offset: u32, form: &'static str },
}

use Verdict::{Allow, Embedded, Refuse};

/// One registry entry: a prefix, its length, what it means, and its registry name.
#[derive(Debug, Clone, Copy)]
struct Rule<A> {
    net: A,
    len: u32,
    verdict: Verdict,
    /// The entry's name in the registry (and its RFC), for readers and test output.
    #[allow(dead_code)]
    name: &'static str,
}

const fn v4(
    a: u8,
    b: u8,
    c: u8,
    d: u8,
    len: u32,
    verdict: Verdict,
    name: &'static str,
) -> Rule<u32> {
    Rule {
        net: u32::from_be_bytes([a, b, c, d]),
        len,
        verdict,
        name,
    }
}

const fn v6(net: u128, len: u32, verdict: Verdict, name: &'static str) -> Rule<u128> {
    Rule {
        net,
        len,
        verdict,
        name,
    }
}

const PRIVATE: &str = "a private address";
const LOOPBACK: &str = "a loopback address";
const LINK_LOCAL: &str = "a link-local address (cloud metadata services live there)";
const RESERVED: &str = "a reserved or special-purpose address";
const DOCUMENTATION: &str = "a documentation address";
const MULTICAST: &str = "a multicast or broadcast address";
const UNSPECIFIED: &str = "the unspecified address";

/// The IANA IPv4 Special-Purpose Address Registry (and multicast), most specific first:
/// the first entry that contains an address decides.
const V4_RULES: &[Rule<u32>] = &[
    v4(
        0,
        0,
        0,
        0,
        32,
        Refuse(UNSPECIFIED),
        "\"This host on this network\" (RFC 1122)",
    ),
    v4(
        0,
        0,
        0,
        0,
        8,
        Refuse(RESERVED),
        "\"This network\" (RFC 791)",
    ),
    v4(10, 0, 0, 0, 8, Refuse(PRIVATE), "Private-Use (RFC 1918)"),
    v4(
        100,
        64,
        0,
        0,
        10,
        Refuse(PRIVATE),
        "Shared Address Space, carrier-grade NAT (RFC 6598)",
    ),
    v4(127, 0, 0, 0, 8, Refuse(LOOPBACK), "Loopback (RFC 1122)"),
    v4(
        169,
        254,
        0,
        0,
        16,
        Refuse(LINK_LOCAL),
        "Link Local (RFC 3927)",
    ),
    v4(172, 16, 0, 0, 12, Refuse(PRIVATE), "Private-Use (RFC 1918)"),
    // 192.0.0.0/24 holds IPv4 Service Continuity 192.0.0.0/29, the dummy address
    // 192.0.0.8/32, Port Control Protocol anycast 192.0.0.9/32 and TURN anycast
    // 192.0.0.10/32 (those two are globally reachable, but no page lives there),
    // NAT64/DNS64 discovery 192.0.0.170/32 and .171/32: all refused with the block.
    v4(
        192,
        0,
        0,
        0,
        24,
        Refuse(RESERVED),
        "IETF Protocol Assignments (RFC 6890)",
    ),
    v4(
        192,
        0,
        2,
        0,
        24,
        Refuse(DOCUMENTATION),
        "Documentation TEST-NET-1 (RFC 5737)",
    ),
    v4(
        192,
        31,
        196,
        0,
        24,
        Allow,
        "AS112-v4 (RFC 7535), globally reachable",
    ),
    v4(
        192,
        52,
        193,
        0,
        24,
        Allow,
        "AMT (RFC 7450), globally reachable",
    ),
    v4(
        192,
        88,
        99,
        0,
        24,
        Refuse(RESERVED),
        "Deprecated 6to4 Relay Anycast (RFC 7526)",
    ),
    v4(
        192,
        168,
        0,
        0,
        16,
        Refuse(PRIVATE),
        "Private-Use (RFC 1918)",
    ),
    v4(
        192,
        175,
        48,
        0,
        24,
        Allow,
        "Direct Delegation AS112 Service (RFC 7534), globally reachable",
    ),
    v4(
        198,
        18,
        0,
        0,
        15,
        Refuse(RESERVED),
        "Benchmarking (RFC 2544)",
    ),
    v4(
        198,
        51,
        100,
        0,
        24,
        Refuse(DOCUMENTATION),
        "Documentation TEST-NET-2 (RFC 5737)",
    ),
    v4(
        203,
        0,
        113,
        0,
        24,
        Refuse(DOCUMENTATION),
        "Documentation TEST-NET-3 (RFC 5737)",
    ),
    v4(224, 0, 0, 0, 4, Refuse(MULTICAST), "Multicast (RFC 5771)"),
    v4(
        255,
        255,
        255,
        255,
        32,
        Refuse(MULTICAST),
        "Limited Broadcast (RFC 919)",
    ),
    v4(240, 0, 0, 0, 4, Refuse(RESERVED), "Reserved (RFC 1112)"),
];

/// The IANA IPv6 Special-Purpose Address Registry (and multicast, site-local and the
/// deprecated IPv4-compatible form), most specific first. An address that no entry
/// contains is refused unless it is global unicast (`2000::/3`).
const V6_RULES: &[Rule<u128>] = &[
    v6(
        0,
        128,
        Refuse(UNSPECIFIED),
        "Unspecified Address (RFC 4291)",
    ),
    v6(1, 128, Refuse(LOOPBACK), "Loopback Address (RFC 4291)"),
    v6(
        0xffff << 32,
        96,
        Embedded {
            offset: 96,
            form: "IPv4-mapped",
        },
        "IPv4-mapped Address (RFC 4291)",
    ),
    // ::ffff:0:a.b.c.d, the IPv4-translated form of stateless IP/ICMP translation.
    v6(
        0xffff << 48,
        96,
        Refuse(RESERVED),
        "IPv4-translated Address (RFC 2765)",
    ),
    v6(
        0,
        96,
        Refuse(RESERVED),
        "IPv4-compatible Address, deprecated (RFC 4291)",
    ),
    v6(
        0x0064_ff9b << 96,
        96,
        Embedded {
            offset: 96,
            form: "NAT64",
        },
        "IPv4-IPv6 Translation, well-known prefix (RFC 6052)",
    ),
    v6(
        0x0064_ff9b_0001_u128 << 80,
        48,
        Refuse(RESERVED),
        "IPv4-IPv6 Translation, local use (RFC 8215)",
    ),
    v6(
        0x0100 << 112,
        64,
        Refuse(RESERVED),
        "Discard-Only Address Block (RFC 6666)",
    ),
    v6(
        0x0100_0000_0000_0001_u128 << 64,
        64,
        Refuse(RESERVED),
        "Dummy IPv6 Prefix (RFC 9780)",
    ),
    // 2001::/23 holds Teredo 2001::/32, PCP and TURN anycast 2001:1::1/128 and ::2/128,
    // DNS-SD SRP 2001:1::3/128, Benchmarking 2001:2::/48, AMT 2001:3::/32, AS112-v6
    // 2001:4:112::/48, ORCHID 2001:10::/28 (deprecated), ORCHIDv2 2001:20::/28 and Drone
    // Remote ID 2001:30::/28: tunnels, overlay identifiers and anycast services, no pages.
    v6(0x2001 << 112, 32, Refuse(RESERVED), "Teredo (RFC 4380)"),
    v6(
        0x2001_0002 << 96,
        48,
        Refuse(RESERVED),
        "Benchmarking (RFC 5180)",
    ),
    v6(
        0x2001_0010 << 96,
        28,
        Refuse(RESERVED),
        "ORCHID, deprecated (RFC 4843)",
    ),
    v6(
        0x2001_0020 << 96,
        28,
        Refuse(RESERVED),
        "ORCHIDv2 (RFC 7343)",
    ),
    v6(
        0x2001 << 112,
        23,
        Refuse(RESERVED),
        "IETF Protocol Assignments (RFC 2928)",
    ),
    v6(
        0x2001_0db8 << 96,
        32,
        Refuse(DOCUMENTATION),
        "Documentation (RFC 3849)",
    ),
    v6(
        0x2002 << 112,
        16,
        Embedded {
            offset: 16,
            form: "6to4",
        },
        "6to4 (RFC 3056)",
    ),
    v6(
        0x2620_004f_8000_u128 << 80,
        48,
        Allow,
        "Direct Delegation AS112 Service (RFC 7534), globally reachable",
    ),
    v6(
        0x3fff << 112,
        20,
        Refuse(DOCUMENTATION),
        "Documentation (RFC 9637)",
    ),
    v6(
        0x5f00 << 112,
        16,
        Refuse(RESERVED),
        "Segment Routing (SRv6) SIDs (RFC 9602)",
    ),
    v6(0xfc00 << 112, 7, Refuse(PRIVATE), "Unique-Local (RFC 4193)"),
    v6(
        0xfe80 << 112,
        10,
        Refuse(LINK_LOCAL),
        "Link-Local Unicast (RFC 4291)",
    ),
    v6(
        0xfec0 << 112,
        10,
        Refuse(PRIVATE),
        "Site-Local, deprecated (RFC 3879)",
    ),
    v6(0xff00 << 112, 8, Refuse(MULTICAST), "Multicast (RFC 4291)"),
    v6(0x2000 << 112, 3, Allow, "Global Unicast (RFC 4291)"),
];

fn contains_v4(rule: &Rule<u32>, bits: u32) -> bool {
    let mask = if rule.len == 0 {
        0
    } else {
        u32::MAX << (32 - rule.len)
    };
    bits & mask == rule.net & mask
}

fn contains_v6(rule: &Rule<u128>, bits: u128) -> bool {
    let mask = if rule.len == 0 {
        0
    } else {
        u128::MAX << (128 - rule.len)
    };
    bits & mask == rule.net & mask
}

fn classify_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let bits = u32::from(ip);
    match V4_RULES.iter().find(|r| contains_v4(r, bits))?.verdict {
        Refuse(reason) => Some(reason),
        Allow | Embedded { .. } => None,
    }
}

fn classify_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let bits = u128::from(ip);
    let Some(rule) = V6_RULES.iter().find(|r| contains_v6(r, bits)) else {
        // Outside every entry and outside global unicast: reserved by the IETF.
        return Some(RESERVED);
    };
    match rule.verdict {
        Refuse(reason) => Some(reason),
        Allow => None,
        Embedded { offset, form } => {
            let v4 = Ipv4Addr::from((bits >> (96 - offset)) as u32);
            classify_v4(v4).map(|_| match form {
                "IPv4-mapped" => "the IPv4-mapped form of a forbidden IPv4 address",
                "NAT64" => "the NAT64 form of a forbidden IPv4 address",
                _ => "the 6to4 form of a forbidden IPv4 address",
            })
        }
    }
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
            // The operator may see the address; the client only learns that a name it gave
            // is refused, never what our resolver answered (that maps the inside network).
            tracing::debug!(%host, address = %a.ip(), reason, "target refused by the SSRF policy");
            return Err(ResolveFailure::Forbidden(match host {
                Host::Domain(_) => format!(
                    "{host} resolves to a private or reserved address, which captures may not reach"
                ),
                Host::Ipv4(_) | Host::Ipv6(_) => {
                    format!("{} is {reason}, which captures may not reach", a.ip())
                }
            }));
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

    /// Every entry of the IANA IPv4 and IPv6 Special-Purpose Address Registries (and
    /// multicast, broadcast, site-local), with an address inside it and, where the next
    /// address over is public, an address just outside it. `true` = refused.
    #[test]
    fn special_purpose_registries() {
        // One registry entry a line: its name, an address inside it, and the address just
        // outside it where that one is public (`-` where it is not). `#` starts a comment.
        let table = "
            # IPv4 registry.
            0.0.0.0/8 this network | 0.255.255.255 | 1.0.0.0
            0.0.0.0/32 this host | 0.0.0.0 | -
            10.0.0.0/8 private | 10.255.255.255 | 11.0.0.0
            10.0.0.0/8 private (below) | 10.0.0.0 | 9.255.255.255
            100.64.0.0/10 shared | 100.127.255.255 | 100.128.0.0
            100.64.0.0/10 shared (below) | 100.64.0.0 | 100.63.255.255
            127.0.0.0/8 loopback | 127.255.255.255 | 128.0.0.0
            127.0.0.0/8 loopback (below) | 127.0.0.0 | 126.255.255.255
            169.254.0.0/16 link local | 169.254.169.254 | 169.255.0.0
            169.254.0.0/16 link local (below) | 169.254.0.0 | 169.253.255.255
            172.16.0.0/12 private | 172.31.255.255 | 172.32.0.0
            172.16.0.0/12 private (below) | 172.16.0.0 | 172.15.255.255
            192.0.0.0/24 IETF protocol assignments | 192.0.0.255 | 192.0.1.0
            192.0.0.0/29 IPv4 service continuity | 192.0.0.7 | 191.255.255.255
            192.0.0.8/32 IPv4 dummy | 192.0.0.8 | -
            192.0.0.9/32 PCP anycast | 192.0.0.9 | -
            192.0.0.10/32 TURN anycast | 192.0.0.10 | -
            192.0.0.170/32 NAT64/DNS64 discovery | 192.0.0.171 | -
            192.0.2.0/24 TEST-NET-1 | 192.0.2.255 | 192.0.3.0
            192.88.99.0/24 6to4 relay anycast | 192.88.99.1 | 192.88.100.0
            192.88.99.0/24 6to4 relay anycast (below) | 192.88.99.0 | 192.88.98.255
            192.168.0.0/16 private | 192.168.255.255 | 192.169.0.0
            192.168.0.0/16 private (below) | 192.168.0.0 | 192.167.255.255
            198.18.0.0/15 benchmarking | 198.19.255.255 | 198.20.0.0
            198.18.0.0/15 benchmarking (below) | 198.18.0.0 | 198.17.255.255
            198.51.100.0/24 TEST-NET-2 | 198.51.100.255 | 198.51.101.0
            203.0.113.0/24 TEST-NET-3 | 203.0.113.0 | 203.0.112.255
            224.0.0.0/4 multicast | 224.0.0.0 | 223.255.255.255
            224.0.0.0/4 multicast (top) | 239.255.255.255 | -
            240.0.0.0/4 reserved | 254.255.255.255 | -
            255.255.255.255/32 limited broadcast | 255.255.255.255 | -
            # IPv6 registry.
            ::/128 unspecified | :: | -
            ::1/128 loopback | ::1 | -
            ::/96 IPv4-compatible (deprecated) | ::8.8.8.8 | -
            ::ffff:0:0/96 IPv4-mapped | ::ffff:127.0.0.1 | ::ffff:8.8.8.8
            ::ffff:0:0/96 IPv4-mapped metadata | ::ffff:169.254.169.254 | -
            ::ffff:0:0:0/96 IPv4-translated | ::ffff:0:a9fe:a9fe | -
            ::ffff:0:0:0/96 IPv4-translated (public inside) | ::ffff:0:808:808 | -
            64:ff9b::/96 NAT64 | 64:ff9b::7f00:1 | 64:ff9b::808:808
            64:ff9b::/96 NAT64 metadata | 64:ff9b::a9fe:a9fe | -
            64:ff9b::/96 NAT64 (just past the /96) | 64:ff9b::1:808:808 | -
            64:ff9b:1::/48 local-use NAT64 | 64:ff9b:1::808:808 | -
            64:ff9b:1::/48 local-use NAT64 (top) | 64:ff9b:1:ffff:ffff:ffff:ffff:ffff | -
            100::/64 discard-only | 100::1 | -
            100:0:0:1::/64 dummy prefix | 100:0:0:1::1 | -
            2001::/23 IETF protocol assignments | 2001:1ff::1 | 2001:200::1
            2001::/32 Teredo | 2001::1 | -
            2001::/32 Teredo (top) | 2001:0:ffff:ffff:ffff:ffff:ffff:ffff | -
            2001:1::1/128 PCP anycast | 2001:1::1 | -
            2001:1::2/128 TURN anycast | 2001:1::2 | -
            2001:1::3/128 DNS-SD SRP anycast | 2001:1::3 | -
            2001:2::/48 benchmarking | 2001:2::1 | -
            2001:3::/32 AMT | 2001:3::1 | -
            2001:4:112::/48 AS112-v6 | 2001:4:112::1 | -
            2001:10::/28 ORCHID | 2001:10::1 | -
            2001:20::/28 ORCHIDv2 | 2001:2f:ffff::1 | -
            2001:30::/28 drone remote ID | 2001:30::1 | -
            2001:db8::/32 documentation | 2001:db8::1 | 2001:db9::1
            2001:db8::/32 documentation (below) | 2001:db8:: | 2001:db7:ffff::1
            2002::/16 6to4 loopback | 2002:7f00:1::1 | 2002:808:808::1
            2002::/16 6to4 private | 2002:a00:1:: | 2003::1
            2002::/16 6to4 metadata | 2002:a9fe:a9fe::1 | -
            3fff::/20 documentation | 3fff:fff:ffff::1 | 3fff:1000::1
            5f00::/16 SRv6 SIDs | 5f00::1 | -
            fc00::/7 unique-local | fc00::1 | -
            fc00::/7 unique-local (top) | fdff:ffff::1 | -
            fe80::/10 link-local | fe80::1 | -
            fe80::/10 link-local (top) | febf:ffff::1 | -
            fec0::/10 site-local (deprecated) | fec0::1 | -
            ff00::/8 multicast | ff02::1 | -
            outside global unicast 2000::/3 (below) | 1fff:ffff::1 | 2000::1
            outside global unicast 2000::/3 (above) | 4000::1 | 3fff:ffff::1
        ";
        let table: Vec<[&str; 3]> = table
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                <[&str; 3]>::try_from(l.split(" | ").collect::<Vec<_>>())
                    .unwrap_or_else(|_| panic!("entry | inside | outside: {l}"))
            })
            .collect();
        assert_eq!(table.len(), 72);
        for [entry, inside, outside] in table {
            let ip: IpAddr = inside.parse().unwrap();
            assert!(
                classify_ip(ip).is_some(),
                "{entry}: {inside} should be refused"
            );
            if let Some(out) = Some(outside).filter(|o| *o != "-") {
                let ip: IpAddr = out.parse().unwrap();
                assert_eq!(classify_ip(ip), None, "{entry}: {out} should be allowed");
            }
        }
        // Registry entries that are globally reachable, and ordinary public addresses.
        for public in [
            "192.31.196.1",
            "192.52.193.1",
            "192.175.48.1",
            "2620:4f:8000::1",
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",
        ] {
            let ip: IpAddr = public.parse().unwrap();
            assert_eq!(classify_ip(ip), None, "{public} should be allowed");
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

    /// A refusal says that the target is not allowed and why in general terms, never what
    /// a name resolved to (before the fix: "localhost resolves to 127.0.0.1 (...)").
    #[tokio::test]
    async fn refusals_do_not_disclose_dns_answers() {
        let p = TargetPolicy::strict();
        let url = Url::parse("http://localhost:8080/").unwrap();
        let err = check_url(&url, &p).await.unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.code(), "FORBIDDEN_TARGET");
        assert!(
            msg.contains("localhost resolves to a private or reserved address"),
            "{msg}"
        );
        for leak in ["127.0.0.1", "::1", "loopback"] {
            assert!(!msg.contains(leak), "{msg:?} discloses {leak:?}");
        }
        let host = Host::Domain("localhost".to_owned());
        let Err(ResolveFailure::Forbidden(reason)) = resolve_checked(&host, 80, &p).await else {
            panic!("localhost should be refused");
        };
        assert!(
            !reason.contains("127.0.0.1") && !reason.contains("::1"),
            "{reason}"
        );
        // An address the client wrote itself may be named, with its kind.
        let url = Url::parse("http://169.254.169.254/").unwrap();
        let msg = check_url(&url, &p).await.unwrap_err().to_string();
        assert!(
            msg.contains("169.254.169.254 is a link-local address"),
            "{msg}"
        );
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
