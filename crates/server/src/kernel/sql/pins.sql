-- seatkeeper schema, version 14: pins (issue 13), an administrator's direct assignment of one
-- user's plan of a product over the rules; plan NULL excludes the user from the product.
-- A pin past expires_at no longer applies (the scheduler removes it and re-decides).
CREATE TABLE lic_pins (
    tenant_id {TEXT} NOT NULL REFERENCES tenants(id),
    user_id {TEXT} NOT NULL,
    product {TEXT} NOT NULL,
    plan {TEXT},
    reason {TEXT} NOT NULL,
    pinned_by {TEXT} NOT NULL,
    created {TEXT} NOT NULL,
    expires_at {TEXT},
    PRIMARY KEY (tenant_id, user_id, product)
);
CREATE INDEX lic_pins_expiry ON lic_pins (expires_at)
