//! Posthorn's bounce rules, pure: what a remote server's answer means for a
//! delivery. The classification of one SMTP reply (reply code + enhanced
//! status code + text -> hard/soft/undetermined, a reason and the id of the
//! rule that decided, see [`reply`]), and the reading of returned mail into
//! records ([`parse`]): DSNs (RFC 3464) and the home-made texts of real MTAs
//! (`formats/`; challenge-response notices are none, `challenge.rs`), complaints (ARF, RFC 5965; Amazon SES and Microsoft JMRP
//! notifications) and auto-replies (RFC 3834).
//!
//! The phrases the classifier reads are data (`rules/replies.txt`, compiled
//! in), in the language of [`rules`], which an operator's own rules file is
//! written in too ([`ReplyRules`], tried before the built-in rules).
//!
//! Map of `parse`: `mime.rs` (bytes -> part tree, decoded text),
//! `report.rs` (the report's own text, delivery-status text, the original's
//! headers), `dsn.rs`, `arf.rs`, `autoreply.rs`, `formats/` (one reader per
//! format, `generic.rs` last), `parse.rs` (order of readers, classification
//! of each finding, SMTP-stage context rules).
//! What a returned message then means for a delivery (how it is tied to
//! one, which record speaks of its recipient, which event that is) is
//! [`inbound`]: the inbound MX gathers the facts, the rules live here.
//!
//! Bytes and strings in, values out. Nothing here does I/O, is async, reads
//! the clock or keeps state, and nothing may panic on any input: the SMTP
//! client and the inbound MX call these functions, never the other way round,
//! and every rule can be table-, golden- and property-tested without a socket.

mod address;
mod arf;
mod autoreply;
mod challenge;
mod dsn;
mod enhanced;
mod formats;
pub mod inbound;
mod mime;
pub mod parse;
pub mod reply;
mod report;
pub mod rules;

pub use dsn::MAX_RECIPIENTS;
pub use parse::{Record, RecordKind, parse, parse_with};
pub use posthorn_core::EnhancedCode;
pub use posthorn_core::status::BounceType;
pub use reply::{Reason, ReplyClass, UnknownReason, classify_reply, parse_reply_line};
pub use rules::{ReplyRules, RuleError, RuleSource};
