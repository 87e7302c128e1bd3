-- Read model of the accounts projection.
CREATE TABLE accounts (
    account_id   uuid PRIMARY KEY,
    email        text        NOT NULL,
    status       text        NOT NULL,
    created_at   timestamptz NOT NULL,
    activated_at timestamptz,
    updated_at   timestamptz NOT NULL
);
CREATE INDEX accounts_email ON accounts (email);
