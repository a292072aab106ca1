-- Relations and threads: /threads lists a room's thread roots by their
-- latest m.thread event, and bundled aggregations count thread replies per
-- root. Both filter on (room_id, rel_type) first; the 0004 index on
-- (relates_to, rel_type) serves lookups by parent.
CREATE INDEX events_room_rel ON events (room_id, rel_type, relates_to, stream_ordering);
