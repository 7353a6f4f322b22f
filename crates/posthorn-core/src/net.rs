//! Client addresses behind proxies: networks (CIDR), which address a request
//! really came from when trusted reverse proxies or a CDN stand in front of
//! the tracker, and how much of it is kept. And the other way: which
//! addresses delivery may connect to ([`delivery_target`]).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// A network such as `10.0.0.0/8` or `2001:db8::/32`; a bare address is a
/// network of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a network like 10.0.0.0/8 or 2001:db8::/32")]
pub struct BadCidr(pub String);

impl FromStr for Cidr {
    type Err = BadCidr;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadCidr(text.to_owned());
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| bad())?
            }
            Some(_) => return Err(bad()),
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Cidr {
            network: mask(addr, prefix),
            prefix,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.network.is_ipv4() && mask(ip, self.prefix) == self.network
    }
}

/// The address with only its first `prefix` bits kept.
fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

/// IPv4 written as IPv6 (`::ffff:192.0.2.1`, how a dual-stack socket shows
/// IPv4 peers) is IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The address a request came from. The connection's peer, unless it is a
/// trusted proxy: then the forwarding headers are read from the right (the
/// entries our proxies added) and the first address that is not itself a
/// trusted proxy is the client. Entries a client wrote itself sit to the
/// left of that and are never believed. `Forwarded` (RFC 7239) is preferred
/// over `X-Forwarded-For` when both are present.
pub fn client_ip(
    peer: IpAddr,
    forwarded: Option<&str>,
    x_forwarded_for: Option<&str>,
    trusted: &[Cidr],
) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let chain: Vec<IpAddr> = match (forwarded, x_forwarded_for) {
        (Some(f), _) => forwarded_for_entries(f),
        (None, Some(x)) => x.split(',').filter_map(parse_node).collect(),
        (None, None) => Vec::new(),
    };
    let mut client = peer;
    for hop in chain.into_iter().rev() {
        client = canonical(hop);
        if !is_trusted(client) {
            break;
        }
    }
    client
}

/// The `for=` addresses of a `Forwarded` header, in order.
fn forwarded_for_entries(header: &str) -> Vec<IpAddr> {
    header
        .split(',')
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| parse_node(value))
                    .flatten()
            })
        })
        .collect()
}

/// One node of a forwarding header: `192.0.2.1`, `"[2001:db8::1]:4711"`,
/// `192.0.2.1:80`. Obfuscated or `unknown` nodes are not addresses.
fn parse_node(text: &str) -> Option<IpAddr> {
    let text = text.trim().trim_matches('"');
    if let Ok(ip) = text.parse() {
        return Some(ip);
    }
    if let Some(rest) = text.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    let (host, port) = text.rsplit_once(':')?;
    port.bytes().all(|b| b.is_ascii_digit()).then_some(())?;
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// Why an address is not a delivery target: it is not on the public
/// internet, so a mail host that resolves to it is either misconfigured or
/// steering Posthorn at a service of its own network (a local SMTP
/// server, a cloud metadata endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForbiddenTarget {
    /// `0.0.0.0/8`, `::`: "this host".
    Unspecified,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918 (`10/8`, `172.16/12`, `192.168/16`) and IPv6 unique local
    /// addresses (`fc00::/7`).
    Private,
    /// Carrier-grade NAT, `100.64.0.0/10` (RFC 6598).
    SharedAddressSpace,
    /// `169.254.0.0/16`, `fe80::/10`.
    LinkLocal,
    /// A cloud instance metadata service: `169.254.169.254`,
    /// `fd00:ec2::254`.
    Metadata,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// Reserved and documentation ranges that no mail server uses:
    /// `192.0.0.0/24`, `192.0.2.0/24`, `198.18.0.0/15`, `198.51.100.0/24`,
    /// `203.0.113.0/24`, `240.0.0.0/4`, `2001:db8::/32`, and IPv6 forms that
    /// embed IPv4 in ways a delivery never needs (`::/96`, `64:ff9b:1::/48`).
    Reserved,
}

impl ForbiddenTarget {
    /// Words for the event that says why a host was skipped.
    pub fn as_str(self) -> &'static str {
        match self {
            ForbiddenTarget::Unspecified => "an unspecified address",
            ForbiddenTarget::Loopback => "a loopback address",
            ForbiddenTarget::Private => "a private address",
            ForbiddenTarget::SharedAddressSpace => "a carrier-grade NAT address",
            ForbiddenTarget::LinkLocal => "a link-local address",
            ForbiddenTarget::Metadata => "a cloud metadata address",
            ForbiddenTarget::Multicast => "a multicast address",
            ForbiddenTarget::Broadcast => "the broadcast address",
            ForbiddenTarget::Reserved => "a reserved address",
        }
    }
}

impl fmt::Display for ForbiddenTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether delivery may connect to `ip`: public addresses may; the
/// ranges of [`ForbiddenTarget`] may not, unless one of the operator's
/// `allow` networks (`[delivery] allow_networks`) contains the address.
/// IPv4 written as IPv6 (`::ffff:127.0.0.1`) is judged as the IPv4 address
/// it is, so no spelling slips through; the same for the allow list.
pub fn delivery_target(ip: IpAddr, allow: &[Cidr]) -> Result<(), ForbiddenTarget> {
    let ip = canonical(ip);
    match forbidden_range(ip) {
        Some(_) if allow.iter().any(|c| c.contains(ip)) => Ok(()),
        Some(why) => Err(why),
        None => Ok(()),
    }
}

/// The forbidden range `ip` (IPv4 already unwrapped) is in, if any.
fn forbidden_range(ip: IpAddr) -> Option<ForbiddenTarget> {
    use ForbiddenTarget::*;
    let within = |net: &str| net.parse::<Cidr>().is_ok_and(|c| c.contains(ip));
    // Most specific first: the metadata address is link-local too.
    let table: &[(&str, ForbiddenTarget)] = &[
        ("169.254.169.254/32", Metadata),
        ("fd00:ec2::254/128", Metadata),
        ("0.0.0.0/8", Unspecified),
        ("::/128", Unspecified),
        ("127.0.0.0/8", Loopback),
        ("::1/128", Loopback),
        ("10.0.0.0/8", Private),
        ("172.16.0.0/12", Private),
        ("192.168.0.0/16", Private),
        ("fc00::/7", Private),
        ("100.64.0.0/10", SharedAddressSpace),
        ("169.254.0.0/16", LinkLocal),
        ("fe80::/10", LinkLocal),
        ("224.0.0.0/4", Multicast),
        ("ff00::/8", Multicast),
        ("255.255.255.255/32", Broadcast),
        ("192.0.0.0/24", Reserved),
        ("192.0.2.0/24", Reserved),
        ("198.18.0.0/15", Reserved),
        ("198.51.100.0/24", Reserved),
        ("203.0.113.0/24", Reserved),
        ("240.0.0.0/4", Reserved),
        ("2001:db8::/32", Reserved),
        // IPv4-compatible (deprecated) and local-use NAT64 embed an IPv4
        // address we would otherwise judge; no MX needs them.
        ("::/96", Reserved),
        ("64:ff9b:1::/48", Reserved),
    ];
    table
        .iter()
        .find(|(net, _)| within(net))
        .map(|(_, why)| *why)
}

/// How much of a client address the tracker keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IpRetention {
    /// The whole address.
    #[default]
    Full,
    /// IPv4 /24, IPv6 /48: enough for a rough location and network owner,
    /// not enough to single out a household.
    Truncated,
    /// Nothing.
    None,
}

impl IpRetention {
    pub fn apply(self, ip: IpAddr) -> Option<IpAddr> {
        let ip = canonical(ip);
        match self {
            IpRetention::Full => Some(ip),
            IpRetention::Truncated => Some(mask(ip, if ip.is_ipv4() { 24 } else { 48 })),
            IpRetention::None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    #[test]
    fn networks_parse_normalise_and_contain() {
        let net: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(net.to_string(), "10.0.0.0/8");
        assert!(net.contains(ip("10.200.0.1")));
        assert!(net.contains(ip("::ffff:10.0.0.1")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(
            !net.contains(ip("::a00:1")),
            "IPv6 is never in an IPv4 network"
        );
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/x",
            "example.com/8",
            "10/8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn forwarding_headers_are_believed_only_from_trusted_proxies() {
        let trusted = cidrs(&["127.0.0.0/8", "10.0.0.0/8"]);
        let xff = Some("198.51.100.1, 203.0.113.5");
        // Not from a proxy: the header is the client's own claim.
        assert_eq!(
            client_ip(ip("192.0.2.9"), None, xff, &trusted),
            ip("192.0.2.9")
        );
        // From a proxy: the rightmost address that is not a proxy.
        assert_eq!(
            client_ip(ip("127.0.0.1"), None, xff, &trusted),
            ip("203.0.113.5")
        );
        assert_eq!(
            client_ip(
                ip("127.0.0.1"),
                None,
                Some("203.0.113.5, 10.1.1.1"),
                &trusted
            ),
            ip("203.0.113.5"),
            "a chain of our own proxies is walked through"
        );
        // A spoofed entry on the left is never reached.
        assert_eq!(
            client_ip(ip("10.0.0.2"), None, Some("6.6.6.6, 203.0.113.5"), &trusted),
            ip("203.0.113.5")
        );
        // Forwarded wins over X-Forwarded-For, with ports and brackets.
        let forwarded = Some("for=198.51.100.7;proto=https, for=\"[2001:db8::9]:4711\"");
        assert_eq!(
            client_ip(ip("127.0.0.1"), forwarded, xff, &trusted),
            ip("2001:db8::9")
        );
        assert_eq!(
            client_ip(ip("127.0.0.1"), Some("for=192.0.2.60:8080"), None, &trusted),
            ip("192.0.2.60")
        );
        // Nothing usable: the proxy itself.
        assert_eq!(
            client_ip(ip("127.0.0.1"), Some("for=unknown"), None, &trusted),
            ip("127.0.0.1")
        );
        assert_eq!(client_ip(ip("127.0.0.1"), None, None, &[]), ip("127.0.0.1"));
    }

    #[test]
    fn delivery_targets_are_public_addresses_unless_a_network_is_allowed() {
        use ForbiddenTarget::*;
        let table: &[(&str, Result<(), ForbiddenTarget>)] = &[
            // Public: delivered to.
            ("8.8.8.8", Ok(())),
            ("17.1.2.3", Ok(())),
            ("100.63.255.255", Ok(())),
            ("100.128.0.0", Ok(())),
            ("172.15.255.255", Ok(())),
            ("172.32.0.0", Ok(())),
            ("192.169.0.1", Ok(())),
            ("2a00:1450:4001::1a", Ok(())),
            ("::ffff:8.8.8.8", Ok(())),
            // Not public.
            ("0.0.0.0", Err(Unspecified)),
            ("0.1.2.3", Err(Unspecified)),
            ("::", Err(Unspecified)),
            ("127.0.0.1", Err(Loopback)),
            ("127.255.255.254", Err(Loopback)),
            ("::1", Err(Loopback)),
            ("10.0.0.1", Err(Private)),
            ("172.16.0.1", Err(Private)),
            ("172.31.255.255", Err(Private)),
            ("192.168.1.1", Err(Private)),
            ("fc00::1", Err(Private)),
            ("fd12:3456::1", Err(Private)),
            ("100.64.0.1", Err(SharedAddressSpace)),
            ("100.127.255.255", Err(SharedAddressSpace)),
            ("169.254.0.1", Err(LinkLocal)),
            ("fe80::1", Err(LinkLocal)),
            ("febf::1", Err(LinkLocal)),
            ("169.254.169.254", Err(Metadata)),
            ("fd00:ec2::254", Err(Metadata)),
            ("224.0.0.1", Err(Multicast)),
            ("239.255.255.250", Err(Multicast)),
            ("ff02::1", Err(Multicast)),
            ("255.255.255.255", Err(Broadcast)),
            ("192.0.2.10", Err(Reserved)),
            ("198.18.0.1", Err(Reserved)),
            ("203.0.113.9", Err(Reserved)),
            ("240.0.0.1", Err(Reserved)),
            ("2001:db8::25", Err(Reserved)),
            // IPv4 spelled as IPv6 is the IPv4 address.
            ("::ffff:127.0.0.1", Err(Loopback)),
            ("::ffff:10.1.2.3", Err(Private)),
            ("::ffff:169.254.169.254", Err(Metadata)),
            ("::127.0.0.1", Err(Reserved)),
            ("64:ff9b:1::a00:1", Err(Reserved)),
        ];
        for (text, want) in table {
            assert_eq!(delivery_target(ip(text), &[]), *want, "{text}");
        }
        // The operator's networks are allowed, and only those.
        let allow = cidrs(&["10.0.0.0/8", "127.0.0.1", "fd00::/8"]);
        for allowed in ["10.9.8.7", "127.0.0.1", "::ffff:127.0.0.1", "fd00:ec2::254"] {
            assert_eq!(delivery_target(ip(allowed), &allow), Ok(()), "{allowed}");
        }
        assert_eq!(delivery_target(ip("127.0.0.2"), &allow), Err(Loopback));
        assert_eq!(delivery_target(ip("192.168.0.1"), &allow), Err(Private));
        assert_eq!(
            delivery_target(ip("169.254.169.254"), &allow),
            Err(Metadata)
        );
        // An allowed public network changes nothing.
        assert_eq!(
            delivery_target(ip("8.8.8.8"), &cidrs(&["8.0.0.0/8"])),
            Ok(())
        );
    }

    #[test]
    fn retention_keeps_as_much_as_configured() {
        assert_eq!(
            IpRetention::Truncated.apply(ip("203.0.113.77")),
            Some(ip("203.0.113.0"))
        );
        assert_eq!(
            IpRetention::Truncated.apply(ip("2001:db8:1:2:3::1")),
            Some(ip("2001:db8:1::"))
        );
        assert_eq!(
            IpRetention::Full.apply(ip("::ffff:192.0.2.1")),
            Some(ip("192.0.2.1"))
        );
        assert_eq!(IpRetention::None.apply(ip("192.0.2.1")), None);
    }
}
