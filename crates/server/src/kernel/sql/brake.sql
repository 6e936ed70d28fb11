-- seatkeeper schema, version 15: the mass-deprovision brake (issue 13).
-- tenants.settings holds per-tenant settings as JSON ({"deprovision_brake": {...} | null};
-- absent means the defaults). brake_since is when an operator last decided on held users:
-- deprovisions before it no longer count towards the brake.
ALTER TABLE tenants ADD COLUMN settings {JSON} NOT NULL DEFAULT '{}';
ALTER TABLE tenants ADD COLUMN brake_since {TEXT};
-- Deprovisions applied (seats freed), counted over the brake's window.
CREATE TABLE lic_deprovisions (
    tenant_id {TEXT} NOT NULL,
    at {TEXT} NOT NULL,
    user_id {TEXT} NOT NULL
);
CREATE INDEX lic_deprovisions_at ON lic_deprovisions (tenant_id, at);
-- Users whose deprovision the brake holds: their licenses (and seats) stay until an operator
-- approves (released) or the identity provider sends them back. state: pending (awaiting a
-- decision) or reserved (rejected: kept until they come back). gone: deactivated or deleted.
CREATE TABLE lic_held (
    tenant_id {TEXT} NOT NULL,
    user_id {TEXT} NOT NULL,
    user_name {TEXT} NOT NULL,
    user_name_lc {TEXT} NOT NULL,
    external_id {TEXT},
    gone {TEXT} NOT NULL,
    state {TEXT} NOT NULL,
    since {TEXT} NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
)
