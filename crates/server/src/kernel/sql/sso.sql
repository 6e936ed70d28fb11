-- seatkeeper schema, version 20: OIDC sign-in with just-in-time provisioning (issue 14).
-- One OIDC connection per tenant (JSON: issuer, jwks_uri, audiences, claims, provisioning).
CREATE TABLE sso_connections (
    tenant_id {TEXT} PRIMARY KEY REFERENCES tenants(id),
    config {JSON} NOT NULL,
    updated {TEXT} NOT NULL
);

-- Users and groups that sign-in created (JIT-managed): only these does sign-in change later.
-- Everything else belongs to SCIM, the source of truth.
CREATE TABLE sso_managed (
    tenant_id {TEXT} NOT NULL,
    kind {TEXT} NOT NULL,
    resource_id {TEXT} NOT NULL,
    created {TEXT} NOT NULL,
    PRIMARY KEY (tenant_id, kind, resource_id)
) {WITHOUT_ROWID};

-- Each user's sign-ins: how many, and the last.
CREATE TABLE sso_logins (
    tenant_id {TEXT} NOT NULL,
    user_id {TEXT} NOT NULL,
    logins BIGINT NOT NULL,
    last_login {TEXT} NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
) {WITHOUT_ROWID}
;

-- Sign-in finds users by email: the index by value carries the user's id, so it covers the
-- lookup (without it, SQLite walks the tenant's covering primary key instead).
DROP INDEX scim_user_emails_value;
CREATE INDEX scim_user_emails_value ON scim_user_emails (tenant_id, value_lc, user_id)
