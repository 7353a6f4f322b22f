//! The engagement figures of one delivery, from its opens and clicks with
//! their verdicts: each figure both for every hit and for human hits only,
//! since machine hits are counted apart and never dropped (STATUS_MODEL.md,
//! "Statistics"). Statistics count deliveries, not hits: the `opened` and
//! `clicked` flags are what a tenant's unique opens and clicks add up.
//!
//! Pure and order-independent: the same hits in any order give the same
//! counts, so events can be folded as they arrive, late or duplicated by
//! retries upstream (de-duplication by event id happens before this).

use crate::machine::{HitKind, PastHit};
use posthorn_core::Millis;
use serde::Serialize;
use std::collections::BTreeMap;

/// Figures over one set of hits (all of them, or the human ones).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Tally {
    /// Opened: at least one open, or a click, which implies one (issue
    /// #13: images blocked, the pixel never loads, yet the reader clicked).
    /// Counts once towards unique opens.
    pub opened: bool,
    /// `opened` by inference only: clicked, and no open hit in this set.
    /// Shown beside the figures, as an inferred delivery is (STATUS_MODEL
    /// rule 4), so the pixel's own rate is `opened` minus these.
    pub open_inferred: bool,
    /// At least one click: counts once towards unique clicks.
    pub clicked: bool,
    /// Opened or clicked; the same as `opened` since a click implies an
    /// open, kept for the readers that use it.
    pub engaged: bool,
    /// Every open hit (the pixel's; inferred opens are no hits).
    pub opens: u64,
    /// Every click hit.
    pub clicks: u64,
    /// Clicks per link index. A click recorded without an index counts in
    /// `clicks` only.
    pub clicks_per_link: BTreeMap<u32, u64>,
}

impl Tally {
    fn add(&mut self, hit: &PastHit) {
        match hit.kind {
            HitKind::Open => self.opens += 1,
            HitKind::Click => {
                self.clicked = true;
                self.clicks += 1;
                if let Some(i) = hit.link_index {
                    *self.clicks_per_link.entry(i).or_default() += 1;
                }
            }
        }
        self.opened = true;
        self.engaged = true;
        // Whatever the order: an open hit, once seen, ends the inference.
        self.open_inferred = self.opens == 0;
    }
}

/// The engagement figures of one delivery.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Counts {
    pub all: Tally,
    pub human: Tally,
    /// The earliest open judged human.
    pub first_human_open: Option<Millis>,
    /// The earliest click judged human.
    pub first_human_click: Option<Millis>,
}

impl Counts {
    /// Counts a delivery's engagement hits, in any order.
    pub fn from_hits(hits: &[PastHit]) -> Counts {
        let mut counts = Counts::default();
        for hit in hits {
            counts.add(hit);
        }
        counts
    }

    /// Adds one hit (for keeping counts up to date as hits arrive).
    pub fn add(&mut self, hit: &PastHit) {
        self.all.add(hit);
        if hit.machine {
            return;
        }
        self.human.add(hit);
        let first = match hit.kind {
            HitKind::Open => &mut self.first_human_open,
            HitKind::Click => &mut self.first_human_click,
        };
        *first = Some(first.map_or(hit.at, |t| t.min(hit.at)));
    }

    /// Adds `n` hits that were counted but not stored as events (see
    /// [`crate::repeats`]): they repeat a stored hit of the same target and
    /// verdict, so they change the totals, never the flags or first times.
    pub fn add_repeats(&mut self, kind: HitKind, link_index: Option<u32>, machine: bool, n: u64) {
        let add = |t: &mut Tally| match kind {
            HitKind::Open => t.opens += n,
            HitKind::Click => {
                t.clicks += n;
                if let Some(i) = link_index {
                    *t.clicks_per_link.entry(i).or_default() += n;
                }
            }
        };
        add(&mut self.all);
        if !machine {
            add(&mut self.human);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hit(kind: HitKind, at: Millis, link_index: Option<u32>, machine: bool) -> PastHit {
        PastHit {
            kind,
            at,
            link_index,
            machine,
            network: None,
        }
    }

    #[test]
    fn nothing() {
        let c = Counts::from_hits(&[]);
        assert_eq!(c, Counts::default());
        assert!(!c.all.opened && !c.human.clicked && c.first_human_open.is_none());
    }

    #[test]
    fn mixed_hits() {
        let hits = [
            hit(HitKind::Open, 100, None, true),     // MPP prefetch
            hit(HitKind::Click, 105, Some(0), true), // scanner
            hit(HitKind::Click, 105, Some(1), true), // scanner
            hit(HitKind::Open, 5000, None, false),   // the reader
            hit(HitKind::Click, 6000, Some(1), false),
            hit(HitKind::Click, 7000, Some(1), false),
            hit(HitKind::Open, 4000, None, false), // arrived late, happened first
            hit(HitKind::Click, 8000, None, false), // index unknown
        ];
        let c = Counts::from_hits(&hits);
        assert!(c.all.opened && c.all.clicked && c.all.engaged);
        assert!(c.human.opened && c.human.clicked);
        assert_eq!((c.all.opens, c.all.clicks), (3, 5));
        assert_eq!((c.human.opens, c.human.clicks), (2, 3));
        assert_eq!(c.all.clicks_per_link, BTreeMap::from([(0, 1), (1, 3)]));
        assert_eq!(c.human.clicks_per_link, BTreeMap::from([(1, 2)]));
        assert_eq!(c.first_human_open, Some(4000));
        assert_eq!(c.first_human_click, Some(6000));
    }

    #[test]
    fn counted_repeats_add_to_the_totals_only() {
        let mut c = Counts::from_hits(&[
            hit(HitKind::Open, 100, None, false),
            hit(HitKind::Click, 200, Some(1), true),
        ]);
        let flags = (c.all.opened, c.human.clicked, c.first_human_open);
        c.add_repeats(HitKind::Open, None, false, 40);
        c.add_repeats(HitKind::Click, Some(1), true, 7);
        assert_eq!((c.all.opens, c.human.opens), (41, 41));
        assert_eq!((c.all.clicks, c.human.clicks), (8, 0));
        assert_eq!(c.all.clicks_per_link, BTreeMap::from([(1, 8)]));
        assert!(c.human.clicks_per_link.is_empty());
        assert_eq!((c.all.opened, c.human.clicked, c.first_human_open), flags);
    }

    #[test]
    fn only_machines() {
        let c = Counts::from_hits(&[
            hit(HitKind::Open, 1, None, true),
            hit(HitKind::Click, 2, Some(0), true),
        ]);
        assert!(c.all.opened && c.all.clicked);
        assert_eq!(c.human, Tally::default());
        assert_eq!((c.first_human_open, c.first_human_click), (None, None));
    }

    #[test]
    fn a_click_without_an_open_implies_one_marked_inferred() {
        let c = Counts::from_hits(&[hit(HitKind::Click, 9, Some(2), false)]);
        assert!(c.human.opened && c.human.open_inferred && c.human.clicked);
        assert_eq!((c.human.opens, c.first_human_open), (0, None));
        // Only machines opened (MPP): the person's click still implies the
        // person's open; over all hits the pixel was fetched.
        let c = Counts::from_hits(&[
            hit(HitKind::Click, 9, Some(2), false),
            hit(HitKind::Open, 5, None, true),
        ]);
        assert!(c.human.opened && c.human.open_inferred);
        assert!(c.all.opened && !c.all.open_inferred);
        // An open, in either order, ends the inference.
        for hits in [
            [
                hit(HitKind::Click, 9, Some(2), false),
                hit(HitKind::Open, 5, None, false),
            ],
            [
                hit(HitKind::Open, 5, None, false),
                hit(HitKind::Click, 9, Some(2), false),
            ],
        ] {
            let c = Counts::from_hits(&hits);
            assert!(c.human.opened && !c.human.open_inferred);
        }
    }

    proptest! {
        #[test]
        fn order_does_not_matter(
            raw in proptest::collection::vec((any::<bool>(), 0i64..1000, proptest::option::of(0u32..4), any::<bool>()), 0..30),
            seed in any::<u64>(),
        ) {
            let hits: Vec<PastHit> = raw
                .into_iter()
                .map(|(open, at, link, machine)| {
                    let kind = if open { HitKind::Open } else { HitKind::Click };
                    hit(kind, at, link, machine)
                })
                .collect();
            let mut shuffled = hits.clone();
            // A cheap deterministic shuffle.
            let n = shuffled.len();
            for i in (1..n).rev() {
                let j = (seed.wrapping_mul(i as u64 + 7) >> 3) as usize % (i + 1);
                shuffled.swap(i, j);
            }
            prop_assert_eq!(Counts::from_hits(&hits), Counts::from_hits(&shuffled));
            let c = Counts::from_hits(&hits);
            prop_assert!(c.human.opens <= c.all.opens && c.human.clicks <= c.all.clicks);
            for t in [&c.all, &c.human] {
                prop_assert_eq!(t.open_inferred, t.clicked && t.opens == 0);
                prop_assert_eq!(t.opened, t.opens > 0 || t.clicked);
            }
        }
    }
}
