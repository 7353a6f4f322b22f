//! The header section of an RFC 5322 message, read as bytes: where each
//! field starts and ends, its name and value, and where the body starts.
//! One reader for every part of Posthorn that looks at a message's header
//! (SMTP submission, DKIM signing, copies, the simulator, the bounce
//! parser), so that they agree on where a field ends.
//!
//! The reader never fails and never copies: every [`Field`] is a slice of
//! the input, and the fields, the blank line and the body together are the
//! input, byte for byte. What a caller makes of odd input is its own rule:
//!
//! - Lines end at LF, with or without a CR before it (SMTP normalises to
//!   CRLF, files and decoded attachments often have bare LF). A CR not
//!   followed by LF is content.
//! - A line starting with SP or HTAB continues the field before it (folding,
//!   RFC 5322 §2.2.3, and obs-fold: a continuation line of only
//!   whitespace). A line that starts a message with whitespace has no
//!   field to continue: it is a field without a name.
//! - The first empty line (`CRLF` or `LF`) ends the header section; the body
//!   follows it. Without one, every line is a field and the body is empty.
//! - A line without a colon is a field without a [`Field::name`]; the reader
//!   does not stop there. Submission refuses such a message, the bounce
//!   parser ends the header section at it (malformed returned mail often
//!   has no blank line), the rest read past it.
//! - Names are not checked: [`is_field_name`] says whether one is RFC 5322
//!   `ftext`. Values may be any bytes (RFC 6532 UTF-8, or 8-bit junk in
//!   returned mail); submission's content rules judge them
//!   (`crate::submission::check_raw_header`).
//!
//! An mbox `From ` line is not a header field; a caller that reads mbox
//! files removes it first.

use std::borrow::Cow;
use std::ops::Range;

/// One field of the header section: its first line and every continuation
/// line, line endings included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field<'a> {
    /// Every byte of the field, folding and the final line ending included.
    pub raw: &'a [u8],
    /// Where `raw` sits in the input.
    pub range: Range<usize>,
    /// Length of the first line without its line ending.
    first_line: usize,
}

impl<'a> Field<'a> {
    /// The first line of the field, without its line ending.
    pub fn first_line(&self) -> &'a [u8] {
        &self.raw[..self.first_line]
    }

    /// Where the colon ending the name is in `raw`: the first one on the
    /// first line, unless that line starts with whitespace (no field to
    /// name).
    fn colon(&self) -> Option<usize> {
        let line = self.first_line();
        if matches!(line.first(), Some(b' ' | b'\t')) {
            return None;
        }
        line.iter().position(|&b| b == b':')
    }

    /// The name before the colon, trailing whitespace removed (RFC 5322's
    /// obsolete syntax allows it before the colon); `None` when the first
    /// line has no colon (not a header field at all).
    pub fn name(&self) -> Option<&'a [u8]> {
        self.colon().map(|colon| self.raw[..colon].trim_ascii_end())
    }

    /// Everything after the colon (the whole field when there is none),
    /// folding included, the final line ending removed.
    pub fn value(&self) -> &'a [u8] {
        let content = strip_line_ending(self.raw);
        match self.colon() {
            Some(colon) => &content[colon + 1..],
            None => content,
        }
    }

    /// The value unfolded as RFC 5322 §2.2.3 says: each line ending that
    /// folding put before whitespace is removed, the whitespace stays.
    /// Borrowed when the field is on one line.
    pub fn unfolded(&self) -> Cow<'a, [u8]> {
        let value = self.value();
        if !value.contains(&b'\n') {
            return Cow::Borrowed(value);
        }
        let mut out = Vec::with_capacity(value.len());
        for (i, line) in value.split(|&b| b == b'\n').enumerate() {
            if i > 0 {
                // The CR of a CRLF fold is part of the line ending.
                out.pop_if(|b| *b == b'\r');
            }
            out.extend_from_slice(line);
        }
        Cow::Owned(out)
    }

    /// Whether this field is called `name` (ASCII case-insensitive).
    pub fn is(&self, name: &str) -> bool {
        self.name()
            .is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes()))
    }
}

/// Whether `name` is a field name by RFC 5322: one or more printable ASCII
/// characters other than the colon (`ftext`).
pub fn is_field_name(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|&b| b.is_ascii_graphic() && b != b':')
}

/// The fields of `message`'s header section, read one at a time (a caller
/// looking for one field stops early). Once it has returned `None`,
/// [`Fields::body_start`] says where the body starts.
pub fn fields(message: &[u8]) -> Fields<'_> {
    Fields {
        message,
        at: 0,
        body_start: None,
    }
}

/// The whole header section at once: its fields and where the body starts
/// (after the blank line; the message's length when there is none). The
/// blank line itself belongs to neither.
pub fn read(message: &[u8]) -> (Vec<Field<'_>>, usize) {
    let mut reader = fields(message);
    let list: Vec<Field<'_>> = reader.by_ref().collect();
    (list, reader.body_start().unwrap_or(message.len()))
}

/// An iterator over the fields of a header section; see [`fields`].
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    message: &'a [u8],
    at: usize,
    body_start: Option<usize>,
}

impl Fields<'_> {
    /// Where the body starts, once the header section has been read to its
    /// end: after the blank line, or the message's length when it has none.
    /// `None` while fields remain.
    pub fn body_start(&self) -> Option<usize> {
        self.body_start
    }

    /// Where the blank line ending the header section starts, once read;
    /// the same as [`Fields::body_start`] when there is none.
    pub fn header_end(&self) -> Option<usize> {
        self.body_start?;
        Some(self.at)
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Field<'a>;

    fn next(&mut self) -> Option<Field<'a>> {
        if self.body_start.is_some() {
            return None;
        }
        let message = self.message;
        let start = self.at;
        if start >= message.len() {
            self.body_start = Some(message.len());
            return None;
        }
        let first_end = line_end(message, start);
        let first = &message[start..first_end];
        if first == b"\r\n" || first == b"\n" {
            self.body_start = Some(first_end);
            return None;
        }
        let mut end = first_end;
        while matches!(message.get(end), Some(b' ' | b'\t')) {
            end = line_end(message, end);
        }
        self.at = end;
        Some(Field {
            raw: &message[start..end],
            range: start..end,
            first_line: strip_line_ending(first).len(),
        })
    }
}

/// The index just past the LF ending the line that starts at `from`, or the
/// input's length.
fn line_end(message: &[u8], from: usize) -> usize {
    message[from..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(message.len(), |i| from + i + 1)
}

fn strip_line_ending(bytes: &[u8]) -> &[u8] {
    match bytes.strip_suffix(b"\n") {
        Some(line) => line.strip_suffix(b"\r").unwrap_or(line),
        None => bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields, the blank line and the body are the input.
    fn assert_covers(message: &[u8]) {
        let (list, body_start) = read(message);
        let mut at = 0;
        for field in &list {
            assert_eq!(field.range.start, at);
            assert_eq!(field.raw, &message[field.range.clone()]);
            assert!(!field.raw.is_empty());
            at = field.range.end;
        }
        let blank = &message[at..body_start];
        assert!(
            blank.is_empty() || blank == b"\n" || blank == b"\r\n",
            "{blank:?}"
        );
        assert!(blank.is_empty() == (body_start == message.len() && at == body_start));
    }

    fn names(message: &[u8]) -> Vec<Option<&[u8]>> {
        read(message).0.iter().map(Field::name).collect()
    }

    #[test]
    fn fields_and_body() {
        let message = b"Subject: Hi\r\nTo: a@b.example\r\n\r\nbody\r\n\r\nTo: not a field\r\n";
        let (list, body_start) = read(message);
        assert_eq!(names(message), [Some(&b"Subject"[..]), Some(b"To")]);
        assert_eq!(list[0].value(), b" Hi");
        assert_eq!(list[1].raw, b"To: a@b.example\r\n");
        assert_eq!(&message[body_start..], b"body\r\n\r\nTo: not a field\r\n");
        assert_covers(message);
    }

    #[test]
    fn folding_and_obs_fold() {
        let message = b"Subject: one\r\n two\r\n\tthree\r\n \r\nX: y\r\n\r\n";
        let (list, _) = read(message);
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].value(), b" one\r\n two\r\n\tthree\r\n ");
        assert_eq!(list[0].first_line(), b"Subject: one");
        assert_eq!(&*list[0].unfolded(), b" one two\tthree ");
        assert!(matches!(list[1].unfolded(), Cow::Borrowed(b" y")));
        assert_covers(message);
    }

    #[test]
    fn bare_lf_and_mixed_line_endings() {
        let message = b"A: 1\nB: 2\r\n  more\nC: 3\n\nbody";
        let (list, body_start) = read(message);
        assert_eq!(names(message), [Some(&b"A"[..]), Some(b"B"), Some(b"C")]);
        assert_eq!(list[1].value(), b" 2\r\n  more");
        assert_eq!(&*list[1].unfolded(), b" 2  more");
        assert_eq!(&message[body_start..], b"body");
        assert_covers(message);
    }

    #[test]
    fn a_lone_cr_is_content() {
        let message = b"A: 1\r2\r\n\r\r\nB: 3\r\n";
        let (list, body_start) = read(message);
        assert_eq!(list.len(), 3, "\\r\\r\\n is not a blank line");
        assert_eq!(list[0].value(), b" 1\r2");
        assert_eq!(list[1].name(), None);
        assert_eq!(body_start, message.len());
        assert_covers(message);
    }

    #[test]
    fn no_blank_line_means_no_body() {
        let (list, body_start) = read(b"A: 1\r\nB: 2");
        assert_eq!(list.len(), 2);
        assert_eq!(body_start, 10);
        assert_eq!(list[1].value(), b" 2");
        let (list, body_start) = read(b"A: 1\r\n\r\n");
        assert_eq!((list.len(), body_start), (1, 8));
        assert_covers(b"A: 1\r\n\r\n");
    }

    #[test]
    fn empty_input_and_empty_header_section() {
        assert_eq!(read(b"").1, 0);
        let (list, body_start) = read(b"\r\nbody");
        assert!(list.is_empty());
        assert_eq!(body_start, 2);
        assert_eq!(read(b"\nbody").1, 1);
    }

    #[test]
    fn empty_values_and_names() {
        let message = b"X-Empty:\r\nX-Space: \r\n: no name\r\nName : spaced\r\n\r\n";
        let (list, _) = read(message);
        assert_eq!(list[0].value(), b"");
        assert_eq!(list[1].value(), b" ");
        assert_eq!(list[2].name(), Some(&b""[..]));
        assert!(!is_field_name(list[2].name().unwrap()));
        assert_eq!(list[3].name(), Some(&b"Name"[..]));
        assert!(list[3].is("name"));
        assert!(is_field_name(b"X-Custom_1"));
        assert!(!is_field_name(b"Two words"));
    }

    #[test]
    fn lines_without_a_colon_are_nameless_fields() {
        let message = b"no colon\r\n x: y\r\nA: 1\r\n\r\n";
        let (list, _) = read(message);
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].name(), None, "the colon is on a continuation line");
        assert_eq!(list[0].value(), b"no colon\r\n x: y");
        assert_eq!(list[1].name(), Some(&b"A"[..]));
        assert_covers(message);
    }

    #[test]
    fn leading_whitespace_has_nothing_to_continue() {
        let message = b" Folded: x\r\n more\r\nA: 1\r\n\r\n";
        let (list, _) = read(message);
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].name(), None);
        assert_eq!(list[0].raw, b" Folded: x\r\n more\r\n");
        assert_covers(message);
    }

    #[test]
    fn non_utf8_bytes_pass_through() {
        let message = b"Subject: Gr\xfc\xdfe\r\n  \xff\r\nX\xe9: 1\r\n\r\n\xfe";
        let (list, body_start) = read(message);
        assert_eq!(list[0].value(), b" Gr\xfc\xdfe\r\n  \xff");
        assert_eq!(list[1].name(), Some(&b"X\xe9"[..]));
        assert!(!is_field_name(list[1].name().unwrap()));
        assert_eq!(&message[body_start..], b"\xfe");
        assert_covers(message);
    }

    #[test]
    fn very_long_lines() {
        let mut message = b"X-Long: ".to_vec();
        message.extend(std::iter::repeat_n(b'a', 100_000));
        message.extend_from_slice(b"\r\n");
        message.extend(std::iter::repeat_n(b' ', 50_000));
        message.extend_from_slice(b"b\r\n\r\nbody");
        let (list, body_start) = read(&message);
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].value().len(), 1 + 100_000 + 2 + 50_001);
        assert_eq!(list[0].unfolded().len(), 1 + 100_000 + 50_001);
        assert_eq!(&message[body_start..], b"body");
        assert_covers(&message);
    }

    #[test]
    fn the_iterator_stops_early_and_reports_the_body_after_the_end() {
        let message = b"A: 1\r\nB: 2\r\n\r\nbody";
        let mut reader = fields(message);
        assert!(reader.by_ref().any(|f| f.is("a")));
        assert_eq!(reader.body_start(), None);
        assert_eq!(reader.by_ref().count(), 1);
        assert_eq!(reader.body_start(), Some(14));
        assert_eq!(reader.header_end(), Some(12));
        assert_eq!(reader.next(), None);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_are_covered(
            parts in proptest::collection::vec(
                proptest::sample::select(vec![
                    &b"A: 1"[..], b"\r\n", b"\n", b"\r", b" ", b"\t", b":", b"x", b"\xff",
                ]),
                0..40,
            )
        ) {
            let message = parts.concat();
            assert_covers(&message);
            for field in read(&message).0 {
                let _ = (field.name(), field.unfolded());
                proptest::prop_assert!(field.value().len() <= field.raw.len());
            }
        }
    }
}
