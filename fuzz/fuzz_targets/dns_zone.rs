//! Zone text (the `--dns-zone` file, read by hickory's zone-file parser):
//! any text parses or is refused with an error that names a line of it, and
//! every name it mentions can be looked up.
#![no_main]

use libfuzzer_sys::fuzz_target;
use posthorn_server::delivery::dns::{Resolver, ZoneResolver};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let zone = match ZoneResolver::from_zone(text) {
        Ok(zone) => zone,
        Err(error) => {
            // A refusal says where: `zone line N: ...` with N a line of the
            // text, or (a CNAME, found after parsing) `zone: NAME ...`.
            if let Some(rest) = error.strip_prefix("zone line ") {
                let line: usize = rest
                    .split(':')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("no line number: {error}"));
                assert!(
                    line >= 1 && line <= text.lines().count().max(1),
                    "line {line} is not in the text: {error}"
                );
            } else {
                assert!(error.starts_with("zone: "), "{error}");
            }
            return;
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        for name in text.split_whitespace().take(64) {
            let _ = format!("{:?}", zone.mx(name).await);
            let _ = format!("{:?}", zone.host(name).await);
        }
    });
});
