-- Every event gets a sequence number in commit order: the single writer
-- gives them out inside its transaction (see sqlite/writer.rs), so a reader
-- that has seen every event up to N can ask for those after N and miss
-- none (`Store::events_after`), which the live feed and webhooks build on.
--
-- `seq` is the table's own key (INTEGER PRIMARY KEY), not a column with an
-- index beside it: an index of its own cost every event one more B-tree
-- insert (measured: 17 % of the writer's events/s, docs/benchmarks.md),
-- while keying the table by it costs nothing more than the rowid did. The
-- event id keeps its uniqueness (and its look-ups) through its UNIQUE
-- index, as it had through its primary key. SQLite cannot change a table's
-- key in place, so the table is rebuilt; existing events are numbered in
-- the order they were inserted (their rowid), which is the order they were
-- committed in. No table refers to `events`.
CREATE TABLE events_by_seq (
    seq            INTEGER PRIMARY KEY,
    id             TEXT NOT NULL UNIQUE,
    tenant_id      TEXT NOT NULL,
    delivery_id    TEXT NOT NULL REFERENCES deliveries(id),
    message_id     TEXT NOT NULL,
    recipient      TEXT NOT NULL,
    sender         TEXT NOT NULL,
    kind           TEXT NOT NULL,
    occurred_at    INTEGER NOT NULL,
    recorded_at    INTEGER NOT NULL,
    source         TEXT NOT NULL,
    details        TEXT NOT NULL,          -- JSON object, by kind
    external_id    TEXT,
    anomaly        TEXT,
    outside_window INTEGER NOT NULL
);
INSERT INTO events_by_seq (seq, id, tenant_id, delivery_id, message_id, recipient, sender, kind,
                           occurred_at, recorded_at, source, details, external_id, anomaly, outside_window)
SELECT rowid, id, tenant_id, delivery_id, message_id, recipient, sender, kind,
       occurred_at, recorded_at, source, details, external_id, anomaly, outside_window
FROM events ORDER BY rowid;
DROP TABLE events;
ALTER TABLE events_by_seq RENAME TO events;
-- The indexes the table had (0001, less events_recipient: 0006).
CREATE INDEX events_delivery ON events (delivery_id, id);
CREATE INDEX events_tenant_time ON events (tenant_id, id);
CREATE INDEX events_sender ON events (tenant_id, sender, id);
CREATE INDEX events_kind ON events (tenant_id, kind, id);
CREATE UNIQUE INDEX events_external ON events (tenant_id, external_id) WHERE external_id IS NOT NULL;

-- The last number given out, kept in the transaction that used it, so a
-- restart goes on from there and a number is never given twice, even
-- after the newest events were deleted.
CREATE TABLE event_sequence (last INTEGER NOT NULL);
INSERT INTO event_sequence (last) SELECT IFNULL(MAX(seq), 0) FROM events;
