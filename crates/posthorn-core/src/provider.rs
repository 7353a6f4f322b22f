//! The other email providers whose event webhooks Posthorn takes as inputs
//! (their verification and mapping are `posthorn-providers`').

use std::fmt;
use std::str::FromStr;

/// A provider whose event webhooks Posthorn takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    Postmark,
    Mailgun,
    Sendgrid,
    Ses,
}

impl Provider {
    pub const ALL: [Provider; 4] = [
        Provider::Postmark,
        Provider::Mailgun,
        Provider::Sendgrid,
        Provider::Ses,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Postmark => "postmark",
            Provider::Mailgun => "mailgun",
            Provider::Sendgrid => "sendgrid",
            Provider::Ses => "ses",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Provider {
    type Err = crate::event::UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Provider::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| crate::event::UnknownName(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_round_trip_through_their_names() {
        for p in Provider::ALL {
            assert_eq!(p.as_str().parse::<Provider>().unwrap(), p);
        }
        assert!("sparkpost".parse::<Provider>().is_err());
    }
}
