-- Rooms, events and state.
--
-- State is stored as state groups with deltas: a group either holds a full
-- snapshot (prev_group NULL) or only the entries that differ from its
-- prev_group. A message event points at the group of the state after it,
-- which is the same group as its parent's, so a 10,000-member room does not
-- copy 10,000 rows per event; a state event adds one group with one row.
-- Chains are cut (a new snapshot) once they grow long, bounding reads.

CREATE TABLE rooms (
    room_id      TEXT PRIMARY KEY,
    room_version TEXT NOT NULL,
    creator      TEXT NOT NULL,
    is_public    INTEGER NOT NULL DEFAULT 0,   -- published in the room directory
    blocked      INTEGER NOT NULL DEFAULT 0,
    created_ts   BIGINT NOT NULL
);

CREATE TABLE state_groups (
    id          {{.AutoID}},
    room_id     TEXT NOT NULL,
    prev_group  BIGINT,                        -- NULL: a full snapshot
    chain_len   INTEGER NOT NULL               -- deltas between this group and its snapshot
);

CREATE TABLE state_group_entries (
    group_id   BIGINT NOT NULL,
    type       TEXT NOT NULL,
    state_key  TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    PRIMARY KEY (group_id, type, state_key)
);

-- stream_ordering is this server's order of arrival: sync tokens and
-- /messages pagination count in it. topological order is (depth, stream).
CREATE TABLE events (
    stream_ordering  {{.AutoID}},
    event_id         TEXT NOT NULL UNIQUE,
    room_id          TEXT NOT NULL,
    type             TEXT NOT NULL,
    state_key        TEXT,                     -- NULL for message events
    sender           TEXT NOT NULL,
    depth            BIGINT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    json             TEXT NOT NULL,            -- the PDU; replaced by its redacted form once redacted
    membership       TEXT,                     -- content.membership of m.room.member events
    replaces_state   TEXT,                     -- the state event this one replaced (unsigned.prev_content)
    state_group      BIGINT,                   -- state after this event
    rejected         INTEGER NOT NULL DEFAULT 0,
    outlier          INTEGER NOT NULL DEFAULT 0,
    redacted_by      TEXT,
    relates_to       TEXT,                     -- content.m.relates_to.event_id
    rel_type         TEXT,                     -- content.m.relates_to.rel_type
    sender_device    TEXT,                     -- local sender's device, for unsigned.transaction_id
    txn_id           TEXT
);
CREATE INDEX events_room_stream ON events (room_id, stream_ordering);
CREATE INDEX events_room_topo ON events (room_id, depth, stream_ordering);
CREATE INDEX events_relations ON events (relates_to, rel_type);
CREATE INDEX events_room_ts ON events (room_id, origin_server_ts);

CREATE TABLE event_edges (
    event_id      TEXT NOT NULL,
    prev_event_id TEXT NOT NULL,
    room_id       TEXT NOT NULL,
    PRIMARY KEY (event_id, prev_event_id)
);
CREATE INDEX event_edges_prev ON event_edges (prev_event_id);

-- The DAG's current leaves per room: the prev_events of the next event.
CREATE TABLE forward_extremities (
    room_id  TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

CREATE TABLE current_state (
    room_id    TEXT NOT NULL,
    type       TEXT NOT NULL,
    state_key  TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    membership TEXT,                           -- for m.room.member rows
    stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (room_id, type, state_key)
);
CREATE INDEX current_state_member ON current_state (state_key, type, membership);

-- Idempotent sends: a (user, device, scope, txn_id) maps to the event it
-- made. The scope is the endpoint and room ("send !room:hs"): the spec
-- scopes transaction IDs to the request path, so one ID may be reused in
-- another room.
CREATE TABLE event_txn_ids (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    scope     TEXT NOT NULL,
    txn_id    TEXT NOT NULL,
    event_id  TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, scope, txn_id)
);

CREATE TABLE room_aliases (
    alias   TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

-- Rooms a user has forgotten (spec: /forget); cleared when they join again.
CREATE TABLE forgotten_rooms (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);

-- Account data: global (room_id '') and per room. stream_id orders changes
-- for /sync.
CREATE TABLE account_data (
    user_id   TEXT NOT NULL,
    room_id   TEXT NOT NULL,
    type      TEXT NOT NULL,
    content   TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, type)
);
CREATE INDEX account_data_stream ON account_data (user_id, stream_id);

-- One counter for the non-event streams /sync reports (account data,
-- receipts): each change takes the next id.
CREATE TABLE aux_stream (
    id {{.AutoID}},
    kind TEXT NOT NULL
);

CREATE TABLE filters (
    id      {{.AutoID}},
    user_id TEXT NOT NULL,
    json    TEXT NOT NULL
);

CREATE TABLE receipts (
    room_id    TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    type       TEXT NOT NULL,                  -- m.read, m.read.private
    thread_id  TEXT NOT NULL,                  -- '' unthreaded, else main or a thread root
    event_id   TEXT NOT NULL,
    ts         BIGINT NOT NULL,
    stream_id  BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id, type, thread_id)
);
CREATE INDEX receipts_stream ON receipts (room_id, stream_id);
