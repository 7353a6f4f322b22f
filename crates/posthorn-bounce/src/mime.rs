//! A small, forgiving MIME reader for returned mail: bytes -> a tree of
//! parts with unfolded headers and decoded text.
//!
//! Returned mail is often malformed (bare CR line ends, raw 8-bit bytes,
//! boundaries that never close, DSN parts labelled `text/plain`), so
//! nothing here fails: what cannot be understood is kept as text. Line ends
//! are made `\n` once, up front, so no reader below has to care. Limits
//! (nesting depth, number of parts, decoded size) keep hostile input linear.

use encoding_rs::Encoding;
use posthorn_core::rfc5322;

/// How deep multiparts and attached messages may nest. Real bounces need
/// three or four levels (report > original message > alternative).
const MAX_DEPTH: usize = 8;
/// How many parts one message may have in all; the rest are ignored.
const MAX_PARTS: usize = 256;
/// Text beyond this many bytes of a part is not decoded: a bounce's words
/// are at its start, and attachments of the original need not be read.
const MAX_TEXT: usize = 512 * 1024;

/// Header fields in order, names as written, values unfolded.
#[derive(Debug, Default, Clone)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// The first field of that name (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One MIME part. A multipart has `children`; a `message/rfc822` part has
/// one child, the attached message (whose `headers` are the original's);
/// anything else is a leaf whose decoded body is in `text`.
#[derive(Debug, Default, Clone)]
pub struct Part {
    pub headers: Headers,
    /// Lowercase `type/subtype`; `text/plain` when absent or unreadable.
    pub mime_type: String,
    pub text: String,
    pub children: Vec<Part>,
}

impl Part {
    /// This part and every part below it, depth first, in document order.
    pub fn walk(&self) -> Vec<&Part> {
        let mut out = Vec::new();
        let mut stack = vec![self];
        while let Some(part) = stack.pop() {
            out.push(part);
            stack.extend(part.children.iter().rev());
        }
        out
    }

    pub fn is_type(&self, mime_type: &str) -> bool {
        self.mime_type == mime_type
    }
}

/// Reads a whole message.
pub fn parse_message(raw: &[u8]) -> Part {
    let text = normalize_line_ends(raw);
    let mut budget = MAX_PARTS;
    let mut body = text.as_slice();
    // An mbox separator line ("From sender date") is not a header.
    if body.starts_with(b"From ") {
        body = body
            .iter()
            .position(|&b| b == b'\n')
            .map_or(&[][..], |at| &body[at + 1..]);
    }
    parse_entity(body, 0, &mut budget, "text/plain")
}

/// CRLF and lone CR become LF, so every reader splits on `\n` only.
pub fn normalize_line_ends(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'\r' => {
                out.push(b'\n');
                if raw.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// Splits header lines from the body: the header block ends at the first
/// empty line, or at the first line that is neither a field nor a
/// continuation (malformed mail often has no empty line).
///
/// The fields are read by `posthorn_core::rfc5322`, the reader every part
/// of Posthorn shares; the stricter rules above are this parser's. Lines
/// end at LF only here: [`parse_message`] has made every line end LF, and
/// a CR left by a decoded attachment is content (so a CRLF line is not the
/// empty line, and a value keeps its CR, as it always has).
pub fn split_headers(data: &[u8]) -> (Headers, &[u8]) {
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut reader = rfc5322::fields(data);
    for field in reader.by_ref() {
        let content = field.raw.strip_suffix(b"\n").unwrap_or(field.raw);
        // The first line up to its LF, a CR before the LF kept.
        let mut line = field.first_line();
        if field.raw.get(line.len()) == Some(&b'\r') {
            line = &field.raw[..=line.len()];
        }
        if let Some(colon) = field_name_end(line) {
            let name = String::from_utf8_lossy(&line[..colon])
                .trim_end()
                .to_string();
            let value = String::from_utf8_lossy(&content[colon + 1..]).to_string();
            fields.push((name, value));
            continue;
        }
        // A parameter line that lost its indentation (`Content-Type:
        // multipart/alternative;` then `boundary="..."` at the line start,
        // as some Java mailers write it) continues the field it follows,
        // with any lines folded under it.
        let lost_indent = line.contains(&b'=')
            && fields
                .last()
                .is_some_and(|(_, v)| v.trim_end().ends_with(';'));
        if lost_indent && let Some((_, value)) = fields.last_mut() {
            value.push('\n');
            value.push_str(&String::from_utf8_lossy(content));
            continue;
        }
        return (Headers(fields), &data[field.range.start..]);
    }
    let body_start = reader.body_start().unwrap_or(data.len());
    // A CRLF empty line is not empty here (see above): the body starts at it.
    let header_end = reader.header_end().unwrap_or(body_start);
    let body_start = if &data[header_end..body_start] == b"\r\n" {
        header_end
    } else {
        body_start
    };
    (Headers(fields), &data[body_start..])
}

/// Where the colon of a header field line is, if the line is one: a name of
/// printable characters without spaces (a space before the colon is
/// tolerated), then `:`.
fn field_name_end(line: &[u8]) -> Option<usize> {
    let colon = line.iter().take(80).position(|&b| b == b':')?;
    let name = line[..colon].trim_ascii_end();
    rfc5322::is_field_name(name).then_some(colon)
}

/// Unfolds a header value read by [`split_headers`]: line breaks of folded
/// lines become single spaces, ends trimmed.
pub fn unfold(value: &str) -> String {
    collapse_whitespace(value)
}

/// Whitespace runs become one space, ends trimmed.
pub fn collapse_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

fn parse_entity(data: &[u8], depth: usize, budget: &mut usize, default_type: &str) -> Part {
    *budget = budget.saturating_sub(1);
    let (headers, body) = split_headers(data);
    let content_type = headers.get("Content-Type").map(unfold).unwrap_or_default();
    let (mut mime_type, params) = parse_content_type(&content_type);
    if mime_type.is_empty() {
        mime_type = default_type.to_string();
    }
    let encoding = headers
        .get("Content-Transfer-Encoding")
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let charset = param(&params, "charset");
    let mut part = Part {
        headers,
        mime_type,
        ..Part::default()
    };
    let nest = depth < MAX_DEPTH && *budget > 0;
    let implied = if part.headers.get("Content-Type").is_none() && depth == 0 {
        implied_boundary(body)
    } else {
        None
    };
    if implied.is_some() {
        part.mime_type = "multipart/mixed".into();
    }
    if part.mime_type.starts_with("multipart/")
        && nest
        && let Some(boundary) = implied
            .as_deref()
            .or_else(|| param(&params, "boundary"))
            .filter(|b| !b.is_empty())
    {
        let child_default = if part.mime_type == "multipart/digest" {
            "message/rfc822"
        } else {
            "text/plain"
        };
        let (preamble, bodies) = split_multipart(body, boundary.as_bytes());
        if bodies.is_empty() {
            // The boundary never appears: read the body as text.
            part.text = decode_text(body, &encoding, charset);
            return part;
        }
        if !is_boilerplate_preamble(preamble) {
            part.children.push(Part {
                mime_type: "text/plain".into(),
                text: decode_text(preamble, "", None),
                ..Part::default()
            });
        }
        for child in bodies {
            if *budget == 0 {
                break;
            }
            part.children
                .push(parse_entity(child, depth + 1, budget, child_default));
        }
        return part;
    }
    let attached_message = matches!(
        part.mime_type.as_str(),
        "message/rfc822"
            | "message/global"
            | "message/partial"
            | "text/rfc822-headers"
            | "message/rfc822-headers"
            | "text/rfc822-header"
    );
    if attached_message && nest {
        let decoded = decode_transfer(body, &encoding);
        let inner = decoded.as_deref().unwrap_or(body);
        let inner = trim_leading_blank_lines(inner);
        part.children
            .push(parse_entity(inner, depth + 1, budget, "text/plain"));
        return part;
    }
    let texty = part.mime_type.starts_with("text/")
        || part.mime_type.starts_with("message/")
        || part.mime_type == "application/octet-stream" && depth == 1;
    if texty {
        part.text = decode_text(body, &encoding, charset);
    }
    part
}

/// "This is a multi-part message in MIME format." and the like say
/// nothing; a preamble with more is kept as text (some MTAs write their
/// report there).
fn is_boilerplate_preamble(preamble: &[u8]) -> bool {
    let text = String::from_utf8_lossy(preamble).to_ascii_lowercase();
    let text = text.trim();
    text.is_empty() || text.len() < 300 && text.contains("mime")
}

/// A body that has MIME boundaries without a multipart header (mbox
/// extracts often lose the message's header): the boundary of its first
/// `--X` line, when a closing `--X--` line follows.
fn implied_boundary(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX_TEXT)]);
    let first = text
        .lines()
        .take(20)
        .find(|l| l.starts_with("--") && l.len() > 8 && !l.contains(' '))?;
    let boundary = first[2..].trim_end_matches('-');
    let closing = format!("--{boundary}--");
    (!boundary.is_empty() && text.lines().any(|l| l.trim_end() == closing))
        .then(|| boundary.to_string())
}

/// Some MTAs leave an empty line between the part's headers and the
/// attached message's headers.
fn trim_leading_blank_lines(mut data: &[u8]) -> &[u8] {
    while data.first() == Some(&b'\n') {
        data = &data[1..];
    }
    data
}

/// Splits a multipart body on its boundary lines: the preamble and each
/// part's bytes. A part's last line break belongs to the boundary.
fn split_multipart<'a>(body: &'a [u8], boundary: &[u8]) -> (&'a [u8], Vec<&'a [u8]>) {
    let mut parts = Vec::new();
    let mut preamble: &[u8] = &[];
    let mut start: Option<usize> = None;
    let mut pos = 0;
    while pos < body.len() {
        let end = body[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |at| pos + at);
        let line = &body[pos..end];
        if let Some(rest) = line
            .strip_prefix(b"--")
            .and_then(|l| l.strip_prefix(boundary))
        {
            let rest = rest.trim_ascii();
            let closing = rest == b"--";
            if rest.is_empty() || closing {
                let before = pos.saturating_sub(1);
                match start {
                    None => preamble = &body[..before],
                    Some(s) => parts.push(&body[s..before.max(s)]),
                }
                if closing {
                    return (preamble, parts);
                }
                start = Some((end + 1).min(body.len()));
            }
        }
        pos = end + 1;
        if parts.len() >= MAX_PARTS {
            return (preamble, parts);
        }
    }
    if let Some(s) = start {
        // No closing boundary: the last part runs to the end.
        parts.push(&body[s..]);
    }
    (preamble, parts)
}

/// `type/subtype; a=b; c="d"` -> lowercase type and the parameters.
pub fn parse_content_type(value: &str) -> (String, Vec<(String, String)>) {
    let mut pieces = split_params(value);
    let mime_type = pieces
        .next()
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| t.contains('/') && !t.contains(char::is_whitespace))
        .unwrap_or_default();
    let params = pieces
        .filter_map(|p| {
            let (name, value) = p.split_once('=')?;
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .map(|v| v.strip_suffix('"').unwrap_or(v))
                .unwrap_or(value);
            Some((name.trim().to_ascii_lowercase(), value.to_string()))
        })
        .collect();
    (mime_type, params)
}

/// Splits on `;` outside double quotes.
fn split_params(value: &str) -> impl Iterator<Item = &str> {
    let mut pieces = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => {
                pieces.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    pieces.push(&value[start..]);
    pieces.into_iter()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Undoes base64 or quoted-printable; `None` when the body is as written.
fn decode_transfer(body: &[u8], encoding: &str) -> Option<Vec<u8>> {
    let body = &body[..body.len().min(MAX_TEXT * 2)];
    match encoding {
        "base64" => Some(decode_base64(body)),
        "quoted-printable" => Some(decode_quoted_printable(body)),
        _ => None,
    }
}

fn decode_text(body: &[u8], encoding: &str, charset: Option<&str>) -> String {
    let decoded = decode_transfer(body, encoding);
    let bytes = decoded.as_deref().unwrap_or(body);
    let bytes = &bytes[..bytes.len().min(MAX_TEXT)];
    let mut text = decode_charset(bytes, charset);
    if text.contains('\r') {
        // Base64 bodies carry their own line ends.
        text = String::from_utf8_lossy(&normalize_line_ends(text.as_bytes())).into_owned();
    }
    text
}

/// Bytes in a declared charset -> text. Undeclared 8-bit text is read as
/// UTF-8 if it is, else ISO-2022-JP when it has its escapes, else lossily.
pub fn decode_charset(bytes: &[u8], charset: Option<&str>) -> String {
    let label = charset.map(str::trim).filter(|c| !c.is_empty());
    if let Some(encoding) = label.and_then(|l| Encoding::for_label(l.as_bytes()))
        && (encoding != encoding_rs::UTF_8 || std::str::from_utf8(bytes).is_err())
    {
        let (text, _) = encoding.decode_without_bom_handling(bytes);
        return text.into_owned();
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_string(),
        Err(_) if bytes.windows(3).any(|w| w == b"\x1b$B") => {
            let (text, _) = encoding_rs::ISO_2022_JP.decode_without_bom_handling(bytes);
            text.into_owned()
        }
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// Base64, skipping anything that is not in the alphabet (line breaks,
/// stray spaces) and stopping at padding.
pub fn decode_base64(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in input {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => {
                // Padding ends a block; a new block may follow on the next
                // line in concatenated encodings, so reset and go on.
                acc = 0;
                bits = 0;
                continue;
            }
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Quoted-printable: `=XX` escapes and `=` soft line breaks.
pub fn decode_quoted_printable(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if b == b'=' {
            let next = input.get(i + 1).copied();
            if next == Some(b'\n') {
                i += 2;
                continue;
            }
            let hex = input.get(i + 1..i + 3).and_then(|h| {
                let h = std::str::from_utf8(h).ok()?;
                u8::from_str_radix(h, 16).ok()
            });
            if let Some(value) = hex {
                out.push(value);
                i += 3;
                continue;
            }
            // A soft break followed by trailing spaces before the newline.
            let rest = &input[i + 1..];
            let blank = rest
                .iter()
                .take_while(|&&c| c == b' ' || c == b'\t')
                .count();
            if rest.get(blank) == Some(&b'\n') {
                i += blank + 2;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

/// Decodes RFC 2047 encoded words (`=?charset?B?...?=`) in a header value;
/// whitespace between two encoded words disappears, as the RFC says.
pub fn decode_header(value: &str) -> String {
    if !value.contains("=?") {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    let mut last_was_word = false;
    while let Some(start) = rest.find("=?") {
        let (before, from_start) = rest.split_at(start);
        let Some((decoded, used)) = encoded_word(from_start) else {
            out.push_str(&rest[..start + 2]);
            rest = &rest[start + 2..];
            last_was_word = false;
            continue;
        };
        if !(last_was_word && before.trim().is_empty()) {
            out.push_str(before);
        }
        out.push_str(&decoded);
        rest = &from_start[used..];
        last_was_word = true;
    }
    out.push_str(rest);
    out
}

/// One encoded word at the start of `s`: its text and its length.
fn encoded_word(s: &str) -> Option<(String, usize)> {
    let inner = s.strip_prefix("=?")?;
    let (charset, rest) = inner.split_once('?')?;
    let (kind, rest) = rest.split_once('?')?;
    let end = rest.find("?=")?;
    let payload = &rest[..end];
    if payload.contains(char::is_whitespace) && payload.len() > 200 {
        return None;
    }
    let bytes = match kind {
        "B" | "b" => decode_base64(payload.as_bytes()),
        "Q" | "q" => {
            let spaced = payload.replace('_', " ");
            decode_quoted_printable(spaced.as_bytes())
        }
        _ => return None,
    };
    // RFC 2231 language suffix: `charset*lang`.
    let charset = charset.split('*').next().unwrap_or(charset);
    let used = 2 + inner.len() - rest.len() + end + 2;
    Some((decode_charset(&bytes, Some(charset)), used))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_ends_become_lf() {
        assert_eq!(normalize_line_ends(b"a\r\nb\rc\n"), b"a\nb\nc\n");
    }

    #[test]
    fn multipart_with_attached_message() {
        let raw = b"From x Mon\r\nContent-Type: multipart/report; boundary=\"b\"\r\n\r\npre\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nMessage-ID: <a@b>\r\nSubject: hi\r\n\r\nbody\r\n--b--\r\n";
        let msg = parse_message(raw);
        assert_eq!(msg.mime_type, "multipart/report");
        assert_eq!(msg.children.len(), 3);
        assert_eq!(msg.children[1].text, "hello");
        let original = &msg.children[2].children[0];
        assert_eq!(original.headers.get("message-id"), Some(" <a@b>"));
    }

    #[test]
    fn encoded_words() {
        assert_eq!(decode_header("=?utf-8?B?eHB0bw?= <a@b>"), "xpto <a@b>");
        assert_eq!(
            decode_header("=?iso-8859-1?Q?Caf=E9_au?= =?utf-8?Q?lait?="),
            "Café aulait"
        );
        assert_eq!(
            decode_header("=?ISO-2022-JP?B?GyRCJU8lbSE8GyhC?="),
            "ハロー"
        );
    }

    #[test]
    fn quoted_printable_and_base64() {
        assert_eq!(decode_quoted_printable(b"a=3Db=\nc"), b"a=bc");
        assert_eq!(decode_base64(b"aGVs\nbG8="), b"hello");
    }
}
