-- Fewer index writes per license change (a licensed SCIM create pays for every one).
--
-- A license row points at the audit record of its latest change, and each license record
-- names the one before it ("prev" in its documents), so a user's license history is read
-- by primary key. Only a license's last record (its revocation) is indexed: once the row is
-- gone, nothing else leads to its chain.
ALTER TABLE licenses ADD COLUMN audit_seq BIGINT;
UPDATE licenses SET audit_seq = (
    SELECT max(a.seq) FROM audit_log a
    WHERE a.tenant_id = licenses.tenant_id AND a.resource_type = 'License'
      AND a.resource_id = licenses.user_id || '/' || licenses.product
);
DROP INDEX audit_log_license;
CREATE INDEX audit_log_license_end ON audit_log (tenant_id, resource_id)
    WHERE resource_type = 'License' AND action = 'license.revoked';

-- Only the waitlist is read in queue order on the hot path (a freed seat goes to its head);
-- the most recent holders are read only by a seat cut, which can afford to scan.
DROP INDEX licenses_line;
CREATE INDEX licenses_waiting ON licenses (tenant_id, product, queue, user_id)
    WHERE state = 'waitlisted';
