-- Read models of partner access: the registered clients, and each
-- account's grants to them.
CREATE TABLE clients (
    client_id        uuid PRIMARY KEY,
    name             text        NOT NULL,
    redirect_uris    text[]      NOT NULL,
    scopes           text[]      NOT NULL,
    grant_types      text[]      NOT NULL,
    implicit_allowed boolean     NOT NULL,
    public           boolean     NOT NULL,
    secret_hash      text,
    registered_at    timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);

CREATE TABLE consents (
    grant_id          uuid PRIMARY KEY,
    account_id        uuid        NOT NULL,
    client_id         uuid        NOT NULL,
    status            text        NOT NULL, -- granted, denied, revoked
    scopes            text[]      NOT NULL,
    vins              text[]      NOT NULL,
    notice_version    text        NOT NULL,
    collection_method text        NOT NULL,
    granted_at        timestamptz,
    revoked_at        timestamptz,
    revoked_reason    text,
    updated_at        timestamptz NOT NULL
);
CREATE INDEX consents_account ON consents (account_id);
CREATE INDEX consents_client ON consents (client_id);
