//! Finding where mail for a domain goes: MX records by preference, the
//! domain's own address when it has no MX (RFC 5321 §5.1), and the answers
//! that end a delivery (null MX, RFC 7505; a domain that does not exist).
//!
//! Behind a trait so that tests answer from zone text and never touch the
//! network.

use std::collections::HashMap;
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

/// Answers from zone text, for tests and demos. Lines look like
/// `example.com. MX 10 mx1.example.com.`, `mx1.example.com. A 127.0.0.1`,
/// `broken.example. SERVFAIL`; a name with no line does not exist.
#[derive(Debug, Default, Clone)]
pub struct ZoneResolver {
    mx: HashMap<String, Vec<(u16, String)>>,
    addresses: HashMap<String, Vec<IpAddr>>,
    servfail: Vec<String>,
}

fn name(text: &str) -> String {
    text.trim_end_matches('.').to_ascii_lowercase()
}

impl ZoneResolver {
    pub fn from_zone(text: &str) -> Result<Self, String> {
        let mut zone = ZoneResolver::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.split(';').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let bad = || format!("zone line {}: `{line}`", n + 1);
            let owner = name(fields[0]);
            match fields.get(1).map(|t| t.to_ascii_uppercase()).as_deref() {
                Some("MX") => {
                    let preference = fields.get(2).and_then(|p| p.parse().ok()).ok_or_else(bad)?;
                    let host = fields.get(3).ok_or_else(bad)?;
                    zone.mx
                        .entry(owner)
                        .or_default()
                        .push((preference, name(host)));
                }
                Some("A") | Some("AAAA") => {
                    let ip = fields
                        .get(2)
                        .and_then(|ip| ip.parse().ok())
                        .ok_or_else(bad)?;
                    zone.addresses.entry(owner).or_default().push(ip);
                }
                Some("SERVFAIL") => zone.servfail.push(owner),
                _ => return Err(bad()),
            }
        }
        for list in zone.mx.values_mut() {
            list.sort();
        }
        Ok(zone)
    }

    fn exists(&self, domain: &str) -> bool {
        self.mx.contains_key(domain) || self.addresses.contains_key(domain)
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
        } else if self.exists(&domain) {
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

use hickory_resolver::proto::rr::RData;

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

    #[tokio::test]
    async fn zone_text_answers() {
        let zone = ZoneResolver::from_zone(
            "example.com. MX 20 mx2.example.com.\nexample.com. MX 10 mx1.example.com.\n\
             mx1.example.com. A 127.0.0.1\nplain.example. A 127.0.0.2\nnull.example. MX 0 .\n\
             broken.example. SERVFAIL ; a comment\n",
        )
        .unwrap();
        assert_eq!(
            zone.mx("Example.COM").await,
            MxAnswer::Hosts(vec!["mx1.example.com".into(), "mx2.example.com".into()])
        );
        assert_eq!(
            zone.mx("plain.example").await,
            MxAnswer::Hosts(vec!["plain.example".into()])
        );
        assert_eq!(zone.mx("null.example").await, MxAnswer::NullMx);
        assert_eq!(zone.mx("nowhere.example").await, MxAnswer::NoSuchDomain);
        assert!(matches!(
            zone.mx("broken.example").await,
            MxAnswer::TemporaryFailure(_)
        ));
        assert_eq!(
            zone.host("mx1.example.com.").await,
            HostAnswer::Addresses(vec!["127.0.0.1".parse().unwrap()])
        );
        assert_eq!(zone.host("mx2.example.com").await, HostAnswer::NoSuchHost);
        assert!(ZoneResolver::from_zone("example.com. MX ten mx").is_err());
    }
}
