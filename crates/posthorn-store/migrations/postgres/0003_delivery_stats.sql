-- Posthorn schema on PostgreSQL, version 3: statistics counted per
-- delivery, as SQLite's migration 0012 (see it for what each column
-- means; docs/decisions.md, "Statistics").
--
-- Unlike SQLite's, these tables hold changes, not one row per key: a
-- transaction adds rows of +1 and -1 and a read sums them. Adding to one
-- counter row would lock it until commit, and every writer of every node
-- changes the same few rows (this hour's `delivered` of a campaign), so
-- they would take turns; rows added take no lock any other writer waits
-- for.
ALTER TABLE deliveries ADD COLUMN seen bigint NOT NULL DEFAULT 0;

CREATE TABLE delivery_stats (
    tenant_id  text COLLATE "C" NOT NULL,
    hour       bigint NOT NULL,
    stream     text COLLATE "C" NOT NULL,
    campaign   text COLLATE "C" NOT NULL,
    tag        text COLLATE "C" NOT NULL,
    reason     text COLLATE "C" NOT NULL,
    metric     text COLLATE "C" NOT NULL,
    deliveries bigint NOT NULL
);
CREATE INDEX delivery_stats_key ON delivery_stats (tenant_id, tag, hour);

CREATE TABLE delivery_stats_domains (
    tenant_id  text COLLATE "C" NOT NULL,
    day        bigint NOT NULL,
    domain     text COLLATE "C" NOT NULL,
    metric     text COLLATE "C" NOT NULL,
    deliveries bigint NOT NULL
);
CREATE INDEX delivery_stats_domains_key ON delivery_stats_domains (tenant_id, day);
