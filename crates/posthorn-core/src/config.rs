//! Configuration types. Every field has a default, so Posthorn runs with no
//! file at all; a file (TOML) may set any subset. Unknown fields are errors.
//! Loading (file, environment, flags, reporting every error at once) lives in
//! the server crate; these are only the shapes and their defaults.

use crate::clock::{DAY, HOUR, MINUTE, Millis, SECOND};
use crate::contact::ContactLimits;
use crate::retry::RetrySchedule;
use crate::suppression::SuppressionExpiry;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listeners, data directory and public URL.
    pub server: ServerConfig,
    /// Size and count limits on submissions.
    pub limits: LimitsConfig,
    /// The status model's windows and soft-bounce limits.
    pub status: StatusConfig,
    /// The retry schedule of deferred deliveries.
    pub retry: RetryConfig,
    /// How long automatic suppressions last.
    pub suppression: SuppressionConfig,
    /// Defaults of the pre-send policy chain.
    pub policy: PolicyConfig,
    /// Per-stream settings, keyed by stream name (`[streams.newsletter]`).
    pub streams: BTreeMap<String, StreamConfig>,
    /// Storage tuning.
    pub store: StoreConfig,
    /// Outgoing delivery over SMTP.
    pub delivery: DeliveryConfig,
    /// The SMTP submission listener.
    pub submission: SubmissionConfig,
    /// The inbound MX: bounces, complaints and auto-replies come back here.
    pub inbound: InboundConfig,
    /// Open, click and unsubscribe tracking.
    pub tracking: TrackingConfig,
    /// How remote servers' replies and returned mail are classified.
    pub bounce: BounceConfig,
    /// Other providers' event webhooks (`/v1/ingest/...`).
    pub ingest: IngestConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// The SNS signing certificate (PEM) to verify SES notifications with,
    /// instead of fetching it from the `SigningCertURL` (for a server with
    /// no way out to the internet). A source's own certificate comes first.
    pub sns_certificate_file: Option<PathBuf>,
    /// Fetch SNS signing certificates and confirm SNS subscriptions over
    /// the internet (default on). Off: only configured certificates are
    /// used, and a subscription's confirmation URL is kept on the source
    /// for an operator to open.
    pub fetch: bool,
    /// The stream given to messages first seen through a provider webhook.
    pub stream: String,
    /// Largest webhook body (default 1 MiB; SendGrid batches are big).
    pub max_body: ByteSize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            sns_certificate_file: None,
            fetch: true,
            stream: crate::submission::DEFAULT_STREAM.to_owned(),
            max_body: ByteSize(1024 * 1024),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BounceConfig {
    /// The operator's own reply classification rules, tried before the
    /// built-in ones for synchronous bounces and returned mail (format:
    /// the README's "Your own reply rules"). Unset: the built-in rules
    /// only. A relative path is taken from the directory Posthorn starts
    /// in; a file that is missing or does not parse stops the start.
    pub rules_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackingConfig {
    /// Track opens unless the tenant, the stream or the message says
    /// otherwise (default on).
    pub opens: bool,
    /// Track clicks on links in the HTML part unless the tenant, the stream
    /// or the message says otherwise (default on).
    pub clicks: bool,
    /// Also track the links of the text part (default off: a rewritten link
    /// in plain text is in plain sight).
    pub text_links: bool,
    /// How much of a client's IP address is kept on opens and clicks:
    /// `full` (default), `truncated` (IPv4 /24, IPv6 /48) or `none`.
    pub ip: crate::net::IpRetention,
    /// Networks of reverse proxies or a CDN in front of the tracker, whose
    /// `Forwarded`/`X-Forwarded-For` headers are believed
    /// (`--trust-proxy CIDR` adds to it).
    pub trust_proxy: Vec<crate::net::Cidr>,
    /// Earlier server secrets (hex, as `secret.key` held them): links in
    /// mail signed with them keep working after the secret is replaced.
    pub previous_secrets: Vec<HexSecret>,
    /// When an open or click is judged a machine's (`[tracking.machine]`).
    pub machine: MachineThresholds,
}

/// The settings of the person-or-machine rules (posthorn-track's
/// `machine` module). Every field has a default; unknown fields are refused
/// so that a typo in the config is an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MachineThresholds {
    /// Hits sooner than this after delivery strengthen other evidence
    /// (default `10s`): a second link, or a client that is no browser.
    /// Alone it never makes a machine: transactional mail is read at once.
    pub min_after_delivery: HumanDuration,
    /// Clicks on different links closer together than this form a burst
    /// (default `2s`).
    pub burst_window: HumanDuration,
    /// A burst covering this many different links is a machine even when
    /// the message has more (default 3; at least 2).
    pub burst_links: u32,
    /// Removed (issue #13): a click without an open is no longer a
    /// machine, it implies an open. Kept only to say so when a
    /// configuration still sets it.
    #[serde(default, skip_serializing)]
    pub click_without_open: Option<bool>,
    /// Judge a hit without a `User-Agent` a machine (default `true`).
    pub missing_user_agent: bool,
    /// The machine networks (Apple's proxy, link scanners, hosting) in the
    /// format of `crates/posthorn-track/data/machine-networks.txt`, read at
    /// start instead of the compiled-in copy. Unset: the compiled-in list.
    pub networks_file: Option<PathBuf>,
}

impl MachineThresholds {
    /// Values that deserialise but make no sense, as `setting: problem`.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.click_without_open.is_some() {
            problems.push(
                "click_without_open: removed: a click without an open now counts as a \
                 person's (it implies an open, marked inferred); delete the setting"
                    .to_owned(),
            );
        }
        if self.burst_links < 2 {
            problems.push(format!(
                "burst_links: {} is too few: a burst needs at least 2 different links",
                self.burst_links
            ));
        }
        if self.burst_window.0 <= 0 || self.burst_window.0 > MINUTE {
            problems.push(format!(
                "burst_window: {} is out of range (more than 0, at most 1m)",
                self.burst_window
            ));
        }
        if self.min_after_delivery.0 < 0 || self.min_after_delivery.0 > 10 * MINUTE {
            problems.push(format!(
                "min_after_delivery: {} is out of range (0 to 10m)",
                self.min_after_delivery
            ));
        }
        problems
    }
}

impl Default for MachineThresholds {
    fn default() -> Self {
        Self {
            min_after_delivery: HumanDuration(10 * SECOND),
            burst_window: HumanDuration(2 * SECOND),
            burst_links: 3,
            click_without_open: None,
            missing_user_agent: true,
            networks_file: None,
        }
    }
}

impl Default for TrackingConfig {
    fn default() -> Self {
        Self {
            opens: true,
            clicks: true,
            text_links: false,
            ip: crate::net::IpRetention::Full,
            trust_proxy: Vec::new(),
            previous_secrets: Vec::new(),
            machine: MachineThresholds::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InboundConfig {
    /// Listen address (default `127.0.0.1:2525`; port 25 in production);
    /// empty turns it off.
    pub listen: String,
    /// Domains it accepts mail for, beside `[delivery] return_path_domain`.
    /// When both are unset, any domain: the return path is then the
    /// sender's own domain, and only Posthorn's own local parts are accepted
    /// anyway (`bounces+TOKEN` and the complaint address), so nothing is
    /// ever relayed.
    pub domains: Vec<String>,
    /// Local part of the complaint (feedback loop) address, `fbl@DOMAIN`
    /// (default `fbl`): register it with mailbox providers' feedback loops.
    pub complaint_local_part: String,
    /// Connections open at once (default 1000); over it a new connection
    /// is answered `421` and closed.
    pub max_connections: usize,
    /// Connections open at once from one client address (IPv6: one /64)
    /// (default 20: a large provider opens a few per IP, returned mail is
    /// little traffic).
    pub max_connections_per_ip: usize,
    /// How long a client may take from connecting to its first accepted
    /// MAIL command (default `30s`); an idle or trickling client is closed
    /// after it, however often it says NOOP.
    pub mail_timeout: HumanDuration,
    /// How long to wait for each command once MAIL was accepted (default
    /// `5m`, RFC 5321 §4.5.3.2).
    pub command_timeout: HumanDuration,
    /// How long to wait for the message after `354` (default `10m`,
    /// RFC 5321's wait for the final dot).
    pub data_timeout: HumanDuration,
}

impl Default for InboundConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:2525".into(),
            domains: Vec::new(),
            complaint_local_part: "fbl".into(),
            max_connections: 1000,
            max_connections_per_ip: 20,
            mail_timeout: HumanDuration(30 * SECOND),
            command_timeout: HumanDuration(5 * MINUTE),
            data_timeout: HumanDuration(10 * MINUTE),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubmissionConfig {
    /// Listen address (default `127.0.0.1:2587`); empty turns it off.
    pub listen: String,
    /// PEM certificate chain for STARTTLS; unset: a self-signed one is made
    /// on the first start and kept in the data directory.
    pub cert_file: Option<PathBuf>,
    /// PEM private key for `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Allow AUTH before STARTTLS from loopback clients (default on).
    pub plaintext_auth_on_loopback: bool,
    /// Connections open at once (default 500); over it a new connection is
    /// answered `421` and closed.
    pub max_connections: usize,
    /// Connections open at once from one client address (IPv6: one /64)
    /// (default 50: a tenant's application servers often share one NAT
    /// address and each keeps a few connections).
    pub max_connections_per_ip: usize,
    /// How long a client may take from connecting to a successful AUTH
    /// (default `30s`); an idle client that never authenticates is closed
    /// after it, however often it says NOOP.
    pub auth_timeout: HumanDuration,
    /// How long to wait for each command after AUTH (default `5m`,
    /// RFC 5321 §4.5.3.2).
    pub command_timeout: HumanDuration,
    /// How long to wait for the message after `354` (default `10m`).
    pub data_timeout: HumanDuration,
}

impl Default for SubmissionConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:2587".into(),
            cert_file: None,
            key_file: None,
            plaintext_auth_on_loopback: true,
            max_connections: 500,
            max_connections_per_ip: 50,
            auth_timeout: HumanDuration(30 * SECOND),
            command_timeout: HumanDuration(5 * MINUTE),
            data_timeout: HumanDuration(10 * MINUTE),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Run the delivery workers (default on).
    pub enabled: bool,
    /// The name we greet servers with (EHLO); default: this machine's name.
    pub helo_name: Option<String>,
    /// Domain of the VERP return path `bounces+TOKEN@DOMAIN`; default: the
    /// sender's own domain.
    pub return_path_domain: Option<String>,
    /// Earlier server secrets (hex, as `secret.key` held them): return
    /// paths (`bounces+TOKEN`) and unsubscribe addresses of mail sent with
    /// them still name their delivery after the secret is replaced, instead
    /// of being kept as forged. Apart from `[tracking] previous_secrets`:
    /// bounces come back within days, links are clicked for months, so an
    /// old secret may leave this list sooner (or at once, if it leaked).
    pub previous_secrets: Vec<HexSecret>,
    /// Connections open at once to one destination domain (default 10, a
    /// level large mailbox providers accept from a new sender).
    pub max_connections_per_domain: usize,
    /// Messages sent over one connection before it is closed (default 100).
    pub max_messages_per_connection: usize,
    /// Deliveries taken from the queue at a time (default 256).
    pub claim_batch: u32,
    /// How long an attempt may hold its queue entry before another worker may
    /// take it (default `15m`, above the longest SMTP timeout).
    pub lease: HumanDuration,
    /// Mail for these domains goes to the given `host:port` instead of the
    /// domain's MX (`--route DOMAIN=HOST:PORT` adds to it). A route is the
    /// operator's own choice: it may point anywhere, loopback included.
    pub routes: BTreeMap<String, String>,
    /// Networks that mail hosts found in DNS may resolve to although they
    /// are not public (loopback, private, link-local, ...; see
    /// `net::delivery_target`), e.g. `["10.0.0.0/8"]` for mail servers on
    /// the operator's own network. Default: none, so an MX or address
    /// record pointing at `127.0.0.1` or a metadata service is never
    /// connected to (`--allow-network CIDR` adds to it).
    pub allow_networks: Vec<crate::net::Cidr>,
    /// The port of mail servers found in DNS (default 25, as for every
    /// MTA; like Postfix's `smtp_tcp_port`, for a test sink or a lab).
    pub mx_port: u16,
    /// Run the mailbox simulator for `simulator.posthorn.test` (`--demo`).
    pub simulator: bool,
    /// Per-destination settings, keyed by recipient domain
    /// (`[delivery.domains."gmail.com"]`).
    pub domains: BTreeMap<String, DomainPolicy>,
    /// Relay everything through one upstream server instead of MX delivery.
    pub smarthost: Option<SmarthostConfig>,
    /// How long to wait in each phase of an SMTP session.
    pub timeouts: SmtpTimeouts,
}

/// SMTP client timeouts; defaults are RFC 5321 §4.5.3.2's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpTimeouts {
    /// Opening the TCP connection (default `30s`).
    pub connect: HumanDuration,
    /// The server's greeting (default `5m`).
    pub greeting: HumanDuration,
    /// EHLO, STARTTLS, AUTH, RSET, QUIT (default `5m`).
    pub command: HumanDuration,
    /// MAIL FROM (default `5m`).
    pub mail_from: HumanDuration,
    /// Each RCPT TO (default `5m`).
    pub rcpt_to: HumanDuration,
    /// The reply to DATA (default `2m`).
    pub data_init: HumanDuration,
    /// Each block of the message written (default `3m`).
    pub data_block: HumanDuration,
    /// The reply after the message (default `10m`).
    pub data_end: HumanDuration,
}

impl Default for SmtpTimeouts {
    fn default() -> Self {
        Self {
            connect: HumanDuration(30 * SECOND),
            greeting: HumanDuration(5 * MINUTE),
            command: HumanDuration(5 * MINUTE),
            mail_from: HumanDuration(5 * MINUTE),
            rcpt_to: HumanDuration(5 * MINUTE),
            data_init: HumanDuration(2 * MINUTE),
            data_block: HumanDuration(3 * MINUTE),
            data_end: HumanDuration(10 * MINUTE),
        }
    }
}

/// Settings for one destination domain.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DomainPolicy {
    /// Connections at once (overrides `max_connections_per_domain`).
    pub max_connections: Option<usize>,
    /// Messages per second to this domain, across all its connections.
    pub messages_per_second: Option<f64>,
    /// Never send to this domain without TLS: defer instead.
    pub require_tls: bool,
}

/// An upstream relay ("smarthost").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmarthostConfig {
    /// `host:port`, e.g. `smtp.example.com:587`.
    pub address: String,
    /// AUTH PLAIN user name; with `password`.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// Refuse to relay without TLS (default on: credentials never travel
    /// in plain text).
    #[serde(default = "yes")]
    pub require_tls: bool,
}

fn yes() -> bool {
    true
}

/// A secret from configuration: kept out of `Debug` output and logs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Key bytes written as hex (as `secret.key` holds them), kept out of
/// `Debug` output. Text that is not hex is a configuration error: a key
/// quietly left out would break the links it signed with no word why.
#[derive(Clone, PartialEq, Eq)]
pub struct HexSecret(pub Vec<u8>);

impl HexSecret {
    /// Parses hex as `secret.key` holds it (surrounding blanks ignored);
    /// empty text is no secret.
    pub fn parse(text: &str) -> Result<Self, String> {
        match hex::decode(text.trim()) {
            Ok(bytes) if !bytes.is_empty() => Ok(Self(bytes)),
            _ => Err("expected a secret written in hex (an even number of 0-9, a-f)".into()),
        }
    }
}

impl fmt::Debug for HexSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for HexSecret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for HexSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            helo_name: None,
            return_path_domain: None,
            previous_secrets: Vec::new(),
            max_connections_per_domain: 10,
            max_messages_per_connection: 100,
            claim_batch: 256,
            lease: HumanDuration(15 * MINUTE),
            routes: BTreeMap::new(),
            allow_networks: Vec::new(),
            mx_port: 25,
            simulator: false,
            domains: BTreeMap::new(),
            smarthost: None,
            timeouts: SmtpTimeouts::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Where the database and generated files live (default `./posthorn-data`).
    pub data_dir: PathBuf,
    /// This node's name (1-64 of `A-Z a-z 0-9 . _ -`): what holds its leases
    /// on queued deliveries, so its restart frees only those. Default: a
    /// random name made on the first start and kept in `DATA_DIR/node-id`.
    pub node_id: Option<crate::id::NodeId>,
    /// HTTP listener address (default `127.0.0.1:8025`).
    pub http: String,
    /// Base of links put into mail; default `http://` + the HTTP address.
    pub public_url: Option<String>,
    /// HTTP connections open at once (default 2000). At the limit a new
    /// connection takes the place of the one that has waited longest for a
    /// request; when every connection is busy it is answered `503`.
    pub http_max_connections: usize,
    /// HTTP connections open at once from one client address (IPv6: one
    /// /64) (default 100: image proxies fetch many pixels from one address).
    /// Networks in `[tracking] trust_proxy` count only towards
    /// `http_max_connections`.
    pub http_max_connections_per_ip: usize,
    /// How long a request's headers may take to arrive, counted from the
    /// connection's start or the end of the previous response, so it also
    /// closes idle keep-alive connections (default `10s`).
    pub http_header_timeout: HumanDuration,
    /// How long a request's body may take to arrive in full (default `2m`:
    /// 10 MB at about 700 kbit/s); a slower upload is cut off.
    pub http_body_timeout: HumanDuration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("posthorn-data"),
            node_id: None,
            http: "127.0.0.1:8025".into(),
            public_url: None,
            http_max_connections: 2000,
            http_max_connections_per_ip: 100,
            http_header_timeout: HumanDuration(10 * SECOND),
            http_body_timeout: HumanDuration(2 * MINUTE),
        }
    }
}

impl ServerConfig {
    /// The public URL, or the one derived from the HTTP address.
    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.http))
            .trim_end_matches('/')
            .to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest accepted submission (request body), e.g. `"10MB"`; larger ones
    /// are refused with 413.
    pub max_message_size: ByteSize,
    /// Most recipients (to + cc + bcc) in one message.
    pub max_recipients: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_message_size: ByteSize(10 * 1024 * 1024),
            max_recipients: 1000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatusConfig {
    /// Events more than this long after a delivery was queued are recorded but
    /// change neither its status nor statistics (default `30d`).
    pub window: HumanDuration,
    /// Deliveries in a row ending soft-bounced or expired before the contact
    /// counts as bounced (default 3).
    pub soft_bounce_limit: u32,
    /// Failed attempts in a row, across deliveries, before the contact counts
    /// as bounced (default 10).
    pub soft_attempt_limit: u32,
}

impl Default for StatusConfig {
    fn default() -> Self {
        Self {
            window: HumanDuration(30 * DAY),
            soft_bounce_limit: 3,
            soft_attempt_limit: 10,
        }
    }
}

impl StatusConfig {
    pub fn contact_limits(&self) -> ContactLimits {
        ContactLimits {
            soft_bounce_limit: self.soft_bounce_limit,
            soft_attempt_limit: self.soft_attempt_limit,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Delay before the first retry (default `1m`), doubling after each.
    pub first_retry: HumanDuration,
    /// Longest wait between attempts (default `1h`).
    pub max_interval: HumanDuration,
    /// Message lifetime: how long we keep trying (default `48h`).
    pub lifetime: HumanDuration,
    /// Random spread of each delay, as a fraction (default 0.2 = ±20 %).
    pub jitter: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            first_retry: HumanDuration(MINUTE),
            max_interval: HumanDuration(HOUR),
            lifetime: HumanDuration(48 * HOUR),
            jitter: 0.2,
        }
    }
}

impl Config {
    /// How long deliveries of `stream` are tried: the stream's own
    /// lifetime, else `[retry] lifetime`.
    pub fn lifetime(&self, stream: &str) -> Millis {
        self.streams
            .get(stream)
            .and_then(|s| s.lifetime)
            .unwrap_or(self.retry.lifetime)
            .0
    }
}

impl RetryConfig {
    pub fn schedule(&self) -> RetrySchedule {
        RetrySchedule {
            first_retry: self.first_retry.0,
            max_interval: self.max_interval.0,
            lifetime: self.lifetime.0,
            jitter: self.jitter,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SuppressionConfig {
    /// How long a hard-bounce suppression lasts; unset = until removed.
    pub hard_bounce_expiry: Option<HumanDuration>,
    /// How long a soft-bounce-limit suppression lasts; unset = until removed.
    pub soft_bounce_limit_expiry: Option<HumanDuration>,
}

impl SuppressionConfig {
    pub fn expiry(&self) -> SuppressionExpiry {
        SuppressionExpiry {
            hard_bounce: self.hard_bounce_expiry.map(|d| d.0),
            soft_bounce_limit: self.soft_bounce_limit_expiry.map(|d| d.0),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Drop a second delivery to the same recipient in the same campaign
    /// (default on; each tenant can switch it off).
    pub campaign_dedupe: bool,
    /// Refuse a message unless its From domain (or a parent of it) is one of
    /// the sending tenant's domains, as hosted services require a verified
    /// sender (default off, so that a first run and the demo can send).
    /// A domain that belongs to another tenant is refused either way.
    pub require_own_domain: bool,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            campaign_dedupe: true,
            require_own_domain: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// Only mail contacts that confirmed their subscription (double opt-in).
    pub require_confirmation: bool,
    /// Message lifetime for this stream, overriding `retry.lifetime`.
    pub lifetime: Option<HumanDuration>,
    /// Track opens on this stream (unset: the tenant's or server's default).
    pub track_opens: Option<bool>,
    /// Track clicks on this stream (unset: the tenant's or server's default).
    pub track_clicks: Option<bool>,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// A PostgreSQL database (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB`)
    /// that any number of nodes share. None (the default): the embedded
    /// SQLite database in the data directory.
    pub url: Option<String>,
    /// Most writes committed together in one transaction (group commit).
    pub max_batch: usize,
    /// Read connections beside the one writer: at most this many reads run
    /// at once.
    pub read_connections: usize,
    /// PostgreSQL only: connections that write, each running one write
    /// transaction at a time; at most this many writes of this node run at
    /// once (SQLite has one writer, which commits writes in groups).
    pub write_connections: usize,
    /// `full` (default): a commit survives power loss. `normal`: survives a
    /// crash of Posthorn but not of the machine; faster on slow disks.
    pub synchronous: Synchronous,
}

// By hand: the URL may hold a password, and a configuration is printed
// with `{:?}` in places (errors, tests); only the URL without its user
// part is shown.
impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &self.url.as_deref().map(without_user))
            .field("max_batch", &self.max_batch)
            .field("read_connections", &self.read_connections)
            .field("write_connections", &self.write_connections)
            .field("synchronous", &self.synchronous)
            .finish()
    }
}

/// `url` with its user part (`USER:PASSWORD@`) left out: what may be shown.
pub fn without_user(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    // Everything up to the last `@`: a password badly encoded (holding `/`,
    // `?` or `@`) is hidden too, at worst with part of the options.
    let rest = rest.rsplit_once('@').map_or(rest, |(_, after)| after);
    if scheme.is_empty() {
        rest.to_owned()
    } else {
        format!("{scheme}://{rest}")
    }
}

/// `url` with its database (the path) replaced by `database`; the query,
/// if any, is kept.
pub fn with_database(url: &str, database: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let authority = before_query
        .split_once('/')
        .map_or(before_query, |(a, _)| a);
    let mut out = format!("{scheme}://{authority}/{database}");
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: None,
            max_batch: 1024,
            read_connections: 4,
            write_connections: 2,
            synchronous: Synchronous::Full,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Synchronous {
    Full,
    Normal,
}

/// A duration written the human way in config (`"90s"`, `"48h"`, `"30d"`),
/// held as milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Millis);

impl HumanDuration {
    pub fn parse(text: &str) -> Result<Self, String> {
        let d = humantime::parse_duration(text.trim()).map_err(|e| {
            format!("`{text}` is not a duration like \"90s\", \"15m\", \"48h\" or \"30d\": {e}")
        })?;
        Millis::try_from(d.as_millis())
            .map(HumanDuration)
            .map_err(|_| format!("`{text}` is too long"))
    }
}

impl HumanDuration {
    /// As a `std` duration (a negative one is zero).
    pub fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0.max(0) as u64)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = std::time::Duration::from_millis(self.0.max(0) as u64);
        write!(f, "{}", humantime::format_duration(d))
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        HumanDuration::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A size in bytes written the human way (`"10MB"`, `"512KB"`, `1048576`).
/// Units are binary (1 MB = 1024 KB), as mail servers count them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("`{text}` is not a size like \"10MB\""))?;
        let factor = match unit.trim().to_ascii_uppercase().as_str() {
            "" | "B" => 1,
            "K" | "KB" | "KIB" => 1024,
            "M" | "MB" | "MIB" => 1024 * 1024,
            "G" | "GB" | "GIB" => 1024 * 1024 * 1024,
            _ => {
                return Err(format!(
                    "`{text}` has an unknown unit (use B, KB, MB or GB)"
                ));
            }
        };
        n.checked_mul(factor)
            .map(ByteSize)
            .ok_or_else(|| format!("`{text}` is too large"))
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(t) => ByteSize::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_url_is_replaced_and_the_rest_kept() {
        for (url, want) in [
            (
                "postgres://postgres@127.0.0.1:5432/test",
                "postgres://postgres@127.0.0.1:5432/x",
            ),
            (
                "postgresql://u:p@h/test?sslmode=disable",
                "postgresql://u:p@h/x?sslmode=disable",
            ),
            ("postgres://u@h", "postgres://u@h/x"),
            (
                "postgres://u@h?connect_timeout=2",
                "postgres://u@h/x?connect_timeout=2",
            ),
        ] {
            assert_eq!(with_database(url, "x"), want, "{url}");
        }
    }

    #[test]
    fn human_durations_and_sizes() {
        assert_eq!(HumanDuration::parse("48h").unwrap().0, 48 * HOUR);
        assert_eq!(HumanDuration::parse("30d").unwrap().0, 30 * DAY);
        assert_eq!(HumanDuration::parse("1h 30m").unwrap().0, 90 * MINUTE);
        assert!(HumanDuration::parse("soon").is_err());
        assert_eq!(ByteSize::parse("10MB").unwrap().0, 10 * 1024 * 1024);
        assert_eq!(ByteSize::parse("512 KB").unwrap().0, 512 * 1024);
        assert_eq!(ByteSize::parse("100").unwrap().0, 100);
        assert!(ByteSize::parse("10 parsecs").is_err());
    }

    #[test]
    fn smarthost_passwords_never_show_in_debug() {
        let c: Config = toml::from_str(
            "[delivery.smarthost]\naddress = \"relay.example:587\"\nusername = \"u\"\npassword = \"hunter2\"\n",
        )
        .unwrap();
        let smarthost = c.delivery.smarthost.as_ref().unwrap();
        assert!(smarthost.require_tls, "TLS is required by default");
        assert_eq!(smarthost.password.as_ref().unwrap().0, "hunter2");
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn store_url_passwords_never_show_in_debug() {
        let c: Config =
            toml::from_str("[store]\nurl = \"postgres://app:hunter2@db.example:5433/mail\"\n")
                .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("postgres://db.example:5433/mail"), "{shown}");
        assert_eq!(Config::default().store.url, None, "SQLite by default");
        for (url, want) in [
            ("postgres://u:p@h/db", "postgres://h/db"),
            ("postgres://h/db", "postgres://h/db"),
            ("postgres://u:p/w?x@h/db?a=1", "postgres://h/db?a=1"),
            ("u:p@h", "h"),
        ] {
            assert_eq!(without_user(url), want, "{url}");
        }
    }

    #[test]
    fn defaults_match_the_status_model() {
        let c = Config::default();
        assert_eq!(c.status.window.0, 30 * DAY);
        assert_eq!(c.status.contact_limits(), ContactLimits::default());
        assert_eq!(c.retry.schedule(), RetrySchedule::default());
        assert_eq!(c.limits.max_message_size.0, 10 * 1024 * 1024);
        assert_eq!(c.server.public_url(), "http://127.0.0.1:8025");
    }

    #[test]
    fn every_listener_has_connection_limits_and_short_first_timeouts() {
        let c: Config = toml::from_str(
            "[inbound]\nmax_connections_per_ip = 5\nmail_timeout = \"10s\"\n\
             [server]\nhttp_header_timeout = \"5s\"\n",
        )
        .unwrap();
        assert_eq!(c.inbound.max_connections_per_ip, 5);
        assert_eq!(c.inbound.mail_timeout.0, 10 * SECOND);
        assert_eq!(c.inbound.max_connections, 1000);
        assert_eq!(c.server.http_header_timeout.0, 5 * SECOND);
        let d = Config::default();
        assert_eq!(d.submission.auth_timeout.0, 30 * SECOND);
        assert!(d.submission.auth_timeout < d.submission.command_timeout);
        assert!(d.inbound.mail_timeout < d.inbound.command_timeout);
        assert_eq!(d.server.http_max_connections, 2000);
        assert!(toml::from_str::<Config>("[inbound]\nmax_conections = 5\n").is_err());
    }

    #[test]
    fn delivery_allows_no_private_network_unless_configured() {
        assert!(Config::default().delivery.allow_networks.is_empty());
        let c: Config =
            toml::from_str("[delivery]\nallow_networks = [\"10.0.0.0/8\", \"fd00::/8\"]\n")
                .unwrap();
        let shown: Vec<String> = c
            .delivery
            .allow_networks
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(shown, ["10.0.0.0/8", "fd00::/8"]);
        assert!(
            toml::from_str::<Config>("[delivery]\nallow_networks = [\"10.0.0.0/33\"]\n").is_err()
        );
        assert!(toml::from_str::<Config>("[delivery]\nallow_network = []\n").is_err());
    }

    #[test]
    fn a_partial_file_keeps_defaults_and_unknown_fields_are_errors() {
        let c: Config = toml::from_str("[status]\nwindow = \"7d\"\n").unwrap();
        assert_eq!(c.status.window.0, 7 * DAY);
        assert_eq!(c.status.soft_bounce_limit, 3);
        assert!(toml::from_str::<Config>("[status]\nwindwo = \"7d\"\n").is_err());
    }
}
