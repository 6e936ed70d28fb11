-- seatkeeper schema, version 1. Written once for both backends; {TEXT}, {ID_PK} and {JSON}
-- are filled in per dialect (PostgreSQL text columns use the "C" collation so that text
-- ordering matches SQLite's and the filter engine's byte order).

CREATE TABLE settings (
    key {TEXT} PRIMARY KEY,
    value {TEXT} NOT NULL
);

CREATE TABLE tenants (
    id {TEXT} PRIMARY KEY,
    name {TEXT} NOT NULL,
    created {TEXT} NOT NULL
);

CREATE TABLE scim_tokens (
    id {TEXT} PRIMARY KEY,
    tenant_id {TEXT} NOT NULL REFERENCES tenants(id),
    name {TEXT} NOT NULL,
    token_hash {TEXT} NOT NULL UNIQUE,
    created {TEXT} NOT NULL,
    revoked {TEXT}
);
CREATE INDEX scim_tokens_tenant ON scim_tokens (tenant_id);

CREATE TABLE scim_users (
    tenant_id {TEXT} NOT NULL REFERENCES tenants(id),
    id {TEXT} NOT NULL,
    user_name {TEXT} NOT NULL,
    user_name_lc {TEXT} NOT NULL,
    external_id {TEXT},
    display_name {TEXT},
    display_name_lc {TEXT},
    active BIGINT NOT NULL,
    created {TEXT} NOT NULL,
    last_modified {TEXT} NOT NULL,
    version BIGINT NOT NULL,
    doc {JSON} NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX scim_users_user_name ON scim_users (tenant_id, user_name_lc);
CREATE INDEX scim_users_external_id ON scim_users (tenant_id, external_id);
CREATE INDEX scim_users_display_name ON scim_users (tenant_id, display_name_lc);
CREATE INDEX scim_users_last_modified ON scim_users (tenant_id, last_modified);
CREATE INDEX scim_users_active ON scim_users (tenant_id, active);

CREATE TABLE scim_user_emails (
    tenant_id {TEXT} NOT NULL,
    user_id {TEXT} NOT NULL,
    value_lc {TEXT} NOT NULL,
    PRIMARY KEY (tenant_id, user_id, value_lc)
);
CREATE INDEX scim_user_emails_value ON scim_user_emails (tenant_id, value_lc);

CREATE TABLE scim_groups (
    tenant_id {TEXT} NOT NULL REFERENCES tenants(id),
    id {TEXT} NOT NULL,
    display_name {TEXT} NOT NULL,
    display_name_lc {TEXT} NOT NULL,
    external_id {TEXT},
    created {TEXT} NOT NULL,
    last_modified {TEXT} NOT NULL,
    version BIGINT NOT NULL,
    doc {JSON} NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX scim_groups_display_name ON scim_groups (tenant_id, display_name_lc);
CREATE INDEX scim_groups_external_id ON scim_groups (tenant_id, external_id);
CREATE INDEX scim_groups_last_modified ON scim_groups (tenant_id, last_modified);

CREATE TABLE scim_group_members (
    tenant_id {TEXT} NOT NULL,
    group_id {TEXT} NOT NULL,
    member_id {TEXT} NOT NULL,
    member_type {TEXT} NOT NULL,
    PRIMARY KEY (tenant_id, group_id, member_id)
);
CREATE INDEX scim_group_members_member ON scim_group_members (tenant_id, member_id);

-- How many users and groups each tenant holds, kept in the writing transaction, so an
-- unfiltered list knows its total without counting.
CREATE TABLE resource_counts (
    tenant_id {TEXT} NOT NULL,
    kind {TEXT} NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, kind)
);

-- Append-only, hash-chained per tenant. audit_heads holds each chain's tip; updating it in
-- the writing transaction serialises a tenant's writers, so the chain never forks.
CREATE TABLE audit_log (
    tenant_id {TEXT} NOT NULL,
    seq BIGINT NOT NULL,
    at {TEXT} NOT NULL,
    actor {TEXT} NOT NULL,
    action {TEXT} NOT NULL,
    resource_type {TEXT} NOT NULL,
    resource_id {TEXT} NOT NULL,
    request_id {TEXT} NOT NULL,
    before_doc {JSON},
    after_doc {JSON},
    prev_hash {TEXT} NOT NULL,
    hash {TEXT} NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);
CREATE TABLE audit_heads (
    tenant_id {TEXT} PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash {TEXT} NOT NULL
);

-- Events for the outside world, written in the same transaction as the change.
CREATE TABLE outbox (
    id {ID_PK},
    tenant_id {TEXT} NOT NULL,
    event_type {TEXT} NOT NULL,
    resource_type {TEXT} NOT NULL,
    resource_id {TEXT} NOT NULL,
    payload {JSON} NOT NULL,
    created {TEXT} NOT NULL
);
CREATE INDEX outbox_tenant ON outbox (tenant_id, id);
