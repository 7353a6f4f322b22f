//! Sending domains: who owns which domain. Claims are checked and written
//! in one write transaction, so two tenants cannot claim overlapping
//! domains at once.

use super::prepare;
use crate::StoreResult;
use crate::records::{DomainClaim, SendingDomain};
use posthorn_core::domain::{DomainOwner, domain_and_parents, overlaps};
use posthorn_core::{Millis, TenantId};
use rusqlite::{Connection, OptionalExtension, Row, params};

fn domain_row(r: &Row<'_>) -> rusqlite::Result<SendingDomain> {
    Ok(SendingDomain {
        domain: r.get(0)?,
        tenant_id: TenantId::from_stored(r.get(1)?),
        created_at: r.get(2)?,
    })
}

pub(crate) fn claim(
    c: &Connection,
    tenant: &TenantId,
    domain: &str,
    now: Millis,
) -> StoreResult<DomainClaim> {
    if let Some(existing) = prepare(
        c,
        "SELECT domain, tenant_id, created_at FROM sending_domains WHERE domain = $1",
    )?
    .query_row([domain], domain_row)
    .optional()?
    {
        return Ok(if existing.tenant_id == *tenant {
            DomainClaim::AlreadyOwned(existing)
        } else {
            DomainClaim::Conflict {
                owned: existing.domain,
            }
        });
    }
    // Parents and children of the domain that another tenant owns. The
    // table holds one row per sending domain (a few per tenant): a scan is
    // cheap, and children are not contiguous in any index order.
    let mut others = prepare(
        c,
        "SELECT domain FROM sending_domains WHERE tenant_id <> $1",
    )?;
    let taken: Option<String> = others
        .query_map([tenant.as_str()], |r| r.get::<_, String>(0))?
        .filter_map(Result::ok)
        .find(|other| overlaps(domain, other));
    if let Some(owned) = taken {
        return Ok(DomainClaim::Conflict { owned });
    }
    prepare(
        c,
        "INSERT INTO sending_domains (domain, tenant_id, created_at) VALUES ($1, $2, $3)",
    )?
    .execute(params![domain, tenant.as_str(), now])?;
    Ok(DomainClaim::Added(SendingDomain {
        domain: domain.to_owned(),
        tenant_id: tenant.clone(),
        created_at: now,
    }))
}

pub(crate) fn list(c: &Connection, tenant: Option<&TenantId>) -> StoreResult<Vec<SendingDomain>> {
    let rows = match tenant {
        Some(tenant) => prepare(
            c,
            "SELECT domain, tenant_id, created_at FROM sending_domains WHERE tenant_id = $1 ORDER BY domain",
        )?
        .query_map([tenant.as_str()], domain_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?,
        None => prepare(
            c,
            "SELECT domain, tenant_id, created_at FROM sending_domains ORDER BY domain",
        )?
        .query_map([], domain_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?,
    };
    Ok(rows)
}

pub(crate) fn release(c: &Connection, tenant: &TenantId, domain: &str) -> StoreResult<bool> {
    let n = prepare(
        c,
        "DELETE FROM sending_domains WHERE domain = $1 AND tenant_id = $2",
    )?
    .execute(params![domain, tenant.as_str()])?;
    Ok(n > 0)
}

/// The owners of `domains`; each is looked up alone (a From domain has a
/// handful of parents at most).
pub(crate) fn owners(c: &Connection, domains: &[String]) -> StoreResult<Vec<DomainOwner>> {
    let mut lookup = prepare(c, "SELECT tenant_id FROM sending_domains WHERE domain = $1")?;
    let mut owners = Vec::new();
    for domain in domains {
        if let Some(tenant) = lookup
            .query_row([domain.as_str()], |r| r.get::<_, String>(0))
            .optional()?
        {
            owners.push(DomainOwner {
                domain: domain.clone(),
                tenant: TenantId::from_stored(tenant),
            });
        }
    }
    Ok(owners)
}

/// `domain_and_parents` as owned strings, for a lookup on the store's
/// threads.
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
