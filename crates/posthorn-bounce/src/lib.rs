//! Posthorn's bounce rules, pure: what a remote server's answer means for a
//! delivery. Today this is the classification of one SMTP reply (reply code +
//! enhanced status code + text -> hard/soft/undetermined, a reason and the id
//! of the rule that decided, see [`reply`]); DSN (RFC 3464), ARF (RFC 5965)
//! and auto-reply parsing belong here too.
//!
//! Bytes and strings in, values out. Nothing here does I/O, is async, reads
//! the clock or keeps state, and nothing may panic on any input: the SMTP
//! client and the inbound MX call these functions, never the other way round,
//! and every rule can be table-, golden- and property-tested without a socket.

mod address;
mod arf;
mod autoreply;
mod dsn;
mod enhanced;
mod formats;
mod mime;
pub mod parse;
pub mod reply;
mod report;

pub use parse::{Record, RecordKind, parse};
pub use posthorn_core::status::BounceType;
pub use reply::{Reason, ReplyClass, UnknownReason, classify_reply, parse_reply_line};
