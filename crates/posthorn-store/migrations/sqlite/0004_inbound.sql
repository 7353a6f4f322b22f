-- Mail received by the inbound MX: bounces, delay notices, complaints and
-- auto-replies, and whatever could not be attributed to a delivery (orphans).
-- The raw bytes are kept so that every asynchronous event can be explained
-- from its source, and nothing received is ever dropped silently.
CREATE TABLE inbound_messages (
    id            TEXT PRIMARY KEY,
    received_at   INTEGER NOT NULL,
    -- NULL for orphans: nothing received says which tenant it is for.
    tenant_id     TEXT REFERENCES tenants(id),
    delivery_id   TEXT,
    mail_from     TEXT NOT NULL,
    rcpt_to       TEXT NOT NULL,            -- JSON array
    kind          TEXT NOT NULL,            -- bounce delay delivered complaint vacation not_bounce
    outcome       TEXT NOT NULL,            -- recorded duplicate note orphan
    orphan_reason TEXT,
    attribution   TEXT,                     -- verp, message_id
    records       TEXT NOT NULL,            -- JSON array: what the parser read
    size          INTEGER NOT NULL,
    raw           BLOB NOT NULL
);
CREATE INDEX inbound_tenant_time ON inbound_messages (tenant_id, received_at);
CREATE INDEX inbound_outcome_time ON inbound_messages (outcome, received_at);
CREATE INDEX inbound_delivery ON inbound_messages (delivery_id);

-- Which inbound message an event was read from (GET /v1/events/{id}/raw).
CREATE TABLE inbound_events (
    event_id   TEXT PRIMARY KEY,
    inbound_id TEXT NOT NULL REFERENCES inbound_messages(id)
);
