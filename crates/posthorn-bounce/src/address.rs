//! Email addresses as they appear in returned mail: `<a@b>`, `"a@b"`,
//! `rfc822;a@b`, `a@b...` (Sendmail), `mailto:a@b`, inside prose.

use posthorn_core::address::BOUNCE_PREFIX;

/// The address in `raw`, without brackets, quotes or trailing punctuation,
/// the domain lower-cased; `None` if there is no plausible address.
pub fn clean(raw: &str) -> Option<String> {
    let found = find_all(raw).into_iter().next()?;
    Some(found)
}

/// Every plausible address in `text`, in order, each once, cleaned as
/// [`clean`] does.
pub fn find_all(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let bytes = text.as_bytes();
    let mut search = 0;
    while let Some(offset) = text.get(search..).and_then(|t| t.find('@')) {
        let at = search + offset;
        search = at + 1;
        let mut start = at;
        // A quoted local part (`"a..b"@example.org`, RFC 5321) is kept
        // whole, quotes included: without them it is another address.
        let quoted = (at >= 2 && bytes[at - 1] == b'"')
            .then(|| text[..at - 1].rfind('"'))
            .flatten()
            .filter(|&open| {
                at - 1 - open > 1
                    && at - 1 - open <= 64
                    && text[open + 1..at - 1].bytes().all(|b| {
                        b.is_ascii_graphic() && b != b'"' && b != b'<' && b != b'>' && b != b'@'
                    })
            });
        if let Some(open) = quoted {
            start = open;
        } else {
            while start > 0 && is_local_char(bytes[start - 1]) {
                start -= 1;
            }
        }
        let mut end = at + 1;
        while end < bytes.len() && is_domain_char(bytes[end]) {
            end += 1;
        }
        let local = if quoted.is_some() {
            &text[start..at]
        } else {
            text[start..at].trim_start_matches(['.', '\'', '`'])
        };
        let local = strip_ci_prefix(local, "mailto:");
        let local = strip_ci_prefix(local, "rfc822;");
        let domain = text[at + 1..end].trim_end_matches(['.', '-']);
        if local.is_empty() || local.len() > 128 || !valid_domain(domain) {
            continue;
        }
        let address = format!("{}@{}", local, domain.to_ascii_lowercase());
        if !out.contains(&address) {
            out.push(address);
        }
        search = end.max(search);
    }
    out
}

fn strip_ci_prefix<'a>(s: &'a str, prefix: &str) -> &'a str {
    match s.get(..prefix.len()) {
        Some(head) if head.eq_ignore_ascii_case(prefix) => &s[prefix.len()..],
        _ => s,
    }
}

fn is_local_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b)
}

fn is_domain_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_'
}

/// A host name with a dot (or an address literal is not accepted here).
fn valid_domain(domain: &str) -> bool {
    domain.len() >= 3
        && domain.len() <= 255
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.contains("..")
        && domain
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.len() >= 2 && tld.bytes().any(|b| b.is_ascii_alphabetic()))
}

/// The token of a Posthorn VERP address `bounces+TOKEN@domain` in `text`
/// (TOKEN is lower-case base32, `[a-z2-7]+`).
pub fn verp_token(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let mut search = 0;
    while let Some(offset) = lower.get(search..).and_then(|t| t.find(BOUNCE_PREFIX)) {
        let at = search + offset;
        search = at + 1;
        let before_ok =
            at == 0 || !is_local_char(lower.as_bytes()[at - 1]) || lower.as_bytes()[at - 1] == b'.';
        if !before_ok {
            continue;
        }
        // The original text: a token is lower-case, so upper case is no token.
        let rest = &text[at + BOUNCE_PREFIX.len()..];
        let token: &str = &rest[..rest
            .bytes()
            .position(|b| !matches!(b, b'a'..=b'z' | b'2'..=b'7'))
            .unwrap_or(rest.len())];
        if !token.is_empty() && rest[token.len()..].starts_with('@') {
            return Some(token.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_common_wrappings() {
        assert_eq!(
            clean("rfc822; <Kijitora@Example.JP>").as_deref(),
            Some("Kijitora@example.jp")
        );
        assert_eq!(
            clean("\"neko@example.com\"...").as_deref(),
            Some("neko@example.com")
        );
        assert_eq!(clean("mailto:a@b.example.").as_deref(), Some("a@b.example"));
        assert_eq!(clean("no address here"), None);
        assert_eq!(
            clean("<\"a..b\"@Example.org>...").as_deref(),
            Some("\"a..b\"@example.org")
        );
        assert_eq!(clean("\"a@b.example\"").as_deref(), Some("a@b.example"));
    }

    #[test]
    fn verp() {
        assert_eq!(
            verp_token("To: <bounces+abc234@mail.example.com>").as_deref(),
            Some("abc234")
        );
        assert_eq!(verp_token("bounces+ABC@x.example"), None);
        assert_eq!(verp_token("xbounces+abc@x.example"), None);
    }
}
