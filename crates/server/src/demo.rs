//! The demo tenant: users in departments and nested groups, created through the engine so
//! the audit trail and outbox are filled exactly as a real IdP sync would fill them.

use serde_json::json;

use crate::directory::service::{Ctx, Engine};
use crate::directory::store::Kind;
use crate::kernel::auth::Credential;
use crate::kernel::clock::SharedClock;
use crate::kernel::store::Store;

/// What the demo created.
pub struct Demo {
    /// Tenant id.
    pub tenant: String,
    /// A SCIM token for it.
    pub token: String,
    /// An app key for it (entitlement checks and tokens).
    pub app_key: String,
    /// The first demo user's userName.
    pub first_user: String,
    /// Number of groups.
    pub groups: usize,
}

const FIRST: &[&str] = &[
    "Ada",
    "Alan",
    "Barbara",
    "Claude",
    "Dennis",
    "Edsger",
    "Frances",
    "Grace",
    "Hedy",
    "Ivan",
    "Joan",
    "Ken",
    "Linus",
    "Margaret",
    "Niklaus",
    "Radia",
    "Sophie",
    "Tim",
    "Whitfield",
    "Yukihiro",
];
const LAST: &[&str] = &[
    "Lovelace",
    "Turing",
    "Liskov",
    "Shannon",
    "Ritchie",
    "Dijkstra",
    "Allen",
    "Hopper",
    "Lamarr",
    "Sutherland",
];
const DEPARTMENTS: &[&str] = &["Engineering", "Sales", "Support", "Marketing", "Finance"];

/// The demo's licensing model: a workspace product in three tiers — a seat-free free tier
/// and two paid ones bought with a hard seat limit (so some users wait) — and an analytics
/// add-on with a soft limit (so it shows overage); managers are workspace admins and all
/// staff (a nested group) members.
fn demo_model(tenant: &str, seats: usize) -> serde_json::Value {
    json!({
        "products": [
            {"key": "workspace", "name": "Workspace", "plans": [
                {"key": "free", "rank": 0, "features": ["docs.read"], "limits": {"projects": 3}, "seated": false},
                {"key": "pro", "rank": 1, "features": ["docs.read", "docs.write", "export"], "limits": {"projects": 100}},
                {"key": "enterprise", "rank": 2, "features": ["docs.read", "docs.write", "export", "sso", "audit.export"], "limits": {"projects": 1000}},
            ], "roles": [
                {"key": "admin", "permissions": ["billing.manage", "users.invite"]},
                {"key": "member", "permissions": ["docs.comment"], "requires_license": false},
            ]},
            {"key": "analytics", "name": "Analytics", "plans": [
                {"key": "basic", "rank": 0, "features": ["dashboards"], "limits": {"reports": 10}},
            ]},
        ],
        "tenants": [{
            "id": tenant,
            "subscriptions": [
                {"product": "workspace", "plan": "enterprise", "seats": seats,
                 "starts_at": "2026-01-01T00:00:00Z", "ends_at": "2028-01-01T00:00:00Z",
                 "grace_days": 14, "on_expiry": "downgrade:free", "enforcement": "hard"},
                {"product": "analytics", "plan": "basic", "seats": 20,
                 "starts_at": "2026-01-01T00:00:00Z", "enforcement": "soft"},
            ],
            "rules": [
                {"name": "managers", "filter": "title eq \"Manager\"", "product": "workspace", "plan": "enterprise", "priority": 20},
                {"name": "engineering", "filter": "groups.display eq \"Engineering\"", "product": "workspace", "plan": "pro", "priority": 10},
                {"name": "everyone", "filter": "userName pr", "product": "workspace", "plan": "free", "priority": 1},
                {"name": "sales-analytics", "filter": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq \"Sales\"", "product": "analytics", "plan": "basic", "priority": 1},
            ],
            "role_rules": [
                {"name": "managers-admin", "filter": "title eq \"Manager\"", "product": "workspace", "role": "admin"},
                {"name": "staff", "filter": "groups.display eq \"All Staff\"", "product": "workspace", "role": "member"},
            ],
        }],
    })
}

/// Loads the demo tenant.
pub async fn load(store: &Store, clock: SharedClock, users: usize) -> anyhow::Result<Demo> {
    let tenants = crate::tenants::service::Tenants::new(store.clone(), clock.clone());
    let actor = crate::kernel::store::Actor {
        name: "demo".into(),
        request_id: "demo".into(),
    };
    let name = |s: &str| crate::kernel::ids::Name::parse(s).map_err(anyhow::Error::msg);
    let tenant = tenants.create(&actor, &name("Demo Corp")?).await?;
    let token = tenants
        .create_credential(&actor, Credential::Scim, &tenant.id, &name("demo-idp")?)
        .await?;
    let app_key = tenants
        .create_credential(&actor, Credential::App, &tenant.id, &name("demo-app")?)
        .await?;
    // Managers and engineers (a fifth of the users) get paid plans; the seats bought cover
    // about two thirds of them.
    let seats = (users / 8).max(1);
    let mut first_user = String::new();
    let spec = licensing::spec::Spec::from_json(&demo_model(&tenant.id, seats))
        .map_err(|e| anyhow::anyhow!("demo model: {e}"))?;
    let actor = crate::licenses::service::Actor {
        name: "demo-loader".into(),
        request_id: "demo".into(),
    };
    crate::licenses::service::Licenses::new(store.clone(), clock.clone())
        .apply(actor, spec, false, false)
        .await
        .map_err(|e| anyhow::anyhow!("demo model: {e}"))?;
    let engine = Engine::new(store.clone(), clock);
    let ctx = Ctx {
        tenant: tenant.id.clone(),
        actor: "demo-loader".into(),
        request_id: "demo".into(),
        base_url: String::new(),
    };
    let mut by_dept: Vec<Vec<String>> = vec![Vec::new(); DEPARTMENTS.len()];
    for i in 0..users {
        let (first, last) = (FIRST[i % FIRST.len()], LAST[(i / FIRST.len()) % LAST.len()]);
        let dept = i % DEPARTMENTS.len();
        let user_name = format!(
            "{}.{}{}@demo.example",
            first.to_lowercase(),
            last.to_lowercase(),
            if i >= FIRST.len() * LAST.len() {
                i.to_string()
            } else {
                String::new()
            }
        );
        if first_user.is_empty() {
            first_user.clone_from(&user_name);
        }
        let body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
            "userName": user_name,
            "externalId": format!("emp-{:05}", i + 1),
            "name": {"givenName": first, "familyName": last},
            "displayName": format!("{first} {last}"),
            "title": if i % 10 == 0 { "Manager" } else { "Staff" },
            "active": i % 25 != 24,
            "emails": [{"value": user_name, "type": "work", "primary": true}],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
                "department": DEPARTMENTS[dept],
                "employeeNumber": format!("{}", 1000 + i),
            }
        });
        let r = engine.create(&ctx, Kind::User, &body).await?;
        if let Some(id) = r.body.get("id").and_then(|v| v.as_str()) {
            by_dept[dept].push(id.to_string());
        }
    }
    let mut dept_ids = Vec::new();
    for (dept, members) in DEPARTMENTS.iter().zip(&by_dept) {
        let members: Vec<_> = members
            .iter()
            .map(|id| json!({"value": id, "type": "User"}))
            .collect();
        let g = engine
            .create(&ctx, Kind::Group, &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": dept, "members": members}))
            .await?;
        if let Some(id) = g.body.get("id").and_then(|v| v.as_str()) {
            dept_ids.push(json!({"value": id, "type": "Group"}));
        }
    }
    engine
        .create(&ctx, Kind::Group, &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "All Staff", "members": dept_ids}))
        .await?;
    Ok(Demo {
        tenant: tenant.id,
        token: token.token,
        app_key: app_key.token,
        first_user,
        groups: DEPARTMENTS.len() + 1,
    })
}
