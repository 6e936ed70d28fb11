//! Versioned migrations, applied at start. The schema is written once and specialised per
//! dialect; on PostgreSQL an advisory lock keeps several nodes from migrating at once.

use super::db::{Backend, StoreError, StoreResult, Tx};
use super::db::{P, Pool};

/// A step of a migration that SQL alone does not say once for both dialects.
type Then = fn(&mut Tx<'_>) -> StoreResult<()>;

/// Version, description, schema change, and what runs after it.
const MIGRATIONS: &[(i64, &str, &str, Option<Then>)] = &[
    (1, "initial schema", include_str!("sql/schema.sql"), None),
    (2, "licensing", include_str!("sql/licensing.sql"), None),
    (
        3,
        "billing and webhooks",
        include_str!("sql/billing.sql"),
        None,
    ),
    (
        4,
        "license history by chain",
        include_str!("sql/history.sql"),
        None,
    ),
    (
        5,
        "app keys, activity, signing keys",
        include_str!("sql/apps.sql"),
        None,
    ),
    (
        6,
        "seat counts in the tenant's head row",
        include_str!("sql/lines.sql"),
        Some(move_seat_lines),
    ),
    (7, "the vendor audit chain", "", Some(vendor_chain)),
    (8, "idle seats", include_str!("sql/idle.sql"), None),
    (9, "console sessions", include_str!("sql/console.sql"), None),
    (
        10,
        "usage history",
        include_str!("sql/usage_history.sql"),
        None,
    ),
    (
        11,
        "vendor-wide feed order",
        include_str!("sql/vendor_feed.sql"),
        Some(outbox_tx_index),
    ),
    (
        12,
        "vendor-wide webhooks",
        include_str!("sql/vendor_webhooks.sql"),
        None,
    ),
    (
        13,
        "who manages each subscription",
        include_str!("sql/owners.sql"),
        None,
    ),
    (14, "pins", include_str!("sql/pins.sql"), None),
    (
        15,
        "the deprovision brake",
        include_str!("sql/brake.sql"),
        None,
    ),
    (16, "idle reclaim", include_str!("sql/reclaim.sql"), None),
    (17, "seat imports", include_str!("sql/imports.sql"), None),
    (
        18,
        "scoped admin keys",
        include_str!("sql/admin_keys.sql"),
        None,
    ),
    (
        19,
        "roles and permissions",
        include_str!("sql/roles.sql"),
        None,
    ),
    (20, "OIDC sign-in", include_str!("sql/sso.sql"), None),
    (
        21,
        "the customer admin portal",
        include_str!("sql/portal.sql"),
        None,
    ),
    (
        22,
        "memberships read from their indexes; per-tenant indexes lead with the tenant",
        "",
        Some(memberships_clustered),
    ),
    (
        23,
        "the brake's held users versioned apart from the licensing model",
        include_str!("sql/held_version.sql"),
        None,
    ),
];

/// Migration 22: a group's members, and a user's groups, are read without visiting the
/// table row of each membership (a group PATCH answers with every member; every user
/// read finds the user's groups). On SQLite the table becomes clustered on its primary key
/// (`WITHOUT ROWID`), so `member_type` sits beside the key and the member index carries the
/// group. On PostgreSQL the member index carries the group; a group's members are still read
/// from the table (a second index on the primary key's columns would cost every write).
fn memberships_clustered(tx: &mut Tx<'_>) -> StoreResult<()> {
    let steps: &[&str] = match tx.backend() {
        Backend::Sqlite => &[
            "CREATE TABLE scim_group_members_clustered (tenant_id TEXT NOT NULL, group_id TEXT NOT NULL, \
             member_id TEXT NOT NULL, member_type TEXT NOT NULL, \
             PRIMARY KEY (tenant_id, group_id, member_id)) WITHOUT ROWID",
            "INSERT INTO scim_group_members_clustered (tenant_id, group_id, member_id, member_type) \
             SELECT tenant_id, group_id, member_id, member_type FROM scim_group_members",
            "DROP TABLE scim_group_members",
            "ALTER TABLE scim_group_members_clustered RENAME TO scim_group_members",
            "CREATE INDEX scim_group_members_member ON scim_group_members (tenant_id, member_id)",
        ],
        Backend::Postgres => &[
            "DROP INDEX scim_group_members_member",
            "CREATE INDEX scim_group_members_member ON scim_group_members (tenant_id, member_id) INCLUDE (group_id)",
        ],
    };
    for sql in steps {
        tx.execute(sql, &[])?;
    }
    // The one index of a per-tenant table that did not lead with the tenant (the dispatcher's
    // ordering check, which names the tenant): see ARCHITECTURE.md, "Keyed by tenant".
    tx.execute("DROP INDEX deliveries_order", &[])?;
    tx.execute(
        "CREATE INDEX deliveries_order ON deliveries (tenant_id, webhook_id, order_key, id)",
        &[],
    )?;
    Ok(())
}

/// Migration 6: copies each tenant's seat counts from `lic_lines` into its head row
/// (`{"product": {"active": …, "waiting": …, "next_queue": …}}`), then drops the table.
fn move_seat_lines(tx: &mut Tx<'_>) -> StoreResult<()> {
    use std::collections::BTreeMap;
    let mut per_tenant: BTreeMap<String, serde_json::Map<String, serde_json::Value>> =
        BTreeMap::new();
    for r in tx.fetch(
        "SELECT tenant_id, product, active, waiting, next_queue FROM lic_lines",
        &[],
    )? {
        per_tenant.entry(r.text(0)).or_default().insert(
            r.text(1),
            serde_json::json!({
                "active": r.int(2).max(0),
                "waiting": r.int(3).max(0),
                "next_queue": r.int(4),
            }),
        );
    }
    for (tenant, lines) in per_tenant {
        let text = serde_json::Value::Object(lines).to_string();
        tx.execute(
            "UPDATE audit_heads SET seat_lines = $2 WHERE tenant_id = $1",
            &crate::params![&tenant, &text],
        )?;
    }
    tx.execute("DROP TABLE lic_lines", &[])?;
    Ok(())
}

/// Migration 11: on PostgreSQL, the index the vendor feed reads in (on SQLite every `tx` is 0
/// and the primary key is the order; an index there would only cost every event written).
fn outbox_tx_index(tx: &mut Tx<'_>) -> StoreResult<()> {
    if !tx.skip_locked_clause("outbox").is_empty() {
        tx.execute("CREATE INDEX outbox_tx ON outbox (tx, id)", &[])?;
    }
    Ok(())
}

/// Migration 7: the tip of the vendor chain, which records actions that belong to no tenant.
fn vendor_chain(tx: &mut Tx<'_>) -> StoreResult<()> {
    tx.execute(
        "INSERT INTO audit_heads (tenant_id, seq, hash) VALUES ($1, 0, $2)",
        &crate::params![super::chain::VENDOR, super::chain::GENESIS],
    )?;
    Ok(())
}

/// An arbitrary constant naming seatkeeper's migration lock.
const PG_MIGRATION_LOCK: i64 = 0x5ea7_6ee9;

fn specialise(sql: &str, backend: Backend) -> String {
    let (text, id_pk, json, without_rowid) = match backend {
        Backend::Sqlite => (
            "TEXT",
            "INTEGER PRIMARY KEY AUTOINCREMENT",
            "TEXT",
            "WITHOUT ROWID",
        ),
        Backend::Postgres => ("TEXT COLLATE \"C\"", "BIGSERIAL PRIMARY KEY", "TEXT", ""),
    };
    let txid = match backend {
        Backend::Sqlite => "0",
        Backend::Postgres => "(pg_current_xact_id()::text::bigint)",
    };
    sql.replace("{TEXT}", text)
        .replace("{TXID}", txid)
        .replace("{ID_PK}", id_pk)
        .replace("{JSON}", json)
        .replace("{WITHOUT_ROWID}", without_rowid)
}

fn statements(sql: &str) -> Vec<String> {
    // Comments go first: they may contain semicolons.
    let body: String = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    body.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The schema version this binary writes and reads.
pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// A database at a version this binary does not know was migrated by a newer seatkeeper:
/// reading or writing it could lose what the newer version keeps.
fn refuse_newer(applied: &[i64]) -> StoreResult<()> {
    let newest = applied.iter().copied().max().unwrap_or(0);
    if newest > latest()
        || applied
            .iter()
            .any(|v| !MIGRATIONS.iter().any(|m| m.0 == *v))
    {
        return Err(StoreError::Schema(format!(
            "the database is at schema version {newest}, newer than this binary's {}: run the \
             seatkeeper release that migrated it, or a newer one",
            latest()
        )));
    }
    Ok(())
}

/// The versions applied to the database (none on a new one).
async fn applied(pool: &Pool, backend: Backend) -> StoreResult<Vec<i64>> {
    let catalogue = match backend {
        Backend::Sqlite => {
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        }
        Backend::Postgres => {
            "SELECT 1 FROM information_schema.tables \
             WHERE table_name = 'schema_migrations' AND table_schema = current_schema()"
        }
    };
    if pool.fetch(catalogue, &[]).await?.is_empty() {
        return Ok(Vec::new());
    }
    Ok(pool
        .fetch("SELECT version FROM schema_migrations", &[])
        .await?
        .iter()
        .map(|r| r.int(0))
        .collect())
}

/// Checks, without changing anything, that the database is at this binary's version.
pub(super) async fn check(pool: &Pool, backend: Backend) -> StoreResult<()> {
    let applied = applied(pool, backend).await?;
    refuse_newer(&applied)?;
    let at = applied.iter().copied().max().unwrap_or(0);
    if at < latest() {
        return Err(StoreError::Schema(if at == 0 {
            "the database has no seatkeeper schema yet: run `seatkeeper migrate` (or start \
             `seatkeeper serve`) first"
                .to_string()
        } else {
            format!(
                "the database is at schema version {at}; this binary needs {}: run \
                 `seatkeeper migrate` (or start `seatkeeper serve`) first",
                latest()
            )
        }));
    }
    Ok(())
}

/// Applies pending migrations (refusing a database newer than this binary); returns the
/// versions it applied.
pub(super) async fn run(pool: &Pool, backend: Backend) -> StoreResult<Vec<i64>> {
    pool.write(move |tx| {
        if backend == Backend::Postgres {
            // Held until this transaction ends: other nodes wait here, then see the new version.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[P::Int(PG_MIGRATION_LOCK)])?;
        }
        tx.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL)", &[])?;
        let applied: Vec<i64> = tx.fetch("SELECT version FROM schema_migrations", &[])?.iter().map(|r| r.int(0)).collect();
        refuse_newer(&applied)?;
        let mut done = Vec::new();
        for (version, description, sql, then) in MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            for stmt in statements(&specialise(sql, backend)) {
                tx.execute(&stmt, &[])?;
            }
            if let Some(then) = then {
                then(tx)?;
            }
            tx.execute("INSERT INTO schema_migrations (version, description) VALUES ($1, $2)", &[P::Int(*version), P::Text((*description).into())])?;
            done.push(*version);
        }
        Ok(done)
    })
    .await
}
