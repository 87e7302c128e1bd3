-- Answers of commands sent with an Idempotency-Key. The key itself is not
-- stored: key_hash is SHA-256 over (scope, key) and the answer is sealed with
-- a key derived from the Idempotency-Key, so a dump of this table reveals no
-- token a command returned.
CREATE TABLE idempotency_keys (
    key_hash     bytea PRIMARY KEY,
    request_hash bytea       NOT NULL,
    state        text        NOT NULL CHECK (state IN ('running', 'done')),
    status       int,
    sealed       bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    locked_until timestamptz NOT NULL
);

CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
