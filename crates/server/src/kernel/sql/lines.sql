-- Each product line's seat counts move into the tenant's head row, which every licensing
-- decision locks and rewrites anyway: a licensed SCIM create then reads and writes its
-- line's counts without a statement of their own. Code copies the counts from lic_lines
-- (as JSON: {"product": {"active", "waiting", "next_queue"}}) and drops that table.
ALTER TABLE audit_heads ADD COLUMN seat_lines {TEXT} NOT NULL DEFAULT '{}'
