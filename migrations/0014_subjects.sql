-- Subject index (projection "subjects"): every stream that concerns an
-- account, with the revisions and times of the first and last of its
-- events that concern it. Auditors' history replay and point-in-time answers
-- find the streams here, then read the log itself. Revisions and event
-- times, not log positions: they are the same on every log, so the index
-- rebuilds identically after a move to EventStoreDB.
CREATE TABLE subject_streams (
    account_id      uuid        NOT NULL,
    stream          text        NOT NULL,
    first_revision  bigint      NOT NULL,
    last_revision   bigint      NOT NULL,
    first_at        timestamptz NOT NULL,
    last_at         timestamptz NOT NULL,
    events          bigint      NOT NULL,
    PRIMARY KEY (account_id, stream)
);

-- The account a stream currently concerns, for the events of that stream
-- that do not name their account (a wrong car-key code, a refresh rotation).
CREATE TABLE subject_stream_owners (
    stream     text PRIMARY KEY,
    account_id uuid NOT NULL
);

-- Grant streams by client, for the point-in-time answer of one client.
CREATE TABLE subject_client_grants (
    client_id  uuid NOT NULL,
    stream     text NOT NULL,
    account_id uuid NOT NULL,
    PRIMARY KEY (client_id, stream)
);
CREATE INDEX subject_client_grants_account ON subject_client_grants (account_id);

-- Per-subject data keys (crypto-shredding). Personal data in events is
-- sealed with the key of the account it belongs to (AES-256-GCM); the key is
-- stored wrapped by the master key (LEDGER_DATA_KEY). Erasure sets
-- wrapped_key to NULL: the ciphertext stays in the log, unreadable forever.
CREATE TABLE subject_keys (
    account_id  uuid PRIMARY KEY,
    wrapped_key bytea,
    created_at  timestamptz NOT NULL DEFAULT now(),
    erased_at   timestamptz,
    CHECK ((wrapped_key IS NULL) = (erased_at IS NOT NULL))
);

-- An erased account keeps its row (status "erased") without its address.
ALTER TABLE accounts ALTER COLUMN email DROP NOT NULL;
