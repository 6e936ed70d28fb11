-- seatkeeper schema, version 21: the customer admin portal (issue 14). A link is single-use:
-- only its SHA-256 is stored, and opening it (used_at set) starts a session of the tenant's
-- IT admin, which reaches that tenant alone and only the link's capabilities.
CREATE TABLE portal_links (
    token_hash {TEXT} PRIMARY KEY,
    tenant_id {TEXT} NOT NULL REFERENCES tenants(id),
    capabilities {TEXT} NOT NULL,
    created {TEXT} NOT NULL,
    created_by {TEXT} NOT NULL,
    expires_at {TEXT} NOT NULL,
    used_at {TEXT}
);

CREATE TABLE portal_sessions (
    id_hash {TEXT} PRIMARY KEY,
    tenant_id {TEXT} NOT NULL REFERENCES tenants(id),
    capabilities {TEXT} NOT NULL,
    csrf {TEXT} NOT NULL,
    created {TEXT} NOT NULL,
    expires {TEXT} NOT NULL
)
