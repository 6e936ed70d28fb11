-- seatkeeper schema, version 16: idle reclaim (issue 13). on_idle: keep (default) or reclaim
-- (while someone waits, the scheduler gives idle seats to the waitlist). A reclaimed license
-- (state 'reclaimed') holds no seat and is in no line until its user is active again.
ALTER TABLE lic_subscriptions ADD COLUMN on_idle {TEXT} NOT NULL DEFAULT 'keep'
