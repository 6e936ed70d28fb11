//! What the application API reads and writes: the rows an entitlement snapshot is built
//! from, the changes it catches up with, user activity, and the keys that sign tokens.

use crate::kernel::db::Row;
use crate::kernel::store::{Store, StoreResult};
use crate::params;

/// A user as a snapshot keeps it.
#[derive(Debug, Clone)]
pub struct SnapUser {
    /// Id.
    pub id: String,
    /// userName.
    pub user_name: String,
    /// externalId.
    pub external_id: Option<String>,
    /// Active.
    pub active: bool,
}

/// A license as a snapshot keeps it.
#[derive(Debug, Clone)]
pub struct SnapLicense {
    /// The user.
    pub user_id: String,
    /// Product key.
    pub product: String,
    /// Plan key.
    pub plan: String,
    /// `active` or `waitlisted`.
    pub state: String,
}

/// A role given to a user, as a snapshot keeps it.
#[derive(Debug, Clone)]
pub struct SnapRole {
    /// The user.
    pub user_id: String,
    /// Product key.
    pub product: String,
    /// Role key.
    pub role: String,
    /// What gave it (a role rule's name, or `scim`).
    pub source: String,
}

/// Users, their licenses and (when asked) their roles.
pub type SnapRows = (Vec<SnapUser>, Vec<SnapLicense>, Vec<SnapRole>);

/// A token signing key as stored.
#[derive(Clone)]
pub struct SigningKeyRow {
    /// Key id (`kid`).
    pub kid: String,
    /// Ed25519 seed (base64).
    pub seed: String,
    /// When it stopped signing (None: it signs).
    pub retired: Option<String>,
    /// Until when it stays published.
    pub published_until: Option<String>,
}

impl std::fmt::Debug for SigningKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRow")
            .field("kid", &self.kid)
            .field("seed", &crate::kernel::secret::REDACTED)
            .field("retired", &self.retired)
            .field("published_until", &self.published_until)
            .finish()
    }
}

const USER_SQL: &str =
    "SELECT id, user_name, external_id, active FROM scim_users WHERE tenant_id = $1";
const LICENSE_SQL: &str = "SELECT user_id, product, plan, state FROM licenses WHERE tenant_id = $1";

const ROLE_SQL: &str = "SELECT user_id, product, role, source FROM user_roles WHERE tenant_id = $1";

fn snap_role(r: &Row) -> SnapRole {
    SnapRole {
        user_id: r.text(0),
        product: r.text(1),
        role: r.text(2),
        source: r.text(3),
    }
}

fn snap_user(r: &Row) -> SnapUser {
    SnapUser {
        id: r.text(0),
        user_name: r.text(1),
        external_id: r.opt_text(2),
        active: r.int(3) != 0,
    }
}

fn snap_license(r: &Row) -> SnapLicense {
    SnapLicense {
        user_id: r.text(0),
        product: r.text(1),
        plan: r.text(2),
        state: r.text(3),
    }
}

/// What a snapshot catches up with, read in one statement ([`Store::catch_up_rows`]).
#[derive(Debug, Default, Clone)]
pub struct CatchUp {
    /// The tenant's model version now.
    pub model_version: i64,
    /// The changes after the snapshot's cursor: (outbox id, resource type, resource id),
    /// oldest first.
    pub changes: Vec<(i64, String, String)>,
    /// The users those changes name (users and licenses), their licenses and roles.
    pub rows: SnapRows,
}

/// Tenants read per catch-up statement ([`Store::catch_up_rows_of`]).
const CATCH_UP_BATCH: usize = 32;

/// What one tenant's catch-up read holds so far; it is found once its model version row
/// (kind 0) is read: without one, the tenant is gone.
#[derive(Default)]
struct Reading {
    found: bool,
    caught: CatchUp,
}

impl Reading {
    /// Adds one row of a catch-up read: its kind, then five columns.
    fn add(&mut self, r: &Row) {
        let out = &mut self.caught;
        match r.int(0) {
            0 => {
                self.found = true;
                out.model_version = r.int(5);
            }
            1 => out.changes.push((r.int(5), r.text(1), r.text(2))),
            2 => out.rows.0.push(SnapUser {
                id: r.text(1),
                user_name: r.text(2),
                external_id: r.opt_text(3),
                active: r.int(5) != 0,
            }),
            3 => out.rows.1.push(snap_license(&r.skip(1))),
            4 => out.rows.2.push(snap_role(&r.skip(1))),
            _ => {}
        }
    }

    fn done(self) -> Option<CatchUp> {
        let mut c = self.caught;
        c.changes.sort_by_key(|c| c.0);
        self.found.then_some(c)
    }
}

impl Store {
    /// A tenant's model version, its changes after the outbox id `after` (at most `limit`)
    /// and the rows of the users they name, in one statement, so one round trip and one
    /// consistent read (`None`: no such tenant).
    pub(crate) async fn catch_up_rows(
        &self,
        tenant: &str,
        after: i64,
        limit: i64,
        with_roles: bool,
    ) -> StoreResult<Option<CatchUp>> {
        let roles = if with_roles {
            " UNION ALL SELECT 4, user_id, product, role, source, 0 FROM user_roles \
             WHERE tenant_id = $1 AND user_id IN (SELECT id FROM who)"
        } else {
            ""
        };
        let sql = format!(
            "WITH ch AS MATERIALIZED (SELECT id, CASE WHEN event_type = 'user.login' THEN 'Login' ELSE resource_type END AS kind, \
             resource_id FROM outbox WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3), \
             who AS MATERIALIZED (SELECT DISTINCT resource_id AS id FROM ch WHERE kind IN ('User', 'License')) \
             SELECT 0, NULL, NULL, NULL, NULL, model_version FROM audit_heads WHERE tenant_id = $1 \
             UNION ALL SELECT 1, kind, resource_id, NULL, NULL, id FROM ch \
             UNION ALL SELECT 2, id, user_name, external_id, NULL, active FROM scim_users \
             WHERE tenant_id = $1 AND id IN (SELECT id FROM who) \
             UNION ALL SELECT 3, user_id, product, plan, state, 0 FROM licenses \
             WHERE tenant_id = $1 AND user_id IN (SELECT id FROM who){roles}"
        );
        let rows = self
            .pool
            .fetch(&sql, &params![tenant, after, limit])
            .await?;
        let mut read = Reading::default();
        for r in &rows {
            read.add(r);
        }
        Ok(read.done())
    }

    /// [`Store::catch_up_rows`] of several tenants in one statement: each `(tenant, outbox
    /// id after, with roles)` gets its own `limit`. A tenant that no longer exists is absent.
    pub(crate) async fn catch_up_rows_of(
        &self,
        wants: &[(String, i64, bool)],
        limit: i64,
    ) -> StoreResult<std::collections::HashMap<String, CatchUp>> {
        let mut out = std::collections::HashMap::with_capacity(wants.len());
        for chunk in wants.chunks(CATCH_UP_BATCH) {
            // A few statement shapes only (each is prepared once per connection): the list is
            // padded to a power of two with a tenant id no tenant has.
            let width = chunk.len().next_power_of_two();
            let mut params = Vec::with_capacity(width * 4 + 1);
            let mut values = Vec::with_capacity(width);
            for i in 0..width {
                let (tenant, after, roles) = chunk
                    .get(i)
                    .map(|(t, a, r)| (t.as_str(), *a, *r))
                    .unwrap_or(("", 0, false));
                let n = params.len();
                values.push(format!(
                    "(CAST(${} AS BIGINT), CAST(${} AS TEXT), CAST(${} AS BIGINT), CAST(${} AS BIGINT))",
                    n + 1,
                    n + 2,
                    n + 3,
                    n + 4
                ));
                params.extend(params![i as i64, tenant, after, i64::from(roles)]);
            }
            params.push(crate::kernel::db::P::Int(limit));
            // Each tenant's changes after its own cursor, at most `limit`: on PostgreSQL a
            // lateral read of the outbox index per tenant (a generic plan of the window form
            // below scanned every change of the tenants); SQLite has no `LATERAL`.
            let changes = match self.backend() {
                crate::kernel::db::Backend::Postgres => format!(
                    "SELECT w.i, w.tenant_id, c.id, c.kind, c.resource_id FROM w CROSS JOIN LATERAL (\
                     SELECT o.id, CASE WHEN o.event_type = 'user.login' THEN 'Login' \
                     ELSE o.resource_type END AS kind, o.resource_id FROM outbox o \
                     WHERE o.tenant_id = w.tenant_id AND o.id > w.after ORDER BY o.id LIMIT ${}) c",
                    params.len()
                ),
                crate::kernel::db::Backend::Sqlite => format!(
                    "SELECT i, tenant_id, id, kind, resource_id FROM (\
                     SELECT w.i, o.tenant_id, o.id, CASE WHEN o.event_type = 'user.login' THEN 'Login' \
                     ELSE o.resource_type END AS kind, o.resource_id, \
                     row_number() OVER (PARTITION BY w.i ORDER BY o.id) AS n \
                     FROM w JOIN outbox o ON o.tenant_id = w.tenant_id AND o.id > w.after) x \
                     WHERE n <= ${}",
                    params.len()
                ),
            };
            let sql = format!(
                "WITH w(i, tenant_id, after, roles) AS (VALUES {}), \
                 ch AS MATERIALIZED ({changes}), \
                 who AS MATERIALIZED (SELECT DISTINCT i, tenant_id, resource_id AS id FROM ch \
                 WHERE kind IN ('User', 'License')) \
                 SELECT w.i, 0, NULL, NULL, NULL, NULL, h.model_version FROM w \
                 JOIN audit_heads h ON h.tenant_id = w.tenant_id \
                 UNION ALL SELECT i, 1, kind, resource_id, NULL, NULL, id FROM ch \
                 UNION ALL SELECT who.i, 2, u.id, u.user_name, u.external_id, NULL, u.active FROM who \
                 JOIN scim_users u ON u.tenant_id = who.tenant_id AND u.id = who.id \
                 UNION ALL SELECT who.i, 3, l.user_id, l.product, l.plan, l.state, 0 FROM who \
                 JOIN licenses l ON l.tenant_id = who.tenant_id AND l.user_id = who.id \
                 UNION ALL SELECT who.i, 4, r.user_id, r.product, r.role, r.source, 0 FROM who \
                 JOIN w ON w.i = who.i AND w.roles = 1 \
                 JOIN user_roles r ON r.tenant_id = who.tenant_id AND r.user_id = who.id",
                values.join(", "),
            );
            let mut read: Vec<Reading> = (0..width).map(|_| Reading::default()).collect();
            for r in self.pool.fetch(&sql, &params).await? {
                if let Some(slot) = usize::try_from(r.int(0)).ok().and_then(|i| read.get_mut(i)) {
                    slot.add(&r.skip(1));
                }
            }
            for ((tenant, _, _), read) in chunk.iter().zip(read) {
                if let Some(c) = read.done() {
                    out.insert(tenant.clone(), c);
                }
            }
        }
        Ok(out)
    }

    /// The next `limit` users of a tenant after the id `after` (in id order), their
    /// licenses and, `with_roles`, their roles.
    pub(crate) async fn snapshot_page(
        &self,
        tenant: &str,
        after: &str,
        limit: i64,
        with_roles: bool,
    ) -> StoreResult<SnapRows> {
        let users: Vec<SnapUser> = self
            .pool
            .scan(
                &format!("{USER_SQL} AND id > $2 ORDER BY id LIMIT $3"),
                &params![tenant, after, limit],
            )
            .await?
            .iter()
            .map(snap_user)
            .collect();
        let Some(last) = users.last() else {
            return Ok((users, Vec::new(), Vec::new()));
        };
        let licenses = self
            .pool
            .scan(
                &format!("{LICENSE_SQL} AND user_id > $2 AND user_id <= $3"),
                &params![tenant, after, last.id.as_str()],
            )
            .await?
            .iter()
            .map(snap_license)
            .collect();
        let roles = if with_roles {
            self.pool
                .scan(
                    &format!("{ROLE_SQL} AND user_id > $2 AND user_id <= $3"),
                    &params![tenant, after, last.id.as_str()],
                )
                .await?
                .iter()
                .map(snap_role)
                .collect()
        } else {
            Vec::new()
        };
        Ok((users, licenses, roles))
    }

    /// A tenant's model version (None: no such tenant) and its newest outbox id.
    pub(crate) async fn snapshot_marks(&self, tenant: &str) -> StoreResult<Option<(i64, i64)>> {
        Ok(self
            .snapshot_marks_of(&[tenant.to_string()])
            .await?
            .remove(tenant))
    }

    /// [`Store::snapshot_marks`] of many tenants in one query per 500: `(model version, newest
    /// outbox id)` by tenant; a tenant that no longer exists is absent.
    pub(crate) async fn snapshot_marks_of(
        &self,
        tenants: &[String],
    ) -> StoreResult<std::collections::HashMap<String, (i64, i64)>> {
        let mut out = std::collections::HashMap::with_capacity(tenants.len());
        for chunk in tenants.chunks(500) {
            let sql = format!(
                "SELECT h.tenant_id, h.model_version, \
                 (SELECT COALESCE(MAX(o.id), 0) FROM outbox o WHERE o.tenant_id = h.tenant_id) \
                 FROM audit_heads h WHERE h.tenant_id IN ({})",
                crate::kernel::db::placeholders(1, chunk.len())
            );
            let params: Vec<crate::kernel::db::P> =
                chunk.iter().map(crate::kernel::db::P::from).collect();
            for r in self.pool.fetch(&sql, &params).await? {
                out.insert(r.text(0), (r.int(1), r.int(2)));
            }
        }
        Ok(out)
    }

    /// Records when users were last seen (one statement per 200 users, one transaction).
    pub(crate) async fn record_activity(
        &self,
        seen: Vec<(String, String, String)>,
    ) -> StoreResult<()> {
        if seen.is_empty() {
            return Ok(());
        }
        self.write(move |tx| {
            tx.reaches_nothing_rendered();
            for chunk in seen.chunks(200) {
                let values: Vec<String> = (0..chunk.len())
                    .map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
                    .collect();
                let mut ps = Vec::with_capacity(chunk.len() * 3);
                for (tenant, user, at) in chunk {
                    ps.extend(params![tenant, user, at]);
                }
                tx.execute(
                    &format!(
                        "INSERT INTO user_activity (tenant_id, user_id, last_seen) VALUES {} \
                         ON CONFLICT (tenant_id, user_id) DO UPDATE SET last_seen = excluded.last_seen \
                         WHERE excluded.last_seen > user_activity.last_seen",
                        values.join(", ")
                    ),
                    &ps,
                )?;
            }
            Ok::<_, crate::kernel::store::StoreError>(())
        })
        .await
    }

    /// When a user was last seen by an application.
    pub async fn last_seen(&self, tenant: &str, user: &str) -> StoreResult<Option<String>> {
        Ok(self
            .pool
            .fetch_opt(
                "SELECT last_seen FROM user_activity WHERE tenant_id = $1 AND user_id = $2",
                &params![tenant, user],
            )
            .await?
            .map(|r| r.text(0)))
    }

    /// Token signing keys, newest first.
    pub(crate) async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRow>> {
        Ok(self
            .pool
            .fetch(
                "SELECT kid, seed, retired, published_until FROM signing_keys ORDER BY created DESC, kid DESC",
                &[],
            )
            .await?
            .iter()
            .map(|r| SigningKeyRow {
                kid: r.text(0),
                seed: r.text(1),
                retired: r.opt_text(2),
                published_until: r.opt_text(3),
            })
            .collect())
    }

    /// Adds a signing key and retires the others (kept published until `published_until`);
    /// keys whose publication has ended are removed.
    pub(crate) async fn rotate_signing_key(
        &self,
        actor: &crate::kernel::store::Actor,
        kid: &str,
        seed: &str,
        now: &str,
        published_until: &str,
    ) -> StoreResult<()> {
        let (actor, kid, seed, now, until) = (
            actor.clone(),
            kid.to_string(),
            seed.to_string(),
            now.to_string(),
            published_until.to_string(),
        );
        self.write(move |tx| {
            let retiring: Vec<String> = tx
                .fetch("SELECT kid FROM signing_keys WHERE retired IS NULL", &[])?
                .iter()
                .map(|r| r.text(0))
                .collect();
            tx.record_change(
                &actor,
                &now,
                crate::kernel::store::Change {
                    chain: crate::kernel::store::VENDOR,
                    action: "signing_key.rotate",
                    resource_type: "SigningKey",
                    resource_id: &kid,
                    before: Some(serde_json::json!({"current": retiring})),
                    after: Some(serde_json::json!({"current": kid, "retired_published_until": until})),
                },
            )?;
            tx.execute(
                "DELETE FROM signing_keys WHERE published_until IS NOT NULL AND published_until <= $1",
                &params![&now],
            )?;
            tx.execute(
                "UPDATE signing_keys SET retired = $1, published_until = $2 WHERE retired IS NULL",
                &params![&now, &until],
            )?;
            tx.execute(
                "INSERT INTO signing_keys (kid, seed, created) VALUES ($1, $2, $3)",
                &params![&kid, &seed, &now],
            )?;
            Ok::<_, crate::kernel::store::StoreError>(())
        })
        .await
    }
}
