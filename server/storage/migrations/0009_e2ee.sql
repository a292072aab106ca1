-- End-to-end encryption (spec: "End-to-End Encryption"), to-device
-- messages and presence. Key objects are kept as the JSON the client
-- uploaded (minus other users' signatures, which live in key_signatures),
-- because clients verify signatures over their canonical form.

-- A device's identity keys (POST /keys/upload device_keys).
CREATE TABLE device_keys (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_json  TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- One-time keys, each claimed (and deleted) exactly once.
CREATE TABLE one_time_keys (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id    TEXT NOT NULL,               -- the part after "algorithm:"
    key_json  TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
);

-- At most one fallback key per device and algorithm; used is set once it
-- has been handed out by /keys/claim.
CREATE TABLE fallback_keys (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    key_json  TEXT NOT NULL,
    used      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- Cross-signing keys: master, self_signing, user_signing.
CREATE TABLE cross_signing_keys (
    user_id    TEXT NOT NULL,
    key_type   TEXT NOT NULL,
    public_key TEXT NOT NULL,              -- the unpadded base64 ed25519 key
    key_json   TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- Signatures uploaded with POST /keys/signatures/upload, on a device
-- (target_key = device ID) or a cross-signing key (target_key = its public
-- key).
CREATE TABLE key_signatures (
    target_user TEXT NOT NULL,
    target_key  TEXT NOT NULL,
    signer_user TEXT NOT NULL,
    signer_key  TEXT NOT NULL,             -- "ed25519:<key>"
    signature   TEXT NOT NULL,
    PRIMARY KEY (target_user, target_key, signer_user, signer_key)
);

-- The newest aux stream position at which a user's device list changed
-- (keys uploaded, device deleted, cross-signing keys or signatures).
CREATE TABLE device_list_changes (
    user_id   TEXT PRIMARY KEY,
    stream_id BIGINT NOT NULL
);
CREATE INDEX device_list_changes_stream ON device_list_changes (stream_id);

-- Pending to-device messages; deleted once the device acknowledges them
-- with a later since token.
CREATE TABLE to_device (
    stream_id  BIGINT NOT NULL,            -- aux stream position
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    sender     TEXT NOT NULL,
    type       TEXT NOT NULL,
    content    TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, stream_id)
);

-- PUT /sendToDevice transaction IDs, per sending device.
CREATE TABLE to_device_txns (
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    txn_id     TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);

-- Presence (spec: "Presence").
CREATE TABLE presence (
    user_id        TEXT PRIMARY KEY,
    state          TEXT NOT NULL,          -- online, unavailable, offline
    status_msg     TEXT,
    last_active_ts BIGINT NOT NULL,
    stream_id      BIGINT NOT NULL
);
CREATE INDEX presence_stream ON presence (stream_id);

-- Server-side key backup (spec: "Server-side key backups"). Deleted
-- versions are kept, marked, so version numbers are never reused.
CREATE TABLE backup_versions (
    user_id   TEXT NOT NULL,
    version   BIGINT NOT NULL,
    algorithm TEXT NOT NULL,
    auth_data TEXT NOT NULL,
    etag      BIGINT NOT NULL DEFAULT 0,
    deleted   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, version)
);

CREATE TABLE backup_keys (
    user_id             TEXT NOT NULL,
    version             BIGINT NOT NULL,
    room_id             TEXT NOT NULL,
    session_id          TEXT NOT NULL,
    first_message_index BIGINT NOT NULL,
    forwarded_count     BIGINT NOT NULL,
    is_verified         INTEGER NOT NULL,
    session_data        TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);
