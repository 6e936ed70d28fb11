-- Application credentials, activity and token signing keys (issue 5).
--
-- App keys: read-only, scoped to entitlement checks and tokens; stored as SHA-256 hashes like
-- SCIM tokens, in a table of their own, so one kind can never be taken for the other.
CREATE TABLE app_keys (
    id {TEXT} PRIMARY KEY,
    tenant_id {TEXT} NOT NULL REFERENCES tenants(id),
    name {TEXT} NOT NULL,
    token_hash {TEXT} NOT NULL UNIQUE,
    created {TEXT} NOT NULL,
    revoked {TEXT}
);
CREATE INDEX app_keys_tenant ON app_keys (tenant_id);

-- When an application last asked about a user (checks and tokens), written in batches.
CREATE TABLE user_activity (
    tenant_id {TEXT} NOT NULL,
    user_id {TEXT} NOT NULL,
    last_seen {TEXT} NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
) {WITHOUT_ROWID};

-- Keys that sign entitlement tokens (Ed25519 seeds). A retired key stays published in the
-- JWKS until every token it signed has expired (published_until).
CREATE TABLE signing_keys (
    kid {TEXT} PRIMARY KEY,
    seed {TEXT} NOT NULL,
    created {TEXT} NOT NULL,
    retired {TEXT},
    published_until {TEXT}
);
