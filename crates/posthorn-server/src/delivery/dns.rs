//! Finding where mail for a domain goes: MX records by preference, the
//! domain's own address when it has no MX (RFC 5321 §5.1), and the answers
//! that end a delivery (null MX, RFC 7505; a domain that does not exist).
//!
//! Behind a trait so that tests answer from zone text and never touch the
//! network.

use hickory_resolver::proto::rr::{Name, RData, RecordSet, RrKey};
use hickory_resolver::proto::serialize::txt::{LexerError, ParseError, Parser};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The mail exchangers of a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxAnswer {
    /// Host names, most preferred first (the domain itself when it has no MX).
    Hosts(Vec<String>),
    /// `MX 0 .`: the domain accepts no mail.
    NullMx,
    /// NXDOMAIN: the domain does not exist.
    NoSuchDomain,
    /// SERVFAIL, timeout: try again later.
    TemporaryFailure(String),
}

/// Addresses of a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostAnswer {
    Addresses(Vec<IpAddr>),
    NoSuchHost,
    TemporaryFailure(String),
}

pub trait Resolver: Send + Sync + 'static {
    fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, MxAnswer>;
    fn host<'a>(&'a self, host: &'a str) -> BoxFuture<'a, HostAnswer>;
}

/// Answers from zone text, for tests and demos: an RFC 1035 master file,
/// read by hickory's own parser (`$ORIGIN`, `$TTL`, relative names, `@`,
/// parentheses, `;` comments), so the text is the same a name server would
/// load:
///
/// ```text
/// $ORIGIN example.com.
/// $TTL 300
/// @        MX 10 mx1
///          MX 20 mx2
/// mx1      A  127.0.0.1
/// null.example.  MX 0 .
/// ```
///
/// MX, A and AAAA records answer. A name that owns any record exists (with
/// no MX, its own name is its implicit MX); a name that owns none does not
/// (NXDOMAIN). Without `$ORIGIN`, names are relative to the root, so
/// `example.com MX ...` means `example.com.`. Every record needs a TTL
/// (`$TTL` or its own), as in any zone file. `$INCLUDE` is refused: the
/// text would name other files to read. A CNAME is refused: this resolver
/// does not follow aliases, and a silently unfollowed one would read as a
/// host without addresses.
///
/// SERVFAIL is not something a zone holds, so names that answer it are
/// given apart: [`ZoneResolver::with_servfail`] (`--dns-servfail NAME`).
#[derive(Debug, Default, Clone)]
pub struct ZoneResolver {
    mx: HashMap<String, Vec<(u16, String)>>,
    addresses: HashMap<String, Vec<IpAddr>>,
    /// Every name that owns a record, of any type.
    names: HashSet<String>,
    servfail: HashSet<String>,
}

/// A name as look-ups compare it: lower-case, no trailing dot, and IDN in
/// its ASCII form (as hickory stores the zone's names).
fn name(text: &str) -> String {
    let ascii = Name::from_utf8(text).map_or_else(|_| text.to_owned(), |n| n.to_ascii());
    ascii.trim_end_matches('.').to_ascii_lowercase()
}

/// The zone's records, or an error naming the line where the text went
/// wrong.
fn parse_zone(text: &str) -> Result<BTreeMap<RrKey, RecordSet>, String> {
    let parse = |text: &str| {
        Parser::new(text, None, Some(Name::root()))
            .parse()
            .map(|(_, records)| records)
    };
    parse(text).map_err(|error| {
        let line = failing_line(text, |prefix| parse(prefix).err());
        let shown = text.lines().nth(line - 1).unwrap_or("").trim();
        // The zone dialect before hickory's parser had a SERVFAIL "record".
        let hint = if shown.to_ascii_uppercase().contains("SERVFAIL") {
            " (SERVFAIL is not a record type: list the name with --dns-servfail)"
        } else {
            ""
        };
        format!("zone line {line}: {error}: `{shown}`{hint}")
    })
}

/// hickory's parser does not say where it stopped, so the line is found by
/// parsing ever longer prefixes of the text, a line at a time: the first
/// prefix that fails ends on the bad line. A prefix that fails only because
/// it ends inside a parenthesised record or a quoted string is incomplete,
/// not wrong; when the record it starts turns out bad (or never closes),
/// the line it started on is named. Only text that failed is searched, and
/// test zones are small.
fn failing_line(text: &str, parse_error: impl Fn(&str) -> Option<ParseError>) -> usize {
    let (mut end, mut line) = (0, 0);
    let mut open_since = None;
    for piece in text.split_inclusive('\n') {
        end += piece.len();
        line += 1;
        match parse_error(&text[..end]) {
            None => open_since = None,
            Some(ParseError::Lexer(
                LexerError::UnclosedList | LexerError::UnclosedQuotedString | LexerError::EOF,
            )) => {
                open_since.get_or_insert(line);
            }
            Some(_) => return open_since.unwrap_or(line),
        }
    }
    open_since.unwrap_or(line.max(1))
}

impl ZoneResolver {
    pub fn from_zone(text: &str) -> Result<Self, String> {
        if let Some(at) = text.find("$INCLUDE") {
            let line = text[..at].matches('\n').count() + 1;
            return Err(format!(
                "zone line {line}: $INCLUDE is not read: a test zone is one self-contained text"
            ));
        }
        let mut zone = ZoneResolver::default();
        for set in parse_zone(text)?.values() {
            let owner = name(&set.name().to_ascii());
            for record in set.records_without_rrsigs() {
                match &record.data {
                    RData::MX(mx) => zone
                        .mx
                        .entry(owner.clone())
                        .or_default()
                        .push((mx.preference, name(&mx.exchange.to_ascii()))),
                    RData::A(a) => zone
                        .addresses
                        .entry(owner.clone())
                        .or_default()
                        .push(IpAddr::V4(a.0)),
                    RData::AAAA(aaaa) => zone
                        .addresses
                        .entry(owner.clone())
                        .or_default()
                        .push(IpAddr::V6(aaaa.0)),
                    RData::CNAME(_) => {
                        return Err(format!(
                            "zone: {owner} is a CNAME, which this resolver does not follow; give the name its own MX or address records"
                        ));
                    }
                    _ => {}
                }
            }
            zone.names.insert(owner);
        }
        for list in zone.mx.values_mut() {
            list.sort();
        }
        Ok(zone)
    }

    /// Makes `names` answer SERVFAIL (a temporary failure, as from a broken
    /// name server) to every look-up, whatever the zone holds for them.
    pub fn with_servfail<S: AsRef<str>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.servfail
            .extend(names.into_iter().map(|n| name(n.as_ref())));
        self
    }
}

impl Resolver for ZoneResolver {
    fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, MxAnswer> {
        let domain = name(domain);
        let answer = if self.servfail.contains(&domain) {
            MxAnswer::TemporaryFailure(format!("SERVFAIL for {domain}"))
        } else if let Some(list) = self.mx.get(&domain) {
            if list.len() == 1 && list[0].1.is_empty() {
                MxAnswer::NullMx
            } else {
                MxAnswer::Hosts(list.iter().map(|(_, h)| h.clone()).collect())
            }
        } else if self.names.contains(&domain) {
            MxAnswer::Hosts(vec![domain])
        } else {
            MxAnswer::NoSuchDomain
        };
        Box::pin(async move { answer })
    }

    fn host<'a>(&'a self, host: &'a str) -> BoxFuture<'a, HostAnswer> {
        let host = name(host);
        let answer = if self.servfail.contains(&host) {
            HostAnswer::TemporaryFailure(format!("SERVFAIL for {host}"))
        } else {
            match self.addresses.get(&host) {
                Some(ips) => HostAnswer::Addresses(ips.clone()),
                None => HostAnswer::NoSuchHost,
            }
        };
        Box::pin(async move { answer })
    }
}

/// The machine's DNS (from `/etc/resolv.conf`), through hickory.
pub struct SystemResolver(hickory_resolver::TokioResolver);

impl SystemResolver {
    pub fn new() -> Result<Self, String> {
        hickory_resolver::TokioResolver::builder_tokio()
            .and_then(|b| b.build())
            .map(SystemResolver)
            .map_err(|e| format!("reading the system DNS configuration: {e}"))
    }
}

/// A fully qualified name, so the search list never applies.
fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

impl Resolver for SystemResolver {
    fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, MxAnswer> {
        Box::pin(async move {
            match self.0.mx_lookup(fqdn(domain)).await {
                Ok(lookup) => {
                    let mut list: Vec<(u16, String)> = lookup
                        .answers()
                        .iter()
                        .filter_map(|record| match &record.data {
                            RData::MX(mx) => Some((mx.preference, name(&mx.exchange.to_ascii()))),
                            _ => None,
                        })
                        .collect();
                    if list.len() == 1 && list[0].1.is_empty() {
                        return MxAnswer::NullMx;
                    }
                    list.sort();
                    MxAnswer::Hosts(list.into_iter().map(|(_, h)| h).collect())
                }
                Err(e) if e.is_nx_domain() => MxAnswer::NoSuchDomain,
                // The domain exists but has no MX: its own address is the
                // implicit MX (RFC 5321 §5.1).
                Err(e) if e.is_no_records_found() => MxAnswer::Hosts(vec![name(domain)]),
                Err(e) => MxAnswer::TemporaryFailure(e.to_string()),
            }
        })
    }

    fn host<'a>(&'a self, host: &'a str) -> BoxFuture<'a, HostAnswer> {
        Box::pin(async move {
            match self.0.lookup_ip(fqdn(host)).await {
                Ok(lookup) => HostAnswer::Addresses(lookup.iter().collect()),
                Err(e) if e.is_nx_domain() || e.is_no_records_found() => HostAnswer::NoSuchHost,
                Err(e) => HostAnswer::TemporaryFailure(e.to_string()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[tokio::test]
    async fn zone_text_answers() {
        let zone = ZoneResolver::from_zone(
            "$TTL 300\n\
             example.com. MX 20 mx2.example.com.\n\
             example.com. MX 10 mx1.example.com.\n\
             mx1.example.com. A 127.0.0.1\n\
             mx1.example.com. AAAA ::1\n\
             plain.example. A 127.0.0.2\n\
             null.example. MX 0 . ; RFC 7505\n\
             text.example. TXT \"v=spf1 -all\"\n\
             broken.example. A 127.0.0.9\n",
        )
        .unwrap()
        .with_servfail(["Broken.Example."]);
        assert_eq!(
            zone.mx("Example.COM").await,
            MxAnswer::Hosts(vec!["mx1.example.com".into(), "mx2.example.com".into()]),
            "by preference, not by order in the text"
        );
        assert_eq!(
            zone.mx("plain.example").await,
            MxAnswer::Hosts(vec!["plain.example".into()]),
            "no MX: the domain's own address"
        );
        assert_eq!(
            zone.mx("text.example").await,
            MxAnswer::Hosts(vec!["text.example".into()]),
            "a name with any record exists"
        );
        assert_eq!(zone.mx("null.example").await, MxAnswer::NullMx);
        assert_eq!(zone.mx("nowhere.example").await, MxAnswer::NoSuchDomain);
        assert!(matches!(
            zone.mx("broken.example").await,
            MxAnswer::TemporaryFailure(_)
        ));
        assert!(matches!(
            zone.host("broken.example").await,
            HostAnswer::TemporaryFailure(_)
        ));
        assert_eq!(
            zone.host("mx1.example.com.").await,
            HostAnswer::Addresses(vec![ip("127.0.0.1"), ip("::1")])
        );
        assert_eq!(zone.host("mx2.example.com").await, HostAnswer::NoSuchHost);
        assert_eq!(zone.host("text.example").await, HostAnswer::NoSuchHost);
    }

    #[tokio::test]
    async fn origin_ttl_relative_names_and_parentheses_are_read_as_a_name_server_would() {
        let zone = ZoneResolver::from_zone(
            "$ORIGIN example.com.\n\
             $TTL 1h\n\
             @ IN SOA ns1 hostmaster ( 1 ; serial\n\
             \x20   7200 3600 1209600 300 )\n\
             \x20 IN NS ns1\n\
             @ MX 10 mx1\n\
             \x20 MX 5 mx0.example.net.\n\
             mx1 A 127.0.0.1\n\
             $ORIGIN example.net.\n\
             mx0 300 IN A 127.0.0.5\n\
             bücher MX 10 mx0\n",
        )
        .unwrap();
        assert_eq!(
            zone.mx("example.com").await,
            MxAnswer::Hosts(vec!["mx0.example.net".into(), "mx1.example.com".into()]),
            "a blank owner is the previous line's; relative names take the origin"
        );
        assert_eq!(
            zone.host("mx0.example.net").await,
            HostAnswer::Addresses(vec![ip("127.0.0.5")])
        );
        assert_eq!(
            zone.mx("bücher.example.net").await,
            MxAnswer::Hosts(vec!["mx0.example.net".into()]),
            "IDN names are compared in their ASCII form"
        );
        assert_eq!(
            zone.mx("xn--bcher-kva.example.net").await,
            MxAnswer::Hosts(vec!["mx0.example.net".into()])
        );
        // Without $ORIGIN, names are relative to the root.
        let rootward = ZoneResolver::from_zone("$TTL 60\nplain.example A 127.0.0.2\n").unwrap();
        assert_eq!(
            rootward.host("plain.example").await,
            HostAnswer::Addresses(vec![ip("127.0.0.2")])
        );
        let empty = ZoneResolver::from_zone("").unwrap();
        assert_eq!(empty.mx("example.com").await, MxAnswer::NoSuchDomain);
    }

    #[test]
    fn errors_name_the_line() {
        for (text, line, says) in [
            ("$TTL 300\nexample.com. MX ten mx.example.com.\n", 2, "ten"),
            (
                "$TTL 300\n; fine\nok.example. A 127.0.0.1\nbad.example. A 300.0.0.1\n",
                4,
                "address",
            ),
            ("ok.example. A 127.0.0.1\n", 1, "ttl"),
            ("$TTL 300\nx.example. BOGUS 1\n", 2, "BOGUS"),
            ("$TTL 300\nbroken.example. SERVFAIL\n", 2, "--dns-servfail"),
            (
                "$TTL 300\nok.example. A 127.0.0.1\nopen.example. TXT ( \"a\"\n\"b\"\n",
                3,
                "unclosed",
            ),
            // A record across lines is named by the line it starts on.
            (
                "$TTL 300\n@ SOA ns hm ( 1 2\n x 4 5 )\nok.example. A 127.0.0.1\n",
                2,
                "@ SOA ns hm ( 1 2`",
            ),
            (
                "$TTL 300\n\nok.example. A 127.0.0.1\n$INCLUDE /etc/hosts\n",
                4,
                "$INCLUDE",
            ),
            ("$TTL 300\n\nx.example. TXT \"unclosed\n", 3, "quoted"),
        ] {
            let error = ZoneResolver::from_zone(text).unwrap_err();
            assert!(
                error.starts_with(&format!("zone line {line}: ")) && error.contains(says),
                "{text:?}: {error}"
            );
        }
        let alias = ZoneResolver::from_zone("$TTL 300\nwww.example. CNAME example.\n").unwrap_err();
        assert!(alias.contains("www.example is a CNAME"), "{alias}");
    }
}
