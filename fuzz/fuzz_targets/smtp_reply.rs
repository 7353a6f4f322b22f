//! What a remote SMTP server answers the delivery client: any bytes, split
//! into replies or refused as not SMTP, never a panic or a hang. The client
//! runs a whole session (greeting, EHLO, MAIL, two RCPT, DATA, QUIT)
//! against the input, and every reply it reports is classified the way
//! delivery classifies it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use posthorn_smtp::{ClientError, EnhancedCode, Envelope, SmtpClient, Timeouts};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn classify(code: u16, enhanced: Option<EnhancedCode>, text: &str) {
    let _ = posthorn_server::delivery::classify_reply(code, enhanced, text);
}

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let (mut their_reader, mut their_writer) = tokio::io::split(theirs);
        // The "server": says the fuzz input, then closes its side, and
        // reads whatever the client writes.
        let server = async move {
            let _ = their_writer.write_all(data).await;
            let _ = their_writer.shutdown().await;
            let mut sink = Vec::new();
            let _ = their_reader.read_to_end(&mut sink).await;
        };
        let client = async move {
            let short = Duration::from_secs(5);
            let timeouts = Timeouts {
                connect: short,
                greeting: short,
                command: short,
                mail_from: short,
                rcpt_to: short,
                data_init: short,
                data_block: short,
                data_end: short,
            };
            let mut client = SmtpClient::new(ours, timeouts);
            let session = async {
                let greeting = client.read_greeting().await?;
                classify(greeting.code, greeting.enhanced, &greeting.text);
                client.hello("fuzz.example").await?;
                let envelope = Envelope {
                    mail_from: "bounces+x@fuzz.example".into(),
                    recipients: vec!["a@example.com".into(), "b@example.com".into()],
                    envid: Some("envid".into()),
                    notify: Some("FAILURE".into()),
                };
                let result = client
                    .send(&envelope, b"Subject: x\r\n\r\nhello\r\n.\r\n")
                    .await?;
                for r in &result.recipients {
                    let _ = r.delivered();
                    classify(r.reply.code, r.reply.enhanced, &r.reply.text);
                }
                Ok::<_, ClientError>(())
            };
            if let Err(e) = session.await {
                let reply = e.reply();
                classify(reply.code, reply.enhanced, &reply.text);
                let _ = (e.is_transient(), e.is_permanent(), e.phase());
            }
            // QUIT, then our side closes: the server's read ends.
            client.quit().await;
        };
        tokio::join!(server, client);
    });
});
