//! `posthorn domains ...`: DKIM keys for sending domains, kept as files in
//! the data directory (`dkim/<domain>.<selector>.pem`). `serve` loads them
//! when it starts, so it signs with a new key after a restart.

use anyhow::{Result, anyhow, bail};
use clap::Subcommand;
use posthorn_server::dkim;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum DomainsCommand {
    /// Create a DKIM key (RSA 2048) for DOMAIN and print the DNS TXT record
    /// to publish.
    Add {
        /// The sending domain, as in the From address (example.com).
        domain: String,
        /// The selector: the key's name under `_domainkey.DOMAIN`.
        #[arg(long, default_value = dkim::DEFAULT_SELECTOR)]
        selector: String,
        #[arg(long, env = "POSTHORN_DATA_DIR", default_value = "posthorn-data")]
        data_dir: PathBuf,
    },
    /// List DKIM keys with the TXT record each needs.
    List {
        #[arg(long, env = "POSTHORN_DATA_DIR", default_value = "posthorn-data")]
        data_dir: PathBuf,
    },
    /// Remove DOMAIN's DKIM keys (only the one with --selector, if given).
    Remove {
        domain: String,
        #[arg(long)]
        selector: Option<String>,
        #[arg(long, env = "POSTHORN_DATA_DIR", default_value = "posthorn-data")]
        data_dir: PathBuf,
    },
}

pub fn run(command: DomainsCommand) -> Result<()> {
    match command {
        DomainsCommand::Add {
            domain,
            selector,
            data_dir,
        } => {
            let key = dkim::generate(&data_dir, &domain, &selector).map_err(|e| anyhow!(e))?;
            eprintln!(
                "created a DKIM key for {} (selector {}) in {}",
                key.domain,
                key.selector,
                key.path.display()
            );
            println!("Publish this TXT record in the DNS of {}:", key.domain);
            println!();
            println!("  name:  {}", key.record.name);
            println!("  value: {}", key.record.value);
            println!();
            println!(
                "As a zone-file line (the value split into strings of at most 255 characters):"
            );
            println!("  {}", key.record.zone_line());
            println!();
            println!(
                "Then restart `posthorn serve`: it signs mail from {} (and its subdomains) with the keys it finds at start.",
                key.domain
            );
        }
        DomainsCommand::List { data_dir } => {
            let keys = dkim::list(&data_dir).map_err(|e| anyhow!(e))?;
            if keys.is_empty() {
                eprintln!(
                    "no DKIM keys in {} (add one with `posthorn domains add DOMAIN`)",
                    data_dir.display()
                );
                return Ok(());
            }
            println!(
                "{:<24}  {:<12}  {:<7}  {:<40}  TXT VALUE",
                "DOMAIN", "SELECTOR", "STATUS", "TXT NAME"
            );
            for key in keys {
                println!(
                    "{:<24}  {:<12}  {:<7}  {:<40}  {}",
                    key.domain,
                    key.selector,
                    if key.active { "signs" } else { "standby" },
                    key.record.name,
                    key.record.value
                );
            }
        }
        DomainsCommand::Remove {
            domain,
            selector,
            data_dir,
        } => {
            let removed =
                dkim::remove(&data_dir, &domain, selector.as_deref()).map_err(|e| anyhow!(e))?;
            match (removed, &selector) {
                (0, Some(selector)) => bail!("{domain} has no DKIM key with selector `{selector}`"),
                (0, None) => bail!("{domain} has no DKIM key"),
                (n, _) => {
                    println!("removed {n} DKIM key(s) of {domain}");
                    eprintln!(
                        "Restart `posthorn serve` to stop signing with it; keep the TXT record a few days, for mail already sent."
                    );
                }
            }
        }
    }
    Ok(())
}
