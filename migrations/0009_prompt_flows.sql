-- Flows of the hosted consent prompt: short-lived UI state, not ledger
-- facts. The browser holds a random flow id in an HttpOnly cookie; only its
-- SHA-256 is kept here. A flow lives 10 minutes: a user who leaves starts
-- over.
CREATE TABLE prompt_flows (
    flow_hash  bytea PRIMARY KEY,
    csrf       text        NOT NULL,
    query      text        NOT NULL,
    account_id uuid,
    vin        text,
    expires_at timestamptz NOT NULL
);
CREATE INDEX prompt_flows_expiry ON prompt_flows (expires_at);
