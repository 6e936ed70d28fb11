-- The vendor-wide event feed (issue 12). tx is the writing transaction's id on PostgreSQL
-- (0 on SQLite, whose one writer commits in id order, so the primary key orders the feed).
-- Read in (tx, id) order and only below the oldest transaction still running, the feed never
-- gains a row behind a reader's cursor. The (tx, id) index is PostgreSQL's alone (migrate.rs).
ALTER TABLE outbox ADD COLUMN tx BIGINT NOT NULL DEFAULT {TXID}
