-- Security index (projection "security_events"): every security.* event
-- (source limits, client authentication locks), numbered in log order.
-- Auditors' security feeds page through it by seq, then read the log
-- itself. A rank and stream revisions, not log positions: they are the same
-- on every log, so the index rebuilds identically after a move to
-- EventStoreDB. client_id is the partner client the event is about, when
-- it names one (a client lock).
CREATE TABLE security_events (
    seq          bigint      PRIMARY KEY,
    stream       text        NOT NULL,
    revision     bigint      NOT NULL,
    occurred_at  timestamptz NOT NULL,
    client_id    uuid
);
CREATE INDEX security_events_client ON security_events (client_id, seq) WHERE client_id IS NOT NULL;
