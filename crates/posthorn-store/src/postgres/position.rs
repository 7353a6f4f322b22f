//! Event positions (`events.seq`) on PostgreSQL, gap-safe across any
//! number of writers and nodes without a lock.
//!
//! A writing transaction reads its own transaction id once
//! (`pg_current_xact_id()`, 64 bits with the wraparound epoch, so it never
//! repeats) and numbers its events `(xid << 20) | n`, n = 0, 1, 2, ...
//! A reader asks only for positions below `pg_snapshot_xmin(snapshot) <<
//! 20`: every transaction whose id is below its snapshot's xmin has ended,
//! so every event under that bound is committed and visible (or was rolled
//! back and never will be), and a transaction that commits later has an id
//! at or above xmin, so positions at or above the bound. A reader that goes
//! on from the last position it saw therefore never later finds a committed
//! event below it. The price: a transaction that holds an id for long (a
//! long writing transaction anywhere in the cluster, in any database)
//! holds the bound back, and the feed waits for it; it never loses events.
//! See docs/decisions.md, "Issue #14: the PostgreSQL backend".

use crate::{StoreError, StoreResult};

/// Bits of a position that number the events of one transaction.
pub const POSITION_BITS: u32 = 20;

/// Events one transaction may number (2^20).
pub const EVENTS_PER_TRANSACTION: u32 = 1 << POSITION_BITS;

/// The largest transaction id whose positions fit in an `i64` (2^43 - 1):
/// at 100,000 writing transactions a second, a cluster reaches it after
/// about 2.8 years of them; at 1,000 a second, after 280.
pub const MAX_XID: i64 = (1 << (63 - POSITION_BITS)) - 1;

/// The position of the `n`th event (from 0) of the transaction `xid`.
pub fn event_position(xid: i64, n: u32) -> StoreResult<i64> {
    if !(0..=MAX_XID).contains(&xid) {
        return Err(StoreError::backend(format!(
            "transaction id {xid} is beyond what event positions can hold ({MAX_XID})"
        )));
    }
    if n >= EVENTS_PER_TRANSACTION {
        return Err(StoreError::backend(format!(
            "one transaction may record at most {EVENTS_PER_TRANSACTION} events"
        )));
    }
    Ok((xid << POSITION_BITS) | i64::from(n))
}

/// The transaction whose event holds `position`.
pub fn position_xid(position: i64) -> i64 {
    position >> POSITION_BITS
}

/// The SQL expression of the bound below which every position is settled:
/// the snapshot's oldest running transaction, shifted as positions are.
/// Evaluated in the statement that reads the events, so the bound and the
/// rows come from the same snapshot.
pub(crate) fn settled_bound_sql() -> String {
    format!("(pg_snapshot_xmin(pg_current_snapshot())::text::bigint << {POSITION_BITS})")
}

/// The current transaction's id (assigning one if it has none yet), read
/// once by a writer before it numbers its events.
pub fn current_xid(c: &mut impl ::postgres::GenericClient) -> StoreResult<i64> {
    let row = c.query_one("SELECT pg_current_xact_id()::text::bigint", &[])?;
    Ok(row.try_get(0)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_the_transaction_id_above_the_event_number() {
        assert_eq!(event_position(0, 0).unwrap(), 0);
        assert_eq!(event_position(1, 0).unwrap(), 1 << 20);
        assert_eq!(event_position(1, 5).unwrap(), (1 << 20) + 5);
        assert_eq!(event_position(7, 1).unwrap(), 7 * 1_048_576 + 1);
        assert_eq!(position_xid(event_position(12_345, 999).unwrap()), 12_345);
    }

    #[test]
    fn a_transaction_s_positions_stay_below_the_next_transaction_s() {
        let last_of_one = event_position(41, EVENTS_PER_TRANSACTION - 1).unwrap();
        let first_of_next = event_position(42, 0).unwrap();
        assert_eq!(last_of_one + 1, first_of_next);
    }

    #[test]
    fn an_event_number_past_2_pow_20_is_refused() {
        assert!(event_position(1, EVENTS_PER_TRANSACTION - 1).is_ok());
        let e = event_position(1, EVENTS_PER_TRANSACTION).unwrap_err();
        assert!(e.to_string().contains("1048576"), "{e}");
        assert!(event_position(1, u32::MAX).is_err());
    }

    #[test]
    fn transaction_ids_that_would_overflow_are_refused() {
        let last = event_position(MAX_XID, EVENTS_PER_TRANSACTION - 1).unwrap();
        assert_eq!(last, i64::MAX);
        assert!(event_position(MAX_XID + 1, 0).is_err());
        assert!(event_position(-1, 0).is_err());
    }

    #[test]
    fn the_bound_shifts_as_positions_do() {
        // A transaction at the snapshot's xmin may still be running: its
        // first position is exactly the bound, so `seq < bound` leaves it
        // out, and every position of an older one is under it.
        let xmin = 1_000;
        let bound = xmin << POSITION_BITS;
        assert_eq!(event_position(xmin, 0).unwrap(), bound);
        assert!(event_position(xmin - 1, EVENTS_PER_TRANSACTION - 1).unwrap() < bound);
        assert!(settled_bound_sql().ends_with("<< 20)"));
    }
}
