//! Returned mail: any bytes a remote MTA or a feedback loop could send back
//! must parse without a panic, and every record must be usable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for record in posthorn_bounce::parse(data) {
        // Touch every derived value a reader of the record would.
        let _ = (
            record.kind.as_str(),
            record.reason.as_str(),
            record.hard_bounce(),
        );
        let _ = format!("{record:?}");
    }
});
