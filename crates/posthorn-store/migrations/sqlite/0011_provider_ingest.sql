-- Provider ingest (issue #13 point 3): other providers' event webhooks.
-- IF NOT EXISTS: safe to run again (a test re-runs migrations from 0010).

-- Where one provider's webhooks for one tenant arrive. token_hash is the
-- SHA-256 of the capability token in the source's URL.
CREATE TABLE IF NOT EXISTS ingest_sources (
    id                   TEXT PRIMARY KEY,
    tenant_id            TEXT NOT NULL REFERENCES tenants(id),
    name                 TEXT,
    provider             TEXT NOT NULL,
    token_hash           TEXT NOT NULL UNIQUE,
    verification         TEXT NOT NULL,   -- JSON, SourceVerification
    created_at           INTEGER NOT NULL,
    pending_confirmation TEXT
);
CREATE INDEX IF NOT EXISTS ingest_sources_tenant ON ingest_sources (tenant_id, id);

-- Single-use tokens (Mailgun's), kept until their timestamp is outside the
-- window anyway.
CREATE TABLE IF NOT EXISTS ingest_tokens (
    source_id  TEXT NOT NULL,
    token      TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (source_id, token)
);
CREATE INDEX IF NOT EXISTS ingest_tokens_expiry ON ingest_tokens (expires_at);

-- A provider's message and recipient -> the delivery made for it.
CREATE TABLE IF NOT EXISTS provider_deliveries (
    tenant_id           TEXT NOT NULL REFERENCES tenants(id),
    provider            TEXT NOT NULL,
    provider_message_id TEXT NOT NULL,
    recipient           TEXT NOT NULL,
    message_id          TEXT NOT NULL REFERENCES messages(id),
    delivery_id         TEXT NOT NULL REFERENCES deliveries(id),
    PRIMARY KEY (tenant_id, provider, provider_message_id, recipient)
);

-- Every key that records a provider event once (its event id, its content
-- hash) -> the event recorded first.
CREATE TABLE IF NOT EXISTS provider_event_keys (
    tenant_id TEXT NOT NULL,
    key       TEXT NOT NULL,
    event_id  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, key)
);

-- The provider's payload of each recorded event.
CREATE TABLE IF NOT EXISTS provider_payloads (
    tenant_id TEXT NOT NULL,
    event_id  TEXT NOT NULL,
    source_id TEXT NOT NULL,
    payload   BLOB NOT NULL,
    PRIMARY KEY (tenant_id, event_id)
);
