-- Memberships of local users in rooms this server is not in: an invite from
-- another server (kept until it is accepted, rejected or withdrawn), its
-- rejection, a knock. Rooms this server is in keep memberships in
-- current_state; these rows cover the rest, at a live stream position so
-- /sync reports them.
CREATE TABLE out_of_room_memberships (
    user_id         TEXT NOT NULL,
    room_id         TEXT NOT NULL,
    membership      TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    stripped_state  TEXT NOT NULL,             -- JSON array: what the invitee sees of the room
    room_version    TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);
CREATE INDEX out_of_room_memberships_stream ON out_of_room_memberships (stream_ordering);

-- Backward extremities (events whose prev_events this server lacks) are
-- looked up per room when /messages reaches the start of what is stored.
CREATE INDEX event_edges_room ON event_edges (room_id);
