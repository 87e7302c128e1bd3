-- The tamper-evident chain (see eventstore/chain.go for the encoding, which
-- these functions implement byte for byte) and the signed checkpoints.
--
-- Every event carries hash = SHA-256 over a length-prefixed encoding of
-- (previous hash of its stream, stream id, revision, event id, type,
-- SHA-256 of its data as stored, SHA-256 of its metadata fields), and the
-- hash of the event before it in its stream (prev_hash; empty for revision
-- 0). Appends compute both in their one statement (eventstore/postgres.go,
-- which passes the parts that need no database already encoded);
-- events written before this migration are chained here, in revision order,
-- so the whole log verifies from its first event.

-- ledger_lp is a field of the encoding: its length (4 bytes, big endian),
-- then its bytes.
CREATE FUNCTION ledger_lp(b bytea) RETURNS bytea
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN int4send(length(b)) || b;

-- ledger_event_body is the encoding after the version and the previous
-- hash: everything the event itself holds.
-- STABLE, not IMMUTABLE: convert_to is STABLE, and PostgreSQL inlines a
-- SQL function only when it is declared no less volatile than its body.
CREATE FUNCTION ledger_event_body(stream text, rev bigint, id uuid, typ text, data jsonb, meta jsonb) RETURNS bytea
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN ledger_lp(convert_to(stream, 'UTF8'))
        || int8send(rev)
        || ledger_lp(uuid_send(id))
        || ledger_lp(convert_to(typ, 'UTF8'))
        || ledger_lp(sha256(convert_to(data::text, 'UTF8')))
        || ledger_lp(sha256(
            ledger_lp(convert_to(coalesce(meta->>'correlationId', ''), 'UTF8'))
            || ledger_lp(convert_to(coalesce(meta->>'causationId', ''), 'UTF8'))
            || ledger_lp(convert_to(coalesce(meta->>'actor', ''), 'UTF8'))
            || ledger_lp(convert_to(coalesce(meta->>'occurredAt', '0001-01-01T00:00:00Z'), 'UTF8'))));

-- ledger_link hashes an event's body onto the previous hash of its stream.
CREATE FUNCTION ledger_link(prev bytea, body bytea) RETURNS bytea
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN sha256(ledger_lp(convert_to('ledger-chain-v1', 'UTF8')) || ledger_lp(coalesce(prev, ''::bytea)) || body);

ALTER TABLE events ADD COLUMN prev_hash bytea, ADD COLUMN hash bytea;

-- Chain what is already there. The log refuses updates, so its guard is
-- lifted for this transaction only.
ALTER TABLE events DISABLE TRIGGER events_no_update;
DO $$
DECLARE
    r record;
    stream text;
    prev bytea;
    h bytea;
BEGIN
    FOR r IN SELECT event_id, stream_id, revision, type, data, metadata FROM events ORDER BY stream_id, revision LOOP
        IF stream IS DISTINCT FROM r.stream_id THEN
            stream := r.stream_id;
            prev := ''::bytea;
        END IF;
        h := ledger_link(prev, ledger_event_body(r.stream_id, r.revision, r.event_id, r.type, r.data, r.metadata));
        UPDATE events SET prev_hash = prev, hash = h WHERE event_id = r.event_id;
        prev := h;
    END LOOP;
END $$;
ALTER TABLE events ENABLE TRIGGER events_no_update;

-- The checkpointer's running state: the rolling hash of the whole log up to
-- position, folded in log order (rolling = SHA-256(rolling || hash)), and
-- where and when it last signed. One row.
CREATE TABLE audit_chain_state (
    singleton        boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    commit_position  bigint      NOT NULL,
    prepare_position bigint      NOT NULL,
    event_count      bigint      NOT NULL,
    rolling_hash     bytea       NOT NULL,
    signed_count     bigint      NOT NULL,
    signed_at        timestamptz NOT NULL
);

-- Checkpoints over the whole log, derived by the audit_checkpoints
-- projection (so a rebuild gives the same rows), then signed: an Ed25519
-- signature over (position, count, rolling hash, time of the last event);
-- see eventstore/chain.go for the message. Ed25519 signatures are
-- deterministic, so signing a rebuilt row again gives the same signature.
CREATE TABLE audit_checkpoints (
    event_count      bigint      PRIMARY KEY,
    commit_position  bigint      NOT NULL,
    prepare_position bigint      NOT NULL,
    rolling_hash     bytea       NOT NULL,
    last_event_at    timestamptz NOT NULL,
    public_key       bytea,
    signature        bytea
);
CREATE INDEX audit_checkpoints_unsigned ON audit_checkpoints (event_count) WHERE signature IS NULL;
