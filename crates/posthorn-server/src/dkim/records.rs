//! What a key publishes: the TXT record `<selector>._domainkey.<domain>`
//! with `v=DKIM1; k=rsa; p=<public key>`, and its zone-file line.

use super::DkimError;
use rsa::pkcs8::EncodePublicKey;

/// The DNS TXT record that publishes a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    /// `<selector>._domainkey.<domain>`
    pub name: String,
    /// `v=DKIM1; k=rsa; p=<base64 SubjectPublicKeyInfo>`
    pub value: String,
}

impl DnsRecord {
    /// The record as a zone-file line. One TXT string holds at most 255
    /// characters and a 2048-bit key's value is longer, so the value is
    /// split into several strings (resolvers join them again).
    pub fn zone_line(&self) -> String {
        let strings: Vec<String> = self
            .value
            .as_bytes()
            .chunks(255)
            .map(|chunk| format!("\"{}\"", String::from_utf8_lossy(chunk)))
            .collect();
        format!("{}. IN TXT {}", self.name, strings.join(" "))
    }
}

/// `<selector>._domainkey.<domain>`, refused when longer than a DNS name
/// may be (the record could never be published).
pub(super) fn record_name(domain: &str, selector: &str) -> Result<String, DkimError> {
    let name = format!("{selector}._domainkey.{domain}");
    if name.len() > posthorn_core::address::MAX_DOMAIN {
        return Err(DkimError::NameTooLong(name));
    }
    Ok(name)
}

/// The TXT value: the public key as base64 SubjectPublicKeyInfo (RFC 6376
/// §3.6.1 `p=`).
pub(super) fn record_value(public: &rsa::RsaPublicKey) -> Result<String, DkimError> {
    use base64::Engine;
    let spki = public.to_public_key_der().map_err(|e| DkimError::Crypto {
        doing: "encoding the public key",
        reason: e.to_string(),
    })?;
    Ok(format!(
        "v=DKIM1; k=rsa; p={}",
        base64::engine::general_purpose::STANDARD.encode(spki.as_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zone_line_splits_the_value_into_255_character_strings() {
        let record = DnsRecord {
            name: "s._domainkey.example.com".into(),
            value: "x".repeat(300),
        };
        assert_eq!(
            record.zone_line(),
            format!(
                "s._domainkey.example.com. IN TXT \"{}\" \"{}\"",
                "x".repeat(255),
                "x".repeat(45)
            )
        );
    }

    /// The line is for pasting into a zone file: a name server's parser
    /// (hickory's) reads it back as one TXT record whose strings join to
    /// the value, `;` and blanks included.
    #[test]
    fn the_zone_line_reads_back_with_a_zone_file_parser() {
        use hickory_resolver::proto::rr::{Name, RData};
        use hickory_resolver::proto::serialize::txt::Parser;
        let record = DnsRecord {
            name: "posthorn._domainkey.sender.example".into(),
            value: format!("v=DKIM1; k=rsa; p={}", "AbC+/9".repeat(70)),
        };
        let text = format!("$TTL 300\n{}\n", record.zone_line());
        let (_, records) = Parser::new(text, None, Some(Name::root())).parse().unwrap();
        let txt: Vec<&RData> = records
            .values()
            .flat_map(|set| set.records_without_rrsigs())
            .map(|r| {
                assert_eq!(r.name.to_ascii(), "posthorn._domainkey.sender.example.");
                &r.data
            })
            .collect();
        let [RData::TXT(txt)] = txt[..] else {
            panic!("one TXT record: {txt:?}")
        };
        let joined: Vec<u8> = txt
            .txt_data
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect();
        assert_eq!(txt.txt_data.len(), 2, "split at 255 characters");
        assert_eq!(String::from_utf8(joined).unwrap(), record.value);
    }
}
