-- Budgets of failed secrets, shared by every instance: one token bucket per
-- source address (scope 'source') and per partner client (scope 'client').
-- Operational state like idempotency keys, not ledger facts: the moment a
-- budget runs out is recorded as an event (security.*). A row untouched for
-- a whole window has refilled and is deleted.
CREATE TABLE failure_limits (
    scope         text             NOT NULL,
    key           text             NOT NULL,
    tokens        double precision NOT NULL,
    failures      integer          NOT NULL,
    updated_at    timestamptz      NOT NULL,
    limited_until timestamptz,
    PRIMARY KEY (scope, key)
);
CREATE INDEX failure_limits_limited ON failure_limits (limited_until) WHERE limited_until IS NOT NULL;
