//! Addresses as they arrive from the API, SMTP and returned mail (with IDN):
//! parsing never panics, and what parses is stable: its written form parses
//! back to the same address.
#![no_main]

use libfuzzer_sys::fuzz_target;
use posthorn_core::address::{EmailAddress, Mailbox};
use posthorn_core::domain::domain_and_parents;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(address) = EmailAddress::parse(text) {
        let written = address.to_string();
        let again = EmailAddress::parse(&written)
            .unwrap_or_else(|e| panic!("{written:?} (from {text:?}) does not parse: {e:?}"));
        assert_eq!(again, address, "{text:?}");
        assert_eq!(again.normalized(), address.normalized());
        let _ = (address.can_receive_mail(), address.needs_smtputf8());
        let domain = address.domain().trim_end_matches('.');
        let parents = domain_and_parents(domain);
        if domain.contains('.') {
            assert_eq!(parents.first().copied(), Some(domain), "{text:?}");
        }
    }
    if let Ok(mailbox) = Mailbox::parse(text) {
        let again = EmailAddress::parse(&mailbox.address.to_string());
        assert_eq!(again.as_ref(), Ok(&mailbox.address), "{text:?}");
    }
    let _ = domain_and_parents(text);
});
