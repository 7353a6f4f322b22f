//! Person or machine: the verdict on one open or click, with the rule that
//! decided, so the numbers can be shown honestly (human-only beside all)
//! and every verdict explained. No hit is ever dropped for being a machine.
//!
//! The rules, first match decides the reason (`machine_reason`):
//!
//! | reason | kinds | signal |
//! |---|---|---|
//! | `head_request` | both | a `HEAD` request: link checkers and scanners ask whether a URL exists; a person's browser asks for the page |
//! | `headless_user_agent` | both | `HeadlessChrome`, `PhantomJS`, `Puppeteer`, `Playwright`, `Selenium`, `SlimerJS`: sandboxes that detonate links |
//! | `scanner_user_agent` | both | a security gateway or link checker names itself (Barracuda, Mimecast, Proofpoint, Safe Links / `BingPreview`, `Microsoft Office Existence Discovery`, Office's bare `ms-office` fetcher, Symantec, Trend Micro, IronPort, Forcepoint, FireEye, Sophos, ...), an HTTP library (`python-requests`, `curl`, `Go-http-client`, `Wget`, `okhttp`, `Java/`, `libwww`, ...) or a crawler (a word ending in `bot`, `crawler`, `spider`, a `scan...` word) |
//! | `apple_mpp` | both | Apple Mail Privacy Protection: the request comes from Apple's network `17.0.0.0/8` (opens only: an Apple employee may click) or carries MPP's stripped user agent: a bare `Mozilla/5.0`, or a WebKit string that stops at `(KHTML, like Gecko)` with none of the `Version/`, `Safari/`, `Mobile/` tokens a real Safari or Mail render adds. MPP fetches every image when the message arrives, read or not. Outlook has been seen sending the same stripped agent for a real read; we still judge it machine so that the human figures are a floor |
//! | `missing_user_agent` | both | no `User-Agent` at all (and not from Apple's network): every mail client and browser sends one |
//! | `too_soon_after_delivery` | both | within `min_after_delivery` (10 s) of delivery, or before it: gateways fetch everything while the message passes through them; a person has not seen it yet |
//! | `all_links_at_once` | clicks | this click, with the clicks before it within `burst_window` (2 s), covers every link of the message, or at least `burst_links` (3) different links: nobody reads that fast |
//! | `click_without_open` | clicks | open tracking was on and no open came before the click: the scanner follows links without rendering images. People who block images do this too, so it can be switched off (`click_without_open = false`) |
//!
//! Image proxies are not machines: Gmail, Yahoo and Outlook fetch the
//! pixel when the reader opens the message, so the open is real; only the
//! IP is the proxy's. They set `proxy: true` and, when no machine rule
//! fires, give the reason (`image_proxy_google` for `GoogleImageProxy` /
//! `ggpht.com`, `image_proxy_yahoo` for `YahooMailProxy`,
//! `image_proxy_outlook` for the Outlook mobile apps' fetcher,
//! `Outlook-iOS` / `Outlook-Android`) with `machine: false`. The timing
//! rules still apply to them.
//!
//! Verdicts are per hit, from the hits before it: a burst that is only seen
//! to be a burst at its third click does not turn the first two into
//! machines after the fact. Stored events are never edited (the event log is
//! append-only) and a verdict must not change with the order events are
//! replayed in; the third click carries the evidence.

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
    /// The message carried an open pixel: a click can then be expected to
    /// follow an open.
    pub open_tracking: bool,
}

/// A hit recorded earlier for the same delivery, with its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PastHit {
    pub kind: HitKind,
    pub at: Millis,
    pub link_index: Option<u32>,
    pub machine: bool,
}

/// The verdict on one hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Made by a machine, not a person.
    pub machine: bool,
    /// The machine rule that decided; for a human hit through an image
    /// proxy, the proxy; otherwise `None`.
    pub reason: Option<&'static str>,
    /// Fetched through a mail provider's image proxy: the IP is the
    /// proxy's, not the reader's.
    pub proxy: bool,
}

/// The configurable limits of the rules; a configuration type, so it lives
/// with the others in `posthorn-core` (`[tracking.machine]`).
pub use posthorn_core::config::MachineThresholds as Thresholds;

/// Judges one hit given the delivery's earlier hits (any order; hits after
/// `hit.at` are ignored, see the module doc).
pub fn judge(hit: &Hit<'_>, history: &[PastHit], thresholds: &Thresholds) -> Verdict {
    let ua = hit.user_agent.map(str::trim).filter(|u| !u.is_empty());
    let proxy = ua.and_then(image_proxy);
    let machine = machine_reason(hit, ua, history, thresholds);
    Verdict {
        machine: machine.is_some(),
        reason: machine.or(proxy),
        proxy: proxy.is_some(),
    }
}

fn machine_reason(
    hit: &Hit<'_>,
    ua: Option<&str>,
    history: &[PastHit],
    t: &Thresholds,
) -> Option<&'static str> {
    if hit.method_head {
        return Some("head_request");
    }
    let lower = ua.map(str::to_ascii_lowercase);
    if let Some(lower) = lower.as_deref() {
        if is_headless(lower) {
            return Some("headless_user_agent");
        }
        if is_scanner(lower) {
            return Some("scanner_user_agent");
        }
    }
    let apple_ip = hit.kind == HitKind::Open && hit.ip.is_some_and(is_apple_network);
    if apple_ip || lower.as_deref().is_some_and(is_mpp_user_agent) {
        return Some("apple_mpp");
    }
    if lower.is_none() && t.missing_user_agent {
        return Some("missing_user_agent");
    }
    if let Some(delivered) = hit.delivered_at
        && hit.at.saturating_sub(delivered) < t.min_after_delivery.0
    {
        return Some("too_soon_after_delivery");
    }
    let earlier = || history.iter().filter(|p| p.at <= hit.at);
    if hit.kind == HitKind::Click {
        if is_burst(hit, earlier(), t) {
            return Some("all_links_at_once");
        }
        if hit.open_tracking && t.click_without_open && !earlier().any(|p| p.kind == HitKind::Open)
        {
            return Some("click_without_open");
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

/// Apple's own network, 17.0.0.0/8 (and its IPv6 block 2620:149::/32 and
/// 2a01:b740::/32), where MPP's fetchers run.
fn is_apple_network(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[0] == 17,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            (s[0] == 0x2620 && s[1] == 0x0149) || (s[0] == 0x2a01 && s[1] == 0xb740)
        }
    }
}

/// MPP's prefetch user agent: `Mozilla/5.0` alone, or a WebKit string that
/// ends at the engine (`... AppleWebKit/605.1.15 (KHTML, like Gecko)`),
/// without the product tokens every real browser and Apple Mail render adds.
fn is_mpp_user_agent(lower: &str) -> bool {
    lower == "mozilla/5.0"
        || (lower.starts_with("mozilla/5.0 (")
            && lower.contains("applewebkit/")
            && lower.ends_with("(khtml, like gecko)"))
}

fn image_proxy(ua: &str) -> Option<&'static str> {
    let lower = ua.to_ascii_lowercase();
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
    const MPP: &str =
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)";
    const GMAIL: &str =
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)";
    const YAHOO: &str = "Mozilla/5.0 (compatible; YahooMailProxy; \
                         https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html)";

    const DELIVERED: Millis = 1_000_000_000;

    fn open(ua: &str) -> Hit<'_> {
        Hit {
            kind: HitKind::Open,
            method_head: false,
            ip: Some("203.0.113.7".parse().unwrap()),
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

    fn past_open(at: Millis) -> PastHit {
        PastHit {
            kind: HitKind::Open,
            at,
            link_index: None,
            machine: false,
        }
    }

    fn past_click(link: u32, at: Millis) -> PastHit {
        PastHit {
            kind: HitKind::Click,
            at,
            link_index: Some(link),
            machine: false,
        }
    }

    /// machine, reason, proxy
    type Expected = (bool, Option<&'static str>, bool);

    fn verdict(hit: &Hit<'_>, history: &[PastHit]) -> Expected {
        let v = judge(hit, history, &Thresholds::default());
        (v.machine, v.reason, v.proxy)
    }

    const HUMAN: Expected = (false, None, false);

    fn machine(reason: &'static str) -> Expected {
        (true, Some(reason), false)
    }

    #[test]
    fn people_are_people() {
        let later = DELIVERED + 5 * MINUTE;
        for ua in [CHROME, IPHONE_SAFARI, APPLE_MAIL_RENDER, OUTLOOK_DESKTOP] {
            assert_eq!(verdict(&open(ua), &[]), HUMAN, "{ua}");
            let c = click(ua, 1, later + MINUTE);
            assert_eq!(verdict(&c, &[past_open(later)]), HUMAN, "{ua}");
        }
    }

    #[test]
    fn table() {
        let t0 = DELIVERED + 5 * MINUTE;
        let opened = [past_open(t0 - MINUTE)];
        let mut head = open(CHROME);
        head.method_head = true;
        let mut apple_ip = open(CHROME);
        apple_ip.ip = Some("17.58.101.10".parse().unwrap());
        let mut apple_v6 = open(CHROME);
        apple_v6.ip = Some("2620:149:a:1::5".parse().unwrap());
        let mut no_ua = open(CHROME);
        no_ua.user_agent = None;
        let mut blank_ua = open(CHROME);
        blank_ua.user_agent = Some("  ");
        let mut soon = open(CHROME);
        soon.at = DELIVERED + 3 * SECOND;
        let mut before = open(CHROME);
        before.at = DELIVERED - SECOND;
        let mut unknown_delivery = open(CHROME);
        unknown_delivery.at = 0;
        unknown_delivery.delivered_at = None;

        let rows: Vec<(&str, Hit<'_>, Vec<PastHit>, Expected)> = vec![
            ("HEAD", head, vec![], machine("head_request")),
            (
                "headless",
                open("Mozilla/5.0 HeadlessChrome/120.0"),
                vec![],
                machine("headless_user_agent"),
            ),
            (
                "phantom",
                open("Mozilla/5.0 (Unknown; Linux x86_64) PhantomJS/2.1.1"),
                vec![],
                machine("headless_user_agent"),
            ),
            (
                "barracuda",
                open("Barracuda Sentinel (EE)"),
                vec![],
                machine("scanner_user_agent"),
            ),
            (
                "mimecast",
                open("Mimecast Ltd"),
                vec![],
                machine("scanner_user_agent"),
            ),
            (
                "bingpreview",
                open("Mozilla/5.0 (Windows NT 10.0) BingPreview/1.0b"),
                vec![],
                machine("scanner_user_agent"),
            ),
            (
                "office check",
                open("Mozilla/4.0 (compatible; ms-office; MSOffice 16)"),
                vec![],
                machine("scanner_user_agent"),
            ),
            (
                "existence",
                open("Microsoft Office Existence Discovery"),
                vec![],
                machine("scanner_user_agent"),
            ),
            (
                "requests",
                open("python-requests/2.31.0"),
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
                "go",
                open("Go-http-client/1.1"),
                vec![],
                machine("scanner_user_agent"),
            ),
            (
                "wget",
                open("Wget/1.21"),
                vec![],
                machine("scanner_user_agent"),
            ),
            (
                "okhttp",
                open("okhttp/4.12.0"),
                vec![],
                machine("scanner_user_agent"),
            ),
            (
                "googlebot",
                open("Mozilla/5.0 (compatible; Googlebot/2.1)"),
                vec![],
                machine("scanner_user_agent"),
            ),
            (
                "crawler",
                open("SomeCrawler 1.0"),
                vec![],
                machine("scanner_user_agent"),
            ),
            (
                "scan word",
                open("LinkScanner/2 (scan)"),
                vec![],
                machine("scanner_user_agent"),
            ),
            (
                "cubot phone",
                open(
                    "Mozilla/5.0 (Linux; Android 10; CUBOT X30) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36",
                ),
                vec![],
                HUMAN,
            ),
            ("apple ip", apple_ip, vec![], machine("apple_mpp")),
            ("apple ipv6", apple_v6, vec![], machine("apple_mpp")),
            ("mpp webkit ua", open(MPP), vec![], machine("apple_mpp")),
            (
                "mpp bare ua",
                open("Mozilla/5.0"),
                vec![],
                machine("apple_mpp"),
            ),
            ("no ua", no_ua, vec![], machine("missing_user_agent")),
            ("blank ua", blank_ua, vec![], machine("missing_user_agent")),
            ("too soon", soon, vec![], machine("too_soon_after_delivery")),
            (
                "before delivery",
                before,
                vec![],
                machine("too_soon_after_delivery"),
            ),
            ("no delivery time", unknown_delivery, vec![], HUMAN),
            (
                "gmail",
                open(GMAIL),
                vec![],
                (false, Some("image_proxy_google"), true),
            ),
            (
                "yahoo",
                open(YAHOO),
                vec![],
                (false, Some("image_proxy_yahoo"), true),
            ),
            (
                "outlook app",
                open("Outlook-iOS/709.2226530.prod.iphone (3.24.1)"),
                vec![],
                (false, Some("image_proxy_outlook"), true),
            ),
            (
                "click no open",
                click(CHROME, 0, t0),
                vec![],
                machine("click_without_open"),
            ),
            (
                "click after open",
                click(CHROME, 0, t0),
                opened.to_vec(),
                HUMAN,
            ),
            (
                "click after machine open",
                click(CHROME, 0, t0),
                vec![PastHit {
                    machine: true,
                    ..past_open(t0 - MINUTE)
                }],
                HUMAN,
            ),
            (
                "open after the click does not count",
                click(CHROME, 0, t0),
                vec![past_open(t0 + SECOND)],
                machine("click_without_open"),
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
                HUMAN,
            ),
            (
                "same link twice",
                click(CHROME, 0, t0),
                vec![past_open(t0 - MINUTE), past_click(0, t0 - 500)],
                HUMAN,
            ),
        ];
        for (name, hit, history, expected) in rows {
            assert_eq!(verdict(&hit, &history), expected, "{name}");
        }
    }

    #[test]
    fn proxy_still_meets_the_timing_rules() {
        let mut hit = open(GMAIL);
        hit.at = DELIVERED + SECOND;
        assert_eq!(
            verdict(&hit, &[]),
            (true, Some("too_soon_after_delivery"), true)
        );
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
        assert_eq!(
            verdict(&only, &[past_open(t0 - MINUTE), past_click(0, t0 - 100)]),
            HUMAN
        );
    }

    #[test]
    fn verdicts_are_not_retroactive() {
        // Three links clicked 0.5 s apart: the first two were judged when
        // they came and stay as they were; only the third sees the burst.
        let t0 = DELIVERED + MINUTE;
        let opened = past_open(t0 - MINUTE);
        let first = click(CHROME, 0, t0);
        assert_eq!(verdict(&first, &[opened]), HUMAN);
        let second = click(CHROME, 1, t0 + 500);
        assert_eq!(verdict(&second, &[opened, past_click(0, t0)]), HUMAN);
        let third = click(CHROME, 2, t0 + 1000);
        let history = [opened, past_click(0, t0), past_click(1, t0 + 500)];
        assert_eq!(verdict(&third, &history), machine("all_links_at_once"));
        // Judging the first click again with the later ones in the history
        // gives the same answer: later hits are not evidence about it.
        assert_eq!(verdict(&first, &history), HUMAN);
    }

    #[test]
    fn thresholds_are_configurable() {
        let t: Thresholds = toml::from_str(
            "min_after_delivery = \"1m\"\nburst_window = \"5s\"\nburst_links = 2\n\
             click_without_open = false\nmissing_user_agent = false",
        )
        .unwrap();
        assert_eq!(t.min_after_delivery.0, MINUTE);
        let mut hit = open(CHROME);
        hit.at = DELIVERED + 30 * SECOND;
        assert!(judge(&hit, &[], &t).machine);
        assert!(!judge(&hit, &[], &Thresholds::default()).machine);

        let c = click(CHROME, 0, DELIVERED + 10 * MINUTE);
        assert!(!judge(&c, &[], &t).machine, "click_without_open off");
        let burst = click(CHROME, 1, DELIVERED + 10 * MINUTE);
        let v = judge(
            &burst,
            &[past_click(0, DELIVERED + 10 * MINUTE - 4 * SECOND)],
            &t,
        );
        assert_eq!(v.reason, Some("all_links_at_once"));

        let mut no_ua = open(CHROME);
        no_ua.user_agent = None;
        assert!(!judge(&no_ua, &[], &t).machine);

        assert_eq!(
            toml::from_str::<Thresholds>("").unwrap(),
            Thresholds::default()
        );
        assert!(toml::from_str::<Thresholds>("burst_windw = \"1s\"").is_err());
    }
}
