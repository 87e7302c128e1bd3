-- The tamper-evident chain (see eventstore/chain.go for the encoding, which
-- these functions implement byte for byte) and the signed checkpoints.
--
-- Every event carries hash = SHA-256 over a length-prefixed encoding of
-- (previous hash of its stream, stream id, revision, event id, type,
-- SHA-256 of its data as stored, SHA-256 of its metadata fields), and the
-- hash of the event before it in its stream (prev_hash; empty for revision
-- 0). Appends compute both in their one statement (ledger_chain below);
-- events written before this migration are chained here, in revision order,
-- so the whole log verifies from its first event.

-- ledger_lp is a field of the encoding: its length (4 bytes, big endian),
-- then its bytes.
CREATE FUNCTION ledger_lp(b bytea) RETURNS bytea
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN int4send(length(b)) || b;

CREATE FUNCTION ledger_event_hash(prev bytea, stream text, rev bigint, id uuid, typ text, data jsonb, meta jsonb) RETURNS bytea
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN sha256(
        ledger_lp(convert_to('ledger-chain-v1', 'UTF8'))
        || ledger_lp(coalesce(prev, ''::bytea))
        || ledger_lp(convert_to(stream, 'UTF8'))
        || int8send(rev)
        || ledger_lp(uuid_send(id))
        || ledger_lp(convert_to(typ, 'UTF8'))
        || ledger_lp(sha256(convert_to(data::text, 'UTF8')))
        || ledger_lp(sha256(
            ledger_lp(convert_to(coalesce(meta->>'correlationId', ''), 'UTF8'))
            || ledger_lp(convert_to(coalesce(meta->>'causationId', ''), 'UTF8'))
            || ledger_lp(convert_to(coalesce(meta->>'actor', ''), 'UTF8'))
            || ledger_lp(convert_to(coalesce(meta->>'occurredAt', ''), 'UTF8')))));

-- ledger_chain hashes the events of one append, each chained to the one
-- before: the first to prev (the stream's last hash, NULL for a new stream).
CREATE FUNCTION ledger_chain(prev bytea, stream text, first_rev bigint, ids uuid[], types text[], data jsonb[], metas jsonb[]) RETURNS bytea[]
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    out bytea[] := '{}';
    h bytea := coalesce(prev, ''::bytea);
BEGIN
    FOR i IN 1 .. coalesce(array_length(ids, 1), 0) LOOP
        h := ledger_event_hash(h, stream, first_rev + i - 1, ids[i], types[i], data[i], metas[i]);
        out := out || h;
    END LOOP;
    RETURN out;
END $$;

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
        h := ledger_event_hash(prev, r.stream_id, r.revision, r.event_id, r.type, r.data, r.metadata);
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

-- Signed checkpoints: an Ed25519 signature over (position, count, rolling
-- hash, time of the last event); see eventstore/chain.go for the message.
CREATE TABLE audit_checkpoints (
    event_count      bigint      PRIMARY KEY,
    commit_position  bigint      NOT NULL,
    prepare_position bigint      NOT NULL,
    rolling_hash     bytea       NOT NULL,
    last_event_at    timestamptz NOT NULL,
    public_key       bytea       NOT NULL,
    signature        bytea       NOT NULL
);
