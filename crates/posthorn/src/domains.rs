//! `posthorn domains ...`: sending domains of tenants and their DKIM keys,
//! managed directly (the service may be running). A domain belongs to one
//! tenant, recorded in the store (SQLite in the data directory, or the
//! PostgreSQL database of `--store`); its keys are files in the data
//! directory (`dkim/<domain>.<selector>.pem`), on PostgreSQL too for now. Ownership takes effect at once; a
//! running `serve` signs with a key added here after its next restart
//! (keys added through `POST /v1/domains` sign at once).

use crate::store_args::StoreArgs;
use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use posthorn_core::{Clock, SystemClock, TenantId};
use posthorn_server::dkim;
use posthorn_server::sending_domains::{self, DomainView, ExistingKey};
use posthorn_store::Store;

#[derive(Subcommand)]
pub enum DomainsCommand {
    /// Give DOMAIN (and its subdomains) to a tenant, create its DKIM key
    /// (RSA 2048) unless it has one, and print the DNS TXT record to
    /// publish. With --selector, a domain that has keys gets a new one (key
    /// rotation: the newest key signs).
    Add {
        /// The sending domain, as in the From address (example.com).
        domain: String,
        /// The tenant that sends as DOMAIN [default: the only tenant].
        #[arg(long)]
        tenant: Option<String>,
        /// The selector: the key's name under `_domainkey.DOMAIN`
        /// [default: posthorn].
        #[arg(long)]
        selector: Option<String>,
        #[command(flatten)]
        at: StoreArgs,
    },
    /// List sending domains and their DKIM keys with the TXT record each
    /// needs.
    List {
        /// Only this tenant's domains.
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        at: StoreArgs,
    },
    /// Take DOMAIN from its tenant and delete its DKIM keys; with
    /// --selector, delete only that key (the end of a key rotation).
    Remove {
        domain: String,
        #[arg(long)]
        selector: Option<String>,
        #[command(flatten)]
        at: StoreArgs,
    },
}

/// The tenant called `name`, or the only tenant when no name is given.
async fn tenant_id(store: &dyn Store, name: Option<&str>) -> Result<TenantId> {
    match name {
        Some(name) => Ok(store
            .tenant_by_name(name)
            .await?
            .with_context(|| format!("no tenant `{name}` (see `posthorn keys list`)"))?
            .id),
        None => match store.tenant_count().await? {
            0 => bail!(
                "no tenant yet: start `posthorn serve` once, or create one with `posthorn keys create --tenant NAME`"
            ),
            1 => store
                .operator_tenant()
                .await?
                .context("the only tenant could not be read"),
            _ => bail!("there are several tenants: say whose domain this is with --tenant NAME"),
        },
    }
}

fn print_records(view: &DomainView) {
    println!("Publish in the DNS of {}:", view.domain);
    for key in &view.keys {
        println!();
        println!(
            "  selector {} ({})",
            key.selector,
            if key.active { "signs" } else { "standby" }
        );
        println!("  name:  {}", key.record.name);
        println!("  value: {}", key.record.value);
        println!("  zone-file line (the value in strings of at most 255 characters):");
        println!("  {}", key.record.zone_line());
    }
}

pub async fn run(command: DomainsCommand) -> Result<()> {
    match command {
        DomainsCommand::Add {
            domain,
            tenant,
            selector,
            at,
        } => {
            let data_dir = &at.data_dir;
            let store = at.open()?;
            let tenant = tenant_id(&*store, tenant.as_deref()).await?;
            let (view, new) = sending_domains::add(
                &*store,
                data_dir,
                &tenant,
                &domain,
                selector.as_deref(),
                ExistingKey::Adopt,
                SystemClock.now_ms(),
            )
            .await
            .map_err(|e| anyhow!(e))?;
            eprintln!(
                "{} {} (and its subdomains) for the tenant",
                if new { "added" } else { "kept" },
                view.domain
            );
            print_records(&view);
            println!();
            println!(
                "A running `posthorn serve` signs with a new key after a restart; its tenant may send as {} at once.",
                view.domain
            );
        }
        DomainsCommand::List { tenant, at } => {
            let data_dir = &at.data_dir;
            let store = at.open()?;
            let only = match &tenant {
                Some(name) => Some(tenant_id(&*store, Some(name)).await?),
                None => None,
            };
            let domains = sending_domains::list(&*store, data_dir, only.as_ref())
                .await
                .map_err(|e| anyhow!(e))?;
            println!(
                "{:<28}  {:<16}  {:<12}  {:<7}  {:<44}  TXT VALUE",
                "DOMAIN", "TENANT", "SELECTOR", "STATUS", "TXT NAME"
            );
            for (tenant_id, view) in &domains {
                let tenant_name = store
                    .tenant(tenant_id)
                    .await?
                    .map_or_else(|| tenant_id.to_string(), |t| t.name);
                if view.keys.is_empty() {
                    println!(
                        "{:<28}  {tenant_name:<16}  (no DKIM key: mail goes unsigned)",
                        view.domain
                    );
                }
                for key in &view.keys {
                    println!(
                        "{:<28}  {tenant_name:<16}  {:<12}  {:<7}  {:<44}  {}",
                        view.domain,
                        key.selector,
                        if key.active { "signs" } else { "standby" },
                        key.record.name,
                        key.record.value
                    );
                }
            }
            if only.is_none() {
                for key in dkim::list(data_dir)? {
                    if !domains.iter().any(|(_, v)| v.domain == key.domain) {
                        println!(
                            "{:<28}  {:<16}  {:<12}  unowned: signs nothing until `posthorn domains add {} --tenant NAME`",
                            key.domain, "-", key.selector, key.domain
                        );
                    }
                }
            }
            if domains.is_empty() {
                eprintln!("no sending domains (add one with `posthorn domains add DOMAIN`)");
            }
        }
        DomainsCommand::Remove {
            domain,
            selector: Some(selector),
            at,
        } => {
            let data_dir = &at.data_dir;
            let removed = dkim::remove(data_dir, &domain, Some(&selector))?;
            if removed == 0 {
                bail!("{domain} has no DKIM key with selector `{selector}`");
            }
            println!("removed the DKIM key {selector} of {domain}");
            eprintln!(
                "Restart `posthorn serve` to stop signing with it; keep the TXT record a few days, for mail already sent."
            );
        }
        DomainsCommand::Remove {
            domain,
            selector: None,
            at,
        } => {
            let data_dir = &at.data_dir;
            let store = at.open()?;
            let normalized = dkim::normalize_domain(&domain)?;
            let owner = store
                .domain_owners(&[&normalized])
                .await?
                .into_iter()
                .find(|o| o.domain == normalized);
            match owner {
                Some(owner) => {
                    sending_domains::remove(&*store, data_dir, &owner.tenant, &normalized)
                        .await
                        .map_err(|e| anyhow!(e))?
                }
                // A key made before domains had owners.
                None => {
                    if dkim::remove(data_dir, &normalized, None)? == 0 {
                        bail!("{normalized} is not a sending domain");
                    }
                }
            }
            println!("removed {normalized} and its DKIM keys");
            eprintln!(
                "Its tenant can no longer send as it. Keep the TXT record a few days, for mail already sent."
            );
        }
    }
    Ok(())
}
