//! The tracker's memory of recently hit deliveries (issue #5).
//!
//! Judging a hit needs its delivery's facts (tenant, message, stream, links,
//! the open-tracking choice, the delivery time) and its earlier opens and
//! clicks. Reading them costs four statements on the blocking pool per hit,
//! and the hop between threads costs more than the reads; yet almost all of
//! it never changes once a message is delivered. So the tracker keeps, for
//! up to `capacity` deliveries, those facts and the list of hits it has
//! recorded, and a hit on a known delivery costs no read, only its durable
//! write (which is unchanged: the answer still waits for the commit).
//!
//! Why a cached history is complete: every open and click of a delivery is
//! recorded either by this tracker, which appends each hit *after* its
//! event is committed ([`TrackerCache::append`]), or by the events API,
//! which forgets the delivery ([`TrackerCache::forget`]) so the next hit
//! reads it again. Hits recorded before this process started are in the
//! store and read on the first (missing) hit. An entry is only kept when
//! the delivery time is a `delivered` event's ([`TrackingFacts::delivered_known`]):
//! before that, a `delivered` event (or the `sent` one) may still arrive
//! and change it, so such deliveries are read each time, as before.
//!
//! A tenant's settings (its open-tracking default) can change: the settings
//! API clears the whole cache ([`TrackerCache::clear`]).
//!
//! Tolerance, the same as without the cache: two hits on one delivery that
//! are in flight at once do not see each other (each is judged on the
//! history committed or appended before it was judged). One narrow case
//! lasts longer than the requests: a hit that misses reads the store, and
//! an event on the same delivery committed between that read and the
//! insert (by a concurrent hit whose entry was evicted meanwhile, or by the
//! events API) is missing from the entry until it is evicted; it needs the
//! two at once on one delivery, and at worst a later hit is judged as the
//! concurrent one would have been. Eviction is oldest first, at
//! `capacity` entries or [`MAX_BYTES`]; an evicted delivery is read again
//! from the store, which holds every committed hit. A delivery's history is
//! capped at [`MAX_HISTORY`] hits (its first open and the latest ones):
//! enough for every machine rule, and no pixel hammered by a bot grows
//! without bound.
//!
//! An entry also counts the stored hits of each [`RepeatKey`] (one client's
//! hits on one target with one verdict), so the tracker knows without a
//! read when a hit only repeats ones already stored and is to be counted
//! instead (`posthorn_track::repeats`). Those counts are rebuilt from the
//! stored events on a miss, exactly as the history is; two hits of one key
//! in flight at once may both be stored, so the bound can be passed by the
//! number of such hits at once, never for good.

use posthorn_core::DeliveryId;
use posthorn_store::TrackingFacts;
use posthorn_track::{PastHit, RepeatKey};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// The default number of deliveries remembered: opens cluster on recent
/// sends, and an entry is a few hundred bytes plus its links.
pub const DEFAULT_CAPACITY: usize = 65_536;

/// The most memory the entries may take (approximately: their links,
/// names and hits). A newsletter's links are copied into each of its
/// deliveries' entries, so the count alone does not bound the memory.
pub const MAX_BYTES: usize = 64 * 1024 * 1024;

/// Hits kept per delivery: the machine rules look only at whether an open
/// came before and at the clicks of the last seconds, so a bot fetching one
/// pixel a million times must not grow an entry (or the time to judge) for
/// ever. The earliest open is always kept, then the most recent hits.
pub const MAX_HISTORY: usize = 256;

/// Bytes counted for an entry besides its text, for each hit, and for
/// each counted repeat key (key, count and the map's own share).
const ENTRY_OVERHEAD: usize = 256;
const HIT_BYTES: usize = std::mem::size_of::<PastHit>();
const KEY_BYTES: usize = 32;

/// Stored hits per repeat key.
pub type StoredCounts = HashMap<RepeatKey, u32>;

fn entry_bytes(facts: &TrackingFacts, hits: usize, keys: usize) -> usize {
    ENTRY_OVERHEAD
        + facts.links.iter().map(String::len).sum::<usize>()
        + facts.recipient.len()
        + facts.stream.len()
        + hits * HIT_BYTES
        + keys * KEY_BYTES
}

fn size_of(entry: &Cached) -> usize {
    entry_bytes(&entry.facts, entry.history.len(), entry.stored.len())
}

/// Cuts `history` to [`MAX_HISTORY`] hits: the oldest go, but the earliest
/// open stays (first, where it was).
fn bound(history: &mut Vec<PastHit>) {
    let excess = history.len().saturating_sub(MAX_HISTORY);
    if excess == 0 {
        return;
    }
    let first_open = history
        .iter()
        .position(|h| h.kind == posthorn_track::HitKind::Open)
        .filter(|&i| i < excess)
        .map(|i| history[i]);
    history.drain(..excess);
    if let Some(open) = first_open {
        history[0] = open;
    }
}

/// A delivery's unchanging facts (`engagement` left empty) and the hits
/// recorded so far, oldest first.
#[derive(Debug, Clone)]
pub struct Cached {
    pub facts: Arc<TrackingFacts>,
    /// Shared, so that a hit's look-up copies no history: an append copies
    /// it only while an earlier look-up still holds it.
    pub history: Arc<Vec<PastHit>>,
    /// How many hits of each repeat key are stored as events (shared the
    /// same way).
    pub stored: Arc<StoredCounts>,
}

#[derive(Debug)]
pub struct TrackerCache {
    capacity: usize,
    max_bytes: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<DeliveryId, Cached>,
    /// Insertion order, for eviction. May name deliveries forgotten since;
    /// at most `capacity` long.
    order: VecDeque<DeliveryId>,
    /// What the entries take, by [`entry_bytes`].
    bytes: usize,
}

impl Default for TrackerCache {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl TrackerCache {
    pub fn new(capacity: usize) -> Self {
        Self::with_limits(capacity, MAX_BYTES)
    }

    pub fn with_limits(capacity: usize, max_bytes: usize) -> Self {
        Self {
            capacity,
            max_bytes,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The map stays consistent under a panic (every change is one call).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The remembered facts and history of `delivery`, if any.
    pub fn get(&self, delivery: &DeliveryId) -> Option<Cached> {
        self.lock().entries.get(delivery).cloned()
    }

    /// Remembers facts just read from the store with their `history` (the
    /// hits among their `engagement` and `repeats`) and `stored` counts, if
    /// they can no longer change, and returns them as an entry, kept or
    /// not. An entry already there is kept: it may hold hits appended since
    /// `facts` was read.
    pub fn insert(
        &self,
        mut facts: TrackingFacts,
        mut history: Vec<PastHit>,
        stored: StoredCounts,
    ) -> Cached {
        facts.engagement = Vec::new();
        facts.repeats = Vec::new();
        bound(&mut history);
        let entry = Cached {
            facts: Arc::new(facts),
            history: Arc::new(history),
            stored: Arc::new(stored),
        };
        let size = size_of(&entry);
        if !entry.facts.delivered_known || self.capacity == 0 || size > self.max_bytes {
            return entry;
        }
        let mut inner = self.lock();
        if inner.entries.contains_key(&entry.facts.delivery_id) {
            return entry;
        }
        while inner.order.len() >= self.capacity || inner.bytes + size > self.max_bytes {
            let Some(old) = inner.order.pop_front() else {
                break;
            };
            if let Some(gone) = inner.entries.remove(&old) {
                inner.bytes -= size_of(&gone);
            }
        }
        inner.bytes += size;
        inner.order.push_back(entry.facts.delivery_id.clone());
        inner
            .entries
            .insert(entry.facts.delivery_id.clone(), entry.clone());
        entry
    }

    /// Adds a committed hit to the delivery's history: `stored` with the
    /// key of a hit stored as an event, `None` for one only counted.
    pub fn append(&self, delivery: &DeliveryId, hit: PastHit, stored: Option<RepeatKey>) {
        let mut inner = self.lock();
        if let Some(entry) = inner.entries.get_mut(delivery) {
            let before = size_of(entry);
            let history = Arc::make_mut(&mut entry.history);
            history.push(hit);
            bound(history);
            if let Some(key) = stored {
                *Arc::make_mut(&mut entry.stored).entry(key).or_default() += 1;
            }
            let after = size_of(entry);
            inner.bytes = inner.bytes + after - before;
        }
    }

    /// Drops what is known of `delivery`: an event was recorded for it
    /// elsewhere (the events API), so the next hit reads the store.
    pub fn forget(&self, delivery: &DeliveryId) {
        self.forget_each([delivery]);
    }

    /// [`forget`](Self::forget) for several deliveries, under one lock.
    pub fn forget_each<'a>(&self, deliveries: impl IntoIterator<Item = &'a DeliveryId>) {
        let mut inner = self.lock();
        if inner.entries.is_empty() {
            return;
        }
        for delivery in deliveries {
            if let Some(gone) = inner.entries.remove(delivery) {
                inner.bytes -= size_of(&gone);
            }
        }
    }

    /// Drops everything (a tenant's settings changed).
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.entries.clear();
        inner.order.clear();
        inner.bytes = 0;
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use posthorn_core::{MessageId, TenantId};
    use posthorn_track::{Hit, HitKind, Thresholds, judge};

    const DELIVERED: i64 = 1_000_000;

    fn facts(delivered_known: bool) -> TrackingFacts {
        TrackingFacts {
            tenant_id: TenantId::generate(),
            delivery_id: DeliveryId::generate(),
            message_id: MessageId::generate(),
            recipient: "ann@example.org".into(),
            stream: "transactional".into(),
            tracking_opens: Some(true),
            tenant_track_opens: None,
            links: vec!["https://example.com/a".into()],
            delivered_at: Some(DELIVERED),
            delivered_known,
            engagement: Vec::new(),
            repeats: Vec::new(),
        }
    }

    fn past(kind: HitKind, at: i64) -> PastHit {
        PastHit {
            kind,
            at,
            link_index: (kind == HitKind::Click).then_some(0),
            machine: false,
            network: Some(posthorn_track::network_of("192.0.2.1".parse().unwrap())),
        }
    }

    /// A person's click a minute after delivery, judged on `history`.
    fn click_reason(history: &[PastHit]) -> &'static str {
        let hit = Hit {
            kind: HitKind::Click,
            method_head: false,
            prefetch: false,
            ip: Some("192.0.2.1".parse().unwrap()),
            user_agent: Some(
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                 Chrome/120.0 Safari/537.36",
            ),
            at: DELIVERED + 60_000,
            delivered_at: Some(DELIVERED),
            link_index: Some(0),
            links_in_message: 1,
            open_tracking: true,
        };
        judge(
            &hit,
            history,
            &Thresholds::default(),
            &posthorn_track::Networks::builtin(),
        )
        .reason
    }

    #[test]
    fn a_second_hit_sees_the_first_in_its_history_and_is_judged_by_it() {
        let cache = TrackerCache::new(8);
        let f = facts(true);
        let id = f.delivery_id.clone();
        cache.insert(f, Vec::new(), StoredCounts::new());
        // Without the open, the click implies one.
        let before = cache.get(&id).unwrap();
        assert!(before.facts.engagement.is_empty());
        assert_eq!(click_reason(&before.history), "click_implies_open");
        // The open is recorded (committed), then appended: the click that
        // follows sees it, from the same network.
        cache.append(&id, past(HitKind::Open, DELIVERED + 30_000), None);
        let after = cache.get(&id).unwrap();
        assert_eq!(
            *after.history,
            vec![past(HitKind::Open, DELIVERED + 30_000)]
        );
        assert_eq!(click_reason(&after.history), "mail_client_then_browser");
        // A look-up is a snapshot: the hit appended while `before` was held
        // did not change it (the shared history was copied, not written).
        assert!(before.history.is_empty());
        // With no look-up holding it, an append writes in place: no copy.
        let shared = Arc::as_ptr(&after.history);
        drop((before, after));
        cache.append(&id, past(HitKind::Click, DELIVERED + 40_000), None);
        let last = cache.get(&id).unwrap();
        assert_eq!(last.history.len(), 2);
        assert!(std::ptr::eq(shared, Arc::as_ptr(&last.history)));
    }

    #[test]
    fn stored_hits_are_counted_per_key_and_counted_repeats_only_join_the_history() {
        let cache = TrackerCache::new(8);
        let f = facts(true);
        let id = f.delivery_id.clone();
        let key = RepeatKey::new(HitKind::Open, None, Some("192.0.2.1"), Some("UA"), false);
        cache.insert(f, Vec::new(), StoredCounts::from([(key, 2)]));
        cache.append(&id, past(HitKind::Open, DELIVERED + 1), Some(key));
        cache.append(&id, past(HitKind::Open, DELIVERED + 2), None);
        let entry = cache.get(&id).unwrap();
        assert_eq!(entry.stored.get(&key), Some(&3));
        assert_eq!(entry.history.len(), 2);
        // The memory budget follows the counts.
        let bytes = cache.lock().bytes;
        assert_eq!(bytes, size_of(&entry));
    }

    #[test]
    fn only_deliveries_with_a_known_delivery_time_are_kept() {
        let cache = TrackerCache::new(8);
        let f = facts(false);
        let id = f.delivery_id.clone();
        cache.insert(f, Vec::new(), StoredCounts::new());
        assert!(cache.get(&id).is_none(), "a delivered event may still come");
        cache.append(&id, past(HitKind::Open, DELIVERED), None);
        assert!(cache.is_empty());
    }

    #[test]
    fn an_entry_is_not_replaced_by_an_older_read_and_can_be_forgotten() {
        let cache = TrackerCache::new(8);
        let f = facts(true);
        let id = f.delivery_id.clone();
        cache.insert(f.clone(), Vec::new(), StoredCounts::new());
        cache.append(&id, past(HitKind::Open, DELIVERED + 1), None);
        // A concurrent miss read the store before that hit: keep the entry.
        cache.insert(f, Vec::new(), StoredCounts::new());
        assert_eq!(cache.get(&id).unwrap().history.len(), 1);
        cache.forget(&id);
        assert!(cache.get(&id).is_none());
    }

    #[test]
    fn the_oldest_entries_are_evicted_at_capacity() {
        let cache = TrackerCache::new(2);
        let all: Vec<TrackingFacts> = (0..3).map(|_| facts(true)).collect();
        for f in &all {
            cache.insert(f.clone(), Vec::new(), StoredCounts::new());
        }
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&all[0].delivery_id).is_none());
        assert!(cache.get(&all[2].delivery_id).is_some());
        cache.clear();
        assert!(cache.is_empty());
        assert!(TrackerCache::new(0).is_empty());
    }

    #[test]
    fn a_long_history_keeps_its_first_open_and_its_latest_hits() {
        let cache = TrackerCache::new(8);
        let f = facts(true);
        let id = f.delivery_id.clone();
        cache.insert(
            f,
            vec![past(HitKind::Open, DELIVERED + 1)],
            StoredCounts::new(),
        );
        for i in 0..(2 * MAX_HISTORY as i64) {
            cache.append(&id, past(HitKind::Click, DELIVERED + 10 + i), None);
        }
        let history = cache.get(&id).unwrap().history;
        assert_eq!(history.len(), MAX_HISTORY);
        assert_eq!(history[0], past(HitKind::Open, DELIVERED + 1));
        assert_eq!(
            history.last(),
            Some(&past(
                HitKind::Click,
                DELIVERED + 9 + 2 * MAX_HISTORY as i64
            ))
        );
        // So a click still counts its open.
        assert_eq!(click_reason(&history), "mail_client_then_browser");
        // The same bound when a long history is read from the store.
        let f = facts(true);
        let long: Vec<PastHit> = std::iter::once(past(HitKind::Open, DELIVERED + 1))
            .chain((0..1000).map(|i| past(HitKind::Click, DELIVERED + 10 + i)))
            .collect();
        let id = f.delivery_id.clone();
        cache.insert(f, long, StoredCounts::new());
        let history = cache.get(&id).unwrap().history;
        assert_eq!(history.len(), MAX_HISTORY);
        assert_eq!(history[0], past(HitKind::Open, DELIVERED + 1));
        assert_eq!(
            history.last(),
            Some(&past(HitKind::Click, DELIVERED + 1009))
        );
    }

    #[test]
    fn the_memory_budget_evicts_too() {
        let mut big = facts(true);
        big.links = vec!["x".repeat(10_000)];
        let per_entry = entry_bytes(&big, 0, 0);
        let cache = TrackerCache::with_limits(100, 3 * per_entry);
        let all: Vec<TrackingFacts> = (0..5)
            .map(|_| {
                let mut f = big.clone();
                f.delivery_id = DeliveryId::generate();
                f
            })
            .collect();
        for f in &all {
            cache.insert(f.clone(), Vec::new(), StoredCounts::new());
        }
        assert_eq!(cache.len(), 3, "three entries fit the budget");
        assert!(cache.get(&all[0].delivery_id).is_none());
        assert!(cache.get(&all[4].delivery_id).is_some());
        // An entry larger than the whole budget is not kept at all.
        let tiny = TrackerCache::with_limits(100, per_entry - 1);
        tiny.insert(big, Vec::new(), StoredCounts::new());
        assert!(tiny.is_empty());
    }
}
