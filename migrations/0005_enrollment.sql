-- Read model of the enrollment projection: what the SDK's queries answer
-- (isDeviceActivated, isAccountBlocked, trustedphonenumber). Commands never
-- read it; they decide from the enrollment stream.
CREATE TABLE enrollment_accounts (
    account_id   uuid PRIMARY KEY,
    phone_number text,
    pin_set      boolean     NOT NULL DEFAULT false,
    block_state  text        NOT NULL DEFAULT 'NotBlocked',
    updated_at   timestamptz NOT NULL
);

CREATE TABLE enrollment_devices (
    account_id  uuid        NOT NULL,
    device_id   text        NOT NULL,
    enrolled_at timestamptz NOT NULL,
    PRIMARY KEY (account_id, device_id)
);
