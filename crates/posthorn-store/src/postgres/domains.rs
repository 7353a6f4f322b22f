//! Sending domains: who owns which domain (the reads; claims and releases
//! are writes, built on the write engine).

use super::reads::{Query, get};
use crate::StoreResult;
use crate::records::SendingDomain;
use ::postgres::Row;
use posthorn_core::TenantId;
use posthorn_core::domain::DomainOwner;

fn domain_row(r: &Row) -> StoreResult<SendingDomain> {
    Ok(SendingDomain {
        domain: get(r, 0)?,
        tenant_id: TenantId::from_stored(get(r, 1)?),
        created_at: get(r, 2)?,
    })
}

/// One tenant's sending domains, or every tenant's, by domain.
pub(crate) fn list(
    c: &mut impl Query,
    tenant: Option<&TenantId>,
) -> StoreResult<Vec<SendingDomain>> {
    let found = match tenant {
        Some(tenant) => c.query(
            "SELECT domain, tenant_id, created_at FROM sending_domains WHERE tenant_id = $1 ORDER BY domain",
            &[&tenant.as_str()],
        )?,
        None => c.query(
            "SELECT domain, tenant_id, created_at FROM sending_domains ORDER BY domain",
            &[],
        )?,
    };
    found.iter().map(domain_row).collect()
}

/// The owners of `domains`, in their order, in one query.
pub(crate) fn owners(c: &mut impl Query, domains: &[String]) -> StoreResult<Vec<DomainOwner>> {
    let found = c.query(
        "SELECT domain, tenant_id FROM sending_domains WHERE domain = ANY($1)",
        &[&domains],
    )?;
    let mut owned = Vec::with_capacity(found.len());
    for r in &found {
        owned.push((get::<String>(r, 0)?, get::<String>(r, 1)?));
    }
    Ok(domains
        .iter()
        .filter_map(|domain| {
            owned
                .iter()
                .find(|(d, _)| d == domain)
                .map(|(_, tenant)| DomainOwner {
                    domain: domain.clone(),
                    tenant: TenantId::from_stored(tenant.clone()),
                })
        })
        .collect())
}
