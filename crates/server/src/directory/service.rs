//! The engine: every SCIM write is one command run in one transaction — the change, its
//! audit record and its outbox event commit together or not at all.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use scim::list::{self, CursorPos, ListQuery, Paging, SortKey};
use scim::patch;
use scim::resource::{Source, normalize_resource};
use scim::schema::{GROUP_TYPE, ResourceType, USER_TYPE};
use scim::sql::{self, ColumnKind, ColumnMap, SqlWhere};
use serde_json::{Map, Value, json};

use crate::directory::cache::{Cached, UserCache};
pub use crate::directory::store::Kind;
use crate::directory::store::StoredResource;
use crate::directory::store::{Columns, NAMED_AT_ONCE, Order, Page};
use crate::kernel::catalogue::EventType;
use crate::kernel::clock::{SharedClock, stamp};
use crate::kernel::error::{ApiError, ApiResult};
pub use crate::kernel::extract::Ctx;
use crate::kernel::store::{NewAudit, Store, Tx};
use crate::licenses::decide::{Cause, Scope, relicense};
use crate::licenses::service::LicenseRow;

/// A resource rendered for the wire, with its version for the ETag.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The full resource (before projection).
    pub body: Value,
    /// The version counter.
    pub version: i64,
    /// `meta.location`.
    pub location: String,
}

/// A page of a list.
#[derive(Debug, Clone)]
pub struct ListPage {
    /// Total matches.
    pub total: usize,
    /// The page, rendered and projected.
    pub resources: Vec<Value>,
    /// RFC 9865 next cursor.
    pub next_cursor: Option<String>,
    /// Start index for index paging.
    pub start_index: Option<usize>,
}

/// The SCIM type of a kind.
pub fn resource_type(kind: Kind) -> &'static ResourceType {
    match kind {
        Kind::User => &USER_TYPE,
        Kind::Group => &GROUP_TYPE,
    }
}

/// Parses an `If-Match` header value against a version: `*`, `W/"n"` or `"n"`, comma-separated.
pub fn etag_matches(header: &str, version: i64) -> bool {
    header.split(',').map(str::trim).any(|tag| {
        tag == "*" || tag.trim_start_matches("W/").trim_matches('"') == version.to_string()
    })
}

/// The ETag of a version.
pub fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

/// What a create committed: the group members added, and the user's licenses with the model
/// they were decided under (the licensing extension is built from them after the commit).
type CreateOutcome = (
    Vec<(String, String)>,
    Option<(
        Vec<LicenseRow>,
        std::sync::Arc<crate::licenses::decide::Model>,
    )>,
);

/// The state change a write makes to a user: licensing and events hang off it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserTransition {
    /// Attributes changed, activity unchanged.
    Updated,
    /// `active` went from true to false: deprovisioned.
    Deactivated,
    /// `active` went from false to true.
    Reactivated,
}

impl UserTransition {
    fn between(before: bool, after: bool) -> UserTransition {
        match (before, after) {
            (true, false) => UserTransition::Deactivated,
            (false, true) => UserTransition::Reactivated,
            _ => UserTransition::Updated,
        }
    }

    fn name(self) -> &'static str {
        match self {
            UserTransition::Updated => "updated",
            UserTransition::Deactivated => "deactivated",
            UserTransition::Reactivated => "reactivated",
        }
    }
}

/// The engine.
#[derive(Clone)]
pub struct Engine {
    store: Store,
    clock: SharedClock,
    users: std::sync::Arc<UserCache>,
    limits: ResourceLimits,
}

/// What one resource and one list page may hold (configurable; advertised at
/// `GET /api/v1/limits`).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ResourceLimits {
    /// Longest string value of any attribute, in bytes (UTF-8).
    pub max_attribute_bytes: usize,
    /// Largest resource, as JSON, in bytes (group members, kept apart, not counted).
    pub max_resource_bytes: usize,
    /// Largest list page, as JSON, in bytes: a page stops early (with `itemsPerPage`
    /// saying how many it holds) rather than exceed it; it always holds one resource.
    pub max_page_bytes: usize,
}

impl Default for ResourceLimits {
    fn default() -> Self {
        ResourceLimits {
            max_attribute_bytes: 64 * 1024,
            max_resource_bytes: 128 * 1024,
            max_page_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Bytes of a value's JSON, counted without building it.
fn json_bytes(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// The path of the first string longer than `max` bytes, and its length.
fn oversized(v: &Value, max: usize, path: &mut Vec<String>) -> Option<(String, usize)> {
    match v {
        Value::String(s) if s.len() > max => Some((path.join("."), s.len())),
        Value::Array(items) => items.iter().find_map(|i| oversized(i, max, path)),
        Value::Object(obj) => obj.iter().find_map(|(k, v)| {
            path.push(k.clone());
            let found = oversized(v, max, path);
            path.pop();
            found
        }),
        _ => None,
    }
}

impl ResourceLimits {
    /// Refuses a resource over the attribute or resource limit (400 `invalidValue`).
    fn check(&self, doc: &Value) -> ApiResult<()> {
        if let Some((path, len)) = oversized(doc, self.max_attribute_bytes, &mut Vec::new()) {
            return Err(scim::Error::InvalidValue(format!(
                "'{path}' is {len} bytes; an attribute holds at most {} bytes",
                self.max_attribute_bytes
            ))
            .into());
        }
        let size = json_bytes(doc);
        if size > self.max_resource_bytes {
            return Err(scim::Error::InvalidValue(format!(
                "the resource is {size} bytes; at most {} are allowed",
                self.max_resource_bytes
            ))
            .into());
        }
        Ok(())
    }

    /// How many of `resources` fit one page (at least one).
    fn fitting(&self, resources: &[Value]) -> usize {
        let mut total = 0;
        for (i, r) in resources.iter().enumerate() {
            total += json_bytes(r) + 1;
            if total > self.max_page_bytes && i > 0 {
                return i;
            }
        }
        resources.len()
    }
}

fn is_active(doc: &Value) -> bool {
    doc.get("active").and_then(Value::as_bool).unwrap_or(true)
}

/// Members as (id, declared type) from a normalised group document, which loses them.
fn take_members(doc: &mut Value) -> Vec<(String, Option<String>)> {
    let members = doc.as_object_mut().and_then(|o| o.remove("members"));
    members
        .and_then(|m| m.as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| {
            let id = m.get("value")?.as_str()?.to_string();
            let ty = m.get("type").and_then(Value::as_str).map(str::to_string);
            Some((id, ty))
        })
        .collect()
}

fn not_found(kind: Kind, id: &str) -> ApiError {
    ApiError::NotFound(format!("{} {id} not found", kind.name()))
}

fn unique_message(kind: Kind, doc: &Value) -> ApiError {
    match kind {
        Kind::User => ApiError::Uniqueness(format!(
            "userName '{}' is already taken in this tenant",
            doc.get("userName")
                .and_then(Value::as_str)
                .unwrap_or_default()
        )),
        Kind::Group => ApiError::Uniqueness(format!(
            "a group named '{}' already exists in this tenant",
            doc.get("displayName")
                .and_then(Value::as_str)
                .unwrap_or_default()
        )),
    }
}

/// A store error as answered to a write of `doc`: a uniqueness failure of the resource's own
/// table names the taken name ([`unique_message`]); anything else as it is.
fn taken_name(kind: Kind, doc: &Value, e: crate::kernel::store::StoreError) -> ApiError {
    match e {
        crate::kernel::store::StoreError::Unique(m) if m.contains(kind.table()) => {
            unique_message(kind, doc)
        }
        other => other.into(),
    }
}

impl Engine {
    /// An engine over a store and a clock.
    pub fn new(store: Store, clock: SharedClock) -> Engine {
        Engine {
            store,
            clock,
            users: Default::default(),
            limits: ResourceLimits::default(),
        }
    }

    /// The same engine with these resource and page limits.
    pub fn with_limits(mut self, limits: ResourceLimits) -> Engine {
        self.limits = limits;
        self
    }

    /// The resource and page limits.
    pub fn limits(&self) -> ResourceLimits {
        self.limits
    }

    /// The same engine, keeping rendered users in at most `bytes` (0: none; see
    /// [`crate::directory::cache`]).
    pub fn with_user_cache(mut self, bytes: u64) -> Engine {
        self.users = std::sync::Arc::new(UserCache::new(bytes));
        self
    }

    /// The clock.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn now(&self) -> String {
        stamp(self.clock.now())
    }

    fn cause(&self, ctx: &Ctx, action: &str) -> Cause {
        Cause {
            tenant: ctx.tenant.clone(),
            actor: ctx.actor.clone(),
            request_id: ctx.request_id.clone(),
            action: action.to_string(),
            now: self.clock.now(),
        }
    }

    /// Adds the read-only licensing extension to rendered users that hold licenses: each
    /// license (product, plan, state, reason, since) and the effective entitlements.
    async fn attach_licenses(&self, ctx: &Ctx, users: &mut [&mut Value]) -> ApiResult<()> {
        if users.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = users
            .iter()
            .filter_map(|u| u.get("id").and_then(Value::as_str).map(str::to_string))
            .collect();
        let rows = self.store.licenses_of(&ctx.tenant, &ids).await?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut held: Vec<&str> = rows.iter().map(|r| r.product.as_str()).collect();
        held.sort_unstable();
        held.dedup();
        let products = self.store.products_named(&held).await?;
        attach_known_licenses(users, &rows, &products);
        Ok(())
    }

    async fn attach_rendered(
        &self,
        ctx: &Ctx,
        kind: Kind,
        items: &mut [Rendered],
    ) -> ApiResult<()> {
        if kind != Kind::User {
            return Ok(());
        }
        let mut bodies: Vec<&mut Value> = items.iter_mut().map(|r| &mut r.body).collect();
        self.attach_licenses(ctx, &mut bodies).await
    }

    /// Renders a stored resource with its server-owned parts. `with_related` loads a user's
    /// groups or a group's members.
    async fn render(
        &self,
        ctx: &Ctx,
        kind: Kind,
        res: &StoredResource,
        with_related: bool,
    ) -> ApiResult<Rendered> {
        if kind == Kind::User && with_related {
            // One statement for all a user shows beside its document.
            let related = self.store.user_related(&ctx.tenant, &res.id).await?;
            return Ok(assemble_user(ctx, res, related));
        }
        let related = if with_related {
            match kind {
                Kind::User => Some(
                    self.user_groups(ctx, std::slice::from_ref(&res.id))
                        .await?
                        .remove(&res.id)
                        .unwrap_or_default(),
                ),
                Kind::Group => Some(self.members_json(ctx, &res.id).await?),
            }
        } else {
            None
        };
        let mut out = [assemble(ctx, kind, res, related)];
        self.attach_rendered(ctx, kind, &mut out).await?;
        let [out] = out;
        Ok(out)
    }

    async fn members_json(&self, ctx: &Ctx, group: &str) -> ApiResult<Vec<Value>> {
        let members = self.store.group_members(&ctx.tenant, group).await?;
        Ok(members
            .into_iter()
            .map(|m| {
                let endpoint = if m.kind == "Group" { "Groups" } else { "Users" };
                // RFC 7643 §8.7.1 defines value, $ref and type for members; no display.
                json!({
                    "value": m.id,
                    "$ref": format!("{}/{endpoint}/{}", ctx.base_url, m.id),
                    "type": m.kind,
                })
            })
            .collect())
    }

    async fn user_groups(
        &self,
        ctx: &Ctx,
        users: &[String],
    ) -> ApiResult<BTreeMap<String, Vec<Value>>> {
        let refs = self.store.groups_of_users(&ctx.tenant, users).await?;
        let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for g in refs {
            out.entry(g.user_id.clone())
                .or_default()
                .push(group_ref_json(ctx, g));
        }
        Ok(out)
    }

    /// GET one resource.
    pub async fn get(
        &self,
        ctx: &Ctx,
        kind: Kind,
        id: &str,
        with_related: bool,
    ) -> ApiResult<Rendered> {
        if kind == Kind::User && with_related {
            // One statement for the user and its groups: the hot path of IdP reads.
            let (res, groups, licenses, products) = self
                .store
                .get_user_with_groups(&ctx.tenant, id)
                .await?
                .ok_or_else(|| not_found(kind, id))?;
            return Ok(assemble_user(ctx, &res, (groups, licenses, products)));
        }
        let res = self
            .store
            .get_resource(kind, &ctx.tenant, id)
            .await?
            .ok_or_else(|| not_found(kind, id))?;
        self.render(ctx, kind, &res, with_related).await
    }

    /// GET one user with its default attributes, as the bytes sent: from the cache while no
    /// commit has moved what it shows since it was rendered.
    pub async fn get_user_as_sent(&self, ctx: &Ctx, id: &str) -> ApiResult<std::sync::Arc<Cached>> {
        if let Some(hit) = self.users.get(&ctx.tenant, id)
            && hit.base_url == ctx.base_url
            && self.store.is_current(&ctx.tenant, hit.mark)
        {
            return Ok(hit);
        }
        // The mark is taken before the read: a commit after it moves it, so what the read
        // saw is never kept past that commit.
        let mark = self.store.mark(&ctx.tenant);
        let r = match self.get(ctx, Kind::User, id, true).await {
            Ok(r) => r,
            Err(e) => {
                self.users.forget(&ctx.tenant, id);
                return Err(e);
            }
        };
        let body = scim::resource::Projection::default().apply(&USER_TYPE, &r.body);
        let entry = std::sync::Arc::new(Cached {
            mark,
            base_url: ctx.base_url.clone(),
            version: r.version,
            body: serde_json::to_vec(&body)
                .map_err(|e| ApiError::Internal(e.to_string()))?
                .into(),
        });
        if self.users.enabled() {
            self.users.put(&ctx.tenant, id, entry.clone());
        }
        Ok(entry)
    }

    /// POST: creates a resource.
    pub async fn create(&self, ctx: &Ctx, kind: Kind, body: &Value) -> ApiResult<Rendered> {
        let rt = resource_type(kind);
        let mut doc = normalize_resource(rt, body, Source::Client)?;
        let members = if kind == Kind::Group {
            take_members(&mut doc)
        } else {
            Vec::new()
        };
        self.limits.check(&doc)?;
        if kind == Kind::User && doc.get("active").is_none() {
            // An IdP that omits `active` creates an active user; storing it keeps the filter
            // engine and the index column in agreement.
            doc["active"] = Value::Bool(true);
        }
        let now = self.now();
        let res = StoredResource {
            id: uuid::Uuid::now_v7().to_string(),
            doc,
            created: now.clone(),
            last_modified: now.clone(),
            version: 1,
        };
        let (ctx2, res2) = (ctx.clone(), res.clone());
        let cause = self.cause(ctx, &format!("{}.create", kind.name().to_ascii_lowercase()));
        // Taken by the first run (a run again decides under the lock).
        let mut early = match kind {
            Kind::User => {
                crate::licenses::decide::decide_early(&ctx.tenant, &res.id, &res.doc, cause.now)
            }
            Kind::Group => None,
        };
        let (added, licensed) = self
            .store
            .write_for_again(&ctx.tenant, move |tx| -> ApiResult<CreateOutcome> {
                let (ctx, res) = (&ctx2, &res2);
                tx.lock_tenant(&ctx.tenant)?;
                // A taken name, found by the insert or (written with the end) by the end.
                let taken = |e| taken_name(kind, &res.doc, e);
                // A held deleted user may be coming back, or an import left claims: those
                // read the new user back. Otherwise the user is written with the end.
                let further = match kind {
                    Kind::User => Some(crate::licenses::decide::create_looks_further(
                        tx,
                        &ctx.tenant,
                    )?),
                    Kind::Group => None,
                };
                let plain = further == Some((false, false));
                if plain {
                    tx.insert_user_with_end(&ctx.tenant, res).map_err(taken)?;
                } else {
                    tx.insert_resource(kind, &ctx.tenant, res).map_err(taken)?;
                }
                let mut added = Vec::new();
                if !members.is_empty() {
                    added = check_members(tx, ctx, &res.id, &members, None)?;
                    tx.add_members(&ctx.tenant, &res.id, &added)?;
                }
                let mut after = res.doc.clone();
                if kind == Kind::Group {
                    after["members"] = json!(added.iter().map(|(id, _)| id).collect::<Vec<_>>());
                }
                let (action, event) = match kind {
                    Kind::User => ("user.create", "user.created"),
                    Kind::Group => ("group.create", "group.created"),
                };
                record(
                    tx,
                    ctx,
                    kind,
                    &res.id,
                    action,
                    None,
                    Some(&after),
                    event,
                    &now,
                )?;
                // The licenses go back as rows: the extension is built after the commit,
                // off the writer.
                let mut licensed = None;
                match kind {
                    Kind::User => {
                        let (held, claims) = further.unwrap_or_default();
                        let back = held
                            && crate::licenses::brake::claim_held(
                                tx,
                                &cause,
                                (&res.id, user_name_of(&res.doc), external_id_of(&res.doc)),
                            )?;
                        let claimed = if claims && !back {
                            crate::licenses::import::honour_claims(tx, &cause, &res.id, &res.doc)?
                        } else {
                            None
                        };
                        let (rows, model) = if let Some(done) = claimed {
                            done
                        } else if back {
                            crate::licenses::decide::license_returned(tx, &cause, &res.id)?
                        } else {
                            crate::licenses::decide::license_created(
                                tx,
                                &cause,
                                &res.id,
                                &res.doc,
                                early.take(),
                            )?
                        };
                        if !rows.is_empty() {
                            licensed = Some((rows, model));
                        }
                    }
                    Kind::Group
                        if !added.is_empty()
                            && crate::licenses::decide::groups_matter(tx, &ctx.tenant)? =>
                    {
                        let affected = tx.users_under(&ctx.tenant, &res.id)?;
                        if !affected.is_empty() {
                            relicense(tx, &cause, Scope::Users(affected))?;
                        }
                    }
                    Kind::Group => {}
                }
                if plain {
                    // A taken userName shows here, with the user's rows.
                    tx.flush().map_err(taken)?;
                }
                Ok((added, licensed))
            })
            .await?;
        if kind == Kind::Group && !added.is_empty() {
            return self.render(ctx, kind, &res, true).await;
        }
        let mut out = assemble(ctx, kind, &res, Some(Vec::new()));
        if let Some((rows, model)) = licensed {
            let rows: Vec<&LicenseRow> = rows.iter().collect();
            insert_extension(&mut out.body, licensing_extension(&rows, &model.products));
        }
        Ok(out)
    }

    /// PUT: replaces a resource.
    pub async fn replace(
        &self,
        ctx: &Ctx,
        kind: Kind,
        id: &str,
        body: &Value,
        if_match: Option<&str>,
    ) -> ApiResult<Rendered> {
        let rt = resource_type(kind);
        let mut doc = normalize_resource(rt, body, Source::Client)?;
        let members = if kind == Kind::Group {
            Some(take_members(&mut doc))
        } else {
            None
        };
        self.limits.check(&doc)?;
        if kind == Kind::User && doc.get("active").is_none() {
            doc["active"] = Value::Bool(true);
        }
        self.write_existing(ctx, kind, id, if_match, Members::All, move |_current| {
            Ok((doc.clone(), members.clone()))
        })
        .await
    }

    /// PATCH: applies operations.
    pub async fn patch(
        &self,
        ctx: &Ctx,
        kind: Kind,
        id: &str,
        body: &Value,
        if_match: Option<&str>,
    ) -> ApiResult<Rendered> {
        let stored = self.patch_unrendered(ctx, kind, id, body, if_match).await?;
        self.render(ctx, kind, &stored, true).await
    }

    /// PATCH, answered without the resource (RFC 7644 §3.5.2 allows `204 No Content`):
    /// returns the new version. A group's answer would otherwise carry every member.
    pub async fn patch_unrendered(
        &self,
        ctx: &Ctx,
        kind: Kind,
        id: &str,
        body: &Value,
        if_match: Option<&str>,
    ) -> ApiResult<StoredResource> {
        let rt = resource_type(kind);
        let ops = patch::parse_request(rt, body)?;
        let touches_members = kind == Kind::Group;
        let members = match kind {
            Kind::Group => Members::of_ops(&ops),
            Kind::User => Members::All,
        };
        let limits = self.limits;
        self.write_existing_unrendered(ctx, kind, id, if_match, members, move |current| {
            let mut doc = current.doc.clone();
            if touches_members {
                doc["members"] = Value::Array(
                    current
                        .members
                        .iter()
                        .map(|(id, ty)| json!({"value": id, "type": ty}))
                        .collect(),
                );
            }
            patch::apply(rt, &mut doc, &ops)?;
            let mut doc = normalize_resource(rt, &doc, Source::Patched)?;
            let members = if touches_members {
                Some(take_members(&mut doc))
            } else {
                None
            };
            limits.check(&doc)?;
            Ok((doc, members))
        })
        .await
    }

    /// Runs a read-modify-write on an existing resource in one transaction, and renders it.
    async fn write_existing<F>(
        &self,
        ctx: &Ctx,
        kind: Kind,
        id: &str,
        if_match: Option<&str>,
        members: Members,
        change: F,
    ) -> ApiResult<Rendered>
    where
        F: FnMut(&Current) -> ApiResult<(Value, Option<Vec<(String, Option<String>)>>)>
            + Send
            + 'static,
    {
        let stored = self
            .write_existing_unrendered(ctx, kind, id, if_match, members, change)
            .await?;
        self.render(ctx, kind, &stored, true).await
    }

    /// Runs a read-modify-write on an existing resource in one transaction (which may run
    /// again from the start: `change` reads only what it is given).
    async fn write_existing_unrendered<F>(
        &self,
        ctx: &Ctx,
        kind: Kind,
        id: &str,
        if_match: Option<&str>,
        members: Members,
        mut change: F,
    ) -> ApiResult<StoredResource>
    where
        F: FnMut(&Current) -> ApiResult<(Value, Option<Vec<(String, Option<String>)>>)>
            + Send
            + 'static,
    {
        let (ctx2, id2, if_match) = (ctx.clone(), id.to_string(), if_match.map(str::to_string));
        let now = self.now();
        let cause = self.cause(ctx, &format!("{}.update", kind.name().to_ascii_lowercase()));
        let outcome = self
            .store
            .write_for_again(&ctx.tenant, move |tx| -> ApiResult<StoredResource> {
                let (ctx, id) = (&ctx2, &id2);
                tx.lock_tenant(&ctx.tenant)?;
                let groups_matter =
                    kind == Kind::Group && crate::licenses::decide::groups_matter(tx, &ctx.tenant)?;
                let before_under = if groups_matter {
                    tx.users_under(&ctx.tenant, id)?
                } else {
                    Vec::new()
                };
                {
                    // A user comes with its licenses, for its re-decision; a group whose
                    // change names its members with those of them it has, and what each is.
                    let (stored, held, known) = match (kind, &members) {
                        (Kind::User, _) => {
                            let (stored, held) = tx
                                .get_user_with_licenses(&ctx.tenant, id)?
                                .ok_or_else(|| not_found(kind, id))?;
                            (stored, Some(held), None)
                        }
                        (Kind::Group, Members::Named(ids)) if ids.len() <= NAMED_AT_ONCE => {
                            let (stored, among, kinds) = tx
                                .get_group_for_members(&ctx.tenant, id, ids)?
                                .ok_or_else(|| not_found(kind, id))?;
                            (stored, None, Some((among, kinds)))
                        }
                        (Kind::Group, _) => (current_version(tx, ctx, kind, id, None)?, None, None),
                    };
                    check_if_match(&stored, if_match.as_deref())?;
                    let (members, kinds) = match (kind, &members, known) {
                        (Kind::User, ..) => (Vec::new(), None),
                        (Kind::Group, _, Some((among, kinds))) => (among, Some(kinds)),
                        (Kind::Group, Members::All, None) => {
                            (tx.member_ids(&ctx.tenant, id)?, None)
                        }
                        (Kind::Group, Members::Named(ids), None) => {
                            (tx.members_among(&ctx.tenant, id, ids)?, None)
                        }
                    };
                    let current = Current {
                        doc: stored.doc.clone(),
                        members,
                    };
                    let (new_doc, new_members) = change(&current)?;

                    // Member changes as a diff, so a 1,000-member PATCH touches only what changed.
                    let (mut added, mut removed) = (Vec::new(), Vec::new());
                    if let Some(new_members) = &new_members {
                        let old: BTreeSet<&String> =
                            current.members.iter().map(|(id, _)| id).collect();
                        let new: BTreeSet<&String> = new_members.iter().map(|(id, _)| id).collect();
                        let to_add: Vec<(String, Option<String>)> = new_members
                            .iter()
                            .filter(|(id, _)| !old.contains(id))
                            .cloned()
                            .collect();
                        removed = old
                            .difference(&new)
                            .map(|s| (*s).clone())
                            .collect::<Vec<_>>();
                        if !to_add.is_empty() {
                            added = check_members(tx, ctx, id, &to_add, kinds.as_ref())?;
                        }
                    }
                    if new_doc == stored.doc && added.is_empty() && removed.is_empty() {
                        // RFC 7644 §3.5.2: a PATCH that changes nothing succeeds without a new version.
                        return Ok(stored);
                    }
                    let next = StoredResource {
                        id: stored.id.clone(),
                        doc: new_doc,
                        created: stored.created.clone(),
                        last_modified: now.clone(),
                        version: stored.version + 1,
                    };
                    // A taken name, found by the update or (a user's, written with the end)
                    // by the end.
                    let taken = |e| taken_name(kind, &next.doc, e);
                    match kind {
                        Kind::User => {
                            tx.update_user_with_end(&ctx.tenant, &stored.doc, &next, stored.version)
                        }
                        Kind::Group => tx
                            .update_group_with_end(&ctx.tenant, &stored.doc, &next, stored.version)
                            .and_then(|()| {
                                tx.change_members_with_end(&ctx.tenant, id, &added, &removed)
                            }),
                    }
                    .map_err(taken)?;
                    let (action, event, before, after) = match kind {
                        Kind::User => {
                            let t = UserTransition::between(
                                is_active(&stored.doc),
                                is_active(&next.doc),
                            );
                            let action = match t {
                                UserTransition::Deactivated => "user.deactivate",
                                UserTransition::Reactivated => "user.reactivate",
                                _ => "user.update",
                            };
                            (
                                action,
                                format!("user.{}", t.name()),
                                stored.doc.clone(),
                                next.doc.clone(),
                            )
                        }
                        Kind::Group => {
                            let mut before = stored.doc.clone();
                            let mut after = next.doc.clone();
                            before["members_removed"] = json!(removed);
                            after["members_added"] =
                                json!(added.iter().map(|(id, _)| id).collect::<Vec<_>>());
                            ("group.update", "group.updated".to_string(), before, after)
                        }
                    };
                    record(
                        tx,
                        ctx,
                        kind,
                        id,
                        action,
                        Some(&before),
                        Some(&after),
                        &event,
                        &now,
                    )?;
                    let mut cause = cause.clone();
                    cause.action = action.to_string();
                    let affected = match kind {
                        Kind::User if action == "user.deactivate" => {
                            let gone = (
                                id.as_str(),
                                user_name_of(&next.doc),
                                external_id_of(&next.doc),
                            );
                            let held = crate::licenses::brake::on_deprovision(
                                tx,
                                &cause,
                                gone,
                                crate::licenses::brake::Gone::Deactivated,
                            )?;
                            if held { Vec::new() } else { vec![id.clone()] }
                        }
                        Kind::User => {
                            if action == "user.reactivate" {
                                crate::licenses::brake::on_return(tx, &cause, id)?;
                            }
                            vec![id.clone()]
                        }
                        Kind::Group if groups_matter => {
                            let mut all: BTreeSet<String> = before_under.iter().cloned().collect();
                            all.extend(tx.users_under(&ctx.tenant, id)?);
                            all.into_iter().collect()
                        }
                        Kind::Group => Vec::new(),
                    };
                    match kind {
                        // The user as just written: its licenses are re-decided without
                        // reading it back.
                        // Its licenses as read with it, unless the brake moved them since.
                        Kind::User if matches!(affected.as_slice(), [only] if only == id) => {
                            let held = held.filter(|_| action == "user.update");
                            relicense(
                                tx,
                                &cause,
                                Scope::Patched(id.clone(), next.doc.clone(), held),
                            )?;
                        }
                        _ if !affected.is_empty() => {
                            relicense(tx, &cause, Scope::Users(affected))?;
                        }
                        _ => {}
                    }
                    tx.flush().map_err(taken)?;
                    Ok(next)
                }
            })
            .await?;
        Ok(outcome)
    }

    /// DELETE.
    pub async fn delete(
        &self,
        ctx: &Ctx,
        kind: Kind,
        id: &str,
        if_match: Option<&str>,
    ) -> ApiResult<()> {
        let cause = self.cause(ctx, &format!("{}.delete", kind.name().to_ascii_lowercase()));
        let (ctx, id, if_match) = (ctx.clone(), id.to_string(), if_match.map(str::to_string));
        let now = self.now();
        let tenant = ctx.tenant.clone();
        self.store
            .write_for(&tenant, move |tx| -> ApiResult<()> {
                tx.lock_tenant(&ctx.tenant)?;
                let stored = current_version(tx, &ctx, kind, &id, if_match.as_deref())?;
                let mut affected = match kind {
                    Kind::User => vec![id.clone()],
                    Kind::Group if crate::licenses::decide::groups_matter(tx, &ctx.tenant)? => {
                        tx.users_under(&ctx.tenant, &id)?
                    }
                    Kind::Group => Vec::new(),
                };
                if !tx.delete_resource(kind, &ctx.tenant, &id)? {
                    return Err(not_found(kind, &id));
                }
                // Deleting an inactive user is no new deprovision: their seats went (or are
                // held) when they were deactivated.
                if kind == Kind::User
                    && is_active(&stored.doc)
                    && crate::licenses::brake::on_deprovision(
                        tx,
                        &cause,
                        (
                            id.as_str(),
                            user_name_of(&stored.doc),
                            external_id_of(&stored.doc),
                        ),
                        crate::licenses::brake::Gone::Deleted,
                    )?
                {
                    affected.clear();
                }
                let (action, event) = match kind {
                    Kind::User => ("user.delete", "user.deleted"),
                    Kind::Group => ("group.delete", "group.deleted"),
                };
                record(
                    tx,
                    &ctx,
                    kind,
                    &id,
                    action,
                    Some(&stored.doc),
                    None,
                    event,
                    &now,
                )?;
                if !affected.is_empty() {
                    relicense(tx, &cause, Scope::Users(affected))?;
                }
                Ok(())
            })
            .await
    }

    /// Lists resources: SQL decides what it can exactly; anything else is evaluated in memory
    /// over the SQL's superset of candidates, never ignored.
    pub async fn list(&self, ctx: &Ctx, kind: Kind, q: &ListQuery) -> ApiResult<ListPage> {
        let rt = resource_type(kind);
        let columns = Columns(kind);
        let filter_sql = match &q.filter {
            Some(f) => sql::translate(f, rt, &columns, 2),
            None => SqlWhere {
                sql: "1=1".into(),
                params: Vec::new(),
                exact: true,
            },
        };
        let sort_column = match &q.sort_by {
            None => Some(None),
            Some(p) => scim::filter::resolve(rt, p)
                .ok()
                .and_then(|r| columns.column(&r))
                .filter(|c| c.exists.is_none() && c.kind != ColumnKind::Bool)
                .map(|c| Some(c.expr)),
        };
        let wants_related = match kind {
            Kind::User => q.projection.wants(rt, "groups"),
            Kind::Group => q.projection.wants(rt, "members"),
        };
        let count = q.count;
        if let (true, Some(column)) = (filter_sql.exact, sort_column.clone()) {
            let order = Order {
                column: column.clone(),
                descending: q.sort_order == list::SortOrder::Descending,
            };
            match &q.paging {
                Paging::Index(start) => {
                    let page = Page::Offset {
                        offset: (*start as i64) - 1,
                        limit: count as i64,
                    };
                    let (rows, total, groups) = self
                        .sql_page(ctx, kind, &filter_sql, &order, &page, wants_related)
                        .await?;
                    let mut resources = self
                        .render_rows(ctx, kind, &rows, groups, wants_related, q)
                        .await?;
                    resources.truncate(self.limits.fitting(&resources));
                    return Ok(ListPage {
                        total: total.unwrap_or(0) as usize,
                        resources,
                        next_cursor: None,
                        start_index: Some(*start),
                    });
                }
                Paging::Cursor(pos) if column.is_none() => {
                    let page = Page::After {
                        after: pos.as_ref().map(|p| p.id.clone()),
                        limit: count as i64 + 1,
                    };
                    let (mut rows, total, groups) = self
                        .sql_page(ctx, kind, &filter_sql, &order, &page, wants_related)
                        .await?;
                    let more = rows.len() > count;
                    rows.truncate(count);
                    let mut resources = self
                        .render_rows(ctx, kind, &rows, groups, wants_related, q)
                        .await?;
                    let fit = self.limits.fitting(&resources);
                    let cut = fit < resources.len();
                    resources.truncate(fit);
                    rows.truncate(fit);
                    let next_cursor = ((more || cut) && count > 0)
                        .then(|| {
                            rows.last().map(|r| {
                                CursorPos {
                                    key: None,
                                    id: r.id.clone(),
                                }
                                .encode()
                            })
                        })
                        .flatten();
                    return Ok(ListPage {
                        total: total.unwrap_or(0) as usize,
                        resources,
                        next_cursor,
                        start_index: None,
                    });
                }
                Paging::Cursor(_) => {}
            }
        }
        // In memory: fetch the SQL superset, render fully, filter, sort, page.
        let order = Order {
            column: None,
            descending: false,
        };
        let (rows, _) = self
            .store
            .list_resources(kind, &ctx.tenant, &filter_sql, &order, &Page::All, false)
            .await?;
        // Related resources are loaded for every candidate only when the filter or the sort needs them.
        let related_name = if kind == Kind::User {
            "groups"
        } else {
            "members"
        };
        let needs_related = q.filter.as_ref().is_some_and(|f| {
            f.paths()
                .iter()
                .any(|p| p.name.eq_ignore_ascii_case(related_name))
        }) || q
            .sort_by
            .as_ref()
            .is_some_and(|p| p.name.eq_ignore_ascii_case(related_name));
        let mut full = self.render_many(ctx, kind, &rows, needs_related).await?;
        if let Some(f) = &q.filter {
            full.retain(|r| f.matches(rt, &r.body));
        }
        let keyed: Vec<(Option<SortKey>, Rendered)> = full
            .into_iter()
            .map(|r| {
                (
                    q.sort_by
                        .as_ref()
                        .and_then(|p| list::sort_key(rt, &r.body, p)),
                    r,
                )
            })
            .collect();
        let mut keyed = keyed;
        keyed.sort_by(|a, b| {
            list::compare_keys((&a.0, id_of(&a.1)), (&b.0, id_of(&b.1)), q.sort_order)
        });
        let total = keyed.len();
        let (slice, next_cursor, start_index): (Vec<Keyed>, Option<String>, Option<usize>) =
            match &q.paging {
                Paging::Index(start) => (
                    keyed.into_iter().skip(start - 1).take(count).collect(),
                    None,
                    Some(*start),
                ),
                Paging::Cursor(pos) => {
                    let skip = match pos {
                        None => 0,
                        Some(p) => keyed
                            .iter()
                            .position(|(k, r)| {
                                list::compare_keys((k, id_of(r)), (&p.key, &p.id), q.sort_order)
                                    == std::cmp::Ordering::Greater
                            })
                            .unwrap_or(total),
                    };
                    let page: Vec<_> = keyed.into_iter().skip(skip).take(count).collect();
                    let more = skip + page.len() < total;
                    let next = (more && count > 0)
                        .then(|| {
                            page.last().map(|(k, r)| {
                                CursorPos {
                                    key: k.clone(),
                                    id: id_of(r).to_string(),
                                }
                                .encode()
                            })
                        })
                        .flatten();
                    (page, next, None)
                }
            };
        let page_rows: Vec<StoredResource> = slice.iter().map(|(_, r)| stored_of(r)).collect();
        let positions: Vec<CursorPos> = slice
            .iter()
            .map(|(k, r)| CursorPos {
                key: k.clone(),
                id: id_of(r).to_string(),
            })
            .collect();
        let mut resources = if needs_related || !wants_related {
            slice
                .into_iter()
                .map(|(_, r)| q.projection.apply(rt, &r.body))
                .collect()
        } else {
            self.render_page(ctx, kind, &page_rows, wants_related, q)
                .await?
        };
        let fit = self.limits.fitting(&resources);
        let mut next_cursor = next_cursor;
        if fit < resources.len() {
            resources.truncate(fit);
            if matches!(q.paging, Paging::Cursor(_)) {
                next_cursor = positions.get(fit - 1).map(CursorPos::encode);
            }
        }
        Ok(ListPage {
            total,
            resources,
            next_cursor,
            start_index,
        })
    }

    /// One SQL page; for users whose groups are wanted, the groups come in the same statement.
    async fn sql_page(
        &self,
        ctx: &Ctx,
        kind: Kind,
        filter: &SqlWhere,
        order: &Order,
        page: &Page,
        wants_related: bool,
    ) -> ApiResult<(Vec<StoredResource>, Option<i64>, Option<Related>)> {
        if kind == Kind::User && wants_related {
            let listing = self
                .store
                .list_users_with_groups(&ctx.tenant, filter, order, page, true)
                .await?;
            let mut map: BTreeMap<String, Vec<Value>> = BTreeMap::new();
            for g in listing.groups {
                map.entry(g.user_id.clone())
                    .or_default()
                    .push(group_ref_json(ctx, g));
            }
            let related = Related {
                groups: map,
                licenses: listing.licenses,
            };
            return Ok((listing.rows, listing.total, Some(related)));
        }
        let (rows, total) = self
            .store
            .list_resources(kind, &ctx.tenant, filter, order, page, true)
            .await?;
        Ok((rows, total, None))
    }

    async fn render_rows(
        &self,
        ctx: &Ctx,
        kind: Kind,
        rows: &[StoredResource],
        related: Option<Related>,
        wants_related: bool,
        q: &ListQuery,
    ) -> ApiResult<Vec<Value>> {
        match related {
            Some(mut related) => {
                let rt = resource_type(kind);
                let mut full: Vec<Rendered> = rows
                    .iter()
                    .map(|r| {
                        let groups = related.groups.remove(&r.id).unwrap_or_default();
                        assemble(ctx, kind, r, Some(groups))
                    })
                    .collect();
                match &related.licenses {
                    Some((licenses, products)) => {
                        let mut bodies: Vec<&mut Value> =
                            full.iter_mut().map(|r| &mut r.body).collect();
                        attach_known_licenses(&mut bodies, licenses, products);
                    }
                    None => self.attach_rendered(ctx, kind, &mut full).await?,
                }
                Ok(full
                    .iter()
                    .map(|r| q.projection.apply(rt, &r.body))
                    .collect())
            }
            None => self.render_page(ctx, kind, rows, wants_related, q).await,
        }
    }

    async fn render_many(
        &self,
        ctx: &Ctx,
        kind: Kind,
        rows: &[StoredResource],
        related: bool,
    ) -> ApiResult<Vec<Rendered>> {
        if !related {
            let mut out: Vec<Rendered> =
                rows.iter().map(|r| assemble(ctx, kind, r, None)).collect();
            self.attach_rendered(ctx, kind, &mut out).await?;
            return Ok(out);
        }
        match kind {
            Kind::User => {
                let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
                let mut groups = self.user_groups(ctx, &ids).await?;
                let mut out: Vec<Rendered> = rows
                    .iter()
                    .map(|r| assemble(ctx, kind, r, Some(groups.remove(&r.id).unwrap_or_default())))
                    .collect();
                self.attach_rendered(ctx, kind, &mut out).await?;
                Ok(out)
            }
            Kind::Group => {
                let mut out = Vec::with_capacity(rows.len());
                for r in rows {
                    out.push(assemble(
                        ctx,
                        kind,
                        r,
                        Some(self.members_json(ctx, &r.id).await?),
                    ));
                }
                Ok(out)
            }
        }
    }

    async fn render_page(
        &self,
        ctx: &Ctx,
        kind: Kind,
        rows: &[StoredResource],
        related: bool,
        q: &ListQuery,
    ) -> ApiResult<Vec<Value>> {
        let rt = resource_type(kind);
        Ok(self
            .render_many(ctx, kind, rows, related)
            .await?
            .into_iter()
            .map(|r| q.projection.apply(rt, &r.body))
            .collect())
    }
}

/// A user rendered with what it shows beside its document.
fn assemble_user(
    ctx: &Ctx,
    res: &StoredResource,
    (groups, licenses, products): crate::directory::store::UserRelated,
) -> Rendered {
    let groups = groups.into_iter().map(|g| group_ref_json(ctx, g)).collect();
    let mut out = assemble(ctx, Kind::User, res, Some(groups));
    let mut body = [&mut out.body];
    attach_known_licenses(&mut body, &licenses, &products);
    out
}

/// What a page of users shows beside the users: their groups (as rendered references, by
/// user), read with the page, and their licenses with those licenses' products.
struct Related {
    groups: BTreeMap<String, Vec<Value>>,
    /// The users' licenses and their products, when they were read with the page
    /// (PostgreSQL); otherwise they are read when the page is rendered.
    licenses: Option<(Vec<LicenseRow>, Vec<licensing::model::Product>)>,
}

/// Puts each user's licensing extension into the rendered users, from licenses and products
/// already read (users who hold no license get none).
fn attach_known_licenses(
    users: &mut [&mut Value],
    licenses: &[LicenseRow],
    products: &[licensing::model::Product],
) {
    let mut by_user: BTreeMap<&str, Vec<&LicenseRow>> = BTreeMap::new();
    for r in licenses {
        by_user.entry(r.user_id.as_str()).or_default().push(r);
    }
    for user in users.iter_mut() {
        let Some(mine) = user
            .get("id")
            .and_then(Value::as_str)
            .and_then(|id| by_user.get(id))
        else {
            continue;
        };
        let ext = licensing_extension(mine, products);
        insert_extension(user, ext);
    }
}

fn user_name_of(doc: &Value) -> &str {
    doc.get("userName")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn external_id_of(doc: &Value) -> Option<&str> {
    doc.get("externalId").and_then(Value::as_str)
}

/// The licensing extension of a user: each license and the entitlements the active ones grant.
fn licensing_extension(mine: &[&LicenseRow], products: &[licensing::model::Product]) -> Value {
    let held: Vec<licensing::entitlements::Held> = mine
        .iter()
        .filter_map(|l| {
            Some(licensing::entitlements::Held {
                product: licensing::model::Key::new("product", &l.product).ok()?,
                plan: licensing::model::Key::new("plan", &l.plan).ok()?,
                state: if l.state == "active" {
                    licensing::entitlements::LicenseState::Active
                } else {
                    licensing::entitlements::LicenseState::Waitlisted
                },
            })
        })
        .collect();
    let ent = licensing::entitlements::effective(&held, products);
    json!({
        "licenses": mine.iter().map(|l| json!({
            "product": l.product,
            "plan": l.plan,
            "state": l.state,
            "reason": l.reason,
            "since": l.changed,
        })).collect::<Vec<_>>(),
        "features": ent.features.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
        "limits": ent.limits.iter().map(|(k, v)| json!({"name": k.as_str(), "value": v})).collect::<Vec<_>>(),
    })
}

/// Puts the licensing extension into a rendered user (before `meta`, URN in `schemas` once).
fn insert_extension(user: &mut Value, ext: Value) {
    if let Some(obj) = user.as_object_mut() {
        if let Some(Value::Array(schemas)) = obj.get_mut("schemas")
            && !schemas
                .iter()
                .any(|s| s.as_str() == Some(scim::schema::LICENSING_USER_SCHEMA))
        {
            schemas.push(Value::String(scim::schema::LICENSING_USER_SCHEMA.into()));
        }
        let meta = obj.remove("meta");
        obj.insert(scim::schema::LICENSING_USER_SCHEMA.into(), ext);
        if let Some(meta) = meta {
            obj.insert("meta".into(), meta);
        }
    }
}

/// Reads a resource for a write, checking `If-Match` against its version (412 on mismatch).
fn current_version(
    tx: &mut Tx<'_>,
    ctx: &Ctx,
    kind: Kind,
    id: &str,
    if_match: Option<&str>,
) -> ApiResult<StoredResource> {
    let stored = tx
        .get_resource(kind, &ctx.tenant, id)?
        .ok_or_else(|| not_found(kind, id))?;
    check_if_match(&stored, if_match)?;
    Ok(stored)
}

/// Refuses a write whose `If-Match` names another version (RFC 7644 §3.14).
fn check_if_match(stored: &StoredResource, if_match: Option<&str>) -> ApiResult<()> {
    match if_match {
        Some(h) if !etag_matches(h, stored.version) => Err(ApiError::PreconditionFailed(format!(
            "If-Match {h} does not match the current version {}",
            etag(stored.version)
        ))),
        _ => Ok(()),
    }
}

/// Validates new members: each must be a user or group of this tenant, its declared type
/// must match, and no group may end up containing itself.
fn check_members(
    tx: &mut Tx<'_>,
    ctx: &Ctx,
    group: &str,
    members: &[(String, Option<String>)],
    known: Option<&HashMap<String, &'static str>>,
) -> ApiResult<Vec<(String, String)>> {
    let ids: Vec<String> = members
        .iter()
        .map(|(id, _)| id.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let classified;
    let found = match known {
        // What each id the change names is, read with the group.
        Some(known) => known,
        None => {
            classified = tx.classify_ids(&ctx.tenant, &ids)?;
            &classified
        }
    };
    let mut out: Vec<(String, String)> = Vec::with_capacity(ids.len());
    let mut seen = BTreeSet::new();
    let mut nested = Vec::new();
    for (id, declared) in members {
        let Some(actual) = found.get(id) else {
            return Err(scim::Error::InvalidValue(format!(
                "member '{id}' is not a user or group of this tenant"
            ))
            .into());
        };
        if let Some(d) = declared
            && !d.eq_ignore_ascii_case(actual)
        {
            return Err(scim::Error::InvalidValue(format!(
                "member '{id}' is a {actual}, not a {d}"
            ))
            .into());
        }
        if !seen.insert(id.clone()) {
            continue;
        }
        if *actual == "Group" {
            nested.push(id.clone());
        }
        out.push((id.clone(), actual.to_string()));
    }
    if !nested.is_empty() {
        let ancestors = tx.group_ancestors(&ctx.tenant, group)?;
        if let Some(cycle) = nested.iter().find(|g| ancestors.contains(g)) {
            return Err(scim::Error::InvalidValue(format!(
                "adding group '{cycle}' would make a group contain itself"
            ))
            .into());
        }
    }
    Ok(out)
}

/// Writes the audit record and the outbox event of a change, in the change's transaction.
#[allow(clippy::too_many_arguments)]
fn record(
    tx: &mut Tx<'_>,
    ctx: &Ctx,
    kind: Kind,
    id: &str,
    action: &str,
    before: Option<&Value>,
    after: Option<&Value>,
    event: &str,
    now: &str,
) -> ApiResult<()> {
    tx.audit(NewAudit {
        tenant_id: &ctx.tenant,
        at: now,
        actor: &ctx.actor,
        action,
        resource_type: kind.name(),
        resource_id: id,
        request_id: &ctx.request_id,
        before: before.map(Value::to_string),
        after: after.map(Value::to_string),
    })?;
    // The outbox row's columns carry the type, tenant, resource and time; the payload is
    // the event's data: the resource as it now is (as it was, once deleted), and for users
    // whether it gained or lost access and why.
    let (event, reason) = match event {
        "user.created" => (EventType::UserProvisioned, Some("created")),
        "user.reactivated" => (EventType::UserProvisioned, Some("reactivated")),
        "user.deactivated" => (EventType::UserDeprovisioned, Some("deactivated")),
        "user.deleted" => (EventType::UserDeprovisioned, Some("deleted")),
        "user.updated" => (EventType::UserUpdated, None),
        "group.created" => (EventType::GroupCreated, None),
        "group.updated" => (EventType::GroupUpdated, None),
        "group.deleted" => (EventType::GroupDeleted, None),
        other => {
            return Err(crate::kernel::store::StoreError::Corrupt(format!(
                "no event type for the change '{other}'"
            ))
            .into());
        }
    };
    let mut resource = after.or(before).cloned().unwrap_or(Value::Null);
    if let Some(obj) = resource.as_object_mut() {
        obj.insert("id".into(), Value::String(id.to_string()));
    }
    let mut payload = json!({"request_id": ctx.request_id});
    payload[kind.name().to_ascii_lowercase()] = resource;
    if let Some(r) = reason {
        payload["reason"] = Value::String(r.into());
    }
    tx.outbox(
        &ctx.tenant,
        event,
        kind.name(),
        id,
        &payload.to_string(),
        now,
    )?;
    Ok(())
}

/// A user's `groups` value (RFC 7643 §4.1.2: direct and indirect memberships).
fn group_ref_json(ctx: &Ctx, g: crate::directory::store::GroupRef) -> Value {
    json!({
        "value": g.group_id,
        "$ref": format!("{}/Groups/{}", ctx.base_url, g.group_id),
        "display": g.display,
        "type": if g.direct { "direct" } else { "indirect" },
    })
}

/// A resource with its sort key, for in-memory ordering.
type Keyed = (Option<SortKey>, Rendered);

/// What a change function sees of the current resource.
/// Which of a group's members a change must see.
enum Members {
    /// All of them: the change may replace or clear the list.
    All,
    /// Only these ids: every operation adds or removes members it names by id, so the members
    /// it does not name cannot change and need not be read.
    Named(Vec<String>),
}

impl Members {
    /// What a group PATCH must see. Identity providers send member changes as `add` with
    /// values, `remove` with values (Entra ID) or `remove` with `members[value eq "id"]`;
    /// any other operation on `members` sees the whole list.
    fn of_ops(ops: &[patch::PatchOperation]) -> Members {
        let mut ids = Vec::new();
        for op in ops {
            let Some(path) = &op.path else {
                let names_members = op
                    .value
                    .as_ref()
                    .and_then(Value::as_object)
                    .is_none_or(|o| o.keys().any(|k| k.eq_ignore_ascii_case("members")));
                if names_members {
                    return Members::All;
                }
                continue;
            };
            if path.extension.is_some() || !path.attr.name.eq_ignore_ascii_case("members") {
                continue;
            }
            if path.attr.sub.is_some() || path.sub.is_some() {
                return Members::All;
            }
            let named = match (op.op, &path.filter, &op.value) {
                (patch::OpKind::Add, None, Some(v))
                | (patch::OpKind::Remove, None, Some(v @ (Value::Array(_) | Value::Object(_)))) => {
                    values_named(v)
                }
                (patch::OpKind::Remove, Some(f), _) => id_named(f).map(|id| vec![id]),
                _ => None,
            };
            match named {
                Some(named) => ids.extend(named),
                None => return Members::All,
            }
        }
        ids.sort();
        ids.dedup();
        Members::Named(ids)
    }
}

/// The ids of member values (`[{"value": "id"}, …]` or one object), if each names one.
fn values_named(v: &Value) -> Option<Vec<String>> {
    let one = |item: &Value| {
        let obj = item.as_object()?;
        let (_, value) = obj.iter().find(|(k, _)| k.eq_ignore_ascii_case("value"))?;
        value.as_str().map(str::to_string)
    };
    match v {
        Value::Array(items) => items.iter().map(one).collect(),
        other => one(other).map(|id| vec![id]),
    }
}

/// The id of a `value eq "id"` member filter.
fn id_named(f: &scim::filter::Filter) -> Option<String> {
    match f {
        scim::filter::Filter::Compare(
            p,
            scim::filter::CompareOp::Eq,
            scim::filter::CompValue::Str(id),
        ) if p.urn.is_none() && p.sub.is_none() && p.name.eq_ignore_ascii_case("value") => {
            Some(id.clone())
        }
        _ => None,
    }
}

pub struct Current {
    /// The stored document.
    pub doc: Value,
    /// Group members (id, type), empty for users.
    pub members: Vec<(String, String)>,
}

fn id_of(r: &Rendered) -> &str {
    r.body.get("id").and_then(Value::as_str).unwrap_or_default()
}

fn stored_of(r: &Rendered) -> StoredResource {
    let mut doc = r.body.clone();
    let meta = doc.as_object_mut().and_then(|o| {
        o.remove("id");
        o.remove("groups");
        o.remove("members");
        o.remove(scim::schema::LICENSING_USER_SCHEMA);
        if let Some(Value::Array(schemas)) = o.get_mut("schemas") {
            schemas.retain(|s| s.as_str() != Some(scim::schema::LICENSING_USER_SCHEMA));
        }
        o.remove("meta")
    });
    let field = |k: &str| {
        meta.as_ref()
            .and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    StoredResource {
        id: id_of(r).to_string(),
        doc,
        created: field("created"),
        last_modified: field("lastModified"),
        version: r.version,
    }
}

/// Builds the wire form: `schemas`, `id`, the document, related resources, `meta`.
fn assemble(ctx: &Ctx, kind: Kind, res: &StoredResource, related: Option<Vec<Value>>) -> Rendered {
    let endpoint = match kind {
        Kind::User => "Users",
        Kind::Group => "Groups",
    };
    let location = format!("{}/{endpoint}/{}", ctx.base_url, res.id);
    let mut out = Map::new();
    let doc = res.doc.as_object().cloned().unwrap_or_default();
    if let Some(s) = doc.get("schemas") {
        out.insert("schemas".into(), s.clone());
    }
    out.insert("id".into(), Value::String(res.id.clone()));
    for (k, v) in doc {
        if k != "schemas" {
            out.insert(k, v);
        }
    }
    if let Some(related) = related
        && !related.is_empty()
    {
        let key = if kind == Kind::User {
            "groups"
        } else {
            "members"
        };
        out.insert(key.into(), Value::Array(related));
    }
    out.insert(
        "meta".into(),
        json!({
            "resourceType": kind.name(),
            "created": res.created,
            "lastModified": res.last_modified,
            "location": location,
            "version": etag(res.version),
        }),
    );
    Rendered {
        body: Value::Object(out),
        version: res.version,
        location,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_forms() {
        assert!(etag_matches("W/\"3\"", 3));
        assert!(etag_matches("\"3\"", 3));
        assert!(etag_matches("*", 9));
        assert!(etag_matches("W/\"1\", W/\"3\"", 3));
        assert!(!etag_matches("W/\"2\"", 3));
    }

    fn members_of(ops: Value) -> Option<Vec<String>> {
        let rt = resource_type(Kind::Group);
        let ops = patch::parse_request(
            rt,
            &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops}),
        )
        .unwrap();
        match Members::of_ops(&ops) {
            Members::All => None,
            Members::Named(ids) => Some(ids),
        }
    }

    #[test]
    fn member_patches_name_the_members_they_read() {
        let named = |ids: &[&str]| Some(ids.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            members_of(json!([
                {"op": "add", "path": "members", "value": [{"value": "b"}, {"value": "a"}]},
                {"op": "remove", "path": "members[value eq \"c\"]"},
                {"op": "remove", "path": "members", "value": [{"value": "a"}]},
                {"op": "replace", "path": "displayName", "value": "x"},
            ])),
            named(&["a", "b", "c"])
        );
        assert_eq!(
            members_of(json!([{"op": "replace", "value": {"displayName": "x"}}])),
            named(&[])
        );
        // Anything that may touch members it does not name reads them all.
        for ops in [
            json!([{"op": "remove", "path": "members"}]),
            json!([{"op": "replace", "path": "members", "value": [{"value": "a"}]}]),
            json!([{"op": "remove", "path": "members[type eq \"User\"]"}]),
            json!([{"op": "remove", "path": "members[value eq \"a\" or value eq \"b\"]"}]),
            json!([{"op": "replace", "value": {"members": [{"value": "a"}]}}]),
            json!([{"op": "replace", "path": "members[value eq \"a\"].value", "value": "b"}]),
        ] {
            assert_eq!(members_of(ops.clone()), None, "{ops}");
        }
    }
}
