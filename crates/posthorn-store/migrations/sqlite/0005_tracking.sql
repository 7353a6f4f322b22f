-- The original URLs of a message's tracked links, by index. A click token
-- names (delivery, index); the URL lives here, never in the link itself.
-- Written by the delivery worker before the first copy leaves.
CREATE TABLE message_links (
    message_id TEXT NOT NULL REFERENCES messages(id),
    position   INTEGER NOT NULL,
    url        TEXT NOT NULL,
    PRIMARY KEY (message_id, position)
) WITHOUT ROWID;

-- A tenant's default for open and click tracking; NULL: the server's.
ALTER TABLE tenants ADD COLUMN track_opens INTEGER;
ALTER TABLE tenants ADD COLUMN track_clicks INTEGER;
