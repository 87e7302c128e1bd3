-- Partner webhooks (projections/webhooks.go, projections/webhook_sender.go).
--
-- webhook_clients is the webhooks projection's read model: the webhook URL
-- of each client registered with one, folded from the log so that the
-- projection never reads another projection's tables and a rebuild gives the
-- same rows.
CREATE TABLE webhook_clients (
    client_id     uuid PRIMARY KEY,
    webhook_url   text        NOT NULL,
    registered_at timestamptz NOT NULL
);

-- webhook_deliveries is a queue, not a read model: the projection enqueues
-- one row per notifying event (delivery_id is the event's id) in the same
-- transaction as its checkpoint, and the sender works it off. A rebuild of
-- the projection does not clear it, and re-inserting an existing delivery
-- does nothing, so nothing is sent twice. Rows are the record of what was
-- sent: deleting them would let a rebuild enqueue those events again.
CREATE TABLE webhook_deliveries (
    delivery_id      uuid PRIMARY KEY,
    client_id        uuid        NOT NULL,
    url              text        NOT NULL,
    event_type       text        NOT NULL, -- consent.granted, consent.revoked, token.revoked
    body             text        NOT NULL, -- the exact bytes signed and sent
    -- The event's log position: a client's deliveries go out in this order.
    commit_position  bigint      NOT NULL,
    prepare_position bigint      NOT NULL,
    occurred_at      timestamptz NOT NULL,
    status           text        NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'failed')),
    -- POSTs started; also fences a sender whose lease ran out.
    attempts         int         NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,
    last_attempt_at  timestamptz,
    delivered_at     timestamptz,
    last_error       text                  -- a status code or a transport error, never a body
);
-- What the sender claims: due pending rows, and the head of each client's
-- queue.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_client_order ON webhook_deliveries (client_id, commit_position, prepare_position)
    WHERE status = 'pending';
