-- Other servers' signing keys, as the key ring (server/federation) learned
-- them from the servers themselves or from notaries (Server-Server API,
-- "Retrieving server keys"), so a restart verifies without refetching.

-- One row per key. A current key (from verify_keys) is trusted until
-- valid_until_ts: the response's valid_until_ts, capped at 7 days after
-- it was fetched. An old key (from old_verify_keys) verifies only events
-- sent before it expired: valid_until_ts is its expired_ts.
CREATE TABLE server_keys (
    server_name    TEXT NOT NULL,
    key_id         TEXT NOT NULL,     -- "ed25519:abc"
    public_key     TEXT NOT NULL,     -- unpadded base64
    valid_until_ts BIGINT NOT NULL,   -- ms
    expired_ts     BIGINT,            -- ms; NULL for a current key
    from_server    TEXT NOT NULL,     -- who answered: the server itself or a notary
    fetched_ts     BIGINT NOT NULL,   -- ms
    PRIMARY KEY (server_name, key_id)
);

-- The latest signed key response of each server, as received (the
-- origin's signature intact), which the notary endpoints serve again with
-- this server's signature added.
CREATE TABLE server_key_responses (
    server_name    TEXT PRIMARY KEY,
    from_server    TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,   -- ms, capped as for server_keys
    fetched_ts     BIGINT NOT NULL,   -- ms
    response       TEXT NOT NULL      -- the JSON object
);
