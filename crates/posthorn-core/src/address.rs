//! Email address syntax (RFC 5321/5322 `addr-spec`, RFC 6531 UTF-8 local
//! parts, IDN domains) and the few facts the policy needs about an address.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Longest local part in octets (RFC 5321 §4.5.3.1.1).
pub const MAX_LOCAL_PART: usize = 64;
/// Longest address usable in a `RCPT TO` path (RFC 5321 §4.5.3.1.3 less `<>`).
pub const MAX_ADDRESS: usize = 254;
/// Longest domain name in its ASCII form.
pub const MAX_DOMAIN: usize = 253;
/// Longest display name we accept.
pub const MAX_DISPLAY_NAME: usize = 256;

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("the address is empty")]
    Empty,
    /// CR, LF or another control character: a header injection attempt.
    #[error("the address contains a line break or control character")]
    ControlCharacter,
    #[error("the address has no `@`")]
    MissingAt,
    #[error("the local part (before `@`) is not valid")]
    InvalidLocalPart,
    #[error("the local part is longer than 64 octets")]
    LocalPartTooLong,
    #[error("the domain is not valid")]
    InvalidDomain,
    #[error("the domain is longer than 253 octets")]
    DomainTooLong,
    #[error("the address is longer than 254 octets")]
    TooLong,
    #[error("the display name is not valid")]
    InvalidDisplayName,
}

impl AddressError {
    /// The API error code: control characters are reported as header
    /// injection so that they stand out in logs and client code.
    pub fn code(&self) -> &'static str {
        match self {
            AddressError::ControlCharacter => "header_injection",
            _ => "invalid_address",
        }
    }
}

/// A syntactically valid address: local part as given, domain in its ASCII
/// (punycode) form, lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress {
    local: String,
    domain: String,
}

impl EmailAddress {
    /// Parses a bare `addr-spec` (`user@example.com`).
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        if input.is_empty() {
            return Err(AddressError::Empty);
        }
        if input.chars().any(char::is_control) {
            return Err(AddressError::ControlCharacter);
        }
        let (local, domain) = input.rsplit_once('@').ok_or(AddressError::MissingAt)?;
        validate_local_part(local)?;
        let domain = normalize_domain(domain)?;
        let address = Self {
            local: local.to_owned(),
            domain,
        };
        if address.to_string().len() > MAX_ADDRESS {
            return Err(AddressError::TooLong);
        }
        Ok(address)
    }

    pub fn local_part(&self) -> &str {
        &self.local
    }

    /// The domain in ASCII form (IDN converted to punycode), lower-cased.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The form used to compare addresses (contacts, suppressions,
    /// de-duplication): the whole address lower-cased. Local parts are
    /// case-sensitive in theory and never in practice; treating
    /// `Bob@x` and `bob@x` as one person is what senders expect.
    pub fn normalized(&self) -> String {
        self.to_string().to_lowercase()
    }

    /// Whether mail to this domain can be delivered at all: a domain needs a
    /// dot, and the reserved `.invalid` and `.localhost` names (RFC 6761)
    /// never receive mail.
    pub fn can_receive_mail(&self) -> bool {
        let d = self.domain.trim_end_matches('.');
        d.contains('.') && !d.ends_with(".invalid") && !d.ends_with(".localhost")
    }

    /// Whether the local part needs SMTPUTF8 (RFC 6531).
    pub fn needs_smtputf8(&self) -> bool {
        !self.local.is_ascii()
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// Written as its text (`local@ascii-domain`).
impl Serialize for EmailAddress {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Read back through [`EmailAddress::parse`]: a text that is not a valid
/// address is an error, never an address that skipped the rules.
impl<'de> Deserialize<'de> for EmailAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        EmailAddress::parse(&text).map_err(|e| serde::de::Error::custom(format!("{text:?}: {e}")))
    }
}

/// An address with an optional display name: `"Alice" <alice@example.com>`,
/// `Alice <alice@example.com>` or `alice@example.com`.
///
/// Serialized as `{"name": "Alice", "address": "alice@example.com"}` (the
/// name unquoted, `null` when there is none): the form a message's To and Cc
/// lists are stored in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mailbox {
    pub name: Option<String>,
    pub address: EmailAddress,
}

impl Mailbox {
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        if input.chars().any(char::is_control) {
            return Err(AddressError::ControlCharacter);
        }
        let input = input.trim();
        if input.is_empty() {
            return Err(AddressError::Empty);
        }
        let Some(inner) = input.strip_suffix('>') else {
            return Ok(Self {
                name: None,
                address: EmailAddress::parse(input)?,
            });
        };
        let open = inner.rfind('<').ok_or(AddressError::InvalidLocalPart)?;
        let address = EmailAddress::parse(&inner[open + 1..])?;
        let raw_name = inner[..open].trim();
        let name = if raw_name.is_empty() {
            None
        } else {
            Some(parse_display_name(raw_name)?)
        };
        Ok(Self { name, address })
    }
}

fn parse_display_name(raw: &str) -> Result<String, AddressError> {
    let name = match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(quoted) => {
            let mut out = String::new();
            let mut chars = quoted.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => out.push(chars.next().ok_or(AddressError::InvalidDisplayName)?),
                    '"' => return Err(AddressError::InvalidDisplayName),
                    c => out.push(c),
                }
            }
            out
        }
        None => {
            if raw.contains(['"', '<', '>']) {
                return Err(AddressError::InvalidDisplayName);
            }
            raw.to_owned()
        }
    };
    if name.len() > MAX_DISPLAY_NAME {
        return Err(AddressError::InvalidDisplayName);
    }
    Ok(name)
}

/// RFC 5322 `atext`, plus any non-ASCII character (RFC 6531).
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

fn validate_local_part(local: &str) -> Result<(), AddressError> {
    if local.is_empty() {
        return Err(AddressError::InvalidLocalPart);
    }
    if local.len() > MAX_LOCAL_PART {
        return Err(AddressError::LocalPartTooLong);
    }
    if let Some(quoted) = local.strip_prefix('"').and_then(|l| l.strip_suffix('"')) {
        // quoted-string: printable characters, `\` escapes the next one.
        let mut chars = quoted.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    chars.next().ok_or(AddressError::InvalidLocalPart)?;
                }
                '"' => return Err(AddressError::InvalidLocalPart),
                _ => {}
            }
        }
        return Ok(());
    }
    // dot-atom: atoms separated by single dots, no leading or trailing dot.
    if local
        .split('.')
        .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
    {
        Ok(())
    } else {
        Err(AddressError::InvalidLocalPart)
    }
}

/// Converts a domain to its ASCII form (UTS #46, so `bücher.example` becomes
/// `xn--bcher-kva.example`) and checks every label.
fn normalize_domain(domain: &str) -> Result<String, AddressError> {
    if domain.is_empty() || domain.starts_with('[') {
        // Address literals are refused: nobody sends newsletters to an IP.
        return Err(AddressError::InvalidDomain);
    }
    let ascii = idna::domain_to_ascii(domain).map_err(|_| AddressError::InvalidDomain)?;
    if ascii.len() > MAX_DOMAIN {
        return Err(AddressError::DomainTooLong);
    }
    let labels_ok = ascii.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    if !labels_ok {
        return Err(AddressError::InvalidDomain);
    }
    Ok(ascii)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_addresses() {
        for (input, normalized) in [
            ("user@example.com", "user@example.com"),
            ("First.Last+tag@Example.COM", "first.last+tag@example.com"),
            ("\"john doe\"@example.com", "\"john doe\"@example.com"),
            ("o'brien@example.ie", "o'brien@example.ie"),
            ("user@bücher.example", "user@xn--bcher-kva.example"),
            ("josé@example.es", "josé@example.es"),
            (
                "x@sub.domain-with-dash.example",
                "x@sub.domain-with-dash.example",
            ),
        ] {
            let a = EmailAddress::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(a.normalized(), normalized, "{input}");
        }
    }

    #[test]
    fn refuses_invalid_addresses_with_the_right_error() {
        let long_local = format!("{}@example.com", "a".repeat(65));
        let long_domain = format!("a@{}.com", vec!["b".repeat(60); 5].join("."));
        let long_total = format!(
            "{}@{}.com",
            "a".repeat(64),
            vec!["b".repeat(60); 4].join(".")
        );
        for (input, want) in [
            ("", AddressError::Empty),
            ("userexample.com", AddressError::MissingAt),
            ("@example.com", AddressError::InvalidLocalPart),
            ("user@", AddressError::InvalidDomain),
            ("us er@example.com", AddressError::InvalidLocalPart),
            ("user.@example.com", AddressError::InvalidLocalPart),
            ("a..b@example.com", AddressError::InvalidLocalPart),
            ("user@exa_mple.com", AddressError::InvalidDomain),
            ("user@-example.com", AddressError::InvalidDomain),
            ("user@example..com", AddressError::InvalidDomain),
            ("user@[127.0.0.1]", AddressError::InvalidDomain),
            (
                "user@example.com\r\nBcc: victim@example.org",
                AddressError::ControlCharacter,
            ),
            ("user\n@example.com", AddressError::ControlCharacter),
            (long_local.as_str(), AddressError::LocalPartTooLong),
            (long_domain.as_str(), AddressError::DomainTooLong),
            (long_total.as_str(), AddressError::TooLong),
        ] {
            assert_eq!(EmailAddress::parse(input), Err(want.clone()), "{input:?}");
        }
        assert_eq!(AddressError::ControlCharacter.code(), "header_injection");
    }

    #[test]
    fn mailboxes_with_display_names() {
        let m = Mailbox::parse("Alice Example <alice@example.com>").unwrap();
        assert_eq!(m.name.as_deref(), Some("Alice Example"));
        assert_eq!(m.address.to_string(), "alice@example.com");
        let m = Mailbox::parse("\"Doe, Jane \\\"JD\\\"\" <jane@example.com>").unwrap();
        assert_eq!(m.name.as_deref(), Some("Doe, Jane \"JD\""));
        assert_eq!(Mailbox::parse("<bob@example.com>").unwrap().name, None);
        assert_eq!(
            Mailbox::parse("Eve\r\n <eve@example.com>"),
            Err(AddressError::ControlCharacter)
        );
        assert!(Mailbox::parse("Eve <eve@example.com").is_err());
    }

    /// The stored form of a To/Cc entry reads back as the same mailbox, and
    /// a stored address that is not one is an error, not a guess.
    #[test]
    fn mailboxes_round_trip_through_their_stored_form() {
        for input in [
            "Alice Example <alice@example.com>",
            "\"Doe, Jane \\\"JD\\\"\" <jane@example.com>",
            "josé@bücher.example",
            "Zoë Ärger <\"john doe\"@Example.COM>",
        ] {
            let m = Mailbox::parse(input).unwrap();
            let text = serde_json::to_string(&m).unwrap();
            assert_eq!(serde_json::from_str::<Mailbox>(&text).unwrap(), m, "{text}");
        }
        let stored = r#"{"address":"rcpt@xn--bcher-kva.example","name":null}"#;
        let m: Mailbox = serde_json::from_str(stored).unwrap();
        assert_eq!(
            (m.name, m.address.to_string()),
            (None, "rcpt@xn--bcher-kva.example".into())
        );
        for bad in [
            r#"{"name":null,"address":"no-at-sign"}"#,
            r#"{"name":null,"address":"a@b.example\r\nBcc: x@y.example"}"#,
            r#"{"name":"Alice"}"#,
            r#""alice@example.com""#,
        ] {
            assert!(serde_json::from_str::<Mailbox>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn deliverability_of_reserved_names() {
        let can = |a: &str| EmailAddress::parse(a).unwrap().can_receive_mail();
        assert!(can("a@example.com"));
        assert!(!can("a@localhost"));
        assert!(!can("a@mail.invalid"));
        assert!(!can("a@app.localhost"));
        assert!(!can("a@intranet"));
    }
}

/// The local-part prefix of a VERP return path, `bounces+TOKEN@DOMAIN`: the
/// delivery workers write it, the inbound MX accepts mail for it, and the
/// bounce parser looks for it in returned reports.
pub const BOUNCE_PREFIX: &str = "bounces+";

/// The local-part prefix of a copy's `List-Unsubscribe` mailto address,
/// `unsubscribe+TOKEN@DOMAIN` (TOKEN is the delivery's VERP token).
pub const UNSUBSCRIBE_PREFIX: &str = "unsubscribe+";

/// The VERP return path carrying `token`.
pub fn bounce_address(token: &str, domain: &str) -> String {
    format!("{BOUNCE_PREFIX}{token}@{domain}")
}

/// The unsubscribe mailto address carrying `token`.
pub fn unsubscribe_address(token: &str, domain: &str) -> String {
    format!("{UNSUBSCRIBE_PREFIX}{token}@{domain}")
}

#[cfg(test)]
mod our_address_tests {
    use super::*;

    #[test]
    fn our_addresses_carry_their_token() {
        assert_eq!(
            bounce_address("abc234", "mail.example"),
            "bounces+abc234@mail.example"
        );
        assert_eq!(
            unsubscribe_address("abc234", "mail.example"),
            "unsubscribe+abc234@mail.example"
        );
    }
}
