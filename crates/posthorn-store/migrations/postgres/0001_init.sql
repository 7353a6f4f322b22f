-- Posthorn schema on PostgreSQL, version 1: everything the SQLite
-- migrations 0001-0011 produce at their end, with the same table and
-- column names, so that the write engine's primitive statements map one to
-- one onto both backends. Types: ids are text (UUIDv7); times are epoch
-- milliseconds (bigint, Posthorn's `Millis`); every other integer is bigint
-- too, so every Rust value binds as i64; flags are boolean; JSON is jsonb;
-- raw bytes are bytea. Text compares byte by byte (COLLATE "C" on every
-- text column), as SQLite compares it: ids page by `id <` and sort by
-- `ORDER BY id` whatever the database's own collation, and equal texts
-- are equal bytes. Every row that belongs to a tenant carries tenant_id
-- so that every query can be scoped by it.
--
-- What differs from SQLite, and why:
-- * Where SQLite's single writer relied on an EXISTS check before an
--   insert, a unique index makes the database refuse the second of two
--   concurrent inserts (suppressions; idempotency keys and tenant names
--   were unique already), or, where no index can say it (a campaign's
--   recipient once among deliveries not dropped, with the rule on), the
--   writer holds a transaction-scoped advisory lock over check and insert
--   (`postgres::tx`). The loser is run again, and its check then sees the
--   winner.
-- * `events` is partitioned by month of `recorded_at`, and its `seq` is a
--   position derived from the writing transaction's id (docs/decisions.md,
--   "Issue #14: the PostgreSQL backend"). A partitioned table's unique
--   indexes must include the partition key, so the uniqueness of event ids
--   and external ids lives in `event_keys`.
-- * No `event_sequence` table: positions come from transaction ids.

CREATE TABLE tenants (
    id              text COLLATE "C" PRIMARY KEY,
    name            text COLLATE "C" NOT NULL UNIQUE,
    created_at      bigint NOT NULL,
    -- NULL: follow the server default ([policy] campaign_dedupe).
    campaign_dedupe boolean,
    -- A tenant's default for open and click tracking; NULL: the server's.
    track_opens     boolean,
    track_clicks    boolean
);

CREATE TABLE api_keys (
    id          text COLLATE "C" PRIMARY KEY,          -- the public part of the key
    tenant_id   text COLLATE "C" NOT NULL REFERENCES tenants(id),
    name        text COLLATE "C",
    scopes      text COLLATE "C" NOT NULL,             -- comma-separated: send,read,admin
    secret_hash text COLLATE "C" NOT NULL,             -- hex SHA-256 of the 32 secret bytes
    created_at  bigint NOT NULL,
    revoked_at  bigint
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE messages (
    id              text COLLATE "C" PRIMARY KEY,
    tenant_id       text COLLATE "C" NOT NULL REFERENCES tenants(id),
    from_header     text COLLATE "C" NOT NULL,
    from_address    text COLLATE "C" NOT NULL,
    reply_to        text COLLATE "C",
    subject         text COLLATE "C" NOT NULL,
    text_body       text COLLATE "C",
    html_body       text COLLATE "C",
    headers         jsonb NOT NULL,        -- object
    tags            jsonb NOT NULL,        -- array
    metadata        jsonb NOT NULL,        -- object
    stream          text COLLATE "C" NOT NULL,
    campaign        text COLLATE "C",
    test            boolean NOT NULL,
    send_at         bigint,
    expires_at      bigint,
    tracking_opens  boolean,
    tracking_clicks boolean,
    size            bigint NOT NULL,
    source          text COLLATE "C" NOT NULL,
    created_at      bigint NOT NULL,
    -- The To and Cc headers as submitted (arrays of {"name", "address"}).
    to_header       jsonb,
    cc_header       jsonb,
    -- Messages submitted over SMTP keep their MIME bytes as the client
    -- built them.
    raw_mime        bytea
);
CREATE INDEX messages_tenant ON messages (tenant_id, id);

CREATE TABLE deliveries (
    id                     text COLLATE "C" PRIMARY KEY,
    tenant_id              text COLLATE "C" NOT NULL REFERENCES tenants(id),
    message_id             text COLLATE "C" NOT NULL REFERENCES messages(id),
    recipient              text COLLATE "C" NOT NULL,  -- normalised address
    recipient_kind         text COLLATE "C" NOT NULL,  -- to, cc, bcc
    sender                 text COLLATE "C" NOT NULL,  -- normalised from address
    stream                 text COLLATE "C" NOT NULL,
    campaign               text COLLATE "C",
    test                   boolean NOT NULL,
    created_at             bigint NOT NULL,
    window_ends_at         bigint NOT NULL,
    -- The folded status, updated in the same transaction as each event.
    delivery_status        text COLLATE "C",
    bounce_type            text COLLATE "C",
    delivery_event_id      text COLLATE "C",
    delivery_occurred_at   bigint,
    engagement_status      text COLLATE "C",
    engagement_event_id    text COLLATE "C",
    engagement_occurred_at bigint,
    updated_at             bigint NOT NULL
);
CREATE INDEX deliveries_message ON deliveries (message_id);
CREATE INDEX deliveries_campaign ON deliveries (tenant_id, campaign, recipient) WHERE campaign IS NOT NULL;
CREATE INDEX deliveries_recipient ON deliveries (tenant_id, recipient);
-- Events, partitioned by month of recording so that retention can drop
-- whole partitions. `seq` is the event's position: (transaction id << 20)
-- | its number within the transaction (see `postgres::position`).
CREATE TABLE events (
    seq            bigint NOT NULL,
    id             text COLLATE "C" NOT NULL,
    tenant_id      text COLLATE "C" NOT NULL,
    delivery_id    text COLLATE "C" NOT NULL REFERENCES deliveries(id),
    message_id     text COLLATE "C" NOT NULL,
    recipient      text COLLATE "C" NOT NULL,
    sender         text COLLATE "C" NOT NULL,
    kind           text COLLATE "C" NOT NULL,
    occurred_at    bigint NOT NULL,
    recorded_at    bigint NOT NULL,
    source         text COLLATE "C" NOT NULL,
    details        jsonb NOT NULL,         -- object, by kind
    external_id    text COLLATE "C",
    anomaly        text COLLATE "C",
    outside_window boolean NOT NULL
) PARTITION BY RANGE (recorded_at);
-- Rows for a month without a partition of its own land here;
-- `posthorn_event_partitions` moves them out when it makes that month's.
CREATE TABLE events_default PARTITION OF events DEFAULT;
-- The queries of `postgres::reads`: a tenant's events after a position
-- (the live feed), by id, a delivery's timeline, the newest of a tenant
-- (optionally by sender or kind), and by external id.
CREATE INDEX events_seq ON events (tenant_id, seq);
-- Every node's commit stream follows all tenants' events by position.
CREATE INDEX events_position ON events (seq);
CREATE INDEX events_id ON events (id);
CREATE INDEX events_delivery ON events (delivery_id, id);
CREATE INDEX events_tenant_time ON events (tenant_id, id);
CREATE INDEX events_sender ON events (tenant_id, sender, id);
CREATE INDEX events_kind ON events (tenant_id, kind, id);
CREATE INDEX events_external ON events (tenant_id, external_id) WHERE external_id IS NOT NULL;

-- What makes an event unique (a partitioned table's unique index would
-- have to include recorded_at): one row per event id (kind 'id') and per
-- external id (kind 'external'). The writer inserts its keys with
-- ON CONFLICT DO NOTHING before the event row; a key already there means
-- the event was recorded before, by this or a concurrent transaction.
CREATE TABLE event_keys (
    tenant_id text COLLATE "C" NOT NULL,
    kind      text COLLATE "C" NOT NULL CHECK (kind IN ('id', 'external')),
    key       text COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant_id, kind, key)
);

CREATE TABLE contacts (
    tenant_id                     text COLLATE "C" NOT NULL REFERENCES tenants(id),
    address                       text COLLATE "C" NOT NULL,
    status                        text COLLATE "C" NOT NULL,
    unsubscribed_streams          jsonb NOT NULL,  -- array
    consecutive_failed_deliveries bigint NOT NULL,
    consecutive_failed_attempts   bigint NOT NULL,
    created_at                    bigint NOT NULL,
    updated_at                    bigint NOT NULL,
    PRIMARY KEY (tenant_id, address)
);

-- Every change of a contact's status, with its cause.
CREATE TABLE contact_changes (
    id             text COLLATE "C" PRIMARY KEY,
    tenant_id      text COLLATE "C" NOT NULL,
    address        text COLLATE "C" NOT NULL,
    from_status    text COLLATE "C" NOT NULL,
    to_status      text COLLATE "C" NOT NULL,
    reason         text COLLATE "C" NOT NULL,
    cause_event_id text COLLATE "C",
    at             bigint NOT NULL
);
CREATE INDEX contact_changes_address ON contact_changes (tenant_id, address, id);

CREATE TABLE suppressions (
    id             text COLLATE "C" PRIMARY KEY,
    tenant_id      text COLLATE "C" NOT NULL REFERENCES tenants(id),
    target         text COLLATE "C" NOT NULL,          -- address, or @domain
    stream         text COLLATE "C",                   -- NULL: every stream
    reason         text COLLATE "C" NOT NULL,
    cause_event_id text COLLATE "C",
    created_at     bigint NOT NULL,
    expires_at     bigint,
    removed_at     bigint
);
CREATE INDEX suppressions_target ON suppressions (tenant_id, target);
-- One entry not removed per tenant, target and scope. An entry past its
-- expiry still counts here: the writer marks it removed before it adds
-- the next (expiry depends on the time, which an index cannot read).
CREATE UNIQUE INDEX suppressions_active ON suppressions (tenant_id, target, COALESCE(stream, ''))
    WHERE removed_at IS NULL;

CREATE TABLE send_queue (
    delivery_id text COLLATE "C" PRIMARY KEY REFERENCES deliveries(id),
    tenant_id   text COLLATE "C" NOT NULL,
    due_at      bigint NOT NULL,
    attempts    bigint NOT NULL,
    lease_owner text COLLATE "C",
    lease_until bigint,
    created_at  bigint NOT NULL
);
CREATE INDEX send_queue_due ON send_queue (due_at);
CREATE INDEX send_queue_lease ON send_queue (lease_until);

CREATE TABLE idempotency_keys (
    tenant_id  text COLLATE "C" NOT NULL,
    key        text COLLATE "C" NOT NULL,
    body_hash  text COLLATE "C" NOT NULL,
    receipt    jsonb NOT NULL,             -- the first answer
    created_at bigint NOT NULL,
    PRIMARY KEY (tenant_id, key)
);

-- Mail received by the inbound MX: bounces, delay notices, complaints and
-- auto-replies, and whatever could not be attributed to a delivery
-- (orphans), raw bytes kept.
CREATE TABLE inbound_messages (
    id            text COLLATE "C" PRIMARY KEY,
    received_at   bigint NOT NULL,
    -- NULL for orphans: nothing received says which tenant it is for.
    tenant_id     text COLLATE "C" REFERENCES tenants(id),
    delivery_id   text COLLATE "C",
    mail_from     text COLLATE "C" NOT NULL,
    rcpt_to       jsonb NOT NULL,           -- array
    kind          text COLLATE "C" NOT NULL,            -- bounce delay delivered complaint vacation not_bounce
    outcome       text COLLATE "C" NOT NULL,            -- recorded duplicate note orphan
    orphan_reason text COLLATE "C",
    attribution   text COLLATE "C",                     -- verp, message_id
    records       jsonb NOT NULL,           -- array: what the parser read
    size          bigint NOT NULL,
    raw           bytea NOT NULL
);
CREATE INDEX inbound_tenant_time ON inbound_messages (tenant_id, received_at);
CREATE INDEX inbound_outcome_time ON inbound_messages (outcome, received_at);
CREATE INDEX inbound_delivery ON inbound_messages (delivery_id);

-- Which inbound message an event was read from (GET /v1/events/{id}/raw).
CREATE TABLE inbound_events (
    event_id   text COLLATE "C" PRIMARY KEY,
    inbound_id text COLLATE "C" NOT NULL REFERENCES inbound_messages(id)
);

-- The original URLs of a message's tracked links, by index.
CREATE TABLE message_links (
    message_id text COLLATE "C" NOT NULL REFERENCES messages(id),
    position   bigint NOT NULL,
    url        text COLLATE "C" NOT NULL,
    PRIMARY KEY (message_id, position)
);

-- Sending domains belong to tenants: one domain, one owner.
CREATE TABLE sending_domains (
    domain     text COLLATE "C" PRIMARY KEY,
    tenant_id  text COLLATE "C" NOT NULL REFERENCES tenants(id),
    created_at bigint NOT NULL
);
CREATE INDEX sending_domains_tenant ON sending_domains (tenant_id, domain);

-- Tracker hits counted but not stored as events. `link_index` is -1 for
-- the open pixel (a key column cannot be NULL).
CREATE TABLE repeated_hits (
    delivery_id text COLLATE "C" NOT NULL REFERENCES deliveries(id),
    kind        text COLLATE "C" NOT NULL,
    link_index  bigint NOT NULL,
    machine     boolean NOT NULL,
    hits        bigint NOT NULL,
    last_at     bigint NOT NULL,
    PRIMARY KEY (delivery_id, kind, link_index, machine)
);

-- Provider ingest: where one provider's webhooks for one tenant arrive.
-- token_hash is the SHA-256 of the capability token in the source's URL.
CREATE TABLE ingest_sources (
    id                   text COLLATE "C" PRIMARY KEY,
    tenant_id            text COLLATE "C" NOT NULL REFERENCES tenants(id),
    name                 text COLLATE "C",
    provider             text COLLATE "C" NOT NULL,
    token_hash           text COLLATE "C" NOT NULL UNIQUE,
    verification         jsonb NOT NULL,  -- SourceVerification
    created_at           bigint NOT NULL,
    pending_confirmation text COLLATE "C"
);
CREATE INDEX ingest_sources_tenant ON ingest_sources (tenant_id, id);

-- Single-use tokens (Mailgun's), kept until their timestamp is outside the
-- window anyway.
CREATE TABLE ingest_tokens (
    source_id  text COLLATE "C" NOT NULL,
    token      text COLLATE "C" NOT NULL,
    expires_at bigint NOT NULL,
    PRIMARY KEY (source_id, token)
);
CREATE INDEX ingest_tokens_expiry ON ingest_tokens (expires_at);

-- A provider's message and recipient -> the delivery made for it.
CREATE TABLE provider_deliveries (
    tenant_id           text COLLATE "C" NOT NULL REFERENCES tenants(id),
    provider            text COLLATE "C" NOT NULL,
    provider_message_id text COLLATE "C" NOT NULL,
    recipient           text COLLATE "C" NOT NULL,
    message_id          text COLLATE "C" NOT NULL REFERENCES messages(id),
    delivery_id         text COLLATE "C" NOT NULL REFERENCES deliveries(id),
    PRIMARY KEY (tenant_id, provider, provider_message_id, recipient)
);

-- Every key that records a provider event once (its event id, its content
-- hash) -> the event recorded first.
CREATE TABLE provider_event_keys (
    tenant_id text COLLATE "C" NOT NULL,
    key       text COLLATE "C" NOT NULL,
    event_id  text COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant_id, key)
);

-- The provider's payload of each recorded event.
CREATE TABLE provider_payloads (
    tenant_id text COLLATE "C" NOT NULL,
    event_id  text COLLATE "C" NOT NULL,
    source_id text COLLATE "C" NOT NULL,
    payload   bytea NOT NULL,
    PRIMARY KEY (tenant_id, event_id)
);

-- Makes the monthly partitions of `events` (UTC months) for the month that
-- holds `at_ms` and the `months_ahead` months after it, unless they exist;
-- returns how many it made. Rows the DEFAULT partition holds for such a
-- month (written while it had no partition) are moved into the new one
-- first, as PostgreSQL refuses to attach a partition whose rows the
-- default still holds. Safe to run again and concurrently: one caller at a
-- time (an advisory lock held until the transaction ends); a later caller
-- finds the partitions made.
CREATE FUNCTION posthorn_event_partitions(at_ms bigint, months_ahead integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    first_month timestamp := date_trunc('month', to_timestamp(at_ms / 1000.0) AT TIME ZONE 'UTC');
    month_start timestamp;
    low bigint;
    high bigint;
    partition_name text;
    made integer := 0;
BEGIN
    -- The migrations' key ("posthorn" in ASCII, 0x706f7374686f726e) + 1.
    PERFORM pg_advisory_xact_lock(8101821198468346479);
    FOR i IN 0..months_ahead LOOP
        month_start := first_month + make_interval(months => i);
        partition_name := 'events_' || to_char(month_start, 'YYYY_MM');
        IF to_regclass(partition_name) IS NOT NULL THEN
            CONTINUE;
        END IF;
        low := (extract(epoch FROM month_start AT TIME ZONE 'UTC') * 1000)::bigint;
        high := (extract(epoch FROM (month_start + interval '1 month') AT TIME ZONE 'UTC') * 1000)::bigint;
        -- Nothing may land in the default partition between the move and
        -- the attach (which would then refuse): writers wait for this
        -- transaction.
        LOCK TABLE events_default IN ACCESS EXCLUSIVE MODE;
        EXECUTE format('CREATE TABLE %I (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                       partition_name);
        EXECUTE format('WITH moved AS (DELETE FROM events_default WHERE recorded_at >= %s AND recorded_at < %s RETURNING *) '
                       'INSERT INTO %I SELECT * FROM moved', low, high, partition_name);
        EXECUTE format('ALTER TABLE events ATTACH PARTITION %I FOR VALUES FROM (%s) TO (%s)',
                       partition_name, low, high);
        made := made + 1;
    END LOOP;
    RETURN made;
END
$$;

-- Secrets every node sharing the database must use alike (the server
-- secret that signs return paths and tracking links), kept by the first
-- node to start.
CREATE TABLE shared_secrets (
    name       text COLLATE "C" PRIMARY KEY,
    value      bytea NOT NULL,
    created_at bigint NOT NULL
);
