-- Idle seats (issue 12): a held seat whose user has shown no activity for idle_after_days
-- counts as idle; a seat never used counts from when it was first held (held_since, which a
-- plan change does not move; NULL while waitlisted).
ALTER TABLE lic_subscriptions ADD COLUMN idle_after_days BIGINT NOT NULL DEFAULT 30;
ALTER TABLE licenses ADD COLUMN held_since {TEXT};
UPDATE licenses SET held_since = changed WHERE state = 'active'
