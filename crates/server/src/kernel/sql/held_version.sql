-- seatkeeper schema, version 23: the users the deprovision brake holds get a version of their
-- own. A hold or a release moves held_version, not model_version: decisions see the new held
-- set (a tenant's cached licensing model is keyed by both), while entitlement snapshots,
-- which read only model_version, stay loaded (a held user's licenses do not change).
ALTER TABLE audit_heads ADD COLUMN held_version BIGINT NOT NULL DEFAULT 0;
