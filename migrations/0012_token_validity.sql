-- The instances that answer OAuth2 token reads from memory
-- (projections/token_validity.go). Each serving instance keeps its row
-- current: the log position its in-memory token-validity model has applied,
-- and a heartbeat. A command that ends tokens (a revocation, a grant
-- revoked, an account blocked, a secret rotated) waits until every instance
-- with a fresh heartbeat has reached its position, so no instance answers
-- for a token after the command that ended it returned. An instance that
-- cannot refresh its heartbeat stops answering from memory before its row
-- goes stale, and catches up with the log before it answers again.
--
-- UNLOGGED: rows are rewritten many times a second and mean nothing after
-- a crash of the server (which empties the table; instances write their
-- row again at their next heartbeat), so they cost no WAL and no fsync next
-- to the appends.
CREATE UNLOGGED TABLE token_cache_instances (
    instance_id    uuid PRIMARY KEY,
    commit_pos     bigint      NOT NULL,
    prepare_pos    bigint      NOT NULL,
    heartbeat_at   timestamptz NOT NULL,
    started_at     timestamptz NOT NULL
);
