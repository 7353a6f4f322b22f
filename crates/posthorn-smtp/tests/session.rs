//! Server sessions over in-memory I/O (`tokio::io::duplex`): client bytes in,
//! replies and handed-on messages out, with no socket.

use posthorn_smtp::server::{Handler, ReceivedEnvelope, ServerReply, ServerSettings, Session};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};

#[derive(Default)]
struct Recorder {
    messages: Mutex<Vec<Vec<u8>>>,
}

#[async_trait::async_trait]
impl Handler for Recorder {
    async fn rcpt_to(
        &self,
        _s: &Session,
        _e: &ReceivedEnvelope,
        _address: &str,
    ) -> Result<(), ServerReply> {
        Ok(())
    }
    async fn data(&self, _s: &Session, _e: &ReceivedEnvelope, message: Vec<u8>) -> ServerReply {
        self.messages.lock().unwrap().push(message);
        ServerReply::new(250, "2.0.0", "queued")
    }
}

/// A server that gives up on a silent client after half a minute, so that a
/// session that never answers ends (and its test fails) instead of hanging.
fn settings() -> ServerSettings {
    let mut settings = ServerSettings::new("mx.test");
    settings.command_timeout = std::time::Duration::from_secs(30);
    settings.data_timeout = std::time::Duration::from_secs(30);
    settings
}

struct Client {
    reader: BufReader<tokio::io::ReadHalf<DuplexStream>>,
    writer: tokio::io::WriteHalf<DuplexStream>,
}

impl Client {
    /// A session on one end of an in-memory pipe; the greeting is read.
    async fn start() -> (Client, Arc<Recorder>) {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let recorder = Arc::new(Recorder::default());
        tokio::spawn(posthorn_smtp::server::serve_stream(
            theirs,
            None,
            Arc::new(settings()),
            recorder.clone(),
        ));
        let (r, w) = tokio::io::split(ours);
        let mut client = Client {
            reader: BufReader::new(r),
            writer: w,
        };
        assert!(client.reply().await.starts_with("220 "));
        (client, recorder)
    }
    async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).await.unwrap() == 0 {
                return all;
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }
    async fn send(&mut self, raw: &[u8]) -> String {
        self.writer.write_all(raw).await.unwrap();
        self.reply().await
    }
    async fn transaction(&mut self) {
        assert!(
            self.send(b"MAIL FROM:<a@x.test>\r\n")
                .await
                .starts_with("250")
        );
        assert!(
            self.send(b"RCPT TO:<b@y.test>\r\n")
                .await
                .starts_with("250")
        );
        assert!(self.send(b"DATA\r\n").await.starts_with("354"));
    }
}

/// RFC 5321 §4.1.1.4: the data ends at CRLF.CRLF, and the CRLF that ends the
/// DATA command counts, so a lone `.` right after 354 ends an empty message
/// (and a dot-stuffed first line loses its first dot, like every other).
#[tokio::test]
async fn a_lone_dot_right_after_354_ends_an_empty_message() {
    let (mut c, recorder) = Client::start().await;
    assert!(c.send(b"EHLO client.test\r\n").await.starts_with("250"));
    c.transaction().await;
    let reply = c.send(b".\r\n").await;
    assert!(
        reply.starts_with("250 2.0.0"),
        "the lone dot ends the data, so the server answers: {reply:?}"
    );
    c.transaction().await;
    let reply = c.send(b"..first\r\nsecond\r\n.\r\n").await;
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    assert!(
        c.send(b"NOOP\r\n").await.starts_with("250"),
        "still in step"
    );
    let messages = recorder.messages.lock().unwrap().clone();
    assert_eq!(
        messages,
        [b"".to_vec(), b".first\r\nsecond\r\n".to_vec()],
        "{:?}",
        messages
            .iter()
            .map(|m| String::from_utf8_lossy(m))
            .collect::<Vec<_>>()
    );
}
