-- Sending domains belong to tenants. A tenant's mail is DKIM-signed only
-- with keys of its own domains, and no tenant may send as a domain (or a
-- subdomain of one) that another tenant owns. Claims never overlap between
-- tenants (checked in the claiming transaction), so the domain alone is the
-- key: one domain, one owner.
CREATE TABLE sending_domains (
    domain     TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX sending_domains_tenant ON sending_domains (tenant_id, domain);
