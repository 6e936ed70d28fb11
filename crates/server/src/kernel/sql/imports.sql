-- seatkeeper schema, version 17: seat imports (issue 13). An imported row whose user is not in
-- the directory yet is a pending claim, honoured when SCIM creates a matching user (userName,
-- an email or externalId, any case); user_ref_lc is the row's user reference in lower case.
CREATE TABLE lic_claims (
    tenant_id {TEXT} NOT NULL REFERENCES tenants(id),
    user_ref_lc {TEXT} NOT NULL,
    product {TEXT} NOT NULL,
    plan {TEXT} NOT NULL,
    assigned_at {TEXT} NOT NULL,
    created {TEXT} NOT NULL,
    PRIMARY KEY (tenant_id, user_ref_lc, product)
)
