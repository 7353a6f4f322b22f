//! `posthorn keys ...`: API keys, managed directly in the store: SQLite in
//! the data directory (the service may be running: SQLite lets both write,
//! one at a time), or the PostgreSQL database of `--store`.

use crate::store_args::StoreArgs;
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use posthorn_core::id::ApiKeyId;
use posthorn_core::{Clock, SystemClock};
use posthorn_store::{NewApiKey, Scope};

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key for a tenant (the tenant is created if new). The key is
    /// printed once and never stored.
    Create {
        /// Tenant name.
        #[arg(long)]
        tenant: String,
        /// Comma-separated scopes: send, read, admin.
        #[arg(long, default_value = "send,read")]
        scope: String,
        /// A label to recognise the key by.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        at: StoreArgs,
    },
    /// List keys (never their secrets).
    List {
        /// Only this tenant's keys.
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        at: StoreArgs,
    },
    /// Revoke a key by its id (as shown by `keys list`).
    Revoke {
        id: String,
        #[command(flatten)]
        at: StoreArgs,
    },
}

pub fn parse_scopes(text: &str) -> Result<Vec<Scope>> {
    let mut scopes = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match Scope::parse(part) {
            Some(s) if !scopes.contains(&s) => scopes.push(s),
            Some(_) => {}
            None => bail!("unknown scope `{part}` (use send, read, admin)"),
        }
    }
    if scopes.is_empty() {
        bail!("give at least one scope (send, read, admin)");
    }
    Ok(scopes)
}

pub async fn run(command: KeysCommand) -> Result<()> {
    let now = SystemClock.now_ms();
    match command {
        KeysCommand::Create {
            tenant,
            scope,
            name,
            at,
        } => {
            let scopes = parse_scopes(&scope)?;
            if tenant.trim().is_empty() {
                bail!("--tenant must not be empty");
            }
            let store = at.open()?;
            let tenant = match store.tenant_by_name(&tenant).await? {
                Some(t) => t,
                None => {
                    eprintln!("created tenant `{tenant}`");
                    store.create_tenant(&tenant, now).await?
                }
            };
            let key = posthorn_server::keys::generate();
            store
                .insert_api_key(NewApiKey {
                    id: key.id.clone(),
                    tenant_id: tenant.id.clone(),
                    name,
                    scopes: scopes.clone(),
                    secret_hash: key.secret_hash.clone(),
                    created_at: now,
                })
                .await?;
            let names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
            eprintln!(
                "key {} for tenant `{}` with scopes {} (shown once, keep it safe):",
                key.id,
                tenant.name,
                names.join(",")
            );
            println!("{}", key.token);
        }
        KeysCommand::List { tenant, at } => {
            let store = at.open()?;
            let tenant_id = match &tenant {
                Some(name) => Some(
                    store
                        .tenant_by_name(name)
                        .await?
                        .with_context(|| format!("no tenant `{name}`"))?
                        .id,
                ),
                None => None,
            };
            println!(
                "{:<36}  {:<16}  {:<16}  {:<24}  STATUS",
                "ID", "SCOPES", "NAME", "CREATED"
            );
            for key in store.api_keys(tenant_id.as_ref()).await? {
                let scopes: Vec<&str> = key.scopes.iter().map(|s| s.as_str()).collect();
                let status = match key.revoked_at {
                    Some(at) => format!("revoked {}", posthorn_core::clock::format_rfc3339(at)),
                    None => "active".into(),
                };
                println!(
                    "{:<36}  {:<16}  {:<16}  {:<24}  {status}",
                    key.id,
                    scopes.join(","),
                    key.name.as_deref().unwrap_or("-"),
                    posthorn_core::clock::format_rfc3339(key.created_at),
                );
            }
        }
        KeysCommand::Revoke { id, at } => {
            let id =
                ApiKeyId::parse(&id).context("that is not a key id (see `posthorn keys list`)")?;
            let store = at.open()?;
            if store.revoke_api_key(&id, now).await? {
                println!("revoked {id}");
            } else {
                bail!("no active key {id}");
            }
        }
    }
    Ok(())
}
