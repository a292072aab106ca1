-- Admin dashboard: sign-in sessions and the audit log.

-- A session is found by the SHA-256 hex of its cookie value, so a leaked
-- database does not leak working sessions (like access_tokens).
CREATE TABLE dashboard_sessions (
    id_hash     TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    created_ts  BIGINT NOT NULL,
    expires_ts  BIGINT NOT NULL,
    ip          TEXT,
    user_agent  TEXT
);
CREATE INDEX dashboard_sessions_expires ON dashboard_sessions (expires_ts);
CREATE INDEX dashboard_sessions_user ON dashboard_sessions (user_id);

-- Every change an admin makes from the dashboard (and every destructive one
-- made through the Synapse admin API's shared code paths) is recorded here.
CREATE TABLE audit_log (
    id      {{.AutoID}},
    ts      BIGINT NOT NULL,
    actor   TEXT NOT NULL,            -- admin user ID
    action  TEXT NOT NULL,            -- e.g. user.deactivate, cache.global_factor
    target  TEXT NOT NULL DEFAULT '', -- user ID, token, cache name...
    detail  TEXT NOT NULL DEFAULT '', -- human-readable; never a secret
    ip      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_ts ON audit_log (ts);
