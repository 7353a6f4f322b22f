//! Sending domains belong to tenants: who may send as a domain, and which
//! tenant's keys may sign for it.
//!
//! A tenant owns a domain and, through it, its subdomains (`example.com`
//! covers `news.example.com`), as DMARC's relaxed alignment does. Claims
//! never overlap between tenants: a domain can be claimed only when neither
//! it, nor a parent, nor a child belongs to another tenant, so "the owner of
//! a From domain" is always one tenant or none.

use crate::id::TenantId;

/// `domain` and each parent domain with at least two labels, nearest
/// first: `a.b.example.com` → `a.b.example.com`, `b.example.com`,
/// `example.com`. A single label (a top-level domain) is never a candidate:
/// nobody owns `com`.
pub fn domain_and_parents(domain: &str) -> Vec<&str> {
    let domain = domain.trim_end_matches('.');
    let mut candidates = Vec::new();
    let mut candidate = domain;
    while candidate.contains('.') {
        candidates.push(candidate);
        let Some((_, parent)) = candidate.split_once('.') else {
            break;
        };
        candidate = parent;
    }
    candidates
}

/// A registered sending domain and the tenant that owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainOwner {
    /// ASCII (punycode), lower-case, without a trailing dot.
    pub domain: String,
    pub tenant: TenantId,
}

/// Whether a tenant may send as a From domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderDomain {
    /// The tenant owns the domain (itself or through `owned`, a parent).
    Own { owned: String },
    /// Nobody owns it.
    Unowned,
    /// Another tenant owns it (itself or through `owned`, a parent).
    OwnedByOther { owned: String },
}

impl SenderDomain {
    /// Judges `from_domain` for `tenant`, given the owners of the domain and
    /// its parents (`owners` may hold unrelated domains; they are ignored).
    /// The nearest owned domain decides.
    pub fn judge(tenant: &TenantId, from_domain: &str, owners: &[DomainOwner]) -> Self {
        let from_domain = from_domain.trim_end_matches('.').to_ascii_lowercase();
        for candidate in domain_and_parents(&from_domain) {
            if let Some(owner) = owners.iter().find(|o| o.domain == candidate) {
                return if owner.tenant == *tenant {
                    SenderDomain::Own {
                        owned: owner.domain.clone(),
                    }
                } else {
                    SenderDomain::OwnedByOther {
                        owned: owner.domain.clone(),
                    }
                };
            }
        }
        SenderDomain::Unowned
    }

    /// Why a message from this domain is refused, or `None` when it may be
    /// sent. With `require_own_domain`, an unowned domain is refused too.
    pub fn refusal(&self, require_own_domain: bool) -> Option<SenderDomainRefusal> {
        match self {
            SenderDomain::Own { .. } => None,
            SenderDomain::Unowned if require_own_domain => Some(SenderDomainRefusal::NotOwned),
            SenderDomain::Unowned => None,
            SenderDomain::OwnedByOther { .. } => Some(SenderDomainRefusal::OwnedByOther),
        }
    }
}

/// The first of `domains` that `tenant` may not send as, and why, judged
/// against `owners` (the owners of those domains and their parents).
pub fn first_refused<'a>(
    tenant: &TenantId,
    domains: &'a [String],
    owners: &[DomainOwner],
    require_own_domain: bool,
) -> Option<(SenderDomainRefusal, &'a str)> {
    domains.iter().find_map(|domain| {
        SenderDomain::judge(tenant, domain, owners)
            .refusal(require_own_domain)
            .map(|refusal| (refusal, domain.as_str()))
    })
}

/// Why a tenant may not send as a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SenderDomainRefusal {
    /// The domain (or a parent) belongs to another tenant.
    #[error("the sender's domain belongs to another tenant")]
    OwnedByOther,
    /// `[policy] require_own_domain` is on and the tenant does not own the
    /// domain.
    #[error("the sender's domain is not one of this tenant's sending domains")]
    NotOwned,
}

impl SenderDomainRefusal {
    /// The stable error code clients see.
    pub fn code(self) -> &'static str {
        match self {
            SenderDomainRefusal::OwnedByOther => "domain_owned_by_another_tenant",
            SenderDomainRefusal::NotOwned => "domain_not_owned",
        }
    }
}

/// Whether `claimed` (a domain a tenant asks for) overlaps `existing` (a
/// domain already owned): the same domain, a parent or a child of it.
pub fn overlaps(claimed: &str, existing: &str) -> bool {
    claimed == existing
        || claimed.ends_with(&format!(".{existing}"))
        || existing.ends_with(&format!(".{claimed}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(domain: &str, tenant: &TenantId) -> DomainOwner {
        DomainOwner {
            domain: domain.into(),
            tenant: tenant.clone(),
        }
    }

    #[test]
    fn candidates_are_the_domain_and_its_parents_without_the_top_level() {
        assert_eq!(
            domain_and_parents("a.b.example.com."),
            ["a.b.example.com", "b.example.com", "example.com"]
        );
        assert_eq!(domain_and_parents("example.com"), ["example.com"]);
        assert!(domain_and_parents("localhost").is_empty());
        assert!(domain_and_parents("").is_empty());
    }

    #[test]
    fn the_nearest_owned_domain_decides() {
        let (a, b) = (TenantId::generate(), TenantId::generate());
        let owners = [owner("victim-a.example", &a), owner("b.example", &b)];
        let table = [
            (
                &b,
                "victim-a.example",
                SenderDomain::OwnedByOther {
                    owned: "victim-a.example".into(),
                },
            ),
            (
                &b,
                "sub.victim-a.example",
                SenderDomain::OwnedByOther {
                    owned: "victim-a.example".into(),
                },
            ),
            (
                &b,
                "SUB.Victim-A.example.",
                SenderDomain::OwnedByOther {
                    owned: "victim-a.example".into(),
                },
            ),
            (
                &a,
                "sub.victim-a.example",
                SenderDomain::Own {
                    owned: "victim-a.example".into(),
                },
            ),
            (
                &b,
                "news.b.example",
                SenderDomain::Own {
                    owned: "b.example".into(),
                },
            ),
            (&b, "elsewhere.example", SenderDomain::Unowned),
            // A look-alike suffix is not a subdomain.
            (&b, "notvictim-a.example", SenderDomain::Unowned),
        ];
        for (tenant, domain, expected) in table {
            assert_eq!(
                SenderDomain::judge(tenant, domain, &owners),
                expected,
                "{domain}"
            );
        }
    }

    #[test]
    fn refusals_follow_ownership_and_the_policy() {
        let other = SenderDomain::OwnedByOther {
            owned: "x.example".into(),
        };
        let own = SenderDomain::Own {
            owned: "x.example".into(),
        };
        assert_eq!(
            other.refusal(false),
            Some(SenderDomainRefusal::OwnedByOther)
        );
        assert_eq!(other.refusal(true), Some(SenderDomainRefusal::OwnedByOther));
        assert_eq!(own.refusal(true), None);
        assert_eq!(SenderDomain::Unowned.refusal(false), None);
        assert_eq!(
            SenderDomain::Unowned.refusal(true),
            Some(SenderDomainRefusal::NotOwned)
        );
    }

    #[test]
    fn overlap_is_same_parent_or_child_never_a_lookalike() {
        assert!(overlaps("example.com", "example.com"));
        assert!(overlaps("mail.example.com", "example.com"));
        assert!(overlaps("example.com", "mail.example.com"));
        assert!(!overlaps("badexample.com", "example.com"));
        assert!(!overlaps("example.com", "example.org"));
    }
}
