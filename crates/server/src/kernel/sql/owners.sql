-- seatkeeper schema, version 13: who manages each subscription (issue 13): 'admin' (the
-- admin API), 'apply' (a model file), 'billing:generic' or 'billing:stripe' (billing events).
-- apply and the admin API refuse to change a billing-managed subscription unless forced.
-- Subscriptions a billing event has changed before (they carry its mark) are billing's.
ALTER TABLE lic_subscriptions ADD COLUMN managed_by {TEXT} NOT NULL DEFAULT 'admin';
UPDATE lic_subscriptions SET managed_by = 'billing:' || COALESCE((SELECT MIN(e.source) FROM billing_events e
    WHERE e.event_id = lic_subscriptions.billing_event AND e.tenant_id = lic_subscriptions.tenant_id), 'generic')
    WHERE billing_event IS NOT NULL
