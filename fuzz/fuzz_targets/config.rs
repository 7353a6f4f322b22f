//! The configuration file and `POSTHORN_*__*` variables: any text either
//! loads or is refused with errors (never a panic), and a configuration
//! that loads can be turned into every rule set the service derives from
//! it at start.
//!
//! Input: the TOML text, then optionally a NUL byte and environment lines
//! `NAME=VALUE`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use posthorn_server::inbound::AcceptRules;
use posthorn_server::tracking::Tracking;
use posthorn_store::StoreRules;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (toml, env) = text.split_once('\0').unwrap_or((text, ""));
    let env = env.lines().filter_map(|line| {
        let (name, value) = line.split_once('=')?;
        Some((name.to_owned(), value.to_owned()))
    });
    match posthorn_server::config::parse(toml, "fuzz.toml", env) {
        Ok(config) => {
            let _ = StoreRules::from_config(&config);
            let _ = AcceptRules::from_config(&config);
            let _ = Tracking::new(b"fuzzing secret", &config);
            let _ = posthorn_server::open_files::needed(&config);
        }
        Err(errors) => assert!(!errors.0.is_empty(), "refused without a reason"),
    }
});
