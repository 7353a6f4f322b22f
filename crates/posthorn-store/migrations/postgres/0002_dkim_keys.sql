-- Posthorn schema on PostgreSQL, version 2: DKIM private keys in the
-- database, so that every node sharing it signs with the same keys
-- (issue #14, point 5; docs/decisions.md, "DKIM keys on PostgreSQL").
-- On SQLite the keys stay files in the data directory.
--
-- A row is one key as `posthorn domains add` or `POST /v1/domains` made
-- it (or as it was imported from a node's data directory): the domain
-- (ASCII, lower case) and selector (one DNS label, lower case) it signs
-- as, the RSA private key as PKCS#8 PEM text, and when it was made (epoch
-- milliseconds; the newest key of a domain signs). A key is never
-- replaced: its record may be published.
--
-- These are private keys: whoever can read this table (the role Posthorn
-- connects as, superusers, and every backup or replica of the database)
-- can sign mail as these domains. Nothing grants it to anyone else.

CREATE TABLE dkim_keys (
    domain          text COLLATE "C" NOT NULL,
    selector        text COLLATE "C" NOT NULL,
    private_key_pem text NOT NULL,
    created_at      bigint NOT NULL,
    PRIMARY KEY (domain, selector)
);

-- A counter that every change of `dkim_keys` raises in the changing
-- transaction (a trigger, so a row changed by hand counts too). Nodes read
-- it every few seconds and reload their keys when it moved: one row, one
-- cheap read, and a change is seen only once it has committed (a counter
-- raised before the commit, as a sequence is, could be read, and the keys
-- loaded, before the new row is visible).
CREATE TABLE dkim_keys_version (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    version bigint NOT NULL
);
INSERT INTO dkim_keys_version (one, version) VALUES (true, 0);

CREATE FUNCTION posthorn_dkim_keys_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE dkim_keys_version SET version = version + 1;
    RETURN NULL;
END
$$;

-- Per row, so that an insert that inserted nothing (ON CONFLICT DO
-- NOTHING) or a delete that found nothing changes no version; TRUNCATE
-- has no rows and fires per statement.
CREATE TRIGGER dkim_keys_changed AFTER INSERT OR UPDATE OR DELETE ON dkim_keys
    FOR EACH ROW EXECUTE FUNCTION posthorn_dkim_keys_changed();
CREATE TRIGGER dkim_keys_truncated AFTER TRUNCATE ON dkim_keys
    FOR EACH STATEMENT EXECUTE FUNCTION posthorn_dkim_keys_changed();
