//! The header section of an RFC 5322 message, read just enough to find
//! a field or where the body starts (submission, the simulator, copies).
//!
//! [`RawField`]s are the bytes as they arrived, so that a message can be
//! passed on unchanged (SMTP submission must never alter what a client
//! sent); [`HeaderBlock`] is a text view of them for reading values.

use std::ops::Range;

/// One field of the header section, as bytes: its first line and every
/// continuation line, line endings included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawField<'a> {
    /// Every byte of the field, folding and the final line ending included.
    pub bytes: &'a [u8],
    /// The name before the colon, trailing whitespace removed; `None` when
    /// the first line has no colon (not a header field at all).
    pub name: Option<&'a [u8]>,
    /// Everything after the colon, folding included, final line ending
    /// removed.
    pub value: &'a [u8],
    /// Where `bytes` sits in the message.
    pub range: Range<usize>,
}

/// The header section of `message` as raw fields, and where the body starts
/// (after the blank line; the message's length when there is none). The
/// blank line itself belongs to neither.
pub fn raw_fields(message: &[u8]) -> (Vec<RawField<'_>>, usize) {
    let mut fields: Vec<RawField<'_>> = Vec::new();
    let mut at = 0;
    let mut body_start = message.len();
    while at < message.len() {
        let end = message[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(message.len(), |i| at + i + 1);
        let line = &message[at..end];
        if line == b"\r\n" || line == b"\n" {
            body_start = end;
            break;
        }
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        match fields.last_mut() {
            Some(last) if continuation => last.range.end = end,
            _ => fields.push(RawField {
                bytes: &[],
                name: None,
                value: &[],
                range: at..end,
            }),
        }
        at = end;
    }
    // Fill in the views now that every field's extent is known.
    for field in &mut fields {
        field.bytes = &message[field.range.clone()];
        let content = strip_line_ending(field.bytes);
        match content.iter().position(|&b| b == b':') {
            Some(colon) => {
                field.name = Some(content[..colon].trim_ascii_end());
                field.value = &content[colon + 1..];
            }
            None => field.value = content,
        }
    }
    (fields, body_start)
}

fn strip_line_ending(bytes: &[u8]) -> &[u8] {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    bytes.strip_suffix(b"\r").unwrap_or(bytes)
}

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
        let (raw, body_start) = raw_fields(message);
        let fields = raw
            .iter()
            .filter_map(|f| {
                let name = String::from_utf8_lossy(f.name?).trim().to_ascii_lowercase();
                Some((name, unfold(&String::from_utf8_lossy(f.value))))
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
    fn raw_fields_keep_every_byte_and_find_the_body() {
        let message = b"Subject: Gr\xfc\xdfe\r\n  folded\r\nX: 1\nno colon\r\n\r\nbody\r\n";
        let (fields, body_start) = raw_fields(message);
        assert_eq!(&message[body_start..], b"body\r\n");
        let joined: Vec<u8> = fields.iter().flat_map(|f| f.bytes.to_vec()).collect();
        assert_eq!(joined, &message[..body_start - 2]);
        assert_eq!(fields[0].name, Some(&b"Subject"[..]));
        assert_eq!(fields[0].value, b" Gr\xfc\xdfe\r\n  folded");
        assert_eq!(fields[1].name, Some(&b"X"[..]));
        assert_eq!(fields[2].name, None);
        let block = HeaderBlock::parse(message);
        assert_eq!(block.get("x"), Some("1"));
        assert_eq!(block.body_start, body_start);
    }

    #[test]
    fn no_blank_line_means_no_body() {
        let (fields, body_start) = raw_fields(b"A: 1\r\nB: 2");
        assert_eq!(fields.len(), 2);
        assert_eq!(body_start, 10);
        assert_eq!(fields[1].value, b" 2");
    }
}
