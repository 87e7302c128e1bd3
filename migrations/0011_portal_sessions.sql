-- Browser sessions of the end-user portal (connected apps): short-lived UI
-- state, not ledger facts. The cookie holds a random id; only its SHA-256
-- is kept. A session lives 30 minutes.
CREATE TABLE portal_sessions (
    session_hash bytea PRIMARY KEY,
    csrf         text        NOT NULL,
    account_id   uuid,
    expires_at   timestamptz NOT NULL
);
CREATE INDEX portal_sessions_expiry ON portal_sessions (expires_at);
