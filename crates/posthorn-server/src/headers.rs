//! The header section of an RFC 5322 message, read just enough to find
//! a field or where the body starts (submission, the simulator, copies).

/// The header section of a message, unfolded, names lower-cased.
pub struct HeaderBlock {
    pub fields: Vec<(String, String)>,
    /// Byte offset where the body starts (after the blank line).
    pub body_start: usize,
}

impl HeaderBlock {
    pub fn parse(message: &[u8]) -> Self {
        let end = find(message, b"\r\n\r\n")
            .map(|i| i + 4)
            .or_else(|| find(message, b"\n\n").map(|i| i + 2))
            .unwrap_or(message.len());
        let text = String::from_utf8_lossy(&message[..end]);
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in text.split('\n') {
            let line = line.trim_end_matches('\r');
            if line.starts_with([' ', '\t']) {
                if let Some(last) = fields.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
            } else if let Some((name, value)) = line.split_once(':') {
                fields.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        Self {
            fields,
            body_start: end,
        }
    }

    /// The first field called `name` (lower-case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
