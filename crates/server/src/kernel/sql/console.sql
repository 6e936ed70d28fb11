-- Console sessions (issue 12): a browser signed in with the admin token. The cookie holds a
-- random token; only its SHA-256 is stored. csrf is the session's form token.
CREATE TABLE console_sessions (
    id_hash {TEXT} PRIMARY KEY,
    csrf {TEXT} NOT NULL,
    created {TEXT} NOT NULL,
    expires {TEXT} NOT NULL
);
CREATE INDEX console_sessions_expires ON console_sessions (expires)
