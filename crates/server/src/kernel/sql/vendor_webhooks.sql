-- seatkeeper schema, version 12: vendor-wide webhook endpoints (issue 12).
-- A vendor endpoint is a webhooks row whose tenant_id is 'vendor' (no tenant can take that
-- name: tenant ids are UUIDs), so the table loses its reference to tenants; SQLite cannot
-- drop a constraint, so the table is rebuilt on both dialects. A vendor endpoint walks the
-- vendor feed, whose positions are (tx, id): cursor_tx joins cursor (0 for tenant endpoints,
-- whose cursor is the tenant's last outbox id).
CREATE TABLE webhooks_v12 (
    tenant_id {TEXT} NOT NULL,
    id {TEXT} NOT NULL,
    url {TEXT} NOT NULL,
    events {JSON} NOT NULL,
    secret {TEXT} NOT NULL,
    created {TEXT} NOT NULL,
    cursor BIGINT NOT NULL,
    disabled {TEXT},
    cursor_tx BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, id)
);
INSERT INTO webhooks_v12 (tenant_id, id, url, events, secret, created, cursor, disabled)
    SELECT tenant_id, id, url, events, secret, created, cursor, disabled FROM webhooks;
DROP TABLE webhooks;
ALTER TABLE webhooks_v12 RENAME TO webhooks
