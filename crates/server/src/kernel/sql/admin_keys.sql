-- seatkeeper schema, version 18: scoped admin keys (issue 14). Stored as SHA-256 hashes in a
-- table of their own, like every credential. scopes: names separated by spaces. tenant_id
-- NULL: the key reaches every tenant; else only that one.
CREATE TABLE admin_keys (
    id {TEXT} PRIMARY KEY,
    name {TEXT} NOT NULL,
    token_hash {TEXT} NOT NULL UNIQUE,
    scopes {TEXT} NOT NULL,
    tenant_id {TEXT} REFERENCES tenants(id),
    created {TEXT} NOT NULL,
    created_by {TEXT} NOT NULL,
    revoked {TEXT}
)
