//! Sending domains of tenants: claiming one (with its DKIM key), listing
//! them with the DNS records to publish, giving one up, and the check that
//! a sender's domain may be used by a tenant. The HTTP API (`/v1/domains`)
//! and the CLI (`posthorn domains`) both go through here; the rule itself
//! is [`posthorn_core::domain`]. The keys are in their [`KeyHome`] (files
//! in the data directory, or the PostgreSQL database), reached on the
//! blocking pool.

use crate::dkim::{self, DkimError, DnsRecord, DomainKey, KeyHome};
use posthorn_core::{Millis, TenantId};
use posthorn_store::{DomainClaim, Store, StoreError};

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
    /// A key exists for a domain no tenant owns (made before domains
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
    home: &KeyHome,
    tenant: &TenantId,
    domain: &str,
    selector: Option<&str>,
    existing: ExistingKey,
    now: Millis,
) -> Result<(DomainView, bool), DomainError> {
    let (domain, selector) = names(domain, selector)?;
    let selector = selector.as_deref();
    let keys: Vec<KeyView> = keys_of(&all_keys(home).await?, &domain);
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
    if let Some(selector) = new_selector {
        let (domain, selector) = (domain.clone(), selector.to_owned());
        let made = on_keys(home, move |home| dkim::generate(home, &domain, &selector)).await;
        if let Err(e) = made {
            undo().await?;
            return Err(e);
        }
    }
    let view = DomainView {
        keys: keys_of(&all_keys(home).await?, &domain),
        domain,
        created_at,
    };
    Ok((view, new))
}

/// A tenant's domains (every tenant's with `None`), each with its keys.
pub async fn list(
    store: &dyn Store,
    home: &KeyHome,
    tenant: Option<&TenantId>,
) -> Result<Vec<(TenantId, DomainView)>, DomainError> {
    let owned = store.sending_domains(tenant).await?;
    let keys = if owned.is_empty() {
        Vec::new()
    } else {
        all_keys(home).await?
    };
    let mut views = Vec::new();
    for owned in owned {
        views.push((
            owned.tenant_id,
            DomainView {
                keys: keys_of(&keys, &owned.domain),
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
    home: &KeyHome,
    tenant: &TenantId,
    domain: &str,
) -> Result<(), DomainError> {
    let domain = dkim::normalize_domain(domain).map_err(DomainError::InvalidDomain)?;
    if !store.release_sending_domain(tenant, &domain).await? {
        return Err(DomainError::NotFound(domain));
    }
    on_keys(home, move |home| dkim::remove(home, &domain, None)).await?;
    Ok(())
}

/// Every key in `home`.
pub async fn all_keys(home: &KeyHome) -> Result<Vec<DomainKey>, DomainError> {
    on_keys(home, dkim::list).await
}

/// Runs `work` on the keys on the blocking pool (file I/O, RSA, or the
/// database's blocking client). A failure of the database is the store's
/// (a 503 when it is unreachable), any other a key failure.
pub async fn on_keys<T: Send + 'static>(
    home: &KeyHome,
    work: impl FnOnce(&KeyHome) -> Result<T, DkimError> + Send + 'static,
) -> Result<T, DomainError> {
    let home = home.clone();
    let done = tokio::task::spawn_blocking(move || work(&home))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    done.map_err(|e| match e {
        DkimError::Store(e) => DomainError::Store(e),
        e => DomainError::Key(e),
    })
}

fn keys_of(keys: &[DomainKey], domain: &str) -> Vec<KeyView> {
    keys.iter()
        .filter(|k| k.domain == domain)
        .map(|k| KeyView {
            selector: k.selector.clone(),
            active: k.active,
            record: k.record.clone(),
        })
        .collect()
}
