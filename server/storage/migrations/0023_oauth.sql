-- The OAuth 2.0 API (spec: Client-Server API, "OAuth 2.0 API"). Sessions it
-- creates are ordinary devices with access_tokens and refresh_tokens rows;
-- these tables hold only what OAuth adds around them.

-- Clients registered through dynamic client registration. metadata is the
-- validated client metadata as JSON, as answered to the client.
CREATE TABLE oauth_clients (
    client_id   TEXT PRIMARY KEY,
    metadata    TEXT NOT NULL,
    created_ts  BIGINT NOT NULL
);

-- Authorisation requests between /authorize and the token request. data is
-- the request as JSON; user_id is set once the user has approved it, and
-- code_hash once the code is issued. A row is deleted when its code is
-- exchanged, so a code works once.
CREATE TABLE oauth_auth_requests (
    id          TEXT PRIMARY KEY,
    client_id   TEXT NOT NULL,
    data        TEXT NOT NULL,
    user_id     TEXT,
    auth_ts     BIGINT,
    code_hash   TEXT UNIQUE,
    created_ts  BIGINT NOT NULL
);
CREATE INDEX oauth_auth_requests_created ON oauth_auth_requests (created_ts);

-- Which client a device's session was granted to, with which scope: read
-- when its refresh token is used.
CREATE TABLE oauth_grants (
    user_id     TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    client_id   TEXT NOT NULL,
    scope       TEXT NOT NULL,
    auth_ts     BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- Browser sign-ins on the OAuth pages (login, consent, account), stored
-- hashed as dashboard sessions are.
CREATE TABLE oauth_browser_sessions (
    id_hash     TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    created_ts  BIGINT NOT NULL,
    expires_ts  BIGINT NOT NULL
);

-- The key that signs ID tokens (only issued when a client asks for the
-- openid scope), as PKCS#8 PEM, kept so tokens stay verifiable across
-- restarts.
CREATE TABLE oauth_signing_keys (
    key_id      TEXT PRIMARY KEY,
    private_pem TEXT NOT NULL,
    created_ts  BIGINT NOT NULL
);

-- Device authorisation grant (RFC 8628; spec v1.18): a device shows the
-- user a short user_code and polls with its device_code until the user,
-- signed in on another device, approves or denies. A decided row is
-- deleted when the device reads the decision, so it is used once.
CREATE TABLE oauth_device_codes (
    device_code_hash TEXT PRIMARY KEY,
    user_code        TEXT NOT NULL UNIQUE,
    client_id        TEXT NOT NULL,
    scope            TEXT NOT NULL,
    expires_ts       BIGINT NOT NULL,
    user_id          TEXT,
    auth_ts          BIGINT,
    denied           INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX oauth_device_codes_expiry ON oauth_device_codes (expires_ts);

-- A refresh token is kept after its exchange until the new pair is used
-- (storage.RefreshSession), so a lost answer can be retried; resolving an
-- access token asks whether the token it replaced is still kept.
CREATE INDEX refresh_tokens_next ON refresh_tokens (next_token_id);
