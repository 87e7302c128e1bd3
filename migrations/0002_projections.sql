-- One row per projection: its checkpoint (written in the same transaction as
-- its read-model rows) and, when it is stopped on a failing event, why.
CREATE TABLE projection_checkpoints (
    name              text PRIMARY KEY,
    commit_position   bigint      NOT NULL DEFAULT 0,
    prepare_position  bigint      NOT NULL DEFAULT 0,
    events_applied    bigint      NOT NULL DEFAULT 0,
    last_event_at     timestamptz,
    error             text,
    error_event_id    uuid,
    error_event_type  text,
    error_position    bigint,
    error_at          timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
