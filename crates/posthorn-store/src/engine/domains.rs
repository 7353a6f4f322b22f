//! Sending domains: a tenant claims a domain unless it, a parent or a
//! child of it belongs to another tenant.

use super::WriteTx;
use crate::StoreResult;
use crate::records::{DomainClaim, SendingDomain};
use posthorn_core::domain::{domain_and_parents, overlaps};
use posthorn_core::{Millis, TenantId};

pub(crate) fn claim_sending_domain(
    tx: &mut dyn WriteTx,
    tenant: &TenantId,
    domain: &str,
    now: Millis,
) -> StoreResult<DomainClaim> {
    if let Some(existing) = tx.sending_domain(domain)? {
        return Ok(if existing.tenant_id == *tenant {
            DomainClaim::AlreadyOwned(existing)
        } else {
            DomainClaim::Conflict {
                owned: existing.domain,
            }
        });
    }
    // Parents and children of the domain that another tenant owns. A
    // tenant has a few sending domains: a scan is cheap, and children are
    // not contiguous in any index order.
    let taken = tx
        .domains_of_other_tenants(tenant)?
        .into_iter()
        .find(|other| overlaps(domain, other));
    if let Some(owned) = taken {
        return Ok(DomainClaim::Conflict { owned });
    }
    let claimed = SendingDomain {
        domain: domain.to_owned(),
        tenant_id: tenant.clone(),
        created_at: now,
    };
    tx.insert_sending_domain(&claimed)?;
    Ok(DomainClaim::Added(claimed))
}

/// `domain_and_parents` of every domain, each once, as owned strings (a
/// lookup may run on another thread).
pub(crate) fn candidates(domains: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    for domain in domains {
        for candidate in domain_and_parents(domain) {
            if !all.iter().any(|d| d == candidate) {
                all.push(candidate.to_owned());
            }
        }
    }
    all
}
