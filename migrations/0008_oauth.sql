-- The OAuth2 token-validity read model: one row per authorization code,
-- access token and refresh token, keyed by fosite's signature (the HMAC half
-- of the token; the token itself is never stored). The token endpoint,
-- introspection and revocation answer from it; commands wait for it, so a
-- revocation shows here before it is acknowledged.
CREATE TABLE oauth_tokens (
    signature             text PRIMARY KEY,
    kind                  text        NOT NULL, -- authorize_code, access_token, refresh_token
    request_id            text        NOT NULL, -- the token family
    client_id             uuid        NOT NULL,
    account_id            uuid,                 -- NULL for client credentials
    grant_type            text        NOT NULL,
    requested_scopes      text[]      NOT NULL,
    granted_scopes        text[]      NOT NULL,
    requested_audience    text[]      NOT NULL,
    granted_audience      text[]      NOT NULL,
    redirect_uri          text        NOT NULL DEFAULT '',
    code_challenge        text        NOT NULL DEFAULT '',
    code_challenge_method text        NOT NULL DEFAULT '',
    access_signature      text,                 -- a refresh token's access token
    requested_at          timestamptz NOT NULL,
    expires_at            timestamptz NOT NULL,
    status                text        NOT NULL, -- active, used, rotated, revoked
    ended_reason          text,
    issued_at             timestamptz NOT NULL,
    ended_at              timestamptz
);
CREATE INDEX oauth_tokens_family ON oauth_tokens (request_id);
CREATE INDEX oauth_tokens_account_client ON oauth_tokens (account_id, client_id) WHERE status = 'active';
