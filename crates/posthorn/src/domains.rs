//! `posthorn domains ...`: sending domains of tenants and their DKIM keys,
//! managed directly (the service may be running). A domain belongs to one
//! tenant, recorded in the store; its keys are where `serve` keeps them.
//! Without `--store`, the SQLite database and key files in the data
//! directory (`dkim/<domain>.<selector>.pem`): ownership takes effect at
//! once, and a running `serve` signs with a key added here after its next
//! restart (keys added through `POST /v1/domains` sign at once). With
//! `--store URL`, the PostgreSQL database, rows of `dkim_keys` included:
//! every node on it signs with a key added here, and stops signing with
//! one removed here, within `dkim::KEY_POLL` (5 s), without a restart; the
//! data directory is not used.

use crate::store_args::StoreArgs;
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use posthorn_core::{Clock, SystemClock, TenantId};
use posthorn_server::dkim::{self, KeyHome};
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

/// When a running `serve` signs with a key added or changed in `home`.
fn takes_effect(home: &KeyHome) -> String {
    match home {
        KeyHome::Files(_) => "after a restart of `posthorn serve`".to_owned(),
        KeyHome::Database(_) => format!(
            "within {} s on every `posthorn serve` on this database",
            dkim::KEY_POLL.as_secs()
        ),
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
            let (store, home) = at.open_with_keys()?;
            let tenant = tenant_id(&*store, tenant.as_deref()).await?;
            let (view, new) = sending_domains::add(
                &*store,
                &home,
                &tenant,
                &domain,
                selector.as_deref(),
                ExistingKey::Adopt,
                SystemClock.now_ms(),
            )
            .await?;
            eprintln!(
                "{} {} (and its subdomains) for the tenant",
                if new { "added" } else { "kept" },
                view.domain
            );
            print_records(&view);
            println!();
            println!(
                "A new key signs {}; its tenant may send as {} at once.",
                takes_effect(&home),
                view.domain
            );
        }
        DomainsCommand::List { tenant, at } => {
            let (store, home) = at.open_with_keys()?;
            let only = match &tenant {
                Some(name) => Some(tenant_id(&*store, Some(name)).await?),
                None => None,
            };
            let domains = sending_domains::list(&*store, &home, only.as_ref()).await?;
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
                for key in sending_domains::all_keys(&home).await? {
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
            let home = at.key_home()?;
            let (d, s) = (domain.clone(), selector.clone());
            let removed =
                sending_domains::on_keys(&home, move |home| dkim::remove(home, &d, Some(&s)))
                    .await?;
            if removed == 0 {
                bail!("{domain} has no DKIM key with selector `{selector}`");
            }
            println!("removed the DKIM key {selector} of {domain}");
            eprintln!(
                "It stops signing {}; keep the TXT record a few days, for mail already sent.",
                takes_effect(&home)
            );
        }
        DomainsCommand::Remove {
            domain,
            selector: None,
            at,
        } => {
            let (store, home) = at.open_with_keys()?;
            let normalized = dkim::normalize_domain(&domain)?;
            let owner = store
                .domain_owners(&[&normalized])
                .await?
                .into_iter()
                .find(|o| o.domain == normalized);
            match owner {
                Some(owner) => {
                    sending_domains::remove(&*store, &home, &owner.tenant, &normalized).await?
                }
                // A key made before domains had owners.
                None => {
                    let d = normalized.clone();
                    let removed =
                        sending_domains::on_keys(&home, move |home| dkim::remove(home, &d, None))
                            .await?;
                    if removed == 0 {
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
