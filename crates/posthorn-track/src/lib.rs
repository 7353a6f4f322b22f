//! Posthorn's engagement-tracking rules, pure: what goes into a message at
//! send time and what a hit on a tracking URL means.
//!
//! * [`choice`]: what a copy tracks (the message's say, then its stream's,
//!   its tenant's, the server's default).
//! * [`token`]: compact signed tokens for the open pixel, tracked links and
//!   the unsubscribe link, with key rotation.
//! * [`rewrite`]: the HTML and text parts rewritten for tracking: links to
//!   click URLs (the original URLs returned for storage), the open pixel, the
//!   `{{unsubscribe_url}}` placeholder. A real HTML tokenizer (lol_html),
//!   never regular expressions.
//! * [`machine`]: whether one open or click was made by a person or a
//!   machine (Apple Mail Privacy Protection, security scanners, ...), with
//!   the rule that decided; image proxies are told apart from both.
//! * [`networks`]: the networks whose hits are machines' (Apple's proxy,
//!   link-scanning gateways, hosting), a data file with its sources.
//! * [`counts`]: unique and total opens and clicks of a delivery, human-only
//!   and all.
//! * [`repeats`]: which hits repeat each other, and how many of them are
//!   stored as events.
//!
//! What this crate must not do: I/O of any kind, async, reading the clock
//! (times are passed in), or panic on any input. The server crate wires it
//! to HTTP and storage.

pub mod choice;
pub mod counts;
pub mod machine;
pub mod networks;
pub mod repeats;
pub mod rewrite;
pub mod token;

pub use choice::{Say, TrackingChoice, choice};
pub use counts::{Counts, Tally};
pub use machine::{Hit, HitKind, PastHit, Thresholds, Verdict, is_prefetch, judge, network_of};
pub use networks::{NetCategory, Networks, NetworksError};
pub use repeats::{RepeatKey, STORED_PER_CLIENT};
pub use rewrite::{
    RewriteError, RewriteOptions, Rewritten, SignedUrls, TrackingUrls, rewrite_html, rewrite_text,
};
pub use token::{Key, Purpose, Target, TokenKeys, sign, verify, verify_as};
