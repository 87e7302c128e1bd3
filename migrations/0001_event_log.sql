-- The event log: append-only. Readers tail it in (tx_id, position) order and
-- only below pg_snapshot_xmin(pg_current_snapshot()), so an event written by a
-- transaction that started early and commits late is never skipped.
--
-- Three indexes and no more, since each one costs every append: the event id
-- (primary key: retries are recognised by it), (stream, revision) for stream
-- reads and optimistic concurrency, and (tx_id, position) for tailing.
-- position needs no index of its own: it is unique by construction and only
-- ever read in commit order.
CREATE TABLE events (
    position    bigint GENERATED ALWAYS AS IDENTITY,
    tx_id       xid8        NOT NULL DEFAULT pg_current_xact_id(),
    stream_id   text        NOT NULL,
    revision    bigint      NOT NULL CHECK (revision >= 0),
    event_id    uuid        PRIMARY KEY,
    type        text        NOT NULL,
    data        jsonb       NOT NULL,
    metadata    jsonb       NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_stream_revision UNIQUE (stream_id, revision)
);

CREATE INDEX events_commit_order ON events (tx_id, position);

-- Nothing is ever updated or deleted in place.
CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only (% refused)', TG_OP;
END $$;

CREATE TRIGGER events_no_update BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_append_only();
