-- Read model of the accounts projection.
CREATE TABLE accounts (
    account_id   uuid PRIMARY KEY,
    email        text        NOT NULL,
    status       text        NOT NULL,
    created_at   timestamptz NOT NULL,
    activated_at timestamptz,
    -- set when a partner created the account; notice_pending until that
    -- partner confirms it told the person who holds their data
    provisioned_by uuid,
    notice_pending boolean     NOT NULL DEFAULT false,
    updated_at   timestamptz NOT NULL
);
CREATE INDEX accounts_email ON accounts (email);
