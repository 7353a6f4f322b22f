-- Events by recipient are found through the recipient's deliveries
-- (deliveries_recipient, then each delivery's events_delivery), not through
-- an index of their own. That index took one entry per event at a random
-- place (addresses do not arrive in order), so every tracker hit and every
-- delivery event wrote one more B-tree page per commit: measured 17-30 %
-- more durable opens and clicks per second without it (docs/benchmarks.md).
-- Deliveries are far fewer than events and a recipient has few of them, so
-- the lookup stays cheap.
DROP INDEX IF EXISTS events_recipient;
