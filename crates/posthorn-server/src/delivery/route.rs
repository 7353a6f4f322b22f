//! Where mail for a domain goes: the operator's route for it, else the
//! smarthost, else its MX hosts by preference (the domain itself when it
//! has none), keeping only addresses delivery may connect to. Or why it
//! goes nowhere: DNS says the domain takes no mail (a bounce), DNS failed
//! for now, or every address found is forbidden (both tried again later).

use super::dns::{HostAnswer, MxAnswer, Resolver};
use crate::startup::RouteError;
use posthorn_core::net::Cidr;
use posthorn_core::outcome::Unroutable;
use std::collections::HashMap;
use std::net::SocketAddr;

/// One server to try for a domain.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub addr: SocketAddr,
    /// Never send without TLS (domain policy, or a smarthost).
    pub require_tls: bool,
    /// AUTH PLAIN credentials (a smarthost).
    pub auth: Option<(String, String)>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("host", &self.host)
            .field("addr", &self.addr)
            .field("require_tls", &self.require_tls)
            .field(
                "auth",
                &self.auth.as_ref().map(|(user, _)| (user, "<redacted>")),
            )
            .finish()
    }
}

/// Where mail for a domain goes, or why it goes nowhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// The servers to try, in order.
    Targets(Vec<Target>),
    /// The domain cannot receive mail: bounce every delivery.
    Bounce(Unroutable),
    /// DNS failed for now (the resolver's words): try again later.
    Defer(String),
    /// Every address found is one delivery must not connect to (loopback,
    /// private, metadata, ...; `net::delivery_target`): try again later, in
    /// case DNS or `allow_networks` changes.
    Refuse(String),
}

/// What routing reads from the configuration, once, at start.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    /// `[delivery.routes]` and `--route`: domain -> server, no DNS asked.
    pub routes: HashMap<String, SocketAddr>,
    /// Every domain without a route goes through it, when set.
    pub smarthost: Option<Target>,
    /// Networks delivery may connect to although DNS should not lead there.
    pub allow_networks: Vec<Cidr>,
    /// The port of MX hosts (25 but in tests and demos).
    pub mx_port: u16,
}

impl Routing {
    /// Where mail for `domain` goes; `require_tls` is its policy's.
    pub async fn destination(
        &self,
        domain: &str,
        require_tls: bool,
        resolver: &dyn Resolver,
    ) -> Destination {
        if let Some(addr) = self.routes.get(domain) {
            return Destination::Targets(vec![Target {
                host: domain.to_owned(),
                addr: *addr,
                require_tls,
                auth: None,
            }]);
        }
        if let Some(relay) = &self.smarthost {
            let mut relay = relay.clone();
            relay.require_tls |= require_tls;
            return Destination::Targets(vec![relay]);
        }
        let hosts = match resolver.mx(domain).await {
            MxAnswer::Hosts(hosts) => hosts,
            MxAnswer::NullMx => return Destination::Bounce(Unroutable::NullMx),
            MxAnswer::NoSuchDomain => return Destination::Bounce(Unroutable::NoSuchDomain),
            MxAnswer::TemporaryFailure(why) => return Destination::Defer(why),
        };
        // Addresses found in DNS are checked (routes and the smarthost above
        // are the operator's own and are not): a domain whose MX resolves
        // to 127.0.0.1 or a metadata address must not make us connect to a
        // service of our own network. Forbidden addresses are skipped; the
        // others are tried as usual.
        let mut targets = Vec::new();
        let mut temporary = None;
        let mut refused = Vec::new();
        for host in hosts {
            match resolver.host(&host).await {
                HostAnswer::Addresses(ips) => {
                    for ip in ips {
                        match posthorn_core::net::delivery_target(ip, &self.allow_networks) {
                            Ok(()) => targets.push(Target {
                                host: host.clone(),
                                addr: SocketAddr::new(ip, self.mx_port),
                                require_tls,
                                auth: None,
                            }),
                            Err(why) => {
                                tracing::warn!(%domain, %host, %ip, reason = %why, "not connecting to a mail server outside the public internet");
                                refused.push(format!("{host} ({ip}) is {why}"));
                            }
                        }
                    }
                }
                HostAnswer::NoSuchHost => {}
                HostAnswer::TemporaryFailure(why) => temporary = Some(why),
            }
        }
        if targets.is_empty() && !refused.is_empty() {
            return Destination::Refuse(format!(
                "not connecting to the mail servers of {domain}: {}, not a permitted delivery \
                 target (allow its network with [delivery] allow_networks)",
                refused.join(", ")
            ));
        }
        match (targets.is_empty(), temporary) {
            (false, _) => Destination::Targets(targets),
            (true, Some(why)) => Destination::Defer(why),
            (true, None) => Destination::Bounce(Unroutable::NoAddress),
        }
    }
}

/// The smarthost as a target (resolved once, at start).
pub fn smarthost_target(
    relay: &posthorn_core::config::SmarthostConfig,
) -> Result<Target, RouteError> {
    let addr = std::net::ToSocketAddrs::to_socket_addrs(relay.address.as_str())
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| RouteError::Smarthost(relay.address.clone()))?;
    let host = relay
        .address
        .rsplit_once(':')
        .map_or(relay.address.as_str(), |(h, _)| h);
    Ok(Target {
        host: host.to_owned(),
        addr,
        require_tls: relay.require_tls,
        auth: relay
            .username
            .clone()
            .zip(relay.password.as_ref().map(|p| p.0.clone())),
    })
}

/// Parses `[delivery.routes]` / `--route` values (`host:port`).
pub fn parse_routes(
    routes: &std::collections::BTreeMap<String, String>,
) -> Result<HashMap<String, SocketAddr>, RouteError> {
    let mut parsed = HashMap::new();
    for (domain, target) in routes {
        let addr = std::net::ToSocketAddrs::to_socket_addrs(target.as_str())
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| RouteError::Route {
                domain: domain.clone(),
                target: target.clone(),
            })?;
        parsed.insert(domain.trim_end_matches('.').to_ascii_lowercase(), addr);
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::dns::ZoneResolver;

    /// Public addresses (delivery may connect to them) and private ones.
    const ZONE: &str = "$TTL 300\n\
        example.com.      MX 20 mx2.example.com.\n\
        example.com.      MX 10 mx1.example.com.\n\
        mx1.example.com.  A 1.2.3.4\n\
        mx2.example.com.  A 5.6.7.8\n\
        mx2.example.com.  AAAA 2606:4700::1\n\
        plain.example.    A 9.9.9.9\n\
        null.example.     MX 0 .\n\
        inside.example.   MX 10 mx.inside.example.\n\
        mx.inside.example. A 10.0.0.5\n\
        mx.inside.example. A 127.0.0.1\n\
        mixed.example.    MX 10 mx1.mixed.example.\n\
        mixed.example.    MX 20 mx2.mixed.example.\n\
        mx1.mixed.example. A 192.168.1.1\n\
        mx2.mixed.example. A 4.4.4.4\n\
        nameless.example. MX 10 gone.nameless.example.\n\
        broken.example.   MX 10 mx.broken.example.\n\
        halfbroken.example. MX 10 mx.halfbroken.example.\n\
        halfbroken.example. MX 20 mx.down.example.\n\
        mx.halfbroken.example. A 6.6.6.6\n\
        mx.down.example.  A 7.7.7.7\n";

    fn zone() -> ZoneResolver {
        ZoneResolver::from_zone(ZONE)
            .unwrap()
            .with_servfail(["broken.example", "mx.down.example"])
    }

    fn routing() -> Routing {
        Routing {
            mx_port: 25,
            ..Routing::default()
        }
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    /// The (host, address) pairs of a plan that has targets.
    fn servers(destination: Destination) -> Vec<(String, SocketAddr)> {
        match destination {
            Destination::Targets(targets) => {
                targets.into_iter().map(|t| (t.host, t.addr)).collect()
            }
            other => panic!("no targets: {other:?}"),
        }
    }

    async fn plan(routing: &Routing, domain: &str) -> Destination {
        routing.destination(domain, false, &zone()).await
    }

    #[tokio::test]
    async fn mx_hosts_are_tried_by_preference_with_each_of_their_addresses() {
        assert_eq!(
            servers(plan(&routing(), "example.com").await),
            vec![
                ("mx1.example.com".into(), addr("1.2.3.4:25")),
                ("mx2.example.com".into(), addr("5.6.7.8:25")),
                ("mx2.example.com".into(), addr("[2606:4700::1]:25")),
            ]
        );
    }

    #[tokio::test]
    async fn a_domain_without_mx_is_its_own_mail_server() {
        let custom_port = Routing {
            mx_port: 2525,
            ..routing()
        };
        assert_eq!(
            servers(plan(&custom_port, "plain.example").await),
            vec![("plain.example".into(), addr("9.9.9.9:2525"))]
        );
    }

    #[tokio::test]
    async fn domains_that_take_no_mail_bounce() {
        assert_eq!(
            plan(&routing(), "null.example").await,
            Destination::Bounce(Unroutable::NullMx)
        );
        assert_eq!(
            plan(&routing(), "nowhere.example").await,
            Destination::Bounce(Unroutable::NoSuchDomain)
        );
        assert_eq!(
            plan(&routing(), "nameless.example").await,
            Destination::Bounce(Unroutable::NoAddress)
        );
    }

    #[tokio::test]
    async fn dns_failures_defer() {
        assert_eq!(
            plan(&routing(), "broken.example").await,
            Destination::Defer("SERVFAIL for broken.example".into())
        );
        // One host answered, another failed: the one that answered is used.
        assert_eq!(
            servers(plan(&routing(), "halfbroken.example").await),
            vec![("mx.halfbroken.example".into(), addr("6.6.6.6:25"))]
        );
    }

    #[tokio::test]
    async fn private_addresses_are_refused_unless_their_network_is_allowed() {
        let Destination::Refuse(why) = plan(&routing(), "inside.example").await else {
            panic!("connected inside")
        };
        assert!(
            why.contains("mx.inside.example (10.0.0.5) is a private address")
                && why.contains("mx.inside.example (127.0.0.1) is a loopback address"),
            "{why}"
        );
        let allowed = Routing {
            allow_networks: vec!["10.0.0.0/8".parse().unwrap()],
            ..routing()
        };
        assert_eq!(
            servers(plan(&allowed, "inside.example").await),
            vec![("mx.inside.example".into(), addr("10.0.0.5:25"))],
            "only the allowed network; loopback stays refused"
        );
    }

    #[tokio::test]
    async fn with_some_addresses_public_only_those_are_tried() {
        assert_eq!(
            servers(plan(&routing(), "mixed.example").await),
            vec![("mx2.mixed.example".into(), addr("4.4.4.4:25"))]
        );
    }

    #[tokio::test]
    async fn a_route_or_the_smarthost_wins_over_dns() {
        let relay = Target {
            host: "relay.example.net".into(),
            addr: addr("127.0.0.1:587"),
            require_tls: false,
            auth: Some(("user".into(), "secret".into())),
        };
        let mut routed = Routing {
            smarthost: Some(relay.clone()),
            ..routing()
        };
        routed
            .routes
            .insert("null.example".into(), addr("127.0.0.1:2525"));
        // A route is the operator's own: no DNS, no address check.
        assert_eq!(
            routed.destination("null.example", true, &zone()).await,
            Destination::Targets(vec![Target {
                host: "null.example".into(),
                addr: addr("127.0.0.1:2525"),
                require_tls: true,
                auth: None,
            }])
        );
        // Everything else goes to the smarthost, DNS or not; the domain's
        // policy can only add a TLS requirement.
        for domain in ["example.com", "nowhere.example", "broken.example"] {
            assert_eq!(
                routed.destination(domain, true, &zone()).await,
                Destination::Targets(vec![Target {
                    require_tls: true,
                    ..relay.clone()
                }]),
                "{domain}"
            );
        }
    }
}
