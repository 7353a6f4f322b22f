//! Sending domains: who owns which domain (the reads; claims are the
//! engine's, `engine::claim_sending_domain`).

use super::prepare;
use crate::StoreResult;
use crate::records::SendingDomain;
use posthorn_core::TenantId;
use posthorn_core::domain::DomainOwner;
use rusqlite::{Connection, OptionalExtension, Row};

fn domain_row(r: &Row<'_>) -> rusqlite::Result<SendingDomain> {
    Ok(SendingDomain {
        domain: r.get(0)?,
        tenant_id: TenantId::from_stored(r.get(1)?),
        created_at: r.get(2)?,
    })
}

/// The sending domain named `domain`, whoever owns it.
pub(crate) fn by_name(c: &Connection, domain: &str) -> StoreResult<Option<SendingDomain>> {
    Ok(prepare(
        c,
        "SELECT domain, tenant_id, created_at FROM sending_domains WHERE domain = $1",
    )?
    .query_row([domain], domain_row)
    .optional()?)
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
