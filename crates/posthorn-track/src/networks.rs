//! The networks whose hits are machines': Apple's Mail Privacy Protection
//! proxy, link-scanning mail gateways, cloud and hosting ranges. Data, not
//! code: a text file (`data/machine-networks.txt`, compiled in as the
//! default) that names each network's source and the date it was taken, so
//! an operator can refresh it without a rebuild (`[tracking.machine]
//! networks_file`).
//!
//! Format, one item a line, `#` starting a comment:
//!
//! ```text
//! source ID URL TAKEN [note ...]
//! CIDR CATEGORY ID
//! ```
//!
//! A network names a source declared above it; TAKEN is `YYYY-MM-DD`.
//! Every problem is reported with its line, all at once.
//!
//! Looking an address up is on the tracker's hot path: per category, the
//! networks are merged into sorted, disjoint address ranges and found by
//! binary search, with no allocation.

use std::fmt;
use std::net::IpAddr;

/// What a network says about the hits that come from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetCategory {
    /// Apple's network: Mail Privacy Protection fetches images from here.
    AppleMpp,
    /// A mail security gateway that follows links (Microsoft Defender for
    /// Office 365, Proofpoint, Mimecast, Barracuda, ...).
    LinkScanner,
    /// Cloud and hosting: servers, not readers.
    Hosting,
}

impl NetCategory {
    const ALL: [NetCategory; 3] = [Self::LinkScanner, Self::AppleMpp, Self::Hosting];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AppleMpp => "apple_mpp",
            Self::LinkScanner => "link_scanner",
            Self::Hosting => "hosting",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    fn index(self) -> usize {
        match self {
            Self::LinkScanner => 0,
            Self::AppleMpp => 1,
            Self::Hosting => 2,
        }
    }
}

/// Where a set of networks comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub id: String,
    pub url: String,
    /// `YYYY-MM-DD`.
    pub taken: String,
    pub note: String,
    /// How many networks name this source.
    pub networks: usize,
}

/// A problem in a networks file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworksError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for NetworksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Inclusive address ranges, sorted and disjoint.
type Ranges<T> = Vec<(T, T)>;

/// The machine networks, ready to look addresses up in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Networks {
    v4: [Ranges<u32>; 3],
    v6: [Ranges<u128>; 3],
    sources: Vec<Source>,
}

/// The compiled-in list.
pub const BUILTIN: &str = include_str!("../data/machine-networks.txt");

impl Networks {
    /// The compiled-in list. It is checked by a test, so this cannot fail
    /// in a released build; if it ever did, no network would be known and
    /// the other rules would still judge.
    pub fn builtin() -> Networks {
        Networks::parse(BUILTIN).unwrap_or_default()
    }

    /// Parses a networks file; every error, each with its line.
    pub fn parse(text: &str) -> Result<Networks, Vec<NetworksError>> {
        let mut errors = Vec::new();
        let mut sources: Vec<Source> = Vec::new();
        let mut v4: [Ranges<u32>; 3] = Default::default();
        let mut v6: [Ranges<u128>; 3] = Default::default();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let mut err = |message: String| errors.push(NetworksError { line, message });
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let words: Vec<&str> = content.split_whitespace().collect();
            if words[0] == "source" {
                let [_, id, url, taken, note @ ..] = words.as_slice() else {
                    err("a source needs an id, a URL and the date it was taken: \
                         `source ID URL YYYY-MM-DD [note]`"
                        .into());
                    continue;
                };
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    err(format!("source {id}: `{url}` is not an http(s) URL"));
                } else if !is_date(taken) {
                    err(format!("source {id}: `{taken}` is not a date (YYYY-MM-DD)"));
                } else if sources.iter().any(|s| s.id == *id) {
                    err(format!("source {id} is declared twice"));
                } else {
                    sources.push(Source {
                        id: (*id).into(),
                        url: (*url).into(),
                        taken: (*taken).into(),
                        note: note.join(" "),
                        networks: 0,
                    });
                }
                continue;
            }
            let [cidr, category, source] = words.as_slice() else {
                err("expected `CIDR CATEGORY SOURCE` or `source ID URL YYYY-MM-DD`".into());
                continue;
            };
            let Some(category) = NetCategory::parse(category) else {
                err(format!(
                    "unknown category `{category}` (apple_mpp, link_scanner or hosting)"
                ));
                continue;
            };
            let Some(source) = sources.iter_mut().find(|s| s.id == *source) else {
                err(format!(
                    "source `{source}` is not declared above (`source {source} URL YYYY-MM-DD`)"
                ));
                continue;
            };
            match parse_cidr(cidr) {
                Ok(Range::V4(lo, hi)) => v4[category.index()].push((lo, hi)),
                Ok(Range::V6(lo, hi)) => v6[category.index()].push((lo, hi)),
                Err(message) => {
                    err(message);
                    continue;
                }
            }
            source.networks += 1;
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        v4.iter_mut().for_each(merge);
        v6.iter_mut().for_each(merge);
        Ok(Networks { v4, v6, sources })
    }

    /// The category of the network `ip` is in, if any. When categories
    /// overlap, a link scanner wins over Apple, Apple over hosting.
    pub fn category(&self, ip: IpAddr) -> Option<NetCategory> {
        // An IPv4 client seen through an IPv6 socket is still that client.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        NetCategory::ALL.into_iter().find(|c| match ip {
            IpAddr::V4(a) => contains(&self.v4[c.index()], u32::from(a)),
            IpAddr::V6(a) => contains(&self.v6[c.index()], u128::from(a)),
        })
    }

    /// The sources, in file order, with their network counts.
    pub fn sources(&self) -> &[Source] {
        &self.sources
    }
}

enum Range {
    V4(u32, u32),
    V6(u128, u128),
}

fn parse_cidr(cidr: &str) -> Result<Range, String> {
    let bad = || format!("`{cidr}` is not a network (ADDRESS/PREFIX)");
    let (addr, len) = cidr.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let len: u32 = len.parse().map_err(|_| bad())?;
    match addr {
        IpAddr::V4(a) => {
            if len > 32 {
                return Err(format!("`{cidr}`: an IPv4 prefix is at most 32 bits"));
            }
            let host = u32::MAX.checked_shr(len).unwrap_or(0);
            let lo = u32::from(a);
            if lo & host != 0 {
                return Err(format!("`{cidr}` has host bits set"));
            }
            Ok(Range::V4(lo, lo | host))
        }
        IpAddr::V6(a) => {
            if len > 128 {
                return Err(format!("`{cidr}`: an IPv6 prefix is at most 128 bits"));
            }
            let host = u128::MAX.checked_shr(len).unwrap_or(0);
            let lo = u128::from(a);
            if lo & host != 0 {
                return Err(format!("`{cidr}` has host bits set"));
            }
            Ok(Range::V6(lo, lo | host))
        }
    }
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// Sorts and joins overlapping or adjacent ranges, so that a lookup needs
/// only the last range starting at or below the address.
fn merge<T: Copy + Ord + num_like::Succ>(ranges: &mut Ranges<T>) {
    ranges.sort_unstable();
    let mut out: Ranges<T> = Vec::with_capacity(ranges.len());
    for &(lo, hi) in ranges.iter() {
        match out.last_mut() {
            Some(last) if last.1.succ().is_none_or(|next| lo <= next) => {
                last.1 = last.1.max(hi);
            }
            _ => out.push((lo, hi)),
        }
    }
    *ranges = out;
}

fn contains<T: Copy + Ord>(ranges: &[(T, T)], a: T) -> bool {
    let i = ranges.partition_point(|&(lo, _)| lo <= a);
    i > 0 && a <= ranges[i - 1].1
}

mod num_like {
    /// The next value, `None` at the top.
    pub trait Succ: Sized {
        fn succ(self) -> Option<Self>;
    }
    impl Succ for u32 {
        fn succ(self) -> Option<Self> {
            self.checked_add(1)
        }
    }
    impl Succ for u128 {
        fn succ(self) -> Option<Self> {
            self.checked_add(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_builtin_list_parses_and_names_its_sources() {
        let n = Networks::parse(BUILTIN).unwrap();
        assert!(n.sources().iter().all(|s| s.networks > 0), "{n:?}");
        let ids: Vec<_> = n.sources().iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["apple", "apple-v6", "microsoft-eop", "proofpoint"]);
        assert_eq!(n.category(ip("17.58.101.10")), Some(NetCategory::AppleMpp));
        assert_eq!(
            n.category(ip("2620:149:a:1::5")),
            Some(NetCategory::AppleMpp)
        );
        assert_eq!(
            n.category(ip("40.107.22.51")),
            Some(NetCategory::LinkScanner)
        );
        assert_eq!(
            n.category(ip("67.231.145.10")),
            Some(NetCategory::LinkScanner)
        );
        assert_eq!(
            n.category(ip("::ffff:104.47.1.2")),
            Some(NetCategory::LinkScanner),
            "IPv4-mapped"
        );
        for person in ["203.0.113.7", "16.255.255.255", "18.0.0.0", "2001:db8::1"] {
            assert_eq!(n.category(ip(person)), None, "{person}");
        }
    }

    #[test]
    fn lookups_find_exactly_the_ranges() {
        let n = Networks::parse(
            "source t https://example.com/ 2026-01-01\n\
             10.0.0.0/24 hosting t\n10.0.1.0/24 hosting t # adjacent: merged\n\
             10.0.0.128/25 hosting t # inside: merged\n\
             192.0.2.7/32 link_scanner t\n192.0.2.0/24 apple_mpp t\n\
             255.255.255.0/24 hosting t # the top: no overflow\n\
             2001:db8::/32 hosting t\n",
        )
        .unwrap();
        assert_eq!(
            n.v4[NetCategory::Hosting.index()],
            [(0x0a00_0000, 0x0a00_01ff), (0xffff_ff00, 0xffff_ffff)]
        );
        assert_eq!(n.category(ip("10.0.1.255")), Some(NetCategory::Hosting));
        assert_eq!(n.category(ip("10.0.2.0")), None);
        assert_eq!(n.category(ip("9.255.255.255")), None);
        assert_eq!(
            n.category(ip("192.0.2.7")),
            Some(NetCategory::LinkScanner),
            "scanner first"
        );
        assert_eq!(n.category(ip("192.0.2.8")), Some(NetCategory::AppleMpp));
        assert_eq!(
            n.category(ip("255.255.255.255")),
            Some(NetCategory::Hosting)
        );
        assert_eq!(
            n.category(ip("2001:db8:ffff::1")),
            Some(NetCategory::Hosting)
        );
        assert_eq!(n.category(ip("2001:db9::1")), None);
    }

    #[test]
    fn every_error_is_reported_with_its_line() {
        let text = "# header\n\
            source ok https://example.com/list 2026-12-07 a note\n\
            10.0.0.0/8 hosting ok\n\
            10.0.0.1/8 hosting ok\n\
            10.0.0.0/33 hosting ok\n\
            nonsense\n\
            192.0.2.0/24 cloud ok\n\
            192.0.2.0/24 hosting nobody\n\
            source bad ftp://x 2026-12-07\n\
            source late https://example.com 07.12.2026\n\
            source ok https://example.com 2026-12-07\n\
            source short https://example.com\n";
        let errors = Networks::parse(text).unwrap_err();
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [4, 5, 6, 7, 8, 9, 10, 11, 12], "{errors:?}");
        assert!(errors[0].message.contains("host bits"), "{errors:?}");
        assert!(errors[4].message.contains("not declared"), "{errors:?}");
        assert_eq!(
            errors[0].to_string(),
            format!("line 4: {}", errors[0].message)
        );
    }
}
