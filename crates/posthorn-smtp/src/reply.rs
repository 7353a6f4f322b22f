//! An SMTP reply as the remote server sent it, and reading one from a stream.

use posthorn_core::EnhancedCode;
use smtp_proto::response::parser::ResponseReceiver;

/// One reply: the outcome rules' type, so the client's replies reach them
/// as they were read.
pub use posthorn_core::outcome::Reply;

/// Bytes read from the peer and not yet consumed, and the reply parser.
#[derive(Default)]
pub(crate) struct ReplyReader {
    buf: Vec<u8>,
}

/// What became of an attempt to take one reply from the buffer.
pub(crate) enum Parsed {
    Reply(Reply),
    NeedMore,
    /// The peer sent something that is not an SMTP reply.
    Garbage(String),
}

impl ReplyReader {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Takes one complete reply from the buffer, if there is one.
    pub fn take(&mut self) -> Parsed {
        if !self.buf.contains(&b'\n') {
            return if self.buf.len() > smtp_proto::response::parser::MAX_RESPONSE_LENGTH {
                Parsed::Garbage("a reply line longer than 4096 bytes".into())
            } else {
                Parsed::NeedMore
            };
        }
        let mut receiver = ResponseReceiver::default();
        let mut iter = self.buf.iter();
        match receiver.parse(&mut iter) {
            Ok(response) => {
                let consumed = self.buf.len() - iter.as_slice().len();
                // RFC 5321 §4.2: the first digit is 2 to 5. Any other code
                // (`000`, `100`, `999`) is not a reply this client can act
                // on, and must not pass for a permanent refusal that
                // would bounce the recipient.
                if !(200..600).contains(&response.code) {
                    let line = String::from_utf8_lossy(&self.buf[..consumed.min(200)]).into_owned();
                    return Parsed::Garbage(format!("reply code {} in {line:?}", response.code));
                }
                // RFC 5321 §4.2.1: every line of a multi-line reply has the
                // same code. smtp-proto reads the first line's only, so
                // `250-ok` then `550 no` would pass for a 250: a server
                // that says both has not said which, and neither may
                // decide a delivery.
                let reply = &self.buf[..consumed];
                let codes_differ = reply
                    .split(|&b| b == b'\n')
                    .filter(|line| !line.is_empty())
                    .any(|line| line.get(..3) != reply.get(..3));
                if codes_differ {
                    let line = String::from_utf8_lossy(&reply[..consumed.min(200)]).into_owned();
                    return Parsed::Garbage(format!(
                        "a reply whose lines differ in code: {line:?}"
                    ));
                }
                let (enhanced, text) = enhanced_code(reply, response.esc, &response.message);
                self.buf.drain(..consumed);
                Parsed::Reply(Reply {
                    code: response.code,
                    enhanced,
                    text,
                })
            }
            Err(smtp_proto::Error::NeedsMoreData { .. }) => Parsed::NeedMore,
            Err(e) => {
                let line =
                    String::from_utf8_lossy(&self.buf[..self.buf.len().min(200)]).into_owned();
                Parsed::Garbage(format!("{e:?} in {line:?}"))
            }
        }
    }
}

/// The reply's enhanced status code (RFC 2034: right after the reply code
/// and its separator) and its text. smtp-proto recognises a code by shape
/// but keeps it in bytes (so `4.7.650` came out as 4.7.255) and lets any
/// class through (`6.8.9`): the code is read here, from the lines
/// themselves, the one place a reply's code is parsed. As smtp-proto does,
/// the last line that carries one gives it. When what smtp-proto took for a
/// code is none, the text is rebuilt from the lines, so that no word the
/// server said is lost.
fn enhanced_code(reply: &[u8], esc: [u8; 3], message: &str) -> (Option<EnhancedCode>, String) {
    let text = message.trim_end();
    if esc[0] == 0 {
        return (None, text.to_owned());
    }
    let lines = reply
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| !line.is_empty());
    let code = lines.clone().rev().find_map(|line| {
        let rest = line.get(4..)?;
        let (code, len) = EnhancedCode::parse_prefix(rest)?;
        matches!(rest.get(len), None | Some(b' ')).then_some(code)
    });
    match code {
        Some(code) => (Some(code), text.to_owned()),
        None => {
            let lines: Vec<_> = lines
                .map(|line| String::from_utf8_lossy(line.get(4..).unwrap_or_default()))
                .collect();
            (None, lines.join("\n").trim_end().to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Vec<Reply> {
        let mut r = ReplyReader::default();
        r.push(input);
        let mut out = Vec::new();
        while let Parsed::Reply(reply) = r.take() {
            out.push(reply);
        }
        out
    }

    #[test]
    fn single_multi_line_and_pipelined_replies() {
        let replies = parse_all(b"250 2.1.0 Ok\r\n550-5.1.1 The email account does not exist.\r\n550 5.1.1 Please try again.\r\n451 Try later\r\n");
        assert_eq!(replies.len(), 3);
        assert_eq!(replies[0].code, 250);
        assert_eq!(replies[0].enhanced, EnhancedCode::new(2, 1, 0));
        assert_eq!(replies[1].code, 550);
        assert_eq!(replies[1].enhanced, EnhancedCode::new(5, 1, 1));
        assert!(
            replies[1].text.contains("does not exist") && replies[1].text.contains("try again")
        );
        assert_eq!(replies[2].enhanced, None);
        assert_eq!(replies[2].text, "Try later");
        assert!(replies[1].is_permanent() && replies[2].is_transient() && replies[0].is_positive());
        assert_eq!(replies[2].line(), "451 Try later");
    }

    #[test]
    fn the_enhanced_code_is_read_once_from_the_line() {
        let replies = parse_all(
            b"451 4.7.650 The mail server [192.0.2.1] has been temporarily rate limited\r\n\
              550 6.8.9 no such class\r\n\
              550 5.01.1 leading zero\r\n\
              250 2.0.0\r\n",
        );
        assert_eq!(replies.len(), 4);
        // Beyond a byte: smtp-proto alone would say 4.7.255.
        assert_eq!(replies[0].enhanced, EnhancedCode::new(4, 7, 650));
        assert!(replies[0].text.starts_with("The mail server"));
        // Not codes: no code, and the words stay in the text.
        assert_eq!(replies[1].enhanced, None);
        assert_eq!(replies[1].line(), "550 6.8.9 no such class");
        assert_eq!(replies[2].enhanced, None);
        assert_eq!(replies[2].line(), "550 5.01.1 leading zero");
        assert_eq!(replies[3].enhanced, EnhancedCode::new(2, 0, 0));
        assert_eq!(replies[3].line(), "250 2.0.0 ");
        // A code on a later line only, as smtp-proto reads it.
        let late = parse_all(b"250-mx.example.com\r\n250 2.0.0 ok\r\n");
        assert_eq!(late[0].enhanced, EnhancedCode::new(2, 0, 0));
        assert_eq!(late[0].text, "mx.example.com\nok");
    }

    #[test]
    fn partial_replies_wait_for_more_and_garbage_is_reported() {
        let mut r = ReplyReader::default();
        r.push(b"250-first\r\n250 sec");
        assert!(matches!(r.take(), Parsed::NeedMore));
        r.push(b"ond\r\n");
        assert!(matches!(r.take(), Parsed::Reply(reply) if reply.text == "first\nsecond"));
        let mut g = ReplyReader::default();
        g.push(b"HTTP/1.1 400 Bad Request\r\n");
        assert!(matches!(g.take(), Parsed::Garbage(_)));
        // Codes outside 2xx-5xx are not replies: not a refusal to act on.
        // Lines of one reply with different codes: which one is meant?
        let mut mixed = ReplyReader::default();
        mixed.push(b"250-2.0.0 queued\r\n550 5.7.1 refused\r\n");
        assert!(matches!(mixed.take(), Parsed::Garbage(_)));
        for line in [
            "999 5.1.1 no\r\n",
            "000 ok\r\n",
            "199 hello\r\n",
            "600 x\r\n",
        ] {
            let mut r = ReplyReader::default();
            r.push(line.as_bytes());
            assert!(matches!(r.take(), Parsed::Garbage(_)), "{line}");
        }
    }
}
