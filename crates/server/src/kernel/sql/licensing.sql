-- seatkeeper schema, version 2: the licensing model and the licenses it decides.

-- Set to a new random value by every change to a tenant's model (subscriptions, rules, the
-- products it buys), so a node can keep the parsed model in memory and know, under the tenant's lock, whether
-- it is still current.
ALTER TABLE audit_heads ADD COLUMN model_version BIGINT NOT NULL DEFAULT 0;

-- The product catalogue (global: the vendor's products). Plans are kept as one JSON list
-- [{key, rank, features, limits}], read and written whole.
CREATE TABLE lic_products (
    key {TEXT} PRIMARY KEY,
    name {TEXT} NOT NULL,
    plans {JSON} NOT NULL,
    updated {TEXT} NOT NULL
);

-- A tenant's purchase of one product. next_check is the next instant at which the term
-- changes what the subscription grants (start, end, end of grace): the scheduler's index.
CREATE TABLE lic_subscriptions (
    tenant_id {TEXT} NOT NULL REFERENCES tenants(id),
    product {TEXT} NOT NULL,
    plan {TEXT} NOT NULL,
    seats BIGINT NOT NULL,
    starts_at {TEXT} NOT NULL,
    ends_at {TEXT},
    status {TEXT} NOT NULL,
    grace_days BIGINT NOT NULL,
    on_expiry {TEXT} NOT NULL,
    enforcement {TEXT} NOT NULL,
    next_check {TEXT},
    updated {TEXT} NOT NULL,
    PRIMARY KEY (tenant_id, product)
);
CREATE INDEX lic_subscriptions_next_check ON lic_subscriptions (next_check);

-- Assignment rules: a SCIM filter over the user, a target plan, a priority.
CREATE TABLE lic_rules (
    tenant_id {TEXT} NOT NULL REFERENCES tenants(id),
    name {TEXT} NOT NULL,
    filter {TEXT} NOT NULL,
    product {TEXT} NOT NULL,
    plan {TEXT} NOT NULL,
    priority BIGINT NOT NULL,
    updated {TEXT} NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

-- One row per user and product the user should hold. state is active (holds a seat) or
-- waitlisted. queue orders the seat line: when the seat was assigned, or when waiting began;
-- a demoted holder keeps its value and so is first to get a seat back. explain is the chain
-- that says why (rule, subscription, seat count, the event that changed it).
CREATE TABLE licenses (
    tenant_id {TEXT} NOT NULL,
    user_id {TEXT} NOT NULL,
    product {TEXT} NOT NULL,
    plan {TEXT} NOT NULL,
    state {TEXT} NOT NULL,
    queue BIGINT NOT NULL,
    changed {TEXT} NOT NULL,
    reason {TEXT} NOT NULL,
    explain {JSON} NOT NULL,
    PRIMARY KEY (tenant_id, user_id, product)
) {WITHOUT_ROWID};
CREATE INDEX licenses_line ON licenses (tenant_id, product, state, queue, user_id);

-- Each product line's counts and next queue position, kept by the transaction that changes
-- licenses, so a seat decision reads one row instead of counting the line.
CREATE TABLE lic_lines (
    tenant_id {TEXT} NOT NULL,
    product {TEXT} NOT NULL,
    active BIGINT NOT NULL,
    waiting BIGINT NOT NULL,
    next_queue BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, product)
) {WITHOUT_ROWID};

-- A user's license history without scanning the tenant's chain (only license records are
-- indexed: the other writes pay nothing for it).
CREATE INDEX audit_log_license ON audit_log (tenant_id, resource_id) WHERE resource_type = 'License';
