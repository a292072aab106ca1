-- Federation: where this server's events go, and what other servers sent.

-- The federation sender reads the event stream from this position on: every
-- local event at or below it has been queued for its destinations
-- (federation_destination_rooms). One row.
CREATE TABLE federation_sender_position (
    id       INTEGER PRIMARY KEY,
    position BIGINT NOT NULL
);

-- Other servers this one sends to: their retry state (Synapse's
-- destinations table) and how far they have received this server's events.
CREATE TABLE federation_destinations (
    destination        TEXT PRIMARY KEY,
    retry_last_ts      BIGINT NOT NULL DEFAULT 0,  -- when the last attempt failed
    retry_interval_ms  BIGINT NOT NULL DEFAULT 0,  -- wait before the next attempt (0: none)
    failure_ts         BIGINT,                     -- when it started failing (NULL: healthy)
    last_success_ts    BIGINT,
    last_error         TEXT,
    -- every event queued for it up to this stream position was delivered
    last_successful_stream_ordering BIGINT NOT NULL DEFAULT 0
);

-- The newest local event of each room queued for each destination: what a
-- destination that was unreachable is sent when it comes back (the newest
-- event per room; it fetches the rest with /get_missing_events).
CREATE TABLE federation_destination_rooms (
    destination     TEXT NOT NULL,
    room_id         TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (destination, room_id)
);
CREATE INDEX federation_destination_rooms_room ON federation_destination_rooms (room_id);

-- Transactions received (PUT /send/{txnId}): a retry gets the first
-- answer again without the transaction being processed twice.
CREATE TABLE federation_received_txns (
    origin      TEXT NOT NULL,
    txn_id      TEXT NOT NULL,
    response    TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);

-- outbound: this server sends the event to the room's other servers (its
-- own events, and membership events other servers asked it to accept and
-- pass on: send_join, send_leave, send_knock).
ALTER TABLE events ADD COLUMN outbound INTEGER NOT NULL DEFAULT 0;
CREATE INDEX events_outbound ON events (stream_ordering) WHERE outbound = 1;
