-- seatkeeper schema, version 19: roles and permissions (issue 14).
-- Each product's roles (JSON: [{"key", "permissions", "requires_license"}]).
ALTER TABLE lic_products ADD COLUMN roles {TEXT} NOT NULL DEFAULT '[]';

-- A tenant's role rules: a SCIM filter over the user gives it a role of a product.
CREATE TABLE lic_role_rules (
    tenant_id {TEXT} NOT NULL REFERENCES tenants(id),
    name {TEXT} NOT NULL,
    filter {TEXT} NOT NULL,
    product {TEXT} NOT NULL,
    role {TEXT} NOT NULL,
    updated {TEXT} NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

-- The roles each user is given, with what gave it (a rule's name, or 'scim'). Whether a role
-- counts (an active license of its product) is decided when it is asked about.
CREATE TABLE user_roles (
    tenant_id {TEXT} NOT NULL,
    user_id {TEXT} NOT NULL,
    product {TEXT} NOT NULL,
    role {TEXT} NOT NULL,
    source {TEXT} NOT NULL,
    granted {TEXT} NOT NULL,
    PRIMARY KEY (tenant_id, user_id, product, role)
) {WITHOUT_ROWID}
