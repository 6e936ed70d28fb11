//! Users, groups and memberships.

use std::collections::HashMap;

use scim::sql::{Column, ColumnKind, ColumnMap, SqlParam, SqlWhere};
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{Any, Row};

use super::{Store, StoreError, StoreResult, Tx, map_db_err};

/// The two SCIM resource kinds the directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Users.
    User,
    /// Groups.
    Group,
}

impl Kind {
    fn table(self) -> &'static str {
        match self {
            Kind::User => "scim_users",
            Kind::Group => "scim_groups",
        }
    }

    /// The SCIM resource type name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::User => "User",
            Kind::Group => "Group",
        }
    }
}

/// A resource as stored: the canonical document (no `id`, `meta`, `groups` or `members`) and
/// the server-owned fields.
#[derive(Debug, Clone)]
pub struct StoredResource {
    /// The resource id.
    pub id: String,
    /// The canonical document.
    pub doc: Value,
    /// `meta.created`.
    pub created: String,
    /// `meta.lastModified`.
    pub last_modified: String,
    /// `meta.version` counter (ETag `W/"n"`).
    pub version: i64,
}

/// A group member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member's id.
    pub id: String,
    /// `User` or `Group`.
    pub kind: String,
}

/// A group a user belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRef {
    /// The user.
    pub user_id: String,
    /// The group.
    pub group_id: String,
    /// The group's displayName.
    pub display: String,
    /// Direct member, or only through nested groups.
    pub direct: bool,
}

/// Index columns extracted from a canonical document.
#[derive(Debug, Clone, Default)]
pub struct IndexCols {
    /// userName or displayName (groups).
    pub name: String,
    /// External id.
    pub external_id: Option<String>,
    /// displayName (users).
    pub display_name: Option<String>,
    /// active (users).
    pub active: bool,
    /// Lower-cased email values (users).
    pub emails: Vec<String>,
}

impl IndexCols {
    /// Extracts the indexed values of a canonical document.
    pub fn of(kind: Kind, doc: &Value) -> IndexCols {
        let s = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_string);
        match kind {
            Kind::User => {
                let mut emails: Vec<String> = doc
                    .get("emails")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|e| e.get("value").and_then(Value::as_str))
                            .map(str::to_lowercase)
                            .collect()
                    })
                    .unwrap_or_default();
                emails.sort();
                emails.dedup();
                IndexCols {
                    name: s("userName").unwrap_or_default(),
                    external_id: s("externalId"),
                    display_name: s("displayName"),
                    active: doc.get("active").and_then(Value::as_bool).unwrap_or(true),
                    emails,
                }
            }
            Kind::Group => IndexCols {
                name: s("displayName").unwrap_or_default(),
                external_id: s("externalId"),
                ..Default::default()
            },
        }
    }
}

/// The columns the filter engine may translate to SQL, per kind. The table alias is `r`.
pub struct Columns(pub Kind);

impl ColumnMap for Columns {
    fn column(&self, path: &scim::filter::Resolved) -> Option<Column> {
        if path.location != scim::schema::Location::Core {
            return None;
        }
        let text = |expr: &str, folded: bool| Column {
            expr: expr.into(),
            kind: ColumnKind::Text { folded },
            exists: None,
        };
        let sub = path.sub.map(|s| s.name);
        Some(match (self.0, path.top.name, sub) {
            (_, "id", None) => text("r.id", false),
            (_, "externalId", None) => text("r.external_id", false),
            (_, "meta", Some("lastModified")) => Column { expr: "r.last_modified".into(), kind: ColumnKind::Timestamp, exists: None },
            (_, "meta", Some("created")) => Column { expr: "r.created".into(), kind: ColumnKind::Timestamp, exists: None },
            (_, "displayName", None) => text("r.display_name_lc", true),
            (Kind::User, "userName", None) => text("r.user_name_lc", true),
            (Kind::User, "active", None) => Column { expr: "r.active".into(), kind: ColumnKind::Bool, exists: None },
            (Kind::User, "emails", Some("value")) => Column {
                expr: "e.value_lc".into(),
                kind: ColumnKind::Text { folded: true },
                exists: Some("EXISTS (SELECT 1 FROM scim_user_emails e WHERE e.tenant_id = r.tenant_id AND e.user_id = r.id AND {})".into()),
            },
            (Kind::Group, "members", Some("value")) => Column {
                expr: "m.member_id".into(),
                kind: ColumnKind::Text { folded: false },
                exists: Some("EXISTS (SELECT 1 FROM scim_group_members m WHERE m.tenant_id = r.tenant_id AND m.group_id = r.id AND {})".into()),
            },
            _ => return None,
        })
    }
}

/// Which slice of a list to fetch.
#[derive(Debug, Clone)]
pub enum Page {
    /// Everything that matches (for in-memory filtering and sorting).
    All,
    /// `OFFSET`/`LIMIT` in the given order.
    Offset {
        /// Rows to skip.
        offset: i64,
        /// Rows to return.
        limit: i64,
    },
    /// Keyset: ids after this one (in id order), at most `limit`.
    After {
        /// Last id seen.
        after: Option<String>,
        /// Rows to return.
        limit: i64,
    },
}

/// SQL ordering for a list.
#[derive(Debug, Clone)]
pub struct Order {
    /// Column expression (alias `r`), or `None` for id order.
    pub column: Option<String>,
    /// Descending.
    pub descending: bool,
}

type Q<'q> = sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>;

fn bind_params<'q>(mut q: Q<'q>, params: &'q [SqlParam]) -> Q<'q> {
    for p in params {
        q = match p {
            SqlParam::Text(s) => q.bind(s.as_str()),
            SqlParam::Int(i) => q.bind(*i),
        };
    }
    q
}

fn resource_from_row(r: &AnyRow) -> StoreResult<StoredResource> {
    let doc: String = r.get(1);
    Ok(StoredResource {
        id: r.get(0),
        doc: serde_json::from_str(&doc).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        created: r.get(2),
        last_modified: r.get(3),
        version: r.get(4),
    })
}

fn placeholders(start: usize, n: usize) -> String {
    (start..start + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    /// One resource by id, within the tenant.
    pub async fn get_resource(
        &self,
        kind: Kind,
        tenant: &str,
        id: &str,
    ) -> StoreResult<Option<StoredResource>> {
        let sql = format!(
            "SELECT id, doc, created, last_modified, version FROM {} WHERE tenant_id = $1 AND id = $2",
            kind.table()
        );
        let row = sqlx::query(&sql)
            .bind(tenant)
            .bind(id)
            .fetch_optional(self.reader())
            .await?;
        row.as_ref().map(resource_from_row).transpose()
    }

    /// A page of resources matching a translated filter, and the total count when asked.
    pub async fn list_resources(
        &self,
        kind: Kind,
        tenant: &str,
        filter: &SqlWhere,
        order: &Order,
        page: &Page,
        with_total: bool,
    ) -> StoreResult<(Vec<StoredResource>, Option<i64>)> {
        let table = kind.table();
        let n = filter.params.len();
        let total = if with_total {
            let sql = format!(
                "SELECT COUNT(*) FROM {table} r WHERE r.tenant_id = $1 AND {}",
                filter.sql
            );
            let q = bind_params(sqlx::query(&sql).bind(tenant), &filter.params);
            Some(q.fetch_one(self.reader()).await?.get::<i64, _>(0))
        } else {
            None
        };
        if matches!(
            page,
            Page::Offset { limit: 0, .. } | Page::After { limit: 0, .. }
        ) {
            return Ok((Vec::new(), total));
        }
        let dir = if order.descending { "DESC" } else { "ASC" };
        let order_sql = match &order.column {
            Some(c) => format!("ORDER BY ({c} IS NULL), {c} {dir}, r.id"),
            None => format!("ORDER BY r.id {dir}"),
        };
        let mut sql = format!(
            "SELECT r.id, r.doc, r.created, r.last_modified, r.version FROM {table} r WHERE r.tenant_id = $1 AND {}",
            filter.sql
        );
        let rows = match page {
            Page::All => {
                sql.push(' ');
                sql.push_str(&order_sql);
                bind_params(sqlx::query(&sql).bind(tenant), &filter.params)
                    .fetch_all(self.reader())
                    .await?
            }
            Page::Offset { offset, limit } => {
                sql.push_str(&format!(" {order_sql} LIMIT ${} OFFSET ${}", n + 2, n + 3));
                bind_params(sqlx::query(&sql).bind(tenant), &filter.params)
                    .bind(*limit)
                    .bind(*offset)
                    .fetch_all(self.reader())
                    .await?
            }
            Page::After { after, limit } => {
                sql.push_str(&format!(
                    " AND r.id > ${} ORDER BY r.id LIMIT ${}",
                    n + 2,
                    n + 3
                ));
                bind_params(sqlx::query(&sql).bind(tenant), &filter.params)
                    .bind(after.clone().unwrap_or_default())
                    .bind(*limit)
                    .fetch_all(self.reader())
                    .await?
            }
        };
        let list = rows
            .iter()
            .map(resource_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok((list, total))
    }

    /// The members of a group, with display names.
    pub async fn group_members(&self, tenant: &str, group_id: &str) -> StoreResult<Vec<Member>> {
        let rows = sqlx::query(
            "SELECT member_id, member_type FROM scim_group_members WHERE tenant_id = $1 AND group_id = $2 ORDER BY member_id",
        )
        .bind(tenant)
        .bind(group_id)
        .fetch_all(self.reader())
        .await?;
        Ok(rows
            .iter()
            .map(|r| Member {
                id: r.get(0),
                kind: r.get(1),
            })
            .collect())
    }

    /// The groups of each user, direct and through nested groups.
    pub async fn groups_of_users(
        &self,
        tenant: &str,
        users: &[String],
    ) -> StoreResult<Vec<GroupRef>> {
        let mut out = Vec::new();
        for chunk in users.chunks(500) {
            let sql = format!(
                "WITH RECURSIVE anc(user_id, group_id, depth) AS ( \
                   SELECT member_id, group_id, 0 FROM scim_group_members WHERE tenant_id = $1 AND member_id IN ({}) \
                   UNION \
                   SELECT anc.user_id, m.group_id, 1 FROM scim_group_members m JOIN anc ON m.tenant_id = $1 AND m.member_id = anc.group_id \
                 ) \
                 SELECT anc.user_id, anc.group_id, MIN(anc.depth), g.display_name FROM anc \
                 JOIN scim_groups g ON g.tenant_id = $1 AND g.id = anc.group_id \
                 GROUP BY anc.user_id, anc.group_id, g.display_name ORDER BY anc.user_id, g.display_name",
                placeholders(2, chunk.len())
            );
            let mut q = sqlx::query(&sql).bind(tenant);
            for u in chunk {
                q = q.bind(u.as_str());
            }
            for r in q.fetch_all(self.reader()).await? {
                out.push(GroupRef {
                    user_id: r.get(0),
                    group_id: r.get(1),
                    direct: r.get::<i64, _>(2) == 0,
                    display: r.get(3),
                });
            }
        }
        Ok(out)
    }
}

impl Tx {
    /// Reads a resource inside the transaction.
    pub async fn get_resource(
        &mut self,
        kind: Kind,
        tenant: &str,
        id: &str,
    ) -> StoreResult<Option<StoredResource>> {
        let sql = format!(
            "SELECT id, doc, created, last_modified, version FROM {} WHERE tenant_id = $1 AND id = $2",
            kind.table()
        );
        let row = sqlx::query(&sql)
            .bind(tenant)
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.as_ref().map(resource_from_row).transpose()
    }

    /// Inserts a new resource. A duplicate userName/displayName is [`StoreError::Unique`].
    pub async fn insert_resource(
        &mut self,
        kind: Kind,
        tenant: &str,
        res: &StoredResource,
    ) -> StoreResult<()> {
        let cols = IndexCols::of(kind, &res.doc);
        let doc = res.doc.to_string();
        match kind {
            Kind::User => {
                sqlx::query(
                    "INSERT INTO scim_users (tenant_id, id, user_name, user_name_lc, external_id, display_name, \
                     display_name_lc, active, created, last_modified, version, doc) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                )
                .bind(tenant)
                .bind(&res.id)
                .bind(&cols.name)
                .bind(cols.name.to_lowercase())
                .bind(&cols.external_id)
                .bind(&cols.display_name)
                .bind(cols.display_name.as_ref().map(|d| d.to_lowercase()))
                .bind(i64::from(cols.active))
                .bind(&res.created)
                .bind(&res.last_modified)
                .bind(res.version)
                .bind(&doc)
                .execute(&mut *self.tx)
                .await
                .map_err(map_db_err)?;
                self.write_emails(tenant, &res.id, &cols.emails).await?;
            }
            Kind::Group => {
                sqlx::query(
                    "INSERT INTO scim_groups (tenant_id, id, display_name, display_name_lc, external_id, \
                     created, last_modified, version, doc) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(tenant)
                .bind(&res.id)
                .bind(&cols.name)
                .bind(cols.name.to_lowercase())
                .bind(&cols.external_id)
                .bind(&res.created)
                .bind(&res.last_modified)
                .bind(res.version)
                .bind(&doc)
                .execute(&mut *self.tx)
                .await
                .map_err(map_db_err)?;
            }
        }
        Ok(())
    }

    async fn write_emails(
        &mut self,
        tenant: &str,
        user: &str,
        emails: &[String],
    ) -> StoreResult<()> {
        if emails.is_empty() {
            return Ok(());
        }
        let values = (0..emails.len())
            .map(|i| format!("($1, $2, ${})", i + 3))
            .collect::<Vec<_>>()
            .join(", ");
        let sql =
            format!("INSERT INTO scim_user_emails (tenant_id, user_id, value_lc) VALUES {values}");
        let mut q = sqlx::query(&sql).bind(tenant).bind(user);
        for e in emails {
            q = q.bind(e.as_str());
        }
        q.execute(&mut *self.tx).await?;
        Ok(())
    }

    /// Replaces a resource's document if its version is still `expected`; returns whether it
    /// was (optimistic concurrency: a lost race is retried by the engine).
    pub async fn update_resource(
        &mut self,
        kind: Kind,
        tenant: &str,
        res: &StoredResource,
        expected: i64,
    ) -> StoreResult<bool> {
        let cols = IndexCols::of(kind, &res.doc);
        let doc = res.doc.to_string();
        let r = match kind {
            Kind::User => sqlx::query(
                "UPDATE scim_users SET user_name = $3, user_name_lc = $4, external_id = $5, display_name = $6, \
                 display_name_lc = $7, active = $8, last_modified = $9, version = $10, doc = $11 \
                 WHERE tenant_id = $1 AND id = $2 AND version = $12",
            )
            .bind(tenant)
            .bind(&res.id)
            .bind(&cols.name)
            .bind(cols.name.to_lowercase())
            .bind(&cols.external_id)
            .bind(&cols.display_name)
            .bind(cols.display_name.as_ref().map(|d| d.to_lowercase()))
            .bind(i64::from(cols.active))
            .bind(&res.last_modified)
            .bind(res.version)
            .bind(&doc)
            .bind(expected)
            .execute(&mut *self.tx)
            .await
            .map_err(map_db_err)?,
            Kind::Group => sqlx::query(
                "UPDATE scim_groups SET display_name = $3, display_name_lc = $4, external_id = $5, \
                 last_modified = $6, version = $7, doc = $8 WHERE tenant_id = $1 AND id = $2 AND version = $9",
            )
            .bind(tenant)
            .bind(&res.id)
            .bind(&cols.name)
            .bind(cols.name.to_lowercase())
            .bind(&cols.external_id)
            .bind(&res.last_modified)
            .bind(res.version)
            .bind(&doc)
            .bind(expected)
            .execute(&mut *self.tx)
            .await
            .map_err(map_db_err)?,
        };
        if r.rows_affected() != 1 {
            return Ok(false);
        }
        if kind == Kind::User {
            sqlx::query("DELETE FROM scim_user_emails WHERE tenant_id = $1 AND user_id = $2")
                .bind(tenant)
                .bind(&res.id)
                .execute(&mut *self.tx)
                .await?;
            self.write_emails(tenant, &res.id, &cols.emails).await?;
        }
        Ok(true)
    }

    /// Deletes a resource and every membership that names it; returns whether it existed.
    pub async fn delete_resource(
        &mut self,
        kind: Kind,
        tenant: &str,
        id: &str,
    ) -> StoreResult<bool> {
        let sql = format!(
            "DELETE FROM {} WHERE tenant_id = $1 AND id = $2",
            kind.table()
        );
        let r = sqlx::query(&sql)
            .bind(tenant)
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        if r.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM scim_group_members WHERE tenant_id = $1 AND member_id = $2")
            .bind(tenant)
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        match kind {
            Kind::User => {
                sqlx::query("DELETE FROM scim_user_emails WHERE tenant_id = $1 AND user_id = $2")
                    .bind(tenant)
                    .bind(id)
                    .execute(&mut *self.tx)
                    .await?;
            }
            Kind::Group => {
                sqlx::query(
                    "DELETE FROM scim_group_members WHERE tenant_id = $1 AND group_id = $2",
                )
                .bind(tenant)
                .bind(id)
                .execute(&mut *self.tx)
                .await?;
            }
        }
        Ok(true)
    }

    /// Groups that contain `id` as a member (so their `lastModified` can move).
    pub async fn groups_containing(&mut self, tenant: &str, id: &str) -> StoreResult<Vec<String>> {
        let rows = sqlx::query(
            "SELECT group_id FROM scim_group_members WHERE tenant_id = $1 AND member_id = $2",
        )
        .bind(tenant)
        .bind(id)
        .fetch_all(&mut *self.tx)
        .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Current member ids of a group.
    pub async fn member_ids(
        &mut self,
        tenant: &str,
        group: &str,
    ) -> StoreResult<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT member_id, member_type FROM scim_group_members WHERE tenant_id = $1 AND group_id = $2 ORDER BY member_id")
            .bind(tenant)
            .bind(group)
            .fetch_all(&mut *self.tx)
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Which of these ids are users and which are groups of the tenant.
    pub async fn classify_ids(
        &mut self,
        tenant: &str,
        ids: &[String],
    ) -> StoreResult<HashMap<String, &'static str>> {
        let mut out = HashMap::new();
        for chunk in ids.chunks(500) {
            for (table, kind) in [("scim_users", "User"), ("scim_groups", "Group")] {
                let sql = format!(
                    "SELECT id FROM {table} WHERE tenant_id = $1 AND id IN ({})",
                    placeholders(2, chunk.len())
                );
                let mut q = sqlx::query(&sql).bind(tenant);
                for id in chunk {
                    q = q.bind(id.as_str());
                }
                for r in q.fetch_all(&mut *self.tx).await? {
                    out.insert(r.get::<String, _>(0), kind);
                }
            }
        }
        Ok(out)
    }

    /// The group and every group that contains it, directly or not.
    pub async fn group_ancestors(&mut self, tenant: &str, group: &str) -> StoreResult<Vec<String>> {
        let rows = sqlx::query(
            // Seeded from stored rows (not a bare parameter) so both dialects type it alike.
            "WITH RECURSIVE anc(id) AS (SELECT group_id FROM scim_group_members WHERE tenant_id = $1 AND member_id = $2 UNION \
             SELECT m.group_id FROM scim_group_members m JOIN anc ON m.tenant_id = $1 AND m.member_id = anc.id) \
             SELECT id FROM anc",
        )
        .bind(tenant)
        .bind(group)
        .fetch_all(&mut *self.tx)
        .await?;
        let mut out: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        out.push(group.to_string());
        Ok(out)
    }

    /// Adds members (id, type) to a group.
    pub async fn add_members(
        &mut self,
        tenant: &str,
        group: &str,
        members: &[(String, String)],
    ) -> StoreResult<()> {
        for chunk in members.chunks(300) {
            let values = (0..chunk.len())
                .map(|i| format!("($1, $2, ${}, ${})", 3 + 2 * i, 4 + 2 * i))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO scim_group_members (tenant_id, group_id, member_id, member_type) VALUES {values} \
                 ON CONFLICT (tenant_id, group_id, member_id) DO NOTHING"
            );
            let mut q = sqlx::query(&sql).bind(tenant).bind(group);
            for (id, ty) in chunk {
                q = q.bind(id.as_str()).bind(ty.as_str());
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// Removes members from a group.
    pub async fn remove_members(
        &mut self,
        tenant: &str,
        group: &str,
        ids: &[String],
    ) -> StoreResult<()> {
        for chunk in ids.chunks(500) {
            let sql = format!(
                "DELETE FROM scim_group_members WHERE tenant_id = $1 AND group_id = $2 AND member_id IN ({})",
                placeholders(3, chunk.len())
            );
            let mut q = sqlx::query(&sql).bind(tenant).bind(group);
            for id in chunk {
                q = q.bind(id.as_str());
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// Moves a resource's `lastModified` and version without changing its document.
    pub async fn touch(
        &mut self,
        kind: Kind,
        tenant: &str,
        id: &str,
        now: &str,
    ) -> StoreResult<()> {
        let sql = format!(
            "UPDATE {} SET last_modified = $3, version = version + 1 WHERE tenant_id = $1 AND id = $2",
            kind.table()
        );
        sqlx::query(&sql)
            .bind(tenant)
            .bind(id)
            .bind(now)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}
