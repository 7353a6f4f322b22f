-- Statistics counted per delivery (issue #15, point 4; docs/decisions.md,
-- "Statistics"). What a delivery has been seen to do (`posthorn_core::
-- stats::Seen`, one bit each), kept with it; and the counts, kept up to
-- date in the transaction that changes a delivery, by the hour it was
-- submitted in and what the figures are broken down by: the stream, the
-- campaign ('' for none), a tag of its message ('' for the count of all,
-- which every delivery is in once whatever its tags), and the reason of a
-- drop or bounce ('' for other figures). Receiving domains are counted
-- apart, by day.
ALTER TABLE deliveries ADD COLUMN seen INTEGER NOT NULL DEFAULT 0;

CREATE TABLE delivery_stats (
    tenant_id  TEXT NOT NULL,
    hour       INTEGER NOT NULL,  -- epoch milliseconds, a whole hour
    stream     TEXT NOT NULL,
    campaign   TEXT NOT NULL,
    tag        TEXT NOT NULL,
    reason     TEXT NOT NULL,
    metric     TEXT NOT NULL,
    deliveries INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, tag, hour, stream, campaign, reason, metric)
) WITHOUT ROWID;

CREATE TABLE delivery_stats_domains (
    tenant_id  TEXT NOT NULL,
    day        INTEGER NOT NULL,  -- epoch milliseconds, a whole day (UTC)
    domain     TEXT NOT NULL,
    metric     TEXT NOT NULL,
    deliveries INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, day, domain, metric)
) WITHOUT ROWID;
