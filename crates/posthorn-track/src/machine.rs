//! Person or machine: the verdict on one open or click, with the rule that
//! decided, so the numbers can be shown honestly (human-only beside all)
//! and every verdict explained. No hit is ever dropped for being a machine.
//!
//! Transactional mail is read at once: a password reset is opened and its
//! link followed seconds after it arrives, often in a client that blocks
//! images. So time since delivery, and a click with no open before it, do
//! not make a machine: they are what a hurried person does too. The rules
//! use what separates machines from people: where the request comes from
//! (the networks of `networks.rs`: Apple's proxy, link-scanning gateways,
//! cloud and hosting ranges), how it asks (HEAD, prefetch headers), who it
//! says it is (headless browsers, scanners, HTTP libraries), and the
//! sequence of the delivery's hits (every link in one burst). Time since
//! delivery only strengthens other, weaker evidence.
//!
//! Machine rules, the first that matches decides (`machine_reason`):
//!
//! | reason | kinds | signal |
//! |---|---|---|
//! | `head_request` | both | a `HEAD` request: link checkers ask whether a URL exists; a person's browser asks for the page |
//! | `prefetch` | both | a prefetch, not a visit: `Purpose: prefetch`, `Sec-Purpose: prefetch...`, `X-Moz: prefetch`, `X-Purpose: preview` |
//! | `headless_user_agent` | both | `HeadlessChrome`, `PhantomJS`, `Puppeteer`, `Playwright`, `Selenium`, `SlimerJS`: sandboxes that detonate links |
//! | `scanner_user_agent` | both | a security gateway or link checker names itself (Barracuda, Mimecast, Proofpoint, Safe Links / `BingPreview`, `Microsoft Office Existence Discovery`, Office's bare `ms-office` fetcher, ...), an HTTP library (`python-requests`, `curl`, `Go-http-client`, ...) or a crawler (`...bot`, `...crawler`, `...spider`, `scan...`) |
//! | `link_scanner_network` | both | the address is in a link-scanning gateway's network (Microsoft Defender for Office 365 / EOP, Proofpoint, ...), whatever browser the request claims to be |
//! | `apple_mpp` | opens | the address is in Apple's network: Mail Privacy Protection fetches every image when the message arrives, read or not. (A click from there is an Apple employee's.) The same stripped WebKit user agent from any other network is Apple Mail without MPP: a person |
//! | `hosting_network` | both | the address is in a cloud or hosting network (not an image proxy): no mail client reads mail there |
//! | `missing_user_agent` | both | no `User-Agent` at all: every mail client and browser sends one (`missing_user_agent = false` turns it off) |
//! | `all_links_at_once` | clicks | this click and the clicks before it within `burst_window` (2 s) cover every link of the message, or `burst_links` (3) different ones: nobody reads that fast |
//! | `too_soon_and_link_sweep` | clicks | within `min_after_delivery` (10 s) of delivery, and a different link was clicked within `burst_window` before: a person who has just got the message follows one link |
//! | `too_soon_and_unknown_client` | both | within `min_after_delivery` of delivery, and the user agent is no browser or mail client (a bare `Mozilla/5.0`, an unknown token) |
//!
//! Time since delivery appears only in the last two: alone it never
//! decides.
//!
//! A hit no machine rule matches is a person's, and says why
//! (`machine_reason` holds the reason of either verdict):
//!
//! | reason | signal |
//! |---|---|
//! | `image_proxy_google`, `image_proxy_yahoo`, `image_proxy_outlook` | fetched through a mail provider's image proxy when the reader opened the message (`proxy: true`): the address is the proxy's |
//! | `mail_client_then_browser` | a click in a browser from the same network (IPv4 /24, IPv6 /48) as an earlier open judged a person's: the reader opened the message, then one link |
//! | `apple_mail_without_mpp` | an open with Apple Mail's WebKit user agent from outside Apple's network |
//! | `click_implies_open` | a click with no person's open before it (images blocked, or only machine opens): it implies an open, recorded as inferred (`implied_open`) |
//! | `no_machine_signal` | nothing says machine |
//!
//! Verdicts are per hit, from the hits before it: a burst that is only seen
//! to be a burst at its third click does not turn the first two into
//! machines after the fact. Stored events are never edited (the event log is
//! append-only) and a verdict must not change with the order events are
//! replayed in; the third click carries the evidence.

use crate::networks::{NetCategory, Networks};
use posthorn_core::Millis;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// An open (pixel fetched) or a click (tracked link followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HitKind {
    Open,
    Click,
}

/// The facts about one hit on the tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit<'a> {
    pub kind: HitKind,
    /// The request was `HEAD`, not `GET`.
    pub method_head: bool,
    /// The request said it is a prefetch or preview, not a visit
    /// (see [`is_prefetch`]).
    pub prefetch: bool,
    /// The client's address, after trusted-proxy resolution.
    pub ip: Option<IpAddr>,
    pub user_agent: Option<&'a str>,
    /// When the hit happened.
    pub at: Millis,
    /// When the message was delivered (the remote server's 2xx), or when it
    /// was sent if no delivery event is known yet. `None`: no timing rule.
    pub delivered_at: Option<Millis>,
    /// For a click, the link's index.
    pub link_index: Option<u32>,
    /// How many tracked links the message has.
    pub links_in_message: u32,
    /// The message carried an open pixel.
    pub open_tracking: bool,
}

/// A hit recorded earlier for the same delivery, with its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PastHit {
    pub kind: HitKind,
    pub at: Millis,
    pub link_index: Option<u32>,
    pub machine: bool,
    /// The network it came from ([`network_of`]: IPv4 /24, IPv6 /48), when
    /// known: the same prefixes `[tracking] ip = "truncated"` keeps, so
    /// stored hits give the same answer as fresh ones.
    #[serde(default)]
    pub network: Option<IpAddr>,
}

/// The verdict on one hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Made by a machine, not a person.
    pub machine: bool,
    /// The rule that decided, a stable snake_case id (see the module doc).
    pub reason: &'static str,
    /// Fetched through a mail provider's image proxy: the IP is the
    /// proxy's, not the reader's.
    pub proxy: bool,
    /// A person's click with no person's open before it: it implies the
    /// message was opened (counted as an inferred open).
    pub implied_open: bool,
}

/// The configurable limits of the rules; a configuration type, so it lives
/// with the others in `posthorn-core` (`[tracking.machine]`).
pub use posthorn_core::config::MachineThresholds as Thresholds;

/// The network of an address, as hits are compared by it: IPv4 /24, IPv6
/// /48 (an IPv4-mapped IPv6 address is its IPv4 address).
pub fn network_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4((u32::from(v4) & 0xffff_ff00).into()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => network_of(IpAddr::V4(v4)),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 80) - 1)).into()),
        },
    }
}

/// Whether request headers say prefetch or preview: `Purpose: prefetch`
/// (Chrome, Safari), `Sec-Purpose: prefetch` and `prefetch;prerender`
/// (Chrome's speculation rules), `X-Moz: prefetch` (Firefox), `X-Purpose:
/// preview` (Safari's previews). `header` gives a header's value by its
/// lower-case name.
pub fn is_prefetch<'h>(header: impl Fn(&str) -> Option<&'h str>) -> bool {
    let says = |name: &str, word: &str| {
        header(name).is_some_and(|v| {
            v.split([';', ',', ' '])
                .any(|part| part.trim().eq_ignore_ascii_case(word))
        })
    };
    says("purpose", "prefetch")
        || says("sec-purpose", "prefetch")
        || says("x-moz", "prefetch")
        || says("x-purpose", "preview")
}

/// Judges one hit given the delivery's earlier hits (any order; hits after
/// `hit.at` are ignored, see the module doc) and the machine networks.
pub fn judge(hit: &Hit<'_>, history: &[PastHit], t: &Thresholds, networks: &Networks) -> Verdict {
    let ua = hit.user_agent.map(str::trim).filter(|u| !u.is_empty());
    // One lower-case copy serves every user-agent test.
    let lower = ua.map(str::to_ascii_lowercase);
    let lower = lower.as_deref();
    let proxy = lower.and_then(image_proxy);
    let net = hit.ip.and_then(|ip| networks.category(ip));
    if let Some(reason) = machine_reason(hit, lower, proxy.is_some(), net, history, t) {
        return Verdict {
            machine: true,
            reason,
            proxy: proxy.is_some(),
            implied_open: false,
        };
    }
    let earlier = || history.iter().filter(|p| p.at <= hit.at);
    let implied_open =
        hit.kind == HitKind::Click && !earlier().any(|p| p.kind == HitKind::Open && !p.machine);
    let reason = proxy.unwrap_or_else(|| {
        let same_network_open = || {
            let here = hit.ip.map(network_of);
            here.is_some()
                && earlier().any(|p| p.kind == HitKind::Open && !p.machine && p.network == here)
        };
        match hit.kind {
            HitKind::Click if lower.is_some_and(is_browser) && same_network_open() => {
                "mail_client_then_browser"
            }
            HitKind::Open if lower.is_some_and(is_apple_mail_render) => "apple_mail_without_mpp",
            _ if implied_open => "click_implies_open",
            _ => "no_machine_signal",
        }
    });
    Verdict {
        machine: false,
        reason,
        proxy: proxy.is_some(),
        implied_open,
    }
}

fn machine_reason(
    hit: &Hit<'_>,
    lower: Option<&str>,
    proxy: bool,
    net: Option<NetCategory>,
    history: &[PastHit],
    t: &Thresholds,
) -> Option<&'static str> {
    if hit.method_head {
        return Some("head_request");
    }
    if hit.prefetch {
        return Some("prefetch");
    }
    if let Some(lower) = lower {
        if is_headless(lower) {
            return Some("headless_user_agent");
        }
        if is_scanner(lower) {
            return Some("scanner_user_agent");
        }
    }
    match net {
        Some(NetCategory::LinkScanner) => return Some("link_scanner_network"),
        Some(NetCategory::AppleMpp) if hit.kind == HitKind::Open => return Some("apple_mpp"),
        Some(NetCategory::Hosting) if !proxy => return Some("hosting_network"),
        _ => {}
    }
    if lower.is_none() && t.missing_user_agent {
        return Some("missing_user_agent");
    }
    let earlier = || history.iter().filter(|p| p.at <= hit.at);
    if hit.kind == HitKind::Click && is_burst(hit, earlier(), t) {
        return Some("all_links_at_once");
    }
    // Time since delivery: only beside other evidence.
    let too_soon = hit
        .delivered_at
        .is_some_and(|d| hit.at.saturating_sub(d) < t.min_after_delivery.0);
    if too_soon {
        if hit.kind == HitKind::Click
            && let Some(this) = hit.link_index
            && earlier().any(|p| {
                p.kind == HitKind::Click
                    && p.link_index.is_some_and(|i| i != this)
                    && hit.at.saturating_sub(p.at) <= t.burst_window.0
            })
        {
            return Some("too_soon_and_link_sweep");
        }
        if !proxy && !lower.is_some_and(is_known_client) {
            return Some("too_soon_and_unknown_client");
        }
    }
    None
}

/// This click and the earlier clicks within the window cover all links of
/// the message, or `burst_links` different ones.
fn is_burst<'h>(hit: &Hit<'_>, earlier: impl Iterator<Item = &'h PastHit>, t: &Thresholds) -> bool {
    let Some(this) = hit.link_index else {
        return false;
    };
    let mut links = vec![this];
    for p in earlier {
        if p.kind == HitKind::Click
            && hit.at.saturating_sub(p.at) <= t.burst_window.0
            && let Some(i) = p.link_index
            && !links.contains(&i)
        {
            links.push(i);
        }
    }
    let distinct = u32::try_from(links.len()).unwrap_or(u32::MAX);
    distinct >= 2 && (distinct >= hit.links_in_message || distinct >= t.burst_links.max(2))
}

/// Apple Mail's own rendering (and MPP's fetcher, which copies it): a
/// WebKit string that stops at the engine, without the product tokens
/// (`Version/`, `Safari/`) a browser adds.
fn is_apple_mail_render(lower: &str) -> bool {
    let webkit = lower.starts_with("mozilla/5.0 (") && lower.contains("applewebkit/");
    let no_product = lower.ends_with("(khtml, like gecko)")
        || (lower.contains("mobile/") && !lower.contains("safari/"));
    webkit && no_product
}

/// A browser that opens a link: the product tokens browsers send.
fn is_browser(lower: &str) -> bool {
    [
        "chrome/", "crios/", "firefox/", "fxios/", "safari/", "edg/", "opr/", "trident/",
    ]
    .iter()
    .any(|s| lower.contains(s))
}

/// A browser, or a mail client that renders images itself.
fn is_known_client(lower: &str) -> bool {
    is_browser(lower)
        || [
            "applewebkit/",
            "gecko/",
            "microsoft outlook",
            "outlook-",
            "thunderbird",
            "dalvik/",
            "cfnetwork/",
        ]
        .iter()
        .any(|s| lower.contains(s))
}

fn image_proxy(lower: &str) -> Option<&'static str> {
    if lower.contains("googleimageproxy") || lower.contains("ggpht.com") {
        Some("image_proxy_google")
    } else if lower.contains("yahoomailproxy") {
        Some("image_proxy_yahoo")
    } else if lower.contains("outlook-ios") || lower.contains("outlook-android") {
        Some("image_proxy_outlook")
    } else {
        None
    }
}

const HEADLESS: &[&str] = &[
    "headlesschrome",
    "phantomjs",
    "puppeteer",
    "playwright",
    "selenium",
    "slimerjs",
];

/// Substrings (lower case) that name a security gateway, link checker or
/// HTTP library.
const SCANNERS: &[&str] = &[
    "barracuda",
    "mimecast",
    "proofpoint",
    "urldefense",
    "safelinks",
    "safe links",
    "bingpreview",
    "existence discovery",
    "symantec",
    "broadcom",
    "messagelabs",
    "trend micro",
    "trendmicro",
    "ironport",
    "cisco",
    "forcepoint",
    "websense",
    "fireeye",
    "trellix",
    "sophos",
    "zscaler",
    "paloalto",
    "checkpoint",
    "fortinet",
    "fortiguard",
    "avanan",
    "abnormal",
    "cloudmark",
    "spamtitan",
    "python-requests",
    "python-urllib",
    "python-httpx",
    "aiohttp",
    "curl/",
    "wget",
    "go-http-client",
    "okhttp",
    "java/",
    "apache-httpclient",
    "libwww",
    "node-fetch",
    "axios/",
    "undici",
    "httpclient",
    "facebookexternalhit",
    "slackbot",
    "skypeuripreview",
    "whatsapp",
];

fn is_headless(lower: &str) -> bool {
    HEADLESS.iter().any(|s| lower.contains(s))
}

fn is_scanner(lower: &str) -> bool {
    if SCANNERS.iter().any(|s| lower.contains(s)) {
        return true;
    }
    // Office's own fetcher (`Mozilla/4.0 (compatible; ms-office; MSOffice
    // 16)`) checks links before opening them; desktop Outlook rendering the
    // message says `Microsoft Outlook` as well and is a person.
    if lower.contains("ms-office") && !lower.contains("microsoft outlook") {
        return true;
    }
    lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|word| {
            (word.ends_with("bot") && word != "cubot") // Cubot is a phone brand
                || word.ends_with("crawler")
                || word.ends_with("spider")
                || word.starts_with("scan")
                || word.ends_with("scanner")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use posthorn_core::clock::{MINUTE, SECOND};

    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
                          (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    const IPHONE_SAFARI: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) \
        AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
    const APPLE_MAIL_RENDER: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) \
        AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148";
    const OUTLOOK_DESKTOP: &str = "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 10.0; WOW64; \
        Trident/7.0; Microsoft Outlook 16.0.9126; ms-office; MSOffice 16)";
    const MAC_MAIL: &str =
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)";
    const GMAIL: &str =
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)";

    const DELIVERED: Millis = 1_000_000_000;
    const HOME: &str = "203.0.113.7";

    fn nets() -> Networks {
        Networks::builtin()
    }

    fn open(ua: &str) -> Hit<'_> {
        Hit {
            kind: HitKind::Open,
            method_head: false,
            prefetch: false,
            ip: Some(HOME.parse().unwrap()),
            user_agent: Some(ua),
            at: DELIVERED + 5 * MINUTE,
            delivered_at: Some(DELIVERED),
            link_index: None,
            links_in_message: 5,
            open_tracking: true,
        }
    }

    fn click(ua: &str, link: u32, at: Millis) -> Hit<'_> {
        Hit {
            kind: HitKind::Click,
            link_index: Some(link),
            at,
            ..open(ua)
        }
    }

    fn from<'a>(mut hit: Hit<'a>, ip: &str) -> Hit<'a> {
        hit.ip = Some(ip.parse().unwrap());
        hit
    }

    fn past_open(at: Millis) -> PastHit {
        PastHit {
            kind: HitKind::Open,
            at,
            link_index: None,
            machine: false,
            network: Some(network_of(HOME.parse().unwrap())),
        }
    }

    fn past_click(link: u32, at: Millis) -> PastHit {
        PastHit {
            kind: HitKind::Click,
            at,
            link_index: Some(link),
            machine: false,
            network: None,
        }
    }

    /// machine, reason
    type Expected = (bool, &'static str);

    fn verdict(hit: &Hit<'_>, history: &[PastHit]) -> Expected {
        let v = judge(hit, history, &Thresholds::default(), &nets());
        (v.machine, v.reason)
    }

    fn machine(reason: &'static str) -> Expected {
        (true, reason)
    }

    fn person(reason: &'static str) -> Expected {
        (false, reason)
    }

    #[test]
    fn people_are_people_and_say_why() {
        let later = DELIVERED + 5 * MINUTE;
        for ua in [CHROME, IPHONE_SAFARI, OUTLOOK_DESKTOP] {
            assert_eq!(verdict(&open(ua), &[]), person("no_machine_signal"), "{ua}");
            let c = click(ua, 1, later + MINUTE);
            assert_eq!(
                verdict(&c, &[past_open(later)]),
                person("mail_client_then_browser"),
                "{ua}"
            );
        }
        for ua in [APPLE_MAIL_RENDER, MAC_MAIL] {
            assert_eq!(verdict(&open(ua), &[]), person("apple_mail_without_mpp"));
        }
    }

    #[test]
    fn rules() {
        let t0 = DELIVERED + 5 * MINUTE;
        let opened = vec![past_open(t0 - MINUTE)];
        let mut head = open(CHROME);
        head.method_head = true;
        let mut prefetch = click(CHROME, 0, t0);
        prefetch.prefetch = true;
        let mut no_ua = open(CHROME);
        no_ua.user_agent = None;
        let mut blank_ua = open(CHROME);
        blank_ua.user_agent = Some("  ");
        let mut soon = open(CHROME);
        soon.at = DELIVERED + 3 * SECOND;
        let mut soon_bare = open("Mozilla/5.0");
        soon_bare.at = DELIVERED + 3 * SECOND;
        let mut before = click(CHROME, 0, DELIVERED - SECOND);
        before.delivered_at = Some(DELIVERED);
        let soon_click = click(CHROME, 1, DELIVERED + 4 * SECOND);

        let rows: Vec<(&str, Hit<'_>, Vec<PastHit>, Expected)> = vec![
            ("HEAD", head, vec![], machine("head_request")),
            ("prefetch", prefetch, opened.clone(), machine("prefetch")),
            (
                "headless",
                open("Mozilla/5.0 HeadlessChrome/120.0"),
                vec![],
                machine("headless_user_agent"),
            ),
            (
                "office check",
                open("Mozilla/4.0 (compatible; ms-office; MSOffice 16)"),
                vec![],
                machine("scanner_user_agent"),
            ),
            (
                "curl",
                open("curl/8.5.0"),
                vec![],
                machine("scanner_user_agent"),
            ),
            (
                "cubot phone",
                open(
                    "Mozilla/5.0 (Linux; Android 10; CUBOT X30) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36",
                ),
                vec![],
                person("no_machine_signal"),
            ),
            (
                "apple network open",
                from(open(MAC_MAIL), "17.58.101.10"),
                vec![],
                machine("apple_mpp"),
            ),
            (
                "apple network open, v6",
                from(open(CHROME), "2620:149:a:1::5"),
                vec![],
                machine("apple_mpp"),
            ),
            (
                "apple employee's click",
                from(click(CHROME, 0, t0), "17.58.101.10"),
                opened.clone(),
                person("no_machine_signal"),
            ),
            (
                "EOP with a browser agent",
                from(click(CHROME, 0, t0), "40.107.22.51"),
                opened.clone(),
                machine("link_scanner_network"),
            ),
            ("no ua", no_ua, vec![], machine("missing_user_agent")),
            ("blank ua", blank_ua, vec![], machine("missing_user_agent")),
            (
                "quick but a browser",
                soon,
                vec![],
                person("no_machine_signal"),
            ),
            (
                "quick and no client",
                soon_bare,
                vec![],
                machine("too_soon_and_unknown_client"),
            ),
            (
                "slow bare agent",
                open("Mozilla/5.0"),
                vec![],
                person("no_machine_signal"),
            ),
            (
                "click before delivery, no open",
                before,
                vec![],
                person("click_implies_open"),
            ),
            (
                "quick second link",
                soon_click,
                vec![past_click(0, DELIVERED + 3 * SECOND)],
                machine("too_soon_and_link_sweep"),
            ),
            ("gmail", open(GMAIL), vec![], person("image_proxy_google")),
            (
                "click no open",
                click(CHROME, 0, t0),
                vec![],
                person("click_implies_open"),
            ),
            (
                "click after a machine open",
                click(CHROME, 0, t0),
                vec![PastHit {
                    machine: true,
                    ..past_open(t0 - MINUTE)
                }],
                person("click_implies_open"),
            ),
            (
                "click from another network after an open",
                from(click(CHROME, 0, t0), "198.51.100.9"),
                opened.clone(),
                person("no_machine_signal"),
            ),
            (
                "burst of 3",
                click(CHROME, 2, t0),
                vec![
                    past_open(t0 - MINUTE),
                    past_click(0, t0 - 1500),
                    past_click(1, t0 - 700),
                ],
                machine("all_links_at_once"),
            ),
            (
                "slow 3",
                click(CHROME, 2, t0),
                vec![
                    past_open(t0 - MINUTE),
                    past_click(0, t0 - 9 * SECOND),
                    past_click(1, t0 - 5 * SECOND),
                ],
                person("mail_client_then_browser"),
            ),
            (
                "same link twice",
                click(CHROME, 0, t0),
                vec![past_open(t0 - MINUTE), past_click(0, t0 - 500)],
                person("mail_client_then_browser"),
            ),
        ];
        for (name, hit, history, expected) in rows {
            assert_eq!(verdict(&hit, &history), expected, "{name}");
        }
    }

    #[test]
    fn a_click_implies_an_open_only_without_a_persons_open_before_it() {
        let t0 = DELIVERED + MINUTE;
        let c = click(CHROME, 0, t0);
        let n = nets();
        let t = Thresholds::default();
        assert!(judge(&c, &[], &t, &n).implied_open);
        assert!(!judge(&c, &[past_open(t0 - SECOND)], &t, &n).implied_open);
        // An open after the click is not before it.
        assert!(judge(&c, &[past_open(t0 + SECOND)], &t, &n).implied_open);
        // A machine's click implies nothing.
        let mut scanner = from(c, "40.107.1.1");
        scanner.at = t0;
        let v = judge(&scanner, &[], &t, &n);
        assert!(v.machine && !v.implied_open);
    }

    #[test]
    fn all_links_of_a_small_message() {
        let t0 = DELIVERED + MINUTE;
        let mut second = click(CHROME, 1, t0);
        second.links_in_message = 2;
        let history = [past_open(t0 - MINUTE), past_click(0, t0 - SECOND)];
        assert_eq!(verdict(&second, &history), machine("all_links_at_once"));
        // A one-link message cannot burst.
        let mut only = click(CHROME, 0, t0);
        only.links_in_message = 1;
        assert!(!verdict(&only, &[past_open(t0 - MINUTE), past_click(0, t0 - 100)]).0);
    }

    #[test]
    fn verdicts_are_not_retroactive() {
        // Three links clicked 0.5 s apart: the first two were judged when
        // they came and stay as they were; only the third sees the burst.
        let t0 = DELIVERED + MINUTE;
        let opened = past_open(t0 - MINUTE);
        let first = click(CHROME, 0, t0);
        assert!(!verdict(&first, &[opened]).0);
        let second = click(CHROME, 1, t0 + 500);
        assert!(!verdict(&second, &[opened, past_click(0, t0)]).0);
        let third = click(CHROME, 2, t0 + 1000);
        let history = [opened, past_click(0, t0), past_click(1, t0 + 500)];
        assert_eq!(verdict(&third, &history), machine("all_links_at_once"));
        // Judging the first click again with the later ones in the history
        // gives the same answer: later hits are not evidence about it.
        assert_eq!(verdict(&first, &history), verdict(&first, &[opened]));
    }

    #[test]
    fn prefetch_headers() {
        let headers = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
        };
        assert!(is_prefetch(headers(&[("purpose", "prefetch")])));
        assert!(is_prefetch(headers(&[(
            "sec-purpose",
            "prefetch;prerender"
        )])));
        assert!(is_prefetch(headers(&[(
            "sec-purpose",
            "Prefetch; anonymous-client-ip"
        )])));
        assert!(is_prefetch(headers(&[("x-moz", "prefetch")])));
        assert!(is_prefetch(headers(&[("x-purpose", "preview")])));
        assert!(!is_prefetch(headers(&[])));
        assert!(!is_prefetch(headers(&[("purpose", "navigate")])));
        assert!(!is_prefetch(headers(&[("x-moz", "prefetcher")])));
    }

    #[test]
    fn networks_are_compared_by_prefix() {
        let a = network_of("203.0.113.7".parse().unwrap());
        assert_eq!(a, network_of("203.0.113.200".parse().unwrap()));
        assert_ne!(a, network_of("203.0.114.7".parse().unwrap()));
        assert_eq!(a, network_of("::ffff:203.0.113.9".parse().unwrap()));
        let b = network_of("2001:db8:1:2::1".parse().unwrap());
        assert_eq!(b, network_of("2001:db8:1:ffff::9".parse().unwrap()));
        assert_ne!(b, network_of("2001:db8:2::1".parse().unwrap()));
    }

    #[test]
    fn thresholds_are_configurable_and_checked() {
        let t: Thresholds = toml::from_str(
            "min_after_delivery = \"1m\"\nburst_window = \"5s\"\nburst_links = 2\n\
             missing_user_agent = false",
        )
        .unwrap();
        assert_eq!(t.min_after_delivery.0, MINUTE);
        assert!(t.problems().is_empty());
        let n = nets();
        let mut bare = open("Mozilla/5.0");
        bare.at = DELIVERED + 30 * SECOND;
        assert!(
            judge(&bare, &[], &t, &n).machine,
            "within the longer minute"
        );
        assert!(!judge(&bare, &[], &Thresholds::default(), &n).machine);

        let burst = click(CHROME, 1, DELIVERED + 10 * MINUTE);
        let v = judge(
            &burst,
            &[past_click(0, DELIVERED + 10 * MINUTE - 4 * SECOND)],
            &t,
            &n,
        );
        assert_eq!(v.reason, "all_links_at_once");

        let mut no_ua = open(CHROME);
        no_ua.user_agent = None;
        assert!(!judge(&no_ua, &[], &t, &n).machine);

        assert_eq!(
            toml::from_str::<Thresholds>("").unwrap(),
            Thresholds::default()
        );
        assert!(toml::from_str::<Thresholds>("burst_windw = \"1s\"").is_err());
        let bad: Thresholds = toml::from_str(
            "click_without_open = true\nburst_links = 1\nburst_window = \"0s\"\n\
             min_after_delivery = \"1h\"",
        )
        .unwrap();
        let problems = bad.problems();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].starts_with("click_without_open: removed"));
    }
}
