//! Page cursors bound to their list, query and tenant (issue #15).
//!
//! A cursor is the last id of the page it follows and a tag: an HMAC-SHA256
//! under a key derived from the server secret, over the tenant, the list
//! (`events`, `deliveries`, ...), the canonical query
//! (`Filters::to_query_string`) and the id. A cursor taken from one query
//! and sent with another, or by another tenant, or altered, fails its
//! check and is a `400` naming `cursor`: it can never widen what a query
//! shows. Every node shares the server secret, so any node reads any
//! node's cursors.

use hmac::{Hmac, Mac};
use posthorn_core::TenantId;
use sha2::Sha256;

/// Bytes of the HMAC kept in a cursor: 128 bits.
const TAG_BYTES: usize = 16;

pub struct Cursors {
    key: [u8; 32],
}

impl std::fmt::Debug for Cursors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cursors(<key>)")
    }
}

impl Cursors {
    /// Cursors under a key of their own, derived from the server secret
    /// (so a cursor's tag is never also a valid tag of anything else).
    pub fn new(secret: &[u8]) -> Self {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(b"posthorn page cursors v1");
        Self {
            key: mac.finalize().into_bytes().into(),
        }
    }

    fn mac(&self, tenant: &TenantId, list: &str, query: &str, last: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        // Lengths first: no two different inputs run together the same.
        for part in [tenant.as_str(), list, query, last] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac
    }

    /// The cursor of the page after the one ending at `last`.
    pub fn issue(&self, tenant: &TenantId, list: &str, query: &str, last: &str) -> String {
        use base64::Engine;
        let tag = self.mac(tenant, list, query, last).finalize().into_bytes();
        format!(
            "{last}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tag[..TAG_BYTES])
        )
    }

    /// The last id a cursor names, if it was issued for this tenant, list
    /// and query.
    pub fn open<'c>(
        &self,
        tenant: &TenantId,
        list: &str,
        query: &str,
        cursor: &'c str,
    ) -> Option<&'c str> {
        use base64::Engine;
        let (last, tag) = cursor.rsplit_once('.')?;
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(tag)
            .ok()?;
        if tag.len() != TAG_BYTES {
            return None;
        }
        self.mac(tenant, list, query, last)
            .verify_truncated_left(&tag)
            .ok()?;
        Some(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_opens_only_for_its_tenant_list_and_query() {
        let cursors = Cursors::new(b"secret");
        let (a, b) = (TenantId::generate(), TenantId::generate());
        let c = cursors.issue(&a, "events", "kind=bounced", "id-1");
        assert_eq!(cursors.open(&a, "events", "kind=bounced", &c), Some("id-1"));
        assert_eq!(
            cursors.open(&b, "events", "kind=bounced", &c),
            None,
            "another tenant"
        );
        assert_eq!(
            cursors.open(&a, "events", "kind=opened", &c),
            None,
            "another query"
        );
        assert_eq!(
            cursors.open(&a, "deliveries", "kind=bounced", &c),
            None,
            "another list"
        );
        let forged = c.replacen("id-1", "id-2", 1);
        assert_eq!(
            cursors.open(&a, "events", "kind=bounced", &forged),
            None,
            "another id"
        );
        assert_eq!(
            Cursors::new(b"other").open(&a, "events", "kind=bounced", &c),
            None
        );
        for junk in ["", ".", "id-1", "id-1.", "id-1.!!", "id-1.AAAA"] {
            assert_eq!(
                cursors.open(&a, "events", "kind=bounced", junk),
                None,
                "{junk:?}"
            );
        }
    }
}
