//! Any bytes a remote MTA could send back must parse without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let records = posthorn_bounce::parse(data);
    // Touch every field so nothing is optimised away.
    for record in &records {
        let _ = (record.kind.as_str(), record.reason.as_str(), record.hard_bounce());
    }
});
