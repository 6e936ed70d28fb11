//! Billing and CRM events in: each event, once verified (see [`crate::kernel::signing`]), becomes a
//! change of one or more subscriptions, applied in one transaction together with every
//! license change it causes, exactly once:
//!
//! - an event id already applied (per source) changes nothing and answers as before;
//! - an event older than the newest one applied to its subscription is recorded as `stale`
//!   and ignored (billing systems deliver out of order);
//! - an event that cannot be applied (unknown tenant, product or plan…) applies nothing,
//!   is answered 422 and recorded as `rejected`, so a later delivery is processed again.
//!
//! Two formats arrive here: seatkeeper's generic one, and Stripe's `customer.subscription.*`
//! events, mapped to plans through configured price ids or price/product metadata.

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::billing::store::{BillingRecord, StripeMaps};
use crate::kernel::clock::Clock;
use crate::kernel::clock::stamp as time_text;
use crate::kernel::error::{ApiError, ApiResult};
use crate::kernel::store::{Change as AuditChange, Store, VENDOR};
use crate::licenses::decide::{Outcome, Scope, relicense};
use crate::licenses::service::{
    Actor, audit_model, cause, require_tenant, settle_terms, subscription_json, transact,
};

/// The generic format's source name.
pub const GENERIC: &str = "generic";
/// The Stripe endpoint's source name.
pub const STRIPE: &str = "stripe";

/// The event types of the generic format.
pub const TYPES: [&str; 6] = [
    "subscription.created",
    "subscription.updated",
    "subscription.renewed",
    "subscription.canceled",
    "subscription.payment_failed",
    "subscription.expired",
];

/// Largest number of subscription changes one event may carry (Stripe items).
const MAX_CHANGES: usize = 20;

/// One subscription change an event asks for.
#[derive(Debug, Clone)]
pub struct Change {
    /// Catalogue product key.
    pub product: String,
    /// Subscription fields to set (`plan`, `seats`, `status`, `starts_at`, `ends_at`,
    /// `grace_days`, `on_expiry`, `enforcement`), as the admin API takes them.
    pub fields: Map<String, Value>,
}

/// A billing event reduced to what it changes.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// [`GENERIC`] or [`STRIPE`].
    pub source: &'static str,
    /// The sender's event id.
    pub id: String,
    /// One of [`TYPES`].
    pub kind: String,
    /// When the sender created it.
    pub created_at: OffsetDateTime,
    /// The tenant.
    pub tenant: String,
    /// What to change; empty for an event that is recorded but changes nothing.
    pub changes: Vec<Change>,
    /// Why nothing changes, for events recorded as `ignored`.
    pub ignored: Option<String>,
}

fn invalid(msg: impl Into<String>) -> ApiError {
    scim::Error::InvalidValue(msg.into()).into()
}

/// A name in a billing event: not empty, at most 256 characters.
struct EventText(String);

impl<'de> serde::Deserialize<'de> for EventText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<EventText, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() || s.len() > 256 {
            return Err(serde::de::Error::custom(
                "must be a non-empty string of at most 256 characters",
            ));
        }
        Ok(EventText(s))
    }
}

/// One of [`TYPES`].
struct EventKind(String);

impl<'de> serde::Deserialize<'de> for EventKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<EventKind, D::Error> {
        let s = String::deserialize(d)?;
        if !TYPES.contains(&s.as_str()) {
            return Err(serde::de::Error::custom(format!(
                "'{s}' must be one of {}",
                TYPES.join(", ")
            )));
        }
        Ok(EventKind(s))
    }
}

/// The generic format's envelope. The subscription's fields are the admin API's, checked by
/// its validator once merged with the subscription as it stands.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GenericEvent {
    #[serde(default)]
    id: Option<EventText>,
    #[serde(rename = "type")]
    kind: EventKind,
    created_at: crate::kernel::ids::Instant,
    tenant: EventText,
    subscription: GenericSubscription,
}

#[derive(serde::Deserialize)]
struct GenericSubscription {
    product: EventText,
    #[serde(flatten)]
    fields: Map<String, Value>,
}

/// Parses the generic format:
/// `{id, type, created_at, tenant, subscription: {product, plan, seats, status, starts_at, ends_at, …}}`.
/// The event's id is its `webhook-id` (Standard Webhooks' idempotency key): a body `id`, if
/// any, must equal it.
pub fn parse_generic(body: &Value, webhook_id: Option<&str>) -> ApiResult<Incoming> {
    if !body.is_object() {
        return Err(invalid("a billing event must be a JSON object"));
    }
    let ev: GenericEvent = serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            String::new()
        } else {
            format!("{path}: ")
        };
        invalid(format!("{at}{}", e.into_inner()))
    })?;
    let kind = ev.kind.0;
    let id = match (ev.id, webhook_id) {
        (Some(EventText(body)), Some(header)) if body != header => {
            return Err(invalid(format!(
                "id: the body's id {body} differs from the webhook-id header {header}"
            )));
        }
        (Some(EventText(id)), _) => id,
        (None, Some(header)) => header.to_string(),
        (None, None) => return Err(invalid("id: missing (and no webhook-id header)")),
    };
    Ok(Incoming {
        source: GENERIC,
        id,
        kind,
        created_at: ev.created_at.at(),
        tenant: ev.tenant.0,
        changes: vec![Change {
            product: ev.subscription.product.0,
            fields: ev.subscription.fields,
        }],
        ignored: None,
    })
}

/// What an event did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Applied {
    /// The sender's event id.
    pub event: String,
    /// `applied`, `duplicate`, `stale` or `ignored`.
    pub outcome: String,
    /// Why, for `stale` and `ignored`; what it changed otherwise.
    pub detail: String,
    /// The subscriptions as they are after the event.
    pub subscriptions: Vec<Value>,
    /// The license changes it caused.
    pub licenses: Outcome,
}

/// The subscription an event leads to, as a body for the admin API's validator: the
/// current one (if any) with the event's fields on top, adjusted by the event's type.
fn merged(
    current: Option<&licensing::model::Subscription>,
    kind: &str,
    fields: &Map<String, Value>,
    created_at: OffsetDateTime,
) -> Value {
    let mut body = match current {
        Some(s) => subscription_json(s),
        None => json!({"starts_at": time_text(created_at)}),
    };
    if let Some(obj) = body.as_object_mut() {
        obj.remove("product");
        let started = obj.get("starts_at").cloned();
        for (k, v) in fields {
            obj.insert(k.clone(), v.clone());
        }
        // A renewal or update extends a subscription; its start never moves later (billing
        // systems send the new period's start), or access would stop until then.
        if current.is_some()
            && kind != "subscription.created"
            && let (Some(Value::String(old)), Some(Value::String(new))) =
                (&started, obj.get("starts_at"))
            && let (Ok(o), Ok(n)) = (
                OffsetDateTime::parse(old, &Rfc3339),
                OffsetDateTime::parse(new, &Rfc3339),
            )
            && n > o
        {
            obj.insert("starts_at".into(), Value::String(old.clone()));
        }
        let status = match kind {
            "subscription.canceled" => Some("canceled"),
            "subscription.payment_failed" => Some("past_due"),
            "subscription.expired" => Some("expired"),
            "subscription.created" | "subscription.renewed" if !fields.contains_key("status") => {
                Some("active")
            }
            _ => None,
        };
        if let Some(s) = status {
            obj.insert("status".into(), s.into());
        }
        // Canceled without an end: access ends now (and grace runs from here).
        if kind == "subscription.canceled" && obj.get("ends_at").is_none_or(Value::is_null) {
            obj.insert("ends_at".into(), time_text(created_at).into());
        }
    }
    body
}

/// Applies an event in one transaction (see the module docs).
pub async fn apply(
    store: &Store,
    clock: &dyn Clock,
    request_id: &str,
    ev: Incoming,
    tolerance: i64,
) -> ApiResult<Applied> {
    let now = clock.now();
    let actor = Actor {
        name: format!("billing:{}", ev.source),
        request_id: request_id.to_string(),
    };
    // An event dated further ahead than signatures may be would anchor its subscription's
    // order in the future, and every later event would be stale.
    if ev.created_at > now + time::Duration::seconds(tolerance) {
        return reject(
            store,
            &ev,
            now,
            ApiError::Unprocessable(format!(
                "created_at {} is more than {tolerance} s in the future",
                time_text(ev.created_at)
            )),
        )
        .await;
    }
    let ev2 = ev.clone();
    let result = transact(store, false, move |tx| {
        let ev = ev2;
        // The tenant's lock serialises deliveries of one event (and of one subscription's
        // events), so the duplicate and order checks below hold on PostgreSQL too.
        // Events recorded without effect may name no tenant (Stripe's other event types).
        if !(ev.tenant.is_empty() && ev.ignored.is_some()) {
            require_tenant(tx, &ev.tenant)
                .map_err(|_| ApiError::Unprocessable(format!("no tenant {}", ev.tenant)))?;
            tx.lock_tenant(&ev.tenant)?;
        }
        let now_text = time_text(now);
        let created_text = time_text(ev.created_at);
        let first_product = ev.changes.first().map(|c| c.product.clone()).unwrap_or_default();
        let record = |outcome: &str, detail: String| record_of(&ev, outcome, detail, &now_text);
        let current = |tx: &mut crate::kernel::store::Tx<'_>| -> ApiResult<Vec<Value>> {
            if ev.changes.is_empty() {
                return Ok(Vec::new());
            }
            Ok(tx
                .subscriptions(&ev.tenant)?
                .iter()
                .filter(|s| ev.changes.iter().any(|c| c.product == s.product.as_str()))
                .map(subscription_json)
                .collect())
        };
        if let Some(seen) = tx.billing_event(ev.source, &ev.id)?
            && seen.outcome != "rejected"
        {
            return Ok(Applied {
                event: ev.id.clone(),
                outcome: "duplicate".into(),
                detail: format!("already received at {} ({})", seen.received, seen.outcome),
                subscriptions: current(tx)?,
                licenses: Outcome::default(),
            });
        }
        if let Some(why) = &ev.ignored {
            tx.put_billing_event(&record("ignored", why.clone()))?;
            if !ev.tenant.is_empty() {
                tx.audit(crate::kernel::store::NewAudit {
                    tenant_id: &ev.tenant,
                    at: &now_text,
                    actor: &actor.name,
                    action: "billing.ignored",
                    resource_type: "Subscription",
                    resource_id: &first_product,
                    request_id: &actor.request_id,
                    before: None,
                    after: Some(json!({"event": ev.id, "type": ev.kind, "ignored": why}).to_string()),
                })?;
            }
            return Ok(Applied {
                event: ev.id.clone(),
                outcome: "ignored".into(),
                detail: why.clone(),
                subscriptions: current(tx)?,
                licenses: Outcome::default(),
            });
        }
        // Every change is validated before the order check: a malformed event is refused
        // (422, its id not spent) whether or not it is also late.
        let products = tx.products()?;
        let mut validated = Vec::with_capacity(ev.changes.len());
        for c in &ev.changes {
            if !products.iter().any(|p| p.key.as_str() == c.product) {
                return Err(ApiError::Unprocessable(format!(
                    "no product {} in the catalogue",
                    c.product
                )));
            }
            let before = tx
                .subscriptions(&ev.tenant)?
                .into_iter()
                .find(|s| s.product.as_str() == c.product);
            let body = merged(before.as_ref(), &ev.kind, &c.fields, ev.created_at);
            let sub = licensing::spec::subscription_from_json(&c.product, &body, &products)
                .map_err(|e| ApiError::Unprocessable(format!("{}: {e}", c.product)))?;
            validated.push((c, before, sub));
        }
        // Out of order: an event not newer than the newest one applied to a subscription it
        // names changes nothing (an admin change forgets that anchor: billing may correct
        // it). Equal instants are ordered by event id, so two deliveries end the same
        // whatever order they arrive in.
        for c in &ev.changes {
            if let Some((at, newer)) = tx.billing_mark(&ev.tenant, &c.product)?
                && (at.as_str(), newer.as_str()) > (created_text.as_str(), ev.id.as_str())
            {
                let why = format!(
                    "older than event {newer} ({at}) already applied to {}",
                    c.product
                );
                tx.put_billing_event(&record("stale", why.clone()))?;
                // Accepted, so audited; nothing changed, so no event goes out.
                tx.audit(crate::kernel::store::NewAudit {
                    tenant_id: &ev.tenant,
                    at: &now_text,
                    actor: &actor.name,
                    action: "billing.stale",
                    resource_type: "Subscription",
                    resource_id: &c.product,
                    request_id: &actor.request_id,
                    before: None,
                    after: Some(
                        json!({"event": ev.id, "type": ev.kind, "created_at": created_text, "ignored": why})
                            .to_string(),
                    ),
                })?;
                return Ok(Applied {
                    event: ev.id.clone(),
                    outcome: "stale".into(),
                    detail: why,
                    subscriptions: current(tx)?,
                    licenses: Outcome::default(),
                });
            }
        }
        tx.bump_model(&ev.tenant)?;
        let mut changed = Vec::new();
        for (c, before, sub) in validated {
            tx.put_subscription(&ev.tenant, &sub, None, &now_text)?;
            tx.anchor_billing(&ev.tenant, &c.product, &created_text, &ev.id)?;
            tx.set_subscription_owner(
                &ev.tenant,
                &c.product,
                &crate::licenses::service::by_billing(ev.source),
            )?;
            let mut after = subscription_json(&sub);
            after["billing_event"] = json!({"id": ev.id, "type": ev.kind, "source": ev.source});
            audit_model(
                tx,
                &ev.tenant,
                &actor,
                &now_text,
                &format!("billing.{}", ev.kind.trim_start_matches("subscription.")),
                "Subscription",
                &c.product,
                before.as_ref().map(subscription_json),
                Some(after),
            )?;
            changed.push(c.product.clone());
        }
        settle_terms(tx, &ev.tenant, &actor, now)?;
        let licenses = relicense(
            tx,
            &cause(&ev.tenant, &actor, &format!("billing.{}", ev.kind), now),
            Scope::All,
        )?;
        let detail = format!("changed {}", changed.join(", "));
        tx.put_billing_event(&record("applied", detail.clone()))?;
        Ok(Applied {
            event: ev.id.clone(),
            outcome: "applied".into(),
            detail,
            subscriptions: current(tx)?,
            licenses,
        })
    })
    .await;
    match result {
        Err(e @ (ApiError::Unprocessable(_) | ApiError::Model(_) | ApiError::Scim(_))) => {
            reject(store, &ev, now, e).await
        }
        other => other,
    }
}

/// Refuses an event (422): nothing was applied; the attempt is recorded so an operator can
/// see why, and a later delivery of the same id is processed again.
async fn reject(
    store: &Store,
    ev: &Incoming,
    now: OffsetDateTime,
    e: ApiError,
) -> ApiResult<Applied> {
    let rec = record_of(ev, "rejected", e.to_string(), &time_text(now));
    let _ = store.write(move |tx| tx.put_billing_event(&rec)).await;
    Err(match e {
        ApiError::Unprocessable(_) => e,
        other => ApiError::Unprocessable(other.to_string()),
    })
}

/// How an event is recorded (`received` is now).
fn record_of(ev: &Incoming, outcome: &str, detail: String, received: &str) -> BillingRecord {
    BillingRecord {
        source: ev.source.to_string(),
        event_id: ev.id.clone(),
        tenant: ev.tenant.clone(),
        product: ev
            .changes
            .first()
            .map(|c| c.product.clone())
            .unwrap_or_default(),
        event_type: ev.kind.clone(),
        created_at: time_text(ev.created_at),
        received: received.to_string(),
        outcome: outcome.to_string(),
        detail,
    }
}

// ---------------------------------------------------------------- Stripe

/// The parts of a Stripe event seatkeeper reads. Stripe adds fields freely, so unknown ones
/// are ignored here (the one body type that does not refuse them: it is Stripe's, not ours).
#[derive(serde::Deserialize)]
struct StripeEvent {
    id: EventText,
    #[serde(rename = "type")]
    kind: EventText,
    created: i64,
    data: StripeData,
}

#[derive(serde::Deserialize)]
struct StripeData {
    object: Value,
}

/// A `subscription` object.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct StripeSubscription {
    metadata: StripeMetadata,
    customer: Option<StripeRef>,
    status: Option<String>,
    items: Option<StripeList<StripeItem>>,
    start_date: Option<i64>,
    current_period_start: Option<i64>,
    current_period_end: Option<i64>,
    trial_end: Option<i64>,
    ended_at: Option<i64>,
    cancel_at: Option<i64>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct StripeList<T> {
    data: Vec<T>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct StripeItem {
    price: Option<StripePrice>,
    plan: Option<StripePrice>,
    quantity: Option<u64>,
    current_period_start: Option<i64>,
    current_period_end: Option<i64>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct StripePrice {
    id: String,
    product: Option<StripeProduct>,
    metadata: StripeMetadata,
}

/// An expandable reference: an id, or the expanded object.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum StripeRef {
    Id(String),
    Object { id: String },
}

/// A price's product: an id, or the expanded product with its metadata.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum StripeProduct {
    Id(String),
    Object {
        id: String,
        #[serde(default)]
        metadata: StripeMetadata,
    },
}

/// Metadata: string values (anything else is ignored).
#[derive(serde::Deserialize, Default)]
#[serde(transparent)]
struct StripeMetadata(std::collections::HashMap<String, Value>);

impl StripeMetadata {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// `seatkeeper_product` and `seatkeeper_plan`, when both are set.
    fn plan(&self) -> Option<(String, String)> {
        Some((
            self.get("seatkeeper_product")?.to_string(),
            self.get("seatkeeper_plan")?.to_string(),
        ))
    }
}

fn unix(t: Option<i64>) -> Option<OffsetDateTime> {
    t.and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
}

fn stripe_invalid(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let at = if path == "." {
        String::new()
    } else {
        format!("{path}: ")
    };
    invalid(format!("{at}{}", e.into_inner()))
}

/// Parses a Stripe event, with the configured mappings (a price or Stripe product id →
/// catalogue product and plan; a customer → tenant).
pub fn parse_stripe(body: &Value, maps: &StripeMaps) -> ApiResult<Incoming> {
    if !body.is_object() {
        return Err(invalid("a Stripe event must be a JSON object"));
    }
    let ev: StripeEvent = serde_path_to_error::deserialize(body).map_err(stripe_invalid)?;
    let (id, stripe_type) = (ev.id.0, ev.kind.0);
    let created_at =
        unix(Some(ev.created)).ok_or_else(|| invalid("created must be a unix timestamp"))?;
    if !ev.data.object.is_object() {
        return Err(invalid("data.object must be an object"));
    }
    let ignored = |why: String, tenant: String| Incoming {
        source: STRIPE,
        id: id.clone(),
        kind: stripe_type.clone(),
        created_at,
        tenant,
        changes: Vec::new(),
        ignored: Some(why),
    };
    let Some(suffix) = stripe_type.strip_prefix("customer.subscription.") else {
        return Ok(ignored(
            format!("{stripe_type} does not change subscriptions"),
            String::new(),
        ));
    };
    let sub: StripeSubscription =
        serde_path_to_error::deserialize(&ev.data.object).map_err(|e| {
            let path = e.path().to_string();
            invalid(format!("data.object.{path}: {}", e.into_inner()))
        })?;
    let tenant = match sub.metadata.get("seatkeeper_tenant") {
        Some(t) => t.to_string(),
        None => {
            let customer = match &sub.customer {
                Some(StripeRef::Id(c)) | Some(StripeRef::Object { id: c }) => c.as_str(),
                None => "",
            };
            maps.customers.get(customer).cloned().ok_or_else(|| {
                ApiError::Unprocessable(format!(
                    "customer {customer} maps to no tenant: set metadata.seatkeeper_tenant on the subscription or PUT /api/v1/billing/stripe/customers/{customer}"
                ))
            })?
        }
    };
    let status = sub.status.as_deref().unwrap_or("active");
    let kind = match (suffix, status) {
        ("trial_will_end", _) | ("pending_update_applied", _) | ("pending_update_expired", _) => {
            return Ok(ignored(
                format!("{stripe_type} changes nothing here"),
                tenant,
            ));
        }
        (_, "incomplete") => {
            return Ok(ignored(
                "status incomplete: nothing is granted before the first payment".into(),
                tenant,
            ));
        }
        ("deleted", _) | ("paused", _) | (_, "canceled") | (_, "paused") => "subscription.canceled",
        (_, "past_due") | (_, "unpaid") => "subscription.payment_failed",
        (_, "incomplete_expired") => "subscription.expired",
        ("created", _) => "subscription.created",
        _ => "subscription.updated",
    };
    let items = sub.items.as_ref().map(|l| l.data.as_slice()).unwrap_or(&[]);
    if items.is_empty() {
        return Err(invalid(
            "data.object.items.data must list the subscription's items",
        ));
    }
    if items.len() > MAX_CHANGES {
        return Err(invalid(format!(
            "at most {MAX_CHANGES} items per subscription"
        )));
    }
    let no_price = StripePrice::default();
    let mut changes = Vec::new();
    for item in items {
        let price = item
            .price
            .as_ref()
            .or(item.plan.as_ref())
            .unwrap_or(&no_price);
        let (stripe_product_id, product_meta) = match &price.product {
            Some(StripeProduct::Id(id)) => (id.as_str(), None),
            Some(StripeProduct::Object { id, metadata }) => (id.as_str(), Some(metadata)),
            None => ("", None),
        };
        let mapped = maps
            .prices
            .get(&price.id)
            .cloned()
            .or_else(|| price.metadata.plan())
            .or_else(|| product_meta.and_then(StripeMetadata::plan))
            .or_else(|| maps.prices.get(stripe_product_id).cloned());
        let (product, plan) = mapped.ok_or_else(|| {
            ApiError::Unprocessable(format!(
                "price {} (product {stripe_product_id}) maps to no plan: PUT /api/v1/billing/stripe/prices/{} with {{product, plan}}, or set metadata seatkeeper_product and seatkeeper_plan on the price",
                price.id, price.id
            ))
        })?;
        let seats = item.quantity.unwrap_or(1);
        let starts = unix(item.current_period_start.or(sub.current_period_start))
            .or_else(|| unix(sub.start_date))
            .unwrap_or(created_at);
        let ends = if status == "trialing" {
            unix(sub.trial_end)
        } else {
            unix(sub.ended_at)
                .or_else(|| unix(sub.cancel_at))
                .or_else(|| unix(item.current_period_end.or(sub.current_period_end)))
        };
        let mut fields = Map::new();
        fields.insert("plan".into(), plan.into());
        fields.insert("seats".into(), seats.into());
        fields.insert("starts_at".into(), time_text(starts).into());
        fields.insert("ends_at".into(), ends.map(time_text).into());
        if status == "trialing" {
            fields.insert("status".into(), "trialing".into());
        }
        changes.push(Change { product, fields });
    }
    Ok(Incoming {
        source: STRIPE,
        id,
        kind: kind.to_string(),
        created_at,
        tenant,
        changes,
        ignored: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_events_are_validated() {
        let ok = json!({"id": "evt_1", "type": "subscription.updated", "created_at": "2026-11-22T10:00:00Z",
            "tenant": "t1", "subscription": {"product": "workspace", "plan": "pro", "seats": 5}});
        let ev = parse_generic(&ok, None).unwrap();
        assert_eq!(ev.changes[0].product, "workspace");
        assert!(!ev.changes[0].fields.contains_key("product"));
        for (bad, says) in [
            (json!([]), "JSON object"),
            (json!({"type": "subscription.updated"}), "missing field"),
            (
                json!({"id": "e", "type": "invoice.paid", "created_at": "x", "tenant": "t", "subscription": {}}),
                "type",
            ),
            (
                json!({"id": "e", "type": "subscription.updated", "created_at": "yesterday", "tenant": "t", "subscription": {}}),
                "created_at",
            ),
            (
                json!({"id": "e", "type": "subscription.updated", "created_at": "2026-11-22T10:00:00Z", "tenant": "t"}),
                "subscription",
            ),
            (
                json!({"id": "e", "type": "subscription.updated", "created_at": "2026-11-22T10:00:00Z", "tenant": "t", "subscription": {"plan": "x"}}),
                "product",
            ),
        ] {
            let e = parse_generic(&bad, None).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn event_types_set_status_and_end() {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let m = merged(None, "subscription.canceled", &Map::new(), at);
        assert_eq!(m["status"], "canceled");
        assert_eq!(m["ends_at"], time_text(at));
        let m = merged(None, "subscription.payment_failed", &Map::new(), at);
        assert_eq!(m["status"], "past_due");
        let mut f = Map::new();
        f.insert("status".into(), "trialing".into());
        assert_eq!(
            merged(None, "subscription.created", &f, at)["status"],
            "trialing"
        );
        assert_eq!(
            merged(None, "subscription.created", &Map::new(), at)["status"],
            "active"
        );
    }

    #[test]
    fn stripe_subscriptions_map_to_plans() {
        let body = json!({"id": "evt_s1", "type": "customer.subscription.updated", "created": 1_700_000_000,
            "data": {"object": {"id": "sub_1", "customer": "cus_1", "status": "active",
                "metadata": {"seatkeeper_tenant": "t1"},
                "items": {"data": [{"quantity": 12, "current_period_start": 1_700_000_000, "current_period_end": 1_702_592_000,
                    "price": {"id": "price_pro", "product": "prod_ws", "metadata": {}}}]}}}});
        let mut maps = StripeMaps::default();
        maps.prices
            .insert("price_pro".into(), ("workspace".into(), "pro".into()));
        let ev = parse_stripe(&body, &maps).unwrap();
        assert_eq!(ev.tenant, "t1");
        assert_eq!(ev.kind, "subscription.updated");
        assert_eq!(ev.changes[0].fields["seats"], 12);
        assert_eq!(ev.changes[0].fields["plan"], "pro");
        assert_eq!(
            ev.changes[0].fields["ends_at"],
            "2023-12-14T22:13:20.000000Z"
        );
        // Metadata on the price maps too; deleted cancels; an unmapped price is refused.
        let mut b = body.clone();
        b["type"] = "customer.subscription.deleted".into();
        b["data"]["object"]["items"]["data"][0]["price"] = json!({"id": "price_x", "metadata": {"seatkeeper_product": "workspace", "seatkeeper_plan": "free"}});
        let ev = parse_stripe(&b, &maps).unwrap();
        assert_eq!(ev.kind, "subscription.canceled");
        assert_eq!(ev.changes[0].fields["plan"], "free");
        b["data"]["object"]["items"]["data"][0]["price"] = json!({"id": "price_y"});
        let e = parse_stripe(&b, &maps).unwrap_err();
        assert!(matches!(e, ApiError::Unprocessable(_)), "{e}");
        // A field of the wrong type is named; an expanded customer and product are read.
        let mut c = body.clone();
        c["data"]["object"]["items"]["data"][0]["quantity"] = json!("twelve");
        let e = parse_stripe(&c, &maps).unwrap_err().to_string();
        assert!(e.contains("data.object.items.data[0].quantity"), "{e}");
        let mut c = body.clone();
        c["data"]["object"]["metadata"] = json!({});
        c["data"]["object"]["customer"] = json!({"id": "cus_9", "email": "x@y"});
        c["data"]["object"]["items"]["data"][0]["price"] = json!({"id": "price_z",
            "product": {"id": "prod_z", "metadata": {"seatkeeper_product": "workspace", "seatkeeper_plan": "pro"}}});
        maps.customers.insert("cus_9".into(), "t9".into());
        let ev = parse_stripe(&c, &maps).unwrap();
        assert_eq!(
            (ev.tenant.as_str(), &ev.changes[0].fields["plan"]),
            ("t9", &json!("pro"))
        );
        // Other event types are recorded and change nothing.
        let inv = json!({"id": "evt_i", "type": "invoice.paid", "created": 1_700_000_000, "data": {"object": {}}});
        assert!(parse_stripe(&inv, &maps).unwrap().ignored.is_some());
    }
}

// ---------------------------------------------------------------- the service

/// Settings keys of the billing secrets.
const BILLING_SECRET: &str = "billing.secret";
const BILLING_SECRET_PREVIOUS: &str = "billing.secret.previous";
const BILLING_SECRET_PREVIOUS_UNTIL: &str = "billing.secret.previous_until";
const STRIPE_SECRET: &str = "billing.stripe.secret";
/// How long a rotated-out billing secret keeps verifying, so the billing system can switch.
const ROTATION_OVERLAP: time::Duration = time::Duration::hours(24);

/// The Standard Webhooks headers of a generic billing event.
pub struct StandardHeaders<'a> {
    /// `webhook-id`.
    pub id: Option<&'a str>,
    /// `webhook-timestamp`.
    pub timestamp: Option<&'a str>,
    /// `webhook-signature`.
    pub signature: Option<&'a str>,
}

/// A billing secret now in force, and until when the one it replaced keeps verifying.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SecretSet {
    /// The secret (shown to the operator who set it, once).
    pub secret: String,
    /// Until when the previous secret is still accepted.
    pub previous_valid_until: String,
}

impl std::fmt::Debug for SecretSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretSet")
            .field("secret", &crate::kernel::secret::REDACTED)
            .field("previous_valid_until", &self.previous_valid_until)
            .finish()
    }
}

/// The billing service: signed events in, and the vendor's billing settings (secrets and
/// Stripe mappings), each change audited on the vendor chain without its secret.
#[derive(Clone)]
pub struct Billing {
    store: Store,
    clock: crate::kernel::clock::SharedClock,
    config_secret: Option<String>,
    config_stripe_secret: Option<String>,
    tolerance: i64,
    licenses: crate::licenses::service::Licenses,
    tenants: crate::tenants::service::Tenants,
}

fn bad_signature(e: crate::kernel::signing::SignatureError) -> ApiError {
    ApiError::Unauthorized(format!("the billing event's signature is not valid: {e}"))
}

impl Billing {
    /// The service; `config` gives the secrets set by flags and the signature tolerance.
    pub fn new(
        store: Store,
        clock: crate::kernel::clock::SharedClock,
        config: &crate::kernel::config::Config,
        licenses: crate::licenses::service::Licenses,
        tenants: crate::tenants::service::Tenants,
    ) -> Billing {
        Billing {
            store,
            clock,
            config_secret: config.billing_secret.clone(),
            config_stripe_secret: config.stripe_secret.clone(),
            tolerance: config.signature_tolerance,
            licenses,
            tenants,
        }
    }

    /// The secrets a generic event may be signed with: the configured one, the stored one,
    /// and the previous stored one during its overlap.
    async fn generic_secrets(&self) -> ApiResult<Vec<String>> {
        let mut out: Vec<String> = self.config_secret.iter().cloned().collect();
        if let Some(s) = self.store.setting(BILLING_SECRET).await? {
            out.push(s);
        }
        if let (Some(prev), Some(until)) = (
            self.store.setting(BILLING_SECRET_PREVIOUS).await?,
            self.store.setting(BILLING_SECRET_PREVIOUS_UNTIL).await?,
        ) && crate::kernel::clock::stamp(self.clock.now()) < until
        {
            out.push(prev);
        }
        Ok(out)
    }

    /// Verifies and applies a generic (Standard Webhooks) billing event.
    pub async fn receive_generic(
        &self,
        request_id: &str,
        h: StandardHeaders<'_>,
        body: &[u8],
    ) -> ApiResult<Applied> {
        let secrets = self.generic_secrets().await?;
        if secrets.is_empty() {
            return Err(ApiError::Unauthorized(
                "no billing secret is configured: set SEATKEEPER_BILLING_SECRET or POST /api/v1/billing/secret".into(),
            ));
        }
        crate::kernel::signing::standard_verify(
            &secrets,
            h.id,
            h.timestamp,
            h.signature,
            body,
            self.clock.now().unix_timestamp(),
            self.tolerance,
        )
        .map_err(bad_signature)?;
        let ev = parse_generic(&crate::kernel::extract::json_from_bytes(body)?, h.id)?;
        self.apply(request_id, ev).await
    }

    /// Verifies and applies a Stripe event.
    pub async fn receive_stripe(
        &self,
        request_id: &str,
        signature: Option<&str>,
        body: &[u8],
    ) -> ApiResult<Applied> {
        let mut secrets: Vec<String> = self.config_stripe_secret.iter().cloned().collect();
        if let Some(s) = self.store.setting(STRIPE_SECRET).await? {
            secrets.push(s);
        }
        if secrets.is_empty() {
            return Err(ApiError::Unauthorized(
                "no Stripe endpoint secret is configured: set SEATKEEPER_STRIPE_SECRET or PUT /api/v1/billing/stripe/secret".into(),
            ));
        }
        crate::kernel::signing::stripe_verify(
            &secrets,
            signature,
            body,
            self.clock.now().unix_timestamp(),
            self.tolerance,
        )
        .map_err(bad_signature)?;
        let value = crate::kernel::extract::json_from_bytes(body)?;
        let maps = self.store.stripe_maps().await?;
        let ev = parse_stripe(&value, &maps)?;
        self.apply(request_id, ev).await
    }

    async fn apply(&self, request_id: &str, ev: Incoming) -> ApiResult<Applied> {
        let source = ev.source;
        let applied = apply(&self.store, &*self.clock, request_id, ev, self.tolerance).await?;
        metrics::counter!("seatkeeper_billing_events_total", "source" => source, "outcome" => applied.outcome.clone()).increment(1);
        Ok(applied)
    }

    /// Sets the generic endpoint's secret (a new random one when `secret` is `None`); the
    /// one it replaces keeps verifying for a day.
    pub async fn set_secret(&self, actor: &Actor, secret: Option<String>) -> ApiResult<SecretSet> {
        let rotated = secret.is_none();
        let secret = secret.unwrap_or_else(crate::kernel::signing::new_secret);
        let now = self.clock.now();
        let (at, until) = (time_text(now), time_text(now + ROTATION_OVERLAP));
        let (actor, set) = (
            actor.clone(),
            SecretSet {
                secret,
                previous_valid_until: until,
            },
        );
        self.store
            .write(move |tx| {
                let old = tx.setting(BILLING_SECRET)?;
                if let Some(old) = &old {
                    tx.put_setting(BILLING_SECRET_PREVIOUS, old)?;
                    tx.put_setting(BILLING_SECRET_PREVIOUS_UNTIL, &set.previous_valid_until)?;
                }
                tx.put_setting(BILLING_SECRET, &set.secret)?;
                tx.record_change(
                    &actor,
                    &at,
                    AuditChange {
                        chain: VENDOR,
                        action: if rotated { "billing.secret.rotate" } else { "billing.secret.set" },
                        resource_type: "BillingSecret",
                        resource_id: "generic",
                        before: Some(json!({"set": old.is_some()})),
                        after: Some(json!({"set": true, "previous_valid_until": old.as_ref().map(|_| &set.previous_valid_until)})),
                    },
                )?;
                Ok::<_, ApiError>(set)
            })
            .await
    }

    /// Sets the Stripe endpoint's signing secret.
    pub async fn set_stripe_secret(&self, actor: &Actor, secret: &str) -> ApiResult<()> {
        let at = time_text(self.clock.now());
        let (actor, secret) = (actor.clone(), secret.to_string());
        self.store
            .write(move |tx| {
                let old = tx.setting(STRIPE_SECRET)?;
                tx.put_setting(STRIPE_SECRET, &secret)?;
                tx.record_change(
                    &actor,
                    &at,
                    AuditChange {
                        chain: VENDOR,
                        action: "billing.stripe_secret.set",
                        resource_type: "BillingSecret",
                        resource_id: "stripe",
                        before: Some(json!({"set": old.is_some()})),
                        after: Some(json!({"set": true})),
                    },
                )?;
                Ok::<_, ApiError>(())
            })
            .await
    }

    /// Maps a Stripe price (or product) id to a plan of the catalogue.
    pub async fn map_price(
        &self,
        actor: &Actor,
        price: &str,
        product: &str,
        plan: &str,
    ) -> ApiResult<()> {
        if !self.licenses.has_plan(product, plan).await? {
            return Err(scim::Error::InvalidValue(format!(
                "product '{product}' with plan '{plan}' is not in the catalogue"
            ))
            .into());
        }
        let at = time_text(self.clock.now());
        let (actor, price, product, plan) = (
            actor.clone(),
            price.to_string(),
            product.to_string(),
            plan.to_string(),
        );
        self.store
            .write(move |tx| {
                let before = tx.put_stripe_price(&price, &product, &plan)?;
                tx.record_change(
                    &actor,
                    &at,
                    AuditChange {
                        chain: VENDOR,
                        action: "billing.stripe_price.put",
                        resource_type: "StripePrice",
                        resource_id: &price,
                        before: before
                            .map(|(product, plan)| json!({"product": product, "plan": plan})),
                        after: Some(json!({"product": product, "plan": plan})),
                    },
                )?;
                Ok::<_, ApiError>(())
            })
            .await
    }

    /// Removes a price mapping (404 if there was none).
    pub async fn unmap_price(&self, actor: &Actor, price: &str) -> ApiResult<()> {
        let at = time_text(self.clock.now());
        let (actor, price) = (actor.clone(), price.to_string());
        self.store
            .write(move |tx| {
                let Some((product, plan)) = tx.delete_stripe_price(&price)? else {
                    return Err(ApiError::NotFound(format!("price {price} is not mapped")));
                };
                tx.record_change(
                    &actor,
                    &at,
                    AuditChange {
                        chain: VENDOR,
                        action: "billing.stripe_price.delete",
                        resource_type: "StripePrice",
                        resource_id: &price,
                        before: Some(json!({"product": product, "plan": plan})),
                        after: None,
                    },
                )?;
                Ok(())
            })
            .await
    }

    /// Maps a Stripe customer to a tenant.
    pub async fn map_customer(&self, actor: &Actor, customer: &str, tenant: &str) -> ApiResult<()> {
        let at = time_text(self.clock.now());
        let (actor, customer, tenant) = (actor.clone(), customer.to_string(), tenant.to_string());
        self.store
            .write(move |tx| {
                require_tenant(tx, &tenant).map_err(|_| {
                    ApiError::from(scim::Error::InvalidValue(format!("no tenant '{tenant}'")))
                })?;
                let before = tx.put_stripe_customer(&customer, &tenant)?;
                tx.record_change(
                    &actor,
                    &at,
                    AuditChange {
                        chain: VENDOR,
                        action: "billing.stripe_customer.put",
                        resource_type: "StripeCustomer",
                        resource_id: &customer,
                        before: before.map(|t| json!({"tenant": t})),
                        after: Some(json!({"tenant": tenant})),
                    },
                )?;
                Ok::<_, ApiError>(())
            })
            .await
    }

    /// Removes a customer mapping (404 if there was none).
    pub async fn unmap_customer(&self, actor: &Actor, customer: &str) -> ApiResult<()> {
        let at = time_text(self.clock.now());
        let (actor, customer) = (actor.clone(), customer.to_string());
        self.store
            .write(move |tx| {
                let Some(tenant) = tx.delete_stripe_customer(&customer)? else {
                    return Err(ApiError::NotFound(format!(
                        "customer {customer} is not mapped"
                    )));
                };
                tx.record_change(
                    &actor,
                    &at,
                    AuditChange {
                        chain: VENDOR,
                        action: "billing.stripe_customer.delete",
                        resource_type: "StripeCustomer",
                        resource_id: &customer,
                        before: Some(json!({"tenant": tenant})),
                        after: None,
                    },
                )?;
                Ok(())
            })
            .await
    }

    /// A tenant's received billing events, newest first.
    pub async fn log(&self, tenant: &str, limit: i64) -> ApiResult<Vec<BillingRecord>> {
        self.tenants.require(tenant).await?;
        Ok(self.store.billing_events(tenant, limit).await?)
    }
}
