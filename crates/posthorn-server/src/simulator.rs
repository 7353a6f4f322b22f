//! The mailbox simulator: a loopback SMTP server for addresses at
//! `simulator.posthorn.test` that answers by local part, so that a new user
//! sees every outcome through the real delivery path without the internet.
//!
//! | local part | answer |
//! |---|---|
//! | `delivered` (or anything else) | 250 |
//! | `bounce` | 550 5.1.1 user unknown |
//! | `mailbox-full` | 552 5.2.2 mailbox full |
//! | `blocked` | 554 5.7.1 message rejected as spam (after the data) |
//! | `defer` | 451 4.3.0 on the first attempt of a delivery, 250 after |
//! | `slow` | 250 after a few seconds |
//! | `expire` | always 451 4.3.0, until the lifetime ends |

use posthorn_smtp::server::{Handler, ReceivedEnvelope, ServerReply, ServerSettings, Session};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The domain the simulator answers for.
pub const SIMULATOR_DOMAIN: &str = "simulator.posthorn.test";

#[derive(Default)]
pub struct Simulator {
    /// Attempts seen per return path (one per delivery, thanks to VERP).
    attempts: Mutex<HashMap<String, u32>>,
    /// How long `slow@` waits.
    slow: Duration,
}

impl Simulator {
    pub fn new(slow: Duration) -> Self {
        Self {
            attempts: Mutex::default(),
            slow,
        }
    }

    /// Listens on a loopback port; returns its address.
    pub async fn start(self) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let settings = Arc::new(ServerSettings::new(SIMULATOR_DOMAIN));
        tokio::spawn(posthorn_smtp::server::serve(
            listener,
            settings,
            Arc::new(self),
            std::future::pending(),
        ));
        Ok(addr)
    }
}

fn local_part(address: &str) -> String {
    address.split('@').next().unwrap_or("").to_ascii_lowercase()
}

#[async_trait::async_trait]
impl Handler for Simulator {
    async fn mail_from(&self, _session: &Session, _address: &str) -> Result<(), ServerReply> {
        Ok(())
    }

    async fn rcpt_to(
        &self,
        _session: &Session,
        envelope: &ReceivedEnvelope,
        address: &str,
    ) -> Result<(), ServerReply> {
        match local_part(address).as_str() {
            "bounce" => Err(ServerReply::new(
                550,
                "5.1.1",
                format!("<{address}>: user unknown"),
            )),
            "mailbox-full" => Err(ServerReply::new(
                552,
                "5.2.2",
                format!("<{address}>: mailbox full"),
            )),
            "expire" => Err(ServerReply::new(
                451,
                "4.3.0",
                "try again later (this address never accepts)",
            )),
            "defer" => {
                let mut attempts = self.attempts.lock().expect("simulator state");
                let seen = attempts.entry(envelope.mail_from.clone()).or_default();
                *seen += 1;
                if *seen == 1 {
                    Err(ServerReply::new(451, "4.3.0", "try again later"))
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    async fn data(
        &self,
        _session: &Session,
        envelope: &ReceivedEnvelope,
        _message: Vec<u8>,
    ) -> ServerReply {
        let locals: Vec<String> = envelope.recipients.iter().map(|r| local_part(r)).collect();
        if locals.iter().any(|l| l == "blocked") {
            return ServerReply::new(554, "5.7.1", "message rejected as spam");
        }
        if locals.iter().any(|l| l == "slow") {
            tokio::time::sleep(self.slow).await;
        }
        ServerReply::new(250, "2.0.0", "delivered to the Posthorn mailbox simulator")
    }
}
