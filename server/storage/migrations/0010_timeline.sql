-- One timeline for events from anywhere (local or received over
-- federation): events that failed the checks are kept with their status,
-- history fetched later gets negative stream positions, and current state
-- changes are recorded as a stream of deltas that /sync reads.

-- soft_failed: passed the auth checks against its auth events and the
-- state before it, failed against the room's current state; stored, never
-- a forward extremity, never in current state, never shown to clients.
ALTER TABLE events ADD COLUMN soft_failed INTEGER NOT NULL DEFAULT 0;
-- Why a rejected or soft-failed event failed (the auth rule and reason).
ALTER TABLE events ADD COLUMN rejection_reason TEXT;

-- The group holding the room's current state: the resolution of the
-- states at its forward extremities. NULL until known (rooms from before
-- this migration with several extremities are resolved on first use).
ALTER TABLE rooms ADD COLUMN state_group BIGINT;
UPDATE rooms SET state_group = (SELECT e.state_group FROM forward_extremities f JOIN events e ON e.event_id = f.event_id
    WHERE f.room_id = rooms.room_id)
    WHERE (SELECT COUNT(*) FROM forward_extremities f WHERE f.room_id = rooms.room_id) = 1;

-- Every change of a room's current state, at the stream position of the
-- persist that made it: a state event applied, or a key changed or removed
-- by state resolution when forks merge (a state reset included). /sync
-- reads the room's state at any stream position from current_state and
-- the deltas after that position.
CREATE TABLE current_state_deltas (
    stream_ordering BIGINT NOT NULL,
    room_id         TEXT NOT NULL,
    type            TEXT NOT NULL,
    state_key       TEXT NOT NULL,
    event_id        TEXT,                      -- NULL: the key left the state
    prev_event_id   TEXT,                      -- NULL: the key was not in the state
    PRIMARY KEY (room_id, stream_ordering, type, state_key)
);
CREATE INDEX current_state_deltas_stream ON current_state_deltas (stream_ordering);

-- Rooms so far had one writer and a linear history: every accepted state
-- event changed exactly its own key, from the event it replaced.
INSERT INTO current_state_deltas (stream_ordering, room_id, type, state_key, event_id, prev_event_id)
    SELECT stream_ordering, room_id, type, state_key, event_id, replaces_state FROM events
    WHERE state_key IS NOT NULL AND outlier = 0 AND rejected = 0;
