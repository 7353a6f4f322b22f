//! The shared RFC 5322 header reader: any bytes are read without a panic,
//! and the fields, the blank line and the body it finds are the input, byte
//! for byte, in order.
#![no_main]

use libfuzzer_sys::fuzz_target;
use posthorn_core::rfc5322;

fuzz_target!(|data: &[u8]| {
    let (fields, body_start) = rfc5322::read(data);
    assert!(body_start <= data.len());
    let mut at = 0;
    for field in &fields {
        assert_eq!(field.range.start, at, "fields are contiguous");
        assert!(!field.raw.is_empty());
        assert_eq!(field.raw, &data[field.range.clone()]);
        assert!(field.raw.starts_with(field.first_line()));
        assert!(field.raw.ends_with(field.value()));
        if let Some(name) = field.name() {
            assert!(!name.contains(&b'\n'));
        }
        assert!(field.unfolded().len() <= field.value().len());
        at = field.range.end;
    }
    // Between the last field and the body: nothing, or the blank line.
    let blank = &data[at..body_start];
    assert!(
        blank.is_empty() && body_start == data.len() || blank == b"\n" || blank == b"\r\n",
        "{blank:?} before the body"
    );
    // The lazy reader agrees with the whole one.
    let mut reader = rfc5322::fields(data);
    assert_eq!(reader.by_ref().count(), fields.len());
    assert_eq!(reader.body_start(), Some(body_start));
});
