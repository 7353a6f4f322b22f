-- Delivery: the To and Cc headers as submitted (display names kept), so
-- each per-recipient copy can show them; and an index for claiming due work.
ALTER TABLE messages ADD COLUMN to_header TEXT;
ALTER TABLE messages ADD COLUMN cc_header TEXT;
CREATE INDEX send_queue_lease ON send_queue (lease_until);
