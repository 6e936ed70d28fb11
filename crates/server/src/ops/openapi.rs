//! The OpenAPI 3.1 document of the admin and application API, served at
//! `/api/v1/openapi.json`.
//!
//! Operations come from the handlers: each carries `#[utoipa::path]` (method, path,
//! parameters, body, success answer, security) and its domain router registers it through
//! `utoipa_axum`, so a route cannot exist without its operation, nor an operation without its
//! route. Query parameters are derived from the handlers' query types. [`finish`] completes
//! the document: the error answers each operation can give, each admin operation's scope
//! (`x-scope`, from [`scopes::required`]), the schemas operations name by reference, and the
//! `webhooks` section (every event type's delivery).

use std::sync::OnceLock;

use axum::http::Method;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::apps::http::MAX_BATCH_CHECKS;
use crate::kernel::catalogue::{self, EventType};
use crate::kernel::scopes::{self, Scope};
use crate::state::Shared;

/// The media type of every answer (and, with `application/json`, of every request body).
const SCIM_JSON: &str = "application/scim+json";

/// The document this process serves (set once the router is assembled).
static DOCUMENT: OnceLock<Value> = OnceLock::new();

/// The route serving the document; `doc` is the finished document of the whole router.
pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(serve))
}

/// Publishes the finished document (the first one: every router of a process has the same).
pub fn publish(doc: Value) {
    let _ = DOCUMENT.set(doc);
}

#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    summary = "This document",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = serde_json::Value, content_type = "application/json")),
    security(()),
    tag = "ops"
)]
async fn serve() -> Response {
    axum::Json(DOCUMENT.get().cloned().unwrap_or(Value::Null)).into_response()
}

/// An error answer of the error table.
fn error(description: &str) -> Value {
    json!({"description": description, "content": {SCIM_JSON: {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

/// Who may call an operation, read from its security requirement.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Auth {
    Admin,
    App,
    /// Signed by the billing system (Standard Webhooks or Stripe-Signature): no requirement.
    Signed,
    Public,
}

fn auth_of(op: &Value) -> Auth {
    match op.get("security").and_then(Value::as_array) {
        None => Auth::Signed,
        Some(reqs) if reqs.iter().any(|r| r.get("admin").is_some()) => Auth::Admin,
        Some(reqs) if reqs.iter().any(|r| r.get("app").is_some()) => Auth::App,
        Some(_) => Auth::Public,
    }
}

/// The other forms an answer takes (`?format=` or `Accept`), besides its JSON.
const ALTERNATES: &[(&str, &str, &[&str])] = &[
    ("get", "/api/v1/tenants/{id}/usage/history", &["text/csv"]),
    ("post", "/api/v1/tenants/{id}/reconcile", &["text/csv"]),
    (
        "get",
        "/api/v1/tenants/{id}/audit",
        &["text/csv", "application/x-ndjson"],
    ),
    (
        "get",
        "/api/v1/audit",
        &["text/csv", "application/x-ndjson"],
    ),
    ("get", "/api/v1/usage", &["text/csv"]),
    ("get", "/api/v1/reports/compliance", &["text/csv"]),
];

/// Completes one operation: its id, media types, error answers and scope.
fn complete(method: &str, path: &str, op: &mut Value) {
    let auth = auth_of(op);
    // Unique and stable: the method and the path (handler names repeat across domains).
    let short = path.strip_prefix("/api/v1").unwrap_or(path);
    op["operationId"] = json!(format!(
        "{method}{}",
        short.replace(['/', '{', '}', '.', '-'], "_")
    ));
    for (m, p, types) in ALTERNATES {
        if *m == method
            && *p == path
            && let Some(content) = op
                .pointer_mut("/responses/200/content")
                .and_then(Value::as_object_mut)
        {
            for t in *types {
                content.insert((*t).to_string(), json!({"schema": {"type": "string"}}));
            }
        }
    }
    // JSON bodies are taken as either JSON media type.
    if let Some(content) = op
        .pointer_mut("/requestBody/content")
        .and_then(Value::as_object_mut)
        && let Some(json) = content.get("application/json").cloned()
    {
        content.insert(SCIM_JSON.into(), json);
    }
    let has_params = op
        .get("parameters")
        .and_then(Value::as_array)
        .is_some_and(|p| !p.is_empty());
    let has_body = op.get("requestBody").is_some();
    let mut errors: Vec<(u16, Value)> = Vec::new();
    if has_params || has_body {
        errors.push((
            400,
            error(
                "Invalid input: a malformed body, parameter or value (`scimType` says which kind)",
            ),
        ));
    }
    match auth {
        Auth::Admin | Auth::App => {
            errors.push((401, error("Missing or invalid credential")));
        }
        Auth::Signed => {
            errors.push((
                401,
                error("The signature headers are missing, stale or do not verify"),
            ));
        }
        Auth::Public => {}
    }
    if auth == Auth::Admin {
        errors.push((403, error("An admin key without the scope this operation needs (x-scope), or confined to another tenant")));
        let method = method.to_ascii_uppercase().parse().unwrap_or(Method::GET);
        op["x-scope"] = match scopes::required(&method, path) {
            Some(s) => json!(s.as_str()),
            None => json!("bootstrap admin token only"),
        };
    }
    if path.contains('{') {
        errors.push((
            404,
            error("Nothing by that name: the tenant, or another resource the path names"),
        ));
    }
    if has_body {
        errors.push((
            413,
            error(
                "The body is larger than the server's limit (--max-body); the connection is closed",
            ),
        ));
        errors.push((
            415,
            error("The body is not application/scim+json or application/json"),
        ));
    }
    if auth != Auth::Public {
        errors.push((429, error("Too many requests: the tenant's application rate limit, or too many failed authentications from this address; Retry-After says when to come back")));
    }
    errors.push((503, error("The database is unavailable, or the request ran past --request-timeout; Retry-After says when to retry")));
    if let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) {
        for (status, answer) in errors {
            responses.entry(status.to_string()).or_insert(answer);
        }
    }
}

/// The finished document: the operations `api` collected from the routers, completed.
pub fn finish(api: utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(&api).unwrap_or_else(|_| json!({}));
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            if let Some(item) = item.as_object_mut() {
                for (method, op) in item.iter_mut() {
                    complete(method, path, op);
                }
            }
        }
    }
    let generated = doc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut components = components();
    if let Some(schemas) = components["schemas"].as_object_mut() {
        for (name, schema) in generated {
            schemas.entry(name).or_insert(schema);
        }
    }
    doc["openapi"] = json!("3.1.0");
    doc["info"] = json!({
        "title": "seatkeeper admin and application API",
        "version": env!("CARGO_PKG_VERSION"),
        "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        "description": "Licensing, billing, events, audit, sign-in and entitlement checks. Every error answer has the SCIM error shape (Error). The SCIM 2.0 endpoint (/scim/v2) describes itself through /ServiceProviderConfig, /Schemas and /ResourceTypes. The webhooks section shows what each event type delivers to a registered endpoint.",
    });
    doc["servers"] = json!([{"url": "/"}]);
    doc["components"] = components;
    doc["webhooks"] = webhooks();
    doc
}

/// The `data` of each event type (see the README's event table).
fn event_data(e: EventType) -> Value {
    let string = json!({"type": "string"});
    let object = json!({"type": "object"});
    let nullable = json!({"type": ["string", "null"]});
    let license = json!({"type": ["object", "null"], "properties": {"plan": string, "state": string, "reason": string}});
    let users = json!({"type": "array", "items": {"type": "object", "properties": {"id": string, "userName": string, "gone": string}}});
    use EventType as E;
    let (required, properties): (&[&str], Value) = match e {
        E::UserProvisioned | E::UserDeprovisioned => (
            &["user", "reason"],
            json!({"user": {"type": "object", "description": "The SCIM User as it now is (as it was, once deleted)", "required": ["id"]},
                   "reason": {"type": "string", "enum": if e == E::UserProvisioned { ["created", "reactivated"] } else { ["deactivated", "deleted"] }},
                   "request_id": string}),
        ),
        E::UserUpdated => (
            &["user"],
            json!({"user": {"type": "object", "required": ["id"]}, "request_id": string}),
        ),
        E::GroupCreated | E::GroupUpdated | E::GroupDeleted => (
            &["group"],
            json!({"group": {"type": "object", "description": "The SCIM Group", "required": ["id"]}, "request_id": string}),
        ),
        E::LicenseAssigned
        | E::LicenseWaitlisted
        | E::LicensePromoted
        | E::LicenseRevoked
        | E::LicenseChanged
        | E::LicenseReclaimed => (
            &["user", "product", "cause", "before", "after"],
            json!({"user": string, "product": string, "cause": {"type": "string", "description": "The action that caused it, e.g. scim.user.create, billing.subscription.updated"},
                   "before": license, "after": license}),
        ),
        E::SubscriptionChanged | E::RuleChanged => (
            &["action", "before", "after"],
            json!({"action": string, "before": {"type": ["object", "null"]}, "after": {"type": ["object", "null"]}, "request_id": string}),
        ),
        E::SubscriptionExpiring => (
            &["product", "plan", "ends_at"],
            json!({"product": string, "plan": string, "status": string, "ends_at": string,
                   "access_ends_at": nullable, "on_expiry": string, "request_id": string}),
        ),
        E::SeatsExhausted => (
            &["product", "seats", "active"],
            json!({"product": string, "plan": string, "seats": {"type": "integer"}, "active": {"type": "integer"},
                   "waitlisted": {"type": "integer"}, "cause": string, "request_id": string}),
        ),
        E::CredentialCreated | E::CredentialRevoked => (
            &["credential"],
            json!({"credential": {"type": "object", "description": "Never the secret", "properties": {
                "id": string, "kind": {"type": "string", "enum": ["SCIM token", "app key"]}, "name": string, "created": string, "revoked": nullable}},
                "request_id": string}),
        ),
        E::WebhookCreated | E::WebhookDisabled | E::WebhookReplayed => (
            &["webhook"],
            json!({"webhook": {"type": "object", "description": "The endpoint, never its secret", "properties": {"id": string, "url": string}},
                   "count": {"type": "integer", "description": "webhook.replayed: deliveries queued again"}, "replay": object, "request_id": string}),
        ),
        E::DeprovisionHeld => (
            &["users"],
            json!({"users": users, "engaged": {"type": "boolean"}, "cause": string}),
        ),
        E::DeprovisionDecided => (
            &["decision", "users"],
            json!({"decision": {"type": "string", "enum": ["approved", "rejected"]}, "users": users, "licenses": object, "request_id": string}),
        ),
        E::RoleGranted | E::RoleRevoked => (
            &["user", "product", "role", "source"],
            json!({"user": string, "product": string, "role": string, "source": string, "cause": string}),
        ),
        E::UserLogin => (
            &["user", "created"],
            json!({"user": string, "created": {"type": "boolean"}, "request_id": string}),
        ),
        E::AuditHead => (
            &["tenant_id", "seq", "hash", "at", "signature"],
            json!({"tenant_id": string, "seq": {"type": "integer"}, "hash": string, "at": string, "signature": string}),
        ),
    };
    json!({"type": "object", "required": required, "properties": properties})
}

/// The `webhooks` section: what a registered endpoint receives, one entry per event type.
fn webhooks() -> Value {
    let header = |name: &str, about: &str| json!({"name": name, "in": "header", "required": true, "description": about, "schema": {"type": "string"}});
    let mut out = Map::new();
    for e in EventType::ALL {
        let body = json!({"allOf": [
            {"$ref": "#/components/schemas/Event"},
            {"type": "object", "required": ["type", "data"], "properties": {"type": {"const": e.name()}, "data": event_data(e)}},
        ]});
        out.insert(
            e.name().to_string(),
            json!({"post": {
                "summary": e.meaning(),
                "operationId": format!("webhook_{}", e.name().replace('.', "_")),
                "description": "A delivery to a registered endpoint (Standard Webhooks). Any 2xx is success; anything else is retried with backoff, then the delivery is dead.",
                "parameters": [
                    header("webhook-id", "The event id: the same on every retry and replay, for deduplication"),
                    header("webhook-timestamp", "Unix seconds when this attempt was signed"),
                    header("webhook-signature", "v1,<base64 HMAC-SHA256 of id.timestamp.body under the endpoint's secret>"),
                ],
                "requestBody": {"required": true, "content": {"application/json": {"schema": body}}},
                "responses": {"2XX": {"description": "Received"}},
            }}),
        );
    }
    Value::Object(out)
}

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
                    "familyName": {"type": "string", "default": "family_name"}, "groups": {"type": ["string", "null"], "description": "No groups when absent or null"}}},
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

/// The answers handlers build as JSON (not from a Rust type), as described by
/// `answers.json`; the end-to-end tour (`tests/it/e2e_openapi.rs`) checks real answers
/// against them.
fn answers() -> Value {
    serde_json::from_str(include_str!("answers.json")).unwrap_or_else(|_| json!({}))
}

/// Request bodies of the licensing API that handlers read as JSON.
fn licensing_schemas() -> Value {
    let string = json!({"type": "string"});
    json!({
        "SubscriptionPatch": {"type": "object", "description": "Fields to change, merged over the stored subscription (as billing events are)",
            "properties": {"plan": string, "seats": {"type": "integer", "minimum": 0}, "starts_at": {"type": "string", "format": "date-time"},
                "ends_at": {"type": ["string", "null"], "format": "date-time"}, "grace_days": {"type": "integer", "minimum": 0},
                "on_expiry": string, "enforcement": {"type": "string", "enum": ["hard", "soft"]},
                "idle_after_days": {"type": "integer", "minimum": 1, "maximum": 3650}, "on_idle": {"type": "string", "enum": ["keep", "reclaim"]},
                "status": {"type": "string", "enum": ["trialing", "active", "past_due", "canceled", "expired"]}}},
        "PinRequest": {"type": "object", "required": ["plan"], "properties": {
            "plan": {"type": ["string", "null"], "description": "The plan to hold whatever the rules say; null excludes the user from the product"},
            "reason": {"type": "string"}, "expires_at": {"type": ["string", "null"], "format": "date-time"}}},
        "SettingsRequest": {"type": "object", "properties": {
            "deprovision_brake": {"type": ["object", "null"], "description": "null turns the brake off",
                "properties": {"percent": {"type": "integer", "minimum": 1, "maximum": 100}, "min_users": {"type": "integer", "minimum": 0},
                    "window_minutes": {"type": "integer", "minimum": 1}}},
            "role_source": {"type": "string", "enum": ["rules", "scim", "both"]}}},
    })
}

fn components() -> Value {
    let mut all = components_core();
    if let Some(schemas) = all["schemas"].as_object_mut() {
        for more in [
            sso_schemas(),
            billing_schemas(),
            licensing_schemas(),
            answers(),
        ] {
            if let Value::Object(more) = more {
                schemas.extend(more);
            }
        }
    }
    all
}

/// The bodies billing systems send.
fn billing_schemas() -> Value {
    let string = json!({"type": "string"});
    json!({
            "BillingEvent": {"type": "object", "required": ["type", "created_at", "tenant", "subscription"], "additionalProperties": false,
                "description": "The generic billing format, signed per Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature). The event's id is its webhook-id; a body id, if any, must equal it.",
                "properties": {
                "id": {"type": "string", "minLength": 1, "maxLength": 256},
                "type": {"type": "string", "enum": crate::billing::service::TYPES},
                "created_at": {"type": "string", "format": "date-time"},
                "tenant": {"type": "string", "minLength": 1, "maxLength": 256},
                "subscription": {"type": "object", "required": ["product"], "description": "The product and the subscription fields to set, merged over the subscription as it stands (as PATCH does)",
                    "properties": {"product": {"type": "string", "minLength": 1, "maxLength": 256}, "plan": string, "seats": {"type": "integer", "minimum": 0},
                        "status": {"type": "string", "enum": ["trialing", "active", "past_due", "canceled", "expired"]},
                        "starts_at": {"type": "string", "format": "date-time"}, "ends_at": {"type": "string", "format": "date-time"},
                        "grace_days": {"type": "integer", "minimum": 0}, "on_expiry": string, "enforcement": {"type": "string", "enum": ["hard", "soft"]}}}}},
            "StripeEvent": {"type": "object", "required": ["id", "type", "data"], "description": "A Stripe event (customer.subscription.*, invoice.payment_failed), signed with Stripe-Signature. Prices and customers map to products and tenants through /billing/stripe/prices and /billing/stripe/customers.",
                "properties": {"id": string, "type": string, "created": {"type": "integer"}, "data": {"type": "object", "required": ["object"], "properties": {"object": {"type": "object"}}}}},
    })
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
            "CheckResponse": {"anyOf": [
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
