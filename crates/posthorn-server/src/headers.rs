//! A text view of an RFC 5322 header section, for reading values
//! (submission, the simulator, copies). The fields themselves are read by
//! `posthorn_core::rfc5322`, the one header reader every part of Posthorn
//! shares; its fields are the bytes as they arrived, so that a message can
//! be passed on unchanged (SMTP submission must never alter what a client
//! sent).

use posthorn_core::rfc5322;

/// The header section of a message, unfolded, names lower-cased.
pub struct HeaderBlock {
    pub fields: Vec<(String, String)>,
    /// Byte offset where the body starts (after the blank line).
    pub body_start: usize,
}

impl HeaderBlock {
    /// A text view for reading values; bytes that are not UTF-8 show as
    /// U+FFFD here, and only here: nothing written out is built from it.
    pub fn parse(message: &[u8]) -> Self {
        let (raw, body_start) = rfc5322::read(message);
        let fields = raw
            .iter()
            .filter_map(|f| {
                let name = String::from_utf8_lossy(f.name()?)
                    .trim()
                    .to_ascii_lowercase();
                Some((name, unfold(&String::from_utf8_lossy(f.value()))))
            })
            .collect();
        Self { fields, body_start }
    }

    /// The first field called `name` (lower-case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A field value unfolded: each line break and the whitespace around it
/// become one space, and the ends are trimmed.
pub fn unfold(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for line in value.split('\n') {
        let line = line.trim_end_matches('\r');
        if out.is_empty() {
            out.push_str(line.trim());
        } else {
            out.push(' ');
            out.push_str(line.trim());
        }
    }
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_reads_values_unfolded_with_names_lower_cased() {
        let message = b"Subject: Gr\xfc\xdfe\r\n  folded\r\nX: 1\nno colon\r\n\r\nbody\r\n";
        let block = HeaderBlock::parse(message);
        assert_eq!(block.get("subject"), Some("Gr\u{fffd}\u{fffd}e folded"));
        assert_eq!(block.get("x"), Some("1"));
        assert_eq!(block.fields.len(), 2, "a line without a colon is no field");
        assert_eq!(&message[block.body_start..], b"body\r\n");
    }
}
