//! The OpenAPI 3.1 document of the admin and application API, served at
//! `/api/v1/openapi.json`. Operations are one table below; a test reads the router's source
//! and fails when a route has no entry (or an entry no route).

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

use crate::apps::http::MAX_BATCH_CHECKS;
use crate::kernel::catalogue::{self, EventType};
use crate::kernel::scopes::{self, Scope};
use crate::state::Shared;
use axum::http::Method;

/// Who may call an operation.
#[derive(Clone, Copy)]
enum Auth {
    Admin,
    App,
    /// Signed by the billing system (Standard Webhooks or Stripe-Signature).
    Signed,
    Public,
}

/// One operation: method, path (under `/api/v1` unless it starts with `/.`), who may call
/// it, what it does, the request body schema (a component name) and the success response
/// (status, component name or "").
struct Op {
    method: &'static str,
    path: &'static str,
    auth: Auth,
    summary: &'static str,
    body: Option<&'static str>,
    ok: (u16, &'static str),
}

const fn op(
    method: &'static str,
    path: &'static str,
    auth: Auth,
    summary: &'static str,
    body: Option<&'static str>,
    ok: (u16, &'static str),
) -> Op {
    Op {
        method,
        path,
        auth,
        summary,
        body,
        ok,
    }
}

use Auth::{Admin, App, Public, Signed};

const OPS: &[Op] = &[
    // Tenants and SCIM tokens.
    op(
        "post",
        "/tenants",
        Admin,
        "Create a tenant",
        Some("Named"),
        (201, "Tenant"),
    ),
    op("get", "/tenants", Admin, "List tenants", None, (200, "")),
    op(
        "get",
        "/tenants/{id}",
        Admin,
        "Get a tenant",
        None,
        (200, "Tenant"),
    ),
    op(
        "patch",
        "/tenants/{id}",
        Admin,
        "Rename a tenant",
        Some("Named"),
        (200, "Tenant"),
    ),
    op(
        "delete",
        "/tenants/{id}",
        Admin,
        "Delete a tenant and everything it holds (?force=true while it holds licenses)",
        None,
        (200, ""),
    ),
    op(
        "post",
        "/tenants/{id}/scim-tokens",
        Admin,
        "Create a SCIM token (shown once)",
        Some("Named"),
        (201, "CreatedCredential"),
    ),
    op(
        "delete",
        "/tenants/{id}/scim-tokens/{token_id}",
        Admin,
        "Revoke a SCIM token",
        None,
        (204, ""),
    ),
    // Licensing.
    op(
        "get",
        "/tenants/{id}/subscriptions",
        Admin,
        "List a tenant's subscriptions",
        None,
        (200, ""),
    ),
    op(
        "put",
        "/tenants/{id}/subscriptions/{product}",
        Admin,
        "Create or replace a subscription; re-decides every license (?force=true over billing)",
        Some("Subscription"),
        (200, ""),
    ),
    op(
        "post",
        "/tenants/{id}/import",
        Admin,
        "Import seat holders (CSV or JSON lines: user, product, plan, assigned_at; ?dry_run=true)",
        None,
        (200, ""),
    ),
    op(
        "post",
        "/tenants/{id}/reconcile",
        Admin,
        "The application's view (user, product[, plan]) against the licenses (?format=csv)",
        None,
        (200, ""),
    ),
    op(
        "get",
        "/tenants/{id}/claims",
        Admin,
        "An import's pending claims (users not in the directory yet)",
        None,
        (200, ""),
    ),
    op(
        "get",
        "/tenants/{id}/settings",
        Admin,
        "A tenant's settings (the deprovision brake)",
        None,
        (200, ""),
    ),
    op(
        "put",
        "/tenants/{id}/settings",
        Admin,
        "Change a tenant's settings: {\"deprovision_brake\": {percent, min_users, window_minutes} | null}",
        None,
        (200, ""),
    ),
    op(
        "get",
        "/tenants/{id}/held",
        Admin,
        "Users whose seats the deprovision brake holds",
        None,
        (200, ""),
    ),
    op(
        "post",
        "/tenants/{id}/held/approve",
        Admin,
        "Release the held users' seats (waiters are promoted)",
        None,
        (200, ""),
    ),
    op(
        "post",
        "/tenants/{id}/held/reject",
        Admin,
        "Keep the held users' seats reserved until the identity provider sends them back",
        None,
        (200, ""),
    ),
    op(
        "get",
        "/tenants/{id}/pins",
        Admin,
        "A tenant's pins (direct assignments over the rules)",
        None,
        (200, ""),
    ),
    op(
        "put",
        "/tenants/{id}/users/{user_id}/pins/{product}",
        Admin,
        "Pin a user's plan of a product (plan null: exclude them), with a reason and an optional expiry",
        None,
        (200, ""),
    ),
    op(
        "delete",
        "/tenants/{id}/users/{user_id}/pins/{product}",
        Admin,
        "Remove a pin: the rules decide again",
        None,
        (200, ""),
    ),
    op(
        "patch",
        "/tenants/{id}/subscriptions/{product}",
        Admin,
        "Change some fields of a subscription (merged like billing events; ?force=true over billing)",
        None,
        (200, ""),
    ),
    op(
        "delete",
        "/tenants/{id}/subscriptions/{product}",
        Admin,
        "Remove a subscription; its licenses are revoked",
        None,
        (200, ""),
    ),
    op(
        "get",
        "/tenants/{id}/rules",
        Admin,
        "List assignment rules",
        None,
        (200, ""),
    ),
    op(
        "put",
        "/tenants/{id}/rules/{name}",
        Admin,
        "Create or change an assignment rule",
        Some("Rule"),
        (200, ""),
    ),
    op(
        "delete",
        "/tenants/{id}/rules/{name}",
        Admin,
        "Remove an assignment rule",
        None,
        (200, ""),
    ),
    op(
        "get",
        "/tenants/{id}/usage",
        Admin,
        "Seats, active, waitlisted, overage and status per subscription",
        None,
        (200, ""),
    ),
    op(
        "get",
        "/tenants/{id}/idle",
        Admin,
        "Idle licenses (?product=P&limit=N): held seats whose user has shown no activity for the subscription's idle_after_days — user, userName, product, plan, last_seen, held_since",
        None,
        (200, ""),
    ),
    op(
        "get",
        "/tenants/{id}/usage/history",
        Admin,
        "A subscription's seat counts over time (?product=P&from=&to=&step=hour|day&format=json|csv): {points: [{at, seats, active, waitlisted, overage, idle}]}, each bucket the counts at its end",
        None,
        (200, ""),
    ),
    op(
        "get",
        "/usage",
        Admin,
        "Every tenant's subscriptions with their usage, idle seats, utilisation and oldest waiter (?sort=name|utilisation|overage|waitlisted|idle|ends_at&order=asc|desc&limit&cursor&format=json|csv)",
        None,
        (200, ""),
    ),
    op(
        "get",
        "/reports/compliance",
        Admin,
        "Compliance findings (?tenant=ID&format=json|csv), signed: Seatkeeper-Signature is the Ed25519 signature of the body's bytes by the key `seatkeeper audit public-key` prints (also in Seatkeeper-Signature-Key)",
        None,
        (200, ""),
    ),
    op(
        "get",
        "/tenants/{id}/users/{user_id}/licenses",
        Admin,
        "A user's licenses with their explanation chains, history and last_seen",
        None,
        (200, ""),
    ),
    op(
        "put",
        "/model",
        Admin,
        "Apply a licensing model (?dry_run=true prints the plan only)",
        Some("Model"),
        (200, ""),
    ),
    op(
        "get",
        "/model",
        Admin,
        "The licensing model as stored",
        None,
        (200, "Model"),
    ),
    op(
        "post",
        "/scheduler/run",
        Admin,
        "Run due term transitions now",
        None,
        (200, ""),
    ),
    op(
        "get",
        "/limits",
        Public,
        "The limits this server enforces (body, attribute, resource and page sizes, rates)",
        None,
        (200, ""),
    ),
    op(
        "post",
        "/clock",
        Admin,
        "Move the test clock (servers started with --test-clock only)",
        None,
        (200, ""),
    ),
    // Billing in.
    op(
        "post",
        "/billing/events",
        Signed,
        "A billing event (Standard Webhooks signature)",
        Some("BillingEvent"),
        (200, ""),
    ),
    op(
        "post",
        "/billing/stripe",
        Signed,
        "A Stripe event (Stripe-Signature)",
        None,
        (200, ""),
    ),
    op(
        "post",
        "/billing/secret",
        Admin,
        "Rotate the billing secret (the old one stays valid 24 h)",
        None,
        (200, ""),
    ),
    op(
        "put",
        "/billing/secret",
        Admin,
        "Set the billing secret",
        None,
        (200, ""),
    ),
    op(
        "put",
        "/billing/stripe/secret",
        Admin,
        "Set the Stripe signing secret",
        None,
        (200, ""),
    ),
    op(
        "put",
        "/billing/stripe/prices/{price}",
        Admin,
        "Map a Stripe price or product to a catalogue plan",
        None,
        (200, ""),
    ),
    op(
        "delete",
        "/billing/stripe/prices/{price}",
        Admin,
        "Remove a Stripe price mapping",
        None,
        (204, ""),
    ),
    op(
        "put",
        "/billing/stripe/customers/{customer}",
        Admin,
        "Map a Stripe customer to a tenant",
        None,
        (200, ""),
    ),
    op(
        "delete",
        "/billing/stripe/customers/{customer}",
        Admin,
        "Remove a Stripe customer mapping",
        None,
        (204, ""),
    ),
    op(
        "get",
        "/tenants/{id}/billing/events",
        Admin,
        "The billing events received for a tenant",
        None,
        (200, ""),
    ),
    // Events out.
    op(
        "post",
        "/tenants/{id}/webhooks",
        Admin,
        "Register a webhook endpoint (its secret is shown once)",
        Some("Webhook"),
        (201, ""),
    ),
    op(
        "get",
        "/tenants/{id}/webhooks",
        Admin,
        "List webhook endpoints",
        None,
        (200, ""),
    ),
    op(
        "get",
        "/tenants/{id}/webhooks/{wid}",
        Admin,
        "Get a webhook endpoint",
        None,
        (200, ""),
    ),
    op(
        "delete",
        "/tenants/{id}/webhooks/{wid}",
        Admin,
        "Disable a webhook endpoint",
        None,
        (204, ""),
    ),
    op(
        "get",
        "/tenants/{id}/webhooks/{wid}/deliveries",
        Admin,
        "The delivery log (?state=, paging)",
        None,
        (200, ""),
    ),
    op(
        "post",
        "/tenants/{id}/webhooks/{wid}/deliveries/{did}/replay",
        Admin,
        "Send one delivery again",
        None,
        (200, ""),
    ),
    op(
        "post",
        "/tenants/{id}/webhooks/{wid}/replay",
        Admin,
        "Send a time range of events again",
        None,
        (200, ""),
    ),
    op(
        "post",
        "/webhooks",
        Admin,
        "Register a vendor-wide webhook endpoint: every tenant's events (its secret is shown once)",
        Some("Webhook"),
        (201, ""),
    ),
    op(
        "get",
        "/webhooks",
        Admin,
        "List vendor-wide webhook endpoints",
        None,
        (200, ""),
    ),
    op(
        "get",
        "/webhooks/{wid}",
        Admin,
        "Get a vendor-wide webhook endpoint",
        None,
        (200, ""),
    ),
    op(
        "delete",
        "/webhooks/{wid}",
        Admin,
        "Disable a vendor-wide webhook endpoint",
        None,
        (204, ""),
    ),
    op(
        "get",
        "/webhooks/{wid}/deliveries",
        Admin,
        "A vendor-wide endpoint's delivery log (?state=, paging; each names its tenant)",
        None,
        (200, ""),
    ),
    op(
        "post",
        "/webhooks/{wid}/deliveries/{did}/replay",
        Admin,
        "Send one delivery of a vendor-wide endpoint again",
        None,
        (200, ""),
    ),
    op(
        "post",
        "/webhooks/{wid}/replay",
        Admin,
        "Send a time range of a vendor-wide endpoint's events again",
        None,
        (200, ""),
    ),
    op(
        "get",
        "/tenants/{id}/events",
        Admin,
        "A tenant's event feed (?after=&limit=)",
        None,
        (200, ""),
    ),
    op(
        "get",
        "/events",
        Admin,
        "The event feed (?tenant=&after=&limit=)",
        None,
        (200, ""),
    ),
    op(
        "get",
        "/events/stream",
        Admin,
        "Events as server-sent events (Last-Event-ID resumes)",
        None,
        (200, ""),
    ),
    op(
        "get",
        "/tenants/{id}/audit",
        Admin,
        "Audit records (filters; JSON, JSON Lines or CSV)",
        None,
        (200, ""),
    ),
    op(
        "get",
        "/audit",
        Admin,
        "The vendor audit chain: billing secrets, Stripe mappings, signing keys (filters as for a tenant)",
        None,
        (200, ""),
    ),
    // Applications.
    op(
        "post",
        "/activity",
        App,
        "Report users as active (1 to 10,000 a call): not idle, and reclaimed seats come back",
        None,
        (200, ""),
    ),
    op(
        "post",
        "/check",
        App,
        "May a user use a feature, or what is their limit? One check or a batch",
        Some("CheckRequest"),
        (200, "CheckResponse"),
    ),
    op(
        "get",
        "/users/{user}/entitlements",
        App,
        "A user's whole effective set",
        None,
        (200, "Entitlements"),
    ),
    op(
        "post",
        "/tokens/entitlements",
        App,
        "A signed entitlement token (JWT, EdDSA)",
        Some("TokenRequest"),
        (200, "Token"),
    ),
    op(
        "post",
        "/tenants/{id}/app-keys",
        Admin,
        "Create an app key (shown once)",
        Some("Named"),
        (201, "CreatedCredential"),
    ),
    op(
        "get",
        "/tenants/{id}/app-keys",
        Admin,
        "List app keys (no secrets)",
        None,
        (200, ""),
    ),
    op(
        "delete",
        "/tenants/{id}/app-keys/{key_id}",
        Admin,
        "Revoke an app key",
        None,
        (204, ""),
    ),
    op(
        "get",
        "/tenants/{id}/role-rules",
        Admin,
        "List a tenant's role rules",
        None,
        (200, ""),
    ),
    op(
        "put",
        "/tenants/{id}/role-rules/{name}",
        Admin,
        "Create or replace a role rule (a SCIM filter gives a role of a product); re-decides every user's roles",
        Some("RoleRule"),
        (200, ""),
    ),
    op(
        "delete",
        "/tenants/{id}/role-rules/{name}",
        Admin,
        "Remove a role rule; the roles it gave are taken back",
        None,
        (204, ""),
    ),
    op(
        "put",
        "/tenants/{id}/sso",
        Admin,
        "Create or replace the tenant's OIDC connection",
        Some("SsoConnection"),
        (200, "SsoConnection"),
    ),
    op(
        "get",
        "/tenants/{id}/sso",
        Admin,
        "The tenant's OIDC connection",
        None,
        (200, "SsoConnection"),
    ),
    op(
        "delete",
        "/tenants/{id}/sso",
        Admin,
        "Remove the tenant's OIDC connection",
        None,
        (204, ""),
    ),
    op(
        "post",
        "/sso/login",
        App,
        "Sign a user in with an ID token from the tenant's identity provider: verified, the user found or created (jit), licensed, and answered with entitlements and a token; 401 with a reason when refused",
        Some("SsoLogin"),
        (200, "SsoLoggedIn"),
    ),
    op(
        "post",
        "/tenants/{id}/portal-links",
        Admin,
        "A single-use link to the customer admin portal for the tenant's IT admin (its first visit starts an 8-hour session)",
        Some("PortalLinkRequest"),
        (201, "PortalLink"),
    ),
    op(
        "post",
        "/admin-keys",
        Admin,
        "Create a scoped admin key (shown once), optionally confined to one tenant",
        Some("NewAdminKey"),
        (201, "AdminKey"),
    ),
    op(
        "get",
        "/admin-keys",
        Admin,
        "List admin keys (no secrets)",
        None,
        (200, ""),
    ),
    op(
        "delete",
        "/admin-keys/{key_id}",
        Admin,
        "Revoke an admin key",
        None,
        (204, ""),
    ),
    op(
        "post",
        "/signing-keys/rotate",
        Admin,
        "Sign tokens with a new key (the old one stays published until its tokens expire)",
        None,
        (200, ""),
    ),
    op(
        "get",
        "/.well-known/jwks.json",
        Public,
        "The keys that verify entitlement tokens (JWK Set)",
        None,
        (200, "Jwks"),
    ),
    op(
        "get",
        "/openapi.json",
        Public,
        "This document",
        None,
        (200, ""),
    ),
];

/// The schemas of sign-in (apart: one `json!` of them all is deeper than the macro goes).
fn sso_schemas() -> Value {
    let string = json!({"type": "string"});
    json!({
            "SsoConnection": {"type": "object", "required": ["issuer", "audiences"], "additionalProperties": false, "properties": {
                "issuer": {"type": "string", "format": "uri", "description": "https (http only on a loopback host)"},
                "jwks_uri": {"type": "string", "format": "uri", "description": "Discovered from {issuer}/.well-known/openid-configuration when absent"},
                "audiences": {"type": "array", "minItems": 1, "maxItems": crate::sso::service::MAX_AUDIENCES, "items": string},
                "claims": {"type": "object", "additionalProperties": false, "properties": {
                    "userName": {"type": "string", "default": "email"}, "externalId": {"type": "string", "default": "sub"},
                    "email": {"type": "string", "default": "email"}, "givenName": {"type": "string", "default": "given_name"},
                    "familyName": {"type": "string", "default": "family_name"}, "groups": {"type": "string"}}},
                "provisioning": {"type": "string", "enum": ["jit", "existing_only"], "default": "jit"}}},
            "PortalLinkRequest": {"type": "object", "additionalProperties": false, "properties": {
                "expires_in": {"type": "integer", "minimum": crate::portal::service::LINK_LIFETIME.0, "maximum": crate::portal::service::LINK_LIFETIME.1, "default": 3600},
                "capabilities": {"type": "array", "items": {"type": "string", "enum": crate::portal::service::CAPABILITIES}, "default": crate::portal::service::CAPABILITIES}}},
            "PortalLink": {"type": "object", "properties": {"url": string, "expires_at": string, "capabilities": {"type": "array", "items": string}}},
            "SsoLogin": {"type": "object", "required": ["id_token"], "additionalProperties": false, "properties": {
                "id_token": {"type": "string", "maxLength": crate::sso::service::MAX_TOKEN}, "nonce": {"type": "string", "maxLength": 512}}},
            "SsoLoggedIn": {"type": "object", "properties": {
                "user": {"type": "object", "properties": {"id": string, "userName": string, "created": {"type": "boolean"}, "logins": {"type": "integer"}}},
                "licenses": {"type": "array", "items": {"type": "object"}}, "features": {"type": "array", "items": string},
                "limits": {"type": "object"}, "roles": {"type": "array", "items": string}, "permissions": {"type": "array", "items": string},
                "token": string, "expires_at": string}},
            "SsoRefusal": {"type": "object", "description": "A refused sign-in (401).", "properties": {
                "status": string, "detail": string,
                "reason": {"type": "string", "enum": ["invalid_signature", "expired", "wrong_audience", "unknown_issuer", "nonce_mismatch", "user_inactive", "unknown_user"]}}},
    })
}

fn components() -> Value {
    let mut all = components_core();
    if let (Some(schemas), Value::Object(sso)) = (all["schemas"].as_object_mut(), sso_schemas()) {
        schemas.extend(sso);
    }
    all
}

fn components_core() -> Value {
    let string = json!({"type": "string"});
    json!({
        "securitySchemes": {
            "admin": {"type": "http", "scheme": "bearer", "description": "The operator's bootstrap admin token, or a scoped admin key (ska_…): each operation names the scope it needs (x-scope); a key confined to a tenant reaches only /tenants/{id}/… of that tenant."},
            "app": {"type": "http", "scheme": "bearer", "description": "An application key of one tenant (skp_…): checks and tokens only."},
        },
        "schemas": {
            "Error": {"type": "object", "description": "SCIM error shape on every failure.",
                "properties": {"schemas": {"type": "array", "items": string}, "status": string, "scimType": string, "detail": string}},
            "Named": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string", "maxLength": 200}}},
            "RoleRule": {"type": "object", "required": ["filter", "product", "role"], "additionalProperties": false, "properties": {
                "filter": {"type": "string", "description": "A SCIM filter over the user (groups included)"}, "product": string, "role": string}},
            "NewAdminKey": {"type": "object", "required": ["name", "scopes"], "additionalProperties": false, "properties": {
                "name": {"type": "string", "maxLength": 200},
                "scopes": {"type": "array", "minItems": 1, "items": {"type": "string", "enum": Scope::ALL.map(Scope::as_str)}},
                "tenant": {"type": "string", "description": "Confine the key to this tenant"}}},
            "AdminKey": {"type": "object", "properties": {"id": string, "name": string,
                "scopes": {"type": "array", "items": string}, "tenant": {"type": ["string", "null"]},
                "created": string, "created_by": string, "revoked": {"type": ["string", "null"]},
                "token": {"type": "string", "description": "The secret, in the creation answer only"}}},
            "Tenant": {"type": "object", "properties": {"id": string, "name": string, "created": string}},
            "Finding": {"type": "object", "description": "A compliance finding (GET /reports/compliance).", "properties": {
                "finding": {"type": "string", "enum": crate::licenses::usage::FINDINGS.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
                    "description": crate::licenses::usage::FINDINGS.iter().map(|(n, m)| format!("{n}: {m}")).collect::<Vec<_>>().join("; ")},
                "tenant": string, "product": string, "severity": {"type": "string", "enum": ["high", "medium", "low"]},
                "count": {"type": "integer"}, "detail": string}},
            "CreatedCredential": {"type": "object", "description": "The secret (token or key) is returned once and stored only as a hash.",
                "properties": {"id": string, "tenant": string, "name": string, "token": string, "key": string}},
            "Subscription": {"type": "object", "required": ["plan", "seats", "starts_at"], "properties": {
                "plan": string, "seats": {"type": "integer", "minimum": 0}, "starts_at": {"type": "string", "format": "date-time"},
                "ends_at": {"type": "string", "format": "date-time"}, "grace_days": {"type": "integer", "minimum": 0},
                "on_expiry": {"type": "string", "description": "revoke, keep or downgrade:<plan>"},
                "enforcement": {"type": "string", "enum": ["hard", "soft"]},
                "idle_after_days": {"type": "integer", "minimum": 1, "maximum": 3650, "default": 30,
                    "description": "Days without activity (application checks, entitlement tokens) after which a held seat counts as idle"},
                "status": {"type": "string", "enum": ["trialing", "active", "past_due", "canceled", "expired"]}}},
            "Rule": {"type": "object", "required": ["filter", "product", "plan"], "properties": {
                "filter": {"type": "string", "description": "A SCIM filter over the user"}, "product": string, "plan": string,
                "priority": {"type": "integer"}}},
            "Model": {"type": "object", "description": "The licensing model as code (the TOML file's content as JSON): products with plans, and tenants with subscriptions and rules."},
            "BillingEvent": {"type": "object", "required": ["id", "type", "tenant", "product"], "properties": {
                "id": string, "type": {"type": "string", "enum": ["subscription.created", "subscription.updated", "subscription.renewed", "subscription.canceled", "subscription.payment_failed", "subscription.expired"]},
                "tenant": string, "product": string, "plan": string, "seats": {"type": "integer"}}},
            "Webhook": {"type": "object", "required": ["url"], "additionalProperties": false, "properties": {
                "url": {"type": "string", "format": "uri", "maxLength": 2048},
                "events": {"type": "array", "minItems": 1, "maxItems": 64, "items": {"type": "string", "enum": catalogue::subscribable_names()}}}},
            "Event": {"type": "object", "properties": {
                "id": string, "type": {"type": "string", "enum": EventType::ALL.iter().map(|e| e.name()).collect::<Vec<_>>(),
                    "description": EventType::ALL.iter().map(|e| format!("{}: {}", e.name(), e.meaning())).collect::<Vec<_>>().join("; ")},
                "tenant": string, "created_at": string,
                "resource": {"type": "object", "properties": {"type": string, "id": string}}, "data": {"type": "object"}}},
            "Check": {"type": "object", "required": ["user"], "description": "Exactly one of feature, limit or permission.", "properties": {
                "user": {"type": "string", "description": "id, userName or externalId", "maxLength": 256},
                "feature": {"type": "string", "maxLength": 256}, "limit": {"type": "string", "maxLength": 256},
                "permission": {"type": "string", "maxLength": 256, "description": "Answered from the user's roles: {user, allowed, roles, reason}"}}},
            "CheckRequest": {"oneOf": [
                {"$ref": "#/components/schemas/Check"},
                {"type": "object", "required": ["checks"], "properties": {"checks": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH_CHECKS, "items": {"$ref": "#/components/schemas/Check"}}}},
            ]},
            "Answer": {"type": "object", "properties": {
                "user": string, "allowed": {"type": "boolean"}, "plan": {"type": ["string", "null"]},
                "value": {"type": ["integer", "null"]},
                "reason": {"type": "string", "examples": ["plan pro grants feature export", "plan free lacks feature export", "waitlisted: seat limit reached", "subscription expired", "not licensed", "user inactive", "unknown user"]}}},
            "PermissionAnswer": {"type": "object", "properties": {
                "user": string, "allowed": {"type": "boolean"}, "roles": {"type": "array", "items": string},
                "reason": {"type": "string", "examples": ["role admin (rule it-admins) grants billing.manage", "no role grants billing.manage", "role admin (rule it-admins) grants billing.manage but requires an active workspace license", "user inactive", "unknown user"]}}},
            "CheckResponse": {"oneOf": [
                {"$ref": "#/components/schemas/Answer"},
                {"$ref": "#/components/schemas/PermissionAnswer"},
                {"type": "object", "properties": {"results": {"type": "array", "items": {"oneOf": [{"$ref": "#/components/schemas/Answer"}, {"$ref": "#/components/schemas/PermissionAnswer"}]}}}},
            ]},
            "Entitlements": {"type": "object", "properties": {
                "id": string, "active": {"type": "boolean"},
                "licenses": {"type": "array", "items": {"type": "object", "properties": {"product": string, "plan": string, "state": {"type": "string", "enum": ["active", "waitlisted"]}}}},
                "features": {"type": "array", "items": string},
                "limits": {"type": "object", "additionalProperties": {"type": "integer"}},
                "roles": {"type": "array", "items": string}, "permissions": {"type": "array", "items": string}}},
            "TokenRequest": {"type": "object", "required": ["user"], "properties": {"user": string}},
            "Token": {"type": "object", "properties": {"token": {"type": "string", "description": "JWT, EdDSA; claims iss, sub, tenant, active, plans, features, limits, roles, permissions, iat, exp"}, "expires_at": string, "jwks_uri": string}},
            "Jwks": {"type": "object", "properties": {"keys": {"type": "array", "items": {"type": "object", "properties": {"kty": string, "crv": string, "x": string, "kid": string, "alg": string, "use": string}}}}},
        },
    })
}

fn operation(o: &Op) -> Value {
    let mut v = json!({
        "summary": o.summary,
        "operationId": format!("{}{}", o.method, o.path.replace(['/', '{', '}', '.', '-'], "_")),
        "responses": {
            "400": {"description": "Invalid input", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            "401": {"description": "Missing or invalid credential"},
        },
    });
    let ok = match o.ok.1 {
        "" => json!({"description": "Success"}),
        schema => {
            json!({"description": "Success", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
        }
    };
    v["responses"][o.ok.0.to_string()] = ok;
    match o.auth {
        Admin => {
            v["security"] = json!([{"admin": []}]);
            v["responses"]["403"] = json!({"description": "An admin key without the scope this operation needs, or confined to another tenant's calls"});
            let method = o.method.to_ascii_uppercase().parse().unwrap_or(Method::GET);
            v["x-scope"] = match scopes::required(&method, &full_path(o.path)) {
                Some(s) => json!(s.as_str()),
                None => json!("bootstrap admin token only"),
            };
        }
        App => {
            v["security"] = json!([{"app": []}]);
            v["responses"]["429"] = json!({"description": "Over the tenant's application rate limit (--app-rate-limit, --app-rate-burst); Retry-After says when to come back"});
        }
        Signed => {
            v["description"] =
                json!("Authenticated by the sender's signature headers, not a bearer token.")
        }
        Public => v["security"] = json!([]),
    }
    if let Some(body) = o.body {
        v["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{body}")}}}});
    }
    let params: Vec<Value> = o
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    if !params.is_empty() {
        v["parameters"] = Value::Array(params);
    }
    v
}

/// The route pattern of an operation's path.
fn full_path(path: &str) -> String {
    if path.starts_with("/.") {
        path.to_string()
    } else {
        format!("/api/v1{path}")
    }
}

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for o in OPS {
        let entry = paths.entry(full_path(o.path)).or_insert_with(|| json!({}));
        entry[o.method] = operation(o);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "seatkeeper admin and application API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Licensing, billing, events, audit and entitlement checks. The SCIM 2.0 endpoint (/scim/v2) describes itself through /ServiceProviderConfig, /Schemas and /ResourceTypes.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": components(),
    })
}

/// The route serving it.
pub fn routes() -> Router<Shared> {
    Router::new().route("/api/v1/openapi.json", get(serve))
}

async fn serve() -> Response {
    axum::Json(document()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (method, path) of every route the admin and app routers declare, read from their
    /// source (each `.route` call: its path and the method functions it names), plus this
    /// module's own.
    fn declared() -> Vec<(String, String)> {
        let ops = include_str!("http.rs");
        let portal = include_str!("../portal/http.rs");
        let sources = [
            include_str!("../tenants/http.rs"),
            include_str!("../licenses/http.rs"),
            include_str!("../events/http.rs"),
            include_str!("../billing/http.rs"),
            include_str!("../audit/http.rs"),
            include_str!("../apps/http.rs"),
            include_str!("../reports/http.rs"),
            include_str!("../sso/http.rs"),
            &portal[portal.find("fn api_routes").unwrap_or(0)..],
            &ops[ops.find("fn api_routes").unwrap_or(0)..],
        ];
        let mut out = vec![("get".to_string(), "/openapi.json".to_string())];
        for src in sources {
            let code: String = src.split_whitespace().collect::<Vec<_>>().join(" ");
            for part in code.split(".route(").skip(1) {
                let Some(rest) = part.trim_start().strip_prefix('"') else {
                    continue;
                };
                let Some((path, rest)) = rest.split_once('"') else {
                    continue;
                };
                let path = path.strip_prefix("/api/v1").unwrap_or(path);
                // The handlers up to the closing parenthesis of `.route(`.
                let mut depth = 1;
                let mut end = rest.len();
                for (i, c) in rest.char_indices() {
                    match c {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                end = i;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                for m in ["get", "post", "put", "delete", "patch"] {
                    let call = format!("{m}(");
                    let handlers = &rest[..end];
                    let found = handlers.match_indices(&call).any(|(i, _)| {
                        i == 0
                            || !handlers[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_')
                    });
                    if found {
                        out.push((m.to_string(), path.to_string()));
                    }
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn every_route_is_documented_and_nothing_else() {
        let declared = declared();
        assert!(
            declared.len() > 40,
            "the source reader found only {declared:?}"
        );
        let mut documented: Vec<(String, String)> = OPS
            .iter()
            .map(|o| (o.method.to_string(), o.path.to_string()))
            .collect();
        documented.sort();
        let missing: Vec<_> = declared
            .iter()
            .filter(|r| !documented.contains(r))
            .collect();
        let extra: Vec<_> = documented
            .iter()
            .filter(|r| !declared.contains(r))
            .collect();
        assert!(
            missing.is_empty(),
            "routes without an OpenAPI entry: {missing:?}"
        );
        assert!(
            extra.is_empty(),
            "OpenAPI entries without a route: {extra:?}"
        );
    }

    #[test]
    fn every_admin_operation_but_the_test_clock_has_a_scope() {
        let closed: Vec<_> = OPS
            .iter()
            .filter(|o| matches!(o.auth, Admin))
            .filter(|o| {
                let method = o.method.to_ascii_uppercase().parse().unwrap_or(Method::GET);
                scopes::required(&method, &full_path(o.path)).is_none()
            })
            .map(|o| (o.method, o.path))
            .collect();
        assert_eq!(closed, [("post", "/clock")]);
    }

    #[test]
    fn references_resolve() {
        let doc = document();
        let text = doc.to_string();
        for part in text.split("\"#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap_or_default();
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "no schema {name}"
            );
        }
    }
}
