-- End-to-end encryption across servers (Server-Server API, "End-to-End
-- Encryption" and "Send-to-device messaging").

-- Outbound: EDUs that must reach other servers even across failures and
-- restarts. The federation sender adds them to each destination's
-- transactions and deletes them once a transaction carrying them was
-- delivered (server/federation_outbox.go).

-- A local user's device (device_id) or cross-signing keys (device_id '')
-- changed at stream_id, an aux stream position; the destination has not
-- been sent the update yet. One row per device: a newer change replaces
-- an unsent older one, and the EDU is built from the keys as they are when
-- it is sent (Synapse's device_lists_outbound_pokes).
CREATE TABLE device_list_outbound_pokes (
    destination TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    stream_id   BIGINT NOT NULL,
    PRIMARY KEY (destination, user_id, device_id)
);

-- The stream_id of the newest m.device_list_update for a user a
-- destination was sent: the next one's prev_id.
CREATE TABLE device_list_outbound_last (
    destination TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    stream_id   BIGINT NOT NULL,
    PRIMARY KEY (destination, user_id)
);

-- EDUs whose content is fixed when they are queued (m.direct_to_device),
-- sent in id order.
CREATE TABLE federation_edu_outbox (
    id          {{.AutoID}},
    destination TEXT NOT NULL,
    edu_type    TEXT NOT NULL,
    content     TEXT NOT NULL,
    created_ts  BIGINT NOT NULL
);
CREATE INDEX federation_edu_outbox_destination ON federation_edu_outbox (destination, id);

-- Inbound: the device lists of other servers' users who share a room with
-- a user of this one (Synapse's device_lists_remote_cache), kept up to
-- date by their servers' m.device_list_update and m.signing_key_update.
-- A user without a row is not cached: /keys/query asks their server.
CREATE TABLE remote_device_lists (
    user_id    TEXT PRIMARY KEY,
    -- the stream_id of the last update applied: the prev_id the next one
    -- must name (NULL: unknown, the next update resyncs)
    stream_id  BIGINT,
    updated_ts BIGINT NOT NULL
);

CREATE TABLE remote_device_keys (
    user_id      TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    display_name TEXT,
    key_json     TEXT,                     -- NULL: a device without keys
    PRIMARY KEY (user_id, device_id)
);

-- Their master and self-signing keys (never user-signing: that one is
-- private to its owner's server).
CREATE TABLE remote_cross_signing_keys (
    user_id    TEXT NOT NULL,
    key_type   TEXT NOT NULL,
    public_key TEXT NOT NULL,
    key_json   TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);
