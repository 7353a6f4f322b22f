//! Posthorn's SMTP: the delivery client, generic over its stream, with
//! replies parsed by smtp-proto. Later issues add the submission server and
//! the inbound MX here.
//!
//! This crate speaks the protocol and reports exactly what the remote server
//! said (code, enhanced code, whole text), per recipient. It does not decide
//! what a reply means for a delivery (that is `posthorn-bounce` and
//! `posthorn-core`), and it does no DNS of its own.
//!
//! [`listen`] admits connections for every listener of the service (these
//! SMTP ones and the HTTP server): caps per listener and per client address,
//! and an accept loop that pauses when the system is out of descriptors.

pub mod client;
pub mod listen;
pub mod reply;
pub mod server;
pub mod tls;

pub use client::{
    ClientError, Envelope, Extensions, Phase, RecipientResult, SmtpClient, Timeouts,
    TransactionResult,
};
pub use posthorn_core::EnhancedCode;
pub use reply::Reply;
