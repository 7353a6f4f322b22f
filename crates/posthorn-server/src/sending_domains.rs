//! Sending domains of tenants: claiming one (with its DKIM key), listing
//! them with the DNS records to publish, giving one up, and the check that
//! a sender's domain may be used by a tenant. The HTTP API (`/v1/domains`)
//! and the CLI (`posthorn domains`) both go through here; the rule itself
//! is [`posthorn_core::domain`].

use crate::dkim::{self, DkimError, DnsRecord};
use posthorn_core::{Millis, TenantId};
use posthorn_store::{DomainClaim, Store, StoreError};
use std::path::Path;

/// A tenant's sending domain as shown to its admins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainView {
    pub domain: String,
    pub created_at: Millis,
    /// The DKIM keys of the domain, each with the TXT record to publish.
    pub keys: Vec<KeyView>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyView {
    pub selector: String,
    /// Whether this key signs (the domain's newest).
    pub active: bool,
    pub record: DnsRecord,
}

/// Why a domain could not be added or removed.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("{0}")]
    InvalidDomain(DkimError),
    #[error("{0}")]
    InvalidSelector(DkimError),
    /// Another tenant owns the domain, a parent or a child of it.
    #[error("`{owned}` belongs to another tenant")]
    Taken { owned: String },
    /// A key file exists for a domain no tenant owns (made before domains
    /// belonged to tenants): only the operator may give it to a tenant.
    #[error(
        "a DKIM key for {domain} exists but belongs to no tenant; the operator assigns it with `posthorn domains add {domain} --tenant NAME`"
    )]
    KeyWithoutOwner { domain: String },
    #[error("this tenant has no sending domain {0}")]
    NotFound(String),
    #[error("DKIM key: {0}")]
    Key(DkimError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who adds a domain: an operator on the data directory may hand a tenant
/// a key that already exists; a tenant through the API may not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExistingKey {
    Adopt,
    Refuse,
}

/// A domain and an optional selector as given, checked and in their stored
/// form (ASCII, lower case): everything about a new domain that is judged
/// without the store.
pub fn names(
    domain: &str,
    selector: Option<&str>,
) -> Result<(String, Option<String>), DomainError> {
    let domain = dkim::normalize_domain(domain).map_err(DomainError::InvalidDomain)?;
    let selector = selector
        .map(dkim::normalize_selector)
        .transpose()
        .map_err(DomainError::InvalidSelector)?;
    Ok((domain, selector))
}

/// Claims `domain` for `tenant` and makes sure it has a DKIM key: a new one
/// when it has none (an existing one is kept only if `existing` allows
/// adopting it), or when `selector` names a key it lacks (a key rotated
/// in; the newest key signs). Says whether the domain is new to the tenant.
pub async fn add(
    store: &dyn Store,
    data_dir: &Path,
    tenant: &TenantId,
    domain: &str,
    selector: Option<&str>,
    existing: ExistingKey,
    now: Millis,
) -> Result<(DomainView, bool), DomainError> {
    let (domain, selector) = names(domain, selector)?;
    let selector = selector.as_deref();
    let keys: Vec<KeyView> = keys_of(data_dir, &domain)?.collect();
    let has_key = !keys.is_empty();
    let new_selector = match selector {
        Some(s) if !keys.iter().any(|k| k.selector == s) => Some(s),
        Some(_) => None,
        None if has_key => None,
        None => Some(dkim::DEFAULT_SELECTOR),
    };
    let claim = store.claim_sending_domain(tenant, &domain, now).await?;
    let (created_at, new) = match claim {
        DomainClaim::Conflict { owned } => return Err(DomainError::Taken { owned }),
        DomainClaim::AlreadyOwned(d) => (d.created_at, false),
        DomainClaim::Added(d) => (d.created_at, true),
    };
    // A claim this call made is undone when the key part fails, so a
    // refused request leaves nothing behind.
    let undo = async || {
        if new {
            store.release_sending_domain(tenant, &domain).await?;
        }
        Ok::<(), DomainError>(())
    };
    if new && has_key && existing == ExistingKey::Refuse {
        undo().await?;
        return Err(DomainError::KeyWithoutOwner { domain });
    }
    if let Some(selector) = new_selector
        && let Err(e) = dkim::generate(data_dir, &domain, selector)
    {
        undo().await?;
        return Err(DomainError::Key(e));
    }
    let view = DomainView {
        keys: keys_of(data_dir, &domain)?.collect(),
        domain,
        created_at,
    };
    Ok((view, new))
}

/// A tenant's domains (every tenant's with `None`), each with its keys.
pub async fn list(
    store: &dyn Store,
    data_dir: &Path,
    tenant: Option<&TenantId>,
) -> Result<Vec<(TenantId, DomainView)>, DomainError> {
    let mut views = Vec::new();
    for owned in store.sending_domains(tenant).await? {
        views.push((
            owned.tenant_id,
            DomainView {
                keys: keys_of(data_dir, &owned.domain)?.collect(),
                domain: owned.domain,
                created_at: owned.created_at,
            },
        ));
    }
    Ok(views)
}

/// Gives up a tenant's domain and deletes its keys: a key whose record is
/// published must never sign for whoever claims the domain next.
pub async fn remove(
    store: &dyn Store,
    data_dir: &Path,
    tenant: &TenantId,
    domain: &str,
) -> Result<(), DomainError> {
    let domain = dkim::normalize_domain(domain).map_err(DomainError::InvalidDomain)?;
    if !store.release_sending_domain(tenant, &domain).await? {
        return Err(DomainError::NotFound(domain));
    }
    dkim::remove(data_dir, &domain, None).map_err(DomainError::Key)?;
    Ok(())
}

fn keys_of(
    data_dir: &Path,
    domain: &str,
) -> Result<impl Iterator<Item = KeyView> + use<>, DomainError> {
    let domain = domain.to_owned();
    Ok(dkim::list(data_dir)
        .map_err(DomainError::Key)?
        .into_iter()
        .filter(move |k| k.domain == domain)
        .map(|k| KeyView {
            selector: k.selector,
            active: k.active,
            record: k.record,
        }))
}
