//! Repeated hits: how much of one client hitting the same pixel or link of
//! a delivery again and again is stored.
//!
//! A pixel fetched by a bot (or a mail client that re-renders on every
//! view) 5,000 times must not become 5,000 stored events: the timeline
//! would grow without bound, and so would every answer that shows it. So
//! the first [`STORED_PER_CLIENT`] hits with the same [`RepeatKey`] are
//! stored as events (with their address, user agent and verdict), and the
//! ones after them are only counted (per delivery, target and verdict).
//!
//! Why this keeps every figure right: the status fold only needs one
//! `opened` / `clicked` per target, and a key's first hit is always stored;
//! the verdict is part of the key, so the first human hits of a client that
//! a machine rule judged before (a gateway's prefetch, then the reader on
//! the same network) are stored too and `first_human_open` / `click` stay
//! exact; the counts add the counted repeats back ([`crate::Counts::add_repeats`]).

use crate::machine::HitKind;
use std::hash::{Hash, Hasher};

/// Hits with the same key stored as events before the rest are only
/// counted. Enough for a person who opens a message several times on one
/// device to see each open; a loop fetching the pixel stores no more.
pub const STORED_PER_CLIENT: u32 = 10;

/// What makes hits repeats of each other: the same delivery's same target
/// (its pixel, or one link), from the same client (its address as kept and
/// its user agent as stored) with the same verdict. Computed from what an
/// event stores, so the counts can be rebuilt from stored events alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RepeatKey(u64);

impl RepeatKey {
    pub fn new(
        kind: HitKind,
        link_index: Option<u32>,
        ip: Option<&str>,
        user_agent: Option<&str>,
        machine: bool,
    ) -> Self {
        // A 64-bit digest: the key is only compared within one process (the
        // counts are rebuilt from events after a restart), and two clients
        // that collide only share one bound.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (kind, link_index, ip, user_agent, machine).hash(&mut h);
        RepeatKey(h.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_of_the_key_tells_hits_apart() {
        let ua = Some("Mozilla/5.0");
        let base = RepeatKey::new(HitKind::Open, None, Some("192.0.2.1"), ua, false);
        assert_eq!(
            base,
            RepeatKey::new(HitKind::Open, None, Some("192.0.2.1"), ua, false)
        );
        for other in [
            RepeatKey::new(HitKind::Click, None, Some("192.0.2.1"), ua, false),
            RepeatKey::new(HitKind::Open, Some(0), Some("192.0.2.1"), ua, false),
            RepeatKey::new(HitKind::Open, None, Some("192.0.2.2"), ua, false),
            RepeatKey::new(HitKind::Open, None, None, ua, false),
            RepeatKey::new(HitKind::Open, None, Some("192.0.2.1"), None, false),
            RepeatKey::new(HitKind::Open, None, Some("192.0.2.1"), ua, true),
        ] {
            assert_ne!(base, other);
        }
    }
}
