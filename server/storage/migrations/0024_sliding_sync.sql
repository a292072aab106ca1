-- Simplified sliding sync (MSC4186): each room's bump stamp, the stream
-- position of its newest event of a type that moves it up a recency-sorted
-- room list (m.room.create, m.room.message, m.room.encrypted, m.sticker,
-- m.call.invite, m.poll.start, m.beacon_info, as Synapse). Kept up to date
-- as events are persisted, so ordering a user's thousands of rooms reads
-- one row per room instead of scanning their timelines.
CREATE TABLE room_bump_stamps (
    room_id         TEXT PRIMARY KEY,
    stream_ordering BIGINT NOT NULL
);

INSERT INTO room_bump_stamps (room_id, stream_ordering)
SELECT room_id, MAX(stream_ordering) FROM events
WHERE outlier = 0 AND rejected = 0 AND soft_failed = 0
  AND type IN ('m.room.create', 'm.room.message', 'm.room.encrypted', 'm.sticker',
               'm.call.invite', 'm.poll.start', 'm.beacon_info')
GROUP BY room_id;
