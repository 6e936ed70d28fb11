-- seatkeeper schema, version 3: billing events in, webhooks out.

-- Every billing or CRM event received, by source and the sender's event id: the record
-- that makes a redelivery change nothing. outcome is applied, stale (older than the last
-- applied event of its subscription: recorded, ignored) or rejected (nothing applied; a
-- later delivery of the same id is processed again).
CREATE TABLE billing_events (
    source {TEXT} NOT NULL,
    event_id {TEXT} NOT NULL,
    tenant_id {TEXT} NOT NULL,
    product {TEXT} NOT NULL,
    event_type {TEXT} NOT NULL,
    created_at {TEXT} NOT NULL,
    received {TEXT} NOT NULL,
    outcome {TEXT} NOT NULL,
    detail {TEXT} NOT NULL,
    PRIMARY KEY (source, event_id)
);
CREATE INDEX billing_events_tenant ON billing_events (tenant_id, received);

-- The newest billing event applied to each subscription: an older one arriving late is
-- recorded and ignored.
ALTER TABLE lic_subscriptions ADD COLUMN billing_at {TEXT};
ALTER TABLE lic_subscriptions ADD COLUMN billing_event {TEXT};
-- The ends_at for which subscription.expiring was sent (sent once per term end).
ALTER TABLE lic_subscriptions ADD COLUMN expiring_sent {TEXT};

-- Stripe price (or product) ids mapped to a product and plan of the catalogue.
CREATE TABLE billing_stripe_prices (
    price {TEXT} PRIMARY KEY,
    product {TEXT} NOT NULL,
    plan {TEXT} NOT NULL
);
-- Stripe customers mapped to tenants (when the subscription carries no
-- metadata.seatkeeper_tenant).
CREATE TABLE billing_stripe_customers (
    customer {TEXT} PRIMARY KEY,
    tenant_id {TEXT} NOT NULL REFERENCES tenants(id)
);

-- Webhook endpoints of a tenant. events is a JSON list of event types ("license.*" and "*"
-- match by prefix); the secret signs deliveries (Standard Webhooks) and is shown once.
-- cursor is the last outbox id fanned out to this endpoint: a tenant's outbox ids grow in
-- commit order (every outbox write holds the tenant's lock), so nothing is skipped.
CREATE TABLE webhooks (
    tenant_id {TEXT} NOT NULL REFERENCES tenants(id),
    id {TEXT} NOT NULL,
    url {TEXT} NOT NULL,
    events {JSON} NOT NULL,
    secret {TEXT} NOT NULL,
    created {TEXT} NOT NULL,
    cursor BIGINT NOT NULL,
    disabled {TEXT},
    PRIMARY KEY (tenant_id, id)
);

-- One event to one endpoint. state: pending (due at next_attempt), delivered, dead (gave
-- up after the last attempt). lease_until keeps a delivery claimed by one node while it is
-- in flight. order_key (the user, group or subscription the event is about) keeps one
-- resource's events in order per endpoint.
CREATE TABLE deliveries (
    id {ID_PK},
    tenant_id {TEXT} NOT NULL,
    webhook_id {TEXT} NOT NULL,
    event_id BIGINT NOT NULL,
    order_key {TEXT} NOT NULL,
    state {TEXT} NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt BIGINT NOT NULL,
    lease_until BIGINT NOT NULL,
    last_status BIGINT,
    last_error {TEXT},
    created {TEXT} NOT NULL,
    updated {TEXT} NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (state, next_attempt);
CREATE INDEX deliveries_webhook ON deliveries (tenant_id, webhook_id, id);
CREATE INDEX deliveries_order ON deliveries (webhook_id, order_key, id);

-- Where a tenant's audit chain now begins after pruning: the last pruned record's seq and
-- hash, signed (Ed25519) with the server's audit key, so the remaining chain still verifies
-- from a point nobody can move without the key.
CREATE TABLE audit_checkpoints (
    tenant_id {TEXT} PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash {TEXT} NOT NULL,
    at {TEXT} NOT NULL,
    pruned {TEXT} NOT NULL,
    signature {TEXT} NOT NULL
);
