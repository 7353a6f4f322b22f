-- Posthorn schema on PostgreSQL, version 4: the statistics' rows of
-- changes (version 3) are folded, a minute at a time, into one row per
-- count (`postgres::compact_stats`). A row a writer adds is not folded
-- yet; a folded row is marked, so each round folds only the counts that
-- changed since the last one.
ALTER TABLE delivery_stats ADD COLUMN compacted boolean NOT NULL DEFAULT false;
CREATE INDEX delivery_stats_fresh ON delivery_stats (tenant_id) WHERE NOT compacted;
ALTER TABLE delivery_stats_domains ADD COLUMN compacted boolean NOT NULL DEFAULT false;
CREATE INDEX delivery_stats_domains_fresh ON delivery_stats_domains (tenant_id) WHERE NOT compacted;
