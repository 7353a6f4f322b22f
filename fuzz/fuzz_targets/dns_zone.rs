//! Zone text (the `--dns-zone` file): any text parses or is refused with an
//! error, and every name it mentions can be looked up.
#![no_main]

use libfuzzer_sys::fuzz_target;
use posthorn_server::delivery::dns::{Resolver, ZoneResolver};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(zone) = ZoneResolver::from_zone(text) else {
        return;
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
