-- Every event gets a sequence number in commit order: the single writer
-- gives them out inside its transaction (see sqlite/writer.rs), so a reader
-- that has seen every event up to N can ask for those after N and miss
-- none (`Store::events_after`), which the live feed and webhooks build on.
-- Existing events are numbered in the order they were inserted (their
-- rowid), which is the order they were committed in.
ALTER TABLE events ADD COLUMN seq INTEGER;
UPDATE events SET seq = rowid;
CREATE INDEX events_tenant_seq ON events (tenant_id, seq);

-- The last number given out, kept in the transaction that used it, so a
-- restart goes on from there (one row; a MAX over an index per tenant
-- would do as well, but not in one read).
CREATE TABLE event_sequence (last INTEGER NOT NULL);
INSERT INTO event_sequence (last) SELECT IFNULL(MAX(seq), 0) FROM events;
