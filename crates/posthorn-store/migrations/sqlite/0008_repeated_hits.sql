-- Tracker hits counted but not stored as events: past the first few hits
-- of one client on one target of a delivery, the rest are only counted
-- here (posthorn-track `repeats`), per delivery, target and verdict, so a
-- pixel fetched thousands of times adds one row, not thousands of events.
-- `link_index` is -1 for the open pixel (a key column cannot be NULL).
CREATE TABLE repeated_hits (
    delivery_id TEXT NOT NULL REFERENCES deliveries(id),
    kind        TEXT NOT NULL,
    link_index  INTEGER NOT NULL,
    machine     INTEGER NOT NULL,
    hits        INTEGER NOT NULL,
    last_at     INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, kind, link_index, machine)
) WITHOUT ROWID;
