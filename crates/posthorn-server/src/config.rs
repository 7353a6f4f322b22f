//! Loading the configuration: defaults, then an optional TOML file, then
//! `POSTHORN_SECTION__KEY=value` environment overrides, then flags (applied by
//! the caller). Every error is reported at once, with its path, so a user
//! fixes a file in one go rather than one typo per restart. Files the
//! configuration names and that must parse (`[bounce] rules_file`) are
//! checked by [`load`] in the same pass.

use posthorn_core::config::Config;
use std::path::Path;

/// All problems found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration:\n{}", .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<String>);

/// Environment variables that override settings: `POSTHORN_` followed by the
/// path with `__` between parts, e.g. `POSTHORN_STATUS__WINDOW=7d` or
/// `POSTHORN_STREAMS__NEWSLETTER__REQUIRE_CONFIRMATION=true`.
pub const ENV_PREFIX: &str = "POSTHORN_";

/// Loads the configuration from an optional file and the given environment,
/// and checks the files it names (the operator's reply rules).
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigErrors> {
    let text = match file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors(vec![format!("{}: {e}", path.display())]))?,
        None => String::new(),
    };
    let source = file.map_or("configuration".to_owned(), |p| p.display().to_string());
    parse_checked(&text, &source, env, check_files)
}

/// Parses configuration text (TOML) plus environment overrides and checks
/// its values. Reads no file: what the configuration names is checked by
/// [`load`].
pub fn parse(
    text: &str,
    source: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigErrors> {
    parse_checked(text, source, env, check_values)
}

/// The files a configuration names that must be read and parsed at start,
/// and the values that deserialise but make no sense: their errors, each
/// prefixed with the setting.
fn check_files(config: &Config) -> Vec<String> {
    let mut errors: Vec<String> =
        match crate::reply_rules::load(config.bounce.rules_file.as_deref()) {
            Ok(_) => Vec::new(),
            Err(errors) => errors
                .into_iter()
                .map(|e| format!("bounce.rules_file: {e}"))
                .collect(),
        };
    errors.extend(check_values(config));
    let machine = &config.tracking.machine;
    if let Err(e) = crate::machine_networks::load(machine.networks_file.as_deref()) {
        errors.extend(
            e.into_iter()
                .map(|e| format!("tracking.machine.networks_file: {e}")),
        );
    }
    if config.ingest.sns_certificate_file.is_some()
        && let Err(e) = crate::ingest::SnsCertificates::from_config(&config.ingest)
    {
        errors.push(e);
    }
    if !posthorn_core::submission::valid_stream_name(&config.ingest.stream) {
        errors.push(format!(
            "ingest.stream: `{}` is not a stream name (1 to 64 of a-z 0-9 - _)",
            config.ingest.stream
        ));
    }
    errors
}

/// Values that deserialise but make no sense, prefixed with their setting.
fn check_values(config: &Config) -> Vec<String> {
    let mut errors: Vec<String> = config
        .tracking
        .machine
        .problems()
        .into_iter()
        .map(|e| format!("tracking.machine.{e}"))
        .collect();
    // Refused here, before anything starts: a store URL of another kind
    // must never leave the node on SQLite while its peers share a database.
    if let Some(url) = &config.store.url
        && let Err(e) = posthorn_store::PgStore::check_url(url)
    {
        errors.push(format!("store.url: {e}"));
    }
    errors
}

/// [`parse`], then `check` on the configuration that deserialised (with
/// any refused entries left out), so its errors join the others.
fn parse_checked(
    text: &str,
    source: &str,
    env: impl IntoIterator<Item = (String, String)>,
    check: impl Fn(&Config) -> Vec<String>,
) -> Result<Config, ConfigErrors> {
    let mut table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigErrors(vec![format!("{source}: {}", e.message())]))?;
    let mut errors = Vec::new();
    for (name, value) in env {
        let Some(path) = name.strip_prefix(ENV_PREFIX).filter(|p| p.contains("__")) else {
            continue;
        };
        let parts: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
        if let Err(e) = set_path(&mut table, &parts, env_value(&value)) {
            errors.push(format!("{name}: {e}"));
        }
    }
    // Deserialise; on an error, note it, remove the offending entry and try
    // again, so that every error is found in one pass.
    let mut value = toml::Value::Table(table);
    for _ in 0..64 {
        match serde_path_to_error::deserialize::<_, Config>(value.clone()) {
            Ok(config) => {
                errors.extend(check(&config));
                return if errors.is_empty() {
                    Ok(config)
                } else {
                    Err(ConfigErrors(errors))
                };
            }
            Err(e) => {
                let path: Vec<String> = e
                    .path()
                    .iter()
                    .filter_map(|seg| match seg {
                        serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                        _ => None,
                    })
                    .collect();
                let shown = if path.is_empty() {
                    "(top level)".to_owned()
                } else {
                    path.join(".")
                };
                errors.push(format!("{shown}: {}", e.inner()));
                if path.is_empty() || !remove_path(&mut value, &path) {
                    return Err(ConfigErrors(errors));
                }
            }
        }
    }
    Err(ConfigErrors(errors))
}

/// An environment value as TOML: numbers and booleans as such, anything else
/// as a string.
fn env_value(text: &str) -> toml::Value {
    format!("v = {text}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .filter(|v| !matches!(v, toml::Value::Table(_) | toml::Value::Array(_)))
        .unwrap_or_else(|| toml::Value::String(text.to_owned()))
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty path")?;
    let mut current = table;
    for part in parents {
        let entry = current
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{part}` is not a section"))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

fn remove_path(value: &mut toml::Value, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut current = value;
    for part in parents {
        match current.get_mut(part.as_str()) {
            Some(next) => current = next,
            None => return false,
        }
    }
    current
        .as_table_mut()
        .is_some_and(|t| t.remove(last.as_str()).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use posthorn_core::clock::DAY;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn no_file_gives_defaults() {
        assert_eq!(parse("", "x", env(&[])).unwrap(), Config::default());
    }

    #[test]
    fn file_and_environment_override_defaults() {
        let text = "[status]\nwindow = \"7d\"\n[streams.newsletter]\nrequire_confirmation = true\n";
        let config = parse(
            text,
            "x",
            env(&[
                ("POSTHORN_STATUS__SOFT_BOUNCE_LIMIT", "5"),
                ("POSTHORN_SERVER__HTTP", "0.0.0.0:80"),
                ("POSTHORN_DATA_DIR", "/ignored/here"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(config.status.window.0, 7 * DAY);
        assert_eq!(config.status.soft_bounce_limit, 5);
        assert_eq!(config.server.http, "0.0.0.0:80");
        assert!(config.streams["newsletter"].require_confirmation);
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let text = "[status]\nwindwo = \"7d\"\nsoft_bounce_limit = \"many\"\n[retry]\nlifetime = \"forever\"\n[nonsense]\n";
        let errors = parse(
            text,
            "x",
            env(&[("POSTHORN_LIMITS__MAX_MESSAGE_SIZE", "huge")]),
        )
        .unwrap_err()
        .0;
        let joined = errors.join("\n");
        assert_eq!(errors.len(), 5, "{joined}");
        for needle in [
            "windwo",
            "soft_bounce_limit",
            "retry.lifetime",
            "nonsense",
            "max_message_size",
        ] {
            assert!(joined.contains(needle), "missing {needle} in:\n{joined}");
        }
    }

    #[test]
    fn previous_secrets_must_be_hex_and_each_list_is_its_own() {
        // Tracking links and VERP return paths each keep their own list of
        // earlier server secrets.
        for section in ["tracking", "delivery"] {
            let config = parse(
                &format!("[{section}]\nprevious_secrets = [\"00ff10\"]\n"),
                "x",
                env(&[]),
            )
            .unwrap();
            let (listed, other) = match section {
                "tracking" => (
                    &config.tracking.previous_secrets,
                    &config.delivery.previous_secrets,
                ),
                _ => (
                    &config.delivery.previous_secrets,
                    &config.tracking.previous_secrets,
                ),
            };
            assert_eq!(listed.len(), 1, "{section}");
            assert_eq!(listed[0].0, [0x00, 0xff, 0x10], "{section}");
            assert!(other.is_empty(), "{section} fills only its own list");
            for bad in ["not hex", "abc", "", "+f"] {
                let text = format!("[{section}]\nprevious_secrets = [\"00ff\", \"{bad}\"]\n");
                let errors = parse(&text, "x", env(&[])).unwrap_err().0;
                assert_eq!(errors.len(), 1, "{errors:?}");
                assert!(
                    errors[0].starts_with(&format!("{section}.previous_secrets"))
                        && errors[0].contains("hex"),
                    "{section} {bad:?}: {errors:?}"
                );
            }
        }
        let errors = parse("[delivery]\nprevious_secrets = \"00ff\"\n", "x", env(&[]))
            .unwrap_err()
            .0;
        assert!(
            errors[0].starts_with("delivery.previous_secrets"),
            "a list, not one string: {errors:?}"
        );
    }

    /// Through the loading path `serve` uses: a bad rules file is a
    /// configuration error naming the setting, the file and the line, and
    /// is reported with the file's other errors.
    #[test]
    fn machine_settings_and_networks_file_are_checked_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let networks = dir.path().join("networks.txt");
        std::fs::write(
            &networks,
            "source ours https://example.com/ranges 2026-12-07\n\
             198.51.100.0/24 hosting ours\n198.51.100.1/24 hosting ours\n",
        )
        .unwrap();
        let config_file = dir.path().join("posthorn.toml");
        let toml = format!(
            "[tracking.machine]\nnetworks_file = {:?}\nclick_without_open = true\nburst_links = 1\n",
            networks.display().to_string()
        );
        std::fs::write(&config_file, toml).unwrap();
        let errors = load(Some(&config_file), env(&[])).unwrap_err().0;
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors[0].starts_with("tracking.machine.click_without_open: removed"),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with("tracking.machine.burst_links: "),
            "{errors:?}"
        );
        let want = format!("tracking.machine.networks_file: {}:3: ", networks.display());
        assert!(
            errors[2].starts_with(&want) && errors[2].contains("host bits"),
            "{errors:?}"
        );
        // Text alone (no files read) still checks the values.
        let errors = parse("[tracking.machine]\nburst_window = \"0s\"\n", "t", env(&[]))
            .unwrap_err()
            .0;
        assert!(
            errors[0].starts_with("tracking.machine.burst_window: "),
            "{errors:?}"
        );

        // Fixed, it loads, and the environment can name the file.
        std::fs::write(
            &networks,
            "source ours https://example.com/ranges 2026-12-07\n198.51.100.0/24 hosting ours\n",
        )
        .unwrap();
        std::fs::write(&config_file, "").unwrap();
        let config = load(
            Some(&config_file),
            env(&[(
                "POSTHORN_TRACKING__MACHINE__NETWORKS_FILE",
                &networks.display().to_string(),
            )]),
        )
        .unwrap();
        assert_eq!(
            config.tracking.machine.networks_file.as_deref(),
            Some(networks.as_path())
        );
    }

    #[test]
    fn a_bad_rules_file_is_a_configuration_error_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules.txt");
        std::fs::write(
            &rules,
            "# ours\nrule local.gone userunknown hard\n  match gone away\n\nrule local.x blocked\n  match x\n",
        )
        .unwrap();
        let config_file = dir.path().join("posthorn.toml");
        let toml = format!(
            "[bounce]\nrules_file = {:?}\n[status]\nwindwo = \"7d\"\n",
            rules.display().to_string()
        );
        std::fs::write(&config_file, toml).unwrap();
        let errors = load(Some(&config_file), env(&[])).unwrap_err().0;
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains("windwo"), "{errors:?}");
        let want = format!("bounce.rules_file: {}:5: ", rules.display());
        assert!(
            errors[1].starts_with(&want) && errors[1].contains("hard or soft"),
            "{errors:?}"
        );

        // Fixed, it loads; the environment can name the file too.
        std::fs::write(
            &rules,
            "rule local.gone userunknown hard\n  match gone away\n",
        )
        .unwrap();
        std::fs::write(&config_file, "").unwrap();
        let config = load(
            Some(&config_file),
            env(&[("POSTHORN_BOUNCE__RULES_FILE", &rules.display().to_string())]),
        )
        .unwrap();
        assert_eq!(config.bounce.rules_file.as_deref(), Some(rules.as_path()));

        let missing = dir.path().join("missing.txt");
        let errors = load(
            None,
            env(&[(
                "POSTHORN_BOUNCE__RULES_FILE",
                &missing.display().to_string(),
            )]),
        )
        .unwrap_err()
        .0;
        assert!(
            errors[0].starts_with("bounce.rules_file: ") && errors[0].contains("missing.txt"),
            "{errors:?}"
        );
    }

    #[test]
    fn ingest_settings_are_checked_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("sns.pem");
        std::fs::write(&bad, "not a certificate").unwrap();
        let errors = load(
            None,
            env(&[
                (
                    "POSTHORN_INGEST__SNS_CERTIFICATE_FILE",
                    &bad.display().to_string(),
                ),
                ("POSTHORN_INGEST__STREAM", "Not A Stream"),
            ]),
        )
        .unwrap_err()
        .0;
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].starts_with("ingest.sns_certificate_file "),
            "{errors:?}"
        );
        assert!(errors[1].starts_with("ingest.stream: "), "{errors:?}");
        let config = load(None, env(&[])).unwrap();
        assert!(config.ingest.fetch);
        assert_eq!(
            config.ingest.stream,
            posthorn_core::submission::DEFAULT_STREAM
        );
    }

    #[test]
    fn the_store_url_comes_from_the_file_or_the_environment_and_must_be_postgres() {
        let config = parse("", "x", env(&[])).unwrap();
        assert_eq!(config.store.url, None, "SQLite by default");
        let config = parse(
            "[store]\nurl = \"postgres://file@db/a\"\n",
            "x",
            env(&[("POSTHORN_STORE__URL", "postgresql://env:secret@db:6432/b")]),
        )
        .unwrap();
        assert_eq!(
            config.store.url.as_deref(),
            Some("postgresql://env:secret@db:6432/b"),
            "the environment overrides the file"
        );
        for bad in [
            "mysql://u:secret@db/a",
            "sqlite:///var/posthorn.db",
            "",
            "db/a",
        ] {
            let errors = parse("", "x", env(&[("POSTHORN_STORE__URL", bad)]))
                .unwrap_err()
                .0;
            assert_eq!(errors.len(), 1, "{bad}: {errors:?}");
            assert!(
                errors[0].starts_with("store.url: ") && errors[0].contains("postgres://"),
                "{bad}: {errors:?}"
            );
            assert!(!errors[0].contains("secret"), "{errors:?}");
        }
    }

    #[test]
    fn syntax_errors_name_the_file() {
        let err = parse("[status\n", "posthorn.toml", env(&[])).unwrap_err();
        assert!(err.0[0].starts_with("posthorn.toml:"), "{err}");
    }
}
