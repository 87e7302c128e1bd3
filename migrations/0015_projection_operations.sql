-- Operations on projections: throughput in the status, and the progress of
-- rebuilds, readable from every instance.

-- Events per second over the last seconds, written by the instance that runs
-- the projection with each checkpoint (a status older than the window reads
-- as idle).
ALTER TABLE projection_checkpoints ADD COLUMN events_per_second double precision NOT NULL DEFAULT 0;

-- One row per projection that was ever rebuilt: the last rebuild's progress.
-- Whether one is running now is whether its advisory lock is held, so a
-- rebuild whose process died never shows as running.
CREATE TABLE projection_rebuilds (
    name           text PRIMARY KEY,
    phase          text        NOT NULL, -- building, catching_up, swapping, done, failed
    events         bigint      NOT NULL DEFAULT 0,
    done_position  bigint      NOT NULL DEFAULT 0,
    total_position bigint      NOT NULL DEFAULT 0,
    started_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    finished_at    timestamptz,
    error          text
);
