//! The enhanced mail system status code of RFC 3463 (`class.subject.detail`,
//! e.g. `5.1.1`): one type from the SMTP reply reader through the bounce
//! classifier to the stored event, parsed once where it enters.
//!
//! It lives here, in the pure core, because every crate that handles one
//! (the SMTP client and server, the bounce rules, the events) already
//! depends on the core or may: the core does no I/O and is small.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// An enhanced status code, valid by construction (RFC 3463 §2):
///
/// ```text
/// status-code = class "." subject "." detail
/// class       = "2" / "4" / "5"
/// subject     = 1*3digit
/// detail      = 1*3digit
/// ```
///
/// with no blanks inside and no leading zeros in a sub-code (`5.01.1` is not
/// a code). It reads and writes (`Display`, `FromStr`, serde) as that text,
/// so stored events and API output carry the string they always did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EnhancedCode {
    class: u8,
    subject: u16,
    detail: u16,
}

/// Why a text is not an enhanced status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not an enhanced status code (class.subject.detail: 2, 4 or 5, then two numbers of 1 to 3 digits without leading zeros)"
)]
pub struct InvalidEnhancedCode(pub String);

impl EnhancedCode {
    /// The code `class.subject.detail`, if it is one: class 2, 4 or 5,
    /// subject and detail below 1000.
    pub const fn new(class: u8, subject: u16, detail: u16) -> Option<Self> {
        if matches!(class, 2 | 4 | 5) && subject < 1000 && detail < 1000 {
            Some(Self {
                class,
                subject,
                detail,
            })
        } else {
            None
        }
    }

    /// A code written into the program, such as the ones our own SMTP
    /// server sends: `EnhancedCode::of(5, 7, 1)`. Panics if it does not
    /// exist, a mistake of the program (in a `const`, one found when it
    /// compiles); codes that come from outside go through [`Self::new`] or
    /// [`Self::parse`].
    pub const fn of(class: u8, subject: u16, detail: u16) -> Self {
        match Self::new(class, subject, detail) {
            Some(code) => code,
            None => panic!("not an enhanced status code"),
        }
    }

    /// 2 (success), 4 (persistent transient failure) or 5 (permanent).
    pub const fn class(self) -> u8 {
        self.class
    }

    /// What the status is about: 1 addressing, 2 mailbox, 3 mail system,
    /// 4 network and routing, 5 protocol, 6 content, 7 security, 0 other.
    pub const fn subject(self) -> u16 {
        self.subject
    }

    pub const fn detail(self) -> u16 {
        self.detail
    }

    /// 4.x.x: sending again later may succeed.
    pub const fn is_transient(self) -> bool {
        self.class == 4
    }

    /// The same code in another class (`5.1.1` -> `4.1.1`); `None` when
    /// `class` is not 2, 4 or 5.
    pub const fn with_class(self, class: u8) -> Option<Self> {
        Self::new(class, self.subject, self.detail)
    }

    /// The same code with another detail (`5.7.26` -> `5.7.0`).
    pub const fn with_detail(self, detail: u16) -> Option<Self> {
        Self::new(self.class, self.subject, detail)
    }

    /// The whole of `text` as a code: `5.1.1`, not ` 5.1.1` or `5.1.1.`.
    pub fn parse(text: &str) -> Option<Self> {
        let (code, len) = Self::parse_prefix(text.as_bytes())?;
        (len == text.len()).then_some(code)
    }

    /// A code at the start of `bytes`, and its length in bytes. What follows
    /// is not looked at: whether `5.1.1x` ends a code there is the caller's
    /// judgement (a reply line, a DSN field and free text differ).
    pub fn parse_prefix(bytes: &[u8]) -> Option<(Self, usize)> {
        let class = match bytes.first()? {
            b'2' => 2,
            b'4' => 4,
            b'5' => 5,
            _ => return None,
        };
        if bytes.get(1) != Some(&b'.') {
            return None;
        }
        let (subject, subject_len) = sub_code(&bytes[2..])?;
        let detail_at = 2 + subject_len;
        if bytes.get(detail_at) != Some(&b'.') {
            return None;
        }
        let (detail, detail_len) = sub_code(&bytes[detail_at + 1..])?;
        let code = Self::new(class, subject, detail)?;
        Some((code, detail_at + 1 + detail_len))
    }
}

/// One to three ASCII digits at the start of `bytes`, the first not a zero
/// unless it is the only one; any more digits make it no sub-code at all.
fn sub_code(bytes: &[u8]) -> Option<(u16, usize)> {
    let len = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if !(1..=3).contains(&len) || (len > 1 && bytes[0] == b'0') {
        return None;
    }
    let value = bytes[..len]
        .iter()
        .fold(0u16, |acc, b| acc * 10 + u16::from(b - b'0'));
    Some((value, len))
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

impl FromStr for EnhancedCode {
    type Err = InvalidEnhancedCode;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text).ok_or_else(|| InvalidEnhancedCode(text.to_owned()))
    }
}

impl Serialize for EnhancedCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EnhancedCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_codes_read_and_print_the_same() {
        for text in [
            "2.0.0",
            "2.1.5",
            "4.4.7",
            "5.1.1",
            "5.7.26",
            "4.7.650",
            "5.0.900",
            "5.999.999",
            "4.0.0",
            "5.10.0",
            "5.100.1",
        ] {
            let code: EnhancedCode = text.parse().unwrap();
            assert_eq!(code.to_string(), text);
        }
        let code = EnhancedCode::parse("5.7.26").unwrap();
        assert_eq!((code.class(), code.subject(), code.detail()), (5, 7, 26));
        assert_eq!(EnhancedCode::new(5, 7, 26), Some(code));
        assert_eq!(EnhancedCode::of(5, 7, 26), code);
    }

    #[test]
    fn invalid_codes_are_refused() {
        for text in [
            "", "6.0.0", "1.1.1", "3.1.1", "0.0.0", "7.7.1", "5.1", "5.1.", "5..1", ".5.1.1",
            "5.1.1.", "5.1.1.1", "5.01.1", "5.1.01", "5.00.0", "05.1.1", "55.1.1", "5.1000.1",
            "5.1.1000", "5.1234.1", "5.a.1", "5.1.b", "x.1.1", " 5.1.1", "5.1.1 ", "5. 1.1",
            "5.1.1x", "5.1.-1", "5.+1.1", "５.1.1",
        ] {
            assert_eq!(EnhancedCode::parse(text), None, "{text:?}");
            assert!(text.parse::<EnhancedCode>().is_err(), "{text:?}");
        }
        assert_eq!(EnhancedCode::new(6, 0, 0), None);
        assert_eq!(EnhancedCode::new(5, 1000, 0), None);
        assert_eq!(EnhancedCode::new(5, 0, 1000), None);
    }

    #[test]
    fn a_prefix_is_read_up_to_where_the_code_ends() {
        let code = EnhancedCode::new(5, 1, 1).unwrap();
        assert_eq!(EnhancedCode::parse_prefix(b"5.1.1 user"), Some((code, 5)));
        assert_eq!(EnhancedCode::parse_prefix(b"5.1.1."), Some((code, 5)));
        assert_eq!(EnhancedCode::parse_prefix(b"5.1.1000"), None);
        assert_eq!(EnhancedCode::parse_prefix(b"5.1.01"), None);
    }

    #[test]
    fn serde_is_the_text() {
        let code = EnhancedCode::new(4, 7, 1).unwrap();
        assert_eq!(serde_json::to_string(&code).unwrap(), r#""4.7.1""#);
        let back: EnhancedCode = serde_json::from_str(r#""4.7.1""#).unwrap();
        assert_eq!(back, code);
        let text = serde_json::Value::String("4.7.1".into());
        assert_eq!(serde_json::from_value::<EnhancedCode>(text).unwrap(), code);
        assert!(serde_json::from_str::<EnhancedCode>(r#""4.07.1""#).is_err());
        assert!(serde_json::from_str::<EnhancedCode>("471").is_err());
    }
}
