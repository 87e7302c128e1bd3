-- Read model of the vehicles projection: each account's cars and the
-- connected services subscribed on them.
CREATE TABLE vehicles (
    vin           text PRIMARY KEY,
    account_id    uuid        NOT NULL,
    associated_at timestamptz NOT NULL
);
CREATE INDEX vehicles_account ON vehicles (account_id);

CREATE TABLE vehicle_services (
    car_association_id uuid PRIMARY KEY,
    vin                text        NOT NULL,
    account_id         uuid        NOT NULL,
    service            text        NOT NULL,
    subscribed_at      timestamptz NOT NULL
);
CREATE INDEX vehicle_services_vin ON vehicle_services (vin);

-- Read model of the steps projection (the steps cache of the SDK). The
-- facts tables are the projection's own view of the ledger's facts, so that
-- minting and resetting a cache entry read only this projection's tables and
-- a rebuild gives the same rows.
CREATE TABLE steps_fact_phones (
    account_id uuid PRIMARY KEY
);
CREATE TABLE steps_fact_devices (
    account_id uuid NOT NULL,
    device_id  text NOT NULL,
    PRIMARY KEY (account_id, device_id)
);
CREATE TABLE steps_fact_carkeys (
    account_id uuid NOT NULL,
    vin        text NOT NULL,
    PRIMARY KEY (account_id, vin)
);

-- One row per stepsID. A step's status only moves from todo to alreadyDone,
-- except when the entry is reset (steps.reset.v1), which recomputes it.
-- car_key is NULL for services that do not need it.
CREATE TABLE steps_cache (
    steps_id           bigint PRIMARY KEY,
    car_association_id uuid        NOT NULL,
    account_id         uuid        NOT NULL,
    device_id          text        NOT NULL,
    vin                text        NOT NULL,
    service            text        NOT NULL,
    trusted_phone      text        NOT NULL,
    device_activation  text        NOT NULL,
    car_key            text,
    ended              boolean     NOT NULL DEFAULT false,
    updated_at         timestamptz NOT NULL,
    UNIQUE (car_association_id, device_id)
);
CREATE INDEX steps_cache_account ON steps_cache (account_id);
