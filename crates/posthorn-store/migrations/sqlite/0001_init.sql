-- Posthorn schema, version 1.
-- Conventions shared with the PostgreSQL schema: ids are text (UUIDv7),
-- times are epoch milliseconds (integers), JSON is stored as text, and every
-- row that belongs to a tenant carries tenant_id so that every query can be
-- scoped by it.

CREATE TABLE tenants (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    created_at      INTEGER NOT NULL,
    -- NULL: follow the server default ([policy] campaign_dedupe).
    campaign_dedupe INTEGER
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,          -- the public part of the key
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT,
    scopes      TEXT NOT NULL,             -- comma-separated: send,read,admin
    secret_hash TEXT NOT NULL,             -- hex SHA-256 of the 32 secret bytes
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE messages (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id),
    from_header     TEXT NOT NULL,
    from_address    TEXT NOT NULL,
    reply_to        TEXT,
    subject         TEXT NOT NULL,
    text_body       TEXT,
    html_body       TEXT,
    headers         TEXT NOT NULL,         -- JSON object
    tags            TEXT NOT NULL,         -- JSON array
    metadata        TEXT NOT NULL,         -- JSON object
    stream          TEXT NOT NULL,
    campaign        TEXT,
    test            INTEGER NOT NULL,
    send_at         INTEGER,
    expires_at      INTEGER,
    tracking_opens  INTEGER,
    tracking_clicks INTEGER,
    size            INTEGER NOT NULL,
    source          TEXT NOT NULL,
    created_at      INTEGER NOT NULL
);
CREATE INDEX messages_tenant ON messages (tenant_id, id);

CREATE TABLE deliveries (
    id                     TEXT PRIMARY KEY,
    tenant_id              TEXT NOT NULL REFERENCES tenants(id),
    message_id             TEXT NOT NULL REFERENCES messages(id),
    recipient              TEXT NOT NULL,  -- normalised address
    recipient_kind         TEXT NOT NULL,  -- to, cc, bcc
    sender                 TEXT NOT NULL,  -- normalised from address
    stream                 TEXT NOT NULL,
    campaign               TEXT,
    test                   INTEGER NOT NULL,
    created_at             INTEGER NOT NULL,
    window_ends_at         INTEGER NOT NULL,
    -- The folded status, updated in the same transaction as each event.
    delivery_status        TEXT,
    bounce_type            TEXT,
    delivery_event_id      TEXT,
    delivery_occurred_at   INTEGER,
    engagement_status      TEXT,
    engagement_event_id    TEXT,
    engagement_occurred_at INTEGER,
    updated_at             INTEGER NOT NULL
);
CREATE INDEX deliveries_message ON deliveries (message_id);
CREATE INDEX deliveries_campaign ON deliveries (tenant_id, campaign, recipient) WHERE campaign IS NOT NULL;
CREATE INDEX deliveries_recipient ON deliveries (tenant_id, recipient);

CREATE TABLE events (
    id             TEXT PRIMARY KEY,
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
CREATE INDEX events_delivery ON events (delivery_id, id);
CREATE INDEX events_tenant_time ON events (tenant_id, id);
CREATE INDEX events_recipient ON events (tenant_id, recipient, id);
CREATE INDEX events_sender ON events (tenant_id, sender, id);
CREATE INDEX events_kind ON events (tenant_id, kind, id);
CREATE UNIQUE INDEX events_external ON events (tenant_id, external_id) WHERE external_id IS NOT NULL;

CREATE TABLE contacts (
    tenant_id                     TEXT NOT NULL REFERENCES tenants(id),
    address                       TEXT NOT NULL,
    status                        TEXT NOT NULL,
    unsubscribed_streams          TEXT NOT NULL,  -- JSON array
    consecutive_failed_deliveries INTEGER NOT NULL,
    consecutive_failed_attempts   INTEGER NOT NULL,
    created_at                    INTEGER NOT NULL,
    updated_at                    INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, address)
);

-- Every change of a contact's status, with its cause.
CREATE TABLE contact_changes (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL,
    address        TEXT NOT NULL,
    from_status    TEXT NOT NULL,
    to_status      TEXT NOT NULL,
    reason         TEXT NOT NULL,
    cause_event_id TEXT,
    at             INTEGER NOT NULL
);
CREATE INDEX contact_changes_address ON contact_changes (tenant_id, address, id);

CREATE TABLE suppressions (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    target         TEXT NOT NULL,          -- address, or @domain
    stream         TEXT,                   -- NULL: every stream
    reason         TEXT NOT NULL,
    cause_event_id TEXT,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER,
    removed_at     INTEGER
);
CREATE INDEX suppressions_target ON suppressions (tenant_id, target);

CREATE TABLE send_queue (
    delivery_id TEXT PRIMARY KEY REFERENCES deliveries(id),
    tenant_id   TEXT NOT NULL,
    due_at      INTEGER NOT NULL,
    attempts    INTEGER NOT NULL,
    lease_owner TEXT,
    lease_until INTEGER,
    created_at  INTEGER NOT NULL
);
CREATE INDEX send_queue_due ON send_queue (due_at);

CREATE TABLE idempotency_keys (
    tenant_id  TEXT NOT NULL,
    key        TEXT NOT NULL,
    body_hash  TEXT NOT NULL,
    receipt    TEXT NOT NULL,              -- JSON of the first answer
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
