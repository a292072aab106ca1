-- Third-party identifiers (spec: "Adding Account Administrative Contact
-- Information"). user_threepids holds the email addresses on accounts:
-- one account per address, as the spec asks of /account/3pid/add and as
-- login and password reset by address need. Addresses are stored in the
-- canonical form the server compares (lower-cased), as Synapse does.
CREATE TABLE user_threepids (
    medium       TEXT NOT NULL,
    address      TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    validated_at BIGINT NOT NULL,
    added_at     BIGINT NOT NULL,
    PRIMARY KEY (medium, address)
);
CREATE INDEX user_threepids_user ON user_threepids (user_id);

-- Validation sessions started by a requestToken endpoint. purpose is
-- the endpoint (register, add, password): a session validated for one
-- cannot be spent on another. The emailed token is kept only as its
-- SHA-256 (token_hash), valid until token_expires; validated_at is set
-- once the token came back. A session is deleted when it is used.
CREATE TABLE threepid_sessions (
    session_id        TEXT PRIMARY KEY,
    purpose           TEXT NOT NULL,
    medium            TEXT NOT NULL,
    address           TEXT NOT NULL,
    client_secret     TEXT NOT NULL,
    last_send_attempt BIGINT NOT NULL,
    next_link         TEXT NOT NULL,
    token_hash        TEXT NOT NULL,
    token_expires     BIGINT NOT NULL,
    validated_at      BIGINT NOT NULL DEFAULT 0,
    created           BIGINT NOT NULL
);
CREATE UNIQUE INDEX threepid_sessions_secret ON threepid_sessions (purpose, medium, address, client_secret);
CREATE INDEX threepid_sessions_created ON threepid_sessions (created);
