-- Accounts: users, devices, tokens, registration tokens, UIA sessions.
-- Timestamps are Unix milliseconds (BIGINT); booleans are 0/1 integers so
-- both engines read them the same way.

CREATE TABLE users (
    user_id        TEXT PRIMARY KEY,          -- @localpart:server_name
    localpart      TEXT NOT NULL UNIQUE,
    password_hash  TEXT,                      -- bcrypt ($2b$), NULL: no password login
    is_admin       INTEGER NOT NULL DEFAULT 0,
    is_guest       INTEGER NOT NULL DEFAULT 0,
    user_type      TEXT,                      -- NULL, "support", "bot"
    deactivated    INTEGER NOT NULL DEFAULT 0,
    erased         INTEGER NOT NULL DEFAULT 0,
    shadow_banned  INTEGER NOT NULL DEFAULT 0,
    locked         INTEGER NOT NULL DEFAULT 0,
    displayname    TEXT,
    avatar_url     TEXT,
    created_ts     BIGINT NOT NULL
);

CREATE TABLE devices (
    user_id              TEXT NOT NULL REFERENCES users(user_id),
    device_id            TEXT NOT NULL,
    display_name         TEXT,
    created_ts           BIGINT NOT NULL,
    last_seen_ts         BIGINT,
    last_seen_ip         TEXT,
    last_seen_user_agent TEXT,
    PRIMARY KEY (user_id, device_id)
);

-- Tokens are stored as SHA-256 hex of the token: a leaked database does not
-- leak working credentials.
CREATE TABLE access_tokens (
    id               {{.AutoID}},
    token_hash       TEXT NOT NULL UNIQUE,
    user_id          TEXT NOT NULL,
    device_id        TEXT NOT NULL,
    created_ts       BIGINT NOT NULL,
    expires_ts       BIGINT,                  -- NULL: never (non-refreshable)
    refresh_token_id BIGINT,                  -- the refresh token issued with it
    puppet_by        TEXT                     -- admin who obtained it via admin login
);
CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);

CREATE TABLE refresh_tokens (
    id            {{.AutoID}},
    token_hash    TEXT NOT NULL UNIQUE,
    user_id       TEXT NOT NULL,
    device_id     TEXT NOT NULL,
    created_ts    BIGINT NOT NULL,
    expires_ts    BIGINT,
    -- set once the token has been exchanged: the pair it was exchanged for.
    next_token_id BIGINT
);
CREATE INDEX refresh_tokens_device ON refresh_tokens (user_id, device_id);

CREATE TABLE registration_tokens (
    token        TEXT PRIMARY KEY,
    uses_allowed INTEGER,                     -- NULL: unlimited
    pending      INTEGER NOT NULL DEFAULT 0,
    completed    INTEGER NOT NULL DEFAULT 0,
    expiry_time  BIGINT                       -- NULL: never
);

-- User-interactive auth sessions (spec: Client-Server API, "User-interactive
-- authentication API"). data is the JSON the session carries between steps.
CREATE TABLE uia_sessions (
    session_id  TEXT PRIMARY KEY,
    created_ts  BIGINT NOT NULL,
    data        TEXT NOT NULL
);

CREATE TABLE ratelimit_overrides (
    user_id             TEXT PRIMARY KEY,
    messages_per_second DOUBLE PRECISION NOT NULL,
    burst_count         DOUBLE PRECISION NOT NULL
);
