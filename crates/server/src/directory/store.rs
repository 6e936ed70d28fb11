//! Users, groups and memberships.

use std::collections::HashMap;

use scim::sql::{Column, ColumnKind, ColumnMap, SqlWhere};
use serde_json::Value;

use crate::kernel::db::{P, Row, RowsInsert, placeholders, tuples};
use crate::kernel::store::{Store, StoreError, StoreResult, Tx};
use crate::licenses::service::LicenseRow;

/// A user with its groups, its licenses and the catalogue products they name.
pub(crate) type UserWithRelated = (
    StoredResource,
    Vec<GroupRef>,
    Vec<LicenseRow>,
    Vec<licensing::model::Product>,
);

/// A group, which of some ids are its members already (id and type, by id), and which of
/// them are users or groups of the tenant.
pub(crate) type GroupForMembers = (
    StoredResource,
    Vec<(String, String)>,
    HashMap<String, &'static str>,
);

/// Ids a member change may name for [`Tx::get_group_for_members`] (more are read in chunks).
pub(crate) const NAMED_AT_ONCE: usize = 100;

/// What a user shows beside its own document: its groups, its licenses and their products.
pub(crate) type UserRelated = (
    Vec<GroupRef>,
    Vec<LicenseRow>,
    Vec<licensing::model::Product>,
);
use crate::params;

/// The two SCIM resource kinds the directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Users.
    User,
    /// Groups.
    Group,
}

impl Kind {
    pub(crate) fn table(self) -> &'static str {
        match self {
            Kind::User => "scim_users",
            Kind::Group => "scim_groups",
        }
    }

    /// The SCIM resource type name.
    pub(crate) fn name(self) -> &'static str {
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
    pub(crate) fn of(kind: Kind, doc: &Value) -> IndexCols {
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
        if path.location == scim::schema::Location::Extension(scim::schema::LICENSING_USER_SCHEMA) {
            // Licenses live in their own table: `licenses.state eq "waitlisted"` is an
            // indexed EXISTS, not a scan of rendered users.
            let column = match (path.top.name, path.sub.map(|s| s.name)) {
                ("licenses", Some("product")) => "l.product",
                ("licenses", Some("plan")) => "l.plan",
                ("licenses", Some("state")) => "l.state",
                _ => return None,
            };
            return Some(Column {
                expr: column.into(),
                kind: ColumnKind::Text { folded: false },
                exists: Some("EXISTS (SELECT 1 FROM licenses l WHERE l.tenant_id = r.tenant_id AND l.user_id = r.id AND {})".into()),
            });
        }
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

/// The tail of a branch of [`related_branches`]' statements that has no license columns.
const NO_TAIL: &str =
    "CAST(NULL AS TEXT), CAST(NULL AS BIGINT), CAST(NULL AS TEXT), CAST(NULL AS TEXT)";

/// UNION ALL branches, tagged 2 and 3, of the licenses of the users `user_id {users}` names
/// and of the products those licenses are of, in a statement of 11 columns: the tag, six the
/// statement's own branches use (the seventh, a page's sort key, NULL here), then
/// [`NO_TAIL`]'s four. [`related_of`] reads them back.
fn related_branches(users: &str) -> String {
    format!(
        "{} \
         UNION ALL \
         SELECT 3, p.key, p.name, p.plans, p.roles, 0, NULL, {NO_TAIL} FROM lic_products p \
         WHERE p.key IN (SELECT product FROM licenses WHERE tenant_id = $1 AND user_id {users})",
        licenses_branch(users)
    )
}

/// The licenses branch (tag 2) of [`related_branches`].
fn licenses_branch(users: &str) -> String {
    format!(
        "SELECT 2, product, plan, state, changed, queue, NULL, reason, audit_seq, explain, user_id \
         FROM licenses WHERE tenant_id = $1 AND user_id {users}"
    )
}

/// The licenses (by user, then product) and products (by key) of [`related_branches`]' rows.
fn related_of(rows: &[Row]) -> StoreResult<(Vec<LicenseRow>, Vec<licensing::model::Product>)> {
    let mut licenses: Vec<LicenseRow> = rows
        .iter()
        .filter(|r| r.int(0) == 2)
        .map(|r| LicenseRow {
            user_id: r.text(10),
            product: r.text(1),
            plan: r.text(2),
            state: r.text(3),
            queue: r.int(5),
            changed: r.text(4),
            reason: r.text(7),
            explain: r.text(9),
            audit_seq: r.opt_int(8),
        })
        .collect();
    licenses.sort_by(|a, b| {
        a.user_id
            .cmp(&b.user_id)
            .then_with(|| a.product.cmp(&b.product))
    });
    let mut products = rows
        .iter()
        .filter(|r| r.int(0) == 3)
        .map(|r| crate::licenses::store::product_from_row(&r.skip(1)))
        .collect::<StoreResult<Vec<_>>>()?;
    products.sort_by(|a, b| a.key.cmp(&b.key));
    Ok((licenses, products))
}

/// The groups (direct and nested) of user `$2`, tagged 1: a group's id, its name, and its
/// depth (0: direct) in the sixth column.
const USER_GROUPS_CTE: &str = "WITH RECURSIVE anc(group_id, depth) AS ( \
       SELECT group_id, 0 FROM scim_group_members WHERE tenant_id = $1 AND member_id = $2 \
       UNION \
       SELECT m.group_id, 1 FROM scim_group_members m JOIN anc ON m.tenant_id = $1 AND m.member_id = anc.group_id) ";

/// A user, its groups, its licenses and their products, in one statement of
/// [`related_branches`]' shape.
static GET_USER_WITH_RELATED: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{USER_GROUPS_CTE} \
         SELECT 0, id, doc, created, last_modified, version, NULL, {NO_TAIL} FROM scim_users WHERE tenant_id = $1 AND id = $2 \
         UNION ALL {}",
        user_related_branches()
    )
});

/// What a user shows beside its own document, as [`GET_USER_WITH_RELATED`] reads it.
static USER_RELATED: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{USER_GROUPS_CTE} {}", user_related_branches()));

fn user_related_branches() -> String {
    format!(
        "SELECT 1, g.id, g.display_name, '', '', MIN(anc.depth), NULL, {NO_TAIL} FROM anc \
         JOIN scim_groups g ON g.tenant_id = $1 AND g.id = anc.group_id GROUP BY g.id, g.display_name \
         UNION ALL {}",
        related_branches("= $2")
    )
}

/// The groups of user `id` in rows of [`user_related_branches`], by name.
fn user_groups_of(rows: &[Row], id: &str) -> Vec<GroupRef> {
    let mut groups: Vec<GroupRef> = rows
        .iter()
        .filter(|r| r.int(0) == 1)
        .map(|r| GroupRef {
            user_id: id.to_string(),
            group_id: r.text(1),
            display: r.text(2),
            direct: r.int(5) == 0,
        })
        .collect();
    groups.sort_by(|a, b| {
        a.display
            .cmp(&b.display)
            .then_with(|| a.group_id.cmp(&b.group_id))
    });
    groups
}

/// A user (tagged 0) and its licenses, in [`related_branches`]' shape.
static USER_WITH_LICENSES: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT 0, id, doc, created, last_modified, version, NULL, {NO_TAIL} FROM scim_users WHERE tenant_id = $1 AND id = $2 \
         UNION ALL {}",
        licenses_branch("= $2")
    )
});

/// A page of a list.
#[derive(Debug, Clone)]
pub struct Listing {
    /// The resources, in order.
    pub rows: Vec<StoredResource>,
    /// The total number of matches, when asked.
    pub total: Option<i64>,
    /// Groups of the listed users, when asked.
    pub groups: Vec<GroupRef>,
    /// Licenses of the listed users and the products they are of, when read with the page
    /// and its groups: on PostgreSQL (one round trip for all). On SQLite they are read after
    /// it, which costs less there than the one statement does (a lookup by filter took 2.5
    /// times as long with them).
    pub licenses: Option<(Vec<LicenseRow>, Vec<licensing::model::Product>)>,
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

fn resource_from_row(r: &Row) -> StoreResult<StoredResource> {
    Ok(StoredResource {
        id: r.text(0),
        doc: serde_json::from_str(&r.text(1)).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        created: r.text(2),
        last_modified: r.text(3),
        version: r.int(4),
    })
}

fn select_sql(kind: Kind) -> &'static str {
    match kind {
        Kind::User => {
            "SELECT id, doc, created, last_modified, version FROM scim_users WHERE tenant_id = $1 AND id = $2"
        }
        Kind::Group => {
            "SELECT id, doc, created, last_modified, version FROM scim_groups WHERE tenant_id = $1 AND id = $2"
        }
    }
}

impl Store {
    /// One resource by id, within the tenant.
    pub(crate) async fn get_resource(
        &self,
        kind: Kind,
        tenant: &str,
        id: &str,
    ) -> StoreResult<Option<StoredResource>> {
        self.pool()
            .fetch_opt(select_sql(kind), &params![tenant, id])
            .await?
            .as_ref()
            .map(resource_from_row)
            .transpose()
    }

    /// A page of resources matching a translated filter, and the total count when asked.
    pub(crate) async fn list_resources(
        &self,
        kind: Kind,
        tenant: &str,
        filter: &SqlWhere,
        order: &Order,
        page: &Page,
        with_total: bool,
    ) -> StoreResult<(Vec<StoredResource>, Option<i64>)> {
        let listing = self
            .list(kind, tenant, filter, order, page, with_total, false)
            .await?;
        Ok((listing.rows, listing.total))
    }

    /// A page of users with their groups (direct and nested), fetched in one statement.
    pub(crate) async fn list_users_with_groups(
        &self,
        tenant: &str,
        filter: &SqlWhere,
        order: &Order,
        page: &Page,
        with_total: bool,
    ) -> StoreResult<Listing> {
        self.list(Kind::User, tenant, filter, order, page, with_total, true)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        kind: Kind,
        tenant: &str,
        filter: &SqlWhere,
        order: &Order,
        page: &Page,
        with_total: bool,
        with_groups: bool,
    ) -> StoreResult<Listing> {
        let table = kind.table();
        let n = filter.params.len();
        let mut params: Vec<P> = vec![P::from(tenant)];
        params.extend(filter.params.iter().map(P::from));
        let unfiltered = filter.sql == "1=1";
        if matches!(
            page,
            Page::Offset { limit: 0, .. } | Page::After { limit: 0, .. }
        ) {
            let total = if with_total {
                Some(
                    self.count(kind, tenant, filter, &params, unfiltered)
                        .await?,
                )
            } else {
                None
            };
            return Ok(Listing {
                rows: Vec::new(),
                total,
                groups: Vec::new(),
                licenses: Some((Vec::new(), Vec::new())),
            });
        }
        let dir = if order.descending { "DESC" } else { "ASC" };
        let order_sql = match &order.column {
            // RFC 7644 §3.4.2.3: resources without a value sort last ascending, first descending.
            Some(c) => format!("ORDER BY ({c} IS NULL) {dir}, {c} {dir}, r.id"),
            None => format!("ORDER BY r.id {dir}"),
        };
        let sort_key = order.column.clone().unwrap_or_else(|| "r.id".into());
        let mut sql = format!(
            "SELECT r.id, r.doc, r.created, r.last_modified, r.version, {sort_key} AS sortkey FROM {table} r WHERE r.tenant_id = $1 AND {}",
            filter.sql
        );
        match page {
            Page::All => {
                sql.push(' ');
                sql.push_str(&order_sql);
            }
            Page::Offset { offset, limit } => {
                sql.push_str(&format!(" {order_sql} LIMIT ${} OFFSET ${}", n + 2, n + 3));
                params.push(P::Int(*limit));
                params.push(P::Int(*offset));
            }
            Page::After { after, limit } => {
                sql.push_str(&format!(
                    " AND r.id > ${} ORDER BY r.id LIMIT ${}",
                    n + 2,
                    n + 3
                ));
                params.push(P::Text(after.clone().unwrap_or_default()));
                params.push(P::Int(*limit));
            }
        }
        let licensed = with_groups && self.backend() == crate::kernel::db::Backend::Postgres;
        let (list, groups, licenses, products) = if with_groups {
            // The page, its users' groups and, on PostgreSQL, their licenses and those
            // licenses' products in one statement (one round trip, one read transaction; see
            // `Listing::licenses`; the branches' columns as
            // in [`RELATED_BRANCHES`]); the page is re-sorted here by the same key the SQL
            // ordered it by, since UNION ALL promises no order.
            let sql = format!(
                "WITH RECURSIVE page AS MATERIALIZED ({sql}), \
                 anc(user_id, group_id, depth) AS ( \
                   SELECT m.member_id, m.group_id, 0 FROM scim_group_members m WHERE m.tenant_id = $1 AND m.member_id IN (SELECT id FROM page) \
                   UNION \
                   SELECT anc.user_id, m.group_id, 1 FROM scim_group_members m JOIN anc ON m.tenant_id = $1 AND m.member_id = anc.group_id) \
                 SELECT 0, id, doc, created, last_modified, version, sortkey, {NO_TAIL} FROM page \
                 UNION ALL \
                 SELECT 1, anc.user_id, g.id, g.display_name, '', MIN(anc.depth), NULL, {NO_TAIL} FROM anc \
                 JOIN scim_groups g ON g.tenant_id = $1 AND g.id = anc.group_id GROUP BY anc.user_id, g.id, g.display_name{}",
                if licensed {
                    format!(
                        " UNION ALL {}",
                        related_branches("IN (SELECT id FROM page)")
                    )
                } else {
                    String::new()
                }
            );
            let rows = self.pool().fetch(&sql, &params).await?;
            let mut keyed = Vec::new();
            let mut groups = Vec::new();
            for r in &rows {
                match r.int(0) {
                    0 => {
                        let res = StoredResource {
                            id: r.text(1),
                            doc: serde_json::from_str(&r.text(2))
                                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                            created: r.text(3),
                            last_modified: r.text(4),
                            version: r.int(5),
                        };
                        keyed.push((r.opt_text(6), res));
                    }
                    1 => groups.push(GroupRef {
                        user_id: r.text(1),
                        group_id: r.text(2),
                        display: r.text(3),
                        direct: r.int(5) == 0,
                    }),
                    _ => {}
                }
            }
            keyed.sort_by(|(ka, a), (kb, b)| {
                let by_key = match (ka, kb) {
                    (Some(x), Some(y)) => x.cmp(y),
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (None, None) => std::cmp::Ordering::Equal,
                };
                let by_key = if order.descending {
                    by_key.reverse()
                } else {
                    by_key
                };
                by_key.then_with(|| a.id.cmp(&b.id))
            });
            groups.sort_by(|a, b| {
                a.user_id
                    .cmp(&b.user_id)
                    .then_with(|| a.display.cmp(&b.display))
            });
            let (licenses, products) = related_of(&rows)?;
            (
                keyed.into_iter().map(|(_, r)| r).collect::<Vec<_>>(),
                groups,
                licenses,
                products,
            )
        } else {
            let rows = self.pool().fetch(&sql, &params).await?;
            (
                rows.iter()
                    .map(resource_from_row)
                    .collect::<StoreResult<Vec<_>>>()?,
                Vec::new(),
                Vec::new(),
                Vec::new(),
            )
        };
        let total = match page {
            _ if !with_total => None,
            // A page that is not full, and not past the end, tells the total by itself.
            Page::Offset { offset, limit }
                if (list.len() as i64) < *limit && (*offset == 0 || !list.is_empty()) =>
            {
                Some(offset + list.len() as i64)
            }
            Page::All => Some(list.len() as i64),
            _ => {
                let count_params: Vec<P> = params[..n + 1].to_vec();
                Some(
                    self.count(kind, tenant, filter, &count_params, unfiltered)
                        .await?,
                )
            }
        };
        Ok(Listing {
            rows: list,
            total,
            groups,
            licenses: licensed.then_some((licenses, products)),
        })
    }

    async fn count(
        &self,
        kind: Kind,
        tenant: &str,
        filter: &SqlWhere,
        params: &[P],
        unfiltered: bool,
    ) -> StoreResult<i64> {
        if unfiltered {
            let row = self
                .pool()
                .fetch_opt(
                    "SELECT n FROM resource_counts WHERE tenant_id = $1 AND kind = $2",
                    &params![tenant, kind.name()],
                )
                .await?;
            return Ok(row.map(|r| r.int(0)).unwrap_or(0));
        }
        let sql = format!(
            "SELECT COUNT(*) FROM {} r WHERE r.tenant_id = $1 AND {}",
            kind.table(),
            filter.sql
        );
        Ok(self
            .pool()
            .fetch_opt(&sql, params)
            .await?
            .map(|r| r.int(0))
            .unwrap_or(0))
    }

    /// A user and its groups (direct and nested) in one statement.
    pub(crate) async fn get_user_with_groups(
        &self,
        tenant: &str,
        id: &str,
    ) -> StoreResult<Option<UserWithRelated>> {
        // One statement, so one read transaction: on SQLite each transaction takes the file's
        // shared lock and a WAL read mark, which cost more than the reads themselves; on
        // PostgreSQL, one round trip (the products of the user's licenses come with it).
        let rows = self
            .pool()
            .fetch(&GET_USER_WITH_RELATED, &params![tenant, id])
            .await?;
        let Some(user_row) = rows.iter().find(|r| r.int(0) == 0) else {
            return Ok(None);
        };
        let user = StoredResource {
            id: user_row.text(1),
            doc: serde_json::from_str(user_row.str(2))
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            created: user_row.text(3),
            last_modified: user_row.text(4),
            version: user_row.int(5),
        };
        let groups = user_groups_of(&rows, id);
        let (licenses, products) = related_of(&rows)?;
        Ok(Some((user, groups, licenses, products)))
    }

    /// What a user shows beside its own document, in one statement: its groups (direct and
    /// nested), its licenses and their products.
    pub(crate) async fn user_related(&self, tenant: &str, id: &str) -> StoreResult<UserRelated> {
        let rows = self
            .pool()
            .fetch(&USER_RELATED, &params![tenant, id])
            .await?;
        let groups = user_groups_of(&rows, id);
        let (licenses, products) = related_of(&rows)?;
        Ok((groups, licenses, products))
    }

    /// The members of a group.
    pub(crate) async fn group_members(
        &self,
        tenant: &str,
        group_id: &str,
    ) -> StoreResult<Vec<Member>> {
        let rows = self
            .pool()
            .fetch(
                "SELECT member_id, member_type FROM scim_group_members WHERE tenant_id = $1 AND group_id = $2 ORDER BY member_id",
                &params![tenant, group_id],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Member {
                id: r.text(0),
                kind: r.text(1),
            })
            .collect())
    }

    /// The groups of each user, direct and through nested groups.
    pub(crate) async fn groups_of_users(
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
            let mut params = vec![P::from(tenant)];
            params.extend(chunk.iter().map(P::from));
            for r in self.pool().fetch(&sql, &params).await? {
                out.push(GroupRef {
                    user_id: r.text(0),
                    group_id: r.text(1),
                    direct: r.int(2) == 0,
                    display: r.text(3),
                });
            }
        }
        Ok(out)
    }
}

impl Tx<'_> {
    /// Reads a resource inside the transaction.
    pub(crate) fn get_resource(
        &mut self,
        kind: Kind,
        tenant: &str,
        id: &str,
    ) -> StoreResult<Option<StoredResource>> {
        self.fetch_opt(select_sql(kind), &params![tenant, id])?
            .as_ref()
            .map(resource_from_row)
            .transpose()
    }

    /// Reads a user and its licenses inside the transaction, in one statement.
    pub(crate) fn get_user_with_licenses(
        &mut self,
        tenant: &str,
        id: &str,
    ) -> StoreResult<Option<(StoredResource, Vec<LicenseRow>)>> {
        let rows = self.fetch(&USER_WITH_LICENSES, &params![tenant, id])?;
        let Some(user) = rows.iter().find(|r| r.int(0) == 0) else {
            return Ok(None);
        };
        let user = StoredResource {
            id: user.text(1),
            doc: serde_json::from_str(user.str(2))
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            created: user.text(3),
            last_modified: user.text(4),
            version: user.int(5),
        };
        Ok(Some((user, related_of(&rows)?.0)))
    }

    /// Reads a group, which of `ids` are its members already (with their types), and which
    /// are users or groups of the tenant, in one statement (at most [`NAMED_AT_ONCE`] ids).
    pub(crate) fn get_group_for_members(
        &mut self,
        tenant: &str,
        id: &str,
        ids: &[String],
    ) -> StoreResult<Option<GroupForMembers>> {
        let mut sql = String::from(
            "SELECT 0, id, doc, created, last_modified, version FROM scim_groups WHERE tenant_id = $1 AND id = $2",
        );
        if !ids.is_empty() {
            let named = placeholders(3, ids.len());
            sql.push_str(&format!(
                " UNION ALL SELECT 1, member_id, member_type, '', '', 0 FROM scim_group_members \
                 WHERE tenant_id = $1 AND group_id = $2 AND member_id IN ({named}) \
                 UNION ALL SELECT 2, id, 'User', '', '', 0 FROM scim_users WHERE tenant_id = $1 AND id IN ({named}) \
                 UNION ALL SELECT 2, id, 'Group', '', '', 0 FROM scim_groups WHERE tenant_id = $1 AND id IN ({named})"
            ));
        }
        let mut params = Vec::from(params![tenant, id]);
        params.extend(ids.iter().map(P::from));
        let rows = self.fetch(&sql, &params)?;
        let Some(group) = rows.iter().find(|r| r.int(0) == 0) else {
            return Ok(None);
        };
        let group = resource_from_row(&group.skip(1))?;
        let mut members: Vec<(String, String)> = Vec::new();
        let mut kinds: HashMap<String, &'static str> = HashMap::new();
        for r in &rows {
            match r.int(0) {
                1 => members.push((r.text(1), r.text(2))),
                2 => {
                    let kind = if r.str(2) == "Group" { "Group" } else { "User" };
                    kinds.insert(r.text(1), kind);
                }
                _ => {}
            }
        }
        members.sort();
        Ok(Some((group, members, kinds)))
    }

    /// Replaces a group's document as [`Tx::update_resource_from`] does, but on PostgreSQL
    /// with the unit of work's end (a taken `displayName` then shows there). The tenant's
    /// lock must be held.
    pub(crate) fn update_group_with_end(
        &mut self,
        tenant: &str,
        before: &Value,
        res: &StoredResource,
        expected: i64,
    ) -> StoreResult<()> {
        if self.backend() != crate::kernel::db::Backend::Postgres {
            return match self.update_resource_from(Kind::Group, tenant, before, res, expected)? {
                true => Ok(()),
                false => Err(StoreError::Corrupt(format!(
                    "group {} changed under the tenant's lock",
                    res.id
                ))),
            };
        }
        let cols = IndexCols::of(Kind::Group, &res.doc);
        self.defer_rows(
            &GROUPS_UPDATE,
            Vec::new(),
            Vec::from(params![
                tenant,
                &res.id,
                &cols.name,
                cols.name.to_lowercase(),
                &cols.external_id,
                &res.last_modified,
                res.version,
                res.doc.to_string(),
                expected
            ]),
        )
    }

    /// Adds and removes a group's members: on PostgreSQL with the unit of work's end.
    pub(crate) fn change_members_with_end(
        &mut self,
        tenant: &str,
        group: &str,
        added: &[(String, String)],
        removed: &[String],
    ) -> StoreResult<()> {
        if self.backend() != crate::kernel::db::Backend::Postgres {
            if !added.is_empty() {
                self.add_members(tenant, group, added)?;
            }
            if !removed.is_empty() {
                self.remove_members(tenant, group, removed)?;
            }
            return Ok(());
        }
        let mut rows = Vec::with_capacity(added.len() * 4);
        for (id, ty) in added {
            rows.extend(params![tenant, group, id, ty]);
        }
        self.defer_rows(&MEMBERS_INSERT, Vec::new(), rows)?;
        let mut rows = Vec::with_capacity(removed.len() * 3);
        for id in removed {
            rows.extend(params![tenant, group, id]);
        }
        self.defer_rows(&MEMBERS_DELETE, Vec::new(), rows)
    }

    /// Replaces a user's document, as [`Tx::update_resource_from`] does, but on PostgreSQL
    /// with the unit of work's end when its emails stay as they were (a taken `userName`
    /// then shows there). The tenant's lock must be held: the version is checked in the
    /// statement, but a lost race would go unreported.
    pub(crate) fn update_user_with_end(
        &mut self,
        tenant: &str,
        before: &Value,
        res: &StoredResource,
        expected: i64,
    ) -> StoreResult<()> {
        let cols = IndexCols::of(Kind::User, &res.doc);
        let emails_kept = IndexCols::of(Kind::User, before).emails == cols.emails;
        if self.backend() != crate::kernel::db::Backend::Postgres || !emails_kept {
            return match self.update_resource_from(Kind::User, tenant, before, res, expected)? {
                true => Ok(()),
                false => Err(StoreError::Corrupt(format!(
                    "user {} changed under the tenant's lock",
                    res.id
                ))),
            };
        }
        self.defer_rows(
            &USERS_UPDATE,
            Vec::new(),
            Vec::from(params![
                tenant,
                &res.id,
                &cols.name,
                cols.name.to_lowercase(),
                &cols.external_id,
                &cols.display_name,
                cols.display_name.as_ref().map(|d| d.to_lowercase()),
                i64::from(cols.active),
                &res.last_modified,
                res.version,
                res.doc.to_string(),
                expected
            ]),
        )
    }

    /// Inserts a new resource. A duplicate userName/displayName is [`StoreError::Unique`].
    pub(crate) fn insert_resource(
        &mut self,
        kind: Kind,
        tenant: &str,
        res: &StoredResource,
    ) -> StoreResult<()> {
        let cols = IndexCols::of(kind, &res.doc);
        let doc = res.doc.to_string();
        if kind == Kind::User && self.backend() == crate::kernel::db::Backend::Postgres {
            // One round trip on PostgreSQL: the user, its emails and the count, as
            // data-modifying `WITH` clauses of one statement.
            let mut params = user_row(tenant, res, &cols, doc);
            params.push(P::from(kind.name()));
            let emails = if cols.emails.is_empty() {
                String::new()
            } else {
                let values = (0..cols.emails.len())
                    .map(|i| format!("($1, $2, ${})", i + 14))
                    .collect::<Vec<_>>()
                    .join(", ");
                params.extend(cols.emails.iter().map(P::from));
                format!(
                    ", e AS (INSERT INTO scim_user_emails (tenant_id, user_id, value_lc) VALUES {values})"
                )
            };
            self.execute(
                &format!(
                    "WITH u AS (INSERT INTO scim_users (tenant_id, id, user_name, user_name_lc, external_id, display_name, \
                     display_name_lc, active, created, last_modified, version, doc) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)){emails} \
                     INSERT INTO resource_counts (tenant_id, kind, n) VALUES ($1, $13, 1) \
                     ON CONFLICT (tenant_id, kind) DO UPDATE SET n = resource_counts.n + 1"
                ),
                &params,
            )?;
            return Ok(());
        }
        match kind {
            Kind::User => {
                self
                    .execute(
                        "INSERT INTO scim_users (tenant_id, id, user_name, user_name_lc, external_id, display_name, \
                         display_name_lc, active, created, last_modified, version, doc) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                        &params![
                            tenant, &res.id, &cols.name, cols.name.to_lowercase(), &cols.external_id, &cols.display_name,
                            cols.display_name.as_ref().map(|d| d.to_lowercase()), i64::from(cols.active), &res.created,
                            &res.last_modified, res.version, doc
                        ],
                    )
                    ?;
                self.write_emails(tenant, &res.id, &cols.emails)?;
            }
            Kind::Group => {
                self
                    .execute(
                        "INSERT INTO scim_groups (tenant_id, id, display_name, display_name_lc, external_id, \
                         created, last_modified, version, doc) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                        &params![tenant, &res.id, &cols.name, cols.name.to_lowercase(), &cols.external_id, &res.created, &res.last_modified, res.version, doc],
                    )
                    ?;
            }
        }
        self.execute(
            "INSERT INTO resource_counts (tenant_id, kind, n) VALUES ($1, $2, 1) \
             ON CONFLICT (tenant_id, kind) DO UPDATE SET n = resource_counts.n + 1",
            &params![tenant, kind.name()],
        )?;
        Ok(())
    }

    /// [`Tx::insert_resource`] of a user nothing later in the unit of work reads back (a plain
    /// create): on PostgreSQL the user, its emails and the count go with the unit of work's
    /// end statement ([`Tx::defer`]), one round trip less per create. A taken userName then
    /// shows when the unit of work ends: the caller ends it itself ([`Tx::flush`]) to answer
    /// it as such.
    pub(crate) fn insert_user_with_end(
        &mut self,
        tenant: &str,
        res: &StoredResource,
    ) -> StoreResult<()> {
        if self.backend() != crate::kernel::db::Backend::Postgres {
            return self.insert_resource(Kind::User, tenant, res);
        }
        let cols = IndexCols::of(Kind::User, &res.doc);
        self.defer_rows(
            &USERS_INSERT,
            Vec::new(),
            user_row(tenant, res, &cols, res.doc.to_string()),
        )?;
        let mut emails = Vec::with_capacity(cols.emails.len() * 3);
        for e in &cols.emails {
            emails.extend(params![tenant, &res.id, e]);
        }
        self.defer_rows(&EMAILS_INSERT, Vec::new(), emails)?;
        self.defer_count(tenant, Kind::User.name(), 1)
    }

    fn write_emails(&mut self, tenant: &str, user: &str, emails: &[String]) -> StoreResult<()> {
        if emails.is_empty() {
            return Ok(());
        }
        let values = (0..emails.len())
            .map(|i| format!("($1, $2, ${})", i + 3))
            .collect::<Vec<_>>()
            .join(", ");
        let sql =
            format!("INSERT INTO scim_user_emails (tenant_id, user_id, value_lc) VALUES {values}");
        let mut params = Vec::from(params![tenant, user]);
        params.extend(emails.iter().map(P::from));
        self.execute(&sql, &params)?;
        Ok(())
    }

    /// Replaces a resource's document (`before`) if its version is still `expected`; returns
    /// whether it was (optimistic concurrency: a lost race is retried by the engine). A user's
    /// email index is rewritten only when its emails changed (a deprovisioning `PATCH active`
    /// touches none).
    pub(crate) fn update_resource_from(
        &mut self,
        kind: Kind,
        tenant: &str,
        before: &Value,
        res: &StoredResource,
        expected: i64,
    ) -> StoreResult<bool> {
        let cols = IndexCols::of(kind, &res.doc);
        let doc = res.doc.to_string();
        let n = match kind {
            Kind::User => {
                self
                    .execute(
                        "UPDATE scim_users SET user_name = $3, user_name_lc = $4, external_id = $5, display_name = $6, \
                         display_name_lc = $7, active = $8, last_modified = $9, version = $10, doc = $11 \
                         WHERE tenant_id = $1 AND id = $2 AND version = $12",
                        &params![
                            tenant, &res.id, &cols.name, cols.name.to_lowercase(), &cols.external_id, &cols.display_name,
                            cols.display_name.as_ref().map(|d| d.to_lowercase()), i64::from(cols.active), &res.last_modified,
                            res.version, doc, expected
                        ],
                    )
                    ?
            }
            Kind::Group => {
                self
                    .execute(
                        "UPDATE scim_groups SET display_name = $3, display_name_lc = $4, external_id = $5, \
                         last_modified = $6, version = $7, doc = $8 WHERE tenant_id = $1 AND id = $2 AND version = $9",
                        &params![tenant, &res.id, &cols.name, cols.name.to_lowercase(), &cols.external_id, &res.last_modified, res.version, doc, expected],
                    )
                    ?
            }
        };
        if n != 1 {
            return Ok(false);
        }
        let emails_kept = IndexCols::of(kind, before).emails == cols.emails;
        if kind == Kind::User && !emails_kept {
            self.execute(
                "DELETE FROM scim_user_emails WHERE tenant_id = $1 AND user_id = $2",
                &params![tenant, &res.id],
            )?;
            self.write_emails(tenant, &res.id, &cols.emails)?;
        }
        Ok(true)
    }

    /// Deletes a resource and every membership that names it; returns whether it existed.
    pub(crate) fn delete_resource(
        &mut self,
        kind: Kind,
        tenant: &str,
        id: &str,
    ) -> StoreResult<bool> {
        let sql = format!(
            "DELETE FROM {} WHERE tenant_id = $1 AND id = $2",
            kind.table()
        );
        if self.execute(&sql, &params![tenant, id])? == 0 {
            return Ok(false);
        }
        self.execute(
            "UPDATE resource_counts SET n = n - 1 WHERE tenant_id = $1 AND kind = $2",
            &params![tenant, kind.name()],
        )?;
        self.execute(
            "DELETE FROM scim_group_members WHERE tenant_id = $1 AND member_id = $2",
            &params![tenant, id],
        )?;
        match kind {
            Kind::User => self.execute(
                "DELETE FROM scim_user_emails WHERE tenant_id = $1 AND user_id = $2",
                &params![tenant, id],
            )?,
            Kind::Group => self.execute(
                "DELETE FROM scim_group_members WHERE tenant_id = $1 AND group_id = $2",
                &params![tenant, id],
            )?,
        };
        Ok(true)
    }

    /// Current member (id, type) pairs of a group.
    pub(crate) fn member_ids(
        &mut self,
        tenant: &str,
        group: &str,
    ) -> StoreResult<Vec<(String, String)>> {
        let rows = self
            .fetch(
                "SELECT member_id, member_type FROM scim_group_members WHERE tenant_id = $1 AND group_id = $2 ORDER BY member_id",
                &params![tenant, group],
            )
            ?;
        Ok(rows.iter().map(|r| (r.text(0), r.text(1))).collect())
    }

    /// Which of these ids are members of the group, as (id, type): a member PATCH reads only
    /// the members it names, not the whole group.
    pub(crate) fn members_among(
        &mut self,
        tenant: &str,
        group: &str,
        ids: &[String],
    ) -> StoreResult<Vec<(String, String)>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            let sql = format!(
                "SELECT member_id, member_type FROM scim_group_members WHERE tenant_id = $1 AND group_id = $2 AND member_id IN ({}) ORDER BY member_id",
                placeholders(3, chunk.len())
            );
            let mut params = vec![P::from(tenant), P::from(group)];
            params.extend(chunk.iter().map(P::from));
            out.extend(
                self.fetch(&sql, &params)?
                    .iter()
                    .map(|r| (r.text(0), r.text(1))),
            );
        }
        Ok(out)
    }

    /// Which of these ids are users and which are groups of the tenant.
    pub(crate) fn classify_ids(
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
                let mut params = vec![P::from(tenant)];
                params.extend(chunk.iter().map(P::from));
                for r in self.fetch(&sql, &params)? {
                    out.insert(r.text(0), kind);
                }
            }
        }
        Ok(out)
    }

    /// The group and every group that contains it, directly or not.
    pub(crate) fn group_ancestors(
        &mut self,
        tenant: &str,
        group: &str,
    ) -> StoreResult<Vec<String>> {
        let rows = self
            .fetch(
                // Seeded from stored rows (not a bare parameter) so both dialects type it alike.
                "WITH RECURSIVE anc(id) AS (SELECT group_id FROM scim_group_members WHERE tenant_id = $1 AND member_id = $2 UNION \
                 SELECT m.group_id FROM scim_group_members m JOIN anc ON m.tenant_id = $1 AND m.member_id = anc.id) \
                 SELECT id FROM anc",
                &params![tenant, group],
            )
            ?;
        let mut out: Vec<String> = rows.iter().map(|r| r.text(0)).collect();
        out.push(group.to_string());
        Ok(out)
    }

    /// Adds members (id, type) to a group.
    pub(crate) fn add_members(
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
            let mut params = Vec::from(params![tenant, group]);
            for (id, ty) in chunk {
                params.push(P::from(id));
                params.push(P::from(ty));
            }
            self.execute(&sql, &params)?;
        }
        Ok(())
    }

    /// Removes members from a group.
    pub(crate) fn remove_members(
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
            let mut params = Vec::from(params![tenant, group]);
            params.extend(chunk.iter().map(P::from));
            self.execute(&sql, &params)?;
        }
        Ok(())
    }
}

/// A user's `scim_users` values, in [`USERS_INSERT`]'s column order.
fn user_row(tenant: &str, res: &StoredResource, cols: &IndexCols, doc: String) -> Vec<P> {
    Vec::from(params![
        tenant,
        &res.id,
        &cols.name,
        cols.name.to_lowercase(),
        &cols.external_id,
        &cols.display_name,
        cols.display_name.as_ref().map(|d| d.to_lowercase()),
        i64::from(cols.active),
        &res.created,
        &res.last_modified,
        res.version,
        doc
    ])
}

/// Users' new documents, written with a unit of work's end ([`Tx::update_user_with_end`]):
/// each row names the user, its index columns, its document and the version it replaces.
static USERS_UPDATE: RowsInsert = RowsInsert {
    sql: |n| {
        format!(
            "UPDATE scim_users u SET user_name = v.user_name, user_name_lc = v.user_name_lc, \
             external_id = v.external_id, display_name = v.display_name, display_name_lc = v.display_name_lc, \
             active = v.active, last_modified = v.last_modified, version = v.version, doc = v.doc \
             FROM (VALUES {}) AS v(tenant_id, id, user_name, user_name_lc, external_id, display_name, \
             display_name_lc, active, last_modified, version, doc, expected) \
             WHERE u.tenant_id = v.tenant_id AND u.id = v.id AND u.version = v.expected",
            tuples(1, 12, n)
        )
    },
    width: 12,
};

/// Groups' new documents, written with a unit of work's end ([`Tx::update_group_with_end`]).
static GROUPS_UPDATE: RowsInsert = RowsInsert {
    sql: |n| {
        format!(
            "UPDATE scim_groups g SET display_name = v.display_name, display_name_lc = v.display_name_lc, \
             external_id = v.external_id, last_modified = v.last_modified, version = v.version, doc = v.doc \
             FROM (VALUES {}) AS v(tenant_id, id, display_name, display_name_lc, external_id, last_modified, \
             version, doc, expected) \
             WHERE g.tenant_id = v.tenant_id AND g.id = v.id AND g.version = v.expected",
            tuples(1, 9, n)
        )
    },
    width: 9,
};

/// Members added with a unit of work's end ([`Tx::change_members_with_end`]).
static MEMBERS_INSERT: RowsInsert = RowsInsert {
    sql: |n| {
        format!(
            "INSERT INTO scim_group_members (tenant_id, group_id, member_id, member_type) VALUES {} \
             ON CONFLICT (tenant_id, group_id, member_id) DO NOTHING",
            tuples(1, 4, n)
        )
    },
    width: 4,
};

/// Members removed with a unit of work's end ([`Tx::change_members_with_end`]).
static MEMBERS_DELETE: RowsInsert = RowsInsert {
    sql: |n| {
        format!(
            "DELETE FROM scim_group_members m USING (VALUES {}) AS v(tenant_id, group_id, member_id) \
             WHERE m.tenant_id = v.tenant_id AND m.group_id = v.group_id AND m.member_id = v.member_id",
            tuples(1, 3, n)
        )
    },
    width: 3,
};

/// New users' rows, written with a unit of work's end ([`Tx::insert_user_with_end`]).
static USERS_INSERT: RowsInsert = RowsInsert {
    sql: |n| {
        format!(
            "INSERT INTO scim_users (tenant_id, id, user_name, user_name_lc, external_id, display_name, \
             display_name_lc, active, created, last_modified, version, doc) VALUES {}",
            tuples(1, 12, n)
        )
    },
    width: 12,
};

/// New users' email index rows, as [`USERS_INSERT`].
static EMAILS_INSERT: RowsInsert = RowsInsert {
    sql: |n| {
        format!(
            "INSERT INTO scim_user_emails (tenant_id, user_id, value_lc) VALUES {}",
            tuples(1, 3, n)
        )
    },
    width: 3,
};
