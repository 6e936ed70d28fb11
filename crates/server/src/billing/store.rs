//! Billing rows: received billing events (the idempotency record), the newest event applied
//! per subscription, and Stripe's price and customer mappings.

use crate::kernel::db::Row;
use crate::kernel::store::{Store, StoreResult, Tx};
use crate::params;

/// A billing event as recorded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BillingRecord {
    /// `generic` or `stripe`.
    pub source: String,
    /// The sender's event id.
    pub event_id: String,
    /// Tenant.
    pub tenant: String,
    /// Product.
    pub product: String,
    /// e.g. `subscription.updated`.
    pub event_type: String,
    /// The sender's time of the event.
    pub created_at: String,
    /// When it arrived here.
    pub received: String,
    /// `applied`, `stale` or `rejected`.
    pub outcome: String,
    /// Why (for stale and rejected), or what it changed.
    pub detail: String,
}

fn billing_from_row(r: &Row) -> BillingRecord {
    BillingRecord {
        source: r.text(0),
        event_id: r.text(1),
        tenant: r.text(2),
        product: r.text(3),
        event_type: r.text(4),
        created_at: r.text(5),
        received: r.text(6),
        outcome: r.text(7),
        detail: r.text(8),
    }
}

const BILLING_COLUMNS: &str =
    "source, event_id, tenant_id, product, event_type, created_at, received, outcome, detail";

/// The Stripe mappings, read together for one event.
#[derive(Debug, Default)]
pub struct StripeMaps {
    /// Price (or Stripe product) id → (product, plan).
    pub prices: std::collections::HashMap<String, (String, String)>,
    /// Customer → tenant.
    pub customers: std::collections::HashMap<String, String>,
}

impl Tx<'_> {
    /// A billing event already recorded under this source and id.
    pub(crate) fn billing_event(
        &mut self,
        source: &str,
        id: &str,
    ) -> StoreResult<Option<BillingRecord>> {
        Ok(self
            .fetch_opt(
                &format!(
                    "SELECT {BILLING_COLUMNS} FROM billing_events WHERE source = $1 AND event_id = $2"
                ),
                &params![source, id],
            )?
            .as_ref()
            .map(billing_from_row))
    }

    /// Records a billing event (a rejected record is replaced by a later outcome).
    pub(crate) fn put_billing_event(&mut self, r: &BillingRecord) -> StoreResult<()> {
        self.execute(
            &format!(
                "INSERT INTO billing_events ({BILLING_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (source, event_id) DO UPDATE SET tenant_id = excluded.tenant_id, \
                 product = excluded.product, event_type = excluded.event_type, created_at = excluded.created_at, \
                 received = excluded.received, outcome = excluded.outcome, detail = excluded.detail \
                 WHERE billing_events.outcome = 'rejected'"
            ),
            &params![
                &r.source,
                &r.event_id,
                &r.tenant,
                &r.product,
                &r.event_type,
                &r.created_at,
                &r.received,
                &r.outcome,
                &r.detail
            ],
        )?;
        Ok(())
    }

    /// The newest billing event applied to a subscription: `(created_at, event id)`.
    pub(crate) fn billing_mark(
        &mut self,
        tenant: &str,
        product: &str,
    ) -> StoreResult<Option<(String, String)>> {
        Ok(self
            .fetch_opt(
                "SELECT billing_at, billing_event FROM lic_subscriptions WHERE tenant_id = $1 AND product = $2 AND billing_at IS NOT NULL",
                &params![tenant, product],
            )?
            .map(|r| (r.text(0), r.text(1))))
    }

    /// The catalogue product and plan a Stripe price (or Stripe product) id maps to.
    pub(crate) fn stripe_price(&mut self, price: &str) -> StoreResult<Option<(String, String)>> {
        Ok(self
            .fetch_opt(
                "SELECT product, plan FROM billing_stripe_prices WHERE price = $1",
                &params![price],
            )?
            .map(|r| (r.text(0), r.text(1))))
    }

    /// The tenant a Stripe customer maps to.
    pub(crate) fn stripe_customer(&mut self, customer: &str) -> StoreResult<Option<String>> {
        Ok(self
            .fetch_opt(
                "SELECT tenant_id FROM billing_stripe_customers WHERE customer = $1",
                &params![customer],
            )?
            .map(|r| r.text(0)))
    }
}

impl Store {
    /// The Stripe mappings.
    pub(crate) async fn stripe_maps(&self) -> StoreResult<StripeMaps> {
        let prices = self
            .pool()
            .fetch(
                "SELECT price, product, plan FROM billing_stripe_prices",
                &[],
            )
            .await?
            .iter()
            .map(|r| (r.text(0), (r.text(1), r.text(2))))
            .collect();
        let customers = self
            .pool()
            .fetch(
                "SELECT customer, tenant_id FROM billing_stripe_customers",
                &[],
            )
            .await?
            .iter()
            .map(|r| (r.text(0), r.text(1)))
            .collect();
        Ok(StripeMaps { prices, customers })
    }

    /// Recent billing events of a tenant, newest first.
    pub(crate) async fn billing_events(
        &self,
        tenant: &str,
        limit: i64,
    ) -> StoreResult<Vec<BillingRecord>> {
        Ok(self
            .pool()
            .fetch(
                &format!(
                    "SELECT {BILLING_COLUMNS} FROM billing_events WHERE tenant_id = $1 ORDER BY received DESC LIMIT $2"
                ),
                &params![tenant, limit],
            )
            .await?
            .iter()
            .map(billing_from_row)
            .collect())
    }
}

impl Tx<'_> {
    /// Maps a Stripe price (or product) id to a product and plan; returns the mapping it
    /// replaced.
    pub(crate) fn put_stripe_price(
        &mut self,
        price: &str,
        product: &str,
        plan: &str,
    ) -> StoreResult<Option<(String, String)>> {
        let before = self.stripe_price(price)?;
        self.execute(
            "INSERT INTO billing_stripe_prices (price, product, plan) VALUES ($1, $2, $3) \
             ON CONFLICT (price) DO UPDATE SET product = excluded.product, plan = excluded.plan",
            &params![price, product, plan],
        )?;
        Ok(before)
    }

    /// Removes a price mapping; returns it, if it existed.
    pub(crate) fn delete_stripe_price(
        &mut self,
        price: &str,
    ) -> StoreResult<Option<(String, String)>> {
        let before = self.stripe_price(price)?;
        self.execute(
            "DELETE FROM billing_stripe_prices WHERE price = $1",
            &params![price],
        )?;
        Ok(before)
    }

    /// Maps a Stripe customer to a tenant; returns the tenant it was mapped to.
    pub(crate) fn put_stripe_customer(
        &mut self,
        customer: &str,
        tenant: &str,
    ) -> StoreResult<Option<String>> {
        let before = self.stripe_customer(customer)?;
        self.execute(
            "INSERT INTO billing_stripe_customers (customer, tenant_id) VALUES ($1, $2) \
             ON CONFLICT (customer) DO UPDATE SET tenant_id = excluded.tenant_id",
            &params![customer, tenant],
        )?;
        Ok(before)
    }

    /// Removes a customer mapping; returns its tenant, if it existed.
    pub(crate) fn delete_stripe_customer(&mut self, customer: &str) -> StoreResult<Option<String>> {
        let before = self.stripe_customer(customer)?;
        self.execute(
            "DELETE FROM billing_stripe_customers WHERE customer = $1",
            &params![customer],
        )?;
        Ok(before)
    }
}
