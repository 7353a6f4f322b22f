//! What an SMTP client says to SMTP submission or the inbound MX, through
//! the service's own session code and handlers: any bytes end in replies
//! and a closed session, never a panic or a hang.
//!
//! Input: the first byte picks the listener (even: submission, odd: the
//! MX), the rest is what the client sends before it closes. `$AUTH` is
//! replaced by the admin key as AUTH PLAIN's base64, `$KEY` by the key in
//! base64 (AUTH LOGIN's password) and `$RETURN` by the return path of a
//! delivery that exists, so that the fuzzer can reach what lies behind
//! them.
#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use posthorn_fuzz::harness;
use posthorn_server::app::SmtpSession;
use posthorn_server::inbound::InboundHandler;
use posthorn_server::submission::SubmissionHandler;
use posthorn_smtp::server::serve_stream;
use std::net::SocketAddr;
use std::sync::OnceLock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn replace(input: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.windows(from.len()).position(|w| w == from) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(to);
        rest = &rest[at + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}

struct Listeners {
    submission: SmtpSession<SubmissionHandler>,
    inbound: SmtpSession<InboundHandler>,
}

fn listeners() -> &'static Listeners {
    static LISTENERS: OnceLock<Listeners> = OnceLock::new();
    LISTENERS.get_or_init(|| {
        let h = harness();
        let _guard = h.runtime.enter();
        Listeners {
            submission: h.app.submission_session().expect("submission"),
            inbound: h.app.inbound_session().expect("inbound"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, said)) = data.split_first() else {
        return;
    };
    let h = harness();
    let base64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let said = replace(
        said,
        b"$AUTH",
        base64(&format!("\0fuzz\0{}", h.admin_key)).as_bytes(),
    );
    let said = replace(&said, b"$KEY", base64(&h.admin_key).as_bytes());
    let said = replace(&said, b"$RETURN", h.return_path.as_bytes());
    let listeners = listeners();
    // From loopback, where submission allows AUTH without TLS.
    let peer = Some(SocketAddr::from(([127, 0, 0, 1], 40000)));
    h.runtime.block_on(async {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (mut replies, mut commands) = tokio::io::split(client);
        let session = async {
            if pick % 2 == 0 {
                let (settings, handler) = &listeners.submission;
                serve_stream(server, peer, settings.clone(), handler.clone()).await;
            } else {
                let (settings, handler) = &listeners.inbound;
                serve_stream(server, peer, settings.clone(), handler.clone()).await;
            }
        };
        let client = async move {
            let _ = commands.write_all(&said).await;
            let _ = commands.shutdown().await;
        };
        let reader = async move {
            let mut out = Vec::new();
            let _ = replies.read_to_end(&mut out).await;
            out
        };
        let ((), (), out) = tokio::join!(session, client, reader);
        // Every session starts with the greeting.
        assert!(
            out.starts_with(b"220 "),
            "{:?}",
            String::from_utf8_lossy(&out)
        );
    });
});
