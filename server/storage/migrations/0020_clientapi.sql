-- The rest of the Client-Server API: account suspension, extended profile
-- fields and login tokens for signing in a new device from an existing one.

-- Suspension (spec: "Account suspension"): the account may read but not
-- act; unlike locked, its sessions keep working.
ALTER TABLE users ADD COLUMN suspended INTEGER NOT NULL DEFAULT 0;

-- Extended profile fields (spec v1.16, "Profiles"): every field other than
-- displayname and avatar_url, which stay in users. value is the field's
-- JSON value as the client sent it (any JSON type).
CREATE TABLE profile_fields (
    user_id TEXT NOT NULL,
    field   TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (user_id, field)
);

-- m.login.token tokens issued by POST /login/get_token. Stored hashed, as
-- access tokens are; a token is deleted when it is used, so it logs in once.
CREATE TABLE login_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);
CREATE INDEX login_tokens_user ON login_tokens (user_id);
CREATE INDEX login_tokens_expiry ON login_tokens (expires_ts);
